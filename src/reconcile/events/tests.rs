//! Table tests of `pass_events`: one row per kind of pass; `check` is the only call.

use chrono::Duration;

use super::*;
use crate::model::{
    BackupStatus, Condition, Configuration, DesiredState, EventType, InstanceKey, Phase,
    RestoreStatus, Spec, Tier,
};
use crate::reconcile::plan::BackupProgress;

fn t0() -> Timestamp {
    chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn inst(phase: Phase, converged: bool) -> Instance {
    let spec = Spec {
        organization_name: "Acme".into(),
        contact_email: "ops@acme.example".into(),
        tier: Tier::Standard,
        state: DesiredState::Active,
        configuration: Configuration::default(),
        restore: None,
    };
    let mut i = Instance::new(InstanceKey::from_strs("t1", "blog"), spec, t0());
    i.metadata.generation = 2;
    i.status.phase = phase;
    i.status.observed_generation = if converged { 2 } else { 1 };
    i
}

fn plan(phase: Phase, steps: Vec<Step>) -> Plan {
    Plan {
        steps,
        phase,
        converged: false,
        waits: vec![],
        problem: None,
        backups: vec![],
        restore: None,
        needs_snapshots: false,
    }
}

fn update_service() -> Step {
    Step::UpdateService {
        name: "wpf-t1-blog".into(),
        desired_count: 3,
        image: "img".into(),
        access_point_id: "fsap-1".into(),
        db_endpoint: "db".into(),
    }
}

fn backup_job() -> Step {
    Step::StartBackupJob {
        backup_id: "bk-1".into(),
        root_path: "/t1/blog".into(),
    }
}

fn degraded(on: bool) -> Condition {
    Condition {
        type_: ConditionType::Degraded,
        status: on.into(),
        reason: if on { "DatabaseFailed" } else { "AsExpected" }.into(),
        message: if on { "db is failed" } else { "" }.into(),
        last_transition_time: t0(),
    }
}

fn throttled() -> CloudError {
    CloudError::Throttled {
        service: "ecs",
        operation: "UpdateService",
    }
}

/// The (type, reason, message) of each event of the pass, at `t0 + 30 s`.
fn check(r: PassRecord<'_>, want: &[(EventType, &str, &str)]) {
    let got: Vec<(EventType, String, String)> = pass_events(&r, t0() + Duration::seconds(30))
        .into_iter()
        .map(|e| {
            assert_eq!(e.generation, r.inst.metadata.generation);
            assert_eq!(e.count, 1);
            (e.type_, e.reason, e.message)
        })
        .collect();
    let want: Vec<(EventType, String, String)> = want
        .iter()
        .map(|(t, r, m)| (*t, r.to_string(), m.to_string()))
        .collect();
    assert_eq!(got, want);
}

fn record<'a>(
    inst: &'a Instance,
    plan: &'a Plan,
    applied: &'a [AppliedStep<'a>],
    status: &'a Status,
) -> PassRecord<'a> {
    PassRecord {
        inst,
        backups: &[],
        plan,
        applied,
        error: None,
        status,
    }
}

use EventType::{Normal, Warning};

#[test]
fn a_pass_that_did_nothing_records_nothing() {
    let i = inst(Phase::Active, true);
    let p = plan(Phase::Active, vec![]);
    check(record(&i, &p, &[], &i.status), &[]);
    // Still converging, waiting on the cloud: nothing new either.
    let i = inst(Phase::Provisioning, false);
    check(record(&i, &p, &[], &i.status), &[]);
}

#[test]
fn applied_steps_then_the_phase_change() {
    let i = inst(Phase::PendingProvisioning, false);
    let steps = vec![
        Step::CreateLogGroup {
            name: "/wpf/t1/blog".into(),
            retention_days: 30,
        },
        Step::CreateAccessPoint {
            root_path: "/t1/blog".into(),
        },
    ];
    let p = plan(Phase::Provisioning, steps);
    let applied: Vec<AppliedStep> = p
        .steps
        .iter()
        .map(|step| AppliedStep { step, job_id: None })
        .collect();
    let mut status = i.status.clone();
    status.phase = Phase::Provisioning;
    check(
        record(&i, &p, &applied, &status),
        &[
            (Normal, "StepApplied", "CreateLogGroup /wpf/t1/blog"),
            (Normal, "StepApplied", "CreateAccessPoint /t1/blog"),
            (
                Normal,
                "PhaseChanged",
                "PENDING_PROVISIONING → PROVISIONING",
            ),
        ],
    );
}

#[test]
fn reaching_the_generation_is_recorded_with_how_long_it_took() {
    let i = inst(Phase::Scaling, false);
    let p = plan(Phase::Active, vec![]);
    let mut status = i.status.clone();
    status.phase = Phase::Active;
    status.observed_generation = 2;
    check(
        record(&i, &p, &[], &status),
        &[
            (Normal, "PhaseChanged", "SCALING → ACTIVE"),
            (
                Normal,
                "Converged",
                "generation 2 reached 30.0s after it was written",
            ),
        ],
    );
}

