//! The `Store` on DynamoDB (`serve --store dynamodb --table NAME`): what several controller
//! replicas share. The only module that imports `aws-sdk-dynamodb`.
//!
//! Layout: `schema.rs` (keys, indexes, `store init`), `item.rs` (records ↔ items),
//! `error.rs` (SDK errors → `StoreError`), and one file per group of trait methods
//! (`instances.rs`, `backups.rs`, `events.rs`, `leases.rs`). The decisions (mutations, the pending
//! rule, lease hand-over) are `store::rules`, shared with the embedded store.
//!
//! Invariants:
//! * every write is conditional. Items carry a version `ver`; a read-modify-write puts the
//!   item back only if `ver` is what it read, and re-reads and retries (re-running the
//!   caller's mutation) when another writer got there first. A `ConditionalCheckFailed` is
//!   therefore never shown to a user unless it is a real conflict: a taken key
//!   (`AlreadyExists`), a stale `If-Match` (`PreconditionFailed`), a fenced status write
//!   (`Fenced`), a taken backup id (`Conflict`);
//! * writes that must happen together are one `TransactWriteItems`: a backup and its
//!   in-flight copy and the instance's pending mark; a status write, the check of its shard
//!   lease's token and the pass's events; an event append and the check that its instance
//!   exists; an instance's deletion and its event log's;
//! * reads that decide a write are strongly consistent (`GetItem`/`Query` on the table
//!   with `ConsistentRead`). Only the three indexes are eventually consistent, and only
//!   listings use them (a just-created instance may reach them a moment later);
//! * no operation scans the table.
//!
//! Throttling, 5xx and timeouts are retried by the SDK (standard mode, `MAX_ATTEMPTS`);
//! what still fails is `StoreError::Unavailable`.

mod backups;
mod error;
mod events;
mod instances;
mod item;
mod leases;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Put,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use rand::Rng;

pub use schema::{Created, IndexShape, TableShape, table_shape};

use self::error::{WriteFailure, put_failure, sdk_unavailable, transact_failure};
use self::item::{Item, n};
use self::schema::{PK, VER};
use super::*;

/// Attempts per call for throttling, 5xx and network errors (the SDK's default is 3;
/// DynamoDB throttles in bursts, and a failed store call costs a whole reconcile pass).
const MAX_ATTEMPTS: u32 = 8;

/// Most re-reads of one read-modify-write that keeps losing to concurrent writers. Far
/// above anything real (a record sees a few writes a minute); reaching it means a bug or a
/// storm, reported as `Unavailable`.
const MAX_CONTENDED_ATTEMPTS: u32 = 100;

/// The DynamoDB `Store`.
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// Connects with the standard AWS configuration (region, the credential chain,
    /// `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_DYNAMODB` for a local endpoint) and checks that
    /// `table` exists with the store's keys and indexes.
    pub async fn connect(table: &str) -> StoreResult<Self> {
        let store = Self::new(client(None).await, table);
        let description = schema::describe(&store.client, table).await?;
        schema::check_shape(table, &description)?;
        Ok(store)
    }

    /// As `connect`, against an explicit endpoint (tests: a local server), without
    /// checking the table (tests create it).
    pub async fn with_endpoint(endpoint: &str, table: &str) -> Self {
        Self::new(client(Some(endpoint)).await, table)
    }

    fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table, its indexes and TTL (`wpfleet store init`); an existing table
    /// with the right shape is fine.
    pub async fn create_table(&self) -> StoreResult<Created> {
        schema::create_table(&self.client, &self.table).await
    }

    /// `store init` without a store: the same, from the standard AWS configuration.
    pub async fn init(table: &str) -> StoreResult<Created> {
        schema::create_table(&client(None).await, table).await
    }

    // ---- shared plumbing of the operation files ------------------------------------------

    async fn get_item(&self, key: Item) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_unavailable("GetItem", e))?;
        Ok(out.item)
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<(), WriteFailure> {
        let Condition {
            expression,
            names,
            values,
        } = condition;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map_err(put_failure)?;
        Ok(())
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<(), WriteFailure> {
        let items = writes
            .into_iter()
            .map(|w| w.into_transact_item(&self.table))
            .collect::<StoreResult<Vec<_>>>()?;
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(transact_failure)?;
        Ok(())
    }

    /// A query's items, following `LastEvaluatedKey` until `want` items or the end.
    async fn query_all(&self, query: Query, want: usize) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = query.start.clone();
        loop {
            let left = want.saturating_sub(items.len()).max(1);
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(query.index.map(str::to_owned))
                .key_condition_expression(&query.condition.expression)
                .set_expression_attribute_names(Some(query.condition.names.clone()))
                .set_expression_attribute_values(Some(query.condition.values.clone()))
                .set_exclusive_start_key(start)
                .limit(i32::try_from(left).unwrap_or(i32::MAX))
                // Indexes (GSIs) only offer eventually consistent reads.
                .consistent_read(query.index.is_none())
                .send()
                .await
                .map_err(|e| sdk_unavailable("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if items.len() >= want || start.is_none() {
                items.truncate(want);
                return Ok(items);
            }
        }
    }

    /// The items with these keys, strongly consistent, in no particular order; keys
    /// without an item (deleted meanwhile) are left out.
    async fn batch_get(&self, keys: Vec<Item>) -> StoreResult<Vec<Item>> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut request = Some(chunk.to_vec());
            let mut contention = Contention::default();
            while let Some(keys) = request.take().filter(|k| !k.is_empty()) {
                let wanted = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Unavailable(format!("BatchGetItem: {e}")))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, wanted)
                    .send()
                    .await
                    .map_err(|e| sdk_unavailable("BatchGetItem", e))?;
                if let Some(mut responses) = out.responses {
                    found.extend(responses.remove(&self.table).unwrap_or_default());
                }
                // Keys DynamoDB did not get to (throughput): ask again after a pause.
                request = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys);
                if request.as_ref().is_some_and(|k| !k.is_empty()) {
                    contention.wait("BatchGetItem").await?;
                }
            }
        }
        Ok(found)
    }
}

