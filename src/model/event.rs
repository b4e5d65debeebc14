//! Instance events: what the reconciler decided and did, with a reason, in the style of
//! Kubernetes events (`kubectl describe` shows them under "Events").
//!
//! An instance keeps its last [`MAX_EVENTS`] events. [`append_events`] is the one rule
//! every store applies when it records new ones:
//! * an event with the same type, reason and message as the newest kept one is folded into
//!   it (`count` adds up, `lastTimestamp` and `generation` move on), so a step that fails on
//!   every retry is one line "×12", not twelve lines that push the history out;
//! * then only the newest [`MAX_EVENTS`] are kept.
//!
//! Invariant: a kept log is in time order (oldest first), never longer than [`MAX_EVENTS`],
//! and no two neighbours have the same (type, reason, message).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::instance::Timestamp;

/// How many events an instance keeps (the "last 20").
pub const MAX_EVENTS: usize = 20;

/// Longest message kept, in characters; a cloud error message longer than this is cut.
pub const MAX_EVENT_MESSAGE: usize = 1024;

/// `Normal` for progress, `Warning` for something that went wrong or was repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Why the reconciler recorded an event. Stored as its name (a string), so a record written
/// by a newer version with a reason this one does not know still reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// A step changed the cloud (create, update, start, stop, delete, snapshot).
    StepApplied,
    /// A step failed; the message says whether it will be retried.
    StepFailed,
    /// Looking at the cloud failed, so the pass could not act.
    ObserveFailed,
    /// The instance moved to another phase.
    PhaseChanged,
    /// The instance reached its current generation.
    Converged,
    /// The cloud had drifted from a converged instance's desired state; a step put it back.
    DriftRepaired,
    /// Something a retry will not fix (the Degraded condition turned true).
    Degraded,
    BackupStarted,
    BackupCompleted,
    BackupFailed,
    /// A restore moved to its next stage.
    RestoreStage,
    RestoreCompleted,
    RestoreFailed,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::StepApplied => "StepApplied",
            EventReason::StepFailed => "StepFailed",
            EventReason::ObserveFailed => "ObserveFailed",
            EventReason::PhaseChanged => "PhaseChanged",
            EventReason::Converged => "Converged",
            EventReason::DriftRepaired => "DriftRepaired",
            EventReason::Degraded => "Degraded",
            EventReason::BackupStarted => "BackupStarted",
            EventReason::BackupCompleted => "BackupCompleted",
            EventReason::BackupFailed => "BackupFailed",
            EventReason::RestoreStage => "RestoreStage",
            EventReason::RestoreCompleted => "RestoreCompleted",
            EventReason::RestoreFailed => "RestoreFailed",
        }
    }

    pub fn event_type(self) -> EventType {
        match self {
            EventReason::StepFailed
            | EventReason::ObserveFailed
            | EventReason::DriftRepaired
            | EventReason::Degraded
            | EventReason::BackupFailed
            | EventReason::RestoreFailed => EventType::Warning,
            _ => EventType::Normal,
        }
    }
}

/// One thing the reconciler decided or did to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase cause: `StepApplied`, `StepFailed`, `ObserveFailed`, `PhaseChanged`,
    /// `Converged`, `DriftRepaired`, `Degraded`, `BackupStarted`, `BackupCompleted`,
    /// `BackupFailed`, `RestoreStage`, `RestoreCompleted`, `RestoreFailed`.
    #[schema(example = "StepApplied")]
    pub reason: String,
    /// What happened, for a person: the step and its target, the error, the phase change.
    #[schema(example = "CreateDatabase wpf-t1-blog")]
    pub message: String,
    /// The instance's generation when it (last) happened.
    pub generation: u64,
    /// How many times in a row it happened (see `firstTimestamp` / `lastTimestamp`).
    pub count: u32,
    /// When it first happened (of `count` times in a row).
    pub first_timestamp: DateTime<Utc>,
    /// When it last happened.
    pub last_timestamp: DateTime<Utc>,
}

