//! A TEST FAKE of the AWS Backup REST-JSON operations the AWS driver calls, because moto
//! does not serve AWS Backup jobs (docs/AWS.md, "Local server gaps"). The driver reaches it
//! through the SDK's service-specific endpoint (`AWS_ENDPOINT_URL_BACKUP`), exactly as it
//! would reach AWS.
//!
//! Served: StartBackupJob (`PUT /backup-jobs`), DescribeBackupJob (`GET
//! /backup-jobs/{id}`), StartRestoreJob (`PUT /restore-jobs`), DescribeRestoreJob (`GET
//! /restore-jobs/{id}`), ListTags (`GET /tags/{arn}`). Like AWS Backup it returns the same
//! job for a repeated `IdempotencyToken`, answers 404 `ResourceNotFoundException` for
//! unknown ids, reports jobs RUNNING until they finish (with their CreationDate and, once
//! done, CompletionDate), and gives a completed backup job a recovery point carrying the
//! job's `RecoveryPointTags`. Jobs finish `complete_after` their start, or, while the fake
//! is *held*, not at all (tests use that to restart a controller in the middle of a job).
//! Nothing is signed or checked.
//!
//! With a *file system stand-in* (a local directory playing the EFS file system,
//! [`BackupFake::start_with_file_system`]) it also moves data as AWS Backup does: a backup
//! copies the whole file system when it starts; a completed item-level restore writes each
//! of its `ItemsToRestore`, full path kept, into a NEW recovery directory
//! `aws-backup-restore_<start time>` at the root (docs/AWS.md), never where the caller
//! wants it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Backup,
    Restore,
}

#[derive(Debug, Clone)]
struct Job {
    kind: Kind,
    started: Instant,
    created_at: chrono::DateTime<chrono::Utc>,
    completed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Set when the job finished (the instant it was first seen finished).
    finished: Option<Instant>,
    recovery_point_arn: String,
    tags: HashMap<String, String>,
    request: Value,
}

#[derive(Default)]
struct Books {
    jobs: HashMap<String, Job>,
    by_token: HashMap<(Kind, String), String>,
    recovery_point_tags: HashMap<String, HashMap<String, String>>,
    /// Start calls received (including repeated tokens).
    start_calls: HashMap<Kind, u64>,
}

/// The running fake.
#[derive(Clone)]
pub struct BackupFake {
    pub url: String,
    books: Arc<Mutex<Books>>,
    held: Arc<Mutex<bool>>,
    complete_after: Duration,
    /// The file system stand-in, and where backups keep their copies of it.
    file_system: Option<Arc<FileSystem>>,
}

struct FileSystem {
    root: PathBuf,
    copies: tempfile::TempDir,
}

/// Copies the directory tree `from` into `to` (created).
pub fn copy_tree(from: &FsPath, to: &FsPath) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

impl BackupFake {
    /// Starts on 127.0.0.1 (a free port); jobs finish `complete_after` after they start.
    pub async fn start(complete_after: Duration) -> Self {
        Self::serve(complete_after, None).await
    }

    /// Like `start`, backing up from and restoring into the file system stand-in `root`.
    pub async fn start_with_file_system(complete_after: Duration, root: &FsPath) -> Self {
        let fs = FileSystem {
            root: root.to_owned(),
            copies: tempfile::tempdir().expect("tempdir"),
        };
        Self::serve(complete_after, Some(Arc::new(fs))).await
    }

