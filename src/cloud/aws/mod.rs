//! The AWS driver: [`Cloud`] on the official AWS SDK for Rust (ECS, EFS, RDS, AWS Backup,
//! CloudWatch Logs), all clients built from one shared `aws-config`. `serve --cloud aws`
//! selects it; docs/AWS.md describes the infrastructure it expects, its IAM permissions and
//! how it is tested.
//!
//! Per instance it manages an ECS service (and its task definitions), an EFS access point
//! per data epoch, an RDS database per data epoch and its snapshots, AWS Backup jobs and a
//! CloudWatch log group, each tagged `bbws:tenant-id`, `bbws:instance-id` and
//! `managed-by: wpfleet`. It never creates shared infrastructure (cluster, file system,
//! network, vault, roles): those come from [`AwsSettings`].
//!
//! # Layout
//! * `config`: settings and the `serve` flags; `budget`: client-side token buckets;
//!   `call`: the one path every request takes (budget, metrics, error classification);
//!   `errors`: what counts as retryable.
//! * `ecs`, `efs`, `rds`, `logs`, `backup`: one service each (observation and steps);
//!   `relocation`: the one-off ECS task that moves a restore's files out of AWS Backup's
//!   recovery directory into place.
//!
//! Invariants:
//! * only this module imports the AWS SDK crates (and `store/dynamodb` the DynamoDB one);
//! * every create is preceded by a lookup by name or tags and carries the step's client
//!   token where the API has one; nothing derives from the clock;
//! * observation finds resources by name and tags only, never by what status remembers;
//! * a steady-state observation of N instances costs about N/10 ECS calls, N/100 RDS calls
//!   per resource kind, N/50 log calls and one paged EFS listing, not N calls per service.

mod backup;
mod budget;
mod call;
mod config;
mod ecs;
mod efs;
mod errors;
mod logs;
mod rds;
mod relocation;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use self::call::{AwsResult, Caller};
use self::ecs::{ServiceSpec, TaskFacts};
use self::rds::RdsIndex;
use super::names::{MANAGED_BY, ResourceNames, TAG_INSTANCE, TAG_MANAGED_BY, TAG_TENANT};
use super::{
    ClientToken, Cloud, CloudError, CloudResult, JobKind, JobRef, LogPage, LogQuery, Observed,
    ObservedJob, ObservedService, ObservedTask, Scope, Seen, Step, StepOutcome, WaitingOn,
};
use crate::metrics::Metrics;
use crate::model::{InstanceId, InstanceKey, TenantId};

pub use self::budget::{Limit, RateLimits};
pub use self::config::{AwsArgs, AwsSettings, LOG_RETENTION_DAYS};

/// The SDK clients, one per service, sharing one configuration.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    pub efs: aws_sdk_efs::Client,
    pub rds: aws_sdk_rds::Client,
    pub backup: aws_sdk_backup::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl Clients {
    fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            ecs: aws_sdk_ecs::Client::new(sdk),
            efs: aws_sdk_efs::Client::new(sdk),
            rds: aws_sdk_rds::Client::new(sdk),
            backup: aws_sdk_backup::Client::new(sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(sdk),
        }
    }
}

/// Where the driver works: partition, region and account, read from the cluster's ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    partition: String,
    region: String,
    id: String,
}

impl Account {
    fn from_arn(arn: &str) -> Option<Self> {
        let mut parts = arn.split(':');
        let (_arn, partition, _service, region, id) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        Some(Self {
            partition: partition.to_owned(),
            region: region.to_owned(),
            id: id.to_owned(),
        })
    }
}

