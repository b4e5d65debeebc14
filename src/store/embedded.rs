//! The embedded `Store`: every instance and backup record in one redb file,
//! `<dir>/wpfleet.redb`, so a single controller runs with no database to set up.
//!
//! Layout:
//! * table `instances`: `tenant/instance` (`InstanceKey::path`) → the record as JSON. Ids
//!   are `[a-z0-9-]`, so `/` separates them unambiguously and one tenant's records are
//!   exactly the keys in `["tenant/", "tenant0")` (`0` is the byte after `/`): listing a
//!   tenant is one range scan that cannot reach tenant `tenant-x` or `tenant0`.
//! * table `backups`: `tenant/instance/backupId` → the `Backup` as JSON. Backup ids are
//!   `bk-` + hex (no `/`; `create_backup` refuses one that has a `/`), so one instance's
//!   backups are exactly the keys in `["tenant/instance/", "tenant/instance0")`, the same
//!   trick as a tenant: the range cannot reach instance `instance-x` or `instance0`. Backup
//!   ids sort by creation time, so key order is creation order.
//! * table `active_backups`: the keys of `backups` whose status is PENDING or RUNNING
//!   (value `()`), so listing an instance's in-flight backups, which the reconciler does on
//!   every pass, reads only in-flight records however many finished ones pile up.
//! * table `events`: `tenant/instance` → the instance's kept events as one JSON array
//!   (at most `MAX_EVENTS`, so one small value): an append is one read-modify-write in a
//!   write transaction, and reading an instance never decodes its events.
//! * table `meta`: the `resourceVersion` counter.
//!
//! Invariants:
//! * every store call is one redb transaction, and a write returns only after its commit is
//!   durable (`Durability::Immediate`, the default: fsync before `commit` returns), so an
//!   acknowledged write survives `kill -9` and power loss;
//! * `resourceVersion` is the decimal value of a persisted counter taken by each write of
//!   spec or metadata (create, a changed update). It is never reused, not even after a
//!   delete and re-create of the same key, so a stale `If-Match` can never match again.
//!   Status writes and reconcile requests leave it alone;
//! * `update` runs the caller's mutation inside the write transaction on the record as
//!   stored. redb admits one write transaction at a time, so concurrent updates serialize
//!   and none is lost, and a status written meanwhile (which does not change
//!   `resourceVersion`) cannot be overwritten with an older copy;
//! * `active_backups` holds exactly the keys of the non-final records of `backups`: every
//!   write of a backup updates both tables in the same transaction;
//! * `create_backup` checks the instance (exists, deletion not requested) and the id (free)
//!   in the transaction that inserts the backup, so a backup never starts on an instance
//!   whose deletion was requested first;
//! * a backup only moves forward (PENDING → RUNNING → COMPLETED | FAILED), and a final one
//!   is never written again: it describes data that exists in the cloud;
//! * `events` has an entry only for an existing instance: `append_events` checks the
//!   instance in its transaction, and `delete` removes the entry with the record;
//! * deleting an instance record leaves its backups (and their index entries) in place:
//!   they are the data kept after the instance is gone. They are keyed by instance key, so
//!   an instance re-created under the same key lists them as its own.
//!
//! Why redb: pure Rust (no C toolchain, unlike bundled SQLite), ACID with checksummed
//! commits, and one writer at a time is plenty for a controller's write rate (a few writes
//! per instance per minute). redb is blocking, so each transaction runs on
//! `spawn_blocking`.
//!
//! Crash recovery: redb repairs a file that was not closed cleanly when it is next opened,
//! by walking every committed tree to verify checksums and rebuild its allocator state.
//! That is cheap at our size: measured after `kill -9` on a 2-core VM, 37 ms for 10,000
//! records of 2 KiB and 350 ms for 100,000. We do not enable `set_quick_repair`: it saves
//! the allocator state in every commit and forces a two-phase commit (a second fsync); in
//! the same measurement it made each commit ~55% slower (0.26 → 0.41 ms), taxing every
//! write to speed up a rare and already short startup. Nor `set_check_integrity_on_open`,
//! which re-reads the whole file on every start to guard only against corruption from
//! outside redb. The repair callback logs, so an operator can tell the last process died.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use redb::{
    Builder, Database, ReadableDatabase, ReadableTable, RepairSession, Table, TableDefinition,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::model::{self, BackupStatus, FieldError};

