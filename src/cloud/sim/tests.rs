//! Behaviour of the simulated cloud at high speed (durations ÷ 1000, so an RDS create takes
//! ~240 ms). Tests never rely on exact timing: they poll with a deadline.
//!
//! `data`: data epochs, content, snapshots/restores and AWS Backup; `logs`: log events.

mod data;
mod logs;

use std::time::{Duration, Instant};

use super::*;
use crate::cloud::{
    AccessPointState, DbState, ObservedService, Rollout, ServiceState, SnapshotState,
};

const SPEED: f64 = 1_000.0;

fn unlimited() -> SimLimits {
    let r = RateLimit {
        rate: 1e6,
        burst: 1e6,
    };
    SimLimits {
        ecs: r,
        efs: r,
        rds: r,
        logs: r,
        backup: r,
    }
}

fn fast() -> SimConfig {
    SimConfig {
        speed: SPEED,
        limits: unlimited(),
        faults: Faults::default(),
        // These tests check what the service answers; the client's retry has its own test.
        attempts: 1,
    }
}

fn cloud() -> SimCloud {
    SimCloud::in_memory(fast())
}

/// For tests that assert an intermediate state (PENDING, STOPPING, deleting): slow enough
/// that the state lasts well beyond a few calls on a loaded machine.
fn cloud_at(speed: f64) -> SimCloud {
    SimCloud::in_memory(SimConfig { speed, ..fast() })
}

fn key(i: usize) -> InstanceKey {
    InstanceKey::from_strs("t1", &format!("blog{i}"))
}

fn names(key: &InstanceKey) -> ResourceNames {
    ResourceNames::for_key(key)
}

/// The steps of one instance, named as the reconciler names them.
struct Steps(ResourceNames);

impl Steps {
    fn of(key: &InstanceKey) -> Self {
        Self(names(key))
    }
    fn log(&self) -> Step {
        Step::CreateLogGroup {
            name: self.0.log_group.clone(),
            retention_days: 30,
        }
    }
    fn ap(&self) -> Step {
        Step::CreateAccessPoint {
            root_path: self.0.access_point_root(None),
        }
    }
    fn db(&self, class: &str) -> Step {
        Step::CreateDatabase {
            identifier: self.0.database(None),
            instance_class: class.into(),
            allocated_storage_gb: 20,
        }
    }
    fn modify(&self, class: &str) -> Step {
        Step::ModifyDatabase {
            identifier: self.0.database(None),
            instance_class: class.into(),
        }
    }
    fn start(&self) -> Step {
        Step::StartDatabase {
            identifier: self.0.database(None),
        }
    }
    fn stop(&self) -> Step {
        Step::StopDatabase {
            identifier: self.0.database(None),
        }
    }
    fn snapshot(&self) -> Step {
        Step::SnapshotDatabase {
            identifier: self.0.database(None),
            snapshot_id: ResourceNames::final_snapshot(&self.0.database(None)),
        }
    }
    fn delete_db(&self) -> Step {
        Step::DeleteDatabase {
            identifier: self.0.database(None),
            final_snapshot_id: ResourceNames::final_snapshot(&self.0.database(None)),
        }
    }
    fn svc(&self, count: u32, image: &str) -> Step {
        Step::CreateService {
            name: self.0.service.clone(),
            desired_count: count,
            image: image.into(),
            access_point_id: "fsap-0".into(),
            db_endpoint: "db".into(),
        }
    }
    fn update(&self, count: u32, image: &str) -> Step {
        Step::UpdateService {
            name: self.0.service.clone(),
            desired_count: count,
            image: image.into(),
            access_point_id: "fsap-0".into(),
            db_endpoint: "db".into(),
        }
    }
    fn delete_svc(&self) -> Step {
        Step::DeleteService {
            name: self.0.service.clone(),
        }
    }
}

async fn apply(cloud: &SimCloud, key: &InstanceKey, step: &Step) -> CloudResult<StepOutcome> {
    cloud
        .apply(key, step, &ClientToken::derive(key, 1, step))
        .await
}

async fn apply_ok(cloud: &SimCloud, key: &InstanceKey, step: &Step) {
    if let Err(e) = apply(cloud, key, step).await {
        panic!("{} failed: {e}", step.name());
    }
}

async fn observe1(cloud: &SimCloud, key: &InstanceKey) -> Observed {
    let mut all = cloud
        .observe(std::slice::from_ref(key))
        .await
        .expect("observe");
    all.remove(0)
}

