//! Instance records: reads, listings (tenant, every instance, one shard, the pending
//! index) and the conditional writes.
//!
//! Access paths: `get` is a `GetItem`; a tenant's list is one `Query` of its partition
//! (`T#<tenant>`, `begins_with(sk, "I#")`); every instance is a `Query` of
//! `key-order-index`, a shard a `Query` of `shard-index`, both keys only, then a
//! `BatchGetItem` of the page; `pending` is a `Query` of `pending-index`.

use std::collections::BTreeSet;

use futures::StreamExt;

use super::error::WriteFailure;
use super::item::{InstanceItem, Item, instance_key, n, number, path_key, s, string};
use super::schema::*;
use super::*;
use crate::store::rules::{self, fresh_token};

/// How many instances `request_reconcile` marks at once.
const MARK_CONCURRENCY: usize = 16;

impl DynamoStore {
    pub(super) async fn get_instance(
        &self,
        key: &InstanceKey,
    ) -> StoreResult<Option<InstanceItem>> {
        match self.get_item(instance_key(key)).await? {
            Some(item) => InstanceItem::from_item(&item).map(Some),
            None => Ok(None),
        }
    }

    pub(super) async fn list_tenant(
        &self,
        tenant: &TenantId,
        page: PageRequest,
    ) -> StoreResult<Page> {
        let limit = page.limit.max(1);
        // See the embedded store: a tenant's keys are ["t/", "t0"); a cursor of another
        // tenant below that range starts at the beginning, above it there is nothing.
        let start = match &page.after {
            Some(after) if after.tenant_id == *tenant => Some(instance_key(after)),
            Some(after) if after.path() > format!("{tenant}/") => return Ok(empty_page()),
            _ => None,
        };
        let query = Query {
            index: None,
            condition: Condition::new("#pk = :pk AND begins_with(#sk, :prefix)")
                .name("#pk", PK)
                .name("#sk", SK)
                .value(":pk", s(tenant_pk(tenant.as_str())))
                .value(":prefix", s("I#")),
            start,
        };
        let items = self.query_all(query, limit + 1).await?;
        let instances = items
            .iter()
            .map(|i| InstanceItem::from_item(i).map(|i| i.instance))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(instances, limit))
    }

    /// Every instance in key order, from `key-order-index` (no Scan: a Scan cannot page in
    /// key order, and would read backups and leases too).
    pub(super) async fn list_all(&self, page: PageRequest) -> StoreResult<Page> {
        let condition = Condition::new("#entity = :entity")
            .name("#entity", ENTITY)
            .value(":entity", s(ENTITY_INSTANCE));
        let start = page.after.as_ref().map(|after| {
            let mut start = index_start(after);
            start.insert(ENTITY.into(), s(ENTITY_INSTANCE));
            start
        });
        self.list_index(KEY_ORDER_INDEX, condition, start, page.limit.max(1))
            .await
    }

    pub(super) async fn list_of_shard(&self, shard: u32, page: PageRequest) -> StoreResult<Page> {
        let condition = Condition::new("#shard = :shard")
            .name("#shard", SHARD)
            .value(":shard", n(shard));
        let start = page.after.as_ref().map(|after| {
            let mut start = index_start(after);
            start.insert(SHARD.into(), n(shard));
            start
        });
        self.list_index(SHARD_INDEX, condition, start, page.limit.max(1))
            .await
    }

    /// A page of a keys-only index, then the records themselves (strongly consistent).
    async fn list_index(
        &self,
        index: &'static str,
        condition: Condition,
        start: Option<Item>,
        limit: usize,
    ) -> StoreResult<Page> {
        let query = Query {
            index: Some(index),
            condition,
            start,
        };
        let entries = self.query_all(query, limit + 1).await?;
        let keys = entries
            .iter()
            .map(path_key)
            .collect::<StoreResult<Vec<_>>>()?;
        let (keys, more) = split_page(keys, limit);
        let next = keys.last().cloned().filter(|_| more);
        let items = self
            .batch_get(keys.iter().map(instance_key).collect())
            .await?;
        let mut instances = items
            .iter()
            .map(|i| InstanceItem::from_item(i).map(|i| i.instance))
            .collect::<StoreResult<Vec<_>>>()?;
        instances.sort_by_key(|i| i.key().path());
        Ok(Page {
            items: instances,
            next,
        })
    }

    pub(super) async fn query_pending(&self, limit: usize) -> StoreResult<Vec<PendingItem>> {
        let query = Query {
            index: Some(PENDING_INDEX),
            condition: Condition::new("#pending = :pending")
                .name("#pending", PENDING)
                .value(":pending", s(PENDING_VALUE)),
            start: None,
        };
        let entries = self.query_all(query, limit).await?;
        entries
            .iter()
            .map(|e| {
                Ok(PendingItem {
                    key: path_key(e)?,
                    shard: number(e, SHARD)?,
                    marker: string(e, PENDING_MARKER)?.to_owned(),
                })
            })
            .collect()
    }

    pub(super) async fn create_instance(&self, mut instance: Instance) -> StoreResult<Instance> {
        instance.metadata.generation = 1;
        instance.metadata.updated_at = instance.metadata.created_at;
        let mut contention = Contention::default();
        loop {
            instance.metadata.resource_version = fresh_token();
            let item = InstanceItem {
                instance: instance.clone(),
                ver: 1,
                pending: Some(fresh_token()),
            };
            match self.put(item.to_item()?, Condition::absent()).await {
                Ok(()) => return Ok(instance),
                Err(WriteFailure::Condition(Some(existing))) => {
                    let existing = InstanceItem::from_item(&existing)?.instance;
                    return Err(StoreError::AlreadyExists(Box::new(existing)));
                }
                // The failure did not say what is there: look.
                Err(WriteFailure::Condition(None)) => {
                    if let Some(existing) = self.get_instance(&instance.key()).await? {
                        return Err(StoreError::AlreadyExists(Box::new(existing.instance)));
                    }
                    // Deleted in between: try again.
                    contention.wait("create").await?;
                }
                Err(other) => return Err(other.into_store_error("create")),
            }
        }
    }

    pub(super) async fn update_instance(
        &self,
        key: &InstanceKey,
        expected_version: Option<&str>,
        mutate: Mutation<'_>,
    ) -> StoreResult<Updated> {
        let mut contention = Contention::default();
        loop {
            let current = self
                .get_instance(key)
                .await?
                .ok_or_else(|| StoreError::NotFound(key.clone()))?;
            if let Some(expected) = expected_version
                && expected != current.instance.metadata.resource_version
            {
                return Err(StoreError::PreconditionFailed(Box::new(current.instance)));
            }
            let Some(mut after) =
                rules::apply(&current.instance, mutate).map_err(StoreError::Rejected)?
            else {
                return Ok(Updated {
                    instance: current.instance,
                    change: Change::Unchanged,
                });
            };
            after.metadata.resource_version = fresh_token();
            let pending = rules::pending_after_update(&after, current.pending.clone());
            let item = InstanceItem {
                instance: after.clone(),
                ver: current.ver + 1,
                pending,
            };
            match self
                .put(item.to_item()?, Condition::version(current.ver))
                .await
            {
                Ok(()) => {
                    return Ok(Updated {
                        instance: after,
                        change: Change::Changed,
                    });
                }
                // Changed (or deleted) since we read it: read again, mutate again.
                Err(f) if f.is_contention() => contention.wait("update").await?,
                Err(other) => return Err(other.into_store_error("update")),
            }
        }
    }

    /// The status write, and with it (in the same transaction) the append of `events`.
    pub(super) async fn write_instance_status(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
        fence: Option<Fence>,
        events: &[Event],
    ) -> StoreResult<()> {
        let mut contention = Contention::default();
        loop {
            let mut current = self
                .get_instance(key)
                .await?
                .ok_or_else(|| StoreError::NotFound(key.clone()))?;
            let generation = current.instance.metadata.generation;
            if generation < for_generation {
                return Err(StoreError::StaleStatus {
                    for_generation,
                    current: generation,
                });
            }
            let inst = &mut current.instance;
            let handled = inst.metadata.reconcile_request.as_ref().is_some_and(|r| {
                status.last_handled_reconcile_request.as_ref() == Some(&r.request_id)
            });
            if handled {
                inst.metadata.reconcile_request = None;
            }
            inst.status = status.clone();
            // Backups matter only when nothing else keeps the instance pending: spare the
            // query on the (many) passes of an instance still converging.
            let active =
                !rules::needs_reconcile(inst, false) && self.has_active_backup(key).await?;
            let pending = rules::pending_after_status(inst, active, current.pending.clone());
            let item = InstanceItem {
                instance: current.instance,
                ver: current.ver + 1,
                pending,
            }
            .to_item()?;
            let written = if fence.is_none() && events.is_empty() {
                self.put(item, Condition::version(current.ver)).await
            } else {
                // The lease check, the status and the events are one atomic transaction: a
                // replica whose lease was taken over cannot slip a write in between, and a
                // reader never sees the status without its events.
                let mut writes = Vec::with_capacity(3);
                if let Some(fence) = fence {
                    writes.push(Write::Check(lease_key(fence.shard), fence_condition(fence)));
                }
                writes.push(Write::Put(item, Some(Condition::version(current.ver))));
                if !events.is_empty() {
                    writes.push(self.append_write(key, events).await?);
                }
                self.transact(writes).await
            };
            match written {
                Ok(()) => return Ok(()),
                Err(f) if f.condition_failed_at(0) && fence.is_some() => {
                    let fence = fence.expect("checked");
                    return Err(StoreError::Fenced {
                        shard: fence.shard,
                        token: fence.token,
                    });
                }
                Err(f) if f.is_contention() => contention.wait("write_status").await?,
                Err(other) => return Err(other.into_store_error("write_status")),
            }
        }
    }

    pub(super) async fn mark_reconcile(
        &self,
        keys: &[InstanceKey],
        request: &ReconcileRequest,
    ) -> StoreResult<usize> {
        // A key named twice is still one instance marked.
        let keys: BTreeSet<InstanceKey> = keys.iter().cloned().collect();
        let mut marks = futures::stream::iter(keys)
            .map(|key| async move { self.mark_one(&key, request).await })
            .buffer_unordered(MARK_CONCURRENCY);
        let mut marked = 0;
        while let Some(result) = marks.next().await {
            marked += usize::from(result?);
        }
        Ok(marked)
    }

    /// Records `request` on one instance; `false` if it does not exist.
    async fn mark_one(&self, key: &InstanceKey, request: &ReconcileRequest) -> StoreResult<bool> {
        let mut contention = Contention::default();
        loop {
            let Some(mut current) = self.get_instance(key).await? else {
                return Ok(false);
            };
            current.instance.metadata.reconcile_request = Some(request.clone());
            let item = InstanceItem {
                instance: current.instance,
                ver: current.ver + 1,
                pending: Some(fresh_token()),
            };
            match self
                .put(item.to_item()?, Condition::version(current.ver))
                .await
            {
                Ok(()) => return Ok(true),
                Err(f) if f.is_contention() => contention.wait("request_reconcile").await?,
                Err(other) => return Err(other.into_store_error("request_reconcile")),
            }
        }
    }
}

/// The table keys and `path` of an instance: with the index's partition key added, the
/// `ExclusiveStartKey` of an index query that continues after `after`.
fn index_start(after: &InstanceKey) -> Item {
    let mut start = instance_key(after);
    start.insert(PATH.into(), s(after.path()));
    start
}

pub(super) fn lease_key(shard: u32) -> Item {
    Item::from([(PK.into(), s(LEASES_PK)), (SK.into(), s(lease_sk(shard)))])
}

/// `rules::fence_holds` as a condition on the lease item: the same token, not released.
pub(super) fn fence_condition(fence: Fence) -> Condition {
    Condition::new("#token = :token AND #holder <> :released")
        .name("#token", TOKEN)
        .name("#holder", HOLDER)
        .value(":token", n(fence.token))
        .value(":released", s(""))
}

fn page_of(instances: Vec<Instance>, limit: usize) -> Page {
    let (items, more) = split_page(instances, limit);
    let next = items.last().map(Instance::key).filter(|_| more);
    Page { items, next }
}

fn empty_page() -> Page {
    Page {
        items: vec![],
        next: None,
    }
}
