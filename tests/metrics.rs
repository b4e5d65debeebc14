//! `/metrics` after a short walk-through: every documented metric exists and moves.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestServer, instance_path, spec};
use serde_json::json;

/// Every metric operators' dashboards and alerts use.
pub const NAMES: &[&str] = &[
    "controller_runtime_reconcile_total",
    "controller_runtime_reconcile_errors_total",
    "controller_runtime_terminal_reconcile_errors_total",
    "controller_runtime_reconcile_time_seconds",
    "controller_runtime_active_workers",
    "controller_runtime_max_concurrent_reconciles",
    "workqueue_depth",
    "workqueue_adds_total",
    "workqueue_queue_duration_seconds",
    "workqueue_work_duration_seconds",
    "workqueue_unfinished_work_seconds",
    "workqueue_longest_running_processor_seconds",
    "workqueue_retries_total",
    "aws_api_requests_total",
    "aws_api_request_errors_total",
    "aws_api_throttled_total",
    "aws_api_request_duration_seconds",
    "wpfleet_instances",
    "wpfleet_instances_not_converged",
    "wpfleet_time_to_converge_seconds",
    "wpfleet_instances_stuck",
    "wpfleet_resync_aws_calls_per_instance",
    "wpfleet_shards_held",
    "leader_election_master_status",
    "http_requests_total",
    "http_request_duration_seconds",
];

/// `name{labels} value` lines, keyed by the part before the value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sum(s: &HashMap<String, f64>, prefix: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exist_and_move_after_a_walk_through() {
    let srv = TestServer::start_with(|c| c.resync_interval = Duration::from_millis(800)).await;
    let c = &srv.client;
    // Open, like /healthz: Prometheus scrapes without a token.
    let anon = common::Client::new(&srv.running().url());
    assert_eq!(anon.get("/metrics").await.status, 200);

    c.put(&instance_path("t1", "m"), &spec(2)).await;
    c.wait_phase("t1", "m", "ACTIVE").await;
    c.post(
        &format!("{}/scale", instance_path("t1", "m")),
        &json!({"desiredCount": 3}),
    )
    .await;
    c.wait_phase("t1", "m", "ACTIVE").await;
    // A throttling storm, so errors and retries show.
    c.send(
        c.http
            .put(c.url("/v1.0/sim/faults"))
            .json(&json!({"throttleRate": 1.0})),
    )
    .await;
    c.post(
        &format!("{}/reconcile", instance_path("t1", "m")),
        &json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send(c.http.put(c.url("/v1.0/sim/faults")).json(&json!({})))
        .await;
    // Let a resync wave finish.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let text = anon.get("/metrics").await.body.as_str().unwrap().to_owned();
    for name in NAMES {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    let s = samples(&text);
    let v = |k: &str| s.get(k).copied().unwrap_or_else(|| panic!("no sample {k}"));
    assert!(
        v(r#"controller_runtime_reconcile_total{controller="instance",result="success"}"#) >= 1.0
    );
    assert!(
        v(r#"controller_runtime_reconcile_total{controller="instance",result="requeue_after"}"#)
            >= 1.0
    );
    assert!(v(r#"controller_runtime_reconcile_errors_total{controller="instance"}"#) >= 1.0);
    assert!(v(r#"controller_runtime_reconcile_time_seconds_count{controller="instance"}"#) >= 2.0);
    assert_eq!(
        v(r#"controller_runtime_max_concurrent_reconciles{controller="instance"}"#),
        16.0
    );
    assert!(v(r#"workqueue_adds_total{name="instance"}"#) >= 2.0);
    assert!(v(r#"workqueue_retries_total{name="instance"}"#) >= 1.0);
    assert!(v(r#"workqueue_work_duration_seconds_count{name="instance"}"#) >= 2.0);
    assert!(sum(&s, "aws_api_requests_total{") > 10.0);
    assert!(sum(&s, "aws_api_throttled_total{") >= 1.0);
    assert!(sum(&s, "aws_api_request_errors_total{") >= 1.0);
    assert!(sum(&s, "aws_api_request_duration_seconds_count{") > 10.0);
    assert!(v(r#"workqueue_queue_duration_seconds_count{name="instance"}"#) >= 2.0);
    assert!(sum(&s, "http_request_duration_seconds_count{") >= 3.0);
    assert!(v(r#"aws_api_requests_total{operation="CreateDBInstance",service="rds"}"#) == 1.0);
    assert_eq!(v(r#"wpfleet_instances{phase="ACTIVE"}"#), 1.0);
    assert_eq!(v("wpfleet_instances_not_converged"), 0.0);
    assert_eq!(v("wpfleet_instances_stuck"), 0.0);
    assert!(
        v("wpfleet_time_to_converge_seconds_count") >= 2.0,
        "create and scale converged"
    );
    assert!(v("wpfleet_resync_aws_calls_per_instance") > 0.0);
    assert_eq!(v("wpfleet_shards_held"), 64.0);
    assert_eq!(v(r#"leader_election_master_status{name="wpfleet"}"#), 1.0);
    // Route templates, not concrete paths: no per-instance label.
    assert!(
        v(
            r#"http_requests_total{method="PUT",route="/v1.0/tenants/{tenantId}/instances/{instanceId}",status="201"}"#
        ) >= 1.0
    );
    assert!(
        !s.keys().any(|k| k.contains("t1") || k.contains("\"m\"")),
        "an id leaked into a label"
    );
}
