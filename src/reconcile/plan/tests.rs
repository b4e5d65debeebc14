//! Table tests of `plan()`: one row per behaviour. `check` is the only call into the planner.

use super::*;
use crate::cloud::{
    ObservedAccessPoint, ObservedLogGroup, ObservedSnapshot, ObservedTask, ServiceState,
    SnapshotState,
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
    }
}

fn db(state: DbState) -> ObservedDatabase {
    ObservedDatabase {
        identifier: names().database,
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
    }
}

fn snapshot(state: SnapshotState) -> ObservedSnapshot {
    ObservedSnapshot {
        id: names().final_snapshot,
        arn: "arn:snap".into(),
        state,
    }
}

/// Everything an active instance with 2 tasks needs, converged.
fn world() -> Observed {
    Observed {
        service: Some(svc(2, 2, 0)),
        access_point: Some(ap(AccessPointState::Available)),
        database: Some(db(DbState::Available)),
        final_snapshot: None,
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
    let p = plan(inst, obs);
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
        identifier: names().database,
        instance_class: "db.t4g.micro".into(),
        allocated_storage_gb: 20,
    }));
}

#[test]
fn waits_for_a_creating_database_without_calling_anything() {
    let mut o = world();
    o.service = None;
    o.database = Some(db(DbState::Creating));
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
    o.access_point = Some(ap(AccessPointState::Creating));
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

#[test]
fn a_steady_pass_that_did_not_list_tasks_uses_the_last_list() {
    let mut i = inst(Phase::Active);
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
        health_status: "HEALTHY".into(),
        tasks: vec![healthy.clone(), healthy],
        tasks_observed_at: None,
    });
    let mut o = world();
    o.tasks = None;
    check(&i, &o, &[], Phase::Active, true);
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
            image: IMAGE.into()
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
    o.access_point = None;
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
    o.database = Some(db(DbState::Failed));
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
    o.database = Some(db(DbState::Stopped));
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
    o.database = Some(db(DbState::Available));
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
    o.database = Some(db(DbState::Stopped));
    check(
        &inst(Phase::Suspended),
        &o,
        &["StartDatabase"],
        Phase::Resuming,
        false,
    );
    o.database = Some(db(DbState::Starting));
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
    o.database = Some(db(DbState::Stopping));
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
    o.access_point = None;
    check(
        &deleted(Phase::Deprovisioning),
        &o,
        &["SnapshotDatabase"],
        Phase::Deprovisioning,
        false,
    );
    o.database = Some(db(DbState::Stopped));
    check(
        &deleted(Phase::Deprovisioning),
        &o,
        &["SnapshotDatabase"],
        Phase::Deprovisioning,
        false,
    );
    o.final_snapshot = Some(snapshot(SnapshotState::Creating));
    check(
        &deleted(Phase::Deprovisioning),
        &o,
        &[],
        Phase::Deprovisioning,
        false,
    );
    o.final_snapshot = Some(snapshot(SnapshotState::Available));
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
            identifier: names().database,
            final_snapshot_id: names().final_snapshot
        }
    );
}

#[test]
fn delete_waits_for_a_database_in_transition() {
    let mut o = world();
    o.service = None;
    o.access_point = None;
    for state in [
        DbState::Starting,
        DbState::Creating,
        DbState::Stopping,
        DbState::Deleting,
    ] {
        o.database = Some(db(state));
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
    o.access_point = None;
    o.final_snapshot = Some(snapshot(SnapshotState::Failed));
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
    o.access_point = None;
    o.database = None;
    o.final_snapshot = Some(snapshot(SnapshotState::Available));
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
        None,
        Some(ap(AccessPointState::Available)),
        Some(ap(AccessPointState::Creating)),
        Some(ap(AccessPointState::Deleting)),
    ];
    let dbs = [
        None,
        Some(db(DbState::Available)),
        Some(db(DbState::Stopped)),
        Some(db(DbState::Starting)),
        Some(db(DbState::Deleting)),
        Some(db(DbState::Creating)),
    ];
    let snaps = [
        None,
        Some(snapshot(SnapshotState::Creating)),
        Some(snapshot(SnapshotState::Available)),
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
                            access_point: a.clone(),
                            database: d.clone(),
                            final_snapshot: f.clone(),
                            log_group: l,
                            tasks: None,
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
            let p = plan(i, &o);
            if p.converged {
                assert!(p.steps.is_empty());
            }
            for step in &p.steps {
                assert!(
                    !step.is_destructive() || i.is_deleted(),
                    "destructive {step:?} for a live instance; {o:?}"
                );
                if let Step::DeleteDatabase { .. } = step {
                    assert_eq!(
                        o.final_snapshot.as_ref().map(|s| s.state),
                        Some(SnapshotState::Available)
                    );
                }
                if let Step::CreateService { .. } = step {
                    assert_eq!(
                        o.database.as_ref().map(|d| &d.state),
                        Some(&DbState::Available)
                    );
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
