//! `--wait`: polling the API until instances are ready or failed, a backup or restore has
//! finished, or a reconcile request has been handled; or until the timeout passes.
//!
//! Waits read the same resources a user would (`GET …/instances/{id}`, `GET …/backups/{id}`)
//! every [`POLL_INTERVAL`], print a progress line when something moves, and end with a
//! value the caller prints. A wait that ends badly returns [`NotReady`], which `cli::run`
//! turns into exit code 3 (an error in the request itself is exit code 1).
//!
//! A server that is briefly unreachable or answers 5xx during a wait does not end it: the
//! controller keeps converging while the API restarts, so the wait keeps polling until its
//! deadline, and the last such error is reported if the deadline passes.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use super::client::{Client, ClientError};
use super::output::{self, Table, clean, short_duration};
use super::resource::{Readiness, Res, parse_time, str_at};
use crate::model::InstanceKey;

/// How often a wait polls. Short enough to feel live, long enough to be cheap.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Most instances polled at once during a wait.
const POLL_CONCURRENCY: usize = 8;

/// A wait ended without success (failed or timed out). Exit code 3.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// When a wait gives up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
    timeout: Duration,
}

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Self {
            end: Instant::now() + timeout,
            timeout,
        }
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.end
    }

    /// Sleeps one poll interval (less when the deadline is closer).
    pub async fn pause(&self) {
        let left = self.end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(POLL_INTERVAL)).await;
    }

    /// `10m`, for messages.
    pub fn timeout(&self) -> String {
        short_duration(self.timeout)
    }
}

/// One instance to wait for.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: InstanceKey,
    /// When the change being waited for was written (the server's `metadata.updatedAt`).
    /// A FAILED phase from a pass before it is stale: the controller has not tried the
    /// new spec yet.
    pub since: Option<DateTime<Utc>>,
}

impl Target {
    /// A target from the server's reply to the change.
    pub fn from_reply(key: InstanceKey, reply: &Value) -> Self {
        Self {
            key,
            since: Res(reply).updated_at(),
        }
    }
}

/// How a wait for one instance ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ready(Value),
    Failed(Value, String),
    /// Still converging at the deadline; the last reply if there was one, and why.
    TimedOut(Option<Value>, String),
    /// The instance no longer exists.
    Gone,
}

#[derive(Debug, Clone)]
pub struct Settled {
    pub key: InstanceKey,
    pub outcome: Outcome,
}

/// Polls every target until each is ready, failed or gone, or the deadline passes.
/// Prints `t/i: PHASE (why)` whenever an instance's phase changes.
pub async fn until_ready(
    client: &Client,
    targets: &[Target],
    timeout: Duration,
) -> Result<Vec<Settled>, ClientError> {
    let deadline = Deadline::after(timeout);
    let mut last: HashMap<InstanceKey, Poll> = HashMap::new();
    let mut phases: HashMap<InstanceKey, String> = HashMap::new();
    loop {
        let pending: Vec<&Target> = targets
            .iter()
            .filter(|t| !last.get(&t.key).is_some_and(Poll::is_settled))
            .collect();
        if pending.is_empty() {
            break;
        }
        let polls: Vec<Result<Poll, ClientError>> =
            futures::stream::iter(pending.iter().map(|t| poll(client, t)))
                .buffered(POLL_CONCURRENCY)
                .collect()
                .await;
        for (target, p) in pending.into_iter().zip(polls) {
            let p = p?;
            report_phase(&target.key, &p, &mut phases);
            last.insert(target.key.clone(), p);
        }
        if deadline.passed() {
            break;
        }
        if last.values().any(|p| !p.is_settled()) {
            deadline.pause().await;
        }
    }
    Ok(targets
        .iter()
        .map(|t| Settled {
            key: t.key.clone(),
            outcome: finish(last.remove(&t.key), &deadline),
        })
        .collect())
}

/// What one poll of one instance found.
#[derive(Debug, Clone)]
enum Poll {
    Seen(Value, Readiness),
    Gone,
    /// Unreachable or 5xx: try again.
    Transient(String),
}

impl Poll {
    fn is_settled(&self) -> bool {
        match self {
            Poll::Seen(_, r) => !matches!(r, Readiness::Pending(_)),
            Poll::Gone => true,
            Poll::Transient(_) => false,
        }
    }
}

