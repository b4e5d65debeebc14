//! Planning a restore: stop every task, restore the files (AWS Backup restore job, then a
//! relocation task that moves what it recovered into the epoch's new directory) and the
//! database (RDS restore of the backup's snapshot into a new DB instance), put an access
//! point on the restored directory, point the service at the restored data, and start it
//! again as `spec.state` says.
//!
//! AWS Backup puts restored items in a recovery directory of its own at the file system
//! root, never where we ask (docs/AWS.md), hence the relocation: it runs once the job
//! completed and before the access point exists (EFS would create an empty root directory
//! for an access point on a missing path).
//!
//! The restore job's id and then the relocation task's are recorded in `status.restore`
//! when they start; a restarted controller describes them instead of starting others (and
//! their idempotency tokens, derived from the restore request, make even a lost id
//! harmless). A relocation task the cloud no longer describes (ECS forgets stopped tasks
//! after about an hour) is run again under a token of its own; the relocation is
//! idempotent (a target in place is success), so a second run changes nothing. The
//! database and access point are found by their epoch names, so they are never created
//! twice.

use crate::cloud::names::{ResourceNames, epoch_of};
use crate::cloud::{
    AccessPointState, DbState, JobKind, JobState, Observed, ObservedDatabase, Step, WaitingOn,
};
use crate::model::{Backup, BackupStatus, DesiredState, Instance, RestoreSpec, RestoreStage};

use super::{
    Builder, Current, ServiceTarget, converge_service, db_instance_class, image, quiesce_service,
};

/// Where a restore stands after this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreProgress {
    pub request_id: String,
    pub backup_id: String,
    pub stage: RestoreStage,
    /// 0–100.
    pub progress: u8,
    /// The epoch that was in use when the restore began.
    pub previous_epoch: Option<String>,
    pub error: Option<String>,
}

pub(super) struct Ctx<'a> {
    pub inst: &'a Instance,
    pub names: &'a ResourceNames,
    pub obs: &'a Observed,
    pub current: &'a Current<'a>,
    pub wanted: &'a RestoreSpec,
    pub previous_epoch: Option<String>,
    pub backup: Option<&'a Backup>,
}

impl RestoreProgress {
    fn at(&mut self, stage: RestoreStage, progress: u8) {
        self.stage = stage;
        self.progress = progress;
    }
}

pub(super) fn plan(b: &mut Builder, c: &Ctx<'_>) -> RestoreProgress {
    let mut p = RestoreProgress {
        request_id: c.wanted.request_id.clone(),
        backup_id: c.wanted.backup_id.clone(),
        stage: RestoreStage::Stopping,
        progress: 10,
        previous_epoch: c.previous_epoch.clone(),
        error: None,
    };
    let Some((recovery_point, snapshot)) = usable(c.backup) else {
        fail(
            b,
            &mut p,
            format!(
                "backup {} is not a completed backup of this instance",
                c.wanted.backup_id
            ),
        );
        return p;
    };
    let epoch = epoch_of(&c.wanted.request_id);
    // Nothing may write to the data while it is restored. Once the service runs on the
    // restored data (this restore's access point), it is starting up again, not stopping.
    if !runs_on_restored_data(c, &epoch) && !quiesce_service(b, c.current.service) {
        return p;
    }
    let Some(db) = restore_data(b, c, &mut p, &epoch, recovery_point, snapshot) else {
        return p;
    };
    attach_and_start(b, c, &mut p, &epoch, db);
    p
}

fn runs_on_restored_data(c: &Ctx<'_>, epoch: &str) -> bool {
    let root = c.names.access_point_root(Some(epoch));
    c.obs.service.as_ref().is_some_and(|svc| {
        c.obs
            .access_points
            .iter()
            .any(|ap| ap.root_path == root && ap.id == svc.access_point_id)
    })
}

/// The recovery point and snapshot of a completed backup.
fn usable(backup: Option<&Backup>) -> Option<(&str, &str)> {
    let bk = backup.filter(|bk| bk.status == BackupStatus::Completed)?;
    Some((
        bk.efs_recovery_point_arn.as_deref()?,
        bk.rds_snapshot_id.as_deref()?,
    ))
}