/// Polls `probe` (each time with a fresh observation) until it yields, or panics.
async fn until<T>(
    cloud: &SimCloud,
    key: &InstanceKey,
    what: &str,
    probe: impl Fn(&Observed) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = observe1(cloud, key).await;
        if let Some(v) = probe(&seen) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn db_state(o: &Observed) -> Option<DbState> {
    o.databases.first().map(|d| d.state.clone())
}

async fn until_db(cloud: &SimCloud, key: &InstanceKey, want: DbState) {
    until(cloud, key, want.as_str(), |o| {
        (db_state(o).as_ref() == Some(&want)).then_some(())
    })
    .await;
}

async fn until_running(cloud: &SimCloud, key: &InstanceKey, n: u32) -> ObservedService {
    until(cloud, key, "running tasks", |o| {
        o.service
            .clone()
            .filter(|s| s.running_count == n && s.pending_count == 0)
    })
    .await
}

fn stat(cloud: &SimCloud, op: &str) -> OpStats {
    cloud
        .stats()
        .operations
        .get(op)
        .copied()
        .unwrap_or_default()
}

fn is_invalid_state<T>(r: &CloudResult<T>) -> bool {
    matches!(r, Err(CloudError::InvalidState { .. }))
}

#[tokio::test]
async fn full_create_flow_reaches_ready_states() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    apply_ok(&cloud, &k, &s.log()).await;
    apply_ok(&cloud, &k, &s.ap()).await;
    apply_ok(&cloud, &k, &s.db("db.t4g.micro")).await;

    let fresh = observe1(&cloud, &k).await;
    assert_eq!(
        fresh.databases.first().map(|d| &d.state),
        Some(&DbState::Creating)
    );
    assert_eq!(
        fresh.databases.first().and_then(|d| d.endpoint.clone()),
        None
    );
    assert!(fresh.log_group.is_some(), "log groups appear at once");

    until(&cloud, &k, "access point", |o| {
        o.access_points
            .first()
            .filter(|a| a.state == AccessPointState::Available)
            .map(drop)
    })
    .await;
    until_db(&cloud, &k, DbState::Available).await;
    apply_ok(&cloud, &k, &s.svc(2, "wordpress:6.6")).await;
    let svc = observe1(&cloud, &k).await.service.expect("service");
    assert_eq!(
        (svc.state, svc.desired_count, svc.pending_count),
        (ServiceState::Active, 2, 2)
    );
    assert_eq!(svc.rollout, Rollout::InProgress);

    until_running(&cloud, &k, 2).await;
    // ECS completes the rollout once the tasks pass their health check, not when they run.
    let svc = until(&cloud, &k, "a completed rollout", |o| {
        o.service
            .clone()
            .filter(|s| s.rollout == Rollout::Completed)
    })
    .await;
    let tasks = cloud.tasks_of(&k).await.expect("tasks");
    assert!(tasks.iter().all(|t| t.health == "HEALTHY"), "{tasks:?}");
    assert!(svc.deployment.is_some(), "ECS reports the deployment's id");
    assert!(svc.arn.ends_with(&format!(":service/wpfleet/{}", svc.name)));

    let seen = observe1(&cloud, &k).await;
    let db = seen.databases.first().cloned().expect("db");
    assert_eq!(
        db.endpoint.as_deref(),
        Some(format!("{}.c9akciq32.eu-west-1.rds.amazonaws.com", db.identifier).as_str())
    );
    assert_eq!(db.instance_class, "db.t4g.micro");
    let ap = seen.access_points.first().cloned().expect("ap");
    assert!(ap.id.starts_with("fsap-") && ap.id.len() == 22, "{}", ap.id);
    assert!(ap.arn.ends_with(&format!("access-point/{}", ap.id)));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = cloud.tasks_of(&k).await.expect("tasks");
        assert_eq!(tasks.len(), 2);
        assert!(
            tasks
                .iter()
                .all(|t| t.id.len() == 32 && t.started_at.is_some())
        );
        if tasks.iter().all(|t| t.health == "HEALTHY") {
            break;
        }
        assert!(Instant::now() < deadline, "tasks never healthy");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let inv = cloud.inventory();
    assert_eq!(inv.services.len(), 1);
    assert_eq!(inv.services[0].tenant_id, "t1");
    assert_eq!(inv.services[0].instance_id, "blog1");
    assert_eq!(inv.services[0].tasks.len(), 2);
    assert_eq!(inv.access_points[0].root_path, "/tenants/t1/blog1");
    assert_eq!(inv.databases[0].status, "available");
    assert_eq!(inv.log_groups[0].name, "/wpfleet/t1/blog1");
    let json = serde_json::to_value(&inv).expect("json");
    assert!(json["services"][0]["runningCount"].is_u64());
    assert!(json["accessPoints"][0]["rootPath"].is_string());
}

