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
//! * three lanes (`CallContext::lane`): user work (a write, reconcile-now, an API read)
//!   reserves its turn at once; follow-ups of a change under way (its polls, its next
//!   steps) are granted while an eighth of the burst stays free for user work, and reserve
//!   their turn only after deferring `FOLLOW_UP_PATIENCE`; background calls (the resync)
//!   are granted only while a quarter of the burst stays free, and never reserve ahead
//!   (the same rules as the AWS driver's budget);
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
    CALL_CONTEXT, Call, CallContext, ClientToken, Cloud, CloudError, CloudResult, JobRef, Lane,
    LogPage, LogQuery, Observed, ObservedJob, ObservedService, ObservedTask, Scope, Step,
    StepOutcome, WaitingOn,
};
use crate::model::InstanceKey;

/// The lane of the current task's calls (the reconciler sets its `CallContext` per pass
/// and batch). Calls outside any pass (API reads) are user work.
fn lane() -> Lane {
    CALL_CONTEXT
        .try_with(CallContext::lane)
        .unwrap_or(Lane::User)
}

/// Calls per second a service admits, and how many at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// The share of each bucket's burst that background calls leave for user work and
/// follow-ups.
const USER_RESERVE: f64 = 0.25;

/// The share of each bucket's burst that follow-ups leave for user work.
const FOLLOW_UP_RESERVE: f64 = 0.125;

/// How long a follow-up defers to user work at most before it reserves its turn.
const FOLLOW_UP_PATIENCE: Duration = Duration::from_secs(1);

