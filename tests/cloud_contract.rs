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
/// `$factory` is an `async fn() -> impl Cloud`; `$patience` bounds every wait; `$fidelity`
/// says what the backing service can show (default: everything, see [`Fidelity`]).
macro_rules! cloud_contract {
    ($name:ident, $factory:path, $patience:expr) => {
        cloud_contract!($name, $factory, $patience, Fidelity::FULL);
    };
    ($name:ident, $factory:path, $patience:expr, $fidelity:expr) => {
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
                contract::steps_in_the_wrong_state_are_retryable(
                    &cloud().await,
                    $patience,
                    $fidelity,
                )
                .await;
            }

            #[tokio::test]
            async fn job_steps_are_idempotent_by_token() {
                contract::job_steps_are_idempotent_by_token(&cloud().await, $patience).await;
            }

            #[tokio::test]
            async fn restored_files_are_relocated_once_the_restore_job_completed() {
                contract::restored_files_are_relocated_once_the_restore_job_completed(
                    &cloud().await,
                    $patience,
                )
                .await;
            }

            #[tokio::test]
            async fn describe_jobs_reflects_completion() {
                contract::describe_jobs_reflects_completion(&cloud().await, $patience).await;
            }

            #[tokio::test]
            async fn log_pages_cover_the_window_exactly_once() {
                contract::log_pages_cover_the_window_exactly_once(&cloud().await, $patience).await;
            }

            #[tokio::test]
            async fn update_service_switches_data_resources() {
                contract::update_service_switches_data_resources(&cloud().await, $patience).await;
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

/// What the server behind an implementation can show. A `false` here means the contract
/// cannot observe that behaviour through this implementation; each one names where the
/// path is covered instead.
#[derive(Debug, Clone, Copy)]
pub struct Fidelity {
    /// RDS passes through transitional states (`creating`, …) that refuse start/stop.
    /// moto's RDS changes state instantly; the AWS driver's handling of
    /// InvalidDBInstanceState is covered by `cloud::aws::tests` (aws-smithy-mocks).
    pub rds_transitions: bool,
}

impl Fidelity {
    pub const FULL: Self = Self {
        rds_transitions: true,
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

#[path = "common/aws.rs"]
mod aws_support;
#[path = "common/backup_fake.rs"]
mod backup_fake;
#[path = "common/moto.rs"]
mod moto;

/// What every AWS contract test of this process shares: moto's endpoint, the shared
/// infrastructure created in it, and the stand-ins for what moto lacks (AWS Backup, ECS's
/// scheduler, the relocation task's RunTask, a directory playing the EFS file system),
/// running on their own thread so they outlive each test's runtime.
struct AwsEnv {
    infra: aws_support::Infra,
    moto: String,
}

static AWS_ENV: std::sync::OnceLock<AwsEnv> = std::sync::OnceLock::new();

fn aws_env() -> &'static AwsEnv {
    AWS_ENV.get_or_init(|| {
        let endpoint = moto::endpoint();
        let (tx, rx) = std::sync::mpsc::channel();
        let moto_url = endpoint.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let m = aws_support::Moto::new(&moto_url);
                let infra = aws_support::Infra::create(&m).await;
                let efs = tempfile::tempdir().expect("tempdir");
                let backup = backup_fake::BackupFake::start_with_file_system(
                    Duration::from_millis(300),
                    efs.path(),
                )
                .await;
                let ecs = aws_support::EcsFront::start(&moto_url, efs.path()).await;
                let scheduler = aws_support::EcsSchedulerStandIn::start(&m, &infra).await;
                tx.send((infra, backup.url.clone(), ecs.url.clone()))
                    .expect("send");
                let _alive = (backup, scheduler, ecs, efs);
                std::future::pending::<()>().await;
            });
        });
        let (infra, backup_url, ecs_url) = rx.recv().expect("AWS test environment");
        // SAFETY of set_var: done once, before any AWS client of this process loads its
        // configuration. Every service goes to moto (ECS through its front), AWS Backup to
        // the test fake.
        unsafe {
            std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
            std::env::set_var("AWS_ENDPOINT_URL_ECS", &ecs_url);
            std::env::set_var("AWS_ENDPOINT_URL_BACKUP", &backup_url);
        }
        AwsEnv {
            infra,
            moto: endpoint,
        }
    })
}

