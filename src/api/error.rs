//! `ApiError`: every failure an API user can see, mapped to HTTP in one place.
//!
//! Body shape, always: `{"error": {"code", "message", "details"}}`. Codes are the
//! platform's. 5xx bodies stay generic; the cause is logged by the middleware in `api::mod`,
//! which finds the error attached to the response as an extension (`into_response` itself
//! has no side effects).

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::model::{FieldError, InstanceKey, Rejection};
use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        message: String,
        fields: Vec<FieldError>,
    },
    #[error("instance {0} not found")]
    InstanceNotFound(InstanceKey),
    #[error("instance {0} already exists")]
    InstanceExists(InstanceKey),
    #[error("backup {1} of instance {0} not found")]
    BackupNotFound(InstanceKey, String),
    #[error("{0}")]
    BackupNotReady(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    InvalidTransition(String),
    #[error("{0}")]
    ScaleLimitExceeded(String),
    #[error("If-Match does not match the current ETag")]
    PreconditionFailed { current: String },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The store is unreachable; the request changed nothing and may be retried.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let f = FieldError::new(field, message);
        Self::Validation {
            message: format!("{}: {}", f.field, f.message),
            fields: vec![f],
        }
    }

    pub fn fields(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self::Validation { message, fields }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } => StatusCode::BAD_REQUEST,
            ApiError::InstanceNotFound(_)
            | ApiError::BackupNotFound(..)
            | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InstanceExists(_) | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::InvalidTransition(_)
            | ApiError::ScaleLimitExceeded(_)
            | ApiError::BackupNotReady(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "VALIDATION_ERROR",
            ApiError::InstanceNotFound(_) => "INSTANCE_NOT_FOUND",
            ApiError::InstanceExists(_) => "INSTANCE_EXISTS",
            ApiError::BackupNotFound(..) => "BACKUP_NOT_FOUND",
            ApiError::BackupNotReady(_) => "BACKUP_NOT_READY",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::InvalidTransition(_) => "INVALID_STATUS_TRANSITION",
            ApiError::ScaleLimitExceeded(_) => "SCALE_LIMIT_EXCEEDED",
            ApiError::PreconditionFailed { .. } => "PRECONDITION_FAILED",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::RouteNotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::Unavailable(_) => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Validation { fields, .. } => json!({ "fields": fields }),
            ApiError::InstanceNotFound(k) | ApiError::InstanceExists(k) => {
                json!({ "tenantId": k.tenant_id, "instanceId": k.instance_id })
            }
            ApiError::BackupNotFound(k, id) => {
                json!({ "tenantId": k.tenant_id, "instanceId": k.instance_id, "backupId": id })
            }
            ApiError::PreconditionFailed { current } => json!({ "currentETag": current }),
            ApiError::PayloadTooLarge { limit } => json!({ "limitBytes": limit }),
            _ => json!({}),
        }
    }

    /// What the user sees: server-side causes are not echoed.
    fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; the request may not have been applied".into(),
            ApiError::Unavailable(_) => {
                "the desired-state store is unavailable; nothing was changed, retry later".into()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code(),
                "message": self.public_message(),
                "details": self.details(),
            }
        });
        let mut res = (self.status(), axum::Json(body)).into_response();
        if let ApiError::Unavailable(_) | ApiError::RateLimited(_) = self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let ApiError::Unauthorized(_) = self {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res.extensions_mut().insert(Arc::new(self));
        res
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Invalid(fields) => ApiError::fields(fields),
            Rejection::InvalidTransition(m) => ApiError::InvalidTransition(m),
            Rejection::ScaleLimitExceeded(m) => ApiError::ScaleLimitExceeded(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(k) => ApiError::InstanceNotFound(k),
            StoreError::AlreadyExists(i) => ApiError::InstanceExists(i.key()),
            StoreError::PreconditionFailed(i) => ApiError::PreconditionFailed {
                current: super::views::etag(&i.metadata.resource_version),
            },
            StoreError::Rejected(r) => r.into(),
            // Reconciler-only outcomes; an API write never presents a fence or a generation.
            StoreError::StaleStatus { .. } | StoreError::Fenced { .. } => {
                ApiError::Internal(e.to_string())
            }
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            StoreError::BackupNotFound(k, id) => ApiError::BackupNotFound(k, id),
            StoreError::Conflict(m) => ApiError::Conflict(m),
        }
    }
}
