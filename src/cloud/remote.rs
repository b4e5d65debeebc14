//! The `Cloud` boundary over HTTP: one process serves a cloud (in practice the simulated
//! one, `wpfleet sim-cloud`), and any number of controller replicas use it through
//! [`RemoteCloud`] (`wpfleet serve --cloud sim-remote --sim-url …`). This is how several
//! replicas share one simulated AWS, as they would share the real one.
//!
//! Wire format: `POST /cloud/v1/{method}` with a JSON body of the method's arguments;
//! replies `{"ok": …}` or `{"err": WireError}`. The caller's [`CallContext`] travels in
//! the `x-wpfleet-replica` and `x-wpfleet-fence` headers and is re-established around the
//! call on the serving side, so the simulated cloud's call log says who called.
//!
//! Invariant: a transport failure is a retryable `CloudError::Unavailable`, never a panic
//! or a permanent error: a replica that cannot reach the cloud backs off like with AWS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    CALL_CONTEXT, CallContext, ClientToken, Cloud, CloudError, CloudResult, JobRef, LogPage,
    LogQuery, Observed, ObservedJob, ObservedService, ObservedTask, Scope, Step, StepOutcome,
    WaitingOn, call_context,
};
use crate::model::InstanceKey;

const REPLICA_HEADER: &str = "x-wpfleet-replica";
const FENCE_HEADER: &str = "x-wpfleet-fence";
const URGENT_HEADER: &str = "x-wpfleet-urgent";
const FOLLOW_UP_HEADER: &str = "x-wpfleet-follow-up";

/// A `CloudError` on the wire. Service and operation names are interned on the way back
/// (the error type holds `&'static str`s); an unknown name becomes `"remote"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireError {
    kind: String,
    service: String,
    operation: String,
    code: String,
    message: String,
}

impl From<&CloudError> for WireError {
    fn from(e: &CloudError) -> Self {
        let (kind, operation, message) = match e {
            CloudError::Throttled { operation, .. } => ("throttled", *operation, String::new()),
            CloudError::Unavailable {
                operation, message, ..
            } => ("unavailable", *operation, message.clone()),
            CloudError::InvalidState {
                operation, message, ..
            } => ("invalid_state", *operation, message.clone()),
            CloudError::Permanent {
                operation, message, ..
            } => ("permanent", *operation, message.clone()),
        };
        Self {
            kind: kind.into(),
            service: e.service().into(),
            operation: operation.into(),
            code: e.code().into(),
            message,
        }
    }
}

impl From<WireError> for CloudError {
    fn from(w: WireError) -> Self {
        let service = intern(&w.service);
        let operation = intern(&w.operation);
        match w.kind.as_str() {
            "throttled" => CloudError::Throttled { service, operation },
            "invalid_state" => CloudError::InvalidState {
                service,
                operation,
                message: w.message,
            },
            "permanent" => CloudError::Permanent {
                service,
                operation,
                code: w.code,
                message: w.message,
            },
            _ => CloudError::Unavailable {
                service,
                operation,
                message: w.message,
            },
        }
    }
}

/// Every service and operation name a cloud reports, so errors keep their names.
const NAMES: &[&str] = &[
    "ecs",
    "efs",
    "rds",
    "logs",
    "backup",
    "remote",
    "CreateLogGroup",
    "DeleteLogGroup",
    "DescribeLogGroups",
    "FilterLogEvents",
    "CreateAccessPoint",
    "DeleteAccessPoint",
    "DescribeAccessPoints",
    "CreateDBInstance",
    "ModifyDBInstance",
    "StartDBInstance",
    "StopDBInstance",
    "CreateDBSnapshot",
    "DeleteDBInstance",
    "DescribeDBInstances",
    "DescribeDBSnapshots",
    "RestoreDBInstanceFromDBSnapshot",
    "CreateService",
    "UpdateService",
    "DeleteService",
    "DescribeServices",
    "ListTasks",
    "DescribeTasks",
    "StartBackupJob",
    "DescribeBackupJob",
    "StartRestoreJob",
    "DescribeRestoreJob",
    "observe",
    "observe-services",
    "describe-tasks",
    "describe_tasks",
    "describe_jobs",
    "apply",
    "logs",
];

fn intern(name: &str) -> &'static str {
    NAMES
        .iter()
        .copied()
        .find(|n| *n == name)
        .unwrap_or("remote")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Reply<T> {
    Ok(T),
    Err(WireError),
}

