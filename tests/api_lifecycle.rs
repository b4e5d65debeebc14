//! End to end over HTTP against a real listening server (embedded store, simulated cloud):
//! create, replace, converge, drift repair, reconcile-now, delete, and a quiet resync.

mod common;

use std::time::Duration;

use common::{TestServer, instance_path, spec};
use serde_json::{Value, json};
use wpfleet::model::InstanceKey;

fn key(t: &str, i: &str) -> InstanceKey {
    InstanceKey::from_strs(t, i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_converges_through_the_platform_phases() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let mut body = spec(3);
    body["instanceId"] = json!("blog");
    let r = c.post("/v1.0/tenants/t1/instances", &body).await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    assert_eq!(
        r.location.as_deref(),
        Some("/v1.0/tenants/t1/instances/blog")
    );
    assert_eq!(
        r.etag,
        Some(format!(
            "\"{}\"",
            r.body["metadata"]["resourceVersion"].as_str().unwrap()
        ))
    );
    assert_eq!(r.body["metadata"]["generation"], 1);
    assert_eq!(r.body["status"]["phase"], "PENDING_PROVISIONING");
    assert_eq!(
        r.body["_links"]["self"]["href"],
        "/v1.0/tenants/t1/instances/blog"
    );

    // Record every phase seen until ACTIVE.
    let mut seen: Vec<String> = vec!["PENDING_PROVISIONING".into()];
    let path = instance_path("t1", "blog");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let last = loop {
        let b = c.get(&path).await.body;
        let phase = b["status"]["phase"].as_str().unwrap().to_owned();
        if seen.last() != Some(&phase) {
            seen.push(phase.clone());
        }
        if phase == "ACTIVE" {
            break b;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck: {b:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(seen, ["PENDING_PROVISIONING", "PROVISIONING", "ACTIVE"]);
    assert_eq!(
        last["status"]["replicas"],
        json!({"desired": 3, "running": 3, "pending": 0})
    );
    assert_eq!(last["status"]["observedGeneration"], 1);
    let ready = condition(&last, "Ready");
    assert_eq!(ready["status"], "True");
    assert!(last["status"]["resources"]["database"]["id"].is_string());
    assert!(
        last["status"]["resources"]["accessPoint"]["id"]
            .as_str()
            .unwrap()
            .starts_with("fsap-")
    );

    // The status endpoint agrees, with tasks.
    let st = c.get(&format!("{path}/status")).await;
    assert_eq!(st.status, 200);
    assert_eq!(st.body["phase"], "ACTIVE");
    assert_eq!(st.body["runningCount"], 3);
    assert_eq!(st.body["deploymentStatus"], "COMPLETED");
    assert_eq!(st.body["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(st.body["generation"], st.body["observedGeneration"]);

    // A client polling status shares one live task listing (per 5 s), not one per poll.
    let list_tasks = || {
        srv.running()
            .sim()
            .stats()
            .operations
            .get("ecs:ListTasks")
            .map_or(0, |op| op.calls)
    };
    let before = list_tasks();
    for _ in 0..10 {
        let polled = c.get(&format!("{path}/status")).await;
        assert_eq!(polled.body["tasks"].as_array().unwrap().len(), 3);
    }
    let listings = list_tasks() - before;
    assert!(
        listings <= 1,
        "10 status polls made {listings} ListTasks calls"
    );

    // Exactly one of each resource in the cloud.
    let inv = srv.running().sim().inventory();
    assert_eq!(count_for(&inv, "services", "blog"), 1);
    assert_eq!(count_for(&inv, "accessPoints", "blog"), 1);
    assert_eq!(count_for(&inv, "databases", "blog"), 1);
    assert_eq!(count_for(&inv, "logGroups", "blog"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_creates_then_replaces_and_an_identical_spec_is_a_no_op() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let path = instance_path("t1", "shop");
    let r = c.put(&path, &spec(2)).await;
    assert_eq!(r.status, 201, "{:#}", r.body);
    c.wait_phase("t1", "shop", "ACTIVE").await;

    // Same spec: 200, nothing bumps.
    let before = c.get(&path).await;
    let r = c.put(&path, &spec(2)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["metadata"]["generation"], 1);
    assert_eq!(r.etag, before.etag);

    // The whole resource as GET returned it is accepted too (only spec is read).
    let mut whole = before.body.clone();
    whole["spec"]["configuration"]["desiredCount"] = json!(4);
    let r = c.put(&path, &whole).await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(r.body["metadata"]["generation"], 2);
    assert_ne!(r.etag, before.etag);
    let done = c.wait_phase("t1", "shop", "ACTIVE").await;
    assert_eq!(done["status"]["replicas"]["running"], 4);
    assert_eq!(done["status"]["observedGeneration"], 2);
    let svc = find_for(&srv.running().sim().inventory(), "services", "shop");
    assert_eq!(svc["desiredCount"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_behind_the_controllers_back_is_repaired_by_resync() {
    let srv = TestServer::start_with(|c| c.resync_interval = Duration::from_millis(500)).await;
    let c = &srv.client;
    c.put(&instance_path("t1", "drift"), &spec(2)).await;
    c.wait_phase("t1", "drift", "ACTIVE").await;

    let sim = &srv.running().sim();
    sim.set_service_desired_count(&key("t1", "drift"), 5)
        .unwrap();
    // No API call: only the periodic resync can notice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let svc = find_for(&sim.inventory(), "services", "drift");
        if svc["desiredCount"] == 2 && svc["runningCount"] == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drift not repaired: {svc:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.wait_phase("t1", "drift", "ACTIVE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_now_is_echoed_and_a_converged_pass_makes_no_mutating_call() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let path = instance_path("t1", "quiet");
    c.put(&path, &spec(2)).await;
    c.wait_phase("t1", "quiet", "ACTIVE").await;
    // Let any in-flight requeue finish before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sim = &srv.running().sim();
    let before = sim.stats();

    for _ in 0..2 {
        let r = c.post(&format!("{path}/reconcile"), &json!({})).await;
        assert_eq!(r.status, 202, "{:#}", r.body);
        let id = r.body["requestId"].as_str().unwrap().to_owned();
        c.wait_for(&path, Duration::from_secs(10), |b| {
            b["status"]["lastHandledReconcileRequest"] == id.as_str()
        })
        .await;
    }
    let after = sim.stats();
    assert_eq!(
        after.mutating_calls, before.mutating_calls,
        "a converged pass mutated the cloud"
    );
    assert!(
        after.calls > before.calls,
        "the passes did observe the cloud"
    );

    // Reconcile-now for everything.
    let r = c.post("/v1.0/reconcile", &json!({})).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["instances"], 1);
    let id = r.body["requestId"].as_str().unwrap().to_owned();
    c.wait_for(&path, Duration::from_secs(10), |b| {
        b["status"]["lastHandledReconcileRequest"] == id.as_str()
    })
    .await;
    assert_eq!(sim.stats().mutating_calls, before.mutating_calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_tears_down_in_order_and_keeps_a_deprovisioned_record() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let path = instance_path("t1", "gone");
    c.put(&path, &spec(2)).await;
    c.wait_phase("t1", "gone", "ACTIVE").await;

    let r = c.delete(&path).await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    assert_eq!(r.body["status"], "DEPROVISIONING");
    assert_eq!(r.body["dataRetentionDays"], 30);
    // Deleting again is idempotent.
    assert_eq!(c.delete(&path).await.status, 202);

    let done = c.wait_phase("t1", "gone", "DEPROVISIONED").await;
    assert!(done["metadata"]["deletionRequestedAt"].is_string());
    let links: Vec<&String> = done["_links"].as_object().unwrap().keys().collect();
    assert_eq!(
        links,
        ["backups", "collection", "events", "logs", "self", "status"],
        "only read links remain"
    );
    let inv = srv.running().sim().inventory();
    for kind in ["services", "accessPoints", "databases", "logGroups"] {
        assert_eq!(count_for(&inv, kind, "gone"), 0, "{kind} left behind");
    }
    // The final snapshot is kept: the data outlives the instance.
    let snaps = serde_json::to_value(&inv).unwrap()["snapshots"].clone();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["status"], "available");

    // The order of teardown, from the cloud's call log.
    let order: Vec<String> = srv
        .running()
        .sim()
        .call_log()
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .filter(|c| c["mutating"] == true && c["outcome"] == "ok")
        .map(|c| c["operation"].as_str().unwrap().to_owned())
        .filter(|op| op.starts_with("Delete") || op.contains("Snapshot"))
        .collect();
    assert_eq!(
        order,
        [
            "DeleteService",
            "DeleteAccessPoint",
            "CreateDBSnapshot",
            "DeleteDBInstance",
            "DeleteLogGroup"
        ]
    );

    // A spec change on a deleted instance is refused and changes nothing.
    let r = c.put(&path, &spec(3)).await;
    r.expect_error(422, "INVALID_STATUS_TRANSITION");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_a_tenant_only() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    for i in 0..5 {
        c.put(&instance_path("t1", &format!("i{i}")), &spec(2))
            .await;
    }
    c.put(&instance_path("t2", "other"), &spec(2)).await;
    let mut ids = vec![];
    let mut next: Option<String> = None;
    loop {
        let q = match &next {
            Some(t) => format!("?limit=2&nextToken={t}"),
            None => "?limit=2".into(),
        };
        let r = c.get(&format!("/v1.0/tenants/t1/instances{q}")).await;
        assert_eq!(r.status, 200, "{:#}", r.body);
        for i in r.body["instances"].as_array().unwrap() {
            ids.push(i["instanceId"].as_str().unwrap().to_owned());
        }
        match r.body["nextToken"].as_str() {
            Some(t) => next = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids, ["i0", "i1", "i2", "i3", "i4"]);
    // A token from another tenant's list is refused.
    let t2 = c.get("/v1.0/tenants/t2/instances?limit=1").await;
    assert!(t2.body["nextToken"].is_null());
}

fn condition<'a>(inst: &'a Value, ty: &str) -> &'a Value {
    inst["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} condition: {inst:#}"))
}

fn resources<T: serde::Serialize>(inv: &T, kind: &str) -> Vec<Value> {
    serde_json::to_value(inv).unwrap()[kind]
        .as_array()
        .unwrap_or_else(|| panic!("inventory has no {kind}"))
        .clone()
}

fn count_for<T: serde::Serialize>(inv: &T, kind: &str, instance: &str) -> usize {
    resources(inv, kind)
        .iter()
        .filter(|r| r["instanceId"] == instance)
        .count()
}

fn find_for<T: serde::Serialize>(inv: &T, kind: &str, instance: &str) -> Value {
    resources(inv, kind)
        .into_iter()
        .find(|r| r["instanceId"] == instance)
        .unwrap_or_else(|| panic!("no {kind} for {instance}"))
}
