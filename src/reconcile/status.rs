//! Composes the status a reconcile pass writes back: pure, like `plan`.
//!
//! Inputs are the stored instance, the observation, the plan and what happened while its
//! steps ran; output is the new `Status`. Conditions go through `set_condition`, so their
//! `lastTransitionTime` moves only when their status flips.

use crate::cloud::names::ResourceNames;
use crate::cloud::{CloudError, Observed, ObservedService, ObservedTask};
use crate::model::{
    ConditionType, ConditionUpdate, DatabaseStatus, DesiredState, Instance, LastError, Phase,
    Replicas, ResourceRef, Resources, RestoreStage, RestoreStatus, ServiceStatus, Status,
    TaskStatus, Timestamp, set_condition,
};

use super::plan::{Plan, RestoreProgress, current, health};

/// A step (or the observation) failed during the pass.
#[derive(Debug, Clone)]
pub struct PassError {
    /// The step that failed; `None` when observing failed.
    pub step: Option<&'static str>,
    pub error: CloudError,
}

/// What happened during a pass, beyond the plan.
#[derive(Debug, Clone, Default)]
pub struct PassOutcome {
    pub error: Option<PassError>,
    /// The reconcile-now request this pass handled.
    pub handled_request: Option<String>,
    /// The id of an AWS Backup restore job this pass started.
    pub started_restore_job: Option<String>,
    /// The id of a relocation task (restored files into place) this pass started.
    pub started_relocation_task: Option<String>,
}

pub fn next_status(
    inst: &Instance,
    obs: &Observed,
    plan: &Plan,
    outcome: PassOutcome,
    now: Timestamp,
) -> Status {
    let prev = &inst.status;
    let permanent = outcome
        .error
        .as_ref()
        .is_some_and(|e| !e.error.is_retryable());
    let converged = plan.converged && outcome.error.is_none();
    let mut status = Status {
        phase: if permanent { Phase::Failed } else { plan.phase },
        observed_generation: if converged {
            inst.metadata.generation
        } else {
            prev.observed_generation
        },
        conditions: prev.conditions.clone(),
        replicas: replicas(obs),
        resources: resources(inst, obs, now),
        last_reconcile_at: Some(now),
        last_handled_reconcile_request: outcome
            .handled_request
            .or_else(|| prev.last_handled_reconcile_request.clone()),
        last_error: outcome.error.as_ref().map(|e| last_error(e, now)),
        restore: restore_status(
            prev.restore.as_ref(),
            plan.restore.as_ref(),
            StartedJobs {
                restore_job: outcome.started_restore_job,
                relocation_task: outcome.started_relocation_task,
            },
            now,
        ),
    };
    for update in conditions(inst, obs, plan, outcome.error.as_ref(), converged) {
        set_condition(&mut status.conditions, update, now);
    }
    status
}

fn replicas(obs: &Observed) -> Replicas {
    obs.service
        .as_ref()
        .map(|s| Replicas {
            desired: s.desired_count,
            running: s.running_count,
            pending: s.pending_count,
        })
        .unwrap_or_default()
}

/// The resources of the data generation in use (see `plan::current`).
fn resources(inst: &Instance, obs: &Observed, now: Timestamp) -> Resources {
    let prev_service = inst.status.resources.service.as_ref();
    let (access_point, database) = current(inst, obs);
    let final_snapshot = match obs.snapshots.observed() {
        Some(snapshots) => database
            .and_then(|d| {
                let id = ResourceNames::final_snapshot(&d.identifier);
                snapshots.iter().find(|s| s.id == id)
            })
            .map(|s| ResourceRef {
                id: s.id.clone(),
                arn: s.arn.clone(),
            }),
        // Not described this pass: as last seen.
        None => inst.status.resources.final_snapshot.clone(),
    };
    Resources {
        service: obs.service.as_ref().map(|s| {
            let prev_desired = inst.status.replicas.desired;
            service_status(s, prev_service, prev_desired, obs.tasks.as_deref(), now)
        }),
        access_point: access_point.map(|a| ResourceRef {
            id: a.id.clone(),
            arn: a.arn.clone(),
        }),
        database: database.map(|d| DatabaseStatus {
            id: d.identifier.clone(),
            arn: d.arn.clone(),
            status: d.state.as_str().to_owned(),
            endpoint: d.endpoint.clone(),
            instance_class: d.instance_class.clone(),
        }),
        log_group: obs.log_group.as_ref().map(|l| ResourceRef {
            id: l.name.clone(),
            arn: l.arn.clone(),
        }),
        final_snapshot,
    }
}