    async fn serve(complete_after: Duration, file_system: Option<Arc<FileSystem>>) -> Self {
        let fake = Self {
            url: String::new(),
            books: Arc::default(),
            held: Arc::default(),
            complete_after,
            file_system,
        };
        let router = Router::new()
            .route("/backup-jobs", put(start_backup))
            .route("/backup-jobs/{id}", get(describe_backup))
            .route("/restore-jobs", put(start_restore))
            .route("/restore-jobs/{id}", get(describe_restore))
            .route("/tags/{*arn}", get(list_tags))
            .fallback(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "UnknownOperationException",
                    "not faked",
                )
            })
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://{addr}"),
            ..fake
        }
    }

    /// While held, no job finishes.
    pub fn hold(&self, held: bool) {
        *self.held.lock().unwrap() = held;
    }

    /// Jobs of `kind` created so far (a repeated idempotency token creates none).
    pub fn jobs_created(&self, kind: Kind) -> usize {
        self.books
            .lock()
            .unwrap()
            .jobs
            .values()
            .filter(|j| j.kind == kind)
            .count()
    }

    /// Start calls of `kind` received so far.
    pub fn start_calls(&self, kind: Kind) -> u64 {
        *self
            .books
            .lock()
            .unwrap()
            .start_calls
            .get(&kind)
            .unwrap_or(&0)
    }

    /// The request bodies of the jobs of `kind`.
    pub fn requests(&self, kind: Kind) -> Vec<Value> {
        self.books
            .lock()
            .unwrap()
            .jobs
            .values()
            .filter(|j| j.kind == kind)
            .map(|j| j.request.clone())
            .collect()
    }

    /// Whether a job is finished now (finishing it if its time has come: a restore then
    /// writes its recovery directory).
    fn finished(&self, job: &mut Job) -> bool {
        if job.finished.is_none()
            && !*self.held.lock().unwrap()
            && job.started.elapsed() >= self.complete_after
        {
            if job.kind == Kind::Restore {
                self.write_recovery_directory(job);
            }
            job.finished = Some(Instant::now());
            job.completed_at = Some(chrono::Utc::now());
        }
        job.finished.is_some()
    }

    /// The name AWS Backup gives a restore job's recovery directory.
    pub fn recovery_directory(created_at: chrono::DateTime<chrono::Utc>) -> String {
        format!(
            "aws-backup-restore_{}",
            created_at.format("%Y-%m-%dT%H-%M-%S-%3fZ")
        )
    }

    fn write_recovery_directory(&self, job: &Job) {
        let Some(fs) = &self.file_system else { return };
        let copy = fs
            .copies
            .path()
            .join(rp_id(&job.request["RecoveryPointArn"]));
        let items: Vec<String> = job.request["Metadata"]["ItemsToRestore"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        let recovery = fs.root.join(Self::recovery_directory(job.created_at));
        for item in items {
            let item = item.trim_start_matches('/');
            let from = copy.join(item);
            let to = recovery.join(item);
            if from.is_dir() {
                copy_tree(&from, &to);
            } else {
                std::fs::create_dir_all(&to).expect("create");
            }
        }
    }

    fn start_job(&self, kind: Kind, body: Value) -> String {
        let token = body["IdempotencyToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut books = self.books.lock().unwrap();
        *books.start_calls.entry(kind).or_default() += 1;
        if !token.is_empty()
            && let Some(id) = books.by_token.get(&(kind, token.clone()))
        {
            return id.clone();
        }
        let id = uuid::Uuid::new_v4().to_string().to_uppercase();
        let recovery_point_arn = format!(
            "arn:aws:backup:eu-west-1:123456789012:recovery-point:{}",
            uuid::Uuid::new_v4().to_string().to_uppercase()
        );
        // AWS Backup copies the file system as it is when the job starts.
        if let (Kind::Backup, Some(fs)) = (kind, &self.file_system) {
            copy_tree(
                &fs.root,
                &fs.copies.path().join(rp_id(&json!(recovery_point_arn))),
            );
        }
        let tags: HashMap<String, String> = body["RecoveryPointTags"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let job = Job {
            kind,
            started: Instant::now(),
            created_at: chrono::Utc::now(),
            completed_at: None,
            finished: None,
            recovery_point_arn,
            tags,
            request: body,
        };
        books.jobs.insert(id.clone(), job);
        if !token.is_empty() {
            books.by_token.insert((kind, token), id.clone());
        }
        id
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-errortype", HeaderValue::from_str(code).unwrap());
    (
        status,
        headers,
        Json(json!({ "__type": code, "Message": message })),
    )
        .into_response()
}

fn epoch_seconds() -> f64 {
    seconds(chrono::Utc::now())
}

fn seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The id part of a recovery point ARN.
fn rp_id(arn: &Value) -> String {
    arn.as_str()
        .unwrap_or_default()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn start_backup(State(fake): State<BackupFake>, Json(body): Json<Value>) -> Response {
    for field in ["BackupVaultName", "ResourceArn", "IamRoleArn"] {
        if body[field].as_str().is_none_or(str::is_empty) {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                field,
            );
        }
    }
    let id = fake.start_job(Kind::Backup, body);
    Json(json!({ "BackupJobId": id, "CreationDate": epoch_seconds() })).into_response()
}

async fn start_restore(State(fake): State<BackupFake>, Json(body): Json<Value>) -> Response {
    let arn = body["RecoveryPointArn"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let known = fake
        .books
        .lock()
        .unwrap()
        .recovery_point_tags
        .contains_key(&arn);
    if !known {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "unknown recovery point",
        );
    }
    let id = fake.start_job(Kind::Restore, body);
    Json(json!({ "RestoreJobId": id })).into_response()
}

async fn describe_backup(State(fake): State<BackupFake>, Path(id): Path<String>) -> Response {
    let mut books = fake.books.lock().unwrap();
    let Some(mut job) = books
        .jobs
        .get(&id)
        .filter(|j| j.kind == Kind::Backup)
        .cloned()
    else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "no such job",
        );
    };
    let done = fake.finished(&mut job);
    if done {
        books
            .recovery_point_tags
            .insert(job.recovery_point_arn.clone(), job.tags.clone());
    }
    books.jobs.insert(id.clone(), job.clone());
    let mut body = json!({
        "BackupJobId": id,
        "BackupVaultName": job.request["BackupVaultName"],
        "ResourceArn": job.request["ResourceArn"],
        "ResourceType": "EFS",
        "CreationDate": epoch_seconds(),
        "State": if done { "COMPLETED" } else { "RUNNING" },
        "PercentDone": if done { "100.0" } else { "42.0" },
    });
    // AWS names the recovery point while the job runs, too.
    body["RecoveryPointArn"] = json!(job.recovery_point_arn);
    Json(body).into_response()
}

async fn describe_restore(State(fake): State<BackupFake>, Path(id): Path<String>) -> Response {
    let mut books = fake.books.lock().unwrap();
    let Some(mut job) = books
        .jobs
        .get(&id)
        .filter(|j| j.kind == Kind::Restore)
        .cloned()
    else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "no such job",
        );
    };
    let done = fake.finished(&mut job);
    books.jobs.insert(id.clone(), job.clone());
    let mut body = json!({
        "RestoreJobId": id,
        "RecoveryPointArn": job.request["RecoveryPointArn"],
        "ResourceType": "EFS",
        "CreationDate": seconds(job.created_at),
        "Status": if done { "COMPLETED" } else { "RUNNING" },
        "PercentDone": if done { "100.0" } else { "30.0" },
    });
    if let Some(at) = job.completed_at {
        body["CompletionDate"] = json!(seconds(at));
    }
    Json(body).into_response()
}

async fn list_tags(State(fake): State<BackupFake>, Path(arn): Path<String>) -> Response {
    let books = fake.books.lock().unwrap();
    match books.recovery_point_tags.get(&arn) {
        Some(tags) => Json(json!({ "Tags": tags })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "no such resource",
        ),
    }
}
