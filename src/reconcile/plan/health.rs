//! Whether a service's tasks pass their health check, and how that is known: pure, shared by
//! the planner (readiness), the status it writes and the runner (whether to list tasks).
//!
//! Listing tasks costs a ListTasks per service (ECS lists one service at a time), so the
//! controller lists only where nothing cheaper tells. Two things do:
//! * ECS itself, for a deployment that started since the controller last looked: it marks
//!   a rolling deployment COMPLETED only at a steady state, which with the task
//!   definition's container health check means every task it started passed the check
//!   (ECS's minimum-healthy accounting and deployment circuit breaker wait for healthy
//!   tasks). A change of count alone starts no deployment and leaves its COMPLETED as it
//!   was, so it vouches only while the count is what it was at the last look.
//! * The last pass, when it judged the same deployment at the same count healthy and the
//!   service has looked settled ever since (a pass that sees it unsettled records it).
//!
//! Invariant: `Vouched` and `Steady` are only ever given for a settled service (running ==
//! desired, nothing pending, rollout COMPLETED), and `Vouched` only when the cloud reports
//! the deployment's id (its rollout state came from ECS, not from counts).

use crate::cloud::{ObservedService, ObservedTask, Rollout, ServiceState};
use crate::model::{DesiredState, Instance, ServiceStatus};

/// How the health of a service's tasks is known this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskHealth {
    /// This pass listed the tasks: this many run and pass their health check.
    Listed { healthy: usize },
    /// ECS's completed rollout of a deployment started since the last look.
    Vouched,
    /// Judged healthy before, and settled at the same deployment and count since.
    Steady,
    /// Not known without listing the tasks.
    Unknown,
}

impl TaskHealth {
    /// Whether `want` tasks are known to be healthy (`None`: not known).
    pub fn covers(self, want: u32) -> Option<bool> {
        match self {
            TaskHealth::Listed { healthy } => Some(healthy >= want as usize),
            TaskHealth::Vouched | TaskHealth::Steady => Some(true),
            TaskHealth::Unknown => None,
        }
    }
}

/// Every wanted task runs, none is pending and no deployment is in flight.
pub fn settled(svc: &ObservedService) -> bool {
    svc.state == ServiceState::Active
        && svc.running_count == svc.desired_count
        && svc.pending_count == 0
        && svc.rollout == Rollout::Completed
}

/// The health of `svc`'s tasks, from this pass's task list (`fresh`) or, without one, from
/// ECS's rollout and what the last pass recorded (`prev`, seen at count `prev_desired`).
pub fn judge(
    prev: Option<&ServiceStatus>,
    prev_desired: u32,
    svc: &ObservedService,
    fresh: Option<&[ObservedTask]>,
) -> TaskHealth {
    if let Some(tasks) = fresh {
        let healthy = tasks
            .iter()
            .filter(|t| t.last_status == "RUNNING" && t.health == "HEALTHY")
            .count();
        return TaskHealth::Listed { healthy };
    }
    if !settled(svc) {
        return TaskHealth::Unknown;
    }
    let Some(prev) = prev else {
        // No service at the last look: this one (and its deployment) started since.
        return if svc.deployment.is_some() {
            TaskHealth::Vouched
        } else {
            TaskHealth::Unknown
        };
    };
    let same_count = prev_desired == svc.desired_count;
    let same_deployment = prev.deployment_id == svc.deployment;
    if same_deployment && same_count && prev.health_status == "HEALTHY" {
        return TaskHealth::Steady;
    }
    let started_since = match (&prev.deployment_id, &svc.deployment) {
        (Some(before), Some(now)) => before != now || prev.deployment_status == "IN_PROGRESS",
        _ => false,
    };
    if started_since && same_count {
        TaskHealth::Vouched
    } else {
        TaskHealth::Unknown
    }
}

