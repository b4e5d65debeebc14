//! Prometheus metrics, under the names operators already have dashboards for
//! (controller-runtime's `controller_runtime_*` and `workqueue_*`), plus AWS call, HTTP and
//! convergence metrics.
//!
//! One [`Metrics`] per server (its own registry, so several servers in one test process do
//! not collide). Counters and histograms are updated where things happen; gauges that
//! describe current state (queue depth, instances by phase, stuck instances, shards held)
//! are refreshed from that state when `/metrics` is scraped.
//!
//! Invariant: no label carries a tenant or instance id (cardinality stays bounded by the
//! code, not by the fleet).

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `controller` / `name` label value of the one controller this process runs.
pub const CONTROLLER: &str = "instance";

/// Seconds: reconcile passes and AWS calls are fast, convergence takes minutes.
const FAST_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const CONVERGE_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
];

pub struct Metrics {
    registry: Registry,
    pub reconcile_total: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub terminal_errors: IntCounterVec,
    pub reconcile_time: HistogramVec,
    pub active_workers: IntGaugeVec,
    pub max_concurrent: IntGaugeVec,
    pub queue_depth: IntGaugeVec,
    pub queue_adds: IntCounterVec,
    pub queue_duration: HistogramVec,
    pub work_duration: HistogramVec,
    pub unfinished_work: GaugeVec,
    pub longest_running: GaugeVec,
    pub queue_retries: IntCounterVec,
    pub aws_requests: IntCounterVec,
    pub aws_errors: IntCounterVec,
    pub aws_throttled: IntCounterVec,
    pub aws_duration: HistogramVec,
    pub instances: IntGaugeVec,
    pub not_converged: IntGauge,
    pub time_to_converge: Histogram,
    pub stuck: IntGauge,
    pub resync_calls_per_instance: Gauge,
    pub shards_held: IntGauge,
    pub leader: IntGaugeVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn fgauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let h = HistogramVec::new(opts, labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    /// Every metric, registered in a fresh registry. The names are fixed by the code, so
    /// registration cannot fail at run time (a test pins that).
    pub fn new() -> Self {
        let r = Registry::new();
        let m = Self {
            reconcile_total: counter(
                &r,
                "controller_runtime_reconcile_total",
                "Reconcile passes by result (success, error, requeue, requeue_after).",
                &["controller", "result"],
            ),
            reconcile_errors: counter(
                &r,
                "controller_runtime_reconcile_errors_total",
                "Reconcile passes that ended in an error.",
                &["controller"],
            ),
            terminal_errors: counter(
                &r,
                "controller_runtime_terminal_reconcile_errors_total",
                "Reconcile passes that ended in an error a retry will not fix.",
                &["controller"],
            ),
            reconcile_time: histogram(
                &r,
                "controller_runtime_reconcile_time_seconds",
                "Duration of reconcile passes.",
                &["controller"],
                FAST_BUCKETS,
            ),
            active_workers: gauge_vec(
                &r,
                "controller_runtime_active_workers",
                "Reconcile passes running now.",
                &["controller"],
            ),
            max_concurrent: gauge_vec(
                &r,
                "controller_runtime_max_concurrent_reconciles",
                "Most reconcile passes allowed at once (--workers).",
                &["controller"],
            ),
            queue_depth: gauge_vec(
                &r,
                "workqueue_depth",
                "Instances waiting in the work queue (due or delayed).",
                &["name"],
            ),
            queue_adds: counter(
                &r,
                "workqueue_adds_total",
                "Triggers added to the work queue (before de-duplication).",
                &["name"],
            ),
            queue_duration: histogram(
                &r,
                "workqueue_queue_duration_seconds",
                "How long an instance waited in the queue after it was due.",
                &["name"],
                FAST_BUCKETS,
            ),
            work_duration: histogram(
                &r,
                "workqueue_work_duration_seconds",
                "How long processing an instance took.",
                &["name"],
                FAST_BUCKETS,
            ),
            unfinished_work: fgauge_vec(
                &r,
                "workqueue_unfinished_work_seconds",
                "Seconds of work in progress not yet observed by work_duration.",
                &["name"],
            ),
            longest_running: fgauge_vec(
                &r,
                "workqueue_longest_running_processor_seconds",
                "How long the longest running pass has been running.",
                &["name"],
            ),
            queue_retries: counter(
                &r,
                "workqueue_retries_total",
                "Instances requeued with backoff after a failed pass.",
                &["name"],
            ),
            aws_requests: counter(
                &r,
                "aws_api_requests_total",
                "Cloud API calls.",
                &["service", "operation"],
            ),
            aws_errors: counter(
                &r,
                "aws_api_request_errors_total",
                "Cloud API calls that failed, by error code.",
                &["service", "operation", "code"],
            ),
            aws_throttled: counter(
                &r,
                "aws_api_throttled_total",
                "Cloud API calls refused for rate.",
                &["service", "operation"],
            ),
            aws_duration: histogram(
                &r,
                "aws_api_request_duration_seconds",
                "Duration of cloud API calls.",
                &["service", "operation"],
                FAST_BUCKETS,
            ),
            instances: gauge_vec(
                &r,
                "wpfleet_instances",
                "Instances this replica owns, by phase.",
                &["phase"],
            ),
            not_converged: int_gauge(
                &r,
                "wpfleet_instances_not_converged",
                "Instances whose generation is above their observed generation.",
            ),
            time_to_converge: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "wpfleet_time_to_converge_seconds",
                        "From a spec change to the instance being Ready on it.",
                    )
                    .buckets(CONVERGE_BUCKETS.to_vec()),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            stuck: int_gauge(
                &r,
                "wpfleet_instances_stuck",
                "Instances not converged for longer than --stuck-after.",
            ),
            resync_calls_per_instance: {
                let g = Gauge::new(
                    "wpfleet_resync_aws_calls_per_instance",
                    "Cloud calls per instance during the last full resync.",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            shards_held: int_gauge(
                &r,
                "wpfleet_shards_held",
                "Shard leases this replica holds (all shards when not leasing).",
            ),
            leader: gauge_vec(
                &r,
                "leader_election_master_status",
                "1 while this replica holds at least one shard lease (or owns every shard).",
                &["name"],
            ),
            http_requests: counter(
                &r,
                "http_requests_total",
                "HTTP requests by route template and status.",
                &["method", "route", "status"],
            ),
            http_duration: histogram(
                &r,
                "http_request_duration_seconds",
                "HTTP request duration by route template.",
                &["method", "route"],
                FAST_BUCKETS,
            ),
            registry: r,
        };
        // Touch the labelled series so every name appears from the first scrape.
        for result in ["success", "error", "requeue", "requeue_after"] {
            m.reconcile_total.with_label_values(&[CONTROLLER, result]);
        }
        m.reconcile_errors.with_label_values(&[CONTROLLER]);
        m.terminal_errors.with_label_values(&[CONTROLLER]);
        m.reconcile_time.with_label_values(&[CONTROLLER]);
        m.active_workers.with_label_values(&[CONTROLLER]);
        m.queue_adds.with_label_values(&[CONTROLLER]);
        m.queue_retries.with_label_values(&[CONTROLLER]);
        m.queue_duration.with_label_values(&[CONTROLLER]);
        m.work_duration.with_label_values(&[CONTROLLER]);
        m.leader.with_label_values(&["wpfleet"]);
        m
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding our own registry into memory cannot fail.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Records one cloud API call.
    pub fn aws_call(
        &self,
        service: &str,
        operation: &str,
        outcome: CallOutcome<'_>,
        took: Duration,
    ) {
        self.aws_requests
            .with_label_values(&[service, operation])
            .inc();
        self.aws_duration
            .with_label_values(&[service, operation])
            .observe(took.as_secs_f64());
        match outcome {
            CallOutcome::Ok => {}
            CallOutcome::Throttled => {
                self.aws_throttled
                    .with_label_values(&[service, operation])
                    .inc();
                self.aws_errors
                    .with_label_values(&[service, operation, "ThrottlingException"])
                    .inc();
            }
            CallOutcome::Error(code) => {
                self.aws_errors
                    .with_label_values(&[service, operation, code])
                    .inc();
            }
        }
    }

    /// Total cloud API calls so far (for calls-per-instance figures).
    pub fn aws_calls_total(&self) -> u64 {
        let mut total = 0;
        for family in self.registry.gather() {
            if family.name() == "aws_api_requests_total" {
                total += family
                    .get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
                    .sum::<u64>();
            }
        }
        total
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// How a cloud call ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome<'a> {
    Ok,
    Throttled,
    Error(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_encodes() {
        let m = Metrics::new();
        m.aws_call(
            "ecs",
            "UpdateService",
            CallOutcome::Throttled,
            Duration::from_millis(3),
        );
        m.aws_call(
            "ecs",
            "UpdateService",
            CallOutcome::Ok,
            Duration::from_millis(3),
        );
        let text = m.encode();
        for name in [
            "controller_runtime_reconcile_total",
            "controller_runtime_reconcile_errors_total",
            "controller_runtime_terminal_reconcile_errors_total",
            "controller_runtime_reconcile_time_seconds",
            "controller_runtime_active_workers",
            "workqueue_adds_total",
            "workqueue_retries_total",
            "aws_api_requests_total",
            "aws_api_throttled_total",
            "aws_api_request_duration_seconds",
            "leader_election_master_status",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert_eq!(m.aws_calls_total(), 2);
        assert!(
            text.contains(r#"aws_api_throttled_total{operation="UpdateService",service="ecs"} 1"#)
        );
    }
}
