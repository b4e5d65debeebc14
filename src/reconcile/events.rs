//! What a reconcile pass tells about itself: the instance events it records (issue 6).
//!
//! Pure, like `plan` and `status`: `pass_events` compares the instance as the pass read it
//! with the status it writes, the steps it applied and the error it hit, and returns the
//! events in the order they happened. The runner appends them to the store in one write
//! after the status write (and makes no write when there are none).
//!
//! Invariant: a pass that did nothing new records nothing: no step applied or failed, no
//! phase, convergence, backup, restore or Degraded change means no event, so a resync of a
//! converged fleet writes no event.

use crate::cloud::{CloudError, Step};
use crate::model::{
    Backup, Condition, ConditionStatus, ConditionType, Event, EventReason, Instance, RestoreStage,
    Status, Timestamp, find_condition,
};

use super::plan::Plan;
use super::status::PassError;

/// A step of the plan that ran, and the job it started (backups, restores).
#[derive(Debug, Clone)]
pub struct AppliedStep<'a> {
    pub step: &'a Step,
    pub job_id: Option<String>,
}

/// Everything `pass_events` looks at.
#[derive(Debug, Clone, Copy)]
pub struct PassRecord<'a> {
    /// The instance as the pass read it (status before the pass).
    pub inst: &'a Instance,
    /// Its backups in flight as the pass read them.
    pub backups: &'a [Backup],
    pub plan: &'a Plan,
    pub applied: &'a [AppliedStep<'a>],
    pub error: Option<&'a PassError>,
    /// The status the pass writes.
    pub status: &'a Status,
}

pub fn pass_events(r: &PassRecord<'_>, at: Timestamp) -> Vec<Event> {
    let generation = r.inst.metadata.generation;
    let event = |reason, message: String| Event::new(reason, message, generation, at);
    let mut events = vec![];
    if let Some(e) = r.error.filter(|e| e.step.is_none()) {
        events.push(observe_failed(&e.error, generation, at));
    }
    let drifted = r.inst.is_converged() && !r.inst.is_deleted();
    for applied in r.applied {
        events.push(step_event(applied, drifted, generation, at));
    }
    if let Some(e) = r.error.filter(|e| e.step.is_some()) {
        events.push(event(
            EventReason::StepFailed,
            format!("{} ({})", e.error, retry_note(&e.error)),
        ));
    }
    events.extend(backup_events(r, at));
    events.extend(restore_event(r, at));
    if r.error.is_none()
        && let Some(d) = newly_degraded(&r.inst.status, r.status)
    {
        events.push(event(
            EventReason::Degraded,
            format!("{}: {}", d.reason, d.message),
        ));
    }
    if r.status.phase != r.inst.status.phase {
        events.push(event(
            EventReason::PhaseChanged,
            format!(
                "{} → {}",
                r.inst.status.phase.as_str(),
                r.status.phase.as_str()
            ),
        ));
    }
    if r.status.observed_generation >= generation && !r.inst.is_converged() {
        let took = (at - r.inst.metadata.updated_at).num_milliseconds().max(0) as f64 / 1000.0;
        events.push(event(
            EventReason::Converged,
            format!("generation {generation} reached {took:.1}s after it was written"),
        ));
    }
    events
}

/// Looking at the cloud failed (the batch's observation, or what a pass adds to it).
pub fn observe_failed(error: &CloudError, generation: u64, at: Timestamp) -> Event {
    let message = format!("{error} ({})", retry_note(error));
    Event::new(EventReason::ObserveFailed, message, generation, at)
}

fn retry_note(error: &CloudError) -> &'static str {
    if error.is_retryable() {
        "will retry with backoff"
    } else {
        "a retry will not fix this"
    }
}

/// Steps towards the spec; on a converged instance they can only be repairing drift. (The
/// others are housekeeping: backups and retiring superseded data.)
fn moves_towards_spec(step: &Step) -> bool {
    matches!(
        step,
        Step::CreateLogGroup { .. }
            | Step::CreateAccessPoint { .. }
            | Step::CreateDatabase { .. }
            | Step::ModifyDatabase { .. }
            | Step::StartDatabase { .. }
            | Step::StopDatabase { .. }
            | Step::CreateService { .. }
            | Step::UpdateService { .. }
    )
}

