//! AWS Backup: on-demand backup jobs of the file system (the recovery point covers every
//! directory; the instance's is named in the recovery point's tags) and item-level restore
//! jobs of the instance's directory.
//!
//! Idempotency: both jobs carry the step's client token as AWS Backup's
//! `IdempotencyToken`, which returns the job already started for a repeated token instead
//! of starting another; the reconciler records the job id before anything else and polls
//! it from then on.
//!
//! AWS Backup restores an item-level EFS restore into a new directory
//! `aws-backup-restore_<datetime>` off the file system root, not into the target the
//! planner names (docs/AWS.md, "Restore"); the relocation task (`relocation`) moves it
//! there once the job completed.

use aws_sdk_backup::types::{BackupJobState, RestoreJobStatus};

use super::AwsCloud;
use super::call::{Api, AwsResult};
use super::ecs::in_progress;
use super::tagged_key;
use crate::cloud::names::tags;
use crate::cloud::{JobKind, JobRef, JobState, ObservedJob, StepOutcome};
use crate::model::InstanceKey;

const START_BACKUP_JOB: Api = Api::new("backup", "StartBackupJob");
const START_RESTORE_JOB: Api = Api::new("backup", "StartRestoreJob");
const DESCRIBE_BACKUP_JOB: Api = Api::new("backup", "DescribeBackupJob");
const DESCRIBE_RESTORE_JOB: Api = Api::new("backup", "DescribeRestoreJob");
const LIST_TAGS: Api = Api::new("backup", "ListTags");

/// Recovery point tag naming the directory a backup is of.
pub const ROOT_PATH_TAG: &str = "wpfleet:root-path";
/// Recovery point tag naming the backup record.
pub const BACKUP_ID_TAG: &str = "wpfleet:backup-id";

impl AwsCloud {
    pub(super) async fn start_backup_job(
        &self,
        key: &InstanceKey,
        backup_id: &str,
        root_path: &str,
        token: &str,
    ) -> AwsResult<StepOutcome> {
        let mut request = self
            .clients
            .backup
            .start_backup_job()
            .backup_vault_name(&self.settings.backup_vault)
            .resource_arn(&self.file_system_arn)
            .iam_role_arn(&self.settings.backup_role_arn)
            .idempotency_token(token)
            .recovery_point_tags(ROOT_PATH_TAG, root_path)
            .recovery_point_tags(BACKUP_ID_TAG, backup_id);
        for (k, v) in tags(key) {
            request = request.recovery_point_tags(k, v);
        }
        let out = self.caller.send(START_BACKUP_JOB, request.send()).await?;
        let job_id = out.backup_job_id.ok_or_else(|| {
            in_progress(START_BACKUP_JOB, "StartBackupJob returned no job id".into())
        })?;
        Ok(StepOutcome::Started { job_id })
    }

    /// An item-level restore of the directory the recovery point was taken of (its
    /// `wpfleet:root-path` tag) into the configured file system.
    pub(super) async fn start_restore_job(
        &self,
        key: &InstanceKey,
        recovery_point_arn: &str,
        token: &str,
    ) -> AwsResult<StepOutcome> {
        let source = self.recovery_point_root(key, recovery_point_arn).await?;
        let items = serde_json::to_string(&[source]).unwrap_or_default();
        let request = self
            .clients
            .backup
            .start_restore_job()
            .recovery_point_arn(recovery_point_arn)
            .iam_role_arn(&self.settings.backup_role_arn)
            .idempotency_token(token)
            .resource_type("EFS")
            .metadata("file-system-id", &self.settings.file_system_id)
            .metadata("newFileSystem", "false")
            .metadata("Encrypted", "true")
            .metadata("PerformanceMode", "generalPurpose")
            .metadata("CreationToken", token)
            .metadata("ItemsToRestore", items)
            .send();
        let out = self.caller.send(START_RESTORE_JOB, request).await?;
        let job_id = out.restore_job_id.ok_or_else(|| {
            in_progress(
                START_RESTORE_JOB,
                "StartRestoreJob returned no job id".into(),
            )
        })?;
        Ok(StepOutcome::Started { job_id })
    }

    /// The directory a recovery point of `key` holds, from its tags.
    pub(super) async fn recovery_point_root(
        &self,
        key: &InstanceKey,
        arn: &str,
    ) -> AwsResult<String> {
        let request = self.clients.backup.list_tags().resource_arn(arn).send();
        let out = self.caller.send(LIST_TAGS, request).await?;
        let tags = out.tags.unwrap_or_default();
        let owner = tagged_key(
            tags.iter()
                .map(|(k, v)| (Some(k.as_str()), Some(v.as_str()))),
        );
        match (owner, tags.get(ROOT_PATH_TAG)) {
            (Some(owner), Some(root)) if &owner == key => Ok(root.clone()),
            _ => Err(super::errors::AwsFailure {
                code: Some("InvalidRecoveryPoint".into()),
                error: crate::cloud::CloudError::Permanent {
                    service: LIST_TAGS.service,
                    operation: START_RESTORE_JOB.operation,
                    code: "InvalidRecoveryPoint".into(),
                    message: format!(
                        "recovery point {arn} is not a wpfleet backup of {}",
                        key.path()
                    ),
                },
            }),
        }
    }