/// The SDK client: standard AWS configuration, more retries than the default, bounded
/// time per attempt and per call (a hung connection must not hold a reconcile pass).
async fn client(endpoint: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(50)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    Client::new(&loader.load().await)
}

/// A condition (or key condition) expression with its placeholders.
#[derive(Debug, Clone, Default)]
struct Condition {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Condition {
    fn new(expression: &str) -> Self {
        Self {
            expression: expression.to_owned(),
            ..Self::default()
        }
    }

    fn name(mut self, placeholder: &str, attribute: &str) -> Self {
        self.names.insert(placeholder.into(), attribute.into());
        self
    }

    fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.into(), value);
        self
    }

    /// The item does not exist yet.
    fn absent() -> Self {
        Self::new("attribute_not_exists(#pk)").name("#pk", PK)
    }

    /// The item is still at the version this write was computed from.
    fn version(ver: u64) -> Self {
        Self::new("#ver = :ver")
            .name("#ver", VER)
            .value(":ver", n(ver))
    }
}

/// A query: the table or an index, a key condition, where to start.
struct Query {
    index: Option<&'static str>,
    condition: Condition,
    start: Option<Item>,
}

/// One item of a transaction.
enum Write {
    Put(Item, Option<Condition>),
    Delete(Item, Option<Condition>),
    Check(Item, Condition),
}

impl Write {
    fn into_transact_item(self, table: &str) -> StoreResult<TransactWriteItem> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            StoreError::Unavailable(format!("TransactWriteItems: {e}"))
        };
        let item = TransactWriteItem::builder();
        Ok(match self {
            Write::Put(item_, condition) => {
                let mut put = Put::builder().table_name(table).set_item(Some(item_));
                if let Some(c) = condition {
                    put = put
                        .condition_expression(c.expression)
                        .set_expression_attribute_names(Some(c.names))
                        .set_expression_attribute_values(
                            (!c.values.is_empty()).then_some(c.values),
                        );
                }
                item.put(put.build().map_err(build)?).build()
            }
            Write::Delete(key, condition) => {
                let mut delete = Delete::builder().table_name(table).set_key(Some(key));
                if let Some(c) = condition {
                    delete = delete
                        .condition_expression(c.expression)
                        .set_expression_attribute_names(Some(c.names))
                        .set_expression_attribute_values(
                            (!c.values.is_empty()).then_some(c.values),
                        );
                }
                item.delete(delete.build().map_err(build)?).build()
            }
            Write::Check(key, c) => item
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(table)
                        .set_key(Some(key))
                        .condition_expression(c.expression)
                        .set_expression_attribute_names(Some(c.names))
                        .set_expression_attribute_values(Some(c.values))
                        .build()
                        .map_err(build)?,
                )
                .build(),
        })
    }
}

/// Paces the re-reads of a read-modify-write that lost a race: full jitter, growing to
/// ~100 ms, and a cap on attempts.
#[derive(Default)]
struct Contention {
    attempts: u32,
}

