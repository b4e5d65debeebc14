//! Table tests of `plan()`: one row per behaviour. `check` is the only call into the planner.

use super::*;
use crate::cloud::{
    ObservedAccessPoint, ObservedLogGroup, ObservedSnapshot, ObservedTask, Rollout, Seen,
    ServiceState, SnapshotState,
};
use crate::model::{Configuration, InstanceKey, now};

fn spec() -> Spec {
    Spec {
        organization_name: "Acme".into(),
        contact_email: "ops@acme.example".into(),
        tier: Tier::Standard,
        state: DesiredState::Active,
        configuration: Configuration::default(),
        restore: None,
    }
}

fn key() -> InstanceKey {
    InstanceKey::from_strs("t1", "blog")
}

fn names() -> ResourceNames {
    ResourceNames::for_key(&key())
}

/// An instance with the given previous phase.
fn inst(phase: Phase) -> Instance {
    let mut i = Instance::new(key(), spec(), now());
    i.status.phase = phase;
    i
}

fn deleted(phase: Phase) -> Instance {
    let mut i = inst(phase);
    i.metadata.deletion_requested_at = Some(now());
    i
}

const IMAGE: &str = "wordpress:6.5-php8.2-apache";

fn svc(desired: u32, running: u32, pending: u32) -> ObservedService {
    ObservedService {
        name: names().service,
        arn: "arn:svc".into(),
        state: ServiceState::Active,
        desired_count: desired,
        running_count: running,
        pending_count: pending,
        image: IMAGE.into(),
        rollout: Rollout::Completed,
        deployment: None,
        access_point_id: "fsap-1".into(),
        db_endpoint: "db.example".into(),
    }
}

fn db(state: DbState) -> ObservedDatabase {
    ObservedDatabase {
        identifier: names().database(None),
        arn: "arn:db".into(),
        state,
        endpoint: Some("db.example".into()),
        instance_class: "db.t4g.micro".into(),
    }
}

fn ap(state: AccessPointState) -> ObservedAccessPoint {
    ObservedAccessPoint {
        id: "fsap-1".into(),
        arn: "arn:ap".into(),
        state,
        root_path: names().access_point_root(None),
    }
}

fn final_snapshot_id() -> String {
    ResourceNames::final_snapshot(&names().database(None))
}

fn snapshot(state: SnapshotState) -> ObservedSnapshot {
    ObservedSnapshot {
        id: final_snapshot_id(),
        arn: "arn:snap".into(),
        state,
        db_identifier: names().database(None),
    }
}

/// Everything an active instance with 2 tasks needs, converged.
fn world() -> Observed {
    Observed {
        service: Some(svc(2, 2, 0)),
        access_points: vec![ap(AccessPointState::Available)],
        databases: vec![db(DbState::Available)],
        snapshots: Seen::Observed(vec![]),
        jobs: vec![],
        log_group: Some(ObservedLogGroup {
            name: names().log_group,
            arn: "arn:lg".into(),
        }),
        tasks: Some(vec![task("HEALTHY"), task("HEALTHY")]),
    }
}

fn task(health: &str) -> ObservedTask {
    ObservedTask {
        id: "t".into(),
        last_status: "RUNNING".into(),
        health: health.into(),
        started_at: None,
        image: IMAGE.into(),
    }
}

/// The one call into the planner: asserts step names, phase and convergence.
fn check(inst: &Instance, obs: &Observed, steps: &[&str], phase: Phase, converged: bool) -> Plan {
    let p = plan(&PlanInput::new(inst), obs);
    let got: Vec<&str> = p.steps.iter().map(Step::name).collect();
    assert_eq!(got, steps, "steps; plan = {p:#?}");
    assert_eq!(p.phase, phase, "phase; plan = {p:#?}");
    assert_eq!(p.converged, converged, "converged; plan = {p:#?}");
    assert_eq!(
        p.converged,
        p.waits.is_empty() && p.steps.is_empty() && p.problem.is_none()
    );
    p
}

// ---- provisioning -------------------------------------------------------------------

#[test]
fn new_instance_creates_log_group_access_point_and_database_at_once() {
    let p = check(
        &inst(Phase::PendingProvisioning),
        &Observed::default(),
        &["CreateLogGroup", "CreateAccessPoint", "CreateDatabase"],
        Phase::Provisioning,
        false,
    );
    assert!(p.steps.contains(&Step::CreateDatabase {
        identifier: names().database(None),
        instance_class: "db.t4g.micro".into(),
        allocated_storage_gb: 20,
    }));
}

#[test]
fn waits_for_a_creating_database_without_calling_anything() {
    let mut o = world();
    o.service = None;
    o.databases = vec![db(DbState::Creating)];
    let p = check(
        &inst(Phase::Provisioning),
        &o,
        &[],
        Phase::Provisioning,
        false,
    );
    assert_eq!(p.waits[0].on, WaitingOn::Database);
}

#[test]
fn service_is_created_once_database_and_access_point_are_available() {
    let mut o = world();
    o.service = None;
    let p = check(
        &inst(Phase::Provisioning),
        &o,
        &["CreateService"],
        Phase::Provisioning,
        false,
    );
    assert_eq!(
        p.steps[0],
        Step::CreateService {
            name: names().service,
            desired_count: 2,
            image: IMAGE.into(),
            access_point_id: "fsap-1".into(),
            db_endpoint: "db.example".into(),
        }
    );
}