/// The ids of the restore's long jobs a pass started.
struct StartedJobs {
    restore_job: Option<String>,
    relocation_task: Option<String>,
}

/// Carries the restore forward: times, the recorded job ids, and the plan's progress.
fn restore_status(
    prev: Option<&RestoreStatus>,
    progress: Option<&RestoreProgress>,
    started: StartedJobs,
    now: Timestamp,
) -> Option<RestoreStatus> {
    let Some(p) = progress else {
        return prev.cloned();
    };
    let same = prev.filter(|s| s.request_id == p.request_id);
    let finished = matches!(p.stage, RestoreStage::Completed | RestoreStage::Failed);
    Some(RestoreStatus {
        request_id: p.request_id.clone(),
        backup_id: p.backup_id.clone(),
        stage: p.stage,
        progress: p.progress,
        started_at: same.map_or(now, |s| s.started_at),
        completed_at: finished.then(|| same.and_then(|s| s.completed_at).unwrap_or(now)),
        efs_restore_job_id: started
            .restore_job
            .or_else(|| same.and_then(|s| s.efs_restore_job_id.clone())),
        efs_relocation_task_id: started
            .relocation_task
            .or_else(|| same.and_then(|s| s.efs_relocation_task_id.clone())),
        previous_epoch: p.previous_epoch.clone(),
        error: p.error.clone(),
    })
}

fn service_status(
    svc: &ObservedService,
    prev: Option<&ServiceStatus>,
    prev_desired: u32,
    fresh_tasks: Option<&[ObservedTask]>,
    now: Timestamp,
) -> ServiceStatus {
    let judged = health::judge(prev, prev_desired, svc, fresh_tasks);
    let (tasks, observed_at) = match fresh_tasks {
        Some(list) => (list.iter().map(task_status).collect(), Some(now)),
        None => prev
            .map(|p| (p.tasks.clone(), p.tasks_observed_at))
            .unwrap_or_default(),
    };
    ServiceStatus {
        name: svc.name.clone(),
        arn: svc.arn.clone(),
        image: svc.image.clone(),
        deployment_status: svc.rollout.as_str().to_owned(),
        deployment_id: svc.deployment.clone(),
        health_status: health::word(svc, judged).to_owned(),
        tasks,
        tasks_observed_at: observed_at,
    }
}

/// A listed task as status shows it.
pub fn task_status(t: &ObservedTask) -> TaskStatus {
    TaskStatus {
        id: t.id.clone(),
        status: t.last_status.clone(),
        health: t.health.clone(),
        started_at: t.started_at,
    }
}

fn last_error(e: &PassError, now: Timestamp) -> LastError {
    LastError {
        code: e.error.code().to_owned(),
        message: e.error.to_string(),
        step: e.step.map(str::to_owned),
        retryable: e.error.is_retryable(),
        at: now,
    }
}

fn conditions(
    inst: &Instance,
    obs: &Observed,
    plan: &Plan,
    error: Option<&PassError>,
    converged: bool,
) -> Vec<ConditionUpdate> {
    let headline = plan.waits.first();
    let ready = if converged {
        let reason = match plan.phase {
            Phase::Suspended => "Suspended",
            Phase::Deprovisioned => "Deprovisioned",
            _ => "Active",
        };
        ConditionUpdate::new(ConditionType::Ready, true, reason, "desired state reached")
    } else {
        let (reason, message) = headline
            .map(|w| (w.reason, w.message.clone()))
            .or_else(|| plan.problem.as_ref().map(|p| (p.reason, p.message.clone())))
            .unwrap_or(("NotReconciled", "the last pass did not finish".into()));
        ConditionUpdate::new(ConditionType::Ready, false, reason, message)
    };
    let synced = match error {
        None => ConditionUpdate::new(ConditionType::Synced, true, "ReconcileSucceeded", ""),
        Some(e) => ConditionUpdate::new(
            ConditionType::Synced,
            false,
            e.error.code().to_owned(),
            e.error.to_string(),
        ),
    };
    let progressing = match (converged, headline, &plan.problem) {
        (true, _, _) => ConditionUpdate::new(ConditionType::Progressing, false, "Converged", ""),
        (false, _, Some(p)) => ConditionUpdate::new(
            ConditionType::Progressing,
            false,
            p.reason,
            p.message.clone(),
        ),
        (false, Some(w), None) => ConditionUpdate::new(
            ConditionType::Progressing,
            true,
            w.reason,
            w.message.clone(),
        ),
        (false, None, None) => {
            ConditionUpdate::new(ConditionType::Progressing, true, "Reconciling", "")
        }
    };
    vec![ready, synced, progressing, degraded(inst, obs, plan, error)]
}

