//! `wpfleet describe`: one instance as a page for people, in the order an operator asks
//! questions: what is it, what should it be (spec), what is it (status, resources), why
//! (conditions, last error, restore), what runs (tasks), what happened (events), and where
//! to go next (links).
//!
//! Rendering is a pure function of the replies, so it is tested without a server. Sections
//! whose data the server did not send are left out or say `<none>`; nothing here fails.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::commands::when;
use super::output::{Table, age_or_dash, clean, scalar, to_yaml};
use super::resource::{Res, conditions_of, parse_time, str_at};
use super::wait::restore_progress;

/// Keys are padded to this width so values line up.
const KEY_WIDTH: usize = 20;

/// The page: `res` is `GET …/{id}`, `status` is `GET …/{id}/status` (tasks, deployment and
/// health), `events` is `GET …/{id}/events` when the server has it.
pub fn render(
    res: &Value,
    status: Option<&Value>,
    events: Option<&Value>,
    now: DateTime<Utc>,
) -> String {
    let mut page = Page::default();
    header(&mut page, res, now);
    spec(&mut page, res);
    status_section(&mut page, res, status, now);
    resources(&mut page, res);
    conditions(&mut page, res, now);
    problems(&mut page, res, now);
    tasks(&mut page, status, now);
    if let Some(events) = events {
        events_section(&mut page, events, now);
    }
    links(&mut page, res);
    page.lines.join("\n")
}

#[derive(Default)]
struct Page {
    lines: Vec<String>,
}

impl Page {
    fn kv(&mut self, indent: usize, key: &str, value: impl AsRef<str>) {
        let key = format!("{}{key}:", " ".repeat(indent));
        self.lines.push(
            format!("{key:<KEY_WIDTH$} {}", clean(value.as_ref()))
                .trim_end()
                .to_owned(),
        );
    }

    fn title(&mut self, title: &str) {
        self.lines.push(format!("{title}:"));
    }

    /// Indented block (a table or YAML), two spaces in.
    fn block(&mut self, text: &str) {
        self.lines
            .extend(text.lines().map(|l| format!("  {l}").trim_end().to_owned()));
    }
}

fn header(page: &mut Page, res: &Value, now: DateTime<Utc>) {
    let r = Res(res);
    page.kv(0, "Name", r.name());
    page.kv(0, "Created", when(r.created_at(), now));
    page.kv(0, "Updated", when(r.updated_at(), now));
    if let Some(t) = r.deletion_requested_at() {
        page.kv(0, "Deletion requested", when(Some(t), now));
    }
    let number = |n: Option<u64>| n.map_or_else(|| "?".into(), |n| n.to_string());
    page.kv(
        0,
        "Generation",
        format!(
            "{} (observed {})",
            number(r.generation()),
            number(r.observed_generation())
        ),
    );
}

fn spec(page: &mut Page, res: &Value) {
    page.title("Spec");
    let mut spec = Res(res).spec().clone();
    // A null restore is noise; a pending one is shown under Restore too.
    if let Some(obj) = spec.as_object_mut()
        && obj.get("restore").is_some_and(Value::is_null)
    {
        obj.remove("restore");
    }
    match to_yaml(&spec) {
        Ok(text) if !spec.is_null() => page.block(&text),
        _ => page.block("<none>"),
    }
}

fn status_section(page: &mut Page, res: &Value, status: Option<&Value>, now: DateTime<Utc>) {
    let r = Res(res);
    page.title("Status");
    page.kv(2, "Phase", dash(r.phase()));
    let ready = if r.is_ready() {
        "yes".to_owned()
    } else {
        format!("no ({})", r.message())
    };
    page.kv(2, "Ready", ready);
    let n = |p: &str| res.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    page.kv(
        2,
        "Tasks",
        format!(
            "{} running, {} pending, {} desired",
            n("/status/replicas/running"),
            n("/status/replicas/pending"),
            n("/status/replicas/desired")
        ),
    );
    if let Some(s) = status {
        page.kv(2, "Deployment", dash(str_at(s, "/deploymentStatus")));
        page.kv(2, "Health", dash(str_at(s, "/healthStatus")));
    }
    page.kv(2, "Last reconcile", when(r.last_reconcile_at(), now));
    if let Some(id) = r.last_handled_request() {
        page.kv(2, "Last request", id);
    }
}

fn resources(page: &mut Page, res: &Value) {
    let Some(map) = res.pointer("/status/resources").and_then(Value::as_object) else {
        return;
    };
    page.title("Resources");
    if map.is_empty() {
        page.block("<none yet>");
    }
    for (name, r) in map {
        page.kv(2, name, resource_line(r));
    }
}

/// `wp-acme-blog (available, db.t4g.micro, host)`: the id, then what else is known.
fn resource_line(r: &Value) -> String {
    let id = [str_at(r, "/name"), str_at(r, "/id")]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("?");
    let extras: Vec<&str> = ["/image", "/status", "/instanceClass", "/endpoint"]
        .iter()
        .map(|p| str_at(r, p))
        .filter(|s| !s.is_empty())
        .collect();
    if extras.is_empty() {
        id.to_owned()
    } else {
        format!("{id} ({})", extras.join(", "))
    }
}

