//! The platform's verbs over HTTP: scale, suspend / resume / status action, backups,
//! restore and logs — success, every precondition failure with its exact code, If-Match.

mod common;

use std::time::Duration;

use common::{Client, TestServer, instance_path, spec};
use serde_json::{Value, json};
use wpfleet::model::InstanceKey;

fn key(i: &str) -> InstanceKey {
    InstanceKey::from_strs("t1", i)
}

/// An ACTIVE, converged instance `t1/{id}` with `n` tasks.
async fn active(c: &Client, id: &str, n: u32) -> Value {
    let r = c.put(&instance_path("t1", id), &spec(n)).await;
    assert_eq!(r.status, 201, "{:#}", r.body);
    c.wait_phase("t1", id, "ACTIVE").await
}

fn verb(id: &str, v: &str) -> String {
    format!("{}/{v}", instance_path("t1", id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_changes_the_count_within_tier_limits() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    active(c, "s", 2).await;
    let r = c
        .post(&verb("s", "scale"), &json!({"desiredCount": 5}))
        .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(r.body["spec"]["configuration"]["desiredCount"], 5);
    assert_eq!(r.body["metadata"]["generation"], 2);
    let done = c.wait_phase("t1", "s", "ACTIVE").await;
    assert_eq!(done["status"]["replicas"]["running"], 5);

    for bad in [0, 1, 11, 1000] {
        let r = c
            .post(&verb("s", "scale"), &json!({ "desiredCount": bad }))
            .await;
        r.expect_error(422, "SCALE_LIMIT_EXCEEDED");
    }
    // The tier's own ceiling: STANDARD allows 4.
    let mut standard = spec(2);
    standard["tier"] = json!("STANDARD");
    c.put(&instance_path("t1", "std"), &standard).await;
    c.post(&verb("std", "scale"), &json!({"desiredCount": 5}))
        .await
        .expect_error(422, "SCALE_LIMIT_EXCEEDED");
    for bad in [
        json!({"desiredCount": "3"}),
        json!({"desiredCount": -1}),
        json!({}),
        json!({"desiredCount": 3, "x": 1}),
    ] {
        c.post(&verb("s", "scale"), &bad)
            .await
            .expect_error(400, "VALIDATION_ERROR");
    }
    c.post(&verb("missing", "scale"), &json!({"desiredCount": 3}))
        .await
        .expect_error(404, "INSTANCE_NOT_FOUND");
    // None of the refusals changed anything.
    assert_eq!(
        c.get(&instance_path("t1", "s")).await.body["metadata"]["generation"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_resume_stop_and_restart_everything_but_keep_the_data() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    active(c, "sr", 3).await;
    let sim = &srv.running().sim();
    sim.write_data(&key("sr"), "posts-v1").unwrap();

    let r = c.post(&verb("sr", "suspend"), &json!({})).await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(r.body["spec"]["state"], "SUSPENDED");
    assert!(r.body["_links"]["resume"].is_object() && r.body["_links"]["suspend"].is_null());
    let phases = watch_phases(c, "sr", "SUSPENDED").await;
    assert!(phases.contains(&"SUSPENDING".to_owned()), "{phases:?}");
    let inv = inventory(&srv);
    let svc = find(&inv["services"], "sr");
    assert_eq!(svc["desiredCount"], 0);
    assert_eq!(find(&inv["databases"], "sr")["status"], "stopped");
    c.post(&verb("sr", "suspend"), &json!({}))
        .await
        .expect_error(422, "INVALID_STATUS_TRANSITION");

    // Scaling while suspended sets the count used on resume.
    let r = c
        .post(&verb("sr", "scale"), &json!({"desiredCount": 4}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        find(&inventory(&srv)["services"], "sr")["desiredCount"],
        0,
        "still suspended"
    );

    let r = c.post(&verb("sr", "resume"), &json!({})).await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    let phases = watch_phases(c, "sr", "ACTIVE").await;
    assert!(phases.contains(&"RESUMING".to_owned()), "{phases:?}");
    let done = c.get(&instance_path("t1", "sr")).await.body;
    assert_eq!(done["status"]["replicas"]["running"], 4);
    let data = sim.read_data(&key("sr")).unwrap();
    assert_eq!(
        (data.files.as_str(), data.database.as_str()),
        ("posts-v1", "posts-v1")
    );
    c.post(&verb("sr", "resume"), &json!({}))
        .await
        .expect_error(422, "INVALID_STATUS_TRANSITION");

    // The platform's status action does the same.
    let r = c
        .post(&verb("sr", "status"), &json!({"status": "SUSPENDED"}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["spec"]["state"], "SUSPENDED");
    c.post(&verb("sr", "status"), &json!({"status": "SUSPENDED"}))
        .await
        .expect_error(422, "INVALID_STATUS_TRANSITION");
    c.post(&verb("sr", "status"), &json!({"status": "PAUSED"}))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    c.wait_phase("t1", "sr", "SUSPENDED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_tasks_and_counts() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    active(c, "st", 2).await;
    let st = c.get(&verb("st", "status")).await.body;
    assert_eq!(st["phase"], "ACTIVE");
    assert_eq!(st["desiredCount"], 2);
    assert_eq!(st["runningCount"], 2);
    assert_eq!(st["pendingCount"], 0);
    assert_eq!(st["deploymentStatus"], "COMPLETED");
    assert_eq!(st["healthStatus"], "HEALTHY");
    let tasks = st["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for t in tasks {
        assert_eq!(t["status"], "RUNNING");
        assert_eq!(t["health"], "HEALTHY");
        assert!(t["id"].is_string() && t["startedAt"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_guards_every_verb() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    active(c, "im", 2).await;
    let current = c.get(&instance_path("t1", "im")).await.etag.unwrap();
    for (path, body) in [
        (verb("im", "scale"), json!({"desiredCount": 3})),
        (verb("im", "suspend"), json!({})),
        (verb("im", "status"), json!({"status": "SUSPENDED"})),
    ] {
        let r = c
            .send(
                c.http
                    .post(c.url(&path))
                    .header("if-match", "\"999999\"")
                    .json(&body),
            )
            .await;
        r.expect_error(412, "PRECONDITION_FAILED");
    }
    assert_eq!(
        c.get(&instance_path("t1", "im")).await.etag.unwrap(),
        current,
        "nothing changed"
    );
    let r = c
        .send(
            c.http
                .post(c.url(&verb("im", "scale")))
                .header("if-match", current.as_str())
                .json(&json!({"desiredCount": 3})),
        )
        .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    let r = c
        .send(
            c.http
                .delete(c.url(&instance_path("t1", "im")))
                .header("if-match", current.as_str()),
        )
        .await;
    r.expect_error(412, "PRECONDITION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_change_then_restore_brings_back_the_backed_up_data() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    active(c, "br", 2).await;
    let sim = &srv.running().sim();
    sim.write_data(&key("br"), "version-A").unwrap();

    let r = c.post(&verb("br", "backup"), &json!({})).await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    assert_eq!(r.body["status"], "PENDING");
    let backup_id = r.body["backupId"].as_str().unwrap().to_owned();
    let backup_path = format!("{}/{backup_id}", verb("br", "backups"));
    assert_eq!(r.body["_links"]["self"]["href"], backup_path.as_str());
    let done = c
        .wait_for(&backup_path, Duration::from_secs(60), |b| {
            b["status"] == "COMPLETED"
        })
        .await;
    assert!(
        done["efsRecoveryPointArn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:backup:")
    );
    assert!(done["rdsSnapshotId"].is_string());
    assert!(done["completedAt"].is_string());
    let list = c.get(&verb("br", "backups")).await.body;
    assert_eq!(list["backups"].as_array().unwrap().len(), 1);

    // The site changes after the backup.
    sim.write_data(&key("br"), "version-B").unwrap();

    let r = c
        .post(&verb("br", "restore"), &json!({"backupId": backup_id}))
        .await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    let request_id = r.body["requestId"].as_str().unwrap().to_owned();
    c.post(&verb("br", "restore"), &json!({"backupId": backup_id}))
        .await
        .expect_error(422, "INVALID_STATUS_TRANSITION");
    let mut phases = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let fin = loop {
        let b = c.get(&instance_path("t1", "br")).await.body;
        let phase = b["status"]["phase"].as_str().unwrap().to_owned();
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        let r = &b["status"]["restore"];
        if r["requestId"] == request_id.as_str() && r["stage"] == "COMPLETED" {
            break b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "restore stuck: {b:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(phases.contains(&"RESTORING".to_owned()), "{phases:?}");
    assert_eq!(fin["status"]["restore"]["progress"], 100);
    assert!(fin["status"]["restore"]["completedAt"].is_string());
    let fin = c.wait_phase("t1", "br", "ACTIVE").await;
    assert_eq!(fin["status"]["replicas"]["running"], 2);

    // What the site serves now is what was backed up.
    let data = sim.read_data(&key("br")).unwrap();
    assert_eq!(data.files, "version-A");
    assert_eq!(data.database, "version-A");
    // The superseded database is retired (after a snapshot), the restored one remains.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let inv = inventory(&srv);
        let dbs = count(&inv["databases"], "br");
        let aps = count(&inv["accessPoints"], "br");
        if dbs == 1 && aps == 1 {
            let snaps: Vec<&str> = inv["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["id"].as_str())
                .collect();
            assert!(snaps.iter().any(|s| s.ends_with("-retired")), "{snaps:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not retired: {inv:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let inv = inventory(&srv);
    assert_eq!(
        inv["restoreJobs"].as_array().unwrap().len(),
        1,
        "one restore job"
    );
    assert_eq!(
        inv["backupJobs"].as_array().unwrap().len(),
        1,
        "one backup job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_backup_preconditions() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    active(c, "pre", 2).await;
    active(c, "other", 2).await;
    let r = c.post(&verb("other", "backup"), &json!({})).await;
    let others = r.body["backupId"].as_str().unwrap().to_owned();
    // Unknown, malformed, another instance's: 404 BACKUP_NOT_FOUND.
    for id in ["bk-0000000000000000000a", "../../x", others.as_str()] {
        c.post(&verb("pre", "restore"), &json!({ "backupId": id }))
            .await
            .expect_error(404, "BACKUP_NOT_FOUND");
        let r = c
            .get(&format!("{}/{}", verb("pre", "backups"), urlencode(id)))
            .await;
        assert!(r.status == 404 || r.status == 400, "{id}: {}", r.status);
    }
    // Not COMPLETED yet: 422 BACKUP_NOT_READY.
    let r = c.post(&verb("pre", "backup"), &json!({})).await;
    let pending = r.body["backupId"].as_str().unwrap().to_owned();
    c.post(&verb("pre", "restore"), &json!({ "backupId": pending }))
        .await
        .expect_error(422, "BACKUP_NOT_READY");
    c.post(&verb("pre", "restore"), &json!({}))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    c.post(&verb("missing", "backup"), &json!({}))
        .await
        .expect_error(404, "INSTANCE_NOT_FOUND");
    // A deleted instance takes no verb.
    c.delete(&instance_path("t1", "pre")).await;
    for (v, body) in [
        ("backup", json!({})),
        ("scale", json!({"desiredCount": 3})),
        ("suspend", json!({})),
        ("resume", json!({})),
    ] {
        c.post(&verb("pre", v), &body)
            .await
            .expect_error(422, "INVALID_STATUS_TRANSITION");
    }
    c.post(&verb("pre", "restore"), &json!({ "backupId": pending }))
        .await
        .expect_error(422, "BACKUP_NOT_READY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_paged_and_bounded() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    active(c, "lg", 2).await;
    // Let the simulated tasks write for a while.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = c.get(&verb("lg", "logs")).await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    let all = r.body["events"].as_array().unwrap().len();
    assert!(all > 10, "expected some log events, got {all}");
    for e in r.body["events"].as_array().unwrap() {
        assert!(e["timestamp"].is_string() && e["message"].is_string());
        assert!(e["logStream"].as_str().unwrap().starts_with("wordpress/"));
    }
    // Paging with a small limit sees the same events, once each.
    let end = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let start = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut seen = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut q = format!("?limit=7&startTime={start}&endTime={end}");
        if let Some(t) = &token {
            q.push_str(&format!("&nextToken={}", urlencode(t)));
        }
        let r = c.get(&format!("{}{q}", verb("lg", "logs"))).await;
        assert_eq!(r.status, 200, "{:#}", r.body);
        let events = r.body["events"].as_array().unwrap();
        assert!(events.len() <= 7);
        seen.extend(events.iter().cloned());
        match r.body["nextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
        assert!(seen.len() < 100_000);
    }
    let mut keys: Vec<String> = seen
        .iter()
        .map(|e| format!("{}{}{}", e["timestamp"], e["logStream"], e["message"]))
        .collect();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "an event came twice");
    assert!(n >= all.min(100), "paging lost events: {n} < {all}");
    // Bounds.
    for q in [
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?startTime=yesterday",
        "?startTime=2026-01-02T00:00:00Z&endTime=2026-01-01T00:00:00Z",
        "?nextToken=not-a-token",
    ] {
        c.get(&format!("{}{q}", verb("lg", "logs")))
            .await
            .expect_error(400, "VALIDATION_ERROR");
    }
    assert_eq!(
        c.get(&format!("{}?limit=1000", verb("lg", "logs")))
            .await
            .status,
        200
    );
    c.get(&verb("missing", "logs"))
        .await
        .expect_error(404, "INSTANCE_NOT_FOUND");
}

/// Polls until `phase` (converged); returns every phase seen on the way.
async fn watch_phases(c: &Client, id: &str, phase: &str) -> Vec<String> {
    let mut seen: Vec<String> = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let b = c.get(&instance_path("t1", id)).await.body;
        let p = b["status"]["phase"].as_str().unwrap().to_owned();
        if seen.last() != Some(&p) {
            seen.push(p.clone());
        }
        if p == phase && b["status"]["observedGeneration"] == b["metadata"]["generation"] {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {phase}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn inventory(srv: &TestServer) -> Value {
    serde_json::to_value(srv.running().sim().inventory()).unwrap()
}

fn find<'a>(list: &'a Value, instance: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["instanceId"] == instance)
        .unwrap_or_else(|| panic!("no resource of {instance} in {list:#}"))
}

fn count(list: &Value, instance: &str) -> usize {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["instanceId"] == instance)
        .count()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Each verb is one conditional write, retried inside the store: concurrent writers that
/// change different fields never lose each other's change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verbs_without_if_match_lose_nothing() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    for round in 0..10 {
        let id = format!("cc{round}");
        let r = c.put(&instance_path("t1", &id), &spec(2)).await;
        assert_eq!(r.status, 201);
        let n = 3 + (round % 5);
        let (scale_path, suspend_path) = (verb(&id, "scale"), verb(&id, "suspend"));
        let (scale_body, empty) = (json!({ "desiredCount": n }), json!({}));
        let (a, b) = tokio::join!(
            c.post(&scale_path, &scale_body),
            c.post(&suspend_path, &empty),
        );
        assert_eq!(
            (a.status, b.status),
            (200, 200),
            "{:#} {:#}",
            a.body,
            b.body
        );
        let fin = c.get(&instance_path("t1", &id)).await.body;
        assert_eq!(fin["spec"]["configuration"]["desiredCount"], n);
        assert_eq!(fin["spec"]["state"], "SUSPENDED");
        assert_eq!(
            fin["metadata"]["generation"], 3,
            "two changes, two generations"
        );
    }
}
