//! The work queue: instance keys waiting to be reconciled.
//!
//! Modelled on kube-runtime's scheduler and client-go's workqueue:
//! * one entry per key: duplicate triggers collapse, and the earliest `run_at` (and the
//!   highest priority) wins;
//! * at most one pass per key at a time: a trigger that arrives while the key is running is
//!   remembered and the key runs again after the pass, never concurrently;
//! * per-key exponential backoff with jitter after a failed pass, reset by a successful one;
//! * among keys that are due, user writes and reconcile-now take turns with requeues (work
//!   in progress looking again), and both go before the periodic resync. Taking turns
//!   keeps a burst of new work (5,000 creates) from starving the instances already
//!   converging, whose next steps often use other services' budgets.
//!
//! Work items carry only the key: each pass re-reads desired and observed state.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::{CONTROLLER, Metrics};
use crate::model::InstanceKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// The periodic resync that catches drift.
    Resync = 0,
    /// A converging instance looking again after `poll_interval`, or a retry.
    Requeue = 1,
    /// An API write or reconcile-now: someone is waiting for it.
    User = 2,
}

const PRIORITIES: usize = 3;

/// Per-key retry delays after failed passes.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay before retry number `failures` (1-based): `base · 2^(failures-1)`, capped at
    /// `max`, then scaled by a random factor in [0.5, 1) ("equal jitter") so that keys that
    /// failed together (one throttling burst) do not retry together.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        raw.mul_f64(rand::rng().random_range(0.5..1.0))
    }
}

/// How a pass ended, from the queue's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded; look again after the delay if converging, or wait for a trigger.
    Success { requeue_after: Option<Duration> },
    /// Failed; retry after this key's backoff.
    Failure,
    /// Failed in a way a retry will not fix until a person acts (access denied, quota):
    /// retry after this key's backoff, but not sooner than `at_least`, so the instance is
    /// looked at again slowly instead of hammering the cloud, and never given up on.
    FailureAtLeast(Duration),
}

enum Entry {
    Queued {
        run_at: Instant,
        priority: Priority,
        seq: u64,
    },
    /// Running; `again` holds the earliest trigger that arrived meanwhile.
    Running {
        again: Option<(Instant, Priority)>,
        started: Instant,
        /// The priority it was taken with (passed on to the cloud as a hint).
        priority: Priority,
    },
}

#[derive(Default)]
struct State {
    entries: HashMap<InstanceKey, Entry>,
    /// Not yet due. May hold stale items (superseded `seq`); they are skipped when popped.
    delayed: BinaryHeap<Reverse<(Instant, u64, Priority, InstanceKey)>>,
    /// Due, per priority; stale items are skipped likewise.
    ready: [VecDeque<(u64, InstanceKey)>; PRIORITIES],
    failures: HashMap<InstanceKey, u32>,
    next_seq: u64,
    adds: u64,
    retries: u64,
}

pub struct WorkQueue {
    state: Mutex<State>,
    /// Where adds, waits, work durations and retries are also counted, if anywhere.
    metrics: Option<Arc<Metrics>>,
    /// Wakes the single consumer; `notify_one` keeps a permit if it is not waiting yet, so
    /// an add between its check and its wait is never lost.
    wake: Notify,
    backoff: Backoff,
}

/// Queue gauges for metrics and `/readyz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: usize,
    pub running: usize,
    pub adds: u64,
    pub retries: u64,
    /// Total time the passes running now have been running.
    pub unfinished: Duration,
    pub longest_running: Duration,
}

impl WorkQueue {
    pub fn new(backoff: Backoff) -> Self {
        Self::with_metrics(backoff, None)
    }

