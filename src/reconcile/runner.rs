//! The imperative shell: takes due keys from the queue, observes them in batches, runs
//! `plan`, executes the steps, writes status, and tells the queue what to do next.
//!
//! One place (`finish`) maps a pass's result to the queue; a failed pass backs off, a
//! converging one looks again after the cloud's poll interval, a converged one waits for
//! a trigger or the periodic resync.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cloud::{
    CALL_CONTEXT, Call, CallContext, ClientToken, Cloud, CloudError, JobKind, JobRef, Lane,
    Observed, ObservedTask, Scope, Step, StepOutcome,
};
use crate::model::{
    Backup, BackupStatus, ConditionType, ConditionUpdate, Event, Instance, InstanceKey, Phase,
    Status, now, set_condition,
};
use crate::store::{BackupPageRequest, Fence, PageRequest, Store, StoreError};

use super::events::{AppliedStep, PassRecord, observe_failed, pass_events};
use super::plan::health;
use super::plan::{Plan, PlanInput, data_generation, needs_snapshots, plan};
use super::queue::{Backoff, Outcome, Priority, WorkQueue};
use super::shards::{Claim, NotNow, Shards};
use super::status::{PassError, PassOutcome, next_status};
use super::workers::Workers;
use crate::metrics::{CONTROLLER, Metrics};

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Most passes in flight at once.
    pub workers: usize,
    /// Every instance is looked at this often even without a trigger, to repair drift.
    pub resync_interval: Duration,
    pub backoff: Backoff,
    /// Most instances observed together (ECS describes 10, RDS 100 per call).
    pub batch_max: usize,
    /// Most batches being observed and reconciled at once.
    pub batches: usize,
    /// How long a batch of resync work may wait to fill up; user work never waits.
    pub batch_window: Duration,
    /// How long a batch of follow-ups and resync work may wait, at most, while the cloud's
    /// budget cannot serve its observation at once (taking in what becomes due meanwhile);
    /// user work never waits.
    pub poll_defer: Duration,
    /// How often an instance with a problem a retry will not fix is looked at again.
    pub problem_retry: Duration,
    /// How long a DEPROVISIONED record is kept before it is removed from the store.
    pub retention: Duration,
    /// An instance not converged for longer than this counts as stuck (metrics, alerts).
    pub stuck_after: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            workers: 16,
            resync_interval: Duration::from_secs(300),
            backoff: Backoff::default(),
            batch_max: 100,
            // Batches mostly wait (for the cloud, for the budget): enough of them that
            // user work finds a free one while polls wait for budget.
            batches: 8,
            batch_window: Duration::from_millis(200),
            poll_defer: Duration::from_secs(2),
            problem_retry: Duration::from_secs(60),
            retention: Duration::from_secs(30 * 24 * 3600),
            stuck_after: Duration::from_secs(15 * 60),
        }
    }
}

/// A key of a batch, read and claimed: what its pass needs besides the observation.
struct Live {
    inst: Instance,
    claim: Claim,
    context: PassContext,
    /// The service's tasks, when a poll of this batch already listed them.
    tasks: Option<Vec<ObservedTask>>,
}

/// What a pass reads from the store besides the instance.
struct PassContext {
    /// Backups in flight.
    backups: Vec<Backup>,
    /// The backup a pending restore reads from.
    restore_from: Option<Backup>,
}

/// Cheap handle for the API: asks for an immediate pass of an instance.
#[derive(Clone)]
pub struct Trigger {
    queue: Arc<WorkQueue>,
    /// Fault injection (simulated cloud only): says when to drop a trigger, as a missed
    /// event would; the periodic resync must then notice the write.
    drops: Option<TriggerFault>,
}

/// Decides, per trigger, whether to drop it (see `Reconciler::drop_triggers_when`).
pub type TriggerFault = Arc<dyn Fn() -> bool + Send + Sync>;

impl Trigger {
    pub fn now(&self, key: InstanceKey) {
        if self.drops.as_ref().is_some_and(|drop| drop()) {
            debug!(instance = %key, "trigger dropped (injected fault)");
            return;
        }
        self.queue.add(key, Priority::User, Duration::ZERO);
    }
}

pub struct Reconciler {
    store: Arc<dyn Store>,
    cloud: Arc<dyn Cloud>,
    queue: Arc<WorkQueue>,
    /// Which instances this replica may reconcile (all of them, or leased shards).
    shards: Arc<Shards>,
    metrics: Arc<Metrics>,
    /// What this replica last saw of each instance it owns, for the fleet gauges; by key
    /// hash (`key_hash`): 8 bytes instead of a key copy per instance (with 100,000 instances
    /// tracked, the copies were ~15 MiB of the controller's memory; `bench memory`). A
    /// collision (random-keyed 64-bit hashes) would only merge two instances in the gauges.
    tracker: Mutex<HashMap<u64, Tracked>>,
    /// The resync wave in progress, for `wpfleet_resync_aws_calls_per_instance`.
    wave: Mutex<Option<ResyncWave>>,
    /// Passes started, to number them in the cloud's call log.
    passes: AtomicU64,
    /// Injected missed events for the triggers handed out (tests, simulated cloud).
    trigger_fault: Mutex<Option<TriggerFault>>,
    /// Keys whose last full pass (of this generation) waited only for tasks: their next
    /// look is a narrow poll of the service (`polls`).
    polls: Mutex<HashMap<InstanceKey, u64>>,
    /// Keys whose last plan needed the RDS snapshots its observation left out.
    snapshots_wanted: Mutex<HashSet<InstanceKey>>,
    config: RunConfig,
}

