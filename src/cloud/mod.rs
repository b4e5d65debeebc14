//! The `Cloud` boundary: what the reconciler observes in ECS, EFS, RDS and CloudWatch Logs,
//! and the idempotent steps it takes there.
//!
//! * `observe` is batched from the start: one call observes many instances, and an
//!   implementation uses the multi-id forms of the describe APIs (ECS DescribeServices takes
//!   10 services, RDS DescribeDBInstances filters 100 ids, …).
//! * `apply` executes one [`Step`]. Every step is idempotent: names derive from the instance
//!   key (`names`), creates carry a [`ClientToken`] derived from (instance, generation,
//!   step), creating what exists and deleting what is gone both succeed.
//!
//! Invariant: only `cloud/` knows how a cloud is called; the reconciler sees these types.

pub mod aws;
pub mod budget;
pub mod names;
pub mod relocate;
pub mod remote;
pub mod sim;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{InstanceKey, Timestamp};

#[async_trait]
pub trait Cloud: Send + Sync + 'static {
    /// Observes every instance of `keys`; returns one [`Observed`] per key, in order, with
    /// `tasks` and `jobs` left empty (see `describe_tasks` / `describe_jobs`), and the RDS
    /// snapshots only when `scope` asks for them (else `Seen::NotObserved`).
    async fn observe_scope(&self, keys: &[InstanceKey], scope: Scope)
    -> CloudResult<Vec<Observed>>;

    /// Observes everything of `keys` (`observe_scope` with [`Scope::FULL`]).
    async fn observe(&self, keys: &[InstanceKey]) -> CloudResult<Vec<Observed>> {
        self.observe_scope(keys, Scope::FULL).await
    }

    /// Describes only the ECS services of `keys` (DescribeServices, 10 per call): what a
    /// pass waiting for tasks to start looks at until they have (see the runner's polls).
    async fn observe_services(
        &self,
        keys: &[InstanceKey],
    ) -> CloudResult<Vec<Option<ObservedService>>>;

    /// Lists the tasks of each instance's ECS service: one `Vec` per key, in order. ECS
    /// lists tasks one service at a time (ListTasks) but describes up to 100 of them across
    /// services at once (DescribeTasks), so this costs one call per key plus one per 100
    /// tasks; the reconciler asks only where task health is not known otherwise.
    async fn describe_tasks(&self, keys: &[InstanceKey]) -> CloudResult<Vec<Vec<ObservedTask>>>;

    /// The tasks of one instance's service (`describe_tasks` of one key).
    async fn tasks_of(&self, key: &InstanceKey) -> CloudResult<Vec<ObservedTask>> {
        let mut lists = self.describe_tasks(std::slice::from_ref(key)).await?;
        Ok(lists.pop().unwrap_or_default())
    }

    /// Describes long jobs by id (AWS Backup backup and restore jobs, relocation tasks) the
    /// controller started and recorded. Unknown ids are left out of the result (for a
    /// relocation task: ECS no longer knows it; it keeps stopped tasks about an hour).
    async fn describe_jobs(&self, jobs: &[JobRef]) -> CloudResult<Vec<ObservedJob>>;

    /// Executes one step; idempotent (see the module docs). Steps that start a long AWS
    /// job return its id so the controller can record it before anything else.
    async fn apply(
        &self,
        key: &InstanceKey,
        step: &Step,
        token: &ClientToken,
    ) -> CloudResult<StepOutcome>;

    /// Reads the instance's log group (CloudWatch Logs FilterLogEvents).
    async fn logs(&self, key: &InstanceKey, query: &LogQuery) -> CloudResult<LogPage>;

    /// How long to wait before looking again at something that is in progress.
    fn poll_interval(&self, waiting_on: WaitingOn) -> Duration;

    /// The API calls `call` will make, per service (`ecs`, `rds`, …), so a client-side
    /// budget can pace them (`budget::Paced`). Default: unknown, and then unpaced.
    fn cost(&self, call: &Call<'_>) -> Vec<(&'static str, u32)> {
        let _ = call;
        Vec::new()
    }

    /// How long calls costing `cost` (see `cost`) would wait for a client-side budget if
    /// made now; zero without one. Work that may wait (polls) defers while this is not
    /// zero, so it leaves the budget to user work and more of it shares one call.
    fn delay(&self, cost: &[(&'static str, u32)]) -> Duration {
        let _ = cost;
        Duration::ZERO
    }
}

/// What an observation describes beyond the ECS service, the access points, the databases
/// and the log group (always described).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// The RDS snapshots: needed only to take or follow a backup, a restore, a final or a
    /// retirement snapshot; a pass without any of these in play need not pay for them.
    pub snapshots: bool,
}