/// The AWS driver on moto (AWS Backup: the test fake).
async fn aws_cloud() -> wpfleet::cloud::aws::AwsCloud {
    let env = aws_env();
    let mut settings = env.infra.settings(&aws_support::Moto::new(&env.moto));
    // Endpoints come from the SDK's variables, so that AWS Backup can go elsewhere.
    settings.endpoint_url = None;
    wpfleet::cloud::aws::AwsCloud::connect(settings)
        .await
        .expect("the AWS driver starts on moto")
}

cloud_contract!(
    aws,
    aws_cloud,
    Duration::from_secs(30),
    Fidelity {
        rds_transitions: false
    }
);

mod contract {
    use super::*;
    use wpfleet::cloud::names::{ResourceNames, epoch_of};
    use wpfleet::cloud::{
        AccessPointState, ClientToken, Cloud, CloudError, CloudResult, DbState, JobKind, JobRef,
        JobState, LogEvent, LogPage, LogQuery, Observed, ObservedJob, Rollout, ServiceState,
        SnapshotState, Step, StepOutcome, WaitingOn,
    };
    use wpfleet::model::{InstanceKey, Timestamp};

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
            self.ap_at(None)
        }
        fn ap_at(&self, epoch: Option<&str>) -> Step {
            Step::CreateAccessPoint {
                root_path: self.n.access_point_root(epoch),
            }
        }
        fn db(&self) -> Step {
            Step::CreateDatabase {
                identifier: self.n.database(None),
                instance_class: "db.t4g.micro".into(),
                allocated_storage_gb: 20,
            }
        }
        fn endpoint(&self, epoch: Option<&str>) -> String {
            format!("{}.local", self.n.database(epoch))
        }
        fn svc(&self, ap: &str) -> Step {
            Step::CreateService {
                name: self.n.service.clone(),
                desired_count: 2,
                image: "wordpress:6.6-php8.3".into(),
                access_point_id: ap.into(),
                db_endpoint: self.endpoint(None),
            }
        }
        fn update(&self, ap: &str, db_endpoint: &str) -> Step {
            Step::UpdateService {
                name: self.n.service.clone(),
                desired_count: 2,
                image: "wordpress:6.6-php8.3".into(),
                access_point_id: ap.into(),
                db_endpoint: db_endpoint.into(),
            }
        }
        fn final_snapshot(&self) -> String {
            ResourceNames::final_snapshot(&self.n.database(None))
        }
        fn snapshot(&self) -> Step {
            Step::SnapshotDatabase {
                identifier: self.n.database(None),
                snapshot_id: self.final_snapshot(),
            }
        }
        fn delete_db(&self) -> Step {
            Step::DeleteDatabase {
                identifier: self.n.database(None),
                final_snapshot_id: self.final_snapshot(),
            }
        }
        fn backup(&self, backup_id: &str) -> Step {
            Step::StartBackupJob {
                backup_id: backup_id.into(),
                root_path: self.n.access_point_root(None),
            }
        }
        fn restore(&self, recovery_point_arn: &str, epoch: &str) -> Step {
            Step::StartRestoreJob {
                recovery_point_arn: recovery_point_arn.into(),
                target_root: self.n.access_point_root(Some(epoch)),
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
    async fn apply(cloud: &impl Cloud, s: &Steps, step: &Step) -> CloudResult<StepOutcome> {
        let token = ClientToken::derive(&s.key, 1, step);
        let mut backoff = Backoff::new();
        loop {
            match cloud.apply(&s.key, step, &token).await {
                Err(e) if transient(&e) && backoff.wait().await => {}
                other => return other,
            }
        }
    }

    async fn apply_ok(cloud: &impl Cloud, s: &Steps, step: &Step) -> StepOutcome {
        match apply(cloud, s, step).await {
            Ok(outcome) => outcome,
            Err(e) => panic!("{} should succeed: {e}", step.name()),
        }
    }

    /// Applies a job step; returns the id of the job it started.
    async fn start_job(cloud: &impl Cloud, s: &Steps, step: &Step) -> String {
        match apply_ok(cloud, s, step).await {
            StepOutcome::Started { job_id } => job_id,
            StepOutcome::Done => panic!("{} should start a job", step.name()),
        }
    }

    async fn describe_jobs(cloud: &impl Cloud, jobs: &[JobRef]) -> Vec<ObservedJob> {
        let mut backoff = Backoff::new();
        loop {
            match cloud.describe_jobs(jobs).await {
                Ok(seen) => return seen,
                Err(e) if transient(&e) && backoff.wait().await => {}
                Err(e) => panic!("describe_jobs failed: {e}"),
            }
        }
    }

    /// Polls the job every `poll_interval(Snapshot)` until it is no longer running.
    async fn until_job_ends(cloud: &impl Cloud, job: &JobRef, patience: Duration) -> ObservedJob {
        let deadline = Instant::now() + patience;
        loop {
            let seen = describe_jobs(cloud, std::slice::from_ref(job)).await;
            assert_eq!(seen.len(), 1, "a started job is known: {job:?}");
            if seen[0].state != JobState::Running {
                return seen[0].clone();
            }
            assert!(Instant::now() < deadline, "gave up waiting on {job:?}");
            tokio::time::sleep(cloud.poll_interval(WaitingOn::Snapshot)).await;
        }
    }

    async fn logs(cloud: &impl Cloud, key: &InstanceKey, query: &LogQuery) -> LogPage {
        let mut backoff = Backoff::new();
        loop {
            match cloud.logs(key, query).await {
                Ok(page) => return page,
                Err(e) if transient(&e) && backoff.wait().await => {}
                Err(e) => panic!("logs failed: {e}"),
            }
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
        let id = s.n.database(None);
        until(cloud, &s.key, WaitingOn::Database, patience, |o| {
            o.databases
                .iter()
                .find(|d| d.identifier == id && d.state == want)
                .map(drop)
        })
        .await;
    }

    async fn available_access_point(cloud: &impl Cloud, s: &Steps, patience: Duration) -> String {
        available_access_point_at(cloud, s, None, patience).await
    }

    async fn available_access_point_at(
        cloud: &impl Cloud,
        s: &Steps,
        epoch: Option<&str>,
        patience: Duration,
    ) -> String {
        let root = s.n.access_point_root(epoch);
        until(cloud, &s.key, WaitingOn::AccessPoint, patience, |o| {
            o.access_points
                .iter()
                .find(|a| a.root_path == root && a.state == AccessPointState::Available)
                .map(|a| a.id.clone())
        })
        .await
    }

    async fn running_service(cloud: &impl Cloud, s: &Steps, patience: Duration) {
        until(cloud, &s.key, WaitingOn::Tasks, patience, |o| {
            o.service
                .as_ref()
                .filter(|x| x.running_count == 2 && x.rollout == Rollout::Completed)
                .map(drop)
        })
        .await;
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_timestamp_millis(ms).expect("in range")
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
            observe(cloud, &s.key)
                .await
                .access_points
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>(),
            [ap.as_str()],
            "the same client token must not create another access point"
        );
        let svc = s.svc(&ap);
        apply_ok(cloud, &s, &svc).await;
        apply_ok(cloud, &s, &svc).await;
        let seen = observe(cloud, &s.key).await;
        assert_eq!(seen.service.map(|x| x.desired_count), Some(2));
    }

    pub async fn observe_reflects_applied_steps(cloud: &impl Cloud, patience: Duration) {
        let s = Steps::new();
        assert_eq!(observe(cloud, &s.key).await, Observed::default());
        apply_ok(cloud, &s, &s.log()).await;
        apply_ok(cloud, &s, &s.ap()).await;
        apply_ok(cloud, &s, &s.db()).await;
        let seen = observe(cloud, &s.key).await;
        assert_eq!(seen.log_group.map(|l| l.name), Some(s.n.log_group.clone()));
        assert_eq!(
            seen.access_points
                .iter()
                .map(|a| a.root_path.clone())
                .collect::<Vec<_>>(),
            [s.n.access_point_root(None)],
            "an access point is visible while creating"
        );
        assert_eq!(
            seen.databases
                .iter()
                .map(|d| d.identifier.clone())
                .collect::<Vec<_>>(),
            [s.n.database(None)]
        );

        let ap = available_access_point(cloud, &s, patience).await;
        apply_ok(cloud, &s, &s.svc(&ap)).await;
        let svc = until(cloud, &s.key, WaitingOn::Tasks, patience, |o| {
            o.service.clone().filter(|x| x.running_count == 2)
        })
        .await;
        assert_eq!(
            (svc.name.as_str(), svc.state),
            (s.n.service.as_str(), ServiceState::Active)
        );
        assert_eq!(svc.image, "wordpress:6.6-php8.3");
        assert_eq!(svc.access_point_id, ap);
        assert_eq!(svc.db_endpoint, s.endpoint(None));

        until_db(cloud, &s, patience, DbState::Available).await;
        let db = observe(cloud, &s.key).await.databases.remove(0);
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

    pub async fn steps_in_the_wrong_state_are_retryable(
        cloud: &impl Cloud,
        patience: Duration,
        fidelity: Fidelity,
    ) {
        let s = Steps::new();
        let update = Step::UpdateService {
            name: s.n.service.clone(),
            desired_count: 2,
            image: "wordpress:6.6".into(),
            access_point_id: "fsap-0123456789abcdef0".into(),
            db_endpoint: s.endpoint(None),
        };
        let stop = Step::StopDatabase {
            identifier: s.n.database(None),
        };
        let start = Step::StartDatabase {
            identifier: s.n.database(None),
        };
        for step in [&update, &stop, &start] {
            let r = apply(cloud, &s, step).await;
            assert!(matches!(&r, Err(e) if e.is_retryable()), "missing: {r:?}");
        }
        apply_ok(cloud, &s, &s.db()).await;
        if fidelity.rds_transitions {
            for step in [&stop, &start] {
                let r = apply(cloud, &s, step).await;
                assert!(
                    matches!(&r, Err(e @ CloudError::InvalidState { .. }) if e.is_retryable()),
                    "{} while creating: {r:?}",
                    step.name()
                );
            }
        } else {
            // Created at once: starting what runs already is a no-op, not an error.
            until_db(cloud, &s, patience, DbState::Available).await;
            apply_ok(cloud, &s, &start).await;
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
            o.access_points.is_empty().then_some(())
        })
        .await;
        apply_ok(cloud, &s, &s.snapshot()).await;
        let final_snapshot = s.final_snapshot();
        until(cloud, &s.key, WaitingOn::Snapshot, patience, |o| {
            o.snapshots
                .observed()
                .expect("snapshots observed")
                .iter()
                .find(|x| x.id == final_snapshot && x.state == SnapshotState::Available)
                .map(drop)
        })
        .await;
        apply_ok(cloud, &s, &s.delete_db()).await;
        apply_ok(cloud, &s, &s.delete_db()).await;
        until(cloud, &s.key, WaitingOn::Database, patience, |o| {
            o.databases.is_empty().then_some(())
        })
        .await;
        apply_ok(cloud, &s, &s.delete_log()).await;
        let seen = observe(cloud, &s.key).await;
        assert_eq!(
            seen.snapshots
                .observed()
                .expect("snapshots observed")
                .iter()
                .map(|x| &x.db_identifier)
                .collect::<Vec<_>>(),
            [&s.n.database(None)],
            "the final snapshot is kept, and says which DB it is of"
        );
        assert_eq!(
            Observed {
                snapshots: wpfleet::cloud::Seen::Observed(Vec::new()),
                ..seen
            },
            Observed::default()
        );
    }

    pub async fn job_steps_are_idempotent_by_token(cloud: &impl Cloud, patience: Duration) {
        let s = Steps::new();
        apply_ok(cloud, &s, &s.ap()).await;
        available_access_point(cloud, &s, patience).await;

        let backup = s.backup("bk-contract");
        let id = start_job(cloud, &s, &backup).await;
        assert_eq!(
            start_job(cloud, &s, &backup).await,
            id,
            "the same token must return the job it started"
        );
        let job = JobRef {
            kind: JobKind::Backup,
            id,
        };
        let done = until_job_ends(cloud, &job, patience).await;
        assert_eq!(done.state, JobState::Completed, "{done:?}");
        let arn = done
            .recovery_point_arn
            .expect("a completed backup names its recovery point");

        let restore = s.restore(&arn, &epoch_of("rs-contract"));
        let rid = start_job(cloud, &s, &restore).await;
        assert_eq!(start_job(cloud, &s, &restore).await, rid);
        let seen = describe_jobs(
            cloud,
            &[JobRef {
                kind: JobKind::Restore,
                id: rid.clone(),
            }],
        )
        .await;
        assert_eq!(seen.len(), 1, "exactly one restore job: {seen:?}");
        assert_eq!(
            (seen[0].kind, seen[0].id.as_str()),
            (JobKind::Restore, rid.as_str())
        );
    }

    /// AWS Backup restores into a recovery directory of its own; the relocation step moves
    /// the files into place once the job completed, idempotently by its token.
    pub async fn restored_files_are_relocated_once_the_restore_job_completed(
        cloud: &impl Cloud,
        patience: Duration,
    ) {
        let s = Steps::new();
        apply_ok(cloud, &s, &s.ap()).await;
        available_access_point(cloud, &s, patience).await;
        let backup = JobRef {
            kind: JobKind::Backup,
            id: start_job(cloud, &s, &s.backup("bk-contract")).await,
        };
        let arn = until_job_ends(cloud, &backup, patience)
            .await
            .recovery_point_arn
            .expect("a completed backup names its recovery point");
        let epoch = epoch_of("rs-contract");
        let restore = JobRef {
            kind: JobKind::Restore,
            id: start_job(cloud, &s, &s.restore(&arn, &epoch)).await,
        };
        let done = until_job_ends(cloud, &restore, patience).await;
        assert_eq!(done.state, JobState::Completed, "{done:?}");

        let relocate = Step::RelocateRestoredFiles {
            restore_job_id: restore.id.clone(),
            target_root: s.n.access_point_root(Some(&epoch)),
            replaces: None,
        };
        let id = start_job(cloud, &s, &relocate).await;
        assert_eq!(
            start_job(cloud, &s, &relocate).await,
            id,
            "the same token must return the task it started"
        );
        let task = JobRef {
            kind: JobKind::Relocation,
            id,
        };
        let moved = until_job_ends(cloud, &task, patience).await;
        assert_eq!(
            (moved.kind, moved.state, moved.percent_done),
            (JobKind::Relocation, JobState::Completed, 100),
            "{moved:?}"
        );
    }

    pub async fn describe_jobs_reflects_completion(cloud: &impl Cloud, patience: Duration) {
        let s = Steps::new();
        apply_ok(cloud, &s, &s.ap()).await;
        available_access_point(cloud, &s, patience).await;
        let id = start_job(cloud, &s, &s.backup("bk-contract")).await;
        let job = JobRef {
            kind: JobKind::Backup,
            id: id.clone(),
        };
        let unknown = JobRef {
            kind: JobKind::Backup,
            id: "00000000-0000-0000-0000-000000000000".into(),
        };
        let first = describe_jobs(cloud, &[unknown.clone(), job.clone()]).await;
        assert_eq!(first.len(), 1, "unknown ids are left out: {first:?}");
        assert_eq!(
            (first[0].kind, first[0].id.as_str()),
            (JobKind::Backup, id.as_str())
        );
        if first[0].state == JobState::Running {
            assert_eq!(first[0].recovery_point_arn, None);
            assert!(first[0].percent_done < 100);
        }
        let done = until_job_ends(cloud, &job, patience).await;
        assert_eq!((done.state, done.percent_done), (JobState::Completed, 100));
        assert!(done.recovery_point_arn.is_some());
        assert_eq!(describe_jobs(cloud, &[unknown]).await, Vec::new());
    }

    pub async fn log_pages_cover_the_window_exactly_once(cloud: &impl Cloud, patience: Duration) {
        let s = Steps::new();
        let began = chrono::Utc::now().timestamp_millis();
        apply_ok(cloud, &s, &s.log()).await;
        apply_ok(cloud, &s, &s.ap()).await;
        let ap = available_access_point(cloud, &s, patience).await;
        apply_ok(cloud, &s, &s.svc(&ap)).await;
        running_service(cloud, &s, patience).await;

        // Wait for a few pages' worth of events.
        let deadline = Instant::now() + patience;
        let end = loop {
            let end = chrono::Utc::now().timestamp_millis();
            let q = LogQuery {
                start: at(began),
                end: at(end),
                limit: 30,
                next_token: None,
            };
            if logs(cloud, &s.key, &q).await.events.len() >= 25 {
                break end;
            }
            assert!(Instant::now() < deadline, "the service never logged enough");
            tokio::time::sleep(cloud.poll_interval(WaitingOn::Tasks)).await;
        };

        let whole = logs(
            cloud,
            &s.key,
            &LogQuery {
                start: at(began),
                end: at(end),
                limit: 1_000,
                next_token: None,
            },
        )
        .await;
        assert_eq!(whole.next_token, None, "fits one page");
        let ordered = |e: &[LogEvent]| {
            e.windows(2)
                .all(|p| (p[0].timestamp, &p[0].log_stream) <= (p[1].timestamp, &p[1].log_stream))
        };
        assert!(ordered(&whole.events), "ascending by time");
        assert!(
            whole
                .events
                .iter()
                .all(|e| e.timestamp >= at(began) && e.timestamp <= at(end))
        );

        let mut paged = Vec::new();
        let mut token = None;
        loop {
            let q = LogQuery {
                start: at(began),
                end: at(end),
                limit: 6,
                next_token: token,
            };
            let page = logs(cloud, &s.key, &q).await;
            assert!(page.events.len() <= 6);
            paged.extend(page.events);
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(
            paged, whole.events,
            "pages cover the window, each event once"
        );

        let bad = LogQuery {
            start: at(began),
            end: at(end),
            limit: 6,
            next_token: Some("not a token".into()),
        };
        let mut backoff = Backoff::new();
        let r = loop {
            match cloud.logs(&s.key, &bad).await {
                Err(e) if transient(&e) && backoff.wait().await => {}
                other => break other,
            }
        };
        assert!(
            matches!(&r, Err(CloudError::Permanent { code, .. }) if code == "InvalidParameterException"),
            "a malformed token: {r:?}"
        );
    }

    pub async fn update_service_switches_data_resources(cloud: &impl Cloud, patience: Duration) {
        let s = Steps::new();
        let epoch = epoch_of("rs-contract");
        apply_ok(cloud, &s, &s.ap()).await;
        apply_ok(cloud, &s, &s.ap_at(Some(&epoch))).await;
        let ap0 = available_access_point(cloud, &s, patience).await;
        let ap1 = available_access_point_at(cloud, &s, Some(&epoch), patience).await;
        apply_ok(cloud, &s, &s.svc(&ap0)).await;
        running_service(cloud, &s, patience).await;
        let before = describe_tasks(cloud, &s.key).await;

        let endpoint1 = s.endpoint(Some(&epoch));
        let update = s.update(&ap1, &endpoint1);
        apply_ok(cloud, &s, &update).await;
        apply_ok(cloud, &s, &update).await;
        let svc = observe(cloud, &s.key).await.service.expect("service");
        assert_eq!(
            (svc.access_point_id.as_str(), svc.db_endpoint.as_str()),
            (ap1.as_str(), endpoint1.as_str())
        );
        until(cloud, &s.key, WaitingOn::Tasks, patience, |o| {
            o.service
                .as_ref()
                .filter(|x| x.rollout == Rollout::Completed && x.running_count == 2)
                .map(drop)
        })
        .await;
        let deadline = Instant::now() + patience;
        loop {
            let after = describe_tasks(cloud, &s.key).await;
            let replaced =
                after.len() == 2 && after.iter().all(|a| before.iter().all(|b| b.id != a.id));
            if replaced {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the task was never replaced: {after:?}"
            );
            tokio::time::sleep(cloud.poll_interval(WaitingOn::Tasks)).await;
        }
    }

    async fn describe_tasks(
        cloud: &impl Cloud,
        key: &InstanceKey,
    ) -> Vec<wpfleet::cloud::ObservedTask> {
        let mut backoff = Backoff::new();
        loop {
            match cloud.tasks_of(key).await {
                Ok(tasks) => return tasks,
                Err(e) if transient(&e) && backoff.wait().await => {}
                Err(e) => panic!("describe_tasks failed: {e}"),
            }
        }
    }
}
