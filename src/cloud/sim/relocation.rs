//! The relocation task: the one-off ECS task that moves what a completed restore job
//! recovered (in AWS Backup's recovery directory) into the restore's target directory, as
//! `wpfleet relocate-restore` does on AWS (`cloud::relocate`).
//!
//! It is a job record (`backup::JobRec`, type `Relocation`) whose outcome is decided when
//! it starts, from the file system as it is then: the target already exists → it succeeds
//! and moves nothing; else it takes the one recovery directory of the restore job's time
//! window holding the restored item (`relocate::pick`, the same choice the real task makes)
//! and, once completed, that directory's content is the target's and the recovery
//! directory is gone (derived in `efs::directory_at`); none or several → it fails with the
//! task's reason.
//!
//! Invariants:
//! * RunTask is idempotent by the client token (as ECS's `clientToken`): the same token
//!   returns the task it started;
//! * it starts only for a completed restore job of the same instance (the AWS driver reads
//!   the job first and refuses otherwise);
//! * a recovery directory already moved away is no candidate; two relocations of the same
//!   item (a re-run while the first still runs) both take it, and the first to complete
//!   moves it (the other finds it in place, as the real task does: rename is atomic).

use super::backup::{JobFailure, JobRec, JobType, split_recovery_path};
use super::calls::Api;
use super::clock::{Ctx, Millis, base, hex_id};
use super::inventory::{Inventory, RecordKey};
use crate::cloud::relocate::{self, Candidate, Window};
use crate::cloud::{CloudResult, JobState};
use crate::model::{InstanceKey, Timestamp};

/// Arguments of the relocation step.
pub(super) struct NewRelocation<'a> {
    pub restore_job_id: &'a str,
    pub target_root: &'a str,
    pub token: &'a str,
}

fn timestamp(t: Millis) -> Timestamp {
    Timestamp::from_timestamp_millis(t).unwrap_or_default()
}

impl Inventory {
    pub(super) fn start_relocation(
        &mut self,
        ctx: &Ctx,
        api: Api,
        key: &InstanceKey,
        new: NewRelocation<'_>,
    ) -> CloudResult<String> {
        if let Some(id) = self.job_by_token(JobType::Relocation, new.token) {
            return Ok(id.to_owned());
        }
        let job = self
            .jobs
            .get(new.restore_job_id)
            .filter(|j| j.kind == JobType::Restore && &j.key == key)
            .ok_or_else(|| {
                api.permanent(
                    "ResourceNotFoundException",
                    format!("restore job {} not found", new.restore_job_id),
                )
            })?;
        if job.state(ctx.now) != JobState::Completed {
            return Err(api.invalid(format!(
                "restore job {} is not COMPLETED",
                new.restore_job_id
            )));
        }
        let moves = self.what_to_move(job, new.target_root, ctx.now);
        let id = format!(
            "arn:aws:ecs:eu-west-1:123456789012:task/wpfleet/{}",
            hex_id(32)
        );
        let done_at = ctx.after(base::RELOCATION_TASK);
        let (source_path, data, failure) = match moves {
            Ok(Some(path)) => {
                let data = self.directory_at(&path, ctx.now).unwrap_or("").to_owned();
                (Some(path), data, None)
            }
            Ok(None) => (None, String::new(), None),
            Err(why) => (
                None,
                String::new(),
                Some(JobFailure {
                    at: done_at,
                    message: why,
                }),
            ),
        };
        let rec = JobRec {
            id: id.clone(),
            kind: JobType::Relocation,
            key: key.clone(),
            client_token: new.token.to_owned(),
            root_path: new.target_root.to_owned(),
            backup_id: None,
            recovery_point_arn: String::new(),
            data,
            requested_root: None,
            restore_job_id: Some(new.restore_job_id.to_owned()),
            source_path,
            started_at: ctx.now,
            done_at,
            failure,
        };
        self.insert_job(rec);
        self.touch(RecordKey::Job(id.clone()));
        Ok(id)
    }

    /// What the task will move into `target` at `t`: nothing if the target exists, else
    /// the one recovery directory path of `job`'s window holding its item; `Err` is the
    /// task's reason for refusing.
    fn what_to_move(
        &self,
        job: &JobRec,
        target: &str,
        t: Millis,
    ) -> Result<Option<String>, String> {
        if self.directory_at(target, t).is_some() {
            return Ok(None);
        }
        let Some((_, item)) = split_recovery_path(&job.root_path) else {
            // A restore recorded before recovery directories wrote its target directly.
            return Err(format!(
                "exit {}: {}",
                relocate::exit::NOTHING_TO_MOVE,
                relocate::exit_reason(i32::from(relocate::exit::NOTHING_TO_MOVE))
            ));
        };
        let mut candidates: Vec<Candidate> = self
            .writes_by_root
            .keys()
            .filter_map(|path| split_recovery_path(path).map(|(name, source)| (path, name, source)))
            .filter(|(path, _, source)| *source == item && self.directory_at(path, t).is_some())
            .map(|(_, name, _)| Candidate {
                name: name.to_owned(),
                time: relocate::name_time(name),
            })
            .collect();
        candidates.sort_by(|a, b| a.name.cmp(&b.name));
        candidates.dedup();
        let window = Window::around(timestamp(job.started_at), timestamp(job.done_at));
        match relocate::pick(item, &candidates, &window) {
            Ok(name) => Ok(Some(format!("/{name}{item}"))),
            Err(refusal) => {
                let code = relocate::RelocateError::from(refusal.clone()).exit_code();
                Err(format!("exit {code}: {refusal}"))
            }
        }
    }
}