async fn poll(client: &Client, target: &Target) -> Result<Poll, ClientError> {
    match client.find_instance(&target.key).await {
        Ok(Some(v)) => {
            let state = readiness_since(&v, target.since);
            Ok(Poll::Seen(v, state))
        }
        Ok(None) => Ok(Poll::Gone),
        Err(e) if is_transient(&e) => Ok(Poll::Transient(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Errors a wait rides out: the API may restart while the controller works.
pub fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } => true,
        ClientError::Api { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Readiness, with a FAILED phase from before `since` read as still pending.
pub fn readiness_since(v: &Value, since: Option<DateTime<Utc>>) -> Readiness {
    let res = Res(v);
    match res.readiness() {
        Readiness::Failed(m) if is_stale(res.last_reconcile_at(), since) => Readiness::Pending(m),
        other => other,
    }
}

fn is_stale(last_pass: Option<DateTime<Utc>>, since: Option<DateTime<Utc>>) -> bool {
    match (last_pass, since) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(pass), Some(since)) => pass < since,
    }
}

fn report_phase(key: &InstanceKey, p: &Poll, phases: &mut HashMap<InstanceKey, String>) {
    let Poll::Seen(v, state) = p else { return };
    let phase = Res(v).phase().to_owned();
    if phases.get(key) == Some(&phase) {
        return;
    }
    output::print(&progress_line(&key.path(), &phase, state));
    phases.insert(key.clone(), phase);
}

/// `acme/blog: PROVISIONING (WaitingForDatabase: RDS database … is creating)`.
pub fn progress_line(name: &str, phase: &str, state: &Readiness) -> String {
    let phase = if phase.is_empty() { "UNKNOWN" } else { phase };
    match state {
        Readiness::Ready => format!("{name}: {phase} (ready)"),
        Readiness::Failed(why) | Readiness::Pending(why) => {
            format!("{name}: {phase} ({})", clean(why))
        }
    }
}

fn finish(last: Option<Poll>, deadline: &Deadline) -> Outcome {
    let waited = format!("timed out after {}", deadline.timeout());
    match last {
        Some(Poll::Seen(v, Readiness::Ready)) => Outcome::Ready(v),
        Some(Poll::Seen(v, Readiness::Failed(m))) => Outcome::Failed(v, m),
        Some(Poll::Seen(v, Readiness::Pending(m))) => {
            Outcome::TimedOut(Some(v), format!("{waited}: {m}"))
        }
        Some(Poll::Gone) => Outcome::Gone,
        Some(Poll::Transient(e)) => Outcome::TimedOut(None, format!("{waited}: {e}")),
        None => Outcome::TimedOut(None, waited),
    }
}

/// The table printed after a wait: TENANT, INSTANCE, PHASE, READY, TASKS, MESSAGE.
pub fn final_table(settled: &[Settled]) -> Table {
    let mut t = Table::new(&["TENANT", "INSTANCE", "PHASE", "READY", "TASKS", "MESSAGE"]);
    for s in settled {
        let (phase, ready, tasks, message) = match &s.outcome {
            Outcome::Ready(v) => (phase_of(v), "yes", tasks_of(v), String::new()),
            Outcome::Failed(v, m) => (phase_of(v), "no", tasks_of(v), m.clone()),
            Outcome::TimedOut(Some(v), m) => (phase_of(v), "no", tasks_of(v), m.clone()),
            Outcome::TimedOut(None, m) => ("-".into(), "no", "-".into(), m.clone()),
            Outcome::Gone => ("-".into(), "no", "-".into(), "deleted".into()),
        };
        t.row(vec![
            s.key.tenant_id.to_string(),
            s.key.instance_id.to_string(),
            phase,
            ready.into(),
            tasks,
            message,
        ]);
    }
    t
}

fn phase_of(v: &Value) -> String {
    let p = Res(v).phase();
    if p.is_empty() { "-".into() } else { p.into() }
}

/// `running/desired`.
pub fn tasks_of(v: &Value) -> String {
    let (running, desired) = Res(v).tasks();
    format!("{running}/{desired}")
}

/// `Ok` when every instance is ready; otherwise the [`NotReady`] that says which are not.
pub fn verdict(settled: &[Settled]) -> Result<(), NotReady> {
    let bad: Vec<String> = settled
        .iter()
        .filter_map(|s| {
            let name = s.key.path();
            match &s.outcome {
                Outcome::Ready(_) => None,
                Outcome::Failed(..) => Some(format!("{name} failed")),
                Outcome::TimedOut(..) => Some(format!("{name} timed out")),
                Outcome::Gone => Some(format!("{name} was deleted")),
            }
        })
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(NotReady(format!(
        "{} of {} instances not ready: {}",
        bad.len(),
        settled.len(),
        bad.join(", ")
    )))
}

/// Polls until every key shows `status.lastHandledReconcileRequest == request_id` (or is
/// gone). Prints `t/i reconciled` as each one does.
pub async fn until_handled(
    client: &Client,
    keys: &[InstanceKey],
    request_id: &str,
    timeout: Duration,
) -> Result<(), anyhow::Error> {
    let deadline = Deadline::after(timeout);
    let mut waiting: Vec<InstanceKey> = keys.to_vec();
    while !waiting.is_empty() {
        let results: Vec<Result<Option<Value>, ClientError>> =
            futures::stream::iter(waiting.iter().map(|k| client.find_instance(k)))
                .buffered(POLL_CONCURRENCY)
                .collect()
                .await;
        let mut still = vec![];
        for (key, result) in waiting.into_iter().zip(results) {
            match result {
                Ok(Some(v)) if Res(&v).last_handled_request() == Some(request_id) => {
                    output::print(&format!("instance {} reconciled", key.path()));
                }
                Ok(None) => output::print(&format!("instance {} is gone", key.path())),
                Ok(Some(_)) => still.push(key),
                Err(e) if is_transient(&e) => still.push(key),
                Err(e) => return Err(e.into()),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if deadline.passed() {
            let names: Vec<String> = waiting.iter().map(InstanceKey::path).collect();
            return Err(NotReady(format!(
                "timed out after {}: not yet reconciled: {}",
                deadline.timeout(),
                names.join(", ")
            ))
            .into());
        }
        deadline.pause().await;
    }
    Ok(())
}

/// Backup states that end a wait.
const BACKUP_DONE: [&str; 2] = ["COMPLETED", "FAILED"];

/// Polls a backup until COMPLETED or FAILED; prints each status change.
pub async fn until_backup_done(
    client: &Client,
    key: &InstanceKey,
    backup_id: &str,
    timeout: Duration,
) -> Result<Value, anyhow::Error> {
    let deadline = Deadline::after(timeout);
    let mut seen = String::new();
    loop {
        match client.get_backup(key, backup_id).await {
            Ok(b) => {
                let status = str_at(&b, "/status").to_owned();
                if status != seen {
                    output::eprint(&format!("backup {}: {}", clean(backup_id), clean(&status)));
                    seen = status;
                }
                if seen == "FAILED" {
                    let why = str_at(&b, "/error");
                    return Err(NotReady(format!(
                        "backup {backup_id} failed: {}",
                        if why.is_empty() {
                            "no reason given"
                        } else {
                            why
                        }
                    ))
                    .into());
                }
                if BACKUP_DONE.contains(&seen.as_str()) {
                    return Ok(b);
                }
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e.into()),
        }
        if deadline.passed() {
            return Err(NotReady(format!(
                "timed out after {} waiting for backup {backup_id} (last status {})",
                deadline.timeout(),
                if seen.is_empty() { "unknown" } else { &seen }
            ))
            .into());
        }
        deadline.pause().await;
    }
}

/// Where a restore stands, read from `status.restore` of the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreState {
    /// `status.restore` does not describe this request yet.
    NotStarted,
    InProgress(String),
    Completed,
    Failed(String),
}

/// Reads `status.restore` for `request_id`: COMPLETED / FAILED stages, or an error.
pub fn restore_state(v: &Value, request_id: &str) -> RestoreState {
    let Some(r) = Res(v).restore() else {
        return RestoreState::NotStarted;
    };
    if str_at(r, "/requestId") != request_id {
        return RestoreState::NotStarted;
    }
    let stage = str_at(r, "/stage");
    let error = r.get("error").filter(|e| !e.is_null());
    if stage == "FAILED" || error.is_some() {
        let why = error.map_or_else(|| "no reason given".to_owned(), error_text);
        return RestoreState::Failed(why);
    }
    let completed_at = r.get("completedAt").and_then(parse_time);
    if stage == "COMPLETED" || completed_at.is_some() {
        return RestoreState::Completed;
    }
    RestoreState::InProgress(restore_progress(r))
}

/// `RESTORING_DATABASE 40%`.
pub fn restore_progress(r: &Value) -> String {
    let stage = str_at(r, "/stage");
    let stage = if stage.is_empty() { "PENDING" } else { stage };
    match r.get("progress") {
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(p), _) => format!("{stage} {p}%"),
            (None, Some(f)) if f <= 1.0 => format!("{stage} {:.0}%", f * 100.0),
            (None, Some(f)) => format!("{stage} {f:.0}%"),
            _ => stage.to_owned(),
        },
        Some(Value::String(s)) if !s.is_empty() => format!("{stage} {s}"),
        _ => stage.to_owned(),
    }
}

/// An error field that may be a string or `{code, message}`.
fn error_text(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        other => {
            let code = str_at(other, "/code");
            let message = str_at(other, "/message");
            match (code.is_empty(), message.is_empty()) {
                (false, false) => format!("{code}: {message}"),
                (true, false) => message.to_owned(),
                _ => other.to_string(),
            }
        }
    }
}