/// A reservation that has to wait at all waits this many tokens' time longer, so the
/// service's own bucket still holds that much when the call arrives: calls are sent with
/// some network jitter, and one arriving a little before the service has refilled its
/// token is throttled when the bucket runs at its rate (measured: a throttled call every
/// few seconds without it). It shifts a saturated lane's calls; it does not lower the rate.
const CUSHION: f64 = 1.0;

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
                let short = CUSHION - b.tokens;
                wait = wait.max(Duration::from_secs_f64(short / b.rate));
            }
        }
        wait
    }

    /// Waits until the calls of `cost` may be made: in the user lane by reservation, in
    /// the background lane by waiting for room above the user reserve.
    ///
    /// A call over several services (an observation) reserves its turn on the service
    /// whose tokens come last, and on each other one only once that turn is due: its calls
    /// there are charged when they really go out. (Charged all at once, a call held back
    /// by one service's backlog would later land on the others on top of the calls
    /// reserved there meanwhile, and AWS would throttle the bunch; docs/PERFORMANCE.md.)
    ///
    /// Follow-ups defer to user work: they take tokens only while a share of the burst
    /// stays free, without reserving ahead, until they have waited `FOLLOW_UP_PATIENCE`;
    /// then they reserve their turn like user work (so a saturated service cannot starve
    /// them). The resync waits for a larger share and never reserves.
    pub async fn take(&self, cost: &[(&'static str, u32)]) {
        match lane() {
            Lane::User => self.take_in_turn(cost).await,
            Lane::FollowUp => {
                let patience = Instant::now() + FOLLOW_UP_PATIENCE;
                loop {
                    let wait = self.try_take(cost, FOLLOW_UP_RESERVE);
                    let now = Instant::now();
                    if wait.is_zero() {
                        return;
                    }
                    if now >= patience {
                        return self.take_in_turn(cost).await;
                    }
                    tokio::time::sleep(wait.min(patience - now)).await;
                }
            }
            Lane::Background => loop {
                let wait = self.try_take(cost, USER_RESERVE);
                if wait.is_zero() {
                    return;
                }
                tokio::time::sleep(wait).await;
            },
        }
    }

    /// Reserves the calls of `cost` in arrival order and waits until they are due.
    async fn take_in_turn(&self, cost: &[(&'static str, u32)]) {
        let mut left = cost.to_vec();
        while !left.is_empty() {
            let last = self.last_due(&left);
            let wait = self.reserve(&[left.swap_remove(last)]);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// How long until the tokens of `cost` exist on every service (without taking any).
    pub fn delay(&self, cost: &[(&'static str, u32)]) -> Duration {
        let mut buckets = self.lock();
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for (service, calls) in cost {
            let Some(b) = buckets.get_mut(service) else {
                continue;
            };
            b.refill(now);
            let short = f64::from(*calls).min(b.configured.burst) - b.tokens;
            wait = wait.max(Duration::from_secs_f64((short / b.rate).max(0.0)));
        }
        wait
    }

    /// The index in `cost` of the service whose tokens for it exist last (without taking any).
    fn last_due(&self, cost: &[(&'static str, u32)]) -> usize {
        let mut buckets = self.lock();
        let now = Instant::now();
        let mut last = (0, Duration::ZERO);
        for (i, (service, calls)) in cost.iter().enumerate() {
            let Some(b) = buckets.get_mut(service) else {
                continue;
            };
            b.refill(now);
            let short = f64::from(*calls) - b.tokens;
            let wait = Duration::from_secs_f64((short / b.rate).max(0.0));
            if wait > last.1 {
                last = (i, wait);
            }
        }
        last.0
    }

    /// Takes the calls of `cost` if every service keeps its user reserve after them
    /// (`Duration::ZERO`); otherwise takes nothing and says how long until it might.
    pub fn try_background(&self, cost: &[(&'static str, u32)]) -> Duration {
        self.try_take(cost, USER_RESERVE)
    }

    /// Takes the calls of `cost` if every service keeps `reserve` (a share of its burst)
    /// after them; otherwise takes nothing and says how long until it might.
    fn try_take(&self, cost: &[(&'static str, u32)], reserve: f64) -> Duration {
        let mut buckets = self.lock();
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for (service, calls) in cost {
            let Some(b) = buckets.get_mut(service) else {
                continue;
            };
            b.refill(now);
            let reserve = b.configured.burst * reserve;
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
    async fn observe_scope(
        &self,
        keys: &[InstanceKey],
        scope: Scope,
    ) -> CloudResult<Vec<Observed>> {
        let cost = self.pace(&Call::Observe(keys.len(), scope)).await;
        let result = self.inner.observe_scope(keys, scope).await;
        self.learn(&cost, &result);
        result
    }

    async fn observe_services(
        &self,
        keys: &[InstanceKey],
    ) -> CloudResult<Vec<Option<ObservedService>>> {
        let cost = self.pace(&Call::ObserveServices(keys.len())).await;
        let result = self.inner.observe_services(keys).await;
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

    fn delay(&self, cost: &[(&'static str, u32)]) -> Duration {
        self.budget.delay(cost)
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
        // The 6th call waits one interval (100 ms), the 7th two, in arrival order, each one
        // more (the cushion against jitter).
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 200);
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 300);
        tokio::time::advance(Duration::from_secs(10)).await;
        // Refilled, but never beyond the burst.
        assert_eq!(b.reserve(&[("ecs", 5)]), Duration::ZERO);
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 200);
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
        // The bucket counts as empty: the next call waits one interval at the new rate
        // (and one more, the cushion).
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 2000);
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
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 200);
        assert_eq!(ms(b.try_background(&[("ecs", 1)])), 400);
        // Outside any pass (API reads) calls are user work; a resync pass's are background.
        assert_eq!(lane(), Lane::User);
        assert_eq!(
            CALL_CONTEXT.sync_scope(CallContext::default(), lane),
            Lane::Background
        );
    }

    /// An observation held back by RDS's backlog takes its ECS token only when it goes
    /// out: ECS calls reserved meanwhile are not pushed back by it, and it does not land on
    /// top of them.
    #[tokio::test(start_paused = true)]
    async fn a_call_over_several_services_is_charged_where_it_waits_only_when_it_goes() {
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
        b.reserve(&[("rds", 1)]);
        let started = Instant::now();
        let observe = tokio::spawn({
            let b = std::sync::Arc::new(b);
            let b2 = b.clone();
            async move {
                let held = tokio::spawn(async move { b2.take(&[("ecs", 1), ("rds", 1)]).await });
                tokio::time::sleep(Duration::from_millis(10)).await;
                // Meanwhile an ECS-only call goes at once: the observation took no ECS token.
                assert_eq!(b.reserve(&[("ecs", 1)]), Duration::ZERO);
                held.await.unwrap();
            }
        });
        observe.await.unwrap();
        // RDS was due after 1 s (and the cushion, 1 s more); ECS then had refilled.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
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
        // RDS's second token after 1 s, and the cushion's.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    /// A follow-up takes what user work leaves: it waits while user reservations hold the
    /// bucket, without pushing them back, and reserves its own turn only after its patience.
    #[tokio::test(start_paused = true)]
    async fn follow_ups_defer_to_user_work_for_a_while() {
        let b = std::sync::Arc::new(budget(10.0, 8.0));
        let follow_up = CallContext {
            urgent: true,
            follow_up: true,
            ..CallContext::default()
        };
        // With room above its share (1 token of 8), a follow-up goes at once.
        let started = Instant::now();
        CALL_CONTEXT
            .scope(follow_up.clone(), b.take(&[("ecs", 1)]))
            .await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        // User work reserves ahead; the follow-up waits for the bucket to come back...
        assert_eq!(b.reserve(&[("ecs", 12)]), Duration::from_millis(600));
        let waiting = tokio::spawn({
            let (b, ctx) = (b.clone(), follow_up.clone());
            async move { CALL_CONTEXT.scope(ctx, b.take(&[("ecs", 1)])).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // ...and a user arriving meanwhile is not pushed back by it (5.9 tokens short, and
        // the cushion).
        assert_eq!(ms(b.reserve(&[("ecs", 1)])), 690);
        waiting.await.unwrap();
        // It went once its share was back: 7.9 tokens after 10 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(800));
        // When user work keeps the bucket short longer than its patience (1 s), it reserves
        // its turn then, behind what users reserved before.
        assert_eq!(b.reserve(&[("ecs", 30)]), Duration::from_millis(3000));
        let started = Instant::now();
        CALL_CONTEXT.scope(follow_up, b.take(&[("ecs", 1)])).await;
        assert_eq!(started.elapsed(), Duration::from_millis(3100));
    }
}
