//! The platform's imperative verbs as desired-state changes: scale, suspend, resume, the
//! status action, backup and restore. Each is one conditional store write (retried by the
//! store on a concurrent change, refused with 412 on a stale `If-Match`) and a trigger;
//! the reconciler does the cloud work.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{IfMatch, InstancePath, JsonBody};
use super::instances::resource;
use super::openapi::documented_errors;
use super::views::{BackupAccepted, InstanceView, RestoreAccepted};
use crate::model::{
    Backup, BackupStatus, DesiredState, Instance, InstanceKey, Rejection, RestoreSpec,
    check_desired_count, is_backup_id, now,
};
use crate::reconcile::plan::data_generation;
use crate::store::{Change, Updated};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleRequest {
    #[schema(schema_with = crate::model::desired_count_schema)]
    pub desired_count: u32,
}

documented_errors!(
    ScaleErrors = [
        ValidationError,
        PayloadTooLarge,
        UnsupportedMediaType,
        InstanceNotFound,
        PreconditionFailed,
        InvalidStatusTransition,
        ScaleLimitExceeded,
        ServiceUnavailable,
    ]
);

/// Scale an instance
///
/// Sets `spec.configuration.desiredCount`; the same count again changes nothing.
#[utoipa::path(
    post,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/scale",
    tag = "lifecycle",
    operation_id = "scaleInstance",
    params(InstancePath, IfMatch),
    request_body = ScaleRequest,
    responses(
        (status = 200, description = "The instance, with the new desired count.",
            body = InstanceView,
            headers(("ETag" = String, description = "The resource version, for `If-Match`."))),
        ScaleErrors,
    )
)]
pub async fn scale(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    IfMatch(expected): IfMatch,
    JsonBody(req): JsonBody<ScaleRequest>,
) -> Result<Response, ApiError> {
    let n = req.desired_count;
    let set = |inst: &mut Instance| {
        refuse_if_deleted(inst)?;
        check_desired_count(inst.spec.tier, n)
            .map_err(|m| Rejection::ScaleLimitExceeded(format!("desiredCount {n}: {m}")))?;
        if inst.spec.configuration.desired_count == n {
            return Ok(Change::Unchanged);
        }
        inst.spec.configuration.desired_count = n;
        Ok(Change::Changed)
    };
    let updated = change(&app, &key, expected.as_deref(), &set).await?;
    Ok(resource(StatusCode::OK, &updated.instance, false))
}

documented_errors!(
    StateErrors = [
        ValidationError,
        InstanceNotFound,
        PreconditionFailed,
        InvalidStatusTransition,
        ServiceUnavailable,
    ]
);

/// Suspend an instance
///
/// Desired state SUSPENDED: the service scales to zero and the database stops; data is
/// kept. Only from ACTIVE (else 422 INVALID_STATUS_TRANSITION).
#[utoipa::path(
    post,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/suspend",
    tag = "lifecycle",
    operation_id = "suspendInstance",
    params(InstancePath, IfMatch),
    responses(
        (status = 200, description = "The instance, now desired SUSPENDED.", body = InstanceView,
            headers(("ETag" = String, description = "The resource version, for `If-Match`."))),
        StateErrors,
    )
)]
pub async fn suspend(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    IfMatch(expected): IfMatch,
) -> Result<Response, ApiError> {
    set_state(&app, &key, expected.as_deref(), DesiredState::Suspended).await
}

/// Resume an instance
///
/// Desired state ACTIVE again: the database starts, then the service. Only from SUSPENDED
/// (else 422 INVALID_STATUS_TRANSITION).
#[utoipa::path(
    post,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/resume",
    tag = "lifecycle",
    operation_id = "resumeInstance",
    params(InstancePath, IfMatch),
    responses(
        (status = 200, description = "The instance, now desired ACTIVE.", body = InstanceView,
            headers(("ETag" = String, description = "The resource version, for `If-Match`."))),
        StateErrors,
    )
)]
pub async fn resume(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    IfMatch(expected): IfMatch,
) -> Result<Response, ApiError> {
    set_state(&app, &key, expected.as_deref(), DesiredState::Active).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusAction {
    pub status: DesiredState,
}

documented_errors!(
    StatusActionErrors = [
        ValidationError,
        PayloadTooLarge,
        UnsupportedMediaType,
        InstanceNotFound,
        PreconditionFailed,
        InvalidStatusTransition,
        ServiceUnavailable,
    ]
);

/// Suspend or resume an instance
///
/// `POST …/status {status}`: the platform's combined suspend / resume. SUSPENDED only from
/// ACTIVE and ACTIVE only from SUSPENDED (else 422 INVALID_STATUS_TRANSITION).
#[utoipa::path(
    post,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/status",
    tag = "lifecycle",
    operation_id = "setInstanceState",
    params(InstancePath, IfMatch),
    request_body = StatusAction,
    responses(
        (status = 200, description = "The instance, with the new desired state.",
            body = InstanceView,
            headers(("ETag" = String, description = "The resource version, for `If-Match`."))),
        StatusActionErrors,
    )
)]
pub async fn status_action(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    IfMatch(expected): IfMatch,
    JsonBody(req): JsonBody<StatusAction>,
) -> Result<Response, ApiError> {
    set_state(&app, &key, expected.as_deref(), req.status).await
}

