//! Contract cases for the scale-out half of `Store`: the pending index, shard listings,
//! shard leases with fencing tokens, and replica heartbeats. Run against every backend by
//! `store_contract!` like the rest of the suite.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use wpfleet::store::{Fence, Lease, PendingItem, shard_of};

use super::*;

const LONG: StdDuration = StdDuration::from_secs(60);
const SHORT: StdDuration = StdDuration::from_millis(300);

/// Longer than `SHORT`, with room for a slow machine's clock reads.
async fn let_short_leases_expire() {
    tokio::time::sleep(StdDuration::from_millis(450)).await;
}

async fn pending(store: &Arc<dyn Store>) -> BTreeMap<InstanceKey, PendingItem> {
    let items = store.pending(10_000).await.expect("pending");
    let n = items.len();
    let map: BTreeMap<_, _> = items.into_iter().map(|p| (p.key.clone(), p)).collect();
    assert_eq!(map.len(), n, "an instance is listed once");
    map
}

async fn marker(store: &Arc<dyn Store>, k: &InstanceKey) -> Option<String> {
    pending(store).await.get(k).map(|p| p.marker.clone())
}

/// Writes a status that records convergence of the current generation.
async fn converge(store: &Arc<dyn Store>, k: &InstanceKey) {
    let generation = stored(store, k).await.metadata.generation;
    store
        .write_status(k, generation, status(Phase::Active, generation), None)
        .await
        .expect("write_status");
}

async fn lease(store: &Arc<dyn Store>, shard: u32, holder: &str, ttl: StdDuration) -> Lease {
    store
        .acquire_lease(shard, holder, ttl)
        .await
        .expect("acquire_lease")
        .unwrap_or_else(|| panic!("{holder} should get shard {shard}"))
}

async fn stored_lease(store: &Arc<dyn Store>, shard: u32) -> Option<Lease> {
    let leases = store.leases().await.expect("leases");
    let mut of_shard: Vec<Lease> = leases.into_iter().filter(|l| l.shard == shard).collect();
    assert!(of_shard.len() <= 1, "one record per shard: {of_shard:?}");
    of_shard.pop()
}

fn assert_expires_in(lease: &Lease, ttl: StdDuration) {
    let left = (lease.expires_at - now()).to_std().unwrap_or_default();
    assert!(
        left <= ttl && left + StdDuration::from_secs(5) > ttl,
        "{lease:?} should expire in about {ttl:?}, not {left:?}"
    );
}

pub async fn a_new_instance_is_pending_until_its_status_records_convergence(store: Arc<dyn Store>) {
    let k = key("t1", "blog");
    create(&store, &k).await;
    let entry = pending(&store)
        .await
        .remove(&k)
        .expect("pending after create");
    assert_eq!(entry.shard, shard_of(&k, store.shards()));
    assert!(!entry.marker.is_empty());

    // A status that has not reached the generation keeps it, with the same marker: a
    // poller does not re-queue work it already has in hand.
    store
        .write_status(&k, 1, status(Phase::Provisioning, 0), None)
        .await
        .unwrap();
    assert_eq!(marker(&store, &k).await, Some(entry.marker.clone()));
    converge(&store, &k).await;
    assert_eq!(pending(&store).await.get(&k), None);

    // A spec change is new work: pending again, with a new marker.
    set_org(&store, &k, "Renamed").await.unwrap();
    let second = marker(&store, &k)
        .await
        .expect("pending after a spec change");
    assert_ne!(second, entry.marker);
    // Status read at the old generation does not clear it.
    store
        .write_status(&k, 1, status(Phase::Active, 1), None)
        .await
        .unwrap();
    assert_eq!(marker(&store, &k).await, Some(second));
    converge(&store, &k).await;
    assert!(pending(&store).await.is_empty());

    // A change that needs no reconciling (here: none at all) leaves the index alone.
    let noop = store
        .update(&k, None, &|_: &mut Instance| Ok(Change::Unchanged))
        .await
        .unwrap();
    assert_eq!(noop.change, Change::Unchanged);
    assert!(pending(&store).await.is_empty());
}

