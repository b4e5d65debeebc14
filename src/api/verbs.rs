//! The platform's imperative verbs as desired-state changes: scale, suspend, resume, the
//! status action, backup and restore. Each is one conditional store write (retried by the
//! store on a concurrent change, refused with 412 on a stale `If-Match`) and a trigger;
//! the reconciler does the cloud work.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{IfMatch, InstancePath, JsonBody};
use super::instances::resource;
use super::views::{BackupView, instance_href};
use crate::model::{
    Backup, BackupStatus, DesiredState, Instance, InstanceKey, Rejection, RestoreSpec,
    check_desired_count, is_backup_id, now,
};
use crate::reconcile::plan::data_generation;
use crate::store::{Change, Updated};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleRequest {
    pub desired_count: u32,
}

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

pub async fn suspend(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    IfMatch(expected): IfMatch,
) -> Result<Response, ApiError> {
    set_state(&app, &key, expected.as_deref(), DesiredState::Suspended).await
}

pub async fn resume(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    IfMatch(expected): IfMatch,
) -> Result<Response, ApiError> {
    set_state(&app, &key, expected.as_deref(), DesiredState::Active).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusAction {
    pub status: DesiredState,
}

/// `POST …/status {status}`: the platform's combined suspend / resume.
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

pub async fn backup(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
) -> Result<Response, ApiError> {
    // The store checks, in the same transaction, that the instance exists and is not
    // deleted.
    let created = app.store.create_backup(Backup::new(&key, now())).await?;
    app.trigger.now(key);
    let view = BackupView::new(&created);
    let body = json!({
        "backupId": created.backup_id,
        "status": created.status,
        "_links": view.links,
    });
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    pub backup_id: String,
}

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
    let base = instance_href(&key);
    let body = json!({
        "requestId": request_id,
        "backupId": backup.backup_id,
        "_links": {
            "instance": { "href": base },
            "status": { "href": format!("{base}/status") },
            "backup": { "href": format!("{base}/backups/{}", backup.backup_id) },
        },
    });
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