#[tokio::test]
async fn task_statuses_progress_and_describe_tasks_costs_two_calls() {
    let cloud = cloud();
    let k = key(1);
    apply_ok(&cloud, &k, &Steps::of(&k).svc(1, "wp:1")).await;
    let tasks = cloud.tasks_of(&k).await.expect("tasks");
    assert_eq!(tasks.len(), 1);
    assert!(
        ["PROVISIONING", "PENDING"].contains(&tasks[0].last_status.as_str()),
        "{tasks:?}"
    );
    assert_eq!(tasks[0].health, "UNKNOWN");
    assert_eq!(tasks[0].image, "wp:1");
    assert_eq!(stat(&cloud, "ecs:ListTasks").calls, 1);
    assert_eq!(stat(&cloud, "ecs:DescribeTasks").calls, 1);

    let other = key(2);
    assert!(cloud.tasks_of(&other).await.expect("none").is_empty());
    assert_eq!(stat(&cloud, "ecs:ListTasks").calls, 2);
    assert_eq!(
        stat(&cloud, "ecs:DescribeTasks").calls,
        1,
        "nothing to describe"
    );
}

#[tokio::test]
async fn every_create_step_is_idempotent() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    for step in [s.log(), s.ap(), s.db("db.t4g.micro"), s.svc(2, "wp:1")] {
        apply_ok(&cloud, &k, &step).await;
        apply_ok(&cloud, &k, &step).await;
    }
    until_db(&cloud, &k, DbState::Available).await;
    apply_ok(&cloud, &k, &s.snapshot()).await;
    apply_ok(&cloud, &k, &s.snapshot()).await;
    apply_ok(&cloud, &k, &s.update(3, "wp:1")).await;
    apply_ok(&cloud, &k, &s.update(3, "wp:1")).await;

    let inv = cloud.inventory();
    assert_eq!(inv.log_groups.len(), 1);
    assert_eq!(inv.access_points.len(), 1);
    assert_eq!(inv.databases.len(), 1);
    assert_eq!(inv.snapshots.len(), 1);
    assert_eq!(inv.services.len(), 1);
    assert_eq!(
        inv.services[0].tasks.len(),
        3,
        "the repeated update launched nothing"
    );
}

#[tokio::test]
async fn access_points_are_idempotent_by_client_token_only() {
    let cloud = cloud();
    let k = key(1);
    let step = Steps::of(&k).ap();
    let first = ClientToken::derive(&k, 1, &step);
    cloud.apply(&k, &step, &first).await.expect("create");
    cloud.apply(&k, &step, &first).await.expect("same token");
    assert_eq!(cloud.inventory().access_points.len(), 1);
    let oldest = observe1(&cloud, &k)
        .await
        .access_points
        .first()
        .cloned()
        .expect("ap")
        .id;

    // A new incarnation's token creates a second one for the same root path, as EFS does.
    let second = ClientToken::derive(&k, 2, &step);
    cloud.apply(&k, &step, &second).await.expect("other token");
    let inv = cloud.inventory();
    assert_eq!(inv.access_points.len(), 2);
    assert!(
        inv.access_points
            .iter()
            .all(|a| a.root_path == "/tenants/t1/blog1")
    );
    assert_eq!(
        observe1(&cloud, &k)
            .await
            .access_points
            .first()
            .cloned()
            .expect("ap")
            .id,
        oldest,
        "observe returns the oldest"
    );
}

#[tokio::test]
async fn a_burst_beyond_the_bucket_is_throttled_then_recovers() {
    let mut config = fast();
    config.limits.logs = RateLimit {
        rate: 5.0,
        burst: 3.0,
    };
    let cloud = SimCloud::in_memory(config);
    let k = key(1);
    let mut outcomes = Vec::new();
    for i in 0..6 {
        let step = Step::CreateLogGroup {
            name: format!("/g/{i}"),
            retention_days: 1,
        };
        outcomes.push(apply(&cloud, &k, &step).await);
    }
    let ok = outcomes.iter().filter(|r| r.is_ok()).count();
    let throttled = outcomes
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(CloudError::Throttled {
                    service: "logs",
                    ..
                })
            )
        })
        .count();
    assert_eq!((ok, throttled), (3, 3), "{outcomes:?}");
    assert_eq!(
        cloud.inventory().log_groups.len(),
        3,
        "throttled calls have no effect"
    );
    let st = stat(&cloud, "logs:CreateLogGroup");
    assert_eq!((st.calls, st.throttled, st.errors), (6, 3, 0));

    // Other services have their own buckets.
    apply_ok(&cloud, &k, &Steps::of(&k).ap()).await;

    tokio::time::sleep(Duration::from_millis(250)).await; // ≥ 1 token at 5/s
    let step = Step::CreateLogGroup {
        name: "/g/late".into(),
        retention_days: 1,
    };
    apply_ok(&cloud, &k, &step).await;
}

