//! `/v1.0/sim/…`: only when running on the simulated cloud. Lets a person (or a test) look
//! at the simulated inventory and call counts, change resources behind the controller's
//! back, and inject faults, so drift repair and fault handling can be shown live.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{InstancePath, JsonBody};
use crate::cloud::sim::{Faults, SimCloud, SimError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1.0/sim/inventory", get(inventory))
        .route("/v1.0/sim/stats", get(stats))
        .route("/v1.0/sim/calls", get(calls))
        .route("/v1.0/sim/faults", put(set_faults))
        .route(
            "/v1.0/sim/tenants/{tenantId}/instances/{instanceId}/drift",
            post(drift),
        )
}

fn sim(app: &AppState) -> Result<&SimCloud, ApiError> {
    app.sim
        .as_deref()
        .ok_or_else(|| ApiError::RouteNotFound("/v1.0/sim".into()))
}

async fn inventory(State(app): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(sim(&app)?.inventory()).into_response())
}

async fn stats(State(app): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(sim(&app)?.stats()).into_response())
}

async fn calls(State(app): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(sim(&app)?.call_log()).into_response())
}

async fn set_faults(
    State(app): State<AppState>,
    JsonBody(faults): JsonBody<Faults>,
) -> Result<Response, ApiError> {
    for (field, rate) in [
        ("throttleRate", faults.throttle_rate),
        ("errorRate", faults.error_rate),
        ("latencySpikeRate", faults.latency_spike_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ApiError::field(field, "must be between 0 and 1"));
        }
    }
    if !(faults.slow_rds_factor == 0.0 || (1.0..=1000.0).contains(&faults.slow_rds_factor)) {
        return Err(ApiError::field(
            "slowRdsFactor",
            "must be 0 (off) or between 1 and 1000",
        ));
    }
    if faults.latency_spike_ms > 60_000 {
        return Err(ApiError::field("latencySpikeMs", "must be at most 60000"));
    }
    sim(&app)?.set_faults(faults.clone());
    Ok(axum::Json(json!({ "faults": faults })).into_response())
}

/// One change made behind the controller's back.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Drift {
    /// Set the ECS service's desired count.
    #[serde(default)]
    pub service_desired_count: Option<u32>,
    /// Delete the EFS access point.
    #[serde(default)]
    pub delete_access_point: bool,
    /// Stop the RDS database.
    #[serde(default)]
    pub stop_database: bool,
    /// Stop this many running tasks (ECS replaces them).
    #[serde(default)]
    pub kill_tasks: Option<u32>,
}

async fn drift(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
    JsonBody(d): JsonBody<Drift>,
) -> Result<Response, ApiError> {
    let sim = sim(&app)?;
    let not_found = |e: SimError| ApiError::InvalidTransition(e.to_string());
    if let Some(n) = d.service_desired_count {
        if n > 100 {
            return Err(ApiError::field(
                "serviceDesiredCount",
                "must be at most 100",
            ));
        }
        sim.set_service_desired_count(&key, n).map_err(not_found)?;
    }
    if d.delete_access_point {
        sim.delete_access_point_of(&key).map_err(not_found)?;
    }
    if d.stop_database {
        sim.stop_database_of(&key).map_err(not_found)?;
    }
    if let Some(n) = d.kill_tasks {
        sim.kill_tasks(&key, n.min(100)).map_err(not_found)?;
    }
    Ok(axum::Json(json!({ "applied": true })).into_response())
}
