//! The simulated cloud: an in-process stand-in for ECS, EFS, RDS and CloudWatch Logs with
//! AWS's asynchronous behaviour, so the controller runs without an AWS account and tests
//! and demos run fast.
//!
//! What it models, because a reconciler must cope with it:
//! * things take time (an RDS create takes minutes, tasks start in stages), scaled by
//!   [`SimConfig::speed`] with ±20 % jitter per transition;
//! * every call costs latency (20–60 ms ÷ speed, slept before the effect, no lock held);
//! * each service throttles with a token bucket refilled in REAL time, not scaled by speed
//!   ([`SimLimits`]), and [`Faults`] inject throttles, 5xx, latency spikes and slow RDS;
//! * creates are idempotent only by name or client token, as in AWS;
//! * the cloud outlives the controller: [`SimCloud::open`] keeps it in a redb file.
//!
//! # Time model
//! Nothing runs in the background. Each operation stores the absolute wall-clock times
//! (epoch ms) of its transitions when it starts; every read derives the state at "now" from
//! them. In-flight operations therefore continue across a restart by their original times.
//! (Reopening with another `speed` does not rescale operations already in flight.)
//!
//! # Layout
//! * `clock`: wall clock, base durations, scaling and jitter.
//! * `calls`: API operations, latency, rate limits, faults, stats and the call log.
//! * `inventory`: the resource maps and indexes, step dispatch, observation, sweeping.
//! * `ecs`, `efs`, `rds`, `logs`: one resource family each (records, state derivation,
//!   step semantics).
//! * `persist`: write-through to redb on a writer thread with group commit.
//! * `view`: [`InventorySnapshot`] for operators and tests.
//!
//! Invariant: the inventory lock is never held across an await, and never together with
//! the call-book lock.

mod calls;
mod clock;
mod ecs;
mod efs;
mod inventory;
mod logs;
mod persist;
mod rds;
mod view;

// TEMPORARY (lead): sim tests are being rewritten for the new boundary.
// #[cfg(test)]
// mod tests;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use self::calls::{Api, CallBook, Service};
use self::clock::{Ctx, base, duration_from_ms, now_ms, sane_speed};
use self::ecs::MAX_TASKS_PER_SERVICE;
use self::inventory::Inventory;
use self::persist::{Durable, Persister};
use super::names::ResourceNames;
use super::{ClientToken, Cloud, CloudError, CloudResult, Observed, ObservedTask, Step, WaitingOn};
use crate::model::InstanceKey;

pub use self::calls::{CallRecord, MAX_CALL_LOG, OpStats, PersistStats, SimStats};
pub use self::persist::FILE_NAME;
pub use self::view::{
    AccessPointView, DatabaseView, InventorySnapshot, LogGroupView, ServiceView, SnapshotView,
    TaskView,
};

/// Settings of the simulated cloud.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Divides every simulated duration (latencies, task start/stop, RDS transitions).
    pub speed: f64,
    /// Per-service request rate limits (real time; see [`SimLimits`]).
    pub limits: SimLimits,
    /// Injected faults.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            speed: 1.0,
            limits: SimLimits::default(),
            faults: Faults::default(),
        }
    }
}

/// A token bucket per service: `rate` requests per second sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: f64,
}

/// Request budgets per service. They refill in real time and are deliberately NOT divided
/// by `speed`: the AWS budget is what it is, and a sped-up simulation must still show a
/// reconciler that polls too eagerly being throttled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimLimits {
    pub ecs: RateLimit,
    pub efs: RateLimit,
    pub rds: RateLimit,
    pub logs: RateLimit,
}

