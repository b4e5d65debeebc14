//! `ApiError`: every failure an API user can see, mapped to HTTP in one place.
//!
//! Body shape, always: `{"error": {"code", "message", "details"}}` ([`ErrorBody`]). Codes are
//! the platform's ([`ErrorCode`]); each code has exactly one HTTP status, and the OpenAPI
//! document lists codes and statuses from the same [`ErrorCode::status`] the responses use.
//! 5xx bodies stay generic; the cause is logged by the middleware in `api::mod`, which finds
//! the error attached to the response as an extension (`into_response` itself has no side
//! effects).

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

use crate::model::{FieldError, InstanceId, InstanceKey, Rejection, TenantId};
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

    /// The platform's code for this error; it decides the HTTP status.
    pub fn kind(&self) -> ErrorCode {
        match self {
            ApiError::Validation { .. } => ErrorCode::ValidationError,
            ApiError::InstanceNotFound(_) => ErrorCode::InstanceNotFound,
            ApiError::InstanceExists(_) => ErrorCode::InstanceExists,
            ApiError::BackupNotFound(..) => ErrorCode::BackupNotFound,
            ApiError::BackupNotReady(_) => ErrorCode::BackupNotReady,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::RateLimited(_) => ErrorCode::RateLimited,
            ApiError::InvalidTransition(_) => ErrorCode::InvalidStatusTransition,
            ApiError::ScaleLimitExceeded(_) => ErrorCode::ScaleLimitExceeded,
            ApiError::PreconditionFailed { .. } => ErrorCode::PreconditionFailed,
            ApiError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::RouteNotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().status()
    }

    pub fn code(&self) -> &'static str {
        self.kind().as_str()
    }

    fn details(&self) -> ErrorDetails {
        let key = |k: &InstanceKey| ErrorDetails {
            tenant_id: Some(k.tenant_id.clone()),
            instance_id: Some(k.instance_id.clone()),
            ..ErrorDetails::default()
        };
        match self {
            ApiError::Validation { fields, .. } => ErrorDetails {
                fields: Some(fields.clone()),
                ..ErrorDetails::default()
            },
            ApiError::InstanceNotFound(k) | ApiError::InstanceExists(k) => key(k),
            ApiError::BackupNotFound(k, id) => ErrorDetails {
                backup_id: Some(id.clone()),
                ..key(k)
            },
            ApiError::PreconditionFailed { current } => ErrorDetails {
                current_etag: Some(current.clone()),
                ..ErrorDetails::default()
            },
            ApiError::PayloadTooLarge { limit } => ErrorDetails {
                limit_bytes: Some(*limit),
                ..ErrorDetails::default()
            },
            _ => ErrorDetails::default(),
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

    /// The JSON body this error answers with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                code: self.kind(),
                message: self.public_message(),
                details: self.details(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status(), axum::Json(self.body())).into_response();
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

/// `{"error": {"code", "message", "details"}}`: the body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorObject {
    pub code: ErrorCode,
    /// For people; may change between versions. Programs should branch on `code`.
    pub message: String,
    pub details: ErrorDetails,
}

/// Machine-readable context; which keys are present depends on the code (an empty object
/// for most).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetails {
    /// VALIDATION_ERROR: every invalid field, named by its JSON path.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub fields: Option<Vec<FieldError>>,
    /// INSTANCE_NOT_FOUND, INSTANCE_EXISTS, BACKUP_NOT_FOUND.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tenant_id: Option<TenantId>,
    /// INSTANCE_NOT_FOUND, INSTANCE_EXISTS, BACKUP_NOT_FOUND.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub instance_id: Option<InstanceId>,
    /// BACKUP_NOT_FOUND: the id asked for (truncated if long).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub backup_id: Option<String>,
    /// PRECONDITION_FAILED: the resource's current ETag, to retry with.
    #[serde(rename = "currentETag", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub current_etag: Option<String>,
    /// PAYLOAD_TOO_LARGE: the largest body accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub limit_bytes: Option<usize>,
}

