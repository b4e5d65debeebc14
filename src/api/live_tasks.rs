//! The status endpoint's live task list, shared between requests.
//!
//! The reconciler lists tasks only where ECS does not vouch for their health (a completed
//! rollout), so the list in status may be old; `GET …/status` lists them from the cloud
//! instead. Clients poll that endpoint (a tenant's CI waiting for a deploy, once a second
//! or more), and each listing costs ECS calls from the budget the reconciler converges
//! with. So one listing serves every request for the same instance for `FRESH_FOR`.
//!
//! Invariants:
//! * at most one successful listing per instance per `FRESH_FOR`, however often clients
//!   poll (concurrent first requests may each list once);
//! * a request never waits more than `WAIT` for the cloud; then, or on an error, the
//!   caller shows what the reconciler recorded;
//! * the cache holds only fresh entries once it has more than `PRUNE_ABOVE`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cloud::Cloud;
use crate::model::{Instance, InstanceKey, TaskStatus, Timestamp, now};
use crate::reconcile::status::task_status;

/// How long one listing answers for an instance.
pub const FRESH_FOR: Duration = Duration::from_secs(5);
/// How long a request waits for a listing.
pub const WAIT: Duration = Duration::from_secs(2);
/// Above this many entries, stale ones are dropped on the next insert.
const PRUNE_ABOVE: usize = 1024;

type Listing = (Vec<TaskStatus>, Timestamp);

#[derive(Default)]
pub struct LiveTasks {
    recent: Mutex<HashMap<InstanceKey, (Instant, Listing)>>,
}

impl LiveTasks {
    /// The tasks of `inst`'s service and when they were listed; `None` when it has no
    /// service or the cloud did not answer in time.
    pub async fn of(&self, cloud: &dyn Cloud, inst: &Instance) -> Option<Listing> {
        inst.status.resources.service.as_ref()?;
        let key = inst.key();
        if let Some(fresh) = self.fresh(&key) {
            return Some(fresh);
        }
        match tokio::time::timeout(WAIT, cloud.tasks_of(&key)).await {
            Ok(Ok(tasks)) => {
                let listing = (tasks.iter().map(task_status).collect(), now());
                self.remember(key, listing.clone());
                Some(listing)
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "listing tasks for status failed; showing the recorded list");
                None
            }
            Err(_) => None,
        }
    }

    fn fresh(&self, key: &InstanceKey) -> Option<Listing> {
        let recent = self.lock();
        let (at, listing) = recent.get(key)?;
        (at.elapsed() < FRESH_FOR).then(|| listing.clone())
    }

    fn remember(&self, key: InstanceKey, listing: Listing) {
        let mut recent = self.lock();
        if recent.len() > PRUNE_ABOVE {
            recent.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
        }
        recent.insert(key, (Instant::now(), listing));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, (Instant, Listing)>> {
        // The map is a cache: one a panicking holder left behind is still usable.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}
