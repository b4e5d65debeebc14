//! One AWS call, done the same way everywhere: take a token from the budget (with the
//! caller's priority), send, time it, count it in the `aws_api_*` metrics, classify a
//! failure.
//!
//! Invariant: every request the driver sends goes through [`Caller::send`], so the budget
//! and the metrics see all of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};

use super::budget::Budget;
use super::errors::{AwsFailure, from_sdk};
use crate::cloud::{CloudError, call_context};
use crate::metrics::{CallOutcome, Metrics};

/// An AWS operation, named as AWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Api {
    pub service: &'static str,
    pub operation: &'static str,
}

impl Api {
    pub const fn new(service: &'static str, operation: &'static str) -> Self {
        Self { service, operation }
    }
}

pub type AwsResult<T> = Result<T, AwsFailure>;

/// Sends calls under the budget and records them.
#[derive(Debug)]
pub struct Caller {
    budget: Budget,
    metrics: OnceLock<Arc<Metrics>>,
}

impl Caller {
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            metrics: OnceLock::new(),
        }
    }

    /// Also count every call in these metrics (first setting wins).
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Waits for budget, then sends. A call refused by the budget is not sent; it counts as
    /// throttled but not as a request.
    ///
    /// Boxed on purpose: SDK request futures are large, and the driver's operations nest
    /// several calls; kept inline they add up to more than a thread's stack in debug builds.
    pub fn send<'a, T, E, F>(
        &'a self,
        api: Api,
        request: F,
    ) -> Pin<Box<dyn Future<Output = AwsResult<T>> + Send + 'a>>
    where
        F: Future<Output = Result<T, SdkError<E>>> + Send + 'a,
        T: Send + 'a,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        Box::pin(self.send_now(api, request))
    }

    async fn send_now<T, E, F>(&self, api: Api, request: F) -> AwsResult<T>
    where
        F: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if let Err(error) = self.budget.acquire(api, call_context().lane()).await {
            if let Some(m) = self.metrics.get() {
                m.aws_throttled
                    .with_label_values(&[api.service, api.operation])
                    .inc();
            }
            return Err(AwsFailure { code: None, error });
        }
        let started = Instant::now();
        let result = request.await;
        let took = started.elapsed();
        let result = result.map_err(|e| from_sdk(api, &e));
        if let Some(m) = self.metrics.get() {
            let outcome = match &result {
                Ok(_) => CallOutcome::Ok,
                Err(AwsFailure {
                    error: CloudError::Throttled { .. },
                    ..
                }) => CallOutcome::Throttled,
                Err(f) => CallOutcome::Error(f.code.as_deref().unwrap_or(f.error.code())),
            };
            m.aws_call(api.service, api.operation, outcome, took);
        }
        result
    }
}