#[tokio::test]
async fn observe_batches_like_the_real_apis() {
    let cloud = cloud();
    let keys: Vec<InstanceKey> = (0..25).map(key).collect();
    let seen = cloud.observe(&keys).await.expect("observe");
    assert_eq!(seen.len(), 25);
    assert!(seen.iter().all(|o| *o == Observed::default()));
    let stats = cloud.stats();
    let calls = |op: &str| stats.operations.get(op).map_or(0, |s| s.calls);
    assert_eq!(calls("ecs:DescribeServices"), 3);
    assert_eq!(calls("rds:DescribeDBInstances"), 1);
    assert_eq!(calls("rds:DescribeDBSnapshots"), 1);
    assert_eq!(calls("efs:DescribeAccessPoints"), 1);
    assert_eq!(calls("logs:DescribeLogGroups"), 1);
    assert_eq!((stats.calls, stats.mutating_calls), (7, 0));

    let many: Vec<InstanceKey> = (0..101).map(key).collect();
    cloud.observe(&many).await.expect("observe");
    let stats = cloud.stats();
    let calls = |op: &str| stats.operations.get(op).map_or(0, |s| s.calls);
    assert_eq!(calls("ecs:DescribeServices"), 3 + 11);
    assert_eq!(calls("rds:DescribeDBInstances"), 1 + 2);
    assert_eq!(calls("logs:DescribeLogGroups"), 1 + 3);

    assert!(cloud.observe(&[]).await.expect("empty").is_empty());
    assert_eq!(cloud.stats().calls, stats.calls, "no keys, no calls");
}

#[tokio::test]
async fn observe_returns_one_result_per_key_in_order() {
    let cloud = cloud();
    let (a, b) = (key(1), key(2));
    apply_ok(&cloud, &b, &Steps::of(&b).log()).await;
    let seen = cloud
        .observe(&[a.clone(), b.clone(), a])
        .await
        .expect("observe");
    assert_eq!(seen.len(), 3);
    assert!(seen[0].log_group.is_none() && seen[2].log_group.is_none());
    assert_eq!(
        seen[1].log_group.as_ref().map(|l| l.name.as_str()),
        Some("/wpfleet/t1/blog2")
    );
}

#[tokio::test]
async fn scaling_launches_and_stops_tasks() {
    let cloud = cloud_at(200.0);
    let k = key(1);
    let s = Steps::of(&k);
    apply_ok(&cloud, &k, &s.svc(1, "wp:1")).await;
    until_running(&cloud, &k, 1).await;

    apply_ok(&cloud, &k, &s.update(3, "wp:1")).await;
    let svc = observe1(&cloud, &k).await.service.expect("svc");
    assert_eq!(
        (svc.desired_count, svc.running_count, svc.pending_count),
        (3, 1, 2)
    );
    until_running(&cloud, &k, 3).await;

    apply_ok(&cloud, &k, &s.update(1, "wp:1")).await;
    let svc = observe1(&cloud, &k).await.service.expect("svc");
    assert_eq!(
        (svc.desired_count, svc.running_count),
        (1, 1),
        "excess stop at once"
    );
    let stopping = cloud.tasks_of(&k).await.expect("tasks");
    assert_eq!(
        stopping
            .iter()
            .filter(|t| ["DEACTIVATING", "STOPPING"].contains(&t.last_status.as_str()))
            .count(),
        2
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while cloud.tasks_of(&k).await.expect("tasks").len() != 1 {
        assert!(Instant::now() < deadline, "stopped tasks never went away");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_new_image_rolls_out_and_replaces_old_tasks() {
    let cloud = cloud_at(200.0);
    let k = key(1);
    let s = Steps::of(&k);
    apply_ok(&cloud, &k, &s.svc(2, "wp:1")).await;
    until_running(&cloud, &k, 2).await;

    apply_ok(&cloud, &k, &s.update(2, "wp:2")).await;
    let svc = observe1(&cloud, &k).await.service.expect("svc");
    assert_eq!(svc.image, "wp:2");
    assert_eq!(svc.rollout, Rollout::InProgress);
    assert_eq!(
        (svc.running_count, svc.pending_count),
        (2, 2),
        "old keep serving"
    );

    until(&cloud, &k, "rollout", |o| {
        o.service
            .as_ref()
            .filter(|s| s.rollout == Rollout::Completed)
            .map(drop)
    })
    .await;
    let tasks = cloud.tasks_of(&k).await.expect("tasks");
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks
            .iter()
            .all(|t| t.image == "wp:2" && t.last_status == "RUNNING")
    );
}

#[tokio::test]
async fn a_deleted_service_drains_then_its_name_is_free() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    apply_ok(&cloud, &k, &s.svc(2, "wp:1")).await;
    until_running(&cloud, &k, 2).await;

    apply_ok(&cloud, &k, &s.delete_svc()).await;
    apply_ok(&cloud, &k, &s.delete_svc()).await;
    let svc = observe1(&cloud, &k).await.service.expect("draining");
    assert_eq!(
        (svc.state, svc.desired_count, svc.running_count),
        (ServiceState::Draining, 0, 0)
    );
    assert!(is_invalid_state(
        &apply(&cloud, &k, &s.svc(2, "wp:1")).await
    ));
    assert!(is_invalid_state(
        &apply(&cloud, &k, &s.update(3, "wp:1")).await
    ));

    until(&cloud, &k, "service gone", |o| {
        o.service.is_none().then_some(())
    })
    .await;
    apply_ok(&cloud, &k, &s.delete_svc()).await;
    apply_ok(&cloud, &k, &s.svc(1, "wp:2")).await;
    let svc = observe1(&cloud, &k).await.service.expect("recreated");
    assert_eq!((svc.state, svc.desired_count), (ServiceState::Active, 1));
}

#[tokio::test]
async fn create_service_with_another_token_is_not_idempotent() {
    let cloud = cloud();
    let k = key(1);
    let step = Steps::of(&k).svc(1, "wp:1");
    cloud
        .apply(&k, &step, &ClientToken::derive(&k, 1, &step))
        .await
        .expect("create");
    let other = cloud
        .apply(&k, &step, &ClientToken::derive(&k, 2, &step))
        .await;
    assert!(
        matches!(&other, Err(CloudError::Permanent { code, .. }) if code == "InvalidParameterException"),
        "{other:?}"
    );
}

#[tokio::test]
async fn delete_database_needs_an_available_final_snapshot() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    let missing = |r: &CloudResult<StepOutcome>| matches!(r, Err(CloudError::Permanent { code, .. }) if code == "FinalSnapshotMissing");
    apply_ok(&cloud, &k, &s.delete_db()).await; // nothing to delete
    apply_ok(&cloud, &k, &s.db("db.t4g.micro")).await;
    until_db(&cloud, &k, DbState::Available).await;
    assert!(missing(&apply(&cloud, &k, &s.delete_db()).await));

    apply_ok(&cloud, &k, &s.snapshot()).await;
    let snap = observe1(&cloud, &k)
        .await
        .snapshots
        .observed()
        .expect("snapshots observed")
        .first()
        .cloned()
        .expect("snapshot");
    assert_eq!(snap.state, SnapshotState::Creating);
    assert_eq!(
        db_state(&observe1(&cloud, &k).await),
        Some(DbState::Available)
    );
    assert!(
        missing(&apply(&cloud, &k, &s.delete_db()).await),
        "still creating"
    );

    until(&cloud, &k, "snapshot", |o| {
        o.snapshots
            .observed()
            .expect("snapshots observed")
            .first()
            .filter(|s| s.state == SnapshotState::Available)
            .map(drop)
    })
    .await;
    apply_ok(&cloud, &k, &s.delete_db()).await;
    assert_eq!(
        db_state(&observe1(&cloud, &k).await),
        Some(DbState::Deleting)
    );
    apply_ok(&cloud, &k, &s.delete_db()).await;
    until(&cloud, &k, "db gone", |o| {
        o.databases.is_empty().then_some(())
    })
    .await;
    assert!(
        !observe1(&cloud, &k)
            .await
            .snapshots
            .observed()
            .expect("snapshots observed")
            .is_empty(),
        "snapshots outlive the DB"
    );
    assert_eq!(stat(&cloud, "rds:DeleteDBInstance").errors, 2);
}

