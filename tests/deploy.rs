//! deploy/ kept true to the code: the Grafana dashboard and the Prometheus alert rules use
//! only metric names the server really exposes (read from its `/metrics` after a short
//! walk-through, never from a copied list), every alert has its runbook section, and the
//! ECS task definition and the Dockerfile agree with the `serve` flags and port.
//! (`scripts/test.sh` also runs `promtool check rules` and the alert unit tests in
//! `deploy/prometheus/alerts_test.yml` where promtool is installed.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{TestServer, instance_path, spec};
use serde::Deserialize;
use serde_json::{Value, json};

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Series names `/metrics` exposes after an instance was created, converged and throttled
/// once (so every labelled family has a sample): each family's name, and for histograms
/// also its `_bucket`, `_sum` and `_count` series.
async fn exposed_series() -> BTreeSet<String> {
    let srv = TestServer::start().await;
    let c = &srv.client;
    c.put(&instance_path("t1", "dash"), &spec(2)).await;
    c.wait_phase("t1", "dash", "ACTIVE").await;
    let faults = |v: Value| c.http.put(c.url("/v1.0/sim/faults")).json(&v);
    c.send(faults(json!({"throttleRate": 1.0}))).await;
    c.post(
        &format!("{}/reconcile", instance_path("t1", "dash")),
        &json!({}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = c.get("/metrics").await.body.as_str().unwrap().to_owned();
        if text.contains("aws_api_throttled_total{") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.send(faults(json!({}))).await;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    assert!(names.contains("aws_api_throttled_total"), "{text}");
    names
}

/// Series Prometheus itself makes for every target (not exported by wpfleet).
const PROMETHEUS_SERIES: &[&str] = &["up"];

/// The metric names a PromQL expression selects: identifiers left once string literals,
/// label matchers `{…}`, ranges `[…]`, grouping clauses `by (…)` & co. and Grafana
/// variables are removed, other than functions (followed by `(`) and keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut text = String::new();
    let mut chars = expr.chars().peekable();
    // Strip strings, {…} and […].
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let quote = c;
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == quote {
                        break;
                    }
                }
                text.push(' ');
            }
            '{' => {
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                }
                text.push(' ');
            }
            '[' => {
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
                text.push(' ');
            }
            _ => text.push(c),
        }
    }
    let tokens = tokenize(&text);
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2"];
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        if GROUPING.contains(&t) {
            // Skip the label list in parentheses that follows.
            i += 1;
            if tokens.get(i).map(String::as_str) == Some("(") {
                while i < tokens.len() && tokens[i] != ")" {
                    i += 1;
                }
            }
        } else if is_identifier(t)
            && !KEYWORDS.contains(&t)
            // A function call, or an aggregation with its grouping first (`sum by (…) (…)`).
            && !tokens
                .get(i + 1)
                .is_some_and(|next| next == "(" || GROUPING.contains(&next.as_str()))
        {
            names.insert(t.to_owned());
        }
        i += 1;
    }
    names
}

/// Identifiers (with `$variables` and numbers kept whole so they can be dropped) and
/// single punctuation characters.
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = vec![];
    let mut current = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '$' | '.') {
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
        if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

fn is_identifier(t: &str) -> bool {
    let mut chars = t.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[test]
fn the_promql_reader_finds_metrics_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (le, service) (rate(aws_api_request_duration_seconds_bucket{job=~"$job", le=~"30|30.0"}[$__rate_interval])))
        / on (instance) group_left sum(up{job="x"}) > bool 2 * sum without (a) (wpfleet_instances) offset 5m
        and max(x_total) by (b)"#;
    let want: BTreeSet<String> = [
        "aws_api_request_duration_seconds_bucket",
        "up",
        "wpfleet_instances",
        "x_total",
    ]
    .map(String::from)
    .into();
    assert_eq!(metric_names(expr), want);
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = vec![];
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            out.extend(nested);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_use_only_exposed_metrics() {
    let exposed = exposed_series().await;
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/wpfleet.json"))
        .expect("the dashboard is valid JSON");
    let mut used = BTreeSet::new();
    for (where_, expr) in dashboard_queries(&dashboard)
        .into_iter()
        .chain(alert_queries())
    {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{where_}: no metric in {expr}");
        for name in names {
            assert!(
                exposed.contains(&name) || PROMETHEUS_SERIES.contains(&name.as_str()),
                "{where_}: {name} is not exposed by /metrics ({expr})"
            );
            used.insert(name);
        }
    }
    assert!(used.len() > 15, "{used:?}");
}

fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?}", p["title"]),
                t["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            // label_values(metric{…}, label): the metric is what must exist.
            let inner = q.trim_start_matches("label_values(");
            let metric = inner.split([',', '{']).next().unwrap();
            out.push((format!("variable {:?}", v["name"]), metric.to_owned()));
        }
    }
    out
}