/// The fleet-level view of one instance.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    phase: Phase,
    converged: bool,
    /// When its current spec was written (the start of "not converged").
    changed_at: crate::model::Timestamp,
}

impl Tracked {
    fn of(inst: &Instance) -> Self {
        Self {
            phase: inst.status.phase,
            converged: inst.is_converged(),
            changed_at: inst.metadata.updated_at,
        }
    }
}

mod polls;
#[cfg(test)]
mod tests;

/// Cloud calls made while the keys of one full resync are processed.
struct ResyncWave {
    calls_at_start: u64,
    size: usize,
    /// Hashes of the keys not processed yet: 8 bytes each instead of a key copy (a
    /// 100,000-instance resync held 100,000 more key copies; `bench memory`). A collision
    /// only ends the wave's accounting one key early.
    left: HashSet<u64>,
    /// Every key of the wave is queued; the wave ends when `left` empties after this.
    listed: bool,
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn Store>,
        cloud: Arc<dyn Cloud>,
        shards: Arc<Shards>,
        config: RunConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        metrics
            .max_concurrent
            .with_label_values(&[CONTROLLER])
            .set(config.workers as i64);
        Arc::new(Self {
            store,
            cloud,
            queue: Arc::new(WorkQueue::with_metrics(
                config.backoff,
                Some(metrics.clone()),
            )),
            shards,
            metrics,
            tracker: Mutex::new(HashMap::new()),
            wave: Mutex::new(None),
            passes: AtomicU64::new(0),
            trigger_fault: Mutex::new(None),
            polls: Mutex::new(HashMap::new()),
            snapshots_wanted: Mutex::new(HashSet::new()),
            config,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sets the gauges that describe current state; called when `/metrics` is scraped.
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        let q = self.queue.stats();
        let name = [CONTROLLER];
        m.queue_depth.with_label_values(&name).set(q.queued as i64);
        m.unfinished_work
            .with_label_values(&name)
            .set(q.unfinished.as_secs_f64());
        m.longest_running
            .with_label_values(&name)
            .set(q.longest_running.as_secs_f64());
        let held = self.shards.held().len();
        m.shards_held.set(held as i64);
        m.leader
            .with_label_values(&["wpfleet"])
            .set(i64::from(held > 0));
        let stuck_after =
            chrono::Duration::from_std(self.config.stuck_after).unwrap_or(chrono::Duration::MAX);
        let at = now();
        let mut by_phase: HashMap<Phase, i64> = Phase::ALL.iter().map(|p| (*p, 0)).collect();
        let (mut unconverged, mut stuck) = (0, 0);
        for t in lock(&self.tracker).values() {
            *by_phase.entry(t.phase).or_default() += 1;
            if !t.converged {
                unconverged += 1;
                stuck += i64::from(at - t.changed_at > stuck_after);
            }
        }
        for (phase, n) in by_phase {
            m.instances.with_label_values(&[phase.as_str()]).set(n);
        }
        m.not_converged.set(unconverged);
        m.stuck.set(stuck);
    }

    /// Queues a full resync now (benchmarks, tests); see `resync_in_progress`.
    pub async fn resync_now(&self) -> Result<(), StoreError> {
        self.enqueue_all(false).await
    }

    /// Whether the keys of the last full resync are still being processed.
    pub fn resync_in_progress(&self) -> bool {
        lock(&self.wave).is_some()
    }

    fn track(&self, inst: &Instance) {
        lock(&self.tracker).insert(key_hash(&inst.key()), Tracked::of(inst));
    }

    fn untrack(&self, key: &InstanceKey) {
        lock(&self.tracker).remove(&key_hash(key));
        lock(&self.polls).remove(key);
        lock(&self.snapshots_wanted).remove(key);
    }

    pub fn shards(&self) -> &Shards {
        &self.shards
    }

    pub fn trigger(&self) -> Trigger {
        Trigger {
            queue: self.queue.clone(),
            drops: lock(&self.trigger_fault).clone(),
        }
    }

    /// Triggers handed out from now on are dropped whenever `fault` says so (fault
    /// injection: the simulated cloud's `dropTriggerRate`).
    pub fn drop_triggers_when(&self, fault: TriggerFault) {
        *lock(&self.trigger_fault) = Some(fault);
    }

    pub fn queue(&self) -> &WorkQueue {
        &self.queue
    }

    /// Runs until `shutdown`, then waits for passes in flight to finish.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let this = self.clone();
        let on_gain = move |shards: Vec<u32>| {
            let this = this.clone();
            tokio::spawn(async move { this.enqueue_shards(&shards).await });
        };
        tracker.spawn(self.shards.clone().run(on_gain, shutdown.clone()));
        tracker.spawn(self.clone().resync_loop(shutdown.clone()));
        if let Some(every) = self.shards.pending_poll() {
            tracker.spawn(self.clone().pending_loop(every, shutdown.clone()));
        }
        // Observation is shared by a batch; steps and status writes are per pass. Two caps:
        // batches in flight (bounds describe calls and keys held running), and passes in
        // flight (bounds mutating calls and store writes).
        let batches = Arc::new(Semaphore::new(self.config.batches.max(1)));
        let workers = Workers::new(self.config.workers);
        loop {
            let Some((keys, slot)) = self.next_batch(&batches, &shutdown).await else {
                break;
            };
            let this = self.clone();
            let workers = workers.clone();
            tracker.spawn(async move { this.run_batch(keys, slot, workers).await });
        }
        tracker.close();
        tracker.wait().await;
    }

