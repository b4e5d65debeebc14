//! Reading backups: `GET …/backups` (paged) and `GET …/backups/{backupId}`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};

use super::AppState;
use super::error::ApiError;
use super::extract::{
    ApiQuery, InstancePath, PageLimit, limit_param, next_token_param, parse_limit,
};
use super::instances::load;
use super::openapi::documented_errors;
use super::views::{BackupListView, BackupView, Link, Links, instance_href};
use crate::model::{backup_id_schema, is_backup_id};
use crate::store::BackupPageRequest;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupListQuery {
    limit: Option<String>,
    next_token: Option<String>,
}

/// Page sizes of an instance's backup list.
pub const BACKUP_PAGE: PageLimit = PageLimit {
    default: 50,
    max: 1000,
};

impl IntoParams for BackupListQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![limit_param(BACKUP_PAGE), next_token_param(None)]
    }
}

documented_errors!(ListErrors = [ValidationError, InstanceNotFound, ServiceUnavailable]);

/// List an instance's backups
///
/// Oldest first, paged.
#[utoipa::path(
    get,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/backups",
    tag = "backups",
    operation_id = "listBackups",
    params(InstancePath, BackupListQuery),
    responses(
        (status = 200, description = "A page of backups.", body = BackupListView),
        ListErrors,
    )
)]
pub async fn list(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    ApiQuery(q): ApiQuery<BackupListQuery>,
) -> Result<Response, ApiError> {
    load(&app, &key).await?;
    let limit = parse_limit(q.limit.as_deref(), BACKUP_PAGE)?;
    let after = match q.next_token.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            decode(t)
                .ok_or_else(|| ApiError::field("nextToken", "is not a token this list returned"))?,
        ),
    };
    let page = app
        .store
        .list_backups(
            &key,
            BackupPageRequest {
                limit,
                after,
                active_only: false,
            },
        )
        .await?;
    let next_token = page.next.as_deref().map(|id| URL_SAFE_NO_PAD.encode(id));
    let instance = instance_href(&key);
    let base = format!("{instance}/backups");
    let link = |href: String, method: Option<&'static str>| Link { href, method };
    let mut links = Links::new();
    links.insert("self", link(base.clone(), None));
    links.insert("instance", link(instance.clone(), None));
    links.insert("create", link(format!("{instance}/backup"), Some("POST")));
    if let Some(t) = &next_token {
        links.insert(
            "next",
            link(format!("{base}?limit={limit}&nextToken={t}"), None),
        );
    }
    let body = BackupListView {
        backups: page.items.iter().map(BackupView::new).collect(),
        next_token,
        links,
    };
    Ok(axum::Json(body).into_response())
}

fn decode(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let id = String::from_utf8(bytes).ok()?;
    is_backup_id(&id).then_some(id)
}

/// The `backupId` path parameter, unvalidated: a malformed id is a BACKUP_NOT_FOUND like
/// an unknown one (see `verbs::find_backup`), not a 400.
pub struct BackupIdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BackupIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::field("path", "path parameters are not valid UTF-8"))?;
        let id = params
            .into_iter()
            .find(|(k, _)| k == "backupId")
            .map(|(_, v)| v)
            .unwrap_or_default();
        Ok(BackupIdPath(id))
    }
}

impl IntoParams for BackupIdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("backupId")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(
                    "A backup of this instance; any other value (unknown, malformed, another \
                     instance's) answers 404 BACKUP_NOT_FOUND.",
                ))
                .schema(Some(backup_id_schema()))
                .build(),
        ]
    }
}

documented_errors!(
    GetErrors = [
        ValidationError,
        InstanceNotFound,
        BackupNotFound,
        ServiceUnavailable,
    ]
);

/// Get a backup
#[utoipa::path(
    get,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/backups/{backupId}",
    tag = "backups",
    operation_id = "getBackup",
    params(InstancePath, BackupIdPath),
    responses((status = 200, description = "The backup.", body = BackupView), GetErrors)
)]
pub async fn get_one(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    BackupIdPath(id): BackupIdPath,
) -> Result<Response, ApiError> {
    let backup = super::verbs::find_backup(&app, &key, &id).await?;
    Ok(axum::Json(BackupView::new(&backup)).into_response())
}
