//! The HTTP API (axum). It validates requests and writes *desired state* only; the
//! reconciler does the cloud work.
//!
//! Invariants:
//! * no handler calls a `Cloud` mutation or `plan()`;
//! * every error a user sees is an `ApiError` (typed JSON), including unknown routes, wrong
//!   methods, oversized bodies and panics;
//! * a request that fails changes nothing.

pub mod error;
pub mod extract;
mod health;
mod instances;
mod sim;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;

use crate::cloud::sim::SimCloud;
use crate::reconcile::Trigger;
use crate::store::Store;
use error::ApiError;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub trigger: Trigger,
    /// Present when running on the simulated cloud: enables `/v1.0/sim/…`.
    pub sim: Option<Arc<SimCloud>>,
    /// Days the data (final snapshot, record) is kept after a delete.
    pub retention_days: u32,
}

pub fn router(app: AppState) -> Router {
    let instance = "/v1.0/tenants/{tenantId}/instances/{instanceId}";
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/v1.0/tenants/{tenantId}/instances",
            get(instances::list).post(instances::create),
        )
        .route(
            instance,
            get(instances::get_one)
                .put(instances::put)
                .delete(instances::delete),
        )
        .route(&format!("{instance}/status"), get(instances::status))
        .route(
            &format!("{instance}/reconcile"),
            post(instances::reconcile_one),
        )
        .route("/v1.0/reconcile", post(instances::reconcile_all));
    if app.sim.is_some() {
        router = router.merge(sim::routes());
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_errors))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(app)
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
