//! AWS Backup: on-demand backup jobs of an EFS directory, the recovery points they
//! produce, and item-level restore jobs of a recovery point's directory; also the record
//! of the other long job, the relocation task (`relocation`), which shares this shape.
//!
//! A job stores its start, its completion time and, if it is going to fail, when and why;
//! its state at `t` is read off those times like everything else in the sim. A backup job
//! captures its directory's data when it starts; its recovery point (ARN fixed at start)
//! exists once the job has completed, and holds that data. A restore job captures the
//! recovery point's data when it starts and, once completed, its directory holds it
//! (derived in `efs::directory_at`; nothing is copied at completion). As on AWS, that
//! directory is NOT the target the step names: AWS Backup restores the item, with its full
//! path, into a new recovery directory at the file system root,
//! `/aws-backup-restore_<start time><source path>` (docs/AWS.md); the relocation task
//! moves it into place.
//!
//! Invariants:
//! * StartBackupJob / StartRestoreJob are idempotent by the client token (AWS Backup's
//!   IdempotencyToken): the same token of the same job type returns the job it started,
//!   whatever the other parameters; no second job is ever started for it.
//! * Whether a job fails is decided when it starts, deterministically from its id and
//!   `Faults::backup_failure_rate`; a failed backup produces no recovery point and a failed
//!   restore writes nothing.
//! * Jobs (and so recovery points) are never removed. `job_by_token`, `rp_by_arn`,
//!   `writes_by_root` and `moves_by_source` index exactly the records of `jobs` (changed
//!   only by `insert_job`).
//! * The sim never aborts a job (`JobState::Aborted` is not produced).

use serde::{Deserialize, Serialize};

