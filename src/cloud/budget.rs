//! The controller's AWS budget: client-side pacing of cloud calls per service, so the
//! reconciler spends the account's request rate instead of being throttled.
//!
//! [`Paced`] wraps a [`Cloud`]: before each call it reserves, per service, the API calls
//! that call will make ([`Cloud::cost`]) from a token bucket, and sleeps until the
//! reservation is due. This is what the AWS SDK's adaptive retry mode does inside a real
//! client; doing it here covers every `Cloud` the same way (the simulated one, the remote
//! one) and lets the benchmarks measure it.
//!
//! Why: without pacing, a burst of work (5,000 instances created at once) sends calls far
//! faster than AWS admits; throttled calls fail whole passes, which back off exponentially
//! and leave a long tail (measured: 8× the rate-limit lower bound for 300 instances; see
//! docs/PERFORMANCE.md). A throttled call is also a wasted call.
//!
//! Invariants:
//! * reservations are granted in arrival order per service (no caller starves), and the
//!   sustained rate never exceeds the bucket's current rate;
//! * two lanes: calls for work someone waits on (`CallContext::urgent`: a write,
//!   reconcile-now, the follow-up of a change) reserve their turn at once; background calls
//!   (the resync) are granted only while the bucket keeps a quarter of its burst for urgent
//!   work, and never reserve ahead (the same rule as the AWS driver's budget);
//! * adaptive: a `Throttled` answer halves that service's rate (down to a tenth of its
//!   configured rate) and empties its bucket; each admitted call wins back 2 % of the
//!   configured rate, up to it. So a budget set too high (another client shares the
//!   account) converges to what AWS really admits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{
    CALL_CONTEXT, Call, ClientToken, Cloud, CloudError, CloudResult, JobRef, LogPage, LogQuery,
    Observed, ObservedJob, ObservedTask, Step, StepOutcome, WaitingOn,
};
use crate::model::InstanceKey;

/// Whether the current task's calls are for work someone waits on (the reconciler sets
/// `CallContext::urgent` per pass: API writes, reconcile-now, follow-ups of a change).
/// Calls outside any pass (API reads) count as urgent.
fn urgent() -> bool {
    CALL_CONTEXT.try_with(|c| c.urgent).unwrap_or(true)
}

/// Calls per second a service admits, and how many at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// The share of each bucket's burst that background calls leave for user work.
const USER_RESERVE: f64 = 0.25;

/// Token buckets per service name (`ecs`, `rds`, …). Services without a bucket are unpaced.
///
/// Reservations may run the bucket negative: a caller is told how long until its calls'
/// tokens exist, so callers are served in arrival order without a retry loop. A call that
/// spans several services (an `observe` describes ECS, RDS, EFS and Logs) waits for the
/// slowest of them but is charged to each when it reserves; see docs/PERFORMANCE.md for
/// what that costs when one service's backlog holds calls back.
#[derive(Debug, Default)]
pub struct Budget {
    buckets: Mutex<HashMap<&'static str, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    configured: Rate,
    /// The rate used now: the configured one, lowered by throttling.
    rate: f64,
    /// May go negative: reservations not yet due.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.configured.burst);
        self.at = now;
    }
}