    pub fn with_metrics(backoff: Backoff, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            metrics,
            wake: Notify::new(),
            backoff,
        }
    }

    /// Asks for a pass of `key` after `delay`. Collapses with what is already queued.
    pub fn add(&self, key: InstanceKey, priority: Priority, delay: Duration) {
        let run_at = Instant::now() + delay;
        if let Some(m) = &self.metrics {
            m.queue_adds.with_label_values(&[CONTROLLER]).inc();
        }
        let mut st = self.lock();
        st.adds += 1;
        match st.entries.get_mut(&key) {
            Some(Entry::Running { again, .. }) => {
                *again = Some(merge(*again, run_at, priority));
                return;
            }
            Some(Entry::Queued {
                run_at: at,
                priority: p,
                ..
            }) if *at <= run_at && *p >= priority => return,
            Some(Entry::Queued {
                run_at: at,
                priority: p,
                ..
            }) => {
                let (merged_at, merged_p) = merge(Some((*at, *p)), run_at, priority);
                st.schedule(key, merged_at, merged_p);
            }
            None => st.schedule(key, run_at, priority),
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Waits until at least one key is due, then takes up to `max` due keys, highest
    /// priority first, and marks them running.
    pub async fn next_batch(&self, max: usize) -> Vec<InstanceKey> {
        loop {
            let wake_at = {
                let mut st = self.lock();
                let mut waited = vec![];
                let batch = st.pop_due(max.max(1), &mut waited);
                if !batch.is_empty() {
                    drop(st);
                    self.observe_waits(&waited);
                    return batch;
                }
                st.next_due()
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Takes up to `max` keys that are due now, without waiting.
    pub fn try_batch(&self, max: usize) -> Vec<InstanceKey> {
        let mut waited = vec![];
        let batch = self.lock().pop_due(max, &mut waited);
        self.observe_waits(&waited);
        batch
    }

    fn observe_waits(&self, waited: &[Duration]) {
        if let Some(m) = &self.metrics {
            let h = m.queue_duration.with_label_values(&[CONTROLLER]);
            for w in waited {
                h.observe(w.as_secs_f64());
            }
        }
    }

    /// Whether no user work (a write, reconcile-now) is due right now: then a batch may
    /// wait a little to fill up, so describes are shared.
    pub fn no_user_work_due(&self) -> bool {
        self.lock().ready[Priority::User as usize].is_empty()
    }

    /// When the earliest delayed key (a requeue, a backoff) becomes due, if any.
    pub fn next_delayed(&self) -> Option<Instant> {
        self.lock().next_due()
    }

    /// Resolves when a key is added (or soon after one was: a wake-up may be stored).
    pub async fn added(&self) {
        self.wake.notified().await;
    }

    /// Ends the pass of `key`. A trigger that arrived meanwhile wins if it is earlier.
    pub fn done(&self, key: &InstanceKey, outcome: Outcome) {
        let now = Instant::now();
        let mut st = self.lock();
        let own = match outcome {
            Outcome::Success { requeue_after } => {
                st.failures.remove(key);
                requeue_after.map(|d| (now + d, Priority::Requeue))
            }
            Outcome::Failure | Outcome::FailureAtLeast(_) => {
                let n = st.failures.entry(key.clone()).or_insert(0);
                *n += 1;
                let at_least = match outcome {
                    Outcome::FailureAtLeast(d) => d,
                    _ => Duration::ZERO,
                };
                let delay = self.backoff.delay(*n).max(at_least);
                st.retries += 1;
                if let Some(m) = &self.metrics {
                    m.queue_retries.with_label_values(&[CONTROLLER]).inc();
                }
                Some((now + delay, Priority::Requeue))
            }
        };
        let again = match st.entries.remove(key) {
            Some(Entry::Running { again, started, .. }) => {
                if let Some(m) = &self.metrics {
                    m.work_duration
                        .with_label_values(&[CONTROLLER])
                        .observe(started.elapsed().as_secs_f64());
                }
                again
            }
            _ => None,
        };
        let next = match (own, again) {
            (Some((at, p)), again) => Some(merge(again, at, p)),
            (None, again) => again,
        };
        if let Some((at, p)) = next {
            st.schedule(key.clone(), at, p);
            drop(st);
            self.wake.notify_one();
        }
    }

    /// The priority a running key was taken with; `None` if it is not running.
    pub fn running_priority(&self, key: &InstanceKey) -> Option<Priority> {
        match self.lock().entries.get(key) {
            Some(Entry::Running { priority, .. }) => Some(*priority),
            _ => None,
        }
    }

    /// Whether `key` is running and user work (a write, reconcile-now) arrived for it
    /// meanwhile.
    pub fn user_waiting(&self, key: &InstanceKey) -> bool {
        matches!(
            self.lock().entries.get(key),
            Some(Entry::Running {
                again: Some((_, Priority::User)),
                ..
            })
        )
    }

    /// Consecutive failed passes of `key` (0 after a success).
    pub fn failures(&self, key: &InstanceKey) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.lock();
        let now = Instant::now();
        let running: Vec<Duration> = st
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::Running { started, .. } => Some(now.saturating_duration_since(*started)),
                Entry::Queued { .. } => None,
            })
            .collect();
        QueueStats {
            queued: st.entries.len() - running.len(),
            running: running.len(),
            adds: st.adds,
            retries: st.retries,
            unfinished: running.iter().sum(),
            longest_running: running.iter().max().copied().unwrap_or_default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters more than losing the queue, so recover the guard rather than propagate.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The priority whose ready list has index `i`.
fn priority_at(i: usize) -> Priority {
    match i {
        0 => Priority::Resync,
        1 => Priority::Requeue,
        _ => Priority::User,
    }
}

/// The earlier time and the higher priority of two requests.
fn merge(a: Option<(Instant, Priority)>, at: Instant, p: Priority) -> (Instant, Priority) {
    match a {
        Some((a_at, a_p)) => (a_at.min(at), a_p.max(p)),
        None => (at, p),
    }
}

impl State {
    fn schedule(&mut self, key: InstanceKey, run_at: Instant, priority: Priority) {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.entries.insert(
            key.clone(),
            Entry::Queued {
                run_at,
                priority,
                seq,
            },
        );
        if run_at <= Instant::now() {
            self.ready[priority as usize].push_back((seq, key));
        } else {
            self.delayed.push(Reverse((run_at, seq, priority, key)));
        }
    }

    fn is_current(&self, key: &InstanceKey, seq: u64) -> bool {
        matches!(self.entries.get(key), Some(Entry::Queued { seq: s, .. }) if *s == seq)
    }

    fn promote_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, _, _))) = self.delayed.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, seq, priority, key)) = self.delayed.pop().expect("peeked");
            if self.is_current(&key, seq) {
                self.ready[priority as usize].push_back((seq, key));
            }
        }
    }

    /// Takes up to `max` due keys; `waited` gets how long each had been due.
    fn pop_due(&mut self, max: usize, waited: &mut Vec<Duration>) -> Vec<InstanceKey> {
        self.promote_due();
        let now = Instant::now();
        let mut out = Vec::new();
        // User and Requeue take turns; Resync only fills what is left.
        let turns = [Priority::User as usize, Priority::Requeue as usize];
        let mut turn = 0;
        while out.len() < max {
            let mut took = false;
            for _ in 0..turns.len() {
                let p = turns[turn % turns.len()];
                turn += 1;
                if let Some(key) = self.pop_current(p, now, waited) {
                    out.push(key);
                    took = true;
                    break;
                }
            }
            if !took {
                break;
            }
        }
        while out.len() < max {
            match self.pop_current(Priority::Resync as usize, now, waited) {
                Some(key) => out.push(key),
                None => break,
            }
        }
        out
    }

    /// The next current key of priority `p`, marked running; stale items are skipped.
    fn pop_current(
        &mut self,
        p: usize,
        now: Instant,
        waited: &mut Vec<Duration>,
    ) -> Option<InstanceKey> {
        while let Some((seq, key)) = self.ready[p].pop_front() {
            if let Some(Entry::Queued { run_at, .. }) = self.entries.get(&key)
                && self.is_current(&key, seq)
            {
                waited.push(now.saturating_duration_since(*run_at));
                let running = Entry::Running {
                    again: None,
                    started: now,
                    priority: priority_at(p),
                };
                self.entries.insert(key.clone(), running);
                return Some(key);
            }
        }
        None
    }

    fn next_due(&mut self) -> Option<Instant> {
        // Drop stale heads so the consumer does not wake for nothing.
        while let Some(Reverse((_, seq, _, key))) = self.delayed.peek() {
            if self.is_current(key, *seq) {
                break;
            }
            self.delayed.pop();
        }
        self.delayed.peek().map(|Reverse((at, ..))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: &str) -> InstanceKey {
        InstanceKey::from_strs("t", i)
    }

    fn q() -> WorkQueue {
        WorkQueue::new(Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_triggers_collapse() {
        let q = q();
        for _ in 0..5 {
            q.add(k("a"), Priority::User, Duration::ZERO);
        }
        assert_eq!(q.next_batch(10).await, vec![k("a")]);
        assert!(q.try_batch(10).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_run_at_wins() {
        let q = q();
        q.add(k("a"), Priority::Requeue, Duration::from_secs(60));
        q.add(k("a"), Priority::Requeue, Duration::from_secs(1));
        q.add(k("a"), Priority::Requeue, Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(q.next_batch(10).await, vec![k("a")]);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_needing_a_person_is_retried_no_sooner_than_asked() {
        let q = q();
        q.add(k("a"), Priority::User, Duration::ZERO);
        assert_eq!(q.next_batch(1).await, vec![k("a")]);
        let start = Instant::now();
        q.done(&k("a"), Outcome::FailureAtLeast(Duration::from_secs(60)));
        assert_eq!(q.next_batch(1).await, vec![k("a")]);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        assert_eq!(q.failures(&k("a")), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_key_remembers_the_priority_it_was_taken_with() {
        let q = q();
        q.add(k("u"), Priority::User, Duration::ZERO);
        q.add(k("r"), Priority::Resync, Duration::ZERO);
        assert_eq!(q.next_batch(2).await, vec![k("u"), k("r")]);
        assert_eq!(q.running_priority(&k("u")), Some(Priority::User));
        assert_eq!(q.running_priority(&k("r")), Some(Priority::Resync));
        q.done(
            &k("u"),
            Outcome::Success {
                requeue_after: None,
            },
        );
        assert_eq!(q.running_priority(&k("u")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn user_work_goes_before_resync() {
        let q = q();
        q.add(k("r1"), Priority::Resync, Duration::ZERO);
        q.add(k("r2"), Priority::Resync, Duration::ZERO);
        q.add(k("u"), Priority::User, Duration::ZERO);
        q.add(k("q"), Priority::Requeue, Duration::ZERO);
        assert_eq!(q.next_batch(2).await, vec![k("u"), k("q")]);
        assert_eq!(q.next_batch(5).await, vec![k("r1"), k("r2")]);
    }

    #[tokio::test(start_paused = true)]
    async fn user_work_and_requeues_take_turns() {
        let q = q();
        for i in 0..3 {
            q.add(k(&format!("u{i}")), Priority::User, Duration::ZERO);
            q.add(k(&format!("q{i}")), Priority::Requeue, Duration::ZERO);
        }
        q.add(k("r"), Priority::Resync, Duration::ZERO);
        let want: Vec<InstanceKey> = ["u0", "q0", "u1", "q1", "u2"].map(k).into();
        assert_eq!(q.next_batch(5).await, want);
        assert_eq!(q.next_batch(5).await, vec![k("q2"), k("r")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_trigger_promotes_a_queued_resync() {
        let q = q();
        q.add(k("r"), Priority::Resync, Duration::ZERO);
        q.add(k("x"), Priority::Resync, Duration::ZERO);
        q.add(k("x"), Priority::User, Duration::ZERO);
        assert_eq!(q.next_batch(1).await, vec![k("x")]);
        assert_eq!(q.next_batch(5).await, vec![k("r")]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_pass_per_key_and_a_trigger_while_running_runs_again_after() {
        let q = q();
        q.add(k("a"), Priority::User, Duration::ZERO);
        assert_eq!(q.next_batch(10).await, vec![k("a")]);
        q.add(k("a"), Priority::User, Duration::ZERO);
        assert!(q.try_batch(10).is_empty(), "never twice at once");
        q.done(
            &k("a"),
            Outcome::Success {
                requeue_after: None,
            },
        );
        assert_eq!(q.try_batch(10), vec![k("a")]);
    }

    #[tokio::test(start_paused = true)]
    async fn success_without_requeue_forgets_the_key() {
        let q = q();
        q.add(k("a"), Priority::User, Duration::ZERO);
        q.next_batch(10).await;
        q.done(
            &k("a"),
            Outcome::Success {
                requeue_after: None,
            },
        );
        assert_eq!(q.stats().queued + q.stats().running, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_success_resets() {
        let q = q();
        q.add(k("a"), Priority::User, Duration::ZERO);
        q.next_batch(10).await;
        for n in 1..=8u32 {
            q.done(&k("a"), Outcome::Failure);
            let start = Instant::now();
            q.next_batch(10).await;
            let waited = start.elapsed();
            let nominal =
                (Duration::from_millis(100) * (1 << (n - 1))).min(Duration::from_secs(10));
            assert!(
                waited >= nominal / 2 && waited <= nominal,
                "failure {n}: waited {waited:?}, nominal {nominal:?}"
            );
        }
        assert_eq!(q.failures(&k("a")), 8);
        q.done(
            &k("a"),
            Outcome::Success {
                requeue_after: None,
            },
        );
        assert_eq!(q.failures(&k("a")), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_runs_later() {
        let q = q();
        q.add(k("a"), Priority::User, Duration::ZERO);
        q.next_batch(10).await;
        q.done(
            &k("a"),
            Outcome::Success {
                requeue_after: Some(Duration::from_secs(5)),
            },
        );
        assert!(q.try_batch(10).is_empty());
        let start = Instant::now();
        q.next_batch(10).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn backoff_delay_is_capped_and_jittered() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for n in 1..40 {
            let d = b.delay(n);
            assert!(d <= Duration::from_secs(60));
            assert!(d >= Duration::from_millis(500));
        }
        assert!(b.delay(100) >= Duration::from_secs(30));
    }
}
