//! wpfleet: a desired-state reconciliation controller for hosted WordPress instances.
//!
//! The API records only *desired state*; a reconciler converges the cloud towards it and
//! writes what it observed into each instance's status.
//!
//! # Layout
//! * `model`: the `Instance` resource, conditions, validation. No I/O.
//! * `store`: the `Store` trait (desired state + status) and its embedded implementation.
//! * `cloud`: the `Cloud` trait (observe + idempotent steps) and the simulated cloud.
//! * `reconcile`: the pure `plan()`, the work queue, and the runner that drives them.
//! * `api`: the HTTP API (axum); only ever writes desired state.
//! * `server`: wires the pieces together for `wpfleet serve`.
//! * `cli`: the kubectl-style client (`wpfleet apply`, `get`, `describe`, …); it talks to
//!   the API over HTTP only.

pub mod api;
pub mod bench;
pub mod cli;
pub mod cloud;
pub mod metrics;
pub mod model;
pub mod reconcile;
pub mod server;
pub mod store;
pub mod telemetry;
