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

mod dynamodb;
mod embedded;
mod rules;

use std::time::Duration;

use async_trait::async_trait;

pub use dynamodb::{
    Created as TableCreated, DynamoStore, IndexShape, TableShape,
    table_shape as dynamodb_table_shape,
};
pub use embedded::EmbeddedStore;

use crate::model::{
    Backup, Event, Instance, InstanceKey, ReconcileRequest, Rejection, Status, TenantId, Timestamp,
};

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
    /// The writer's shard lease is gone or was taken over (its fencing token is stale).
    #[error("shard {shard}: fencing token {token} is no longer current")]
    Fenced { shard: u32, token: u64 },
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
    ///
    /// With a `fence`, the write happens only if the shard's lease still carries that
    /// fencing token (in the same atomic write); otherwise `Fenced`. A controller replica
    /// whose lease was taken over while it was paused can therefore never write.
    async fn write_status(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
        fence: Option<Fence>,
    ) -> StoreResult<()>;

    /// Records a reconcile-now request on each existing key; returns how many were marked.
    /// Does not change generation or resourceVersion.
    async fn request_reconcile(
        &self,
        keys: &[InstanceKey],
        request: &ReconcileRequest,
    ) -> StoreResult<usize>;

    /// Removes the record for good, and its events; `false` if it was not there. Its
    /// backups stay: they are the data kept for the retention period.
    async fn delete(&self, key: &InstanceKey) -> StoreResult<bool>;

    // ---- events: what the reconciler decided and did (issue 6) ------------------------

    /// Adds `events` (oldest first) to the instance's event log in one atomic write, by
    /// the rule of [`model::append_events`](crate::model::append_events): a repeat of the
    /// newest kept event is folded into it, and only the newest
    /// [`MAX_EVENTS`](crate::model::MAX_EVENTS) are kept. `NotFound` (and nothing written)
    /// if the instance does not exist, so no log outlives its instance. Empty `events`
    /// writes nothing. Events are bookkeeping: they change no spec, status, generation or
    /// resourceVersion, and appends from concurrent writers all land (none is lost).
    async fn append_events(&self, key: &InstanceKey, events: &[Event]) -> StoreResult<()>;

    /// The instance's kept events, oldest first; empty if it has none or does not exist.
    async fn list_events(&self, key: &InstanceKey) -> StoreResult<Vec<Event>>;

    /// `write_status`, then, if it succeeded, `append_events`: what a reconcile pass
    /// writes. The status write's errors are returned as they are, and then nothing is
    /// appended. A backend that can do both in one atomic write should override this (both
    /// stores do): a reader never sees a status without the events that explain
    /// it, and a pass costs one durable write instead of two. This default makes two writes;
    /// an error of the second is returned after the status is already written.
    async fn write_status_and_events(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
        fence: Option<Fence>,
        events: &[Event],
    ) -> StoreResult<()> {
        self.write_status(key, for_generation, status, fence)
            .await?;
        self.append_events(key, events).await
    }

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

    // ---- scale-out: shards, the pending index, leases, membership --------------------

    /// How many shards instances are split into (`shard_of`); fixed for a store's life.
    fn shards(&self) -> u32;

    /// Instances that need reconciling, at most `limit`: those whose `generation` is above
    /// `status.observedGeneration`, that have an unhandled reconcile request, or that have
    /// a backup PENDING or RUNNING. An instance leaves this index only when none of that
    /// holds any more (the status write that records convergence clears it).
    async fn pending(&self, limit: usize) -> StoreResult<Vec<PendingItem>>;

    /// The instances of one shard, in key order (a replica resyncs only its shards).
    async fn list_shard(&self, shard: u32, page: PageRequest) -> StoreResult<Page>;

    /// Takes the lease of `shard` for `holder` if it is free, expired, or already held by
    /// `holder`; `None` if someone else holds it. Taking over from another holder (or a
    /// first acquisition) issues a fencing token higher than any before for that shard;
    /// re-acquiring one's own lease keeps the token.
    async fn acquire_lease(
        &self,
        shard: u32,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Lease>>;

    /// Extends a lease still held with the same token; `None` if it was lost.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreResult<Option<Lease>>;

    /// Gives a lease up (graceful shutdown, rebalancing); a no-op if it was lost already.
    async fn release_lease(&self, lease: &Lease) -> StoreResult<()>;

    /// Every shard lease record (held, expired or released).
    async fn leases(&self) -> StoreResult<Vec<Lease>>;

    /// Records that `replica` is alive for `ttl` (membership, for rebalancing).
    async fn heartbeat(&self, replica: &str, ttl: Duration) -> StoreResult<()>;

    /// Replicas whose heartbeat has not expired, sorted.
    async fn replicas(&self) -> StoreResult<Vec<String>>;

    /// Removes a replica's heartbeat (graceful shutdown).
    async fn leave(&self, replica: &str) -> StoreResult<()>;
}

/// Shards by default: enough to spread over a few dozen replicas, few enough to poll.
pub const DEFAULT_SHARDS: u32 = 64;

/// The shard of an instance: a stable hash of its key (the same in every process and
/// version: FNV-1a of `tenant/instance`).
pub fn shard_of(key: &InstanceKey, shards: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.path().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

/// A shard lease: the right to reconcile the instances of one shard until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub shard: u32,
    /// Empty when released.
    pub holder: String,
    pub expires_at: Timestamp,
    /// Fencing token: rises whenever the lease changes hands; never reused for a shard.
    pub token: u64,
}

impl Lease {
    pub fn fence(&self) -> Fence {
        Fence {
            shard: self.shard,
            token: self.token,
        }
    }
}

/// What a fenced write presents: the shard lease its writer believes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub shard: u32,
    pub token: u64,
}

/// An entry of the pending index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingItem {
    pub key: InstanceKey,
    pub shard: u32,
    /// Changes on every write that makes the instance need reconciling (a spec change, a
    /// reconcile request, a new backup), so a poller can tell new work from work it
    /// already has in hand.
    pub marker: String,
}

#[derive(Debug, Clone, Default)]
pub struct BackupPageRequest {
    pub limit: usize,
    /// Exclusive: the last backup id of the previous page.
    pub after: Option<String>,
    pub active_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let k = InstanceKey::from_strs("t1", "blog");
        assert_eq!(shard_of(&k, 64), shard_of(&k, 64));
        // Pinned: changing the hash would move every instance to another shard.
        assert_eq!(shard_of(&k, 64), 11);
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            let k = InstanceKey::from_strs("t", &format!("i{i}"));
            counts[shard_of(&k, 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
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