/// Whether this pass should list the service's tasks: only a settled service whose health
/// is not known otherwise (while it is still changing, the counts already say "wait").
pub fn should_list(prev: Option<&ServiceStatus>, prev_desired: u32, svc: &ObservedService) -> bool {
    svc.desired_count > 0
        && settled(svc)
        && judge(prev, prev_desired, svc, None) == TaskHealth::Unknown
}

/// For a pass whose last plan waited only for the service's tasks: whether `svc` (and
/// `tasks`, when listed) show it still has to wait, so that looking at the service alone
/// suffices and nothing need be planned: the service runs towards the count the spec asks
/// for (or zero, suspended) and has not settled, or a list shows fewer healthy tasks than
/// wanted. Anything else (done, gone, draining, another count, health known) calls for a
/// full pass.
pub fn still_starting(
    inst: &Instance,
    svc: Option<&ObservedService>,
    tasks: Option<&[ObservedTask]>,
) -> bool {
    let Some(svc) = svc else { return false };
    let target = match inst.spec.state {
        DesiredState::Active => inst.spec.configuration.desired_count,
        DesiredState::Suspended => 0,
    };
    if svc.state != ServiceState::Active || svc.desired_count != target {
        return false;
    }
    if !settled(svc) {
        return true;
    }
    let prev = inst.status.resources.service.as_ref();
    match judge(prev, inst.status.replicas.desired, svc, tasks) {
        TaskHealth::Listed { healthy } => healthy < target as usize,
        _ => false,
    }
}

