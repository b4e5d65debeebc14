//! Backups: a child record of an instance, requested by `POST …/backup` and carried out by
//! the reconciler (an AWS Backup job for the EFS data plus an RDS snapshot).
//!
//! Invariants: a backup moves PENDING → RUNNING → COMPLETED | FAILED and never back; a
//! COMPLETED backup has both `efsRecoveryPointArn` and `rdsSnapshotId`; backup ids sort by
//! creation time, so listing in id order lists oldest first.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ids::{InstanceId, InstanceKey, TenantId};
use super::instance::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackupStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

impl BackupStatus {
    pub fn is_final(self) -> bool {
        matches!(self, BackupStatus::Completed | BackupStatus::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Pending => "PENDING",
            BackupStatus::Running => "RUNNING",
            BackupStatus::Completed => "COMPLETED",
            BackupStatus::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    pub tenant_id: TenantId,
    pub instance_id: InstanceId,
    #[schema(schema_with = backup_id_schema)]
    pub backup_id: String,
    pub status: BackupStatus,
    pub requested_at: DateTime<Utc>,
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Recorded as soon as the job starts, so a restarted controller polls it instead of
    /// starting another.
    #[schema(required = true)]
    pub efs_backup_job_id: Option<String>,
    #[schema(required = true)]
    pub efs_recovery_point_arn: Option<String>,
    #[schema(required = true)]
    pub rds_snapshot_id: Option<String>,
    #[schema(required = true)]
    pub error: Option<String>,
}

impl Backup {
    /// A new PENDING backup with a fresh, time-ordered id.
    pub fn new(key: &InstanceKey, at: Timestamp) -> Self {
        Self {
            tenant_id: key.tenant_id.clone(),
            instance_id: key.instance_id.clone(),
            backup_id: new_backup_id(at),
            status: BackupStatus::Pending,
            requested_at: at,
            started_at: None,
            completed_at: None,
            efs_backup_job_id: None,
            efs_recovery_point_arn: None,
            rds_snapshot_id: None,
            error: None,
        }
    }

    pub fn key(&self) -> InstanceKey {
        InstanceKey::new(self.tenant_id.clone(), self.instance_id.clone())
    }
}

/// `bk-` + 12 hex digits of milliseconds since the epoch + 8 random hex digits: unique,
/// sortable by time, and safe inside RDS snapshot identifiers.
fn new_backup_id(at: Timestamp) -> String {
    let millis = at.timestamp_millis().max(0) as u64;
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("bk-{millis:012x}{}", &random[..8])
}

/// What [`is_backup_id`] accepts, as the OpenAPI document publishes it.
pub const BACKUP_ID_PATTERN: &str = "^bk-[0-9a-f]{20}$";

/// The schema of a backup id (see [`BACKUP_ID_PATTERN`]).
pub fn backup_id_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(BACKUP_ID_PATTERN))
        .description(Some(
            "`bk-`, 12 hex digits of the creation time in ms, 8 random hex digits; ids sort \
             by creation time",
        ))
        .build()
}

/// Backup ids accepted in paths: what `new_backup_id` makes.
pub fn is_backup_id(s: &str) -> bool {
    s.len() == 23
        && s.starts_with("bk-")
        && s[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now;

    #[test]
    fn ids_are_valid_unique_and_time_ordered() {
        let key = InstanceKey::from_strs("t1", "blog");
        let a = Backup::new(&key, now());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = Backup::new(&key, now());
        assert!(is_backup_id(&a.backup_id), "{}", a.backup_id);
        assert!(a.backup_id < b.backup_id);
        assert!(!is_backup_id("bk-../../etc"));
        assert!(!is_backup_id("BK-0000000000000000000"));
        // BACKUP_ID_PATTERN read literally.
        assert_eq!(BACKUP_ID_PATTERN, "^bk-[0-9a-f]{20}$");
        assert_eq!(a.backup_id.len(), "bk-".len() + 20);
    }

    #[test]
    fn only_completed_and_failed_are_final() {
        assert!(!BackupStatus::Pending.is_final());
        assert!(!BackupStatus::Running.is_final());
        assert!(BackupStatus::Completed.is_final());
        assert!(BackupStatus::Failed.is_final());
    }
}
