//! `GET …/events` end to end: the reconciler records what it decided and did (steps,
//! phases, convergence, drift repaired, failures), bounded and folded, and a pass that did
//! nothing records nothing.

mod common;

use std::time::Duration;

use common::{Client, TestServer, instance_path, spec};
use serde_json::{Value, json};
use wpfleet::api::auth::dev_claims;
use wpfleet::model::{InstanceKey, MAX_EVENTS};

async fn events(c: &Client, tenant: &str, id: &str) -> Vec<Value> {
    let r = c
        .get(&format!("{}/events", instance_path(tenant, id)))
        .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    r.body["events"].as_array().unwrap().clone()
}

fn reasons(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect()
}

/// Waits until some event satisfies `wanted`; returns the log then.
async fn wait_event(
    c: &Client,
    tenant: &str,
    id: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = events(c, tenant, id).await;
        if log.iter().any(&wanted) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "event never came: {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_what_the_reconciler_decided_and_did() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let path = instance_path("t1", "ev");
    c.put(&path, &spec(2)).await;
    c.wait_phase("t1", "ev", "ACTIVE").await;
    let log = wait_event(c, "t1", "ev", |e| e["reason"] == "Converged").await;
    let r = reasons(&log);
    assert!(log.len() <= MAX_EVENTS);
    assert_eq!(r.first(), Some(&"StepApplied"), "{log:#?}");
    assert_eq!(*r.last().unwrap(), "Converged", "{log:#?}");
    let messages: Vec<&str> = log.iter().map(|e| e["message"].as_str().unwrap()).collect();
    for step in ["CreateLogGroup", "CreateDatabase", "CreateService"] {
        assert!(
            messages.iter().any(|m| m.starts_with(step)),
            "{step} missing: {messages:#?}"
        );
    }
    assert!(
        messages.iter().any(|m| m.ends_with("→ ACTIVE")),
        "{messages:#?}"
    );
    assert!(
        log.iter()
            .all(|e| e["type"] == "Normal" && e["generation"] == 1)
    );
    let times: Vec<&str> = log
        .iter()
        .map(|e| e["firstTimestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // A pass on a converged instance with nothing to do records nothing.
    let before = events(c, "t1", "ev").await;
    let req = c.post(&format!("{path}/reconcile"), &json!({})).await;
    let id = req.body["requestId"].as_str().unwrap().to_owned();
    c.wait_for(&path, Duration::from_secs(30), |v| {
        v["status"]["lastHandledReconcileRequest"] == id.as_str()
    })
    .await;
    assert_eq!(events(c, "t1", "ev").await, before);

    // Drift behind the controller's back is repaired, and said so.
    let key = InstanceKey::from_strs("t1", "ev");
    srv.running()
        .sim()
        .set_service_desired_count(&key, 5)
        .unwrap();
    c.post(&format!("{path}/reconcile"), &json!({})).await;
    let log = wait_event(c, "t1", "ev", |e| e["reason"] == "DriftRepaired").await;
    let drift = log.iter().find(|e| e["reason"] == "DriftRepaired").unwrap();
    assert_eq!(drift["type"], "Warning");
    assert!(
        drift["message"]
            .as_str()
            .unwrap()
            .starts_with("UpdateService"),
        "{drift:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_on_every_retry_is_one_folded_event() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    c.put(&instance_path("t1", "thr"), &spec(2)).await;
    c.wait_phase("t1", "thr", "ACTIVE").await;
    c.send(
        c.http
            .put(c.url("/v1.0/sim/faults"))
            .json(&json!({"throttleRate": 1.0})),
    )
    .await;
    c.post(
        &format!("{}/scale", instance_path("t1", "thr")),
        &json!({"desiredCount": 3}),
    )
    .await;
    let log = wait_event(c, "t1", "thr", |e| {
        e["type"] == "Warning" && e["count"].as_u64().unwrap() >= 2
    })
    .await;
    let folded = log
        .iter()
        .find(|e| e["count"].as_u64().unwrap() >= 2)
        .unwrap();
    assert!(
        folded["message"]
            .as_str()
            .unwrap()
            .contains("rate exceeded (will retry with backoff)"),
        "{folded:#}"
    );
    assert!(folded["firstTimestamp"].as_str() < folded["lastTimestamp"].as_str());
    assert_eq!(folded["generation"], 2);
    c.send(c.http.put(c.url("/v1.0/sim/faults")).json(&json!({})))
        .await;
    let log = wait_event(c, "t1", "thr", |e| {
        e["reason"] == "Converged" && e["generation"] == 2
    })
    .await;
    assert!(log.len() <= MAX_EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_need_the_instance_and_the_tenant() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    c.get(&format!("{}/events", instance_path("t1", "nope")))
        .await
        .expect_error(404, "INSTANCE_NOT_FOUND");
    c.put(&instance_path("t1", "mine"), &spec(2)).await;
    let token = srv
        .running()
        .auth
        .mint(&dev_claims(
            "bob",
            Some("t2"),
            false,
            Duration::from_secs(600),
        ))
        .unwrap();
    let bob = Client::new(&srv.running().url()).with_token(Some(token));
    bob.get(&format!("{}/events", instance_path("t1", "mine")))
        .await
        .expect_error(403, "FORBIDDEN");
    let anon = Client::new(&srv.running().url());
    anon.get(&format!("{}/events", instance_path("t1", "mine")))
        .await
        .expect_error(401, "UNAUTHORIZED");
}