#[test]
fn the_dashboard_imports_and_covers_what_operators_watch() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/wpfleet.json"))
        .expect("the dashboard is valid JSON");
    for field in ["uid", "title", "schemaVersion", "panels", "templating"] {
        assert!(!dashboard[field].is_null(), "no {field}");
    }
    let mut ids = BTreeSet::new();
    let mut all_metrics = BTreeSet::new();
    for p in panels(&dashboard) {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "id reused: {title}"
        );
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
            "{title}: {grid}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat"].contains(&p["type"].as_str().unwrap()),
            "{title}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds repeat");
        for t in targets {
            all_metrics.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    // The issue's list: reconcile rate/errors/latency, queue depth and age, AWS calls and
    // throttles by service, instances by phase, not converged, stuck, time to converge.
    for needed in [
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "workqueue_depth",
        "workqueue_queue_duration_seconds_bucket",
        "aws_api_requests_total",
        "aws_api_throttled_total",
        "wpfleet_instances",
        "wpfleet_instances_not_converged",
        "wpfleet_instances_stuck",
        "wpfleet_time_to_converge_seconds_bucket",
    ] {
        assert!(all_metrics.contains(needed), "no panel shows {needed}");
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn rules() -> Vec<Rule> {
    let file: RuleFile = serde_norway::from_str(&read("deploy/prometheus/alerts.yml"))
        .expect("alerts.yml parses as a Prometheus rule file");
    let mut names = BTreeSet::new();
    for g in &file.groups {
        assert!(g.name.starts_with("wpfleet."), "group {}", g.name);
        assert!(names.insert(g.name.clone()), "group {} twice", g.name);
    }
    file.groups.into_iter().flat_map(|g| g.rules).collect()
}

fn alert_queries() -> Vec<(String, String)> {
    rules()
        .into_iter()
        .map(|r| (format!("alert {}", r.alert), r.expr))
        .collect()
}

/// A Prometheus duration: one or more `<number><unit>` (`90s`, `1h30m`, `0s`).
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")));
        let Some(unit) = unit else { return false };
        rest = &rest[unit.len()..];
        parts += 1;
    }
    parts > 0
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_is_well_formed_and_has_a_runbook() {
    let rules = rules();
    let readme = read("deploy/README.md");
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect();
    let mut names = BTreeSet::new();
    for r in &rules {
        assert!(names.insert(r.alert.clone()), "{} twice", r.alert);
        assert!(is_duration(&r.for_), "{}: for {:?}", r.alert, r.for_);
        let severity = r.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{}: {severity:?}",
            r.alert
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                r.annotations.get(key).is_some_and(|v| !v.trim().is_empty()),
                "{}: no {key}",
                r.alert
            );
        }
        let url = &r.annotations["runbook_url"];
        let (file, fragment) = url.split_once('#').expect("runbook_url has a #section");
        assert_eq!(file, "deploy/README.md", "{}", r.alert);
        assert!(
            anchors.contains(fragment),
            "{}: no section #{fragment} in deploy/README.md",
            r.alert
        );
    }
    // The issue's list: stuck instances, error ratio, throttling, queue age, no leader or
    // shard holder.
    let used: BTreeSet<String> = rules.iter().flat_map(|r| metric_names(&r.expr)).collect();
    for needed in [
        "wpfleet_instances_stuck",
        "controller_runtime_reconcile_errors_total",
        "aws_api_throttled_total",
        "workqueue_queue_duration_seconds_count",
        "leader_election_master_status",
        "wpfleet_shards_held",
    ] {
        assert!(used.contains(needed), "no alert on {needed}");
    }
}

