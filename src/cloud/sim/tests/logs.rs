//! CloudWatch Logs events (FilterLogEvents) derived from task timelines: windows, order,
//! limits, paging, errors, determinism, and lines of tasks that are gone.

use std::collections::{BTreeSet, HashSet};

use super::*;
use crate::cloud::{LogEvent, LogPage, LogQuery};
use crate::model::Timestamp;

/// 10 s of simulated time between lines → 5 ms of wall time.
const LOG_SPEED: f64 = 2_000.0;

fn at(ms: Millis) -> Timestamp {
    Timestamp::from_timestamp_millis(ms).expect("in range")
}

fn query(start: Millis, end: Millis, limit: u32, next_token: Option<String>) -> LogQuery {
    LogQuery {
        start: at(start),
        end: at(end),
        limit,
        next_token,
    }
}

fn ms(e: &LogEvent) -> Millis {
    e.timestamp.timestamp_millis()
}

async fn page(cloud: &SimCloud, k: &InstanceKey, q: &LogQuery) -> LogPage {
    cloud.logs(k, q).await.expect("FilterLogEvents")
}

/// Every event of the window in one page (asserting it fits).
async fn all_events(
    cloud: &SimCloud,
    k: &InstanceKey,
    start: Millis,
    end: Millis,
) -> Vec<LogEvent> {
    let p = page(cloud, k, &query(start, end, MAX_LOG_LIMIT, None)).await;
    assert_eq!(p.next_token, None, "fits in one page");
    p.events
}

/// A log group and a service of `count` tasks that have been running for a while.
async fn logging_site(cloud: &SimCloud, k: &InstanceKey, count: u32) -> Millis {
    let s = Steps::of(k);
    let began = now_ms();
    apply_ok(cloud, k, &s.log()).await;
    apply_ok(cloud, k, &s.svc(count, "wordpress:6.6-php8.3")).await;
    until_running(cloud, k, count).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    began
}

fn streams(events: &[LogEvent]) -> BTreeSet<String> {
    events.iter().map(|e| e.log_stream.clone()).collect()
}

fn assert_ordered(events: &[LogEvent]) {
    for pair in events.windows(2) {
        assert!(
            (pair[0].timestamp, &pair[0].log_stream) <= (pair[1].timestamp, &pair[1].log_stream),
            "out of order: {pair:?}"
        );
    }
}

#[tokio::test]
async fn events_follow_the_tasks_in_order_within_the_window() {
    let cloud = cloud_at(LOG_SPEED);
    let k = key(1);
    let began = logging_site(&cloud, &k, 2).await;
    let end = now_ms();
    let events = all_events(&cloud, &k, 0, end).await;
    assert_ordered(&events);
    assert!(events.iter().all(|e| (began..=end).contains(&ms(e))));

    let tasks: BTreeSet<String> = cloud
        .tasks_of(&k)
        .await
        .expect("tasks")
        .into_iter()
        .map(|t| format!("wordpress/wordpress/{}", t.id))
        .collect();
    assert_eq!(streams(&events), tasks, "one stream per task");
    for stream in &tasks {
        let mine: Vec<&LogEvent> = events.iter().filter(|e| &e.log_stream == stream).collect();
        assert!(
            mine[0].message.contains("WordPress 6.6 ready"),
            "{}",
            mine[0].message
        );
        let access = mine
            .iter()
            .filter(|e| e.message.contains("HTTP/1.1\""))
            .count();
        assert!(access >= 10, "a line every 5 ms for 150 ms: {access}");
        assert_eq!(
            mine.len(),
            1 + access
                + mine
                    .iter()
                    .filter(|e| e.message.contains("PHP Warning"))
                    .count()
        );
    }

    // A narrower window is exactly the matching part of the whole.
    let (from, to) = (ms(&events[events.len() / 4]), ms(&events[events.len() / 2]));
    let narrow = all_events(&cloud, &k, from, to).await;
    let expected: Vec<LogEvent> = events
        .iter()
        .filter(|e| (from..=to).contains(&ms(e)))
        .cloned()
        .collect();
    assert_eq!(narrow, expected);
    assert!(!narrow.is_empty());

    // At most `limit`, the first ones.
    let first = page(&cloud, &k, &query(0, end, 3, None)).await;
    assert_eq!(first.events, events[..3]);
    assert!(first.next_token.is_some());

    // A window before the group existed, or reversed, is empty.
    assert!(all_events(&cloud, &k, 0, began - 1).await.is_empty());
    assert!(all_events(&cloud, &k, end, began).await.is_empty());
}