#[test]
fn service_waits_for_a_creating_access_point() {
    let mut o = world();
    o.service = None;
    o.access_points = vec![ap(AccessPointState::Creating)];
    check(
        &inst(Phase::Provisioning),
        &o,
        &[],
        Phase::Provisioning,
        false,
    );
}

#[test]
fn pending_tasks_keep_the_instance_provisioning() {
    let mut o = world();
    o.service = Some(svc(2, 1, 1));
    let p = check(
        &inst(Phase::Provisioning),
        &o,
        &[],
        Phase::Provisioning,
        false,
    );
    assert_eq!(p.waits[0].reason, "WaitingForTasks");
}

#[test]
fn converged_active_instance_plans_nothing() {
    check(&inst(Phase::Active), &world(), &[], Phase::Active, true);
    check(
        &inst(Phase::Provisioning),
        &world(),
        &[],
        Phase::Active,
        true,
    );
}

#[test]
fn running_tasks_must_also_be_healthy() {
    let mut o = world();
    o.tasks = Some(vec![task("HEALTHY"), task("UNKNOWN")]);
    let p = check(
        &inst(Phase::Provisioning),
        &o,
        &[],
        Phase::Provisioning,
        false,
    );
    assert_eq!(p.waits[0].reason, "WaitingForHealthyTasks");
    assert_eq!(p.waits[0].message, "1 of 2 tasks healthy");
}

/// Health judged before carries over while the service stays settled at the same
/// deployment and count; a changed count makes it unknown again.
#[test]
fn a_steady_pass_that_did_not_list_tasks_uses_the_last_judgement() {
    let mut i = inst(Phase::Active);
    i.status.replicas.desired = 2;
    let healthy = crate::model::TaskStatus {
        id: "t".into(),
        status: "RUNNING".into(),
        health: "HEALTHY".into(),
        started_at: None,
    };
    i.status.resources.service = Some(crate::model::ServiceStatus {
        name: names().service,
        arn: "arn".into(),
        image: IMAGE.into(),
        deployment_status: "COMPLETED".into(),
        deployment_id: None,
        health_status: "HEALTHY".into(),
        tasks: vec![healthy.clone(), healthy],
        tasks_observed_at: None,
    });
    let mut o = world();
    o.tasks = None;
    check(&i, &o, &[], Phase::Active, true);
    i.status.replicas.desired = 1;
    let p = check(&i, &o, &[], Phase::Scaling, false);
    assert_eq!(p.waits[0].message, "task health not known yet");
}

#[test]
fn a_rollout_in_progress_is_not_converged() {
    let mut o = world();
    o.service.as_mut().unwrap().rollout = Rollout::InProgress;
    check(&inst(Phase::Active), &o, &[], Phase::Scaling, false);
}

// ---- scaling, updates and drift -------------------------------------------------------

#[test]
fn scaling_up_updates_the_service_count() {
    let mut i = inst(Phase::Active);
    i.spec.configuration.desired_count = 4;
    let p = check(&i, &world(), &["UpdateService"], Phase::Scaling, false);
    assert_eq!(
        p.steps[0],
        Step::UpdateService {
            name: names().service,
            desired_count: 4,
            image: IMAGE.into(),
            access_point_id: "fsap-1".into(),
            db_endpoint: "db.example".into(),
        }
    );
}

#[test]
fn a_count_changed_behind_our_back_is_put_back() {
    let mut o = world();
    o.service = Some(svc(3, 3, 0));
    let p = check(
        &inst(Phase::Active),
        &o,
        &["UpdateService"],
        Phase::Scaling,
        false,
    );
    assert!(matches!(
        p.steps[0],
        Step::UpdateService {
            desired_count: 2,
            ..
        }
    ));
}

#[test]
fn a_new_wordpress_version_rolls_out_a_new_image() {
    let mut i = inst(Phase::Active);
    i.spec.configuration.wordpress_version = "6.6".into();
    let p = check(&i, &world(), &["UpdateService"], Phase::Scaling, false);
    assert!(
        matches!(&p.steps[0], Step::UpdateService { image, .. } if image == "wordpress:6.6-php8.2-apache")
    );
}

#[test]
fn a_tier_change_modifies_the_database_class() {
    let mut i = inst(Phase::Active);
    i.spec.tier = Tier::Professional;
    let p = check(&i, &world(), &["ModifyDatabase"], Phase::Scaling, false);
    assert!(
        matches!(&p.steps[0], Step::ModifyDatabase { instance_class, .. } if instance_class == "db.t4g.small")
    );
}

#[test]
fn an_access_point_deleted_behind_our_back_is_recreated_not_anything_destroyed() {
    let mut o = world();
    o.access_points.clear();
    check(
        &inst(Phase::Active),
        &o,
        &["CreateAccessPoint"],
        Phase::Provisioning,
        false,
    );
}

#[test]
fn a_draining_service_is_waited_for_not_recreated() {
    let mut o = world();
    o.service.as_mut().unwrap().state = ServiceState::Draining;
    check(&inst(Phase::Active), &o, &[], Phase::Scaling, false);
}