    /// Waits for a batch slot and due work; `None` on shutdown.
    async fn next_batch(
        &self,
        batches: &Arc<Semaphore>,
        shutdown: &CancellationToken,
    ) -> Option<(Vec<InstanceKey>, OwnedSemaphorePermit)> {
        let slot = tokio::select! {
            p = batches.clone().acquire_owned() => p.ok()?,
            _ = shutdown.cancelled() => return None,
        };
        let max = self.config.batch_max.max(1);
        let mut keys = tokio::select! {
            k = self.queue.next_batch(max) => k,
            _ = shutdown.cancelled() => return None,
        };
        self.fill_batch(&mut keys, max).await;
        self.defer_batch(&mut keys, max).await;
        Some((keys, slot))
    }

    /// A batch without user work waits (at most `poll_defer`) while the budget cannot serve
    /// its observation at once, and takes in the keys that become due meanwhile: it leaves
    /// the budget to user work (a write arriving meanwhile joins it and it goes at once),
    /// and when a service is the bottleneck, its polls coalesce into fewer calls.
    async fn defer_batch(&self, keys: &mut Vec<InstanceKey>, max: usize) {
        let until = tokio::time::Instant::now() + self.config.poll_defer;
        loop {
            if keys.len() >= max || self.has_user_work(keys) {
                return;
            }
            let delay = self.cloud.delay(&self.batch_cost(keys));
            let now = tokio::time::Instant::now();
            if delay.is_zero() || now >= until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until((now + delay).min(until)) => {}
                _ = self.queue.added() => {}
            }
            let due = self.queue.try_batch(max - keys.len());
            keys.extend(due);
        }
    }

    /// Whether someone waits for a key of the batch: taken as user work, or written to
    /// since it was taken (its pass reads the record after this, so it serves the write).
    fn has_user_work(&self, keys: &[InstanceKey]) -> bool {
        keys.iter().any(|k| {
            self.queue.running_priority(k) == Some(Priority::User) || self.queue.user_waiting(k)
        })
    }

    /// What observing `keys` will cost, as far as known before reading them: a narrow poll
    /// of the services of those that wait for tasks, a full observation (without snapshots)
    /// of the others.
    fn batch_cost(&self, keys: &[InstanceKey]) -> Vec<(&'static str, u32)> {
        let narrow = {
            let polls = lock(&self.polls);
            keys.iter().filter(|k| polls.contains_key(*k)).count()
        };
        let calls = [
            Call::ObserveServices(narrow),
            Call::Observe(keys.len() - narrow, Scope::WITHOUT_SNAPSHOTS),
        ];
        let mut cost: Vec<(&'static str, u32)> = Vec::new();
        for (service, n) in calls.iter().flat_map(|c| self.cloud.cost(c)) {
            match cost.iter_mut().find(|(s, _)| *s == service) {
                Some((_, total)) => *total += n,
                None => cost.push((service, n)),
            }
        }
        cost
    }

    /// Polls and resyncs are not urgent: a partial batch of them waits for keys that
    /// become due within `batch_window` (never longer), so their describe calls are shared.
    /// A lone key with nothing due soon does not wait, and a batch with user work in it (a
    /// write, reconcile-now, arriving meanwhile too) goes at once. (Each batch costs five
    /// describe calls whatever its size, so tiny batches of polls burned the RDS budget;
    /// see docs/PERFORMANCE.md.)
    async fn fill_batch(&self, keys: &mut Vec<InstanceKey>, max: usize) {
        let deadline = tokio::time::Instant::now() + self.config.batch_window;
        loop {
            if keys.len() >= max || self.has_user_work(keys) {
                return;
            }
            let due = self.queue.try_batch(max - keys.len());
            if !due.is_empty() {
                keys.extend(due);
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            let until = match self.queue.next_delayed() {
                Some(at) if at <= deadline => at,
                // A resync is still listing: more keys are on their way.
                _ if self.listing_in_progress() => deadline.min(now + Duration::from_millis(5)),
                _ => return,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = self.queue.added() => {}
            }
        }
    }

    /// A full resync is still queueing keys.
    fn listing_in_progress(&self) -> bool {
        lock(&self.wave).as_ref().is_some_and(|w| !w.listed)
    }

    /// Observes `batch` under its batch `slot`, given back once the observation is in;
    /// then runs each pass. Keys whose last pass waits only for tasks to start are first
    /// looked at through their service alone (`polls`); only those that are done waiting
    /// join the full observation, which describes the RDS snapshots only if a pass can
    /// need them.
    async fn run_batch(
        self: Arc<Self>,
        batch: Vec<InstanceKey>,
        slot: OwnedSemaphorePermit,
        workers: Workers,
    ) {
        let live = self.read_batch(batch).await;
        if live.is_empty() {
            return;
        }
        let batch_keys: Vec<InstanceKey> = live.iter().map(|l| l.inst.key()).collect();
        let lane = self.batch_lane(batch_keys.iter());
        let (narrow, mut full): (Vec<Live>, Vec<Live>) =
            live.into_iter().partition(|l| self.polls_narrowly(l));
        let done = self.poll_services(narrow, lane).await;
        if full.is_empty() && !done.is_empty() && !self.full_look_now(&done) {
            // Polls whose tasks are up need a full look, but the budget cannot serve one
            // at once: they join the next batch, which waits for it with others.
            for l in done {
                self.look_fully_soon(&l.inst.key());
            }
            return;
        }
        full.extend(done);
        if full.is_empty() {
            return;
        }
        let keys: Vec<InstanceKey> = full.iter().map(|l| l.inst.key()).collect();
        let scope = Scope {
            snapshots: full.iter().any(|l| self.wants_snapshots(l)),
        };
        let observe = CALL_CONTEXT.scope(
            self.call_context(None, None, lane),
            self.cloud.observe_scope(&keys, scope),
        );
        match observe.await {
            Ok(mut observed) => {
                for (l, obs) in full.iter_mut().zip(observed.iter_mut()) {
                    obs.tasks = l.tasks.take();
                }
                let listing = self.list_tasks(&full, &mut observed, lane).await;
                drop(slot);
                let passes = full.into_iter().zip(observed).map(|(l, obs)| {
                    let error = listing.as_ref().err().filter(|_| obs.tasks.is_none());
                    let error = error.filter(|_| self.wants_tasks(&l.inst, &obs)).cloned();
                    self.clone().pass(l, obs, error, workers.clone())
                });
                futures::future::join_all(passes).await;
            }
            Err(error) => {
                warn!(instances = keys.len(), %error, "observation failed");
                let outcome = if error.is_retryable() {
                    Outcome::Failure
                } else {
                    Outcome::FailureAtLeast(self.config.problem_retry)
                };
                for l in full {
                    self.record_observe_failure(&l.inst, l.claim.fence(), &error)
                        .await;
                    self.count_result(outcome);
                    self.wave_done(&l.inst.key());
                    self.queue.done(&l.inst.key(), outcome);
                }
            }
        }
    }

    /// Whether a full observation of `live` (polls done waiting) is served at once; if not,
    /// it is better shared with the next (deferred) batch.
    fn full_look_now(&self, live: &[Live]) -> bool {
        let keys: Vec<InstanceKey> = live.iter().map(|l| l.inst.key()).collect();
        let cost = self
            .cloud
            .cost(&Call::Observe(keys.len(), Scope::WITHOUT_SNAPSHOTS));
        self.has_user_work(&keys) || self.cloud.delay(&cost).is_zero()
    }

    /// Queues `key` again at once for a full pass.
    fn look_fully_soon(&self, key: &InstanceKey) {
        lock(&self.polls).remove(key);
        let outcome = Outcome::Success {
            requeue_after: Some(Duration::ZERO),
        };
        self.count_result(outcome);
        self.wave_done(key);
        self.queue.done(key, outcome);
    }

    /// Claims and reads each key of a batch (the instance and what its pass reads besides);
    /// keys that cannot be reconciled here now are done with at once.
    async fn read_batch(&self, batch: Vec<InstanceKey>) -> Vec<Live> {
        let mut live = Vec::with_capacity(batch.len());
        for key in batch {
            // Another replica owns it (an API write landed here): the owner picks it up from
            // the pending index. Otherwise the claim holds the shard for the pass.
            let claim = match self.shards.claim(&key) {
                Ok(claim) => claim,
                Err(why) => {
                    self.untrack(&key);
                    self.wave_done(&key);
                    // A renewal is due any moment: look again after it, not never.
                    let requeue_after =
                        (why == NotNow::Expiring).then(|| self.shards.recheck_after());
                    self.queue.done(&key, Outcome::Success { requeue_after });
                    continue;
                }
            };
            let read = match self.store.get(&key).await {
                Ok(Some(inst)) => self.load_context(&inst).await.map(|c| Some((inst, c))),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match read {
                Ok(Some((inst, context))) => live.push(Live {
                    inst,
                    claim,
                    context,
                    tasks: None,
                }),
                Ok(None) => {
                    self.untrack(&key);
                    self.wave_done(&key);
                    let gone = Outcome::Success {
                        requeue_after: None,
                    };
                    self.queue.done(&key, gone);
                }
                Err(e) => {
                    warn!(instance = %key, error = %e, "store read failed");
                    self.wave_done(&key);
                    self.queue.done(&key, Outcome::Failure);
                }
            }
        }
        live
    }

    /// Whether the observation for `l` must describe the RDS snapshots: its plan can need
    /// them, or its last plan asked for them.
    fn wants_snapshots(&self, l: &Live) -> bool {
        let input = PlanInput {
            inst: &l.inst,
            backups: &l.context.backups,
            restore_from: l.context.restore_from.as_ref(),
        };
        needs_snapshots(&input) || lock(&self.snapshots_wanted).contains(&l.inst.key())
    }

    /// Whether the pass of `inst` needs its service's tasks listed to judge their health.
    fn wants_tasks(&self, inst: &Instance, obs: &Observed) -> bool {
        obs.service.as_ref().is_some_and(|svc| {
            let prev = inst.status.resources.service.as_ref();
            health::should_list(prev, inst.status.replicas.desired, svc)
        })
    }

    /// Lists, in one batched call, the tasks of the services whose health is not known
    /// otherwise (ECS describes tasks of many services at once), into their observations.
    async fn list_tasks(
        &self,
        live: &[Live],
        observed: &mut [Observed],
        lane: Lane,
    ) -> Result<(), CloudError> {
        let wanted: Vec<usize> = live
            .iter()
            .zip(observed.iter())
            .enumerate()
            .filter(|(_, (l, obs))| obs.tasks.is_none() && self.wants_tasks(&l.inst, obs))
            .map(|(i, _)| i)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let keys: Vec<InstanceKey> = wanted.iter().map(|&i| live[i].inst.key()).collect();
        let call = self.cloud.describe_tasks(&keys);
        let lists = CALL_CONTEXT
            .scope(self.call_context(None, None, lane), call)
            .await?;
        for (i, tasks) in wanted.into_iter().zip(lists) {
            observed[i].tasks = Some(tasks);
        }
        Ok(())
    }

    /// One reconcile pass of one instance, given its observation (and the error of the
    /// task listing it needed, if that failed), under `claim` (which keeps the shard's
    /// lease from being given back until the pass ends).
    async fn pass(
        self: Arc<Self>,
        live: Live,
        obs: Observed,
        listing_error: Option<CloudError>,
        workers: Workers,
    ) {
        let Live {
            inst,
            claim,
            context,
            ..
        } = live;
        let key = inst.key();
        let priority = self.queue.running_priority(&key).unwrap_or(Priority::User);
        let _worker = workers.acquire(priority).await;
        let span = info_span!(
            "reconcile",
            tenant_id = %key.tenant_id,
            instance_id = %key.instance_id,
            generation = inst.metadata.generation
        );
        let ctx = self.call_context(Some(&key), claim.fence(), self.lane(&key));
        let active = self.metrics.active_workers.with_label_values(&[CONTROLLER]);
        active.inc();
        let started = std::time::Instant::now();
        let outcome = CALL_CONTEXT
            .scope(
                ctx,
                self.reconcile(inst, context, claim.fence(), obs, listing_error),
            )
            .instrument(span)
            .await;
        active.dec();
        self.metrics
            .reconcile_time
            .with_label_values(&[CONTROLLER])
            .observe(started.elapsed().as_secs_f64());
        self.count_result(outcome);
        self.wave_done(&key);
        self.queue.done(&key, outcome);
    }

    /// `controller_runtime_reconcile_total{result}` as controller-runtime labels it.
    fn count_result(&self, outcome: Outcome) {
        let result = match outcome {
            Outcome::Failure | Outcome::FailureAtLeast(_) => {
                self.metrics
                    .reconcile_errors
                    .with_label_values(&[CONTROLLER])
                    .inc();
                "error"
            }
            Outcome::Success {
                requeue_after: None,
            } => "success",
            Outcome::Success {
                requeue_after: Some(d),
            } if d.is_zero() => "requeue",
            Outcome::Success { .. } => "requeue_after",
        };
        self.metrics
            .reconcile_total
            .with_label_values(&[CONTROLLER, result])
            .inc();
    }

    /// Ends the wave's accounting once every key of a full resync was processed.
    fn wave_done(&self, key: &InstanceKey) {
        let mut wave = lock(&self.wave);
        let Some(w) = wave.as_mut() else { return };
        w.left.remove(&key_hash(key));
        if w.listed && w.left.is_empty() {
            let calls = self
                .metrics
                .aws_calls_total()
                .saturating_sub(w.calls_at_start);
            let per_instance = calls as f64 / w.size.max(1) as f64;
            self.metrics.resync_calls_per_instance.set(per_instance);
            debug!(
                calls,
                instances = w.size,
                per_instance,
                "resync wave finished"
            );
            *wave = None;
        }
    }

    /// Who is calling the cloud: this replica and, for one instance, the fence of the lease
    /// its pass runs under; `urgent` when a user waits for the work (see `is_urgent`). For
    /// one instance, also numbers the pass and says how many passes failed before it.
    fn call_context(
        &self,
        key: Option<&InstanceKey>,
        fence: Option<Fence>,
        lane: Lane,
    ) -> CallContext {
        CallContext {
            replica: self.shards.replica_id().map(str::to_owned),
            fence: fence.map(|f| f.token),
            urgent: lane != Lane::Background,
            follow_up: lane == Lane::FollowUp,
            pass: key.map(|_| self.passes.fetch_add(1, Ordering::Relaxed) + 1),
            attempt: key.map(|k| self.queue.failures(k)),
        }
    }

    /// The budget lane of `key`'s calls: user work (an API write, reconcile-now, arriving
    /// meanwhile too) first, then the follow-up of a change in progress (a requeue), both
    /// urgent, i.e. ahead of the periodic resync (see `CallContext`).
    fn lane(&self, key: &InstanceKey) -> Lane {
        if self.queue.user_waiting(key) {
            return Lane::User;
        }
        match self.queue.running_priority(key) {
            Some(Priority::User) | None => Lane::User,
            Some(Priority::Requeue) => Lane::FollowUp,
            Some(Priority::Resync) => Lane::Background,
        }
    }

    /// The lane of a batch's shared calls: that of its most pressing key.
    fn batch_lane<'a>(&self, keys: impl Iterator<Item = &'a InstanceKey>) -> Lane {
        keys.map(|k| self.lane(k)).min().unwrap_or(Lane::Background)
    }

    /// `fence`: the pass's claim on the shard; every status write presents it.
    async fn reconcile(
        &self,
        inst: Instance,
        context: PassContext,
        fence: Option<Fence>,
        mut obs: Observed,
        listing_error: Option<CloudError>,
    ) -> Outcome {
        let mut outcome = PassOutcome {
            handled_request: inst
                .metadata
                .reconcile_request
                .as_ref()
                .map(|r| r.request_id.clone()),
            ..Default::default()
        };
        let completed = match listing_error {
            Some(error) => Err(error),
            None => self.complete_observation(&inst, &context, &mut obs).await,
        };
        if let Err(error) = completed {
            outcome.error = Some(PassError { step: None, error });
        }
        let input = PlanInput {
            inst: &inst,
            backups: &context.backups,
            restore_from: context.restore_from.as_ref(),
        };
        let plan = plan(&input, &obs);
        let ended = self.act(&inst, &context, fence, &obs, &plan, outcome).await;
        self.note_plan(&inst, &plan, &ended);
        ended
    }

    /// Executes the plan of a pass, writes its status and events, and says how it ended.
    async fn act(
        &self,
        inst: &Instance,
        context: &PassContext,
        fence: Option<Fence>,
        obs: &Observed,
        plan: &Plan,
        mut outcome: PassOutcome,
    ) -> Outcome {
        let key = inst.key();
        let mut backups = context.backups.clone();
        // The lease may have run low while observing: never act on a shard we may have
        // lost. Look again after the next lease round; if the shard moved, that pass will
        // not start here and its new owner has the instance.
        if !self.shards.owns(&key) {
            debug!("shard lease too short to act on; looking again after the lease round");
            return Outcome::Success {
                requeue_after: Some(self.shards.recheck_after()),
            };
        }
        let mut applied = vec![];
        if outcome.error.is_none() {
            outcome.error = self
                .execute(
                    inst,
                    plan,
                    &mut backups,
                    &mut outcome.started_restore_job,
                    &mut outcome.started_relocation_task,
                    &mut applied,
                )
                .await;
        }
        let outcome_error = outcome.error.as_ref().map(|e| e.error.clone());
        if outcome
            .error
            .as_ref()
            .is_some_and(|e| !e.error.is_retryable())
        {
            self.metrics
                .terminal_errors
                .with_label_values(&[CONTROLLER])
                .inc();
        }
        let error = outcome.error.clone();
        let at = now();
        let status = next_status(inst, obs, plan, outcome, at);
        let record = PassRecord {
            inst,
            backups: &context.backups,
            plan,
            applied: &applied,
            error: error.as_ref(),
            status: &status,
        };
        let events = pass_events(&record, at);
        self.record_convergence(inst, &status);
        if status.phase != inst.status.phase {
            info!(
                from = inst.status.phase.as_str(),
                to = status.phase.as_str(),
                "phase"
            );
        }
        if let Some(early) = self
            .write_status(&key, inst.metadata.generation, status, fence, &events)
            .await
        {
            return early;
        }
        if !self.record_backups(&mut backups, plan).await {
            return Outcome::Failure;
        }
        if let Some(e) = &outcome_error {
            // Needs a person: shown as Degraded (and phase FAILED) by the status written
            // above, and looked at again slowly, never given up on.
            return if e.is_retryable() {
                Outcome::Failure
            } else {
                Outcome::FailureAtLeast(self.config.problem_retry)
            };
        }
        Outcome::Success {
            requeue_after: self.requeue_after(plan),
        }
    }

    /// Tracks the instance as this pass leaves it, and times a newly reached generation.
    fn record_convergence(&self, inst: &Instance, status: &Status) {
        let reached = status.observed_generation >= inst.metadata.generation;
        if reached && !inst.is_converged() {
            let took = (now() - inst.metadata.updated_at)
                .to_std()
                .unwrap_or_default();
            self.metrics.time_to_converge.observe(took.as_secs_f64());
        }
        let mut after = inst.clone();
        after.status.phase = status.phase;
        after.status.observed_generation = status.observed_generation;
        self.track(&after);
    }

    /// Backups in flight, and the backup a pending restore reads from.
    async fn load_context(&self, inst: &Instance) -> Result<PassContext, StoreError> {
        let key = inst.key();
        let active = BackupPageRequest {
            limit: 100,
            after: None,
            active_only: true,
        };
        let backups = self.store.list_backups(&key, active).await?.items;
        let restore_from = match data_generation(inst).1 {
            Some(wanted) => self.store.get_backup(&key, &wanted.backup_id).await?,
            None => None,
        };
        Ok(PassContext {
            backups,
            restore_from,
        })
    }

    /// Adds what the batched observation leaves out: the AWS Backup jobs in flight. (Task
    /// lists, where needed, come batched too: `list_tasks`.)
    async fn complete_observation(
        &self,
        inst: &Instance,
        context: &PassContext,
        obs: &mut Observed,
    ) -> Result<(), CloudError> {
        let mut jobs: Vec<JobRef> = context
            .backups
            .iter()
            .filter_map(|b| b.efs_backup_job_id.clone())
            .map(|id| JobRef {
                kind: JobKind::Backup,
                id,
            })
            .collect();
        if let Some(restore) = &inst.status.restore
            && restore.completed_at.is_none()
        {
            let recorded = [
                (JobKind::Restore, &restore.efs_restore_job_id),
                (JobKind::Relocation, &restore.efs_relocation_task_id),
            ];
            jobs.extend(
                recorded
                    .into_iter()
                    .filter_map(|(kind, id)| id.clone().map(|id| JobRef { kind, id })),
            );
        }
        if !jobs.is_empty() {
            obs.jobs = self.cloud.describe_jobs(&jobs).await?;
        }
        Ok(())
    }

    /// Writes status and the pass's events (one store write); `Some(outcome)` when the
    /// pass should end here.
    async fn write_status(
        &self,
        key: &InstanceKey,
        generation: u64,
        status: Status,
        fence: Option<Fence>,
        events: &[Event],
    ) -> Option<Outcome> {
        match self
            .store
            .write_status_and_events(key, generation, status, fence, events)
            .await
        {
            Ok(()) => None,
            // Someone else took the shard over: this pass's view no longer counts.
            Err(StoreError::Fenced { shard, token }) => {
                warn!(
                    shard,
                    token, "status write fenced off: the shard has a new owner"
                );
                Some(Outcome::Success {
                    requeue_after: None,
                })
            }
            // Purged meanwhile: nothing left to do for this key.
            Err(StoreError::NotFound(_)) => Some(Outcome::Success {
                requeue_after: None,
            }),
            // Deleted and created again meanwhile: look at the new record now.
            Err(StoreError::StaleStatus { .. }) => Some(Outcome::Success {
                requeue_after: Some(Duration::ZERO),
            }),
            Err(e) => {
                warn!(error = %e, "status write failed");
                Some(Outcome::Failure)
            }
        }
    }

    /// Runs the plan's steps in order, noting each one applied; stops at the first error,
    /// which is returned. A job id is recorded the moment its job starts: a backup's on its
    /// record at once, a restore's (and its relocation task's) in the status this pass
    /// writes.
    async fn execute<'p>(
        &self,
        inst: &Instance,
        plan: &'p Plan,
        backups: &mut [Backup],
        restore_job: &mut Option<String>,
        relocation_task: &mut Option<String>,
        applied: &mut Vec<AppliedStep<'p>>,
    ) -> Option<PassError> {
        let key = inst.key();
        let incarnation = inst.metadata.created_at.timestamp_millis();
        for step in &plan.steps {
            let token = ClientToken::derive(&key, incarnation, step);
            let job_id = match self.cloud.apply(&key, step, &token).await {
                Ok(StepOutcome::Done) => None,
                Ok(StepOutcome::Started { job_id }) => Some(job_id),
                Err(error) => {
                    warn!(step = step.name(), %error, retryable = error.is_retryable(), "step failed");
                    return Some(PassError {
                        step: Some(step.name()),
                        error,
                    });
                }
            };
            info!(
                step = step.name(),
                target = step.target(),
                job_id,
                "step done"
            );
            applied.push(AppliedStep {
                step,
                job_id: job_id.clone(),
            });
            match (step, job_id) {
                (Step::StartBackupJob { backup_id, .. }, Some(id)) => {
                    self.record_backup_job(backups, backup_id, id).await;
                }
                (Step::StartRestoreJob { .. }, Some(id)) => *restore_job = Some(id),
                (Step::RelocateRestoredFiles { .. }, Some(id)) => *relocation_task = Some(id),
                _ => {}
            }
        }
        None
    }

    async fn record_backup_job(&self, backups: &mut [Backup], backup_id: &str, job_id: String) {
        let Some(record) = backups.iter_mut().find(|b| b.backup_id == backup_id) else {
            return;
        };
        record.efs_backup_job_id = Some(job_id);
        record.status = BackupStatus::Running;
        record.started_at.get_or_insert_with(now);
        // If this write is lost, the job's idempotency token (derived from the backup id)
        // makes the next pass get this same job back instead of a second one.
        if let Err(e) = self.store.update_backup(record).await {
            warn!(backup_id, error = %e, "recording the backup job failed");
        }
    }

    /// Writes the backups whose progress the plan changed; false if a write failed.
    async fn record_backups(&self, backups: &mut [Backup], plan: &Plan) -> bool {
        let mut ok = true;
        for progress in &plan.backups {
            let Some(record) = backups
                .iter_mut()
                .find(|b| b.backup_id == progress.backup_id)
            else {
                continue;
            };
            let at = now();
            record.status = progress.status;
            record.efs_recovery_point_arn = progress.efs_recovery_point_arn.clone();
            record.rds_snapshot_id = progress.rds_snapshot_id.clone();
            record.error = progress.error.clone();
            if record.status != BackupStatus::Pending {
                record.started_at.get_or_insert(at);
            }
            if record.status.is_final() {
                record.completed_at = Some(at);
                info!(
                    backup_id = record.backup_id,
                    status = record.status.as_str(),
                    "backup finished"
                );
            }
            match self.store.update_backup(record).await {
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => {
                    warn!(backup_id = record.backup_id, error = %e, "backup write failed");
                    ok = false;
                }
            }
        }
        ok
    }

    fn requeue_after(&self, plan: &Plan) -> Option<Duration> {
        if plan.needs_snapshots {
            // Nothing was decided about what needs them: look again with them at once.
            return Some(Duration::ZERO);
        }
        if plan.waits.is_empty() && plan.problem.is_none() {
            debug!("converged");
            return None;
        }
        let poll = plan
            .waits
            .iter()
            .map(|w| self.cloud.poll_interval(w.on))
            .min();
        Some(poll.unwrap_or(self.config.problem_retry))
    }

    /// Keeps the last known status but says why this pass could not look at the cloud.
    async fn record_observe_failure(
        &self,
        inst: &Instance,
        fence: Option<Fence>,
        error: &CloudError,
    ) {
        let at = now();
        let mut status = inst.status.clone();
        status.last_reconcile_at = Some(at);
        status.last_error = Some(crate::model::LastError {
            code: error.code().to_owned(),
            message: error.to_string(),
            step: None,
            retryable: error.is_retryable(),
            at,
        });
        let synced = ConditionUpdate::new(
            ConditionType::Synced,
            false,
            error.code().to_owned(),
            error.to_string(),
        );
        set_condition(&mut status.conditions, synced, at);
        if !error.is_retryable() {
            let degraded = ConditionUpdate::new(
                ConditionType::Degraded,
                true,
                error.code().to_owned(),
                error.to_string(),
            );
            set_condition(&mut status.conditions, degraded, at);
        }
        let event = observe_failed(error, inst.metadata.generation, at);
        if let Err(e) = self
            .store
            .write_status_and_events(
                &inst.key(),
                inst.metadata.generation,
                status,
                fence,
                &[event],
            )
            .await
        {
            debug!(error = %e, "status write after failed observation");
        }
    }

    async fn resync_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut startup = true;
        loop {
            if let Err(e) = self.enqueue_all(startup).await {
                warn!(error = %e, "resync listing failed; retrying soon");
            } else {
                startup = false;
            }
            let wait = if startup {
                Duration::from_secs(5)
            } else {
                jittered(self.config.resync_interval)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Queues every instance this replica owns: unconverged ones (work a restart
    /// interrupted) ahead of the drift check of converged ones. Purges DEPROVISIONED
    /// records past retention.
    async fn enqueue_all(&self, startup: bool) -> Result<(), StoreError> {
        let held = self.shards.held();
        let shards = self.shards.is_leasing().then_some(held.as_slice());
        let (queued, converging) = self.enqueue_listing(shards).await?;
        info!(queued, converging, shards = held.len(), startup, "resync");
        Ok(())
    }

    /// Queues the instances of newly acquired shards.
    async fn enqueue_shards(&self, shards: &[u32]) {
        match self.enqueue_listing(Some(shards)).await {
            Ok((queued, converging)) => {
                info!(
                    queued,
                    converging,
                    shards = shards.len(),
                    "queued newly held shards"
                )
            }
            Err(e) => warn!(error = %e, "listing newly held shards failed; the resync will"),
        }
    }

    /// Lists instances (of `shards`, or all) and queues them by urgency.
    async fn enqueue_listing(&self, shards: Option<&[u32]>) -> Result<(usize, usize), StoreError> {
        let (mut queued, mut converging) = (0usize, 0usize);
        *lock(&self.wave) = Some(ResyncWave {
            calls_at_start: self.metrics.aws_calls_total(),
            size: 0,
            left: HashSet::new(),
            listed: false,
        });
        let lists: Vec<Option<u32>> = match shards {
            Some(list) => list.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        for shard in lists {
            let mut page = PageRequest {
                limit: 500,
                after: None,
            };
            loop {
                let result = match shard {
                    Some(n) => self.store.list_shard(n, page.clone()).await?,
                    None => self.store.list(None, page.clone()).await?,
                };
                for inst in &result.items {
                    self.track(inst);
                    if let Some(p) = self.resync_priority(inst).await {
                        queued += 1;
                        converging += usize::from(p != Priority::Resync);
                        if let Some(w) = lock(&self.wave).as_mut() {
                            w.size += 1;
                            w.left.insert(key_hash(&inst.key()));
                        }
                        self.queue.add(inst.key(), p, Duration::ZERO);
                    }
                }
                match result.next {
                    Some(next) => page.after = Some(next),
                    None => break,
                }
            }
        }
        let mut wave = lock(&self.wave);
        match wave.as_mut() {
            Some(w) if w.left.is_empty() => *wave = None,
            Some(w) => w.listed = true,
            None => {}
        }
        Ok((queued, converging))
    }

    /// Polls the store's pending index for work written through other replicas (or before
    /// a takeover), and queues what is new for shards this replica holds. A marker it has
    /// seen is not queued again: a converging instance keeps its own requeue schedule.
    async fn pending_loop(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut seen: HashMap<InstanceKey, String> = HashMap::new();
        loop {
            match self.store.pending(10_000).await {
                Ok(items) => {
                    let mut still = HashMap::with_capacity(items.len());
                    for item in items {
                        if !self.shards.owns_shard(item.shard) {
                            continue;
                        }
                        if seen.get(&item.key) != Some(&item.marker) {
                            self.queue
                                .add(item.key.clone(), Priority::User, Duration::ZERO);
                        }
                        still.insert(item.key, item.marker);
                    }
                    seen = still;
                }
                Err(e) => warn!(error = %e, "polling the pending index failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn resync_priority(&self, inst: &Instance) -> Option<Priority> {
        if inst.metadata.reconcile_request.is_some() {
            return Some(Priority::User);
        }
        if inst.status.phase == Phase::Deprovisioned && inst.is_converged() {
            self.purge_if_expired(inst).await;
            return None;
        }
        if inst.is_converged() {
            Some(Priority::Resync)
        } else {
            Some(Priority::Requeue)
        }
    }

    async fn purge_if_expired(&self, inst: &Instance) {
        let Some(deleted_at) = inst.metadata.deletion_requested_at else {
            return;
        };
        let age = (now() - deleted_at).to_std().unwrap_or_default();
        if age >= self.config.retention {
            match self.store.delete(&inst.key()).await {
                Ok(_) => info!(instance = %inst.key(), "purged after retention"),
                Err(e) => warn!(instance = %inst.key(), error = %e, "purge failed"),
            }
        }
    }
}

/// A key's 64-bit hash, keyed at random per process, so ids cannot be chosen to collide.
fn key_hash(key: &InstanceKey) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);
    KEYS.hash_one(key)
}

/// A poisoned lock only means a pass panicked mid-update of a gauge map; keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// ±10 % so that replicas and restarts do not resync in lockstep.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.9..1.1))
}
