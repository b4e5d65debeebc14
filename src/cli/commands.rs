//! One function per client command: parse what is left to parse, call the API through
//! `client`, print through `output`. Rendering that deserves a test lives in pure functions
//! (`instances_table`, `backups_table`, `log_line`, …) next to the command that uses it.

use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::client::{Client, ClientError, LogQuery};
use super::diff;
use super::manifest::{self, Manifest};
use super::output::{self, Table, age, age_or_dash, clean, rfc3339};
use super::resource::{Res, parse_time, str_at};
use super::wait::{self, Target};
use super::{
    ApplyArgs, BackupArgs, ChangeArgs, CliCommand, Connection, EventsArgs, GetArgs,
    HealthcheckArgs, InstanceArgs, LogsArgs, OutputFormat, ReconcileArgs, RestoreArgs, ScaleArgs,
    WaitArgs,
};
use crate::model::InstanceKey;

/// Page size asked of `GET …/logs` when `--limit` bounds the total; small enough that any
/// sensible server maximum allows it.
const LOG_PAGE: u64 = 100;

/// A log listing that keeps returning empty pages with new tokens is given up on.
const MAX_EMPTY_LOG_PAGES: usize = 20;

pub async fn dispatch(cmd: CliCommand) -> anyhow::Result<()> {
    match cmd {
        CliCommand::Apply(a) => apply(a).await,
        CliCommand::Get(a) => get(a).await,
        CliCommand::Describe(a) => describe(a).await,
        CliCommand::Scale(a) => scale(a).await,
        CliCommand::Suspend(a) => suspend_or_resume(a, Verb::Suspend).await,
        CliCommand::Resume(a) => suspend_or_resume(a, Verb::Resume).await,
        CliCommand::Backup(a) => backup(a).await,
        CliCommand::Backups(a) => backups(a).await,
        CliCommand::Restore(a) => restore(a).await,
        CliCommand::Logs(a) => logs(a).await,
        CliCommand::Events(a) => events(a).await,
        CliCommand::Healthcheck(a) => healthcheck(a).await,
        CliCommand::Delete(a) => delete(a).await,
        CliCommand::ReconcileNow(a) => reconcile_now(a).await,
    }
}

fn connect(conn: &Connection) -> Result<Client, ClientError> {
    Client::new(&conn.server, conn.token.as_deref())
}

// ---- apply ---------------------------------------------------------------------------

async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let manifests = manifest::load(&args.files)
        .map_err(|problems| anyhow!("{}; nothing was applied", problems.join("; ")))?;
    let client = connect(&args.conn)?;
    if args.dry_run {
        return dry_run(&client, &manifests).await;
    }
    let mut targets = vec![];
    let mut failures = vec![];
    for m in &manifests {
        match apply_one(&client, m).await {
            Ok((verb, reply)) => {
                output::print(&format!("instance {} {verb}", m.name()));
                targets.push(Target::from_reply(m.key.clone(), &reply));
            }
            // Nothing further can succeed; say so once.
            Err(e @ ClientError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => failures.push(format!("{}: {e}", m.name())),
        }
    }
    let waited = if args.wait.wait && !targets.is_empty() {
        wait_ready(&client, &targets, &args.wait).await
    } else {
        Ok(())
    };
    if !failures.is_empty() {
        bail!(
            "{} of {} instances not applied: {}",
            failures.len(),
            manifests.len(),
            failures.join("; ")
        );
    }
    waited
}

/// PUTs one manifest; `created`, `configured` or `unchanged`, and the server's resource.
async fn apply_one(client: &Client, m: &Manifest) -> Result<(&'static str, Value), ClientError> {
    let before = client.find_instance(&m.key).await?;
    let reply = client.put_instance(&m.key, &m.body()).await?;
    let was = before.as_ref().and_then(|b| Res(b).generation());
    let verb = apply_verb(reply.status, was, Res(&reply.body).generation());
    Ok((verb, reply.body))
}

/// 201 is a create; otherwise the generation tells a change from a no-op.
pub fn apply_verb(status: u16, before: Option<u64>, after: Option<u64>) -> &'static str {
    match (status, before) {
        (201, _) => "created",
        (_, Some(b)) if after == Some(b) => "unchanged",
        _ => "configured",
    }
}