pub struct AwsCloud {
    settings: AwsSettings,
    clients: Clients,
    caller: Caller,
    account: Account,
    file_system_arn: String,
    /// Facts of task definition revisions by ARN (revisions are immutable).
    task_defs: Mutex<HashMap<String, TaskFacts>>,
    /// RDS-managed master secret ARN by DB identifier (seen when DBs are described).
    db_secrets: Mutex<HashMap<String, String>>,
    /// Which DB identifiers belong to which instance.
    rds_index: Mutex<RdsIndex>,
    /// Held while the RDS discovery listing runs (one at a time).
    discovering: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AwsCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCloud")
            .field("cluster", &self.settings.cluster)
            .field("file_system", &self.settings.file_system_id)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The one configuration every client shares: credentials, region and endpoints from the
/// SDK's usual chain (overridden by `settings`), adaptive retry, bounded timeouts.
fn shared_config(settings: &AwsSettings) -> aws_config::ConfigLoader {
    // Adaptive retry: the SDK retries throttling and 5xx with jittered exponential
    // backoff, and its client-side rate limiter slows a client down after throttling.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::adaptive()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}

/// The base of each `poll_interval`, before the configured cap: about a quarter of how
/// long AWS typically takes for the thing awaited.
fn base_poll(waiting_on: WaitingOn) -> Duration {
    Duration::from_secs(match waiting_on {
        WaitingOn::Database | WaitingOn::Snapshot => 30,
        WaitingOn::Tasks | WaitingOn::Service => 10,
        WaitingOn::AccessPoint => 5,
        WaitingOn::LogGroup => 2,
    })
}

impl AwsCloud {
    /// Loads the shared AWS configuration (credentials, region, endpoints from the usual
    /// chain, overridden by `settings`), then checks the shared infrastructure.
    pub async fn connect(settings: AwsSettings) -> anyhow::Result<Self> {
        settings.validate().map_err(anyhow::Error::msg)?;
        let sdk = shared_config(&settings).load().await;
        Self::start(settings, Clients::new(&sdk))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("checking the shared AWS infrastructure (cluster, file system)")
    }

    /// Resolves the cluster (hence account and region) and the file system.
    pub(crate) async fn start(settings: AwsSettings, clients: Clients) -> CloudResult<Self> {
        let caller = Caller::new(budget::Budget::new(settings.rate_limits.clone()));
        let cluster = Self::cluster_arn(&settings, &clients, &caller).await?;
        let account = Account::from_arn(&cluster).ok_or_else(|| CloudError::Permanent {
            service: "ecs",
            operation: "DescribeClusters",
            code: "InvalidClusterArn".into(),
            message: format!("cannot read account and region from {cluster}"),
        })?;
        let file_system_arn = Self::file_system_arn(&settings, &clients, &caller, &account).await?;
        Ok(Self {
            settings,
            clients,
            caller,
            account,
            file_system_arn,
            task_defs: Mutex::new(HashMap::new()),
            db_secrets: Mutex::new(HashMap::new()),
            rds_index: Mutex::new(RdsIndex::default()),
            discovering: tokio::sync::Mutex::new(()),
        })
    }

    async fn cluster_arn(
        settings: &AwsSettings,
        clients: &Clients,
        caller: &Caller,
    ) -> CloudResult<String> {
        let api = call::Api::new("ecs", "DescribeClusters");
        let request = clients
            .ecs
            .describe_clusters()
            .clusters(&settings.cluster)
            .send();
        let out = caller.send(api, request).await?;
        out.clusters()
            .iter()
            .find(|c| c.status() == Some("ACTIVE"))
            .and_then(|c| c.cluster_arn())
            .map(str::to_owned)
            .ok_or_else(|| CloudError::Permanent {
                service: api.service,
                operation: api.operation,
                code: "ClusterNotFoundException".into(),
                message: format!("no active ECS cluster {}", settings.cluster),
            })
    }

    async fn file_system_arn(
        settings: &AwsSettings,
        clients: &Clients,
        caller: &Caller,
        account: &Account,
    ) -> CloudResult<String> {
        let request = clients
            .efs
            .describe_file_systems()
            .file_system_id(&settings.file_system_id)
            .send();
        let out = caller.send(efs::DESCRIBE_FILE_SYSTEMS, request).await?;
        let fs = out.file_systems().first();
        Ok(fs
            .and_then(|f| f.file_system_arn())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!(
                    "arn:{}:elasticfilesystem:{}:{}:file-system/{}",
                    account.partition, account.region, account.id, settings.file_system_id
                )
            }))
    }