const FILE_NAME: &str = "wpfleet.redb";

/// redb's own page cache. Its default (1 GiB) kept every page written in memory: storing
/// 100,000 instances grew RSS by ~400 MiB (`wpfleet bench memory`, docs/PERFORMANCE.md).
/// Pages not cached here are still read from the OS page cache, which is not our RSS.
const CACHE_BYTES: usize = 32 * 1024 * 1024;
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const BACKUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("backups");
const ACTIVE_BACKUPS: TableDefinition<&str, ()> = TableDefinition::new("active_backups");
const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VERSION_COUNTER: &str = "resourceVersion";

type Instances<'txn> = Table<'txn, &'static str, &'static [u8]>;
type Backups<'txn> = Table<'txn, &'static str, &'static [u8]>;
type ActiveBackups<'txn> = Table<'txn, &'static str, ()>;

pub struct EmbeddedStore {
    /// Shared with the blocking threads the transactions run on.
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens (or creates) the database file `wpfleet.redb` under `dir`, creating `dir` if
    /// needed. Blocking: after a crash this is where redb repairs the file.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback(log_repair(path.display().to_string()))
            .create(&path)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        // Read transactions cannot open a table that was never created.
        let txn = db.begin_write().or_unavailable()?;
        txn.open_table(INSTANCES).or_unavailable()?;
        txn.open_table(BACKUPS).or_unavailable()?;
        txn.open_table(ACTIVE_BACKUPS).or_unavailable()?;
        txn.open_table(EVENTS).or_unavailable()?;
        txn.open_table(META).or_unavailable()?;
        txn.commit().or_unavailable()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Starts `f` on a blocking thread now, whether or not the handle is awaited yet.
    fn spawn<T, F>(&self, f: F) -> JoinHandle<StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
    }

    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    {
        join(self.spawn(f)).await
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &InstanceKey) -> StoreResult<Option<Instance>> {
        let path = key.path();
        self.run(move |db| {
            let txn = db.begin_read().or_unavailable()?;
            read(&txn.open_table(INSTANCES).or_unavailable()?, &path)
        })
        .await
    }

    async fn list(&self, tenant: Option<&TenantId>, page: PageRequest) -> StoreResult<Page> {
        let (lower, upper) = key_range(tenant, page.after.as_ref());
        // A zero limit could never make progress through the pages.
        let limit = page.limit.max(1);
        self.run(move |db| scan(db, lower, upper, limit)).await
    }

    async fn create(&self, instance: Instance) -> StoreResult<Instance> {
        self.run(move |db| create_txn(db, instance)).await
    }

    async fn update(
        &self,
        key: &InstanceKey,
        expected_version: Option<&str>,
        mutate: Mutation<'_>,
    ) -> StoreResult<Updated> {
        // `mutate` borrows from the caller, so it cannot move to the blocking thread. The
        // transaction sends the stored record here and waits, holding the write lock, for
        // the mutated one. If this future is dropped or `mutate` panics, the reply sender is
        // dropped and the transaction aborts.
        let (record_tx, record_rx) = oneshot::channel();
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let key = key.clone();
        let expected = expected_version.map(str::to_owned);
        let txn =
            self.spawn(move |db| update_txn(db, &key, expected.as_deref(), record_tx, reply_rx));
        // An error means the transaction ended without asking (not found, stale version,
        // database error); `join` returns that error.
        if let Ok(current) = record_rx.await {
            // A failed send means the transaction already gave up; `join` says why.
            let _ = reply_tx.send(apply(&current, mutate));
        }
        join(txn).await
    }

    async fn write_status(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
        _fence: Option<Fence>,
    ) -> StoreResult<()> {
        let key = key.clone();
        self.run(move |db| write_status_txn(db, &key, for_generation, status, &[]))
            .await
    }

    /// One transaction (one fsync) for both.
    async fn write_status_and_events(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
        _fence: Option<Fence>,
        events: &[Event],
    ) -> StoreResult<()> {
        let key = key.clone();
        let events = events.to_vec();
        self.run(move |db| write_status_txn(db, &key, for_generation, status, &events))
            .await
    }

    async fn request_reconcile(
        &self,
        keys: &[InstanceKey],
        request: &ReconcileRequest,
    ) -> StoreResult<usize> {
        // A key named twice is still one instance marked.
        let paths: BTreeSet<String> = keys.iter().map(InstanceKey::path).collect();
        let request = request.clone();
        self.run(move |db| request_reconcile_txn(db, &paths, request))
            .await
    }

    /// Removes only the instance record: its backups stay listable (see the module doc).
    async fn delete(&self, key: &InstanceKey) -> StoreResult<bool> {
        let path = key.path();
        self.run(move |db| {
            let txn = db.begin_write().or_unavailable()?;
            let existed = txn
                .open_table(INSTANCES)
                .or_unavailable()?
                .remove(path.as_str())
                .or_unavailable()?
                .is_some();
            if existed {
                txn.open_table(EVENTS)
                    .or_unavailable()?
                    .remove(path.as_str())
                    .or_unavailable()?;
                txn.commit().or_unavailable()?;
            }
            Ok(existed)
        })
        .await
    }

    async fn create_backup(&self, backup: Backup) -> StoreResult<Backup> {
        self.run(move |db| create_backup_txn(db, backup)).await
    }

    async fn get_backup(&self, key: &InstanceKey, backup_id: &str) -> StoreResult<Option<Backup>> {
        let path = backup_path(key, backup_id);
        self.run(move |db| {
            let txn = db.begin_read().or_unavailable()?;
            read_backup(&txn.open_table(BACKUPS).or_unavailable()?, &path)
        })
        .await
    }

    async fn list_backups(
        &self,
        key: &InstanceKey,
        page: BackupPageRequest,
    ) -> StoreResult<BackupPage> {
        let key = key.clone();
        self.run(move |db| scan_backups(db, &key, page)).await
    }

    async fn update_backup(&self, backup: &Backup) -> StoreResult<()> {
        let backup = backup.clone();
        self.run(move |db| update_backup_txn(db, backup)).await
    }

    async fn append_events(&self, key: &InstanceKey, events: &[Event]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let key = key.clone();
        let events = events.to_vec();
        self.run(move |db| append_events_txn(db, &key, &events))
            .await
    }

    async fn list_events(&self, key: &InstanceKey) -> StoreResult<Vec<Event>> {
        let path = key.path();
        self.run(move |db| {
            let txn = db.begin_read().or_unavailable()?;
            read_events(&txn.open_table(EVENTS).or_unavailable()?, &path)
        })
        .await
    }

    // TEMPORARY (lead): scale-out methods, being implemented.
    fn shards(&self) -> u32 {
        DEFAULT_SHARDS
    }
    async fn pending(&self, _limit: usize) -> StoreResult<Vec<PendingItem>> {
        Ok(vec![])
    }
    async fn list_shard(&self, _shard: u32, _page: PageRequest) -> StoreResult<Page> {
        Ok(Page {
            items: vec![],
            next: None,
        })
    }
    async fn acquire_lease(
        &self,
        _s: u32,
        _h: &str,
        _t: std::time::Duration,
    ) -> StoreResult<Option<Lease>> {
        Ok(None)
    }
    async fn renew_lease(&self, _l: &Lease, _t: std::time::Duration) -> StoreResult<Option<Lease>> {
        Ok(None)
    }
    async fn release_lease(&self, _l: &Lease) -> StoreResult<()> {
        Ok(())
    }
    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        Ok(vec![])
    }
    async fn heartbeat(&self, _r: &str, _t: std::time::Duration) -> StoreResult<()> {
        Ok(())
    }
    async fn replicas(&self) -> StoreResult<Vec<String>> {
        Ok(vec![])
    }
    async fn leave(&self, _r: &str) -> StoreResult<()> {
        Ok(())
    }
}