fn degraded(
    inst: &Instance,
    obs: &Observed,
    plan: &Plan,
    error: Option<&PassError>,
) -> ConditionUpdate {
    let t = ConditionType::Degraded;
    if let Some(e) = error.filter(|e| !e.error.is_retryable()) {
        return ConditionUpdate::new(t, true, e.error.code().to_owned(), e.error.to_string());
    }
    if let Some(p) = &plan.problem {
        return ConditionUpdate::new(t, true, p.reason, p.message.clone());
    }
    // Capacity lost without a spec change: the instance had converged on this generation
    // and now runs fewer tasks than it should.
    let was_converged = inst.is_converged() && inst.status.phase == Phase::Active;
    if let Some(svc) = &obs.service
        && was_converged
        && !inst.is_deleted()
        && inst.spec.state == DesiredState::Active
        && svc.running_count < inst.spec.configuration.desired_count
    {
        return ConditionUpdate::new(
            t,
            true,
            "CapacityReduced",
            format!(
                "{} of {} tasks running",
                svc.running_count, inst.spec.configuration.desired_count
            ),
        );
    }
    ConditionUpdate::new(t, false, "AsExpected", "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{Rollout, ServiceState, Step};
    use crate::model::{
        ConditionStatus, Configuration, InstanceKey, Spec, Tier, find_condition, now,
    };
    use crate::reconcile::plan::{PlanInput, Wait, plan};

    fn inst() -> Instance {
        let spec = Spec {
            organization_name: "Acme".into(),
            contact_email: "ops@acme.example".into(),
            tier: Tier::Standard,
            state: DesiredState::Active,
            configuration: Configuration::default(),
            restore: None,
        };
        Instance::new(InstanceKey::from_strs("t1", "blog"), spec, now())
    }

    fn svc(desired: u32, running: u32) -> ObservedService {
        ObservedService {
            name: "svc".into(),
            arn: "arn".into(),
            state: ServiceState::Active,
            desired_count: desired,
            running_count: running,
            pending_count: 0,
            image: "img".into(),
            rollout: Rollout::Completed,
            deployment: None,
            access_point_id: "fsap-1".into(),
            db_endpoint: "db".into(),
        }
    }

    fn converged_plan() -> Plan {
        Plan {
            steps: vec![],
            phase: Phase::Active,
            converged: true,
            waits: vec![],
            problem: None,
            backups: vec![],
            restore: None,
            needs_snapshots: false,
        }
    }

    fn cond(s: &Status, t: ConditionType) -> (ConditionStatus, String) {
        let c = find_condition(&s.conditions, t).unwrap();
        (c.status, c.reason.clone())
    }

    #[test]
    fn a_converged_pass_records_the_generation_and_ready() {
        let mut i = inst();
        i.metadata.generation = 3;
        let s = next_status(
            &i,
            &Observed::default(),
            &converged_plan(),
            PassOutcome::default(),
            now(),
        );
        assert_eq!(s.observed_generation, 3);
        assert_eq!(cond(&s, ConditionType::Ready).0, ConditionStatus::True);
        assert_eq!(cond(&s, ConditionType::Synced).0, ConditionStatus::True);
        assert_eq!(
            cond(&s, ConditionType::Progressing).0,
            ConditionStatus::False
        );
        assert_eq!(cond(&s, ConditionType::Degraded).0, ConditionStatus::False);
    }

    #[test]
    fn an_error_keeps_the_old_generation_and_reports_it() {
        let i = inst();
        let outcome = PassOutcome {
            error: Some(PassError {
                step: Some("CreateDatabase"),
                error: CloudError::Throttled {
                    service: "rds",
                    operation: "CreateDBInstance",
                },
            }),
            ..Default::default()
        };
        let s = next_status(&i, &Observed::default(), &converged_plan(), outcome, now());
        assert_eq!(s.observed_generation, 0);
        assert_eq!(
            cond(&s, ConditionType::Synced),
            (ConditionStatus::False, "ThrottlingException".into())
        );
        let e = s.last_error.unwrap();
        assert!(e.retryable);
        assert_eq!(e.step.as_deref(), Some("CreateDatabase"));
        assert_eq!(
            s.phase,
            Phase::Active,
            "a retryable error does not fail the instance"
        );
    }

    #[test]
    fn a_permanent_error_fails_and_degrades() {
        let outcome = PassOutcome {
            error: Some(PassError {
                step: Some("CreateService"),
                error: CloudError::Permanent {
                    service: "ecs",
                    operation: "CreateService",
                    code: "AccessDeniedException".into(),
                    message: "no".into(),
                },
            }),
            ..Default::default()
        };
        let s = next_status(
            &inst(),
            &Observed::default(),
            &converged_plan(),
            outcome,
            now(),
        );
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(
            cond(&s, ConditionType::Degraded),
            (ConditionStatus::True, "AccessDeniedException".into())
        );
    }

    #[test]
    fn lost_capacity_on_a_converged_instance_is_degraded() {
        let mut i = inst();
        i.status.phase = Phase::Active;
        i.status.observed_generation = 1;
        let obs = Observed {
            service: Some(svc(2, 1)),
            ..Default::default()
        };
        let p = Plan {
            steps: vec![],
            phase: Phase::Scaling,
            converged: false,
            waits: vec![Wait {
                on: crate::cloud::WaitingOn::Tasks,
                reason: "WaitingForTasks",
                message: "1 of 2".into(),
            }],
            problem: None,
            backups: vec![],
            restore: None,
            needs_snapshots: false,
        };
        let s = next_status(&i, &obs, &p, PassOutcome::default(), now());
        assert_eq!(
            cond(&s, ConditionType::Degraded),
            (ConditionStatus::True, "CapacityReduced".into())
        );
        assert_eq!(
            cond(&s, ConditionType::Progressing),
            (ConditionStatus::True, "WaitingForTasks".into())
        );
        assert_eq!(s.observed_generation, 1, "kept while not converged");
    }

    #[test]
    fn handled_request_is_echoed_and_kept() {
        let outcome = PassOutcome {
            handled_request: Some("r1".into()),
            ..Default::default()
        };
        let i = inst();
        let s = next_status(&i, &Observed::default(), &converged_plan(), outcome, now());
        assert_eq!(s.last_handled_reconcile_request.as_deref(), Some("r1"));
        let mut i2 = i.clone();
        i2.status = s;
        let s2 = next_status(
            &i2,
            &Observed::default(),
            &converged_plan(),
            PassOutcome::default(),
            now(),
        );
        assert_eq!(s2.last_handled_reconcile_request.as_deref(), Some("r1"));
    }

    #[test]
    fn conditions_come_from_the_plan_headline() {
        let i = inst();
        let p = plan(&PlanInput::new(&i), &Observed::default());
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::CreateDatabase { .. }))
        );
        let s = next_status(&i, &Observed::default(), &p, PassOutcome::default(), now());
        assert_eq!(s.phase, Phase::Provisioning);
        assert_eq!(
            cond(&s, ConditionType::Ready),
            (ConditionStatus::False, "CreatingLogGroup".into())
        );
    }

    #[test]
    fn restore_job_and_relocation_task_ids_are_recorded_then_carried() {
        use crate::model::{RestoreStage, RestoreStatus};
        use crate::reconcile::plan::RestoreProgress;
        let progress = |request: &str| RestoreProgress {
            request_id: request.into(),
            backup_id: "bk-1".into(),
            stage: RestoreStage::Restoring,
            progress: 50,
            previous_epoch: None,
            error: None,
        };
        let plan = |request: &str| Plan {
            restore: Some(progress(request)),
            converged: false,
            ..converged_plan()
        };
        let pass = |i: &Instance, request: &str, job: Option<&str>, task: Option<&str>| {
            let outcome = PassOutcome {
                started_restore_job: job.map(str::to_owned),
                started_relocation_task: task.map(str::to_owned),
                ..Default::default()
            };
            next_status(i, &Observed::default(), &plan(request), outcome, now())
                .restore
                .unwrap()
        };
        let ids = |r: &RestoreStatus| {
            (
                r.efs_restore_job_id.clone(),
                r.efs_relocation_task_id.clone(),
            )
        };
        let mut i = inst();
        i.status.restore = Some(pass(&i, "rq-1", Some("J"), None));
        i.status.restore = Some(pass(&i, "rq-1", None, Some("T1")));
        assert_eq!(
            ids(i.status.restore.as_ref().unwrap()),
            (Some("J".into()), Some("T1".into()))
        );
        let carried = pass(&i, "rq-1", None, None);
        assert_eq!(ids(&carried), (Some("J".into()), Some("T1".into())));
        // A re-run in place of a forgotten task replaces its id.
        let rerun = pass(&i, "rq-1", None, Some("T2"));
        assert_eq!(ids(&rerun), (Some("J".into()), Some("T2".into())));
        // Another restore request starts from nothing.
        assert_eq!(ids(&pass(&i, "rq-2", None, None)), (None, None));
    }
}