#[derive(Serialize, Deserialize)]
struct ObserveArgs {
    keys: Vec<InstanceKey>,
    /// Absent: everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<Scope>,
}

#[derive(Serialize, Deserialize)]
struct JobsArgs {
    jobs: Vec<JobRef>,
}

#[derive(Serialize, Deserialize)]
struct ApplyArgs {
    key: InstanceKey,
    step: Step,
    token: ClientToken,
}

#[derive(Serialize, Deserialize)]
struct LogsArgs {
    key: InstanceKey,
    query: LogQuery,
}

const WAITS: [WaitingOn; 6] = [
    WaitingOn::Database,
    WaitingOn::Snapshot,
    WaitingOn::AccessPoint,
    WaitingOn::Tasks,
    WaitingOn::Service,
    WaitingOn::LogGroup,
];

// ---- serving side -----------------------------------------------------------------------

/// Serves `cloud` under `/cloud/v1`.
pub fn router(cloud: Arc<dyn Cloud>) -> Router {
    Router::new()
        .route("/cloud/v1/observe", post(observe))
        .route("/cloud/v1/observe-services", post(observe_services))
        .route("/cloud/v1/describe-tasks", post(describe_tasks))
        .route("/cloud/v1/describe-jobs", post(describe_jobs))
        .route("/cloud/v1/apply", post(apply))
        .route("/cloud/v1/logs", post(logs))
        .route("/cloud/v1/poll-intervals", get(poll_intervals))
        .with_state(cloud)
}

type Served = Arc<dyn Cloud>;

fn context(headers: &HeaderMap) -> CallContext {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    CallContext {
        replica: header(REPLICA_HEADER).map(str::to_owned),
        fence: header(FENCE_HEADER).and_then(|v| v.parse().ok()),
        urgent: header(URGENT_HEADER) == Some("1"),
        follow_up: header(FOLLOW_UP_HEADER) == Some("1"),
        ..CallContext::default()
    }
}

fn reply<T>(result: CloudResult<T>) -> Json<Reply<T>> {
    Json(match result {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Err(WireError::from(&e)),
    })
}

async fn observe(
    State(cloud): State<Served>,
    headers: HeaderMap,
    Json(a): Json<ObserveArgs>,
) -> Json<Reply<Vec<Observed>>> {
    let call = cloud.observe_scope(&a.keys, a.scope.unwrap_or(Scope::FULL));
    reply(CALL_CONTEXT.scope(context(&headers), call).await)
}

async fn observe_services(
    State(cloud): State<Served>,
    headers: HeaderMap,
    Json(a): Json<ObserveArgs>,
) -> Json<Reply<Vec<Option<ObservedService>>>> {
    let call = cloud.observe_services(&a.keys);
    reply(CALL_CONTEXT.scope(context(&headers), call).await)
}

async fn describe_tasks(
    State(cloud): State<Served>,
    headers: HeaderMap,
    Json(a): Json<ObserveArgs>,
) -> Json<Reply<Vec<Vec<ObservedTask>>>> {
    let call = cloud.describe_tasks(&a.keys);
    reply(CALL_CONTEXT.scope(context(&headers), call).await)
}

async fn describe_jobs(
    State(cloud): State<Served>,
    headers: HeaderMap,
    Json(a): Json<JobsArgs>,
) -> Json<Reply<Vec<ObservedJob>>> {
    let call = cloud.describe_jobs(&a.jobs);
    reply(CALL_CONTEXT.scope(context(&headers), call).await)
}

async fn apply(
    State(cloud): State<Served>,
    headers: HeaderMap,
    Json(a): Json<ApplyArgs>,
) -> Json<Reply<StepOutcome>> {
    let call = cloud.apply(&a.key, &a.step, &a.token);
    reply(CALL_CONTEXT.scope(context(&headers), call).await)
}

async fn logs(
    State(cloud): State<Served>,
    headers: HeaderMap,
    Json(a): Json<LogsArgs>,
) -> Json<Reply<LogPage>> {
    let call = cloud.logs(&a.key, &a.query);
    reply(CALL_CONTEXT.scope(context(&headers), call).await)
}

async fn poll_intervals(State(cloud): State<Served>) -> Json<HashMap<String, u64>> {
    Json(
        WAITS
            .iter()
            .map(|w| (format!("{w:?}"), cloud.poll_interval(*w).as_millis() as u64))
            .collect(),
    )
}

// ---- calling side -----------------------------------------------------------------------

