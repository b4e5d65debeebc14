//! The HTTP API (axum). It validates requests and writes *desired state* only; the
//! reconciler does the cloud work.
//!
//! Invariants:
//! * no handler calls a `Cloud` mutation or `plan()`;
//! * every error a user sees is an `ApiError` (typed JSON), including unknown routes, wrong
//!   methods, oversized bodies and panics;
//! * a request that fails changes nothing.

pub mod auth;
mod backups;
pub mod error;
mod events;
pub mod extract;
mod health;
mod instances;
pub mod live_tasks;
mod logs;
pub mod openapi;
pub mod sim;
mod verbs;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;

use crate::cloud::Cloud;
use crate::cloud::sim::SimCloud;
use crate::reconcile::Trigger;
use crate::store::Store;
use error::ApiError;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// For reads only (logs); the API never mutates the cloud.
    pub cloud: Arc<dyn Cloud>,
    pub auth: Arc<auth::Auth>,
    pub trigger: Trigger,
    /// For `/metrics` and `/readyz` (queue, shards); handlers never drive it.
    pub reconciler: Arc<crate::reconcile::Reconciler>,
    /// Present when running on the simulated cloud: enables `/v1.0/sim/…`.
    pub sim: Option<Arc<SimCloud>>,
    /// Days the data (final snapshot, record) is kept after a delete.
    pub retention_days: u32,
    /// The status endpoint's task listings, shared between requests.
    pub live_tasks: Arc<live_tasks::LiveTasks>,
}

pub fn router(app: AppState) -> Router {
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::serve));
    let mut operator = Router::new()
        .route("/v1.0/reconcile", post(instances::reconcile_all))
        .route("/v1.0/instances", get(instances::list_all));
    if app.sim.is_some() {
        operator = operator.merge(sim::routes());
    }
    let operator = operator.route_layer(middleware::from_fn_with_state(
        app.clone(),
        auth::operator_guard,
    ));
    let tenant = tenant_routes().route_layer(middleware::from_fn_with_state(
        app.clone(),
        auth::tenant_guard,
    ));
    open.merge(operator)
        .merge(tenant)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(middleware::from_fn(read_body_first))
        .layer(middleware::from_fn(log_errors))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(app)
}

fn tenant_routes() -> Router<AppState> {
    let tenant = "/v1.0/tenants/{tenantId}";
    let instance = "/v1.0/tenants/{tenantId}/instances/{instanceId}";
    let at = |suffix: &str| format!("{instance}/{suffix}");
    Router::new()
        .route(
            &format!("{tenant}/instances"),
            get(instances::list).post(instances::create),
        )
        .route(
            &format!("{tenant}/reconcile"),
            post(instances::reconcile_tenant),
        )
        .route(
            instance,
            get(instances::get_one)
                .put(instances::put)
                .delete(instances::delete),
        )
        .route(
            &at("status"),
            get(instances::status).post(verbs::status_action),
        )
        .route(&at("reconcile"), post(instances::reconcile_one))
        .route(&at("scale"), post(verbs::scale))
        .route(&at("suspend"), post(verbs::suspend))
        .route(&at("resume"), post(verbs::resume))
        .route(&at("backup"), post(verbs::backup))
        .route(&at("backups"), get(backups::list))
        .route(&at("backups/{backupId}"), get(backups::get_one))
        .route(&at("restore"), post(verbs::restore))
        .route(&at("logs"), get(logs::logs))
        .route(&at("events"), get(events::list))
}

/// How much of an oversized body is read (and thrown away) before the 413 goes out.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Reads the whole request body before routing, whether the route wants one or not. A
/// body left unread makes hyper close the connection with data still unread, which resets
/// it under the response: the client saw a truncated answer (a GET of `/openapi.json` with
/// a body, found by tests/reliability_hostile.rs). An oversized body is read up to
/// [`DRAIN_LIMIT`] and answered 413 (beyond that the connection is closed).
async fn read_body_first(req: Request, next: Next) -> Response {
    use futures::StreamExt;
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let (mut kept, mut total) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return ApiError::field("body", "the request body could not be read").into_response();
        };
        total += chunk.len();
        if total <= extract::MAX_BODY_BYTES {
            kept.extend_from_slice(&chunk);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > extract::MAX_BODY_BYTES {
        return ApiError::PayloadTooLarge {
            limit: extract::MAX_BODY_BYTES,
        }
        .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(kept)))
        .await
}

async fn not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound(extract::truncate(req.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::Internal("panic".into()).into_response()
}

/// `http_requests_total` and `http_request_duration_seconds`, labelled by the route's
/// template (`/v1.0/tenants/{tenantId}/…`), never by the concrete path.
async fn count_requests(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    let m = app.reconciler.metrics();
    m.http_requests
        .with_label_values(&[&method, &route, res.status().as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    res
}

/// Logs each error response once, with its server-side cause.
async fn log_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    if let Some(err) = res.extensions().get::<Arc<ApiError>>() {
        if res.status().is_server_error() {
            tracing::error!(%method, path, status = res.status().as_u16(), error = %err, "request failed");
        } else {
            tracing::debug!(%method, path, status = res.status().as_u16(), code = err.code(), "request rejected");
        }
    }
    res
}
