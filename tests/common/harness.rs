//! The reliability harness (issue 7), shared by `tests/reliability_*.rs`: sizing for CI and
//! soak runs, requests that may fail (the server may be dead), a supervisor that SIGKILLs
//! and restarts the real `wpfleet serve`, and the checks of the simulated cloud's inventory
//! that every test ends with (no duplicate, no orphan, each instance as desired).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use tokio::sync::RwLock;
use wpfleet::cloud::names::{ResourceNames, epoch_of};
use wpfleet::model::InstanceKey;

use super::{BinaryServer, Client, Reply};

/// `WPFLEET_SOAK=1` runs every reliability test longer and bigger.
pub fn soak() -> bool {
    std::env::var("WPFLEET_SOAK").is_ok_and(|v| v == "1")
}

/// `ci` in the default run, `soak` with `WPFLEET_SOAK=1`.
pub fn sized<T>(ci: T, soak_size: T) -> T {
    if soak() { soak_size } else { ci }
}

/// The seed of a randomized test: `WPFLEET_SEED` to replay one, else random. Printed, so a
/// failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("WPFLEET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{test}: seed {seed} (replay with WPFLEET_SEED={seed})");
    seed
}

/// A figure for docs/RELIABILITY.md: printed as `RELIABILITY <test> <name>=<value>`.
pub fn figure(test: &str, name: &str, value: impl std::fmt::Display) {
    eprintln!("RELIABILITY {test} {name}={value}");
}

/// Like `Client::send`, but a request that does not reach the server (it is dead, or dies
/// while answering) is an `Err` instead of a panic.
pub async fn try_send(c: &Client, req: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let req = match &c.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let res = req.send().await?;
    let status = res.status().as_u16();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header("etag");
    let location = header("location");
    let bytes = res.bytes().await?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(Reply {
        status,
        etag,
        location,
        body,
    })
}

pub async fn try_get(c: &Client, path: &str) -> Result<Reply, reqwest::Error> {
    try_send(c, c.http.get(c.url(path))).await
}

pub async fn try_post(c: &Client, path: &str, body: &Value) -> Result<Reply, reqwest::Error> {
    try_send(c, c.http.post(c.url(path)).json(body)).await
}

pub async fn try_put(c: &Client, path: &str, body: &Value) -> Result<Reply, reqwest::Error> {
    try_send(c, c.http.put(c.url(path)).json(body)).await
}

pub async fn try_delete(c: &Client, path: &str) -> Result<Reply, reqwest::Error> {
    try_send(c, c.http.delete(c.url(path))).await
}

/// The real `wpfleet serve` on one data directory, killed with SIGKILL and started again on
/// demand. Clients ask for the current server's client; while it is down they wait.
pub struct Supervisor {
    pub dir: PathBuf,
    extra: Vec<String>,
    server: RwLock<Option<BinaryServer>>,
    /// Bumped on every start, so a caller can tell "the server I talked to died".
    incarnation: std::sync::atomic::AtomicU64,
    pub kills: std::sync::atomic::AtomicU64,
}

impl Supervisor {
    pub async fn start(dir: PathBuf, extra: &[&str]) -> Arc<Self> {
        let sup = Arc::new(Self {
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            server: RwLock::new(None),
            incarnation: Default::default(),
            kills: Default::default(),
        });
        sup.restart().await;
        sup
    }