impl Default for SimLimits {
    fn default() -> Self {
        Self {
            ecs: RateLimit {
                rate: 20.0,
                burst: 40.0,
            },
            efs: RateLimit {
                rate: 10.0,
                burst: 20.0,
            },
            rds: RateLimit {
                rate: 10.0,
                burst: 20.0,
            },
            logs: RateLimit {
                rate: 10.0,
                burst: 20.0,
            },
        }
    }
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
    /// Fraction of calls that take `latency_spike_ms` longer (0..=1). The spike is divided
    /// by `speed` like every other duration.
    #[serde(default)]
    pub latency_spike_rate: f64,
    #[serde(default)]
    pub latency_spike_ms: u64,
    /// Multiplies RDS transition durations (>= 1 makes RDS slower).
    #[serde(default)]
    pub slow_rds_factor: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulated cloud file: {0}")]
    Persist(String),
    #[error("no such simulated resource: {0}")]
    NotFound(String),
    /// A drift helper asked for something the resource's state does not allow.
    #[error("simulated resource is in the wrong state: {0}")]
    InvalidState(String),
}

/// The describe calls `observe` makes, and how many keys each takes.
const OBSERVE_CALLS: [(Api, usize); 5] = [
    (Api::read(Service::Ecs, "DescribeServices"), 10),
    (Api::read(Service::Rds, "DescribeDBInstances"), 100),
    (Api::read(Service::Rds, "DescribeDBSnapshots"), 100),
    (Api::read(Service::Efs, "DescribeAccessPoints"), 100),
    (Api::read(Service::Logs, "DescribeLogGroups"), 50),
];

const LIST_TASKS: Api = Api::read(Service::Ecs, "ListTasks");
const DESCRIBE_TASKS: Api = Api::read(Service::Ecs, "DescribeTasks");

/// `poll_interval` never answers less or more than this.
const MIN_POLL_MS: f64 = 20.0;
const MAX_POLL_MS: f64 = 30_000.0;

pub struct SimCloud {
    speed: f64,
    inventory: Mutex<Inventory>,
    calls: Mutex<CallBook>,
    /// `None` for an in-memory cloud.
    persister: Option<Persister>,
}

impl SimCloud {
    /// Opens (or creates) the simulated cloud kept in `dir/sim-cloud.redb`.
    pub fn open(dir: &Path, config: SimConfig) -> Result<Self, SimError> {
        let mut inventory = Inventory::default();
        let persister = Persister::open(dir, &mut inventory)?;
        Ok(Self::build(config, inventory, Some(persister)))
    }

    /// A simulated cloud that lives only as long as this value.
    pub fn in_memory(config: SimConfig) -> Self {
        Self::build(config, Inventory::default(), None)
    }

    fn build(config: SimConfig, inventory: Inventory, persister: Option<Persister>) -> Self {
        Self {
            speed: sane_speed(config.speed),
            inventory: Mutex::new(inventory),
            calls: Mutex::new(CallBook::new(&config.limits, config.faults)),
            persister,
        }
    }

    /// Every resource as it is now.
    pub fn inventory(&self) -> InventorySnapshot {
        self.lock_inventory().snapshot(now_ms())
    }

    pub fn stats(&self) -> SimStats {
        let mut stats = self.lock_calls().stats();
        if let Some(p) = &self.persister {
            stats.persistence = p.stats();
        }
        stats
    }

    /// The newest calls (at most [`MAX_CALL_LOG`]), oldest first.
    pub fn call_log(&self) -> Vec<CallRecord> {
        self.lock_calls().call_log()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock_calls().set_faults(faults);
    }

    /// Drift: changes the desired count of the key's ECS service behind the controller's
    /// back; ECS launches or stops tasks accordingly.
    pub fn set_service_desired_count(&self, key: &InstanceKey, n: u32) -> Result<(), SimError> {
        if n > MAX_TASKS_PER_SERVICE {
            return Err(SimError::InvalidState(format!(
                "desired count {n} exceeds {MAX_TASKS_PER_SERVICE} tasks per service"
            )));
        }
        let name = ResourceNames::for_key(key).service;
        let (found, durable) = self.mutate(true, |inv, ctx| inv.drift_desired_count(ctx, &name, n));
        durable.wait_blocking().map_err(SimError::Persist)?;
        found.ok_or_else(|| SimError::NotFound(format!("active ECS service {name}")))
    }

