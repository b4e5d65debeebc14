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
//!   least `margin` left (so a pass that starts cannot outlive the lease by much);
//! * every status write carries the lease's fencing token (`Fence`); a replica that was
//!   paused past its lease, and whose shard someone else took over, cannot write;
//! * lease expiry uses wall-clock time; replicas' clocks must agree to well within the
//!   margin (NTP does this on AWS).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
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
    held: RwLock<BTreeMap<u32, Lease>>,
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
                held: RwLock::new(BTreeMap::new()),
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
        let Some(l) = &self.leasing else {
            return true;
        };
        let margin = chrono::Duration::from_std(l.settings.margin()).unwrap_or_default();
        l.read()
            .get(&shard)
            .is_some_and(|lease| lease.expires_at - margin > now())
    }

    /// The fence a status write of `key` presents; `None` when not leasing.
    pub fn fence(&self, key: &InstanceKey) -> Option<Fence> {
        let l = self.leasing.as_ref()?;
        l.read().get(&self.shard(key)).map(Lease::fence)
    }

    /// Shards this replica holds, in order.
    pub fn held(&self) -> Vec<u32> {
        match &self.leasing {
            None => (0..self.count).collect(),
            Some(l) => l.read().keys().copied().collect(),
        }
    }

    /// Keeps the leases until `shutdown`, then releases them. `gained` is told about
    /// shards this replica newly holds, so their instances are queued.
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

    /// One round: heartbeat, renew what is due, give back extras, take a fair share.
    /// Returns the shards newly acquired.
    async fn rebalance(&self, l: &Leasing) -> Result<Vec<u32>, crate::store::StoreError> {
        let s = &l.settings;
        self.store.heartbeat(&s.replica_id, s.lease_ttl).await?;
        self.renew_due(l).await;
        let replicas = self.store.replicas().await?.len().max(1) as u32;
        let fair = self.count.div_ceil(replicas) as usize;
        let held = l.read().len();
        if held > fair {
            self.release_extra(l, held - fair).await;
            return Ok(vec![]);
        }
        if held == fair {
            return Ok(vec![]);
        }
        self.acquire_free(l, fair - held).await
    }

    async fn renew_due(&self, l: &Leasing) {
        let s = &l.settings;
        let due = chrono::Duration::from_std(s.lease_ttl * 2 / 3).unwrap_or_default();
        let leases: Vec<Lease> = l.read().values().cloned().collect();
        for lease in leases {
            if lease.expires_at - now() > due {
                continue;
            }
            match self.store.renew_lease(&lease, s.lease_ttl).await {
                Ok(Some(renewed)) => {
                    l.write().insert(renewed.shard, renewed);
                }
                Ok(None) => {
                    warn!(shard = lease.shard, "lease lost to another replica");
                    l.write().remove(&lease.shard);
                }
                // Keep it until it expires locally; the next round tries again.
                Err(e) => warn!(shard = lease.shard, error = %e, "lease renewal failed"),
            }
        }
    }

    async fn release_extra(&self, l: &Leasing, extra: usize) {
        let give_back: Vec<Lease> = l.read().values().rev().take(extra).cloned().collect();
        for lease in give_back {
            l.write().remove(&lease.shard);
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
            if taken.contains(&shard) || l.read().contains_key(&shard) {
                continue;
            }
            if let Some(lease) = self
                .store
                .acquire_lease(shard, &s.replica_id, s.lease_ttl)
                .await?
            {
                info!(shard, token = lease.token, "shard acquired");
                l.write().insert(shard, lease);
                gained.push(shard);
            }
        }
        Ok(gained)
    }

    async fn release_all(&self, l: &Leasing) {
        let leases: Vec<Lease> = std::mem::take(&mut *l.write()).into_values().collect();
        for lease in &leases {
            if let Err(e) = self.store.release_lease(lease).await {
                warn!(shard = lease.shard, error = %e, "release at shutdown failed; it will expire");
            }
        }
        if let Err(e) = self.store.leave(&l.settings.replica_id).await {
            warn!(error = %e, "leaving the replica set failed; the heartbeat will expire");
        }
        info!(released = leases.len(), "shard leases released");
    }
}

impl Leasing {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, Lease>> {
        self.held.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u32, Lease>> {
        self.held.write().unwrap_or_else(|p| p.into_inner())
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
