//! `wpfleet bench …`: the performance targets of issue 6, measured in one process, one run,
//! on the simulated cloud with its default rate limits. Each benchmark prints what it
//! measured and, last, the ratio it is judged by (`ratio …` / `… per instance …` line).
//!
//! * `converge`: N instances created at once; wall time until all are ACTIVE, against the
//!   lower bound the simulated rate limits and durations imply. Target ratio ≤ 1.15.
//! * `resync`: one full resync of N converged instances; cloud calls per instance.
//!   Target ≤ 0.15.
//! * `latency`: PUTs spread over time; from the PUT's reply to the first mutating cloud
//!   call for that instance, p50/p99. Target p99 < 50 ms.
//! * `api`: PUT throughput through HTTP versus raw `Store` writes. Target ≥ 0.8.
//! * `memory`: RSS with N converged instances tracked and resyncing. Target < 200 MB.
//!
//! The simulated cloud lives in memory here (no `sim-cloud.redb`): real AWS is not on the
//! controller's disk, so its persistence must not compete with the store's writes. Fleets
//! that only need to *be* converged (resync, memory) are seeded by [`seed`], which builds
//! them as the planner would, at simulated times in the past, without calls.

mod api;
mod converge;
mod http;
mod latency;
mod memory;
mod resync;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use api::api;
pub use converge::{Bound, converge, lower_bound};
pub use latency::{LatencyArgs, latency};
pub use memory::memory;
pub use resync::resync;

use crate::cloud::budget::{Budget, Paced};
use crate::cloud::sim::{SimCloud, SimConfig, SimLimits};
use crate::cloud::{ClientToken, Cloud};
use crate::metrics::Metrics;
use crate::model::{Configuration, DesiredState, Instance, InstanceKey, Phase, Spec, Tier, now};
use crate::reconcile::plan::{PlanInput, plan};
use crate::reconcile::status::{PassOutcome, next_status};
use crate::reconcile::{Reconciler, RunConfig, Shards};
use crate::store::{EmbeddedStore, PageRequest, Store};

/// A controller on the embedded store and the (in-memory) simulated cloud, without HTTP.
pub struct Rig {
    pub store: Arc<EmbeddedStore>,
    pub sim: Arc<SimCloud>,
    pub reconciler: Arc<Reconciler>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub dir: tempfile::TempDir,
    run: RunConfig,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Rig {
    /// Store and cloud, with the reconciler built but not started (see [`Rig::start`]).
    pub fn new(speed: f64, run: RunConfig) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a temporary data dir")?;
        let store = Arc::new(EmbeddedStore::open(dir.path())?);
        let sim = Arc::new(SimCloud::in_memory(SimConfig {
            speed,
            ..SimConfig::default()
        }));
        let metrics = Arc::new(Metrics::new());
        sim.set_metrics(metrics.clone());
        let shards = Shards::all(store.clone());
        let paced: Arc<dyn Cloud> = Arc::new(Paced::new(
            sim.clone(),
            Budget::new(SimLimits::default().rates()),
        ));
        let reconciler =
            Reconciler::new(store.clone(), paced, shards, run.clone(), metrics.clone());
        Ok(Self {
            store,
            sim,
            reconciler,
            metrics,
            shutdown: CancellationToken::new(),
            dir,
            run,
            task: None,
        })
    }

    /// Starts the reconciler (which queues every stored instance at once: its startup
    /// resync).
    pub fn start(&mut self) {
        let task = tokio::spawn(self.reconciler.clone().run(self.shutdown.clone()));
        self.task = Some(task);
    }

    pub fn run_config(&self) -> &RunConfig {
        &self.run
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }

    /// Counts instances by phase, and those converged on their generation.
    pub async fn converged_by_phase(&self) -> anyhow::Result<(usize, HashMap<Phase, usize>)> {
        let mut page = PageRequest {
            limit: 1000,
            after: None,
        };
        let (mut converged, mut phases) = (0, HashMap::new());
        loop {
            let result = self.store.list(None, page.clone()).await?;
            for inst in &result.items {
                *phases.entry(inst.status.phase).or_insert(0) += 1;
                converged += usize::from(inst.is_converged());
            }
            match result.next {
                Some(next) => page.after = Some(next),
                None => return Ok((converged, phases)),
            }
        }
    }

