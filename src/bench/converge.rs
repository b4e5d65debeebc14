//! `wpfleet bench converge`: N instances created at once, timed until all are ACTIVE, and
//! compared with what the simulated cloud's rate limits and durations allow at best.

use std::time::Instant;

use super::{Rig, bench_key, bench_spec};
use crate::cloud::sim::SimLimits;
use crate::model::{Instance, now};
use crate::reconcile::RunConfig;
use crate::store::Store;

pub async fn converge(n: usize, speed: f64, workers: usize) -> anyhow::Result<f64> {
    let run = RunConfig {
        workers,
        ..RunConfig::default()
    };
    let mut rig = Rig::new(speed, run)?;
    rig.start();
    println!("converge: {n} instances, sim speed x{speed}, default rate limits, {workers} workers");
    let started = Instant::now();
    let trigger = rig.reconciler.trigger();
    for i in 0..n {
        let inst = Instance::new(bench_key(i), bench_spec(2), now());
        rig.store.create(inst).await?;
        trigger.now(bench_key(i));
    }
    println!("  created in {:.1}s", started.elapsed().as_secs_f64());
    rig.wait_all_active(n, started).await?;
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
    let mut ops: Vec<_> = stats.operations.iter().collect();
    ops.sort_by_key(|(_, o)| std::cmp::Reverse(o.calls));
    for (op, o) in ops {
        println!("    {op}: {} calls, {} throttled", o.calls, o.throttled);
    }
    for line in &bound.explain {
        println!("  {line}");
    }
    println!("  lower bound: {:.1}s", bound.seconds);
    let ratio = wall / bound.seconds;
    println!("ratio (wall / lower bound): {ratio:.3} (target <= 1.15)");
    rig.stop().await;
    Ok(ratio)
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
///
/// What is counted and why: an observation describes each service's resources in batches
/// (DescribeServices 10 per call, DescribeDBInstances and DescribeAccessPoints 100,
/// DescribeLogGroups 50). Creating an instance needs no RDS snapshot, so none is described
/// (DescribeDBSnapshots is only needed for backups, restores and deletes). Task health
/// needs no ListTasks: ECS's rollout state of the new service's deployment (in
/// DescribeServices) vouches for it. Polls beyond the two observations are not counted: a
/// controller that knew when each resource becomes ready would not need them.
pub fn lower_bound(n: usize, speed: f64, limits: &SimLimits) -> Bound {
    let n = n as f64;
    let batches = |per: f64| (n / per).ceil();
    // (service, calls needed, limit)
    let needs = [
        ("ecs", n + 2.0 * batches(10.0), limits.ecs),
        ("efs", n + 2.0 * batches(100.0), limits.efs),
        ("rds", n + 2.0 * batches(100.0), limits.rds),
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
    // RDS create (240 s) then tasks provision + pend (20 s) + turn healthy (10 s), each
    // at least 80 % of its base (the simulated jitter is ±20 %).
    let chain = (240.0 + 20.0 + 10.0) * 0.8 / speed;
    explain.push(format!(
        "longest chain (RDS create, tasks start, healthy): {chain:.1}s"
    ));
    Bound {
        seconds: worst.max(chain),
        explain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_scarcest_service_or_the_chain() {
        let limits = SimLimits::default();
        // 5,000 instances: CloudWatch Logs (10/s) needs 5,000 creates + 2 × 100 describes
        // (50 groups per call); RDS 5,000 + 2 × 50, EFS the same.
        let b = lower_bound(5000, 100.0, &limits);
        assert!(
            (b.seconds - (5200.0 - 20.0) / 10.0).abs() < 1e-9,
            "{}",
            b.seconds
        );
        assert!(
            b.explain[2].starts_with("rds: 5100 calls"),
            "{:?}",
            b.explain
        );
        // One instance at real speed: the RDS → tasks chain dominates.
        let b = lower_bound(1, 1.0, &limits);
        assert!((b.seconds - 216.0).abs() < 1e-9, "{}", b.seconds);
    }
}