pub async fn a_deletion_request_is_pending_and_a_deleted_record_is_not(store: Arc<dyn Store>) {
    let k = key("t1", "blog");
    create(&store, &k).await;
    converge(&store, &k).await;
    request_deletion(&store, &k).await;
    let first = marker(&store, &k)
        .await
        .expect("pending after a deletion request");
    converge(&store, &k).await;
    assert_eq!(marker(&store, &k).await, None);
    set_org(&store, &k, "Renamed").await.unwrap();
    assert_ne!(marker(&store, &k).await, Some(first));
    assert!(store.delete(&k).await.unwrap());
    assert!(
        pending(&store).await.is_empty(),
        "a removed record is not pending"
    );
}

pub async fn a_reconcile_request_is_pending_until_handled(store: Arc<dyn Store>) {
    let (k, other) = (key("t1", "blog"), key("t1", "other"));
    create(&store, &k).await;
    create(&store, &other).await;
    converge(&store, &k).await;
    converge(&store, &other).await;
    assert!(pending(&store).await.is_empty());
    store
        .request_reconcile(std::slice::from_ref(&k), &request("r1"))
        .await
        .unwrap();
    let first = marker(&store, &k)
        .await
        .expect("pending after reconcile-now");
    assert_eq!(marker(&store, &other).await, None, "only the requested one");
    // A second request is new work.
    store
        .request_reconcile(std::slice::from_ref(&k), &request("r2"))
        .await
        .unwrap();
    let second = marker(&store, &k).await.expect("still pending");
    assert_ne!(second, first);
    // Converged, but the request is not handled yet.
    converge(&store, &k).await;
    assert_eq!(marker(&store, &k).await, Some(second));
    let handled = Status {
        last_handled_reconcile_request: Some("r2".into()),
        ..status(Phase::Active, 1)
    };
    store.write_status(&k, 1, handled, None).await.unwrap();
    assert!(pending(&store).await.is_empty());
}

pub async fn an_active_backup_keeps_its_instance_pending(store: Arc<dyn Store>) {
    let k = key("t1", "blog");
    create(&store, &k).await;
    converge(&store, &k).await;
    let b = store.create_backup(backup(&k, 0)).await.unwrap();
    let first = marker(&store, &k).await.expect("a new backup is new work");
    converge(&store, &k).await;
    assert_eq!(
        marker(&store, &k).await,
        Some(first.clone()),
        "backup in flight"
    );
    let running = advance(&store, &b, BackupStatus::Running).await;
    converge(&store, &k).await;
    assert_eq!(marker(&store, &k).await, Some(first));
    // The end of the last backup of a converged instance takes it out.
    advance(&store, &running, BackupStatus::Completed).await;
    assert!(pending(&store).await.is_empty());

    // Finished before the status caught up: the status write takes it out.
    let b2 = store.create_backup(backup(&k, 1)).await.unwrap();
    let b3 = store.create_backup(backup(&k, 2)).await.unwrap();
    set_org(&store, &k, "Renamed").await.unwrap();
    advance(&store, &b2, BackupStatus::Failed).await;
    assert!(marker(&store, &k).await.is_some(), "spec not reached yet");
    converge(&store, &k).await;
    assert!(marker(&store, &k).await.is_some(), "b3 still in flight");
    advance(&store, &b3, BackupStatus::Failed).await;
    assert!(pending(&store).await.is_empty());
}

pub async fn pending_returns_at_most_the_limit(store: Arc<dyn Store>) {
    let mut all = BTreeSet::new();
    for i in 0..7 {
        let k = key(&format!("t{}", i % 3), &format!("i{i}"));
        create(&store, &k).await;
        all.insert(k);
    }
    for limit in [1, 3, 7] {
        let got = store.pending(limit).await.unwrap();
        assert_eq!(got.len(), limit, "limit {limit}");
        assert!(got.iter().all(|p| all.contains(&p.key)));
    }
    let everything: BTreeSet<InstanceKey> = pending(&store).await.into_keys().collect();
    assert_eq!(everything, all);
    assert_eq!(
        store.pending(0).await.unwrap().len(),
        1,
        "zero still makes progress"
    );
}

