//! Liveness, readiness and metrics. `/healthz` says the process serves HTTP; `/readyz` also
//! checks that the desired-state store answers, so a load balancer stops sending writes that
//! would only fail, and says which shards this replica holds; `/metrics` is Prometheus's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::store::PageRequest;

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// `GET /readyz`: the store's state, also in the 503 (which is not an `ErrorBody`: probes
/// read the status code).
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: &'static str,
    /// `ok`, or why the store did not answer.
    pub store: String,
    /// This replica's name when it leases shards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The shards this replica reconciles (all of them when it does not lease).
    pub shards_held: Vec<u32>,
    /// How many shards there are.
    pub shards: u32,
}

/// Liveness
///
/// The process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = Health))
)]
pub async fn healthz() -> Response {
    axum::Json(Health { status: "ok" }).into_response()
}

/// Readiness
///
/// The desired-state store answers, so writes can succeed.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready: the store does not answer.", body = Readiness),
    )
)]
pub async fn readyz(State(app): State<AppState>) -> Response {
    let probe = PageRequest {
        limit: 1,
        after: None,
    };
    let shards = app.reconciler.shards();
    let readiness = |status, store| Readiness {
        status,
        store,
        replica: shards.replica_id().map(str::to_owned),
        shards_held: shards.held(),
        shards: shards.count(),
    };
    match app.store.list(None, probe).await {
        Ok(_) => axum::Json(readiness("ready", "ok".into())).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(readiness("not ready", e.to_string())),
        )
            .into_response(),
    }
}

/// Prometheus metrics
///
/// The text exposition format: `controller_runtime_*`, `workqueue_*`, `aws_api_*`,
/// `wpfleet_*`, `leader_election_master_status` and `http_*` (no label per tenant or
/// instance).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    operation_id = "metrics",
    responses((status = 200, description = "Metrics in the Prometheus text format.",
        body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(State(app): State<AppState>) -> Response {
    app.reconciler.refresh_metrics();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.reconciler.metrics().encode(),
    )
        .into_response()
}
