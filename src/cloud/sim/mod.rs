//! The simulated cloud: an in-process stand-in for ECS, EFS, RDS, AWS Backup and
//! CloudWatch Logs with AWS's asynchronous behaviour, so the controller runs without an AWS
//! account and tests and demos run fast.
//!
//! What it models, because a reconciler must cope with it:
//! * things take time (an RDS create takes minutes, tasks start in stages, a backup job
//!   90 s and a restore job 120 s), scaled by [`SimConfig::speed`] with ±20 % jitter per
//!   transition;
//! * every call costs latency (20–60 ms ÷ speed, slept before the effect, no lock held);
//! * each service throttles with a token bucket refilled in REAL time, not scaled by speed
//!   ([`SimLimits`]), and [`Faults`] inject throttles, 5xx, latency spikes, slow RDS and
//!   failing backup/restore jobs;
//! * creates are idempotent only by name or client token, as in AWS (AWS Backup jobs by
//!   the client token, its IdempotencyToken);
//! * data: EFS directories and RDS instances hold a `data` string ("what WordPress wrote",
//!   see [`SimCloud::write_data`]); RDS snapshots and AWS Backup recovery points capture it,
//!   and restores bring it back into NEW resources (neither service restores in place);
//!   as on AWS, an EFS restore lands in AWS Backup's own recovery directory, and only the
//!   relocation task (`Step::RelocateRestoredFiles`) moves it where the access point looks;
//! * log events are derived from the tasks' timelines (`log_events`), never stored;
//! * the cloud outlives the controller: [`SimCloud::open`] keeps it in a redb file.
//!
//! # Time model
//! Nothing runs in the background. Each operation stores the absolute wall-clock times
//! (epoch ms) of its transitions when it starts; every read derives the state at "now" from
//! them. In-flight operations (and jobs) therefore continue across a restart by their
//! original times. (Reopening with another `speed` does not rescale operations already in
//! flight; log lines, derived at read time, use the current speed.)
//!
//! # Layout
//! * `clock`: wall clock, base durations, scaling, jitter and deterministic draws.
//! * `calls`: API operations, latency, rate limits, faults, stats and the call log.
//! * `inventory`: the resource maps and indexes, step dispatch, observation, sweeping.
//! * `ecs`, `efs`, `rds`, `backup`, `logs`: one resource family each (records, state
//!   derivation, step semantics); `log_events`: FilterLogEvents over task timelines.
//! * `persist`: write-through to redb on a writer thread with group commit.
//! * `view`: [`InventorySnapshot`] for operators and tests.
//!
//! Invariant: the inventory lock is never held across an await, and never together with
//! the call-book lock.

mod backup;
mod calls;
mod clock;
mod ecs;
mod efs;
mod inventory;
mod log_events;
mod logs;
mod persist;
mod rds;
mod relocation;
mod view;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::{Deserialize, Serialize};

use self::calls::{Api, CallBook, Service};
use self::clock::{Ctx, Millis, base, duration_from_ms, now_ms, sane_speed};
use self::ecs::MAX_TASKS_PER_SERVICE;
use self::inventory::Inventory;
use self::log_events::{Position, Window};
use self::persist::{Durable, Persister};
use super::names::ResourceNames;
use super::{
    Call, ClientToken, Cloud, CloudError, CloudResult, JobKind, JobRef, LogPage, LogQuery,
    Observed, ObservedJob, ObservedService, ObservedTask, Scope, Seen, Step, StepOutcome,
    WaitingOn,
};
use crate::model::InstanceKey;

