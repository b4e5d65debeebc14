//! Records ↔ DynamoDB items. A record's JSON fields become native attributes (maps,
//! lists, strings, numbers), so an item reads naturally in the console and in exports;
//! the bookkeeping attributes (`schema.rs`) sit beside them and are never part of a
//! record.
//!
//! Invariant: decoding an item ignores exactly the bookkeeping attributes, so a record
//! round-trips unchanged whatever fields the model gains.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::schema::*;
use crate::model::{Backup, Instance, InstanceKey, Timestamp};
use crate::store::{DEFAULT_SHARDS, Lease, StoreError, StoreResult, shard_of};

pub type Item = HashMap<String, AttributeValue>;

/// Attributes that are bookkeeping, not record fields.
const BOOKKEEPING: [&str; 13] = [
    PK,
    SK,
    KIND,
    VER,
    PATH,
    SHARD,
    ENTITY,
    PENDING,
    PENDING_MARKER,
    HOLDER,
    EXPIRES_AT,
    TOKEN,
    TTL,
];

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// An instance item: the record, its item version, and its pending marker if it is in
/// the pending index.
#[derive(Debug, Clone)]
pub struct InstanceItem {
    pub instance: Instance,
    pub ver: u64,
    pub pending: Option<String>,
}

impl InstanceItem {
    pub fn to_item(&self) -> StoreResult<Item> {
        let key = self.instance.key();
        let mut item = record_attributes(&self.instance)?;
        item.insert(PK.into(), s(tenant_pk(key.tenant_id.as_str())));
        item.insert(SK.into(), s(instance_sk(key.instance_id.as_str())));
        item.insert(KIND.into(), s(KIND_INSTANCE));
        item.insert(VER.into(), n(self.ver));
        item.insert(PATH.into(), s(key.path()));
        item.insert(SHARD.into(), n(shard_of(&key, DEFAULT_SHARDS)));
        item.insert(ENTITY.into(), s(ENTITY_INSTANCE));
        if let Some(marker) = &self.pending {
            item.insert(PENDING.into(), s(PENDING_VALUE));
            item.insert(PENDING_MARKER.into(), s(marker));
        }
        Ok(item)
    }

    pub fn from_item(item: &Item) -> StoreResult<Self> {
        Ok(Self {
            instance: record(item)?,
            ver: number(item, VER)?,
            pending: item
                .get(PENDING_MARKER)
                .and_then(|v| v.as_s().ok())
                .cloned(),
        })
    }
}

/// A backup item (or its in-flight copy) and its item version.
#[derive(Debug, Clone)]
pub struct BackupItem {
    pub backup: Backup,
    pub ver: u64,
}

impl BackupItem {
    pub fn to_item(&self, kind: &str) -> StoreResult<Item> {
        let key = self.backup.key();
        let id = &self.backup.backup_id;
        let sk = match kind {
            KIND_ACTIVE_BACKUP => active_sk(&key, id),
            _ => backup_sk(&key, id),
        };
        let mut item = record_attributes(&self.backup)?;
        item.insert(PK.into(), s(tenant_pk(key.tenant_id.as_str())));
        item.insert(SK.into(), s(sk));
        item.insert(KIND.into(), s(kind));
        item.insert(VER.into(), n(self.ver));
        Ok(item)
    }

    pub fn from_item(item: &Item) -> StoreResult<Self> {
        Ok(Self {
            backup: record(item)?,
            ver: number(item, VER)?,
        })
    }
}

pub fn lease_item(lease: &Lease) -> Item {
    HashMap::from([
        (PK.into(), s(LEASES_PK)),
        (SK.into(), s(lease_sk(lease.shard))),
        (KIND.into(), s(KIND_LEASE)),
        (HOLDER.into(), s(&lease.holder)),
        (EXPIRES_AT.into(), n(lease.expires_at.timestamp_millis())),
        (TOKEN.into(), n(lease.token)),
    ])
}

pub fn lease_from_item(item: &Item) -> StoreResult<Lease> {
    let sk = string(item, SK)?;
    let shard = sk
        .strip_prefix("SHARD#")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| unreadable(item, "lease key is not SHARD#<n>"))?;
    Ok(Lease {
        shard,
        holder: string(item, HOLDER)?.to_owned(),
        expires_at: millis(item, EXPIRES_AT)?,
        token: number(item, TOKEN)?,
    })
}

