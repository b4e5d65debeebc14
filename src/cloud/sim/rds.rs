//! RDS DB instances and snapshots, with content (`data`, what WordPress wrote).
//!
//! A DB instance stores only its latest operation (`op`, started and finished at absolute
//! times); its status at `t` is "in progress" before `op_done_at` and the operation's
//! settled status after it. Starting a new operation first folds the finished one into the
//! stored fields (e.g. the new instance class of a finished modify).
//!
//! Invariants:
//! * Creating (or restoring into) an identifier that exists in any state succeeds
//!   (AlreadyExists is success), whatever the existing DB holds.
//! * A DB is deleted only if its final snapshot exists and is `available`; the sim refuses
//!   otherwise with `FinalSnapshotMissing`, so tests catch a reconciler that violates the
//!   data-safety rule.
//! * A snapshot captures its DB's data when it is created; a DB restored from it starts
//!   with exactly that data (RestoreDBInstanceFromDBSnapshot always makes a NEW instance).
//! * Snapshots outlive their DB (that is what a final snapshot is for) and carry the
//!   instance key of the DB they were taken from; `db_by_key` / `snap_by_key` index exactly
//!   the records of `databases` / `snapshots` (changed only by `insert_db`, `remove_db`,
//!   `insert_snapshot`).

use serde::{Deserialize, Serialize};

use std::collections::{BTreeSet, HashMap};

use super::calls::Api;
use super::clock::{Ctx, Millis, base};
use super::inventory::{Inventory, RecordKey};
use super::view::{DatabaseView, SnapshotView};
use crate::cloud::{
    CloudError, CloudResult, DbState, ObservedDatabase, ObservedSnapshot, SnapshotState,
};
use crate::model::InstanceKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum DbOp {
    Create,
    Stop,
    Start,
    Modify,
    Delete,
}

impl DbOp {
    fn in_progress(self) -> DbState {
        match self {
            DbOp::Create => DbState::Creating,
            DbOp::Stop => DbState::Stopping,
            DbOp::Start => DbState::Starting,
            DbOp::Modify => DbState::Modifying,
            DbOp::Delete => DbState::Deleting,
        }
    }

