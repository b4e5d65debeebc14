//! End to end for the client: the real `wpfleet` binary, run as a user runs it, against a
//! server started in-process (embedded store, simulated cloud at `TEST_SIM_SPEED`).
//!
//! What the server holds is checked over HTTP with `common::Client`, not through the client
//! under test. Tests of endpoints the API does not have yet are `#[ignore]`d with the issue
//! that adds them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestServer, instance_path};
use serde_json::{Value, json};

/// The example manifests, and the instances they describe.
const EXAMPLES: [&str; 5] = [
    "acme/archive",
    "acme/blog",
    "globex/docs",
    "globex/intranet",
    "globex/shop",
];

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("desired_state")
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }

    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Runs `wpfleet ARGS` against `srv` (via `WPFLEET_SERVER`, and `WPFLEET_TOKEN` when the
/// server requires one), optionally with stdin.
async fn wpfleet_in(srv: &TestServer, args: &[&str], stdin: Option<&str>) -> Run {
    run_with_token(srv, args, stdin, srv.client.token.as_deref()).await
}

async fn run_with_token(
    srv: &TestServer,
    args: &[&str],
    stdin: Option<&str>,
    token: Option<&str>,
) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wpfleet"));
    cmd.args(args).env("WPFLEET_SERVER", srv.running().url());
    match token {
        Some(t) => cmd.env("WPFLEET_TOKEN", t),
        None => cmd.env_remove("WPFLEET_TOKEN"),
    };
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("wpfleet starts");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("wpfleet finishes within 2 minutes")
        .expect("wpfleet runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn wpfleet(srv: &TestServer, args: &[&str]) -> Run {
    wpfleet_in(srv, args, None).await
}

fn path_of(name: &str) -> String {
    let (t, i) = name.split_once('/').expect("tenant/instance");
    instance_path(t, i)
}

async fn generation(srv: &TestServer, name: &str) -> Value {
    let r = srv.client.get(&path_of(name)).await;
    assert_eq!(r.status, 200, "{name}: {:#}", r.body);
    r.body["metadata"]["generation"].clone()
}

/// Applies every example and waits until all are ready.
async fn apply_examples(srv: &TestServer) -> Run {
    let dir = examples();
    let run = wpfleet(
        srv,
        &[
            "apply",
            "-f",
            dir.to_str().unwrap(),
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await;
    run.ok();
    run
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path
}

fn example_text(file: &str) -> String {
    std::fs::read_to_string(examples().join(file)).expect("example readable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_every_example_and_waits_until_ready() {
    let srv = TestServer::start().await;
    let run = apply_examples(&srv).await;
    let lines = run.lines();
    let created: Vec<String> = EXAMPLES
        .iter()
        .map(|n| format!("instance {n} created"))
        .collect();
    assert_eq!(lines[..EXAMPLES.len()], created[..], "{run:#?}");
    // The final table: every instance ready, the suspended one with no tasks.
    let table_start = lines
        .iter()
        .position(|l| l.starts_with("TENANT"))
        .expect("a final table");
    let rows = &lines[table_start + 1..];
    assert_eq!(rows.len(), EXAMPLES.len(), "{run:#?}");
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[3], "yes", "{row}");
    }
    assert!(
        rows.iter()
            .any(|r| r.contains("SUSPENDED") && r.contains("0/0"))
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("globex   shop") && r.contains("3/3"))
    );
    // Progress lines name phases as they change.
    assert!(run.stdout.contains("acme/blog: PROVISIONING"), "{run:#?}");
    // The server agrees.
    for name in EXAMPLES {
        let b = srv.client.get(&path_of(name)).await.body;
        assert_eq!(
            b["status"]["observedGeneration"],
            b["metadata"]["generation"]
        );
    }
    assert!(run.stderr.is_empty(), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_again_is_unchanged_and_moves_no_generation() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let mut before = vec![];
    for name in EXAMPLES {
        before.push(generation(&srv, name).await);
    }
    let dir = examples();
    let run = wpfleet(&srv, &["apply", "-f", dir.to_str().unwrap()]).await;
    let expected: Vec<String> = EXAMPLES
        .iter()
        .map(|n| format!("instance {n} unchanged"))
        .collect();
    assert_eq!(run.ok().lines(), expected);
    for (name, was) in EXAMPLES.iter().zip(before) {
        assert_eq!(generation(&srv, name).await, was, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_manifest_is_configured_and_read_from_stdin() {
    let srv = TestServer::start().await;
    let blog = example_text("blog.yaml");
    wpfleet_in(&srv, &["apply", "-f", "-"], Some(&blog))
        .await
        .ok();
    let scaled = blog.replace("desiredCount: 2", "desiredCount: 3");
    let run = wpfleet_in(&srv, &["apply", "-f", "-", "--wait"], Some(&scaled)).await;
    assert_eq!(run.ok().lines()[0], "instance acme/blog configured");
    let b = srv.client.get(&instance_path("acme", "blog")).await.body;
    assert_eq!(b["metadata"]["generation"], 2);
    assert_eq!(b["status"]["replicas"]["running"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_shows_the_diff_and_writes_nothing() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "blog.yaml", &example_text("blog.yaml"));
    write(dir.path(), "shop.yaml", &example_text("shop.yaml"));
    let d = dir.path().to_str().unwrap();
    wpfleet(&srv, &["apply", "-f", d]).await.ok();

    let edited = example_text("blog.yaml")
        .replace("desiredCount: 2", "desiredCount: 4")
        .replace("Acme Ltd", "Acme Corporation");
    write(dir.path(), "blog.yaml", &edited);
    let new = example_text("blog.yaml").replace("instanceId: blog", "instanceId: new");
    write(dir.path(), "new.yaml", &new);
    let run = wpfleet(&srv, &["apply", "-f", d, "--dry-run"]).await;
    assert_eq!(
        run.ok().lines(),
        [
            "acme/blog: configuration.desiredCount 2 -> 4",
            "acme/blog: organizationName \"Acme Ltd\" -> \"Acme Corporation\"",
            "acme/new: would be created",
            "globex/shop: unchanged",
        ]
    );
    // Nothing was written.
    let blog = srv.client.get(&instance_path("acme", "blog")).await.body;
    assert_eq!(blog["metadata"]["generation"], 1);
    assert_eq!(blog["spec"]["configuration"]["desiredCount"], 2);
    let new = srv.client.get(&instance_path("acme", "new")).await;
    assert_eq!(new.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_apply_nothing_and_say_where() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a-good.yaml", &example_text("blog.yaml"));
    let typo = example_text("shop.yaml").replace("desiredCount", "desiredCnt");
    let bad = write(
        dir.path(),
        "b-bad.yaml",
        &format!("{}---\n{typo}", example_text("archive.yaml")),
    );
    let run = wpfleet(&srv, &["apply", "-f", dir.path().to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    let expected = format!(
        "error: {} (document 2): spec.configuration.desiredCnt: unknown field `desiredCnt`",
        bad.display()
    );
    assert!(run.stderr.starts_with(&expected), "{run:#?}");
    assert!(
        run.stderr.trim_end().ends_with("nothing was applied"),
        "{run:#?}"
    );
    // Not even the valid manifest before it.
    let r = srv.client.get(&instance_path("acme", "blog")).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_a_table_json_and_yaml() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;

    let run = wpfleet(&srv, &["get", "acme"]).await;
    let lines = run.ok().lines();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TENANT", "INSTANCE", "STATE", "PHASE", "READY", "TASKS", "TIER", "AGE"
        ]
    );
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{run:#?}");
    assert_eq!(
        rows[0][..7],
        [
            "acme",
            "archive",
            "SUSPENDED",
            "SUSPENDED",
            "yes",
            "0/0",
            "STANDARD"
        ]
    );
    assert_eq!(
        rows[1][..7],
        ["acme", "blog", "ACTIVE", "ACTIVE", "yes", "2/2", "STANDARD"]
    );

    let run = wpfleet(&srv, &["get", "globex", "shop", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&run.ok().stdout).expect("JSON");
    let server_view = srv.client.get(&instance_path("globex", "shop")).await.body;
    assert_eq!(v["spec"], server_view["spec"]);
    assert_eq!(v["metadata"]["generation"], 1);

    let run = wpfleet(&srv, &["get", "globex", "-o", "yaml"]).await;
    let v: Value = serde_norway::from_str(&run.ok().stdout).expect("YAML");
    let ids: Vec<&str> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instanceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["docs", "intranet", "shop"]);

    let run = wpfleet(&srv, &["get", "nobody"]).await;
    assert!(run.ok().stdout.is_empty(), "{run:#?}");
    assert_eq!(run.stderr, "no instances found\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_spec_status_conditions_tasks_and_links() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["describe", "globex", "shop"]).await;
    let out = &run.ok().stdout;
    for expected in [
        "Name:                globex/shop",
        "Generation:          1 (observed 1)",
        "  organizationName: Globex Corporation",
        "  tier: PROFESSIONAL",
        "  Phase:             ACTIVE",
        "  Ready:             yes",
        "  Tasks:             3 running, 0 pending, 3 desired",
        "  Deployment:        COMPLETED",
        "  Health:            HEALTHY",
        "Last error:          <none>",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    let section = |name: &str| {
        out.split(&format!("\n{name}:\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name} section in\n{out}"))
            .to_owned()
    };
    assert!(
        section("Conditions").contains("Ready         True     Active"),
        "{out}"
    );
    let tasks = section("Tasks");
    let task_rows = tasks
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| l.contains("RUNNING"))
        .count();
    assert_eq!(task_rows, 3, "{out}");
    assert!(section("Resources").contains("database:"), "{out}");
    let events = section("Events");
    assert!(events.starts_with("  TYPE     REASON"), "{out}");
    assert!(events.contains("StepApplied   "), "{out}");
    assert!(events.contains("CreateDatabase"), "{out}");
    assert!(events.contains("Converged"), "{out}");
    assert!(
        section("Links").contains("self         GET      /v1.0/tenants/globex/instances/shop"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_print_a_table_or_json() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["events", "globex", "shop"]).await;
    let out = &run.ok().stdout;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["TYPE", "REASON", "AGE", "MESSAGE"], "{out}");
    assert!(lines.any(|l| l.starts_with("Normal ")), "{out}");
    assert!(out.contains("Converged"), "{out}");
    let run = wpfleet(&srv, &["events", "globex", "shop", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&run.ok().stdout).unwrap();
    let list = v["events"].as_array().unwrap();
    assert!(!list.is_empty() && list.len() <= 20);
    assert_eq!(list.last().unwrap()["reason"], "Converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_instance_is_one_error_line_and_exit_1() {
    let srv = TestServer::start().await;
    for args in [
        &["get", "acme", "nope"][..],
        &["describe", "acme", "nope"][..],
        &["events", "acme", "nope"][..],
        &["delete", "acme", "nope"][..],
    ] {
        let run = wpfleet(&srv, args).await;
        assert_eq!(run.code, 1, "{args:?}: {run:#?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:#?}");
        assert_eq!(
            run.stderr, "error: INSTANCE_NOT_FOUND: instance acme/nope not found\n",
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_one_error_line() {
    let srv = TestServer::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = format!("http://{closed}");
    let run = wpfleet(&srv, &["get", "acme", "--server", &server]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.stderr,
        format!("error: cannot reach {server} (connection refused); is 'wpfleet serve' running?\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_is_exit_2_before_any_request() {
    let srv = TestServer::start().await;
    let run = wpfleet(&srv, &["describe", "Acme", "blog"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("lowercase"), "{run:#?}");
    let run = wpfleet(&srv, &["reconcile-now"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_times_out_is_exit_3_with_the_table() {
    let srv = TestServer::start().await;
    // RDS a thousand times slower: nothing becomes ready within a second.
    let r = srv
        .client
        .put("/v1.0/sim/faults", &json!({"slowRdsFactor": 1000.0}))
        .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    let run = wpfleet_in(
        &srv,
        &["apply", "-f", "-", "--wait", "--timeout", "1s"],
        Some(&example_text("blog.yaml")),
    )
    .await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.starts_with("instance acme/blog created\n"),
        "{run:#?}"
    );
    let last = run.stdout.lines().last().unwrap();
    assert!(last.starts_with("acme     blog"), "{run:#?}");
    assert!(last.contains("timed out after 1s"), "{run:#?}");
    assert_eq!(
        run.stderr,
        "error: 1 of 1 instances not ready: acme/blog timed out\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_now_waits_until_the_instance_handled_the_request() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["reconcile-now", "acme", "blog", "--wait"]).await;
    let lines = run.ok().lines();
    let request = lines[0]
        .strip_prefix("reconcile requested: ")
        .and_then(|r| r.strip_suffix(" (acme/blog)"))
        .unwrap_or_else(|| panic!("{run:#?}"));
    assert_eq!(lines[1], "instance acme/blog reconciled");
    let b = srv.client.get(&instance_path("acme", "blog")).await.body;
    assert_eq!(b["status"]["lastHandledReconcileRequest"], request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_requests_deprovisioning() {
    let srv = TestServer::start().await;
    wpfleet_in(
        &srv,
        &["apply", "-f", "-"],
        Some(&example_text("blog.yaml")),
    )
    .await
    .ok();
    let run = wpfleet(&srv, &["delete", "acme", "blog"]).await;
    assert_eq!(
        run.ok().stdout,
        "instance acme/blog deleted (DEPROVISIONING; data kept for 30 days)\n"
    );
    srv.client.wait_phase("acme", "blog", "DEPROVISIONED").await;
    // The spec of a deleted instance can no longer change: one error line, exit 1.
    let scaled = example_text("blog.yaml").replace("desiredCount: 2", "desiredCount: 3");
    let run = wpfleet_in(&srv, &["apply", "-f", "-"], Some(&scaled)).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.starts_with(
            "error: 1 of 1 instances not applied: acme/blog: INVALID_STATUS_TRANSITION: "
        ),
        "{run:#?}"
    );
}

// ---- endpoints added by issue 3 --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_missing_or_bad_token_is_one_line_with_a_hint() {
    let srv = TestServer::start().await;
    assert!(
        srv.client.token.is_some(),
        "the test server requires a token"
    );
    for token in [None, Some("not-a-jwt")] {
        let run = run_with_token(&srv, &["get", "acme"], None, token).await;
        assert_eq!(run.code, 1, "{run:#?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
        assert!(run.stderr.starts_with("error: UNAUTHORIZED: "), "{run:#?}");
        assert!(
            run.stderr
                .trim_end()
                .ends_with("(pass --token or set WPFLEET_TOKEN)"),
            "{run:#?}"
        );
    }
    // --token wins over the environment.
    let token = srv.client.token.clone().unwrap();
    let run = run_with_token(&srv, &["get", "acme", "--token", &token], None, Some("bad")).await;
    assert_eq!(run.code, 0, "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn get_without_a_tenant_lists_every_tenant() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["get"]).await;
    let names: Vec<String> = run.ok().lines()[1..]
        .iter()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            format!("{}/{}", cols[0], cols[1])
        })
        .collect();
    assert_eq!(names, EXAMPLES);
    let run = wpfleet(&srv, &["get", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(v["instances"].as_array().unwrap().len(), EXAMPLES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn reconcile_now_all_waits_for_every_instance() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["reconcile-now", "--all", "--wait"]).await;
    let lines = run.ok().lines();
    assert!(
        lines[0].starts_with("reconcile requested: ") && lines[0].ends_with(" (5 instances)"),
        "{run:#?}"
    );
    let request = lines[0]
        .strip_prefix("reconcile requested: ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    for name in EXAMPLES {
        assert!(
            lines.contains(&format!("instance {name} reconciled").as_str()),
            "{run:#?}"
        );
        let b = srv.client.get(&path_of(name)).await.body;
        assert_eq!(
            b["status"]["lastHandledReconcileRequest"], request,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn reconcile_now_for_a_tenant_waits_for_its_instances() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["reconcile-now", "--tenant", "globex", "--wait"]).await;
    let lines = run.ok().lines();
    assert!(lines[0].ends_with(" (3 instances)"), "{run:#?}");
    let reconciled = lines.iter().filter(|l| l.ends_with(" reconciled")).count();
    assert_eq!(reconciled, 3, "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn scale_waits_and_refuses_beyond_the_tier() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["scale", "acme", "blog", "4", "--wait"]).await;
    assert_eq!(run.ok().lines()[0], "instance acme/blog scaled to 4 tasks");
    let b = srv.client.get(&instance_path("acme", "blog")).await.body;
    assert_eq!(b["status"]["replicas"]["running"], 4);
    assert_eq!(b["metadata"]["generation"], 2);

    // STANDARD allows at most 4 tasks.
    let run = wpfleet(&srv, &["scale", "acme", "blog", "5"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(
        run.stderr.starts_with("error: SCALE_LIMIT_EXCEEDED: "),
        "{run:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn suspend_and_resume_wait_for_the_phase() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["suspend", "acme", "blog", "--wait"]).await;
    assert_eq!(run.ok().lines()[0], "instance acme/blog suspended");
    let b = srv.client.get(&instance_path("acme", "blog")).await.body;
    assert_eq!(b["status"]["phase"], "SUSPENDED");
    assert_eq!(b["spec"]["state"], "SUSPENDED");

    let run = wpfleet(&srv, &["resume", "acme", "blog", "--wait"]).await;
    assert_eq!(run.ok().lines()[0], "instance acme/blog resumed");
    let b = srv.client.get(&instance_path("acme", "blog")).await.body;
    assert_eq!(b["status"]["phase"], "ACTIVE");
    assert_eq!(b["status"]["replicas"]["running"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn backup_then_restore_from_it() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["backup", "acme", "blog", "--wait"]).await;
    // Only the id on stdout, so `ID=$(wpfleet backup … --wait)` works; progress on stderr.
    let lines = run.ok().lines();
    assert_eq!(lines.len(), 1, "{run:#?}");
    let backup_id = lines[0].to_owned();
    assert!(
        !backup_id.is_empty() && !backup_id.contains(' '),
        "{run:#?}"
    );
    assert_eq!(
        run.stderr.lines().last(),
        Some(format!("backup {backup_id}: COMPLETED").as_str()),
        "{run:#?}"
    );

    let run = wpfleet(&srv, &["backups", "acme", "blog"]).await;
    let lines = run.ok().lines();
    assert!(lines[0].starts_with("BACKUP ID"), "{run:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&backup_id) && l.contains("COMPLETED")),
        "{run:#?}"
    );

    let run = wpfleet(&srv, &["restore", "acme", "blog", &backup_id, "--wait"]).await;
    let out = &run.ok().stdout;
    assert!(
        out.starts_with(&format!(
            "restore of acme/blog from {backup_id} requested ("
        )),
        "{out}"
    );
    assert!(out.contains("acme/blog: restore COMPLETED"), "{out}");
    let b = srv.client.get(&instance_path("acme", "blog")).await.body;
    assert_eq!(b["status"]["phase"], "ACTIVE");
    assert_eq!(b["status"]["restore"]["backupId"], backup_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn restoring_an_unknown_backup_is_an_error_line() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    let run = wpfleet(&srv, &["restore", "acme", "blog", "bk-does-not-exist"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(run.stderr.starts_with("error: "), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn logs_print_timestamp_stream_and_message() {
    let srv = TestServer::start().await;
    apply_examples(&srv).await;
    // A running instance has written something (container start-up at least).
    let run = wpfleet(
        &srv,
        &["logs", "acme", "blog", "--since", "1h", "--limit", "5"],
    )
    .await;
    let lines = run.ok().lines();
    assert!((1..=5).contains(&lines.len()), "{run:#?}");
    for line in lines {
        let mut parts = line.splitn(3, ' ');
        let time = parts.next().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{line}");
        assert!(parts.next().is_some_and(|s| !s.is_empty()), "{line}");
    }
    let run = wpfleet(
        &srv,
        &[
            "logs",
            "acme",
            "blog",
            "--start",
            "2000-01-01T00:00:00Z",
            "--end",
            "2000-01-02T00:00:00Z",
        ],
    )
    .await;
    assert!(run.ok().stdout.is_empty(), "{run:#?}");
}
