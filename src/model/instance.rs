//! The `Instance` resource: identity, metadata, desired `spec`, observed `status`.
//!
//! These types are the storage format. The API renders them through `api::views`, which adds
//! `_links` and hides store-internal fields such as a pending reconcile request.
//!
//! Invariants (kept by the store, relied on everywhere):
//! * `metadata.generation` rises by one on every change of `spec` or of
//!   `metadata.deletionRequestedAt`, and never on a status write;
//! * `metadata.deletionRequestedAt`, once set, is never unset;
//! * `status` is written only by the reconciler.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::condition::Condition;
use super::ids::{InstanceId, InstanceKey, TenantId};
use super::validate;

/// A point in time, always UTC, always millisecond precision on the wire.
///
/// Fields of types the OpenAPI document describes spell it `DateTime<Utc>`: the `ToSchema`
/// derive recognizes chrono's type by name and cannot see through this alias.
pub type Timestamp = DateTime<Utc>;

/// Now, truncated to milliseconds so that what we store is what we print.
pub fn now() -> Timestamp {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub tenant_id: TenantId,
    pub instance_id: InstanceId,
    pub metadata: Metadata,
    pub spec: Spec,
    pub status: Status,
}

impl Instance {
    /// A new record as the store will first persist it (generation 1, empty status).
    pub fn new(key: InstanceKey, spec: Spec, at: Timestamp) -> Self {
        Self {
            tenant_id: key.tenant_id,
            instance_id: key.instance_id,
            metadata: Metadata {
                generation: 1,
                resource_version: String::new(),
                created_at: at,
                updated_at: at,
                deletion_requested_at: None,
                reconcile_request: None,
            },
            spec,
            status: Status::default(),
        }
    }

    pub fn key(&self) -> InstanceKey {
        InstanceKey::new(self.tenant_id.clone(), self.instance_id.clone())
    }

    pub fn is_deleted(&self) -> bool {
        self.metadata.deletion_requested_at.is_some()
    }

    /// The desired state has been reached for the current generation.
    pub fn is_converged(&self) -> bool {
        self.status.observed_generation >= self.metadata.generation
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub generation: u64,
    /// Opaque; changes on every write of spec or metadata (not on status writes, so a
    /// client's `If-Match` is not invalidated by the reconciler's bookkeeping).
    pub resource_version: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deletion_requested_at: Option<Timestamp>,
    /// Store-internal: a reconcile-now request not yet handled. Not part of the API view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_request: Option<ReconcileRequest>,
}

/// An operator's request to reconcile now; echoed in `status.lastHandledReconcileRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileRequest {
    pub request_id: String,
    pub requested_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Tier {
    Standard,
    Professional,
    Enterprise,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Standard, Tier::Professional, Tier::Enterprise];

    /// Most tasks an instance of this tier may run. The floor is [`MIN_DESIRED_COUNT`] for all.
    pub fn max_desired_count(self) -> u32 {
        match self {
            Tier::Standard => 4,
            Tier::Professional => 6,
            Tier::Enterprise => MAX_DESIRED_COUNT,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "STANDARD",
            Tier::Professional => "PROFESSIONAL",
            Tier::Enterprise => "ENTERPRISE",
        }
    }
}

/// Two tasks is the platform's floor: one task per availability zone.
pub const MIN_DESIRED_COUNT: u32 = 2;
pub const MAX_DESIRED_COUNT: u32 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredState {
    #[default]
    Active,
    Suspended,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Active => "ACTIVE",
            DesiredState::Suspended => "SUSPENDED",
        }
    }
}

/// The desired state of an instance. Unknown fields are rejected so a typo in a manifest is
/// an error, not a silently ignored setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    #[schema(schema_with = validate::organization_name_schema)]
    pub organization_name: String,
    #[schema(schema_with = validate::contact_email_schema)]
    pub contact_email: String,
    pub tier: Tier,
    /// Defaults to ACTIVE.
    #[serde(default)]
    pub state: DesiredState,
    #[serde(default)]
    pub configuration: Configuration,
    /// Set by `POST …/restore`; a restore from this backup is wanted. Server-managed: a PUT
    /// keeps the current value whatever it sends.
    #[serde(default)]
    pub restore: Option<RestoreSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Configuration {
    #[serde(default = "default_desired_count")]
    #[schema(schema_with = configured_desired_count_schema)]
    pub desired_count: u32,
    #[serde(default = "default_wordpress_version")]
    #[schema(schema_with = wordpress_version_schema)]
    pub wordpress_version: String,
    #[serde(default = "default_php_version")]
    #[schema(schema_with = php_version_schema)]
    pub php_version: String,
}