/// The keys a listing covers; see the module doc for why a tenant is `[t/, t0)`.
fn key_range(
    tenant: Option<&TenantId>,
    after: Option<&InstanceKey>,
) -> (Bound<String>, Bound<String>) {
    let (mut lower, upper) = match tenant {
        Some(t) => (
            Bound::Included(format!("{t}/")),
            Bound::Excluded(format!("{t}0")),
        ),
        None => (Bound::Unbounded, Bound::Unbounded),
    };
    if let Some(after) = after {
        let after = after.path();
        let after_is_higher = match &lower {
            Bound::Included(l) => after >= *l,
            _ => true,
        };
        if after_is_higher {
            lower = Bound::Excluded(after);
        }
    }
    (lower, upper)
}

/// Up to `limit` records in `(lower, upper)`, and the cursor if more follow.
fn scan(
    db: &Database,
    lower: Bound<String>,
    upper: Bound<String>,
    limit: usize,
) -> StoreResult<Page> {
    let empty = Page {
        items: vec![],
        next: None,
    };
    // A cursor past the tenant's last key gives lower > upper, which is no range at all.
    if let (Bound::Excluded(l) | Bound::Included(l), Bound::Excluded(u)) = (&lower, &upper)
        && l >= u
    {
        return Ok(empty);
    }
    let txn = db.begin_read().or_unavailable()?;
    let table = txn.open_table(INSTANCES).or_unavailable()?;
    let range = (
        lower.as_ref().map(String::as_str),
        upper.as_ref().map(String::as_str),
    );
    let mut items = Vec::new();
    for entry in table.range::<&str>(range).or_unavailable()? {
        let (key, value) = entry.or_unavailable()?;
        if items.len() == limit {
            let next = items.last().map(Instance::key);
            return Ok(Page { items, next });
        }
        items.push(decode(key.value(), value.value())?);
    }
    Ok(Page { items, ..empty })
}

