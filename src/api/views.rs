//! What the API returns: the stored records rendered for users, with HATEOAS `_links`, and
//! the bodies of the 202 answers. Every type here derives `ToSchema`: the OpenAPI document
//! describes exactly the structs the handlers serialize.
//!
//! Invariant: `_links` show only what is valid from the current state (no `resume` on an
//! active instance, nothing but `self`/`status` on a deleted one), so a client can follow
//! links without knowing the lifecycle rules.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::{
    BackupStatus, Condition, DesiredState, Instance, InstanceKey, Phase, Spec, Status, TaskStatus,
    TenantId,
};

/// A related resource or action. Without `method` it is a GET.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Link {
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<LinkMethod>, nullable = false)]
    pub method: Option<&'static str>,
}

/// The methods a link may name (documentation only: links carry them as strings).
#[derive(ToSchema)]
#[allow(dead_code)] // never built: only its schema is used
pub enum LinkMethod {
    POST,
    PUT,
    DELETE,
}

/// `_links`, by relation name.
pub type Links = BTreeMap<&'static str, Link>;

fn get(href: String) -> Link {
    Link { href, method: None }
}

fn verb_link(href: String, method: &'static str) -> Link {
    Link {
        href,
        method: Some(method),
    }
}

pub fn instance_href(key: &InstanceKey) -> String {
    format!(
        "/v1.0/tenants/{}/instances/{}",
        key.tenant_id, key.instance_id
    )
}

pub fn collection_href(tenant: &TenantId) -> String {
    format!("/v1.0/tenants/{tenant}/instances")
}

/// A strong ETag for a resourceVersion.
pub fn etag(resource_version: &str) -> String {
    format!("\"{resource_version}\"")
}

/// Links valid for the instance in its current state.
pub fn instance_links(inst: &Instance) -> Links {
    let key = inst.key();
    let base = instance_href(&key);
    let mut links = Links::new();
    links.insert("self", get(base.clone()));
    links.insert("status", get(format!("{base}/status")));
    links.insert("collection", get(collection_href(&key.tenant_id)));
    links.insert("backups", get(format!("{base}/backups")));
    links.insert("logs", get(format!("{base}/logs")));
    links.insert("events", get(format!("{base}/events")));
    if inst.is_deleted() {
        return links;
    }
    let post = |verb: &str| verb_link(format!("{base}/{verb}"), "POST");
    links.insert("update", verb_link(base.clone(), "PUT"));
    links.insert("delete", verb_link(base.clone(), "DELETE"));
    links.insert("reconcile", post("reconcile"));
    links.insert("scale", post("scale"));
    links.insert("backup", post("backup"));
    match inst.spec.state {
        DesiredState::Active => links.insert("suspend", post("suspend")),
        DesiredState::Suspended => links.insert("resume", post("resume")),
    };
    if crate::reconcile::plan::data_generation(inst).1.is_none() {
        links.insert("restore", post("restore"));
    }
    links
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataView<'a> {
    /// Rises on every change of spec or deletion request, never on status writes.
    pub generation: u64,
    /// Opaque; the `ETag`. Changes on every spec or metadata write, not on status writes.
    pub resource_version: &'a str,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set by DELETE; never unset.
    #[schema(required = true)]
    pub deletion_requested_at: Option<DateTime<Utc>>,
}

/// The instance resource: identity, metadata, desired `spec`, observed `status`, `_links`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView<'a> {
    pub tenant_id: &'a TenantId,
    #[schema(value_type = crate::model::InstanceId)]
    pub instance_id: &'a str,
    pub metadata: MetadataView<'a>,
    pub spec: &'a Spec,
    pub status: &'a Status,
    /// `self`, `status`, `collection`, `backups`, `logs`; unless deleted also `update`,
    /// `delete`, `reconcile`, `scale`, `backup`, `suspend` or `resume`, and `restore` when
    /// no restore is pending.
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

impl<'a> InstanceView<'a> {
    pub fn new(inst: &'a Instance) -> Self {
        Self {
            tenant_id: &inst.tenant_id,
            instance_id: inst.instance_id.as_str(),
            metadata: MetadataView {
                generation: inst.metadata.generation,
                resource_version: &inst.metadata.resource_version,
                created_at: inst.metadata.created_at,
                updated_at: inst.metadata.updated_at,
                deletion_requested_at: inst.metadata.deletion_requested_at,
            },
            spec: &inst.spec,
            status: &inst.status,
            links: instance_links(inst),
        }
    }
}

/// A page of instances, in key order.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListView<'a> {
    pub instances: Vec<InstanceView<'a>>,
    /// Pass as `nextToken` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_token: Option<String>,
    /// `self`, `next` when there is a next page, and `create` on a tenant's list.
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

