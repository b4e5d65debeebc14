//! The operator's and tests' view of the simulated cloud: [`InventorySnapshot`], every
//! resource materialized at one instant, in AWS's own words (`RUNNING`, `available`, …).
//!
//! Data content is shown too (`data` of directories, the access points exposing them,
//! databases, snapshots and recovery points), so a test can follow what WordPress wrote
//! through a backup and a restore.
//!
//! Invariant: a snapshot never shows a resource that is gone (or, for directories and
//! recovery points, not yet there) at its instant, and lists are sorted by name or id so
//! that two snapshots of the same state compare equal.

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventorySnapshot {
    pub services: Vec<ServiceView>,
    pub access_points: Vec<AccessPointView>,
    pub databases: Vec<DatabaseView>,
    pub snapshots: Vec<SnapshotView>,
    pub log_groups: Vec<LogGroupView>,
    /// EFS directories that exist (an access point was created on them, a restore wrote
    /// them into its recovery directory, or a relocation moved them into place), by root
    /// path.
    #[serde(default)]
    pub directories: Vec<DirectoryView>,
    /// AWS Backup recovery points (of completed backup jobs), by ARN.
    #[serde(default)]
    pub recovery_points: Vec<RecoveryPointView>,
    #[serde(default)]
    pub backup_jobs: Vec<BackupJobView>,
    #[serde(default)]
    pub restore_jobs: Vec<RestoreJobView>,
    /// ECS tasks that moved (or move) restored files into place.
    #[serde(default)]
    pub relocation_tasks: Vec<RelocationTaskView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub name: String,
    pub tenant_id: String,
    pub instance_id: String,
    /// `ACTIVE` or `DRAINING`.
    pub status: String,
    pub desired_count: u32,
    pub running_count: u32,
    pub pending_count: u32,
    pub image: String,
    /// The access point and database endpoint of the primary deployment.
    pub access_point_id: String,
    pub db_endpoint: String,
    pub tasks: Vec<TaskView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    pub id: String,
    pub last_status: String,
    pub health: String,
    pub started_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPointView {
    pub id: String,
    pub arn: String,
    pub root_path: String,
    pub tenant_id: String,
    pub instance_id: String,
    /// `creating`, `available` or `deleting`.
    pub state: String,
    /// What its root directory holds now.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseView {
    pub identifier: String,
    pub tenant_id: String,
    pub instance_id: String,
    pub status: String,
    pub instance_class: String,
    pub endpoint: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    pub id: String,
    pub db_identifier: String,
    pub tenant_id: String,
    pub instance_id: String,
    /// `creating` or `available`.
    pub status: String,
    /// The DB's data when the snapshot was taken.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupView {
    pub name: String,
    pub tenant_id: String,
    pub instance_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryView {
    pub root_path: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPointView {
    pub arn: String,
    pub tenant_id: String,
    pub instance_id: String,
    /// The backup job that produced it.
    pub backup_job_id: String,
    /// The `backup_id` of the StartBackupJob step.
    pub backup_id: String,
    /// The directory it was taken of.
    pub source_root_path: String,
    pub created_at: Option<Timestamp>,
    /// The directory's data when the backup job started.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupJobView {
    pub id: String,
    pub tenant_id: String,
    pub instance_id: String,
    pub backup_id: String,
    pub root_path: String,
    /// `RUNNING`, `COMPLETED` or `FAILED`.
    pub state: String,
    pub percent_done: u8,
    /// Once completed.
    pub recovery_point_arn: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreJobView {
    pub id: String,
    pub tenant_id: String,
    pub instance_id: String,
    pub recovery_point_arn: String,
    /// The directory the restore is for (the step's target; AWS Backup does not write it).
    pub target_root: String,
    /// Where AWS Backup writes the item: its recovery directory and the item's full path.
    pub recovery_path: String,
    /// `RUNNING`, `COMPLETED` or `FAILED`.
    pub state: String,
    pub percent_done: u8,
    pub message: Option<String>,
}

/// The ECS task that moves a restore's recovered files into place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelocationTaskView {
    /// The task's ARN.
    pub id: String,
    pub tenant_id: String,
    pub instance_id: String,
    pub restore_job_id: String,
    pub target_root: String,
    /// The recovery directory path it moves into `target_root`; `None` if it moves
    /// nothing (the target was in place, or it fails).
    pub moves: Option<String>,
    /// `RUNNING`, `COMPLETED` or `FAILED`.
    pub state: String,
    pub message: Option<String>,
}
