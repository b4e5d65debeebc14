//! `wpfleet bench memory`: RSS with N converged instances tracked and resyncing.
//!
//! One process holds the controller *and* the simulated cloud, whose inventory of N
//! instances is not the controller's memory (in production it is AWS). So the cloud is
//! seeded first and its share measured (RSS after seeding minus RSS before); the judged
//! figure is the peak RSS while the controller tracks and resyncs the fleet, minus that
//! share. Both are printed.

use std::time::{Duration, Instant};

use super::{Rig, mib, rss_bytes, seed_cloud, seed_store};
use crate::reconcile::RunConfig;

/// Target, MiB.
const TARGET_MB: f64 = 200.0;

pub async fn memory(n: usize, watch: Duration, speed: f64) -> anyhow::Result<f64> {
    let rss = || rss_bytes().ok_or_else(|| anyhow::anyhow!("no /proc/self/status VmRSS"));
    let run = RunConfig {
        // The startup resync is the resync watched; no second one starts meanwhile.
        resync_interval: Duration::from_secs(24 * 3600),
        ..RunConfig::default()
    };
    println!("memory: {n} converged instances tracked and resyncing, sim speed x{speed}");
    let mut rig = Rig::new(speed, run)?;
    let before = rss()?;
    seed_cloud(&rig, n)?;
    let with_cloud = rss()?;
    let cloud_share = with_cloud.saturating_sub(before);
    seed_store(&rig, n).await?;
    let seeded = rss()?;
    println!(
        "  RSS: {:.0} MiB at start, {:.0} MiB with the simulated cloud (its share {:.0} MiB), {:.0} MiB with the store written",
        mib(before),
        mib(with_cloud),
        mib(cloud_share),
        mib(seeded)
    );
    rig.start();
    let started = Instant::now();
    let mut peak = seeded;
    let calls_before = rig.sim.stats().calls;
    let mut seconds = 0u64;
    while started.elapsed() < watch {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seconds += 1;
        let now = rss()?;
        peak = peak.max(now);
        let q = rig.reconciler.queue().stats();
        if seconds.is_multiple_of(10) {
            println!(
                "  {:>4.0}s RSS {:.0} MiB, queue {} waiting, {} calls so far",
                started.elapsed().as_secs_f64(),
                mib(now),
                q.queued,
                rig.sim.stats().calls - calls_before
            );
        }
    }
    let passes = rig
        .metrics
        .reconcile_total
        .with_label_values(&[crate::metrics::CONTROLLER, "success"])
        .get();
    println!(
        "  watched {:.0}s of the resync: {passes} passes done, peak RSS {:.0} MiB",
        watch.as_secs_f64(),
        mib(peak)
    );
    let controller = mib(peak.saturating_sub(cloud_share));
    println!("  controller (peak RSS minus the simulated cloud's share): {controller:.0} MiB");
    let ratio = controller / TARGET_MB;
    println!("ratio (controller RSS / {TARGET_MB} MiB): {ratio:.3} (target < 1)");
    rig.stop().await;
    Ok(ratio)
}
