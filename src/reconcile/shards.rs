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
}

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
            Some(l) => l.usable(&l.lock(), shard).is_some(),
        }
    }

    /// Starts a pass on `key` if this replica may work on it now (see [`Claim`]).
    pub fn claim(self: &Arc<Self>, key: &InstanceKey) -> Option<Claim> {
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
        Some(Claim {
            shards: self.clone(),
            shard,
            fence,
        })
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
    pub async fn run(
        self: Arc<Self>,
        gained: impl Fn(Vec<u32>) + Send + 'static,
        shutdown: CancellationToken,
    ) {
        let Some(l) = &self.leasing else { return };
        let tick = l.settings.tick();
        loop {
            match self.rebalance(l).await {
                Ok(new) if !new.is_empty() => gained(new),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "lease round failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        self.release_all(l).await;
    }

    /// One round: heartbeat, renew what is due, release drained shards, then move towards
    /// a fair share. Returns the shards this replica newly works on.
    async fn rebalance(&self, l: &Leasing) -> Result<Vec<u32>, crate::store::StoreError> {
        let s = &l.settings;
        self.store.heartbeat(&s.replica_id, s.lease_ttl).await?;
        self.renew_due(l).await;
        self.release_drained(l).await;
        let replicas = self.store.replicas().await?.len().max(1) as u32;
        let fair = self.count.div_ceil(replicas) as usize;
        let moves = {
            let state = l.lock();
            let draining = state.draining.len();
            share_moves(state.held.len() - draining, draining, fair)
        };
        l.drain(moves.drain);
        let mut gained = l.undrain(moves.undrain);
        if moves.acquire > 0 {
            gained.extend(self.acquire_free(l, moves.acquire).await?);
        }
        Ok(gained)
    }

    async fn renew_due(&self, l: &Leasing) {
        let s = &l.settings;
        let due = chrono::Duration::from_std(s.lease_ttl * 2 / 3).unwrap_or_default();
        let leases: Vec<Lease> = l.lock().held.values().cloned().collect();
        for lease in leases {
            if lease.expires_at - now() > due {
                continue;
            }
            match self.store.renew_lease(&lease, s.lease_ttl).await {
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

    async fn acquire_free(
        &self,
        l: &Leasing,
        wanted: usize,
    ) -> Result<Vec<u32>, crate::store::StoreError> {
        let s = &l.settings;
        let at = now();
        let taken: HashSet<u32> = self
            .store
            .leases()
            .await?
            .into_iter()
            .filter(|lease| !lease.holder.is_empty() && lease.expires_at > at)
            .map(|lease| lease.shard)
            .collect();
        // Start at a replica-specific offset so replicas do not all race for shard 0.
        let offset = fnv(&s.replica_id);
        let mut gained = vec![];
        for i in 0..self.count {
            if gained.len() == wanted {
                break;
            }
            let shard = (offset.wrapping_add(i)) % self.count;
            if taken.contains(&shard) || l.lock().held.contains_key(&shard) {
                continue;
            }
            if let Some(lease) = self
                .store
                .acquire_lease(shard, &s.replica_id, s.lease_ttl)
                .await?
            {
                info!(shard, token = lease.token, "shard acquired");
                l.lock().held.insert(shard, lease);
                gained.push(shard);
            }
        }
        Ok(gained)
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
    fn usable<'a>(&self, state: &'a LeaseState, shard: u32) -> Option<&'a Lease> {
        let margin = chrono::Duration::from_std(self.settings.margin()).unwrap_or_default();
        state
            .held
            .get(&shard)
            .filter(|lease| lease.expires_at - margin > now())
            .filter(|_| !state.draining.contains(&shard))
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
        let claim = a.claim(&busy).expect("a owns it");
        assert!(claim.fence().is_some());
        let run_b = tokio::spawn(b.clone().run(|_| {}, stop_b.clone()));
        until("b takes its half but the busy shard", || {
            b.held().len() == count / 2 - 1 && a.held().len() == count / 2
        })
        .await;
        assert!(!a.owns(&busy), "no new pass starts on a draining shard");
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
            b.claim(&busy).unwrap().fence().unwrap().token > 1,
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
