//! Everything the client prints: aligned tables, short ages (`45s`, `5m`, `2h`, `3d`),
//! JSON/YAML documents, and the one-line error (`error: CODE: message`).
//!
//! Text from the server (messages, names) goes through [`clean`] before it reaches the
//! terminal: a control character in a reply can neither break a table row nor send an
//! escape sequence to the user's terminal.
//!
//! Writing to a closed stdout (`wpfleet get | head -1`) is not an error: later output is
//! dropped quietly, [`stdout_closed`] turns true, and the command still finishes what it
//! changes on the server.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::client::ClientError;

/// Set once a write to stdout failed (the reader went away).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints `text` and a newline to stdout.
pub fn print(text: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if written.is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Prints `text` and a newline to stderr; a closed stderr is ignored (nothing to tell).
pub fn eprint(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(text.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

/// Whether the reader of stdout went away; commands that only print may stop early.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// A table with kubectl's look: upper-case headers, columns three spaces apart, no
/// trailing blanks.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

const GAP: &str = "   ";

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: vec![],
        }
    }

    /// Adds a row; cells are cleaned, missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.iter().map(|c| clean(c)).collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let widths = self.widths();
        std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|row| render_row(row, &widths))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn widths(&self) -> Vec<usize> {
        (0..self.header.len())
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| r[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }
}

fn render_row(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str(GAP);
        }
        line.push_str(cell);
        let pad = width.saturating_sub(cell.chars().count());
        line.extend(std::iter::repeat_n(' ', pad));
    }
    line.trim_end().to_owned()
}

/// One line of printable text: newlines and tabs become spaces, other control characters
/// (ESC, …) become `?`.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// How long ago `t` was, in the largest unit that fits: `45s`, `5m`, `2h`, `3d`. A time in
/// the future (clock skew) reads as `0s`.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds().max(0);
    short_duration(Duration::from_secs(secs as u64))
}

/// `Some(age)` or `-` when the time is unknown.
pub fn age_or_dash(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or_else(|| "-".into(), |t| age(t, now))
}

/// A duration in its largest whole unit; hours up to two days, as kubectl does, because
/// `36h` says more than `1d`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `10m`, `90s`, `1h30m` (humantime), at least one second.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (use e.g. 30s, 10m, 1h)"))?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

/// An RFC 3339 time as the API writes them: UTC, milliseconds, `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Keys printed first, in this order, wherever they occur; `_links` goes last. The rest
/// stay alphabetical. Reads like the API docs instead of starting with `_links`.
const FIRST_KEYS: [&str; 23] = [
    "apiVersion",
    "kind",
    "tenantId",
    "instanceId",
    "backupId",
    "requestId",
    "metadata",
    "spec",
    "status",
    "instances",
    "backups",
    "events",
    "nextToken",
    "organizationName",
    "contactEmail",
    "tier",
    "state",
    "configuration",
    "desiredCount",
    "wordpressVersion",
    "phpVersion",
    "phase",
    "observedGeneration",
];

fn key_rank(key: &str) -> usize {
    if key == "_links" {
        return usize::MAX;
    }
    FIRST_KEYS
        .iter()
        .position(|k| *k == key)
        .unwrap_or(FIRST_KEYS.len())
}

/// The same document with keys in reading order (serde_norway's mapping keeps insertion
/// order; serde_json's map here is sorted).
fn ordered(v: &Value) -> serde_norway::Value {
    use serde_norway::Value as Y;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| key_rank(k)); // stable: ties stay alphabetical
            let mut out = serde_norway::Mapping::new();
            for k in keys {
                out.insert(Y::String(k.clone()), ordered(&map[k]));
            }
            Y::Mapping(out)
        }
        Value::Array(items) => Y::Sequence(items.iter().map(ordered).collect()),
        Value::Null => Y::Null,
        Value::Bool(b) => Y::Bool(*b),
        Value::String(s) => Y::String(s.clone()),
        Value::Number(n) => serde_norway::to_value(n).unwrap_or(Y::Null),
    }
}

pub fn to_json(v: &Value) -> String {
    serde_json::to_string_pretty(&ordered(v)).unwrap_or_else(|_| v.to_string())
}

