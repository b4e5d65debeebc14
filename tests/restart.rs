//! Killing the server (SIGKILL) in the middle of convergence and starting it again on the
//! same data directory converges the same instances, with no duplicate cloud resources.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{BinaryServer, instance_path, spec};
use serde_json::Value;

const INSTANCES: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_convergence_then_restart_converges_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let first = BinaryServer::spawn(dir.path(), &[]);
    let c = first.client.clone();
    for i in 0..INSTANCES {
        let r = c
            .put(&instance_path("t1", &format!("i{i}")), &spec(2))
            .await;
        assert_eq!(r.status, 201, "{:#}", r.body);
    }
    // Wait until the cloud is busy creating (databases exist but are not all available).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let inv = c.get("/v1.0/sim/inventory").await.body;
        if !inv["databases"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was created"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let list = c.get("/v1.0/tenants/t1/instances").await.body;
    let active_before = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"]["phase"] == "ACTIVE")
        .count();
    assert!(
        active_before < INSTANCES,
        "killed too late to test anything"
    );
    first.kill9();

    let second = BinaryServer::spawn(dir.path(), &[]);
    let c = second.client.clone();
    for i in 0..INSTANCES {
        c.wait_phase("t1", &format!("i{i}"), "ACTIVE").await;
    }
    let inv = c.get("/v1.0/sim/inventory").await.body;
    for kind in ["services", "accessPoints", "databases", "logGroups"] {
        let per_instance = per_instance(&inv[kind]);
        assert_eq!(per_instance.len(), INSTANCES, "{kind}: {per_instance:?}");
        assert!(
            per_instance.values().all(|n| *n == 1),
            "duplicate {kind}: {per_instance:?}"
        );
    }
}

fn per_instance(resources: &Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in resources.as_array().unwrap() {
        *counts
            .entry(r["instanceId"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// A backup and then a restore, each interrupted by SIGKILL while its AWS job runs, are
/// finished by the restarted controller without starting a second job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_backup_and_restore_finish_after_restart_without_a_second_job() {
    let dir = tempfile::tempdir().unwrap();
    let base = instance_path("t1", "br");
    let server = BinaryServer::spawn(dir.path(), &[]);
    let c = server.client.clone();
    assert_eq!(c.put(&base, &spec(2)).await.status, 201);
    c.wait_phase("t1", "br", "ACTIVE").await;

    // Backup: kill once its job id is recorded.
    let r = c
        .post(&format!("{base}/backup"), &serde_json::json!({}))
        .await;
    let backup_id = r.body["backupId"].as_str().unwrap().to_owned();
    let backup_path = format!("{base}/backups/{backup_id}");
    c.wait_for(&backup_path, Duration::from_secs(30), |b| {
        b["efsBackupJobId"].is_string() && b["status"] == "RUNNING"
    })
    .await;
    server.kill9();
    let server = BinaryServer::spawn(dir.path(), &[]);
    let c = server.client.clone();
    c.wait_for(&backup_path, Duration::from_secs(30), |b| {
        b["status"] == "COMPLETED"
    })
    .await;

    // Restore: kill once its restore job id is recorded.
    let r = c
        .post(
            &format!("{base}/restore"),
            &serde_json::json!({ "backupId": backup_id }),
        )
        .await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    let request = r.body["requestId"].as_str().unwrap().to_owned();
    c.wait_for(&base, Duration::from_secs(30), |b| {
        b["status"]["restore"]["efsRestoreJobId"].is_string()
            && b["status"]["restore"]["stage"] == "RESTORING"
    })
    .await;
    server.kill9();
    let server = BinaryServer::spawn(dir.path(), &[]);
    let c = server.client.clone();
    c.wait_for(&base, Duration::from_secs(60), |b| {
        b["status"]["restore"]["requestId"] == request.as_str()
            && b["status"]["restore"]["stage"] == "COMPLETED"
            && b["status"]["phase"] == "ACTIVE"
    })
    .await;
    let inv = c.get("/v1.0/sim/inventory").await.body;
    assert_eq!(
        inv["backupJobs"].as_array().unwrap().len(),
        1,
        "one backup job"
    );
    assert_eq!(
        inv["restoreJobs"].as_array().unwrap().len(),
        1,
        "one restore job"
    );
    let restored: Vec<&Value> = inv["databases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["identifier"]
                .as_str()
                .unwrap()
                .ends_with(&epoch_suffix(&request))
        })
        .collect();
    assert_eq!(restored.len(), 1, "one restored database");
}

fn epoch_suffix(request_id: &str) -> String {
    format!("-{}", wpfleet::cloud::names::epoch_of(request_id))
}
