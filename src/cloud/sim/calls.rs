//! The API surface of the simulated cloud: which call a step or a describe is, what it
//! costs (latency), whether it is admitted (per-service token bucket, injected faults), and
//! the record of every call made ([`SimStats`], [`CallRecord`]).
//!
//! Invariants:
//! * Token buckets refill in real time and are NOT scaled by `speed`: AWS's request budget
//!   is what it is, and a fast simulation must not make a chatty reconciler look cheap.
//! * A call that is throttled or answered with an injected 5xx has no effect; it still
//!   counts, and its latency still applies.
//! * Statistics and the call log live in memory only; the log keeps the newest
//!   [`MAX_CALL_LOG`] records.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use super::clock::{Millis, base, duration_from_ms, now_ms};
use super::{Faults, RateLimit, SimLimits};
use crate::cloud::{CloudError, Step};

/// No call takes longer than an hour, whatever the injected spike.
const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// How many call records `call_log` keeps.
pub const MAX_CALL_LOG: usize = 1_000_000;

/// An AWS service, as it names itself in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Service {
    Ecs,
    Efs,
    Rds,
    Logs,
    Backup,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Ecs => "ecs",
            Service::Efs => "efs",
            Service::Rds => "rds",
            Service::Logs => "logs",
            Service::Backup => "backup",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One API operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Api {
    pub service: Service,
    pub operation: &'static str,
    pub mutating: bool,
}

impl Api {
    pub const fn read(service: Service, operation: &'static str) -> Self {
        Self {
            service,
            operation,
            mutating: false,
        }
    }

    const fn write(service: Service, operation: &'static str) -> Self {
        Self {
            service,
            operation,
            mutating: true,
        }
    }

    /// The AWS call that executes `step`.
    pub fn of_step(step: &Step) -> Self {
        use Service::*;
        match step {
            Step::CreateLogGroup { .. } => Self::write(Logs, "CreateLogGroup"),
            Step::DeleteLogGroup { .. } => Self::write(Logs, "DeleteLogGroup"),
            Step::CreateAccessPoint { .. } => Self::write(Efs, "CreateAccessPoint"),
            Step::DeleteAccessPoint { .. } => Self::write(Efs, "DeleteAccessPoint"),
            Step::CreateDatabase { .. } => Self::write(Rds, "CreateDBInstance"),
            Step::ModifyDatabase { .. } => Self::write(Rds, "ModifyDBInstance"),
            Step::StartDatabase { .. } => Self::write(Rds, "StartDBInstance"),
            Step::StopDatabase { .. } => Self::write(Rds, "StopDBInstance"),
            Step::SnapshotDatabase { .. } => Self::write(Rds, "CreateDBSnapshot"),
            Step::DeleteDatabase { .. } => Self::write(Rds, "DeleteDBInstance"),
            Step::CreateService { .. } => Self::write(Ecs, "CreateService"),
            Step::UpdateService { .. } => Self::write(Ecs, "UpdateService"),
            Step::DeleteService { .. } => Self::write(Ecs, "DeleteService"),
            Step::StartBackupJob { .. } => Self::write(Backup, "StartBackupJob"),
            Step::StartRestoreJob { .. } => Self::write(Backup, "StartRestoreJob"),
            Step::RelocateRestoredFiles { .. } => Self::write(Ecs, "RunTask"),
            Step::RestoreDatabase { .. } => Self::write(Rds, "RestoreDBInstanceFromDBSnapshot"),
        }
    }

    /// "The resource is not in a state for this call"; retryable.
    pub fn invalid(self, message: impl Into<String>) -> CloudError {
        CloudError::InvalidState {
            service: self.service.name(),
            operation: self.operation,
            message: message.into(),
        }
    }

