//! The inventory: every simulated resource, indexed the ways the APIs look them up, plus
//! the set of records a mutation changed (so persistence writes only those).
//!
//! Invariants:
//! * The inventory stores only facts fixed when an operation starts (absolute times); every
//!   reader passes the instant it looks at, and resources that are gone at that instant are
//!   invisible even before `sweep` removes them.
//! * `ap_by_key` and `ap_by_token` always index exactly the records in `access_points`
//!   (they change only in `insert_access_point` / `remove_access_point`); likewise
//!   `db_by_key` / `snap_by_key` (see `rds`) and the job indexes (see `backup`). Indexes
//!   are never stored: `load` rebuilds them through the same insert functions.
//! * Every change of a stored record is followed by `touch` of its [`RecordKey`].
//! * Observation finds an instance's access points, databases and snapshots by the key
//!   recorded when they were created (their tags), not by name, so every data epoch shows.

use std::collections::{BTreeSet, HashMap};

use super::backup::{JobRec, JobType, NewBackup, NewRestore};
use super::calls::Api;
use super::clock::{Ctx, Millis};
use super::ecs::{NewService, ServiceRec, ServiceUpdate, TaskHistory};
use super::efs::{AccessPointRec, DirRec};
use super::logs::LogGroupRec;
use super::rds::{DbRec, KeyIndex, NewDb, RestoredDb, SnapshotRec};
use super::relocation::NewRelocation;
use super::view::InventorySnapshot;
use crate::cloud::names::ResourceNames;
use crate::cloud::{CloudResult, DbState, Observed, Seen, Step, StepOutcome};
use crate::model::InstanceKey;

/// How often (in real milliseconds) a mutation also sweeps gone resources out of storage.
const SWEEP_EVERY_MS: Millis = 1_000;

/// Identifies one stored record: its kind and its AWS name or id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum RecordKey {
    Service(String),
    AccessPoint(String),
    Database(String),
    Snapshot(String),
    LogGroup(String),
    /// An EFS directory, by root path.
    Directory(String),
    /// An AWS Backup backup or restore job, by job id.
    Job(String),
    /// The stopped tasks of a service name.
    TaskHistory(String),
}

impl RecordKey {
    /// The storage key, `kind/id`. Ids may contain `/` (log groups, directories); the kind
    /// never does.
    pub fn storage_key(&self) -> String {
        let (kind, id) = match self {
            RecordKey::Service(id) => ("svc", id),
            RecordKey::AccessPoint(id) => ("ap", id),
            RecordKey::Database(id) => ("db", id),
            RecordKey::Snapshot(id) => ("snap", id),
            RecordKey::LogGroup(id) => ("log", id),
            RecordKey::Directory(id) => ("dir", id),
            RecordKey::Job(id) => ("job", id),
            RecordKey::TaskHistory(id) => ("hist", id),
        };
        format!("{kind}/{id}")
    }
}

/// A changed record, ready for storage: its new JSON, or `None` when it was removed.
pub(super) type Change = (String, Option<Vec<u8>>);

#[derive(Debug, Default)]
pub(super) struct Inventory {
    pub services: HashMap<String, ServiceRec>,
    pub access_points: HashMap<String, AccessPointRec>,
    pub ap_by_key: HashMap<InstanceKey, Vec<String>>,
    pub ap_by_token: HashMap<String, String>,
    pub databases: HashMap<String, DbRec>,
    pub db_by_key: KeyIndex,
    pub snapshots: HashMap<String, SnapshotRec>,
    pub snap_by_key: KeyIndex,
    pub log_groups: HashMap<String, LogGroupRec>,
    /// EFS directories by root path (see `efs` for how restores add to them).
    pub directories: HashMap<String, DirRec>,
    /// AWS Backup jobs by id, and their indexes (see `backup`).
    pub jobs: HashMap<String, JobRec>,
    pub job_by_token: HashMap<(JobType, String), String>,
    pub rp_by_arn: HashMap<String, String>,
    /// Jobs that write a directory (restores, relocations that move), by its root path.
    pub writes_by_root: HashMap<String, Vec<String>>,
    /// Relocations that move a directory away, by the directory's root path.
    pub moves_by_source: HashMap<String, Vec<String>>,
    /// Stopped tasks per service name, for the logs (see `ecs`).
    pub task_history: HashMap<String, TaskHistory>,
    dirty: BTreeSet<RecordKey>,
    last_sweep: Millis,
}

impl Inventory {
    pub fn touch(&mut self, key: RecordKey) {
        self.dirty.insert(key);
    }

