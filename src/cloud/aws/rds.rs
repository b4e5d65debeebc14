//! RDS: one DB instance per instance and data epoch (class by tier, storage encrypted,
//! deletion protection on, master password generated and kept by RDS in Secrets Manager),
//! and manual snapshots (backup, final, retirement).
//!
//! Observation is batched: DescribeDBInstances and DescribeDBSnapshots with a
//! `db-instance-id` filter of up to 100 identifiers each. Identifiers derive from the
//! instance key, except those of data epochs (restores); the [`RdsIndex`] remembers which
//! identifiers belong to which instance: the ones this process creates, plus what a
//! periodic *discovery* (every DB instance and manual snapshot of the account, paged)
//! finds by tags — so a restarted controller, or another replica's restore, is seen.
//!
//! Invariants:
//! * a database is looked up by identifier before it is created (RDS has no client
//!   tokens); "already exists" is success;
//! * a database is deleted only after its final (or retirement) snapshot is available,
//!   checked here again, and only after its deletion protection is lifted; the final
//!   snapshot is the one the planner took, so the delete itself skips RDS's own.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_rds::types::{DbInstance, DbSnapshot, Filter, Tag};
use tokio::time::Instant;

use super::AwsCloud;
use super::call::{Api, AwsResult};
use super::ecs::in_progress;
use super::errors::AwsFailure;
use super::tagged_key;
use crate::cloud::names::{ResourceNames, tags};
use crate::cloud::{
    CloudError, DbState, ObservedDatabase, ObservedSnapshot, SnapshotState, StepOutcome,
};
use crate::model::InstanceKey;

const DESCRIBE_DB_INSTANCES: Api = Api::new("rds", "DescribeDBInstances");
const DESCRIBE_DB_SNAPSHOTS: Api = Api::new("rds", "DescribeDBSnapshots");
const CREATE_DB_INSTANCE: Api = Api::new("rds", "CreateDBInstance");
const RESTORE_DB_INSTANCE: Api = Api::new("rds", "RestoreDBInstanceFromDBSnapshot");
const MODIFY_DB_INSTANCE: Api = Api::new("rds", "ModifyDBInstance");
const START_DB_INSTANCE: Api = Api::new("rds", "StartDBInstance");
const STOP_DB_INSTANCE: Api = Api::new("rds", "StopDBInstance");
const CREATE_DB_SNAPSHOT: Api = Api::new("rds", "CreateDBSnapshot");
const DELETE_DB_INSTANCE: Api = Api::new("rds", "DeleteDBInstance");

/// Identifiers per `db-instance-id` filter (and records per page).
pub const IDS_PER_CALL: usize = 100;

/// The database WordPress uses inside the instance.
pub const DB_NAME: &str = "wordpress";

/// Which DB identifiers belong to which instance (see the module docs).
#[derive(Debug, Default)]
pub struct RdsIndex {
    ids: HashMap<InstanceKey, BTreeSet<String>>,
    discovered_at: Option<Instant>,
}

impl RdsIndex {
    fn remember(&mut self, key: InstanceKey, identifier: &str) {
        self.ids
            .entry(key)
            .or_default()
            .insert(identifier.to_owned());
    }

    /// The identifiers to describe for `key`: its base one and every known epoch's.
    fn ids_of(&self, key: &InstanceKey) -> BTreeSet<String> {
        let mut ids = self.ids.get(key).cloned().unwrap_or_default();
        ids.insert(ResourceNames::for_key(key).database(None));
        ids
    }
}

/// The databases and snapshots of each instance.
pub type RdsView = HashMap<InstanceKey, (Vec<ObservedDatabase>, Vec<ObservedSnapshot>)>;