/// Polls the instance until the restore `request_id` has completed and the instance is
/// ready, or the restore (or the instance) failed. Prints stage/progress changes.
pub async fn until_restored(
    client: &Client,
    key: &InstanceKey,
    request_id: &str,
    timeout: Duration,
) -> Result<Value, anyhow::Error> {
    let deadline = Deadline::after(timeout);
    let mut seen = String::new();
    let name = key.path();
    loop {
        match client.find_instance(key).await {
            Ok(Some(v)) => {
                let state = restore_state(&v, request_id);
                let line = match &state {
                    RestoreState::NotStarted => "restore requested".to_owned(),
                    RestoreState::InProgress(p) => format!("restore {p}"),
                    RestoreState::Completed => format!("restore COMPLETED, {}", Res(&v).phase()),
                    RestoreState::Failed(_) => "restore FAILED".to_owned(),
                };
                if line != seen {
                    output::print(&format!("{name}: {}", clean(&line)));
                    seen = line;
                }
                match state {
                    RestoreState::Failed(why) => {
                        return Err(NotReady(format!("restore of {name} failed: {why}")).into());
                    }
                    RestoreState::Completed if Res(&v).is_ready() => return Ok(v),
                    RestoreState::Completed if Res(&v).is_failed() => {
                        let why = Res(&v).failure_message();
                        return Err(
                            NotReady(format!("{name} failed after the restore: {why}")).into()
                        );
                    }
                    _ => {}
                }
            }
            Ok(None) => {
                return Err(NotReady(format!("{name} was deleted during the restore")).into());
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e.into()),
        }
        if deadline.passed() {
            return Err(NotReady(format!(
                "timed out after {} waiting for the restore of {name} ({seen})",
                deadline.timeout()
            ))
            .into());
        }
        deadline.pause().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(t: &str, i: &str) -> InstanceKey {
        InstanceKey::from_strs(t, i)
    }

    fn inst(phase: &str, ready: &str, generation: u64, observed: u64, last_pass: &str) -> Value {
        json!({
            "tenantId": "acme", "instanceId": "blog",
            "metadata": {"generation": generation, "updatedAt": "2026-01-01T00:00:10Z"},
            "status": {
                "phase": phase, "observedGeneration": observed, "lastReconcileAt": last_pass,
                "replicas": {"desired": 2, "running": 1, "pending": 1},
                "conditions": [
                    {"type": "Ready", "status": ready, "reason": "WaitingForTasks", "message": "1 of 2 running"},
                    {"type": "Degraded", "status": "True", "reason": "DatabaseFailed", "message": "boom"}
                ]
            }
        })
    }

    #[test]
    fn a_failure_older_than_the_change_is_stale() {
        let since = parse_time(&json!("2026-01-01T00:00:10Z"));
        let old = inst("FAILED", "False", 2, 1, "2026-01-01T00:00:05Z");
        assert!(matches!(
            readiness_since(&old, since),
            Readiness::Pending(_)
        ));
        let new = inst("FAILED", "False", 2, 1, "2026-01-01T00:00:11Z");
        assert_eq!(
            readiness_since(&new, since),
            Readiness::Failed("DatabaseFailed: boom".into())
        );
        assert!(matches!(readiness_since(&old, None), Readiness::Failed(_)));
    }

    #[test]
    fn progress_lines_name_the_phase_and_why() {
        let state = Readiness::Pending("WaitingForDatabase: RDS is\ncreating".into());
        assert_eq!(
            progress_line("acme/blog", "PROVISIONING", &state),
            "acme/blog: PROVISIONING (WaitingForDatabase: RDS is creating)"
        );
        assert_eq!(
            progress_line("acme/blog", "ACTIVE", &Readiness::Ready),
            "acme/blog: ACTIVE (ready)"
        );
    }

    #[test]
    fn the_final_table_and_verdict() {
        let ready = inst("ACTIVE", "True", 1, 1, "2026-01-01T00:00:11Z");
        let failed = inst("FAILED", "False", 1, 0, "2026-01-01T00:00:11Z");
        let settled = vec![
            Settled {
                key: key("acme", "blog"),
                outcome: Outcome::Ready(ready),
            },
            Settled {
                key: key("acme", "shop"),
                outcome: Outcome::Failed(failed, "DatabaseFailed: boom".into()),
            },
            Settled {
                key: key("globex", "x"),
                outcome: Outcome::TimedOut(None, "timed out after 10m".into()),
            },
        ];
        assert_eq!(
            final_table(&settled).render(),
            "TENANT   INSTANCE   PHASE    READY   TASKS   MESSAGE\n\
             acme     blog       ACTIVE   yes     1/2\n\
             acme     shop       FAILED   no      1/2     DatabaseFailed: boom\n\
             globex   x          -        no      -       timed out after 10m"
        );
        assert_eq!(
            verdict(&settled).unwrap_err().to_string(),
            "2 of 3 instances not ready: acme/shop failed, globex/x timed out"
        );
        assert!(verdict(&settled[..1]).is_ok());
    }

    #[test]
    fn restore_state_follows_the_request() {
        let with = |restore: Value| json!({"status": {"restore": restore}});
        assert_eq!(
            restore_state(&json!({"status": {}}), "r1"),
            RestoreState::NotStarted
        );
        let other = with(json!({"requestId": "r0", "stage": "COMPLETED"}));
        assert_eq!(restore_state(&other, "r1"), RestoreState::NotStarted);
        let running =
            with(json!({"requestId": "r1", "stage": "RESTORING_DATABASE", "progress": 40}));
        assert_eq!(
            restore_state(&running, "r1"),
            RestoreState::InProgress("RESTORING_DATABASE 40%".into())
        );
        let fraction = with(json!({"requestId": "r1", "stage": "COPYING", "progress": 0.25}));
        assert_eq!(
            restore_state(&fraction, "r1"),
            RestoreState::InProgress("COPYING 25%".into())
        );
        let done = with(
            json!({"requestId": "r1", "stage": "COMPLETED", "completedAt": "2026-01-01T00:00:00Z"}),
        );
        assert_eq!(restore_state(&done, "r1"), RestoreState::Completed);
        let failed = with(
            json!({"requestId": "r1", "stage": "FAILED", "error": {"code": "SnapshotMissing", "message": "gone"}}),
        );
        assert_eq!(
            restore_state(&failed, "r1"),
            RestoreState::Failed("SnapshotMissing: gone".into())
        );
    }

    #[test]
    fn transient_errors_are_unreachable_or_5xx() {
        let api = |status| ClientError::Api {
            status,
            code: "X".into(),
            message: String::new(),
            details: Value::Null,
        };
        assert!(is_transient(&api(503)));
        assert!(!is_transient(&api(404)));
        assert!(is_transient(&ClientError::Unreachable {
            server: "s".into(),
            reason: "r".into()
        }));
    }
}