#[test]
fn a_failed_database_is_a_problem_for_a_person() {
    let mut o = world();
    o.databases = vec![db(DbState::Failed)];
    let p = check(&inst(Phase::Active), &o, &[], Phase::Failed, false);
    assert_eq!(p.problem.unwrap().reason, "DatabaseFailed");
}

// ---- suspend and resume -------------------------------------------------------------

fn suspended_spec(mut i: Instance) -> Instance {
    i.spec.state = DesiredState::Suspended;
    i
}

#[test]
fn suspend_first_scales_the_service_to_zero() {
    let p = check(
        &suspended_spec(inst(Phase::Active)),
        &world(),
        &["UpdateService"],
        Phase::Suspending,
        false,
    );
    assert!(matches!(
        p.steps[0],
        Step::UpdateService {
            desired_count: 0,
            ..
        }
    ));
}

#[test]
fn suspend_waits_for_tasks_to_stop_before_stopping_the_database() {
    let mut o = world();
    o.service = Some(svc(0, 1, 0));
    check(
        &suspended_spec(inst(Phase::Suspending)),
        &o,
        &[],
        Phase::Suspending,
        false,
    );
}

#[test]
fn suspend_stops_the_database_once_no_task_runs() {
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    check(
        &suspended_spec(inst(Phase::Suspending)),
        &o,
        &["StopDatabase"],
        Phase::Suspending,
        false,
    );
}

#[test]
fn suspended_and_stopped_is_converged() {
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    o.databases = vec![db(DbState::Stopped)];
    check(
        &suspended_spec(inst(Phase::Suspending)),
        &o,
        &[],
        Phase::Suspended,
        true,
    );
}

#[test]
fn an_instance_created_suspended_gets_data_resources_but_no_service() {
    let o = Observed::default();
    check(
        &suspended_spec(inst(Phase::PendingProvisioning)),
        &o,
        &["CreateLogGroup", "CreateAccessPoint", "CreateDatabase"],
        Phase::Suspending,
        false,
    );
    let mut o = world();
    o.service = None;
    o.databases = vec![db(DbState::Available)];
    check(
        &suspended_spec(inst(Phase::Suspending)),
        &o,
        &["StopDatabase"],
        Phase::Suspending,
        false,
    );
}

#[test]
fn resume_starts_the_database_before_restoring_tasks() {
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    o.databases = vec![db(DbState::Stopped)];
    check(
        &inst(Phase::Suspended),
        &o,
        &["StartDatabase"],
        Phase::Resuming,
        false,
    );
    o.databases = vec![db(DbState::Starting)];
    check(&inst(Phase::Resuming), &o, &[], Phase::Resuming, false);
}

#[test]
fn resume_restores_the_task_count_once_the_database_is_available() {
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    let p = check(
        &inst(Phase::Resuming),
        &o,
        &["UpdateService"],
        Phase::Resuming,
        false,
    );
    assert!(matches!(
        p.steps[0],
        Step::UpdateService {
            desired_count: 2,
            ..
        }
    ));
}

#[test]
fn resume_after_suspend_interrupted_before_the_database_stopped() {
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    o.databases = vec![db(DbState::Stopping)];
    check(&inst(Phase::Suspending), &o, &[], Phase::Resuming, false);
}

// ---- teardown -----------------------------------------------------------------------

#[test]
fn delete_removes_the_service_first() {
    check(
        &deleted(Phase::Active),
        &world(),
        &["DeleteService"],
        Phase::Deprovisioning,
        false,
    );
}

#[test]
fn delete_waits_for_a_draining_service() {
    let mut o = world();
    o.service.as_mut().unwrap().state = ServiceState::Draining;
    check(
        &deleted(Phase::Deprovisioning),
        &o,
        &[],
        Phase::Deprovisioning,
        false,
    );
}

#[test]
fn delete_removes_the_access_point_after_the_service() {
    let mut o = world();
    o.service = None;
    check(
        &deleted(Phase::Deprovisioning),
        &o,
        &["DeleteAccessPoint"],
        Phase::Deprovisioning,
        false,
    );
}

#[test]
fn delete_snapshots_the_database_before_deleting_it() {
    let mut o = world();
    o.service = None;
    o.access_points.clear();
    check(
        &deleted(Phase::Deprovisioning),
        &o,
        &["SnapshotDatabase"],
        Phase::Deprovisioning,
        false,
    );
    o.databases = vec![db(DbState::Stopped)];
    check(
        &deleted(Phase::Deprovisioning),
        &o,
        &["SnapshotDatabase"],
        Phase::Deprovisioning,
        false,
    );
    o.snapshots = Seen::Observed(vec![snapshot(SnapshotState::Creating)]);
    check(
        &deleted(Phase::Deprovisioning),
        &o,
        &[],
        Phase::Deprovisioning,
        false,
    );
    o.snapshots = Seen::Observed(vec![snapshot(SnapshotState::Available)]);
    let p = check(
        &deleted(Phase::Deprovisioning),
        &o,
        &["DeleteDatabase"],
        Phase::Deprovisioning,
        false,
    );
    assert_eq!(
        p.steps[0],
        Step::DeleteDatabase {
            identifier: names().database(None),
            final_snapshot_id: final_snapshot_id(),
        }
    );
}

