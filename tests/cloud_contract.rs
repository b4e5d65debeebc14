//! The behaviour every `Cloud` implementation must share, whatever it talks to.
//!
//! Each check is a generic `async fn` in `contract`, taking only a `&impl Cloud`; the
//! `cloud_contract!` macro turns them into tests for one implementation, given an async
//! factory and how long to wait for slow transitions. Today it runs against the simulated
//! cloud; the AWS driver adds one more invocation with its own factory.
//!
//! Checks use fresh instance keys, so they may share one account (or one local server) and
//! run in parallel. They treat throttling and 5xx as "try again" (every real cloud answers
//! so now and then), but never an `InvalidState` they expect.

use std::time::{Duration, Instant};

use wpfleet::cloud::sim::{SimCloud, SimConfig};

/// Generates one `#[tokio::test]` per contract check in a module named `$name`.
/// `$factory` is an `async fn() -> impl Cloud`; `$patience` bounds every wait.
macro_rules! cloud_contract {
    ($name:ident, $factory:path, $patience:expr) => {
        mod $name {
            use super::*;

            async fn cloud() -> impl wpfleet::cloud::Cloud {
                $factory().await
            }

            #[tokio::test]
            async fn create_steps_are_idempotent() {
                contract::create_steps_are_idempotent(&cloud().await, $patience).await;
            }

            #[tokio::test]
            async fn observe_reflects_applied_steps() {
                contract::observe_reflects_applied_steps(&cloud().await, $patience).await;
            }

            #[tokio::test]
            async fn observe_returns_one_result_per_key_in_order() {
                contract::observe_returns_one_result_per_key_in_order(&cloud().await).await;
            }

            #[tokio::test]
            async fn deletes_of_missing_resources_succeed() {
                contract::deletes_of_missing_resources_succeed(&cloud().await).await;
            }

            #[tokio::test]
            async fn steps_in_the_wrong_state_are_retryable() {
                contract::steps_in_the_wrong_state_are_retryable(&cloud().await, $patience).await;
            }

            #[tokio::test]
            async fn teardown_removes_everything_but_the_final_snapshot() {
                contract::teardown_removes_everything_but_the_final_snapshot(
                    &cloud().await,
                    $patience,
                )
                .await;
            }
        }
    };
}

/// The simulated cloud at 1000× with its default (real-time) rate limits.
async fn sim_cloud() -> SimCloud {
    SimCloud::in_memory(SimConfig {
        speed: 1_000.0,
        ..SimConfig::default()
    })
}

cloud_contract!(sim, sim_cloud, Duration::from_secs(20));

mod contract {
    use super::*;
    use wpfleet::cloud::names::ResourceNames;
    use wpfleet::cloud::{
        AccessPointState, ClientToken, Cloud, CloudError, CloudResult, DbState, Observed,
        ServiceState, SnapshotState, Step, WaitingOn,
    };
    use wpfleet::model::InstanceKey;

    /// A key no other test (or earlier run against a shared cloud) uses.
    fn fresh_key() -> InstanceKey {
        let id = uuid::Uuid::new_v4().simple().to_string();
        InstanceKey::from_strs("contract", &format!("c{}", &id[..12]))
    }

    struct Steps {
        key: InstanceKey,
        n: ResourceNames,
    }

    impl Steps {
        fn new() -> Self {
            let key = fresh_key();
            Self {
                n: ResourceNames::for_key(&key),
                key,
            }
        }
        fn log(&self) -> Step {
            Step::CreateLogGroup {
                name: self.n.log_group.clone(),
                retention_days: 7,
            }
        }
        fn ap(&self) -> Step {
            Step::CreateAccessPoint {
                root_path: self.n.access_point_root.clone(),
            }
        }
        fn db(&self) -> Step {
            Step::CreateDatabase {
                identifier: self.n.database.clone(),
                instance_class: "db.t4g.micro".into(),
                allocated_storage_gb: 20,
            }
        }
        fn svc(&self, ap: &str) -> Step {
            Step::CreateService {
                name: self.n.service.clone(),
                desired_count: 1,
                image: "wordpress:6.6-php8.3".into(),
                access_point_id: ap.into(),
                db_endpoint: format!("{}.local", self.n.database),
            }
        }
        fn snapshot(&self) -> Step {
            Step::SnapshotDatabase {
                identifier: self.n.database.clone(),
                snapshot_id: self.n.final_snapshot.clone(),
            }
        }
        fn delete_db(&self) -> Step {
            Step::DeleteDatabase {
                identifier: self.n.database.clone(),
                final_snapshot_id: self.n.final_snapshot.clone(),
            }
        }
        fn delete_svc(&self) -> Step {
            Step::DeleteService {
                name: self.n.service.clone(),
            }
        }
        fn delete_log(&self) -> Step {
            Step::DeleteLogGroup {
                name: self.n.log_group.clone(),
            }
        }
    }