async fn dry_run(client: &Client, manifests: &[Manifest]) -> anyhow::Result<()> {
    for m in manifests {
        let current = client.find_instance(&m.key).await?;
        let plan = diff::plan(current.as_ref(), &m.spec_json());
        for line in diff::render(&m.name(), &plan) {
            output::print(&line);
        }
    }
    Ok(())
}

/// Waits for `targets`, prints the final table, and fails with `NotReady` unless all are
/// ready.
async fn wait_ready(client: &Client, targets: &[Target], opts: &WaitArgs) -> anyhow::Result<()> {
    let settled = wait::until_ready(client, targets, opts.timeout).await?;
    output::print("");
    output::print(&wait::final_table(&settled).render());
    wait::verdict(&settled)?;
    Ok(())
}

// ---- get / describe ------------------------------------------------------------------

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    match (&args.tenant, &args.id) {
        (Some(t), Some(i)) => {
            let key = InstanceKey::new(t.clone(), i.clone());
            let v = client.get_instance(&key).await?;
            print_one(&v, args.output)
        }
        (tenant, None) => {
            let items = client.list_instances(tenant.as_ref()).await?;
            print_list(items, args.output)
        }
        (None, Some(_)) => bail!("an instance id needs its tenant: wpfleet get TENANT ID"),
    }
}

fn print_one(v: &Value, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            output::print(&instances_table(std::slice::from_ref(v), Utc::now()).render())
        }
        OutputFormat::Json => output::print(&output::to_json(v)),
        OutputFormat::Yaml => output::print(&output::to_yaml(v)?),
    }
    Ok(())
}

fn print_list(items: Vec<Value>, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table if items.is_empty() => output::eprint("no instances found"),
        OutputFormat::Table => output::print(&instances_table(&items, Utc::now()).render()),
        OutputFormat::Json => output::print(&output::to_json(&json!({ "instances": items }))),
        OutputFormat::Yaml => output::print(&output::to_yaml(&json!({ "instances": items }))?),
    }
    Ok(())
}

/// TENANT, INSTANCE, STATE (desired), PHASE (observed), READY, TASKS, TIER, AGE.
pub fn instances_table(items: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(&[
        "TENANT", "INSTANCE", "STATE", "PHASE", "READY", "TASKS", "TIER", "AGE",
    ]);
    for v in items {
        let r = Res(v);
        t.row(vec![
            dash(r.tenant()),
            dash(r.instance()),
            desired_state(&r),
            dash(r.phase()),
            yes_no(r.is_ready()).into(),
            wait::tasks_of(v),
            dash(r.tier()),
            age_or_dash(r.created_at(), now),
        ]);
    }
    t
}

/// The STATE column: the spec's state, or DELETED once deletion was requested (deletion
/// is desired state too, and the spec no longer says what is wanted).
fn desired_state(r: &Res) -> String {
    if r.deletion_requested_at().is_some() {
        "DELETED".into()
    } else {
        dash(r.spec_state())
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

async fn describe(args: InstanceArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let key = args.target.key();
    let res = client.get_instance(&key).await?;
    // Supplementary views: the page is still useful without them.
    let status = client.instance_status(&key).await.ok();
    let events = client.events(&key).await.ok().flatten();
    output::print(&super::describe::render(
        &res,
        status.as_ref(),
        events.as_ref(),
        Utc::now(),
    ));
    Ok(())
}

async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let path = if args.ready { "readyz" } else { "healthz" };
    client.probe(path).await?;
    output::print(&format!("{} {path}: ok", client.server()));
    Ok(())
}

async fn events(args: EventsArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let key = args.target.key();
    let Some(reply) = client.events(&key).await? else {
        // 404: no such instance, or a server without events; say which.
        client.get_instance(&key).await?;
        anyhow::bail!("this server does not keep instance events");
    };
    let list = reply.get("events").and_then(Value::as_array);
    let list = list.map(Vec::as_slice).unwrap_or_default();
    match args.output {
        OutputFormat::Table if list.is_empty() => output::eprint("no events"),
        OutputFormat::Table => {
            output::print(&super::describe::events_table(list, Utc::now()).render())
        }
        OutputFormat::Json => output::print(&output::to_json(&json!({ "events": list }))),
        OutputFormat::Yaml => output::print(&output::to_yaml(&json!({ "events": list }))?),
    }
    Ok(())
}

// ---- scale / suspend / resume / delete -----------------------------------------------

async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let key = args.target.key();
    let reply = client.scale(&key, args.count).await?;
    output::print(&format!(
        "instance {} scaled to {} tasks",
        key.path(),
        args.count
    ));
    after_change(&client, key, &reply, &args.wait).await
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Suspend,
    Resume,
}