fn fail(b: &mut Builder, p: &mut RestoreProgress, message: String) {
    p.at(RestoreStage::Failed, 100);
    // Look again soon: the next pass brings the instance back on its previous data.
    b.wait(WaitingOn::Tasks, "RestoreFailed", message.clone());
    p.error = Some(message);
}

/// Starts (or follows) the file and database restores; returns the restored database once
/// both are done.
fn restore_data<'a>(
    b: &mut Builder,
    c: &Ctx<'a>,
    p: &mut RestoreProgress,
    epoch: &str,
    recovery_point: &str,
    snapshot: &str,
) -> Option<&'a ObservedDatabase> {
    p.at(RestoreStage::Restoring, 20);
    let db_name = c.names.database(Some(epoch));
    let db = c.obs.databases.iter().find(|d| d.identifier == db_name);
    let db_ready = match db {
        None => {
            b.step(Step::RestoreDatabase {
                identifier: db_name,
                snapshot_id: snapshot.to_owned(),
                instance_class: db_instance_class(c.inst.spec.tier).into(),
            });
            b.wait(
                WaitingOn::Database,
                "RestoringDatabase",
                "restoring the database from the backup snapshot",
            );
            false
        }
        Some(d) if d.state == DbState::Available => true,
        Some(d) if d.state == DbState::Failed => {
            fail(b, p, format!("restored database {} failed", d.identifier));
            return None;
        }
        Some(d) => {
            b.wait(
                WaitingOn::Database,
                "RestoringDatabase",
                format!("restored database {} is {}", d.identifier, d.state.as_str()),
            );
            false
        }
    };
    let files_ready = restore_files(b, c, p, epoch, recovery_point)?;
    (db_ready && files_ready)
        .then_some(db?)
        .filter(|_| p.stage != RestoreStage::Failed)
}

/// Follows the AWS Backup restore job; `None` if it failed.
fn restore_files(
    b: &mut Builder,
    c: &Ctx<'_>,
    p: &mut RestoreProgress,
    epoch: &str,
    recovery_point: &str,
) -> Option<bool> {
    let job_id = c
        .inst
        .status
        .restore
        .as_ref()
        .filter(|s| s.request_id == c.wanted.request_id)
        .and_then(|s| s.efs_restore_job_id.as_deref());
    let Some(job_id) = job_id else {
        b.step(Step::StartRestoreJob {
            recovery_point_arn: recovery_point.to_owned(),
            target_root: c.names.access_point_root(Some(epoch)),
        });
        b.wait(
            WaitingOn::Snapshot,
            "RestoringFiles",
            "starting the AWS Backup restore job",
        );
        return Some(false);
    };
    let job = c
        .obs
        .jobs
        .iter()
        .find(|j| j.kind == JobKind::Restore && j.id == job_id);
    match job {
        Some(j) if j.state == JobState::Completed => {
            // AWS Backup is done; the files still have to be moved into place. Progress
            // stays where the finished job took it, never back to the stage's start.
            p.progress = files_progress(100);
            relocate_files(b, c, p, epoch, job_id)
        }
        Some(j) if matches!(j.state, JobState::Failed | JobState::Aborted) => {
            let why = j
                .message
                .clone()
                .unwrap_or_else(|| "no reason given".into());
            fail(
                b,
                p,
                format!("AWS Backup restore job {job_id} failed: {why}"),
            );
            None
        }
        other => {
            let done = other.map_or(0, |j| j.percent_done);
            p.progress = files_progress(done);
            b.wait(
                WaitingOn::Snapshot,
                "RestoringFiles",
                format!("AWS Backup restore job {job_id} is {done}% done"),
            );
            Some(false)
        }
    }
}