use super::calls::Api;
use super::clock::{Ctx, Millis, base, mix, stable_hash, unit};
use super::inventory::{Inventory, RecordKey};
use super::view::{BackupJobView, RecoveryPointView, RelocationTaskView, RestoreJobView};
use crate::cloud::relocate::RECOVERY_PREFIX;
use crate::cloud::{CloudResult, JobKind, JobRef, JobState, ObservedJob};
use crate::model::{InstanceKey, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum JobType {
    Backup,
    Restore,
    /// The ECS task moving a restore's recovered files into place (`relocation`).
    Relocation,
}

impl JobType {
    pub fn of(kind: JobKind) -> Self {
        match kind {
            JobKind::Backup => JobType::Backup,
            JobKind::Restore => JobType::Restore,
            JobKind::Relocation => JobType::Relocation,
        }
    }

    fn kind(self) -> JobKind {
        match self {
            JobType::Backup => JobKind::Backup,
            JobType::Restore => JobKind::Restore,
            JobType::Relocation => JobKind::Relocation,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JobFailure {
    pub at: Millis,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JobRec {
    pub id: String,
    pub kind: JobType,
    pub key: InstanceKey,
    pub client_token: String,
    /// Backup: the directory backed up. Restore: the directory it writes, in its recovery
    /// directory (records from before recovery directories: the step's target).
    /// Relocation: the target it moves the files into.
    pub root_path: String,
    /// Backup: the `backup_id` of the step.
    pub backup_id: Option<String>,
    /// Backup: the recovery point it produces when it completes. Restore: the one it reads.
    /// Relocation: empty.
    pub recovery_point_arn: String,
    /// Backup: the directory's data at the start. Restore: the recovery point's data.
    /// Relocation: the data it moves.
    pub data: String,
    /// Restore: the target the step named (AWS Backup ignores it; it identifies the
    /// restore request in views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_root: Option<String>,
    /// Relocation: the restore job whose files it moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_job_id: Option<String>,
    /// Relocation: the directory it moves to `root_path`; `None` when it moves nothing (the
    /// target was in place, or it fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    pub started_at: Millis,
    /// When it completes, unless it fails first.
    pub done_at: Millis,
    pub failure: Option<JobFailure>,
}

impl JobRec {
    pub fn state(&self, t: Millis) -> JobState {
        match &self.failure {
            Some(f) if f.at <= t => JobState::Failed,
            _ if self.done_at <= t => JobState::Completed,
            _ => JobState::Running,
        }
    }

    fn state_word(&self, t: Millis) -> &'static str {
        match self.state(t) {
            JobState::Running => "RUNNING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Aborted => "ABORTED",
        }
    }

    /// Progress by elapsed time: 100 only once completed; a failed job stays where it
    /// failed.
    pub fn percent_done(&self, t: Millis) -> u8 {
        if self.state(t) == JobState::Completed {
            return 100;
        }
        let until = self.failure.as_ref().map_or(t, |f| f.at.min(t));
        let total = (self.done_at - self.started_at).max(1);
        let elapsed = (until - self.started_at).clamp(0, total);
        u8::try_from((elapsed * 100 / total).min(99)).unwrap_or(99)
    }

    fn message(&self, t: Millis) -> Option<String> {
        (self.state(t) == JobState::Failed)
            .then(|| self.failure.as_ref().map(|f| f.message.clone()))
            .flatten()
    }

    /// A backup job's recovery point exists once the job completed.
    fn produced_recovery_point(&self, t: Millis) -> bool {
        self.kind == JobType::Backup && self.state(t) == JobState::Completed
    }

    pub fn observed(&self, t: Millis) -> ObservedJob {
        ObservedJob {
            kind: self.kind.kind(),
            id: self.id.clone(),
            state: self.state(t),
            percent_done: self.percent_done(t),
            recovery_point_arn: self
                .produced_recovery_point(t)
                .then(|| self.recovery_point_arn.clone()),
            message: self.message(t),
        }
    }

    fn backup_view(&self, t: Millis) -> BackupJobView {
        BackupJobView {
            id: self.id.clone(),
            tenant_id: self.key.tenant_id.to_string(),
            instance_id: self.key.instance_id.to_string(),
            backup_id: self.backup_id.clone().unwrap_or_default(),
            root_path: self.root_path.clone(),
            state: self.state_word(t).to_owned(),
            percent_done: self.percent_done(t),
            recovery_point_arn: self
                .produced_recovery_point(t)
                .then(|| self.recovery_point_arn.clone()),
            message: self.message(t),
        }
    }

    fn restore_view(&self, t: Millis) -> RestoreJobView {
        RestoreJobView {
            id: self.id.clone(),
            tenant_id: self.key.tenant_id.to_string(),
            instance_id: self.key.instance_id.to_string(),
            recovery_point_arn: self.recovery_point_arn.clone(),
            target_root: self
                .requested_root
                .clone()
                .unwrap_or_else(|| self.root_path.clone()),
            recovery_path: self.root_path.clone(),
            state: self.state_word(t).to_owned(),
            percent_done: self.percent_done(t),
            message: self.message(t),
        }
    }

    fn relocation_view(&self, t: Millis) -> RelocationTaskView {
        RelocationTaskView {
            id: self.id.clone(),
            tenant_id: self.key.tenant_id.to_string(),
            instance_id: self.key.instance_id.to_string(),
            restore_job_id: self.restore_job_id.clone().unwrap_or_default(),
            target_root: self.root_path.clone(),
            moves: self.source_path.clone(),
            state: self.state_word(t).to_owned(),
            message: self.message(t),
        }
    }

    fn recovery_point_view(&self) -> RecoveryPointView {
        RecoveryPointView {
            arn: self.recovery_point_arn.clone(),
            tenant_id: self.key.tenant_id.to_string(),
            instance_id: self.key.instance_id.to_string(),
            backup_job_id: self.id.clone(),
            backup_id: self.backup_id.clone().unwrap_or_default(),
            source_root_path: self.root_path.clone(),
            created_at: Timestamp::from_timestamp_millis(self.done_at),
            data: self.data.clone(),
        }
    }
}

/// Where AWS Backup puts an item-level restore started at `t` of the directory `source`:
/// a new recovery directory at the file system root, the item's full path inside.
pub(super) fn recovery_path(t: Millis, source: &str) -> String {
    let at = crate::model::Timestamp::from_timestamp_millis(t).unwrap_or_default();
    format!(
        "/{RECOVERY_PREFIX}{}{source}",
        at.format("%Y-%m-%dT%H-%M-%S-%3fZ")
    )
}

/// `/aws-backup-restore_…/a/b` → (`aws-backup-restore_…`, `/a/b`).
pub(super) fn split_recovery_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let slash = rest.find('/')?;
    let (name, source) = rest.split_at(slash);
    name.starts_with(RECOVERY_PREFIX).then_some((name, source))
}

/// AWS Backup job ids and recovery point ids are upper-case UUIDs.
fn new_uuid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()
}

/// A job that starts now and takes `base_ms`; fails (part-way) with probability
/// `ctx.backup_failure_rate`, decided from its id so the decision is fixed at the start.
fn schedule(ctx: &Ctx, id: &str, base_ms: f64, why: String) -> (Millis, Option<JobFailure>) {
    let done_at = ctx.after(base_ms);
    let h = stable_hash(id);
    let fails = unit(h) < ctx.backup_failure_rate;
    let failure = fails.then(|| {
        let fraction = 0.3 + 0.5 * unit(mix(h, 1));
        let span = (done_at - ctx.now) as f64;
        JobFailure {
            at: ctx.now + (span * fraction) as Millis,
            message: why,
        }
    });
    (done_at, failure)
}

/// Arguments of StartBackupJob.
pub(super) struct NewBackup<'a> {
    pub backup_id: &'a str,
    pub root_path: &'a str,
    pub token: &'a str,
}

/// Arguments of StartRestoreJob.
pub(super) struct NewRestore<'a> {
    pub recovery_point_arn: &'a str,
    pub target_root: &'a str,
    pub token: &'a str,
}