    pub fn permanent(self, code: &str, message: impl Into<String>) -> CloudError {
        CloudError::Permanent {
            service: self.service.name(),
            operation: self.operation,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn throttled(self) -> CloudError {
        CloudError::Throttled {
            service: self.service.name(),
            operation: self.operation,
        }
    }

    fn unavailable(self) -> CloudError {
        CloudError::Unavailable {
            service: self.service.name(),
            operation: self.operation,
            message: "ServiceUnavailable: injected 5xx (simulated)".to_owned(),
        }
    }

    fn stat_key(self) -> String {
        format!("{}:{}", self.service.name(), self.operation)
    }
}

/// A token bucket refilled in real (monotonic) time.
#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            refilled: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.limit.rate;
        self.tokens = (self.tokens + earned).min(self.limit.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Calls, throttles and errors of one `service:Operation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpStats {
    pub calls: u64,
    pub throttled: u64,
    pub errors: u64,
}

/// Write-through cost of the persistent inventory (zero for an in-memory cloud).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PersistStats {
    /// Durable redb commits; one commit may carry the changes of several calls.
    pub commits: u64,
    pub records_written: u64,
    pub avg_commit_micros: u64,
    pub max_commit_micros: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SimStats {
    /// Every call made, including throttled and failed ones.
    pub calls: u64,
    pub mutating_calls: u64,
    /// Keyed `"service:Operation"`, e.g. `"ecs:DescribeServices"`.
    pub operations: BTreeMap<String, OpStats>,
    pub persistence: PersistStats,
    /// What the injected [`Faults`] did so far.
    pub injected: InjectedStats,
}

/// Counts of injected faults (not the throttles of the rate limits themselves).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectedStats {
    pub throttles: u64,
    pub errors: u64,
    pub latency_spikes: u64,
    /// Observations answered from an older snapshot of the instance's resources.
    pub stale_observations: u64,
    /// Observations mixing a fresh and an older snapshot (two updates seen out of order).
    pub reordered_observations: u64,
    /// Reconcile triggers of API writes that were dropped.
    pub dropped_triggers: u64,
}

/// One API call as the simulated cloud saw it.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    /// Epoch milliseconds when the call was answered.
    pub at: Millis,
    pub service: &'static str,
    pub operation: &'static str,
    /// `tenant/instance` for a call about one instance.
    pub instance: Option<String>,
    pub mutating: bool,
    /// `ok`, `throttled` or `error`.
    pub outcome: &'static str,
    /// The resource a mutating call acts on (`Step::target`: a name, id or root path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The controller replica that made the call, when it said (remote callers do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The fencing token of the instance's shard lease the caller held, when it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    /// The reconcile pass that made the call, and how many passes of the instance had
    /// failed in a row before it (see `cloud::CallContext`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// Admission, faults and the books; one per [`super::SimCloud`], behind a mutex.
#[derive(Debug)]
pub(super) struct CallBook {
    /// Where calls are also counted for `/metrics`, if anywhere.
    pub recorder: Option<std::sync::Arc<crate::metrics::Metrics>>,
    buckets: [Bucket; 5],
    faults: Faults,
    stats: SimStats,
    log: VecDeque<CallRecord>,
}

impl CallBook {
    pub fn new(limits: &SimLimits, faults: Faults) -> Self {
        Self {
            buckets: [
                Bucket::new(limits.ecs),
                Bucket::new(limits.efs),
                Bucket::new(limits.rds),
                Bucket::new(limits.logs),
                Bucket::new(limits.backup),
            ],
            faults,
            stats: SimStats::default(),
            log: VecDeque::new(),
            recorder: None,
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The latency of one call before `speed` scaling: uniform 20–60 ms, plus an injected
    /// spike now and then.
    pub fn latency(&mut self, speed: f64) -> Duration {
        let mut rng = rand::rng();
        let mut ms = rng.random_range(base::LATENCY_MIN..=base::LATENCY_MAX);
        if rng.random::<f64>() < self.faults.latency_spike_rate {
            ms += self.faults.latency_spike_ms as f64;
            self.stats.injected.latency_spikes += 1;
        }
        // Capped so that an absurd spike setting cannot overflow a deadline.
        duration_from_ms((ms / speed).min(MAX_LATENCY_MS))
    }

    /// Decides whether a call that has arrived is served: an injected throttle, then the
    /// service's bucket, then an injected 5xx. A refused call is recorded here.
    pub fn admit(
        &mut self,
        api: Api,
        instance: Option<&str>,
        target: Option<&str>,
        latency: Duration,
    ) -> Result<(), CloudError> {
        let mut rng = rand::rng();
        let refused = if rng.random::<f64>() < self.faults.throttle_rate {
            self.stats.injected.throttles += 1;
            Some(api.throttled())
        } else if !self.buckets[api.service.index()].take() {
            Some(api.throttled())
        } else if rng.random::<f64>() < self.faults.error_rate {
            self.stats.injected.errors += 1;
            Some(api.unavailable())
        } else {
            None
        };
        match refused {
            Some(err) => {
                self.record(api, instance, target, Err(&err), latency);
                Err(err)
            }
            None => Ok(()),
        }
    }

    /// Books one answered call.
    pub fn record(
        &mut self,
        api: Api,
        instance: Option<&str>,
        target: Option<&str>,
        outcome: Result<(), &CloudError>,
        latency: Duration,
    ) {
        if let Some(recorder) = &self.recorder {
            let metric = match outcome {
                Ok(()) => crate::metrics::CallOutcome::Ok,
                Err(CloudError::Throttled { .. }) => crate::metrics::CallOutcome::Throttled,
                Err(e) => crate::metrics::CallOutcome::Error(e.code()),
            };
            recorder.aws_call(api.service.name(), api.operation, metric, latency);
        }
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(CloudError::Throttled { .. }) => "throttled",
            Err(_) => "error",
        };
        self.stats.calls += 1;
        self.stats.mutating_calls += u64::from(api.mutating);
        let op = self.stats.operations.entry(api.stat_key()).or_default();
        op.calls += 1;
        op.throttled += u64::from(outcome == "throttled");
        op.errors += u64::from(outcome == "error");
        if self.log.len() >= MAX_CALL_LOG {
            self.log.pop_front();
        }
        let ctx = crate::cloud::call_context();
        self.log.push_back(CallRecord {
            at: now_ms(),
            service: api.service.name(),
            operation: api.operation,
            instance: instance.map(str::to_owned),
            mutating: api.mutating,
            outcome,
            target: target.map(str::to_owned),
            caller: ctx.replica,
            fence: ctx.fence,
            pass: ctx.pass,
            attempt: ctx.attempt,
        });
    }

    pub fn stats(&self) -> SimStats {
        self.stats.clone()
    }

    pub fn count_dropped_trigger(&mut self, dropped: bool) {
        self.stats.injected.dropped_triggers += u64::from(dropped);
    }

    pub fn count_distorted_views(&mut self, stale: u64, reordered: u64) {
        self.stats.injected.stale_observations += stale;
        self.stats.injected.reordered_observations += reordered;
    }

    pub fn call_log(&self) -> Vec<CallRecord> {
        self.log.iter().cloned().collect()
    }
}
