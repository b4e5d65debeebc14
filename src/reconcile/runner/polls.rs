//! Polls of instances that wait only for their service's tasks (a scale, a rollout, a new
//! service starting): they look at the service alone (DescribeServices, 10 per call, and
//! ListTasks only where ECS does not vouch for health) instead of observing everything.
//!
//! Why: every full observation describes RDS, and RDS admits 10 calls/s; the follow-ups of
//! each change (about five polls while its tasks start) used to spend the RDS budget that
//! PUTs and creates need (docs/PERFORMANCE.md).
//!
//! Invariants:
//! * a narrow poll never plans, acts or writes status: it either looks again after the
//!   poll interval, or hands the key to a full pass in the same batch;
//! * only a follow-up (taken as `Requeue`) whose last full pass, of the same generation and
//!   without a reconcile request, waited only on tasks is polled narrowly; user work and the
//!   resync always get full passes.

use super::*;
use crate::cloud::WaitingOn;

impl Reconciler {
    /// Whether `l` is looked at through its service alone (see the module docs).
    pub(super) fn polls_narrowly(&self, l: &Live) -> bool {
        let key = l.inst.key();
        self.queue.running_priority(&key) == Some(Priority::Requeue)
            && l.inst.metadata.reconcile_request.is_none()
            && !l.inst.is_deleted()
            && lock(&self.polls).get(&key) == Some(&l.inst.metadata.generation)
    }

    /// Looks at the services of `narrow` (and lists the tasks of those that settled
    /// without ECS vouching for their health). Those still starting look again after the
    /// poll interval; the others are returned for a full pass, with their task lists. If
    /// the look fails, all of them get a full pass (which records the failure).
    pub(super) async fn poll_services(&self, narrow: Vec<Live>, lane: Lane) -> Vec<Live> {
        if narrow.is_empty() {
            return narrow;
        }
        let keys: Vec<InstanceKey> = narrow.iter().map(|l| l.inst.key()).collect();
        let ctx = self.call_context(None, None, lane);
        let looked = CALL_CONTEXT.scope(ctx.clone(), self.cloud.observe_services(&keys));
        let services = match looked.await {
            Ok(services) => services,
            Err(error) => {
                debug!(%error, "polling services failed; looking fully");
                return narrow;
            }
        };
        let unknown: Vec<usize> = narrow
            .iter()
            .zip(&services)
            .enumerate()
            .filter(|(_, (l, svc))| {
                svc.as_ref().is_some_and(|svc| {
                    let prev = l.inst.status.resources.service.as_ref();
                    health::should_list(prev, l.inst.status.replicas.desired, svc)
                })
            })
            .map(|(i, _)| i)
            .collect();
        let mut lists: HashMap<usize, Vec<ObservedTask>> = HashMap::new();
        if !unknown.is_empty() {
            let keys: Vec<InstanceKey> = unknown.iter().map(|&i| keys[i].clone()).collect();
            match CALL_CONTEXT
                .scope(ctx, self.cloud.describe_tasks(&keys))
                .await
            {
                Ok(found) => lists.extend(unknown.into_iter().zip(found)),
                Err(error) => {
                    debug!(%error, "listing tasks failed; looking fully");
                    return narrow;
                }
            }
        }
        let mut full = Vec::new();
        for (i, (mut l, svc)) in narrow.into_iter().zip(services).enumerate() {
            let tasks = lists.remove(&i);
            if health::still_starting(&l.inst, svc.as_ref(), tasks.as_deref()) {
                self.poll_again(&l.inst.key());
            } else {
                l.tasks = tasks;
                full.push(l);
            }
        }
        full
    }

    /// Ends a narrow poll: look again after the tasks' poll interval.
    fn poll_again(&self, key: &InstanceKey) {
        let outcome = Outcome::Success {
            requeue_after: Some(self.cloud.poll_interval(WaitingOn::Tasks)),
        };
        self.count_result(outcome);
        self.wave_done(key);
        self.queue.done(key, outcome);
    }

    /// After a full pass: its next look may be a narrow poll if the plan waits only on
    /// tasks and the pass succeeded; and a plan that could not decide without the RDS
    /// snapshots gets them next time.
    pub(super) fn note_plan(&self, inst: &Instance, plan: &Plan, outcome: &Outcome) {
        let key = inst.key();
        let tasks_only = !plan.waits.is_empty()
            && plan.waits.iter().all(|w| w.on == WaitingOn::Tasks)
            && plan.problem.is_none()
            && !plan.needs_snapshots;
        let polls_next = tasks_only && matches!(outcome, Outcome::Success { .. });
        {
            let mut polls = lock(&self.polls);
            if polls_next {
                polls.insert(key.clone(), inst.metadata.generation);
            } else {
                polls.remove(&key);
            }
        }
        let mut wanted = lock(&self.snapshots_wanted);
        if plan.needs_snapshots {
            wanted.insert(key);
        } else {
            wanted.remove(&key);
        }
    }
}