impl Inventory {
    /// Stores `rec` and indexes it.
    pub(super) fn insert_job(&mut self, rec: JobRec) {
        let token_key = (rec.kind, rec.client_token.clone());
        // Only one job per token is ever started; should the file hold two, the older one
        // is the one AWS would keep answering with, whatever order they load in.
        let older = self
            .job_by_token
            .get(&token_key)
            .and_then(|id| self.jobs.get(id))
            .is_none_or(|old| (rec.started_at, &rec.id) < (old.started_at, &old.id));
        if older {
            self.job_by_token.insert(token_key, rec.id.clone());
        }
        let index = |map: &mut std::collections::HashMap<String, Vec<String>>, at: &str| {
            let ids = map.entry(at.to_owned()).or_default();
            if !ids.contains(&rec.id) {
                ids.push(rec.id.clone());
            }
        };
        match rec.kind {
            JobType::Backup => {
                self.rp_by_arn
                    .insert(rec.recovery_point_arn.clone(), rec.id.clone());
            }
            JobType::Restore => index(&mut self.writes_by_root, &rec.root_path),
            // Only a relocation that moves something writes (and empties its source).
            JobType::Relocation => {
                if let Some(source) = &rec.source_path {
                    index(&mut self.writes_by_root, &rec.root_path);
                    index(&mut self.moves_by_source, source);
                }
            }
        }
        self.jobs.insert(rec.id.clone(), rec);
    }

    pub(super) fn job_by_token(&self, kind: JobType, token: &str) -> Option<&str> {
        self.job_by_token
            .get(&(kind, token.to_owned()))
            .map(String::as_str)
    }

