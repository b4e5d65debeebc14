//! Reliability 1 (issue 7): crash anywhere. Instances go through create, scale, suspend,
//! resume, backup, restore and (every third) delete over HTTP against the real
//! `wpfleet serve`, while a supervisor SIGKILLs it at random moments and starts it again
//! on the same data directory (the embedded store and the simulated cloud's file survive,
//! like AWS outlives a controller). A write whose answer was lost to a kill is resolved by
//! reading the instance after the restart (applied or not, never half) and sent again if
//! it was not applied. Afterwards:
//! * every instance reached its desired state, and the simulated cloud holds exactly that:
//!   no duplicate, no orphan, nothing of superseded data epochs;
//! * no backup has two backup jobs and no restore two restore jobs;
//! * no acknowledged (2xx) write was lost: the harness's own log of them is compared with
//!   the final records.
//!
//! CI runs 20 instances and at least 10 kills; `WPFLEET_SOAK=1` runs 200 and at least 50.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::harness::{Expect, Supervisor, await_inventory, figure, seed, sized, try_send};
use common::{Reply, instance_path, spec};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TEST: &str = "crash";
const WAIT: Duration = Duration::from_secs(240);

/// One acknowledged write: what it was and what the answer said.
#[derive(Debug, Clone)]
struct Ack {
    instance: String,
    what: &'static str,
    generation: Option<u64>,
    /// A backup id or a restore request id.
    id: Option<String>,
}

#[derive(Default, Clone)]
struct Acks(Arc<std::sync::Mutex<Vec<Ack>>>);

impl Acks {
    fn push(&self, a: Ack) {
        self.0.lock().unwrap().push(a);
    }
}

/// Statistics of the run.
#[derive(Default)]
struct Counts {
    ambiguous: std::sync::atomic::AtomicU64,
}

struct Driver {
    sup: Arc<Supervisor>,
    acks: Acks,
    counts: Arc<Counts>,
}

