//! Reliability 4 (issue 7): conflicting writers. Many concurrent PUT / scale / suspend /
//! resume requests, with and without `If-Match`, against one hot instance and across
//! several, while the reconciler writes status. Afterwards:
//! * every answer is 2xx, or 412 / 422 with the typed error (no 5xx, no other refusal);
//! * the accepted writes that changed the spec have generations 2, 3, … without gap or
//!   repeat (generation strictly increases; a refused write bumped nothing), and replaying
//!   them in that order reproduces the spec each one returned and the final spec (zero lost
//!   updates: the final spec is a serial order of the accepted writes);
//! * an accepted write with `If-Match` named the version it replaced.
//!
//! `WPFLEET_SOAK=1` sends ten times as many requests.

mod common;

use std::collections::BTreeMap;

use common::harness::{figure, seed, sized};
use common::{Client, Reply, TestServer, instance_path};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TEST: &str = "writers";

/// The part of the spec the writers change.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    org: String,
    active: bool,
    count: u64,
}

impl Model {
    fn of(spec: &Value) -> Self {
        Self {
            org: spec["organizationName"].as_str().unwrap().to_owned(),
            active: spec["state"] == "ACTIVE",
            count: spec["configuration"]["desiredCount"].as_u64().unwrap(),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(Model),
    Scale(u64),
    Suspend,
    Resume,
}

impl Op {
    fn random(rng: &mut impl Rng, n: usize) -> Self {
        match rng.random_range(0..10) {
            0..=2 => Op::Put(Model {
                org: format!("Org {n}"),
                active: rng.random(),
                count: rng.random_range(2..=4),
            }),
            // 5 and 6 exceed the STANDARD tier: 422 SCALE_LIMIT_EXCEEDED.
            3..=5 => Op::Scale(rng.random_range(2..=6)),
            6 | 7 => Op::Suspend,
            _ => Op::Resume,
        }
    }

    /// The spec after this write on `m`, or `None` if the write must be refused (422).
    fn apply(&self, m: &Model) -> Option<Model> {
        let mut next = m.clone();
        match self {
            Op::Put(p) => next = p.clone(),
            Op::Scale(n) if (2..=4).contains(n) => next.count = *n,
            Op::Scale(_) => return None,
            Op::Suspend if m.active => next.active = false,
            Op::Resume if !m.active => next.active = true,
            Op::Suspend | Op::Resume => return None,
        }
        Some(next)
    }

    async fn send(&self, c: &Client, path: &str, if_match: Option<&str>) -> Reply {
        let req = match self {
            Op::Put(m) => c.http.put(c.url(path)).json(&put_body(m)),
            Op::Scale(n) => c
                .http
                .post(c.url(&format!("{path}/scale")))
                .json(&json!({ "desiredCount": n })),
            Op::Suspend => c.http.post(c.url(&format!("{path}/suspend"))),
            Op::Resume => c.http.post(c.url(&format!("{path}/resume"))),
        };
        let req = match if_match {
            Some(v) => req.header("if-match", v),
            None => req,
        };
        c.send(req).await
    }
}

fn put_body(m: &Model) -> Value {
    json!({
        "organizationName": m.org,
        "contactEmail": "ops@acme.example",
        "tier": "STANDARD",
        "state": if m.active { "ACTIVE" } else { "SUSPENDED" },
        "configuration": { "desiredCount": m.count, "wordpressVersion": "6.5" }
    })
}

/// One request as sent and answered.
#[derive(Debug)]
struct Sent {
    id: String,
    op: Op,
    if_match: Option<String>,
    reply: Reply,
}

async fn one(c: Client, id: String, op: Op, use_if_match: bool) -> Sent {
    let path = instance_path("t1", &id);
    let if_match = if use_if_match {
        c.get(&path).await.etag
    } else {
        None
    };
    let reply = op.send(&c, &path, if_match.as_deref()).await;
    Sent {
        id,
        op,
        if_match,
        reply,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_no_update() {
    let requests = sized(1000, 10_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed(TEST));
    let srv = TestServer::start().await;
    let c = srv.client.clone();
    let ids: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let initial = Model {
        org: "Org initial".into(),
        active: true,
        count: 2,
    };
    let mut created_rv = BTreeMap::new();
    for id in &ids {
        let r = c.put(&instance_path("t1", id), &put_body(&initial)).await;
        assert_eq!(r.status, 201, "{:#}", r.body);
        created_rv.insert(id.clone(), r.etag.unwrap());
    }
    // Half the traffic on one hot instance, the rest spread.
    let plan: Vec<(String, Op, bool)> = (0..requests)
        .map(|n| {
            let id = if rng.random_bool(0.5) {
                ids[0].clone()
            } else {
                ids[rng.random_range(1..ids.len())].clone()
            };
            (id, Op::random(&mut rng, n), rng.random_bool(0.5))
        })
        .collect();
    // At most 1,000 in flight (the soak's 10,000 at once would overflow the listener's
    // accept queue: the kernel resets connections before the server sees them).
    let sent: Vec<Sent> = futures::stream::iter(
        plan.into_iter()
            .map(|(id, op, if_match)| tokio::spawn(one(c.clone(), id, op, if_match))),
    )
    .buffer_unordered(1000)
    .map(Result::unwrap)
    .collect()
    .await;

    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for s in &sent {
        *by_status.entry(s.reply.status).or_default() += 1;
        match s.reply.status {
            200 => {}
            412 => {
                s.reply.expect_error(412, "PRECONDITION_FAILED");
                assert!(s.if_match.is_some(), "412 without If-Match: {s:?}");
            }
            422 => {
                let code = s.reply.body["error"]["code"].as_str().unwrap_or_default();
                assert!(
                    ["INVALID_STATUS_TRANSITION", "SCALE_LIMIT_EXCEEDED"].contains(&code),
                    "{s:?}"
                );
                s.reply.expect_error(422, code);
            }
            other => panic!("unexpected {other}: {s:?}"),
        }
    }
    for id in &ids {
        check_instance(&c, id, &initial, &created_rv[id], &sent).await;
    }
    let accepted = by_status.get(&200).copied().unwrap_or(0);
    assert!(accepted > requests / 10, "too few accepted: {by_status:?}");
    assert!(
        by_status.contains_key(&412),
        "no conflict happened: {by_status:?}"
    );
    figure(TEST, "requests", requests);
    figure(TEST, "answers", format!("{by_status:?}"));
}

/// Replays the accepted writes of `id` in generation order against the model.
async fn check_instance(c: &Client, id: &str, initial: &Model, created_rv: &str, sent: &[Sent]) {
    let mine: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.id == id && s.reply.status == 200)
        .collect();
    let generation = |s: &Sent| s.reply.body["metadata"]["generation"].as_u64().unwrap();
    // Each generation is the state after exactly one changing write; unchanged writes
    // answer the generation they found.
    let mut states: BTreeMap<u64, (Model, String)> = BTreeMap::new();
    states.insert(1, (initial.clone(), created_rv.to_owned()));
    let mut changers: BTreeMap<u64, &Sent> = BTreeMap::new();
    for s in &mine {
        let g = generation(s);
        let after = Model::of(&s.reply.body["spec"]);
        let rv = s.reply.etag.clone().unwrap();
        if let Some((m, v)) = states.get(&g) {
            assert_eq!(
                (m, v),
                (&after, &rv),
                "{id}: two answers for generation {g}"
            );
        }
        states.insert(g, (after, rv));
    }
    for s in &mine {
        let g = generation(s);
        let (before, before_rv) = match states.get(&(g - 1)) {
            Some(b) => b.clone(),
            None => continue,
        };
        let (after, _) = &states[&g];
        if s.op.apply(&before).as_ref() == Some(after) && &before != after {
            changers.entry(g).or_insert(s);
            if let Some(im) = &s.if_match {
                // A changing write with If-Match replaced exactly the version it named
                // (an unchanged one may have matched the version after).
                assert!(
                    im == &before_rv || im == &states[&g].1,
                    "{id}: write at generation {g} sent If-Match {im}, replaced {before_rv}"
                );
            }
        }
    }
    let last = *states.keys().max().unwrap();
    // Generations 2..=last each come from one accepted write that explains them.
    for g in 2..=last {
        let before = states.get(&(g - 1)).map(|s| &s.0);
        let after = states.get(&g).map(|s| &s.0);
        assert!(
            changers.contains_key(&g),
            "{id}: no accepted write explains generation {g} ({before:?} -> {after:?})"
        );
    }
    let now = c.get(&instance_path("t1", id)).await;
    let final_gen = now.body["metadata"]["generation"].as_u64().unwrap();
    assert_eq!(
        final_gen, last,
        "{id}: a refused or lost write bumped the generation"
    );
    assert_eq!(
        Model::of(&now.body["spec"]),
        states[&last].0,
        "{id}: final spec is not the last accepted write"
    );
}
