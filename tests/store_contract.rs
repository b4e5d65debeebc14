//! The behavioural contract of the `Store` trait, run against every implementation.
//!
//! Each case in `contract` takes a fresh, empty store and asserts one rule of the trait's
//! documented contract. `store_contract!(name, fixture)` stamps out one `#[tokio::test]` per
//! case for an implementation; adding a backend is one fixture function and one macro line.
//! Tests that only make sense for one backend (reopening a file, crashes) sit below the
//! suite. The scale-out cases (pending index, shard listings, leases, heartbeats) are in
//! `store_contract/scale_out.rs`.
//!
//! The DynamoDB backend runs against moto on 127.0.0.1 (`common/moto.rs`), one fresh table
//! per test.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use wpfleet::model::{
    Backup, BackupStatus, Configuration, DesiredState, Event, EventReason, Instance, InstanceKey,
    MAX_EVENTS, Phase, ReconcileRequest, Rejection, Spec, Status, TenantId, Tier, Timestamp, now,
};
use wpfleet::store::{
    BackupPage, BackupPageRequest, Change, DynamoStore, EmbeddedStore, Page, PageRequest, Store,
    StoreError, StoreResult, Updated,
};

/// A fresh, empty store and whatever must live as long as it (a temp dir, a table).
struct Fixture {
    store: Arc<dyn Store>,
    _keep: Box<dyn Any + Send + Sync>,
}

#[path = "common/moto.rs"]
mod moto;
#[path = "store_contract/scale_out.rs"]
mod scale_out;

/// A fresh table on the local DynamoDB (moto), created the way `wpfleet store init` does.
async fn dynamodb_fixture() -> Fixture {
    let table = format!("wpfleet-test-{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::with_endpoint(&moto::endpoint(), &table).await;
    store.create_table().await.expect("create the table");
    Fixture {
        store: Arc::new(store),
        _keep: Box::new(()),
    }
}

async fn embedded_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    Fixture {
        store: Arc::new(store),
        _keep: Box::new(dir),
    }
}

/// One test per contract case for the store `$fixture` (an async fn returning a `Fixture`).
macro_rules! store_contract {
    ($name:ident, $fixture:path) => {
        mod $name {
            store_contract!(@cases $fixture, "current_thread";
                create_then_get_round_trips,
                create_of_a_taken_key_returns_the_existing_record,
                get_of_a_missing_key_is_none,
                list_of_a_tenant_sees_no_other_tenant,
                list_of_all_pages_through_every_record_once_in_key_order,
                changing_the_spec_bumps_generation_version_and_updated_at,
                an_unchanged_update_writes_nothing,
                requesting_deletion_bumps_generation,
                a_deletion_request_cannot_be_withdrawn,
                a_metadata_only_change_bumps_version_not_generation,
                a_mutation_cannot_touch_identity_bookkeeping_or_status,
                a_stale_expected_version_fails_with_the_current_record,
                a_matching_expected_version_succeeds,
                a_rejected_mutation_writes_nothing,
                a_panicking_mutation_writes_nothing,
                writes_to_a_missing_key_are_not_found,
                write_status_changes_only_the_status,
                status_for_a_newer_generation_is_stale,
                request_reconcile_marks_existing_keys_only,
                a_status_reporting_the_request_handled_clears_it,
                delete_reports_whether_the_record_existed,
                a_recreated_record_gets_a_new_resource_version,
                create_backup_then_get_round_trips,
                create_backup_of_a_missing_instance_is_not_found,
                create_backup_of_a_deleted_instance_is_rejected,
                create_backup_of_a_taken_id_conflicts,
                list_backups_pages_in_id_order_within_one_instance,
                list_backups_active_only_follows_the_status,
                update_of_a_missing_backup_is_backup_not_found,
                a_final_backup_is_never_changed,
                a_backup_status_never_goes_back,
                update_backup_keeps_identity_and_requested_at,
                deleting_an_instance_keeps_its_backups,
                a_new_instance_is_pending_until_its_status_records_convergence,
                a_deletion_request_is_pending_and_a_deleted_record_is_not,
                a_reconcile_request_is_pending_until_handled,
                an_active_backup_keeps_its_instance_pending,
                pending_returns_at_most_the_limit,
                list_shard_pages_through_one_shard_in_key_order,
                a_lease_is_exclusive_and_its_holder_may_take_it_again,
                renewing_extends_only_the_current_holders_lease,
                an_expired_lease_is_taken_over_with_a_higher_token,
                a_released_lease_is_free_and_its_token_never_goes_back,
                a_status_write_with_a_stale_fence_is_refused,
                a_fenced_status_write_with_events_writes_both_or_neither,
                heartbeats_list_live_replicas_until_they_expire_or_leave,
                events_list_oldest_first_per_instance,
                a_repeated_event_is_folded_and_the_log_keeps_the_newest,
                events_of_a_missing_instance_are_not_found,
                events_change_no_record_field,
                deleting_an_instance_drops_its_events,
                a_status_write_with_events_writes_both,
                a_refused_status_write_appends_no_event,
            );
            store_contract!(@cases $fixture, "multi_thread";
                concurrent_updates_lose_nothing,
                concurrent_creates_of_one_key_admit_one,
                concurrent_creates_of_one_backup_id_admit_one,
                concurrent_acquires_of_one_shard_admit_one,
                concurrent_status_and_spec_writes_lose_nothing,
                a_backup_racing_a_converging_status_stays_pending,
                concurrent_event_appends_lose_nothing,
            );
        }
    };
    (@cases $fixture:path, $flavor:literal; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = $flavor)]
            async fn $case() {
                let fixture = $fixture().await;
                crate::contract::$case(fixture.store.clone()).await;
            }
        )*
    };
}

store_contract!(embedded, crate::embedded_fixture);
store_contract!(dynamodb, crate::dynamodb_fixture);

fn spec(organization: &str) -> Spec {
    Spec {
        organization_name: organization.into(),
        contact_email: "ops@acme.example".into(),
        tier: Tier::Standard,
        state: DesiredState::Active,
        configuration: Configuration::default(),
        restore: None,
    }
}

/// A fixed creation time well in the past, so "updatedAt moved" is visible at ms precision.
fn created_at() -> Timestamp {
    Utc.timestamp_opt(1_700_000_000, 0).unwrap()
}

fn key(tenant: &str, instance: &str) -> InstanceKey {
    InstanceKey::from_strs(tenant, instance)
}

fn instance(k: &InstanceKey) -> Instance {
    Instance::new(k.clone(), spec("Acme"), created_at())
}

async fn create(store: &Arc<dyn Store>, k: &InstanceKey) -> Instance {
    store.create(instance(k)).await.expect("create")
}

async fn stored(store: &Arc<dyn Store>, k: &InstanceKey) -> Instance {
    store.get(k).await.expect("get").expect("record exists")
}

async fn set_org(store: &Arc<dyn Store>, k: &InstanceKey, org: &str) -> StoreResult<Updated> {
    let org = org.to_owned();
    store
        .update(k, None, &move |i: &mut Instance| {
            i.spec.organization_name = org.clone();
            Ok(Change::Changed)
        })
        .await
}

fn request(id: &str) -> ReconcileRequest {
    ReconcileRequest {
        request_id: id.into(),
        requested_at: now(),
    }
}

fn status(phase: Phase, observed_generation: u64) -> Status {
    Status {
        phase,
        observed_generation,
        last_reconcile_at: Some(now()),
        ..Status::default()
    }
}

