//! Test-side helpers for the AWS driver against moto (the local AWS-compatible server):
//! the shared infrastructure the driver expects (VPC, subnet, security group, ECS cluster,
//! EFS file system), created through moto's own HTTP API, and two TEST STAND-INS for what
//! moto does not do:
//!
//! * [`EcsSchedulerStandIn`] plays ECS's scheduler and the awslogs driver: moto accepts
//!   services but never runs their tasks, so it runs (RunTask) and stops (StopTask) tasks in
//!   moto to match each service's desired count and task definition, and writes access
//!   lines into the log group the task definition names. (moto cannot RunTask an awsvpc
//!   task definition, so each gets a bridge-mode "shadow" definition with the same image.)
//! * [`EcsFront`] stands in front of moto's ECS for the relocation task (moto cannot
//!   RunTask an awsvpc task definition): it forwards every ECS request to moto except
//!   RunTask of a `*-relocate` task definition, which it carries out itself by running
//!   the real `wpfleet relocate-restore` on a local directory playing the EFS file
//!   system, and DescribeTasks of those tasks.
//! * AWS Backup, which moto does not serve at all, is `backup_fake` (a separate module).
//!
//! Requests carry a syntactically valid but unsigned SigV4 header: moto reads region and
//! service from it and does not check signatures. Nothing here talks to real AWS.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wpfleet::cloud::aws::AwsSettings;

pub const REGION: &str = "eu-west-1";

/// A client for moto's wire protocols (EC2 query, JSON 1.1, REST-JSON).
#[derive(Clone)]
pub struct Moto {
    pub endpoint: String,
    http: reqwest::Client,
}

fn auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20240101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0000"
    )
}

impl Moto {
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// A JSON 1.1 call (`X-Amz-Target: {target}`); panics on an error answer.
    pub async fn json(&self, service: &str, target: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("x-amz-target", target)
            .header("content-type", "application/x-amz-json-1.1")
            .header("authorization", auth(service))
            .body(body.to_string())
            .send()
            .await
            .expect("moto answers");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert!(status.is_success(), "{target}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn ecs(&self, operation: &str, body: Value) -> Value {
        let target = format!("AmazonEC2ContainerServiceV20141113.{operation}");
        self.json("ecs", &target, body).await
    }

    pub async fn logs(&self, operation: &str, body: Value) -> Value {
        self.json("logs", &format!("Logs_20140328.{operation}"), body)
            .await
    }

    /// An EC2 query call; returns the XML answer.
    pub async fn ec2(&self, params: &[(&str, &str)]) -> String {
        let mut form: Vec<(&str, &str)> = vec![("Version", "2016-11-15")];
        form.extend_from_slice(params);
        let res = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("authorization", auth("ec2"))
            .form(&form)
            .send()
            .await
            .expect("moto answers");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert!(status.is_success(), "EC2 {params:?}: {status}: {text}");
        text
    }

    /// `POST /moto-api/state-manager/set-transition`.
    pub async fn set_transition(&self, model: &str, transition: Value) {
        let res = self
            .http
            .post(format!(
                "{}/moto-api/state-manager/set-transition",
                self.endpoint
            ))
            .json(&json!({ "model_name": model, "transition": transition }))
            .send()
            .await
            .expect("moto answers");
        assert!(res.status().is_success());
    }

    /// A REST-JSON GET of EFS (`/2015-02-01/…`).
    pub async fn efs_get(&self, path_and_query: &str) -> Value {
        let res = self
            .http
            .get(format!("{}{path_and_query}", self.endpoint))
            .header("authorization", auth("elasticfilesystem"))
            .send()
            .await
            .expect("moto answers");
        assert!(
            res.status().is_success(),
            "{path_and_query}: {}",
            res.status()
        );
        res.json().await.expect("JSON")
    }

    async fn create_file_system(&self, token: &str) -> String {
        let res = self
            .http
            .post(format!("{}/2015-02-01/file-systems", self.endpoint))
            .header("authorization", auth("elasticfilesystem"))
            .json(&json!({ "CreationToken": token, "Encrypted": true }))
            .send()
            .await
            .expect("moto answers");
        let body: Value = res.json().await.expect("JSON");
        body["FileSystemId"]
            .as_str()
            .expect("a file system id")
            .to_owned()
    }
}

/// The text of the first `<tag>…</tag>` in an XML answer.
fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml.find(&open).expect(tag) + open.len();
    let end = xml[start..].find("</").expect("closing tag") + start;
    xml[start..end].to_owned()
}

