//! SDK errors → `StoreError`, and the two outcomes of a conditional write that are not
//! errors at all: "the condition did not hold" and "the transaction was cancelled".
//!
//! Invariant: a `ConditionalCheckFailedException` never reaches a caller as such. The
//! operation that made the conditional write decides what it means (retry after a
//! concurrent change, `AlreadyExists`, `PreconditionFailed`, `Fenced`, …). Throttling,
//! 5xx and timeouts are retried by the SDK (see `mod.rs`); what is left of them is
//! `Unavailable`, whose message is for logs.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

use super::item::Item;
use crate::store::StoreError;

/// How a conditional write can fail.
#[derive(Debug)]
pub enum WriteFailure {
    /// The condition did not hold; the item as it is now, when the call asked for it.
    Condition(Option<Box<Item>>),
    /// A transaction was cancelled; the reason code of each of its items, in order
    /// (`"None"` for an item that was fine).
    Cancelled(Vec<String>),
    Store(StoreError),
}

impl From<StoreError> for WriteFailure {
    fn from(e: StoreError) -> Self {
        WriteFailure::Store(e)
    }
}

impl WriteFailure {
    /// Whether item `i` of a cancelled transaction failed its condition.
    pub fn condition_failed_at(&self, i: usize) -> bool {
        matches!(self, WriteFailure::Cancelled(codes)
            if codes.get(i).is_some_and(|c| c == "ConditionalCheckFailed"))
    }

    /// A failed condition or a transaction that lost a race with another one: the caller
    /// re-reads and tries again.
    pub fn is_contention(&self) -> bool {
        match self {
            WriteFailure::Condition(_) => true,
            WriteFailure::Cancelled(codes) => codes
                .iter()
                .any(|c| c == "ConditionalCheckFailed" || c == "TransactionConflict"),
            WriteFailure::Store(_) => false,
        }
    }

    /// Anything that is not contention becomes the caller's error.
    pub fn into_store_error(self, operation: &str) -> StoreError {
        match self {
            WriteFailure::Store(e) => e,
            other => StoreError::Unavailable(format!("{operation}: unexpected {other:?}")),
        }
    }
}

pub fn put_failure<R>(e: SdkError<PutItemError, R>) -> WriteFailure
where
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(service) => match service.into_err() {
            PutItemError::ConditionalCheckFailedException(c) => {
                WriteFailure::Condition(c.item.map(Box::new))
            }
            other => WriteFailure::Store(unavailable("PutItem", &other)),
        },
        other => WriteFailure::Store(sdk_unavailable("PutItem", other)),
    }
}

pub fn transact_failure<R>(e: SdkError<TransactWriteItemsError, R>) -> WriteFailure
where
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(service) => match service.into_err() {
            TransactWriteItemsError::TransactionCanceledException(c) => WriteFailure::Cancelled(
                c.cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_owned())
                    .collect(),
            ),
            other => WriteFailure::Store(unavailable("TransactWriteItems", &other)),
        },
        other => WriteFailure::Store(sdk_unavailable("TransactWriteItems", other)),
    }
}

/// Any other SDK failure: the store cannot serve this call now.
pub fn sdk_unavailable<E, R>(operation: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if e.code() == Some("ResourceNotFoundException") {
        let message = e.message().unwrap_or("not found");
        return StoreError::Unavailable(format!(
            "{operation}: {message} (create the table with `wpfleet store init` or \
             deploy/terraform)"
        ));
    }
    StoreError::Unavailable(format!("{operation}: {}", DisplayErrorContext(&e)))
}

fn unavailable(operation: &str, e: &(dyn std::error::Error + 'static)) -> StoreError {
    StoreError::Unavailable(format!("{operation}: {}", DisplayErrorContext(e)))
}