impl Event {
    pub fn new(
        reason: EventReason,
        message: impl Into<String>,
        generation: u64,
        at: Timestamp,
    ) -> Self {
        Self {
            type_: reason.event_type(),
            reason: reason.as_str().to_owned(),
            message: truncate(message.into()),
            generation,
            count: 1,
            first_timestamp: at,
            last_timestamp: at,
        }
    }

    /// The same happening again (what folding compares).
    fn repeats(&self, other: &Event) -> bool {
        self.type_ == other.type_ && self.reason == other.reason && self.message == other.message
    }
}

/// Adds `new` (oldest first) to `log`, folding repeats and keeping the newest
/// [`MAX_EVENTS`]. Every store implements `append_events` with this.
pub fn append_events(log: &mut Vec<Event>, new: &[Event]) {
    for event in new {
        match log.last_mut() {
            Some(last) if last.repeats(event) => {
                last.count = last.count.saturating_add(event.count.max(1));
                last.last_timestamp = last.last_timestamp.max(event.last_timestamp);
                last.generation = event.generation;
            }
            _ => log.push(event.clone()),
        }
    }
    if log.len() > MAX_EVENTS {
        log.drain(..log.len() - MAX_EVENTS);
    }
}

fn truncate(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_EVENT_MESSAGE) {
        message.truncate(cut);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn ev(reason: EventReason, msg: &str, s: i64) -> Event {
        Event::new(reason, msg, 1, at(s))
    }

    #[test]
    fn a_repeat_of_the_newest_is_folded_into_it() {
        let mut log = vec![];
        append_events(&mut log, &[ev(EventReason::StepFailed, "x", 0)]);
        let mut again = ev(EventReason::StepFailed, "x", 5);
        again.generation = 2;
        append_events(&mut log, &[again]);
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].count, 2);
        assert_eq!(log[0].first_timestamp, at(0));
        assert_eq!(log[0].last_timestamp, at(5));
        assert_eq!(log[0].generation, 2);
    }

    #[test]
    fn only_neighbours_fold() {
        let mut log = vec![];
        let batch = [
            ev(EventReason::StepFailed, "x", 0),
            ev(EventReason::StepApplied, "x", 1),
            ev(EventReason::StepFailed, "x", 2),
            ev(EventReason::StepFailed, "y", 3),
        ];
        append_events(&mut log, &batch);
        assert_eq!(log, batch.to_vec());
    }

    #[test]
    fn the_newest_max_events_are_kept_in_order() {
        let mut log = vec![];
        for i in 0..(MAX_EVENTS as i64 + 7) {
            append_events(&mut log, &[ev(EventReason::StepApplied, &i.to_string(), i)]);
        }
        assert_eq!(log.len(), MAX_EVENTS);
        assert_eq!(log[0].message, "7");
        assert_eq!(log[MAX_EVENTS - 1].message, (MAX_EVENTS + 6).to_string());
        assert!(
            log.windows(2)
                .all(|w| w[0].first_timestamp < w[1].first_timestamp)
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let e = ev(
            EventReason::StepFailed,
            &"é".repeat(MAX_EVENT_MESSAGE + 5),
            0,
        );
        assert_eq!(e.message.chars().count(), MAX_EVENT_MESSAGE + 1);
        assert!(e.message.ends_with('…'));
    }

    #[test]
    fn warnings_are_the_reasons_that_need_a_look() {
        assert_eq!(EventReason::StepFailed.event_type(), EventType::Warning);
        assert_eq!(EventReason::StepApplied.event_type(), EventType::Normal);
        let e = ev(EventReason::BackupFailed, "m", 0);
        assert_eq!(
            serde_json::to_value(&e).unwrap()["type"],
            serde_json::json!("Warning")
        );
        assert_eq!(e.reason, "BackupFailed");
    }
}
