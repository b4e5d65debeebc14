//! How the DynamoDB store meets the SDK's failures, with the SDK's own test double: mocked
//! clients run the real (de)serializers and the real retry strategy, so these show what a
//! throttled, failing or racing DynamoDB looks like to a caller. Behaviour on a working
//! table is the contract suite's (`tests/store_contract.rs`, against moto).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::types::CancellationReason;
use aws_sdk_dynamodb::types::error::TransactionCanceledException;
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};

use super::item::InstanceItem;
use super::*;
use crate::model::{Configuration, DesiredState, Spec, Tier, now};

fn store(rules: &[&Rule], attempts: u32) -> DynamoStore {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "AKID", "secret", None, None, "test",
        ))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .build();
    DynamoStore::new(Client::from_conf(config), "wpfleet")
}

fn json_error(code: &str) -> String {
    format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"DynamoDB says {code}"}}"#
    )
}

fn key() -> InstanceKey {
    InstanceKey::from_strs("t1", "blog")
}

fn stored_item(ver: u64) -> Item {
    let spec = Spec {
        organization_name: "Acme".into(),
        contact_email: "ops@acme.example".into(),
        tier: Tier::Standard,
        state: DesiredState::Active,
        configuration: Configuration::default(),
        restore: None,
    };
    let mut instance = Instance::new(key(), spec, now());
    instance.metadata.resource_version = "v1".into();
    let item = InstanceItem {
        instance,
        ver,
        pending: Some("m1".into()),
    };
    item.to_item().unwrap()
}

fn get_returns_the_item() -> Rule {
    mock!(Client::get_item)
        .sequence()
        .output(|| {
            GetItemOutput::builder()
                .set_item(Some(stored_item(1)))
                .build()
        })
        .repeatedly()
        .build()
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_then_reported_unavailable() {
    let throttled = mock!(Client::get_item)
        .sequence()
        .http_status(
            400,
            Some(json_error("ProvisionedThroughputExceededException")),
        )
        .repeatedly()
        .build();
    let store = store(&[&throttled], 3);
    match store.get(&key()).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.contains("ProvisionedThroughputExceeded"),
                "{message}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        throttled.num_calls(),
        3,
        "every attempt the retry config allows"
    );
}

#[tokio::test]
async fn a_5xx_that_passes_is_invisible() {
    let flaky = mock!(Client::get_item)
        .sequence()
        .http_status(500, Some(json_error("InternalServerError")))
        .times(2)
        .output(|| {
            GetItemOutput::builder()
                .set_item(Some(stored_item(1)))
                .build()
        })
        .build();
    let store = store(&[&flaky], 3);
    let got = store.get(&key()).await.expect("retried until it worked");
    assert_eq!(got.map(|i| i.key()), Some(key()));
    assert_eq!(flaky.num_calls(), 3);
}

#[tokio::test]
async fn a_missing_table_says_how_to_create_it() {
    let missing = mock!(Client::get_item)
        .sequence()
        .http_status(400, Some(json_error("ResourceNotFoundException")))
        .repeatedly()
        .build();
    let store = store(&[&missing], 3);
    match store.get(&key()).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("wpfleet store init"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        missing.num_calls(),
        1,
        "not retried: it will not get better"
    );
}

#[tokio::test]
async fn an_update_that_lost_a_race_is_redone_not_reported() {
    let get = get_returns_the_item();
    let put = mock!(Client::put_item)
        .sequence()
        .http_status(400, Some(json_error("ConditionalCheckFailedException")))
        .output(|| PutItemOutput::builder().build())
        .build();
    let store = store(&[&get, &put], 1);
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let rename = move |i: &mut Instance| {
        counted.fetch_add(1, Ordering::SeqCst);
        i.spec.organization_name = "Renamed".into();
        Ok(Change::Changed)
    };
    let updated = store.update(&key(), None, &rename).await.expect("update");
    assert_eq!(updated.change, Change::Changed);
    assert_eq!(updated.instance.spec.organization_name, "Renamed");
    assert_eq!(
        put.num_calls(),
        2,
        "the conditional put, again after re-reading"
    );
    assert_eq!(get.num_calls(), 2);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the mutation ran on each fresh read"
    );
}

