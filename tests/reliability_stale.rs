//! Reliability 3 (issue 7): stale and missed views, after Sieve (OSDI'22). The simulated
//! cloud answers many observations with an older snapshot of an instance's resources
//! (stale), or with the service of one moment and the data resources of another (two
//! updates seen in the wrong order), and drops many of the triggers of API writes (a
//! missed event; only the periodic resync notices the write). Instances go through their
//! whole lifecycle meanwhile. The call log must show no destructive action on a stale
//! view: no service, access point or database of a live instance is deleted (or deleted
//! and recreated), only the data a completed restore superseded is retired, and a deleted
//! instance's resources go only after its deletion was asked for. Everything converges:
//! with the faults still on, and again on the pass a reconcile-now asks for once they are
//! off; the data written before the backup is what the site holds after the restore.
//!
//! `WPFLEET_SOAK=1`: more instances.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use common::harness::{Expect, WriteLog, await_inventory, figure, lifecycles, sized};
use serde_json::{Value, json};
use wpfleet::cloud::names::{ResourceNames, epoch_of};
use wpfleet::cloud::sim::{CallRecord, Faults};
use wpfleet::model::InstanceKey;

const TEST: &str = "stale";

fn view_faults() -> Faults {
    Faults {
        stale_observation_rate: 0.3,
        reorder_rate: 0.2,
        drop_trigger_rate: 0.3,
        ..Faults::default()
    }
}

/// Every destructive call, checked against what the harness asked for and when.
fn check_destructive_calls(
    calls: &[CallRecord],
    writes: &WriteLog,
    expect: &BTreeMap<(String, String), Expect>,
) -> usize {
    let writes = writes.all();
    let asked = |instance: &str, what: &str| {
        writes
            .iter()
            .find(|w| w.instance == instance && w.what == what)
            .map(|w| w.sent)
    };
    let mut checked = 0;
    let mut violations = vec![];
    for c in calls
        .iter()
        .filter(|c| c.mutating && c.operation.starts_with("Delete"))
    {
        let instance = c.instance.clone().unwrap_or_default();
        let target = c.target.clone().unwrap_or_default();
        let (tenant, id) = instance.split_once('/').unwrap();
        let want = &expect[&(tenant.to_owned(), id.to_owned())];
        checked += 1;
        if asked(&instance, "delete").is_some_and(|at| c.at >= at) {
            continue; // teardown of a deleted instance
        }
        // Not (yet) deleted: only data superseded by its completed restore may go.
        let names = ResourceNames::for_key(&InstanceKey::from_strs(tenant, id));
        let restored_at = asked(&instance, "restore").unwrap_or(i64::MAX);
        let epoch = want.restore_request.as_deref().map(epoch_of);
        let superseded = match c.operation {
            "DeleteDBInstance" => {
                target == names.database(None) && target != names.database(epoch.as_deref())
            }
            "DeleteAccessPoint" => want.restored_access_point.as_ref() != Some(&target),
            _ => false,
        };
        if !superseded || c.at < restored_at {
            violations.push(format!(
                "{instance} (not deleted): {} {target} at {} (restore asked at {restored_at})",
                c.operation, c.at
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "destructive calls on stale views:\n{}",
        violations.join("\n")
    );
    checked
}

/// The access point each live instance uses now (by id).
fn access_points(
    inv: &Value,
    expect: &BTreeMap<(String, String), Expect>,
) -> BTreeMap<String, String> {
    inv["accessPoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            let key = (
                a["tenantId"].as_str().unwrap().to_owned(),
                a["instanceId"].as_str().unwrap().to_owned(),
            );
            expect.get(&key).is_some_and(|e| !e.deleted)
        })
        .map(|a| {
            (
                format!(
                    "{}/{}",
                    a["tenantId"].as_str().unwrap(),
                    a["instanceId"].as_str().unwrap()
                ),
                a["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_reordered_and_missed_views_never_destroy_and_still_converge() {
    let instances = sized(6, 30);
    // Dropped triggers are noticed by the resync: keep it short.
    let srv = TestServer::start_with(|c| c.resync_interval = Duration::from_millis(500)).await;
    let sim = srv.running().sim.clone().unwrap();
    sim.set_faults(view_faults());
    let c = srv.client.clone();
    let writes = WriteLog::default();
    let expect = lifecycles(&c, instances, &writes, Duration::from_secs(180)).await;
    let inventory = async || serde_json::to_value(sim.inventory()).unwrap();
    // Converged with the faults still on…
    let inv = await_inventory(inventory, &expect, Duration::from_secs(60)).await;
    let aps = access_points(&inv, &expect);
    // …and still so after a pass on fresh views.
    sim.set_faults(Faults::default());
    let r = c.post("/v1.0/reconcile", &json!({})).await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    let request = r.body["requestId"].as_str().unwrap().to_owned();
    for ((t, id), e) in &expect {
        if e.deleted {
            continue;
        }
        common::harness::await_instance(
            &c,
            &common::instance_path(t, id),
            Duration::from_secs(30),
            "reconciled on a fresh view",
            |b| {
                b["status"]["lastHandledReconcileRequest"] == request.as_str()
                    && b["status"]["observedGeneration"] == b["metadata"]["generation"]
                    && b["status"]["phase"] == "ACTIVE"
            },
        )
        .await;
    }
    let inv = await_inventory(inventory, &expect, Duration::from_secs(30)).await;
    assert_eq!(
        access_points(&inv, &expect),
        aps,
        "an access point was recreated"
    );
    let checked = check_destructive_calls(&sim.call_log(), &writes, &expect);
    for (key, e) in &expect {
        if !e.deleted {
            let now = aps.get(&format!("{}/{}", key.0, key.1));
            assert_eq!(
                now,
                e.restored_access_point.as_ref(),
                "{key:?}: access point recreated"
            );
        }
    }
    let injected = sim.stats().injected;
    assert!(
        injected.stale_observations > 0
            && injected.reordered_observations > 0
            && injected.dropped_triggers > 0,
        "{injected:?}"
    );
    figure(TEST, "instances", instances);
    figure(TEST, "injected", serde_json::to_string(&injected).unwrap());
    figure(TEST, "destructive_calls_checked", checked);
}