/// The `healthStatus` word status shows: HEALTHY only when known (the next pass relies on
/// it, see `Steady`); UNHEALTHY when nothing runs; DEGRADED when fewer than wanted run or
/// a list showed unhealthy ones; UNKNOWN when no task is wanted or health is not known.
pub fn word(svc: &ObservedService, health: TaskHealth) -> &'static str {
    if svc.desired_count == 0 {
        return "UNKNOWN";
    }
    if svc.running_count == 0 {
        return "UNHEALTHY";
    }
    match health.covers(svc.desired_count) {
        Some(true) if settled(svc) => "HEALTHY",
        Some(_) => "DEGRADED",
        None if svc.running_count < svc.desired_count => "DEGRADED",
        None => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(
        desired: u32,
        running: u32,
        pending: u32,
        rollout: Rollout,
        dep: &str,
    ) -> ObservedService {
        ObservedService {
            name: "svc".into(),
            arn: "arn".into(),
            state: ServiceState::Active,
            desired_count: desired,
            running_count: running,
            pending_count: pending,
            image: "img".into(),
            access_point_id: "fsap-1".into(),
            db_endpoint: "db".into(),
            rollout,
            deployment: (!dep.is_empty()).then(|| dep.to_owned()),
        }
    }

    fn seen(rollout: &str, dep: &str, health: &str) -> ServiceStatus {
        ServiceStatus {
            name: "svc".into(),
            arn: "arn".into(),
            image: "img".into(),
            deployment_status: rollout.into(),
            deployment_id: (!dep.is_empty()).then(|| dep.to_owned()),
            health_status: health.into(),
            tasks: vec![],
            tasks_observed_at: None,
        }
    }

    fn task(status: &str, health: &str) -> ObservedTask {
        ObservedTask {
            id: "t".into(),
            last_status: status.into(),
            health: health.into(),
            started_at: None,
            image: "img".into(),
        }
    }

    use Rollout::{Completed, InProgress};
    use TaskHealth::{Listed, Steady, Unknown, Vouched};

    /// Each row: what the last pass recorded (None: no service then; its count), what is
    /// observed now, and the verdict without a task list.
    #[test]
    fn health_is_known_only_from_ecs_or_from_a_steady_service() {
        let done = svc(2, 2, 0, Completed, "d2");
        let rows: Vec<(Option<ServiceStatus>, u32, ObservedService, TaskHealth)> = vec![
            // Created since the last look, ECS completed its deployment: vouched.
            (None, 0, done.clone(), Vouched),
            // ... unless the cloud reports no deployment (state inferred from counts).
            (None, 0, svc(2, 2, 0, Completed, ""), Unknown),
            // A new deployment (a new task definition) completed at the same count.
            (
                Some(seen("COMPLETED", "d1", "HEALTHY")),
                2,
                done.clone(),
                Vouched,
            ),
            // The same deployment seen in progress at this count has completed.
            (
                Some(seen("IN_PROGRESS", "d2", "UNKNOWN")),
                2,
                done.clone(),
                Vouched,
            ),
            // The count changed since: a scale-up after the deployment completed adds
            // tasks ECS vouches for no more.
            (
                Some(seen("IN_PROGRESS", "d2", "UNKNOWN")),
                1,
                done.clone(),
                Unknown,
            ),
            (
                Some(seen("COMPLETED", "d1", "HEALTHY")),
                3,
                done.clone(),
                Unknown,
            ),
            (
                Some(seen("COMPLETED", "d2", "UNKNOWN")),
                2,
                done.clone(),
                Unknown,
            ),
            // Judged healthy before, settled at the same deployment and count since.
            (
                Some(seen("COMPLETED", "d2", "HEALTHY")),
                2,
                done.clone(),
                Steady,
            ),
            (
                Some(seen("COMPLETED", "", "HEALTHY")),
                2,
                svc(2, 2, 0, Completed, ""),
                Steady,
            ),
            (
                Some(seen("COMPLETED", "d2", "HEALTHY")),
                1,
                done.clone(),
                Unknown,
            ),
            (
                Some(seen("COMPLETED", "d2", "DEGRADED")),
                2,
                done.clone(),
                Unknown,
            ),
            // A record from before deployment ids: not known.
            (
                Some(seen("COMPLETED", "", "HEALTHY")),
                2,
                done.clone(),
                Unknown,
            ),
            // Never while the service is unsettled.
            (None, 0, svc(2, 1, 1, Completed, "d2"), Unknown),
            (
                Some(seen("COMPLETED", "d2", "HEALTHY")),
                2,
                svc(2, 2, 0, InProgress, "d3"),
                Unknown,
            ),
            (
                Some(seen("COMPLETED", "d2", "HEALTHY")),
                2,
                svc(2, 1, 0, Completed, "d2"),
                Unknown,
            ),
        ];
        for (i, (prev, prev_desired, now, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                judge(prev.as_ref(), prev_desired, &now, None),
                want,
                "row {i}"
            );
            let list = now.desired_count > 0 && settled(&now) && want == Unknown;
            assert_eq!(
                should_list(prev.as_ref(), prev_desired, &now),
                list,
                "row {i}"
            );
        }
    }

    #[test]
    fn a_fresh_list_counts_running_healthy_tasks() {
        let tasks = [
            task("RUNNING", "HEALTHY"),
            task("RUNNING", "UNKNOWN"),
            task("PENDING", "UNKNOWN"),
            task("DEACTIVATING", "HEALTHY"),
        ];
        let now = svc(2, 2, 0, Completed, "d1");
        let judged = judge(None, 0, &now, Some(&tasks));
        assert_eq!(judged, Listed { healthy: 1 });
        assert_eq!(judged.covers(2), Some(false));
        assert_eq!(word(&now, judged), "DEGRADED");
        assert_eq!(word(&now, Listed { healthy: 2 }), "HEALTHY");
        assert_eq!(
            word(&svc(2, 2, 0, InProgress, "d1"), Listed { healthy: 2 }),
            "DEGRADED"
        );
        assert_eq!(word(&now, Unknown), "UNKNOWN");
        assert_eq!(word(&svc(2, 1, 1, Completed, "d1"), Unknown), "DEGRADED");
        assert_eq!(word(&svc(2, 0, 2, Completed, "d1"), Unknown), "UNHEALTHY");
        assert_eq!(word(&svc(0, 0, 0, Completed, "d1"), Vouched), "UNKNOWN");
        // Nothing to list for a service that wants no task.
        assert!(!should_list(None, 0, &svc(0, 0, 0, Completed, "")));
    }
}