impl Scope {
    pub const FULL: Scope = Scope { snapshots: true };
    pub const WITHOUT_SNAPSHOTS: Scope = Scope { snapshots: false };
}

/// A part of an observation that a pass may leave out ([`Scope`]). `NotObserved` is not
/// "none exist": the planner never acts on it as if nothing were there (it waits and asks
/// for a wider observation instead).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Seen<T> {
    Observed(T),
    NotObserved,
}

impl<T: Default> Default for Seen<T> {
    fn default() -> Self {
        Seen::Observed(T::default())
    }
}

impl<T> Seen<T> {
    /// What was observed; `None` when this part was not.
    pub fn observed(&self) -> Option<&T> {
        match self {
            Seen::Observed(v) => Some(v),
            Seen::NotObserved => None,
        }
    }

    pub fn observed_mut(&mut self) -> Option<&mut T> {
        match self {
            Seen::Observed(v) => Some(v),
            Seen::NotObserved => None,
        }
    }
}

/// A call of the [`Cloud`] trait, as [`Cloud::cost`] prices it.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// `observe_scope` of this many keys.
    Observe(usize, Scope),
    /// `observe_services` of this many keys.
    ObserveServices(usize),
    /// `describe_tasks` of this many keys.
    DescribeTasks(usize),
    DescribeJobs(&'a [JobRef]),
    Apply(&'a Step),
    Logs,
}

pub type CloudResult<T> = Result<T, CloudError>;

/// Who is calling the cloud, for call logs: set by the reconciler around a pass (replica
/// id and, with shard leases, the fencing token of the instance's shard) and carried by
/// the remote cloud protocol. Implementations may record it; none may depend on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    pub replica: Option<String>,
    pub fence: Option<u64>,
    /// The reconcile pass making the call (a per-process sequence number), so a call log
    /// can tell passes apart (issue 7: backoff is asserted from the call log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<u64>,
    /// How many passes of this instance failed in a row before this one (0: not a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Someone is waiting for this work (an API write, reconcile-now, the follow-up of a
    /// change in progress): a cloud with a request budget serves it ahead of background
    /// work (the periodic resync).
    #[serde(default)]
    pub urgent: bool,
    /// Of urgent work, a follow-up of a change already under way (a poll, its next step)
    /// rather than what someone just asked for: served after that, ahead of the resync.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_up: bool,
}

/// Which lane of a request budget a call goes in, most pressing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// What someone just asked for (API writes, reconcile-now, API reads).
    User,
    /// The follow-ups of changes under way: they take what user work leaves.
    FollowUp,
    /// The periodic resync.
    Background,
}

impl CallContext {
    pub fn lane(&self) -> Lane {
        match (self.urgent, self.follow_up) {
            (false, _) => Lane::Background,
            (true, true) => Lane::FollowUp,
            (true, false) => Lane::User,
        }
    }
}

tokio::task_local! {
    /// The [`CallContext`] of the current task, if one was set.
    pub static CALL_CONTEXT: CallContext;
}