/// Snapshots the observation left out are not "none": nothing is snapshotted or deleted,
/// the plan waits and asks to look again with them.
#[test]
fn delete_without_observed_snapshots_decides_nothing_about_the_database() {
    let mut o = world();
    o.service = None;
    o.access_points.clear();
    o.snapshots = Seen::NotObserved;
    let p = check(
        &deleted(Phase::Deprovisioning),
        &o,
        &[],
        Phase::Deprovisioning,
        false,
    );
    assert!(p.needs_snapshots);
    assert_eq!(p.waits[0].reason, "LookingForSnapshot");
    // A database already being deleted needs no snapshot to be waited for.
    o.databases = vec![db(DbState::Deleting)];
    let p = check(
        &deleted(Phase::Deprovisioning),
        &o,
        &[],
        Phase::Deprovisioning,
        false,
    );
    assert!(!p.needs_snapshots);
}

#[test]
fn a_live_instance_needs_no_snapshots() {
    let mut o = world();
    o.snapshots = Seen::NotObserved;
    let p = check(&inst(Phase::Active), &o, &[], Phase::Active, true);
    assert!(!p.needs_snapshots);
    assert!(!needs_snapshots(&PlanInput::new(&inst(Phase::Active))));
    assert!(needs_snapshots(&PlanInput::new(&deleted(Phase::Active))));
}

#[test]
fn delete_waits_for_a_database_in_transition() {
    let mut o = world();
    o.service = None;
    o.access_points.clear();
    for state in [
        DbState::Starting,
        DbState::Creating,
        DbState::Stopping,
        DbState::Deleting,
    ] {
        o.databases = vec![db(state)];
        check(
            &deleted(Phase::Deprovisioning),
            &o,
            &[],
            Phase::Deprovisioning,
            false,
        );
    }
}

#[test]
fn a_failed_final_snapshot_keeps_the_database() {
    let mut o = world();
    o.service = None;
    o.access_points.clear();
    o.snapshots = Seen::Observed(vec![snapshot(SnapshotState::Failed)]);
    let p = check(
        &deleted(Phase::Deprovisioning),
        &o,
        &[],
        Phase::Deprovisioning,
        false,
    );
    assert_eq!(p.problem.unwrap().reason, "FinalSnapshotFailed");
}

#[test]
fn delete_removes_the_log_group_last() {
    let mut o = world();
    o.service = None;
    o.access_points.clear();
    o.databases.clear();
    o.snapshots = Seen::Observed(vec![snapshot(SnapshotState::Available)]);
    check(
        &deleted(Phase::Deprovisioning),
        &o,
        &["DeleteLogGroup"],
        Phase::Deprovisioning,
        false,
    );
}

#[test]
fn nothing_left_is_deprovisioned() {
    check(
        &deleted(Phase::Deprovisioning),
        &Observed::default(),
        &[],
        Phase::Deprovisioned,
        true,
    );
}

// ---- invariants over every combination ---------------------------------------------

fn all_observations() -> Vec<Observed> {
    let services = [
        None,
        Some(svc(2, 2, 0)),
        Some(svc(0, 0, 0)),
        Some(svc(2, 1, 1)),
        Some(ObservedService {
            state: ServiceState::Draining,
            ..svc(0, 1, 0)
        }),
    ];
    let aps = [
        vec![],
        vec![ap(AccessPointState::Available)],
        vec![ap(AccessPointState::Creating)],
        vec![ap(AccessPointState::Deleting)],
    ];
    let dbs = [
        vec![],
        vec![db(DbState::Available)],
        vec![db(DbState::Stopped)],
        vec![db(DbState::Starting)],
        vec![db(DbState::Deleting)],
        vec![db(DbState::Creating)],
    ];
    let snaps = [
        vec![],
        vec![snapshot(SnapshotState::Creating)],
        vec![snapshot(SnapshotState::Available)],
    ];
    let lg = world().log_group;
    let mut out = vec![];
    for s in &services {
        for a in &aps {
            for d in &dbs {
                for f in &snaps {
                    for l in [None, lg.clone()] {
                        out.push(Observed {
                            service: s.clone(),
                            access_points: a.clone(),
                            databases: d.clone(),
                            snapshots: Seen::Observed(f.clone()),
                            log_group: l,
                            tasks: None,
                            jobs: vec![],
                        });
                    }
                }
            }
        }
    }
    out
}

#[test]
fn invariants_hold_for_every_combination() {
    let mut desireds = vec![];
    for phase in Phase::ALL {
        desireds.push(inst(phase));
        desireds.push(suspended_spec(inst(phase)));
        desireds.push(deleted(phase));
    }
    for o in all_observations() {
        for i in &desireds {
            let p = plan(&PlanInput::new(i), &o);
            if p.converged {
                assert!(p.steps.is_empty());
            }
            for step in &p.steps {
                assert!(
                    !step.is_destructive() || i.is_deleted(),
                    "destructive {step:?} for a live instance; {o:?}"
                );
                if let Step::DeleteDatabase {
                    final_snapshot_id, ..
                } = step
                {
                    let snap = o
                        .snapshots
                        .observed()
                        .expect("snapshots observed")
                        .iter()
                        .find(|s| &s.id == final_snapshot_id);
                    assert_eq!(snap.map(|s| s.state), Some(SnapshotState::Available));
                }
                if let Step::CreateService { .. } = step {
                    assert!(o.databases.iter().any(|d| d.state == DbState::Available));
                }
            }
            // Teardown order: nothing after the service is touched while it exists.
            if i.is_deleted() && o.service.is_some() {
                assert!(
                    p.steps
                        .iter()
                        .all(|s| matches!(s, Step::DeleteService { .. }))
                );
            }
            // Every unconverged plan knows what it waits for, so it is looked at again.
            if !p.converged && p.problem.is_none() {
                assert!(!p.waits.is_empty(), "{i:?} {o:?}");
            }
        }
    }
}

