//! The table's shape: key and attribute names, how each record is keyed, and creating the
//! table (`wpfleet store init`; Terraform in `deploy/terraform/dynamodb.tf` builds the same).
//!
//! One table holds every record (single-table design):
//!
//! | record | `pk` | `sk` |
//! |---|---|---|
//! | instance | `T#<tenant>` | `I#<instance>` |
//! | backup | `T#<tenant>` | `B#<instance>#<backupId>` |
//! | in-flight backup (copy) | `T#<tenant>` | `A#<instance>#<backupId>` |
//! | instance events (the kept log) | `T#<tenant>` | `E#<instance>` |
//! | shard lease | `LEASES` | `SHARD#<shard, 5 digits>` |
//! | replica heartbeat | `REPLICAS` | `<replica id>` |
//!
//! Ids are `[a-z0-9-]` and never contain `#`, so a `begins_with` on `I#`, `B#<instance>#`
//! or `A#<instance>#` covers exactly one kind of record of one tenant or instance.
//!
//! Global secondary indexes (all sparse: only instance items carry their keys):
//! * `shard-index`: `shard` (N) + `path` (`tenant/instance`), keys only: `list_shard`;
//! * `key-order-index`: `entity` (always `instance`) + `path`, keys only: the operator's
//!   list of every instance, in key order, without a Scan;
//! * `pending-index`: `pending` (present only while the instance needs reconciling) +
//!   `path`, projecting `shard` and `pendingMarker`: `pending`.
//!
//! TTL attribute `ttl` (epoch seconds): only heartbeats carry it. Leases never expire from
//! the table: a lease record keeps the shard's last fencing token.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification,
};

use super::error::sdk_unavailable;
use crate::model::InstanceKey;
use crate::store::{StoreError, StoreResult};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const KIND: &str = "kind";
/// Optimistic-concurrency version of an item: every write is conditioned on it and bumps it.
pub const VER: &str = "ver";
pub const PATH: &str = "path";
pub const SHARD: &str = "shard";
pub const ENTITY: &str = "entity";
pub const PENDING: &str = "pending";
pub const PENDING_MARKER: &str = "pendingMarker";
pub const HOLDER: &str = "holder";
pub const EXPIRES_AT: &str = "expiresAt";
pub const TOKEN: &str = "token";
pub const TTL: &str = "ttl";

pub const SHARD_INDEX: &str = "shard-index";
pub const KEY_ORDER_INDEX: &str = "key-order-index";
pub const PENDING_INDEX: &str = "pending-index";

/// `entity` of every instance item (the `key-order-index` partition).
pub const ENTITY_INSTANCE: &str = "instance";
/// `pending` of a pending instance (the `pending-index` partition).
pub const PENDING_VALUE: &str = "pending";

pub const KIND_INSTANCE: &str = "instance";
pub const KIND_BACKUP: &str = "backup";
pub const KIND_ACTIVE_BACKUP: &str = "backup-in-flight";
pub const KIND_EVENTS: &str = "events";
pub const KIND_LEASE: &str = "lease";
pub const KIND_REPLICA: &str = "replica";

pub const LEASES_PK: &str = "LEASES";
pub const REPLICAS_PK: &str = "REPLICAS";

/// A heartbeat item outlives its expiry by this much before DynamoDB's TTL removes it
/// (readers ignore expired heartbeats anyway; TTL only keeps the partition small).
pub const HEARTBEAT_TTL_SLACK: Duration = Duration::from_secs(3600);

pub fn tenant_pk(tenant: &str) -> String {
    format!("T#{tenant}")
}

pub fn instance_sk(instance: &str) -> String {
    format!("I#{instance}")
}

pub fn backups_prefix(key: &InstanceKey) -> String {
    format!("B#{}#", key.instance_id)
}

pub fn active_prefix(key: &InstanceKey) -> String {
    format!("A#{}#", key.instance_id)
}

pub fn backup_sk(key: &InstanceKey, backup_id: &str) -> String {
    format!("{}{backup_id}", backups_prefix(key))
}

pub fn active_sk(key: &InstanceKey, backup_id: &str) -> String {
    format!("{}{backup_id}", active_prefix(key))
}

pub fn events_sk(key: &InstanceKey) -> String {
    format!("E#{}", key.instance_id)
}

pub fn lease_sk(shard: u32) -> String {
    format!("SHARD#{shard:05}")
}

/// The table as data: what `store init` creates, what `check_shape` demands of an
/// existing table, and what `deploy/terraform/dynamodb.tf` must declare (a test compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    /// (name, type) of the table's hash and range keys.
    pub hash_key: (&'static str, &'static str),
    pub range_key: (&'static str, &'static str),
    pub indexes: Vec<IndexShape>,
    /// The TTL attribute (epoch seconds).
    pub ttl_attribute: &'static str,
    /// IAM actions the controller needs on the table and its indexes (least privilege:
    /// no Scan, no table management; `TransactWriteItems` needs the actions of its parts).
    pub controller_actions: &'static [&'static str],
}

/// One global secondary index; every one is sorted by `path` (key order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexShape {
    pub name: &'static str,
    /// (name, type: `S` or `N`).
    pub hash_key: (&'static str, &'static str),
    pub range_key: (&'static str, &'static str),
    /// `KEYS_ONLY` or `INCLUDE`.
    pub projection: &'static str,
    pub non_key_attributes: &'static [&'static str],
}