pub async fn list_shard_pages_through_one_shard_in_key_order(store: Arc<dyn Store>) {
    let shards = store.shards();
    let mut by_shard: BTreeMap<u32, Vec<InstanceKey>> = BTreeMap::new();
    for i in 0..60 {
        let k = key(&format!("t{}", i % 4), &format!("i{i}"));
        create(&store, &k).await;
        by_shard.entry(shard_of(&k, shards)).or_default().push(k);
    }
    for keys in by_shard.values_mut() {
        keys.sort_by_key(InstanceKey::path);
    }
    let (&busiest, most) = by_shard.iter().max_by_key(|(_, v)| v.len()).unwrap();
    assert!(
        most.len() >= 2,
        "the test needs a shard with several instances"
    );
    for limit in [1, 2, 100] {
        let mut got = vec![];
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = store
                .list_shard(busiest, PageRequest { limit, after })
                .await
                .unwrap();
            assert!(page.items.len() <= limit);
            got.extend(page.items.iter().map(Instance::key));
            pages += 1;
            assert!(pages < 1000, "paging does not terminate");
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(&got, most, "limit {limit}");
        assert_eq!(
            pages,
            most.len().div_ceil(limit),
            "limit {limit}: no empty last page"
        );
    }
    let mut union = BTreeSet::new();
    for shard in 0..shards {
        let page = store
            .list_shard(
                shard,
                PageRequest {
                    limit: 1000,
                    after: None,
                },
            )
            .await
            .unwrap();
        let keys: Vec<InstanceKey> = page.items.iter().map(Instance::key).collect();
        assert_eq!(
            &keys,
            by_shard.get(&shard).unwrap_or(&vec![]),
            "shard {shard}"
        );
        union.extend(keys);
    }
    assert_eq!(union.len(), 60, "every instance is in exactly one shard");
    // A deleted record leaves its shard.
    let gone = most[0].clone();
    store.delete(&gone).await.unwrap();
    let page = store
        .list_shard(
            busiest,
            PageRequest {
                limit: 1000,
                after: None,
            },
        )
        .await
        .unwrap();
    assert!(!page.items.iter().any(|i| i.key() == gone));
}

pub async fn a_lease_is_exclusive_and_its_holder_may_take_it_again(store: Arc<dyn Store>) {
    assert_eq!(stored_lease(&store, 3).await, None);
    let first = lease(&store, 3, "a", LONG).await;
    assert_eq!((first.shard, first.holder.as_str()), (3, "a"));
    assert!(first.token >= 1);
    assert_expires_in(&first, LONG);
    assert_eq!(stored_lease(&store, 3).await, Some(first.clone()));
    assert_eq!(
        store.acquire_lease(3, "b", LONG).await.unwrap(),
        None,
        "held by a"
    );
    assert_eq!(stored_lease(&store, 3).await, Some(first.clone()));
    // Re-acquiring one's own lease keeps its token.
    let again = lease(&store, 3, "a", LONG).await;
    assert_eq!(again.token, first.token);
    // Other shards are independent.
    let other = lease(&store, 4, "b", LONG).await;
    assert_eq!(other.holder, "b");
    let all = store.leases().await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
}

pub async fn renewing_extends_only_the_current_holders_lease(store: Arc<dyn Store>) {
    let short = lease(&store, 7, "a", SHORT).await;
    let renewed = store
        .renew_lease(&short, LONG)
        .await
        .unwrap()
        .expect("still held");
    assert_eq!((renewed.holder.as_str(), renewed.token), ("a", short.token));
    assert_expires_in(&renewed, LONG);
    assert_eq!(stored_lease(&store, 7).await, Some(renewed.clone()));
    let forged = [
        Lease {
            holder: "b".into(),
            ..renewed.clone()
        },
        Lease {
            token: renewed.token + 1,
            ..renewed.clone()
        },
        Lease {
            shard: 8,
            ..renewed.clone()
        },
    ];
    for lease in forged {
        assert_eq!(
            store.renew_lease(&lease, LONG).await.unwrap(),
            None,
            "{lease:?}"
        );
    }
    assert_eq!(stored_lease(&store, 7).await, Some(renewed));
    assert_eq!(
        stored_lease(&store, 8).await,
        None,
        "renewing creates nothing"
    );
}