    /// Waits until all `n` instances are ACTIVE on their generation, printing progress.
    pub async fn wait_all_active(&self, n: usize, started: Instant) -> anyhow::Result<()> {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (converged, phases) = self.converged_by_phase().await?;
            let active = phases.get(&Phase::Active).copied().unwrap_or(0);
            if active == n && converged == n {
                return Ok(());
            }
            print_progress(started, active, n, &phases);
        }
    }
}

pub fn bench_spec(desired: u32) -> Spec {
    Spec {
        organization_name: "Bench Ltd".into(),
        contact_email: "bench@example.com".into(),
        tier: Tier::Enterprise,
        state: DesiredState::Active,
        configuration: Configuration {
            desired_count: desired,
            ..Configuration::default()
        },
        restore: None,
    }
}

/// Instance `i` of a bench fleet, spread over 50 tenants.
pub fn bench_key(i: usize) -> InstanceKey {
    InstanceKey::from_strs(&format!("t{}", i % 50), &format!("i{i:06}"))
}

fn print_progress(started: Instant, active: usize, n: usize, phases: &HashMap<Phase, usize>) {
    let mut parts: Vec<String> = phases
        .iter()
        .map(|(p, c)| format!("{}={c}", p.as_str()))
        .collect();
    parts.sort();
    println!(
        "  {:>6.1}s {active}/{n} active ({})",
        started.elapsed().as_secs_f64(),
        parts.join(" ")
    );
}

/// Builds `n` converged instances (bench keys 0..n) in the simulated cloud and the store,
/// without cloud calls: the planner's steps are applied at simulated times hours in the
/// past, and the stored status is what a pass would write on the result. So the fleet
/// looks exactly as if the reconciler had converged it long ago.
pub async fn seed(rig: &Rig, n: usize) -> anyhow::Result<()> {
    seed_cloud(rig, n)?;
    seed_store(rig, n).await
}

/// The cloud half of [`seed`].
pub fn seed_cloud(rig: &Rig, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let now_ms = now().timestamp_millis();
    for i in 0..n {
        let key = bench_key(i);
        let mut inst = Instance::new(key.clone(), bench_spec(2), now());
        let incarnation = inst.metadata.created_at.timestamp_millis();
        // Half an hour per round: every transition a round starts has finished by the next.
        let mut at = now_ms - 6 * 3600 * 1000;
        loop {
            let p = plan(&PlanInput::new(&inst), &rig.sim.peek_at(&key, at));
            if p.converged {
                break;
            }
            anyhow::ensure!(at < now_ms, "seeding {key} did not converge: {p:?}");
            for step in &p.steps {
                let token = ClientToken::derive(&key, incarnation, step);
                rig.sim.apply_at(&key, step, &token, at)?;
            }
            at += 30 * 60 * 1000;
            inst.status.phase = p.phase;
        }
    }
    println!(
        "  seeded {n} instances in the simulated cloud in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The store half of [`seed`]: each record with the status a pass would write now.
pub async fn seed_store(rig: &Rig, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    for i in 0..n {
        let key = bench_key(i);
        let mut inst = Instance::new(key.clone(), bench_spec(2), now());
        let obs = rig.sim.peek_at(&key, now().timestamp_millis());
        let p = plan(&PlanInput::new(&inst), &obs);
        inst.status = next_status(&inst, &obs, &p, PassOutcome::default(), now());
        anyhow::ensure!(
            inst.is_converged() && inst.status.phase == Phase::Active,
            "seeded {key} is not converged: {:?}",
            inst.status
        );
        rig.store.create(inst).await?;
        if (i + 1) % 10_000 == 0 {
            println!(
                "  stored {}/{n} in {:.1}s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "  stored {n} converged records in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// This process's resident set size in bytes (Linux `/proc/self/status`), if known.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seeded_fleet_is_converged_in_store_and_cloud() {
        let rig = Rig::new(100.0, RunConfig::default()).unwrap();
        seed(&rig, 3).await.unwrap();
        let (converged, phases) = rig.converged_by_phase().await.unwrap();
        assert_eq!(converged, 3);
        assert_eq!(phases.get(&Phase::Active), Some(&3));
        // What the reconciler will see plans nothing, and seeding made no call.
        assert_eq!(rig.sim.stats().calls, 0);
        for i in 0..3 {
            let inst = rig.store.get(&bench_key(i)).await.unwrap().unwrap();
            let obs = rig.sim.peek_at(&bench_key(i), now().timestamp_millis());
            let p = plan(&PlanInput::new(&inst), &obs);
            assert!(p.converged && p.steps.is_empty(), "{p:?}");
            assert_eq!(inst.status.replicas.running, 2);
        }
    }
}
