//! The runner with a cloud that refuses a step for a reason only a person can fix (issue 5):
//! the instance shows it (Degraded, with AWS's code and message; phase FAILED), is looked at
//! again only slowly, and converges by itself once the cause is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Reconciler, RunConfig};
use crate::cloud::sim::{SimCloud, SimConfig};
use crate::cloud::{
    ClientToken, Cloud, CloudError, CloudResult, JobRef, LogPage, LogQuery, Observed, ObservedJob,
    ObservedService, ObservedTask, Scope, Step, StepOutcome, WaitingOn,
};
use crate::metrics::Metrics;
use crate::model::{
    ConditionStatus, ConditionType, Configuration, DesiredState, Instance, InstanceKey, Phase,
    Spec, Tier, find_condition, now,
};
use crate::reconcile::{Backoff, Shards};
use crate::store::{EmbeddedStore, Store};

/// The simulated cloud, except that CreateDatabase is denied while `deny` is set; it
/// records the `urgent` hint of every observation.
struct DenyingCloud {
    sim: SimCloud,
    deny: AtomicBool,
    denied: AtomicU32,
    urgent_observations: std::sync::Mutex<Vec<bool>>,
}

#[async_trait]
impl Cloud for DenyingCloud {
    async fn observe_scope(
        &self,
        keys: &[InstanceKey],
        scope: Scope,
    ) -> CloudResult<Vec<Observed>> {
        self.urgent_observations
            .lock()
            .unwrap()
            .push(crate::cloud::call_context().urgent);
        self.sim.observe_scope(keys, scope).await
    }
    async fn observe_services(
        &self,
        keys: &[InstanceKey],
    ) -> CloudResult<Vec<Option<ObservedService>>> {
        self.sim.observe_services(keys).await
    }
    async fn describe_tasks(&self, keys: &[InstanceKey]) -> CloudResult<Vec<Vec<ObservedTask>>> {
        self.sim.describe_tasks(keys).await
    }
    async fn describe_jobs(&self, jobs: &[JobRef]) -> CloudResult<Vec<ObservedJob>> {
        self.sim.describe_jobs(jobs).await
    }
    async fn apply(
        &self,
        key: &InstanceKey,
        step: &Step,
        token: &ClientToken,
    ) -> CloudResult<StepOutcome> {
        if matches!(step, Step::CreateDatabase { .. }) && self.deny.load(Ordering::SeqCst) {
            self.denied.fetch_add(1, Ordering::SeqCst);
            return Err(CloudError::Permanent {
                service: "rds",
                operation: "CreateDBInstance",
                code: "AccessDenied".into(),
                message: "User: arn:aws:sts::1:assumed-role/wpfleet is not authorized to \
                          perform: rds:CreateDBInstance"
                    .into(),
            });
        }
        self.sim.apply(key, step, token).await
    }
    async fn logs(&self, key: &InstanceKey, query: &LogQuery) -> CloudResult<LogPage> {
        self.sim.logs(key, query).await
    }
    fn poll_interval(&self, waiting_on: WaitingOn) -> Duration {
        self.sim.poll_interval(waiting_on)
    }
}

async fn status_of(store: &dyn Store, key: &InstanceKey) -> Instance {
    store.get(key).await.unwrap().expect("the instance exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_shows_as_degraded_is_retried_slowly_and_is_not_sticky() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let cloud = Arc::new(DenyingCloud {
        sim: SimCloud::in_memory(SimConfig {
            speed: 1_000.0,
            ..SimConfig::default()
        }),
        deny: AtomicBool::new(true),
        denied: AtomicU32::new(0),
        urgent_observations: std::sync::Mutex::new(Vec::new()),
    });
    let problem_retry = Duration::from_millis(400);
    let config = RunConfig {
        resync_interval: Duration::from_secs(3600),
        // Fast backoff: without the floor, retries would come every few milliseconds.
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_secs(10),
        },
        batch_window: Duration::ZERO,
        problem_retry,
        ..RunConfig::default()
    };
    let reconciler = Reconciler::new(
        store.clone(),
        cloud.clone(),
        Shards::all(store.clone()),
        config,
        Arc::new(Metrics::new()),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(reconciler.clone().run(stop.clone()));

    let key = InstanceKey::from_strs("t1", "denied");
    let spec = Spec {
        organization_name: "Acme".into(),
        contact_email: "ops@acme.example".into(),
        tier: Tier::Standard,
        state: DesiredState::Active,
        configuration: Configuration::default(),
        restore: None,
    };
    store
        .create(Instance::new(key.clone(), spec, now()))
        .await
        .unwrap();
    reconciler.trigger().now(key.clone());

    // Degraded with AWS's code and message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let inst = loop {
        let inst = status_of(store.as_ref(), &key).await;
        let degraded = find_condition(&inst.status.conditions, ConditionType::Degraded);
        if degraded.is_some_and(|c| c.status == ConditionStatus::True) {
            break inst;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:#?}", inst.status);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let degraded = find_condition(&inst.status.conditions, ConditionType::Degraded).unwrap();
    assert_eq!(degraded.reason, "AccessDenied");
    assert!(
        degraded
            .message
            .contains("not authorized to perform: rds:CreateDBInstance"),
        "{}",
        degraded.message
    );
    assert_eq!(inst.status.phase, Phase::Failed);
    let last = inst.status.last_error.as_ref().expect("last error");
    assert!(!last.retryable);

    // Looked at again, but slowly: no more than one attempt per `problem_retry`.
    let before = cloud.denied.load(Ordering::SeqCst);
    tokio::time::sleep(problem_retry * 3).await;
    let attempts = cloud.denied.load(Ordering::SeqCst) - before;
    assert!(
        (1..=4).contains(&attempts),
        "{attempts} attempts in 3 retry periods"
    );

    // A person fixes the permission: it converges without a restart.
    cloud.deny.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let inst = status_of(store.as_ref(), &key).await;
        if inst.status.phase == Phase::Active && inst.is_converged() {
            let degraded =
                find_condition(&inst.status.conditions, ConditionType::Degraded).unwrap();
            assert_eq!(degraded.status, ConditionStatus::False);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:#?}", inst.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything so far was wanted by someone (the create, its follow-ups): urgent. A
    // resync of the converged instance is background work.
    let observed = cloud.urgent_observations.lock().unwrap().clone();
    assert!(observed.iter().all(|u| *u), "{observed:?}");
    reconciler.resync_now().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reconciler.resync_in_progress() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resync never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cloud.urgent_observations.lock().unwrap().last(),
        Some(&false)
    );
    stop.cancel();
    running.await.unwrap();
}
