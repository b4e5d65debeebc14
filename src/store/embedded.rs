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
//! * table `meta`: the `resourceVersion` counter and the layout version (`schema`).
//! * table `pending`: the pending index, `tenant/instance` → `{shard, marker}` for every
//!   instance that needs reconciling (`rules::needs_reconcile`), maintained in the
//!   transaction of each write that changes it.
//! * table `shard_index`: `(shard, tenant/instance)` → `()`, so `list_shard` reads only
//!   the shard's records, in key order.
//! * table `leases`: shard → its `Lease` as JSON (kept after release: the fencing token
//!   must never go back); table `replicas`: replica id → heartbeat expiry (epoch ms).
//!   Leases matter only if several processes share a store, which a redb file cannot; they
//!   are here so the one contract suite holds for every backend.
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
//! * `pending` and `shard_index` change in the transaction of the instance write that
//!   changes them; a file from before they existed gets them rebuilt when it is opened;
//! * a fenced status write checks the lease in its own transaction, so it cannot land
//!   after a takeover;
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
use std::time::Duration;

use async_trait::async_trait;
use redb::{
    Builder, Database, ReadableDatabase, ReadableTable, RepairSession, Table, TableDefinition,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::rules::{self, fresh_token};
use super::*;
use crate::model::{self, FieldError};

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
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
const SHARD_INDEX: TableDefinition<(u32, &str), ()> = TableDefinition::new("shard_index");
const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("leases");
const REPLICAS: TableDefinition<&str, i64> = TableDefinition::new("replicas");
const VERSION_COUNTER: &str = "resourceVersion";
/// `meta` key of the layout version; 2 added `pending` and `shard_index`.
const SCHEMA: &str = "schema";
const SCHEMA_VERSION: u64 = 2;

/// A `pending` value.
#[derive(Debug, Serialize, Deserialize)]
struct PendingEntry {
    shard: u32,
    marker: String,
}

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
        txn.open_table(PENDING).or_unavailable()?;
        txn.open_table(SHARD_INDEX).or_unavailable()?;
        txn.open_table(LEASES).or_unavailable()?;
        txn.open_table(REPLICAS).or_unavailable()?;
        upgrade(&txn)?;
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
            let _ = reply_tx.send(rules::apply(&current, mutate));
        }
        join(txn).await
    }

    async fn write_status(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
        fence: Option<Fence>,
    ) -> StoreResult<()> {
        let key = key.clone();
        self.run(move |db| write_status_txn(db, &key, for_generation, status, fence, &[]))
            .await
    }

    /// One transaction (one fsync) for both, fenced like `write_status`.
    async fn write_status_and_events(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
        fence: Option<Fence>,
        events: &[Event],
    ) -> StoreResult<()> {
        let key = key.clone();
        let events = events.to_vec();
        self.run(move |db| write_status_txn(db, &key, for_generation, status, fence, &events))
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
        let shard = shard_of(key, DEFAULT_SHARDS);
        self.run(move |db| {
            let txn = db.begin_write().or_unavailable()?;
            let existed = txn
                .open_table(INSTANCES)
                .or_unavailable()?
                .remove(path.as_str())
                .or_unavailable()?
                .is_some();
            if existed {
                let mut index = txn.open_table(SHARD_INDEX).or_unavailable()?;
                index.remove((shard, path.as_str())).or_unavailable()?;
                let mut pending = txn.open_table(PENDING).or_unavailable()?;
                pending.remove(path.as_str()).or_unavailable()?;
                let mut events = txn.open_table(EVENTS).or_unavailable()?;
                events.remove(path.as_str()).or_unavailable()?;
                drop((index, pending, events));
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

    fn shards(&self) -> u32 {
        DEFAULT_SHARDS
    }

    async fn pending(&self, limit: usize) -> StoreResult<Vec<PendingItem>> {
        self.run(move |db| pending_scan(db, limit.max(1))).await
    }

    async fn list_shard(&self, shard: u32, page: PageRequest) -> StoreResult<Page> {
        self.run(move |db| scan_shard(db, shard, page)).await
    }

    async fn acquire_lease(
        &self,
        shard: u32,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Lease>> {
        check_holder(holder)?;
        let holder = holder.to_owned();
        self.run(move |db| {
            change_lease(db, shard, |current| {
                rules::acquired(current, shard, &holder, model::now(), ttl)
            })
        })
        .await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreResult<Option<Lease>> {
        let presented = lease.clone();
        self.run(move |db| {
            change_lease(db, presented.shard, |current| {
                rules::renewed(current, &presented, model::now(), ttl)
            })
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        let presented = lease.clone();
        self.run(move |db| {
            change_lease(db, presented.shard, |current| {
                rules::released(current, &presented, model::now())
            })
        })
        .await
        .map(drop)
    }

    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        self.run(|db| {
            let txn = db.begin_read().or_unavailable()?;
            let table = txn.open_table(LEASES).or_unavailable()?;
            let mut leases = vec![];
            for entry in table.iter().or_unavailable()? {
                let (shard, value) = entry.or_unavailable()?;
                let stored: StoredLease = decode(&shard.value().to_string(), value.value())?;
                leases.push(stored.into_lease(shard.value()));
            }
            Ok(leases)
        })
        .await
    }

    async fn heartbeat(&self, replica: &str, ttl: Duration) -> StoreResult<()> {
        check_holder(replica)?;
        let replica = replica.to_owned();
        self.run(move |db| {
            let txn = db.begin_write().or_unavailable()?;
            let expires = rules::expiry(model::now(), ttl).timestamp_millis();
            let mut table = txn.open_table(REPLICAS).or_unavailable()?;
            table.insert(replica.as_str(), expires).or_unavailable()?;
            // Expired heartbeats of replicas that never said goodbye go here.
            let now = model::now().timestamp_millis();
            table.retain(|_, expires| expires > now).or_unavailable()?;
            drop(table);
            txn.commit().or_unavailable()
        })
        .await
    }

    async fn replicas(&self) -> StoreResult<Vec<String>> {
        self.run(|db| {
            let txn = db.begin_read().or_unavailable()?;
            let table = txn.open_table(REPLICAS).or_unavailable()?;
            let now = model::now().timestamp_millis();
            let mut live = vec![];
            for entry in table.iter().or_unavailable()? {
                let (replica, expires) = entry.or_unavailable()?;
                if expires.value() > now {
                    live.push(replica.value().to_owned());
                }
            }
            Ok(live)
        })
        .await
    }

    async fn leave(&self, replica: &str) -> StoreResult<()> {
        let replica = replica.to_owned();
        self.run(move |db| {
            let txn = db.begin_write().or_unavailable()?;
            txn.open_table(REPLICAS)
                .or_unavailable()?
                .remove(replica.as_str())
                .or_unavailable()?;
            txn.commit().or_unavailable()
        })
        .await
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
        let key = instance.key();
        let mut index = txn.open_table(SHARD_INDEX).or_unavailable()?;
        index
            .insert((shard_of(&key, DEFAULT_SHARDS), path.as_str()), ())
            .or_unavailable()?;
        set_pending(&txn, &key, Some(fresh_token()))?;
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
    let marker = rules::pending_after_update(&after, pending_marker(&txn, key)?);
    set_pending(&txn, key, marker)?;
    txn.commit().or_unavailable()?;
    Ok(Updated {
        instance: after,
        change: Change::Changed,
    })
}

/// Writes the status and appends `events` in one transaction.
fn write_status_txn(
    db: &Database,
    key: &InstanceKey,
    for_generation: u64,
    status: Status,
    fence: Option<Fence>,
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
        if let Some(fence) = fence {
            let lease = read_lease(&txn.open_table(LEASES).or_unavailable()?, fence.shard)?;
            if !rules::fence_holds(lease.as_ref(), fence) {
                return Err(StoreError::Fenced {
                    shard: fence.shard,
                    token: fence.token,
                });
            }
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
        let active = has_active_backup(&txn, key)?;
        let marker = rules::pending_after_status(&instance, active, pending_marker(&txn, key)?);
        set_pending(&txn, key, marker)?;
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
                set_pending(&txn, &instance.key(), Some(fresh_token()))?;
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

fn create_backup_txn(db: &Database, backup: Backup) -> StoreResult<Backup> {
    rules::check_backup_id(&backup.backup_id)?;
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
        drop((backups, active));
        set_pending(&txn, &key, Some(fresh_token()))?;
    }
    txn.commit().or_unavailable()?;
    Ok(backup)
}

fn update_backup_txn(db: &Database, backup: Backup) -> StoreResult<()> {
    let key = backup.key();
    let path = backup_path(&key, &backup.backup_id);
    let txn = db.begin_write().or_unavailable()?;
    {
        let mut backups = txn.open_table(BACKUPS).or_unavailable()?;
        let stored = read_backup(&backups, &path)?
            .ok_or_else(|| StoreError::BackupNotFound(key.clone(), backup.backup_id.clone()))?;
        let Some(backup) = rules::backup_update(&stored, backup)? else {
            // Nothing to write; dropping the transaction spares a commit (and its fsync).
            return Ok(());
        };
        let mut active = txn.open_table(ACTIVE_BACKUPS).or_unavailable()?;
        put_backup(&mut backups, &mut active, &path, &backup)?;
        drop((backups, active));
        if backup.status.is_final() {
            clear_pending_after_backup(&txn, &key)?;
        }
    }
    txn.commit().or_unavailable()
}

/// The end of an instance's last active backup takes it out of the pending index if its
/// status already records convergence (otherwise its next status write will).
fn clear_pending_after_backup(txn: &WriteTransaction, key: &InstanceKey) -> StoreResult<()> {
    let instances = txn.open_table(INSTANCES).or_unavailable()?;
    let Some(instance) = read(&instances, &key.path())? else {
        return Ok(());
    };
    if rules::clears_pending_after_backup(&instance, has_active_backup(txn, key)?) {
        set_pending(txn, key, None)?;
    }
    Ok(())
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

/// The pending marker of `key`, if it is in the pending index.
fn pending_marker(txn: &WriteTransaction, key: &InstanceKey) -> StoreResult<Option<String>> {
    let path = key.path();
    let table = txn.open_table(PENDING).or_unavailable()?;
    match table.get(path.as_str()).or_unavailable()? {
        Some(value) => Ok(Some(decode::<PendingEntry>(&path, value.value())?.marker)),
        None => Ok(None),
    }
}

/// Puts `key` in the pending index with `marker`, or takes it out (`None`).
fn set_pending(
    txn: &WriteTransaction,
    key: &InstanceKey,
    marker: Option<String>,
) -> StoreResult<()> {
    let path = key.path();
    let mut table = txn.open_table(PENDING).or_unavailable()?;
    match marker {
        Some(marker) => {
            let entry = PendingEntry {
                shard: shard_of(key, DEFAULT_SHARDS),
                marker,
            };
            let bytes = serde_json::to_vec(&entry).or_unavailable()?;
            table
                .insert(path.as_str(), bytes.as_slice())
                .or_unavailable()?;
        }
        None => {
            table.remove(path.as_str()).or_unavailable()?;
        }
    }
    Ok(())
}

/// Whether `key` has a PENDING or RUNNING backup.
fn has_active_backup(txn: &WriteTransaction, key: &InstanceKey) -> StoreResult<bool> {
    let active = txn.open_table(ACTIVE_BACKUPS).or_unavailable()?;
    // See the module doc: `t/i/` up to (not including) `t/i0` is exactly instance `t/i`.
    let (lower, upper) = (format!("{}/", key.path()), format!("{}0", key.path()));
    let mut range = active
        .range::<&str>(lower.as_str()..upper.as_str())
        .or_unavailable()?;
    Ok(range.next().transpose().or_unavailable()?.is_some())
}

fn pending_scan(db: &Database, limit: usize) -> StoreResult<Vec<PendingItem>> {
    let txn = db.begin_read().or_unavailable()?;
    let table = txn.open_table(PENDING).or_unavailable()?;
    let mut items = vec![];
    for entry in table.iter().or_unavailable()?.take(limit) {
        let (path, value) = entry.or_unavailable()?;
        let path = path.value();
        let key = InstanceKey::parse_path(path)
            .ok_or_else(|| unavailable(format!("pending entry {path} is not an instance key")))?;
        let entry: PendingEntry = decode(path, value.value())?;
        items.push(PendingItem {
            key,
            shard: entry.shard,
            marker: entry.marker,
        });
    }
    Ok(items)
}

/// One page of a shard's instances, in key order, through `shard_index`.
fn scan_shard(db: &Database, shard: u32, page: PageRequest) -> StoreResult<Page> {
    let limit = page.limit.max(1);
    let after = page.after.as_ref().map(InstanceKey::path);
    let lower = match &after {
        Some(path) => Bound::Excluded((shard, path.as_str())),
        None => Bound::Included((shard, "")),
    };
    let txn = db.begin_read().or_unavailable()?;
    let index = txn.open_table(SHARD_INDEX).or_unavailable()?;
    let instances = txn.open_table(INSTANCES).or_unavailable()?;
    let mut items = Vec::new();
    for entry in index
        .range::<(u32, &str)>((lower, Bound::Unbounded))
        .or_unavailable()?
    {
        let (k, _) = entry.or_unavailable()?;
        let (s, path) = k.value();
        if s != shard {
            break;
        }
        if items.len() == limit {
            let next = items.last().map(Instance::key);
            return Ok(Page { items, next });
        }
        let inst = read(&instances, path)?
            .ok_or_else(|| unavailable(format!("shard index entry {path} has no record")))?;
        items.push(inst);
    }
    Ok(Page { items, next: None })
}

/// A lease as `leases` stores it (the shard is the key).
#[derive(Debug, Serialize, Deserialize)]
struct StoredLease {
    holder: String,
    expires_at: Timestamp,
    token: u64,
}

impl StoredLease {
    fn into_lease(self, shard: u32) -> Lease {
        Lease {
            shard,
            holder: self.holder,
            expires_at: self.expires_at,
            token: self.token,
        }
    }
}

fn read_lease(
    table: &impl ReadableTable<u32, &'static [u8]>,
    shard: u32,
) -> StoreResult<Option<Lease>> {
    match table.get(shard).or_unavailable()? {
        Some(value) => {
            let stored: StoredLease = decode(&format!("lease {shard}"), value.value())?;
            Ok(Some(stored.into_lease(shard)))
        }
        None => Ok(None),
    }
}

/// Reads the lease of `shard`, lets `decide` say what it becomes, and writes that, all in
/// one transaction (so two replicas cannot both take it).
fn change_lease(
    db: &Database,
    shard: u32,
    decide: impl FnOnce(Option<&Lease>) -> Option<Lease>,
) -> StoreResult<Option<Lease>> {
    let txn = db.begin_write().or_unavailable()?;
    let mut table = txn.open_table(LEASES).or_unavailable()?;
    let Some(lease) = decide(read_lease(&table, shard)?.as_ref()) else {
        return Ok(None);
    };
    let stored = StoredLease {
        holder: lease.holder.clone(),
        expires_at: lease.expires_at,
        token: lease.token,
    };
    let bytes = serde_json::to_vec(&stored).or_unavailable()?;
    table.insert(shard, bytes.as_slice()).or_unavailable()?;
    drop(table);
    txn.commit().or_unavailable()?;
    Ok(Some(lease))
}

/// A lease holder or replica name: non-empty (empty means "released").
fn check_holder(name: &str) -> StoreResult<()> {
    if name.is_empty() {
        let error = FieldError::new("replica", "must not be empty");
        return Err(StoreError::Rejected(Rejection::Invalid(vec![error])));
    }
    Ok(())
}

/// Brings a file written by an older version to the current layout: builds `shard_index`
/// and `pending` from the records (every instance that needs reconciling is pending).
fn upgrade(txn: &WriteTransaction) -> StoreResult<()> {
    let mut meta = txn.open_table(META).or_unavailable()?;
    let version = meta.get(SCHEMA).or_unavailable()?.map_or(0, |v| v.value());
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let instances = txn.open_table(INSTANCES).or_unavailable()?;
    let mut index = txn.open_table(SHARD_INDEX).or_unavailable()?;
    let mut rebuilt = 0usize;
    for entry in instances.iter().or_unavailable()? {
        let (path, value) = entry.or_unavailable()?;
        let inst: Instance = decode(path.value(), value.value())?;
        let key = inst.key();
        index
            .insert((shard_of(&key, DEFAULT_SHARDS), path.value()), ())
            .or_unavailable()?;
        if rules::needs_reconcile(&inst, has_active_backup(txn, &key)?) {
            set_pending(txn, &key, Some(fresh_token()))?;
        }
        rebuilt += 1;
    }
    meta.insert(SCHEMA, SCHEMA_VERSION).or_unavailable()?;
    if rebuilt > 0 {
        tracing::info!(
            instances = rebuilt,
            "store upgraded: shard index and pending index built"
        );
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
