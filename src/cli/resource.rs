//! A read-only, lenient view of what the server returns for an instance.
//!
//! The client reads replies as `serde_json::Value` and asks questions through [`Res`]
//! instead of deserializing into the model's types: the server may add fields (or a newer
//! server may change one) and the client must still print what it understands. A missing
//! or mistyped field reads as "absent", never as a panic or a failed command.
//!
//! Readiness is defined here, once, for `get`, `apply --wait` and the other waits:
//! ready = `metadata.generation == status.observedGeneration` and condition `Ready` is
//! `True`; failed = `status.phase == "FAILED"`.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The phase name the server uses for an instance that needs a person.
pub const FAILED_PHASE: &str = "FAILED";

/// One condition, as far as the server sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cond {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: Option<DateTime<Utc>>,
}

/// Where an instance stands, for waits and the READY column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Phase FAILED; the text says why (Degraded condition or last error).
    Failed(String),
    /// Still converging; the text is the Ready condition's explanation.
    Pending(String),
}

/// A borrowed instance resource (`GET …/instances/{id}` or a list item).
#[derive(Debug, Clone, Copy)]
pub struct Res<'a>(pub &'a Value);

impl<'a> Res<'a> {
    pub fn tenant(&self) -> &'a str {
        str_at(self.0, "/tenantId")
    }

    pub fn instance(&self) -> &'a str {
        str_at(self.0, "/instanceId")
    }

    /// `tenant/instance`, the way every command names an instance.
    pub fn name(&self) -> String {
        format!("{}/{}", self.tenant(), self.instance())
    }

    pub fn generation(&self) -> Option<u64> {
        self.0
            .pointer("/metadata/generation")
            .and_then(Value::as_u64)
    }

    pub fn observed_generation(&self) -> Option<u64> {
        self.0
            .pointer("/status/observedGeneration")
            .and_then(Value::as_u64)
    }

    pub fn phase(&self) -> &'a str {
        str_at(self.0, "/status/phase")
    }

    pub fn spec(&self) -> &'a Value {
        self.0.get("spec").unwrap_or(&Value::Null)
    }

    pub fn spec_state(&self) -> &'a str {
        str_at(self.0, "/spec/state")
    }

    pub fn tier(&self) -> &'a str {
        str_at(self.0, "/spec/tier")
    }

    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        time_at(self.0, "/metadata/createdAt")
    }

    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        time_at(self.0, "/metadata/updatedAt")
    }

    pub fn deletion_requested_at(&self) -> Option<DateTime<Utc>> {
        time_at(self.0, "/metadata/deletionRequestedAt")
    }

    pub fn last_reconcile_at(&self) -> Option<DateTime<Utc>> {
        time_at(self.0, "/status/lastReconcileAt")
    }

    pub fn last_handled_request(&self) -> Option<&'a str> {
        self.0
            .pointer("/status/lastHandledReconcileRequest")
            .and_then(Value::as_str)
    }

    /// `(running, desired)` ECS tasks as the controller last saw them.
    pub fn tasks(&self) -> (u64, u64) {
        let n = |p: &str| self.0.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        (n("/status/replicas/running"), n("/status/replicas/desired"))
    }

    pub fn conditions(&self) -> Vec<Cond> {
        conditions_of(self.0.pointer("/status/conditions"))
    }

    pub fn condition(&self, type_: &str) -> Option<Cond> {
        self.conditions().into_iter().find(|c| c.type_ == type_)
    }

    /// `status.lastError.message` (with its code), if the last pass failed.
    pub fn last_error(&self) -> Option<String> {
        let e = self.0.pointer("/status/lastError")?;
        let message = e.get("message").and_then(Value::as_str)?;
        Some(match e.get("code").and_then(Value::as_str) {
            Some(code) if !code.is_empty() => format!("{code}: {message}"),
            _ => message.to_owned(),
        })
    }

    /// `status.restore`, present once a restore was requested.
    pub fn restore(&self) -> Option<&'a Value> {
        self.0.pointer("/status/restore").filter(|v| !v.is_null())
    }

    pub fn is_ready(&self) -> bool {
        let current = matches!(
            (self.generation(), self.observed_generation()),
            (Some(g), Some(o)) if g == o
        );
        current && self.condition("Ready").is_some_and(|c| c.status == "True")
    }

    pub fn is_failed(&self) -> bool {
        self.phase() == FAILED_PHASE
    }

    pub fn readiness(&self) -> Readiness {
        if self.is_ready() {
            Readiness::Ready
        } else if self.is_failed() {
            Readiness::Failed(self.failure_message())
        } else {
            Readiness::Pending(self.pending_message())
        }
    }

    /// Why it failed: the Degraded condition says it best, then the last error.
    pub fn failure_message(&self) -> String {
        self.condition("Degraded")
            .filter(|c| c.status == "True")
            .map(|c| reason_message(&c))
            .or_else(|| self.last_error())
            .unwrap_or_else(|| "failed".into())
    }

    /// What it is waiting for, from the Ready condition; the generation gap otherwise.
    pub fn pending_message(&self) -> String {
        match self.condition("Ready") {
            None => "waiting for the first reconcile".into(),
            Some(c) if c.status != "True" => reason_message(&c),
            Some(_) => match (self.generation(), self.observed_generation()) {
                (Some(g), Some(o)) if g != o => {
                    format!("generation {g} not yet reached (observed {o})")
                }
                _ => "not reconciled yet".into(),
            },
        }
    }

    /// The MESSAGE column: empty when ready, otherwise why not.
    pub fn message(&self) -> String {
        match self.readiness() {
            Readiness::Ready => String::new(),
            Readiness::Failed(m) | Readiness::Pending(m) => m,
        }
    }
}