fn create_txn(db: &Database, mut instance: Instance) -> StoreResult<Instance> {
    let path = instance.key().path();
    let txn = db.begin_write().or_unavailable()?;
    {
        let mut table = txn.open_table(INSTANCES).or_unavailable()?;
        if let Some(existing) = read(&table, &path)? {
            return Err(StoreError::AlreadyExists(Box::new(existing)));
        }
        instance.metadata.generation = 1;
        instance.metadata.resource_version = next_version(&txn)?;
        // The caller chose the creation time; a new record has not been updated since.
        instance.metadata.updated_at = instance.metadata.created_at;
        put(&mut table, &instance)?;
    }
    txn.commit().or_unavailable()?;
    Ok(instance)
}

/// The blocking half of `update`: reads the record, hands it to the caller's mutation
/// through `record_tx`, and writes what comes back on `reply_rx`.
fn update_txn(
    db: &Database,
    key: &InstanceKey,
    expected_version: Option<&str>,
    record_tx: oneshot::Sender<Instance>,
    reply_rx: mpsc::Receiver<Result<Option<Instance>, Rejection>>,
) -> StoreResult<Updated> {
    let txn = db.begin_write().or_unavailable()?;
    let mut table = txn.open_table(INSTANCES).or_unavailable()?;
    let current = read(&table, &key.path())?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
    if let Some(expected) = expected_version
        && expected != current.metadata.resource_version
    {
        return Err(StoreError::PreconditionFailed(Box::new(current)));
    }
    let caller_gone = || unavailable("update abandoned by its caller");
    record_tx.send(current.clone()).map_err(|_| caller_gone())?;
    let Some(mut after) = reply_rx
        .recv()
        .map_err(|_| caller_gone())?
        .map_err(StoreError::Rejected)?
    else {
        // Dropping the transaction without a commit writes nothing.
        return Ok(Updated {
            instance: current,
            change: Change::Unchanged,
        });
    };
    after.metadata.resource_version = next_version(&txn)?;
    put(&mut table, &after)?;
    drop(table);
    txn.commit().or_unavailable()?;
    Ok(Updated {
        instance: after,
        change: Change::Changed,
    })
}

