//! Reliability 2 (issue 7): cloud faults. The same workload (instances driven through
//! create, scale, suspend, resume, backup, restore and delete) runs twice on fresh servers:
//! once fault-free, once with 10 % throttling, 2 % 5xx, latency spikes and a slow RDS.
//! With faults, everything still converges to exactly the desired cloud; the faulty run
//! makes at most 1.5 × the calls of the fault-free one; and the call log shows no instance
//! reconciled sooner after a failed pass than its backoff allows (also checked under a
//! storm of 30 % throttling, where many passes fail).
//!
//! `WPFLEET_SOAK=1`: more instances.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use common::harness::{WriteLog, await_inventory, figure, lifecycles, sized};
use wpfleet::cloud::sim::{CallRecord, Faults, SimStats};
use wpfleet::reconcile::Backoff;

const TEST: &str = "faults";

const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(200),
    max: Duration::from_secs(5),
};

struct Run {
    stats: SimStats,
    calls: Vec<CallRecord>,
    writes: WriteLog,
}

async fn run(instances: usize, faults: Faults) -> Run {
    let srv = TestServer::start_with(|c| c.backoff = BACKOFF).await;
    srv.running().sim().set_faults(faults);
    let c = srv.client.clone();
    let writes = WriteLog::default();
    let expect = lifecycles(&c, instances, &writes, Duration::from_secs(180)).await;
    let sim = srv.running().sim.clone().unwrap();
    let inventory = async || serde_json::to_value(sim.inventory()).unwrap();
    await_inventory(inventory, &expect, Duration::from_secs(60)).await;
    let sim = srv.running().sim();
    Run {
        stats: sim.stats(),
        calls: sim.call_log(),
        writes,
    }
}

/// One reconcile pass of one instance, as the call log shows it.
#[derive(Debug)]
struct Pass {
    first: i64,
    last: i64,
    attempt: u32,
}

/// The passes of each instance, in order.
fn passes(calls: &[CallRecord]) -> BTreeMap<String, Vec<Pass>> {
    let mut by_pass: BTreeMap<(String, u64), Pass> = BTreeMap::new();
    for c in calls {
        let (Some(instance), Some(pass)) = (&c.instance, c.pass) else {
            continue;
        };
        let p = by_pass.entry((instance.clone(), pass)).or_insert(Pass {
            first: c.at,
            last: c.at,
            attempt: c.attempt.unwrap_or(0),
        });
        p.first = p.first.min(c.at);
        p.last = p.last.max(c.at);
    }
    let mut out: BTreeMap<String, Vec<Pass>> = BTreeMap::new();
    for ((instance, _), p) in by_pass {
        out.entry(instance).or_default().push(p);
    }
    for list in out.values_mut() {
        list.sort_by_key(|p| p.first);
    }
    out
}

/// The shortest delay the queue may wait after `failures` failed passes in a row.
fn floor(failures: u32) -> i64 {
    let exp = failures.saturating_sub(1).min(30);
    let nominal = BACKOFF.base.saturating_mul(1 << exp).min(BACKOFF.max);
    (nominal.as_millis() / 2) as i64
}

/// Every pass that follows a failed one starts no sooner than the backoff allows (unless
/// a write of the harness triggered it). Returns how many retries were checked.
fn check_backoff(calls: &[CallRecord], writes: &WriteLog) -> usize {
    let writes = writes.all();
    let mut checked = 0;
    let mut violations = vec![];
    for (instance, list) in passes(calls) {
        for pair in list.windows(2) {
            let (p, q) = (&pair[0], &pair[1]);
            // The queue numbers a pass by the failed passes before it; 0 means the last
            // pass succeeded, even if one of its calls failed first and was retried (as the
            // SDK does), so only a pass with attempt > 0 is a backoff retry.
            let retry = q.attempt > 0;
            let triggered = writes
                .iter()
                .any(|w| w.instance == instance && w.answered >= p.first && w.sent <= q.first);
            if !retry || triggered {
                continue;
            }
            checked += 1;
            // After a failure, at least the first backoff step; after n failures in a row
            // (the pass says how many), at least the n-th. Call times are whole ms.
            let need = floor(1).max(floor(q.attempt)) - 1;
            let gap = q.first - p.last;
            if gap < need {
                violations.push(format!(
                    "{instance}: pass (attempt {}) {gap} ms after a failed one, backoff allows {need} ms",
                    q.attempt
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    checked
}

fn failed_calls(stats: &SimStats) -> u64 {
    stats
        .operations
        .values()
        .map(|o| o.throttled + o.errors)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_converge_within_the_call_budget_and_the_backoff() {
    let instances = sized(6, 30);
    let clean = run(instances, Faults::default()).await;
    let faults = Faults {
        throttle_rate: 0.10,
        error_rate: 0.02,
        latency_spike_rate: 0.05,
        // ÷ the test's sim speed (400): 50 ms spikes, against 0.05–0.15 ms calls.
        latency_spike_ms: 20_000,
        slow_rds_factor: 3.0,
        ..Faults::default()
    };
    let faulty = run(instances, faults).await;
    let (base, with) = (clean.stats.calls, faulty.stats.calls);
    let ratio = with as f64 / base as f64;
    figure(TEST, "instances", instances);
    figure(TEST, "calls_fault_free", base);
    figure(TEST, "calls_with_faults", with);
    figure(TEST, "call_ratio", format!("{ratio:.2}"));
    figure(
        TEST,
        "injected",
        serde_json::to_string(&faulty.stats.injected).unwrap(),
    );
    figure(TEST, "failed_calls", failed_calls(&faulty.stats));
    assert!(
        faulty.stats.injected.throttles > 0 && faulty.stats.injected.errors > 0,
        "faults were injected: {:?}",
        faulty.stats.injected
    );
    assert!(
        ratio <= 1.5,
        "{with} calls with faults vs {base} without: {ratio:.2}× (budget 1.5×)\n{}",
        per_operation(&clean.stats, &faulty.stats)
    );
    // The client retries a failed call like the SDK does, so at these rates whole passes
    // rarely fail; the storm below makes sure there are retries to check.
    let retries = check_backoff(&faulty.calls, &faulty.writes);
    check_backoff(&clean.calls, &clean.writes);
    figure(TEST, "retries_checked_against_backoff", retries);
}

/// Three calls in ten throttled: many passes fail outright, and every retry of an instance
/// still waits out its backoff; everything converges all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttling_storm_backs_off_and_still_converges() {
    let storm = Faults {
        throttle_rate: 0.3,
        ..Faults::default()
    };
    let run = run(sized(2, 10), storm).await;
    let retries = check_backoff(&run.calls, &run.writes);
    figure(TEST, "storm_retries_checked_against_backoff", retries);
    assert!(retries > 0, "a storm of throttling made no pass fail");
}

fn per_operation(a: &SimStats, b: &SimStats) -> String {
    let mut lines = vec![];
    for (op, s) in &b.operations {
        let before = a.operations.get(op).map_or(0, |o| o.calls);
        lines.push(format!("{op}: {before} -> {}", s.calls));
    }
    lines.join("\n")
}
