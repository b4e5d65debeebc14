//! Status conditions in the Kubernetes style.
//!
//! Invariant: `lastTransitionTime` changes only when a condition's `status` flips; a new
//! reason or message on an unchanged status keeps the old time, so dashboards can tell how
//! long an instance has been (not) Ready.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::instance::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum ConditionType {
    /// The instance is in its desired state (serving when ACTIVE, quiesced when SUSPENDED).
    Ready,
    /// The last reconcile pass finished without error.
    Synced,
    /// The reconciler is moving the instance towards its desired state.
    Progressing,
    /// Something needs attention: lost capacity, or an error a retry will not fix.
    Degraded,
}

impl ConditionType {
    pub const ALL: [ConditionType; 4] = [
        ConditionType::Ready,
        ConditionType::Synced,
        ConditionType::Progressing,
        ConditionType::Degraded,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: ConditionStatus,
    /// CamelCase machine-readable cause, e.g. `WaitingForDatabase`.
    pub reason: String,
    pub message: String,
    pub last_transition_time: DateTime<Utc>,
}

/// What a condition should say now; the time is filled in by [`set_condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

impl ConditionUpdate {
    pub fn new(
        type_: ConditionType,
        status: impl Into<ConditionStatus>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Upserts a condition, keeping `lastTransitionTime` unless the status flipped.
pub fn set_condition(conditions: &mut Vec<Condition>, update: ConditionUpdate, now: Timestamp) {
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            if existing.status != update.status {
                existing.last_transition_time = now;
            }
            existing.status = update.status;
            existing.reason = update.reason;
            existing.message = update.message;
        }
        None => conditions.push(Condition {
            type_: update.type_,
            status: update.status,
            reason: update.reason,
            message: update.message,
            last_transition_time: now,
        }),
    }
    // A stable order makes diffs and tests readable.
    conditions.sort_by_key(|c| ConditionType::ALL.iter().position(|t| *t == c.type_));
}

pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    fn t(s: i64) -> Timestamp {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let mut cs = vec![];
        let ready =
            |st: bool, reason: &str| ConditionUpdate::new(ConditionType::Ready, st, reason, "m");
        set_condition(&mut cs, ready(false, "Provisioning"), t(0));
        assert_eq!(cs[0].last_transition_time, t(0));

        set_condition(&mut cs, ready(false, "WaitingForTasks"), t(10));
        assert_eq!(
            cs[0].last_transition_time,
            t(0),
            "same status keeps the time"
        );
        assert_eq!(cs[0].reason, "WaitingForTasks");

        set_condition(&mut cs, ready(true, "Active"), t(20));
        assert_eq!(cs[0].last_transition_time, t(20));
        assert_eq!(cs[0].status, ConditionStatus::True);
        assert!(t(20) - t(0) == Duration::seconds(20));
    }

    #[test]
    fn conditions_keep_a_stable_order_and_one_per_type() {
        let mut cs = vec![];
        for ty in [
            ConditionType::Degraded,
            ConditionType::Ready,
            ConditionType::Synced,
        ] {
            set_condition(&mut cs, ConditionUpdate::new(ty, true, "R", "m"), t(0));
        }
        set_condition(
            &mut cs,
            ConditionUpdate::new(ConditionType::Ready, false, "R", "m"),
            t(1),
        );
        let types: Vec<_> = cs.iter().map(|c| c.type_).collect();
        assert_eq!(
            types,
            vec![
                ConditionType::Ready,
                ConditionType::Synced,
                ConditionType::Degraded
            ]
        );
        assert!(!is_true(&cs, ConditionType::Ready));
        assert!(is_true(&cs, ConditionType::Synced));
    }
}