/// `GET …/status`: the observed state, flattened the way the platform's status call was.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusView<'a> {
    pub tenant_id: &'a TenantId,
    #[schema(value_type = crate::model::InstanceId)]
    pub instance_id: &'a str,
    pub phase: Phase,
    pub desired_state: DesiredState,
    pub desired_count: u32,
    pub running_count: u32,
    pub pending_count: u32,
    /// ECS's primary deployment (`COMPLETED`, `IN_PROGRESS`, `FAILED`), or `NONE` before
    /// the service exists.
    pub deployment_status: &'a str,
    /// `HEALTHY`, `DEGRADED`, `UNHEALTHY` or `UNKNOWN` (also before the service exists).
    pub health_status: &'a str,
    /// The service's tasks as ECS listed them at most 5 s ago (one listing serves every
    /// request meanwhile); when that listing fails or takes over 2 s, as of the last pass
    /// that listed them (see `tasksObservedAt`).
    #[schema(value_type = Vec<TaskStatus>)]
    pub tasks: &'a [TaskStatus],
    /// When `tasks` were listed.
    #[schema(required = true)]
    pub tasks_observed_at: Option<DateTime<Utc>>,
    #[schema(value_type = Vec<Condition>)]
    pub conditions: &'a [Condition],
    pub observed_generation: u64,
    pub generation: u64,
    #[schema(required = true)]
    pub last_reconcile_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub last_error: Option<&'a crate::model::LastError>,
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

impl<'a> StatusView<'a> {
    pub fn new(inst: &'a Instance) -> Self {
        let s = &inst.status;
        let svc = s.resources.service.as_ref();
        Self {
            tenant_id: &inst.tenant_id,
            instance_id: inst.instance_id.as_str(),
            phase: s.phase,
            desired_state: inst.spec.state,
            desired_count: s.replicas.desired,
            running_count: s.replicas.running,
            pending_count: s.replicas.pending,
            deployment_status: svc.map_or("NONE", |v| v.deployment_status.as_str()),
            health_status: svc.map_or("UNKNOWN", |v| v.health_status.as_str()),
            tasks: svc.map_or(&[], |v| v.tasks.as_slice()),
            tasks_observed_at: svc.and_then(|v| v.tasks_observed_at),
            conditions: &s.conditions,
            observed_generation: s.observed_generation,
            generation: inst.metadata.generation,
            last_reconcile_at: s.last_reconcile_at,
            last_error: s.last_error.as_ref(),
            links: instance_links(inst),
        }
    }
}

/// A backup as the API shows it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupView<'a> {
    #[serde(flatten)]
    pub backup: &'a crate::model::Backup,
    /// `self`, `instance`, and `restore` once COMPLETED.
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

impl<'a> BackupView<'a> {
    pub fn new(backup: &'a crate::model::Backup) -> Self {
        let instance = instance_href(&backup.key());
        let mut links = Links::new();
        links.insert(
            "self",
            get(format!("{instance}/backups/{}", backup.backup_id)),
        );
        links.insert("instance", get(instance.clone()));
        if backup.status == crate::model::BackupStatus::Completed {
            links.insert("restore", verb_link(format!("{instance}/restore"), "POST"));
        }
        Self { backup, links }
    }
}

/// A page of an instance's backups, oldest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupListView<'a> {
    pub backups: Vec<BackupView<'a>>,
    /// Pass as `nextToken` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_token: Option<String>,
    /// `self`, `instance`, `create`, and `next` when there is a next page.
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

/// Where a deletion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeletionStatus {
    /// Teardown requested or under way.
    Deprovisioning,
    /// Everything is gone but the retained data.
    Deprovisioned,
}

/// 202 of `DELETE …/instances/{instanceId}`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteAccepted {
    pub status: DeletionStatus,
    /// Days the final snapshot and the record are kept.
    pub data_retention_days: u32,
    #[schema(required = true)]
    pub deletion_requested_at: Option<DateTime<Utc>>,
    /// The instance's links, now read-only (`self`, `status`, …).
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

impl DeleteAccepted {
    pub fn new(inst: &Instance, retention_days: u32) -> Self {
        let status = if inst.status.phase == Phase::Deprovisioned {
            DeletionStatus::Deprovisioned
        } else {
            DeletionStatus::Deprovisioning
        };
        Self {
            status,
            data_retention_days: retention_days,
            deletion_requested_at: inst.metadata.deletion_requested_at,
            links: instance_links(inst),
        }
    }
}

/// 202 of `POST …/instances/{instanceId}/reconcile`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileAccepted {
    /// Shows up in `status.lastHandledReconcileRequest` once a pass has handled it.
    pub request_id: String,
    /// `status` and `instance`.
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