impl AwsCloud {
    /// The databases and (when `snapshots`) the snapshots of `keys`, found by identifier
    /// and attributed by tags.
    pub(super) async fn observe_rds(
        &self,
        keys: &[InstanceKey],
        snapshots: bool,
    ) -> AwsResult<RdsView> {
        self.discover_if_due().await?;
        let ids: BTreeSet<String> = {
            let index = self.lock(&self.rds_index);
            keys.iter().flat_map(|k| index.ids_of(k)).collect()
        };
        let ids: Vec<String> = ids.into_iter().collect();
        let mut view = RdsView::new();
        for chunk in ids.chunks(IDS_PER_CALL) {
            for db in self.describe_dbs(Some(chunk)).await? {
                if let Some(key) = db_key(db.tag_list())
                    && let Some(observed) = self.observed_db(&db)
                {
                    view.entry(key).or_default().0.push(observed);
                }
            }
            if !snapshots {
                continue;
            }
            for snap in self.describe_snapshots(Some(chunk)).await? {
                if let Some(key) = db_key(snap.tag_list()) {
                    view.entry(key)
                        .or_default()
                        .1
                        .push(observed_snapshot(&snap));
                }
            }
        }
        for (dbs, snaps) in view.values_mut() {
            dbs.sort_by(|a, b| a.identifier.cmp(&b.identifier));
            snaps.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(view)
    }

    /// Lists everything once per `discovery_interval` to learn identifiers of data epochs.
    /// One discovery at a time: batches observed together wait for it instead of each
    /// listing the account again.
    async fn discover_if_due(&self) -> AwsResult<()> {
        let due = || {
            self.lock(&self.rds_index)
                .discovered_at
                .is_none_or(|at| at.elapsed() >= self.settings.discovery_interval)
        };
        if !due() {
            return Ok(());
        }
        let _single = self.discovering.lock().await;
        if !due() {
            return Ok(());
        }
        let dbs = self.describe_dbs(None).await?;
        let snapshots = self.describe_snapshots(None).await?;
        let mut index = self.lock(&self.rds_index);
        for db in &dbs {
            if let (Some(key), Some(id)) = (db_key(db.tag_list()), db.db_instance_identifier()) {
                index.remember(key, id);
            }
        }
        for snap in &snapshots {
            if let (Some(key), Some(id)) = (db_key(snap.tag_list()), snap.db_instance_identifier())
            {
                index.remember(key, id);
            }
        }
        index.discovered_at = Some(Instant::now());
        Ok(())
    }

    /// DescribeDBInstances of `ids` (all of them when `None`), every page.
    async fn describe_dbs(&self, ids: Option<&[String]>) -> AwsResult<Vec<DbInstance>> {
        let filter = ids.map(id_filter);
        let mut all = Vec::new();
        let mut marker = None;
        loop {
            let request = self
                .clients
                .rds
                .describe_db_instances()
                .set_filters(filter.clone().map(|f| vec![f]))
                .max_records(IDS_PER_CALL as i32)
                .set_marker(marker)
                .send();
            let out = self.caller.send(DESCRIBE_DB_INSTANCES, request).await?;
            all.extend(out.db_instances.unwrap_or_default());
            marker = out.marker;
            if marker.is_none() {
                return Ok(all);
            }
        }
    }

    /// Manual snapshots of DBs `ids` (all of them when `None`), every page.
    async fn describe_snapshots(&self, ids: Option<&[String]>) -> AwsResult<Vec<DbSnapshot>> {
        let filter = ids.map(id_filter);
        let mut all = Vec::new();
        let mut marker = None;
        loop {
            let request = self
                .clients
                .rds
                .describe_db_snapshots()
                .snapshot_type("manual")
                .set_filters(filter.clone().map(|f| vec![f]))
                .max_records(IDS_PER_CALL as i32)
                .set_marker(marker)
                .send();
            let out = self.caller.send(DESCRIBE_DB_SNAPSHOTS, request).await?;
            all.extend(out.db_snapshots.unwrap_or_default());
            marker = out.marker;
            if marker.is_none() {
                return Ok(all);
            }
        }
    }

    /// The DB `identifier`, if it exists.
    async fn describe_db(&self, identifier: &str) -> AwsResult<Option<DbInstance>> {
        let dbs = self.describe_dbs(Some(&[identifier.to_owned()])).await?;
        Ok(dbs
            .into_iter()
            .find(|db| db.db_instance_identifier() == Some(identifier)))
    }

    fn observed_db(&self, db: &DbInstance) -> Option<ObservedDatabase> {
        let identifier = db.db_instance_identifier()?;
        if let Some(secret) = db.master_user_secret().and_then(|s| s.secret_arn()) {
            self.lock(&self.db_secrets)
                .insert(identifier.to_owned(), secret.to_owned());
        }
        Some(ObservedDatabase {
            identifier: identifier.to_owned(),
            arn: db.db_instance_arn().unwrap_or_default().to_owned(),
            state: DbState::parse(db.db_instance_status().unwrap_or("creating")),
            endpoint: db.endpoint().and_then(|e| e.address()).map(str::to_owned),
            instance_class: db.db_instance_class().unwrap_or_default().to_owned(),
        })
    }

    /// The ARN of the RDS-managed master secret of the DB behind `endpoint`.
    pub(super) async fn db_secret_arn(&self, endpoint: &str) -> AwsResult<Option<String>> {
        let identifier = endpoint.split('.').next().unwrap_or_default();
        if identifier.is_empty() {
            return Ok(None);
        }
        if let Some(arn) = self.lock(&self.db_secrets).get(identifier) {
            return Ok(Some(arn.clone()));
        }
        let db = self.describe_db(identifier).await?;
        Ok(db
            .as_ref()
            .and_then(|db| db.master_user_secret())
            .and_then(|s| s.secret_arn())
            .map(str::to_owned))
    }

    pub(super) async fn create_database(
        &self,
        key: &InstanceKey,
        identifier: &str,
        class: &str,
        storage_gb: u32,
    ) -> AwsResult<StepOutcome> {
        self.lock(&self.rds_index).remember(key.clone(), identifier);
        if self.describe_db(identifier).await?.is_some() {
            return Ok(StepOutcome::Done);
        }
        let s = &self.settings;
        let request = self
            .clients
            .rds
            .create_db_instance()
            .db_instance_identifier(identifier)
            .db_instance_class(class)
            .engine(&s.db_engine)
            .set_engine_version(s.db_engine_version.clone())
            .allocated_storage(i32::try_from(storage_gb).unwrap_or(i32::MAX))
            .storage_type("gp3")
            .db_name(DB_NAME)
            .master_username(&s.db_master_username)
            .manage_master_user_password(true)
            .set_master_user_secret_kms_key_id(s.db_secret_kms_key_id.clone())
            .storage_encrypted(true)
            .deletion_protection(true)
            .publicly_accessible(false)
            .copy_tags_to_snapshot(true)
            .set_db_subnet_group_name(s.db_subnet_group.clone())
            .set_vpc_security_group_ids(Some(s.db_security_groups.clone()))
            .set_tags(Some(rds_tags(key)))
            .send();
        match self.caller.send(CREATE_DB_INSTANCE, request).await {
            Ok(_) => Ok(StepOutcome::Done),
            Err(f) if f.is(&["DBInstanceAlreadyExists", "DBInstanceAlreadyExistsFault"]) => {
                Ok(StepOutcome::Done)
            }
            Err(f) => Err(f),
        }
    }

    /// RestoreDBInstanceFromDBSnapshot into a new DB (RDS cannot restore in place).
    pub(super) async fn restore_database(
        &self,
        key: &InstanceKey,
        identifier: &str,
        snapshot_id: &str,
        class: &str,
    ) -> AwsResult<StepOutcome> {
        self.lock(&self.rds_index).remember(key.clone(), identifier);
        if self.describe_db(identifier).await?.is_some() {
            return Ok(StepOutcome::Done);
        }
        let s = &self.settings;
        let request = self
            .clients
            .rds
            .restore_db_instance_from_db_snapshot()
            .db_instance_identifier(identifier)
            .db_snapshot_identifier(snapshot_id)
            .db_instance_class(class)
            .manage_master_user_password(true)
            .set_master_user_secret_kms_key_id(s.db_secret_kms_key_id.clone())
            .deletion_protection(true)
            .publicly_accessible(false)
            .copy_tags_to_snapshot(true)
            .set_db_subnet_group_name(s.db_subnet_group.clone())
            .set_vpc_security_group_ids(Some(s.db_security_groups.clone()))
            .set_tags(Some(rds_tags(key)))
            .send();
        match self.caller.send(RESTORE_DB_INSTANCE, request).await {
            Ok(_) => Ok(StepOutcome::Done),
            Err(f) if f.is(&["DBInstanceAlreadyExists", "DBInstanceAlreadyExistsFault"]) => {
                Ok(StepOutcome::Done)
            }
            Err(f) => Err(f),
        }
    }

    pub(super) async fn modify_database(
        &self,
        identifier: &str,
        class: &str,
    ) -> AwsResult<StepOutcome> {
        let request = self
            .clients
            .rds
            .modify_db_instance()
            .db_instance_identifier(identifier)
            .db_instance_class(class)
            .apply_immediately(true)
            .send();
        self.caller.send(MODIFY_DB_INSTANCE, request).await?;
        Ok(StepOutcome::Done)
    }

    /// StartDBInstance; already available or starting is success.
    pub(super) async fn start_database(&self, identifier: &str) -> AwsResult<StepOutcome> {
        let request = self
            .clients
            .rds
            .start_db_instance()
            .db_instance_identifier(identifier)
            .send();
        let result = self.caller.send(START_DB_INSTANCE, request).await;
        self.settled_if(identifier, result, &[DbState::Available, DbState::Starting])
            .await
    }

    /// StopDBInstance; already stopped or stopping is success.
    pub(super) async fn stop_database(&self, identifier: &str) -> AwsResult<StepOutcome> {
        let request = self
            .clients
            .rds
            .stop_db_instance()
            .db_instance_identifier(identifier)
            .send();
        let result = self.caller.send(STOP_DB_INSTANCE, request).await;
        self.settled_if(identifier, result, &[DbState::Stopped, DbState::Stopping])
            .await
    }

    /// A start/stop refused for the DB's state succeeded if the DB is where it was sent.
    async fn settled_if<T>(
        &self,
        identifier: &str,
        result: AwsResult<T>,
        fine: &[DbState],
    ) -> AwsResult<StepOutcome> {
        match result {
            Ok(_) => Ok(StepOutcome::Done),
            Err(f) if f.is(&["InvalidDBInstanceState", "InvalidDBInstanceStateFault"]) => {
                let state = self
                    .describe_db(identifier)
                    .await?
                    .and_then(|db| db.db_instance_status().map(DbState::parse));
                match state {
                    Some(s) if fine.contains(&s) => Ok(StepOutcome::Done),
                    _ => Err(f),
                }
            }
            Err(f) => Err(f),
        }
    }

    /// CreateDBSnapshot, unless a snapshot of that name exists.
    pub(super) async fn snapshot_database(
        &self,
        key: &InstanceKey,
        identifier: &str,
        snapshot_id: &str,
    ) -> AwsResult<StepOutcome> {
        if self.snapshot(snapshot_id).await?.is_some() {
            return Ok(StepOutcome::Done);
        }
        let request = self
            .clients
            .rds
            .create_db_snapshot()
            .db_instance_identifier(identifier)
            .db_snapshot_identifier(snapshot_id)
            .set_tags(Some(rds_tags(key)))
            .send();
        match self.caller.send(CREATE_DB_SNAPSHOT, request).await {
            Ok(_) => Ok(StepOutcome::Done),
            Err(f) if f.is(&["DBSnapshotAlreadyExists", "DBSnapshotAlreadyExistsFault"]) => {
                Ok(StepOutcome::Done)
            }
            Err(f) => Err(f),
        }
    }

    async fn snapshot(&self, snapshot_id: &str) -> AwsResult<Option<DbSnapshot>> {
        let request = self
            .clients
            .rds
            .describe_db_snapshots()
            .db_snapshot_identifier(snapshot_id)
            .send();
        match self.caller.send(DESCRIBE_DB_SNAPSHOTS, request).await {
            Ok(out) => Ok(out.db_snapshots.unwrap_or_default().into_iter().next()),
            Err(f) if f.is(&["DBSnapshotNotFound", "DBSnapshotNotFoundFault"]) => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// Lifts deletion protection, then deletes the DB. Refuses (permanently) while its
    /// snapshot `final_snapshot_id` is not available: data is never deleted unsaved.
    pub(super) async fn delete_database(
        &self,
        identifier: &str,
        final_snapshot_id: &str,
    ) -> AwsResult<StepOutcome> {
        let Some(db) = self.describe_db(identifier).await? else {
            return Ok(StepOutcome::Done);
        };
        let state = DbState::parse(db.db_instance_status().unwrap_or_default());
        if state == DbState::Deleting {
            return Ok(StepOutcome::Done);
        }
        let saved = self.snapshot(final_snapshot_id).await?.is_some_and(|s| {
            s.db_instance_identifier() == Some(identifier) && s.status() == Some("available")
        });
        if !saved {
            return Err(AwsFailure {
                code: Some("FinalSnapshotMissing".into()),
                error: CloudError::Permanent {
                    service: DELETE_DB_INSTANCE.service,
                    operation: DELETE_DB_INSTANCE.operation,
                    code: "FinalSnapshotMissing".into(),
                    message: format!(
                        "refusing to delete {identifier}: final snapshot {final_snapshot_id} \
                         is not available"
                    ),
                },
            });
        }
        if db.deletion_protection() == Some(true) {
            self.lift_deletion_protection(identifier, &state).await?;
        }
        let request = self
            .clients
            .rds
            .delete_db_instance()
            .db_instance_identifier(identifier)
            .skip_final_snapshot(true)
            .send();
        match self.caller.send(DELETE_DB_INSTANCE, request).await {
            Ok(_) => Ok(StepOutcome::Done),
            Err(f) if f.is(&["DBInstanceNotFound", "DBInstanceNotFoundFault"]) => {
                Ok(StepOutcome::Done)
            }
            Err(f) => Err(f),
        }
    }

    /// ModifyDBInstance(DeletionProtection=false). RDS may refuse to modify a stopped DB;
    /// then it is started, and the delete is retried once it is available.
    async fn lift_deletion_protection(&self, identifier: &str, state: &DbState) -> AwsResult<()> {
        let request = self
            .clients
            .rds
            .modify_db_instance()
            .db_instance_identifier(identifier)
            .deletion_protection(false)
            .apply_immediately(true)
            .send();
        match self.caller.send(MODIFY_DB_INSTANCE, request).await {
            Ok(_) => Ok(()),
            Err(f)
                if *state == DbState::Stopped
                    && f.is(&["InvalidDBInstanceState", "InvalidDBInstanceStateFault"]) =>
            {
                self.start_database(identifier).await?;
                Err(in_progress(
                    DELETE_DB_INSTANCE,
                    format!(
                        "starting {identifier} to lift its deletion protection before deleting it"
                    ),
                ))
            }
            Err(f) => Err(f),
        }
    }
}

fn id_filter(ids: &[String]) -> Filter {
    Filter::builder()
        .name("db-instance-id")
        .set_values(Some(ids.to_vec()))
        .build()
}

fn db_key(tags: &[Tag]) -> Option<InstanceKey> {
    tagged_key(tags.iter().map(|t| (t.key(), t.value())))
}

fn observed_snapshot(s: &DbSnapshot) -> ObservedSnapshot {
    let state = match s.status() {
        Some("available") => SnapshotState::Available,
        Some("failed" | "error") => SnapshotState::Failed,
        _ => SnapshotState::Creating,
    };
    ObservedSnapshot {
        id: s.db_snapshot_identifier().unwrap_or_default().to_owned(),
        arn: s.db_snapshot_arn().unwrap_or_default().to_owned(),
        state,
        db_identifier: s.db_instance_identifier().unwrap_or_default().to_owned(),
    }
}

fn rds_tags(key: &InstanceKey) -> Vec<Tag> {
    tags(key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}