/// A `Cloud` served by another process.
pub struct RemoteCloud {
    base: String,
    http: reqwest::Client,
    /// Fetched at connect: the served cloud's poll intervals do not change while it runs.
    polls: HashMap<String, Duration>,
}

impl RemoteCloud {
    /// Connects to a cloud served at `base` (e.g. `http://127.0.0.1:9090`).
    pub async fn connect(base: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let polls: HashMap<String, u64> = http
            .get(format!("{base}/cloud/v1/poll-intervals"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(Self {
            base,
            http,
            polls: polls
                .into_iter()
                .map(|(k, v)| (k, Duration::from_millis(v)))
                .collect(),
        })
    }

    async fn call<A: Serialize, T: DeserializeOwned>(
        &self,
        method: &'static str,
        args: &A,
    ) -> CloudResult<T> {
        let ctx = call_context();
        let mut req = self
            .http
            .post(format!("{}/cloud/v1/{method}", self.base))
            .json(args);
        if let Some(r) = &ctx.replica {
            req = req.header(REPLICA_HEADER, r);
        }
        if let Some(f) = ctx.fence {
            req = req.header(FENCE_HEADER, f.to_string());
        }
        if ctx.urgent {
            req = req.header(URGENT_HEADER, "1");
        }
        if ctx.follow_up {
            req = req.header(FOLLOW_UP_HEADER, "1");
        }
        let unavailable = |e: reqwest::Error| CloudError::Unavailable {
            service: "remote",
            operation: intern(method),
            message: format!("cloud at {} unreachable: {e}", self.base),
        };
        let reply: Reply<T> = req
            .send()
            .await
            .map_err(unavailable)?
            .error_for_status()
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        match reply {
            Reply::Ok(v) => Ok(v),
            Reply::Err(w) => Err(w.into()),
        }
    }
}

#[async_trait]
impl Cloud for RemoteCloud {
    async fn observe_scope(
        &self,
        keys: &[InstanceKey],
        scope: Scope,
    ) -> CloudResult<Vec<Observed>> {
        let args = ObserveArgs {
            keys: keys.to_vec(),
            scope: Some(scope),
        };
        self.call("observe", &args).await
    }

    async fn observe_services(
        &self,
        keys: &[InstanceKey],
    ) -> CloudResult<Vec<Option<ObservedService>>> {
        let args = ObserveArgs {
            keys: keys.to_vec(),
            scope: None,
        };
        self.call("observe-services", &args).await
    }

    async fn describe_tasks(&self, keys: &[InstanceKey]) -> CloudResult<Vec<Vec<ObservedTask>>> {
        let args = ObserveArgs {
            keys: keys.to_vec(),
            scope: None,
        };
        self.call("describe-tasks", &args).await
    }

    async fn describe_jobs(&self, jobs: &[JobRef]) -> CloudResult<Vec<ObservedJob>> {
        let args = JobsArgs {
            jobs: jobs.to_vec(),
        };
        self.call("describe-jobs", &args).await
    }

    async fn apply(
        &self,
        key: &InstanceKey,
        step: &Step,
        token: &ClientToken,
    ) -> CloudResult<StepOutcome> {
        let args = ApplyArgs {
            key: key.clone(),
            step: step.clone(),
            token: token.clone(),
        };
        self.call("apply", &args).await
    }

    async fn logs(&self, key: &InstanceKey, query: &LogQuery) -> CloudResult<LogPage> {
        let args = LogsArgs {
            key: key.clone(),
            query: query.clone(),
        };
        self.call("logs", &args).await
    }

    fn poll_interval(&self, waiting_on: WaitingOn) -> Duration {
        self.polls
            .get(&format!("{waiting_on:?}"))
            .copied()
            .unwrap_or(Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_wire() {
        let errors = [
            CloudError::Throttled {
                service: "ecs",
                operation: "UpdateService",
            },
            CloudError::InvalidState {
                service: "rds",
                operation: "StopDBInstance",
                message: "starting".into(),
            },
            CloudError::Permanent {
                service: "backup",
                operation: "StartRestoreJob",
                code: "ResourceNotFoundException".into(),
                message: "no".into(),
            },
            CloudError::Unavailable {
                service: "efs",
                operation: "CreateAccessPoint",
                message: "503".into(),
            },
        ];
        for e in errors {
            let wire: WireError =
                serde_json::from_value(serde_json::to_value(WireError::from(&e)).unwrap()).unwrap();
            assert_eq!(CloudError::from(wire), e);
        }
    }
}