pub fn to_yaml(v: &Value) -> anyhow::Result<String> {
    let text = serde_norway::to_string(&ordered(v))?;
    Ok(text.trim_end().to_owned())
}

/// A scalar for humans: strings bare unless quoting is needed to see them (empty, spaces,
/// quotes); `null` as `<none>`; anything else as compact JSON.
pub fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) if needs_quotes(s) => Value::String(clean(s)).to_string(),
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c == '"' || c.is_control())
}

/// The single line printed on stderr when a command fails: `error: CODE: message`,
/// with a hint for auth problems. Causes are joined on the same line.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = format!("error: {err:#}");
    if let Some(hint) = err
        .downcast_ref::<ClientError>()
        .and_then(ClientError::hint)
    {
        line.push_str(&format!(" ({hint})"));
    }
    clean(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn tables_align_and_have_no_trailing_blanks() {
        let mut t = Table::new(&["TENANT", "INSTANCE", "MESSAGE"]);
        t.row(vec!["acme".into(), "blog".into(), String::new()]);
        t.row(vec![
            "globex-corp".into(),
            "x".into(),
            "line\nbreak\u{1b}[31m".into(),
        ]);
        t.row(vec!["short".into()]);
        assert_eq!(
            t.render(),
            "TENANT        INSTANCE   MESSAGE\n\
             acme          blog\n\
             globex-corp   x          line break?[31m\n\
             short"
        );
    }

    #[test]
    fn ages_use_the_largest_unit() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(0), "0s");
        assert_eq!(ago(59), "59s");
        assert_eq!(ago(60), "1m");
        assert_eq!(ago(5 * 60 + 59), "5m");
        assert_eq!(ago(2 * 3600), "2h");
        assert_eq!(ago(47 * 3600), "47h");
        assert_eq!(ago(3 * 86_400), "3d");
        assert_eq!(ago(-30), "0s", "clock skew");
        assert_eq!(age_or_dash(None, now), "-");
    }

    #[test]
    fn durations_parse_like_the_server_flags() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration(" 1h30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("10").is_err(), "a unit is required");
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("500ms").is_err());
    }

    #[test]
    fn scalars_quote_only_when_needed() {
        assert_eq!(scalar(&serde_json::json!(4)), "4");
        assert_eq!(scalar(&serde_json::json!("STANDARD")), "STANDARD");
        assert_eq!(scalar(&serde_json::json!("Acme Corp")), "\"Acme Corp\"");
        assert_eq!(scalar(&serde_json::json!("")), "\"\"");
        assert_eq!(scalar(&Value::Null), "<none>");
    }

    #[test]
    fn error_lines_are_one_line_with_a_hint_for_auth() {
        let e = ClientError::Api {
            status: 404,
            code: "INSTANCE_NOT_FOUND".into(),
            message: "instance t1/x not found".into(),
            details: Value::Null,
        };
        assert_eq!(
            error_line(&e.into()),
            "error: INSTANCE_NOT_FOUND: instance t1/x not found"
        );
        let e = ClientError::Api {
            status: 401,
            code: "UNAUTHORIZED".into(),
            message: "missing bearer\ntoken".into(),
            details: Value::Null,
        };
        assert_eq!(
            error_line(&e.into()),
            "error: UNAUTHORIZED: missing bearer token (pass --token or set WPFLEET_TOKEN)"
        );
        let e = ClientError::Unreachable {
            server: "http://127.0.0.1:8080".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            error_line(&anyhow::Error::from(e)),
            "error: cannot reach http://127.0.0.1:8080 (connection refused); is 'wpfleet serve' running?"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_line(&e), "error: outer: inner");
    }

    #[test]
    fn yaml_and_json_documents() {
        let v = serde_json::json!({"_links": {}, "a": 1.5, "b": ["x"], "spec": {"tier": "S"},
                                   "instanceId": "i", "tenantId": "t"});
        assert_eq!(
            to_yaml(&v).unwrap(),
            "tenantId: t\ninstanceId: i\nspec:\n  tier: S\na: 1.5\nb:\n- x\n_links: {}"
        );
        let json = to_json(&v);
        assert!(
            json.starts_with("{\n  \"tenantId\": \"t\",\n  \"instanceId\""),
            "{json}"
        );
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }
}