// ---- backups -------------------------------------------------------------------------

use crate::cloud::{JobKind, JobState, ObservedJob};
use crate::model::{Backup, BackupStatus, RestoreSpec, RestoreStage, RestoreStatus};

fn backup(status: BackupStatus, job: Option<&str>) -> Backup {
    let mut b = Backup::new(&key(), now());
    b.backup_id = "bk-0000000000010000abcd".into();
    b.status = status;
    b.efs_backup_job_id = job.map(str::to_owned);
    b
}

fn job(kind: JobKind, id: &str, state: JobState) -> ObservedJob {
    ObservedJob {
        kind,
        id: id.into(),
        state,
        percent_done: if state == JobState::Completed {
            100
        } else {
            40
        },
        recovery_point_arn: (state == JobState::Completed).then(|| "arn:rp:1".to_owned()),
        message: (state == JobState::Failed).then(|| "disk on fire".to_owned()),
    }
}

fn backup_snapshot(state: SnapshotState) -> ObservedSnapshot {
    ObservedSnapshot {
        id: names().backup_snapshot("bk-0000000000010000abcd"),
        arn: "arn:bsnap".into(),
        state,
        db_identifier: names().database(None),
    }
}

fn plan_with(
    i: &Instance,
    backups: &[Backup],
    restore_from: Option<&Backup>,
    o: &Observed,
) -> Plan {
    plan(
        &PlanInput {
            inst: i,
            backups,
            restore_from,
        },
        o,
    )
}

fn step_names(p: &Plan) -> Vec<&'static str> {
    p.steps.iter().map(Step::name).collect()
}

#[test]
fn a_pending_backup_starts_a_backup_job_and_a_snapshot() {
    let bk = backup(BackupStatus::Pending, None);
    let p = plan_with(&inst(Phase::Active), &[bk], None, &world());
    assert_eq!(step_names(&p), ["StartBackupJob", "SnapshotDatabase"]);
    assert!(p.converged, "a backup does not make the spec unconverged");
    assert_eq!(p.phase, Phase::Active);
    assert_eq!(p.backups[0].status, BackupStatus::Running);
    assert!(!p.waits.is_empty(), "it is looked at again");
}

#[test]
fn a_running_backup_is_followed_not_restarted() {
    let bk = backup(BackupStatus::Running, Some("job-1"));
    let mut o = world();
    o.jobs = vec![job(JobKind::Backup, "job-1", JobState::Running)];
    o.snapshots = Seen::Observed(vec![backup_snapshot(SnapshotState::Creating)]);
    let p = plan_with(&inst(Phase::Active), &[bk], None, &o);
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert!(p.backups.is_empty(), "nothing changed");
}

#[test]
fn a_backup_is_not_judged_without_its_snapshot_observed() {
    let bk = backup(BackupStatus::Running, Some("job-1"));
    let mut o = world();
    o.jobs = vec![job(JobKind::Backup, "job-1", JobState::Completed)];
    o.snapshots = Seen::NotObserved;
    let p = plan_with(&inst(Phase::Active), std::slice::from_ref(&bk), None, &o);
    assert!(p.steps.is_empty(), "no second snapshot: {:?}", p.steps);
    assert!(p.backups.is_empty(), "progress unchanged until it is seen");
    assert!(p.needs_snapshots && !p.waits.is_empty());
    assert!(needs_snapshots(&PlanInput {
        inst: &inst(Phase::Active),
        backups: &[bk],
        restore_from: None,
    }));
}

#[test]
fn a_backup_completes_when_both_parts_are_done() {
    let bk = backup(BackupStatus::Running, Some("job-1"));
    let mut o = world();
    o.jobs = vec![job(JobKind::Backup, "job-1", JobState::Completed)];
    o.snapshots = Seen::Observed(vec![backup_snapshot(SnapshotState::Available)]);
    let p = plan_with(&inst(Phase::Active), &[bk], None, &o);
    let done = &p.backups[0];
    assert_eq!(done.status, BackupStatus::Completed);
    assert_eq!(done.efs_recovery_point_arn.as_deref(), Some("arn:rp:1"));
    assert_eq!(
        done.rds_snapshot_id,
        Some(names().backup_snapshot("bk-0000000000010000abcd"))
    );
    assert!(p.waits.is_empty());
}

#[test]
fn a_failed_backup_job_fails_the_backup() {
    let bk = backup(BackupStatus::Running, Some("job-1"));
    let mut o = world();
    o.jobs = vec![job(JobKind::Backup, "job-1", JobState::Failed)];
    let p = plan_with(&inst(Phase::Active), &[bk], None, &o);
    assert_eq!(p.backups[0].status, BackupStatus::Failed);
    assert!(
        p.backups[0]
            .error
            .as_deref()
            .unwrap()
            .contains("disk on fire")
    );
}