#[tokio::test]
async fn paging_returns_every_event_exactly_once_and_is_deterministic() {
    let cloud = cloud_at(LOG_SPEED);
    let k = key(1);
    logging_site(&cloud, &k, 3).await;
    let end = now_ms();
    let whole = all_events(&cloud, &k, 0, end).await;
    assert!(whole.len() > 40, "{}", whole.len());

    let mut paged = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let q = query(0, end, 7, token.clone());
        let p = page(&cloud, &k, &q).await;
        assert_eq!(
            page(&cloud, &k, &q).await,
            p,
            "the same query, the same page"
        );
        assert!(p.events.len() <= 7);
        paged.extend(p.events);
        pages += 1;
        match p.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(paged, whole);
    assert_eq!(pages, whole.len().div_ceil(7));
    let distinct: HashSet<(Timestamp, &str, &str)> = paged
        .iter()
        .map(|e| (e.timestamp, e.log_stream.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(distinct.len(), paged.len(), "no event twice");
    assert_eq!(
        stat(&cloud, "logs:FilterLogEvents").calls,
        1 + 2 * pages as u64,
        "every page is one call"
    );
}

#[tokio::test]
async fn bad_queries_are_refused() {
    let cloud = cloud_at(LOG_SPEED);
    let k = key(1);
    let code = |r: CloudResult<LogPage>| match r {
        Err(CloudError::Permanent { code, .. }) => code,
        other => panic!("expected a permanent error: {other:?}"),
    };
    let q = query(0, now_ms(), 10, None);
    assert_eq!(code(cloud.logs(&k, &q).await), "ResourceNotFoundException");

    logging_site(&cloud, &k, 1).await;
    for bad in ["", "not a token", "djE6MTIz"] {
        let q = query(0, now_ms(), 10, Some(bad.into()));
        assert_eq!(
            code(cloud.logs(&k, &q).await),
            "InvalidParameterException",
            "{bad:?}"
        );
    }
    assert_eq!(
        code(cloud.logs(&k, &query(0, now_ms(), 0, None)).await),
        "InvalidParameterException"
    );
    let st = stat(&cloud, "logs:FilterLogEvents");
    assert_eq!(
        (st.calls, st.errors),
        (5, 5),
        "refused calls are still calls"
    );

    cloud.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let r = cloud.logs(&k, &query(0, now_ms(), 10, None)).await;
    assert!(
        matches!(
            r,
            Err(CloudError::Throttled {
                service: "logs",
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn stopped_tasks_keep_their_lines_until_the_group_goes() {
    let cloud = cloud_at(LOG_SPEED);
    let k = key(1);
    let s = Steps::of(&k);
    logging_site(&cloud, &k, 1).await;
    let old: BTreeSet<String> = streams(&all_events(&cloud, &k, 0, now_ms()).await);

    apply_ok(&cloud, &k, &s.update(1, "wordpress:6.7")).await;
    until(&cloud, &k, "rollout", |o| {
        o.service
            .as_ref()
            .filter(|x| x.rollout == Rollout::Completed)
            .map(drop)
    })
    .await;
    // Wait until the old task is gone, then prune it out of the service record.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cloud.tasks_of(&k).await.expect("tasks").len() != 1 {
        assert!(Instant::now() < deadline, "old task never went away");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    cloud
        .set_service_desired_count(&k, 1)
        .expect("touch the service");
    {
        let inv = cloud.lock_inventory();
        let svc = &inv.services[&names(&k).service];
        assert_eq!(svc.tasks.len(), 1, "the old task was pruned");
        assert_eq!(inv.task_history[&names(&k).service].tasks.len(), 1);
    }

    let events = all_events(&cloud, &k, 0, now_ms()).await;
    let now_streams = streams(&events);
    assert!(old.is_subset(&now_streams), "the old task's lines remain");
    assert_eq!(now_streams.len(), 2);
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("WordPress 6.7 ready"))
    );

    // Deleting the group deletes its events; a new group starts empty.
    apply_ok(
        &cloud,
        &k,
        &Step::DeleteLogGroup {
            name: names(&k).log_group,
        },
    )
    .await;
    assert!(cloud.logs(&k, &query(0, now_ms(), 10, None)).await.is_err());
    let recreated = now_ms();
    apply_ok(&cloud, &k, &s.log()).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let fresh = all_events(&cloud, &k, 0, now_ms()).await;
    assert!(
        !fresh.is_empty(),
        "the running task writes to the new group"
    );
    assert!(fresh.iter().all(|e| ms(e) >= recreated));
    assert!(streams(&fresh).is_disjoint(&old));
    assert!(
        !cloud
            .lock_inventory()
            .task_history
            .contains_key(&names(&k).service)
    );
}

#[tokio::test]
async fn a_service_without_tasks_writes_nothing() {
    let cloud = cloud_at(LOG_SPEED);
    let k = key(1);
    let s = Steps::of(&k);
    apply_ok(&cloud, &k, &s.log()).await;
    apply_ok(&cloud, &k, &s.svc(0, "wp:1")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let p = page(&cloud, &k, &query(0, now_ms(), 10, None)).await;
    assert_eq!(
        p,
        LogPage {
            events: Vec::new(),
            next_token: None
        }
    );
}

#[tokio::test]
async fn task_history_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key(1);
    let (before, end) = {
        let cloud = SimCloud::open(
            dir.path(),
            SimConfig {
                speed: LOG_SPEED,
                ..fast()
            },
        )
        .expect("open");
        logging_site(&cloud, &k, 1).await;
        cloud.kill_tasks(&k, 1).expect("kill");
        until_running(&cloud, &k, 1).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            cloud
                .kill_tasks(&k, 0)
                .expect("prune the killed task once it is gone");
            if cloud
                .lock_inventory()
                .task_history
                .contains_key(&names(&k).service)
            {
                break;
            }
            assert!(Instant::now() < deadline, "the killed task never went away");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let end = now_ms();
        (all_events(&cloud, &k, 0, end).await, end)
    };
    assert_eq!(streams(&before).len(), 2);
    let cloud = SimCloud::open(
        dir.path(),
        SimConfig {
            speed: LOG_SPEED,
            ..fast()
        },
    )
    .expect("reopen");
    assert_eq!(all_events(&cloud, &k, 0, end).await, before);
}