    /// The status once the operation is done; `None` = gone.
    fn settled(self) -> Option<DbState> {
        match self {
            DbOp::Create | DbOp::Start | DbOp::Modify => Some(DbState::Available),
            DbOp::Stop => Some(DbState::Stopped),
            DbOp::Delete => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DbRec {
    pub identifier: String,
    pub key: InstanceKey,
    /// The class before `op`; a finished modify's class is `target_class`.
    pub instance_class: String,
    pub target_class: Option<String>,
    pub allocated_storage_gb: u32,
    pub client_token: String,
    pub created_at: Millis,
    pub op: DbOp,
    pub op_started_at: Millis,
    pub op_done_at: Millis,
    /// What WordPress wrote into it (records from before data existed load as empty).
    #[serde(default)]
    pub data: String,
}

impl DbRec {
    pub fn arn(&self) -> String {
        format!("arn:aws:rds:eu-west-1:123456789012:db:{}", self.identifier)
    }

    /// The status at `t`; `None` once deleted.
    pub fn state(&self, t: Millis) -> Option<DbState> {
        if t < self.op_done_at {
            Some(self.op.in_progress())
        } else {
            self.op.settled()
        }
    }

    pub fn is_gone(&self, t: Millis) -> bool {
        self.state(t).is_none()
    }

    pub fn class_at(&self, t: Millis) -> &str {
        match (&self.target_class, self.op, t >= self.op_done_at) {
            (Some(target), DbOp::Modify, true) => target,
            _ => &self.instance_class,
        }
    }

    /// RDS assigns the endpoint when the create finishes and keeps it afterwards.
    pub fn endpoint(&self, t: Millis) -> Option<String> {
        let created = !(self.op == DbOp::Create && t < self.op_done_at);
        created.then(|| format!("{}.c9akciq32.eu-west-1.rds.amazonaws.com", self.identifier))
    }

    /// Starts `op` now, after folding the finished one into the stored class.
    fn begin(&mut self, ctx: &Ctx, op: DbOp, base_ms: f64) {
        self.instance_class = self.class_at(ctx.now).to_owned();
        self.target_class = None;
        self.op = op;
        self.op_started_at = ctx.now;
        self.op_done_at = ctx.rds_after(base_ms);
    }

    pub fn observed(&self, t: Millis) -> Option<ObservedDatabase> {
        Some(ObservedDatabase {
            identifier: self.identifier.clone(),
            arn: self.arn(),
            state: self.state(t)?,
            endpoint: self.endpoint(t),
            instance_class: self.class_at(t).to_owned(),
        })
    }

    pub fn view(&self, t: Millis) -> Option<DatabaseView> {
        Some(DatabaseView {
            identifier: self.identifier.clone(),
            tenant_id: self.key.tenant_id.to_string(),
            instance_id: self.key.instance_id.to_string(),
            status: self.state(t)?.as_str().to_owned(),
            instance_class: self.class_at(t).to_owned(),
            endpoint: self.endpoint(t),
            data: self.data.clone(),
        })
    }

    /// Whether the DB accepts connections (and so WordPress's writes) in this state.
    pub fn serves(&self, t: Millis) -> bool {
        matches!(
            self.state(t),
            Some(DbState::Available | DbState::Modifying | DbState::BackingUp)
        )
    }
}

/// RDS's default allocated storage, for snapshot records from before it was kept.
fn default_storage_gb() -> u32 {
    20
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SnapshotRec {
    pub id: String,
    pub db_identifier: String,
    pub key: InstanceKey,
    pub started_at: Millis,
    pub done_at: Millis,
    /// The DB's data when the snapshot was taken.
    #[serde(default)]
    pub data: String,
    /// The DB's storage, which a restore from the snapshot gets.
    #[serde(default = "default_storage_gb")]
    pub allocated_storage_gb: u32,
}

impl SnapshotRec {
    pub fn arn(&self) -> String {
        format!("arn:aws:rds:eu-west-1:123456789012:snapshot:{}", self.id)
    }

    pub fn state(&self, t: Millis) -> SnapshotState {
        if t < self.done_at {
            SnapshotState::Creating
        } else {
            SnapshotState::Available
        }
    }

    pub fn observed(&self, t: Millis) -> ObservedSnapshot {
        ObservedSnapshot {
            id: self.id.clone(),
            arn: self.arn(),
            state: self.state(t),
            db_identifier: self.db_identifier.clone(),
        }
    }

    pub fn view(&self, t: Millis) -> SnapshotView {
        let status = match self.state(t) {
            SnapshotState::Creating => "creating",
            SnapshotState::Available => "available",
            SnapshotState::Failed => "failed",
        };
        SnapshotView {
            id: self.id.clone(),
            db_identifier: self.db_identifier.clone(),
            tenant_id: self.key.tenant_id.to_string(),
            instance_id: self.key.instance_id.to_string(),
            status: status.to_owned(),
            data: self.data.clone(),
        }
    }
}

/// A missing DB is retryable, not permanent: the reconciler observes again and creates it.
fn not_found(api: Api, identifier: &str) -> CloudError {
    api.invalid(format!(
        "DBInstanceNotFound: DB instance {identifier} not found"
    ))
}

fn wrong_state(api: Api, identifier: &str, state: Option<DbState>) -> CloudError {
    let word = state.as_ref().map_or("deleted", DbState::as_str);
    api.invalid(format!(
        "InvalidDBInstanceState: DB instance {identifier} is {word}"
    ))
}

/// Arguments of CreateDatabase.
pub(super) struct NewDb<'a> {
    pub identifier: &'a str,
    pub instance_class: &'a str,
    pub allocated_storage_gb: u32,
    pub token: &'a str,
}

/// Arguments of RestoreDBInstanceFromDBSnapshot.
pub(super) struct RestoredDb<'a> {
    pub identifier: &'a str,
    pub snapshot_id: &'a str,
    pub instance_class: &'a str,
    pub token: &'a str,
}

/// Ids of records per instance key (a secondary index: "tagged with the instance").
pub(super) type KeyIndex = HashMap<InstanceKey, BTreeSet<String>>;

fn index_add(index: &mut KeyIndex, key: &InstanceKey, id: &str) {
    index.entry(key.clone()).or_default().insert(id.to_owned());
}

fn index_remove(index: &mut KeyIndex, key: &InstanceKey, id: &str) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

impl Inventory {
    /// Stores `rec` (replacing a record of the same identifier, e.g. a deleted DB whose
    /// identifier is reused) and indexes it by key.
    pub(super) fn insert_db(&mut self, rec: DbRec) {
        if let Some(old) = self.databases.get(&rec.identifier) {
            index_remove(&mut self.db_by_key, &old.key, &rec.identifier);
        }
        index_add(&mut self.db_by_key, &rec.key, &rec.identifier);
        self.databases.insert(rec.identifier.clone(), rec);
    }

    pub(super) fn remove_db(&mut self, identifier: &str) {
        if let Some(old) = self.databases.remove(identifier) {
            index_remove(&mut self.db_by_key, &old.key, identifier);
            self.touch(RecordKey::Database(identifier.to_owned()));
        }
    }

    pub(super) fn insert_snapshot(&mut self, rec: SnapshotRec) {
        if let Some(old) = self.snapshots.get(&rec.id) {
            index_remove(&mut self.snap_by_key, &old.key, &rec.id);
        }
        index_add(&mut self.snap_by_key, &rec.key, &rec.id);
        self.snapshots.insert(rec.id.clone(), rec);
    }

    /// The DB instances tagged with `key` that exist at `t`, oldest first.
    pub(super) fn databases_of(&self, key: &InstanceKey, t: Millis) -> Vec<&DbRec> {
        let mut dbs: Vec<&DbRec> = self
            .db_by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.databases.get(id))
            .filter(|db| &db.key == key && !db.is_gone(t))
            .collect();
        dbs.sort_by(|a, b| (a.created_at, &a.identifier).cmp(&(b.created_at, &b.identifier)));
        dbs
    }

    /// The snapshots tagged with `key` (of any of its DBs), oldest first.
    pub(super) fn snapshots_of(&self, key: &InstanceKey) -> Vec<&SnapshotRec> {
        let mut snaps: Vec<&SnapshotRec> = self
            .snap_by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.snapshots.get(id))
            .filter(|s| &s.key == key)
            .collect();
        snaps.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        snaps
    }