    fn transient(e: &CloudError) -> bool {
        matches!(
            e,
            CloudError::Throttled { .. } | CloudError::Unavailable { .. }
        )
    }

    /// Exponential backoff for throttling and 5xx, as every AWS client does. (A fixed
    /// short retry can starve: `observe` needs two RDS tokens, and a bucket that refills
    /// one token per retry never has both.)
    struct Backoff {
        next: Duration,
        deadline: Instant,
    }

    impl Backoff {
        fn new() -> Self {
            Self {
                next: Duration::from_millis(50),
                deadline: Instant::now() + Duration::from_secs(60),
            }
        }

        /// Waits before the next try; `false` once out of patience.
        async fn wait(&mut self) -> bool {
            if Instant::now() >= self.deadline {
                return false;
            }
            tokio::time::sleep(self.next).await;
            self.next = (self.next * 2).min(Duration::from_secs(2));
            true
        }
    }

    /// Applies `step` once, retrying only throttling and 5xx.
    async fn apply(cloud: &impl Cloud, s: &Steps, step: &Step) -> CloudResult<()> {
        let token = ClientToken::derive(&s.key, 1, step);
        let mut backoff = Backoff::new();
        loop {
            match cloud.apply(&s.key, step, &token).await {
                Err(e) if transient(&e) && backoff.wait().await => {}
                other => return other,
            }
        }
    }

    async fn apply_ok(cloud: &impl Cloud, s: &Steps, step: &Step) {
        if let Err(e) = apply(cloud, s, step).await {
            panic!("{} should succeed: {e}", step.name());
        }
    }

    async fn observe_all(cloud: &impl Cloud, keys: &[InstanceKey]) -> Vec<Observed> {
        let mut backoff = Backoff::new();
        loop {
            match cloud.observe(keys).await {
                Ok(all) => {
                    assert_eq!(all.len(), keys.len(), "one Observed per key");
                    return all;
                }
                Err(e) if transient(&e) && backoff.wait().await => {}
                Err(e) => panic!("observe failed: {e}"),
            }
        }
    }

    async fn observe(cloud: &impl Cloud, key: &InstanceKey) -> Observed {
        observe_all(cloud, std::slice::from_ref(key))
            .await
            .remove(0)
    }