    pub(super) fn start_backup_job(
        &mut self,
        ctx: &Ctx,
        api: Api,
        key: &InstanceKey,
        new: NewBackup<'_>,
    ) -> CloudResult<String> {
        if let Some(id) = self.job_by_token(JobType::Backup, new.token) {
            return Ok(id.to_owned());
        }
        let data = self
            .directory_at(new.root_path, ctx.now)
            .ok_or_else(|| {
                api.invalid(format!(
                    "InvalidParameterValueException: directory {} does not exist on the file \
                     system",
                    new.root_path
                ))
            })?
            .to_owned();
        let id = new_uuid();
        let why = format!(
            "Backup job failed: reading {} from the EFS file system did not complete \
             (simulated fault)",
            new.root_path
        );
        let (done_at, failure) = schedule(ctx, &id, base::BACKUP_JOB, why);
        let rec = JobRec {
            id: id.clone(),
            kind: JobType::Backup,
            key: key.clone(),
            client_token: new.token.to_owned(),
            root_path: new.root_path.to_owned(),
            backup_id: Some(new.backup_id.to_owned()),
            recovery_point_arn: format!(
                "arn:aws:backup:eu-west-1:123456789012:recovery-point:{}",
                new_uuid()
            ),
            data,
            requested_root: None,
            restore_job_id: None,
            source_path: None,
            started_at: ctx.now,
            done_at,
            failure,
        };
        self.insert_job(rec);
        self.touch(RecordKey::Job(id.clone()));
        Ok(id)
    }

    pub(super) fn start_restore_job(
        &mut self,
        ctx: &Ctx,
        api: Api,
        key: &InstanceKey,
        new: NewRestore<'_>,
    ) -> CloudResult<String> {
        if let Some(id) = self.job_by_token(JobType::Restore, new.token) {
            return Ok(id.to_owned());
        }
        let arn = new.recovery_point_arn;
        let not_found = || {
            api.permanent(
                "ResourceNotFoundException",
                format!("Recovery point {arn} not found"),
            )
        };
        let source = self
            .rp_by_arn
            .get(arn)
            .and_then(|id| self.jobs.get(id))
            .ok_or_else(not_found)?;
        let data = match source.state(ctx.now) {
            JobState::Completed => source.data.clone(),
            JobState::Running => {
                return Err(api.invalid(format!(
                    "InvalidRequestException: recovery point {arn} is not COMPLETED yet"
                )));
            }
            JobState::Failed | JobState::Aborted => return Err(not_found()),
        };
        // AWS Backup restores the item with its full path into a recovery directory of its
        // own, whatever target the caller has in mind.
        let landing = recovery_path(ctx.now, &source.root_path);
        let id = new_uuid();
        let why = format!(
            "Restore job failed: writing {landing} to the EFS file system did not complete \
             (simulated fault)"
        );
        let (done_at, failure) = schedule(ctx, &id, base::RESTORE_JOB, why);
        let rec = JobRec {
            id: id.clone(),
            kind: JobType::Restore,
            key: key.clone(),
            client_token: new.token.to_owned(),
            root_path: landing,
            backup_id: None,
            recovery_point_arn: arn.to_owned(),
            data,
            requested_root: Some(new.target_root.to_owned()),
            restore_job_id: None,
            source_path: None,
            started_at: ctx.now,
            done_at,
            failure,
        };
        self.insert_job(rec);
        self.touch(RecordKey::Job(id.clone()));
        Ok(id)
    }

    /// The job `r` names, if it exists and is of that kind.
    pub(super) fn job(&self, r: &JobRef) -> Option<&JobRec> {
        self.jobs
            .get(&r.id)
            .filter(|job| job.kind == JobType::of(r.kind))
    }