#[tokio::test]
async fn a_pinned_version_that_no_longer_matches_is_a_precondition_failure() {
    let get = get_returns_the_item();
    let put = mock!(Client::put_item).then_output(|| PutItemOutput::builder().build());
    let store = store(&[&get, &put], 1);
    let touch = |_: &mut Instance| Ok(Change::Changed);
    match store.update(&key(), Some("v0"), &touch).await {
        Err(StoreError::PreconditionFailed(current)) => {
            assert_eq!(current.metadata.resource_version, "v1")
        }
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    assert_eq!(put.num_calls(), 0, "nothing written");
}

fn cancelled(codes: &'static [&'static str]) -> Rule {
    mock!(Client::transact_write_items)
        .sequence()
        .error(move || {
            let reasons = codes
                .iter()
                .map(|c| CancellationReason::builder().code(*c).build())
                .collect();
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .set_cancellation_reasons(Some(reasons))
                    .build(),
            )
        })
        .build()
}

#[tokio::test]
async fn a_status_write_whose_fence_fails_in_the_transaction_is_fenced() {
    let get = get_returns_the_item();
    let refused = cancelled(&["ConditionalCheckFailed", "None"]);
    let store = store(&[&get, &refused], 1);
    let fence = Fence { shard: 7, token: 3 };
    match store
        .write_status(&key(), 1, Status::default(), Some(fence))
        .await
    {
        Err(StoreError::Fenced { shard, token }) => assert_eq!((shard, token), (7, 3)),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(refused.num_calls(), 1, "a fence is final: no retry");
}

#[tokio::test]
async fn a_fenced_status_write_that_lost_a_race_on_the_record_is_redone() {
    let get = get_returns_the_item();
    let transact = mock!(Client::transact_write_items)
        .sequence()
        .error(|| {
            let reasons = ["None", "ConditionalCheckFailed"]
                .iter()
                .map(|c| CancellationReason::builder().code(*c).build())
                .collect();
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .set_cancellation_reasons(Some(reasons))
                    .build(),
            )
        })
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let store = store(&[&get, &transact], 1);
    let fence = Fence { shard: 7, token: 3 };
    store
        .write_status(&key(), 1, Status::default(), Some(fence))
        .await
        .expect("written on the second try");
    assert_eq!(transact.num_calls(), 2);
}

/// A reconcile pass's status, its fence and its events go out as one transaction: nothing
/// is written on its own, so a reader never sees the status without its events.
#[tokio::test]
async fn a_passes_status_fence_and_events_are_one_transaction() {
    let is_events_key = |r: &aws_sdk_dynamodb::operation::get_item::GetItemInput| {
        r.key()
            .and_then(|k| k.get(super::schema::SK))
            .and_then(|sk| sk.as_s().ok())
            .is_some_and(|sk| sk.starts_with("E#"))
    };
    let no_log_yet = mock!(Client::get_item)
        .match_requests(is_events_key)
        .then_output(|| GetItemOutput::builder().build());
    let instance = mock!(Client::get_item)
        .match_requests(move |r| !is_events_key(r))
        .then_output(|| {
            GetItemOutput::builder()
                .set_item(Some(stored_item(1)))
                .build()
        });
    let put = mock!(Client::put_item).then_output(|| PutItemOutput::builder().build());
    let transact = mock!(Client::transact_write_items)
        .match_requests(|r| r.transact_items().len() == 3)
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let store = store(&[&no_log_yet, &instance, &put, &transact], 1);
    let event = Event::new(crate::model::EventReason::Converged, "ready", 1, now());
    store
        .write_status_and_events(
            &key(),
            1,
            Status::default(),
            Some(Fence { shard: 7, token: 3 }),
            &[event],
        )
        .await
        .expect("written");
    assert_eq!(
        (transact.num_calls(), put.num_calls()),
        (1, 0),
        "lease check, status and events in one TransactWriteItems"
    );
    assert_eq!(
        no_log_yet.num_calls(),
        1,
        "the log was read to append to it"
    );
}
