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
