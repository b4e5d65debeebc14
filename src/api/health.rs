//! Liveness and readiness. `/healthz` says the process serves HTTP; `/readyz` also checks
//! that the desired-state store answers, so a load balancer stops sending writes that would
//! only fail.

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
    match app.store.list(None, probe).await {
        Ok(_) => axum::Json(Readiness {
            status: "ready",
            store: "ok".into(),
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Readiness {
                status: "not ready",
                store: e.to_string(),
            }),
        )
            .into_response(),
    }
}
