//! Backup records, in their instance's tenant partition: `B#<instance>#<backupId>` for
//! every backup and, while one is PENDING or RUNNING, a copy at `A#<instance>#<backupId>`.
//!
//! The copy is what lets the reconciler list an instance's in-flight backups (every pass
//! does) with one strongly consistent `Query` that reads no finished record, however many
//! pile up. A backup and its copy are written in one transaction, so they never disagree.
//!
//! Creating a backup marks its instance pending (new work) in the same transaction, whose
//! condition on the instance's `ver` also checks that it exists and was not deleted since
//! it was read. The end of an instance's last in-flight backup takes the instance out of
//! the pending index if its status already says it converged (`rules`).

use super::item::{BackupItem, Item, s};
use super::schema::*;
use super::*;
use crate::model::Rejection;
use crate::store::rules::{self, fresh_token};

impl DynamoStore {
    pub(super) async fn insert_backup(&self, backup: Backup) -> StoreResult<Backup> {
        rules::check_backup_id(&backup.backup_id)?;
        let key = backup.key();
        let record = BackupItem {
            backup: backup.clone(),
            ver: 1,
        };
        let mut contention = Contention::default();
        loop {
            let mut instance = self
                .get_instance(&key)
                .await?
                .ok_or_else(|| StoreError::NotFound(key.clone()))?;
            if instance.instance.metadata.deletion_requested_at.is_some() {
                return Err(StoreError::Rejected(Rejection::InvalidTransition(format!(
                    "instance {key} is being deleted; a deleted instance cannot be backed up"
                ))));
            }
            let read_ver = instance.ver;
            instance.ver += 1;
            instance.pending = Some(fresh_token());
            let writes = vec![
                Write::Put(instance.to_item()?, Some(Condition::version(read_ver))),
                Write::Put(record.to_item(KIND_BACKUP)?, Some(Condition::absent())),
                Write::Put(record.to_item(KIND_ACTIVE_BACKUP)?, None),
            ];
            match self.transact(writes).await {
                Ok(()) => return Ok(backup),
                Err(f) if f.condition_failed_at(1) => {
                    return Err(StoreError::Conflict(format!(
                        "backup {} of instance {key} already exists",
                        backup.backup_id
                    )));
                }
                Err(f) if f.is_contention() => contention.wait("create_backup").await?,
                Err(other) => return Err(other.into_store_error("create_backup")),
            }
        }
    }

    pub(super) async fn read_backup(
        &self,
        key: &InstanceKey,
        backup_id: &str,
    ) -> StoreResult<Option<BackupItem>> {
        match self.get_item(backup_key(key, backup_id, false)).await? {
            Some(item) => BackupItem::from_item(&item).map(Some),
            None => Ok(None),
        }
    }

    pub(super) async fn query_backups(
        &self,
        key: &InstanceKey,
        page: BackupPageRequest,
    ) -> StoreResult<BackupPage> {
        let limit = page.limit.max(1);
        let prefix = if page.active_only {
            active_prefix(key)
        } else {
            backups_prefix(key)
        };
        let start = page
            .after
            .as_deref()
            .map(|after| backup_key(key, after, page.active_only));
        let items = self
            .query_all(prefix_query(key, &prefix, start), limit + 1)
            .await?;
        let backups = items
            .iter()
            .map(|i| BackupItem::from_item(i).map(|b| b.backup))
            .collect::<StoreResult<Vec<_>>>()?;
        let (items, more) = split_page(backups, limit);
        let next = items.last().map(|b| b.backup_id.clone()).filter(|_| more);
        Ok(BackupPage { items, next })
    }

    pub(super) async fn has_active_backup(&self, key: &InstanceKey) -> StoreResult<bool> {
        let query = prefix_query(key, &active_prefix(key), None);
        Ok(!self.query_all(query, 1).await?.is_empty())
    }

    pub(super) async fn replace_backup(&self, backup: Backup) -> StoreResult<()> {
        rules::check_backup_id(&backup.backup_id)?;
        let key = backup.key();
        let id = backup.backup_id.clone();
        let mut contention = Contention::default();
        loop {
            let stored = self
                .read_backup(&key, &id)
                .await?
                .ok_or_else(|| StoreError::BackupNotFound(key.clone(), id.clone()))?;
            let Some(after) = rules::backup_update(&stored.backup, backup.clone())? else {
                return Ok(());
            };
            let record = BackupItem {
                backup: after,
                ver: stored.ver + 1,
            };
            let mut writes = vec![Write::Put(
                record.to_item(KIND_BACKUP)?,
                Some(Condition::version(stored.ver)),
            )];
            if record.backup.status.is_final() {
                writes.push(Write::Delete(backup_key(&key, &id, true), None));
                writes.extend(self.clear_pending_after_backup(&key, &id).await?);
            } else {
                writes.push(Write::Put(record.to_item(KIND_ACTIVE_BACKUP)?, None));
            }
            match self.transact(writes).await {
                Ok(()) => return Ok(()),
                Err(f) if f.is_contention() => contention.wait("update_backup").await?,
                Err(other) => return Err(other.into_store_error("update_backup")),
            }
        }
    }

    /// The instance write (if any) that goes with backup `finished` ending: out of the
    /// pending index if nothing else is left to do. Conditioned on the instance's `ver`, so a
    /// backup created meanwhile (which bumps it) makes the transaction retry.
    async fn clear_pending_after_backup(
        &self,
        key: &InstanceKey,
        finished: &str,
    ) -> StoreResult<Option<Write>> {
        let Some(mut instance) = self.get_instance(key).await? else {
            return Ok(None);
        };
        if instance.pending.is_none() {
            return Ok(None);
        }
        let active = self
            .query_all(prefix_query(key, &active_prefix(key), None), 2)
            .await?;
        let finished_sk = active_sk(key, finished);
        let others = active
            .iter()
            .any(|i| i.get(SK).and_then(|v| v.as_s().ok()) != Some(&finished_sk));
        if !rules::clears_pending_after_backup(&instance.instance, others) {
            return Ok(None);
        }
        let read_ver = instance.ver;
        instance.ver += 1;
        instance.pending = None;
        Ok(Some(Write::Put(
            instance.to_item()?,
            Some(Condition::version(read_ver)),
        )))
    }
}

/// The key of a backup item (`active`: its in-flight copy).
fn backup_key(key: &InstanceKey, backup_id: &str, active: bool) -> Item {
    let sk = if active {
        active_sk(key, backup_id)
    } else {
        backup_sk(key, backup_id)
    };
    Item::from([
        (PK.into(), s(tenant_pk(key.tenant_id.as_str()))),
        (SK.into(), s(sk)),
    ])
}

/// The items of `key`'s tenant partition whose sort key starts with `prefix`, in order.
fn prefix_query(key: &InstanceKey, prefix: &str, start: Option<Item>) -> Query {
    Query {
        index: None,
        condition: Condition::new("#pk = :pk AND begins_with(#sk, :prefix)")
            .name("#pk", PK)
            .name("#sk", SK)
            .value(":pk", s(tenant_pk(key.tenant_id.as_str())))
            .value(":prefix", s(prefix)),
        start,
    }
}