#[tokio::test]
async fn database_transitions_follow_rds_rules() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    for step in [s.stop(), s.start(), s.modify("db.t4g.small"), s.snapshot()] {
        assert!(
            is_invalid_state(&apply(&cloud, &k, &step).await),
            "missing DB"
        );
    }
    apply_ok(&cloud, &k, &s.db("db.t4g.micro")).await;
    assert!(
        is_invalid_state(&apply(&cloud, &k, &s.stop()).await),
        "creating"
    );
    assert!(
        is_invalid_state(&apply(&cloud, &k, &s.start()).await),
        "creating"
    );
    until_db(&cloud, &k, DbState::Available).await;

    apply_ok(&cloud, &k, &s.start()).await; // available: nothing to do
    apply_ok(&cloud, &k, &s.modify("db.t4g.micro")).await; // same class: nothing to do
    assert_eq!(
        db_state(&observe1(&cloud, &k).await),
        Some(DbState::Available)
    );

    apply_ok(&cloud, &k, &s.modify("db.t4g.small")).await;
    apply_ok(&cloud, &k, &s.modify("db.t4g.small")).await;
    let db = observe1(&cloud, &k)
        .await
        .databases
        .first()
        .cloned()
        .expect("db");
    assert_eq!(
        (db.state, db.instance_class.as_str()),
        (DbState::Modifying, "db.t4g.micro")
    );
    assert!(
        is_invalid_state(&apply(&cloud, &k, &s.stop()).await),
        "modifying"
    );
    until_db(&cloud, &k, DbState::Available).await;
    let db = observe1(&cloud, &k)
        .await
        .databases
        .first()
        .cloned()
        .expect("db");
    assert_eq!(db.instance_class, "db.t4g.small");

    apply_ok(&cloud, &k, &s.stop()).await;
    apply_ok(&cloud, &k, &s.stop()).await;
    assert_eq!(
        db_state(&observe1(&cloud, &k).await),
        Some(DbState::Stopping)
    );
    until_db(&cloud, &k, DbState::Stopped).await;
    assert!(is_invalid_state(
        &apply(&cloud, &k, &s.modify("db.m6g.large")).await
    ));
    apply_ok(&cloud, &k, &s.snapshot()).await; // a stopped DB can be snapshotted
    apply_ok(&cloud, &k, &s.start()).await;
    apply_ok(&cloud, &k, &s.start()).await;
    assert_eq!(
        db_state(&observe1(&cloud, &k).await),
        Some(DbState::Starting)
    );
    until_db(&cloud, &k, DbState::Available).await;
    assert!(
        observe1(&cloud, &k)
            .await
            .databases
            .first()
            .cloned()
            .expect("db")
            .endpoint
            .is_some()
    );
}