pub async fn an_expired_lease_is_taken_over_with_a_higher_token(store: Arc<dyn Store>) {
    let old = lease(&store, 5, "a", SHORT).await;
    assert_eq!(store.acquire_lease(5, "b", LONG).await.unwrap(), None);
    let_short_leases_expire().await;
    let new = lease(&store, 5, "b", LONG).await;
    assert!(new.token > old.token, "{new:?} after {old:?}");
    // The old holder lost it: renewing fails, releasing is a no-op, taking it is refused.
    assert_eq!(store.renew_lease(&old, LONG).await.unwrap(), None);
    store.release_lease(&old).await.unwrap();
    assert_eq!(stored_lease(&store, 5).await, Some(new.clone()));
    assert_eq!(store.acquire_lease(5, "a", LONG).await.unwrap(), None);
}

pub async fn a_released_lease_is_free_and_its_token_never_goes_back(store: Arc<dyn Store>) {
    let a = lease(&store, 9, "a", LONG).await;
    store.release_lease(&a).await.unwrap();
    let released = stored_lease(&store, 9).await.expect("the record stays");
    assert_eq!((released.holder.as_str(), released.token), ("", a.token));
    assert!(released.expires_at <= now());
    assert_eq!(store.renew_lease(&a, LONG).await.unwrap(), None, "released");
    let b = lease(&store, 9, "b", LONG).await;
    assert!(b.token > a.token);
    store.release_lease(&b).await.unwrap();
    // Even the first holder coming back gets a newer token than every one before.
    let a2 = lease(&store, 9, "a", LONG).await;
    assert!(a2.token > b.token, "{a2:?} after {b:?}");
}