/// Follows (or starts) the task that moves the completed job's files into the epoch's
/// directory; `Some(true)` once they are there, `None` if it failed.
fn relocate_files(
    b: &mut Builder,
    c: &Ctx<'_>,
    p: &mut RestoreProgress,
    epoch: &str,
    job_id: &str,
) -> Option<bool> {
    let target_root = c.names.access_point_root(Some(epoch));
    // The access point is created only once the files are in place: from then on the
    // task (which ECS may since have forgotten) need not be looked at again.
    if c.obs
        .access_points
        .iter()
        .any(|ap| ap.root_path == target_root && ap.state != AccessPointState::Deleting)
    {
        return Some(true);
    }
    let recorded = c
        .inst
        .status
        .restore
        .as_ref()
        .filter(|s| s.request_id == c.wanted.request_id)
        .and_then(|s| s.efs_relocation_task_id.as_deref());
    let Some(id) = recorded else {
        start_relocation(b, job_id, target_root, None);
        return Some(false);
    };
    let task = c
        .obs
        .jobs
        .iter()
        .find(|j| j.kind == JobKind::Relocation && j.id == id);
    match task {
        Some(t) if t.state == JobState::Completed => Some(true),
        Some(t) if matches!(t.state, JobState::Failed | JobState::Aborted) => {
            let why = t
                .message
                .clone()
                .unwrap_or_else(|| "no reason given".into());
            fail(
                b,
                p,
                format!("moving the restored files into {target_root} failed (task {id}): {why}"),
            );
            None
        }
        Some(_) => {
            b.wait(
                WaitingOn::Tasks,
                "RelocatingFiles",
                format!("task {id} moves the restored files into {target_root}"),
            );
            Some(false)
        }
        // Started, and since forgotten by the cloud: run it again.
        None => {
            start_relocation(b, job_id, target_root, Some(id));
            Some(false)
        }
    }
}

fn start_relocation(b: &mut Builder, job_id: &str, target_root: String, replaces: Option<&str>) {
    let why = format!("starting a task to move the restored files into {target_root}");
    b.step(Step::RelocateRestoredFiles {
        restore_job_id: job_id.to_owned(),
        target_root,
        replaces: replaces.map(str::to_owned),
    });
    b.wait(WaitingOn::Tasks, "RelocatingFiles", why);
}

/// Restore progress while the files are restored: 20 % at the start of the stage, 70 %
/// when AWS Backup's job is done and while the files are moved (Attaching starts at 75 %).
fn files_progress(percent_done: u8) -> u8 {
    20 + percent_done.min(100) / 2
}

/// Puts an access point on the restored files and the service on the restored data.
fn attach_and_start(
    b: &mut Builder,
    c: &Ctx<'_>,
    p: &mut RestoreProgress,
    epoch: &str,
    db: &ObservedDatabase,
) {
    p.at(RestoreStage::Attaching, 75);
    let root = c.names.access_point_root(Some(epoch));
    let ap = c
        .obs
        .access_points
        .iter()
        .find(|ap| ap.root_path == root && ap.state != AccessPointState::Deleting);
    let Some(ap) = ap else {
        b.step(Step::CreateAccessPoint { root_path: root });
        b.wait(
            WaitingOn::AccessPoint,
            "AttachingRestoredFiles",
            "creating an access point on the restored files",
        );
        return;
    };
    if ap.state != AccessPointState::Available {
        b.wait(
            WaitingOn::AccessPoint,
            "AttachingRestoredFiles",
            format!("access point {} is being created", ap.id),
        );
        return;
    }
    p.at(RestoreStage::Starting, 90);
    let active = c.inst.spec.state == DesiredState::Active;
    let target = ServiceTarget {
        desired_count: if active {
            c.inst.spec.configuration.desired_count
        } else {
            0
        },
        image: image(&c.inst.spec),
        access_point: ap,
        database: db,
    };
    let done = if active || c.obs.service.is_some() {
        converge_service(b, c.inst, c.names, c.obs, &target)
            || (!active && service_points_at(c, &target))
    } else {
        true // suspended and never had a service: nothing to point at the restored data
    };
    if done {
        p.at(RestoreStage::Completed, 100);
    }
}

/// A suspended instance's service needs no healthy tasks, only the new configuration.
fn service_points_at(c: &Ctx<'_>, target: &ServiceTarget<'_>) -> bool {
    c.obs.service.as_ref().is_some_and(|s| {
        s.access_point_id == target.access_point.id
            && Some(s.db_endpoint.as_str()) == target.database.endpoint.as_deref()
            && s.running_count + s.pending_count == 0
    })
}
