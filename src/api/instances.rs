//! Instance handlers: thin. Each validates, makes one conditional store write (or read),
//! triggers the reconciler, and renders. No planning and no mutating cloud call happens
//! here; the one cloud read is the status endpoint's live task list (`live_tasks`, shared
//! between requests).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Ref, Schema, SchemaType, Type,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::AppState;
use super::error::ApiError;
use super::extract::{
    ApiQuery, IfMatch, InstancePath, JsonBody, JsonValue, PageLimit, TenantPath, from_value,
    limit_param, next_token_param, parse_instance, parse_limit,
};
use super::openapi::documented_errors;
use super::views::{
    DeleteAccepted, InstanceView, Link, Links, ListView, ReconcileAccepted, ReconcileManyAccepted,
    StatusView, collection_href, etag, instance_href,
};
use crate::model::{
    Configuration, DesiredState, Instance, InstanceId, InstanceKey, ReconcileRequest, Rejection,
    Spec, TenantId, Tier, now, validate_spec,
};
use crate::store::{Change, PageRequest, StoreError};

/// The platform's create body, plus an optional `instanceId` and `state`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    /// Generated (`wp-` + 12 hex digits) when absent.
    #[serde(default)]
    #[schema(value_type = Option<InstanceId>, nullable = false)]
    pub instance_id: Option<String>,
    #[schema(schema_with = crate::model::organization_name_schema)]
    pub organization_name: String,
    #[schema(schema_with = crate::model::contact_email_schema)]
    pub contact_email: String,
    pub tier: Tier,
    /// Defaults to ACTIVE.
    #[serde(default)]
    pub state: DesiredState,
    #[serde(default)]
    pub configuration: Configuration,
}

documented_errors!(
    CreateErrors = [
        ValidationError,
        PayloadTooLarge,
        UnsupportedMediaType,
        InstanceExists,
        ServiceUnavailable,
    ]
);

/// Create an instance
///
/// Records the desired state; the reconciler provisions it (phase `PENDING_PROVISIONING`,
/// then `PROVISIONING`, then `ACTIVE`).
#[utoipa::path(
    post,
    path = "/v1.0/tenants/{tenantId}/instances",
    tag = "instances",
    operation_id = "createInstance",
    params(TenantPath),
    request_body = CreateRequest,
    responses(
        (status = 202, description = "Recorded; the reconciler provisions it.",
            body = InstanceView,
            headers(
                ("Location" = String, description = "The new instance's URL."),
                ("ETag" = String, description = "The resource version, for `If-Match`."),
            )),
        CreateErrors,
    )
)]
pub async fn create(
    State(app): State<AppState>,
    TenantPath(tenant): TenantPath,
    JsonBody(req): JsonBody<CreateRequest>,
) -> Result<Response, ApiError> {
    let instance_id = match &req.instance_id {
        Some(id) => parse_instance(id)?,
        None => InstanceId::generate(),
    };
    let spec = validated(Spec {
        organization_name: req.organization_name,
        contact_email: req.contact_email,
        tier: req.tier,
        state: req.state,
        configuration: req.configuration,
        restore: None,
    })?;
    let key = InstanceKey::new(tenant, instance_id);
    let created = app
        .store
        .create(Instance::new(key.clone(), spec, now()))
        .await?;
    app.trigger.now(key.clone());
    Ok(resource(StatusCode::ACCEPTED, &created, true))
}

documented_errors!(
    PutErrors = [
        ValidationError,
        PayloadTooLarge,
        UnsupportedMediaType,
        InstanceNotFound,
        PreconditionFailed,
        InvalidStatusTransition,
        ServiceUnavailable,
    ]
);