fn step_event(applied: &AppliedStep<'_>, drifted: bool, generation: u64, at: Timestamp) -> Event {
    let step = applied.step;
    let what = format!("{} {}", step.name(), step.target());
    let (reason, message) = match (step, &applied.job_id) {
        (Step::StartBackupJob { backup_id, .. }, job) => (
            EventReason::BackupStarted,
            format!(
                "backup {backup_id}: AWS Backup job {} started",
                job.as_deref().unwrap_or("?")
            ),
        ),
        _ if drifted && moves_towards_spec(step) => (
            EventReason::DriftRepaired,
            format!("{what}: the cloud had drifted from generation {generation}"),
        ),
        (_, Some(job)) => (EventReason::StepApplied, format!("{what} (job {job})")),
        (_, None) => (EventReason::StepApplied, what),
    };
    Event::new(reason, message, generation, at)
}

/// Backups the plan finished this pass.
fn backup_events(r: &PassRecord<'_>, at: Timestamp) -> Vec<Event> {
    let generation = r.inst.metadata.generation;
    r.plan
        .backups
        .iter()
        .filter(|p| p.status.is_final())
        .filter(|p| {
            r.backups
                .iter()
                .find(|b| b.backup_id == p.backup_id)
                .is_none_or(|b| !b.status.is_final())
        })
        .map(|p| match &p.error {
            None => Event::new(
                EventReason::BackupCompleted,
                format!(
                    "backup {}: recovery point {}, snapshot {}",
                    p.backup_id,
                    p.efs_recovery_point_arn.as_deref().unwrap_or("?"),
                    p.rds_snapshot_id.as_deref().unwrap_or("?")
                ),
                generation,
                at,
            ),
            Some(error) => Event::new(
                EventReason::BackupFailed,
                format!("backup {}: {error}", p.backup_id),
                generation,
                at,
            ),
        })
        .collect()
}

/// A restore that reached a new stage this pass.
fn restore_event(r: &PassRecord<'_>, at: Timestamp) -> Option<Event> {
    let now = r.status.restore.as_ref()?;
    let before = r
        .inst
        .status
        .restore
        .as_ref()
        .filter(|b| b.request_id == now.request_id);
    if before.is_some_and(|b| b.stage == now.stage) {
        return None;
    }
    let (reason, message) = match now.stage {
        RestoreStage::Completed => (
            EventReason::RestoreCompleted,
            format!(
                "restore {} from backup {} completed",
                now.request_id, now.backup_id
            ),
        ),
        RestoreStage::Failed => (
            EventReason::RestoreFailed,
            format!(
                "restore {} from backup {}: {}",
                now.request_id,
                now.backup_id,
                now.error.as_deref().unwrap_or("failed")
            ),
        ),
        stage => (
            EventReason::RestoreStage,
            format!(
                "restore {} from backup {}: {} ({}%)",
                now.request_id,
                now.backup_id,
                stage_name(stage),
                now.progress
            ),
        ),
    };
    Some(Event::new(reason, message, r.inst.metadata.generation, at))
}

fn stage_name(stage: RestoreStage) -> &'static str {
    match stage {
        RestoreStage::Stopping => "STOPPING",
        RestoreStage::Restoring => "RESTORING",
        RestoreStage::Attaching => "ATTACHING",
        RestoreStage::Starting => "STARTING",
        RestoreStage::Completed => "COMPLETED",
        RestoreStage::Failed => "FAILED",
    }
}

/// The Degraded condition, when this pass turned it true.
fn newly_degraded<'s>(before: &Status, after: &'s Status) -> Option<&'s Condition> {
    match (degraded(before), degraded(after)) {
        (None, Some(now)) => Some(now),
        _ => None,
    }
}

fn degraded(s: &Status) -> Option<&Condition> {
    find_condition(&s.conditions, ConditionType::Degraded)
        .filter(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests;