#[tokio::test]
async fn deletes_of_missing_resources_succeed() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    for step in [
        s.delete_svc(),
        Step::DeleteAccessPoint {
            id: "fsap-00000000000000000".into(),
        },
        s.delete_db(),
        Step::DeleteLogGroup {
            name: "/wpfleet/t1/blog1".into(),
        },
    ] {
        apply_ok(&cloud, &k, &step).await;
    }
    assert_eq!(cloud.inventory(), InventorySnapshot::default());
}

#[tokio::test]
async fn access_point_and_log_group_deletes() {
    let cloud = cloud_at(50.0);
    let k = key(1);
    let s = Steps::of(&k);
    apply_ok(&cloud, &k, &s.log()).await;
    apply_ok(&cloud, &k, &s.ap()).await;
    let id = observe1(&cloud, &k)
        .await
        .access_points
        .first()
        .cloned()
        .expect("ap")
        .id;
    let del = Step::DeleteAccessPoint { id };
    apply_ok(&cloud, &k, &del).await;
    apply_ok(&cloud, &k, &del).await;
    assert_eq!(
        observe1(&cloud, &k)
            .await
            .access_points
            .first()
            .map(|a| a.state),
        Some(AccessPointState::Deleting)
    );
    until(&cloud, &k, "ap gone", |o| {
        o.access_points.is_empty().then_some(())
    })
    .await;
    // The same client token after its access point is gone creates a new one.
    apply_ok(&cloud, &k, &s.ap()).await;
    let again = observe1(&cloud, &k)
        .await
        .access_points
        .first()
        .cloned()
        .expect("recreated");
    assert_ne!(Step::DeleteAccessPoint { id: again.id }, del);

    let del_log = Step::DeleteLogGroup {
        name: names(&k).log_group,
    };
    apply_ok(&cloud, &k, &del_log).await;
    assert!(
        observe1(&cloud, &k).await.log_group.is_none(),
        "immediately"
    );
}

#[tokio::test]
async fn the_cloud_outlives_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key(1);
    let s = Steps::of(&k);
    let (before, done_at) = {
        let cloud = SimCloud::open(dir.path(), fast()).expect("open");
        apply_ok(&cloud, &k, &s.log()).await;
        apply_ok(&cloud, &k, &s.ap()).await;
        apply_ok(&cloud, &k, &s.svc(2, "wp:1")).await;
        apply_ok(&cloud, &k, &s.db("db.t4g.micro")).await;
        let done_at = cloud.lock_inventory().databases[&names(&k).database(None)].op_done_at;
        assert!(cloud.stats().persistence.commits >= 1);
        (cloud.inventory(), done_at)
    }; // dropped: the "controller process" ends, the creates are in flight

    let cloud = SimCloud::open(dir.path(), fast()).expect("reopen");
    let after = cloud.inventory();
    assert_eq!(after.log_groups, before.log_groups);
    assert_eq!(
        after
            .access_points
            .iter()
            .map(|a| &a.id)
            .collect::<Vec<_>>(),
        before
            .access_points
            .iter()
            .map(|a| &a.id)
            .collect::<Vec<_>>()
    );
    let task_ids = |inv: &InventorySnapshot| -> Vec<String> {
        inv.services[0].tasks.iter().map(|t| t.id.clone()).collect()
    };
    assert_eq!(task_ids(&after), task_ids(&before));
    let reopened_done_at = cloud.lock_inventory().databases[&names(&k).database(None)].op_done_at;
    assert_eq!(
        reopened_done_at, done_at,
        "the in-flight create keeps its schedule"
    );

    until_db(&cloud, &k, DbState::Available).await;
    assert!(now_ms() >= done_at, "not earlier than its original time");
    until_running(&cloud, &k, 2).await;

    // The client token survives too: the same token is still idempotent.
    apply_ok(&cloud, &k, &s.ap()).await;
    apply_ok(&cloud, &k, &s.svc(2, "wp:1")).await;
    assert_eq!(cloud.inventory().access_points.len(), 1);
}