/// Runs the caller's mutation on a copy of `before`: `None` if it reports no change,
/// otherwise the record to store, with the fields only the store maintains restored.
fn apply(before: &Instance, mutate: Mutation<'_>) -> Result<Option<Instance>, Rejection> {
    let mut after = before.clone();
    if mutate(&mut after)? == Change::Unchanged {
        return Ok(None);
    }
    // Defensive: a mutation is written against spec and metadata; these are not its to set.
    after.tenant_id = before.tenant_id.clone();
    after.instance_id = before.instance_id.clone();
    after.status = before.status.clone();
    let (b, a) = (&before.metadata, &mut after.metadata);
    a.resource_version = b.resource_version.clone();
    a.created_at = b.created_at;
    // Once requested, a deletion stands (model invariant): it is never unset or moved.
    if b.deletion_requested_at.is_some() {
        a.deletion_requested_at = b.deletion_requested_at;
    }
    let bump = u64::from(desired_state_changed(before, &after));
    after.metadata.generation = before.metadata.generation + bump;
    after.metadata.updated_at = model::now();
    Ok(Some(after))
}

/// Writes the status and appends `events` in one transaction.
fn write_status_txn(
    db: &Database,
    key: &InstanceKey,
    for_generation: u64,
    status: Status,
    events: &[Event],
) -> StoreResult<()> {
    let txn = db.begin_write().or_unavailable()?;
    {
        let mut table = txn.open_table(INSTANCES).or_unavailable()?;
        let path = key.path();
        let mut instance = read(&table, &path)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let current = instance.metadata.generation;
        if current < for_generation {
            return Err(StoreError::StaleStatus {
                for_generation,
                current,
            });
        }
        let handled = instance
            .metadata
            .reconcile_request
            .as_ref()
            .is_some_and(|r| status.last_handled_reconcile_request.as_ref() == Some(&r.request_id));
        if handled {
            instance.metadata.reconcile_request = None;
        }
        instance.status = status;
        put(&mut table, &instance)?;
        if !events.is_empty() {
            append_to_log(&txn, &path, events)?;
        }
    }
    txn.commit().or_unavailable()
}

fn request_reconcile_txn(
    db: &Database,
    paths: &BTreeSet<String>,
    request: ReconcileRequest,
) -> StoreResult<usize> {
    let txn = db.begin_write().or_unavailable()?;
    let mut marked = 0;
    {
        let mut table = txn.open_table(INSTANCES).or_unavailable()?;
        for path in paths {
            if let Some(mut instance) = read(&table, path)? {
                instance.metadata.reconcile_request = Some(request.clone());
                put(&mut table, &instance)?;
                marked += 1;
            }
        }
    }
    if marked > 0 {
        txn.commit().or_unavailable()?;
    }
    Ok(marked)
}

fn append_events_txn(db: &Database, key: &InstanceKey, new: &[Event]) -> StoreResult<()> {
    let path = key.path();
    let txn = db.begin_write().or_unavailable()?;
    {
        let instances = txn.open_table(INSTANCES).or_unavailable()?;
        if instances.get(path.as_str()).or_unavailable()?.is_none() {
            return Err(StoreError::NotFound(key.clone()));
        }
        append_to_log(&txn, &path, new)?;
    }
    txn.commit().or_unavailable()
}

/// Appends to an instance's log inside the caller's write transaction.
fn append_to_log(txn: &WriteTransaction, path: &str, new: &[Event]) -> StoreResult<()> {
    let mut table = txn.open_table(EVENTS).or_unavailable()?;
    let mut log = read_events(&table, path)?;
    model::append_events(&mut log, new);
    let bytes = serde_json::to_vec(&log).or_unavailable()?;
    table.insert(path, bytes.as_slice()).or_unavailable()?;
    Ok(())
}

fn read_events(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &str,
) -> StoreResult<Vec<Event>> {
    match table.get(path).or_unavailable()? {
        Some(value) => decode(path, value.value()),
        None => Ok(vec![]),
    }
}

/// `tenant/instance/backupId`: the key of a backup in `backups` and `active_backups`.
fn backup_path(key: &InstanceKey, backup_id: &str) -> String {
    format!("{}/{backup_id}", key.path())
}

/// A backup id is the last segment of its key, so it must be one segment. (The API accepts
/// only `model::is_backup_id` ids; this guards the key layout, not the id format.)
fn check_backup_id(backup_id: &str) -> StoreResult<()> {
    if backup_id.is_empty() || backup_id.contains('/') {
        let error = FieldError::new("backupId", "must be non-empty and must not contain '/'");
        return Err(StoreError::Rejected(Rejection::Invalid(vec![error])));
    }
    Ok(())
}