    /// Drift: the key's access point disappears at once (deleted by hand). If the key has
    /// several (duplicates), all of them go.
    pub fn delete_access_point_of(&self, key: &InstanceKey) -> Result<(), SimError> {
        let (found, durable) = self.mutate(true, |inv, ctx| {
            inv.drift_remove_access_points(key, ctx.now)
        });
        durable.wait_blocking().map_err(SimError::Persist)?;
        found.ok_or_else(|| SimError::NotFound(format!("access point of {}", key.path())))
    }

    /// Drift: someone stops the key's database; it goes through `stopping` to `stopped`.
    /// Allowed when it is `available` (already stopping or stopped: nothing to do).
    pub fn stop_database_of(&self, key: &InstanceKey) -> Result<(), SimError> {
        let id = ResourceNames::for_key(key).database(None);
        let (found, durable) = self.mutate(true, |inv, ctx| inv.drift_stop_database(ctx, &id));
        durable.wait_blocking().map_err(SimError::Persist)?;
        match found {
            None => Err(SimError::NotFound(format!("DB instance {id}"))),
            Some(Err(state)) => Err(SimError::InvalidState(format!(
                "DB instance {id} is {state}"
            ))),
            Some(Ok(())) => Ok(()),
        }
    }

    /// Drift: `n` running tasks of the key's service die now; the desired count is
    /// unchanged, so ECS launches replacements and the running count recovers by itself.
    pub fn kill_tasks(&self, key: &InstanceKey, n: u32) -> Result<(), SimError> {
        let name = ResourceNames::for_key(key).service;
        let (found, durable) = self.mutate(true, |inv, ctx| inv.drift_kill_tasks(ctx, &name, n));
        durable.wait_blocking().map_err(SimError::Persist)?;
        found.ok_or_else(|| SimError::NotFound(format!("ECS service {name}")))
    }

    fn lock_inventory(&self) -> MutexGuard<'_, Inventory> {
        // A panic elsewhere cannot leave a record half-written (each is replaced whole), so
        // a poisoned lock is still safe to use.
        self.inventory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_calls(&self) -> MutexGuard<'_, CallBook> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the inventory at "now", then queues what it changed for the file while
    /// still holding the lock (so the file sees changes in memory order).
    fn mutate<T>(&self, blocking: bool, f: impl FnOnce(&mut Inventory, &Ctx) -> T) -> (T, Durable) {
        let slow_rds = self.lock_calls().faults().slow_rds_factor;
        let mut inv = self.lock_inventory();
        let ctx = Ctx::new(now_ms(), self.speed, slow_rds);
        inv.sweep(ctx.now);
        let out = f(&mut inv, &ctx);
        let changes = inv.take_changes();
        let durable = match &self.persister {
            Some(p) if !changes.is_empty() => {
                let (ack, durable) = Durable::channel(blocking);
                p.submit(changes, ack);
                durable
            }
            _ => Durable::Done,
        };
        (out, durable)
    }

    fn latency(&self) -> Duration {
        self.lock_calls().latency(self.speed)
    }

    /// One read call about `instance` (if about one): latency, admission, books.
    async fn read_call(&self, api: Api, instance: Option<&str>) -> CloudResult<()> {
        tokio::time::sleep(self.latency()).await;
        self.read_now(api, instance)
    }

    /// Issues the batched describe calls for `keys` concurrently: each is answered at its
    /// own latency, so the whole costs the slowest one. Returns the first refusal.
    async fn observe_calls(&self, keys: &[InstanceKey]) -> CloudResult<()> {
        let mut calls: Vec<(Duration, Api, Option<String>)> = Vec::new();
        for (api, per_call) in OBSERVE_CALLS {
            for chunk in keys.chunks(per_call) {
                let instance = (chunk.len() == 1).then(|| chunk[0].path());
                calls.push((self.latency(), api, instance));
            }
        }
        calls.sort_by_key(|(latency, _, _)| *latency);
        let start = Instant::now();
        let mut first_refusal = None;
        for (latency, api, instance) in calls {
            tokio::time::sleep_until(start + latency).await;
            if let Err(e) = self.read_now(api, instance.as_deref()) {
                first_refusal.get_or_insert(e);
            }
        }
        first_refusal.map_or(Ok(()), Err)
    }

