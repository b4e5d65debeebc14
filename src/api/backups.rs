//! Reading backups: `GET …/backups` (paged) and `GET …/backups/{backupId}`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiQuery, InstancePath};
use super::instances::{load, parse_limit};
use super::views::{BackupView, instance_href};
use crate::model::is_backup_id;
use crate::store::BackupPageRequest;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupListQuery {
    limit: Option<String>,
    next_token: Option<String>,
}

pub async fn list(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    ApiQuery(q): ApiQuery<BackupListQuery>,
) -> Result<Response, ApiError> {
    load(&app, &key).await?;
    let limit = parse_limit(q.limit.as_deref(), 50, 1000)?;
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
    let base = format!("{}/backups", instance_href(&key));
    let mut links = json!({
        "self": { "href": base },
        "instance": { "href": instance_href(&key) },
        "create": { "href": format!("{}/backup", instance_href(&key)), "method": "POST" },
    });
    if let Some(t) = &next_token {
        links["next"] = json!({ "href": format!("{base}?limit={limit}&nextToken={t}") });
    }
    let backups: Vec<BackupView<'_>> = page.items.iter().map(BackupView::new).collect();
    let body = json!({ "backups": backups, "nextToken": next_token, "_links": links });
    Ok(axum::Json(body).into_response())
}

fn decode(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let id = String::from_utf8(bytes).ok()?;
    is_backup_id(&id).then_some(id)
}

pub async fn get_one(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let id = params
        .iter()
        .find(|(k, _)| k == "backupId")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let backup = super::verbs::find_backup(&app, &key, id).await?;
    Ok(axum::Json(BackupView::new(&backup)).into_response())
}
