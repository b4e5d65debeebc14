//! Reliability 6 (issue 7): the embedded store under the real server. Writers burst PUTs
//! and backup requests over HTTP while the server is SIGKILLed at a random moment; after
//! each restart the database opens cleanly and every acknowledged (2xx) write is there.
//! `WPFLEET_SOAK=1`: more instances, more rounds.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::harness::{Supervisor, figure, seed, sized, try_post, try_put};
use common::{instance_path, spec};
use rand::{Rng, SeedableRng};
use serde_json::Value;

const TEST: &str = "durability";

/// What one writer got acknowledged before the kill, and what it had in flight.
#[derive(Debug, Default, Clone)]
struct Acked {
    /// The last write answered 2xx: its number and the generation it returned.
    last: Option<(u64, u64)>,
    /// A write sent but not answered when the server died (applied or not).
    in_flight: Option<u64>,
}

fn org(n: u64) -> String {
    format!("Write {n}")
}

fn body(n: u64) -> Value {
    let mut s = spec(2);
    s["organizationName"] = org(n).into();
    s
}

/// Writes `Write 1`, `Write 2`, … to one instance until the server stops answering.
async fn writer(c: common::Client, id: String, from: u64) -> Acked {
    let mut acked = Acked::default();
    for n in from.. {
        match try_put(&c, &instance_path("t1", &id), &body(n)).await {
            Ok(r) if r.status == 200 || r.status == 201 => {
                let generation = r.body["metadata"]["generation"].as_u64().unwrap();
                acked.last = Some((n, generation));
            }
            Ok(r) => panic!("write {n} to {id}: unexpected {} {:#}", r.status, r.body),
            Err(_) => {
                acked.in_flight = Some(n);
                return acked;
            }
        }
    }
    unreachable!()
}

/// Requests backups of the instances in turn until the server stops answering.
async fn backup_writer(c: common::Client, ids: Vec<String>) -> Vec<(String, String)> {
    let mut acked = vec![];
    for id in ids.iter().cycle() {
        match try_post(
            &c,
            &format!("{}/backup", instance_path("t1", id)),
            &Value::Null,
        )
        .await
        {
            Ok(r) if r.status == 202 => {
                acked.push((id.clone(), r.body["backupId"].as_str().unwrap().to_owned()));
            }
            Ok(r) => panic!("backup of {id}: unexpected {} {:#}", r.status, r.body),
            Err(_) => return acked,
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_api_writes_survive_kill_9_of_the_server() {
    let instances = sized(6, 16);
    let rounds = sized(4, 25);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed(TEST));
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::start(dir.path().to_path_buf(), &[]).await;
    let ids: Vec<String> = (0..instances).map(|i| format!("d{i}")).collect();
    // Next write number per instance: after a kill, numbering goes on from what is stored.
    let mut next: BTreeMap<String, u64> = ids.iter().map(|id| (id.clone(), 2)).collect();
    let (c, _) = sup.client().await;
    for id in &ids {
        assert_eq!(c.put(&instance_path("t1", id), &body(1)).await.status, 201);
    }
    let (mut checked_writes, mut checked_backups) = (0u64, 0u64);
    for round in 0..rounds {
        let (c, _) = sup.client().await;
        let writers: Vec<_> = ids
            .iter()
            .map(|id| tokio::spawn(writer(c.clone(), id.clone(), next[id])))
            .collect();
        let backups = tokio::spawn(backup_writer(c.clone(), ids.clone()));
        // Kill in the middle of the burst.
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..700))).await;
        sup.kill9().await;
        let mut acked = BTreeMap::new();
        for (id, w) in ids.iter().zip(writers) {
            acked.insert(id.clone(), w.await.unwrap());
        }
        let acked_backups = backups.await.unwrap();

        sup.restart().await;
        let (c, _) = sup.client().await;
        let ready = c.get("/readyz").await;
        assert_eq!(
            ready.status, 200,
            "round {round}: store opens: {:#}",
            ready.body
        );
        for (id, a) in &acked {
            let stored = c.get(&instance_path("t1", id)).await;
            let Some((n, generation)) = a.last else {
                continue; // nothing acknowledged this round
            };
            assert_eq!(
                stored.status, 200,
                "round {round}: {id} lost: {:#}",
                stored.body
            );
            let org_now = stored.body["spec"]["organizationName"].as_str().unwrap();
            let gen_now = stored.body["metadata"]["generation"].as_u64().unwrap();
            // The last acknowledged write, or the one in flight at the kill: never older.
            let allowed: Vec<String> = std::iter::once(n).chain(a.in_flight).map(org).collect();
            assert!(
                allowed.iter().any(|o| o == org_now),
                "round {round}: {id} has {org_now:?}, acknowledged {:?} (allowed {allowed:?})",
                org(n)
            );
            assert!(
                gen_now >= generation,
                "round {round}: {id} generation {gen_now} < acknowledged {generation}"
            );
            checked_writes += n - next[id] + 1;
            let stored_n: u64 = org_now.trim_start_matches("Write ").parse().unwrap();
            next.insert(id.clone(), stored_n + 1);
        }
        for (id, backup_id) in &acked_backups {
            let r = c
                .get(&format!("{}/backups/{backup_id}", instance_path("t1", id)))
                .await;
            assert_eq!(
                r.status, 200,
                "round {round}: backup {backup_id} of {id} lost"
            );
        }
        checked_backups += acked_backups.len() as u64;
    }
    // The store still takes writes after the last repair.
    let (c, _) = sup.client().await;
    let r = c.put(&instance_path("t1", "after"), &spec(2)).await;
    assert_eq!(r.status, 201, "{:#}", r.body);
    assert!(
        checked_writes > 0,
        "no write was acknowledged before a kill"
    );
    figure(TEST, "kills", sup.kills());
    figure(TEST, "acknowledged_writes_checked", checked_writes);
    figure(TEST, "acknowledged_backups_checked", checked_backups);
}