async fn list_all_pages(
    store: &Arc<dyn Store>,
    tenant: Option<&TenantId>,
    limit: usize,
) -> Vec<Page> {
    let mut pages = vec![];
    let mut after = None;
    loop {
        let page = store
            .list(tenant, PageRequest { limit, after })
            .await
            .expect("list");
        after = page.next.clone();
        pages.push(page);
        if after.is_none() {
            return pages;
        }
        assert!(pages.len() < 1000, "paging does not terminate");
    }
}

fn keys_of(pages: &[Page]) -> Vec<InstanceKey> {
    pages
        .iter()
        .flat_map(|p| p.items.iter().map(Instance::key))
        .collect()
}

/// A PENDING backup of `k` requested `n` ms after `created_at()`: ids sort by `n`.
fn backup(k: &InstanceKey, n: i64) -> Backup {
    Backup::new(k, created_at() + Duration::milliseconds(n))
}

/// `b` moved to `status` with the fields a reconciler records on the way.
fn advanced(b: &Backup, status: BackupStatus) -> Backup {
    let mut b = b.clone();
    b.status = status;
    match status {
        BackupStatus::Pending => {}
        BackupStatus::Running => {
            b.started_at = Some(now());
            b.efs_backup_job_id = Some(format!("job-{}", b.backup_id));
        }
        BackupStatus::Completed => {
            b.completed_at = Some(now());
            b.efs_recovery_point_arn = Some(format!("arn:aws:backup:rp/{}", b.backup_id));
            b.rds_snapshot_id = Some(format!("snap-{}", b.backup_id));
        }
        BackupStatus::Failed => {
            b.completed_at = Some(now());
            b.error = Some("the backup job failed".into());
        }
    }
    b
}

/// Moves the stored `b` to `status`; returns the record as it should now be stored.
async fn advance(store: &Arc<dyn Store>, b: &Backup, status: BackupStatus) -> Backup {
    let next = advanced(b, status);
    store.update_backup(&next).await.expect("update_backup");
    next
}

async fn stored_backup(store: &Arc<dyn Store>, b: &Backup) -> Backup {
    store
        .get_backup(&b.key(), &b.backup_id)
        .await
        .expect("get_backup")
        .expect("backup exists")
}

async fn request_deletion(store: &Arc<dyn Store>, k: &InstanceKey) {
    let at = now();
    let delete = move |i: &mut Instance| {
        i.metadata.deletion_requested_at = Some(at);
        Ok(Change::Changed)
    };
    store
        .update(k, None, &delete)
        .await
        .expect("request deletion");
}

async fn list_backup_pages(
    store: &Arc<dyn Store>,
    k: &InstanceKey,
    limit: usize,
    active_only: bool,
) -> Vec<BackupPage> {
    let mut pages = vec![];
    let mut after = None;
    loop {
        let request = BackupPageRequest {
            limit,
            after,
            active_only,
        };
        let page = store.list_backups(k, request).await.expect("list_backups");
        after = page.next.clone();
        pages.push(page);
        if after.is_none() {
            return pages;
        }
        assert!(pages.len() < 1000, "paging does not terminate");
    }
}

fn backups_of(pages: &[BackupPage]) -> Vec<Backup> {
    pages.iter().flat_map(|p| p.items.clone()).collect()
}

/// Every backup of `k` (or only the active ones), through pages of 100.
async fn all_backups(store: &Arc<dyn Store>, k: &InstanceKey, active_only: bool) -> Vec<Backup> {
    backups_of(&list_backup_pages(store, k, 100, active_only).await)
}

/// An event `s` seconds after `created_at()`.
fn event(reason: EventReason, message: &str, s: i64) -> Event {
    Event::new(reason, message, 1, created_at() + Duration::seconds(s))
}

mod contract {
    pub use crate::scale_out::*;

    use super::*;

    pub async fn create_then_get_round_trips(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let created = create(&store, &k).await;
        assert_eq!(created.metadata.generation, 1);
        assert!(!created.metadata.resource_version.is_empty());
        assert_eq!(
            created.metadata.created_at,
            created_at(),
            "caller's time is kept"
        );
        assert_eq!(created.metadata.updated_at, created_at());
        assert_eq!(created.spec, spec("Acme"));
        assert_eq!(stored(&store, &k).await, created);
    }