/// Create or replace an instance's spec
///
/// Declarative create-or-replace. The body is a bare spec, or a whole resource (as GET
/// returns it, or an `apply -f` manifest) of which only `spec` is read. The same spec again
/// changes nothing (200, same generation). With `If-Match`, a missing instance is a 404
/// rather than a create.
#[utoipa::path(
    put,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}",
    tag = "instances",
    operation_id = "putInstance",
    params(InstancePath, IfMatch),
    request_body = PutBody,
    responses(
        (status = 200, description = "Replaced (or unchanged).", body = InstanceView,
            headers(("ETag" = String, description = "The resource version, for `If-Match`."))),
        (status = 201, description = "Created.", body = InstanceView,
            headers(
                ("Location" = String, description = "The new instance's URL."),
                ("ETag" = String, description = "The resource version, for `If-Match`."),
            )),
        PutErrors,
    )
)]
pub async fn put(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    IfMatch(expected): IfMatch,
    JsonValue(body): JsonValue,
) -> Result<Response, ApiError> {
    let spec = validated(spec_from_body(&key, body)?)?;
    // A create races with another create at most once; then it is a replace.
    for _ in 0..2 {
        let current = app.store.get(&key).await?;
        let Some(_) = current else {
            if expected.is_some() {
                return Err(ApiError::InstanceNotFound(key));
            }
            match app
                .store
                .create(Instance::new(key.clone(), spec.clone(), now()))
                .await
            {
                Ok(created) => {
                    app.trigger.now(key);
                    return Ok(resource(StatusCode::CREATED, &created, true));
                }
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let replace = |inst: &mut Instance| replace_spec(inst, &spec);
        let updated = app
            .store
            .update(&key, expected.as_deref(), &replace)
            .await?;
        if updated.change == Change::Changed {
            app.trigger.now(key);
        }
        return Ok(resource(StatusCode::OK, &updated.instance, false));
    }
    Err(ApiError::Unavailable(
        "create and replace kept racing".into(),
    ))
}

/// Replaces the spec, keeping the server-managed `restore` (set only by `POST …/restore`).
fn replace_spec(inst: &mut Instance, spec: &Spec) -> Result<Change, Rejection> {
    if inst.is_deleted() {
        return Err(Rejection::InvalidTransition(
            "the instance is being deleted; its spec can no longer change".into(),
        ));
    }
    let mut next = spec.clone();
    next.restore = inst.spec.restore.clone();
    if next == inst.spec {
        return Ok(Change::Unchanged);
    }
    inst.spec = next;
    Ok(Change::Changed)
}

/// Top-level keys a whole-resource body may carry besides `spec`; they are not read.
const RESOURCE_KEYS: [&str; 8] = [
    "spec",
    "tenantId",
    "instanceId",
    "metadata",
    "status",
    "_links",
    "apiVersion",
    "kind",
];

/// The PUT body: a bare [`Spec`], or a resource whose top-level keys are
/// [`RESOURCE_KEYS`] (only `spec` is read; `tenantId`/`instanceId`, if given, must match
/// the path).
pub struct PutBody;

impl PartialSchema for PutBody {
    fn schema() -> RefOr<Schema> {
        let spec = || Ref::from_schema_name(Spec::name());
        let mut resource = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("Resource"))
            .description(Some(
                "A whole resource (as GET returns it, or a manifest): only `spec` is read; \
                 `tenantId` and `instanceId`, at the top or in `metadata`, must match the path.",
            ))
            .required("spec")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for key in RESOURCE_KEYS {
            let ignored = |note: &str| {
                ObjectBuilder::new()
                    .schema_type(SchemaType::AnyValue)
                    .description(Some(note))
            };
            resource = match key {
                "spec" => resource.property(key, spec()),
                "tenantId" | "instanceId" => {
                    resource.property(key, ignored("Not read; if present, must match the path."))
                }
                _ => resource.property(key, ignored("Not read.")),
            };
        }
        OneOfBuilder::new()
            .item(spec())
            .item(resource)
            .description(Some("A bare spec, or a whole resource."))
            .into()
    }
}

impl ToSchema for PutBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Spec::name().into(), Spec::schema()));
        <Spec as ToSchema>::schemas(schemas);
    }
}

fn spec_from_body(key: &InstanceKey, body: serde_json::Value) -> Result<Spec, ApiError> {
    let serde_json::Value::Object(mut obj) = body else {
        return Err(ApiError::field("body", "expected a JSON object"));
    };
    let Some(spec) = obj.remove("spec") else {
        return from_value(serde_json::Value::Object(obj));
    };
    if let Some(unknown) = obj.keys().find(|k| !RESOURCE_KEYS.contains(&k.as_str())) {
        return Err(ApiError::field(
            super::extract::truncate(unknown),
            "unknown field in a resource body",
        ));
    }
    let metadata = obj.get("metadata");
    for (field, want) in [
        ("tenantId", key.tenant_id.as_str()),
        ("instanceId", key.instance_id.as_str()),
    ] {
        let named = [obj.get(field), metadata.and_then(|m| m.get(field))];
        for given in named.into_iter().flatten() {
            if given.as_str() != Some(want) {
                return Err(ApiError::field(
                    field,
                    format!("does not match the path ({want})"),
                ));
            }
        }
    }
    from_value(spec).map_err(|e| match e {
        ApiError::Validation { mut fields, .. } => {
            for f in &mut fields {
                f.field = format!("spec.{}", f.field);
            }
            ApiError::fields(fields)
        }
        other => other,
    })
}

fn validated(spec: Spec) -> Result<Spec, ApiError> {
    let errors = validate_spec(&spec);
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(ApiError::fields(errors))
    }
}

documented_errors!(GetErrors = [ValidationError, InstanceNotFound, ServiceUnavailable]);

