//! Simulated time: the wall clock in epoch milliseconds, the base durations of every
//! transition, and the per-call context that scales them.
//!
//! Invariants:
//! * Simulated state is a pure function of stored absolute timestamps and "now"; nothing
//!   here schedules work. A transition's end time is fixed when it starts, so it survives a
//!   process restart unchanged.
//! * Every duration is `base × jitter(±20 %) × factor ÷ speed`, and conversions never panic
//!   (a nonsensical speed falls back to 1.0).
//! * Things that must come out the same on every read and in every process (log lines,
//!   whether a backup job fails) use the deterministic draws here (`stable_hash`, `mix`),
//!   never `rand` or `std`'s randomly keyed hasher.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

/// Epoch milliseconds.
pub(super) type Millis = i64;

/// Base durations at speed 1.0, in milliseconds.
pub(super) mod base {
    /// Every API call costs uniform(LATENCY_MIN, LATENCY_MAX).
    pub const LATENCY_MIN: f64 = 20.0;
    pub const LATENCY_MAX: f64 = 60.0;
    pub const AP_CREATE: f64 = 2_000.0;
    pub const AP_DELETE: f64 = 2_000.0;
    pub const DB_CREATE: f64 = 240_000.0;
    pub const DB_STOP: f64 = 90_000.0;
    pub const DB_START: f64 = 120_000.0;
    pub const DB_MODIFY: f64 = 60_000.0;
    pub const DB_DELETE: f64 = 60_000.0;
    pub const SNAPSHOT: f64 = 60_000.0;
    pub const TASK_PROVISION: f64 = 5_000.0;
    pub const TASK_PENDING: f64 = 15_000.0;
    /// From RUNNING until the first passing health check.
    pub const TASK_HEALTHY: f64 = 10_000.0;
    pub const TASK_STOP: f64 = 15_000.0;
    /// An on-demand AWS Backup job of one WordPress directory.
    pub const BACKUP_JOB: f64 = 90_000.0;
    /// An AWS Backup restore of one recovery point into a new directory.
    pub const RESTORE_JOB: f64 = 120_000.0;
    /// A one-off Fargate task that moves restored files into place: provisioning, image
    /// pull, one rename.
    pub const RELOCATION_TASK: f64 = 40_000.0;
    /// A running task writes one access-log line this often.
    pub const LOG_LINE_EVERY: f64 = 10_000.0;
}

/// Random jitter applied to every transition, so that a fleet does not move in lockstep.
const JITTER: f64 = 0.2;

pub(super) fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A speed that can divide durations: positive and finite, else 1.0.
pub(super) fn sane_speed(speed: f64) -> f64 {
    if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    }
}

/// Milliseconds (possibly fractional) to a `Duration`, saturating instead of panicking.
pub(super) fn duration_from_ms(ms: f64) -> Duration {
    let micros = (ms * 1_000.0).max(0.0);
    Duration::from_micros(micros as u64)
}

/// What a mutation needs to know to stamp its transitions: the instant it takes effect
/// and how to scale durations.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx {
    pub now: Millis,
    pub speed: f64,
    /// `Faults::slow_rds_factor` when it is at least 1, else 1.
    pub rds_factor: f64,
    /// `Faults::backup_failure_rate` within 0..=1 (a NaN counts as 0).
    pub backup_failure_rate: f64,
}

impl Ctx {
    pub fn new(now: Millis, speed: f64, slow_rds_factor: f64) -> Self {
        let rds_factor = if slow_rds_factor.is_finite() && slow_rds_factor >= 1.0 {
            slow_rds_factor
        } else {
            1.0
        };
        Self {
            now,
            speed: sane_speed(speed),
            rds_factor,
            backup_failure_rate: 0.0,
        }
    }

    /// The same context, with backup/restore jobs failing at `rate` (clamped to 0..=1).
    pub fn with_backup_failure_rate(mut self, rate: f64) -> Self {
        self.backup_failure_rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self
    }

    /// A jittered, speed-scaled span in whole milliseconds.
    pub fn span(&self, base_ms: f64) -> Millis {
        let jitter = rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER));
        (base_ms * jitter / self.speed).round() as Millis
    }

    /// Like [`Ctx::span`], for RDS (which `slow_rds_factor` slows down).
    pub fn rds_span(&self, base_ms: f64) -> Millis {
        self.span(base_ms * self.rds_factor)
    }

    /// The absolute time a transition that starts now and takes `base_ms` ends.
    pub fn after(&self, base_ms: f64) -> Millis {
        self.now.saturating_add(self.span(base_ms))
    }

    pub fn rds_after(&self, base_ms: f64) -> Millis {
        self.now.saturating_add(self.rds_span(base_ms))
    }
}

/// `count` random lowercase hex digits (AWS-looking ids).
pub(super) fn hex_id(count: usize) -> String {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

/// A stable 64-bit hash of `s` (FNV-1a): seeds that must not change across processes or
/// Rust versions, unlike `std`'s randomly keyed hasher.
pub(super) fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64 of `seed` and `n`: a deterministic "random" draw number `n` of a stream.
pub(super) fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic fraction in [0, 1) from a hash.
pub(super) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_scale_with_speed_and_stay_within_jitter() {
        let ctx = Ctx::new(0, 1_000.0, 0.0);
        for _ in 0..100 {
            let s = ctx.span(240_000.0);
            assert!((192..=288).contains(&s), "{s}");
        }
        let slow = Ctx::new(0, 1_000.0, 3.0);
        assert!(slow.rds_span(240_000.0) >= 576);
    }

    #[test]
    fn nonsense_inputs_do_not_panic() {
        assert_eq!(sane_speed(f64::NAN), 1.0);
        assert_eq!(sane_speed(-3.0), 1.0);
        assert_eq!(duration_from_ms(f64::NAN), Duration::ZERO);
        assert_eq!(duration_from_ms(-5.0), Duration::ZERO);
        let ctx = Ctx::new(0, 0.0, f64::INFINITY);
        assert_eq!(ctx.rds_factor, 1.0);
        assert_eq!(
            ctx.with_backup_failure_rate(f64::NAN).backup_failure_rate,
            0.0
        );
        assert_eq!(ctx.with_backup_failure_rate(7.0).backup_failure_rate, 1.0);
        assert_eq!(hex_id(17).len(), 17);
    }

    #[test]
    fn deterministic_draws_are_stable_and_spread() {
        assert_eq!(stable_hash("abc"), stable_hash("abc"));
        assert_ne!(stable_hash("abc"), stable_hash("abd"));
        assert_eq!(mix(1, 2), mix(1, 2));
        let below_half = (0..1_000).filter(|&n| unit(mix(42, n)) < 0.5).count();
        assert!((400..600).contains(&below_half), "{below_half}");
        assert!((0..1_000).all(|n| (0.0..1.0).contains(&unit(mix(7, n)))));
    }
}