/// `Reason: message`, or whichever of the two is present.
pub fn reason_message(c: &Cond) -> String {
    match (c.reason.is_empty(), c.message.is_empty()) {
        (false, false) => format!("{}: {}", c.reason, c.message),
        (false, true) => c.reason.clone(),
        (true, _) => c.message.clone(),
    }
}

/// Conditions from a `conditions` array (the resource's or the status view's).
pub fn conditions_of(list: Option<&Value>) -> Vec<Cond> {
    let Some(items) = list.and_then(Value::as_array) else {
        return vec![];
    };
    items
        .iter()
        .map(|c| Cond {
            type_: str_at(c, "/type").to_owned(),
            status: str_at(c, "/status").to_owned(),
            reason: str_at(c, "/reason").to_owned(),
            message: str_at(c, "/message").to_owned(),
            last_transition_time: time_at(c, "/lastTransitionTime"),
        })
        .collect()
}

/// The string at a JSON pointer, or "" when absent or not a string.
pub fn str_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// An RFC 3339 time at a JSON pointer.
pub fn time_at(v: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    parse_time(v.pointer(pointer)?)
}

/// An RFC 3339 string, or epoch milliseconds (as CloudWatch reports them).
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(generation: u64, observed: u64, phase: &str, ready: &str) -> Value {
        json!({
            "tenantId": "t1", "instanceId": "blog",
            "metadata": { "generation": generation },
            "status": { "phase": phase, "observedGeneration": observed, "conditions": [
                { "type": "Ready", "status": ready, "reason": "WaitingForTasks",
                  "message": "1 of 2 tasks running", "lastTransitionTime": "2026-01-01T00:00:00Z" },
                { "type": "Degraded", "status": "True", "reason": "DatabaseFailed",
                  "message": "RDS says failed", "lastTransitionTime": "2026-01-01T00:00:00Z" }
            ]}
        })
    }

    #[test]
    fn ready_needs_the_current_generation_and_the_ready_condition() {
        assert_eq!(
            Res(&res(2, 2, "ACTIVE", "True")).readiness(),
            Readiness::Ready
        );
        assert_eq!(
            Res(&res(3, 2, "SCALING", "True")).readiness(),
            Readiness::Pending("generation 3 not yet reached (observed 2)".into())
        );
        assert_eq!(
            Res(&res(2, 2, "ACTIVE", "False")).readiness(),
            Readiness::Pending("WaitingForTasks: 1 of 2 tasks running".into())
        );
    }

    #[test]
    fn failed_is_phase_failed_and_says_why() {
        assert_eq!(
            Res(&res(2, 1, "FAILED", "False")).readiness(),
            Readiness::Failed("DatabaseFailed: RDS says failed".into())
        );
    }

    #[test]
    fn odd_replies_read_as_absent() {
        let v = json!({"status": {"phase": 7, "conditions": "nope", "replicas": null}});
        let r = Res(&v);
        assert_eq!(r.phase(), "");
        assert!(r.conditions().is_empty());
        assert_eq!(r.tasks(), (0, 0));
        assert!(!r.is_ready());
        assert_eq!(r.name(), "/");
        assert_eq!(
            Res(&Value::Null).message(),
            "waiting for the first reconcile"
        );
    }

    #[test]
    fn times_are_rfc3339_or_epoch_millis() {
        let a = parse_time(&json!("2026-11-25T10:04:47.377Z")).unwrap();
        let b = parse_time(&json!(a.timestamp_millis())).unwrap();
        assert_eq!(a, b);
        assert!(parse_time(&json!("yesterday")).is_none());
    }
}