/// The platform's error codes. Each has one HTTP status ([`ErrorCode::status`]); the
/// OpenAPI document's `ErrorCode` schema is built from [`ErrorCode::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationError,
    Unauthorized,
    Forbidden,
    InstanceNotFound,
    BackupNotFound,
    NotFound,
    MethodNotAllowed,
    InstanceExists,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidStatusTransition,
    ScaleLimitExceeded,
    BackupNotReady,
    RateLimited,
    InternalError,
    ServiceUnavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::ValidationError,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::InstanceNotFound,
        ErrorCode::BackupNotFound,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InstanceExists,
        ErrorCode::Conflict,
        ErrorCode::PreconditionFailed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::InvalidStatusTransition,
        ErrorCode::ScaleLimitExceeded,
        ErrorCode::BackupNotReady,
        ErrorCode::RateLimited,
        ErrorCode::InternalError,
        ErrorCode::ServiceUnavailable,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::ValidationError => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::InstanceNotFound | ErrorCode::BackupNotFound | ErrorCode::NotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InstanceExists | ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidStatusTransition
            | ErrorCode::ScaleLimitExceeded
            | ErrorCode::BackupNotReady => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::InstanceNotFound => "INSTANCE_NOT_FOUND",
            ErrorCode::BackupNotFound => "BACKUP_NOT_FOUND",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::InstanceExists => "INSTANCE_EXISTS",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::InvalidStatusTransition => "INVALID_STATUS_TRANSITION",
            ErrorCode::ScaleLimitExceeded => "SCALE_LIMIT_EXCEEDED",
            ErrorCode::BackupNotReady => "BACKUP_NOT_READY",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
        }
    }

    /// When the code is answered; the OpenAPI document's wording.
    pub fn meaning(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => {
                "a path id, query parameter, header or body field is invalid; \
                 `details.fields` names each one by its JSON path"
            }
            ErrorCode::Unauthorized => {
                "no bearer token, or one that is malformed, expired or wrongly signed"
            }
            ErrorCode::Forbidden => {
                "the token is valid but may not act on this tenant (or is not an operator's)"
            }
            ErrorCode::InstanceNotFound => "no such instance in this tenant",
            ErrorCode::BackupNotFound => "no such backup of this instance",
            ErrorCode::NotFound => "no such route",
            ErrorCode::MethodNotAllowed => "the route exists but not with this method",
            ErrorCode::InstanceExists => "an instance with this id already exists",
            ErrorCode::Conflict => "the change conflicts with a record that is final",
            ErrorCode::PreconditionFailed => {
                "`If-Match` does not match the current ETag; `details.currentETag` has it"
            }
            ErrorCode::PayloadTooLarge => "the body is larger than `details.limitBytes` (64 KiB)",
            ErrorCode::UnsupportedMediaType => "Content-Type is not JSON",
            ErrorCode::InvalidStatusTransition => {
                "the change is not allowed in the instance's current state (e.g. it is deleted)"
            }
            ErrorCode::ScaleLimitExceeded => "desiredCount is outside the tier's limits",
            ErrorCode::BackupNotReady => "only a COMPLETED backup can be restored",
            ErrorCode::RateLimited => "the cloud throttled the read; retry after `Retry-After`",
            ErrorCode::InternalError => "a bug; the request may not have been applied",
            ErrorCode::ServiceUnavailable => {
                "the desired-state store is unavailable; nothing changed; retry after \
                 `Retry-After`"
            }
        }
    }

    /// A representative error with this code, for the document's examples: the example
    /// bodies are rendered by the same code as real responses.
    pub fn example(self) -> ApiError {
        let key = InstanceKey::from_strs("t1", "blog");
        match self {
            ErrorCode::ValidationError => {
                ApiError::field("configuration.desiredCount", "must be between 2 and 10")
            }
            ErrorCode::Unauthorized => {
                ApiError::Unauthorized("missing Authorization: Bearer token".into())
            }
            ErrorCode::Forbidden => ApiError::Forbidden("alice may not act on tenant t2".into()),
            ErrorCode::InstanceNotFound => ApiError::InstanceNotFound(key),
            ErrorCode::BackupNotFound => {
                ApiError::BackupNotFound(key, "bk-0193a1b2c3d4e5f60718".into())
            }
            ErrorCode::NotFound => ApiError::RouteNotFound("/v1.0/nope".into()),
            ErrorCode::MethodNotAllowed => ApiError::MethodNotAllowed,
            ErrorCode::InstanceExists => ApiError::InstanceExists(key),
            ErrorCode::Conflict => ApiError::Conflict("backup id is taken".into()),
            ErrorCode::PreconditionFailed => ApiError::PreconditionFailed {
                current: "\"42\"".into(),
            },
            ErrorCode::PayloadTooLarge => ApiError::PayloadTooLarge {
                limit: super::extract::MAX_BODY_BYTES,
            },
            ErrorCode::UnsupportedMediaType => ApiError::UnsupportedMediaType(
                "Content-Type must be application/json (got text/plain)".into(),
            ),
            ErrorCode::InvalidStatusTransition => ApiError::InvalidTransition(
                "cannot suspend: the instance is already SUSPENDED".into(),
            ),
            ErrorCode::ScaleLimitExceeded => ApiError::ScaleLimitExceeded(
                "desiredCount 5: tier STANDARD allows at most 4 tasks".into(),
            ),
            ErrorCode::BackupNotReady => ApiError::BackupNotReady(
                "backup bk-0193a1b2c3d4e5f60718 is RUNNING; only a COMPLETED backup can be \
                 restored"
                    .into(),
            ),
            ErrorCode::RateLimited => ApiError::RateLimited("throttled by CloudWatch Logs".into()),
            ErrorCode::InternalError => ApiError::Internal("example".into()),
            ErrorCode::ServiceUnavailable => ApiError::Unavailable("example".into()),
        }
    }
}