    /// The live DB whose endpoint is `endpoint` at `t` (what a task definition points at).
    pub(super) fn db_by_endpoint(&self, endpoint: &str, t: Millis) -> Option<&DbRec> {
        let identifier = endpoint.split('.').next()?;
        self.live_db(identifier, t)
            .filter(|db| db.endpoint(t).as_deref() == Some(endpoint))
    }

    /// Sets the data of DB `identifier` (WordPress wrote). Only called for a live DB.
    pub(super) fn write_db(&mut self, identifier: &str, data: &str) {
        if let Some(db) = self.databases.get_mut(identifier) {
            db.data = data.to_owned();
            self.touch(RecordKey::Database(identifier.to_owned()));
        }
    }

    /// The DB instance `identifier` unless it is gone at `t`.
    pub(super) fn live_db(&self, identifier: &str, t: Millis) -> Option<&DbRec> {
        self.databases.get(identifier).filter(|db| !db.is_gone(t))
    }

    fn live_db_mut(&mut self, identifier: &str, t: Millis) -> Option<&mut DbRec> {
        self.databases
            .get_mut(identifier)
            .filter(|db| !db.is_gone(t))
    }

    pub(super) fn create_database(
        &mut self,
        ctx: &Ctx,
        key: &InstanceKey,
        new: NewDb<'_>,
    ) -> CloudResult<()> {
        if self.live_db(new.identifier, ctx.now).is_some() {
            return Ok(());
        }
        let rec = DbRec {
            identifier: new.identifier.to_owned(),
            key: key.clone(),
            instance_class: new.instance_class.to_owned(),
            target_class: None,
            allocated_storage_gb: new.allocated_storage_gb,
            client_token: new.token.to_owned(),
            created_at: ctx.now,
            op: DbOp::Create,
            op_started_at: ctx.now,
            op_done_at: ctx.rds_after(base::DB_CREATE),
            data: String::new(),
        };
        self.insert_db(rec);
        self.touch(RecordKey::Database(new.identifier.to_owned()));
        Ok(())
    }

    /// RestoreDBInstanceFromDBSnapshot: a new DB with the snapshot's data, `creating` for
    /// as long as a create takes.
    pub(super) fn restore_database(
        &mut self,
        ctx: &Ctx,
        api: Api,
        key: &InstanceKey,
        new: RestoredDb<'_>,
    ) -> CloudResult<()> {
        if self.live_db(new.identifier, ctx.now).is_some() {
            return Ok(());
        }
        let snap = self.snapshots.get(new.snapshot_id).ok_or_else(|| {
            api.permanent(
                "DBSnapshotNotFound",
                format!("DBSnapshot {} not found", new.snapshot_id),
            )
        })?;
        if snap.state(ctx.now) != SnapshotState::Available {
            return Err(api.invalid(format!(
                "InvalidDBSnapshotState: snapshot {} is not available yet",
                new.snapshot_id
            )));
        }
        let rec = DbRec {
            identifier: new.identifier.to_owned(),
            key: key.clone(),
            instance_class: new.instance_class.to_owned(),
            target_class: None,
            allocated_storage_gb: snap.allocated_storage_gb,
            client_token: new.token.to_owned(),
            created_at: ctx.now,
            op: DbOp::Create,
            op_started_at: ctx.now,
            op_done_at: ctx.rds_after(base::DB_CREATE),
            data: snap.data.clone(),
        };
        self.insert_db(rec);
        self.touch(RecordKey::Database(new.identifier.to_owned()));
        Ok(())
    }

