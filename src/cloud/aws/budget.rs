//! The client-side AWS request budget: one token bucket per service and operation, so the
//! controller stays below AWS's own throttling limits instead of discovering them.
//!
//! * Limits are configured per service (`ecs=10/20`) or per operation
//!   (`logs:FilterLogEvents=4/8`); the most specific one applies ([`RateLimits`]).
//! * Priority: background work (the periodic resync) may only take a token while more than
//!   a reserve (a quarter of the burst) is left, so calls for work someone waits on (API
//!   writes, reconcile-now, follow-ups of a change; see `CallContext::urgent`) are not
//!   starved by a resync.
//! * A call waits for its token at most [`MAX_WAIT`]; beyond that it fails as `Throttled`
//!   without being sent, and the reconcile pass backs off. Nothing here spins: waiting is a
//!   sleep until the bucket has refilled enough.
//!
//! Invariant: a bucket never holds more than its burst nor less than zero tokens.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::call::Api;
use crate::cloud::{CloudError, Lane};

/// The longest a call waits for a token before it gives up as throttled.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// Share of a bucket's burst the background (the resync) leaves for urgent calls.
const RESERVE_FRACTION: f64 = 0.25;

/// Share of a bucket's burst follow-ups of changes under way leave for user work.
const FOLLOW_UP_FRACTION: f64 = 0.125;

/// How long a follow-up defers to user work at most; then it competes like user work.
const FOLLOW_UP_PATIENCE: Duration = Duration::from_secs(2);

/// `rate` requests per second sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: f64,
}

impl Limit {
    const fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.rate, self.burst)
    }
}

/// Limits by `service` or `service:Operation`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    by_key: HashMap<String, Limit>,
}

/// Used when neither the operation nor its service has a limit.
const FALLBACK: Limit = Limit::new(2.0, 5.0);

/// Defaults, each below what AWS publishes for the account and region (ECS, RDS and EFS
/// share their budget with every other client of the account, so we take a fraction):
/// CloudWatch Logs allows 5 TPS for FilterLogEvents and the log group mutations and 10 for
/// DescribeLogGroups; ECS's RegisterTaskDefinition is the lowest ECS limit.
const DEFAULTS: &[(&str, Limit)] = &[
    ("ecs", Limit::new(10.0, 20.0)),
    ("ecs:RegisterTaskDefinition", Limit::new(1.0, 5.0)),
    ("efs", Limit::new(5.0, 10.0)),
    ("rds", Limit::new(5.0, 10.0)),
    ("logs", Limit::new(4.0, 8.0)),
    ("logs:DescribeLogGroups", Limit::new(8.0, 16.0)),
    ("backup", Limit::new(2.0, 5.0)),
];

const SERVICES: &[&str] = &["ecs", "efs", "rds", "logs", "backup"];

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            by_key: DEFAULTS
                .iter()
                .map(|(k, l)| ((*k).to_owned(), *l))
                .collect(),
        }
    }
}

impl RateLimits {
    /// The defaults, overridden by `spec`: comma-separated `service[:Operation]=rate[/burst]`
    /// (burst defaults to twice the rate), e.g. `ecs=20/40,logs:FilterLogEvents=2`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut limits = Self::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}`: expected service[:Operation]=rate[/burst]"))?;
            let key = key.trim();
            let service = key.split(':').next().unwrap_or_default();
            if !SERVICES.contains(&service) {
                return Err(format!(
                    "`{item}`: unknown service `{service}` (one of {})",
                    SERVICES.join(", ")
                ));
            }
            let (rate, burst) = match value.split_once('/') {
                Some((r, b)) => (number(item, r)?, number(item, b)?),
                None => {
                    let r = number(item, value)?;
                    (r, (2.0 * r).max(1.0))
                }
            };
            if burst < 1.0 {
                return Err(format!("`{item}`: the burst must be at least 1"));
            }
            limits
                .by_key
                .insert(key.to_owned(), Limit::new(rate, burst));
        }
        Ok(limits)
    }

    /// The limit that applies to `api`.
    pub fn limit(&self, api: Api) -> Limit {
        self.by_key
            .get(&format!("{}:{}", api.service, api.operation))
            .or_else(|| self.by_key.get(api.service))
            .copied()
            .unwrap_or(FALLBACK)
    }
}

