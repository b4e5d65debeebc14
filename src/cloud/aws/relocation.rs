//! The relocation task: after an AWS Backup item-level restore completed, a one-off
//! Fargate task on the configured cluster mounts the file system ROOT (no access point;
//! IAM authorization, transit encryption) and runs `wpfleet relocate-restore`
//! (`cloud::relocate`), which moves the restored item out of AWS Backup's recovery
//! directory `/aws-backup-restore_<datetime>` into the restore's target directory. AWS
//! Backup cannot restore into a directory of our choosing, and no API names the recovery
//! directory a job made (docs/AWS.md, "Restore"); the task finds it by the item's path and
//! the job's time window (CreationDate to CompletionDate, from DescribeRestoreJob).
//!
//! The step: DescribeRestoreJob (it must be COMPLETED; its times bound the window) →
//! ListTags of its recovery point (the item: `wpfleet:root-path`) → the instance's
//! relocation task definition (family `{service}-relocate`, reused while it matches) →
//! RunTask. Following it: DescribeTasks of the recorded task ARNs (100 per call).
//!
//! Invariants:
//! * RunTask carries ECS's `clientToken`: the step's token, derived from the restore
//!   request (for a re-run of a task ECS forgot, `ClientToken::rerun`): a retry after a
//!   lost answer returns the task already started (for 24 h), never a second one; its
//!   parameters derive only from the job and the settings, so a retry sends the same ones
//!   (ECS refuses a reused token with other parameters);
//! * the task itself is idempotent (an existing target is success), so even a second run
//!   moves nothing twice;
//! * a stopped task counts as completed only with exit status 0 from its container; one
//!   ECS no longer describes (MISSING: stopped tasks are kept about an hour) is left out,
//!   like an unknown AWS Backup job.

use aws_sdk_ecs::types::{
    ContainerDefinition, ContainerOverride, EfsAuthorizationConfig, EfsAuthorizationConfigIam,
    EfsTransitEncryption, EfsVolumeConfiguration, LaunchType, LogConfiguration, LogDriver,
    MountPoint, Tag, Task, TaskDefinition, TaskOverride, Volume,
};
use chrono::SecondsFormat;

use super::AwsCloud;
use super::call::{Api, AwsResult};
use super::ecs::{FargateTask, build_error, ecs_tags, in_progress};
use super::errors::AwsFailure;
use crate::cloud::names::ResourceNames;
use crate::cloud::relocate::{Window, exit_reason};
use crate::cloud::{CloudError, JobKind, JobState, ObservedJob, StepOutcome};
use crate::model::{InstanceKey, Timestamp};

const DESCRIBE_RESTORE_JOB: Api = Api::new("backup", "DescribeRestoreJob");
const DESCRIBE_TASK_DEFINITION: Api = Api::new("ecs", "DescribeTaskDefinition");
const REGISTER_TASK_DEFINITION: Api = Api::new("ecs", "RegisterTaskDefinition");
const RUN_TASK: Api = Api::new("ecs", "RunTask");
/// The container of the relocation task definition.
pub const CONTAINER: &str = "relocate";
const VOLUME: &str = "efs-root";
/// Where the task mounts the file system root.
pub const MOUNT_PATH: &str = "/mnt/efs";
/// `startedBy` of every relocation task (ListTasks can filter by it).
pub const STARTED_BY: &str = "wpfleet-relocate";
/// Tag naming the restore job whose files a task moves.
pub const RESTORE_JOB_TAG: &str = "wpfleet:restore-job";
/// Fargate's smallest task: a rename needs no more.
const TASK_CPU: &str = "256";
const TASK_MEMORY: &str = "512";

/// The task definition family of an instance's relocation task.
pub fn family(key: &InstanceKey) -> String {
    family_of_service(&ResourceNames::for_key(key).service)
}

/// The relocation task definition family that goes with the service `service`.
pub fn family_of_service(service: &str) -> String {
    format!("{service}-relocate")
}

/// What a relocation task definition must say to be reused.
#[derive(Debug, PartialEq, Eq)]
struct Facts<'a> {
    image: Option<&'a str>,
    task_role_arn: Option<&'a str>,
    execution_role_arn: Option<&'a str>,
    file_system_id: Option<&'a str>,
    log_group: Option<&'a str>,
}

fn facts_of(td: &TaskDefinition) -> Facts<'_> {
    let container = td
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some(CONTAINER));
    Facts {
        image: container.and_then(|c| c.image()),
        task_role_arn: td.task_role_arn(),
        execution_role_arn: td.execution_role_arn(),
        file_system_id: td
            .volumes()
            .iter()
            .find(|v| v.name() == Some(VOLUME))
            .and_then(|v| v.efs_volume_configuration())
            .map(|efs| efs.file_system_id()),
        log_group: container
            .and_then(|c| c.log_configuration())
            .and_then(|l| l.options())
            .and_then(|o| o.get("awslogs-group"))
            .map(String::as_str),
    }
}

