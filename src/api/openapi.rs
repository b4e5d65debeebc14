//! The OpenAPI 3.1 document of the API, generated from the code with `utoipa`, and served
//! at `GET /openapi.json`.
//!
//! Where each part comes from:
//! * operations: the `#[utoipa::path]` attribute on each handler (method, path, summary,
//!   parameters, body, success responses with their headers);
//! * parameters: `IntoParams` of the extractors the handler takes (`TenantPath`,
//!   `InstancePath`, `IfMatch`, the query structs), built from the constants they check;
//! * schemas: `ToSchema` derived on the model and view types the handlers serialize;
//! * error responses: a per-handler `documented_errors!` list of [`ErrorCode`]s, rendered by
//!   [`error_responses`] with statuses from [`ErrorCode::status`] (the one `ApiError` uses)
//!   and examples rendered by `ApiError` itself; plus, from [`Conventions`], what the router
//!   adds to every route: the bearer requirement with 401/403 on every `/v1.0` route (the
//!   auth guards), 413 everywhere (the body is read before routing) and 500 everywhere
//!   (the panic layer).
//!
//! Invariant: every route the router serves is in the document, with the same methods, and
//! every `/v1.0` operation requires the bearer token; `tests/openapi.rs` checks both
//! against a running server, and that `docs/API.md` is what [`markdown`] prints now.

mod markdown;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, Response as OpenApiResponse};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::{ErrorBody, ErrorCode};

pub use markdown::{REGENERATE, markdown};

/// Declares a unit struct whose `IntoResponses` documents the error responses a handler
/// can answer with, beyond those [`Conventions`] adds to every route. Name it in the
/// handler's `#[utoipa::path(responses(…))]`.
macro_rules! documented_errors {
    ($(#[$doc:meta])* $name:ident = [$($code:ident),+ $(,)?]) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::api::openapi::error_responses(&[
                    $($crate::api::error::ErrorCode::$code),+
                ])
            }
        }
    };
}
pub(crate) use documented_errors;

/// The name of the bearer security scheme.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wpfleet API",
        description = "The instance API of wpfleet, a desired-state controller for hosted \
WordPress instances. Requests record *desired state*; a reconciler converges the cloud and \
reports what it observed in each instance's `status`.\n\n\
Every `/v1.0` route needs `Authorization: Bearer <JWT>` (claims `sub`, `exp`, \
`custom:tenant_id`; members of `cognito:groups` `platform-operators` may act on every tenant \
and use the operator routes). Every error is `{\"error\":{\"code\",\"message\",\"details\"}}` \
(`ErrorBody`); `ErrorCode` lists the codes and their statuses. Bodies are JSON, at most \
64 KiB. Ids are 1–63 characters of a-z, 0-9 and single inner hyphens."
    ),
    paths(
        super::instances::create,
        super::instances::list,
        super::instances::get_one,
        super::instances::put,
        super::instances::delete,
        super::instances::status,
        super::instances::reconcile_one,
        super::instances::reconcile_tenant,
        super::verbs::scale,
        super::verbs::suspend,
        super::verbs::resume,
        super::verbs::status_action,
        super::verbs::backup,
        super::verbs::restore,
        super::backups::list,
        super::backups::get_one,
        super::logs::logs,
        super::events::list,
        super::instances::reconcile_all,
        super::instances::list_all,
        super::sim::inventory,
        super::sim::stats,
        super::sim::calls,
        super::sim::set_faults,
        super::sim::drift,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        serve,
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&Conventions),
    tags(
        (name = "instances", description = "Instances: create, read, replace, delete."),
        (name = "lifecycle", description = "Imperative verbs, each recorded as a desired-state change."),
        (name = "backups", description = "Backups and restore."),
        (name = "logs", description = "The instance's CloudWatch logs."),
        (name = "events", description = "What the reconciler decided and did to an instance."),
        (name = "operator", description = "Operator-only routes (`platform-operators`)."),
        (name = "simulated cloud", description = "Only when running on the simulated cloud \
(operators): look at it, change it behind the controller's back, inject faults."),
        (name = "service", description = "Health and this document; no token needed."),
    )
)]
struct ApiDoc;

/// The document, as the server serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON (what `GET /openapi.json` and `wpfleet openapi` print).
pub fn json() -> String {
    // Serializing our own document cannot fail: every map key is a string.
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

static JSON: LazyLock<String> = LazyLock::new(json);

/// This document
///
/// The OpenAPI 3.1 document of this API, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object,
        content_type = "application/json"))
)]
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str()).into_response()
}

/// The error responses for `codes`: one per status, each a reference to the shared response
/// for exactly the codes listed with that status (see [`error_response`]), which
/// [`Conventions`] adds to `components.responses`.
pub fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<OpenApiResponse>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for &code in codes {
        by_status
            .entry(code.status().as_u16())
            .or_default()
            .push(code);
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let name = response_name(&codes);
            (status.to_string(), Ref::from_response_name(name).into())
        })
        .collect()
}