    /// The newest job completed by `t` that wrote `root` (a restore into its recovery
    /// directory, a relocation into its target): when, and the data it wrote.
    pub(super) fn last_job_write(&self, root: &str, t: Millis) -> Option<(Millis, &str)> {
        self.writes_by_root
            .get(root)?
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|job| job.state(t) == JobState::Completed)
            .max_by(|a, b| (a.done_at, &a.id).cmp(&(b.done_at, &b.id)))
            .map(|job| (job.done_at, job.data.as_str()))
    }

    /// When a relocation moved `root` away (completed by `t`), if one did.
    pub(super) fn moved_away(&self, root: &str, t: Millis) -> Option<Millis> {
        self.moves_by_source
            .get(root)?
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|job| job.state(t) == JobState::Completed)
            .map(|job| job.done_at)
            .min()
    }

    /// Directories some job writes (or wrote) into.
    pub(super) fn job_written_roots(&self) -> impl Iterator<Item = &str> {
        self.writes_by_root.keys().map(String::as_str)
    }

    pub(super) fn backup_job_views(&self, t: Millis) -> Vec<BackupJobView> {
        let mut views: Vec<BackupJobView> = self
            .jobs
            .values()
            .filter(|j| j.kind == JobType::Backup)
            .map(|j| j.backup_view(t))
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    pub(super) fn restore_job_views(&self, t: Millis) -> Vec<RestoreJobView> {
        let mut views: Vec<RestoreJobView> = self
            .jobs
            .values()
            .filter(|j| j.kind == JobType::Restore)
            .map(|j| j.restore_view(t))
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    pub(super) fn relocation_task_views(&self, t: Millis) -> Vec<RelocationTaskView> {
        let mut views: Vec<RelocationTaskView> = self
            .jobs
            .values()
            .filter(|j| j.kind == JobType::Relocation)
            .map(|j| j.relocation_view(t))
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    pub(super) fn recovery_point_views(&self, t: Millis) -> Vec<RecoveryPointView> {
        let mut views: Vec<RecoveryPointView> = self
            .jobs
            .values()
            .filter(|j| j.produced_recovery_point(t))
            .map(JobRec::recovery_point_view)
            .collect();
        views.sort_by(|a, b| a.arn.cmp(&b.arn));
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(failure: Option<JobFailure>) -> JobRec {
        JobRec {
            id: "J".into(),
            kind: JobType::Backup,
            key: InstanceKey::from_strs("t", "i"),
            client_token: "tok".into(),
            root_path: "/r".into(),
            backup_id: Some("bk".into()),
            recovery_point_arn: "arn:rp".into(),
            data: "A".into(),
            requested_root: None,
            restore_job_id: None,
            source_path: None,
            started_at: 1_000,
            done_at: 2_000,
            failure,
        }
    }

    #[test]
    fn states_and_progress_follow_the_times() {
        let j = job(None);
        assert_eq!(j.state(1_000), JobState::Running);
        assert_eq!(j.percent_done(1_000), 0);
        assert_eq!(j.percent_done(1_500), 50);
        assert_eq!(j.percent_done(1_999), 99);
        assert_eq!(j.observed(1_999).recovery_point_arn, None);
        let done = j.observed(2_000);
        assert_eq!((done.state, done.percent_done), (JobState::Completed, 100));
        assert_eq!(done.recovery_point_arn.as_deref(), Some("arn:rp"));
        assert_eq!(done.message, None);
        assert_eq!(j.percent_done(0), 0, "before the start");
    }

    #[test]
    fn a_failing_job_fails_where_it_fails() {
        let j = job(Some(JobFailure {
            at: 1_400,
            message: "boom".into(),
        }));
        assert_eq!(j.state(1_399), JobState::Running);
        let failed = j.observed(5_000);
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.percent_done, 40);
        assert_eq!(failed.message.as_deref(), Some("boom"));
        assert_eq!(failed.recovery_point_arn, None);
    }

    #[test]
    fn failure_is_decided_by_rate_and_fails_part_way() {
        let ctx = Ctx::new(0, 1.0, 1.0);
        assert!(schedule(&ctx, "x", 1_000.0, "m".into()).1.is_none());
        let always = ctx.with_backup_failure_rate(1.0);
        for i in 0..50 {
            let (done, failure) = schedule(&always, &format!("id{i}"), 1_000.0, "m".into());
            let f = failure.expect("fails");
            assert!(f.at > 0 && f.at < done, "{} vs {done}", f.at);
        }
        let half = ctx.with_backup_failure_rate(0.5);
        let failed = (0..400)
            .filter(|i| {
                schedule(&half, &format!("id{i}"), 1.0, "m".into())
                    .1
                    .is_some()
            })
            .count();
        assert!((120..280).contains(&failed), "{failed}");
        // Deterministic per job id.
        let a = schedule(&half, "same", 1.0, "m".into()).1.is_some();
        assert!((0..10).all(|_| schedule(&half, "same", 1.0, "m".into()).1.is_some() == a));
    }
}