fn default_desired_count() -> u32 {
    MIN_DESIRED_COUNT
}
fn default_wordpress_version() -> String {
    "6.5".into()
}
fn default_php_version() -> String {
    "8.2".into()
}

// The schemas below are built from the constants and defaults validation uses, so the
// OpenAPI document states the real limits.

/// `desiredCount`: the platform range, and each tier's ceiling in the description.
pub fn desired_count_schema() -> utoipa::openapi::schema::Object {
    desired_count_builder().build()
}

fn configured_desired_count_schema() -> utoipa::openapi::schema::Object {
    desired_count_builder()
        .default(Some(default_desired_count().into()))
        .build()
}

fn desired_count_builder() -> utoipa::openapi::schema::ObjectBuilder {
    let tiers: Vec<String> = Tier::ALL
        .iter()
        .map(|t| format!("{} ≤ {}", t.as_str(), t.max_desired_count()))
        .collect();
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(MIN_DESIRED_COUNT))
        .maximum(Some(MAX_DESIRED_COUNT))
        .description(Some(format!(
            "ECS tasks to run. The tier caps it: {}.",
            tiers.join(", ")
        )))
}

fn wordpress_version_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(validate::VERSION_PATTERN))
        .default(Some(default_wordpress_version().into()))
        .build()
}

fn php_version_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(validate::SUPPORTED_PHP_VERSIONS))
        .default(Some(default_php_version().into()))
        .build()
}