    pub(super) fn modify_database(
        &mut self,
        ctx: &Ctx,
        api: Api,
        identifier: &str,
        class: &str,
    ) -> CloudResult<()> {
        let db = self
            .live_db_mut(identifier, ctx.now)
            .ok_or_else(|| not_found(api, identifier))?;
        let wanted = db.target_class.as_deref().unwrap_or(&db.instance_class);
        if wanted == class {
            return Ok(());
        }
        match db.state(ctx.now) {
            Some(DbState::Available) => {
                db.begin(ctx, DbOp::Modify, base::DB_MODIFY);
                db.target_class = Some(class.to_owned());
            }
            other => return Err(wrong_state(api, identifier, other)),
        }
        self.touch(RecordKey::Database(identifier.to_owned()));
        Ok(())
    }

    pub(super) fn start_database(&mut self, ctx: &Ctx, api: Api, id: &str) -> CloudResult<()> {
        self.transition(ctx, api, id, |state| match state {
            DbState::Available | DbState::Starting => Ok(None),
            DbState::Stopped => Ok(Some((DbOp::Start, base::DB_START))),
            _ => Err(()),
        })
    }

    pub(super) fn stop_database(&mut self, ctx: &Ctx, api: Api, id: &str) -> CloudResult<()> {
        self.transition(ctx, api, id, |state| match state {
            DbState::Stopped | DbState::Stopping => Ok(None),
            DbState::Available => Ok(Some((DbOp::Stop, base::DB_STOP))),
            _ => Err(()),
        })
    }

    /// Runs `rule` on the DB's state: `Ok(None)` = nothing to do, `Ok(Some(op))` = start
    /// it, `Err` = the state does not allow the call.
    fn transition(
        &mut self,
        ctx: &Ctx,
        api: Api,
        id: &str,
        rule: impl Fn(&DbState) -> Result<Option<(DbOp, f64)>, ()>,
    ) -> CloudResult<()> {
        let db = self
            .live_db_mut(id, ctx.now)
            .ok_or_else(|| not_found(api, id))?;
        let state = db.state(ctx.now);
        let decision = state.as_ref().map(&rule);
        match decision {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some((op, base_ms)))) => {
                db.begin(ctx, op, base_ms);
                self.touch(RecordKey::Database(id.to_owned()));
                Ok(())
            }
            _ => Err(wrong_state(api, id, state)),
        }
    }

    pub(super) fn snapshot_database(
        &mut self,
        ctx: &Ctx,
        api: Api,
        identifier: &str,
        snapshot_id: &str,
    ) -> CloudResult<()> {
        if self.snapshots.contains_key(snapshot_id) {
            return Ok(());
        }
        let db = self
            .live_db(identifier, ctx.now)
            .ok_or_else(|| not_found(api, identifier))?;
        let state = db.state(ctx.now);
        if !matches!(state, Some(DbState::Available | DbState::Stopped)) {
            return Err(wrong_state(api, identifier, state));
        }
        let rec = SnapshotRec {
            id: snapshot_id.to_owned(),
            db_identifier: identifier.to_owned(),
            key: db.key.clone(),
            started_at: ctx.now,
            done_at: ctx.rds_after(base::SNAPSHOT),
            data: db.data.clone(),
            allocated_storage_gb: db.allocated_storage_gb,
        };
        self.insert_snapshot(rec);
        self.touch(RecordKey::Snapshot(snapshot_id.to_owned()));
        Ok(())
    }

    pub(super) fn delete_database(
        &mut self,
        ctx: &Ctx,
        api: Api,
        identifier: &str,
        final_snapshot_id: &str,
    ) -> CloudResult<()> {
        let Some(db) = self.live_db(identifier, ctx.now) else {
            return Ok(());
        };
        let state = db.state(ctx.now);
        if state == Some(DbState::Deleting) {
            return Ok(());
        }
        let snapshot_ok = self.snapshots.get(final_snapshot_id).is_some_and(|s| {
            s.db_identifier == identifier && s.state(ctx.now) == SnapshotState::Available
        });
        if !snapshot_ok {
            return Err(api.permanent(
                "FinalSnapshotMissing",
                format!(
                    "refusing to delete {identifier}: final snapshot {final_snapshot_id} \
                     is not available"
                ),
            ));
        }
        self.transition(ctx, api, identifier, |state| match state {
            DbState::Available | DbState::Stopped => Ok(Some((DbOp::Delete, base::DB_DELETE))),
            _ => Err(()),
        })
    }
}