impl Budget {
    pub fn new(rates: impl IntoIterator<Item = (&'static str, Rate)>) -> Self {
        let now = Instant::now();
        let buckets = rates
            .into_iter()
            .filter(|(_, r)| r.per_second > 0.0 && r.burst >= 1.0)
            .map(|(service, r)| {
                let bucket = Bucket {
                    configured: r,
                    rate: r.per_second,
                    tokens: r.burst,
                    at: now,
                };
                (service, bucket)
            })
            .collect();
        Self {
            buckets: Mutex::new(buckets),
        }
    }

    /// Reserves the calls of `cost` (per service) and returns how long to wait until the
    /// tokens of all of them exist.
    pub fn reserve(&self, cost: &[(&'static str, u32)]) -> Duration {
        let mut buckets = self.lock();
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for (service, calls) in cost {
            let Some(b) = buckets.get_mut(service) else {
                continue;
            };
            b.refill(now);
            b.tokens -= f64::from(*calls);
            if b.tokens < 0.0 {
                wait = wait.max(Duration::from_secs_f64(-b.tokens / b.rate));
            }
        }
        wait
    }

    /// Waits until the calls of `cost` may be made: in the user lane by reservation, in
    /// the background lane by waiting for room above the user reserve.
    pub async fn take(&self, cost: &[(&'static str, u32)]) {
        if urgent() {
            let wait = self.reserve(cost);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            return;
        }
        loop {
            let wait = self.try_background(cost);
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes the calls of `cost` if every service keeps its user reserve after them
    /// (`Duration::ZERO`); otherwise takes nothing and says how long until it might.
    pub fn try_background(&self, cost: &[(&'static str, u32)]) -> Duration {
        let mut buckets = self.lock();
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for (service, calls) in cost {
            let Some(b) = buckets.get_mut(service) else {
                continue;
            };
            b.refill(now);
            let reserve = b.configured.burst * USER_RESERVE;
            let needed = (f64::from(*calls) + reserve).min(b.configured.burst);
            if b.tokens < needed {
                wait = wait.max(Duration::from_secs_f64((needed - b.tokens) / b.rate));
            }
        }
        if wait.is_zero() {
            for (service, calls) in cost {
                if let Some(b) = buckets.get_mut(service) {
                    b.tokens -= f64::from(*calls);
                }
            }
            return Duration::ZERO;
        }
        // At least a millisecond: a wake-up that finds no room must not spin.
        wait.max(Duration::from_millis(1))
    }

    /// The service throttled a call: slow down, and count the bucket as empty.
    pub fn throttled(&self, service: &str) {
        if let Some(b) = self.lock().get_mut(service) {
            b.rate = (b.rate * 0.5).max(b.configured.per_second * 0.1);
            b.tokens = b.tokens.min(0.0);
        }
    }

    /// The service admitted a call: win back some rate.
    pub fn admitted(&self, service: &str) {
        if let Some(b) = self.lock().get_mut(service) {
            let max = b.configured.per_second;
            b.rate = (b.rate + max * 0.02).min(max);
        }
    }

    /// The rate used now for `service` (for tests and logs).
    pub fn rate(&self, service: &str) -> Option<f64> {
        self.lock().get(service).map(|b| b.rate)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Bucket>> {
        // Plain numbers: a panic elsewhere cannot leave them half-updated.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`Cloud`] whose calls are paced by a [`Budget`].
pub struct Paced {
    inner: Arc<dyn Cloud>,
    budget: Budget,
}

impl Paced {
    pub fn new(inner: Arc<dyn Cloud>, budget: Budget) -> Self {
        Self { inner, budget }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    async fn pace(&self, call: &Call<'_>) -> Vec<(&'static str, u32)> {
        let cost = self.inner.cost(call);
        self.budget.take(&cost).await;
        cost
    }

    /// Feeds the answer back: throttling lowers that service's rate, success raises it.
    fn learn<T>(&self, cost: &[(&'static str, u32)], result: &CloudResult<T>) {
        match result {
            Err(CloudError::Throttled { service, .. }) => self.budget.throttled(service),
            _ => {
                for (service, _) in cost {
                    self.budget.admitted(service);
                }
            }
        }
    }
}

#[async_trait]
impl Cloud for Paced {
    async fn observe(&self, keys: &[InstanceKey]) -> CloudResult<Vec<Observed>> {
        let cost = self.pace(&Call::Observe(keys.len())).await;
        let result = self.inner.observe(keys).await;
        self.learn(&cost, &result);
        result
    }

    async fn describe_tasks(&self, keys: &[InstanceKey]) -> CloudResult<Vec<Vec<ObservedTask>>> {
        let cost = self.pace(&Call::DescribeTasks(keys.len())).await;
        let result = self.inner.describe_tasks(keys).await;
        self.learn(&cost, &result);
        result
    }

    async fn describe_jobs(&self, jobs: &[JobRef]) -> CloudResult<Vec<ObservedJob>> {
        let cost = self.pace(&Call::DescribeJobs(jobs)).await;
        let result = self.inner.describe_jobs(jobs).await;
        self.learn(&cost, &result);
        result
    }

    async fn apply(
        &self,
        key: &InstanceKey,
        step: &Step,
        token: &ClientToken,
    ) -> CloudResult<StepOutcome> {
        let cost = self.pace(&Call::Apply(step)).await;
        let result = self.inner.apply(key, step, token).await;
        self.learn(&cost, &result);
        result
    }

    async fn logs(&self, key: &InstanceKey, query: &LogQuery) -> CloudResult<LogPage> {
        let cost = self.pace(&Call::Logs).await;
        let result = self.inner.logs(key, query).await;
        self.learn(&cost, &result);
        result
    }

    fn poll_interval(&self, waiting_on: WaitingOn) -> Duration {
        self.inner.poll_interval(waiting_on)
    }

    fn cost(&self, call: &Call<'_>) -> Vec<(&'static str, u32)> {
        self.inner.cost(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::CallContext;

    fn budget(per_second: f64, burst: f64) -> Budget {
        Budget::new([("ecs", Rate { per_second, burst })])
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_free_then_calls_are_spaced_at_the_rate() {
        let b = budget(10.0, 5.0);
        for _ in 0..5 {
            assert_eq!(b.reserve(&[("ecs", 1)]), Duration::ZERO);
        }
        // The 6th call waits one interval (100 ms), the 7th two, in arrival order.
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 100);
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 200);
        tokio::time::advance(Duration::from_secs(10)).await;
        // Refilled, but never beyond the burst.
        assert_eq!(b.reserve(&[("ecs", 5)]), Duration::ZERO);
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 100);
        // Unknown services are not paced.
        assert_eq!(b.reserve(&[("s3", 1000)]), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_and_success_wins_it_back() {
        let b = budget(10.0, 5.0);
        b.throttled("ecs");
        assert_eq!(b.rate("ecs"), Some(5.0));
        for _ in 0..10 {
            b.throttled("ecs");
        }
        assert_eq!(b.rate("ecs"), Some(1.0), "never below a tenth");
        // The bucket counts as empty: the next call waits one interval at the new rate.
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 1000);
        for _ in 0..100 {
            b.admitted("ecs");
        }
        assert_eq!(b.rate("ecs"), Some(10.0), "never above the configured rate");
    }

    #[tokio::test(start_paused = true)]
    async fn background_calls_leave_a_reserve_and_never_queue_ahead_of_user_work() {
        let b = budget(10.0, 8.0);
        // Background may take the burst down to its reserve (a quarter: 2 tokens)...
        for _ in 0..6 {
            assert_eq!(b.try_background(&[("ecs", 1)]), Duration::ZERO);
        }
        // ...then waits, without taking anything, until the reserve is back above.
        assert_eq!(ms(b.try_background(&[("ecs", 1)])), 100);
        assert_eq!(
            ms(b.try_background(&[("ecs", 1)])),
            100,
            "nothing was reserved"
        );
        // User work still has the reserve at once.
        assert_eq!(b.reserve(&[("ecs", 2)]), Duration::ZERO);
        // And background work waits behind user reservations, not the other way round.
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 100);
        assert_eq!(ms(b.try_background(&[("ecs", 1)])), 400);
        // Outside any pass (API reads) calls are urgent; a resync pass's are not.
        assert!(urgent());
        assert!(!CALL_CONTEXT.sync_scope(CallContext::default(), urgent));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_several_services_waits_for_the_slowest() {
        let b = Budget::new([
            (
                "ecs",
                Rate {
                    per_second: 10.0,
                    burst: 1.0,
                },
            ),
            (
                "rds",
                Rate {
                    per_second: 1.0,
                    burst: 1.0,
                },
            ),
        ]);
        let started = Instant::now();
        b.take(&[("ecs", 1), ("rds", 1)]).await;
        b.take(&[("ecs", 1), ("rds", 1)]).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