/// PENDING → RUNNING → COMPLETED | FAILED: a backup's status may only move to a higher rank.
fn backup_rank(status: BackupStatus) -> u8 {
    match status {
        BackupStatus::Pending => 0,
        BackupStatus::Running => 1,
        BackupStatus::Completed | BackupStatus::Failed => 2,
    }
}

fn create_backup_txn(db: &Database, backup: Backup) -> StoreResult<Backup> {
    check_backup_id(&backup.backup_id)?;
    let key = backup.key();
    let path = backup_path(&key, &backup.backup_id);
    let txn = db.begin_write().or_unavailable()?;
    {
        let instances = txn.open_table(INSTANCES).or_unavailable()?;
        let instance =
            read(&instances, &key.path())?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
        if instance.metadata.deletion_requested_at.is_some() {
            return Err(StoreError::Rejected(Rejection::InvalidTransition(format!(
                "instance {key} is being deleted; a deleted instance cannot be backed up"
            ))));
        }
        let mut backups = txn.open_table(BACKUPS).or_unavailable()?;
        if backups.get(path.as_str()).or_unavailable()?.is_some() {
            return Err(StoreError::Conflict(format!(
                "backup {} of instance {key} already exists",
                backup.backup_id
            )));
        }
        let mut active = txn.open_table(ACTIVE_BACKUPS).or_unavailable()?;
        put_backup(&mut backups, &mut active, &path, &backup)?;
    }
    txn.commit().or_unavailable()?;
    Ok(backup)
}

fn update_backup_txn(db: &Database, mut backup: Backup) -> StoreResult<()> {
    let key = backup.key();
    let path = backup_path(&key, &backup.backup_id);
    let txn = db.begin_write().or_unavailable()?;
    {
        let mut backups = txn.open_table(BACKUPS).or_unavailable()?;
        let stored = read_backup(&backups, &path)?
            .ok_or_else(|| StoreError::BackupNotFound(key.clone(), backup.backup_id.clone()))?;
        let id = &stored.backup_id;
        if stored.status.is_final() {
            return Err(StoreError::Conflict(format!(
                "backup {id} of instance {key} is {}; a finished backup is never changed",
                stored.status.as_str()
            )));
        }
        if backup_rank(backup.status) < backup_rank(stored.status) {
            return Err(StoreError::Conflict(format!(
                "backup {id} of instance {key} cannot go back from {} to {}",
                stored.status.as_str(),
                backup.status.as_str()
            )));
        }
        // Defensive: identity and request time are the stored record's, whatever the caller
        // sent. (Identity already matches: it is what the record was looked up by.)
        backup.tenant_id = stored.tenant_id.clone();
        backup.instance_id = stored.instance_id.clone();
        backup.backup_id = stored.backup_id.clone();
        backup.requested_at = stored.requested_at;
        if backup == stored {
            // Nothing to write; dropping the transaction spares a commit (and its fsync).
            return Ok(());
        }
        let mut active = txn.open_table(ACTIVE_BACKUPS).or_unavailable()?;
        put_backup(&mut backups, &mut active, &path, &backup)?;
    }
    txn.commit().or_unavailable()
}