fn number(item: &str, s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{item}`: `{s}` is not a positive number")),
    }
}

#[derive(Debug)]
struct Bucket {
    limit: Limit,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(limit: Limit, now: Instant) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            refilled: now,
        }
    }

    /// Takes a token, or says how long until one may be taken.
    fn take(&mut self, now: Instant, lane: Lane) -> Result<(), Duration> {
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.limit.rate;
        self.tokens = (self.tokens + earned).min(self.limit.burst);
        self.refilled = now;
        let reserve = match lane {
            Lane::User => 0.0,
            Lane::FollowUp => (self.limit.burst * FOLLOW_UP_FRACTION).floor(),
            Lane::Background => (self.limit.burst * RESERVE_FRACTION).floor(),
        };
        let needed = 1.0 + reserve;
        if self.tokens >= needed {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (needed - self.tokens) / self.limit.rate,
            ))
        }
    }
}

/// The buckets of one driver.
#[derive(Debug)]
pub struct Budget {
    limits: RateLimits,
    buckets: Mutex<HashMap<(&'static str, &'static str), Bucket>>,
}

impl Budget {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a token for `api` in `lane`; `Throttled` (nothing sent) if none comes in
    /// time. A follow-up that waited `FOLLOW_UP_PATIENCE` competes like user work.
    pub async fn acquire(&self, api: Api, lane: Lane) -> Result<(), CloudError> {
        let started = Instant::now();
        let deadline = started + MAX_WAIT;
        let patience = started + FOLLOW_UP_PATIENCE;
        loop {
            let now = Instant::now();
            let lane = match lane {
                Lane::FollowUp if now >= patience => Lane::User,
                other => other,
            };
            let wait = {
                let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                buckets
                    .entry((api.service, api.operation))
                    .or_insert_with(|| Bucket::new(self.limits.limit(api), now))
                    .take(now, lane)
            };
            match wait {
                Ok(()) => return Ok(()),
                Err(d) if now + d > deadline => {
                    return Err(CloudError::Throttled {
                        service: api.service,
                        operation: api.operation,
                    });
                }
                // A follow-up wakes at the end of its patience at the latest.
                Err(d) if lane == Lane::FollowUp => tokio::time::sleep(d.min(patience - now)).await,
                Err(d) => tokio::time::sleep(d).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP: Api = Api::new("ecs", "DescribeServices");

    fn budget(spec: &str) -> Budget {
        Budget::new(RateLimits::parse(spec).unwrap())
    }

    #[test]
    fn the_most_specific_limit_applies() {
        let l = RateLimits::parse("ecs=3/6, ecs:UpdateService=1").unwrap();
        assert_eq!(l.limit(OP), Limit::new(3.0, 6.0));
        assert_eq!(
            l.limit(Api::new("ecs", "UpdateService")),
            Limit::new(1.0, 2.0)
        );
        assert_eq!(l.limit(Api::new("rds", "X")), Limit::new(5.0, 10.0));
    }

    #[test]
    fn bad_limits_are_refused_with_the_reason() {
        for (spec, why) in [
            ("ecs", "expected"),
            ("s3=1", "unknown service"),
            ("ecs=-1", "positive"),
            ("ecs=1/0.5", "burst"),
            ("ecs=fast", "positive"),
        ] {
            let err = RateLimits::parse(spec).unwrap_err();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn background_calls_leave_a_reserve_for_urgent_ones() {
        let b = budget("ecs=1/4");
        let start = Instant::now();
        for _ in 0..3 {
            b.acquire(OP, Lane::Background).await.unwrap();
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the burst minus the reserve"
        );
        // The reserve is there for a user.
        b.acquire(OP, Lane::User).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Background work now waits for the bucket to refill above the reserve.
        b.acquire(OP, Lane::Background).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    /// Follow-ups leave a share (an eighth) for user work, but only for their patience.
    #[tokio::test(start_paused = true)]
    async fn follow_ups_leave_a_share_for_user_work_for_a_while() {
        let b = budget("ecs=0.25/8");
        let start = Instant::now();
        for _ in 0..7 {
            b.acquire(OP, Lane::FollowUp).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst minus the share");
        b.acquire(OP, Lane::User).await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the share is there for a user"
        );
        // The bucket is empty; a follow-up would wait for two tokens (8 s: one and the
        // share), but after its patience (2 s) it takes the first that comes (4 s).
        b.acquire(OP, Lane::FollowUp).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_longer_than_max_wait_fails_as_throttled_without_spinning() {
        let b = budget("ecs=0.01/1");
        b.acquire(OP, Lane::User).await.unwrap();
        let start = Instant::now();
        let err = b.acquire(OP, Lane::User).await.unwrap_err();
        assert!(matches!(err, CloudError::Throttled { .. }), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "refused at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spread_at_the_rate() {
        let b = budget("ecs=10/1");
        let start = Instant::now();
        for _ in 0..11 {
            b.acquire(OP, Lane::User).await.unwrap();
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(999) && took <= Duration::from_millis(1010),
            "{took:?}"
        );
    }
}