    /// Also count every call in these metrics (`aws_api_*`).
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        self.caller.set_metrics(metrics);
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> MutexGuard<'a, T> {
        // Caches only: a panic mid-update leaves at worst a stale entry.
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn observe_all(&self, keys: &[InstanceKey], scope: Scope) -> AwsResult<Vec<Observed>> {
        let unique: Vec<InstanceKey> = keys
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let names: Vec<ResourceNames> = unique.iter().map(ResourceNames::for_key).collect();
        let services: Vec<String> = names.iter().map(|n| n.service.clone()).collect();
        let groups: Vec<String> = names.iter().map(|n| n.log_group.clone()).collect();
        let (mut services, mut access_points, mut rds, mut groups) = tokio::try_join!(
            self.services_named(&services),
            self.observe_access_points(),
            self.observe_rds(&unique, scope.snapshots),
            self.observe_log_groups(&groups),
        )?;
        let mut by_key: HashMap<&InstanceKey, Observed> = HashMap::new();
        for (key, n) in unique.iter().zip(&names) {
            let (databases, snapshots) = rds.remove(key).unwrap_or_default();
            by_key.insert(
                key,
                Observed {
                    service: services.remove(&n.service),
                    access_points: access_points.remove(key).unwrap_or_default(),
                    databases,
                    snapshots: match scope.snapshots {
                        true => Seen::Observed(snapshots),
                        false => Seen::NotObserved,
                    },
                    log_group: groups.remove(&n.log_group),
                    tasks: None,
                    jobs: Vec::new(),
                },
            );
        }
        Ok(keys
            .iter()
            .map(|k| by_key.get(k).cloned().unwrap_or_default())
            .collect())
    }

    async fn apply_step(
        &self,
        key: &InstanceKey,
        step: &Step,
        token: &ClientToken,
    ) -> AwsResult<StepOutcome> {
        let token = token.as_str();
        match step {
            Step::CreateLogGroup { name, .. } => self.create_log_group(key, name).await,
            Step::DeleteLogGroup { name } => self.delete_log_group(name).await,
            Step::CreateAccessPoint { root_path } => {
                self.create_access_point(key, root_path, token).await
            }
            Step::DeleteAccessPoint { id } => self.delete_access_point(id).await,
            Step::CreateDatabase {
                identifier,
                instance_class,
                allocated_storage_gb,
            } => {
                self.create_database(key, identifier, instance_class, *allocated_storage_gb)
                    .await
            }
            Step::RestoreDatabase {
                identifier,
                snapshot_id,
                instance_class,
            } => {
                self.restore_database(key, identifier, snapshot_id, instance_class)
                    .await
            }
            Step::ModifyDatabase {
                identifier,
                instance_class,
            } => self.modify_database(identifier, instance_class).await,
            Step::StartDatabase { identifier } => self.start_database(identifier).await,
            Step::StopDatabase { identifier } => self.stop_database(identifier).await,
            Step::SnapshotDatabase {
                identifier,
                snapshot_id,
            } => self.snapshot_database(key, identifier, snapshot_id).await,
            Step::DeleteDatabase {
                identifier,
                final_snapshot_id,
            } => self.delete_database(identifier, final_snapshot_id).await,
            Step::CreateService {
                name,
                desired_count,
                image,
                access_point_id,
                db_endpoint,
            } => {
                let spec = service_spec(name, *desired_count, image, access_point_id, db_endpoint);
                self.create_service(key, &spec, token).await
            }
            Step::UpdateService {
                name,
                desired_count,
                image,
                access_point_id,
                db_endpoint,
            } => {
                let spec = service_spec(name, *desired_count, image, access_point_id, db_endpoint);
                self.update_service(key, &spec).await
            }
            Step::DeleteService { name } => self.delete_service(name).await,
            Step::StartBackupJob {
                backup_id,
                root_path,
            } => {
                self.start_backup_job(key, backup_id, root_path, token)
                    .await
            }
            Step::StartRestoreJob {
                recovery_point_arn, ..
            } => self.start_restore_job(key, recovery_point_arn, token).await,
            Step::RelocateRestoredFiles {
                restore_job_id,
                target_root,
                replaces,
            } => {
                let token = super::rerun_token(token, replaces.as_deref());
                self.relocate_restored_files(key, restore_job_id, target_root, &token)
                    .await
            }
        }
    }
}