    /// Describes each AWS Backup job (concurrently); unknown ids, and jobs of other
    /// kinds, are left out.
    pub(super) async fn describe_backup_jobs(
        &self,
        jobs: &[JobRef],
    ) -> AwsResult<Vec<ObservedJob>> {
        let backup_jobs = jobs.iter().filter(|j| j.kind != JobKind::Relocation);
        let described =
            futures::future::join_all(backup_jobs.map(|job| self.describe_job(job))).await;
        let mut seen = Vec::new();
        for result in described {
            if let Some(job) = result? {
                seen.push(job);
            }
        }
        Ok(seen)
    }

    async fn describe_job(&self, job: &JobRef) -> AwsResult<Option<ObservedJob>> {
        let result = match job.kind {
            // An ECS task, not an AWS Backup job (`relocation`).
            JobKind::Relocation => return Ok(None),
            JobKind::Backup => {
                let request = self
                    .clients
                    .backup
                    .describe_backup_job()
                    .backup_job_id(&job.id)
                    .send();
                self.caller
                    .send(DESCRIBE_BACKUP_JOB, request)
                    .await
                    .map(|out| {
                        let state = backup_state(out.state());
                        ObservedJob {
                            kind: JobKind::Backup,
                            id: job.id.clone(),
                            state,
                            percent_done: percent(out.percent_done(), state),
                            recovery_point_arn: (state == JobState::Completed)
                                .then(|| out.recovery_point_arn().map(str::to_owned))
                                .flatten(),
                            message: out.status_message().map(str::to_owned),
                        }
                    })
            }
            JobKind::Restore => {
                let request = self
                    .clients
                    .backup
                    .describe_restore_job()
                    .restore_job_id(&job.id)
                    .send();
                self.caller
                    .send(DESCRIBE_RESTORE_JOB, request)
                    .await
                    .map(|out| {
                        let state = restore_state(out.status());
                        ObservedJob {
                            kind: JobKind::Restore,
                            id: job.id.clone(),
                            state,
                            percent_done: percent(out.percent_done(), state),
                            recovery_point_arn: out.recovery_point_arn().map(str::to_owned),
                            message: out.status_message().map(str::to_owned),
                        }
                    })
            }
        };
        match result {
            Ok(job) => Ok(Some(job)),
            Err(f) if f.is(&["ResourceNotFoundException"]) => Ok(None),
            Err(f) => Err(f),
        }
    }
}

fn backup_state(s: Option<&BackupJobState>) -> JobState {
    match s {
        Some(BackupJobState::Completed) => JobState::Completed,
        // PARTIAL: part of a composite job failed; for one file system that is a failure.
        Some(BackupJobState::Failed | BackupJobState::Expired | BackupJobState::Partial) => {
            JobState::Failed
        }
        Some(BackupJobState::Aborted) => JobState::Aborted,
        _ => JobState::Running,
    }
}

fn restore_state(s: Option<&RestoreJobStatus>) -> JobState {
    match s {
        Some(RestoreJobStatus::Completed) => JobState::Completed,
        Some(RestoreJobStatus::Failed) => JobState::Failed,
        Some(RestoreJobStatus::Aborted) => JobState::Aborted,
        _ => JobState::Running,
    }
}

/// AWS reports the percentage as a string ("42.0"); a finished job is 100.
fn percent(reported: Option<&str>, state: JobState) -> u8 {
    if state == JobState::Completed {
        return 100;
    }
    let p = reported
        .and_then(|s| s.trim().trim_end_matches('%').parse::<f64>().ok())
        .unwrap_or(0.0);
    p.clamp(0.0, 99.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_and_only_completed_jobs_are_done() {
        assert_eq!(percent(Some("42.7"), JobState::Running), 42);
        assert_eq!(percent(Some("100.0"), JobState::Running), 99);
        assert_eq!(percent(Some("junk"), JobState::Running), 0);
        assert_eq!(percent(None, JobState::Completed), 100);
    }

    #[test]
    fn job_states_map_to_running_or_final() {
        assert_eq!(
            backup_state(Some(&BackupJobState::Created)),
            JobState::Running
        );
        assert_eq!(
            backup_state(Some(&BackupJobState::Partial)),
            JobState::Failed
        );
        assert_eq!(backup_state(None), JobState::Running);
        assert_eq!(
            restore_state(Some(&RestoreJobStatus::Pending)),
            JobState::Running
        );
        assert_eq!(
            restore_state(Some(&RestoreJobStatus::Aborted)),
            JobState::Aborted
        );
    }
}