    pub async fn create_of_a_taken_key_returns_the_existing_record(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let first = create(&store, &k).await;
        let second = Instance::new(k.clone(), spec("Other"), now());
        match store.create(second).await {
            Err(StoreError::AlreadyExists(existing)) => assert_eq!(*existing, first),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(
            stored(&store, &k).await,
            first,
            "the existing record is untouched"
        );
    }

    pub async fn get_of_a_missing_key_is_none(store: Arc<dyn Store>) {
        create(&store, &key("t1", "blog")).await;
        assert_eq!(store.get(&key("t1", "other")).await.unwrap(), None);
        assert_eq!(store.get(&key("t2", "blog")).await.unwrap(), None);
    }

    pub async fn list_of_a_tenant_sees_no_other_tenant(store: Arc<dyn Store>) {
        // `t-x/` sorts before `t/` and `t0/` after it: neighbours on both sides.
        for (t, i) in [
            ("t", "a"),
            ("t", "b"),
            ("t-x", "a"),
            ("t0", "a"),
            ("s", "z"),
        ] {
            create(&store, &key(t, i)).await;
        }
        let tenant = |t: &str| TenantId::parse(t).unwrap();
        for limit in [1, 2, 10] {
            let pages = list_all_pages(&store, Some(&tenant("t")), limit).await;
            assert_eq!(
                keys_of(&pages),
                vec![key("t", "a"), key("t", "b")],
                "limit {limit}"
            );
        }
        let neighbours = [("t-x", vec![key("t-x", "a")]), ("t0", vec![key("t0", "a")])];
        for (t, expected) in neighbours.into_iter().chain([("u", vec![])]) {
            let pages = list_all_pages(&store, Some(&tenant(t)), 10).await;
            assert_eq!((pages.len(), keys_of(&pages)), (1, expected), "tenant {t}");
        }
    }

    pub async fn list_of_all_pages_through_every_record_once_in_key_order(store: Arc<dyn Store>) {
        let mut all = vec![];
        for (t, i) in [
            ("c", "1"),
            ("a", "2"),
            ("b", "x"),
            ("b-x", "a"),
            ("a", "1"),
            ("b", "a"),
            ("b0", "a"),
        ] {
            all.push(key(t, i));
            create(&store, all.last().unwrap()).await;
        }
        // Key order is the order of `tenant/instance` paths.
        all.sort_by_key(InstanceKey::path);
        for limit in [1, 2, 3, 6, 7, 8, 100] {
            let pages = list_all_pages(&store, None, limit).await;
            assert_eq!(keys_of(&pages), all, "limit {limit}");
            assert!(
                pages.iter().all(|p| p.items.len() <= limit),
                "limit {limit}"
            );
            let full = pages.iter().rev().skip(1).all(|p| p.items.len() == limit);
            assert!(full, "only the last page may be short (limit {limit})");
        }
        let zero = store
            .list(
                None,
                PageRequest {
                    limit: 0,
                    after: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            keys_of(&[zero]),
            all[..1],
            "a zero limit still makes progress"
        );
    }

    pub async fn changing_the_spec_bumps_generation_version_and_updated_at(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let Updated { instance, change } = set_org(&store, &k, "Renamed").await.unwrap();
        assert_eq!(change, Change::Changed);
        assert_eq!(instance.spec.organization_name, "Renamed");
        assert_eq!(instance.metadata.generation, 2);
        assert_ne!(
            instance.metadata.resource_version,
            before.metadata.resource_version
        );
        assert!(instance.metadata.updated_at > before.metadata.updated_at);
        assert!(now() - instance.metadata.updated_at < Duration::minutes(1));
        assert_eq!(instance.metadata.created_at, before.metadata.created_at);
        assert_eq!(stored(&store, &k).await, instance);
    }

    pub async fn an_unchanged_update_writes_nothing(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let noop = store
            .update(&k, None, &|_: &mut Instance| Ok(Change::Unchanged))
            .await;
        let Updated { instance, change } = noop.unwrap();
        assert_eq!((change, &instance), (Change::Unchanged, &before));
        // The store trusts the verdict: an edit reported as Unchanged is not written.
        let claims_unchanged = |i: &mut Instance| {
            i.spec.organization_name = "Sneaky".into();
            Ok(Change::Unchanged)
        };
        let Updated { instance, change } = store.update(&k, None, &claims_unchanged).await.unwrap();
        assert_eq!((change, &instance), (Change::Unchanged, &before));
        assert_eq!(stored(&store, &k).await, before);
    }

    pub async fn requesting_deletion_bumps_generation(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let at = now();
        let delete = move |i: &mut Instance| {
            i.metadata.deletion_requested_at = Some(at);
            Ok(Change::Changed)
        };
        let updated = store.update(&k, None, &delete).await.unwrap().instance;
        assert_eq!(updated.metadata.deletion_requested_at, Some(at));
        assert_eq!(updated.metadata.generation, before.metadata.generation + 1);
        assert_ne!(
            updated.metadata.resource_version,
            before.metadata.resource_version
        );
        assert_eq!(stored(&store, &k).await, updated);
    }

    pub async fn a_deletion_request_cannot_be_withdrawn(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let at = now();
        let delete = move |i: &mut Instance| {
            i.metadata.deletion_requested_at = Some(at);
            Ok(Change::Changed)
        };
        let deleted = store.update(&k, None, &delete).await.unwrap().instance;
        let undo = |i: &mut Instance| {
            i.metadata.deletion_requested_at = None;
            Ok(Change::Changed)
        };
        let after = store.update(&k, None, &undo).await.unwrap().instance;
        assert_eq!(after.metadata.deletion_requested_at, Some(at));
        assert_eq!(after.metadata.generation, deleted.metadata.generation);
        assert_eq!(
            stored(&store, &k).await.metadata.deletion_requested_at,
            Some(at)
        );
    }

    pub async fn a_metadata_only_change_bumps_version_not_generation(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let mark = |i: &mut Instance| {
            i.metadata.reconcile_request = Some(request("r1"));
            Ok(Change::Changed)
        };
        let after = store.update(&k, None, &mark).await.unwrap().instance;
        assert_eq!(after.metadata.generation, before.metadata.generation);
        assert_ne!(
            after.metadata.resource_version,
            before.metadata.resource_version
        );
        assert_eq!(after.metadata.reconcile_request.unwrap().request_id, "r1");
    }

    pub async fn a_mutation_cannot_touch_identity_bookkeeping_or_status(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let meddle = |i: &mut Instance| {
            i.spec.organization_name = "Renamed".into();
            i.instance_id = wpfleet::model::InstanceId::parse("elsewhere").unwrap();
            i.tenant_id = TenantId::parse("t2").unwrap();
            i.metadata.generation = 99;
            i.metadata.resource_version = "forged".into();
            i.metadata.created_at = now();
            i.status.phase = Phase::Active;
            i.status.observed_generation = 99;
            Ok(Change::Changed)
        };
        let after = store.update(&k, None, &meddle).await.unwrap().instance;
        assert_eq!(after.key(), k);
        assert_eq!(after.spec.organization_name, "Renamed");
        assert_eq!(after.metadata.generation, 2);
        assert_ne!(after.metadata.resource_version, "forged");
        assert_eq!(after.metadata.created_at, before.metadata.created_at);
        assert_eq!(after.status, before.status);
        assert_eq!(stored(&store, &k).await, after);
        assert_eq!(store.get(&key("t2", "elsewhere")).await.unwrap(), None);
    }

    pub async fn a_stale_expected_version_fails_with_the_current_record(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let first = create(&store, &k).await;
        let current = set_org(&store, &k, "Second").await.unwrap().instance;
        let stale = first.metadata.resource_version.as_str();
        let rename = |i: &mut Instance| {
            i.spec.organization_name = "Third".into();
            Ok(Change::Changed)
        };
        match store.update(&k, Some(stale), &rename).await {
            Err(StoreError::PreconditionFailed(got)) => assert_eq!(*got, current),
            other => panic!("expected PreconditionFailed, got {other:?}"),
        }
        assert_eq!(stored(&store, &k).await, current, "nothing was written");
    }

    pub async fn a_matching_expected_version_succeeds(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let rename = |i: &mut Instance| {
            i.spec.organization_name = "Renamed".into();
            Ok(Change::Changed)
        };
        let version = Some(before.metadata.resource_version.as_str());
        let updated = store.update(&k, version, &rename).await.unwrap();
        assert_eq!(updated.change, Change::Changed);
        assert_eq!(stored(&store, &k).await.spec.organization_name, "Renamed");
    }

    pub async fn a_rejected_mutation_writes_nothing(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let refuse = |i: &mut Instance| {
            i.spec.state = DesiredState::Suspended;
            Err(Rejection::InvalidTransition("not now".into()))
        };
        match store.update(&k, None, &refuse).await {
            Err(StoreError::Rejected(Rejection::InvalidTransition(m))) => assert_eq!(m, "not now"),
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(stored(&store, &k).await, before);
    }

    pub async fn a_panicking_mutation_writes_nothing(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let (s, k2) = (store.clone(), k.clone());
        let crashed = tokio::spawn(async move {
            let explode = |i: &mut Instance| -> Result<Change, Rejection> {
                i.spec.organization_name = "Half-done".into();
                panic!("mutation bug (expected by this test)")
            };
            s.update(&k2, None, &explode).await
        });
        assert!(crashed.await.unwrap_err().is_panic());
        assert_eq!(stored(&store, &k).await, before);
        let after = set_org(&store, &k, "Renamed")
            .await
            .expect("store still writable");
        assert_eq!(after.instance.metadata.generation, 2);
    }

    pub async fn writes_to_a_missing_key_are_not_found(store: Arc<dyn Store>) {
        create(&store, &key("t1", "blog")).await;
        let missing = key("t1", "gone");
        let touch = |_: &mut Instance| Ok(Change::Changed);
        match store.update(&missing, None, &touch).await {
            Err(StoreError::NotFound(k)) => assert_eq!(k, missing),
            other => panic!("expected NotFound, got {other:?}"),
        }
        match store
            .write_status(&missing, 1, Status::default(), None)
            .await
        {
            Err(StoreError::NotFound(k)) => assert_eq!(k, missing),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert_eq!(
            store.get(&missing).await.unwrap(),
            None,
            "nothing was created"
        );
    }

    pub async fn write_status_changes_only_the_status(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let before = set_org(&store, &k, "Renamed").await.unwrap().instance;
        let new_status = status(Phase::Provisioning, 1);
        // Generation 1 was read before the rename; older status is still accepted.
        store
            .write_status(&k, 1, new_status.clone(), None)
            .await
            .unwrap();
        let expected = Instance {
            status: new_status,
            ..before
        };
        assert_eq!(stored(&store, &k).await, expected);
    }

    pub async fn status_for_a_newer_generation_is_stale(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        match store
            .write_status(&k, 2, status(Phase::Active, 2), None)
            .await
        {
            Err(StoreError::StaleStatus {
                for_generation,
                current,
            }) => assert_eq!((for_generation, current), (2, 1)),
            other => panic!("expected StaleStatus, got {other:?}"),
        }
        assert_eq!(stored(&store, &k).await, before, "nothing was written");
    }

    pub async fn request_reconcile_marks_existing_keys_only(store: Arc<dyn Store>) {
        let (a, b, missing) = (key("t1", "a"), key("t2", "b"), key("t1", "missing"));
        let before_a = create(&store, &a).await;
        let before_b = create(&store, &b).await;
        let unmarked = create(&store, &key("t1", "c")).await;
        let r = request("r1");
        let marked = store
            .request_reconcile(&[a.clone(), missing.clone(), b.clone()], &r)
            .await
            .unwrap();
        assert_eq!(marked, 2);
        for before in [before_a, before_b] {
            let expected_meta = wpfleet::model::Metadata {
                reconcile_request: Some(r.clone()),
                ..before.metadata.clone()
            };
            let after = stored(&store, &before.key()).await;
            assert_eq!(after.metadata, expected_meta, "only the request is new");
        }
        assert_eq!(stored(&store, &unmarked.key()).await, unmarked);
        assert_eq!(
            store.get(&missing).await.unwrap(),
            None,
            "nothing was created"
        );
        assert_eq!(store.request_reconcile(&[missing], &r).await.unwrap(), 0);
    }

    pub async fn a_status_reporting_the_request_handled_clears_it(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        store
            .request_reconcile(std::slice::from_ref(&k), &request("r2"))
            .await
            .unwrap();
        let base = status(Phase::Active, 1);
        let handled = |id: &str| Status {
            last_handled_reconcile_request: Some(id.into()),
            ..base.clone()
        };
        store
            .write_status(&k, 1, handled("r1"), None)
            .await
            .unwrap();
        let pending = stored(&store, &k).await.metadata.reconcile_request;
        assert_eq!(
            pending.map(|r| r.request_id),
            Some("r2".into()),
            "another id"
        );
        store
            .write_status(&k, 1, handled("r2"), None)
            .await
            .unwrap();
        let after = stored(&store, &k).await;
        assert_eq!(after.metadata.reconcile_request, None);
        assert_eq!(after.status, handled("r2"));
    }

    pub async fn delete_reports_whether_the_record_existed(store: Arc<dyn Store>) {
        let (k, other) = (key("t1", "blog"), key("t1", "other"));
        create(&store, &k).await;
        let kept = create(&store, &other).await;
        assert!(store.delete(&k).await.unwrap());
        assert_eq!(store.get(&k).await.unwrap(), None);
        assert!(!store.delete(&k).await.unwrap());
        assert_eq!(
            keys_of(&list_all_pages(&store, None, 10).await),
            vec![other.clone()]
        );
        assert_eq!(stored(&store, &other).await, kept);
    }

    pub async fn a_recreated_record_gets_a_new_resource_version(store: Arc<dyn Store>) {
        // A client's If-Match from before the delete must not match the new record.
        let k = key("t1", "blog");
        let first = create(&store, &k).await;
        store.delete(&k).await.unwrap();
        let second = create(&store, &k).await;
        assert_ne!(
            second.metadata.resource_version,
            first.metadata.resource_version
        );
        let stale = Some(first.metadata.resource_version.as_str());
        let touch = |_: &mut Instance| Ok(Change::Changed);
        let result = store.update(&k, stale, &touch).await;
        assert!(
            matches!(result, Err(StoreError::PreconditionFailed(_))),
            "{result:?}"
        );
    }

    pub async fn concurrent_updates_lose_nothing(store: Arc<dyn Store>) {
        const WRITERS: usize = 50;
        let k = key("t1", "blog");
        create(&store, &k).await;
        let writers: Vec<_> = (0..WRITERS)
            .map(|n| {
                let (store, k) = (store.clone(), k.clone());
                tokio::spawn(async move {
                    let append = move |i: &mut Instance| {
                        i.spec.organization_name.push_str(&format!(";{n}"));
                        Ok(Change::Changed)
                    };
                    store.update(&k, None, &append).await.map(|u| u.instance)
                })
            })
            .collect();
        let mut versions = BTreeSet::new();
        for writer in writers {
            let updated = writer.await.unwrap().expect("update");
            versions.insert(updated.metadata.resource_version);
        }
        let after = stored(&store, &k).await;
        let mut parts: Vec<&str> = after.spec.organization_name.split(';').collect();
        assert_eq!(parts.remove(0), "Acme");
        let seen: BTreeSet<usize> = parts.iter().map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts.len(), WRITERS, "each append applied once");
        assert_eq!(seen, (0..WRITERS).collect(), "no append lost");
        assert_eq!(after.metadata.generation, 1 + WRITERS as u64);
        assert_eq!(
            versions.len(),
            WRITERS,
            "every write got its own resourceVersion"
        );
    }

    pub async fn concurrent_creates_of_one_key_admit_one(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let creators: Vec<_> = (0..10)
            .map(|n| {
                let store = store.clone();
                let candidate = Instance::new(k.clone(), spec(&format!("Org {n}")), now());
                tokio::spawn(async move { store.create(candidate).await })
            })
            .collect();
        let mut winners = vec![];
        for creator in creators {
            match creator.await.unwrap() {
                Ok(created) => winners.push(created),
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1);
        assert_eq!(stored(&store, &k).await, winners[0]);
    }

    pub async fn create_backup_then_get_round_trips(store: Arc<dyn Store>) {
        let (k, other) = (key("t1", "blog"), key("t1", "other"));
        create(&store, &k).await;
        create(&store, &other).await;
        let b = backup(&k, 0);
        assert_eq!(store.create_backup(b.clone()).await.unwrap(), b);
        assert_eq!(stored_backup(&store, &b).await, b);
        let missing = backup(&k, 1).backup_id;
        assert_eq!(store.get_backup(&k, &missing).await.unwrap(), None);
        assert_eq!(
            store.get_backup(&other, &b.backup_id).await.unwrap(),
            None,
            "a backup id belongs to one instance"
        );
        assert_eq!(
            store
                .get_backup(&key("t2", "blog"), &b.backup_id)
                .await
                .unwrap(),
            None,
            "and to one tenant"
        );
    }

    pub async fn create_backup_of_a_missing_instance_is_not_found(store: Arc<dyn Store>) {
        // The same instance id in another tenant does not count.
        create(&store, &key("t2", "blog")).await;
        let k = key("t1", "blog");
        let b = backup(&k, 0);
        match store.create_backup(b.clone()).await {
            Err(StoreError::NotFound(got)) => assert_eq!(got, k),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert_eq!(store.get_backup(&k, &b.backup_id).await.unwrap(), None);
        assert_eq!(all_backups(&store, &k, false).await, vec![]);
        assert_eq!(all_backups(&store, &k, true).await, vec![]);
    }

    pub async fn create_backup_of_a_deleted_instance_is_rejected(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let earlier = backup(&k, 0);
        store.create_backup(earlier.clone()).await.unwrap();
        request_deletion(&store, &k).await;
        let b = backup(&k, 1);
        match store.create_backup(b.clone()).await {
            Err(StoreError::Rejected(Rejection::InvalidTransition(m))) => {
                assert!(m.contains("delet"), "the message says why: {m}")
            }
            other => panic!("expected Rejected(InvalidTransition), got {other:?}"),
        }
        assert_eq!(store.get_backup(&k, &b.backup_id).await.unwrap(), None);
        assert_eq!(all_backups(&store, &k, false).await, vec![earlier.clone()]);
        assert_eq!(all_backups(&store, &k, true).await, vec![earlier]);
    }

    pub async fn create_backup_of_a_taken_id_conflicts(store: Arc<dyn Store>) {
        let (k, other) = (key("t1", "blog"), key("t1", "other"));
        create(&store, &k).await;
        create(&store, &other).await;
        let first = store.create_backup(backup(&k, 0)).await.unwrap();
        let mut again = advanced(&first, BackupStatus::Running);
        again.requested_at = now();
        match store.create_backup(again).await {
            Err(StoreError::Conflict(_)) => {}
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert_eq!(stored_backup(&store, &first).await, first, "untouched");
        assert_eq!(all_backups(&store, &k, false).await, vec![first.clone()]);
        assert_eq!(all_backups(&store, &k, true).await, vec![first.clone()]);
        // The id is taken only within its instance.
        let elsewhere = Backup {
            instance_id: other.instance_id.clone(),
            ..first.clone()
        };
        assert_eq!(
            store.create_backup(elsewhere.clone()).await.unwrap(),
            elsewhere
        );
        assert_eq!(stored_backup(&store, &first).await, first);
    }

    pub async fn list_backups_pages_in_id_order_within_one_instance(store: Arc<dyn Store>) {
        // `a-b/` sorts before `a/` and `a0/` after it; `t2/a` is the same instance id in
        // another tenant.
        let (a, a_b, a0, other_tenant, empty) = (
            key("t1", "a"),
            key("t1", "a-b"),
            key("t1", "a0"),
            key("t2", "a"),
            key("t1", "b"),
        );
        for k in [&a, &a_b, &a0, &other_tenant, &empty] {
            create(&store, k).await;
        }
        // Created out of id order, interleaved with the neighbours' backups.
        let mut expected = vec![];
        for n in [3, 1, 4, 0, 2] {
            let b = store.create_backup(backup(&a, n)).await.unwrap();
            expected.push(b);
            for neighbour in [&a_b, &a0, &other_tenant] {
                store.create_backup(backup(neighbour, n)).await.unwrap();
            }
        }
        expected.sort_by(|x, y| x.backup_id.cmp(&y.backup_id));
        assert_eq!(
            expected.iter().map(|b| b.requested_at).collect::<Vec<_>>(),
            (0..5)
                .map(|n| backup(&a, n).requested_at)
                .collect::<Vec<_>>(),
            "id order is request order"
        );
        for active_only in [false, true] {
            for limit in [1, 2, 3, 4, 5, 6, 100] {
                let what = format!("limit {limit}, active_only {active_only}");
                let pages = list_backup_pages(&store, &a, limit, active_only).await;
                assert_eq!(backups_of(&pages), expected, "{what}");
                assert_eq!(pages.len(), expected.len().div_ceil(limit), "{what}");
                assert!(pages.iter().all(|p| p.items.len() <= limit), "{what}");
                let full = pages.iter().rev().skip(1).all(|p| p.items.len() == limit);
                assert!(full, "only the last page may be short ({what})");
                for page in &pages[..pages.len() - 1] {
                    let last = page.items.last().map(|b| b.backup_id.clone());
                    assert_eq!(page.next, last, "next is the last id returned ({what})");
                }
            }
            for neighbour in [&a_b, &a0, &other_tenant] {
                let got = all_backups(&store, neighbour, active_only).await;
                assert_eq!(got.len(), 5, "{neighbour}");
                assert!(got.iter().all(|b| b.key() == *neighbour), "{neighbour}");
            }
            let pages = list_backup_pages(&store, &empty, 10, active_only).await;
            assert_eq!(pages.len(), 1);
            assert!(pages[0].items.is_empty() && pages[0].next.is_none());
            let past_the_end = BackupPageRequest {
                limit: 10,
                after: Some(expected[4].backup_id.clone()),
                active_only,
            };
            let page = store.list_backups(&a, past_the_end).await.unwrap();
            assert!(page.items.is_empty() && page.next.is_none());
            let zero = BackupPageRequest {
                limit: 0,
                after: None,
                active_only,
            };
            let page = store.list_backups(&a, zero).await.unwrap();
            assert_eq!(
                page.items,
                expected[..1],
                "a zero limit still makes progress"
            );
            assert_eq!(page.next, Some(expected[0].backup_id.clone()));
        }
    }

    pub async fn list_backups_active_only_follows_the_status(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let mut all = vec![];
        for n in 0..5 {
            all.push(store.create_backup(backup(&k, n)).await.unwrap());
        }
        all[1] = advance(&store, &all[1], BackupStatus::Running).await;
        let running = advance(&store, &all[2], BackupStatus::Running).await;
        all[2] = advance(&store, &running, BackupStatus::Completed).await;
        all[3] = advance(&store, &all[3], BackupStatus::Failed).await;
        let active = |all: &[Backup], idx: &[usize]| -> Vec<Backup> {
            idx.iter().map(|&i| all[i].clone()).collect()
        };
        assert_eq!(
            all_backups(&store, &k, true).await,
            active(&all, &[0, 1, 4])
        );
        let one_by_one = backups_of(&list_backup_pages(&store, &k, 1, true).await);
        assert_eq!(one_by_one, active(&all, &[0, 1, 4]));
        assert_eq!(
            all_backups(&store, &k, false).await,
            all,
            "finished ones stay"
        );

        all[1] = advance(&store, &all[1], BackupStatus::Completed).await;
        all[0] = advance(&store, &all[0], BackupStatus::Running).await;
        assert_eq!(all_backups(&store, &k, true).await, active(&all, &[0, 4]));
        all[0] = advance(&store, &all[0], BackupStatus::Failed).await;
        all[4] = advance(&store, &all[4], BackupStatus::Completed).await;
        assert_eq!(all_backups(&store, &k, true).await, vec![]);
        let page = list_backup_pages(&store, &k, 2, true).await;
        assert_eq!((page.len(), page[0].items.len()), (1, 0));
        assert_eq!(all_backups(&store, &k, false).await, all);
    }

    pub async fn update_of_a_missing_backup_is_backup_not_found(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let existing = store.create_backup(backup(&k, 0)).await.unwrap();
        let missing = advanced(&backup(&k, 1), BackupStatus::Running);
        // Also for an instance that does not exist at all.
        let nowhere = advanced(&backup(&key("t1", "gone"), 1), BackupStatus::Running);
        for b in [missing, nowhere] {
            match store.update_backup(&b).await {
                Err(StoreError::BackupNotFound(got_key, got_id)) => {
                    assert_eq!((got_key, got_id), (b.key(), b.backup_id.clone()))
                }
                other => panic!("expected BackupNotFound, got {other:?}"),
            }
            let got = store.get_backup(&b.key(), &b.backup_id).await.unwrap();
            assert_eq!(got, None, "nothing was created");
        }
        assert_eq!(all_backups(&store, &k, false).await, vec![existing]);
    }

    pub async fn a_final_backup_is_never_changed(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        for (n, last) in [(0, BackupStatus::Completed), (1, BackupStatus::Failed)] {
            let b = store.create_backup(backup(&k, n)).await.unwrap();
            let running = advance(&store, &b, BackupStatus::Running).await;
            let done = advance(&store, &running, last).await;
            let attempts = [
                Backup {
                    error: Some("rewritten".into()),
                    ..done.clone()
                },
                Backup {
                    rds_snapshot_id: Some("another-snapshot".into()),
                    ..done.clone()
                },
                advanced(&done, BackupStatus::Running),
                advanced(&done, BackupStatus::Pending),
                advanced(&done, BackupStatus::Completed),
                advanced(&done, BackupStatus::Failed),
            ];
            for attempt in attempts {
                match store.update_backup(&attempt).await {
                    Err(StoreError::Conflict(_)) => {}
                    other => panic!("expected Conflict for {attempt:?}, got {other:?}"),
                }
                assert_eq!(stored_backup(&store, &b).await, done, "unchanged");
            }
        }
        assert_eq!(all_backups(&store, &k, true).await, vec![]);
    }

    pub async fn a_backup_status_never_goes_back(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let b = store.create_backup(backup(&k, 0)).await.unwrap();
        // Progress within a status is fine.
        let pending = Backup {
            efs_backup_job_id: Some("job-1".into()),
            ..b.clone()
        };
        store.update_backup(&pending).await.unwrap();
        assert_eq!(stored_backup(&store, &b).await, pending);
        let running = advance(&store, &pending, BackupStatus::Running).await;
        let snapshot = Backup {
            rds_snapshot_id: Some("snap-1".into()),
            ..running.clone()
        };
        store.update_backup(&snapshot).await.unwrap();
        assert_eq!(stored_backup(&store, &b).await, snapshot);

        let back = Backup {
            status: BackupStatus::Pending,
            ..snapshot.clone()
        };
        match store.update_backup(&back).await {
            Err(StoreError::Conflict(_)) => {}
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert_eq!(stored_backup(&store, &b).await, snapshot, "unchanged");
        assert_eq!(all_backups(&store, &k, true).await, vec![snapshot]);
    }

    pub async fn update_backup_keeps_identity_and_requested_at(store: Arc<dyn Store>) {
        let (k, other) = (key("t1", "blog"), key("t1", "other"));
        create(&store, &k).await;
        create(&store, &other).await;
        let b = store.create_backup(backup(&k, 0)).await.unwrap();
        let mut moved = advanced(&b, BackupStatus::Running);
        moved.requested_at = now();
        store.update_backup(&moved).await.unwrap();
        let expected = Backup {
            requested_at: b.requested_at,
            ..moved.clone()
        };
        assert_eq!(stored_backup(&store, &b).await, expected);

        // An update names its record by its identity: another instance's key is another
        // record, which does not exist, and this one is not touched.
        let retargeted = Backup {
            instance_id: other.instance_id.clone(),
            ..advanced(&expected, BackupStatus::Completed)
        };
        assert!(matches!(
            store.update_backup(&retargeted).await,
            Err(StoreError::BackupNotFound(..))
        ));
        assert_eq!(stored_backup(&store, &b).await, expected);
        assert_eq!(all_backups(&store, &other, false).await, vec![]);
    }

    pub async fn deleting_an_instance_keeps_its_backups(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let first = store.create_backup(backup(&k, 0)).await.unwrap();
        let done = advance(&store, &first, BackupStatus::Completed).await;
        let in_flight = store.create_backup(backup(&k, 1)).await.unwrap();
        request_deletion(&store, &k).await;
        assert!(store.delete(&k).await.unwrap());
        assert_eq!(store.get(&k).await.unwrap(), None);
        assert_eq!(
            all_backups(&store, &k, false).await,
            vec![done.clone(), in_flight.clone()]
        );
        assert_eq!(all_backups(&store, &k, true).await, vec![in_flight.clone()]);
        assert_eq!(stored_backup(&store, &done).await, done);
        // A backup in flight when the record went can still be finished.
        let finished = advance(&store, &in_flight, BackupStatus::Completed).await;
        assert_eq!(all_backups(&store, &k, false).await, vec![done, finished]);
        assert_eq!(all_backups(&store, &k, true).await, vec![]);
    }

    pub async fn concurrent_creates_of_one_backup_id_admit_one(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let id = backup(&k, 0).backup_id;
        let creators: Vec<_> = (0..10)
            .map(|n| {
                let store = store.clone();
                let candidate = Backup {
                    backup_id: id.clone(),
                    error: Some(format!("candidate {n}")),
                    ..backup(&k, n)
                };
                tokio::spawn(async move { store.create_backup(candidate).await })
            })
            .collect();
        let mut winners = vec![];
        for creator in creators {
            match creator.await.unwrap() {
                Ok(created) => winners.push(created),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1);
        assert_eq!(all_backups(&store, &k, false).await, winners);
        assert_eq!(all_backups(&store, &k, true).await, winners);
    }

    pub async fn events_list_oldest_first_per_instance(store: Arc<dyn Store>) {
        let (k, other) = (key("t1", "blog"), key("t1", "blog-x"));
        create(&store, &k).await;
        create(&store, &other).await;
        assert_eq!(store.list_events(&k).await.unwrap(), vec![]);
        let first = [
            event(EventReason::StepApplied, "CreateLogGroup a", 0),
            event(EventReason::PhaseChanged, "→ PROVISIONING", 1),
        ];
        store.append_events(&k, &first).await.unwrap();
        let second = event(EventReason::StepFailed, "CreateDatabase a: boom", 2);
        store
            .append_events(&k, std::slice::from_ref(&second))
            .await
            .unwrap();
        store.append_events(&k, &[]).await.unwrap();
        let mut want = first.to_vec();
        want.push(second);
        assert_eq!(store.list_events(&k).await.unwrap(), want);
        assert_eq!(store.list_events(&other).await.unwrap(), vec![]);
        assert_eq!(store.list_events(&key("t2", "blog")).await.unwrap(), vec![]);
    }

    pub async fn a_repeated_event_is_folded_and_the_log_keeps_the_newest(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        for s in 0..3 {
            let failed = event(EventReason::StepFailed, "UpdateService a: throttled", s);
            store.append_events(&k, &[failed]).await.unwrap();
        }
        let log = store.list_events(&k).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].count, 3);
        assert_eq!(log[0].first_timestamp, created_at());
        assert_eq!(log[0].last_timestamp, created_at() + Duration::seconds(2));
        let many: Vec<Event> = (0..MAX_EVENTS as i64 + 5)
            .map(|i| event(EventReason::StepApplied, &format!("step {i}"), 10 + i))
            .collect();
        store.append_events(&k, &many).await.unwrap();
        let log = store.list_events(&k).await.unwrap();
        assert_eq!(log, many[5..].to_vec(), "the newest {MAX_EVENTS}, in order");
    }

    pub async fn events_of_a_missing_instance_are_not_found(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let e = event(EventReason::StepApplied, "x", 0);
        let result = store.append_events(&k, &[e]).await;
        assert!(matches!(result, Err(StoreError::NotFound(_))), "{result:?}");
        create(&store, &k).await;
        assert_eq!(
            store.list_events(&k).await.unwrap(),
            vec![],
            "nothing was written for the missing instance"
        );
    }

    pub async fn events_change_no_record_field(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let e = event(EventReason::PhaseChanged, "x", 0);
        store.append_events(&k, &[e]).await.unwrap();
        assert_eq!(stored(&store, &k).await, before);
    }

    pub async fn deleting_an_instance_drops_its_events(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let e = event(EventReason::StepApplied, "x", 0);
        store.append_events(&k, &[e]).await.unwrap();
        store.delete(&k).await.unwrap();
        assert_eq!(store.list_events(&k).await.unwrap(), vec![]);
        create(&store, &k).await;
        assert_eq!(
            store.list_events(&k).await.unwrap(),
            vec![],
            "a re-created instance starts with no history"
        );
    }

    pub async fn a_status_write_with_events_writes_both(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        let before = create(&store, &k).await;
        let first = event(EventReason::StepApplied, "CreateLogGroup a", 0);
        store
            .append_events(&k, std::slice::from_ref(&first))
            .await
            .unwrap();
        let new_status = status(Phase::Provisioning, 0);
        let e = event(EventReason::PhaseChanged, "→ PROVISIONING", 1);
        store
            .write_status_and_events(&k, 1, new_status.clone(), None, std::slice::from_ref(&e))
            .await
            .unwrap();
        let expected = Instance {
            status: new_status.clone(),
            ..before
        };
        assert_eq!(stored(&store, &k).await, expected);
        assert_eq!(store.list_events(&k).await.unwrap(), vec![first, e.clone()]);
        // No events: only the status is written.
        let later = status(Phase::Active, 1);
        store
            .write_status_and_events(&k, 1, later.clone(), None, &[])
            .await
            .unwrap();
        assert_eq!(stored(&store, &k).await.status, later);
        assert_eq!(store.list_events(&k).await.unwrap().len(), 2);
    }

    pub async fn a_refused_status_write_appends_no_event(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let e = event(EventReason::Converged, "x", 0);
        let stale = store
            .write_status_and_events(
                &k,
                2,
                status(Phase::Active, 2),
                None,
                std::slice::from_ref(&e),
            )
            .await;
        assert!(
            matches!(stale, Err(StoreError::StaleStatus { .. })),
            "{stale:?}"
        );
        assert_eq!(store.list_events(&k).await.unwrap(), vec![]);
        let missing = key("t1", "nope");
        let gone = store
            .write_status_and_events(&missing, 1, Status::default(), None, &[e])
            .await;
        assert!(matches!(gone, Err(StoreError::NotFound(_))), "{gone:?}");
        assert_eq!(store.list_events(&missing).await.unwrap(), vec![]);
    }

    pub async fn concurrent_event_appends_lose_nothing(store: Arc<dyn Store>) {
        let k = key("t1", "blog");
        create(&store, &k).await;
        let writers: Vec<_> = (0..MAX_EVENTS)
            .map(|n| {
                let (store, k) = (store.clone(), k.clone());
                let e = event(EventReason::StepApplied, &format!("writer {n}"), n as i64);
                tokio::spawn(async move { store.append_events(&k, &[e]).await })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().expect("append");
        }
        let messages: BTreeSet<String> = store
            .list_events(&k)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        let want: BTreeSet<String> = (0..MAX_EVENTS).map(|n| format!("writer {n}")).collect();
        assert_eq!(messages, want);
    }
}

mod embedded_only {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    use redb::ReadableTable;

    use super::*;

    const INSTANCES_TABLE: redb::TableDefinition<&str, &[u8]> =
        redb::TableDefinition::new("instances");

    fn open(dir: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(EmbeddedStore::open(dir).expect("open store"))
    }

    #[tokio::test]
    async fn records_survive_closing_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let k = key("t1", "blog");
        let (updated, first_version) = {
            let store = open(dir.path());
            let first = create(&store, &k).await;
            let updated = set_org(&store, &k, "Renamed").await.unwrap().instance;
            (updated, first.metadata.resource_version)
        };
        let store = open(dir.path());
        assert_eq!(stored(&store, &k).await, updated);
        // The counter is persisted too, so versions are not handed out twice.
        let next = set_org(&store, &k, "Again").await.unwrap().instance;
        let taken = [first_version, updated.metadata.resource_version];
        assert!(!taken.contains(&next.metadata.resource_version));
    }

    #[tokio::test]
    async fn open_creates_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let store = open(&nested);
        create(&store, &key("t1", "blog")).await;
        assert!(nested.join("wpfleet.redb").is_file());
    }

    #[tokio::test]
    async fn a_second_open_of_a_live_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _live = open(dir.path());
        let second = EmbeddedStore::open(dir.path());
        assert!(matches!(second, Err(StoreError::Unavailable(_))));
    }

    #[tokio::test]
    async fn an_unreadable_record_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let good = key("t1", "a");
        drop(open(dir.path()));
        {
            let db = redb::Database::create(dir.path().join("wpfleet.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(INSTANCES_TABLE)
                .unwrap()
                .insert("t1/b", b"{not json".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let store = open(dir.path());
        create(&store, &good).await;
        let bad = key("t1", "b");
        assert!(matches!(
            store.get(&bad).await,
            Err(StoreError::Unavailable(_))
        ));
        let listed = store
            .list(
                None,
                PageRequest {
                    limit: 10,
                    after: None,
                },
            )
            .await;
        assert!(matches!(listed, Err(StoreError::Unavailable(_))));
        let touch = |_: &mut Instance| Ok(Change::Changed);
        let updated = store.update(&bad, None, &touch).await;
        assert!(matches!(updated, Err(StoreError::Unavailable(_))));
        assert!(
            store.delete(&bad).await.unwrap(),
            "a bad record can still be removed"
        );
        assert!(store.get(&good).await.unwrap().is_some());
    }

    /// An update dropped while it waits for the writer must not run, and must not leave a
    /// transaction behind holding the writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_update_writes_nothing_and_releases_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let k = key("t1", "blog");
        create(&store, &k).await;
        let (entered, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let holder = {
            let (store, k) = (store.clone(), k.clone());
            let (entered, release) = (entered.clone(), release.clone());
            tokio::spawn(async move {
                // Runs inside the write transaction, so the writer is held until released.
                let hold = move |i: &mut Instance| {
                    entered.wait();
                    release.wait();
                    i.spec.organization_name.push_str(";held");
                    Ok(Change::Changed)
                };
                store.update(&k, None, &hold).await
            })
        };
        let wait = |b: Arc<Barrier>| tokio::task::spawn_blocking(move || b.wait());
        wait(entered).await.unwrap();
        let abandon = |i: &mut Instance| {
            i.spec.organization_name.push_str(";abandoned");
            Ok(Change::Changed)
        };
        let cut_off = Duration::from_millis(50);
        let abandoned = tokio::time::timeout(cut_off, store.update(&k, None, &abandon)).await;
        assert!(abandoned.is_err(), "the update waited for the writer");
        wait(release).await.unwrap();
        holder.await.unwrap().expect("holder's update");
        // Give the abandoned transaction the writer first; it must give it back.
        tokio::time::sleep(cut_off).await;
        let next = |i: &mut Instance| {
            i.spec.organization_name.push_str(";next");
            Ok(Change::Changed)
        };
        let last = tokio::time::timeout(Duration::from_secs(10), store.update(&k, None, &next))
            .await
            .expect("the writer was released")
            .unwrap()
            .instance;
        assert_eq!(last.spec.organization_name, "Acme;held;next");
        assert_eq!(last.metadata.generation, 3);
    }

    const BACKUPS_TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("backups");
    const ACTIVE_BACKUPS_TABLE: redb::TableDefinition<&str, ()> =
        redb::TableDefinition::new("active_backups");

    fn backup_path(b: &Backup) -> String {
        format!("{}/{}", b.key().path(), b.backup_id)
    }

    /// The reconciler lists in-flight backups on every pass, so that listing must not read
    /// finished records. Checked structurally, not by timing: the index holds exactly the
    /// in-flight keys, and with every finished record (and 500 more) made unreadable on
    /// disk, the active listing still works while a full listing fails.
    #[tokio::test]
    async fn active_only_listing_reads_only_in_flight_records() {
        let dir = tempfile::tempdir().unwrap();
        let (k, neighbour) = (key("t1", "blog"), key("t1", "blog-x"));
        let (pending, running, neighbours) = {
            let store = open(dir.path());
            create(&store, &k).await;
            create(&store, &neighbour).await;
            let finals = [BackupStatus::Completed, BackupStatus::Failed];
            for n in 0..6 {
                let b = store.create_backup(backup(&k, n * 100)).await.unwrap();
                let b = advance(&store, &b, BackupStatus::Running).await;
                advance(&store, &b, finals[n as usize % 2]).await;
            }
            let pending = store.create_backup(backup(&k, 250)).await.unwrap();
            let running = store.create_backup(backup(&k, 450)).await.unwrap();
            let running = advance(&store, &running, BackupStatus::Running).await;
            let neighbours = store.create_backup(backup(&neighbour, 300)).await.unwrap();
            (pending, running, neighbours)
        };
        let active_paths: BTreeSet<String> =
            [&pending, &running, &neighbours].map(backup_path).into();
        {
            let db = redb::Database::create(dir.path().join("wpfleet.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let index = txn.open_table(ACTIVE_BACKUPS_TABLE).unwrap();
                let indexed: BTreeSet<String> = index
                    .iter()
                    .unwrap()
                    .map(|e| e.unwrap().0.value().to_owned())
                    .collect();
                assert_eq!(
                    indexed, active_paths,
                    "the index holds exactly the active keys"
                );
                let mut backups = txn.open_table(BACKUPS_TABLE).unwrap();
                let finished: Vec<String> = backups
                    .iter()
                    .unwrap()
                    .map(|e| e.unwrap().0.value().to_owned())
                    .filter(|path| !active_paths.contains(path))
                    .collect();
                assert_eq!(finished.len(), 6);
                // 500 more finished records, before, between and after the active ones.
                let more = (0..500).map(|n| backup_path(&backup(&k, n)));
                for path in finished.into_iter().chain(more) {
                    backups
                        .insert(path.as_str(), b"{not json".as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = open(dir.path());
        for limit in [1, 2, 10] {
            let pages = list_backup_pages(&store, &k, limit, true).await;
            let expected = vec![pending.clone(), running.clone()];
            assert_eq!(backups_of(&pages), expected, "limit {limit}");
        }
        let full = BackupPageRequest {
            limit: 10,
            after: None,
            active_only: false,
        };
        assert!(
            matches!(
                store.list_backups(&k, full).await,
                Err(StoreError::Unavailable(_))
            ),
            "the finished records really are unreadable"
        );
        assert_eq!(
            all_backups(&store, &neighbour, true).await,
            vec![neighbours]
        );
        let done = advance(&store, &running, BackupStatus::Completed).await;
        assert_eq!(stored_backup(&store, &done).await, done);
        assert_eq!(all_backups(&store, &k, true).await, vec![pending]);
    }

    #[tokio::test]
    async fn a_backup_id_that_is_not_one_key_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (k, nested) = (key("t1", "blog"), key("t1", "blog-x"));
        create(&store, &k).await;
        create(&store, &nested).await;
        for id in ["", "x/y", "../blog-x/bk-1"] {
            let b = Backup {
                backup_id: id.into(),
                ..backup(&k, 0)
            };
            match store.create_backup(b).await {
                Err(StoreError::Rejected(Rejection::Invalid(errors))) => {
                    assert_eq!(errors[0].field, "backupId", "{id:?}")
                }
                other => panic!("expected Rejected(Invalid) for {id:?}, got {other:?}"),
            }
        }
        assert_eq!(all_backups(&store, &k, false).await, vec![]);
        assert_eq!(all_backups(&store, &nested, false).await, vec![]);
    }

    /// A file written before backups existed has no backup tables; opening it adds them.
    #[tokio::test]
    async fn a_file_from_before_backups_opens_and_gains_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        let k = key("t1", "blog");
        let old = instance(&k);
        {
            let db = redb::Database::create(dir.path().join("wpfleet.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            let bytes = serde_json::to_vec(&old).unwrap();
            txn.open_table(INSTANCES_TABLE)
                .unwrap()
                .insert(k.path().as_str(), bytes.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let store = open(dir.path());
        assert_eq!(stored(&store, &k).await, old);
        assert_eq!(all_backups(&store, &k, false).await, vec![]);
        assert_eq!(all_backups(&store, &k, true).await, vec![]);
        let b = store.create_backup(backup(&k, 0)).await.unwrap();
        assert_eq!(all_backups(&store, &k, true).await, vec![b]);
    }

    const CRASH_DIR: &str = "WPFLEET_STORE_CRASH_DIR";

    /// The child half of `acknowledged_writes_survive_kill_9`: prints `ack N` after the
    /// N-th update returns, and keeps writing until it is killed.
    #[tokio::test]
    #[ignore = "runs as the child process of acknowledged_writes_survive_kill_9"]
    async fn crash_child_writes_until_killed() {
        let Ok(dir) = std::env::var(CRASH_DIR) else {
            return;
        };
        let store = open(std::path::Path::new(&dir));
        let k = key("t1", "blog");
        create(&store, &k).await;
        for n in 1.. {
            let append = move |i: &mut Instance| {
                i.spec.organization_name.push_str(&format!(";{n}"));
                Ok(Change::Changed)
            };
            store.update(&k, None, &append).await.expect("update");
            println!("ack {n}");
        }
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_kill_9() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "embedded_only::crash_child_writes_until_killed"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env(CRASH_DIR, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let acked = lines
            .map(|l| l.unwrap())
            .filter_map(|l| l.strip_prefix("ack ").map(|n| n.parse::<usize>().unwrap()))
            .find(|&n| n >= 20)
            .expect("child acknowledged writes");
        child.kill().unwrap(); // SIGKILL: no destructor, no clean close of the file.
        child.wait().unwrap();

        let store = open(dir.path());
        let after = stored(&store, &key("t1", "blog")).await;
        let parts: Vec<&str> = after.spec.organization_name.split(';').skip(1).collect();
        let applied: Vec<usize> = parts.iter().map(|p| p.parse().unwrap()).collect();
        assert!(
            applied.len() >= acked,
            "{} < {acked} acknowledged",
            applied.len()
        );
        assert_eq!(
            applied,
            (1..=applied.len()).collect::<Vec<_>>(),
            "in order, no gaps"
        );
        set_org(&store, &key("t1", "blog"), "Writable")
            .await
            .expect("writable after repair");
    }

    /// Prints how long one durable `update` takes here: `cargo test -- --ignored latency`.
    #[tokio::test]
    #[ignore = "a measurement, not a check"]
    async fn update_latency() {
        const N: u32 = 200;
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let k = key("t1", "blog");
        create(&store, &k).await;
        let mut took = vec![];
        for n in 0..N {
            let start = Instant::now();
            set_org(&store, &k, &format!("Org {n}")).await.unwrap();
            took.push(start.elapsed());
        }
        took.sort();
        let mean = took.iter().sum::<std::time::Duration>() / N;
        let (p50, p99) = (took[N as usize / 2], took[N as usize * 99 / 100]);
        println!("update latency over {N}: mean {mean:?}, p50 {p50:?}, p99 {p99:?}");
    }
}