/// `components.responses` name of the response for these codes (of one status): the codes
/// in [`ErrorCode`] order, joined by `.` (e.g. `INSTANCE_NOT_FOUND.BACKUP_NOT_FOUND`).
fn response_name(codes: &[ErrorCode]) -> String {
    let mut codes = codes.to_vec();
    codes.sort();
    codes.dedup();
    codes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// Inverse of [`response_name`]; `None` for a name that is not one.
fn codes_of(name: &str) -> Option<Vec<ErrorCode>> {
    name.split('.')
        .map(|part| ErrorCode::ALL.into_iter().find(|c| c.as_str() == part))
        .collect()
}

/// The response for `codes` (of one status): its schema is [`ErrorBody`] with `code`
/// narrowed to them, with one example per code rendered by `ApiError` itself.
fn error_response(codes: &[ErrorCode]) -> OpenApiResponse {
    let description = codes
        .iter()
        .map(|c| format!("`{}`: {}.", c.as_str(), c.meaning()))
        .collect::<Vec<_>>()
        .join(" ");
    let narrowed = ObjectBuilder::new().property(
        "error",
        ObjectBuilder::new().property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.iter().map(|c| c.as_str()))),
        ),
    );
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name(ErrorBody::name()))
        .item(narrowed);
    let examples = codes.iter().map(|c| {
        let body = serde_json::to_value(c.example().body()).unwrap_or_default();
        (
            c.as_str(),
            ExampleBuilder::new()
                .summary(c.as_str())
                .value(Some(body))
                .build(),
        )
    });
    let content = ContentBuilder::new()
        .schema(Some(schema))
        .examples_from_iter(examples)
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    let text = || ObjectBuilder::new().schema_type(Type::String);
    if codes.contains(&ErrorCode::Unauthorized) {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(text())
                .description(Some("`Bearer`"))
                .build(),
        );
    }
    if codes
        .iter()
        .any(|c| matches!(c, ErrorCode::RateLimited | ErrorCode::ServiceUnavailable))
    {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
    }
    response.build()
}

/// What the router adds to every route, applied to every operation of the document:
/// * `/v1.0/…` routes sit behind `auth::tenant_guard` or `auth::operator_guard`: they need
///   the bearer token and can answer 401 and 403;
/// * every route sits behind `CatchPanicLayer`: it can answer 500.
///
/// It also declares the bearer scheme.
pub struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT: HS256 with the server's secret (development), or RS256 \
                         verified against a JWKS such as a Cognito user pool's (production).",
                    ))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let guarded = path.starts_with("/v1.0/");
            for op in operations_mut(item) {
                // The body is read (and its size checked) before routing, on every route.
                let mut add = vec![ErrorCode::InternalError, ErrorCode::PayloadTooLarge];
                if guarded {
                    op.security =
                        Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                    add.extend([ErrorCode::Unauthorized, ErrorCode::Forbidden]);
                }
                for (status, response) in error_responses(&add) {
                    // A handler never lists these itself; if one did, its entry stands.
                    op.responses.responses.entry(status).or_insert(response);
                }
            }
        }
        // Define every error response the operations refer to.
        let mut referenced = BTreeMap::new();
        for item in openapi.paths.paths.values_mut() {
            for op in operations_mut(item) {
                for response in op.responses.responses.values() {
                    let RefOr::Ref(r) = response else { continue };
                    let Some(name) = r.ref_location.strip_prefix("#/components/responses/") else {
                        continue;
                    };
                    if let Some(codes) = codes_of(name) {
                        referenced.insert(name.to_owned(), error_response(&codes));
                    }
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, response) in referenced {
            components.responses.insert(name, response.into());
        }
    }
}

/// The operations of a path item, in a fixed order.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// A schema that only says "a JSON object" (e.g. the simulated cloud's own types, which
/// `cloud::sim` owns and does not describe).
pub fn any_object(description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_group_codes_by_status() {
        let r = error_responses(&[
            ErrorCode::InstanceNotFound,
            ErrorCode::BackupNotFound,
            ErrorCode::ValidationError,
        ]);
        assert_eq!(r.keys().collect::<Vec<_>>(), ["400", "404"]);
        let v = serde_json::to_value(&r["404"]).unwrap();
        let name = "INSTANCE_NOT_FOUND.BACKUP_NOT_FOUND";
        assert_eq!(v["$ref"], format!("#/components/responses/{name}"));
        let codes = codes_of(name).unwrap();
        let v = serde_json::to_value(error_response(&codes)).unwrap();
        let schema = &v["content"]["application/json"]["schema"]["allOf"];
        assert_eq!(schema[0]["$ref"], "#/components/schemas/ErrorBody");
        assert_eq!(
            schema[1]["properties"]["error"]["properties"]["code"]["enum"],
            serde_json::json!(["INSTANCE_NOT_FOUND", "BACKUP_NOT_FOUND"])
        );
        let example = &v["content"]["application/json"]["examples"]["BACKUP_NOT_FOUND"];
        assert_eq!(example["value"]["error"]["code"], "BACKUP_NOT_FOUND");
    }

    #[test]
    fn the_document_is_deterministic() {
        assert_eq!(json(), json());
    }
}
