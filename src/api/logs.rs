//! `GET …/logs`: reads the instance's CloudWatch log group (a read, never a mutation).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiQuery, InstancePath};
use super::instances::{load, parse_limit};
use crate::cloud::{CloudError, LogQuery};
use crate::model::now;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsQuery {
    start_time: Option<String>,
    end_time: Option<String>,
    limit: Option<String>,
    next_token: Option<String>,
}

/// Without `startTime`, the last hour.
const DEFAULT_WINDOW_HOURS: i64 = 1;

pub async fn logs(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let query = parse(&q)?;
    load(&app, &key).await?;
    let page = match app.cloud.logs(&key, &query).await {
        Ok(page) => page,
        // No log group yet (instance still provisioning): nothing logged.
        Err(CloudError::Permanent { code, .. }) if code == "ResourceNotFoundException" => {
            return Ok(axum::Json(json!({ "events": [], "nextToken": null })).into_response());
        }
        Err(CloudError::Permanent { code, .. }) if code == "InvalidParameterException" => {
            return Err(ApiError::field(
                "nextToken",
                "is not a token this endpoint returned",
            ));
        }
        Err(e @ CloudError::Throttled { .. }) => return Err(ApiError::RateLimited(e.to_string())),
        Err(e) => return Err(ApiError::Unavailable(e.to_string())),
    };
    let events: Vec<_> = page
        .events
        .iter()
        .map(|e| json!({ "timestamp": e.timestamp, "message": e.message, "logStream": e.log_stream }))
        .collect();
    Ok(axum::Json(json!({ "events": events, "nextToken": page.next_token })).into_response())
}

fn parse(q: &LogsQuery) -> Result<LogQuery, ApiError> {
    let end = match &q.end_time {
        Some(s) => time("endTime", s)?,
        None => now(),
    };
    let start = match &q.start_time {
        Some(s) => time("startTime", s)?,
        None => end - Duration::hours(DEFAULT_WINDOW_HOURS),
    };
    if start > end {
        return Err(ApiError::field("startTime", "must not be after endTime"));
    }
    let limit = parse_limit(q.limit.as_deref(), 100, 1000)? as u32;
    let next_token = q.next_token.clone().filter(|t| !t.is_empty());
    if next_token.as_ref().is_some_and(|t| t.len() > 1024) {
        return Err(ApiError::field("nextToken", "is too long"));
    }
    Ok(LogQuery {
        start,
        end,
        limit,
        next_token,
    })
}

fn time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::field(
                field,
                "must be an ISO-8601 time such as 2026-11-25T10:00:00Z",
            )
        })
}