    fn read_now(&self, api: Api, instance: Option<&str>) -> CloudResult<()> {
        let mut book = self.lock_calls();
        book.admit(api, instance)?;
        book.record(api, instance, Ok(()));
        Ok(())
    }

    fn tasks_of(&self, key: &InstanceKey) -> Vec<ObservedTask> {
        let name = ResourceNames::for_key(key).service;
        let t = now_ms();
        let inv = self.lock_inventory();
        inv.live_service(&name, t)
            .map(|svc| svc.tasks_at(t).map(|task| task.observed(t)).collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Cloud for SimCloud {
    async fn observe(&self, keys: &[InstanceKey]) -> CloudResult<Vec<Observed>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.observe_calls(keys).await?;
        let t = now_ms();
        let inv = self.lock_inventory();
        Ok(keys.iter().map(|key| inv.observe(key, t)).collect())
    }

    /// ListTasks, then DescribeTasks only if there is something to describe (AWS rejects
    /// an empty DescribeTasks, so the real driver skips it too).
    async fn describe_tasks(&self, key: &InstanceKey) -> CloudResult<Vec<ObservedTask>> {
        let instance = key.path();
        self.read_call(LIST_TASKS, Some(&instance)).await?;
        if self.tasks_of(key).is_empty() {
            return Ok(Vec::new());
        }
        self.read_call(DESCRIBE_TASKS, Some(&instance)).await?;
        Ok(self.tasks_of(key))
    }

    async fn describe_jobs(&self, _jobs: &[super::JobRef]) -> CloudResult<Vec<super::ObservedJob>> {
        Ok(vec![]) // TEMPORARY (lead)
    }

    async fn logs(&self, _key: &InstanceKey, _q: &super::LogQuery) -> CloudResult<super::LogPage> {
        Ok(super::LogPage {
            events: vec![],
            next_token: None,
        }) // TEMPORARY (lead)
    }

    async fn apply(
        &self,
        key: &InstanceKey,
        step: &Step,
        token: &ClientToken,
    ) -> CloudResult<super::StepOutcome> {
        let api = Api::of_step(step);
        let instance = key.path();
        tokio::time::sleep(self.latency()).await;
        self.lock_calls().admit(api, Some(&instance))?;
        let (result, durable) =
            self.mutate(false, |inv, ctx| inv.apply(ctx, key, step, token.as_str()));
        let result = match (result, durable.wait().await) {
            (Ok(()), Err(e)) => Err(CloudError::Unavailable {
                service: api.service.name(),
                operation: api.operation,
                message: format!("simulated cloud could not persist the change: {e}"),
            }),
            (result, _) => result,
        };
        self.lock_calls()
            .record(api, Some(&instance), result.as_ref().map(drop));
        result.map(|()| super::StepOutcome::Done)
    }

    /// A quarter of the typical duration of what is awaited, ÷ speed, within [20 ms, 30 s].
    fn poll_interval(&self, waiting_on: WaitingOn) -> Duration {
        let rds = Ctx::new(0, self.speed, self.lock_calls().faults().slow_rds_factor).rds_factor;
        let typical = match waiting_on {
            WaitingOn::Database => base::DB_CREATE * rds,
            WaitingOn::Snapshot => base::SNAPSHOT * rds,
            WaitingOn::AccessPoint => base::AP_CREATE,
            WaitingOn::Tasks => base::TASK_PROVISION + base::TASK_PENDING,
            WaitingOn::Service => base::TASK_STOP,
            // Immediate in CloudWatch Logs: look again after about one call's latency.
            WaitingOn::LogGroup => base::LATENCY_MAX * 4.0,
        };
        duration_from_ms((typical / 4.0 / self.speed).clamp(MIN_POLL_MS, MAX_POLL_MS))
    }
}
