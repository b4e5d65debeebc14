//! Classifies what AWS answered into [`CloudError`]: retryable (throttling, 5xx and
//! transport failures, resources in a state that does not allow the call yet) or needing a
//! person (access denied, invalid parameters, quotas, missing shared infrastructure).
//!
//! `classify` is pure and table-tested; `from_sdk` only extracts code, message and HTTP
//! status from an SDK error. The AWS error *code* is kept next to the classification
//! ([`AwsFailure`]) because some operations treat a specific code as success (deleting what
//! is already gone, creating what already exists).
//!
//! Invariant: an error is `Permanent` only when retrying the same call cannot succeed
//! without a change by a person; anything unknown with a 5xx status, or no response at all,
//! is `Unavailable`.

// Every SDK crate re-exports the same smithy error types; ECS's path is as good as any.
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::call::Api;
use crate::cloud::CloudError;

/// Codes AWS services use for "slow down".
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "PriorRequestNotComplete",
    "TransactionInProgressException",
];

/// Codes of server-side failures: retry with backoff.
const TRANSIENT: &[&str] = &[
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "InternalServerErrorException",
    "InternalServerException",
    "ServerException",
    "ServiceException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServiceFailureException",
    "DependencyFailedException",
    "RequestTimeout",
    "RequestTimeoutException",
    "BadGateway",
    "GatewayTimeout",
];

/// Codes saying "not in this state yet" (or "not there yet"): the reconciler observes again
/// and plans accordingly, so these are retryable.
const IN_PROGRESS: &[&str] = &[
    "InvalidDBInstanceState",
    "InvalidDBInstanceStateFault",
    "InvalidDBSnapshotState",
    "InvalidDBSnapshotStateFault",
    "DBInstanceNotFound",
    "DBInstanceNotFoundFault",
    "IncorrectFileSystemLifeCycleState",
    "IncorrectMountTargetState",
    "AccessPointNotFound",
    "ServiceNotFoundException",
    "ServiceNotActiveException",
    "OperationAbortedException",
    "ResourceInUseException",
    "ConflictException",
    "InvalidResourceStateException",
];

/// Everything a failed call told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<'a> {
    /// The AWS error code (`x-amzn-errortype`, `__type`, `<Code>`), if the service sent one.
    pub code: Option<&'a str>,
    pub message: Option<&'a str>,
    /// The HTTP status, if a response arrived.
    pub status: Option<u16>,
    /// No response arrived (timeout, connection refused or reset, unparseable response).
    pub transport: bool,
    /// The request could not be built (a bug or an invalid setting); nothing was sent.
    pub construction: bool,
}

/// A failed AWS call: its code (to recognise "already exists" / "already gone") and how
/// the reconciler should treat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsFailure {
    pub code: Option<String>,
    pub error: CloudError,
}

impl AwsFailure {
    /// Whether AWS answered with one of `codes`.
    pub fn is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }
}

impl From<AwsFailure> for CloudError {
    fn from(f: AwsFailure) -> Self {
        f.error
    }
}

/// How the reconciler should treat `failure` of `api`.
pub fn classify(api: Api, failure: &Failure<'_>) -> CloudError {
    let (service, operation) = (api.service, api.operation);
    let code = failure.code.unwrap_or("");
    let message = failure.message.unwrap_or("").to_owned();
    let with_code = |m: &str| {
        if code.is_empty() {
            m.to_owned()
        } else if m.is_empty() {
            code.to_owned()
        } else {
            format!("{code}: {m}")
        }
    };
    if failure.construction {
        return CloudError::Permanent {
            service,
            operation,
            code: "RequestConstruction".into(),
            message,
        };
    }
    if THROTTLING.contains(&code) || failure.status == Some(429) {
        return CloudError::Throttled { service, operation };
    }
    if failure.transport || TRANSIENT.contains(&code) || failure.status.is_some_and(|s| s >= 500) {
        return CloudError::Unavailable {
            service,
            operation,
            message: with_code(&message),
        };
    }
    if IN_PROGRESS.contains(&code) {
        return CloudError::InvalidState {
            service,
            operation,
            message: with_code(&message),
        };
    }
    CloudError::Permanent {
        service,
        operation,
        code: if code.is_empty() {
            failure
                .status
                .map_or_else(|| "Unknown".to_owned(), |s| format!("Http{s}"))
        } else {
            code.to_owned()
        },
        message,
    }
}