#[test]
fn a_failed_step_says_whether_it_is_retried() {
    let i = inst(Phase::Scaling, false);
    let p = plan(Phase::Scaling, vec![update_service()]);
    let error = PassError {
        step: Some("UpdateService"),
        error: throttled(),
    };
    let r = PassRecord {
        error: Some(&error),
        ..record(&i, &p, &[], &i.status)
    };
    check(
        r,
        &[(
            Warning,
            "StepFailed",
            "ecs UpdateService: rate exceeded (will retry with backoff)",
        )],
    );
    let permanent = PassError {
        step: None,
        error: CloudError::Permanent {
            service: "rds",
            operation: "DescribeDBInstances",
            code: "AccessDenied".into(),
            message: "no".into(),
        },
    };
    // A permanent error also turns Degraded on, but the error event already says why.
    let mut status = i.status.clone();
    status.conditions.push(degraded(true));
    let r = PassRecord {
        error: Some(&permanent),
        ..record(&i, &p, &[], &status)
    };
    check(
        r,
        &[(
            Warning,
            "ObserveFailed",
            "rds DescribeDBInstances: AccessDenied: no (a retry will not fix this)",
        )],
    );
}

#[test]
fn on_a_converged_instance_a_spec_step_repairs_drift_and_a_backup_does_not() {
    let i = inst(Phase::Active, true);
    let p = plan(Phase::Active, vec![update_service(), backup_job()]);
    let applied = [
        AppliedStep {
            step: &p.steps[0],
            job_id: None,
        },
        AppliedStep {
            step: &p.steps[1],
            job_id: Some("job-9".into()),
        },
    ];
    check(
        record(&i, &p, &applied, &i.status),
        &[
            (
                Warning,
                "DriftRepaired",
                "UpdateService wpf-t1-blog: the cloud had drifted from generation 2",
            ),
            (
                Normal,
                "BackupStarted",
                "backup bk-1: AWS Backup job job-9 started",
            ),
        ],
    );
    // The same step while converging is plain progress.
    let i = inst(Phase::Scaling, false);
    check(
        record(&i, &p, &applied[..1], &i.status),
        &[(Normal, "StepApplied", "UpdateService wpf-t1-blog")],
    );
}

#[test]
fn a_backup_is_reported_once_when_it_finishes() {
    let i = inst(Phase::Active, true);
    let mut before = crate::model::Backup::new(&i.key(), t0());
    before.backup_id = "bk-1".into();
    before.status = BackupStatus::Running;
    let done = |status, error: Option<&str>| BackupProgress {
        backup_id: "bk-1".into(),
        status,
        efs_recovery_point_arn: Some("arn:rp".into()),
        rds_snapshot_id: Some("snap-1".into()),
        error: error.map(str::to_owned),
    };
    let mut p = plan(Phase::Active, vec![]);
    p.backups = vec![done(BackupStatus::Completed, None)];
    let backups = [before.clone()];
    let r = PassRecord {
        backups: &backups,
        ..record(&i, &p, &[], &i.status)
    };
    check(
        r,
        &[(
            Normal,
            "BackupCompleted",
            "backup bk-1: recovery point arn:rp, snapshot snap-1",
        )],
    );
    p.backups = vec![done(BackupStatus::Failed, Some("job failed"))];
    let r = PassRecord {
        backups: &backups,
        ..record(&i, &p, &[], &i.status)
    };
    check(r, &[(Warning, "BackupFailed", "backup bk-1: job failed")]);
    // Still running: nothing.
    p.backups = vec![done(BackupStatus::Running, None)];
    let r = PassRecord {
        backups: &backups,
        ..record(&i, &p, &[], &i.status)
    };
    check(r, &[]);
}

#[test]
fn a_restore_is_reported_at_each_new_stage() {
    let restore = |stage, progress| RestoreStatus {
        request_id: "rq-1".into(),
        backup_id: "bk-1".into(),
        stage,
        progress,
        started_at: t0(),
        completed_at: None,
        efs_restore_job_id: None,
        efs_relocation_task_id: None,
        previous_epoch: None,
        error: None,
    };
    let mut i = inst(Phase::Restoring, false);
    i.status.restore = Some(restore(RestoreStage::Stopping, 10));
    let p = plan(Phase::Restoring, vec![]);
    let mut status = i.status.clone();
    // Same stage, more progress: nothing.
    status.restore = Some(restore(RestoreStage::Stopping, 20));
    check(record(&i, &p, &[], &status), &[]);
    status.restore = Some(restore(RestoreStage::Restoring, 30));
    check(
        record(&i, &p, &[], &status),
        &[(
            Normal,
            "RestoreStage",
            "restore rq-1 from backup bk-1: RESTORING (30%)",
        )],
    );
    status.restore = Some(RestoreStatus {
        error: Some("the snapshot is gone".into()),
        ..restore(RestoreStage::Failed, 100)
    });
    check(
        record(&i, &p, &[], &status),
        &[(
            Warning,
            "RestoreFailed",
            "restore rq-1 from backup bk-1: the snapshot is gone",
        )],
    );
    status.restore = Some(restore(RestoreStage::Completed, 100));
    check(
        record(&i, &p, &[], &status),
        &[(
            Normal,
            "RestoreCompleted",
            "restore rq-1 from backup bk-1 completed",
        )],
    );
}

#[test]
fn degraded_is_reported_when_it_turns_true() {
    let mut i = inst(Phase::Active, true);
    i.status.conditions.push(degraded(false));
    let p = plan(Phase::Active, vec![]);
    let mut status = i.status.clone();
    status.conditions = vec![degraded(true)];
    check(
        record(&i, &p, &[], &status),
        &[(Warning, "Degraded", "DatabaseFailed: db is failed")],
    );
    // Still degraded on the next pass: nothing new.
    i.status.conditions = vec![degraded(true)];
    check(record(&i, &p, &[], &status), &[]);
}
