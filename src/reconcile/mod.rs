//! The reconciler: converges the cloud towards each instance's desired state.
//!
//! * `plan`: the pure `plan(desired, observed) -> Plan`;
//! * `status`: the pure composition of the status a pass writes back;
//! * `events`: the pure choice of the events a pass records (what it decided and did);
//! * `queue`: the per-key work queue (dedup, one pass per key, backoff, priorities);
//! * `runner`: the shell that observes in batches, executes steps and writes status;
//! * `workers`: the pool of passes running at once, served follow-ups first;
//! * `shards`: which instances this replica may reconcile (shard leases with fencing).

pub mod events;
pub mod plan;
mod queue;
mod runner;
pub mod shards;
pub mod status;
mod workers;

pub use queue::{Backoff, Outcome, Priority, QueueStats, WorkQueue};
pub use runner::{Reconciler, RunConfig, Trigger};
pub use shards::{ShardSettings, Shards};
