//! The operator's and tests' view of the simulated cloud: [`InventorySnapshot`], every
//! resource materialized at one instant, in AWS's own words (`RUNNING`, `available`, …).
//!
//! Invariant: a snapshot never shows a resource that is gone at its instant, and lists are
//! sorted by name or id so that two snapshots of the same state compare equal.

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    pub id: String,
    pub db_identifier: String,
    /// `creating` or `available`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupView {
    pub name: String,
    pub tenant_id: String,
    pub instance_id: String,
}