pub fn table_shape() -> TableShape {
    let index = |name, hash_key, projection, non_key_attributes| IndexShape {
        name,
        hash_key,
        range_key: (PATH, "S"),
        projection,
        non_key_attributes,
    };
    TableShape {
        hash_key: (PK, "S"),
        range_key: (SK, "S"),
        indexes: vec![
            index(SHARD_INDEX, (SHARD, "N"), "KEYS_ONLY", &[]),
            index(KEY_ORDER_INDEX, (ENTITY, "S"), "KEYS_ONLY", &[]),
            index(
                PENDING_INDEX,
                (PENDING, "S"),
                "INCLUDE",
                &[SHARD, PENDING_MARKER],
            ),
        ],
        ttl_attribute: TTL,
        controller_actions: &[
            "dynamodb:BatchGetItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:DeleteItem",
            "dynamodb:DescribeTable",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
        ],
    }
}

/// What `store init` makes: one table with on-demand billing, the three indexes, TTL.
/// An existing table is accepted if it has the keys and indexes the store needs.
pub async fn create_table(client: &Client, table: &str) -> StoreResult<Created> {
    let created = match create_request(client, table).send().await {
        Ok(_) => Created::New,
        Err(e) if e.code() == Some("ResourceInUseException") => Created::Existing,
        Err(e) => return Err(sdk_unavailable("CreateTable", e)),
    };
    let description = wait_active(client, table).await?;
    check_shape(table, &description)?;
    enable_ttl(client, table).await?;
    Ok(created)
}

/// Whether `create_table` made the table or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    Existing,
}

fn create_request(
    client: &Client,
    table: &str,
) -> aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder {
    let shape = table_shape();
    let mut attributes = vec![shape.hash_key, shape.range_key];
    for index in &shape.indexes {
        for attribute in [index.hash_key, index.range_key] {
            if !attributes.contains(&attribute) {
                attributes.push(attribute);
            }
        }
    }
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(shape.hash_key.0, KeyType::Hash))
        .key_schema(key(shape.range_key.0, KeyType::Range));
    for (name, kind) in attributes {
        let definition = AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::from(kind))
            .build()
            .expect("name and type are set");
        request = request.attribute_definitions(definition);
    }
    for index in &shape.indexes {
        request = request.global_secondary_indexes(gsi(index));
    }
    request
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .expect("name and type are set")
}

fn gsi(index: &IndexShape) -> GlobalSecondaryIndex {
    let mut projection =
        Projection::builder().projection_type(ProjectionType::from(index.projection));
    for attribute in index.non_key_attributes {
        projection = projection.non_key_attributes(*attribute);
    }
    GlobalSecondaryIndex::builder()
        .index_name(index.name)
        .key_schema(key(index.hash_key.0, KeyType::Hash))
        .key_schema(key(index.range_key.0, KeyType::Range))
        .projection(projection.build())
        .build()
        .expect("name, keys and projection are set")
}

async fn wait_active(client: &Client, table: &str) -> StoreResult<TableDescription> {
    for _ in 0..300 {
        let description = describe(client, table).await?;
        let indexes_active = description
            .global_secondary_indexes()
            .iter()
            .all(|i| i.index_status().is_none_or(|s| s.as_str() == "ACTIVE"));
        if description.table_status() == Some(&TableStatus::Active) && indexes_active {
            return Ok(description);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(StoreError::Unavailable(format!(
        "table {table} did not become ACTIVE within 5 minutes"
    )))
}

pub async fn describe(client: &Client, table: &str) -> StoreResult<TableDescription> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_unavailable("DescribeTable", e))?;
    out.table
        .ok_or_else(|| StoreError::Unavailable(format!("DescribeTable {table}: no description")))
}

/// Refuses a table that lacks the keys or indexes the store relies on (e.g. a table of the
/// same name made for something else), naming what is missing.
pub fn check_shape(table: &str, description: &TableDescription) -> StoreResult<()> {
    let mut missing = vec![];
    let keys: Vec<(&str, &KeyType)> = description
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type()))
        .collect();
    if keys != [(PK, &KeyType::Hash), (SK, &KeyType::Range)] {
        missing.push(format!("key schema {PK} (HASH) + {SK} (RANGE)"));
    }
    for (name, hash) in [
        (SHARD_INDEX, SHARD),
        (KEY_ORDER_INDEX, ENTITY),
        (PENDING_INDEX, PENDING),
    ] {
        let found = description.global_secondary_indexes().iter().any(|i| {
            i.index_name() == Some(name)
                && i.key_schema()
                    .iter()
                    .map(|k| k.attribute_name())
                    .eq([hash, PATH])
        });
        if !found {
            missing.push(format!("global secondary index {name} ({hash} + {PATH})"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(StoreError::Unavailable(format!(
        "table {table} is not a wpfleet table: it lacks {} (create it with `wpfleet store \
         init` or deploy/terraform)",
        missing.join(", ")
    )))
}

async fn enable_ttl(client: &Client, table: &str) -> StoreResult<()> {
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_unavailable("DescribeTimeToLive", e))?;
    let enabled = current.time_to_live_description().is_some_and(|d| {
        d.attribute_name() == Some(TTL)
            && d.time_to_live_status()
                .is_some_and(|s| matches!(s.as_str(), "ENABLED" | "ENABLING"))
    });
    if enabled {
        return Ok(());
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(TTL)
        .build()
        .expect("enabled and attribute name are set");
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| sdk_unavailable("UpdateTimeToLive", e))?;
    Ok(())
}
