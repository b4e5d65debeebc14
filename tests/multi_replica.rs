//! Several `wpfleet serve` replicas on one DynamoDB table (moto on 127.0.0.1) and one
//! simulated cloud (`wpfleet sim-cloud`), as production runs them: instances created
//! through different replicas all converge; a replica killed with SIGKILL has its shards
//! taken over within the lease TTL + 2 s; a replacement joins and shards rebalance; and the
//! simulated cloud's call log shows that no instance was ever worked on by two replicas at
//! once and that no cloud resource exists twice.
//!
//! The default run (100 instances, 3 replicas, one kill-and-replace round, 5 s leases)
//! takes about 1.5 minutes on 2 cores, mostly moto serving the store; it runs alone
//! (`.config/nextest.toml`). `WPFLEET_MULTI_REPLICA_INSTANCES` and
//! `WPFLEET_MULTI_REPLICA_ROUNDS` make a longer run.

mod common;
#[path = "common/moto.rs"]
mod moto;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;
use serde_json::{Value, json};
use wpfleet::store::{DynamoStore, Lease, Store, shard_of};

const REPLICAS: usize = 3;
const LEASE_TTL: Duration = Duration::from_secs(5);
const SIM_SPEED: &str = "400";
const JWT_SECRET: &str = "multi-replica-test-secret-0123456789";
const TENANTS: usize = 5;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `wpfleet` child process; killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    child: Child,
    client: Client,
}

impl Proc {
    /// Starts `wpfleet <args>` and waits for its `serving on URL` banner.
    fn spawn(name: &str, args: &[&str], env: &[(&str, &str)], logs: &Path) -> Self {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wpfleet"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn,wpfleet::reconcile::shards=info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn wpfleet");
        let url = read_url(&mut child);
        Self {
            name: name.to_owned(),
            child,
            client: Client::new(&url),
        }
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("stdout line");
        if let Some(url) = line.split("serving on ").nth(1) {
            let url = url.trim().to_owned();
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return url;
        }
    }
    panic!("wpfleet exited before printing its URL (see its log)");
}

/// The scenario's world: the table, the simulated cloud, the replicas.
struct Fleet {
    endpoint: String,
    table: String,
    store: DynamoStore,
    sim: Proc,
    replicas: Vec<Proc>,
    token: String,
    logs: PathBuf,
    dirs: tempfile::TempDir,
    started: usize,
}

