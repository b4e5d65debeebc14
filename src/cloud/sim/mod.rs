//! STUB: replaced by the simulated cloud.
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::*;

/// Settings of the simulated cloud.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Divides every simulated duration (latencies, task start/stop, RDS transitions).
    pub speed: f64,
    /// Per-service request rate limits.
    pub limits: SimLimits,
    /// Injected faults.
    pub faults: Faults,
}

/// A token bucket per service: `rate` requests per second sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimLimits {
    pub ecs: RateLimit,
    pub efs: RateLimit,
    pub rds: RateLimit,
    pub logs: RateLimit,
}

/// Fault injection, all off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Fraction of calls answered with a throttling error regardless of rate (0..=1).
    #[serde(default)]
    pub throttle_rate: f64,
    /// Fraction of calls answered with a 5xx (0..=1).
    #[serde(default)]
    pub error_rate: f64,
    /// Fraction of calls that take `latency_spike_ms` longer (0..=1).
    #[serde(default)]
    pub latency_spike_rate: f64,
    #[serde(default)]
    pub latency_spike_ms: u64,
    /// Multiplies RDS transition durations (>= 1 makes RDS slower).
    #[serde(default)]
    pub slow_rds_factor: f64,
}

pub struct SimCloud;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulated cloud file: {0}")]
    Persist(String),
    #[error("no such simulated resource: {0}")]
    NotFound(String),
}

impl SimCloud {
    pub fn open(_path: &Path, _config: SimConfig) -> Result<Self, SimError> {
        todo!()
    }
    pub fn in_memory(_config: SimConfig) -> Self {
        todo!()
    }
    pub fn inventory(&self) -> InventorySnapshot {
        todo!()
    }
    pub fn stats(&self) -> SimStats {
        todo!()
    }
    pub fn call_log(&self) -> Vec<CallRecord> {
        todo!()
    }
    pub fn set_faults(&self, _faults: Faults) {
        todo!()
    }
    pub fn set_service_desired_count(&self, _key: &InstanceKey, _n: u32) -> Result<(), SimError> {
        todo!()
    }
    pub fn delete_access_point_of(&self, _key: &InstanceKey) -> Result<(), SimError> {
        todo!()
    }
    pub fn stop_database_of(&self, _key: &InstanceKey) -> Result<(), SimError> {
        todo!()
    }
    pub fn kill_tasks(&self, _key: &InstanceKey, _n: u32) -> Result<(), SimError> {
        todo!()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InventorySnapshot {}
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimStats {}
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {}

#[async_trait]
impl Cloud for SimCloud {
    async fn observe(&self, _keys: &[InstanceKey]) -> CloudResult<Vec<Observed>> {
        todo!()
    }
    async fn describe_tasks(&self, _key: &InstanceKey) -> CloudResult<Vec<ObservedTask>> {
        todo!()
    }
    async fn apply(
        &self,
        _key: &InstanceKey,
        _step: &Step,
        _token: &ClientToken,
    ) -> CloudResult<()> {
        todo!()
    }
    fn poll_interval(&self, _waiting_on: WaitingOn) -> Duration {
        todo!()
    }
}
impl Default for SimConfig {
    fn default() -> Self {
        todo!()
    }
}