/// A `oneOf` of one-value string schemas, one per code, each titled with the code and
/// carrying its status in `x-http-status`, so readers (and `docs/API.md`) get the table of
/// codes from the document itself.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new().description(Some(
            "The platform's error code; each code always comes with the same HTTP status.",
        ));
        for code in ErrorCode::ALL {
            let status = code.status();
            one_of = one_of.item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([code.as_str()]))
                    .title(Some(code.as_str()))
                    .description(Some(code.meaning()))
                    .extensions(Some(
                        ExtensionsBuilder::new()
                            .add("x-http-status", status.as_u16())
                            .build(),
                    )),
            );
        }
        one_of.into()
    }
}

impl ToSchema for ErrorCode {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serializes_as_its_name_and_its_example_has_it() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code), "{code:?} listed twice");
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            let example = code.example();
            assert_eq!(example.kind(), code);
            assert_eq!(example.status(), code.status());
        }
    }

    #[test]
    fn the_body_keeps_its_shape() {
        let body = serde_json::to_value(ApiError::field("limit", "too big").body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "VALIDATION_ERROR", "message": "limit: too big",
                "details": {"fields": [{"field": "limit", "message": "too big"}]}}})
        );
        let body = serde_json::to_value(ApiError::MethodNotAllowed.body()).unwrap();
        assert_eq!(body["error"]["details"], serde_json::json!({}));
        let key = InstanceKey::from_strs("t1", "blog");
        let body = serde_json::to_value(ApiError::BackupNotFound(key, "bk-1".into()).body());
        assert_eq!(
            body.unwrap()["error"]["details"],
            serde_json::json!({"tenantId": "t1", "instanceId": "blog", "backupId": "bk-1"})
        );
        let body = ApiError::PreconditionFailed {
            current: "\"7\"".into(),
        }
        .body();
        assert_eq!(
            serde_json::to_value(body).unwrap()["error"]["details"],
            serde_json::json!({"currentETag": "\"7\""})
        );
    }
}