impl Contention {
    async fn wait(&mut self, what: &str) -> StoreResult<()> {
        self.attempts += 1;
        if self.attempts >= MAX_CONTENDED_ATTEMPTS {
            return Err(StoreError::Unavailable(format!(
                "{what}: gave up after {} attempts lost to concurrent writes",
                self.attempts
            )));
        }
        let cap_ms = 2u64 << self.attempts.min(6);
        let pause = rand::rng().random_range(0..=cap_ms);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        Ok(())
    }
}

/// Only the first `limit` of `items` (asked for `limit + 1`) are the page; an extra one
/// says another page follows (which starts after the page's last key).
fn split_page<T>(mut items: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let more = items.len() > limit;
    items.truncate(limit);
    (items, more)
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, key: &InstanceKey) -> StoreResult<Option<Instance>> {
        Ok(self.get_instance(key).await?.map(|i| i.instance))
    }

    async fn list(&self, tenant: Option<&TenantId>, page: PageRequest) -> StoreResult<Page> {
        match tenant {
            Some(tenant) => self.list_tenant(tenant, page).await,
            None => self.list_all(page).await,
        }
    }

    async fn create(&self, instance: Instance) -> StoreResult<Instance> {
        self.create_instance(instance).await
    }

    async fn update(
        &self,
        key: &InstanceKey,
        expected_version: Option<&str>,
        mutate: Mutation<'_>,
    ) -> StoreResult<Updated> {
        self.update_instance(key, expected_version, mutate).await
    }

    async fn write_status(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
        fence: Option<Fence>,
    ) -> StoreResult<()> {
        self.write_instance_status(key, for_generation, status, fence, &[])
            .await
    }

    async fn write_status_and_events(
        &self,
        key: &InstanceKey,
        for_generation: u64,
        status: Status,
        fence: Option<Fence>,
        events: &[Event],
    ) -> StoreResult<()> {
        self.write_instance_status(key, for_generation, status, fence, events)
            .await
    }

    async fn request_reconcile(
        &self,
        keys: &[InstanceKey],
        request: &ReconcileRequest,
    ) -> StoreResult<usize> {
        self.mark_reconcile(keys, request).await
    }

    async fn delete(&self, key: &InstanceKey) -> StoreResult<bool> {
        self.delete_instance(key).await
    }

    async fn append_events(&self, key: &InstanceKey, events: &[Event]) -> StoreResult<()> {
        self.add_events(key, events).await
    }

    async fn list_events(&self, key: &InstanceKey) -> StoreResult<Vec<Event>> {
        self.read_events(key).await
    }

    async fn create_backup(&self, backup: Backup) -> StoreResult<Backup> {
        self.insert_backup(backup).await
    }

    async fn get_backup(&self, key: &InstanceKey, backup_id: &str) -> StoreResult<Option<Backup>> {
        Ok(self.read_backup(key, backup_id).await?.map(|b| b.backup))
    }

    async fn list_backups(
        &self,
        key: &InstanceKey,
        page: BackupPageRequest,
    ) -> StoreResult<BackupPage> {
        self.query_backups(key, page).await
    }

    async fn update_backup(&self, backup: &Backup) -> StoreResult<()> {
        self.replace_backup(backup.clone()).await
    }

    fn shards(&self) -> u32 {
        DEFAULT_SHARDS
    }

    async fn pending(&self, limit: usize) -> StoreResult<Vec<PendingItem>> {
        self.query_pending(limit.max(1)).await
    }

    async fn list_shard(&self, shard: u32, page: PageRequest) -> StoreResult<Page> {
        self.list_of_shard(shard, page).await
    }

    async fn acquire_lease(
        &self,
        shard: u32,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Lease>> {
        self.take_lease(shard, holder, ttl).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreResult<Option<Lease>> {
        self.extend_lease(lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        self.give_up_lease(lease).await
    }

    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        self.all_leases().await
    }

    async fn heartbeat(&self, replica: &str, ttl: Duration) -> StoreResult<()> {
        self.beat(replica, ttl).await
    }

    async fn replicas(&self) -> StoreResult<Vec<String>> {
        self.live_replicas().await
    }

    async fn leave(&self, replica: &str) -> StoreResult<()> {
        self.forget_replica(replica).await
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn a_page_knows_whether_more_follow() {
        assert_eq!(split_page(vec![1, 2], 2), (vec![1, 2], false));
        assert_eq!(split_page(vec![1, 2, 3], 2), (vec![1, 2], true));
        assert_eq!(split_page(Vec::<u32>::new(), 2), (vec![], false));
    }
}
