//! `GET …/logs`: reads the instance's CloudWatch log group (a read, never a mutation).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::ApiError;
use super::extract::{
    ApiQuery, InstancePath, PageLimit, limit_param, next_token_param, parse_limit, time_param,
};
use super::instances::load;
use super::openapi::documented_errors;
use crate::cloud::{CloudError, LogQuery};
use crate::model::now;

/// `?startTime&endTime&limit&nextToken`, read as strings so bad values get our errors.
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

/// Page sizes of the log reader.
pub const LOG_PAGE: PageLimit = PageLimit {
    default: 100,
    max: 1000,
};

/// Longest `nextToken` accepted (CloudWatch's are far shorter).
const MAX_TOKEN_LEN: usize = 1024;

impl IntoParams for LogsQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            time_param(
                "startTime",
                &format!(
                    "Oldest event time (inclusive). Default: {DEFAULT_WINDOW_HOURS} h before \
                     `endTime`. Must not be after `endTime`."
                ),
            ),
            time_param("endTime", "Newest event time. Default: now."),
            limit_param(LOG_PAGE),
            next_token_param(Some(MAX_TOKEN_LEN)),
        ]
    }
}

/// One log event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEventView<'a> {
    pub timestamp: DateTime<Utc>,
    pub message: &'a str,
    /// The CloudWatch log stream (one per task).
    pub log_stream: &'a str,
}

/// A page of log events, oldest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsView<'a> {
    pub events: Vec<LogEventView<'a>>,
    /// Pass as `nextToken` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_token: Option<String>,
}

documented_errors!(
    LogsErrors = [
        ValidationError,
        InstanceNotFound,
        RateLimited,
        ServiceUnavailable,
    ]
);

/// Read an instance's logs
///
/// From its CloudWatch log group, in a time window (the last hour by default), paged. An
/// instance without a log group yet has no events.
#[utoipa::path(
    get,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/logs",
    tag = "logs",
    operation_id = "getInstanceLogs",
    params(InstancePath, LogsQuery),
    responses((status = 200, description = "A page of log events.", body = LogsView), LogsErrors)
)]
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
            let empty = LogsView {
                events: vec![],
                next_token: None,
            };
            return Ok(axum::Json(empty).into_response());
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
    let events = page
        .events
        .iter()
        .map(|e| LogEventView {
            timestamp: e.timestamp,
            message: &e.message,
            log_stream: &e.log_stream,
        })
        .collect();
    let body = LogsView {
        events,
        next_token: page.next_token.clone(),
    };
    Ok(axum::Json(body).into_response())
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
    let limit = parse_limit(q.limit.as_deref(), LOG_PAGE)? as u32;
    let next_token = q.next_token.clone().filter(|t| !t.is_empty());
    if next_token.as_ref().is_some_and(|t| t.len() > MAX_TOKEN_LEN) {
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