/// The current task's call context (empty outside a scope).
pub fn call_context() -> CallContext {
    CALL_CONTEXT.try_with(Clone::clone).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// The service refused the call for rate; retry with backoff.
    #[error("{service} {operation}: rate exceeded")]
    Throttled {
        service: &'static str,
        operation: &'static str,
    },
    /// A 5xx or a timeout; retry with backoff.
    #[error("{service} {operation}: {message}")]
    Unavailable {
        service: &'static str,
        operation: &'static str,
        message: String,
    },
    /// The resource is in a state that does not allow the call yet (e.g. stopping a DB that
    /// is still starting); retry later.
    #[error("{service} {operation}: {message}")]
    InvalidState {
        service: &'static str,
        operation: &'static str,
        message: String,
    },
    /// Retrying will not help until a person acts (access denied, quota, bad parameter).
    #[error("{service} {operation}: {code}: {message}")]
    Permanent {
        service: &'static str,
        operation: &'static str,
        code: String,
        message: String,
    },
}

impl CloudError {
    /// A stable code for status and metrics.
    pub fn code(&self) -> &str {
        match self {
            CloudError::Throttled { .. } => "ThrottlingException",
            CloudError::Unavailable { .. } => "ServiceUnavailable",
            CloudError::InvalidState { .. } => "InvalidState",
            CloudError::Permanent { code, .. } => code,
        }
    }

    pub fn is_retryable(&self) -> bool {
        !matches!(self, CloudError::Permanent { .. })
    }

    pub fn service(&self) -> &'static str {
        match self {
            CloudError::Throttled { service, .. }
            | CloudError::Unavailable { service, .. }
            | CloudError::InvalidState { service, .. }
            | CloudError::Permanent { service, .. } => service,
        }
    }
}

/// Everything the reconciler knows about one instance's cloud resources. Resources are
/// found by the instance's tags, so resources of an earlier data generation (before a
/// restore) are seen too; the planner picks the ones it wants by name.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Observed {
    pub service: Option<ObservedService>,
    /// Every EFS access point tagged with the instance, oldest first.
    pub access_points: Vec<ObservedAccessPoint>,
    /// Every RDS DB instance tagged with the instance.
    pub databases: Vec<ObservedDatabase>,
    /// Every manual RDS snapshot tagged with the instance (final, backup, retirement), when
    /// the observation's [`Scope`] asked for them.
    pub snapshots: Seen<Vec<ObservedSnapshot>>,
    pub log_group: Option<ObservedLogGroup>,
    /// The service's tasks, when this pass listed them (`Cloud::describe_tasks`); `None`
    /// when it did not, in which case the last listed tasks (in status) stand in.
    pub tasks: Option<Vec<ObservedTask>>,
    /// AWS Backup jobs this instance has recorded, as described this pass.
    pub jobs: Vec<ObservedJob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Active,
    /// Being deleted; ECS stops its tasks, then the service disappears.
    Draining,
}

#[derive(Debug, Clone, Serialize, Deserialize, Copy, PartialEq, Eq)]
pub enum Rollout {
    InProgress,
    Completed,
    Failed,
}