/// One page of an instance's backups in key (= id = creation) order. With `active_only` the
/// keys come from `active_backups`, and only those records are read from `backups`.
fn scan_backups(
    db: &Database,
    key: &InstanceKey,
    page: BackupPageRequest,
) -> StoreResult<BackupPage> {
    let empty = BackupPage {
        items: vec![],
        next: None,
    };
    // See the module doc: `t/i/` up to (not including) `t/i0` is exactly instance `t/i`.
    let upper = format!("{}0", key.path());
    let lower = match &page.after {
        Some(after) => Bound::Excluded(backup_path(key, after)),
        None => Bound::Included(format!("{}/", key.path())),
    };
    // A cursor past the instance's last key would make no range at all.
    if let Bound::Excluded(l) = &lower
        && *l >= upper
    {
        return Ok(empty);
    }
    // A zero limit could never make progress through the pages.
    let limit = page.limit.max(1);
    let range = (
        lower.as_ref().map(String::as_str),
        Bound::Excluded(upper.as_str()),
    );
    let more = |items: Vec<Backup>| {
        let next = items.last().map(|b: &Backup| b.backup_id.clone());
        Ok(BackupPage { items, next })
    };
    let mut items = Vec::new();
    let txn = db.begin_read().or_unavailable()?;
    let backups = txn.open_table(BACKUPS).or_unavailable()?;
    if page.active_only {
        let active = txn.open_table(ACTIVE_BACKUPS).or_unavailable()?;
        for entry in active.range::<&str>(range).or_unavailable()? {
            let (path, _) = entry.or_unavailable()?;
            if items.len() == limit {
                return more(items);
            }
            let path = path.value();
            let backup = read_backup(&backups, path)?.ok_or_else(|| {
                unavailable(format!("active backup {path} has no record in `backups`"))
            })?;
            items.push(backup);
        }
    } else {
        for entry in backups.range::<&str>(range).or_unavailable()? {
            let (path, value) = entry.or_unavailable()?;
            if items.len() == limit {
                return more(items);
            }
            items.push(decode(path.value(), value.value())?);
        }
    }
    Ok(BackupPage { items, ..empty })
}

/// Writes a backup record and keeps `active_backups` in step with its status.
fn put_backup(
    backups: &mut Backups<'_>,
    active: &mut ActiveBackups<'_>,
    path: &str,
    backup: &Backup,
) -> StoreResult<()> {
    let bytes = serde_json::to_vec(backup).or_unavailable()?;
    backups.insert(path, bytes.as_slice()).or_unavailable()?;
    if backup.status.is_final() {
        active.remove(path).or_unavailable()?;
    } else {
        active.insert(path, ()).or_unavailable()?;
    }
    Ok(())
}

fn read_backup(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &str,
) -> StoreResult<Option<Backup>> {
    match table.get(path).or_unavailable()? {
        Some(value) => decode(path, value.value()).map(Some),
        None => Ok(None),
    }
}

/// Takes the next `resourceVersion` inside the caller's write transaction.
fn next_version(txn: &WriteTransaction) -> StoreResult<String> {
    let mut meta = txn.open_table(META).or_unavailable()?;
    let last = meta
        .get(VERSION_COUNTER)
        .or_unavailable()?
        .map_or(0, |v| v.value());
    meta.insert(VERSION_COUNTER, last + 1).or_unavailable()?;
    Ok((last + 1).to_string())
}

fn read(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &str,
) -> StoreResult<Option<Instance>> {
    match table.get(path).or_unavailable()? {
        Some(value) => decode(path, value.value()).map(Some),
        None => Ok(None),
    }
}

fn put(table: &mut Instances<'_>, instance: &Instance) -> StoreResult<()> {
    let bytes = serde_json::to_vec(instance).or_unavailable()?;
    table
        .insert(instance.key().path().as_str(), bytes.as_slice())
        .or_unavailable()?;
    Ok(())
}

/// A record that does not parse is reported, never a panic: one bad record must not take
/// the controller down.
fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| unavailable(format!("record {path} is unreadable: {e}")))
}

async fn join<T>(handle: JoinHandle<StoreResult<T>>) -> StoreResult<T> {
    handle
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
}

fn log_repair(path: String) -> impl Fn(&mut RepairSession) + 'static {
    let warned = AtomicBool::new(false);
    move |session| {
        if !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(%path, "store was not shut down cleanly; repairing it");
        }
        tracing::debug!(progress = session.progress(), "repairing the store");
    }
}

fn unavailable(message: impl Into<String>) -> StoreError {
    StoreError::Unavailable(message.into())
}

/// Every redb or encoding failure means the same to a caller: the store cannot serve
/// this call. The message is for the logs.
trait OrUnavailable<T> {
    fn or_unavailable(self) -> StoreResult<T>;
}

impl<T, E: Display> OrUnavailable<T> for Result<T, E> {
    fn or_unavailable(self) -> StoreResult<T> {
        self.map_err(|e| unavailable(e.to_string()))
    }
}
