//! Instance events: one item per instance beside it in the tenant partition,
//! `E#<instance>`, holding the kept log (at most `MAX_EVENTS`) as a list, so reading an
//! instance never reads its events and an append never touches the instance item (it
//! cannot conflict with a spec or status write).
//!
//! An append reads the log, applies `model::append_events`, and writes it back in one
//! transaction with a check that the instance exists — or, for a reconcile pass, with the
//! status write itself (and its fence), so a status is never seen without the events that
//! explain it; the write is conditioned on the log's `ver`, so concurrent appends retry
//! instead of losing each other. Deleting an
//! instance deletes its log in the same transaction, so no log outlives its instance.

use super::error::WriteFailure;
use super::item::{Item, from_attribute, n, number, s, to_attribute};
use super::schema::*;
use super::*;
use crate::model::{self, Event};

/// The attribute holding the list of events.
const EVENTS: &str = "events";

impl DynamoStore {
    pub(super) async fn add_events(&self, key: &InstanceKey, new: &[Event]) -> StoreResult<()> {
        if new.is_empty() {
            return Ok(());
        }
        let mut contention = Contention::default();
        loop {
            let writes = vec![
                Write::Check(instance_item_key(key), instance_exists()),
                self.append_write(key, new).await?,
            ];
            match self.transact(writes).await {
                Ok(()) => return Ok(()),
                Err(f) if f.condition_failed_at(0) => {
                    return Err(StoreError::NotFound(key.clone()));
                }
                Err(f) if f.is_contention() => contention.wait("append_events").await?,
                Err(other) => return Err(other.into_store_error("append_events")),
            }
        }
    }

    /// The write appending `new` to the log as it is now, conditioned on the log not having
    /// changed since: one item of a transaction that also checks or writes the instance.
    pub(super) async fn append_write(
        &self,
        key: &InstanceKey,
        new: &[Event],
    ) -> StoreResult<Write> {
        let stored = self.get_item(events_key(key)).await?;
        let (mut log, ver) = match &stored {
            Some(item) => (decode(item)?, Some(number::<u64>(item, VER)?)),
            None => (vec![], None),
        };
        model::append_events(&mut log, new);
        let condition = match ver {
            Some(ver) => Condition::version(ver),
            None => Condition::absent(),
        };
        Ok(Write::Put(
            encode(key, &log, ver.map_or(1, |v| v + 1))?,
            Some(condition),
        ))
    }

    pub(super) async fn read_events(&self, key: &InstanceKey) -> StoreResult<Vec<Event>> {
        match self.get_item(events_key(key)).await? {
            Some(item) => decode(&item),
            None => Ok(vec![]),
        }
    }

    /// Removes the instance item and its event log together; `false` if the instance was
    /// not there (then it has no log either).
    pub(super) async fn delete_instance(&self, key: &InstanceKey) -> StoreResult<bool> {
        let writes = vec![
            Write::Delete(instance_item_key(key), Some(instance_exists())),
            Write::Delete(events_key(key), None),
        ];
        match self.transact(writes).await {
            Ok(()) => Ok(true),
            Err(f) if f.condition_failed_at(0) => Ok(false),
            Err(WriteFailure::Cancelled(codes)) => Err(StoreError::Unavailable(format!(
                "delete: transaction cancelled ({codes:?})"
            ))),
            Err(other) => Err(other.into_store_error("delete")),
        }
    }
}

fn instance_item_key(key: &InstanceKey) -> Item {
    super::item::instance_key(key)
}

fn instance_exists() -> Condition {
    Condition::new("attribute_exists(#pk)").name("#pk", PK)
}

fn events_key(key: &InstanceKey) -> Item {
    Item::from([
        (PK.into(), s(tenant_pk(key.tenant_id.as_str()))),
        (SK.into(), s(events_sk(key))),
    ])
}

fn encode(key: &InstanceKey, log: &[Event], ver: u64) -> StoreResult<Item> {
    let value = serde_json::to_value(log)
        .map_err(|e| StoreError::Unavailable(format!("encoding events: {e}")))?;
    let mut item = events_key(key);
    item.insert(KIND.into(), s(KIND_EVENTS));
    item.insert(VER.into(), n(ver));
    item.insert(EVENTS.into(), to_attribute(value));
    Ok(item)
}

fn decode(item: &Item) -> StoreResult<Vec<Event>> {
    let unreadable = |why: String| StoreError::Unavailable(format!("event log unreadable: {why}"));
    let value = item
        .get(EVENTS)
        .map(from_attribute)
        .transpose()
        .map_err(unreadable)?
        .unwrap_or(serde_json::Value::Array(vec![]));
    serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))
}
