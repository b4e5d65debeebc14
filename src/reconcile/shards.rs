//! Which instances this replica may reconcile: shard leases with fencing.
//!
//! Instances hash into `store.shards()` shards (`store::shard_of`). With one replica (the
//! embedded store) every shard is ours and nothing is leased. With several replicas on a
//! shared store, each holds leases on a fair share of the shards: it renews them before
//! they expire, takes over expired ones, gives extra ones back when replicas join, and
//! releases all of them on shutdown.
//!
//! Invariants:
//! * a replica reconciles an instance only while it holds the lease of its shard with at
//!   least `margin` left (so a pass that starts cannot outlive the lease by much); a pass
//!   holds a [`Claim`] on its shard from start to end;
//! * every status write of a pass carries the fencing token (`Fence`) of the lease the pass
//!   started under; a replica that was paused past its lease, and whose shard someone else
//!   took over, cannot write;
//! * a lease is given back (rebalancing, shutdown) only after the passes in flight on its
//!   shard have finished: the shard is *drained* first (no new pass starts; the lease is
//!   still renewed), so its next holder never works on an instance at the same time;
//! * lease expiry uses wall-clock time; replicas' clocks must agree to well within the
//!   margin (NTP does this on AWS).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::model::{InstanceKey, now};
use crate::store::{Fence, Lease, Store, shard_of};

#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// This replica's name in leases and heartbeats; unique per process.
    pub replica_id: String,
    /// How long a lease lasts without renewal. A dead replica's shards are taken over
    /// within about this long (plus one tick).
    pub lease_ttl: Duration,
    /// How often the pending index is polled for work written through other replicas.
    pub pending_poll: Duration,
}

impl ShardSettings {
    pub fn new(replica_id: impl Into<String>) -> Self {
        Self {
            replica_id: replica_id.into(),
            lease_ttl: Duration::from_secs(15),
            pending_poll: Duration::from_secs(1),
        }
    }

    /// Renew or acquire this often.
    fn tick(&self) -> Duration {
        (self.lease_ttl / 5).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// A lease with less than this left is not used to start work.
    fn margin(&self) -> Duration {
        self.lease_ttl / 5
    }

    /// A replica that missed two heartbeats (one per tick) counts as gone. That is shorter
    /// than the least a renewed lease has left (two thirds of the TTL, less a tick), so the
    /// others raise their fair share before a dead replica's leases run out and take them
    /// the moment they do. Counting a slow replica as gone for a moment is harmless: its
    /// leases are still live, so nothing is taken from it.
    fn heartbeat_ttl(&self) -> Duration {
        self.tick() * 2
    }
}

/// Most acquisition attempts in one round: a replica joining an empty fleet takes the
/// shards over a few rounds instead of one long round (renewals run on their own loop,
/// but a long round delays heartbeats and hand-overs).
const MAX_ACQUIRE_PER_ROUND: usize = 24;

pub struct Shards {
    store: Arc<dyn Store>,
    count: u32,
    /// `None`: a single replica owns every shard and nothing is leased.
    leasing: Option<Leasing>,
}

struct Leasing {
    settings: ShardSettings,
    /// One lock for everything below: a claim, a drain and a release must see the same
    /// state. Held only briefly, never across an `await`.
    state: Mutex<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    held: BTreeMap<u32, Lease>,
    /// Held shards being given back: no new pass starts on them, and their lease is
    /// released once no pass is in flight on them.
    draining: BTreeSet<u32>,
    /// Passes in flight per shard (see [`Claim`]); absent means none.
    in_flight: HashMap<u32, usize>,
}

/// A pass's hold on its instance's shard: taken when the pass starts, dropped when it
/// ends. It carries the fence of the lease the pass started under, and keeps the lease
/// from being given back while the pass runs.
pub struct Claim {
    shards: Arc<Shards>,
    shard: u32,
    fence: Option<Fence>,
}

impl Claim {
    /// What the pass's status writes present; `None` when not leasing.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(l) = &self.shards.leasing {
            let mut state = l.lock();
            if let Some(n) = state.in_flight.get_mut(&self.shard) {
                *n -= 1;
                if *n == 0 {
                    state.in_flight.remove(&self.shard);
                }
            }
        }
    }
}