fn conditions(page: &mut Page, res: &Value, now: DateTime<Utc>) {
    let conds = conditions_of(res.pointer("/status/conditions"));
    page.title("Conditions");
    if conds.is_empty() {
        page.block("<none>");
        return;
    }
    let mut t = Table::new(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]);
    for c in conds {
        t.row(vec![
            c.type_,
            c.status,
            c.reason,
            age_or_dash(c.last_transition_time, now),
            c.message,
        ]);
    }
    page.block(&t.render());
}

fn problems(page: &mut Page, res: &Value, now: DateTime<Utc>) {
    match res.pointer("/status/lastError").filter(|e| !e.is_null()) {
        None => page.kv(0, "Last error", "<none>"),
        Some(e) => {
            page.title("Last error");
            page.kv(2, "Code", dash(str_at(e, "/code")));
            page.kv(2, "Message", str_at(e, "/message"));
            if let Some(step) = e.get("step").and_then(Value::as_str) {
                page.kv(2, "Step", step);
            }
            if let Some(retry) = e.get("retryable").and_then(Value::as_bool) {
                page.kv(2, "Retryable", if retry { "yes" } else { "no" });
            }
            page.kv(2, "At", when(e.get("at").and_then(parse_time), now));
        }
    }
    match Res(res).restore() {
        None => page.kv(0, "Restore", "<none>"),
        Some(r) => {
            page.title("Restore");
            page.kv(2, "Request", dash(str_at(r, "/requestId")));
            page.kv(2, "Backup", dash(str_at(r, "/backupId")));
            page.kv(2, "Progress", restore_progress(r));
            if let Some(t) = r.get("completedAt").and_then(parse_time) {
                page.kv(2, "Completed", when(Some(t), now));
            }
            if let Some(e) = r.get("error").filter(|e| !e.is_null()) {
                page.kv(2, "Error", scalar(e));
            }
        }
    }
}

fn tasks(page: &mut Page, status: Option<&Value>, now: DateTime<Utc>) {
    let Some(list) = status
        .and_then(|s| s.get("tasks"))
        .and_then(Value::as_array)
    else {
        return;
    };
    page.title("Tasks");
    if list.is_empty() {
        page.block("<none>");
        return;
    }
    let mut t = Table::new(&["ID", "STATUS", "HEALTH", "STARTED"]);
    for task in list {
        t.row(vec![
            dash(str_at(task, "/id")),
            dash(str_at(task, "/status")),
            dash(str_at(task, "/health")),
            age_or_dash(task.get("startedAt").and_then(parse_time), now),
        ]);
    }
    page.block(&t.render());
}

/// `GET …/events` as kubectl shows events: oldest first, a repeated one as
/// `5m (x3 over 10m)`.
fn events_section(page: &mut Page, events: &Value, now: DateTime<Utc>) {
    let Some(list) = events.get("events").and_then(Value::as_array) else {
        return;
    };
    page.title("Events");
    if list.is_empty() {
        page.block("<none>");
        return;
    }
    page.block(&events_table(list, now).render());
}

/// TYPE, REASON, AGE (of the last time; `(xN over AGE)` for a repeat), MESSAGE.
pub fn events_table(list: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(&["TYPE", "REASON", "AGE", "MESSAGE"]);
    for e in list {
        let time = |field: &str| e.get(field).and_then(parse_time);
        let last = age_or_dash(time("lastTimestamp"), now);
        let age = match e.get("count").and_then(Value::as_u64) {
            Some(n) if n > 1 => format!(
                "{last} (x{n} over {})",
                age_or_dash(time("firstTimestamp"), now)
            ),
            _ => last,
        };
        t.row(vec![
            dash(str_at(e, "/type")),
            dash(str_at(e, "/reason")),
            age,
            str_at(e, "/message").to_owned(),
        ]);
    }
    t
}