impl Rollout {
    pub fn as_str(self) -> &'static str {
        match self {
            Rollout::InProgress => "IN_PROGRESS",
            Rollout::Completed => "COMPLETED",
            Rollout::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedService {
    pub name: String,
    pub arn: String,
    pub state: ServiceState,
    pub desired_count: u32,
    pub running_count: u32,
    pub pending_count: u32,
    /// Container image of the primary deployment.
    pub image: String,
    /// The EFS access point the task definition mounts.
    pub access_point_id: String,
    /// The database endpoint the task definition points WordPress at.
    pub db_endpoint: String,
    /// Rollout state of the primary deployment.
    pub rollout: Rollout,
    /// The primary deployment's id, when the cloud reports its rollout state (ECS does for
    /// rolling-update services). A new deployment starts with every new task definition
    /// (image, access point, database), not with a change of count; ECS marks it COMPLETED
    /// only once the service reached a steady state, which with the task definition's
    /// container health check means every task it started passed it. `None`: the rollout
    /// state was inferred from counts and says nothing about health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedTask {
    pub id: String,
    /// ECS `lastStatus`: PROVISIONING, PENDING, RUNNING, DEACTIVATING, STOPPING.
    pub last_status: String,
    /// ECS `healthStatus`: HEALTHY, UNHEALTHY, UNKNOWN.
    pub health: String,
    pub started_at: Option<Timestamp>,
    pub image: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Copy, PartialEq, Eq)]
pub enum AccessPointState {
    Creating,
    Available,
    Deleting,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedAccessPoint {
    pub id: String,
    pub arn: String,
    pub state: AccessPointState,
    /// The directory it exposes; identifies which data generation it serves.
    pub root_path: String,
}

/// RDS DB instance status words the reconciler distinguishes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum DbState {
    Creating,
    Available,
    Modifying,
    BackingUp,
    Stopping,
    Stopped,
    Starting,
    Deleting,
    Failed,
    /// Any other RDS status (e.g. `maintenance`): wait and look again.
    Other(String),
}

impl DbState {
    /// RDS's own word for it.
    pub fn as_str(&self) -> &str {
        match self {
            DbState::Creating => "creating",
            DbState::Available => "available",
            DbState::Modifying => "modifying",
            DbState::BackingUp => "backing-up",
            DbState::Stopping => "stopping",
            DbState::Stopped => "stopped",
            DbState::Starting => "starting",
            DbState::Deleting => "deleting",
            DbState::Failed => "failed",
            DbState::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "creating" => DbState::Creating,
            "available" => DbState::Available,
            "modifying" => DbState::Modifying,
            "backing-up" => DbState::BackingUp,
            "stopping" => DbState::Stopping,
            "stopped" => DbState::Stopped,
            "starting" => DbState::Starting,
            "deleting" => DbState::Deleting,
            "failed" => DbState::Failed,
            other => DbState::Other(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedDatabase {
    pub identifier: String,
    pub arn: String,
    pub state: DbState,
    pub endpoint: Option<String>,
    pub instance_class: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    Creating,
    Available,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedSnapshot {
    pub id: String,
    pub arn: String,
    pub state: SnapshotState,
    /// The DB instance it was taken from.
    pub db_identifier: String,
}

/// Which kind of long job an id names: an AWS Backup job, or the one-off ECS task that
/// moves a restore's recovered files into place (`Step::RelocateRestoredFiles`).
#[derive(Debug, Clone, Serialize, Deserialize, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Backup,
    Restore,
    Relocation,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct JobRef {
    pub kind: JobKind,
    pub id: String,
}

/// AWS Backup job states (CREATED/PENDING/RUNNING are all "not finished").
#[derive(Debug, Clone, Serialize, Deserialize, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Completed,
    Failed,
    Aborted,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedJob {
    pub kind: JobKind,
    pub id: String,
    pub state: JobState,
    pub percent_done: u8,
    /// For a completed backup job: the recovery point it produced.
    pub recovery_point_arn: Option<String>,
    /// AWS's status message (the reason, when a job failed).
    pub message: Option<String>,
}

/// What a successful step produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    /// A long job started (or, for a repeated idempotency token, the job already started):
    /// its id, to record before anything else.
    Started {
        job_id: String,
    },
}

/// A window of an instance's logs (FilterLogEvents).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogQuery {
    pub start: Timestamp,
    pub end: Timestamp,
    /// 1..=1000
    pub limit: u32,
    /// Opaque, from a previous page.
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEvent {
    pub timestamp: Timestamp,
    pub message: String,
    pub log_stream: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogPage {
    pub events: Vec<LogEvent>,
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedLogGroup {
    pub name: String,
    pub arn: String,
}

/// One idempotent change in the cloud. Names come from [`names::ResourceNames`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Step {
    CreateLogGroup {
        name: String,
        retention_days: u32,
    },
    CreateAccessPoint {
        root_path: String,
    },
    CreateDatabase {
        identifier: String,
        instance_class: String,
        allocated_storage_gb: u32,
    },
    ModifyDatabase {
        identifier: String,
        instance_class: String,
    },
    StartDatabase {
        identifier: String,
    },
    StopDatabase {
        identifier: String,
    },
    CreateService {
        name: String,
        desired_count: u32,
        image: String,
        access_point_id: String,
        db_endpoint: String,
    },
    /// Sets count, image and the data resources the tasks use (after a restore, the
    /// restored access point and database are swapped in this way).
    UpdateService {
        name: String,
        desired_count: u32,
        image: String,
        access_point_id: String,
        db_endpoint: String,
    },
    DeleteService {
        name: String,
    },
    DeleteAccessPoint {
        id: String,
    },
    SnapshotDatabase {
        identifier: String,
        snapshot_id: String,
    },
    /// Only ever planned once `final_snapshot_id` exists and is available.
    DeleteDatabase {
        identifier: String,
        final_snapshot_id: String,
    },
    DeleteLogGroup {
        name: String,
    },
    /// AWS Backup on-demand job of the instance's EFS directory; returns the job id.
    StartBackupJob {
        backup_id: String,
        root_path: String,
    },
    /// AWS Backup item-level restore of a recovery point's directory into the file system;
    /// returns the job id. AWS Backup writes the items under a recovery directory of its
    /// own (`/aws-backup-restore_<datetime>/…`), never into `target_root` itself:
    /// `RelocateRestoredFiles` moves them there once the job completed.
    StartRestoreJob {
        recovery_point_arn: String,
        target_root: String,
    },
    /// A one-off task that moves what the completed restore job `restore_job_id` recovered
    /// into `target_root` (idempotent: a target already in place is success); returns the
    /// task's id. `replaces` names an earlier task of this same move that the cloud no
    /// longer describes: the run then gets a token of its own (see
    /// [`ClientToken::rerun`]), since the first token would return the forgotten task.
    RelocateRestoredFiles {
        restore_job_id: String,
        target_root: String,
        replaces: Option<String>,
    },
    /// RestoreDBInstanceFromDBSnapshot into a new DB instance.
    RestoreDatabase {
        identifier: String,
        snapshot_id: String,
        instance_class: String,
    },
}

impl Step {
    /// A stable name for logs, tokens, metrics and status.
    pub fn name(&self) -> &'static str {
        match self {
            Step::CreateLogGroup { .. } => "CreateLogGroup",
            Step::CreateAccessPoint { .. } => "CreateAccessPoint",
            Step::CreateDatabase { .. } => "CreateDatabase",
            Step::ModifyDatabase { .. } => "ModifyDatabase",
            Step::StartDatabase { .. } => "StartDatabase",
            Step::StopDatabase { .. } => "StopDatabase",
            Step::CreateService { .. } => "CreateService",
            Step::UpdateService { .. } => "UpdateService",
            Step::DeleteService { .. } => "DeleteService",
            Step::DeleteAccessPoint { .. } => "DeleteAccessPoint",
            Step::SnapshotDatabase { .. } => "SnapshotDatabase",
            Step::DeleteDatabase { .. } => "DeleteDatabase",
            Step::DeleteLogGroup { .. } => "DeleteLogGroup",
            Step::StartBackupJob { .. } => "StartBackupJob",
            Step::StartRestoreJob { .. } => "StartRestoreJob",
            Step::RestoreDatabase { .. } => "RestoreDatabase",
            Step::RelocateRestoredFiles { .. } => "RelocateRestoredFiles",
        }
    }

    /// The name or id of the resource the step acts on.
    pub fn target(&self) -> &str {
        match self {
            Step::CreateLogGroup { name, .. }
            | Step::CreateService { name, .. }
            | Step::UpdateService { name, .. }
            | Step::DeleteService { name }
            | Step::DeleteLogGroup { name } => name,
            Step::CreateAccessPoint { root_path } => root_path,
            Step::DeleteAccessPoint { id } => id,
            Step::CreateDatabase { identifier, .. }
            | Step::ModifyDatabase { identifier, .. }
            | Step::StartDatabase { identifier }
            | Step::StopDatabase { identifier }
            | Step::DeleteDatabase { identifier, .. } => identifier,
            Step::SnapshotDatabase { snapshot_id, .. } => snapshot_id,
            Step::StartBackupJob { backup_id, .. } => backup_id,
            Step::StartRestoreJob { target_root, .. }
            | Step::RelocateRestoredFiles { target_root, .. } => target_root,
            Step::RestoreDatabase { identifier, .. } => identifier,
        }
    }

    /// Steps that destroy a resource. The planner emits them only for a deleted instance, or
    /// for data resources a completed restore superseded (after a snapshot of them).
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Step::DeleteService { .. }
                | Step::DeleteAccessPoint { .. }
                | Step::DeleteDatabase { .. }
                | Step::DeleteLogGroup { .. }
        )
    }
}

/// What a converging instance is waiting for; decides how soon to look again.
#[derive(Debug, Clone, Serialize, Deserialize, Copy, PartialEq, Eq, Hash)]
pub enum WaitingOn {
    /// RDS create / start / stop / modify / delete.
    Database,
    /// RDS snapshot.
    Snapshot,
    AccessPoint,
    /// ECS tasks starting, stopping or rolling.
    Tasks,
    /// ECS service draining before it disappears.
    Service,
    /// CloudWatch Logs: changes are immediate; look again soon.
    LogGroup,
}

/// An idempotency token for a create call, derived from the instance, its incarnation
/// (creation time: a deleted-and-recreated instance must not reuse its predecessor's
/// tokens) and the step's target, never from the clock, so a retried or restarted pass
/// sends the same token for the same resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ClientToken(String);

impl ClientToken {
    pub fn derive(key: &InstanceKey, incarnation: i64, step: &Step) -> Self {
        let mut h = Sha256::new();
        for part in [key.path().as_str(), step.name(), step.target()] {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        h.update(incarnation.to_be_bytes());
        let hex: String = h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The token of a repeated run of the same step that replaces `replaced` (a job the
    /// cloud forgot): see [`rerun_token`].
    pub fn rerun(&self, replaced: Option<&str>) -> Self {
        Self(rerun_token(&self.0, replaced))
    }
}

/// A token for a repeated run of a step replacing `replaced`: derived from the step's
/// token and the replaced id, so it is stable across retries and restarts, yet differs
/// from the token that returned the forgotten job. Without `replaced`: `token` itself.
pub fn rerun_token(token: &str, replaced: Option<&str>) -> String {
    let Some(replaced) = replaced else {
        return token.to_owned();
    };
    let mut h = Sha256::new();
    for part in [token, "rerun", replaced] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_deterministic_and_distinct() {
        let k = InstanceKey::from_strs("t1", "blog");
        let step = Step::CreateAccessPoint {
            root_path: "/tenants/t1/blog".into(),
        };
        let other = Step::CreateLogGroup {
            name: "x".into(),
            retention_days: 30,
        };
        let t = |inc, s: &Step| ClientToken::derive(&k, inc, s);
        assert_eq!(t(1, &step), t(1, &step));
        assert_ne!(
            t(1, &step),
            t(2, &step),
            "a new incarnation gets new tokens"
        );
        assert_ne!(t(1, &step), t(1, &other));
        assert_eq!(t(1, &step).as_str().len(), 32);
    }

    #[test]
    fn a_rerun_token_is_stable_and_differs_from_the_first() {
        let k = InstanceKey::from_strs("t1", "blog");
        let step = Step::RelocateRestoredFiles {
            restore_job_id: "J".into(),
            target_root: "/tenants/t1/blog/restore-0a1b2c3d".into(),
            replaces: None,
        };
        let first = ClientToken::derive(&k, 1, &step);
        assert_eq!(first.rerun(None), first);
        let again = first.rerun(Some("arn:task/1"));
        assert_eq!(again, first.rerun(Some("arn:task/1")));
        assert_ne!(again, first);
        assert_ne!(again, first.rerun(Some("arn:task/2")));
        assert_eq!(again.as_str().len(), 32);
    }

    #[test]
    fn db_states_round_trip_rds_words() {
        for w in [
            "creating",
            "available",
            "stopped",
            "backing-up",
            "maintenance",
        ] {
            assert_eq!(DbState::parse(w).as_str(), w);
        }
    }
}