/// The shared infrastructure of one test process (unique names, so concurrent test
/// processes sharing one moto do not see each other's tasks).
#[derive(Debug, Clone)]
pub struct Infra {
    pub cluster: String,
    pub file_system_id: String,
    pub subnet: String,
    pub security_group: String,
}

impl Infra {
    pub async fn create(moto: &Moto) -> Self {
        let unique = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let vpc = xml_value(
            &moto
                .ec2(&[("Action", "CreateVpc"), ("CidrBlock", "10.0.0.0/16")])
                .await,
            "vpcId",
        );
        let subnet = xml_value(
            &moto
                .ec2(&[
                    ("Action", "CreateSubnet"),
                    ("VpcId", &vpc),
                    ("CidrBlock", "10.0.1.0/24"),
                ])
                .await,
            "subnetId",
        );
        let group_name = format!("wpfleet-{unique}");
        let security_group = xml_value(
            &moto
                .ec2(&[
                    ("Action", "CreateSecurityGroup"),
                    ("GroupName", &group_name),
                    ("GroupDescription", "wpfleet tasks"),
                    ("VpcId", &vpc),
                ])
                .await,
            "groupId",
        );
        let cluster = format!("wpfleet-{unique}");
        moto.ecs("CreateCluster", json!({ "clusterName": cluster }))
            .await;
        let file_system_id = moto.create_file_system(&format!("wpfleet-{unique}")).await;
        Self {
            cluster,
            file_system_id,
            subnet,
            security_group,
        }
    }

    /// Driver settings for this infrastructure on moto, polling fast.
    pub fn settings(&self, moto: &Moto) -> AwsSettings {
        let mut s = AwsSettings::new(
            &self.cluster,
            &self.file_system_id,
            &[&self.subnet],
            &[&self.security_group],
        );
        s.endpoint_url = Some(moto.endpoint.clone());
        s.region = Some(REGION.into());
        s.max_poll_interval = Duration::from_millis(200);
        s
    }

    /// The same settings as `serve` flags.
    pub fn serve_args(&self) -> Vec<String> {
        [
            ("--aws-cluster", self.cluster.as_str()),
            ("--aws-file-system-id", &self.file_system_id),
            ("--aws-subnets", &self.subnet),
            ("--aws-security-groups", &self.security_group),
            ("--aws-backup-vault", "wpfleet"),
            (
                "--aws-backup-role-arn",
                "arn:aws:iam::123456789012:role/wpfleet-backup",
            ),
            (
                "--aws-task-execution-role-arn",
                "arn:aws:iam::123456789012:role/wpfleet-task-execution",
            ),
            (
                "--aws-task-role-arn",
                "arn:aws:iam::123456789012:role/wpfleet-task",
            ),
            ("--aws-relocation-image", "wpfleet"),
            (
                "--aws-relocation-task-role-arn",
                "arn:aws:iam::123456789012:role/wpfleet-relocation",
            ),
            ("--aws-region", REGION),
            ("--aws-max-poll-interval", "200ms"),
        ]
        .iter()
        .flat_map(|(k, v)| [(*k).to_owned(), (*v).to_owned()])
        .collect()
    }
}

/// TEST STAND-IN for ECS's scheduler and the awslogs log driver (see the module docs).
pub struct EcsSchedulerStandIn {
    stop: CancellationToken,
    /// Tasks it started, over its lifetime.
    pub started: Arc<Mutex<u64>>,
}

impl Drop for EcsSchedulerStandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Default)]
struct SchedulerState {
    /// Service task definition ARN → its shadow (bridge-mode) task definition ARN.
    shadows: HashMap<String, String>,
    /// Shadow ARN → the service task definition's log group.
    log_groups: HashMap<String, String>,
    /// Log streams already created.
    streams: HashSet<(String, String)>,
}

/// How often the stand-in looks at the services.
const TICK: Duration = Duration::from_millis(150);

impl EcsSchedulerStandIn {
    pub async fn start(moto: &Moto, infra: &Infra) -> Self {
        // moto's tasks advance one state per DescribeTasks by default; keep them RUNNING.
        moto.set_transition(
            "ecs::task",
            json!({ "progression": "manual", "times": 1_000_000_000u64 }),
        )
        .await;
        let stop = CancellationToken::new();
        let started = Arc::new(Mutex::new(0));
        let (moto, cluster, token, count) = (
            moto.clone(),
            infra.cluster.clone(),
            stop.clone(),
            started.clone(),
        );
        tokio::spawn(async move {
            let mut state = SchedulerState::default();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(TICK) => {}
                }
                tick(&moto, &cluster, &mut state, &count).await;
            }
        });
        Self { stop, started }
    }
}