impl Default for Configuration {
    fn default() -> Self {
        Self {
            desired_count: default_desired_count(),
            wordpress_version: default_wordpress_version(),
            php_version: default_php_version(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSpec {
    pub backup_id: String,
    pub request_id: String,
}

/// The platform's lifecycle names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    #[default]
    PendingProvisioning,
    Provisioning,
    Active,
    Scaling,
    Suspending,
    Suspended,
    Resuming,
    Restoring,
    Deprovisioning,
    Deprovisioned,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 11] = [
        Phase::PendingProvisioning,
        Phase::Provisioning,
        Phase::Active,
        Phase::Scaling,
        Phase::Suspending,
        Phase::Suspended,
        Phase::Resuming,
        Phase::Restoring,
        Phase::Deprovisioning,
        Phase::Deprovisioned,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PendingProvisioning => "PENDING_PROVISIONING",
            Phase::Provisioning => "PROVISIONING",
            Phase::Active => "ACTIVE",
            Phase::Scaling => "SCALING",
            Phase::Suspending => "SUSPENDING",
            Phase::Suspended => "SUSPENDED",
            Phase::Resuming => "RESUMING",
            Phase::Restoring => "RESTORING",
            Phase::Deprovisioning => "DEPROVISIONING",
            Phase::Deprovisioned => "DEPROVISIONED",
            Phase::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub phase: Phase,
    /// The newest generation whose desired state has been fully reached.
    pub observed_generation: u64,
    pub conditions: Vec<Condition>,
    pub replicas: Replicas,
    pub resources: Resources,
    #[schema(required = true)]
    pub last_reconcile_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub last_handled_reconcile_request: Option<String>,
    #[schema(required = true)]
    pub last_error: Option<LastError>,
    /// The latest restore: present from the first restore request on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// Progress of the restore that `spec.restore` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    pub request_id: String,
    pub backup_id: String,
    pub stage: RestoreStage,
    /// 0–100.
    pub progress: u8,
    pub started_at: DateTime<Utc>,
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Recorded as soon as the AWS Backup restore job starts (see `Backup`).
    #[schema(required = true)]
    pub efs_restore_job_id: Option<String>,
    /// The task moving the restored files from AWS Backup's recovery directory into the
    /// restore's directory, recorded as soon as it starts (like the restore job).
    #[serde(default)]
    #[schema(required = true)]
    pub efs_relocation_task_id: Option<String>,
    /// The data generation in use before this restore; in use again if it fails.
    #[schema(required = true)]
    pub previous_epoch: Option<String>,
    #[schema(required = true)]
    pub error: Option<String>,
}

impl RestoreStatus {
    pub fn is_done(&self) -> bool {
        self.completed_at.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestoreStage {
    /// Scaling the service to zero so nothing writes during the restore.
    Stopping,
    /// AWS Backup restores the files; RDS restores the snapshot into a new database.
    Restoring,
    /// Creating an access point on the restored files and pointing the service at the
    /// restored data.
    Attaching,
    /// Tasks start on the restored data.
    Starting,
    Completed,
    Failed,
}

/// ECS task counts as last seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    pub desired: u32,
    pub running: u32,
    pub pending: u32,
}

/// What the reconciler found or created, by id. Each entry is absent until seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_point: Option<ResourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<ResourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_snapshot: Option<ResourceRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    pub id: String,
    pub arn: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    pub id: String,
    pub arn: String,
    /// RDS's own status word (`available`, `stopped`, …).
    pub status: String,
    #[schema(required = true)]
    pub endpoint: Option<String>,
    pub instance_class: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub name: String,
    pub arn: String,
    pub image: String,
    /// `COMPLETED`, `IN_PROGRESS` or `FAILED`, as ECS reports its primary deployment.
    pub deployment_status: String,
    /// ECS's id of the primary deployment (a new one with every new task definition), when
    /// ECS reports its rollout state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// `HEALTHY`, `DEGRADED`, `UNHEALTHY` or `UNKNOWN`: from the tasks when they were
    /// listed, from ECS's completed rollout of a new deployment, or carried over while the
    /// service stays settled at the same deployment and count.
    pub health_status: String,
    /// Tasks as of the last pass that listed them: the reconciler lists tasks only when a
    /// settled service's health is not known otherwise (a scale-up, a replaced task), not
    /// while it changes, after a new deployment ECS reports complete, nor on a resync of a
    /// steady service (each listing costs a ListTasks per service).
    pub tasks: Vec<TaskStatus>,
    #[schema(required = true)]
    pub tasks_observed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub id: String,
    /// ECS `lastStatus`: `PROVISIONING`, `PENDING`, `RUNNING`, `DEACTIVATING`, `STOPPING`.
    pub status: String,
    /// ECS `healthStatus`: `HEALTHY`, `UNHEALTHY`, `UNKNOWN`.
    pub health: String,
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
}

/// The error of the last pass, if it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// A stable code, e.g. `ThrottlingException`, `ServiceUnavailable`, `InvalidParameter`.
    pub code: String,
    pub message: String,
    /// The step that failed, if a step did.
    #[schema(required = true)]
    pub step: Option<String>,
    /// Whether the reconciler expects a retry to succeed without a person acting.
    pub retryable: bool,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_and_rejects_unknown_fields() {
        let s: Spec = serde_json::from_str(
            r#"{"organizationName":"Acme","contactEmail":"a@b.co","tier":"STANDARD"}"#,
        )
        .unwrap();
        assert_eq!(s.state, DesiredState::Active);
        assert_eq!(s.configuration, Configuration::default());
        assert!(
            serde_json::from_str::<Spec>(
                r#"{"organizationName":"Acme","contactEmail":"a@b.co","tier":"STANDARD","x":1}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<Spec>(
                r#"{"organizationName":"Acme","contactEmail":"a@b.co","tier":"GOLD"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn timestamps_have_millisecond_precision_on_the_wire() {
        let t = now();
        let json = serde_json::to_string(&t).unwrap();
        // "2026-11-25T09:28:53.123Z" (or without the fraction on an exact second)
        assert!(json.ends_with("Z\""), "{json}");
        assert!(json.len() <= 26, "{json}");
    }

    #[test]
    fn phases_serialize_with_platform_names() {
        for p in Phase::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }
}
