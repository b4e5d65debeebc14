//! `wpfleet bench latency`: PUTs spread over time (Poisson arrivals) against a converged
//! fleet, each changing one instance's task count; for each, the time from the PUT's reply
//! to the first successful mutating cloud call for that instance (its `UpdateService`),
//! read from the simulated cloud's call log. p50 and p99; target p99 < 50 ms.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::json;

use super::http::serve;
use super::resync::wait_for_first_wave;
use super::{Rig, bench_key, quantile, seed};
use crate::reconcile::RunConfig;

/// p99 target, milliseconds.
const TARGET_P99_MS: f64 = 50.0;

pub struct LatencyArgs {
    pub puts: usize,
    /// Mean PUTs per second.
    pub rate: f64,
    /// Converged instances the PUTs go to (round robin).
    pub fleet: usize,
    pub speed: f64,
}

pub async fn latency(args: LatencyArgs) -> anyhow::Result<f64> {
    let LatencyArgs {
        puts,
        rate,
        fleet,
        speed,
    } = args;
    anyhow::ensure!(
        fleet > 0 && rate > 0.0,
        "--fleet and --rate must be positive"
    );
    let run = RunConfig {
        resync_interval: Duration::from_secs(24 * 3600),
        ..RunConfig::default()
    };
    let mut rig = Rig::new(speed, run)?;
    println!(
        "latency: {puts} PUTs at {rate}/s (Poisson) over {fleet} converged instances, sim speed x{speed}"
    );
    seed(&rig, fleet).await?;
    rig.start();
    wait_for_first_wave(&rig).await;
    let served = serve(&rig).await?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut sent: Vec<Put> = Vec::with_capacity(puts);
    for j in 0..puts {
        let gap = -rand::rng().random_range(f64::EPSILON..1.0f64).ln() / rate;
        tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        let key = bench_key(j % fleet);
        // Seeded at 2 tasks: every round flips each instance between 3 and 2.
        let desired = if (j / fleet) % 2 == 0 { 3 } else { 2 };
        let body = json!({
            "organizationName": "Bench Ltd", "contactEmail": "bench@example.com",
            "tier": "ENTERPRISE", "configuration": {"desiredCount": desired}
        });
        let sent_at = epoch_ms();
        let res = http
            .put(format!(
                "{}/v1.0/tenants/{}/instances/{}",
                served.url, key.tenant_id, key.instance_id
            ))
            .bearer_auth(&served.token)
            .json(&body)
            .send()
            .await?;
        let replied = epoch_ms();
        anyhow::ensure!(res.status().is_success(), "PUT {key}: {}", res.status());
        sent.push(Put {
            instance: key.path(),
            sent_at,
            replied,
        });
    }
    println!(
        "  {puts} PUTs sent in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Let the last changes reach the cloud.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut latencies = first_mutation_latencies(&rig, &sent);
    let missing = puts - latencies.len();
    latencies.sort_by(f64::total_cmp);
    let stats = rig.sim.stats();
    let throttled: u64 = stats.operations.values().map(|o| o.throttled).sum();
    let (p50, p99) = (quantile(&latencies, 0.5), quantile(&latencies, 0.99));
    println!(
        "  PUT reply → first mutating call: p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms ({} measured, {missing} without a mutating call)",
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );
    println!("  cloud calls throttled during the run: {throttled}");
    let ratio = p99 / TARGET_P99_MS;
    println!("ratio (p99 / {TARGET_P99_MS} ms): {ratio:.3} (target < 1)");
    rig.stop().await;
    Ok(ratio)
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One PUT: its instance, and when it was sent and answered (epoch ms).
struct Put {
    instance: String,
    sent_at: f64,
    replied: f64,
}

/// For each PUT, the delay from its reply to the first successful mutating call on its
/// instance answered after it was sent; a call answered before the reply reached the
/// client counts as 0. Call times have millisecond resolution.
fn first_mutation_latencies(rig: &Rig, sent: &[Put]) -> Vec<f64> {
    let mut calls: HashMap<&str, Vec<i64>> = HashMap::new();
    let log = rig.sim.call_log();
    for c in &log {
        if let (true, "ok", Some(instance)) = (c.mutating, c.outcome, c.instance.as_deref()) {
            calls.entry(instance).or_default().push(c.at);
        }
    }
    let mut out = Vec::with_capacity(sent.len());
    for put in sent {
        let first = calls
            .get(put.instance.as_str())
            .and_then(|ats| ats.iter().find(|&&at| at as f64 >= put.sent_at.floor()));
        if let Some(&at) = first {
            out.push((at as f64 - put.replied).max(0.0));
        }
    }
    out
}
