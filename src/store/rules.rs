//! The decisions every `Store` backend makes the same way, as pure functions: applying a
//! caller's mutation, when an instance enters or leaves the pending index, and how shard
//! leases change hands. Backends only read, call these, and write conditionally, so the
//! embedded store and DynamoDB cannot drift apart on a rule (the contract suite checks
//! both against the same cases).
//!
//! Invariants:
//! * an instance is in the pending index whenever it needs reconciling (`needs_reconcile`);
//!   only a status write or the end of its last active backup takes it out, and only when
//!   nothing is left to do;
//! * a lease's fencing token never goes down, and rises whenever the lease changes hands;
//! * a fence holds only while the lease carries its token and has not been released.

use std::time::Duration;

use super::{Change, Fence, Lease, Mutation, StoreError, StoreResult, desired_state_changed};
use crate::model::{self, Backup, BackupStatus, FieldError, Instance, Rejection, Timestamp};

/// Runs the caller's mutation on a copy of `before`: `None` if it reports no change,
/// otherwise the record to store, with the fields only the store maintains restored and
/// generation / updatedAt maintained. resourceVersion is the backend's to set.
pub(crate) fn apply(
    before: &Instance,
    mutate: Mutation<'_>,
) -> Result<Option<Instance>, Rejection> {
    let mut after = before.clone();
    if mutate(&mut after)? == Change::Unchanged {
        return Ok(None);
    }
    // Defensive: a mutation is written against spec and metadata; these are not its to set.
    after.tenant_id = before.tenant_id.clone();
    after.instance_id = before.instance_id.clone();
    after.status = before.status.clone();
    let (b, a) = (&before.metadata, &mut after.metadata);
    a.resource_version = b.resource_version.clone();
    a.created_at = b.created_at;
    // Once requested, a deletion stands (model invariant): it is never unset or moved.
    if b.deletion_requested_at.is_some() {
        a.deletion_requested_at = b.deletion_requested_at;
    }
    let bump = u64::from(desired_state_changed(before, &after));
    after.metadata.generation = before.metadata.generation + bump;
    after.metadata.updated_at = model::now();
    Ok(Some(after))
}

/// A fresh opaque token: 12 hex digits of milliseconds, then 8 random hex digits. Used for
/// resourceVersions and pending markers; unique without a shared counter, and never equal
/// to one handed out before (so a stale `If-Match` cannot match a re-created record).
pub(crate) fn fresh_token() -> String {
    let millis = model::now().timestamp_millis().max(0) as u64;
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{millis:012x}{}", &random[..8])
}

/// What the trait's `pending` promises: the instance needs a reconcile pass.
pub(crate) fn needs_reconcile(inst: &Instance, has_active_backup: bool) -> bool {
    inst.metadata.generation > inst.status.observed_generation
        || inst.metadata.reconcile_request.is_some()
        || has_active_backup
}

/// The pending marker after a changed spec/metadata write: new work gets a new marker (so
/// pollers see it), anything else keeps the entry as it was.
pub(crate) fn pending_after_update(after: &Instance, old: Option<String>) -> Option<String> {
    if needs_reconcile(after, false) {
        Some(fresh_token())
    } else {
        old
    }
}

/// The pending marker after a status write: kept while anything is left to do (the same
/// marker, so a poller does not queue work it already has in hand), cleared otherwise.
pub(crate) fn pending_after_status(
    after: &Instance,
    has_active_backup: bool,
    old: Option<String>,
) -> Option<String> {
    if needs_reconcile(after, has_active_backup) {
        old.or_else(|| Some(fresh_token()))
    } else {
        None
    }
}

/// Whether the end of an instance's last active backup takes it out of the pending index
/// (its status already says it converged, and no other backup is in flight).
pub(crate) fn clears_pending_after_backup(inst: &Instance, other_active: bool) -> bool {
    !needs_reconcile(inst, other_active)
}

/// A backup id is the last segment of its key, so it must be one segment. (The API accepts
/// only `model::is_backup_id` ids; this guards the key layout, not the id format.)
pub(crate) fn check_backup_id(backup_id: &str) -> StoreResult<()> {
    if backup_id.is_empty() || backup_id.contains('/') {
        let error = FieldError::new("backupId", "must be non-empty and must not contain '/'");
        return Err(StoreError::Rejected(Rejection::Invalid(vec![error])));
    }
    Ok(())
}