fn links(page: &mut Page, res: &Value) {
    let Some(map) = res.get("_links").and_then(Value::as_object) else {
        return;
    };
    page.title("Links");
    let mut t = Table::new(&["REL", "METHOD", "HREF"]);
    // Sorted: JSON object order is not something to show a person.
    let mut rels: Vec<_> = map.iter().collect();
    rels.sort_by(|a, b| a.0.cmp(b.0));
    for (rel, link) in rels {
        let method = str_at(link, "/method");
        t.row(vec![
            rel.clone(),
            if method.is_empty() { "GET" } else { method }.to_owned(),
            str_at(link, "/href").to_owned(),
        ]);
    }
    page.block(&t.render());
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn resource() -> Value {
        json!({
            "tenantId": "acme", "instanceId": "blog",
            "metadata": {"generation": 2, "resourceVersion": "5",
                         "createdAt": "2026-11-25T10:00:00Z", "updatedAt": "2026-11-25T11:55:00Z",
                         "deletionRequestedAt": null},
            "spec": {"organizationName": "Acme", "contactEmail": "ops@acme.example",
                     "tier": "STANDARD", "state": "ACTIVE",
                     "configuration": {"desiredCount": 4, "wordpressVersion": "6.5", "phpVersion": "8.2"},
                     "restore": null},
            "status": {
                "phase": "SCALING", "observedGeneration": 1,
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "WaitingForTasks",
                     "message": "2 of 4 tasks running", "lastTransitionTime": "2026-11-25T11:55:00Z"}
                ],
                "replicas": {"desired": 4, "running": 2, "pending": 2},
                "resources": {
                    "database": {"id": "wp-acme-blog", "status": "available", "instanceClass": "db.t4g.micro"},
                    "logGroup": {"id": "/wpfleet/acme/blog", "arn": "arn:x"}
                },
                "lastReconcileAt": "2026-11-25T11:59:58Z",
                "lastHandledReconcileRequest": "rr-1",
                "lastError": {"code": "ThrottlingException", "message": "slow down",
                              "step": "UpdateService", "retryable": true, "at": "2026-11-25T11:59:00Z"},
                "restore": {"requestId": "rq-1", "backupId": "bk-1", "stage": "RESTORING_DATABASE", "progress": 40}
            },
            "_links": {"self": {"href": "/v1.0/tenants/acme/instances/blog"},
                       "scale": {"href": "/v1.0/tenants/acme/instances/blog/scale", "method": "POST"}}
        })
    }

    #[test]
    fn a_full_page() {
        let status = json!({"deploymentStatus": "IN_PROGRESS", "healthStatus": "DEGRADED",
            "tasks": [{"id": "t-1", "status": "RUNNING", "health": "HEALTHY", "startedAt": "2026-11-25T11:50:00Z"}]});
        let events = json!({"events": [
            {"type": "Normal", "reason": "StepApplied", "message": "UpdateService wpf-acme-blog",
             "generation": 2, "count": 1,
             "firstTimestamp": "2026-11-25T11:55:00Z", "lastTimestamp": "2026-11-25T11:55:00Z"},
            {"type": "Warning", "reason": "StepFailed", "message": "ecs UpdateService: rate exceeded",
             "generation": 2, "count": 3,
             "firstTimestamp": "2026-11-25T11:50:00Z", "lastTimestamp": "2026-11-25T11:59:00Z"}]});
        let page = render(&resource(), Some(&status), Some(&events), now());
        let expected = "\
Name:                acme/blog
Created:             2026-11-25T10:00:00.000Z (2h ago)
Updated:             2026-11-25T11:55:00.000Z (5m ago)
Generation:          2 (observed 1)
Spec:
  organizationName: Acme
  contactEmail: ops@acme.example
  tier: STANDARD
  state: ACTIVE
  configuration:
    desiredCount: 4
    wordpressVersion: '6.5'
    phpVersion: '8.2'
Status:
  Phase:             SCALING
  Ready:             no (WaitingForTasks: 2 of 4 tasks running)
  Tasks:             2 running, 2 pending, 4 desired
  Deployment:        IN_PROGRESS
  Health:            DEGRADED
  Last reconcile:    2026-11-25T11:59:58.000Z (2s ago)
  Last request:      rr-1
Resources:
  database:          wp-acme-blog (available, db.t4g.micro)
  logGroup:          /wpfleet/acme/blog
Conditions:
  TYPE    STATUS   REASON            AGE   MESSAGE
  Ready   False    WaitingForTasks   5m    2 of 4 tasks running
Last error:
  Code:              ThrottlingException
  Message:           slow down
  Step:              UpdateService
  Retryable:         yes
  At:                2026-11-25T11:59:00.000Z (1m ago)
Restore:
  Request:           rq-1
  Backup:            bk-1
  Progress:          RESTORING_DATABASE 40%
Tasks:
  ID    STATUS    HEALTH    STARTED
  t-1   RUNNING   HEALTHY   10m
Events:
  TYPE      REASON        AGE                MESSAGE
  Normal    StepApplied   5m                 UpdateService wpf-acme-blog
  Warning   StepFailed    1m (x3 over 10m)   ecs UpdateService: rate exceeded
Links:
  REL     METHOD   HREF
  scale   POST     /v1.0/tenants/acme/instances/blog/scale
  self    GET      /v1.0/tenants/acme/instances/blog";
        assert_eq!(page, expected);
    }

    #[test]
    fn sparse_replies_still_render() {
        let page = render(
            &json!({"tenantId": "acme", "instanceId": "x"}),
            None,
            None,
            now(),
        );
        assert!(page.starts_with("Name:                acme/x\n"), "{page}");
        assert!(
            page.contains("Generation:          ? (observed ?)"),
            "{page}"
        );
        assert!(page.contains("Last error:          <none>"), "{page}");
        assert!(!page.contains("Events:"), "{page}");
        assert!(!page.contains("Tasks:\n"), "{page}");
    }
}