async fn suspend_or_resume(args: ChangeArgs, verb: Verb) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let key = args.target.key();
    let (reply, done) = match verb {
        Verb::Suspend => (client.suspend(&key).await?, "suspended"),
        Verb::Resume => (client.resume(&key).await?, "resumed"),
    };
    output::print(&format!("instance {} {done}", key.path()));
    after_change(&client, key, &reply, &args.wait).await
}

/// `--wait` after a change that answered with the resource.
async fn after_change(
    client: &Client,
    key: InstanceKey,
    reply: &Value,
    opts: &WaitArgs,
) -> anyhow::Result<()> {
    if !opts.wait {
        return Ok(());
    }
    wait_ready(client, &[Target::from_reply(key, reply)], opts).await
}

async fn delete(args: InstanceArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let key = args.target.key();
    let reply = client.delete_instance(&key).await?;
    output::print(&delete_line(&key, &reply));
    Ok(())
}

/// `instance acme/blog deleted (DEPROVISIONING; data kept for 30 days)`.
pub fn delete_line(key: &InstanceKey, reply: &Value) -> String {
    let status = str_at(reply, "/status");
    let mut notes = vec![];
    if !status.is_empty() {
        notes.push(clean(status));
    }
    if let Some(days) = reply.get("dataRetentionDays").and_then(Value::as_u64) {
        notes.push(format!("data kept for {days} days"));
    }
    if notes.is_empty() {
        format!("instance {} deleted", key.path())
    } else {
        format!("instance {} deleted ({})", key.path(), notes.join("; "))
    }
}

// ---- backups and restore -------------------------------------------------------------

async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let key = args.target.key();
    let reply = client.backup(&key).await?;
    let id = str_at(&reply, "/backupId");
    if id.is_empty() {
        bail!("unexpected reply from {}: no backupId", client.server());
    }
    // The id alone on stdout, so `ID=$(wpfleet backup t i)` works.
    output::print(&clean(id));
    if args.wait.wait {
        wait::until_backup_done(&client, &key, id, args.wait.timeout).await?;
    }
    Ok(())
}

async fn backups(args: InstanceArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let items = client.list_backups(&args.target.key()).await?;
    if items.is_empty() {
        output::eprint("no backups found");
    } else {
        output::print(&backups_table(&items, Utc::now()).render());
    }
    Ok(())
}

/// BACKUP ID, STATUS, REQUESTED, COMPLETED (ages), RDS SNAPSHOT, ERROR.
pub fn backups_table(items: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(&[
        "BACKUP ID",
        "STATUS",
        "REQUESTED",
        "COMPLETED",
        "RDS SNAPSHOT",
        "ERROR",
    ]);
    for b in items {
        let time = |field: &str| age_or_dash(b.get(field).and_then(parse_time), now);
        t.row(vec![
            dash(str_at(b, "/backupId")),
            dash(str_at(b, "/status")),
            time("requestedAt"),
            time("completedAt"),
            dash(str_at(b, "/rdsSnapshotId")),
            error_field(b.get("error")),
        ]);
    }
    t
}

/// An `error` that may be null, a string, or `{code, message}`.
fn error_field(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => match (str_at(other, "/code"), str_at(other, "/message")) {
            ("", "") => other.to_string(),
            ("", m) => m.to_owned(),
            (c, "") => c.to_owned(),
            (c, m) => format!("{c}: {m}"),
        },
    }
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let key = args.target.key();
    let reply = client.restore(&key, &args.backup_id).await?;
    let request_id = str_at(&reply, "/requestId");
    if request_id.is_empty() {
        bail!("unexpected reply from {}: no requestId", client.server());
    }
    output::print(&format!(
        "restore of {} from {} requested ({})",
        key.path(),
        clean(&args.backup_id),
        clean(request_id)
    ));
    if !args.wait.wait {
        return Ok(());
    }
    let res = wait::until_restored(&client, &key, request_id, args.wait.timeout).await?;
    output::print("");
    output::print(&instances_table(std::slice::from_ref(&res), Utc::now()).render());
    Ok(())
}

// ---- logs ----------------------------------------------------------------------------

