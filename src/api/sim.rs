//! `/v1.0/sim/…`: only when running on the simulated cloud. Lets a person (or a test) look
//! at the simulated inventory and call counts, change resources behind the controller's
//! back, and inject faults, so drift repair and fault handling can be shown live.
//!
//! The simulated cloud's own types (`cloud::sim`) are not described in the OpenAPI document
//! beyond "an object": that module belongs to the simulation, not to this API.

use std::borrow::Cow;

use axum::Router;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::AppState;
use super::error::ApiError;
use super::extract::{InstancePath, JsonBody};
use super::openapi::documented_errors;
use crate::cloud::sim::{Faults, SimCloud, SimError};

/// The simulated cloud a handler acts on; `None` when the server runs on another cloud.
#[derive(Clone)]
pub struct SimHandle(pub Option<Arc<SimCloud>>);

impl FromRef<AppState> for SimHandle {
    fn from_ref(app: &AppState) -> Self {
        SimHandle(app.sim.clone())
    }
}

/// The `/v1.0/sim` routes, for any router state that can hand out the simulated cloud
/// (the API's, or `wpfleet sim-cloud`'s own).
pub fn routes<S>() -> Router<S>
where
    SimHandle: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
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

fn sim(handle: &SimHandle) -> Result<&SimCloud, ApiError> {
    handle
        .0
        .as_deref()
        .ok_or_else(|| ApiError::RouteNotFound("/v1.0/sim".into()))
}

// Without the simulated cloud these routes are not mounted at all: 404 NOT_FOUND.
documented_errors!(ReadErrors = [NotFound]);

/// The simulated inventory
///
/// Every simulated resource (ECS services and tasks, EFS access points, RDS databases and
/// snapshots, log groups, backups) in the simulation's own shape.
#[utoipa::path(
    get,
    path = "/v1.0/sim/inventory",
    tag = "simulated cloud",
    operation_id = "simInventory",
    responses(
        (status = 200, description = "The simulated cloud's inventory (its own shape).",
            body = Object),
        ReadErrors,
    )
)]
pub async fn inventory(State(app): State<SimHandle>) -> Result<Response, ApiError> {
    Ok(axum::Json(sim(&app)?.inventory()).into_response())
}

/// Simulated call counts
///
/// Calls per service and operation, throttled and failed calls.
#[utoipa::path(
    get,
    path = "/v1.0/sim/stats",
    tag = "simulated cloud",
    operation_id = "simStats",
    responses(
        (status = 200, description = "Call counts (the simulation's own shape).", body = Object),
        ReadErrors,
    )
)]
pub async fn stats(State(app): State<SimHandle>) -> Result<Response, ApiError> {
    Ok(axum::Json(sim(&app)?.stats()).into_response())
}

/// Simulated call log
///
/// The most recent calls to the simulated cloud, oldest first.
#[utoipa::path(
    get,
    path = "/v1.0/sim/calls",
    tag = "simulated cloud",
    operation_id = "simCalls",
    responses(
        (status = 200, description = "Recent calls (the simulation's own shape).",
            body = Vec<Object>),
        ReadErrors,
    )
)]
pub async fn calls(State(app): State<SimHandle>) -> Result<Response, ApiError> {
    Ok(axum::Json(sim(&app)?.call_log()).into_response())
}

/// The body of `PUT /v1.0/sim/faults`: `cloud::sim::Faults`. That module owns the type and
/// does not describe it, so its properties are read off a serialized default: names and
/// types follow the code.
pub struct FaultsBody;