    pub fn insert_access_point(&mut self, rec: AccessPointRec) {
        self.ap_by_key
            .entry(rec.key.clone())
            .or_default()
            .push(rec.id.clone());
        // A token can name a gone access point and its re-creation; it must find the newer
        // one whatever order records are loaded in.
        let newer = self
            .ap_by_token
            .get(&rec.client_token)
            .and_then(|id| self.access_points.get(id))
            .is_none_or(|old| (old.created_at, &old.id) <= (rec.created_at, &rec.id));
        if newer {
            self.ap_by_token
                .insert(rec.client_token.clone(), rec.id.clone());
        }
        self.access_points.insert(rec.id.clone(), rec);
    }

    fn remove_access_point(&mut self, id: &str) {
        let Some(rec) = self.access_points.remove(id) else {
            return;
        };
        if let Some(ids) = self.ap_by_key.get_mut(&rec.key) {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.ap_by_key.remove(&rec.key);
            }
        }
        if self
            .ap_by_token
            .get(&rec.client_token)
            .is_some_and(|v| v == id)
        {
            self.ap_by_token.remove(&rec.client_token);
        }
        self.touch(RecordKey::AccessPoint(id.to_owned()));
    }

    /// Executes one step at `ctx.now`. Validates before it changes anything, so an error
    /// leaves the inventory as it was.
    pub fn apply(
        &mut self,
        ctx: &Ctx,
        key: &InstanceKey,
        step: &Step,
        token: &str,
    ) -> CloudResult<StepOutcome> {
        let api = Api::of_step(step);
        let done = |r: CloudResult<()>| r.map(|()| StepOutcome::Done);
        let started = |r: CloudResult<String>| r.map(|job_id| StepOutcome::Started { job_id });
        match step {
            Step::StartBackupJob {
                backup_id,
                root_path,
            } => {
                let new = NewBackup {
                    backup_id,
                    root_path,
                    token,
                };
                started(self.start_backup_job(ctx, api, key, new))
            }
            Step::StartRestoreJob {
                recovery_point_arn,
                target_root,
            } => {
                let new = NewRestore {
                    recovery_point_arn,
                    target_root,
                    token,
                };
                started(self.start_restore_job(ctx, api, key, new))
            }
            Step::RelocateRestoredFiles {
                restore_job_id,
                target_root,
                replaces,
            } => {
                let new = NewRelocation {
                    restore_job_id,
                    target_root,
                    token: &crate::cloud::rerun_token(token, replaces.as_deref()),
                };
                started(self.start_relocation(ctx, api, key, new))
            }
            Step::CreateLogGroup {
                name,
                retention_days,
            } => done(self.create_log_group(ctx, key, name, *retention_days)),
            Step::DeleteLogGroup { name } => done(self.delete_log_group(name)),
            Step::CreateAccessPoint { root_path } => {
                done(self.create_access_point(ctx, key, root_path, token))
            }
            Step::DeleteAccessPoint { id } => done(self.delete_access_point(ctx, id)),
            Step::CreateDatabase {
                identifier,
                instance_class,
                allocated_storage_gb,
            } => {
                let new = NewDb {
                    identifier,
                    instance_class,
                    allocated_storage_gb: *allocated_storage_gb,
                    token,
                };
                done(self.create_database(ctx, key, new))
            }
            Step::RestoreDatabase {
                identifier,
                snapshot_id,
                instance_class,
            } => {
                let new = RestoredDb {
                    identifier,
                    snapshot_id,
                    instance_class,
                    token,
                };
                done(self.restore_database(ctx, api, key, new))
            }
            Step::ModifyDatabase {
                identifier,
                instance_class,
            } => done(self.modify_database(ctx, api, identifier, instance_class)),
            Step::StartDatabase { identifier } => done(self.start_database(ctx, api, identifier)),
            Step::StopDatabase { identifier } => done(self.stop_database(ctx, api, identifier)),
            Step::SnapshotDatabase {
                identifier,
                snapshot_id,
            } => done(self.snapshot_database(ctx, api, identifier, snapshot_id)),
            Step::DeleteDatabase {
                identifier,
                final_snapshot_id,
            } => done(self.delete_database(ctx, api, identifier, final_snapshot_id)),
            Step::CreateService {
                name,
                desired_count,
                image,
                access_point_id,
                db_endpoint,
            } => {
                let new = NewService {
                    name,
                    desired_count: *desired_count,
                    image,
                    access_point_id,
                    db_endpoint,
                    token,
                };
                done(self.create_service(ctx, api, key, new))
            }
            Step::UpdateService {
                name,
                desired_count,
                image,
                access_point_id,
                db_endpoint,
            } => {
                let update = ServiceUpdate {
                    name,
                    desired_count: *desired_count,
                    image,
                    access_point_id,
                    db_endpoint,
                };
                done(self.update_service(ctx, api, &update))
            }
            Step::DeleteService { name } => done(self.delete_service(ctx, name)),
        }
    }

    /// What the describe calls return for `key` at `t`.
    pub fn observe(&self, key: &InstanceKey, t: Millis) -> Observed {
        let names = ResourceNames::for_key(key);
        Observed {
            service: self.live_service(&names.service, t).map(|s| s.observed(t)),
            access_points: self
                .access_points_of(key, t)
                .into_iter()
                .filter_map(|ap| ap.observed(t))
                .collect(),
            databases: self
                .databases_of(key, t)
                .into_iter()
                .filter_map(|db| db.observed(t))
                .collect(),
            snapshots: Seen::Observed(
                self.snapshots_of(key)
                    .into_iter()
                    .map(|s| s.observed(t))
                    .collect(),
            ),
            log_group: self
                .log_groups
                .get(&names.log_group)
                .map(LogGroupRec::observed),
            tasks: None,
            jobs: Vec::new(),
        }
    }

    pub fn snapshot(&self, t: Millis) -> InventorySnapshot {
        let mut inv = InventorySnapshot {
            services: self
                .services
                .values()
                .filter(|s| !s.is_gone(t))
                .map(|s| s.view(t))
                .collect(),
            access_points: self
                .access_points
                .values()
                .filter_map(|a| a.view(t, self.directory_at(&a.root_path, t).unwrap_or("")))
                .collect(),
            databases: self.databases.values().filter_map(|d| d.view(t)).collect(),
            snapshots: self.snapshots.values().map(|s| s.view(t)).collect(),
            log_groups: self.log_groups.values().map(LogGroupRec::view).collect(),
            directories: self.directory_views(t),
            recovery_points: self.recovery_point_views(t),
            backup_jobs: self.backup_job_views(t),
            restore_jobs: self.restore_job_views(t),
            relocation_tasks: self.relocation_task_views(t),
        };
        inv.services.sort_by(|a, b| a.name.cmp(&b.name));
        inv.access_points.sort_by(|a, b| a.id.cmp(&b.id));
        inv.databases
            .sort_by(|a, b| a.identifier.cmp(&b.identifier));
        inv.snapshots.sort_by(|a, b| a.id.cmp(&b.id));
        inv.log_groups.sort_by(|a, b| a.name.cmp(&b.name));
        inv
    }

    /// Drift: the key's access points vanish at once (someone deleted them by hand).
    pub fn drift_remove_access_points(&mut self, key: &InstanceKey, t: Millis) -> Option<()> {
        let ids: Vec<String> = self
            .access_points_of(key, t)
            .iter()
            .map(|ap| ap.id.clone())
            .collect();
        for id in &ids {
            self.remove_access_point(id);
        }
        (!ids.is_empty()).then_some(())
    }

    /// Drift: someone stopped the database. `Err` carries the state that does not allow it.
    pub fn drift_stop_database(
        &mut self,
        ctx: &Ctx,
        identifier: &str,
    ) -> Option<Result<(), String>> {
        let state = self.live_db(identifier, ctx.now)?.state(ctx.now)?;
        if !matches!(
            state,
            DbState::Available | DbState::Stopping | DbState::Stopped
        ) {
            return Some(Err(state.as_str().to_owned()));
        }
        let api = Api::of_step(&Step::StopDatabase {
            identifier: identifier.to_owned(),
        });
        Some(
            self.stop_database(ctx, api, identifier)
                .map_err(|e| e.to_string()),
        )
    }

    /// The live DB the key's WordPress uses: the one its service's endpoint names, else
    /// (no service, or an endpoint of no live DB) the key's newest DB.
    pub fn current_db(&self, key: &InstanceKey, t: Millis) -> Option<&DbRec> {
        let service = ResourceNames::for_key(key).service;
        self.live_service(&service, t)
            .and_then(|svc| self.db_by_endpoint(&svc.db_endpoint, t))
            .or_else(|| self.databases_of(key, t).last().copied())
    }

    /// Where the key's WordPress keeps its data now: the root of the access point and the
    /// identifier of the DB its active service uses. `Err` says why it cannot write.
    pub fn site_resources(&self, key: &InstanceKey, t: Millis) -> Result<(String, String), String> {
        let name = ResourceNames::for_key(key).service;
        let svc = self
            .live_service(&name, t)
            .filter(|s| !s.is_draining())
            .ok_or_else(|| format!("no active ECS service {name}"))?;
        let ap = self
            .live_access_point(&svc.access_point_id, t)
            .ok_or_else(|| format!("access point {} does not exist", svc.access_point_id))?;
        let db = self
            .db_by_endpoint(&svc.db_endpoint, t)
            .ok_or_else(|| format!("no DB instance has endpoint {}", svc.db_endpoint))?;
        if !db.serves(t) {
            let state = db
                .state(t)
                .map_or_else(|| "deleted".to_owned(), |s| s.as_str().to_owned());
            return Err(format!("DB instance {} is {state}", db.identifier));
        }
        Ok((ap.root_path.clone(), db.identifier.clone()))
    }

    /// Drift ("WordPress writes"): sets the data of the directory and the DB the key's
    /// service uses.
    pub fn drift_write_data(
        &mut self,
        key: &InstanceKey,
        data: &str,
        t: Millis,
    ) -> Result<(), String> {
        let (root, db) = self.site_resources(key, t)?;
        self.write_directory(&root, data, t);
        self.write_db(&db, data);
        Ok(())
    }

    /// Removes resources that are gone at `t` from memory and storage, at most once per
    /// [`SWEEP_EVERY_MS`]; readers already ignore them, this only bounds growth.
    pub fn sweep(&mut self, t: Millis) {
        if t - self.last_sweep < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep = t;
        let gone_services: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.is_gone(t))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone_services {
            if let Some(svc) = self.services.remove(&name) {
                let past = svc.tasks.iter().filter_map(|task| task.past()).collect();
                self.remember_tasks(&name, &svc.key, past);
            }
            self.touch(RecordKey::Service(name));
        }
        let gone_dbs: Vec<String> = self
            .databases
            .iter()
            .filter(|(_, d)| d.is_gone(t))
            .map(|(n, _)| n.clone())
            .collect();
        for id in gone_dbs {
            self.remove_db(&id);
        }
        let gone_aps: Vec<String> = self
            .access_points
            .iter()
            .filter(|(_, a)| a.is_gone(t))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone_aps {
            self.remove_access_point(&id);
        }
    }

    /// Takes the records changed since the last call, serialized for storage.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let json = self.record_json(&key);
                (key.storage_key(), json)
            })
            .collect()
    }

    fn record_json(&self, key: &RecordKey) -> Option<Vec<u8>> {
        let json = match key {
            RecordKey::Service(id) => self.services.get(id).map(serde_json::to_vec),
            RecordKey::AccessPoint(id) => self.access_points.get(id).map(serde_json::to_vec),
            RecordKey::Database(id) => self.databases.get(id).map(serde_json::to_vec),
            RecordKey::Snapshot(id) => self.snapshots.get(id).map(serde_json::to_vec),
            RecordKey::LogGroup(id) => self.log_groups.get(id).map(serde_json::to_vec),
            RecordKey::Directory(id) => self.directories.get(id).map(serde_json::to_vec),
            RecordKey::Job(id) => self.jobs.get(id).map(serde_json::to_vec),
            RecordKey::TaskHistory(id) => self.task_history.get(id).map(serde_json::to_vec),
        };
        // Serializing these plain structs cannot fail; if it ever did, storing nothing is
        // better than storing garbage, and the in-memory state stays right.
        json.and_then(Result::ok)
    }

    /// Loads one stored record (inverse of `take_changes`).
    pub fn load(&mut self, storage_key: &str, json: &[u8]) -> Result<(), String> {
        let (kind, _) = storage_key
            .split_once('/')
            .ok_or_else(|| format!("malformed key {storage_key:?}"))?;
        let bad = |e: serde_json::Error| format!("record {storage_key:?}: {e}");
        match kind {
            "svc" => {
                let rec: ServiceRec = serde_json::from_slice(json).map_err(bad)?;
                self.services.insert(rec.name.clone(), rec);
            }
            "ap" => self.insert_access_point(serde_json::from_slice(json).map_err(bad)?),
            "db" => self.insert_db(serde_json::from_slice(json).map_err(bad)?),
            "snap" => self.insert_snapshot(serde_json::from_slice(json).map_err(bad)?),
            "log" => {
                let rec: LogGroupRec = serde_json::from_slice(json).map_err(bad)?;
                self.log_groups.insert(rec.name.clone(), rec);
            }
            "dir" => {
                let rec: DirRec = serde_json::from_slice(json).map_err(bad)?;
                self.directories.insert(rec.root_path.clone(), rec);
            }
            "job" => self.insert_job(serde_json::from_slice(json).map_err(bad)?),
            "hist" => {
                let rec: TaskHistory = serde_json::from_slice(json).map_err(bad)?;
                self.task_history.insert(rec.service.clone(), rec);
            }
            other => return Err(format!("unknown record kind {other:?}")),
        }
        Ok(())
    }
}