/// PENDING → RUNNING → COMPLETED | FAILED: a backup's status may only move to a higher rank.
fn backup_rank(status: BackupStatus) -> u8 {
    match status {
        BackupStatus::Pending => 0,
        BackupStatus::Running => 1,
        BackupStatus::Completed | BackupStatus::Failed => 2,
    }
}

/// `update_backup`: the record to write over `stored`, `None` if nothing changes, or
/// `Conflict` if `stored` is final or the status would go back.
pub(crate) fn backup_update(stored: &Backup, mut backup: Backup) -> StoreResult<Option<Backup>> {
    let (id, key) = (&stored.backup_id, stored.key());
    if stored.status.is_final() {
        return Err(StoreError::Conflict(format!(
            "backup {id} of instance {key} is {}; a finished backup is never changed",
            stored.status.as_str()
        )));
    }
    if backup_rank(backup.status) < backup_rank(stored.status) {
        return Err(StoreError::Conflict(format!(
            "backup {id} of instance {key} cannot go back from {} to {}",
            stored.status.as_str(),
            backup.status.as_str()
        )));
    }
    // Defensive: identity and request time are the stored record's, whatever the caller
    // sent. (Identity already matches: it is what the record was looked up by.)
    backup.tenant_id = stored.tenant_id.clone();
    backup.instance_id = stored.instance_id.clone();
    backup.backup_id = stored.backup_id.clone();
    backup.requested_at = stored.requested_at;
    Ok((backup != *stored).then_some(backup))
}

/// `acquire_lease`: the lease `holder` gets, or `None` if someone else holds it.
pub(crate) fn acquired(
    current: Option<&Lease>,
    shard: u32,
    holder: &str,
    now: Timestamp,
    ttl: Duration,
) -> Option<Lease> {
    let expires_at = expiry(now, ttl);
    let token = match current {
        None => 1,
        // Our own lease (live or lapsed without a successor): nobody else wrote with a
        // newer token, so this one stays valid.
        Some(l) if l.holder == holder => l.token,
        Some(l) if l.holder.is_empty() || l.expires_at <= now => l.token + 1,
        Some(_) => return None,
    };
    Some(Lease {
        shard,
        holder: holder.to_owned(),
        expires_at,
        token,
    })
}

/// `renew_lease`: extended only if `presented` is still the stored holder and token.
pub(crate) fn renewed(
    current: Option<&Lease>,
    presented: &Lease,
    now: Timestamp,
    ttl: Duration,
) -> Option<Lease> {
    let current = current.filter(|c| same_tenure(c, presented))?;
    Some(Lease {
        expires_at: expiry(now, ttl),
        ..current.clone()
    })
}

/// `release_lease`: the released record (token kept, so the next holder's is higher), or
/// `None` when `presented` no longer holds it (nothing to write).
pub(crate) fn released(
    current: Option<&Lease>,
    presented: &Lease,
    now: Timestamp,
) -> Option<Lease> {
    let current = current.filter(|c| same_tenure(c, presented))?;
    Some(Lease {
        holder: String::new(),
        expires_at: now,
        ..current.clone()
    })
}

/// Whether a write fenced with `fence` may happen: the lease still carries its token and
/// was not released. A lapsed lease nobody took over still holds: no one else has acted.
pub(crate) fn fence_holds(current: Option<&Lease>, fence: Fence) -> bool {
    current.is_some_and(|l| l.token == fence.token && !l.holder.is_empty())
}

fn same_tenure(current: &Lease, presented: &Lease) -> bool {
    !current.holder.is_empty()
        && current.holder == presented.holder
        && current.token == presented.token
}