fn service_spec<'a>(
    name: &'a str,
    desired_count: u32,
    image: &str,
    access_point_id: &str,
    db_endpoint: &str,
) -> ServiceSpec<'a> {
    ServiceSpec {
        name,
        desired_count,
        facts: TaskFacts {
            image: image.to_owned(),
            access_point_id: access_point_id.to_owned(),
            db_endpoint: db_endpoint.to_owned(),
        },
    }
}

/// The instance a resource belongs to, from its tags: only resources wpfleet manages
/// (`managed-by: wpfleet`) with valid tenant and instance ids count.
fn tagged_key<'a>(
    tags: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Option<InstanceKey> {
    let (mut tenant, mut instance, mut managed) = (None, None, false);
    for (k, v) in tags {
        match (k, v) {
            (Some(TAG_TENANT), Some(v)) => tenant = TenantId::parse(v).ok(),
            (Some(TAG_INSTANCE), Some(v)) => instance = InstanceId::parse(v).ok(),
            (Some(TAG_MANAGED_BY), Some(MANAGED_BY)) => managed = true,
            _ => {}
        }
    }
    match (tenant, instance, managed) {
        (Some(t), Some(i), true) => Some(InstanceKey::new(t, i)),
        _ => None,
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    async fn observe_scope(
        &self,
        keys: &[InstanceKey],
        scope: Scope,
    ) -> CloudResult<Vec<Observed>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.observe_all(keys, scope).await?)
    }

    async fn observe_services(
        &self,
        keys: &[InstanceKey],
    ) -> CloudResult<Vec<Option<ObservedService>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys
            .iter()
            .map(|k| ResourceNames::for_key(k).service)
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        let found = self.services_named(&unique).await?;
        Ok(names.iter().map(|n| found.get(n).cloned()).collect())
    }

    async fn describe_tasks(&self, keys: &[InstanceKey]) -> CloudResult<Vec<Vec<ObservedTask>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.service_tasks(keys).await?)
    }

    async fn describe_jobs(&self, jobs: &[JobRef]) -> CloudResult<Vec<ObservedJob>> {
        let tasks: Vec<String> = jobs
            .iter()
            .filter(|j| j.kind == JobKind::Relocation)
            .map(|j| j.id.clone())
            .collect();
        let (mut seen, relocations) = tokio::try_join!(
            self.describe_backup_jobs(jobs),
            self.describe_relocations(&tasks),
        )?;
        seen.extend(relocations);
        Ok(seen)
    }

    async fn apply(
        &self,
        key: &InstanceKey,
        step: &Step,
        token: &ClientToken,
    ) -> CloudResult<StepOutcome> {
        Ok(self.apply_step(key, step, token).await?)
    }

    async fn logs(&self, key: &InstanceKey, query: &LogQuery) -> CloudResult<LogPage> {
        let group = ResourceNames::for_key(key).log_group;
        match self.filter_log_events(&group, query).await {
            Ok(page) => Ok(page),
            Err(f) => Err(f.into()),
        }
    }

    fn poll_interval(&self, waiting_on: WaitingOn) -> Duration {
        base_poll(waiting_on).min(self.settings.max_poll_interval)
    }
}