pub async fn a_status_write_with_a_stale_fence_is_refused(store: Arc<dyn Store>) {
    let k = key("t1", "blog");
    create(&store, &k).await;
    let shard = shard_of(&k, store.shards());
    let unleased = Fence { shard, token: 1 };
    match store
        .write_status(&k, 1, status(Phase::Provisioning, 0), Some(unleased))
        .await
    {
        Err(StoreError::Fenced { shard: s, token }) => assert_eq!((s, token), (shard, 1)),
        other => panic!("a shard nobody leased fences every write, got {other:?}"),
    }
    let a = lease(&store, shard, "a", SHORT).await;
    let mine = status(Phase::Provisioning, 0);
    store
        .write_status(&k, 1, mine.clone(), Some(a.fence()))
        .await
        .expect("the holder writes");
    assert_eq!(stored(&store, &k).await.status, mine);

    let_short_leases_expire().await;
    let b = lease(&store, shard, "b", LONG).await;
    let before = stored(&store, &k).await;
    match store
        .write_status(&k, 1, status(Phase::Active, 1), Some(a.fence()))
        .await
    {
        Err(StoreError::Fenced { shard: s, token }) => assert_eq!((s, token), (shard, a.token)),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(stored(&store, &k).await, before, "nothing was written");
    assert!(
        pending(&store).await.contains_key(&k),
        "and it is still pending"
    );
    // A fence of another shard does not count either.
    let elsewhere = Fence {
        shard: (shard + 1) % store.shards(),
        token: b.token,
    };
    assert!(matches!(
        store
            .write_status(&k, 1, status(Phase::Active, 1), Some(elsewhere))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    store
        .write_status(&k, 1, status(Phase::Active, 1), Some(b.fence()))
        .await
        .expect("the new holder writes");
    assert!(pending(&store).await.is_empty());
    // Once released, the lease fences its last holder out too.
    store.release_lease(&b).await.unwrap();
    assert!(matches!(
        store
            .write_status(&k, 1, status(Phase::Active, 1), Some(b.fence()))
            .await,
        Err(StoreError::Fenced { .. })
    ));
}

/// A pass's status and its events are one write, fenced as a whole: a replica whose lease
/// was taken over leaves no event behind either.
pub async fn a_fenced_status_write_with_events_writes_both_or_neither(store: Arc<dyn Store>) {
    let k = key("t1", "blog");
    create(&store, &k).await;
    let shard = shard_of(&k, store.shards());
    let a = lease(&store, shard, "a", SHORT).await;
    let first = event(EventReason::PhaseChanged, "→ PROVISIONING", 0);
    store
        .write_status_and_events(
            &k,
            1,
            status(Phase::Provisioning, 0),
            Some(a.fence()),
            std::slice::from_ref(&first),
        )
        .await
        .expect("the holder writes");
    assert_eq!(store.list_events(&k).await.unwrap(), vec![first.clone()]);

    let_short_leases_expire().await;
    let _b = lease(&store, shard, "b", LONG).await;
    let before = stored(&store, &k).await;
    let late = event(EventReason::Converged, "stale replica", 1);
    let refused = store
        .write_status_and_events(&k, 1, status(Phase::Active, 1), Some(a.fence()), &[late])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(stored(&store, &k).await, before, "no status written");
    assert_eq!(
        store.list_events(&k).await.unwrap(),
        vec![first],
        "and no event appended"
    );
}

pub async fn heartbeats_list_live_replicas_until_they_expire_or_leave(store: Arc<dyn Store>) {
    assert!(store.replicas().await.unwrap().is_empty());
    store.heartbeat("r2", LONG).await.unwrap();
    store.heartbeat("r1", LONG).await.unwrap();
    store.heartbeat("r3", SHORT).await.unwrap();
    assert_eq!(store.replicas().await.unwrap(), ["r1", "r2", "r3"]);
    let_short_leases_expire().await;
    assert_eq!(store.replicas().await.unwrap(), ["r1", "r2"], "r3 expired");
    store.leave("r2").await.unwrap();
    store.leave("never-joined").await.unwrap();
    assert_eq!(store.replicas().await.unwrap(), ["r1"]);
    // A heartbeat of a replica that left brings it back.
    store.heartbeat("r2", LONG).await.unwrap();
    store.heartbeat("r2", LONG).await.unwrap();
    assert_eq!(store.replicas().await.unwrap(), ["r1", "r2"]);
}

pub async fn concurrent_acquires_of_one_shard_admit_one(store: Arc<dyn Store>) {
    let racers: Vec<_> = (0..10)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.acquire_lease(11, &format!("r{n}"), LONG).await })
        })
        .collect();
    let mut winners = vec![];
    for racer in racers {
        if let Some(lease) = racer.await.unwrap().expect("acquire_lease") {
            winners.push(lease);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(stored_lease(&store, 11).await, winners.pop());
}

pub async fn concurrent_status_and_spec_writes_lose_nothing(store: Arc<dyn Store>) {
    const WRITERS: usize = 15;
    let k = key("t1", "blog");
    create(&store, &k).await;
    let mut tasks = vec![];
    for n in 0..WRITERS {
        let (s, k2) = (store.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let append = move |i: &mut Instance| {
                i.spec.organization_name.push_str(&format!(";{n}"));
                Ok(Change::Changed)
            };
            s.update(&k2, None, &append).await.map(drop)
        }));
        let (s, k2) = (store.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let phase = if n % 2 == 0 {
                Phase::Provisioning
            } else {
                Phase::Active
            };
            s.write_status(&k2, 1, status(phase, 0), None).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every write succeeds");
    }
    let after = stored(&store, &k).await;
    let parts: BTreeSet<&str> = after.spec.organization_name.split(';').skip(1).collect();
    assert_eq!(
        parts.len(),
        WRITERS,
        "no spec change lost to a status write"
    );
    assert_eq!(after.metadata.generation, 1 + WRITERS as u64);
    assert_eq!(after.status.observed_generation, 0);
    assert!(pending(&store).await.contains_key(&k));
}

/// A backup created while a status write decides the instance converged must not be
/// dropped from the pending index (the status write re-reads when the backup lands first).
pub async fn a_backup_racing_a_converging_status_stays_pending(store: Arc<dyn Store>) {
    for round in 0..8 {
        let k = key("t1", &format!("race{round}"));
        create(&store, &k).await;
        let (s1, k1) = (store.clone(), k.clone());
        let converging = tokio::spawn(async move {
            s1.write_status(&k1, 1, status(Phase::Active, 1), None)
                .await
        });
        let (s2, k2) = (store.clone(), k.clone());
        let backing_up =
            tokio::spawn(async move { s2.create_backup(backup(&k2, round)).await.map(drop) });
        converging.await.unwrap().unwrap();
        backing_up.await.unwrap().unwrap();
        assert!(
            pending(&store).await.contains_key(&k),
            "round {round}: a backup in flight keeps the instance pending"
        );
    }
}