pub fn millis(item: &Item, name: &str) -> StoreResult<Timestamp> {
    let ms: i64 = number(item, name)?;
    Timestamp::from_timestamp_millis(ms).ok_or_else(|| unreadable(item, "time out of range"))
}

/// The key of an instance item, as `ExclusiveStartKey` or `GetItem` key.
pub fn instance_key(key: &InstanceKey) -> Item {
    HashMap::from([
        (PK.into(), s(tenant_pk(key.tenant_id.as_str()))),
        (SK.into(), s(instance_sk(key.instance_id.as_str()))),
    ])
}

/// The instance key an item (or an index entry, which carries `path`) belongs to.
pub fn path_key(item: &Item) -> StoreResult<InstanceKey> {
    let path = string(item, PATH)?;
    InstanceKey::parse_path(path).ok_or_else(|| unreadable(item, "path is not an instance key"))
}

pub fn string<'a>(item: &'a Item, name: &str) -> StoreResult<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| unreadable(item, &format!("{name} is missing or not a string")))
}

pub fn number<T: FromStr>(item: &Item, name: &str) -> StoreResult<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| unreadable(item, &format!("{name} is missing or not a number")))
}

/// A record that does not decode is reported, never a panic: one bad item must not take
/// the controller down.
fn unreadable(item: &Item, why: &str) -> StoreError {
    let pk = item.get(PK).and_then(|v| v.as_s().ok());
    let sk = item.get(SK).and_then(|v| v.as_s().ok());
    StoreError::Unavailable(format!("item {pk:?}/{sk:?} is unreadable: {why}"))
}

fn record_attributes(record: &impl Serialize) -> StoreResult<Item> {
    match serde_json::to_value(record) {
        Ok(Value::Object(fields)) => Ok(fields
            .into_iter()
            .map(|(name, value)| (name, to_attribute(value)))
            .collect()),
        Ok(_) => Err(StoreError::Unavailable(
            "a record is not a JSON object".into(),
        )),
        Err(e) => Err(StoreError::Unavailable(format!("encoding a record: {e}"))),
    }
}

fn record<T: DeserializeOwned>(item: &Item) -> StoreResult<T> {
    let mut fields = serde_json::Map::new();
    for (name, value) in item {
        if !BOOKKEEPING.contains(&name.as_str()) {
            let value = from_attribute(value).map_err(|why| unreadable(item, &why))?;
            fields.insert(name.clone(), value);
        }
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| unreadable(item, &e.to_string()))
}

pub fn to_attribute(value: Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(b),
        Value::Number(num) => AttributeValue::N(num.to_string()),
        Value::String(text) => AttributeValue::S(text),
        Value::Array(values) => AttributeValue::L(values.into_iter().map(to_attribute).collect()),
        Value::Object(fields) => AttributeValue::M(
            fields
                .into_iter()
                .map(|(k, v)| (k, to_attribute(v)))
                .collect(),
        ),
    }
}

pub fn from_attribute(value: &AttributeValue) -> Result<Value, String> {
    Ok(match value {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::S(text) => Value::String(text.clone()),
        AttributeValue::N(num) => parse_number(num)?,
        AttributeValue::L(values) => Value::Array(
            values
                .iter()
                .map(from_attribute)
                .collect::<Result<_, _>>()?,
        ),
        AttributeValue::M(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), from_attribute(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("unexpected attribute type {other:?}")),
    })
}

/// DynamoDB numbers are decimal strings; integers stay integers (u64 / i64), anything
/// else is a float.
fn parse_number(num: &str) -> Result<Value, String> {
    if let Ok(u) = num.parse::<u64>() {
        return Ok(Value::from(u));
    }
    if let Ok(i) = num.parse::<i64>() {
        return Ok(Value::from(i));
    }
    num.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("{num} is not a number"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_round_trips_through_attributes() {
        let value = json!({
            "s": "text", "empty": "", "n": 42, "neg": -7, "big": u64::MAX, "f": 1.5,
            "t": true, "null": null, "list": [1, "two", {"three": [3]}], "map": {"a": {}}
        });
        let back = from_attribute(&to_attribute(value.clone())).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn sets_and_binaries_are_refused_not_guessed() {
        let set = AttributeValue::Ss(vec!["a".into()]);
        assert!(from_attribute(&set).is_err());
    }
}