#[test]
fn durations_are_read_like_prometheus_reads_them() {
    for ok in ["0s", "15m", "1h30m", "500ms", "2d"] {
        assert!(is_duration(ok), "{ok}");
    }
    for bad in ["", "15", "m", "1.5h", "15 m", "10x"] {
        assert!(!is_duration(bad), "{bad}");
    }
}

/// `WPFLEET_*` variables of `wpfleet serve`, read from its `--help` (clap prints
/// `[env: NAME=…]` for each flag).
fn serve_env_vars() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wpfleet"))
        .args(["serve", "--help"])
        .output()
        .expect("wpfleet serve --help runs");
    let help = String::from_utf8(out.stdout).unwrap();
    let vars: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_owned())
        .collect();
    assert!(vars.contains("WPFLEET_LISTEN"), "{help}");
    vars
}

#[test]
fn the_task_definition_sets_only_real_serve_variables() {
    let td: Value = serde_json::from_str(&read("deploy/ecs/task-definition.json"))
        .expect("the task definition is valid JSON");
    let flags = serve_env_vars();
    let containers = td["containerDefinitions"].as_array().expect("containers");
    let wpfleet = containers
        .iter()
        .find(|c| c["name"] == "wpfleet")
        .expect("a container named wpfleet");
    let mut set = BTreeMap::new();
    for e in wpfleet["environment"].as_array().unwrap() {
        set.insert(
            e["name"].as_str().unwrap().to_owned(),
            e["value"].as_str().unwrap_or_default().to_owned(),
        );
    }
    for s in wpfleet["secrets"].as_array().into_iter().flatten() {
        set.insert(s["name"].as_str().unwrap().to_owned(), String::new());
    }
    for name in set.keys() {
        // RUST_LOG is tracing's filter (README, `--log-format`), not a flag.
        assert!(
            flags.contains(name) || name == "RUST_LOG",
            "{name} is not an env var of `wpfleet serve` (it has {flags:?})"
        );
    }
    // Reachable from outside the container, on the port the mapping and health check use.
    let listen = &set["WPFLEET_LISTEN"];
    let port: u64 = listen
        .strip_prefix("0.0.0.0:")
        .expect("listens on all interfaces")
        .parse()
        .unwrap();
    assert_eq!(wpfleet["portMappings"][0]["containerPort"], port);
    let check = wpfleet["healthCheck"]["command"].to_string();
    assert!(
        check.contains("/healthz") || check.contains("healthcheck"),
        "{check}"
    );
    assert!(check.contains(&port.to_string()), "{check}");
    assert_eq!(wpfleet["logConfiguration"]["logDriver"], "awslogs");
    assert_eq!(
        set["WPFLEET_LOG_FORMAT"], "json",
        "CloudWatch gets JSON lines"
    );
    assert_eq!(wpfleet["essential"], true);
    assert!(td["family"].is_string() && td["cpu"].is_string() && td["memory"].is_string());
}

#[test]
fn the_image_is_multi_stage_non_root_and_serves_the_port() {
    let dockerfile = read("Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(froms >= 2, "a build stage and a runtime stage");
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    let user = runtime
        .lines()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "runs as {user}"
    );
    assert!(runtime.contains("EXPOSE 8080"), "{runtime}");
    assert!(runtime.contains("WPFLEET_LISTEN=0.0.0.0:8080"), "{runtime}");
    assert!(runtime.contains("ENTRYPOINT"), "{runtime}");
}