/// Suspend needs an ACTIVE spec, resume a SUSPENDED one; anything else is a 422.
async fn set_state(
    app: &AppState,
    key: &InstanceKey,
    expected: Option<&str>,
    to: DesiredState,
) -> Result<Response, ApiError> {
    let set = |inst: &mut Instance| {
        refuse_if_deleted(inst)?;
        if inst.spec.state == to {
            let verb = match to {
                DesiredState::Suspended => "suspend",
                DesiredState::Active => "resume",
            };
            return Err(Rejection::InvalidTransition(format!(
                "cannot {verb}: the instance is already {}",
                to.as_str()
            )));
        }
        inst.spec.state = to;
        Ok(Change::Changed)
    };
    let updated = change(app, key, expected, &set).await?;
    Ok(resource(StatusCode::OK, &updated.instance, false))
}

fn refuse_if_deleted(inst: &Instance) -> Result<(), Rejection> {
    if inst.is_deleted() {
        Err(Rejection::InvalidTransition(
            "the instance is deleted; it can no longer change".into(),
        ))
    } else {
        Ok(())
    }
}

/// One conditional write, then a trigger if it changed anything.
async fn change(
    app: &AppState,
    key: &InstanceKey,
    expected: Option<&str>,
    mutate: crate::store::Mutation<'_>,
) -> Result<Updated, ApiError> {
    let updated = app.store.update(key, expected, mutate).await?;
    if updated.change == Change::Changed {
        app.trigger.now(key.clone());
    }
    Ok(updated)
}

documented_errors!(
    BackupErrors = [
        ValidationError,
        InstanceNotFound,
        Conflict,
        InvalidStatusTransition,
        ServiceUnavailable,
    ]
);

/// Back up an instance
///
/// Records a PENDING backup; the reconciler runs an AWS Backup job for the files and an RDS
/// snapshot, and the backup becomes COMPLETED (or FAILED). Not on a deleted instance.
#[utoipa::path(
    post,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/backup",
    tag = "backups",
    operation_id = "createBackup",
    params(InstancePath),
    responses(
        (status = 202, description = "Recorded; the reconciler takes the backup.",
            body = BackupAccepted),
        BackupErrors,
    )
)]
pub async fn backup(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
) -> Result<Response, ApiError> {
    // The store checks, in the same transaction, that the instance exists and is not
    // deleted.
    let created = app.store.create_backup(Backup::new(&key, now())).await?;
    app.trigger.now(key);
    let body = BackupAccepted::new(&created);
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    /// A COMPLETED backup of this instance.
    #[schema(schema_with = crate::model::backup_id_schema)]
    pub backup_id: String,
}

documented_errors!(
    RestoreErrors = [
        ValidationError,
        PayloadTooLarge,
        UnsupportedMediaType,
        InstanceNotFound,
        BackupNotFound,
        PreconditionFailed,
        InvalidStatusTransition,
        BackupNotReady,
        ServiceUnavailable,
    ]
);

/// Restore an instance from a backup
///
/// Stops the service, restores the files and the database into new resources, points the
/// service at them and starts it again; `status.restore` shows the stages. One restore at
/// a time (else 422 INVALID_STATUS_TRANSITION); only a COMPLETED backup (else 422
/// BACKUP_NOT_READY).
#[utoipa::path(
    post,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/restore",
    tag = "backups",
    operation_id = "restoreInstance",
    params(InstancePath, IfMatch),
    request_body = RestoreRequest,
    responses(
        (status = 202, description = "Recorded; the reconciler restores.",
            body = RestoreAccepted),
        RestoreErrors,
    )
)]
pub async fn restore(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    IfMatch(expected): IfMatch,
    JsonBody(req): JsonBody<RestoreRequest>,
) -> Result<Response, ApiError> {
    let backup = find_backup(&app, &key, &req.backup_id).await?;
    if backup.status != BackupStatus::Completed {
        return Err(ApiError::BackupNotReady(format!(
            "backup {} is {}; only a COMPLETED backup can be restored",
            backup.backup_id,
            backup.status.as_str()
        )));
    }
    let request_id = format!("rs-{}", uuid::Uuid::new_v4().simple());
    let wanted = RestoreSpec {
        backup_id: backup.backup_id.clone(),
        request_id: request_id.clone(),
    };
    let set = |inst: &mut Instance| {
        refuse_if_deleted(inst)?;
        if let Some(pending) = data_generation(inst).1 {
            return Err(Rejection::InvalidTransition(format!(
                "restore {} from backup {} is still in progress",
                pending.request_id, pending.backup_id
            )));
        }
        inst.spec.restore = Some(wanted.clone());
        Ok(Change::Changed)
    };
    change(&app, &key, expected.as_deref(), &set).await?;
    let body = RestoreAccepted::new(&key, request_id, backup.backup_id);
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// A backup of this instance; anything else (unknown, malformed, another instance's) is
/// BACKUP_NOT_FOUND.
pub async fn find_backup(
    app: &AppState,
    key: &InstanceKey,
    backup_id: &str,
) -> Result<Backup, ApiError> {
    let not_found = || ApiError::BackupNotFound(key.clone(), super::extract::truncate(backup_id));
    if !is_backup_id(backup_id) {
        // Still 404 when the instance is missing: say which is missing.
        super::instances::load(app, key).await?;
        return Err(not_found());
    }
    match app.store.get_backup(key, backup_id).await? {
        Some(b) => Ok(b),
        None => {
            super::instances::load(app, key).await?;
            Err(not_found())
        }
    }
}