#[test]
fn a_suspended_instance_can_be_backed_up() {
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    o.databases = vec![db(DbState::Stopped)];
    let bk = backup(BackupStatus::Pending, None);
    let p = plan_with(&suspended_spec(inst(Phase::Suspended)), &[bk], None, &o);
    assert_eq!(step_names(&p), ["StartBackupJob", "SnapshotDatabase"]);
    assert_eq!(p.phase, Phase::Suspended);
}

#[test]
fn a_backup_waits_for_the_data_resources() {
    let mut o = world();
    o.databases = vec![db(DbState::Creating)];
    let bk = backup(BackupStatus::Pending, None);
    let p = plan_with(&inst(Phase::Provisioning), &[bk], None, &o);
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::StartBackupJob { .. }))
    );
    assert!(p.waits.iter().any(|w| w.reason == "BackupWaiting"));
}

#[test]
fn deleting_an_instance_fails_its_backups_in_flight() {
    let bk = backup(BackupStatus::Running, Some("job-1"));
    let p = plan_with(&deleted(Phase::Active), &[bk], None, &world());
    assert_eq!(p.backups[0].status, BackupStatus::Failed);
    assert_eq!(step_names(&p), ["DeleteService"]);
}

// ---- restore -------------------------------------------------------------------------

const REQUEST: &str = "rs-00000000000000000000000000000001";

fn epoch() -> String {
    crate::cloud::names::epoch_of(REQUEST)
}

fn completed_backup() -> Backup {
    let mut b = backup(BackupStatus::Completed, Some("job-1"));
    b.efs_recovery_point_arn = Some("arn:rp:1".into());
    b.rds_snapshot_id = Some(names().backup_snapshot("bk-0000000000010000abcd"));
    b
}

/// An instance whose spec asks for a restore, with the restore's status so far.
fn restoring(stage: Option<RestoreStage>, job: Option<&str>) -> Instance {
    relocating(stage, job, None)
}

/// `restoring`, with a relocation task recorded too.
fn relocating(stage: Option<RestoreStage>, job: Option<&str>, task: Option<&str>) -> Instance {
    let mut i = inst(Phase::Active);
    i.status.observed_generation = 1;
    i.spec.restore = Some(RestoreSpec {
        backup_id: "bk-0000000000010000abcd".into(),
        request_id: REQUEST.into(),
    });
    i.status.restore = stage.map(|stage| RestoreStatus {
        request_id: REQUEST.into(),
        backup_id: "bk-0000000000010000abcd".into(),
        stage,
        progress: 0,
        started_at: now(),
        completed_at: matches!(stage, RestoreStage::Completed | RestoreStage::Failed).then(now),
        efs_restore_job_id: job.map(str::to_owned),
        efs_relocation_task_id: task.map(str::to_owned),
        previous_epoch: None,
        error: None,
    });
    i
}

fn new_db(state: DbState) -> ObservedDatabase {
    ObservedDatabase {
        identifier: names().database(Some(&epoch())),
        endpoint: Some("restored.example".into()),
        ..db(state)
    }
}

fn new_ap(state: AccessPointState) -> ObservedAccessPoint {
    ObservedAccessPoint {
        id: "fsap-2".into(),
        root_path: names().access_point_root(Some(&epoch())),
        ..ap(state)
    }
}

#[test]
fn restore_first_stops_every_task() {
    let bk = completed_backup();
    let p = plan_with(&restoring(None, None), &[], Some(&bk), &world());
    assert_eq!(step_names(&p), ["UpdateService"]);
    assert!(matches!(
        p.steps[0],
        Step::UpdateService {
            desired_count: 0,
            ..
        }
    ));
    assert_eq!(p.phase, Phase::Restoring);
    assert_eq!(p.restore.as_ref().unwrap().stage, RestoreStage::Stopping);
    assert!(!p.converged);
}

#[test]
fn restore_then_restores_files_and_database_together() {
    let bk = completed_backup();
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    let p = plan_with(
        &restoring(Some(RestoreStage::Stopping), None),
        &[],
        Some(&bk),
        &o,
    );
    assert_eq!(step_names(&p), ["RestoreDatabase", "StartRestoreJob"]);
    assert_eq!(
        p.steps[0],
        Step::RestoreDatabase {
            identifier: names().database(Some(&epoch())),
            snapshot_id: names().backup_snapshot("bk-0000000000010000abcd"),
            instance_class: "db.t4g.micro".into(),
        }
    );
    assert_eq!(
        p.steps[1],
        Step::StartRestoreJob {
            recovery_point_arn: "arn:rp:1".into(),
            target_root: names().access_point_root(Some(&epoch())),
        }
    );
    assert_eq!(p.restore.unwrap().stage, RestoreStage::Restoring);
}

#[test]
fn a_recorded_restore_job_is_followed_not_started_again() {
    let bk = completed_backup();
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    o.databases.push(new_db(DbState::Creating));
    o.jobs = vec![job(JobKind::Restore, "rjob-1", JobState::Running)];
    let p = plan_with(
        &restoring(Some(RestoreStage::Restoring), Some("rjob-1")),
        &[],
        Some(&bk),
        &o,
    );
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    let r = p.restore.unwrap();
    assert_eq!(r.stage, RestoreStage::Restoring);
    assert_eq!(r.progress, 40, "20 + half the job's 40%");
}

