//! The resource model: `Instance` (identity, metadata, spec, status), its conditions,
//! validation, and the typed reasons a desired-state change can be refused.
//!
//! Nothing here does I/O. The JSON shapes of these types are the storage format; the API's
//! view of them lives in `api::views`.

mod backup;
mod condition;
mod event;
mod ids;
mod instance;
mod validate;

pub use backup::{BACKUP_ID_PATTERN, Backup, BackupStatus, backup_id_schema, is_backup_id};
pub use condition::{
    Condition, ConditionStatus, ConditionType, ConditionUpdate, find_condition, is_true,
    set_condition,
};
pub use event::{Event, EventReason, EventType, MAX_EVENT_MESSAGE, MAX_EVENTS, append_events};
pub use ids::{
    ID_PATTERN, IdError, InstanceId, InstanceKey, MAX_INSTANCE_ID_LEN, MAX_TENANT_ID_LEN, TenantId,
    id_schema,
};
pub use instance::{
    Configuration, DatabaseStatus, DesiredState, Instance, LastError, MAX_DESIRED_COUNT,
    MIN_DESIRED_COUNT, Metadata, Phase, ReconcileRequest, Replicas, ResourceRef, Resources,
    RestoreSpec, RestoreStage, RestoreStatus, ServiceStatus, Spec, Status, TaskStatus, Tier,
    Timestamp, desired_count_schema, now,
};
pub use validate::{
    FieldError, SUPPORTED_PHP_VERSIONS, VERSION_PATTERN, check_desired_count, contact_email_schema,
    organization_name_schema, validate_spec,
};

/// Why a desired-state change was refused. Each variant maps to one API error code; a
/// refused change writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// 400 VALIDATION_ERROR.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// 422 INVALID_STATUS_TRANSITION: the verb is not allowed in the current state.
    #[error("{0}")]
    InvalidTransition(String),
    /// 422 SCALE_LIMIT_EXCEEDED.
    #[error("{0}")]
    ScaleLimitExceeded(String),
}