async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    let key = args.target.key();
    let mut query = LogQuery {
        start_time: args
            .since
            .map(|d| Utc::now() - chrono::Duration::from_std(d).unwrap_or_default())
            .map(rfc3339)
            .or(args.start),
        end_time: args.end,
        ..LogQuery::default()
    };
    let mut printed: u64 = 0;
    let mut empty_pages = 0;
    loop {
        let remaining = args.limit.map(|l| l - printed);
        query.limit = remaining.map(|r| r.min(LOG_PAGE) as usize);
        let page = client.logs(&key, &query).await?;
        let events = page.get("events").and_then(Value::as_array);
        let events = events.map(Vec::as_slice).unwrap_or_default();
        for e in events
            .iter()
            .take(remaining.map_or(usize::MAX, |r| r as usize))
        {
            output::print(&log_line(e));
            printed += 1;
        }
        empty_pages = if events.is_empty() {
            empty_pages + 1
        } else {
            0
        };
        let next = page
            .get("nextToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let done = args.limit.is_some_and(|l| printed >= l)
            || output::stdout_closed()
            || empty_pages >= MAX_EMPTY_LOG_PAGES;
        match next {
            // CloudWatch hands back the same token at the end of a stream.
            Some(t) if !done && query.next_token.as_deref() != Some(t) => {
                query.next_token = Some(t.to_owned());
            }
            _ => return Ok(()),
        }
    }
}

/// `2026-11-25T10:04:47.377Z wordpress/abc123 GET / 200`.
pub fn log_line(e: &Value) -> String {
    let time = e.get("timestamp").map_or_else(String::new, |t| {
        parse_time(t).map_or_else(|| clean(&output::scalar(t)), rfc3339)
    });
    let stream = str_at(e, "/logStream");
    let message = str_at(e, "/message");
    clean(&format!("{time} {} {}", dash(stream), message.trim_end()))
}

// ---- reconcile-now -------------------------------------------------------------------

async fn reconcile_now(args: ReconcileArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn)?;
    // List before asking: every instance that exists now will carry the request.
    let (keys, reply) = match (&args.tenant, &args.id, &args.for_tenant) {
        (Some(t), Some(i), _) => {
            let key = InstanceKey::new(t.clone(), i.clone());
            let reply = client.reconcile_instance(&key).await?;
            (vec![key], reply)
        }
        (_, _, Some(t)) => {
            let keys = if args.wait {
                keys_of(client.list_instances(Some(t)).await?)
            } else {
                vec![]
            };
            (keys, client.reconcile_tenant(t).await?)
        }
        _ if args.all => {
            let keys = if args.wait {
                keys_of(client.list_instances(None).await?)
            } else {
                vec![]
            };
            (keys, client.reconcile_all().await?)
        }
        _ => bail!("name an instance (TENANT ID), --tenant TENANT or --all"),
    };
    let request_id = str_at(&reply, "/requestId").to_owned();
    if request_id.is_empty() {
        bail!("unexpected reply from {}: no requestId", client.server());
    }
    output::print(&reconcile_line(&request_id, &reply, &keys));
    if args.wait {
        wait::until_handled(&client, &keys, &request_id, args.timeout).await?;
    }
    Ok(())
}

fn keys_of(items: Vec<Value>) -> Vec<InstanceKey> {
    items
        .iter()
        .filter_map(|v| {
            let r = Res(v);
            let t = crate::model::TenantId::parse(r.tenant()).ok()?;
            let i = crate::model::InstanceId::parse(r.instance()).ok()?;
            Some(InstanceKey::new(t, i))
        })
        .collect()
}

/// `reconcile requested: rr-1 (3 instances)` or `(acme/blog)`.
pub fn reconcile_line(request_id: &str, reply: &Value, keys: &[InstanceKey]) -> String {
    let scope = match (reply.get("instances").and_then(Value::as_u64), keys) {
        (Some(1), _) => "1 instance".to_owned(),
        (Some(n), _) => format!("{n} instances"),
        (None, [one]) => one.path(),
        (None, _) => "instances".to_owned(),
    };
    format!("reconcile requested: {} ({scope})", clean(request_id))
}