impl Fleet {
    async fn start() -> Self {
        let endpoint = moto::endpoint();
        let table = format!("wpfleet-multi-{}", uuid::Uuid::new_v4().simple());
        let logs = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("multi_replica-{}", std::process::id()));
        std::fs::create_dir_all(&logs).unwrap();
        eprintln!("replica logs: {}", logs.display());
        let init = Command::new(env!("CARGO_BIN_EXE_wpfleet"))
            .args(["store", "init", "--table", &table])
            .env("AWS_ENDPOINT_URL", &endpoint)
            .output()
            .expect("run wpfleet store init");
        assert!(init.status.success(), "store init: {init:?}");
        let again = Command::new(env!("CARGO_BIN_EXE_wpfleet"))
            .args(["store", "init", "--table", &table])
            .env("AWS_ENDPOINT_URL", &endpoint)
            .output()
            .unwrap();
        assert!(
            again.status.success(),
            "store init is idempotent: {again:?}"
        );
        let dirs = tempfile::tempdir().unwrap();
        let sim_dir = dirs.path().join("sim");
        let sim = Proc::spawn(
            "sim-cloud",
            &[
                "sim-cloud",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                sim_dir.to_str().unwrap(),
                "--sim-speed",
                SIM_SPEED,
            ],
            &[],
            &logs,
        );
        let token = token();
        let store = DynamoStore::with_endpoint(&endpoint, &table).await;
        let mut fleet = Self {
            endpoint,
            table,
            store,
            sim,
            replicas: vec![],
            token,
            logs,
            dirs,
            started: 0,
        };
        for _ in 0..REPLICAS {
            fleet.add_replica();
        }
        fleet
    }

    fn add_replica(&mut self) {
        self.started += 1;
        let name = format!("r{}", self.started);
        let data = self.dirs.path().join(&name);
        let sim_url = self.sim.client.base.clone();
        let ttl = format!("{}ms", LEASE_TTL.as_millis());
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--store",
            "dynamodb",
            "--table",
            &self.table,
            "--cloud",
            "sim-remote",
            "--sim-url",
            &sim_url,
            "--replica-id",
            &name,
            "--lease-ttl",
            &ttl,
            "--pending-poll",
            "1s",
            "--resync-interval",
            "20s",
            "--jwt-secret",
            JWT_SECRET,
        ];
        let env = [("AWS_ENDPOINT_URL", self.endpoint.as_str())];
        let mut proc = Proc::spawn(&name, &args, &env, &self.logs);
        proc.client = proc.client.clone().with_token(Some(self.token.clone()));
        self.replicas.push(proc);
    }

    fn client(&self, n: usize) -> &Client {
        &self.replicas[n % self.replicas.len()].client
    }

    async fn leases(&self) -> Vec<Lease> {
        self.store.leases().await.expect("leases")
    }

    /// Waits until every shard is held by a live replica and each holds a fair share.
    async fn wait_balanced(&self) -> Duration {
        let started = Instant::now();
        let live: BTreeSet<String> = self.replicas.iter().map(|r| r.name.clone()).collect();
        let fair = 64usize.div_ceil(live.len());
        loop {
            let mut per: HashMap<String, usize> = HashMap::new();
            let now = wpfleet::model::now();
            for l in self.leases().await {
                if live.contains(&l.holder) && l.expires_at > now {
                    *per.entry(l.holder).or_default() += 1;
                }
            }
            let held: usize = per.values().sum();
            if held == 64 && per.values().all(|&n| n <= fair) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "shards not balanced: {per:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every instance has reached its generation, ACTIVE with `replicas`
    /// tasks; returns how long that took.
    async fn wait_converged(&self, expected: &BTreeMap<String, u32>) -> Duration {
        let started = Instant::now();
        let deadline = Duration::from_secs(300);
        loop {
            // The pending index is cheap to poll (keys of what is not converged); the full
            // listing is read once it is empty.
            let pending = self.store.pending(1000).await.expect("pending");
            if !pending.is_empty() && started.elapsed() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let instances = self.list_all().await;
            let done = instances.len() == expected.len()
                && instances.iter().all(|i| {
                    let path = format!(
                        "{}/{}",
                        i["tenantId"].as_str().unwrap(),
                        i["instanceId"].as_str().unwrap()
                    );
                    i["status"]["phase"] == "ACTIVE"
                        && i["status"]["observedGeneration"] == i["metadata"]["generation"]
                        && i["spec"]["configuration"]["desiredCount"] == json!(expected[&path])
                });
            if done {
                return started.elapsed();
            }
            if started.elapsed() > deadline {
                let behind: Vec<String> = instances
                    .iter()
                    .filter(|i| {
                        i["status"]["phase"] != "ACTIVE"
                            || i["status"]["observedGeneration"] != i["metadata"]["generation"]
                    })
                    .map(|i| {
                        format!(
                            "{}/{} {} gen {} observed {} last {} error {}",
                            i["tenantId"].as_str().unwrap(),
                            i["instanceId"].as_str().unwrap(),
                            i["status"]["phase"],
                            i["metadata"]["generation"],
                            i["status"]["observedGeneration"],
                            i["status"]["lastReconcileAt"],
                            i["status"]["lastError"]
                        )
                    })
                    .collect();
                panic!(
                    "not converged after {deadline:?}: {} of {} listed, {} behind: {behind:#?}",
                    instances.len(),
                    expected.len(),
                    behind.len()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn list_all(&self) -> Vec<Value> {
        let mut all = vec![];
        let mut next: Option<String> = None;
        loop {
            let q = match &next {
                Some(t) => format!("/v1.0/instances?limit=1000&nextToken={t}"),
                None => "/v1.0/instances?limit=1000".into(),
            };
            let r = self.client(0).get(&q).await;
            assert_eq!(r.status, 200, "{:#}", r.body);
            all.extend(r.body["instances"].as_array().unwrap().iter().cloned());
            match r.body["nextToken"].as_str() {
                Some(t) => next = Some(t.to_owned()),
                None => return all,
            }
        }
    }

    /// PUTs every `(path, desired)`, four at a time, through the replicas in turn (several
    /// clients, as in production; more at once only piles up throttling in the simulated
    /// cloud's rate limits).
    async fn put_all(&self, changes: &[(String, u32)]) {
        use futures::StreamExt;
        futures::stream::iter(changes.iter().enumerate())
            .for_each_concurrent(4, |(n, (path, desired))| self.put(n, path, *desired))
            .await;
    }

    /// PUTs the instance with `desired` tasks through replica `via`.
    async fn put(&self, via: usize, path: &str, desired: u32) {
        let (tenant, id) = path.split_once('/').unwrap();
        let body = json!({
            "organizationName": "Acme Ltd",
            "contactEmail": "ops@acme.example",
            "tier": "ENTERPRISE",
            "configuration": { "desiredCount": desired }
        });
        let r = self
            .client(via)
            .put(&common::instance_path(tenant, id), &body)
            .await;
        assert!(
            r.status == 200 || r.status == 201,
            "PUT {path}: {:#}",
            r.body
        );
    }

    /// Kills replica `n` with SIGKILL; returns its name and the shards it held.
    async fn kill(&mut self, n: usize) -> (String, BTreeSet<u32>) {
        let mut victim = self.replicas.remove(n);
        let now = wpfleet::model::now();
        let shards: BTreeSet<u32> = self
            .leases()
            .await
            .into_iter()
            .filter(|l| l.holder == victim.name && l.expires_at > now)
            .map(|l| l.shard)
            .collect();
        victim.kill9();
        let killed = wpfleet::model::now();
        // Its last renewals are final now: when its leases run out.
        let expiries: Vec<_> = self
            .leases()
            .await
            .into_iter()
            .filter(|l| l.holder == victim.name)
            .map(|l| (l.expires_at - killed).num_milliseconds())
            .collect();
        eprintln!(
            "{} killed; its leases run out {}..{} ms after",
            victim.name,
            expiries.iter().min().unwrap_or(&0),
            expiries.iter().max().unwrap_or(&0)
        );
        (victim.name.clone(), shards)
    }

    /// Time until every one of `shards` is held by a live replica other than `dead`.
    async fn wait_taken_over(
        &self,
        dead: &str,
        shards: &BTreeSet<u32>,
        since: Instant,
    ) -> Duration {
        let live: BTreeSet<&str> = self.replicas.iter().map(|r| r.name.as_str()).collect();
        loop {
            let now = wpfleet::model::now();
            let taken = self
                .leases()
                .await
                .into_iter()
                .filter(|l| shards.contains(&l.shard))
                .filter(|l| {
                    l.holder != dead && live.contains(l.holder.as_str()) && l.expires_at > now
                })
                .count();
            if taken == shards.len() {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < LEASE_TTL * 10,
                "shards of {dead} not taken over: {taken} of {}",
                shards.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn sim(&self, path: &str) -> Value {
        let r = self.sim.client.get(path).await;
        assert_eq!(r.status, 200, "{path}: {:#}", r.body);
        r.body
    }
}

fn token() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wpfleet"))
        .args(["token", "--secret", JWT_SECRET, "--operator"])
        .output()
        .expect("wpfleet token");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Per instance, the calls a pass made (they carry the pass's fencing token) must come
/// from one replica per token, in token order: a replica that lost or gave back a shard
/// never calls for its instances after the next holder started. Every mutating call is
/// made by a replica inside a pass.
fn assert_no_overlapping_passes(calls: &[Value]) -> usize {
    let mut per_instance: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for call in calls {
        let Some(instance) = call["instance"].as_str() else {
            continue;
        };
        let caller = call["caller"].as_str();
        let fence = call["fence"].as_u64();
        if call["mutating"] == true {
            assert!(
                caller.is_some() && fence.is_some(),
                "a mutating call outside a fenced pass: {call}"
            );
        }
        if let (Some(caller), Some(fence)) = (caller, fence) {
            per_instance
                .entry(instance)
                .or_default()
                .push((fence, caller));
        }
    }
    let mut handovers = 0;
    for (instance, seq) in &per_instance {
        let mut owner_of: HashMap<u64, &str> = HashMap::new();
        for window in seq.windows(2) {
            let ((t0, c0), (t1, c1)) = (window[0], window[1]);
            assert!(
                t1 >= t0,
                "{instance}: {c1} (token {t1}) called after {c0} (token {t0}): two replicas at once"
            );
            handovers += usize::from(c0 != c1);
        }
        for &(token, caller) in seq {
            let owner = *owner_of.entry(token).or_insert(caller);
            assert_eq!(
                owner, caller,
                "{instance}: token {token} used by two replicas"
            );
        }
    }
    handovers
}

/// Every instance has exactly one of each resource (a duplicate would be a second
/// service, database, log group or live access point for the same instance).
fn assert_no_duplicate_resources(inventory: &Value, instances: usize) {
    let count = |kind: &str, live: &dyn Fn(&Value) -> bool| {
        let mut per: HashMap<String, usize> = HashMap::new();
        for r in inventory[kind].as_array().unwrap() {
            if live(r) {
                let key = format!(
                    "{}/{}",
                    r["tenantId"].as_str().unwrap(),
                    r["instanceId"].as_str().unwrap()
                );
                *per.entry(key).or_default() += 1;
            }
        }
        per
    };
    let everything = |_: &Value| true;
    let not_deleted = |r: &Value| {
        let state = r["state"].as_str().or(r["status"].as_str()).unwrap_or("");
        !state.to_lowercase().contains("delet")
    };
    for (kind, live) in [
        ("services", &not_deleted as &dyn Fn(&Value) -> bool),
        ("databases", &not_deleted),
        ("logGroups", &everything),
        ("accessPoints", &not_deleted),
    ] {
        let per = count(kind, live);
        assert_eq!(per.len(), instances, "{kind}: one per instance: {per:?}");
        let dups: Vec<_> = per.iter().filter(|(_, n)| **n != 1).collect();
        assert!(dups.is_empty(), "{kind} duplicated: {dups:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_a_table_survive_a_kill_and_never_overlap() {
    let instances = setting("WPFLEET_MULTI_REPLICA_INSTANCES", 100);
    let rounds = setting("WPFLEET_MULTI_REPLICA_ROUNDS", 1);
    let test_started = Instant::now();
    let mut fleet = Fleet::start().await;
    eprintln!(
        "[{:.1?}] table, simulated cloud and replicas up",
        test_started.elapsed()
    );
    let balanced = fleet.wait_balanced().await;
    eprintln!(
        "[{:.1?}] {REPLICAS} replicas balanced 64 shards in {balanced:?}",
        test_started.elapsed()
    );

    // Created through every replica in turn: most land on a replica that does not own
    // them, and reach their owner through the pending index.
    let mut expected: BTreeMap<String, u32> = (0..instances)
        .map(|n| (format!("t{}/i{n}", n % TENANTS), 2))
        .collect();
    let creates: Vec<(String, u32)> = expected.clone().into_iter().collect();
    fleet.put_all(&creates).await;
    eprintln!(
        "[{:.1?}] {instances} instances created",
        test_started.elapsed()
    );
    let took = fleet.wait_converged(&expected).await;
    eprintln!(
        "[{:.1?}] {instances} instances converged {took:.1?} after the last create",
        test_started.elapsed()
    );

    for round in 0..rounds {
        let (dead, shards) = fleet.kill(round % fleet.replicas.len()).await;
        let killed_at = Instant::now();
        assert!(!shards.is_empty(), "{dead} held shards");
        let takeover = fleet.wait_taken_over(&dead, &shards, killed_at).await;
        eprintln!(
            "[{:.1?}] round {round}: {} shards of {dead} (killed with SIGKILL) taken over in \
             {takeover:.2?} (lease TTL {LEASE_TTL:?})",
            test_started.elapsed(),
            shards.len(),
        );
        assert!(
            takeover <= LEASE_TTL + Duration::from_secs(2),
            "takeover took {takeover:?}, more than the lease TTL + 2 s"
        );
        // Work for the taken-over shards (and others), through the survivors.
        let owned_by_dead: Vec<String> = expected
            .keys()
            .filter(|p| {
                let k = wpfleet::model::InstanceKey::parse_path(p).unwrap();
                shards.contains(&shard_of(&k, 64))
            })
            .cloned()
            .collect();
        assert!(
            !owned_by_dead.is_empty(),
            "the dead replica owned instances"
        );
        let desired = 3 + (round % 2) as u32;
        let rescale: Vec<(String, u32)> =
            owned_by_dead.iter().map(|p| (p.clone(), desired)).collect();
        fleet.put_all(&rescale).await;
        expected.extend(rescale);
        let took = fleet.wait_converged(&expected).await;
        eprintln!(
            "[{:.1?}] round {round}: {} instances of the dead replica's shards rescaled, \
             converged {took:.1?} after",
            test_started.elapsed(),
            owned_by_dead.len()
        );

        // A replacement joins: shards are drained and handed over while work goes on.
        fleet.add_replica();
        let changed: Vec<(String, u32)> = expected
            .iter()
            .step_by(5)
            .map(|(path, &n)| (path.clone(), if n == 2 { 3 } else { 2 }))
            .collect();
        fleet.put_all(&changed).await;
        expected.extend(changed.iter().cloned());
        let balanced = fleet.wait_balanced().await;
        let took = fleet.wait_converged(&expected).await;
        eprintln!(
            "[{:.1?}] round {round}: replacement joined, balanced {balanced:.1?} and {} changes \
             converged {took:.1?} after the last change",
            test_started.elapsed(),
            changed.len()
        );
    }

    let calls = fleet.sim("/v1.0/sim/calls").await;
    let calls = calls.as_array().unwrap();
    let handovers = assert_no_overlapping_passes(calls);
    assert_no_duplicate_resources(&fleet.sim("/v1.0/sim/inventory").await, expected.len());
    eprintln!(
        "{} cloud calls checked, {handovers} hand-overs of an instance between replicas, \
         none overlapping; whole test {:.1?}",
        calls.len(),
        test_started.elapsed()
    );
}