/// Extracts code, message and status from an SDK error, then classifies it.
pub fn from_sdk<E>(api: Api, err: &SdkError<E>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let transport = matches!(
        err,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    let construction = matches!(err, SdkError::ConstructionFailure(_));
    // Transport failures carry no AWS message; their Display says what happened.
    let described = (transport || construction).then(|| DisplayErrorContext(err).to_string());
    let failure = Failure {
        code: err.code(),
        message: err.message().or(described.as_deref()),
        status,
        transport,
        construction,
    };
    AwsFailure {
        code: err.code().map(str::to_owned),
        error: classify(api, &failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: Api = Api::new("rds", "StopDBInstance");

    fn service(code: &str, status: u16) -> Failure<'_> {
        Failure {
            code: Some(code),
            message: Some("AWS says why"),
            status: Some(status),
            transport: false,
            construction: false,
        }
    }

    /// One row per kind of answer: the class it must get.
    #[test]
    fn answers_are_classified() {
        let rows: &[(Failure<'_>, &str)] = &[
            (service("ThrottlingException", 400), "Throttled"),
            (service("Throttling", 400), "Throttled"),
            (service("RequestLimitExceeded", 400), "Throttled"),
            (service("Whatever", 429), "Throttled"),
            (service("ServerException", 500), "Unavailable"),
            (service("ServiceUnavailable", 503), "Unavailable"),
            (service("SomethingNew", 502), "Unavailable"),
            (service("InvalidDBInstanceState", 400), "InvalidState"),
            (service("ServiceNotActiveException", 400), "InvalidState"),
            (service("OperationAbortedException", 400), "InvalidState"),
            (service("AccessDeniedException", 400), "Permanent"),
            (service("AccessDenied", 403), "Permanent"),
            (service("InvalidParameterValue", 400), "Permanent"),
            (service("InvalidParameterException", 400), "Permanent"),
            (service("ClientException", 400), "Permanent"),
            (service("InstanceQuotaExceeded", 400), "Permanent"),
            (service("AccessPointLimitExceeded", 403), "Permanent"),
            (service("LimitExceededException", 400), "Permanent"),
            (service("UnrecognizedClientException", 400), "Permanent"),
            (
                Failure {
                    code: None,
                    message: None,
                    status: None,
                    transport: true,
                    construction: false,
                },
                "Unavailable",
            ),
            (
                Failure {
                    code: None,
                    message: Some("bad input"),
                    status: None,
                    transport: false,
                    construction: true,
                },
                "Permanent",
            ),
        ];
        for (failure, want) in rows {
            let got = classify(API, failure);
            let kind = match got {
                CloudError::Throttled { .. } => "Throttled",
                CloudError::Unavailable { .. } => "Unavailable",
                CloudError::InvalidState { .. } => "InvalidState",
                CloudError::Permanent { .. } => "Permanent",
            };
            assert_eq!(kind, *want, "{failure:?} -> {got:?}");
        }
    }

    #[test]
    fn permanent_errors_keep_aws_code_and_message() {
        let e = classify(API, &service("AccessDeniedException", 400));
        assert_eq!(
            e,
            CloudError::Permanent {
                service: "rds",
                operation: "StopDBInstance",
                code: "AccessDeniedException".into(),
                message: "AWS says why".into(),
            }
        );
        assert!(!e.is_retryable());
        assert_eq!(e.code(), "AccessDeniedException");
    }

    #[test]
    fn in_progress_messages_name_the_code() {
        let e = classify(API, &service("InvalidDBInstanceState", 400));
        assert_eq!(
            e.to_string(),
            "rds StopDBInstance: InvalidDBInstanceState: AWS says why"
        );
        assert!(e.is_retryable());
    }
}