/// What a balancing round did.
struct Round {
    /// Shards this replica newly works on.
    gained: Vec<u32>,
    /// When still short of its share: the earliest expiry of another replica's lease.
    next_expiry: Option<crate::model::Timestamp>,
}

/// Why a pass may not start on an instance now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNow {
    /// Another replica's shard (or nobody's yet): its holder picks the instance up.
    NotHeld,
    /// Being handed over; the next holder queues the shard's instances when it gains it.
    Draining,
    /// Held, but with less than the margin left until a renewal lands: look again soon.
    Expiring,
}

/// What one round does to move this replica towards its fair share (pure; see
/// `share_moves`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Moves {
    /// Shards to start draining (this replica has too many).
    drain: usize,
    /// Draining shards to keep after all (it has too few again).
    undrain: usize,
    /// Free shards to try to take.
    acquire: usize,
}

/// `active` shards in use and `draining` ones on their way out, against a `fair` share.
fn share_moves(active: usize, draining: usize, fair: usize) -> Moves {
    if active > fair {
        return Moves {
            drain: active - fair,
            ..Moves::default()
        };
    }
    let missing = fair - active;
    let undrain = missing.min(draining);
    Moves {
        undrain,
        acquire: missing - undrain,
        ..Moves::default()
    }
}

impl Shards {
    /// Every shard, no leases: one replica on a store no one else uses.
    pub fn all(store: Arc<dyn Store>) -> Arc<Self> {
        let count = store.shards();
        Arc::new(Self {
            store,
            count,
            leasing: None,
        })
    }