pub use self::calls::{CallRecord, InjectedStats, MAX_CALL_LOG, OpStats, PersistStats, SimStats};
pub use self::ecs::MAX_PAST_TASKS;
pub use self::persist::FILE_NAME;
pub use self::view::{
    AccessPointView, BackupJobView, DatabaseView, DirectoryView, InventorySnapshot, LogGroupView,
    RecoveryPointView, RelocationTaskView, RestoreJobView, ServiceView, SnapshotView, TaskView,
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
    /// Attempts per call, as the AWS SDK's standard retry mode makes them (3): a throttled
    /// or 5xx call is tried again after a jittered exponential delay, and only the last
    /// refusal reaches the caller. Every attempt counts as a call. 1: no retry.
    pub attempts: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            speed: 1.0,
            limits: SimLimits::default(),
            faults: Faults::default(),
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

/// The AWS SDK's standard retry mode: 3 attempts.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// The first retry waits up to this long (before speed scaling); each further one up to
/// twice as long (the SDK's exponential backoff with full jitter).
const RETRY_BASE_MS: f64 = 100.0;

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
    /// AWS Backup (StartBackupJob, DescribeBackupJob, …).
    #[serde(default = "default_backup_limit")]
    pub backup: RateLimit,
}

fn default_backup_limit() -> RateLimit {
    RateLimit {
        rate: 5.0,
        burst: 10.0,
    }
}

