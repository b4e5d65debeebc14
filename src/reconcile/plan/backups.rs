//! Planning backups: for each backup in flight, an AWS Backup job of the instance's EFS
//! directory and an RDS snapshot of its database; COMPLETED when both are done, FAILED
//! when either fails.
//!
//! The job id is recorded on the backup record as soon as the job starts (by the runner,
//! before anything else), so later passes describe that job instead of starting another;
//! the job's idempotency token is derived from the backup id, so even a lost id cannot
//! start a second job. The snapshot is found by name.

use crate::cloud::names::ResourceNames;
use crate::cloud::{
    AccessPointState, DbState, JobKind, JobState, Observed, SnapshotState, Step, WaitingOn,
};
use crate::model::{Backup, BackupStatus};

use super::{Builder, Current};

/// A backup's state after this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupProgress {
    pub backup_id: String,
    pub status: BackupStatus,
    pub efs_recovery_point_arn: Option<String>,
    pub rds_snapshot_id: Option<String>,
    pub error: Option<String>,
}

impl BackupProgress {
    fn of(bk: &Backup) -> Self {
        Self {
            backup_id: bk.backup_id.clone(),
            status: bk.status,
            efs_recovery_point_arn: bk.efs_recovery_point_arn.clone(),
            rds_snapshot_id: bk.rds_snapshot_id.clone(),
            error: bk.error.clone(),
        }
    }

    fn failed(mut self, why: String) -> Self {
        self.status = BackupStatus::Failed;
        self.error = Some(why);
        self
    }

    fn differs_from(&self, bk: &Backup) -> bool {
        *self != Self::of(bk)
    }
}

pub(super) fn fail_all(b: &mut Builder, backups: &[Backup], why: &str) {
    for bk in backups.iter().filter(|bk| !bk.status.is_final()) {
        b.backups
            .push(BackupProgress::of(bk).failed(why.to_owned()));
    }
}

pub(super) fn plan(
    b: &mut Builder,
    backups: &[Backup],
    names: &ResourceNames,
    cur: &Current<'_>,
    obs: &Observed,
) {
    for bk in backups.iter().filter(|bk| !bk.status.is_final()) {
        let progress = one(b, bk, names, cur, obs);
        if progress.differs_from(bk) {
            b.backups.push(progress);
        }
    }
}

fn one(
    b: &mut Builder,
    bk: &Backup,
    names: &ResourceNames,
    cur: &Current<'_>,
    obs: &Observed,
) -> BackupProgress {
    let mut p = BackupProgress::of(bk);
    let ap = cur
        .access_point
        .filter(|ap| ap.state == AccessPointState::Available);
    let db = cur
        .database
        .filter(|db| matches!(db.state, DbState::Available | DbState::Stopped));
    let (Some(ap), Some(db)) = (ap, db) else {
        b.wait(
            WaitingOn::Snapshot,
            "BackupWaiting",
            format!(
                "backup {} waits for the database and access point",
                bk.backup_id
            ),
        );
        return p;
    };
    let files = match &bk.efs_backup_job_id {
        None => {
            b.step(Step::StartBackupJob {
                backup_id: bk.backup_id.clone(),
                root_path: ap.root_path.clone(),
            });
            false
        }
        Some(id) => match obs
            .jobs
            .iter()
            .find(|j| j.kind == JobKind::Backup && &j.id == id)
        {
            Some(j) if j.state == JobState::Completed => {
                p.efs_recovery_point_arn = j.recovery_point_arn.clone();
                p.efs_recovery_point_arn.is_some()
            }
            Some(j) if matches!(j.state, JobState::Failed | JobState::Aborted) => {
                let why = j
                    .message
                    .clone()
                    .unwrap_or_else(|| "no reason given".into());
                return p.failed(format!("AWS Backup job {id} failed: {why}"));
            }
            _ => false,
        },
    };
    let snapshot_id = names.backup_snapshot(&bk.backup_id);
    let Some(snapshots) = b.snapshots(obs) else {
        // Not described this pass: the snapshot may exist; look again with it.
        b.wait(
            WaitingOn::Snapshot,
            "BackupRunning",
            format!("backup {} is running", bk.backup_id),
        );
        return BackupProgress::of(bk);
    };
    let database = match snapshots.iter().find(|s| s.id == snapshot_id) {
        None => {
            b.step(Step::SnapshotDatabase {
                identifier: db.identifier.clone(),
                snapshot_id,
            });
            false
        }
        Some(s) if s.state == SnapshotState::Available => {
            p.rds_snapshot_id = Some(snapshot_id);
            true
        }
        Some(s) if s.state == SnapshotState::Failed => {
            return p.failed(format!("RDS snapshot {} failed", s.id));
        }
        Some(_) => false,
    };
    if files && database {
        p.status = BackupStatus::Completed;
    } else {
        p.status = BackupStatus::Running;
        b.wait(
            WaitingOn::Snapshot,
            "BackupRunning",
            format!("backup {} is running", bk.backup_id),
        );
    }
    p
}
