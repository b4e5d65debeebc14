//! `wpfleet bench …`: the performance targets, measured in one process, one run, on the
//! simulated cloud with its default rate limits. Each benchmark prints what it measured
//! and, last, the ratio it is judged by.
//!
//! * `converge`: N instances created at once; wall time until all are ACTIVE, against the
//!   lower bound the simulated rate limits imply. Target ratio ≤ 1.15.
//! * `resync`: one full resync of N converged instances; cloud calls per instance.
//!   Target ≤ 0.15.
//! * `latency`: PUTs spread over time; time from the PUT's reply to the first mutating
//!   cloud call for that instance, p50/p99. Target p99 < 50 ms.
//! * `api`: PUT throughput through HTTP versus raw `Store` writes. Target ≥ 0.8.
//! * `memory`: RSS with N converged instances tracked and resyncing. Target < 200 MB.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cloud::sim::{SimCloud, SimConfig, SimLimits};
use crate::metrics::Metrics;
use crate::model::{Configuration, DesiredState, Instance, InstanceKey, Phase, Spec, Tier, now};
use crate::reconcile::{Reconciler, RunConfig, Shards};
use crate::store::{EmbeddedStore, PageRequest, Store};

/// A controller on the embedded store and the simulated cloud, without HTTP.
pub struct Rig {
    pub store: Arc<EmbeddedStore>,
    pub sim: Arc<SimCloud>,
    pub reconciler: Arc<Reconciler>,
    pub shutdown: CancellationToken,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Rig {
    pub fn start(speed: f64, run: RunConfig) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a temporary data dir")?;
        let store = Arc::new(EmbeddedStore::open(dir.path())?);
        let sim = Arc::new(SimCloud::open(
            dir.path(),
            SimConfig {
                speed,
                ..SimConfig::default()
            },
        )?);
        let metrics = Arc::new(Metrics::new());
        sim.set_metrics(metrics.clone());
        let shards = Shards::all(store.clone());
        let reconciler = Reconciler::new(store.clone(), sim.clone(), shards, run, metrics);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(reconciler.clone().run(shutdown.clone()));
        Ok(Self {
            store,
            sim,
            reconciler,
            shutdown,
            _dir: dir,
            task,
        })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Counts instances by phase among those converged on their generation.
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

pub fn bench_key(i: usize) -> InstanceKey {
    InstanceKey::from_strs(&format!("t{}", i % 50), &format!("i{i:06}"))
}

/// `converge`: create N instances at once and time them to ACTIVE.
pub async fn converge(n: usize, speed: f64) -> anyhow::Result<f64> {
    let rig = Rig::start(speed, RunConfig::default())?;
    println!("converge: {n} instances, sim speed x{speed}, default rate limits");
    let started = Instant::now();
    let trigger = rig.reconciler.trigger();
    for i in 0..n {
        let inst = Instance::new(bench_key(i), bench_spec(2), now());
        rig.store.create(inst).await?;
        trigger.now(bench_key(i));
    }
    println!("  created in {:.1}s", started.elapsed().as_secs_f64());
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (converged, phases) = rig.converged_by_phase().await?;
        let active = phases.get(&Phase::Active).copied().unwrap_or(0);
        if active == n && converged == n {
            break;
        }
        print_progress(started, active, n, &phases);
    }
    let wall = started.elapsed().as_secs_f64();
    let bound = lower_bound(n, speed, &SimLimits::default());
    let stats = rig.sim.stats();
    println!("  all ACTIVE after {wall:.1}s");
    println!(
        "  cloud calls: {} ({} mutating, {:.2} per instance); throttled: {}",
        stats.calls,
        stats.mutating_calls,
        stats.calls as f64 / n as f64,
        stats.operations.values().map(|o| o.throttled).sum::<u64>()
    );
    for line in &bound.explain {
        println!("  {line}");
    }
    println!("  lower bound: {:.1}s", bound.seconds);
    let ratio = wall / bound.seconds;
    println!("ratio (wall / lower bound): {ratio:.3} (target <= 1.15)");
    rig.stop().await;
    Ok(ratio)
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

pub struct Bound {
    pub seconds: f64,
    pub explain: Vec<String>,
}

/// What no controller can beat: for each service, the calls converging `n` instances
/// needs (one create per resource, and two batched observations per instance: one to
/// see nothing exists, one to see it ready), minus the bucket's burst, at the bucket's
/// rate; or the longest chain of durations (RDS create, then tasks start), whichever is
/// longer.
pub fn lower_bound(n: usize, speed: f64, limits: &SimLimits) -> Bound {
    let n = n as f64;
    let batches = |per: f64| (n / per).ceil();
    // (service, calls needed, limit)
    let needs = [
        ("ecs", n + 2.0 * batches(10.0), limits.ecs),
        ("efs", n + 2.0 * batches(100.0), limits.efs),
        ("rds", n + 2.0 * 2.0 * batches(100.0), limits.rds),
        ("logs", n + 2.0 * batches(50.0), limits.logs),
    ];
    let mut explain = vec![];
    let mut worst: f64 = 0.0;
    for (service, calls, limit) in needs {
        let secs = ((calls - limit.burst).max(0.0)) / limit.rate;
        explain.push(format!(
            "{service}: {calls:.0} calls needed at {}/s (burst {}) = {secs:.1}s",
            limit.rate, limit.burst
        ));
        worst = worst.max(secs);
    }
    // RDS create (240 s) then tasks provision + pend (20 s) + turn healthy (10 s).
    let chain = (240.0 + 20.0 + 10.0) * 0.8 / speed;
    explain.push(format!(
        "longest chain (RDS create, tasks start, healthy): {chain:.1}s"
    ));
    Bound {
        seconds: worst.max(chain),
        explain,
    }
}

/// `resync`: converge N instances, then time one full resync and count its cloud calls.
pub async fn resync(n: usize, speed: f64) -> anyhow::Result<f64> {
    let run = RunConfig {
        // Only the resync this benchmark triggers.
        resync_interval: Duration::from_secs(24 * 3600),
        ..RunConfig::default()
    };
    let rig = Rig::start(speed, run)?;
    println!("resync: {n} converged instances, sim speed x{speed}");
    let trigger = rig.reconciler.trigger();
    for i in 0..n {
        rig.store
            .create(Instance::new(bench_key(i), bench_spec(2), now()))
            .await?;
        trigger.now(bench_key(i));
    }
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (converged, phases) = rig.converged_by_phase().await?;
        if converged == n && phases.get(&Phase::Active) == Some(&n) {
            break;
        }
        print_progress(
            started,
            phases.get(&Phase::Active).copied().unwrap_or(0),
            n,
            &phases,
        );
    }
    // Settle: no pass in flight.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rig.sim.stats();
    let resync_started = Instant::now();
    rig.reconciler.resync_now().await?;
    while rig.reconciler.resync_in_progress() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rig.sim.stats();
    let calls = after.calls - before.calls;
    let mutating = after.mutating_calls - before.mutating_calls;
    println!(
        "  one resync of {n} instances took {:.1}s: {calls} cloud calls, {mutating} mutating",
        resync_started.elapsed().as_secs_f64()
    );
    for (op, s) in &after.operations {
        let was = before.operations.get(op).map_or(0, |o| o.calls);
        if s.calls > was {
            println!("    {op}: {}", s.calls - was);
        }
    }
    let per = calls as f64 / n as f64;
    println!("calls per instance: {per:.3} (target <= 0.15)");
    rig.stop().await;
    Ok(per)
}