impl Default for SimLimits {
    fn default() -> Self {
        Self {
            backup: default_backup_limit(),
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

impl SimLimits {
    /// The same limits as a controller's client-side budget (`cloud::budget`): the rates
    /// AWS documents for these APIs are what an operator configures there.
    pub fn rates(&self) -> [(&'static str, crate::cloud::budget::Rate); 5] {
        let rate = |l: &RateLimit| crate::cloud::budget::Rate {
            per_second: l.rate,
            burst: l.burst,
        };
        [
            ("ecs", rate(&self.ecs)),
            ("efs", rate(&self.efs)),
            ("rds", rate(&self.rds)),
            ("logs", rate(&self.logs)),
            ("backup", rate(&self.backup)),
        ]
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
    /// Fraction of AWS Backup backup and restore jobs that end FAILED (0..=1), decided
    /// when each job starts.
    #[serde(default)]
    pub backup_failure_rate: f64,
    /// Stale view (issue 7, after Sieve): fraction of per-instance observations answered
    /// with an older snapshot of the instance's resources, one the controller saw before.
    #[serde(default)]
    pub stale_observation_rate: f64,
    /// Reordered updates: fraction of per-instance observations that show the service of
    /// one moment and the data resources (access points, databases, snapshots, log group)
    /// of another, so a later change is seen without an earlier one.
    #[serde(default)]
    pub reorder_rate: f64,
    /// Missed event: fraction of the reconcile triggers of API writes that are dropped;
    /// only the periodic resync notices those writes.
    #[serde(default)]
    pub drop_trigger_rate: f64,
}

impl Faults {
    fn distorts_views(&self) -> bool {
        self.stale_observation_rate > 0.0 || self.reorder_rate > 0.0
    }
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

/// The describe calls of an observation of `scope`.
fn observe_calls(scope: Scope) -> impl Iterator<Item = (Api, usize)> {
    OBSERVE_CALLS
        .into_iter()
        .filter(move |(api, _)| scope.snapshots || api.operation != "DescribeDBSnapshots")
}

const LIST_TASKS: Api = Api::read(Service::Ecs, "ListTasks");
const DESCRIBE_TASKS: Api = Api::read(Service::Ecs, "DescribeTasks");
const DESCRIBE_BACKUP_JOB: Api = Api::read(Service::Backup, "DescribeBackupJob");
const DESCRIBE_RESTORE_JOB: Api = Api::read(Service::Backup, "DescribeRestoreJob");
const FILTER_LOG_EVENTS: Api = Api::read(Service::Logs, "FilterLogEvents");

/// FilterLogEvents' bounds on `limit`.
const MAX_LOG_LIMIT: u32 = 10_000;

/// `poll_interval` never answers less or more than this.
const MIN_POLL_MS: f64 = 20.0;
const MAX_POLL_MS: f64 = 30_000.0;

pub struct SimCloud {
    speed: f64,
    /// See [`SimConfig::attempts`].
    attempts: u32,
    inventory: Mutex<Inventory>,
    calls: Mutex<CallBook>,
    /// Recent observations per instance, kept only while a view fault is on (the older
    /// snapshots a stale or reordered view is made of). Locked on its own, never together
    /// with another lock.
    history: Mutex<HashMap<InstanceKey, VecDeque<Observed>>>,
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
            attempts: config.attempts.max(1),
            inventory: Mutex::new(inventory),
            calls: Mutex::new(CallBook::new(&config.limits, config.faults)),
            history: Mutex::new(HashMap::new()),
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

    /// Also counts every call in these metrics (`aws_api_*`).
    pub fn set_metrics(&self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        self.lock_calls().recorder = Some(metrics);
    }

    pub fn set_faults(&self, faults: Faults) {
        if !faults.distorts_views() {
            self.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        self.lock_calls().set_faults(faults);
    }

    /// Whether to drop the reconcile trigger of one API write (`Faults::drop_trigger_rate`);
    /// the server asks this for every trigger when it runs on the simulated cloud.
    pub fn drop_trigger(&self) -> bool {
        let mut calls = self.lock_calls();
        let drop = rand::random::<f64>() < calls.faults().drop_trigger_rate;
        calls.count_dropped_trigger(drop);
        drop
    }

    /// Applies the view faults to fresh observations: some are answered from an older
    /// snapshot, some mix an older and a fresh one. Remembers the fresh ones.
    fn distort(&self, keys: &[InstanceKey], fresh: Vec<Observed>) -> Vec<Observed> {
        let faults = self.lock_calls().faults().clone();
        if !faults.distorts_views() {
            return fresh;
        }
        let (mut stale, mut reordered) = (0, 0);
        let mut rng = rand::rng();
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let out = keys
            .iter()
            .zip(fresh)
            .map(|(key, now)| {
                let past = history.entry(key.clone()).or_default();
                let older = past.front().cloned();
                past.push_back(now.clone());
                if past.len() > VIEW_HISTORY {
                    past.pop_front();
                }
                let Some(older) = older else { return now };
                if rng.random::<f64>() < faults.stale_observation_rate {
                    stale += 1;
                    older
                } else if rng.random::<f64>() < faults.reorder_rate {
                    reordered += 1;
                    if rng.random::<bool>() {
                        mix(&now, &older)
                    } else {
                        mix(&older, &now)
                    }
                } else {
                    now
                }
            })
            .collect();
        drop(history);
        self.lock_calls().count_distorted_views(stale, reordered);
        out
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

    /// Drift: the key's access points disappear at once (deleted by hand): ALL access points
    /// tagged with the key, of every data epoch (the one its service uses included).
    pub fn delete_access_point_of(&self, key: &InstanceKey) -> Result<(), SimError> {
        let (found, durable) = self.mutate(true, |inv, ctx| {
            inv.drift_remove_access_points(key, ctx.now)
        });
        durable.wait_blocking().map_err(SimError::Persist)?;
        found.ok_or_else(|| SimError::NotFound(format!("access point of {}", key.path())))
    }

    /// Drift: someone stops the key's database (the one its service's endpoint names, else
    /// its newest); it goes through `stopping` to `stopped`. Allowed when it is `available`
    /// (already stopping or stopped: nothing to do).
    pub fn stop_database_of(&self, key: &InstanceKey) -> Result<(), SimError> {
        let (found, durable) = self.mutate(true, |inv, ctx| {
            let id = inv.current_db(key, ctx.now)?.identifier.clone();
            Some((inv.drift_stop_database(ctx, &id), id))
        });
        durable.wait_blocking().map_err(SimError::Persist)?;
        match found {
            None | Some((None, _)) => {
                Err(SimError::NotFound(format!("DB instance of {}", key.path())))
            }
            Some((Some(Err(state)), id)) => Err(SimError::InvalidState(format!(
                "DB instance {id} is {state}"
            ))),
            Some((Some(Ok(())), _)) => Ok(()),
        }
    }

    /// Drift, "WordPress writes": sets `data` in the directory of the access point the
    /// key's active service uses, and in the DB its `db_endpoint` points to. Refused
    /// (`InvalidState`) without an active service, or when that access point or DB does not
    /// exist or the DB does not accept connections (stopped, creating, …).
    pub fn write_data(&self, key: &InstanceKey, data: &str) -> Result<(), SimError> {
        let (result, durable) =
            self.mutate(true, |inv, ctx| inv.drift_write_data(key, data, ctx.now));
        durable.wait_blocking().map_err(SimError::Persist)?;
        result.map_err(SimError::InvalidState)
    }

    /// "WordPress reads": the data the key's active service sees now, in its directory and
    /// its DB. Refused like [`SimCloud::write_data`].
    pub fn read_data(&self, key: &InstanceKey) -> Result<SiteData, SimError> {
        let t = now_ms();
        let inv = self.lock_inventory();
        let (root, db) = inv.site_resources(key, t).map_err(SimError::InvalidState)?;
        Ok(SiteData {
            files: inv.directory_at(&root, t).unwrap_or_default().to_owned(),
            database: inv
                .databases
                .get(&db)
                .map(|d| d.data.clone())
                .unwrap_or_default(),
        })
    }

    /// The content of EFS directory `root_path` now; empty if it does not exist.
    pub fn directory(&self, root_path: &str) -> String {
        let inv = self.lock_inventory();
        inv.directory_at(root_path, now_ms())
            .unwrap_or_default()
            .to_owned()
    }

    /// Drift: `n` running tasks of the key's service die now; the desired count is
    /// unchanged, so ECS launches replacements and the running count recovers by itself.
    pub fn kill_tasks(&self, key: &InstanceKey, n: u32) -> Result<(), SimError> {
        let name = ResourceNames::for_key(key).service;
        let (found, durable) = self.mutate(true, |inv, ctx| inv.drift_kill_tasks(ctx, &name, n));
        durable.wait_blocking().map_err(SimError::Persist)?;
        found.ok_or_else(|| SimError::NotFound(format!("ECS service {name}")))
    }

    // ---- benchmark seeding: no call, no latency, no rate limit, not in the books ---------

    /// What `observe` followed by `describe_tasks` would show for `key` at `at` (epoch
    /// milliseconds, possibly in the past), without making a call. Benchmarks use it with
    /// [`SimCloud::apply_at`] to build a converged fleet in seconds instead of hours.
    pub fn peek_at(&self, key: &InstanceKey, at_ms: i64) -> Observed {
        let inv = self.lock_inventory();
        let mut obs = inv.observe(key, at_ms);
        let name = ResourceNames::for_key(key).service;
        obs.tasks = inv.live_service(&name, at_ms).map(|svc| {
            svc.tasks_at(at_ms)
                .map(|task| task.observed(at_ms))
                .collect()
        });
        obs
    }

    /// Applies `step` as if at `at_ms` (e.g. an hour ago, so every transition it starts has
    /// finished by now), without making a call. For seeding benchmarks only.
    pub fn apply_at(
        &self,
        key: &InstanceKey,
        step: &Step,
        token: &ClientToken,
        at_ms: i64,
    ) -> CloudResult<StepOutcome> {
        let (result, durable) = self.mutate_inner(true, Some(at_ms), |inv, ctx| {
            inv.apply(ctx, key, step, token.as_str())
        });
        durable
            .wait_blocking()
            .map_err(|e| CloudError::Unavailable {
                service: "sim",
                operation: "seed",
                message: e,
            })?;
        result
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
        self.mutate_inner(blocking, None, f)
    }

    /// `mutate` at `at` (default: now).
    fn mutate_inner<T>(
        &self,
        blocking: bool,
        at: Option<Millis>,
        f: impl FnOnce(&mut Inventory, &Ctx) -> T,
    ) -> (T, Durable) {
        let (slow_rds, backup_failures) = {
            let calls = self.lock_calls();
            let faults = calls.faults();
            (faults.slow_rds_factor, faults.backup_failure_rate)
        };
        let mut inv = self.lock_inventory();
        let ctx = Ctx::new(at.unwrap_or_else(now_ms), self.speed, slow_rds)
            .with_backup_failure_rate(backup_failures);
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
        let latency = self.admitted(api, instance, None).await?;
        self.lock_calls()
            .record(api, instance, None, Ok(()), latency);
        Ok(())
    }

    /// Waits for the call's latency and its admission, retrying a throttled or 5xx answer
    /// up to [`SimConfig::attempts`] in all (each refused attempt is booked as a call).
    /// Returns the admitted attempt's latency.
    async fn admitted(
        &self,
        api: Api,
        instance: Option<&str>,
        target: Option<&str>,
    ) -> CloudResult<Duration> {
        let mut attempt = 1;
        loop {
            let latency = self.latency();
            tokio::time::sleep(latency).await;
            let refused = match self.lock_calls().admit(api, instance, target, latency) {
                Ok(()) => return Ok(latency),
                Err(e) => e,
            };
            if attempt >= self.attempts || !refused.is_retryable() {
                return Err(refused);
            }
            let cap = RETRY_BASE_MS * f64::from(1u32 << (attempt - 1).min(10));
            let delay = rand::rng().random_range(0.0..cap) / self.speed;
            tokio::time::sleep(duration_from_ms(delay)).await;
            attempt += 1;
        }
    }

    /// Everything of `keys` as it is now.
    fn observe_now(&self, keys: &[InstanceKey]) -> Vec<Observed> {
        let t = now_ms();
        let inv = self.lock_inventory();
        keys.iter().map(|key| inv.observe(key, t)).collect()
    }

    /// Issues the batched describe calls for `keys` concurrently.
    async fn observe_calls(&self, keys: &[InstanceKey], scope: Scope) -> CloudResult<()> {
        let mut calls: Vec<(Api, Option<String>)> = Vec::new();
        for (api, per_call) in observe_calls(scope) {
            for chunk in keys.chunks(per_call) {
                let instance = (chunk.len() == 1).then(|| chunk[0].path());
                calls.push((api, instance));
            }
        }
        self.concurrent_reads(calls).await
    }

    /// Issues read calls concurrently: each is answered at its own latency (and retried on
    /// its own), so the whole costs the slowest one. Returns the first refusal.
    async fn concurrent_reads(&self, calls: Vec<(Api, Option<String>)>) -> CloudResult<()> {
        let reads = calls
            .iter()
            .map(|(api, instance)| self.read_call(*api, instance.as_deref()));
        futures::future::join_all(reads)
            .await
            .into_iter()
            .collect::<CloudResult<Vec<()>>>()
            .map(drop)
    }

    fn tasks_now(&self, key: &InstanceKey) -> Vec<ObservedTask> {
        let name = ResourceNames::for_key(key).service;
        let t = now_ms();
        let inv = self.lock_inventory();
        inv.live_service(&name, t)
            .map(|svc| svc.tasks_at(t).map(|task| task.observed(t)).collect())
            .unwrap_or_default()
    }

    /// FilterLogEvents, once admitted: validates the query, then derives the page from the
    /// task timelines copied out of the inventory (generation runs without the lock).
    fn filter_log_events(&self, key: &InstanceKey, query: &LogQuery) -> CloudResult<LogPage> {
        let api = FILTER_LOG_EVENTS;
        if query.limit == 0 || query.limit > MAX_LOG_LIMIT {
            return Err(api.permanent(
                "InvalidParameterException",
                format!("limit must be between 1 and {MAX_LOG_LIMIT}"),
            ));
        }
        let after = match &query.next_token {
            None => None,
            Some(token) => Some(Position::parse(token).ok_or_else(|| {
                api.permanent("InvalidParameterException", "The nextToken is invalid.")
            })?),
        };
        let names = ResourceNames::for_key(key);
        let t = now_ms();
        let (created_at, sources) = {
            let inv = self.lock_inventory();
            let group = inv.log_groups.get(&names.log_group).ok_or_else(|| {
                api.permanent(
                    "ResourceNotFoundException",
                    "The specified log group does not exist.",
                )
            })?;
            (group.created_at, inv.log_sources(&names.service))
        };
        let window = Window {
            // A group holds nothing from before it existed, nor from the future.
            from: query.start.timestamp_millis().max(created_at),
            to: query.end.timestamp_millis().min(t),
            period: self.log_period(),
        };
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let (events, next) = log_events::page(sources, &window, after.as_ref(), limit);
        Ok(LogPage {
            events,
            next_token: next.map(|p| p.token()),
        })
    }

    /// Milliseconds between two access lines of a task: 10 s of simulated time.
    fn log_period(&self) -> Millis {
        ((base::LOG_LINE_EVERY / self.speed).round() as Millis).max(1)
    }
}

/// One DescribeTasks per 100 listed tasks, each naming its instance when it describes the
/// tasks of only one (as observations do for a batch of one).
fn describe_chunks(listed: &[(String, usize)]) -> Vec<Option<String>> {
    let mut chunks: Vec<Vec<&str>> = Vec::new();
    let mut room = 0;
    for (instance, n) in listed {
        for _ in 0..*n {
            if room == 0 {
                chunks.push(Vec::new());
                room = TASKS_PER_DESCRIBE;
            }
            let chunk = chunks.last_mut().expect("pushed");
            if chunk.last() != Some(&instance.as_str()) {
                chunk.push(instance);
            }
            room -= 1;
        }
    }
    chunks
        .into_iter()
        .map(|c| (c.len() == 1).then(|| c[0].to_owned()))
        .collect()
}

/// DescribeTasks takes at most this many tasks.
const TASKS_PER_DESCRIBE: usize = 100;

/// The call describing a job of `kind`.
fn describe_job_api(kind: JobKind) -> Api {
    match kind {
        JobKind::Backup => DESCRIBE_BACKUP_JOB,
        JobKind::Restore => DESCRIBE_RESTORE_JOB,
        JobKind::Relocation => DESCRIBE_TASKS,
    }
}

/// How many past observations per instance a stale or reordered view picks from.
const VIEW_HISTORY: usize = 6;

/// The service as `service_from` shows it, the data resources as `data_from` does.
fn mix(service_from: &Observed, data_from: &Observed) -> Observed {
    Observed {
        service: service_from.service.clone(),
        ..data_from.clone()
    }
}

/// What the site sees in its data resources ([`SimCloud::read_data`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteData {
    /// Its EFS directory's content.
    pub files: String,
    /// Its database's content.
    pub database: String,
}

#[async_trait]
impl Cloud for SimCloud {
    async fn observe_scope(
        &self,
        keys: &[InstanceKey],
        scope: Scope,
    ) -> CloudResult<Vec<Observed>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.observe_calls(keys, scope).await?;
        let mut seen = self.distort(keys, self.observe_now(keys));
        if !scope.snapshots {
            for o in &mut seen {
                o.snapshots = Seen::NotObserved;
            }
        }
        Ok(seen)
    }

    /// DescribeServices per 10 keys; the services as `observe` would show them (view faults
    /// included).
    async fn observe_services(
        &self,
        keys: &[InstanceKey],
    ) -> CloudResult<Vec<Option<ObservedService>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (api, per_call) = OBSERVE_CALLS[0];
        let calls = keys
            .chunks(per_call)
            .map(|chunk| (api, (chunk.len() == 1).then(|| chunk[0].path())))
            .collect();
        self.concurrent_reads(calls).await?;
        let seen = self.distort(keys, self.observe_now(keys));
        Ok(seen.into_iter().map(|o| o.service).collect())
    }

    /// ListTasks per key (one service each), then DescribeTasks per 100 of the tasks found,
    /// across services, and none when there is nothing to describe (AWS rejects an empty
    /// DescribeTasks, so the real driver skips it too).
    async fn describe_tasks(&self, keys: &[InstanceKey]) -> CloudResult<Vec<Vec<ObservedTask>>> {
        let lists = keys
            .iter()
            .map(|key| (LIST_TASKS, Some(key.path())))
            .collect();
        self.concurrent_reads(lists).await?;
        let listed: Vec<(String, usize)> = keys
            .iter()
            .map(|key| (key.path(), self.tasks_now(key).len()))
            .collect();
        let describes = describe_chunks(&listed)
            .into_iter()
            .map(|instance| (DESCRIBE_TASKS, instance))
            .collect();
        self.concurrent_reads(describes).await?;
        Ok(keys.iter().map(|key| self.tasks_now(key)).collect())
    }

    /// One DescribeBackupJob / DescribeRestoreJob / DescribeTasks per job, issued
    /// concurrently; ids of no job of that kind are left out (AWS would answer
    /// ResourceNotFound, ECS a MISSING failure).
    async fn describe_jobs(&self, jobs: &[JobRef]) -> CloudResult<Vec<ObservedJob>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let calls = {
            let inv = self.lock_inventory();
            jobs.iter()
                .map(|r| {
                    (
                        describe_job_api(r.kind),
                        inv.job(r).map(|job| job.key.path()),
                    )
                })
                .collect()
        };
        self.concurrent_reads(calls).await?;
        let t = now_ms();
        let inv = self.lock_inventory();
        Ok(jobs
            .iter()
            .filter_map(|r| inv.job(r).map(|job| job.observed(t)))
            .collect())
    }

    async fn apply(
        &self,
        key: &InstanceKey,
        step: &Step,
        token: &ClientToken,
    ) -> CloudResult<StepOutcome> {
        let api = Api::of_step(step);
        let instance = key.path();
        let target = Some(step.target());
        let latency = self.admitted(api, Some(&instance), target).await?;
        let (result, durable) =
            self.mutate(false, |inv, ctx| inv.apply(ctx, key, step, token.as_str()));
        let result = match (result, durable.wait().await) {
            (Ok(_), Err(e)) => Err(CloudError::Unavailable {
                service: api.service.name(),
                operation: api.operation,
                message: format!("simulated cloud could not persist the change: {e}"),
            }),
            (result, _) => result,
        };
        self.lock_calls().record(
            api,
            Some(&instance),
            target,
            result.as_ref().map(drop),
            latency,
        );
        result
    }

    /// FilterLogEvents on the key's log group (see `log_events`): events of the window in
    /// `(timestamp, stream)` order, a page at a time.
    async fn logs(&self, key: &InstanceKey, query: &LogQuery) -> CloudResult<LogPage> {
        let api = FILTER_LOG_EVENTS;
        let instance = key.path();
        let latency = self.latency();
        tokio::time::sleep(latency).await;
        self.lock_calls()
            .admit(api, Some(&instance), None, latency)?;
        let result = self.filter_log_events(key, query);
        self.lock_calls().record(
            api,
            Some(&instance),
            None,
            result.as_ref().map(drop),
            latency,
        );
        result
    }

    /// A quarter of the typical duration of what is awaited, ÷ speed, within [20 ms, 30 s].
    /// (AWS Backup jobs are polled as `WaitingOn::Snapshot`: 15 s at speed 1 against jobs
    /// of 90–120 s.)
    fn cost(&self, call: &Call<'_>) -> Vec<(&'static str, u32)> {
        let per_chunk = |n: usize, per: usize| u32::try_from(n.div_ceil(per)).unwrap_or(u32::MAX);
        match call {
            Call::Observe(0, _) | Call::ObserveServices(0) => vec![],
            Call::Observe(n, scope) => {
                let mut cost: Vec<(&'static str, u32)> = Vec::new();
                for (api, per) in observe_calls(*scope) {
                    let calls = per_chunk(*n, per);
                    match cost.iter_mut().find(|(s, _)| *s == api.service.name()) {
                        Some((_, c)) => *c += calls,
                        None => cost.push((api.service.name(), calls)),
                    }
                }
                cost
            }
            Call::ObserveServices(n) => {
                let (api, per) = OBSERVE_CALLS[0];
                vec![(api.service.name(), per_chunk(*n, per))]
            }
            // A ListTasks per key; DescribeTasks per 100 tasks, priced at 4 tasks a service.
            Call::DescribeTasks(0) => vec![],
            Call::DescribeTasks(n) => vec![(
                LIST_TASKS.service.name(),
                per_chunk(*n, 1).saturating_add(per_chunk(n.saturating_mul(4), 100)),
            )],
            Call::DescribeJobs(jobs) => {
                let mut cost: Vec<(&'static str, u32)> = Vec::new();
                for job in jobs.iter() {
                    let service = describe_job_api(job.kind).service.name();
                    match cost.iter_mut().find(|(s, _)| *s == service) {
                        Some((_, n)) => *n += 1,
                        None => cost.push((service, 1)),
                    }
                }
                cost
            }
            Call::Apply(step) => vec![(Api::of_step(step).service.name(), 1)],
            Call::Logs => vec![(FILTER_LOG_EVENTS.service.name(), 1)],
        }
    }

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