fn timestamp(t: Option<&aws_sdk_backup::primitives::DateTime>) -> Option<Timestamp> {
    let t = t?;
    Timestamp::from_timestamp(t.secs(), t.subsec_nanos())
}

fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A restore job, as the relocation needs it.
struct RestoreJob {
    recovery_point_arn: String,
    window: Window,
}

impl AwsCloud {
    /// Starts the task that moves what restore job `restore_job_id` recovered into
    /// `target_root` (see the module docs); returns the task's ARN.
    pub(super) async fn relocate_restored_files(
        &self,
        key: &InstanceKey,
        restore_job_id: &str,
        target_root: &str,
        token: &str,
    ) -> AwsResult<StepOutcome> {
        let job = self.completed_restore_job(restore_job_id).await?;
        let source = self
            .recovery_point_root(key, &job.recovery_point_arn)
            .await?;
        let task_definition = self.relocation_task_definition(key).await?;
        let command = vec![
            "relocate-restore".to_owned(),
            "--root".to_owned(),
            MOUNT_PATH.to_owned(),
            "--source".to_owned(),
            source,
            "--target".to_owned(),
            target_root.to_owned(),
            "--not-before".to_owned(),
            rfc3339(job.window.not_before),
            "--not-after".to_owned(),
            rfc3339(job.window.not_after),
        ];
        let network = self.task_network(RUN_TASK)?;
        let mut tags = ecs_tags(key);
        tags.push(
            Tag::builder()
                .key(RESTORE_JOB_TAG)
                .value(restore_job_id)
                .build(),
        );
        let request = self
            .clients
            .ecs
            .run_task()
            .cluster(&self.settings.cluster)
            .task_definition(task_definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .network_configuration(network)
            .overrides(
                TaskOverride::builder()
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(CONTAINER)
                            .set_command(Some(command))
                            .build(),
                    )
                    .build(),
            )
            .client_token(token)
            .started_by(STARTED_BY)
            .enable_ecs_managed_tags(true)
            .set_tags(Some(tags))
            .send();
        let out = self.caller.send(RUN_TASK, request).await?;
        if let Some(arn) = out.tasks().first().and_then(Task::task_arn) {
            return Ok(StepOutcome::Started {
                job_id: arn.to_owned(),
            });
        }
        // No task: ECS says why (no capacity, …) in `failures`; try again later.
        let why = out
            .failures()
            .iter()
            .map(|f| format!("{} {}", f.reason().unwrap_or("?"), f.detail().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("; ");
        Err(in_progress(
            RUN_TASK,
            format!("RunTask started no task: {why}"),
        ))
    }

    /// The restore job, which must have completed: only then is its recovery directory
    /// complete, and its times bound the directory's.
    async fn completed_restore_job(&self, id: &str) -> AwsResult<RestoreJob> {
        let request = self
            .clients
            .backup
            .describe_restore_job()
            .restore_job_id(id)
            .send();
        let out = self.caller.send(DESCRIBE_RESTORE_JOB, request).await?;
        if out.status().map(|s| s.as_str()) != Some("COMPLETED") {
            return Err(in_progress(
                RUN_TASK,
                format!("restore job {id} has not completed"),
            ));
        }
        let (Some(created), Some(rp)) = (
            timestamp(out.creation_date()),
            out.recovery_point_arn().map(str::to_owned),
        ) else {
            return Err(AwsFailure {
                code: Some("IncompleteRestoreJob".into()),
                error: CloudError::Permanent {
                    service: DESCRIBE_RESTORE_JOB.service,
                    operation: RUN_TASK.operation,
                    code: "IncompleteRestoreJob".into(),
                    message: format!("restore job {id} names no creation date or recovery point"),
                },
            });
        };
        let completed = timestamp(out.completion_date()).unwrap_or(created);
        Ok(RestoreJob {
            recovery_point_arn: rp,
            window: Window::around(created, completed),
        })
    }

    /// The ARN of the instance's relocation task definition, registering a revision if
    /// the latest one does not match the settings.
    async fn relocation_task_definition(&self, key: &InstanceKey) -> AwsResult<String> {
        let family = family(key);
        let log_group = ResourceNames::for_key(key).log_group;
        let wanted = Facts {
            image: Some(&self.settings.relocation_image),
            task_role_arn: Some(&self.settings.relocation_task_role_arn),
            execution_role_arn: Some(&self.settings.task_execution_role_arn),
            file_system_id: Some(&self.settings.file_system_id),
            log_group: Some(&log_group),
        };
        let request = self
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(&family)
            .send();
        match self.caller.send(DESCRIBE_TASK_DEFINITION, request).await {
            Ok(out) => {
                if let Some(td) = &out.task_definition
                    && td.status().map(|s| s.as_str()) != Some("INACTIVE")
                    && facts_of(td) == wanted
                    && let Some(arn) = td.task_definition_arn()
                {
                    return Ok(arn.to_owned());
                }
            }
            // No revision yet: ECS answers ClientException.
            Err(f) if f.is(&["ClientException"]) => {}
            Err(f) => return Err(f),
        }
        self.register_relocation_task_definition(key, &family, &log_group)
            .await
    }

    async fn register_relocation_task_definition(
        &self,
        key: &InstanceKey,
        family: &str,
        log_group: &str,
    ) -> AwsResult<String> {
        let api = REGISTER_TASK_DEFINITION;
        let volume = Volume::builder()
            .name(VOLUME)
            .efs_volume_configuration(
                EfsVolumeConfiguration::builder()
                    .file_system_id(&self.settings.file_system_id)
                    .root_directory("/")
                    .transit_encryption(EfsTransitEncryption::Enabled)
                    .authorization_config(
                        EfsAuthorizationConfig::builder()
                            .iam(EfsAuthorizationConfigIam::Enabled)
                            .build(),
                    )
                    .build()
                    .map_err(|e| build_error(api, e))?,
            )
            .build();
        let log = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", log_group)
            .options("awslogs-region", &self.account.region)
            .options("awslogs-stream-prefix", CONTAINER)
            .build()
            .map_err(|e| build_error(api, e))?;
        let container = ContainerDefinition::builder()
            .name(CONTAINER)
            .image(&self.settings.relocation_image)
            .essential(true)
            // Root, to rename directories AWS Backup and WordPress own; EFS honours it
            // only for a role with ClientRootAccess (the relocation role has it).
            .user("0")
            .mount_points(
                MountPoint::builder()
                    .source_volume(VOLUME)
                    .container_path(MOUNT_PATH)
                    .read_only(false)
                    .build(),
            )
            .log_configuration(log)
            .build();
        let task = FargateTask {
            cpu: TASK_CPU,
            memory: TASK_MEMORY,
            task_role_arn: &self.settings.relocation_task_role_arn,
            container,
            volume,
        };
        let td = self
            .register_fargate_task_definition(key, family, task)
            .await?;
        td.task_definition_arn()
            .map(str::to_owned)
            .ok_or_else(|| in_progress(api, "RegisterTaskDefinition returned no ARN".into()))
    }

    /// DescribeTasks of relocation tasks by ARN; tasks ECS no longer knows are left out.
    pub(super) async fn describe_relocations(
        &self,
        arns: &[String],
    ) -> AwsResult<Vec<ObservedJob>> {
        let tasks = self.describe_task_arns(arns).await?;
        Ok(tasks.iter().filter_map(observed_relocation).collect())
    }
}

/// A relocation task as a job: running until it stopped; completed only if its container
/// exited with 0.
fn observed_relocation(task: &Task) -> Option<ObservedJob> {
    let id = task.task_arn()?.to_owned();
    let status = task.last_status().unwrap_or("PROVISIONING");
    let job = |state, percent_done, message| ObservedJob {
        kind: JobKind::Relocation,
        id: id.clone(),
        state,
        percent_done,
        recovery_point_arn: None,
        message,
    };
    if status != "STOPPED" {
        let percent = match status {
            "RUNNING" => 50,
            "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => 90,
            _ => 10,
        };
        return Some(job(JobState::Running, percent, None));
    }
    let container = task
        .containers()
        .iter()
        .find(|c| c.name() == Some(CONTAINER));
    Some(match container.and_then(|c| c.exit_code()) {
        Some(0) => job(JobState::Completed, 100, None),
        Some(code) => job(
            JobState::Failed,
            100,
            Some(format!(
                "the relocation task exited with {code}: {} (its log stream: {CONTAINER}/{CONTAINER}/{})",
                exit_reason(code),
                id.rsplit('/').next().unwrap_or_default()
            )),
        ),
        // It never ran (image pull, EFS mount, capacity): ECS says why.
        None => job(
            JobState::Failed,
            100,
            Some(format!(
                "the relocation task stopped without running: {}{}",
                task.stop_code()
                    .map(|c| format!("{}: ", c.as_str()))
                    .unwrap_or_default(),
                task.stopped_reason()
                    .or_else(|| container.and_then(|c| c.reason()))
                    .unwrap_or("no reason given")
            )),
        ),
    })
}