#[tokio::test]
async fn removals_are_persisted_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key(1);
    let s = Steps::of(&k);
    {
        let cloud = SimCloud::open(dir.path(), fast()).expect("open");
        apply_ok(&cloud, &k, &s.log()).await;
        apply_ok(&cloud, &k, &s.ap()).await;
        cloud.delete_access_point_of(&k).expect("drift");
        let del = Step::DeleteLogGroup {
            name: names(&k).log_group,
        };
        apply_ok(&cloud, &k, &del).await;
    }
    let cloud = SimCloud::open(dir.path(), fast()).expect("reopen");
    let inv = cloud.inventory();
    assert_eq!(
        inv.directories,
        vec![DirectoryView {
            root_path: names(&k).access_point_root(None),
            data: String::new(),
        }],
        "files outlive the access point, as on EFS"
    );
    assert_eq!(
        InventorySnapshot {
            directories: Vec::new(),
            ..inv
        },
        InventorySnapshot::default()
    );
}

/// Reports what write-through costs (`cargo test measures_commit -- --nocapture`):
/// sequential calls pay one durable commit each; concurrent calls share commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measures_commit_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cloud = std::sync::Arc::new(SimCloud::open(dir.path(), fast()).expect("open"));
    for i in 0..50 {
        let k = key(i);
        apply_ok(&cloud, &k, &Steps::of(&k).log()).await;
    }
    let seq = cloud.stats().persistence;
    assert_eq!((seq.commits, seq.records_written), (50, 50));

    let mut set = tokio::task::JoinSet::new();
    for i in 50..250 {
        let cloud = std::sync::Arc::clone(&cloud);
        set.spawn(async move {
            let k = key(i);
            apply(&cloud, &k, &Steps::of(&k).log()).await
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("task").expect("apply");
    }
    let all = cloud.stats().persistence;
    assert_eq!(all.records_written, 250);
    eprintln!(
        "sim-cloud commits: sequential {} commits avg {} µs max {} µs; \
         after 200 concurrent: {} commits in all, avg {} µs, max {} µs",
        seq.commits,
        seq.avg_commit_micros,
        seq.max_commit_micros,
        all.commits,
        all.avg_commit_micros,
        all.max_commit_micros
    );
}

#[tokio::test]
async fn drift_helpers_report_missing_resources() {
    let cloud = cloud();
    let k = key(1);
    assert!(matches!(
        cloud.kill_tasks(&k, 1),
        Err(SimError::NotFound(_))
    ));
    assert!(matches!(
        cloud.set_service_desired_count(&k, 1),
        Err(SimError::NotFound(_))
    ));
    assert!(matches!(
        cloud.delete_access_point_of(&k),
        Err(SimError::NotFound(_))
    ));
    assert!(matches!(
        cloud.stop_database_of(&k),
        Err(SimError::NotFound(_))
    ));
    assert_eq!(cloud.stats().calls, 0, "drift helpers are not API calls");
}

#[tokio::test]
async fn killed_tasks_are_replaced_and_desired_count_drifts() {
    let cloud = cloud_at(200.0);
    let k = key(1);
    apply_ok(&cloud, &k, &Steps::of(&k).svc(2, "wp:1")).await;
    until_running(&cloud, &k, 2).await;

    cloud.kill_tasks(&k, 1).expect("kill");
    let svc = observe1(&cloud, &k).await.service.expect("svc");
    assert_eq!(
        (svc.desired_count, svc.running_count, svc.pending_count),
        (2, 1, 1)
    );
    until_running(&cloud, &k, 2).await;

    cloud.set_service_desired_count(&k, 3).expect("scale");
    let svc = until_running(&cloud, &k, 3).await;
    assert_eq!(svc.desired_count, 3);
    assert_eq!(
        cloud.stats().mutating_calls,
        1,
        "drift helpers are not API calls"
    );
}

#[tokio::test]
async fn access_points_vanish_and_databases_stop_behind_the_controllers_back() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    apply_ok(&cloud, &k, &s.ap()).await;
    apply_ok(&cloud, &k, &s.db("db.t4g.micro")).await;

    cloud.delete_access_point_of(&k).expect("ap");
    assert!(
        observe1(&cloud, &k).await.access_points.is_empty(),
        "gone at once"
    );

    assert!(
        matches!(cloud.stop_database_of(&k), Err(SimError::InvalidState(_))),
        "creating"
    );
    until_db(&cloud, &k, DbState::Available).await;
    cloud.stop_database_of(&k).expect("stop");
    assert_eq!(
        db_state(&observe1(&cloud, &k).await),
        Some(DbState::Stopping)
    );
    cloud.stop_database_of(&k).expect("already stopping");
    until_db(&cloud, &k, DbState::Stopped).await;
}