    /// Observes every `poll_interval(waiting_on)` until `probe` yields.
    async fn until<T>(
        cloud: &impl Cloud,
        key: &InstanceKey,
        waiting_on: WaitingOn,
        patience: Duration,
        probe: impl Fn(&Observed) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + patience;
        loop {
            let seen = observe(cloud, key).await;
            if let Some(v) = probe(&seen) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting on {waiting_on:?}: {seen:?}"
            );
            tokio::time::sleep(cloud.poll_interval(waiting_on)).await;
        }
    }

    async fn until_db(cloud: &impl Cloud, s: &Steps, patience: Duration, want: DbState) {
        until(cloud, &s.key, WaitingOn::Database, patience, |o| {
            o.database.as_ref().filter(|d| d.state == want).map(drop)
        })
        .await;
    }

    async fn available_access_point(cloud: &impl Cloud, s: &Steps, patience: Duration) -> String {
        until(cloud, &s.key, WaitingOn::AccessPoint, patience, |o| {
            o.access_point
                .as_ref()
                .filter(|a| a.state == AccessPointState::Available)
                .map(|a| a.id.clone())
        })
        .await
    }

    pub async fn create_steps_are_idempotent(cloud: &impl Cloud, patience: Duration) {
        let s = Steps::new();
        for step in [s.log(), s.ap(), s.db()] {
            apply_ok(cloud, &s, &step).await;
            apply_ok(cloud, &s, &step).await;
        }
        let ap = available_access_point(cloud, &s, patience).await;
        apply_ok(cloud, &s, &s.ap()).await;
        assert_eq!(
            observe(cloud, &s.key).await.access_point.map(|a| a.id),
            Some(ap.clone()),
            "the same client token must not create another access point"
        );
        let svc = s.svc(&ap);
        apply_ok(cloud, &s, &svc).await;
        apply_ok(cloud, &s, &svc).await;
        let seen = observe(cloud, &s.key).await;
        assert_eq!(seen.service.map(|x| x.desired_count), Some(1));
    }

    pub async fn observe_reflects_applied_steps(cloud: &impl Cloud, patience: Duration) {
        let s = Steps::new();
        assert_eq!(observe(cloud, &s.key).await, Observed::default());
        apply_ok(cloud, &s, &s.log()).await;
        apply_ok(cloud, &s, &s.ap()).await;
        apply_ok(cloud, &s, &s.db()).await;
        let seen = observe(cloud, &s.key).await;
        assert_eq!(seen.log_group.map(|l| l.name), Some(s.n.log_group.clone()));
        assert!(
            seen.access_point.is_some(),
            "an access point is visible while creating"
        );
        assert_eq!(
            seen.database.as_ref().map(|d| d.identifier.as_str()),
            Some(s.n.database.as_str())
        );

        let ap = available_access_point(cloud, &s, patience).await;
        apply_ok(cloud, &s, &s.svc(&ap)).await;
        let svc = until(cloud, &s.key, WaitingOn::Tasks, patience, |o| {
            o.service.clone().filter(|x| x.running_count == 1)
        })
        .await;
        assert_eq!(
            (svc.name.as_str(), svc.state),
            (s.n.service.as_str(), ServiceState::Active)
        );
        assert_eq!(svc.image, "wordpress:6.6-php8.3");

        until_db(cloud, &s, patience, DbState::Available).await;
        let db = observe(cloud, &s.key).await.database.expect("db");
        assert!(db.endpoint.is_some(), "an available DB has an endpoint");
        assert_eq!(db.instance_class, "db.t4g.micro");
    }

    pub async fn observe_returns_one_result_per_key_in_order(cloud: &impl Cloud) {
        let (a, b) = (Steps::new(), Steps::new());
        apply_ok(cloud, &b, &b.log()).await;
        let keys = [a.key.clone(), b.key.clone(), a.key.clone()];
        let seen = observe_all(cloud, &keys).await;
        assert_eq!(seen[0], Observed::default());
        assert_eq!(seen[2], Observed::default());
        assert_eq!(
            seen[1].log_group.as_ref().map(|l| &l.name),
            Some(&b.n.log_group)
        );
    }

    pub async fn deletes_of_missing_resources_succeed(cloud: &impl Cloud) {
        let s = Steps::new();
        let missing_ap = Step::DeleteAccessPoint {
            id: "fsap-0123456789abcdef0".into(),
        };
        for step in [s.delete_svc(), missing_ap, s.delete_db(), s.delete_log()] {
            apply_ok(cloud, &s, &step).await;
        }
    }

    pub async fn steps_in_the_wrong_state_are_retryable(cloud: &impl Cloud, patience: Duration) {
        let s = Steps::new();
        let update = Step::UpdateService {
            name: s.n.service.clone(),
            desired_count: 2,
            image: "wordpress:6.6".into(),
        };
        let stop = Step::StopDatabase {
            identifier: s.n.database.clone(),
        };
        let start = Step::StartDatabase {
            identifier: s.n.database.clone(),
        };
        for step in [&update, &stop, &start] {
            let r = apply(cloud, &s, step).await;
            assert!(matches!(&r, Err(e) if e.is_retryable()), "missing: {r:?}");
        }
        apply_ok(cloud, &s, &s.db()).await;
        for step in [&stop, &start] {
            let r = apply(cloud, &s, step).await;
            assert!(
                matches!(&r, Err(e @ CloudError::InvalidState { .. }) if e.is_retryable()),
                "{} while creating: {r:?}",
                step.name()
            );
        }
        until_db(cloud, &s, patience, DbState::Available).await;
        apply_ok(cloud, &s, &stop).await;
    }

    pub async fn teardown_removes_everything_but_the_final_snapshot(
        cloud: &impl Cloud,
        patience: Duration,
    ) {
        let s = Steps::new();
        apply_ok(cloud, &s, &s.log()).await;
        apply_ok(cloud, &s, &s.ap()).await;
        apply_ok(cloud, &s, &s.db()).await;
        let ap = available_access_point(cloud, &s, patience).await;
        apply_ok(cloud, &s, &s.svc(&ap)).await;
        until_db(cloud, &s, patience, DbState::Available).await;

        apply_ok(cloud, &s, &s.delete_svc()).await;
        until(cloud, &s.key, WaitingOn::Service, patience, |o| {
            o.service.is_none().then_some(())
        })
        .await;
        apply_ok(cloud, &s, &Step::DeleteAccessPoint { id: ap }).await;
        until(cloud, &s.key, WaitingOn::AccessPoint, patience, |o| {
            o.access_point.is_none().then_some(())
        })
        .await;
        apply_ok(cloud, &s, &s.snapshot()).await;
        until(cloud, &s.key, WaitingOn::Snapshot, patience, |o| {
            o.final_snapshot
                .as_ref()
                .filter(|x| x.state == SnapshotState::Available)
                .map(drop)
        })
        .await;
        apply_ok(cloud, &s, &s.delete_db()).await;
        apply_ok(cloud, &s, &s.delete_db()).await;
        until(cloud, &s.key, WaitingOn::Database, patience, |o| {
            o.database.is_none().then_some(())
        })
        .await;
        apply_ok(cloud, &s, &s.delete_log()).await;
        let seen = observe(cloud, &s.key).await;
        assert!(seen.final_snapshot.is_some(), "the final snapshot is kept");
        assert_eq!(
            Observed {
                final_snapshot: None,
                ..seen
            },
            Observed::default()
        );
    }
}
