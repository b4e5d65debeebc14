//! The `Store`: the only place desired state and status live.
//!
//! Every write is conditional, so concurrent writers (API handlers, reconcile passes, other
//! replicas) never lose each other's changes:
//! * `create` fails if the key exists;
//! * `update` is a read-modify-write that the store retries internally on a concurrent
//!   change, and that fails with `PreconditionFailed` if the caller pinned a
//!   `resourceVersion` that is no longer current;
//! * `write_status` replaces only `status`, so it cannot clobber a newer spec.
//!
//! The store, not the caller, maintains `generation`, `resourceVersion` and `updatedAt`.

mod embedded;

use async_trait::async_trait;

pub use embedded::EmbeddedStore;

use crate::model::{Backup, Instance, InstanceKey, ReconcileRequest, Rejection, Status, TenantId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("instance {0} not found")]
    NotFound(InstanceKey),
    #[error("instance {} already exists", .0.key())]
    AlreadyExists(Box<Instance>),
    /// The caller's expected resourceVersion is stale; carries the current record.
    #[error("resourceVersion does not match (current is {})", .0.metadata.resource_version)]
    PreconditionFailed(Box<Instance>),
    /// A status write for a generation the record has never had (the record was replaced).
    #[error("status is for generation {for_generation} but the record is at {current}")]
    StaleStatus { for_generation: u64, current: u64 },
    #[error("backup {1} of instance {0} not found")]
    BackupNotFound(InstanceKey, String),
    /// A write that would undo what is final (e.g. change a COMPLETED backup).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The mutation refused the change; nothing was written.
    #[error(transparent)]
    Rejected(Rejection),
    /// The backing database failed. The message is for logs, not for API users.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Whether a mutation changed the desired state. `Unchanged` writes nothing and keeps
/// generation and resourceVersion, which is what makes re-applying a manifest a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Changed,
    Unchanged,
}

/// A mutation of spec / metadata. It may run more than once (a store retries it on a
/// concurrent write), so it must be a pure function of the record it is given.
pub type Mutation<'a> = &'a (dyn Fn(&mut Instance) -> Result<Change, Rejection> + Send + Sync);

/// A page request: at most `limit` items after the key `after` (exclusive), in key order.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub after: Option<InstanceKey>,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Instance>,
    /// The key to pass as `after` for the next page; `None` on the last page.
    pub next: Option<InstanceKey>,
}

/// The outcome of an update: the record as it is now, and whether this call changed it.
#[derive(Debug, Clone)]
pub struct Updated {
    pub instance: Instance,
    pub change: Change,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &InstanceKey) -> StoreResult<Option<Instance>>;

    /// Instances in key order, of one tenant or of all.
    async fn list(&self, tenant: Option<&TenantId>, page: PageRequest) -> StoreResult<Page>;

    /// Inserts a new record; `AlreadyExists` (with the existing record) if the key is taken.
    /// The store sets generation 1, resourceVersion and the timestamps.
    async fn create(&self, instance: Instance) -> StoreResult<Instance>;

    /// Applies `mutate` to the current record. With `expected_version`, fails with
    /// `PreconditionFailed` unless the record's resourceVersion equals it.
    /// On `Changed`, bumps generation if spec or deletionRequestedAt changed, and always
    /// bumps resourceVersion and updatedAt.
    async fn update(
        &self,
        key: &InstanceKey,
        expected_version: Option<&str>,
        mutate: Mutation<'_>,
    ) -> StoreResult<Updated>;

    /// Replaces the status of the record, read at `for_generation` by a reconcile pass.
    /// Never touches spec or metadata (except clearing a reconcile request the status
    /// reports as handled). `StaleStatus` if the record's generation is lower than
    /// `for_generation`, i.e. it was deleted and created again meanwhile.
    async fn write_status(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
    ) -> StoreResult<()>;

    /// Records a reconcile-now request on each existing key; returns how many were marked.
    /// Does not change generation or resourceVersion.
    async fn request_reconcile(
        &self,
        keys: &[InstanceKey],
        request: &ReconcileRequest,
    ) -> StoreResult<usize>;

    /// Removes the record for good; `false` if it was not there. Its backups stay: they
    /// are the data kept for the retention period.
    async fn delete(&self, key: &InstanceKey) -> StoreResult<bool>;

    /// Inserts a new backup record of an existing instance, atomically checking the
    /// instance: `NotFound` if it does not exist, `Rejected(InvalidTransition)` if its
    /// deletion was requested, `Conflict` if the backup id is taken.
    async fn create_backup(&self, backup: Backup) -> StoreResult<Backup>;

    async fn get_backup(&self, key: &InstanceKey, backup_id: &str) -> StoreResult<Option<Backup>>;

    /// An instance's backups in id order (oldest first). With `active_only`, only PENDING
    /// and RUNNING ones, found without reading finished records (the reconciler asks on
    /// every pass).
    async fn list_backups(
        &self,
        key: &InstanceKey,
        page: BackupPageRequest,
    ) -> StoreResult<BackupPage>;

    /// Replaces a backup record (the reconciler's progress). `BackupNotFound` if absent;
    /// `Conflict` if the stored record is already final (COMPLETED/FAILED are never undone).
    async fn update_backup(&self, backup: &Backup) -> StoreResult<()>;
}

#[derive(Debug, Clone, Default)]
pub struct BackupPageRequest {
    pub limit: usize,
    /// Exclusive: the last backup id of the previous page.
    pub after: Option<String>,
    pub active_only: bool,
}

#[derive(Debug, Clone)]
pub struct BackupPage {
    pub items: Vec<Backup>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Which fields of a record define "the desired state changed" (and so a new generation).
pub(crate) fn desired_state_changed(before: &Instance, after: &Instance) -> bool {
    before.spec != after.spec
        || before.metadata.deletion_requested_at != after.metadata.deletion_requested_at
}
