//! Shard leases (partition `LEASES`, one item per shard) and replica heartbeats (partition
//! `REPLICAS`, one item per replica, removed by TTL some time after they expire).
//!
//! A lease item is never deleted: it keeps the shard's last fencing token, so the next
//! holder's token is higher than any before. Taking a lease reads it, lets `rules::acquired`
//! decide, and writes only if the item is still exactly what was read; two replicas racing
//! for a shard cannot both win. Renew and release are single conditional updates whose
//! conditions are `rules::renewed` / `rules::released`: same holder, same token.
//!
//! Expiry is wall-clock time (epoch ms) written by the holder; replicas' clocks must agree
//! to well within the lease margin (NTP does this on AWS).

use super::error::WriteFailure;
use super::instances::lease_key;
use super::item::{Item, lease_from_item, lease_item, millis, n, s, string};
use super::schema::*;
use super::*;
use crate::model::{FieldError, Rejection, now};
use crate::store::rules;

impl DynamoStore {
    pub(super) async fn take_lease(
        &self,
        shard: u32,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Lease>> {
        check_name(holder)?;
        let mut contention = Contention::default();
        loop {
            let current = match self.get_item(lease_key(shard)).await? {
                Some(item) => Some(lease_from_item(&item)?),
                None => None,
            };
            let Some(lease) = rules::acquired(current.as_ref(), shard, holder, now(), ttl) else {
                return Ok(None);
            };
            let condition = match &current {
                None => Condition::absent(),
                Some(c) => unchanged(c),
            };
            match self.put(lease_item(&lease), condition).await {
                Ok(()) => return Ok(Some(lease)),
                // Someone else wrote it since we read it: decide again on what is there.
                Err(f) if f.is_contention() => contention.wait("acquire_lease").await?,
                Err(other) => return Err(other.into_store_error("acquire_lease")),
            }
        }
    }

    pub(super) async fn extend_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> StoreResult<Option<Lease>> {
        if lease.holder.is_empty() {
            return Ok(None);
        }
        let expires_at = rules::expiry(now(), ttl);
        let set = Condition::new("SET #expires = :expires")
            .name("#expires", EXPIRES_AT)
            .value(":expires", n(expires_at.timestamp_millis()));
        match self.update_lease(lease, set).await {
            Ok(()) => Ok(Some(Lease {
                expires_at,
                ..lease.clone()
            })),
            Err(f) if f.is_contention() => Ok(None),
            Err(other) => Err(other.into_store_error("renew_lease")),
        }
    }

    pub(super) async fn give_up_lease(&self, lease: &Lease) -> StoreResult<()> {
        if lease.holder.is_empty() {
            return Ok(());
        }
        let set = Condition::new("SET #holder = :released, #expires = :expires")
            .name("#expires", EXPIRES_AT)
            .value(":released", s(""))
            .value(":expires", n(now().timestamp_millis()));
        match self.update_lease(lease, set).await {
            // Lost already: nothing to give up.
            Ok(()) | Err(WriteFailure::Condition(_)) => Ok(()),
            Err(other) => Err(other.into_store_error("release_lease")),
        }
    }

    /// Applies `update` to `lease`'s item if it still has the same holder and token.
    async fn update_lease(&self, lease: &Lease, update: Condition) -> Result<(), WriteFailure> {
        let Condition {
            expression,
            mut names,
            mut values,
        } = update;
        names.insert("#holder".into(), HOLDER.into());
        names.insert("#token".into(), TOKEN.into());
        values.insert(":holder".into(), s(&lease.holder));
        values.insert(":token".into(), n(lease.token));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lease_key(lease.shard)))
            .update_expression(expression)
            .condition_expression("#holder = :holder AND #token = :token")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(WriteFailure::Condition(None))
            }
            Err(e) => Err(WriteFailure::Store(error::sdk_unavailable("UpdateItem", e))),
        }
    }

    pub(super) async fn all_leases(&self) -> StoreResult<Vec<Lease>> {
        let items = self.query_all(partition(LEASES_PK), usize::MAX).await?;
        items.iter().map(lease_from_item).collect()
    }

    pub(super) async fn beat(&self, replica: &str, ttl: Duration) -> StoreResult<()> {
        check_name(replica)?;
        let expires_at = rules::expiry(now(), ttl);
        let remove_after = expires_at.timestamp() + HEARTBEAT_TTL_SLACK.as_secs() as i64;
        let item = Item::from([
            (PK.into(), s(REPLICAS_PK)),
            (SK.into(), s(replica)),
            (KIND.into(), s(KIND_REPLICA)),
            (EXPIRES_AT.into(), n(expires_at.timestamp_millis())),
            (TTL.into(), n(remove_after)),
        ]);
        // A heartbeat is the replica's own item: the last one written wins.
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| error::sdk_unavailable("PutItem", e))?;
        Ok(())
    }

    pub(super) async fn live_replicas(&self) -> StoreResult<Vec<String>> {
        let items = self.query_all(partition(REPLICAS_PK), usize::MAX).await?;
        let at = now();
        let mut live = vec![];
        for item in &items {
            if millis(item, EXPIRES_AT)? > at {
                live.push(string(item, SK)?.to_owned());
            }
        }
        live.sort();
        Ok(live)
    }

    pub(super) async fn forget_replica(&self, replica: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(REPLICAS_PK))
            .key(SK, s(replica))
            .send()
            .await
            .map_err(|e| error::sdk_unavailable("DeleteItem", e))?;
        Ok(())
    }
}

/// The lease item is still exactly `current` (holder, token and expiry).
fn unchanged(current: &Lease) -> Condition {
    Condition::new("#holder = :holder AND #token = :token AND #expires = :expires")
        .name("#holder", HOLDER)
        .name("#token", TOKEN)
        .name("#expires", EXPIRES_AT)
        .value(":holder", s(&current.holder))
        .value(":token", n(current.token))
        .value(":expires", n(current.expires_at.timestamp_millis()))
}

fn partition(pk: &str) -> Query {
    Query {
        index: None,
        condition: Condition::new("#pk = :pk")
            .name("#pk", PK)
            .value(":pk", s(pk)),
        start: None,
    }
}

/// A lease holder or replica name: non-empty (empty means "released").
fn check_name(name: &str) -> StoreResult<()> {
    if name.is_empty() {
        let error = FieldError::new("replica", "must not be empty");
        return Err(StoreError::Rejected(Rejection::Invalid(vec![error])));
    }
    Ok(())
}
