//! Liveness and readiness. `/healthz` says the process serves HTTP; `/readyz` also checks
//! that the desired-state store answers, so a load balancer stops sending writes that would
//! only fail.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::store::PageRequest;

pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

pub async fn readyz(State(app): State<AppState>) -> Response {
    let probe = PageRequest {
        limit: 1,
        after: None,
    };
    match app.store.list(None, probe).await {
        Ok(_) => axum::Json(json!({ "status": "ready", "store": "ok" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not ready", "store": e.to_string() })),
        )
            .into_response(),
    }
}
