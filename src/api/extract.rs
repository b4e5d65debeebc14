//! Extractors that turn bad input into our typed errors instead of axum's plain-text ones.
//!
//! * [`JsonBody`]: size-limited, content-type checked, and deserialized with the failing
//!   field's path in the error (`configuration.desiredCount: invalid type …`).
//! * [`InstancePath`] / [`TenantPath`]: validated ids.
//! * [`ApiQuery`]: query strings.
//! * [`IfMatch`]: the optional optimistic-concurrency precondition.
//!
//! Each extractor also implements `utoipa::IntoParams`, built from the constants it checks
//! against, so an operation's documented parameters come from the extractors it uses.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Required, schema::Object};

use super::error::ApiError;
use crate::model::{
    InstanceId, InstanceKey, MAX_INSTANCE_ID_LEN, MAX_TENANT_ID_LEN, TenantId, id_schema,
};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Error messages quote user input at most this long.
const MAX_MESSAGE: usize = 300;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The raw body, after the same checks as [`JsonBody`]; for handlers that look at the
/// JSON before choosing a type (PUT accepts a bare spec or a whole resource).
pub struct JsonValue(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonValue)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    check_content_type(req.headers())?;
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            ApiError::field("body", "the request body could not be read")
        }
    })?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(ApiError::field(
            "body",
            "the request body is empty; expected a JSON object",
        )),
        // serde would also accept an array for a struct; every body here is an object.
        Some(b'{') => Ok(bytes),
        Some(_) => Err(ApiError::field("body", "expected a JSON object")),
    }
}

/// JSON only; a missing Content-Type is accepted because many clients omit it.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json (got {})",
            truncate(&mime)
        )))
    }
}

/// Deserializes with the path of the failing field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(path_error)?;
    Ok(value)
}

/// Deserializes an already-parsed value, again naming the failing field.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let message = e.inner().to_string();
    let mut path = e.path().to_string();
    if path == "." {
        path.clear();
    }
    // serde reports a missing or unknown field at its parent; name the field itself.
    if let Some(name) = quoted_field(&message)
        && !path.ends_with(name)
    {
        path = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
    }
    let field = if path.is_empty() {
        "body".to_owned()
    } else {
        path
    };
    ApiError::field(truncate(&field), truncate(&message))
}

/// `missing field `x`` / `unknown field `x`, expected …` → `x`.
fn quoted_field(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next().filter(|n| !n.is_empty())
}

pub fn truncate(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub fn parse_tenant(s: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(s).map_err(|e| ApiError::field("tenantId", e.to_string()))
}

pub fn parse_instance(s: &str) -> Result<InstanceId, ApiError> {
    InstanceId::parse(s).map_err(|e| ApiError::field("instanceId", e.to_string()))
}

/// `/tenants/{tenantId}/…`
pub struct TenantPath(pub TenantId);

impl<S: Send + Sync> FromRequestParts<S> for TenantPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::field("path", "path parameters are not valid UTF-8"))?;
        let tenant = param(&params, "tenantId")?;
        Ok(TenantPath(parse_tenant(tenant)?))
    }
}

/// `/tenants/{tenantId}/instances/{instanceId}/…`
pub struct InstancePath(pub InstanceKey);

impl<S: Send + Sync> FromRequestParts<S> for InstancePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::field("path", "path parameters are not valid UTF-8"))?;
        let tenant = parse_tenant(param(&params, "tenantId")?)?;
        let instance = parse_instance(param(&params, "instanceId")?)?;
        Ok(InstancePath(InstanceKey::new(tenant, instance)))
    }
}

fn path_param(name: &str, description: &str, schema: Object) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn tenant_param() -> Parameter {
    path_param(
        "tenantId",
        "The tenant; a malformed id answers 400 VALIDATION_ERROR naming `tenantId`.",
        id_schema(MAX_TENANT_ID_LEN),
    )
}

impl IntoParams for TenantPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![tenant_param()]
    }
}

impl IntoParams for InstancePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            tenant_param(),
            path_param(
                "instanceId",
                "The instance, unique within its tenant; a malformed id answers 400 \
                 VALIDATION_ERROR naming `instanceId`.",
                id_schema(MAX_INSTANCE_ID_LEN),
            ),
        ]
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, ApiError> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| ApiError::Internal(format!("route has no {name} parameter")))
}

pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::field("query", truncate(&e.body_text())))
    }
}

/// The page sizes a list accepts: `limit` from 1 to `max`, `default` without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    pub default: usize,
    pub max: usize,
}

/// `limit` as a query parameter: absent means `page.default`; anything but an integer in
/// `1..=page.max` is a 400 naming `limit`.
pub fn parse_limit(raw: Option<&str>, page: PageLimit) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(page.default);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=page.max).contains(&n) => Ok(n),
        _ => Err(ApiError::field(
            "limit",
            format!("must be an integer from 1 to {}", page.max),
        )),
    }
}

fn query_param(name: &str, description: &str, schema: Object) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The documented `limit` query parameter of a list with these page sizes.
pub fn limit_param(page: PageLimit) -> Parameter {
    query_param(
        "limit",
        "Most items in the page.",
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(page.max))
            .default(Some(page.default.into()))
            .build(),
    )
}

/// The documented `nextToken` query parameter: opaque, from the previous page.
pub fn next_token_param(max_length: Option<usize>) -> Parameter {
    query_param(
        "nextToken",
        "Opaque: the `nextToken` of the previous page. Empty means the first page; one this \
         list did not return answers 400 naming `nextToken`.",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(max_length)
            .build(),
    )
}

/// A documented ISO-8601 (RFC 3339) time query parameter.
pub fn time_param(name: &str, description: &str) -> Parameter {
    query_param(
        name,
        description,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .examples(["2026-11-25T10:00:00Z"])
            .build(),
    )
}

/// `If-Match`: absent means "no precondition". `*` matches any existing record.
pub struct IfMatch(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(raw) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let raw = raw
            .to_str()
            .map_err(|_| ApiError::field("If-Match", "must be an ETag such as \"42\""))?
            .trim();
        if raw == "*" {
            return Ok(IfMatch(None));
        }
        let tag = raw.strip_prefix("W/").unwrap_or(raw);
        let version = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|v| !v.is_empty() && !v.contains('"'))
            .ok_or_else(|| ApiError::field("If-Match", "must be an ETag such as \"42\""))?;
        Ok(IfMatch(Some(version.to_owned())))
    }
}

impl IntoParams for IfMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("If-Match")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Optional precondition: the `ETag` of a previous response (`\"42\"`; \
                     `W/\"42\"` is read as `\"42\"`; `*` matches any existing record). A \
                     stale one answers 412 PRECONDITION_FAILED and changes nothing.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .examples(["\"42\""]),
                ))
                .build(),
        ]
    }
}