/// Get an instance
///
/// The resource: metadata, spec, status and the `_links` valid in its current state.
#[utoipa::path(
    get,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}",
    tag = "instances",
    operation_id = "getInstance",
    params(InstancePath),
    responses(
        (status = 200, description = "The instance.", body = InstanceView,
            headers(("ETag" = String, description = "The resource version, for `If-Match`."))),
        GetErrors,
    )
)]
pub async fn get_one(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
) -> Result<Response, ApiError> {
    let inst = load(&app, &key).await?;
    Ok(resource(StatusCode::OK, &inst, false))
}

/// Get an instance's observed state
///
/// Phase, task counts, ECS deployment and health status, tasks, conditions and
/// generations, flattened.
#[utoipa::path(
    get,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/status",
    tag = "instances",
    operation_id = "getInstanceStatus",
    params(InstancePath),
    responses(
        (status = 200, description = "The observed state.", body = StatusView,
            headers(("ETag" = String, description = "The resource version, for `If-Match`."))),
        GetErrors,
    )
)]
pub async fn status(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
) -> Result<Response, ApiError> {
    let inst = load(&app, &key).await?;
    let live = app.live_tasks.of(app.cloud.as_ref(), &inst).await;
    let mut view = StatusView::new(&inst);
    if let Some((tasks, at)) = &live {
        view.tasks = tasks;
        view.tasks_observed_at = Some(*at);
    }
    let mut res = axum::Json(view).into_response();
    set_etag(&mut res, &inst);
    Ok(res)
}

/// `?limit&nextToken`. `limit` is read as a string so a bad one gets our error, not serde's.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    limit: Option<String>,
    next_token: Option<String>,
}

/// Page sizes of the instance lists.
pub const INSTANCE_PAGE: PageLimit = PageLimit {
    default: 50,
    max: 1000,
};

impl IntoParams for ListQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![limit_param(INSTANCE_PAGE), next_token_param(None)]
    }
}

documented_errors!(ListErrors = [ValidationError, ServiceUnavailable]);

/// List a tenant's instances
///
/// In id order, paged.
#[utoipa::path(
    get,
    path = "/v1.0/tenants/{tenantId}/instances",
    tag = "instances",
    operation_id = "listInstances",
    params(TenantPath, ListQuery),
    responses((status = 200, description = "A page of instances.", body = ListView), ListErrors)
)]
pub async fn list(
    State(app): State<AppState>,
    TenantPath(tenant): TenantPath,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_page(&app, Some(&tenant), q).await
}

async fn list_page(
    app: &AppState,
    tenant: Option<&TenantId>,
    q: ListQuery,
) -> Result<Response, ApiError> {
    let limit = parse_limit(q.limit.as_deref(), INSTANCE_PAGE)?;
    let after = match q.next_token.as_deref() {
        None | Some("") => None,
        Some(token) => Some(
            decode_token(token)
                .filter(|k| tenant.is_none_or(|t| &k.tenant_id == t))
                .ok_or_else(|| ApiError::field("nextToken", "is not a token this list returned"))?,
        ),
    };
    let page = app.store.list(tenant, PageRequest { limit, after }).await?;
    let next_token = page.next.as_ref().map(encode_token);
    let base = tenant.map_or_else(|| "/v1.0/instances".to_owned(), collection_href);
    let mut links = Links::new();
    links.insert(
        "self",
        Link {
            href: base.clone(),
            method: None,
        },
    );
    if tenant.is_some() {
        links.insert(
            "create",
            Link {
                href: base.clone(),
                method: Some("POST"),
            },
        );
    }
    if let Some(t) = &next_token {
        links.insert(
            "next",
            Link {
                href: format!("{base}?limit={limit}&nextToken={t}"),
                method: None,
            },
        );
    }
    let view = ListView {
        instances: page.items.iter().map(InstanceView::new).collect(),
        next_token,
        links,
    };
    Ok(axum::Json(view).into_response())
}

fn encode_token(key: &InstanceKey) -> String {
    URL_SAFE_NO_PAD.encode(key.path())
}

fn decode_token(token: &str) -> Option<InstanceKey> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    InstanceKey::parse_path(std::str::from_utf8(&bytes).ok()?)
}

documented_errors!(
    DeleteErrors = [
        ValidationError,
        InstanceNotFound,
        PreconditionFailed,
        ServiceUnavailable,
    ]
);

/// Delete an instance
///
/// Requests the ordered teardown (service, access point, final database snapshot,
/// database, log group). Idempotent: deleting again answers 202 and changes nothing.
#[utoipa::path(
    delete,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}",
    tag = "instances",
    operation_id = "deleteInstance",
    params(InstancePath, IfMatch),
    responses(
        (status = 202, description = "Deletion recorded.", body = DeleteAccepted,
            headers(("ETag" = String, description = "The resource version, for `If-Match`."))),
        DeleteErrors,
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    IfMatch(expected): IfMatch,
) -> Result<Response, ApiError> {
    let at = now();
    let mark = |inst: &mut Instance| {
        if inst.is_deleted() {
            return Ok(Change::Unchanged);
        }
        inst.metadata.deletion_requested_at = Some(at);
        Ok(Change::Changed)
    };
    let updated = app.store.update(&key, expected.as_deref(), &mark).await?;
    if updated.change == Change::Changed {
        app.trigger.now(key.clone());
    }
    let inst = &updated.instance;
    let body = DeleteAccepted::new(inst, app.retention_days);
    let mut res = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    set_etag(&mut res, inst);
    Ok(res)
}

