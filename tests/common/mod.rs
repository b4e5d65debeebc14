//! Shared helpers for the HTTP integration tests: a real listening server (in-process or as
//! the `wpfleet` binary), a small JSON client, and polling with a deadline.
#![allow(dead_code)] // each test binary uses a different subset

pub mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use wpfleet::server::{self, Running, ServeConfig};

/// Fast enough that RDS "takes" well under a second, slow enough to observe phases.
pub const TEST_SIM_SPEED: f64 = 400.0;

pub struct TestServer {
    pub running: Option<Running>,
    pub client: Client,
    pub dir: TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            sim_speed: TEST_SIM_SPEED,
            resync_interval: Duration::from_secs(3600),
            ..ServeConfig::default()
        };
        tweak(&mut config);
        let running = server::start(config).await.expect("server starts");
        let client = Client::new(&running.url()).with_token(running.dev_token.clone());
        Self {
            running: Some(running),
            client,
            dir,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    /// Sent as `Authorization: Bearer …` on every request when set.
    pub token: Option<String>,
}

/// A response: status, headers we care about, and the JSON body (Null if none).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub body: Value,
}

impl Reply {
    /// Asserts a typed error with this status and code; returns the error object.
    pub fn expect_error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "{:#}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{:#}", self.body);
        assert!(self.body["error"]["message"].is_string(), "{:#}", self.body);
        assert!(self.body["error"]["details"].is_object(), "{:#}", self.body);
        &self.body["error"]
    }
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let res = req.send().await.expect("request reaches the server");
        let status = res.status().as_u16();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let etag = header("etag");
        let location = header("location");
        let bytes = res.bytes().await.expect("body");
        // JSON everywhere except `/metrics` (text), which comes back as a string.
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            etag,
            location,
            body,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(self.url(path))).await
    }

    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> Reply {
        self.send(
            self.http
                .request(method, self.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Polls GET `path` until `done(body)` holds; panics with the last body on timeout.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.get(path).await;
            if r.status == 200 && done(&r.body) {
                return r.body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting on {path}; last: {:#}",
                    r.body
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the instance is in `phase` with its observed generation current.
    pub async fn wait_phase(&self, tenant: &str, id: &str, phase: &str) -> Value {
        self.wait_for(&instance_path(tenant, id), Duration::from_secs(60), |b| {
            b["status"]["phase"] == phase
                && b["status"]["observedGeneration"] == b["metadata"]["generation"]
        })
        .await
    }
}

pub fn instance_path(tenant: &str, id: &str) -> String {
    format!("/v1.0/tenants/{tenant}/instances/{id}")
}

pub fn spec(desired: u32) -> Value {
    json!({
        "organizationName": "Acme Ltd",
        "contactEmail": "ops@acme.example",
        "tier": "ENTERPRISE",
        "configuration": { "desiredCount": desired, "wordpressVersion": "6.5" }
    })
}

/// The `wpfleet` binary as a child process, for kill -9 tests.
pub struct BinaryServer {
    pub child: Child,
    pub client: Client,
}

impl BinaryServer {
    pub fn spawn(data_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn_with_env(data_dir, extra, &[])
    }

    /// Like `spawn`, with extra environment variables for the child only.
    pub fn spawn_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wpfleet"))
            .envs(env.iter().copied())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--sim-speed", &TEST_SIM_SPEED.to_string()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wpfleet");
        let (url, token) = read_banner(&mut child);
        Self {
            child,
            client: Client::new(&url).with_token(token),
        }
    }

    /// SIGKILL: no shutdown hooks run, as in a crash.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server prints `wpfleet is serving on http://…` once it listens, then (with the
/// generated secret) `export WPFLEET_TOKEN=…`.
fn read_banner(child: &mut Child) -> (String, Option<String>) {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.expect("stdout line");
        if let Some(u) = line.split("serving on ").nth(1) {
            url = Some(u.trim().to_owned());
        }
        if let Some(t) = line.split("WPFLEET_TOKEN=").nth(1) {
            let token = t.trim().to_owned();
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (url.expect("URL printed before the token"), Some(token));
        }
    }
    panic!("wpfleet exited before printing its URL and token");
}

pub fn data_dir_of(dir: &TempDir) -> PathBuf {
    dir.path().to_path_buf()
}