#[test]
fn restore_progress_never_goes_back_while_the_database_is_still_restoring() {
    let bk = completed_backup();
    let i = restoring(Some(RestoreStage::Restoring), Some("rjob-1"));
    let mut seen = vec![];
    for (state, percent) in [
        (JobState::Running, 0),
        (JobState::Running, 60),
        (JobState::Running, 99),
        (JobState::Completed, 100),
    ] {
        let mut o = world();
        o.service = Some(svc(0, 0, 0));
        o.databases.push(new_db(DbState::Creating));
        let mut j = job(JobKind::Restore, "rjob-1", state);
        j.percent_done = percent;
        o.jobs = vec![j];
        seen.push(plan_with(&i, &[], Some(&bk), &o).restore.unwrap().progress);
    }
    assert_eq!(seen, [20, 50, 69, 70]);
}

/// The world once AWS Backup's job completed: the service stopped, the restored database
/// available.
fn files_restored() -> Observed {
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    o.databases.push(new_db(DbState::Available));
    o.jobs = vec![job(JobKind::Restore, "rjob-1", JobState::Completed)];
    o
}

#[test]
fn a_completed_restore_job_is_followed_by_moving_its_files_into_place() {
    let bk = completed_backup();
    let i = restoring(Some(RestoreStage::Restoring), Some("rjob-1"));
    let p = plan_with(&i, &[], Some(&bk), &files_restored());
    assert_eq!(
        p.steps,
        [Step::RelocateRestoredFiles {
            restore_job_id: "rjob-1".into(),
            target_root: names().access_point_root(Some(&epoch())),
            replaces: None,
        }],
        "no access point before the files are in place"
    );
    let r = p.restore.unwrap();
    assert_eq!((r.stage, r.progress), (RestoreStage::Restoring, 70));
    assert!(p.waits.iter().any(|w| w.reason == "RelocatingFiles"));
    assert!(!p.converged);
}

#[test]
fn a_recorded_relocation_task_is_followed_not_started_again() {
    let bk = completed_backup();
    let i = relocating(
        Some(RestoreStage::Restoring),
        Some("rjob-1"),
        Some("rtask-1"),
    );
    let mut o = files_restored();
    o.jobs
        .push(job(JobKind::Relocation, "rtask-1", JobState::Running));
    let p = plan_with(&i, &[], Some(&bk), &o);
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert_eq!(p.restore.unwrap().stage, RestoreStage::Restoring);
    assert!(p.waits.iter().any(|w| w.reason == "RelocatingFiles"));
}

#[test]
fn a_relocation_task_the_cloud_forgot_is_run_again_in_its_place() {
    let bk = completed_backup();
    let i = relocating(
        Some(RestoreStage::Restoring),
        Some("rjob-1"),
        Some("rtask-1"),
    );
    let p = plan_with(&i, &[], Some(&bk), &files_restored());
    assert_eq!(
        p.steps,
        [Step::RelocateRestoredFiles {
            restore_job_id: "rjob-1".into(),
            target_root: names().access_point_root(Some(&epoch())),
            replaces: Some("rtask-1".into()),
        }]
    );
}

#[test]
fn a_failed_relocation_fails_the_restore_and_brings_the_old_data_back() {
    let bk = completed_backup();
    let i = relocating(
        Some(RestoreStage::Restoring),
        Some("rjob-1"),
        Some("rtask-1"),
    );
    let mut o = files_restored();
    o.jobs
        .push(job(JobKind::Relocation, "rtask-1", JobState::Failed));
    let p = plan_with(&i, &[], Some(&bk), &o);
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    let r = p.restore.unwrap();
    assert_eq!(r.stage, RestoreStage::Failed);
    let error = r.error.unwrap();
    assert!(
        error.contains("rtask-1") && error.contains("disk on fire"),
        "{error}"
    );
    let i = relocating(Some(RestoreStage::Failed), Some("rjob-1"), Some("rtask-1"));
    let p = plan_with(&i, &[], Some(&bk), &o);
    assert!(matches!(
        &p.steps[0],
        Step::UpdateService { desired_count: 2, access_point_id, .. } if access_point_id == "fsap-1"
    ));
}

#[test]
fn once_the_restored_files_have_an_access_point_the_task_is_not_needed() {
    let bk = completed_backup();
    // Attaching, and ECS no longer knows the (long finished) task: nothing runs again.
    let i = relocating(
        Some(RestoreStage::Attaching),
        Some("rjob-1"),
        Some("rtask-1"),
    );
    let mut o = files_restored();
    o.access_points.push(new_ap(AccessPointState::Creating));
    let p = plan_with(&i, &[], Some(&bk), &o);
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert_eq!(p.restore.unwrap().stage, RestoreStage::Attaching);
}