/// Reconcile an instance now
///
/// Instead of waiting for the periodic resync. `status.lastHandledReconcileRequest` shows
/// the request id once a pass has handled it.
#[utoipa::path(
    post,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/reconcile",
    tag = "lifecycle",
    operation_id = "reconcileInstance",
    params(InstancePath),
    responses(
        (status = 202, description = "Requested.", body = ReconcileAccepted),
        GetErrors,
    )
)]
pub async fn reconcile_one(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
) -> Result<Response, ApiError> {
    let request = new_reconcile_request();
    let marked = app
        .store
        .request_reconcile(std::slice::from_ref(&key), &request)
        .await?;
    if marked == 0 {
        return Err(ApiError::InstanceNotFound(key));
    }
    app.trigger.now(key.clone());
    let body = ReconcileAccepted::new(&key, request.request_id);
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

documented_errors!(ReconcileAllErrors = [ServiceUnavailable]);

/// Reconcile every instance now
///
/// Every tenant's instances, except deprovisioned ones (operators).
#[utoipa::path(
    post,
    path = "/v1.0/reconcile",
    tag = "operator",
    operation_id = "reconcileAll",
    responses(
        (status = 202, description = "Requested.", body = ReconcileManyAccepted),
        ReconcileAllErrors,
    )
)]
pub async fn reconcile_all(State(app): State<AppState>) -> Result<Response, ApiError> {
    reconcile_many(&app, None).await
}

/// Reconcile a tenant's instances now
///
/// Every instance of the tenant, except deprovisioned ones.
#[utoipa::path(
    post,
    path = "/v1.0/tenants/{tenantId}/reconcile",
    tag = "lifecycle",
    operation_id = "reconcileTenant",
    params(TenantPath),
    responses(
        (status = 202, description = "Requested.", body = ReconcileManyAccepted),
        ListErrors,
    )
)]
pub async fn reconcile_tenant(
    State(app): State<AppState>,
    TenantPath(tenant): TenantPath,
) -> Result<Response, ApiError> {
    reconcile_many(&app, Some(&tenant)).await
}

async fn reconcile_many(app: &AppState, tenant: Option<&TenantId>) -> Result<Response, ApiError> {
    let request = new_reconcile_request();
    let mut page = PageRequest {
        limit: 1000,
        after: None,
    };
    let mut count = 0;
    loop {
        let result = app.store.list(tenant, page.clone()).await?;
        let keys: Vec<InstanceKey> = result
            .items
            .iter()
            .filter(|i| i.status.phase != crate::model::Phase::Deprovisioned)
            .map(Instance::key)
            .collect();
        count += app.store.request_reconcile(&keys, &request).await?;
        for key in keys {
            app.trigger.now(key);
        }
        match result.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let body = ReconcileManyAccepted {
        request_id: request.request_id,
        instances: count,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// List every tenant's instances
///
/// In tenant and id order, paged like a tenant's list (operators).
#[utoipa::path(
    get,
    path = "/v1.0/instances",
    tag = "operator",
    operation_id = "listAllInstances",
    params(ListQuery),
    responses((status = 200, description = "A page of instances.", body = ListView), ListErrors)
)]
pub async fn list_all(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_page(&app, None, q).await
}

fn new_reconcile_request() -> ReconcileRequest {
    ReconcileRequest {
        request_id: format!("rr-{}", uuid::Uuid::new_v4().simple()),
        requested_at: now(),
    }
}

pub async fn load(app: &AppState, key: &InstanceKey) -> Result<Instance, ApiError> {
    app.store
        .get(key)
        .await?
        .ok_or_else(|| ApiError::InstanceNotFound(key.clone()))
}

/// The resource, with ETag (and Location on create).
pub fn resource(status: StatusCode, inst: &Instance, location: bool) -> Response {
    let mut res = (status, axum::Json(InstanceView::new(inst))).into_response();
    set_etag(&mut res, inst);
    if location && let Ok(v) = HeaderValue::from_str(&instance_href(&inst.key())) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

pub fn set_etag(res: &mut Response, inst: &Instance) {
    if let Ok(v) = HeaderValue::from_str(&etag(&inst.metadata.resource_version)) {
        res.headers_mut().insert(header::ETAG, v);
    }
}