impl Driver {
    /// Sends a write until it is answered, or (answer lost to a kill) until `applied`
    /// says the stored instance already shows it. `None`: applied without an answer.
    async fn write(
        &self,
        path: &str,
        what: &'static str,
        build: impl Fn(&common::Client) -> reqwest::RequestBuilder,
        applied: impl Fn(&Value) -> bool,
    ) -> Option<Reply> {
        let mut lost = false;
        loop {
            if lost {
                let now = self.sup.get(path).await;
                if now.status == 200 && applied(&now.body) {
                    return None;
                }
            }
            let (c, _) = self.sup.client().await;
            match try_send(&c, build(&c)).await {
                Ok(r) if r.status >= 500 => panic!("{what} {path}: {} {:#}", r.status, r.body),
                // Refused because a lost attempt was applied after all (e.g. suspending
                // what the lost attempt suspended): look again.
                Ok(r) if lost && (r.status == 422 || r.status == 409) => continue,
                Ok(r) => {
                    assert!(r.status < 300, "{what} {path}: {} {:#}", r.status, r.body);
                    return Some(r);
                }
                Err(_) => {
                    lost = true;
                    self.counts.ambiguous.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn ack(&self, instance: &str, what: &'static str, r: &Option<Reply>, id: Option<String>) {
        if let Some(r) = r {
            self.acks.push(Ack {
                instance: instance.to_owned(),
                what,
                generation: r.body["metadata"]["generation"].as_u64(),
                id,
            });
        }
    }

    async fn wait(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.sup.get(path).await;
            if r.status == 200 && done(&r.body) {
                return r.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: not {what} after {WAIT:?}: {:#}",
                r.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn lifecycle(&self, id: &str, delete: bool) -> Expect {
        let path = instance_path("t1", id);
        let at = |suffix: &str| format!("{path}{suffix}");
        let settled = |phase: &'static str| {
            move |b: &Value| {
                b["status"]["phase"] == phase
                    && b["status"]["observedGeneration"] == b["metadata"]["generation"]
            }
        };
        let r = self
            .write(
                &path,
                "create",
                |c| c.http.put(c.url(&path)).json(&spec(2)),
                |_| false,
            )
            .await;
        self.ack(id, "create", &r, None);
        self.wait(&path, "created", settled("ACTIVE")).await;

        let r = self
            .write(
                &path,
                "scale",
                |c| {
                    c.http
                        .post(c.url(&at("/scale")))
                        .json(&json!({"desiredCount": 3}))
                },
                |b| b["spec"]["configuration"]["desiredCount"] == 3,
            )
            .await;
        self.ack(id, "scale", &r, None);
        self.wait(&path, "scaled", settled("ACTIVE")).await;

        for (verb, state, phase) in [
            ("suspend", "SUSPENDED", "SUSPENDED"),
            ("resume", "ACTIVE", "ACTIVE"),
        ] {
            let url = at(&format!("/{verb}"));
            let r = self
                .write(
                    &path,
                    verb,
                    |c| c.http.post(c.url(&url)),
                    |b| b["spec"]["state"] == state,
                )
                .await;
            self.ack(
                id,
                if verb == "suspend" {
                    "suspend"
                } else {
                    "resume"
                },
                &r,
                None,
            );
            self.wait(&path, phase, settled(phase)).await;
        }

        // Backup: a lost answer is resolved by the backup record it left (this script asks
        // for one backup per instance).
        let backups = at("/backups");
        let r = self
            .write(
                &backups,
                "backup",
                |c| c.http.post(c.url(&at("/backup"))),
                |list| !list["backups"].as_array().is_none_or(Vec::is_empty),
            )
            .await;
        let backup_id = match &r {
            Some(r) => r.body["backupId"].as_str().unwrap().to_owned(),
            None => self.sup.get(&backups).await.body["backups"][0]["backupId"]
                .as_str()
                .unwrap()
                .to_owned(),
        };
        self.ack(id, "backup", &r, Some(backup_id.clone()));
        let records = self.sup.get(&backups).await.body;
        assert_eq!(
            records["backups"].as_array().unwrap().len(),
            1,
            "{id}: one backup asked, {records:#}"
        );
        self.wait(&at(&format!("/backups/{backup_id}")), "backed up", |b| {
            assert_ne!(b["status"], "FAILED", "{b:#}");
            b["status"] == "COMPLETED"
        })
        .await;

        let r = self
            .write(
                &path,
                "restore",
                |c| {
                    c.http
                        .post(c.url(&at("/restore")))
                        .json(&json!({ "backupId": backup_id }))
                },
                |b| b["spec"]["restore"]["backupId"] == backup_id.as_str(),
            )
            .await;
        let request = match &r {
            Some(r) => r.body["requestId"].as_str().unwrap().to_owned(),
            None => self.sup.get(&path).await.body["spec"]["restore"]["requestId"]
                .as_str()
                .unwrap()
                .to_owned(),
        };
        self.ack(id, "restore", &r, Some(request.clone()));
        self.wait(&path, "restored", |b| {
            settled("ACTIVE")(b)
                && b["status"]["restore"]["requestId"] == request.as_str()
                && b["status"]["restore"]["stage"] == "COMPLETED"
        })
        .await;
        let mut expect = Expect {
            restore_request: Some(request),
            ..Expect::active(3)
        };
        if delete {
            let r = self
                .write(
                    &path,
                    "delete",
                    |c| c.http.delete(c.url(&path)),
                    |b| !b["metadata"]["deletionRequestedAt"].is_null(),
                )
                .await;
            self.ack(id, "delete", &r, None);
            self.wait(&path, "deprovisioned", settled("DEPROVISIONED"))
                .await;
            expect.deleted = true;
        }
        expect
    }
}

/// Every acknowledged write is in the final records.
async fn check_acks(sup: &Supervisor, acks: &[Ack], expect: &BTreeMap<(String, String), Expect>) {
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for a in acks {
        if let Some(g) = a.generation {
            let n = newest.entry(&a.instance).or_default();
            *n = (*n).max(g);
        }
    }
    for ((t, id), e) in expect {
        let b = sup.get(&instance_path(t, id)).await.body;
        let spec = &b["spec"];
        assert_eq!(
            spec["configuration"]["desiredCount"], 3,
            "{id}: scale lost: {b:#}"
        );
        assert_eq!(spec["state"], "ACTIVE", "{id}: resume lost: {b:#}");
        assert_eq!(
            spec["restore"]["requestId"].as_str(),
            e.restore_request.as_deref(),
            "{id}: restore lost"
        );
        assert_eq!(
            !b["metadata"]["deletionRequestedAt"].is_null(),
            e.deleted,
            "{id}: delete lost"
        );
        let generation = b["metadata"]["generation"].as_u64().unwrap();
        let acked = newest.get(id.as_str()).copied().unwrap_or(0);
        assert!(
            generation >= acked,
            "{id}: generation {generation} < acknowledged {acked}"
        );
    }
    for a in acks.iter().filter(|a| a.what == "backup") {
        let id = a.id.as_deref().unwrap();
        let r = sup
            .get(&format!(
                "{}/backups/{id}",
                instance_path("t1", &a.instance)
            ))
            .await;
        assert_eq!(r.status, 200, "backup {id} of {} lost", a.instance);
        assert_eq!(r.body["status"], "COMPLETED", "{:#}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_anywhere_loses_nothing_and_leaves_no_duplicate() {
    let instances = sized(20, 200);
    let min_kills = sized(10, 50);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed(TEST));
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::start(dir.path().to_path_buf(), &[]).await;
    let driver = Arc::new(Driver {
        sup: sup.clone(),
        acks: Acks::default(),
        counts: Arc::new(Counts::default()),
    });
    let started = std::time::Instant::now();
    let workload = {
        let driver = driver.clone();
        tokio::spawn(async move {
            // Not all at once: instances start over the first seconds, so kills land in
            // every stage of their lifecycles.
            let runs = (0..instances).map(|i| {
                let driver = driver.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(150 * i as u64 % 6000)).await;
                    let id = format!("c{i}");
                    let e = driver.lifecycle(&id, i % 3 == 2).await;
                    (("t1".to_owned(), id), e)
                }
            });
            let expect: BTreeMap<_, _> =
                futures::future::join_all(runs).await.into_iter().collect();
            expect
        })
    };
    // The supervisor: kill at random moments until the workload is done (or failed: a
    // panicking workload must fail the test, not leave it killing forever) and enough
    // kills happened.
    while !(workload.is_finished() && sup.kills() >= min_kills) {
        let pause = rng.random_range(300..sized(2500, 4000));
        tokio::time::sleep(Duration::from_millis(pause)).await;
        sup.kill9().await;
        sup.restart().await;
    }
    let expect = workload.await.unwrap();
    let inventory = async || sup.get("/v1.0/sim/inventory").await.body;
    let inv = await_inventory(inventory, &expect, Duration::from_secs(120)).await;
    let acks = driver.acks.0.lock().unwrap().clone();
    check_acks(&sup, &acks, &expect).await;
    let jobs = |kind: &str| inv[kind].as_array().map_or(0, Vec::len);
    assert_eq!(jobs("backupJobs"), instances, "one backup job per backup");
    assert_eq!(
        jobs("restoreJobs"),
        instances,
        "one restore job per restore"
    );
    figure(TEST, "instances", instances);
    figure(TEST, "kills_survived", sup.kills());
    figure(TEST, "acknowledged_writes_checked", acks.len());
    figure(
        TEST,
        "writes_with_answers_lost_to_kills",
        driver.counts.ambiguous.load(Ordering::Relaxed),
    );
    figure(TEST, "seconds", started.elapsed().as_secs());
}