#[tokio::test]
async fn throttle_and_error_faults_have_no_effect() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    cloud.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let r = apply(&cloud, &k, &s.log()).await;
    assert!(matches!(r, Err(CloudError::Throttled { .. })), "{r:?}");
    assert!(matches!(
        cloud.observe(std::slice::from_ref(&k)).await,
        Err(CloudError::Throttled { .. })
    ));
    assert!(cloud.tasks_of(&k).await.is_err());

    cloud.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let r = apply(&cloud, &k, &s.db("db.t4g.micro")).await;
    assert!(
        matches!(r, Err(CloudError::Unavailable { service: "rds", .. })),
        "{r:?}"
    );
    assert!(matches!(
        cloud.observe(std::slice::from_ref(&k)).await,
        Err(CloudError::Unavailable { .. })
    ));
    assert_eq!(cloud.inventory(), InventorySnapshot::default());

    let log = cloud.call_log();
    assert_eq!(log[0].outcome, "throttled");
    assert_eq!(log[0].instance.as_deref(), Some("t1/blog1"));
    assert!(log[0].mutating);
    assert!(
        log.iter()
            .any(|c| c.outcome == "error" && c.operation == "CreateDBInstance")
    );

    cloud.set_faults(Faults::default());
    apply_ok(&cloud, &k, &s.log()).await;
    assert_eq!(cloud.call_log().last().map(|c| c.outcome), Some("ok"));
}

#[tokio::test]
async fn latency_spikes_delay_but_do_not_fail() {
    let cloud = cloud();
    let k = key(1);
    cloud.set_faults(Faults {
        latency_spike_rate: 1.0,
        latency_spike_ms: 100_000, // 100 ms at speed 1000
        ..Faults::default()
    });
    let started = Instant::now();
    apply_ok(&cloud, &k, &Steps::of(&k).log()).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(cloud.inventory().log_groups.len(), 1);
}

#[tokio::test]
async fn slow_rds_stretches_rds_transitions() {
    let cloud = cloud();
    let k = key(1);
    cloud.set_faults(Faults {
        slow_rds_factor: 10.0,
        ..Faults::default()
    });
    apply_ok(&cloud, &k, &Steps::of(&k).db("db.t4g.micro")).await;
    let db = cloud.lock_inventory().databases[&names(&k).database(None)].clone();
    let took = db.op_done_at - db.op_started_at;
    assert!(
        took >= 1_900,
        "240 s × 10 × 0.8 ÷ 1000 ≈ 1.9 s, got {took} ms"
    );
    assert!(cloud.poll_interval(WaitingOn::Database) > Duration::from_millis(500));
}

#[test]
fn poll_intervals_follow_what_is_awaited() {
    let normal = SimCloud::in_memory(SimConfig::default());
    assert_eq!(
        normal.poll_interval(WaitingOn::Database),
        Duration::from_secs(30)
    );
    assert_eq!(
        normal.poll_interval(WaitingOn::AccessPoint),
        Duration::from_millis(500)
    );
    assert_eq!(
        normal.poll_interval(WaitingOn::Tasks),
        Duration::from_secs(5)
    );
    let fast = cloud();
    assert_eq!(
        fast.poll_interval(WaitingOn::Database),
        Duration::from_millis(60)
    );
    assert_eq!(
        fast.poll_interval(WaitingOn::AccessPoint),
        Duration::from_millis(20)
    );
}

#[test]
fn defaults_are_documented_values() {
    let c = SimConfig::default();
    assert_eq!(c.speed, 1.0);
    assert_eq!(
        c.limits.ecs,
        RateLimit {
            rate: 20.0,
            burst: 40.0
        }
    );
    assert_eq!(
        c.limits.rds,
        RateLimit {
            rate: 10.0,
            burst: 20.0
        }
    );
    assert_eq!(c.faults, Faults::default());
}

#[tokio::test]
async fn no_step_panics_on_missing_resources() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    for step in [
        s.update(1, "x"),
        s.modify("x"),
        s.start(),
        s.stop(),
        s.snapshot(),
        s.delete_db(),
        s.delete_svc(),
    ] {
        let r = apply(&cloud, &k, &step).await;
        assert!(
            r.as_ref().map_or_else(CloudError::is_retryable, |_| true),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn the_client_retries_a_refused_call_like_the_sdk_and_books_every_attempt() {
    let cloud = SimCloud::in_memory(SimConfig {
        attempts: 3,
        ..fast()
    });
    let k = key(1);
    let s = Steps::of(&k);
    cloud.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let r = apply(&cloud, &k, &s.log()).await;
    assert!(matches!(r, Err(CloudError::Throttled { .. })), "{r:?}");
    let st = cloud.stats();
    assert_eq!((st.calls, st.injected.throttles), (3, 3), "three attempts");
    // A refusal the next attempt gets past is invisible to the caller.
    cloud.set_faults(Faults {
        error_rate: 0.3,
        ..Faults::default()
    });
    let mut ok = 0;
    for _ in 0..40 {
        ok += usize::from(cloud.observe(std::slice::from_ref(&k)).await.is_ok());
    }
    // An observation is 5 describe calls: 0.7^5 = 17 % get through without retries,
    // (1 - 0.3^3)^5 = 87 % with them.
    assert!(ok >= 25, "{ok} of 40 observations got through with retries");
}
