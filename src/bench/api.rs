//! `wpfleet bench api`: PUT throughput through the HTTP API versus raw `Store` writes of
//! the same records, in the same run, with the same concurrency. Both create new instances
//! (one durable write each). The reconciler is built but not running, so neither phase
//! competes with its status writes: this measures what the HTTP layer (routing, auth,
//! JSON, validation, views) costs on top of the store. Target ratio ≥ 0.8.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::Semaphore;

use super::http::serve;
use super::{Rig, bench_key, bench_spec};
use crate::model::{Instance, now};
use crate::reconcile::RunConfig;
use crate::store::Store;

pub async fn api(n: usize, concurrency: usize) -> anyhow::Result<f64> {
    let rig = Rig::new(100.0, RunConfig::default())?;
    let served = serve(&rig).await?;
    let concurrency = concurrency.max(1);
    println!("api: {n} creates each way, {concurrency} at a time, embedded store");
    // Warm both paths (page cache, connection pool, allocator).
    raw_writes(&rig, n..n + 100, concurrency).await?;
    let http = reqwest::Client::new();
    http_puts(&http, &served, n + 100..n + 200, concurrency).await?;

    let raw = raw_writes(&rig, 1_000_000..1_000_000 + n, concurrency).await?;
    let api = http_puts(&http, &served, 2_000_000..2_000_000 + n, concurrency).await?;
    println!("  raw Store::create: {raw:.0} writes/s");
    println!("  HTTP PUT (create): {api:.0} requests/s");
    let ratio = api / raw;
    println!("ratio (HTTP / raw store): {ratio:.3} (target >= 0.8)");
    rig.stop().await;
    Ok(ratio)
}

/// Creates the instances `range` straight in the store; writes per second.
async fn raw_writes(
    rig: &Rig,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let count = range.len();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in range {
        let permit = permits.clone().acquire_owned().await?;
        let store = rig.store.clone();
        tasks.push(tokio::spawn(async move {
            let r = store
                .create(Instance::new(bench_key(i), bench_spec(2), now()))
                .await;
            drop(permit);
            r.map(drop)
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// PUTs the instances `range` through HTTP; requests per second.
async fn http_puts(
    http: &reqwest::Client,
    served: &super::http::Served,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let count = range.len();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in range {
        let permit = permits.clone().acquire_owned().await?;
        let key = bench_key(i);
        let req = http
            .put(format!(
                "{}/v1.0/tenants/{}/instances/{}",
                served.url, key.tenant_id, key.instance_id
            ))
            .bearer_auth(&served.token)
            .json(&json!({
                "organizationName": "Bench Ltd", "contactEmail": "bench@example.com",
                "tier": "ENTERPRISE", "configuration": {"desiredCount": 2}
            }));
        tasks.push(tokio::spawn(async move {
            let res = req.send().await;
            drop(permit);
            let res = res?;
            anyhow::ensure!(res.status().as_u16() == 201, "PUT {key}: {}", res.status());
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}