impl ReconcileAccepted {
    pub fn new(key: &InstanceKey, request_id: String) -> Self {
        let base = instance_href(key);
        let mut links = Links::new();
        links.insert("status", get(format!("{base}/status")));
        links.insert("instance", get(base));
        Self { request_id, links }
    }
}

/// 202 of `POST /v1.0/reconcile` and `POST /v1.0/tenants/{tenantId}/reconcile`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileManyAccepted {
    pub request_id: String,
    /// How many instances were marked (deprovisioned ones are skipped).
    pub instances: usize,
}

/// 202 of `POST …/backup`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupAccepted {
    #[schema(schema_with = crate::model::backup_id_schema)]
    pub backup_id: String,
    pub status: BackupStatus,
    /// The backup's links (`self`, `instance`).
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

impl BackupAccepted {
    pub fn new(backup: &crate::model::Backup) -> Self {
        Self {
            backup_id: backup.backup_id.clone(),
            status: backup.status,
            links: BackupView::new(backup).links,
        }
    }
}

/// 202 of `POST …/restore`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreAccepted {
    /// Shows up in `status.restore.requestId`.
    pub request_id: String,
    #[schema(schema_with = crate::model::backup_id_schema)]
    pub backup_id: String,
    /// `instance`, `status` and `backup`.
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

impl RestoreAccepted {
    pub fn new(key: &InstanceKey, request_id: String, backup_id: String) -> Self {
        let base = instance_href(key);
        let mut links = Links::new();
        links.insert("status", get(format!("{base}/status")));
        links.insert("backup", get(format!("{base}/backups/{backup_id}")));
        links.insert("instance", get(base));
        Self {
            request_id,
            backup_id,
            links,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Configuration, Tier, now};

    fn inst() -> Instance {
        let spec = Spec {
            organization_name: "Acme".into(),
            contact_email: "ops@acme.example".into(),
            tier: Tier::Standard,
            state: DesiredState::Active,
            configuration: Configuration::default(),
            restore: None,
        };
        let mut i = Instance::new(InstanceKey::from_strs("t1", "blog"), spec, now());
        i.metadata.resource_version = "7".into();
        i.metadata.reconcile_request = Some(crate::model::ReconcileRequest {
            request_id: "secret-internal".into(),
            requested_at: now(),
        });
        i
    }

    #[test]
    fn the_view_has_exactly_the_documented_shape() {
        let v = serde_json::to_value(InstanceView::new(&inst())).unwrap();
        // Sorted: with serde_json's `preserve_order` (which a dependency may switch on) a
        // map keeps the struct's field order.
        let keys = |v: &serde_json::Value| {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let top = keys(&v);
        assert_eq!(
            top,
            [
                "_links",
                "instanceId",
                "metadata",
                "spec",
                "status",
                "tenantId"
            ]
        );
        let meta = keys(&v["metadata"]);
        assert_eq!(
            meta,
            [
                "createdAt",
                "deletionRequestedAt",
                "generation",
                "resourceVersion",
                "updatedAt"
            ]
        );
        let status = keys(&v["status"]);
        assert_eq!(
            status,
            [
                "conditions",
                "lastError",
                "lastHandledReconcileRequest",
                "lastReconcileAt",
                "observedGeneration",
                "phase",
                "replicas",
                "resources"
            ]
        );
        assert_eq!(v["status"]["phase"], "PENDING_PROVISIONING");
        assert_eq!(v["status"]["resources"], serde_json::json!({}));
        assert_eq!(
            v["_links"]["self"]["href"],
            "/v1.0/tenants/t1/instances/blog"
        );
        assert!(!v.to_string().contains("secret-internal"));
    }

    #[test]
    fn a_deleted_instance_links_only_to_reads() {
        let mut i = inst();
        i.metadata.deletion_requested_at = Some(now());
        let links = instance_links(&i);
        assert_eq!(
            links.keys().copied().collect::<Vec<_>>(),
            ["backups", "collection", "events", "logs", "self", "status"]
        );
    }

    #[test]
    fn links_follow_the_lifecycle() {
        let mut i = inst();
        let has = |i: &Instance, l: &str| instance_links(i).contains_key(l);
        assert!(has(&i, "suspend") && !has(&i, "resume") && has(&i, "restore"));
        i.spec.state = DesiredState::Suspended;
        assert!(!has(&i, "suspend") && has(&i, "resume"));
        i.spec.restore = Some(crate::model::RestoreSpec {
            backup_id: "bk-1".into(),
            request_id: "rs-1".into(),
        });
        assert!(
            !has(&i, "restore"),
            "no second restore while one is pending"
        );
    }
}