impl PartialSchema for FaultsBody {
    fn schema() -> RefOr<Schema> {
        let mut schema = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Fault injection, all off (0) by default; absent fields are 0. Rates are \
                 fractions of calls (0 to 1); `slowRdsFactor` is 0 (off) or 1 to 1000; \
                 `latencySpikeMs` at most 60000.",
            ));
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(Faults::default()) {
            for (name, default) in fields {
                let ty = match &default {
                    v if v.is_u64() || v.is_i64() => Type::Integer,
                    v if v.is_number() => Type::Number,
                    v if v.is_boolean() => Type::Boolean,
                    _ => Type::String,
                };
                schema = schema.property(
                    name,
                    ObjectBuilder::new().schema_type(ty).default(Some(default)),
                );
            }
        }
        schema.into()
    }
}

impl ToSchema for FaultsBody {
    fn name() -> Cow<'static, str> {
        "SimFaults".into()
    }
}

documented_errors!(
    FaultsErrors = [
        ValidationError,
        PayloadTooLarge,
        UnsupportedMediaType,
        NotFound,
    ]
);

/// Inject faults into the simulated cloud
///
/// Replaces the fault settings; answers them back as `{"faults": …}`.
#[utoipa::path(
    put,
    path = "/v1.0/sim/faults",
    tag = "simulated cloud",
    operation_id = "simSetFaults",
    request_body = FaultsBody,
    responses(
        (status = 200, description = "The settings now in force, as `{\"faults\": …}`.",
            body = Object),
        FaultsErrors,
    )
)]
pub async fn set_faults(
    State(app): State<SimHandle>,
    JsonBody(faults): JsonBody<Faults>,
) -> Result<Response, ApiError> {
    for (field, rate) in [
        ("throttleRate", faults.throttle_rate),
        ("errorRate", faults.error_rate),
        ("latencySpikeRate", faults.latency_spike_rate),
        ("backupFailureRate", faults.backup_failure_rate),
        ("staleObservationRate", faults.stale_observation_rate),
        ("reorderRate", faults.reorder_rate),
        ("dropTriggerRate", faults.drop_trigger_rate),
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Drift {
    /// Set the ECS service's desired count (at most 100).
    #[serde(default)]
    #[schema(maximum = 100, nullable = false)]
    pub service_desired_count: Option<u32>,
    /// Delete the EFS access point.
    #[serde(default)]
    pub delete_access_point: bool,
    /// Stop the RDS database.
    #[serde(default)]
    pub stop_database: bool,
    /// Stop this many running tasks (ECS replaces them; at most 100 are stopped).
    #[serde(default)]
    #[schema(nullable = false)]
    pub kill_tasks: Option<u32>,
    /// "WordPress writes" this content into the instance's files and database, so a
    /// backup and restore can be checked by what the site serves afterwards.
    #[serde(default)]
    #[schema(max_length = 1000, nullable = false)]
    pub write_data: Option<String>,
}

/// The 200 of a drift.
#[derive(Serialize, ToSchema)]
pub struct DriftApplied {
    /// Always true.
    pub applied: bool,
}

documented_errors!(
    DriftErrors = [
        ValidationError,
        PayloadTooLarge,
        UnsupportedMediaType,
        NotFound,
        InvalidStatusTransition,
    ]
);

/// Change the simulated cloud behind the controller's back
///
/// Applies each requested change in turn; one the simulated resource's state does not allow
/// (or a missing resource) answers 422 INVALID_STATUS_TRANSITION, keeping the changes made
/// before it.
#[utoipa::path(
    post,
    path = "/v1.0/sim/tenants/{tenantId}/instances/{instanceId}/drift",
    tag = "simulated cloud",
    operation_id = "simDrift",
    params(InstancePath),
    request_body = Drift,
    responses((status = 200, description = "Applied.", body = DriftApplied), DriftErrors)
)]
pub async fn drift(
    State(app): State<SimHandle>,
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
    if let Some(data) = &d.write_data {
        if data.chars().count() > 1000 {
            return Err(ApiError::field(
                "writeData",
                "must be at most 1000 characters",
            ));
        }
        sim.write_data(&key, data).map_err(not_found)?;
    }
    Ok(axum::Json(DriftApplied { applied: true }).into_response())
}