/// A human-readable "when": the time and its age.
pub fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => format!("{} ({} ago)", rfc3339(t), age(t, now)),
        None => "<none>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    #[test]
    fn apply_verbs() {
        assert_eq!(apply_verb(201, None, Some(1)), "created");
        assert_eq!(apply_verb(200, Some(3), Some(3)), "unchanged");
        assert_eq!(apply_verb(200, Some(3), Some(4)), "configured");
        // Created by someone else between our GET and PUT: a replace, so "configured".
        assert_eq!(apply_verb(200, None, Some(2)), "configured");
    }

    #[test]
    fn the_instances_table() {
        let ready = json!({
            "tenantId": "acme", "instanceId": "blog",
            "metadata": {"generation": 2, "createdAt": "2026-11-25T10:00:00Z"},
            "spec": {"tier": "STANDARD", "state": "ACTIVE"},
            "status": {"phase": "ACTIVE", "observedGeneration": 2,
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "replicas": {"desired": 2, "running": 2, "pending": 0}}
        });
        let fresh = json!({
            "tenantId": "globex", "instanceId": "shop",
            "metadata": {"generation": 1, "createdAt": "2026-11-25T11:59:30Z"},
            "spec": {"tier": "PROFESSIONAL", "state": "ACTIVE"},
            "status": {"phase": "PROVISIONING", "observedGeneration": 0}
        });
        let mut deleted = fresh.clone();
        deleted["instanceId"] = json!("old");
        deleted["metadata"]["deletionRequestedAt"] = json!("2026-11-25T11:59:40Z");
        deleted["status"]["phase"] = json!("DEPROVISIONING");
        assert_eq!(
            instances_table(&[ready, fresh, deleted, json!({})], now()).render(),
            "TENANT   INSTANCE   STATE     PHASE            READY   TASKS   TIER           AGE\n\
             acme     blog       ACTIVE    ACTIVE           yes     2/2     STANDARD       2h\n\
             globex   shop       ACTIVE    PROVISIONING     no      0/0     PROFESSIONAL   30s\n\
             globex   old        DELETED   DEPROVISIONING   no      0/0     PROFESSIONAL   30s\n\
             -        -          -         -                no      0/0     -              -"
        );
    }

    #[test]
    fn the_backups_table() {
        let items = [
            json!({"backupId": "bk-1", "status": "COMPLETED", "requestedAt": "2026-11-25T11:00:00Z",
                   "completedAt": "2026-11-25T11:05:00Z", "rdsSnapshotId": "snap-1", "error": null}),
            json!({"backupId": "bk-2", "status": "FAILED", "requestedAt": "2026-11-25T11:58:00Z",
                   "error": {"code": "SnapshotQuotaExceeded", "message": "too many"}}),
        ];
        assert_eq!(
            backups_table(&items, now()).render(),
            "BACKUP ID   STATUS      REQUESTED   COMPLETED   RDS SNAPSHOT   ERROR\n\
             bk-1        COMPLETED   1h          55m         snap-1\n\
             bk-2        FAILED      2m          -           -              SnapshotQuotaExceeded: too many"
        );
    }

    #[test]
    fn log_lines() {
        let e = json!({"timestamp": "2026-11-25T10:04:47.377Z", "logStream": "wordpress/abc",
                       "message": "GET / 200\n"});
        assert_eq!(
            log_line(&e),
            "2026-11-25T10:04:47.377Z wordpress/abc GET / 200"
        );
        let epoch = json!({"timestamp": 1_795_000_000_000_i64, "message": "a\u{1b}[2Jb"});
        assert_eq!(log_line(&epoch), "2026-11-18T11:06:40.000Z - a?[2Jb");
    }

    #[test]
    fn one_line_summaries() {
        let key = InstanceKey::from_strs("acme", "blog");
        assert_eq!(
            delete_line(
                &key,
                &json!({"status": "DEPROVISIONING", "dataRetentionDays": 30})
            ),
            "instance acme/blog deleted (DEPROVISIONING; data kept for 30 days)"
        );
        assert_eq!(
            delete_line(&key, &Value::Null),
            "instance acme/blog deleted"
        );
        assert_eq!(
            reconcile_line("rr-1", &json!({"requestId": "rr-1"}), &[key]),
            "reconcile requested: rr-1 (acme/blog)"
        );
        assert_eq!(
            reconcile_line("rr-2", &json!({"instances": 3}), &[]),
            "reconcile requested: rr-2 (3 instances)"
        );
        assert_eq!(
            when(Some(now() - chrono::Duration::minutes(5)), now()),
            "2026-11-25T11:55:00.000Z (5m ago)"
        );
    }
}