    /// A fair share of the shards, by lease, among the replicas sharing `store`.
    pub fn leased(store: Arc<dyn Store>, settings: ShardSettings) -> Arc<Self> {
        let count = store.shards();
        Arc::new(Self {
            store,
            count,
            leasing: Some(Leasing {
                settings,
                state: Mutex::new(LeaseState::default()),
            }),
        })
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_leasing(&self) -> bool {
        self.leasing.is_some()
    }

    pub fn replica_id(&self) -> Option<&str> {
        self.leasing
            .as_ref()
            .map(|l| l.settings.replica_id.as_str())
    }

    pub fn pending_poll(&self) -> Option<Duration> {
        self.leasing.as_ref().map(|l| l.settings.pending_poll)
    }

    pub fn shard(&self, key: &InstanceKey) -> u32 {
        shard_of(key, self.count)
    }

    /// Whether this replica may start work on `key` now.
    pub fn owns(&self, key: &InstanceKey) -> bool {
        self.owns_shard(self.shard(key))
    }

    pub fn owns_shard(&self, shard: u32) -> bool {
        match &self.leasing {
            None => true,
            Some(l) => l.usable(&l.lock(), shard).is_ok(),
        }
    }

    /// Starts a pass on `key` if this replica may work on it now (see [`Claim`]).
    pub fn claim(self: &Arc<Self>, key: &InstanceKey) -> Result<Claim, NotNow> {
        let shard = self.shard(key);
        let fence = match &self.leasing {
            None => None,
            Some(l) => {
                let mut state = l.lock();
                let fence = l.usable(&state, shard)?.fence();
                *state.in_flight.entry(shard).or_default() += 1;
                Some(fence)
            }
        };
        Ok(Claim {
            shards: self.clone(),
            shard,
            fence,
        })
    }

    /// When to look again at an instance whose pass could not start for `NotNow::Expiring`:
    /// one lease round, after which the renewal has landed (or the shard has moved).
    pub fn recheck_after(&self) -> Duration {
        self.leasing
            .as_ref()
            .map_or(Duration::ZERO, |l| l.settings.tick())
    }

    /// Shards this replica reconciles (held and not being given back), in order.
    pub fn held(&self) -> Vec<u32> {
        match &self.leasing {
            None => (0..self.count).collect(),
            Some(l) => {
                let state = l.lock();
                state
                    .held
                    .keys()
                    .copied()
                    .filter(|s| !state.draining.contains(s))
                    .collect()
            }
        }
    }

    /// Keeps the leases until `shutdown`, then releases them. `gained` is told about
    /// shards this replica newly works on, so their instances are queued.
    ///
    /// Renewing runs on its own loop: a slow heartbeat, listing or acquisition must never
    /// make a renewal late (a late renewal is a lost lease).
    pub async fn run(
        self: Arc<Self>,
        gained: impl Fn(Vec<u32>) + Send + 'static,
        shutdown: CancellationToken,
    ) {
        let Some(l) = &self.leasing else { return };
        let tick = l.settings.tick();
        let renewing = async {
            loop {
                self.renew_due(l).await;
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let balancing = async {
            loop {
                let mut pause = tick;
                match self.rebalance(l).await {
                    Ok(round) => {
                        if !round.gained.is_empty() {
                            gained(round.gained);
                        }
                        // Wanting more and a lease runs out before the next tick: try
                        // again right then (a dead replica's shards are taken over about
                        // one lease TTL after its last renewal, not a tick later).
                        if let Some(at) = round.next_expiry {
                            let until = (at - now()).to_std().unwrap_or_default();
                            pause = pause.min(until + Duration::from_millis(20));
                        }
                    }
                    Err(e) => warn!(error = %e, "lease round failed; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        tokio::join!(renewing, balancing);
        self.release_all(l).await;
    }

    /// One round: heartbeat, release drained shards, then move towards a fair share.
    async fn rebalance(&self, l: &Leasing) -> Result<Round, crate::store::StoreError> {
        let s = &l.settings;
        self.store
            .heartbeat(&s.replica_id, s.heartbeat_ttl())
            .await?;
        self.release_drained(l).await;
        let replicas = self.store.replicas().await?.len().max(1) as u32;
        let fair = self.count.div_ceil(replicas) as usize;
        let moves = {
            let state = l.lock();
            let draining = state.draining.len();
            share_moves(state.held.len() - draining, draining, fair)
        };
        l.drain(moves.drain);
        let mut round = Round {
            gained: l.undrain(moves.undrain),
            next_expiry: None,
        };
        if moves.acquire > 0 {
            let acquired = self.acquire_free(l, moves.acquire).await?;
            round.gained.extend(acquired.gained);
            round.next_expiry = acquired.next_expiry;
        }
        Ok(round)
    }

    /// Renews every lease with less than two thirds of its TTL left, concurrently: one slow
    /// store call must not make the others late.
    async fn renew_due(&self, l: &Leasing) {
        let s = &l.settings;
        let due = chrono::Duration::from_std(s.lease_ttl * 2 / 3).unwrap_or_default();
        let at = now();
        let leases: Vec<Lease> = l
            .lock()
            .held
            .values()
            .filter(|lease| lease.expires_at - at <= due)
            .cloned()
            .collect();
        let renewals = leases.into_iter().map(|lease| async move {
            let result = self.store.renew_lease(&lease, s.lease_ttl).await;
            (lease, result)
        });
        for (lease, result) in futures::future::join_all(renewals).await {
            match result {
                Ok(Some(renewed)) => {
                    let mut state = l.lock();
                    // Unless it was released meanwhile.
                    if let Some(held) = state.held.get_mut(&renewed.shard) {
                        *held = renewed;
                    }
                }
                Ok(None) => {
                    warn!(shard = lease.shard, "lease lost to another replica");
                    let mut state = l.lock();
                    state.held.remove(&lease.shard);
                    state.draining.remove(&lease.shard);
                }
                // Keep it until it expires locally; the next round tries again.
                Err(e) => warn!(shard = lease.shard, error = %e, "lease renewal failed"),
            }
        }
    }

    /// Releases the draining shards no pass works on any more.
    async fn release_drained(&self, l: &Leasing) {
        let idle: Vec<Lease> = {
            let mut state = l.lock();
            let idle: Vec<u32> = state
                .draining
                .iter()
                .copied()
                .filter(|s| !state.in_flight.contains_key(s))
                .collect();
            idle.iter()
                .filter_map(|s| {
                    state.draining.remove(s);
                    state.held.remove(s)
                })
                .collect()
        };
        for lease in idle {
            match self.store.release_lease(&lease).await {
                Ok(()) => info!(shard = lease.shard, "shard released for rebalancing"),
                Err(e) => warn!(shard = lease.shard, error = %e, "release failed; it will expire"),
            }
        }
    }

    /// Tries to take up to `wanted` free shards, a batch at a time, concurrently. Replicas
    /// short of shards at the same moment race for the same free ones; a lost race only
    /// moves on to the next free shard, so the round ends with the share taken (or no free
    /// shard left), not a tick later. At most `MAX_ACQUIRE_PER_ROUND` attempts per round,
    /// so a round stays short.
    async fn acquire_free(
        &self,
        l: &Leasing,
        wanted: usize,
    ) -> Result<Round, crate::store::StoreError> {
        let s = &l.settings;
        let at = now();
        let others: Vec<Lease> = self
            .store
            .leases()
            .await?
            .into_iter()
            .filter(|lease| !lease.holder.is_empty() && lease.expires_at > at)
            .filter(|lease| lease.holder != s.replica_id)
            .collect();
        let taken: HashSet<u32> = others.iter().map(|lease| lease.shard).collect();
        // Start at a replica-specific offset so replicas do not all race for shard 0.
        let offset = fnv(&s.replica_id);
        let mut candidates: std::collections::VecDeque<u32> = {
            let state = l.lock();
            (0..self.count)
                .map(|i| offset.wrapping_add(i) % self.count)
                .filter(|shard| !taken.contains(shard) && !state.held.contains_key(shard))
                .collect()
        };
        let mut gained = vec![];
        let mut attempts = 0;
        while gained.len() < wanted && attempts < MAX_ACQUIRE_PER_ROUND && !candidates.is_empty() {
            let batch = (wanted - gained.len()).min(MAX_ACQUIRE_PER_ROUND - attempts);
            let shards: Vec<u32> = (0..batch).filter_map(|_| candidates.pop_front()).collect();
            attempts += shards.len();
            let tries = shards.into_iter().map(|shard| async move {
                let result = self
                    .store
                    .acquire_lease(shard, &s.replica_id, s.lease_ttl)
                    .await;
                (shard, result)
            });
            for (shard, result) in futures::future::join_all(tries).await {
                match result {
                    Ok(Some(lease)) => {
                        info!(shard, token = lease.token, "shard acquired");
                        l.lock().held.insert(shard, lease);
                        gained.push(shard);
                    }
                    // Another replica was quicker.
                    Ok(None) => {}
                    Err(e) => warn!(shard, error = %e, "acquiring a shard failed"),
                }
            }
        }
        let next_expiry = (gained.len() < wanted)
            .then(|| others.iter().map(|lease| lease.expires_at).min())
            .flatten();
        Ok(Round {
            gained,
            next_expiry,
        })
    }

    /// Shutdown: drains every shard (passes in flight finish under their lease, which is
    /// still renewed, for at most one lease TTL), then releases them and leaves.
    async fn release_all(&self, l: &Leasing) {
        let s = &l.settings;
        {
            let mut state = l.lock();
            let all: Vec<u32> = state.held.keys().copied().collect();
            state.draining.extend(all);
        }
        let deadline = tokio::time::Instant::now() + s.lease_ttl;
        while !l.lock().in_flight.is_empty() && tokio::time::Instant::now() < deadline {
            self.renew_due(l).await;
            tokio::time::sleep(s.tick().min(Duration::from_millis(100))).await;
        }
        let leases: Vec<Lease> = {
            let mut state = l.lock();
            state.draining.clear();
            std::mem::take(&mut state.held).into_values().collect()
        };
        for lease in &leases {
            if let Err(e) = self.store.release_lease(lease).await {
                warn!(shard = lease.shard, error = %e, "release at shutdown failed; it will expire");
            }
        }
        if let Err(e) = self.store.leave(&s.replica_id).await {
            warn!(error = %e, "leaving the replica set failed; the heartbeat will expire");
        }
        info!(released = leases.len(), "shard leases released");
    }
}

impl Leasing {
    /// A poisoned lock only means a thread panicked between two plain updates; the state
    /// is still consistent enough to keep going (and to release leases on shutdown).
    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease of `shard` if a pass may start on it: held, not draining, with at least
    /// the margin left.
    fn usable<'a>(&self, state: &'a LeaseState, shard: u32) -> Result<&'a Lease, NotNow> {
        let margin = chrono::Duration::from_std(self.settings.margin()).unwrap_or_default();
        let lease = state.held.get(&shard).ok_or(NotNow::NotHeld)?;
        if state.draining.contains(&shard) {
            return Err(NotNow::Draining);
        }
        if lease.expires_at - margin <= now() {
            return Err(NotNow::Expiring);
        }
        Ok(lease)
    }

    /// Stops starting passes on `n` more shards (the highest); `release_drained` gives
    /// them back once their passes are done.
    fn drain(&self, n: usize) {
        let mut state = self.lock();
        let give_back: Vec<u32> = state
            .held
            .keys()
            .rev()
            .copied()
            .filter(|s| !state.draining.contains(s))
            .take(n)
            .collect();
        for shard in give_back {
            info!(shard, "draining shard for rebalancing");
            state.draining.insert(shard);
        }
    }

    /// Keeps `n` draining shards after all. They count as newly gained: passes were not
    /// started on them while they drained.
    fn undrain(&self, n: usize) -> Vec<u32> {
        let mut state = self.lock();
        let kept: Vec<u32> = state.draining.iter().copied().take(n).collect();
        for shard in &kept {
            state.draining.remove(shard);
        }
        kept
    }
}

fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::store::EmbeddedStore;

    #[test]
    fn moves_head_for_the_fair_share() {
        let m = |drain, undrain, acquire| Moves {
            drain,
            undrain,
            acquire,
        };
        // (active, draining, fair) → moves
        let cases = [
            ((64, 0, 32), m(32, 0, 0)),
            ((32, 32, 32), m(0, 0, 0)),
            ((30, 0, 32), m(0, 0, 2)),
            ((30, 1, 32), m(0, 1, 1)),
            ((20, 40, 32), m(0, 12, 0)),
            ((0, 0, 64), m(0, 0, 64)),
        ];
        for ((active, draining, fair), want) in cases {
            assert_eq!(
                share_moves(active, draining, fair),
                want,
                "{active} {draining} {fair}"
            );
        }
    }

    fn settings(id: &str) -> ShardSettings {
        ShardSettings {
            lease_ttl: Duration::from_secs(1),
            ..ShardSettings::new(id)
        }
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn key_in_shard(shard: u32, count: u32) -> InstanceKey {
        (0..)
            .map(|n| InstanceKey::from_strs("t", &format!("i{n}")))
            .find(|k| shard_of(k, count) == shard)
            .expect("some key hashes into every shard")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replicas_split_the_shards_and_a_running_pass_delays_a_hand_over() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let (a, b) = (
            Shards::leased(store.clone(), settings("a")),
            Shards::leased(store.clone(), settings("b")),
        );
        let count = a.count() as usize;
        let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
        let run_a = tokio::spawn(a.clone().run(|_| {}, stop_a.clone()));
        until("a holds every shard", || a.held().len() == count).await;

        // A pass on the highest shard, the first one `a` gives back when `b` joins.
        let busy = key_in_shard(count as u32 - 1, count as u32);
        let claim = a
            .claim(&busy)
            .unwrap_or_else(|e| panic!("a owns it: {e:?}"));
        assert!(claim.fence().is_some());
        let run_b = tokio::spawn(b.clone().run(|_| {}, stop_b.clone()));
        until("b takes its half but the busy shard", || {
            b.held().len() == count / 2 - 1 && a.held().len() == count / 2
        })
        .await;
        assert_eq!(
            a.claim(&busy).err(),
            Some(NotNow::Draining),
            "no new pass starts on a draining shard"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let busy_lease = store
            .leases()
            .await
            .unwrap()
            .into_iter()
            .find(|l| l.shard == count as u32 - 1);
        assert_eq!(
            busy_lease.unwrap().holder,
            "a",
            "still a's while the pass runs"
        );
        drop(claim);
        until("b gets the shard once the pass ended", || {
            b.held().len() == count / 2
        })
        .await;
        assert!(b.owns(&busy));
        assert!(
            b.claim(&busy).ok().unwrap().fence().unwrap().token > 1,
            "a higher token"
        );

        // A replica that stops gives everything back at once.
        stop_a.cancel();
        run_a.await.unwrap();
        until("b holds every shard", || b.held().len() == count).await;
        stop_b.cancel();
        run_b.await.unwrap();
        let leases = store.leases().await.unwrap();
        assert!(
            leases.iter().all(|l| l.holder.is_empty()),
            "released on shutdown"
        );
        assert!(store.replicas().await.unwrap().is_empty(), "and left");
    }
}
