//! Instance handlers: thin. Each validates, makes one conditional store write (or read),
//! triggers the reconciler, and renders. No cloud call and no planning happens here.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{
    ApiQuery, IfMatch, InstancePath, JsonBody, JsonValue, TenantPath, from_value, parse_instance,
};
use super::views::{
    InstanceView, Link, Links, ListView, StatusView, collection_href, etag, instance_href,
};
use crate::model::{
    Configuration, DesiredState, Instance, InstanceId, InstanceKey, ReconcileRequest, Rejection,
    Spec, TenantId, Tier, now, validate_spec,
};
use crate::store::{Change, PageRequest, StoreError};

/// The platform's create body, plus an optional `instanceId` and `state`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    #[serde(default)]
    pub instance_id: Option<String>,
    pub organization_name: String,
    pub contact_email: String,
    pub tier: Tier,
    #[serde(default)]
    pub state: DesiredState,
    #[serde(default)]
    pub configuration: Configuration,
}

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

/// Declarative create-or-replace. The body is a bare spec, or a whole resource (as GET
/// returns it, or an `apply -f` manifest) of which only `spec` is read.
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

pub async fn get_one(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
) -> Result<Response, ApiError> {
    let inst = load(&app, &key).await?;
    Ok(resource(StatusCode::OK, &inst, false))
}

pub async fn status(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
) -> Result<Response, ApiError> {
    let inst = load(&app, &key).await?;
    let mut res = axum::Json(StatusView::new(&inst)).into_response();
    set_etag(&mut res, &inst);
    Ok(res)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    limit: Option<String>,
    next_token: Option<String>,
}

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

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
    let limit = parse_limit(q.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
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

pub fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::field(
            "limit",
            format!("must be an integer from 1 to {max}"),
        )),
    }
}

fn encode_token(key: &InstanceKey) -> String {
    URL_SAFE_NO_PAD.encode(key.path())
}

fn decode_token(token: &str) -> Option<InstanceKey> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    InstanceKey::parse_path(std::str::from_utf8(&bytes).ok()?)
}

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
    let status = if inst.status.phase == crate::model::Phase::Deprovisioned {
        "DEPROVISIONED"
    } else {
        "DEPROVISIONING"
    };
    let body = json!({
        "status": status,
        "dataRetentionDays": app.retention_days,
        "deletionRequestedAt": inst.metadata.deletion_requested_at,
        "_links": super::views::instance_links(inst),
    });
    let mut res = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    set_etag(&mut res, inst);
    Ok(res)
}

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
    let body = json!({
        "requestId": request.request_id,
        "_links": { "status": { "href": format!("{}/status", instance_href(&key)) },
                    "instance": { "href": instance_href(&key) } },
    });
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// Reconcile-now for every instance (operators).
pub async fn reconcile_all(State(app): State<AppState>) -> Result<Response, ApiError> {
    reconcile_many(&app, None).await
}

/// Reconcile-now for every instance of one tenant.
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
    let body = json!({ "requestId": request.request_id, "instances": count });
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// Every tenant's instances (operators), paged like a tenant's list.
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