async fn tick(moto: &Moto, cluster: &str, state: &mut SchedulerState, started: &Mutex<u64>) {
    let services = moto
        .ecs(
            "ListServices",
            json!({ "cluster": cluster, "maxResults": 100 }),
        )
        .await;
    let arns: Vec<Value> = services["serviceArns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut described = Vec::new();
    for chunk in arns.chunks(10) {
        let out = moto
            .ecs(
                "DescribeServices",
                json!({ "cluster": cluster, "services": chunk }),
            )
            .await;
        described.extend(out["services"].as_array().cloned().unwrap_or_default());
    }
    let tasks = running_tasks(moto, cluster).await;
    for svc in described {
        let name = svc["serviceName"].as_str().unwrap_or_default().to_owned();
        let group = format!("service:{name}");
        let mine: Vec<&Value> = tasks.iter().filter(|t| t["group"] == group).collect();
        let active = svc["status"] == "ACTIVE";
        let want = if active {
            svc["desiredCount"].as_u64().unwrap_or(0) as usize
        } else {
            0
        };
        let Some(td) = svc["taskDefinition"].as_str() else {
            continue;
        };
        let shadow = shadow_of(moto, td, state).await;
        let (current, stale): (Vec<&Value>, Vec<&Value>) = mine
            .into_iter()
            .partition(|t| t["taskDefinitionArn"].as_str() == Some(shadow.as_str()));
        for t in stale.iter().chain(current.iter().skip(want)) {
            moto.ecs(
                "StopTask",
                json!({ "cluster": cluster, "task": t["taskArn"], "reason": "scaled in" }),
            )
            .await;
        }
        let missing = want.saturating_sub(current.len());
        if missing > 0 {
            moto.ecs(
                "RunTask",
                json!({
                    "cluster": cluster, "taskDefinition": shadow, "count": missing,
                    "launchType": "FARGATE", "group": group, "startedBy": "ecs-svc/stand-in"
                }),
            )
            .await;
            *started.lock().unwrap() += missing as u64;
        }
        // awslogs: one access line per tick for the service, in the stream of its first
        // task (moto's FilterLogEvents does not interleave streams by time, so one stream
        // per service keeps its pages in time order, as AWS's are).
        if let (Some(first), Some(log_group)) = (current.first(), state.log_groups.get(&shadow)) {
            let task_id = first["taskArn"]
                .as_str()
                .and_then(|a| a.rsplit('/').next())
                .unwrap_or_default()
                .to_owned();
            let stream = format!("wordpress/wordpress/{task_id}");
            write_log_line(moto, log_group.clone(), stream, state).await;
        }
    }
}

async fn running_tasks(moto: &Moto, cluster: &str) -> Vec<Value> {
    let list = moto
        .ecs(
            "ListTasks",
            json!({ "cluster": cluster, "desiredStatus": "RUNNING", "maxResults": 100 }),
        )
        .await;
    let arns = list["taskArns"].as_array().cloned().unwrap_or_default();
    if arns.is_empty() {
        return Vec::new();
    }
    let mut all = Vec::new();
    for chunk in arns.chunks(100) {
        let out = moto
            .ecs(
                "DescribeTasks",
                json!({ "cluster": cluster, "tasks": chunk }),
            )
            .await;
        all.extend(out["tasks"].as_array().cloned().unwrap_or_default());
    }
    all.retain(|t| t["lastStatus"] == "RUNNING");
    all
}

/// A bridge-mode copy of the service's task definition (same image) that moto can run.
async fn shadow_of(moto: &Moto, task_definition: &str, state: &mut SchedulerState) -> String {
    if let Some(s) = state.shadows.get(task_definition) {
        return s.clone();
    }
    let td = moto
        .ecs(
            "DescribeTaskDefinition",
            json!({ "taskDefinition": task_definition }),
        )
        .await;
    let container = &td["taskDefinition"]["containerDefinitions"][0];
    let family = td["taskDefinition"]["family"].as_str().unwrap_or("svc");
    let shadow = moto
        .ecs(
            "RegisterTaskDefinition",
            json!({
                "family": format!("stand-in-{family}"),
                "containerDefinitions": [{
                    "name": container["name"], "image": container["image"], "memory": 512
                }]
            }),
        )
        .await;
    let arn = shadow["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("shadow ARN")
        .to_owned();
    if let Some(group) = container["logConfiguration"]["options"]["awslogs-group"].as_str() {
        state.log_groups.insert(arn.clone(), group.to_owned());
    }
    state
        .shadows
        .insert(task_definition.to_owned(), arn.clone());
    arn
}

async fn write_log_line(moto: &Moto, group: String, stream: String, state: &mut SchedulerState) {
    let key = (group.clone(), stream.clone());
    if !state.streams.contains(&key) {
        // The group may be gone (deleted instance); then there is nothing to write to.
        let ok = moto
            .http
            .post(format!("{}/", moto.endpoint))
            .header("x-amz-target", "Logs_20140328.CreateLogStream")
            .header("content-type", "application/x-amz-json-1.1")
            .header("authorization", auth("logs"))
            .body(json!({ "logGroupName": group, "logStreamName": stream }).to_string())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ok {
            return;
        }
        state.streams.insert(key);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let _ = moto
        .http
        .post(format!("{}/", moto.endpoint))
        .header("x-amz-target", "Logs_20140328.PutLogEvents")
        .header("content-type", "application/x-amz-json-1.1")
        .header("authorization", auth("logs"))
        .body(
            json!({
                "logGroupName": group, "logStreamName": stream,
                "logEvents": [{ "timestamp": now, "message": format!("GET / HTTP/1.1 200 ({now})") }]
            })
            .to_string(),
        )
        .send()
        .await;
}

/// TEST STAND-IN in front of moto's ECS for the relocation task (see the module docs).
/// `RunTask` honours `clientToken` (the same token returns the same task, as ECS does);
/// each task runs the command of its container override with the real binary, `--root`
/// pointing at the file system stand-in, unless the front is *held* (tests use that to
/// restart a controller while a task runs). DescribeTasks answers RUNNING, then STOPPED
/// with the process's exit status.
#[derive(Clone)]
pub struct EcsFront {
    pub url: String,
    moto: String,
    file_system: std::path::PathBuf,
    state: Arc<Mutex<FrontState>>,
    held: Arc<std::sync::atomic::AtomicBool>,
    http: reqwest::Client,
}

#[derive(Default)]
struct FrontState {
    tasks: HashMap<String, FrontTask>,
    by_token: HashMap<String, String>,
    run_calls: u64,
}

#[derive(Clone)]
struct FrontTask {
    command: Vec<String>,
    tags: Value,
    exit_code: Option<i32>,
    output: String,
}

impl EcsFront {
    /// Starts on 127.0.0.1, forwarding to moto at `moto_endpoint`; relocation tasks work on
    /// `file_system`.
    pub async fn start(moto_endpoint: &str, file_system: &std::path::Path) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let front = Self {
            url: format!("http://{}", listener.local_addr().expect("addr")),
            moto: moto_endpoint.trim_end_matches('/').to_owned(),
            file_system: file_system.to_owned(),
            state: Arc::default(),
            held: Arc::default(),
            http: reqwest::Client::new(),
        };
        let router = axum::Router::new()
            .fallback(front_handle)
            .with_state(front.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        front
    }

    /// While held, relocation tasks stay RUNNING and do nothing.
    pub fn hold(&self, held: bool) {
        self.held.store(held, std::sync::atomic::Ordering::SeqCst);
    }

    /// Relocation tasks started (a repeated client token starts none).
    pub fn tasks_started(&self) -> usize {
        self.state.lock().unwrap().tasks.len()
    }

    /// RunTask calls of relocation tasks received (repeats included).
    pub fn run_calls(&self) -> u64 {
        self.state.lock().unwrap().run_calls
    }

    /// The commands and tags of the relocation tasks started.
    pub fn tasks(&self) -> Vec<(Vec<String>, Value)> {
        self.state
            .lock()
            .unwrap()
            .tasks
            .values()
            .map(|t| (t.command.clone(), t.tags.clone()))
            .collect()
    }

    fn run_task(&self, body: &Value) -> Value {
        let token = body["clientToken"].as_str().unwrap_or_default().to_owned();
        let mut state = self.state.lock().unwrap();
        state.run_calls += 1;
        if let Some(arn) = state.by_token.get(&token) {
            return json!({ "tasks": [{ "taskArn": arn, "lastStatus": "RUNNING" }], "failures": [] });
        }
        let arn = format!(
            "arn:aws:ecs:{REGION}:123456789012:task/{}/{}",
            body["cluster"].as_str().unwrap_or("cluster"),
            uuid::Uuid::new_v4().simple()
        );
        let command: Vec<String> = body["overrides"]["containerOverrides"][0]["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        state.tasks.insert(
            arn.clone(),
            FrontTask {
                command: command.clone(),
                tags: body["tags"].clone(),
                exit_code: None,
                output: String::new(),
            },
        );
        state.by_token.insert(token, arn.clone());
        drop(state);
        let front = self.clone();
        let task = arn.clone();
        tokio::spawn(async move { front.carry_out(&task, command).await });
        json!({ "tasks": [{ "taskArn": arn, "lastStatus": "PROVISIONING" }], "failures": [] })
    }

    /// Runs the task's command (once not held) with `--root` on the file system stand-in.
    async fn carry_out(&self, arn: &str, mut command: Vec<String>) {
        while self.held.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(i) = command.iter().position(|a| a == "--root")
            && let Some(root) = command.get_mut(i + 1)
        {
            *root = self.file_system.display().to_string();
        }
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_wpfleet"))
                .args(&command)
                .output()
        })
        .await
        .expect("join")
        .expect("run wpfleet relocate-restore");
        let mut state = self.state.lock().unwrap();
        if let Some(t) = state.tasks.get_mut(arn) {
            t.exit_code = Some(out.status.code().unwrap_or(-1));
            t.output = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// DescribeTasks of its own tasks; `None` if the request names none of them.
    fn describe(&self, body: &Value) -> Option<Value> {
        let state = self.state.lock().unwrap();
        let arns: Vec<&str> = body["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !arns.iter().any(|a| state.tasks.contains_key(*a)) {
            return None;
        }
        let (mut tasks, mut failures) = (vec![], vec![]);
        for arn in arns {
            match state.tasks.get(arn) {
                Some(t) => tasks.push(match t.exit_code {
                    None => json!({ "taskArn": arn, "lastStatus": "RUNNING",
                        "containers": [{ "name": "relocate", "lastStatus": "RUNNING" }] }),
                    Some(code) => json!({ "taskArn": arn, "lastStatus": "STOPPED",
                        "stopCode": "EssentialContainerExited",
                        "stoppedReason": "Essential container in task exited",
                        "containers": [{ "name": "relocate", "lastStatus": "STOPPED",
                            "exitCode": code, "reason": t.output }] }),
                }),
                None => failures.push(json!({ "arn": arn, "reason": "MISSING" })),
            }
        }
        Some(json!({ "tasks": tasks, "failures": failures }))
    }

    async fn forward(
        &self,
        headers: &axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let mut request = self.http.post(format!("{}/", self.moto)).body(body);
        for (name, value) in headers {
            if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
                request = request.header(name.as_str(), value.as_bytes());
            }
        }
        let res = request.send().await.expect("moto answers");
        let status = axum::http::StatusCode::from_u16(res.status().as_u16()).expect("status");
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/x-amz-json-1.1")
            .to_owned();
        let bytes = res.bytes().await.unwrap_or_default();
        axum::response::IntoResponse::into_response((
            status,
            [(axum::http::header::CONTENT_TYPE, content_type)],
            bytes.to_vec(),
        ))
    }
}

/// Whether a RunTask body names a relocation task definition (`…-relocate:N`).
fn is_relocation(body: &Value) -> bool {
    body["taskDefinition"]
        .as_str()
        .and_then(|td| td.rsplit('/').next())
        .and_then(|family| family.split(':').next())
        .is_some_and(|family| family.ends_with("-relocate"))
}

async fn front_handle(
    axum::extract::State(front): axum::extract::State<EcsFront>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let own = if target.ends_with(".RunTask") && is_relocation(&json_body) {
        Some(front.run_task(&json_body))
    } else if target.ends_with(".DescribeTasks") {
        front.describe(&json_body)
    } else {
        None
    };
    match own {
        Some(answer) => axum::response::IntoResponse::into_response((
            [(
                axum::http::header::CONTENT_TYPE,
                "application/x-amz-json-1.1",
            )],
            answer.to_string(),
        )),
        None => front.forward(&headers, body).await,
    }
}