    /// Starts the server (after a kill). The store and simulated cloud files are reopened.
    pub async fn restart(&self) {
        let mut slot = self.server.write().await;
        assert!(slot.is_none(), "restart while running");
        let dir = self.dir.clone();
        let extra = self.extra.clone();
        let server = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = extra.iter().map(String::as_str).collect();
            BinaryServer::spawn(&dir, &args)
        })
        .await
        .expect("spawn");
        *slot = Some(server);
        self.incarnation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// SIGKILL: no shutdown hook runs, files are left as the crash leaves them.
    pub async fn kill9(&self) {
        let mut slot = self.server.write().await;
        if let Some(server) = slot.take() {
            tokio::task::spawn_blocking(move || server.kill9())
                .await
                .expect("kill");
            self.kills.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The running server's client and incarnation; waits while it is down.
    pub async fn client(&self) -> (Client, u64) {
        loop {
            {
                let slot = self.server.read().await;
                if let Some(s) = slot.as_ref() {
                    let inc = self.incarnation.load(std::sync::atomic::Ordering::SeqCst);
                    return (s.client.clone(), inc);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kills(&self) -> u64 {
        self.kills.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// GET that survives restarts: retried on the next server until it answers.
    pub async fn get(&self, path: &str) -> Reply {
        loop {
            let (c, _) = self.client().await;
            if let Ok(r) = try_get(&c, path).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What an instance should look like in the cloud once converged.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub deleted: bool,
    pub active: bool,
    pub desired_count: u32,
    /// The restore request whose data epoch is in use, if any.
    pub restore_request: Option<String>,
    /// What the site's files and database hold (what the restored backup captured).
    pub data: Option<String>,
    /// The id of the access point on the restored data, seen when the restore completed.
    pub restored_access_point: Option<String>,
}

impl Expect {
    pub fn active(desired_count: u32) -> Self {
        Self {
            deleted: false,
            active: true,
            desired_count,
            restore_request: None,
            data: None,
            restored_access_point: None,
        }
    }
}

fn owner(r: &Value) -> (String, String) {
    (
        r["tenantId"].as_str().unwrap_or_default().to_owned(),
        r["instanceId"].as_str().unwrap_or_default().to_owned(),
    )
}

fn of<'a>(inv: &'a Value, kind: &str, key: &(String, String)) -> Vec<&'a Value> {
    inv[kind]
        .as_array()
        .map(|a| a.iter().filter(|r| &owner(r) == key).collect())
        .unwrap_or_default()
}

/// Everything wrong with the simulated inventory `inv` (`GET /v1.0/sim/inventory`) given
/// what each instance should be; empty when the cloud is exactly as desired:
/// * a live instance has one service (its count, settled), one access point on the
///   directory of its data epoch, one database of that epoch (available, or stopped when
///   suspended) and one log group; nothing of superseded epochs is left;
/// * a deleted instance has no service, access point, database or log group left (its
///   final snapshots stay: they are the data kept for the retention period);
/// * nothing belongs to an instance the test never made (no orphan);
/// * no backup has two backup jobs, no restore two restore jobs.
pub fn inventory_problems(inv: &Value, expect: &BTreeMap<(String, String), Expect>) -> Vec<String> {
    let mut problems = Vec::new();
    for kind in [
        "services",
        "accessPoints",
        "databases",
        "logGroups",
        "snapshots",
    ] {
        for r in inv[kind].as_array().into_iter().flatten() {
            let key = owner(r);
            if !expect.contains_key(&key) {
                problems.push(format!("orphan in {kind}: {r}"));
            }
        }
    }
    for (key, want) in expect {
        let k = InstanceKey::from_strs(&key.0, &key.1);
        let names = ResourceNames::for_key(&k);
        let epoch = want.restore_request.as_deref().map(epoch_of);
        let who = format!("{}/{}", key.0, key.1);
        let services = of(inv, "services", key);
        let aps = of(inv, "accessPoints", key);
        let dbs = of(inv, "databases", key);
        let logs = of(inv, "logGroups", key);
        if want.deleted {
            for (kind, left) in [
                ("service", services.len()),
                ("access point", aps.len()),
                ("database", dbs.len()),
                ("log group", logs.len()),
            ] {
                if left > 0 {
                    problems.push(format!("{who}: deleted but {left} {kind}(s) left"));
                }
            }
            continue;
        }
        let count = if want.active { want.desired_count } else { 0 };
        match services.as_slice() {
            [s] if s["name"] == names.service.as_str()
                && s["status"] == "ACTIVE"
                && s["desiredCount"] == count
                && s["runningCount"] == count
                && s["pendingCount"] == 0 => {}
            [] if !want.active => {}
            other => problems.push(format!("{who}: want one service at {count}: {other:?}")),
        }
        let root = names.access_point_root(epoch.as_deref());
        match aps.as_slice() {
            [a] if a["rootPath"] == root.as_str() && a["state"] == "available" => {}
            other => problems.push(format!(
                "{who}: want one available access point on {root}: {other:?}"
            )),
        }
        let db = names.database(epoch.as_deref());
        let db_state = if want.active { "available" } else { "stopped" };
        match dbs.as_slice() {
            [d] if d["identifier"] == db.as_str() && d["status"] == db_state => {}
            other => problems.push(format!(
                "{who}: want one {db_state} database {db}: {other:?}"
            )),
        }
        if let Some(data) = &want.data {
            let files = aps.first().map(|a| a["data"].clone());
            let rows = dbs.first().map(|d| d["data"].clone());
            if files != Some(data.as_str().into()) || rows != Some(data.as_str().into()) {
                problems.push(format!(
                    "{who}: data lost: want {data:?}, files {files:?}, database {rows:?}"
                ));
            }
        }
        if logs.len() != 1 {
            problems.push(format!("{who}: want one log group, found {}", logs.len()));
        }
    }
    problems.extend(duplicate_jobs(inv));
    problems
}

/// Backups with more than one backup job, restores with more than one restore job or
/// relocation task (a restore's target directory names its request's epoch).
pub fn duplicate_jobs(inv: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (kind, field) in [
        ("backupJobs", "backupId"),
        ("restoreJobs", "targetRoot"),
        ("relocationTasks", "targetRoot"),
    ] {
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for j in inv[kind].as_array().into_iter().flatten() {
            *per.entry(j[field].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        for (id, n) in per.into_iter().filter(|(_, n)| *n > 1) {
            problems.push(format!("{kind}: {n} jobs for {field} {id}"));
        }
    }
    problems
}

/// Polls `inventory_problems` until it is empty; panics with the last problems on timeout.
pub async fn await_inventory(
    get_inventory: impl AsyncFn() -> Value,
    expect: &BTreeMap<(String, String), Expect>,
    timeout: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let inv = get_inventory().await;
        let problems = inventory_problems(&inv, expect);
        if problems.is_empty() {
            return inv;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "the cloud did not reach the desired state in {timeout:?}: {} problem(s):\n{}",
                problems.len(),
                problems.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Epoch milliseconds, the clock of the simulated cloud's call log.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One write the harness sent: to which instance, when it left and when it was answered
/// (a trigger of that instance happened in between).
#[derive(Debug, Clone)]
pub struct Write {
    pub instance: String,
    pub sent: i64,
    pub answered: i64,
    pub what: String,
    pub status: u16,
}

/// Every write of a test, in the order sent.
#[derive(Debug, Clone, Default)]
pub struct WriteLog(pub Arc<std::sync::Mutex<Vec<Write>>>);

impl WriteLog {
    pub fn push(&self, w: Write) {
        self.0.lock().unwrap().push(w);
    }

    pub fn all(&self) -> Vec<Write> {
        self.0.lock().unwrap().clone()
    }
}

/// Sends one write and logs it; panics unless the answer is `want`.
async fn logged(
    log: &WriteLog,
    c: &Client,
    instance: &str,
    what: &str,
    want: u16,
    req: reqwest::RequestBuilder,
) -> Reply {
    let sent = now_ms();
    let r = c.send(req).await;
    log.push(Write {
        instance: instance.to_owned(),
        sent,
        answered: now_ms(),
        what: what.to_owned(),
        status: r.status,
    });
    assert_eq!(r.status, want, "{what} of {instance}: {:#}", r.body);
    r
}

/// Polls the instance until `done`; panics with the last body after `timeout`.
pub async fn await_instance(
    c: &Client,
    path: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let r = c.get(path).await;
        if r.status == 200 && done(&r.body) {
            return r.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: not {what} after {timeout:?}: {:#}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn settled(b: &Value, phase: &str) -> bool {
    b["status"]["phase"] == phase
        && b["status"]["observedGeneration"] == b["metadata"]["generation"]
}

/// Drives one instance through the whole lifecycle over HTTP, waiting for each step to
/// converge: create (2 tasks), scale to 3, suspend, resume, backup, restore from it, and
/// delete when `delete`. Returns what the cloud should hold for it at the end.
pub async fn lifecycle(
    c: &Client,
    tenant: &str,
    id: &str,
    delete: bool,
    log: &WriteLog,
    timeout: Duration,
) -> Expect {
    let path = super::instance_path(tenant, id);
    let key = format!("{tenant}/{id}");
    let url = |suffix: &str| c.url(&format!("{path}{suffix}"));
    let wait = async |what: &str, phase: &'static str| {
        await_instance(c, &path, timeout, what, |b| settled(b, phase)).await
    };
    let put = c.http.put(url("")).json(&super::spec(2));
    logged(log, c, &key, "create", 201, put).await;
    wait("created", "ACTIVE").await;
    let backed_up = format!("{key} as backed up");
    write_data(c, tenant, id, &backed_up, timeout).await;
    let scale = c
        .http
        .post(url("/scale"))
        .json(&serde_json::json!({ "desiredCount": 3 }));
    logged(log, c, &key, "scale", 200, scale).await;
    wait("scaled", "ACTIVE").await;
    logged(log, c, &key, "suspend", 200, c.http.post(url("/suspend"))).await;
    wait("suspended", "SUSPENDED").await;
    logged(log, c, &key, "resume", 200, c.http.post(url("/resume"))).await;
    wait("resumed", "ACTIVE").await;
    let r = logged(log, c, &key, "backup", 202, c.http.post(url("/backup"))).await;
    let backup = r.body["backupId"].as_str().unwrap().to_owned();
    let backup_path = format!("{path}/backups/{backup}");
    await_instance(c, &backup_path, timeout, "backed up", |b| {
        assert_ne!(b["status"], "FAILED", "backup failed: {b:#}");
        b["status"] == "COMPLETED"
    })
    .await;
    write_data(c, tenant, id, &format!("{key} after the backup"), timeout).await;
    let restore = c
        .http
        .post(url("/restore"))
        .json(&serde_json::json!({ "backupId": backup }));
    let r = logged(log, c, &key, "restore", 202, restore).await;
    let request = r.body["requestId"].as_str().unwrap().to_owned();
    await_instance(c, &path, timeout, "restored", |b| {
        settled(b, "ACTIVE")
            && b["status"]["restore"]["requestId"] == request.as_str()
            && b["status"]["restore"]["stage"] == "COMPLETED"
    })
    .await;
    let root = ResourceNames::for_key(&InstanceKey::from_strs(tenant, id))
        .access_point_root(Some(&epoch_of(&request)));
    let inv = c.get("/v1.0/sim/inventory").await.body;
    let restored_access_point = inv["accessPoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rootPath"] == root.as_str())
        .map(|a| a["id"].as_str().unwrap().to_owned());
    let mut expect = Expect {
        restore_request: Some(request),
        data: Some(backed_up),
        restored_access_point,
        ..Expect::active(3)
    };
    if delete {
        logged(log, c, &key, "delete", 202, c.http.delete(url(""))).await;
        wait("deleted", "DEPROVISIONED").await;
        expect.deleted = true;
    }
    expect
}

/// "WordPress writes" `data` into the site's files and database (a simulated-cloud drift),
/// retried while the site cannot take writes yet.
pub async fn write_data(c: &Client, tenant: &str, id: &str, data: &str, timeout: Duration) {
    let path = format!("/v1.0/sim/tenants/{tenant}/instances/{id}/drift");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let r = c
            .post(&path, &serde_json::json!({ "writeData": data }))
            .await;
        if r.status == 200 {
            return;
        }
        assert!(
            r.status == 422 && tokio::time::Instant::now() < deadline,
            "writing data to {tenant}/{id}: {:#}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `lifecycle` for `n` instances of tenant `t1` at once (every third is deleted at
/// the end); returns the expectations for `inventory_problems`.
pub async fn lifecycles(
    c: &Client,
    n: usize,
    log: &WriteLog,
    timeout: Duration,
) -> BTreeMap<(String, String), Expect> {
    let runs = (0..n).map(|i| {
        let id = format!("i{i}");
        async move {
            let expect = lifecycle(c, "t1", &id, i % 3 == 2, log, timeout).await;
            (("t1".to_owned(), id), expect)
        }
    });
    futures::future::join_all(runs).await.into_iter().collect()
}