#[test]
fn restored_files_get_an_access_point_then_the_service_moves_to_the_restored_data() {
    let bk = completed_backup();
    let mut o = files_restored();
    o.jobs
        .push(job(JobKind::Relocation, "rtask-1", JobState::Completed));
    let i = relocating(
        Some(RestoreStage::Restoring),
        Some("rjob-1"),
        Some("rtask-1"),
    );
    let p = plan_with(&i, &[], Some(&bk), &o);
    assert_eq!(step_names(&p), ["CreateAccessPoint"]);
    assert_eq!(p.restore.as_ref().unwrap().stage, RestoreStage::Attaching);

    o.access_points.push(new_ap(AccessPointState::Available));
    let p = plan_with(&i, &[], Some(&bk), &o);
    assert_eq!(
        p.steps,
        [Step::UpdateService {
            name: names().service,
            desired_count: 2,
            image: IMAGE.into(),
            access_point_id: "fsap-2".into(),
            db_endpoint: "restored.example".into(),
        }]
    );
    assert_eq!(p.restore.unwrap().stage, RestoreStage::Starting);
    assert!(
        p.steps.iter().all(|s| !s.is_destructive()),
        "nothing is removed before the restore completed"
    );
}

#[test]
fn restore_completes_when_tasks_run_healthy_on_the_restored_data() {
    let bk = completed_backup();
    let mut o = world();
    o.service = Some(ObservedService {
        access_point_id: "fsap-2".into(),
        db_endpoint: "restored.example".into(),
        ..svc(2, 2, 0)
    });
    o.databases.push(new_db(DbState::Available));
    o.access_points.push(new_ap(AccessPointState::Available));
    o.jobs = vec![job(JobKind::Restore, "rjob-1", JobState::Completed)];
    let i = restoring(Some(RestoreStage::Starting), Some("rjob-1"));
    let p = plan_with(&i, &[], Some(&bk), &o);
    assert_eq!(p.restore.as_ref().unwrap().stage, RestoreStage::Completed);
    assert_eq!(p.phase, Phase::Active);
    assert!(p.converged);
    // The same pass starts retiring the superseded data.
    assert_eq!(step_names(&p), ["DeleteAccessPoint", "SnapshotDatabase"]);
}

#[test]
fn after_a_restore_the_superseded_data_is_snapshotted_then_retired() {
    let mut o = world();
    o.service = Some(ObservedService {
        access_point_id: "fsap-2".into(),
        db_endpoint: "restored.example".into(),
        ..svc(2, 2, 0)
    });
    o.databases.push(new_db(DbState::Available));
    o.access_points.push(new_ap(AccessPointState::Available));
    let i = restoring(Some(RestoreStage::Completed), Some("rjob-1"));
    let p = plan_with(&i, &[], None, &o);
    assert_eq!(step_names(&p), ["DeleteAccessPoint", "SnapshotDatabase"]);
    assert_eq!(
        p.steps[0],
        Step::DeleteAccessPoint {
            id: "fsap-1".into()
        }
    );
    let old_db = names().database(None);
    assert_eq!(
        p.steps[1],
        Step::SnapshotDatabase {
            identifier: old_db.clone(),
            snapshot_id: ResourceNames::retirement_snapshot(&old_db),
        }
    );
    // Once the retirement snapshot exists, the old database goes.
    o.access_points.retain(|a| a.id == "fsap-2");
    o.snapshots
        .observed_mut()
        .expect("snapshots observed")
        .push(ObservedSnapshot {
            id: ResourceNames::retirement_snapshot(&old_db),
            arn: "arn:ret".into(),
            state: SnapshotState::Available,
            db_identifier: old_db.clone(),
        });
    let p = plan_with(&i, &[], None, &o);
    assert_eq!(step_names(&p), ["DeleteDatabase"]);
    assert!(p.converged, "retirement is housekeeping");
    assert_eq!(p.phase, Phase::Active);
    // Finally: nothing left to do on the restored data.
    o.databases.retain(|d| d.identifier != old_db);
    let p = plan_with(&i, &[], None, &o);
    assert!(
        p.converged && p.steps.is_empty() && p.waits.is_empty(),
        "{p:#?}"
    );
}

#[test]
fn a_failed_restore_job_brings_the_instance_back_on_its_old_data() {
    let bk = completed_backup();
    let mut o = world();
    o.service = Some(svc(0, 0, 0));
    o.jobs = vec![job(JobKind::Restore, "rjob-1", JobState::Failed)];
    o.databases.push(new_db(DbState::Available));
    let i = restoring(Some(RestoreStage::Restoring), Some("rjob-1"));
    let p = plan_with(&i, &[], Some(&bk), &o);
    let r = p.restore.unwrap();
    assert_eq!(r.stage, RestoreStage::Failed);
    assert!(r.error.unwrap().contains("disk on fire"));
    // The next pass (status says Failed) scales the old data back up.
    let i = restoring(Some(RestoreStage::Failed), Some("rjob-1"));
    let p = plan_with(&i, &[], Some(&bk), &o);
    assert!(matches!(
        &p.steps[0],
        Step::UpdateService { desired_count: 2, access_point_id, .. } if access_point_id == "fsap-1"
    ));
}

#[test]
fn a_restore_from_an_unusable_backup_fails_without_touching_anything() {
    let mut bk = completed_backup();
    bk.status = BackupStatus::Failed;
    let p = plan_with(&restoring(None, None), &[], Some(&bk), &world());
    assert!(p.steps.is_empty());
    assert_eq!(p.restore.unwrap().stage, RestoreStage::Failed);
    let p = plan_with(&restoring(None, None), &[], None, &world());
    assert_eq!(p.restore.unwrap().stage, RestoreStage::Failed);
}
