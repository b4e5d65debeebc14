//! `wpfleet bench resync`: one full resync of N converged instances; cloud calls per
//! instance. The fleet is seeded (see `bench::seed`); the reconciler's startup resync runs
//! first, then the measured one, as the periodic resync would run it.

use std::time::{Duration, Instant};

use super::{Rig, seed};
use crate::reconcile::RunConfig;

pub async fn resync(n: usize, speed: f64) -> anyhow::Result<f64> {
    let run = RunConfig {
        // Only the resyncs this benchmark asks for.
        resync_interval: Duration::from_secs(24 * 3600),
        ..RunConfig::default()
    };
    let mut rig = Rig::new(speed, run)?;
    println!("resync: {n} converged instances, sim speed x{speed}, default rate limits");
    seed(&rig, n).await?;
    rig.start();
    // The startup resync (every instance queued at once) is not the one measured.
    wait_for_first_wave(&rig).await;
    let before = rig.sim.stats();
    let started = Instant::now();
    rig.reconciler.resync_now().await?;
    while rig.reconciler.resync_in_progress() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let after = rig.sim.stats();
    let calls = after.calls - before.calls;
    let mutating = after.mutating_calls - before.mutating_calls;
    println!(
        "  one resync of {n} instances took {took:.1}s: {calls} cloud calls, {mutating} mutating"
    );
    for (op, s) in &after.operations {
        let was = before.operations.get(op).map_or(0, |o| o.calls);
        if s.calls > was {
            println!("    {op}: {}", s.calls - was);
        }
    }
    println!(
        "  the reconciler's own figure (wpfleet_resync_aws_calls_per_instance): {:.3}",
        rig.metrics.resync_calls_per_instance.get()
    );
    let per = calls as f64 / n as f64;
    println!("calls per instance: {per:.3} (target <= 0.15)");
    rig.stop().await;
    Ok(per)
}

/// Waits until the startup resync has gone through every instance.
pub(super) async fn wait_for_first_wave(rig: &Rig) {
    // The gauge is set when a wave's last instance is done.
    while rig.metrics.resync_calls_per_instance.get() == 0.0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let passes that requeued themselves settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
}