/// When a lease or heartbeat taken at `now` for `ttl` expires, at millisecond precision
/// (what every backend stores).
pub(crate) fn expiry(now: Timestamp, ttl: Duration) -> Timestamp {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(365));
    let at = now.checked_add_signed(ttl).unwrap_or(now);
    Timestamp::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::model::{InstanceKey, ReconcileRequest};

    fn t(secs: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn lease(holder: &str, expires: i64, token: u64) -> Lease {
        Lease {
            shard: 3,
            holder: holder.into(),
            expires_at: t(expires),
            token,
        }
    }

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn acquiring_follows_holder_expiry_and_token() {
        // (current, who asks, expected token or None)
        let cases: [(Option<Lease>, &str, Option<u64>); 6] = [
            (None, "a", Some(1)),
            (Some(lease("a", 5, 4)), "a", Some(4)),
            (Some(lease("a", -5, 4)), "a", Some(4)),
            (Some(lease("a", 5, 4)), "b", None),
            (Some(lease("a", 0, 4)), "b", Some(5)),
            (Some(lease("", 5, 4)), "b", Some(5)),
        ];
        for (current, who, want) in cases {
            let got = acquired(current.as_ref(), 3, who, t(0), TTL);
            assert_eq!(got.as_ref().map(|l| l.token), want, "{current:?} by {who}");
            if let Some(l) = got {
                assert_eq!((l.holder.as_str(), l.expires_at, l.shard), (who, t(10), 3));
            }
        }
    }

    #[test]
    fn renew_and_release_need_the_same_holder_and_token() {
        let mine = lease("a", 5, 4);
        let renew = |current: Lease| renewed(Some(&current), &mine, t(1), TTL);
        assert_eq!(renew(mine.clone()).unwrap().expires_at, t(11));
        assert_eq!(
            renew(lease("a", -1, 4)).unwrap().token,
            4,
            "lapsed, no successor"
        );
        assert_eq!(renew(lease("b", 5, 5)), None, "taken over");
        assert_eq!(
            renew(lease("a", 5, 6)),
            None,
            "re-acquired after a takeover"
        );
        assert_eq!(renew(lease("", 1, 4)), None, "released");
        assert_eq!(renewed(None, &mine, t(1), TTL), None);
        let gone = released(Some(&mine), &mine, t(2)).unwrap();
        assert_eq!(
            (gone.holder.as_str(), gone.token, gone.expires_at),
            ("", 4, t(2))
        );
        assert_eq!(released(Some(&lease("b", 5, 5)), &mine, t(2)), None);
    }

    #[test]
    fn a_fence_holds_only_with_its_token_on_a_held_lease() {
        let fence = Fence { shard: 3, token: 4 };
        assert!(fence_holds(Some(&lease("a", 5, 4)), fence));
        assert!(
            fence_holds(Some(&lease("a", -5, 4)), fence),
            "lapsed, no successor"
        );
        assert!(!fence_holds(Some(&lease("b", 5, 5)), fence));
        assert!(!fence_holds(Some(&lease("", 5, 4)), fence), "released");
        assert!(!fence_holds(None, fence));
    }

    #[test]
    fn pending_is_set_by_new_work_and_cleared_only_when_nothing_is_left() {
        let spec = crate::model::Spec {
            organization_name: "Acme".into(),
            contact_email: "ops@acme.example".into(),
            tier: crate::model::Tier::Standard,
            state: crate::model::DesiredState::Active,
            configuration: crate::model::Configuration::default(),
            restore: None,
        };
        let mut inst = Instance::new(InstanceKey::from_strs("t", "i"), spec, t(0));
        // Generation 1, observed 0: work to do.
        let first = pending_after_update(&inst, None).unwrap();
        assert_ne!(
            pending_after_update(&inst, Some(first.clone())),
            Some(first.clone())
        );
        inst.status.observed_generation = 1;
        assert_eq!(
            pending_after_update(&inst, Some("m".into())),
            Some("m".into())
        );
        assert_eq!(pending_after_update(&inst, None), None);
        assert_eq!(pending_after_status(&inst, false, Some("m".into())), None);
        assert_eq!(
            pending_after_status(&inst, true, Some("m".into())),
            Some("m".into())
        );
        inst.metadata.reconcile_request = Some(ReconcileRequest {
            request_id: "r".into(),
            requested_at: t(0),
        });
        assert_eq!(
            pending_after_status(&inst, false, Some("m".into())),
            Some("m".into())
        );
        assert!(pending_after_status(&inst, false, None).is_some());
        assert!(!clears_pending_after_backup(&inst, false));
        inst.metadata.reconcile_request = None;
        assert!(clears_pending_after_backup(&inst, false));
        assert!(!clears_pending_after_backup(&inst, true));
    }

    #[test]
    fn fresh_tokens_differ() {
        let a: std::collections::HashSet<String> = (0..1000).map(|_| fresh_token()).collect();
        assert_eq!(a.len(), 1000);
    }
}
