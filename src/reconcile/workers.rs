//! The worker pool: at most `n` reconcile passes run at once, and a pass waiting for a free
//! worker is served by the priority its key was taken with (follow-ups of work in progress,
//! then user work, then the resync), first come first served within one priority.
//!
//! Why not plain FIFO: a pass waits for the AWS budget while it holds its worker (a create
//! waits for RDS tokens). When a burst of creates fills the pool, a follow-up whose next
//! step needs another, idle service (CreateService once the database is up) would wait
//! behind every create queued before it, its observation going stale meanwhile, and look
//! again only to find it stale (measured: no instance of 1,000 created at once became ACTIVE
//! before the last create had gone out; docs/PERFORMANCE.md). Follow-ups are few and make
//! progress on work already started, so they go first.
//!
//! Invariant: a permit is handed to at most one waiter, and a waiter that gave up (its
//! future was dropped) never keeps one: the permit goes on to the next waiter.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::queue::Priority;

/// Passes waiting, by priority (index = `Priority as usize`).
#[derive(Default)]
struct State {
    free: usize,
    waiting: [VecDeque<oneshot::Sender<Worker>>; 3],
}

impl State {
    /// The next waiter, highest rank first.
    fn next_waiter(&mut self) -> Option<oneshot::Sender<Worker>> {
        self.waiting.iter_mut().rev().find_map(VecDeque::pop_front)
    }

    /// The next waiter; with none, the worker goes back to the pool.
    fn next_waiter_or_free(&mut self) -> Option<oneshot::Sender<Worker>> {
        let next = self.next_waiter();
        if next.is_none() {
            self.free += 1;
        }
        next
    }
}

#[derive(Clone)]
pub struct Workers {
    state: Arc<Mutex<State>>,
}

/// One worker, given back when dropped (handed to the next waiter, if any).
pub struct Worker {
    /// `None` once handed on.
    state: Option<Arc<Mutex<State>>>,
}

impl Workers {
    pub fn new(n: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: n.max(1),
                ..State::default()
            })),
        }
    }

    /// Waits for a worker; follow-ups (`Requeue`) go before user work, which goes before
    /// the resync.
    pub async fn acquire(&self, priority: Priority) -> Worker {
        let rx = {
            let mut st = lock(&self.state);
            if st.free > 0 {
                st.free -= 1;
                return Worker {
                    state: Some(self.state.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            st.waiting[rank(priority)].push_back(tx);
            rx
        };
        // A worker is sent in the channel: if this future is dropped after it was sent, the
        // worker is dropped with the channel and handed on. Senders are dropped unsent only
        // when the pool is gone.
        match rx.await {
            Ok(worker) => worker,
            Err(_) => Worker { state: None },
        }
    }
}

/// Where a priority waits: follow-ups first (highest index is served first).
fn rank(priority: Priority) -> usize {
    match priority {
        Priority::Resync => 0,
        Priority::User => 1,
        Priority::Requeue => 2,
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        // To the first waiter still waiting, highest rank first; else back to the pool. The
        // lock is not held while sending (a refused worker is dropped right here).
        loop {
            let Some(tx) = lock(&state).next_waiter_or_free() else {
                return;
            };
            match tx.send(Worker {
                state: Some(state.clone()),
            }) {
                Ok(()) => return,
                Err(mut refused) => refused.state = None,
            }
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Two counters and queues of senders: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn follow_ups_go_before_user_work_before_the_resync() {
        let pool = Workers::new(1);
        let held = pool.acquire(Priority::User).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for (name, p) in [
            ("resync", Priority::Resync),
            ("user1", Priority::User),
            ("follow-up", Priority::Requeue),
            ("user2", Priority::User),
        ] {
            let (pool, order) = (pool.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _w = pool.acquire(p).await;
                order.lock().unwrap().push(name);
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["follow-up", "user1", "user2", "resync"]
        );
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_keep_the_worker() {
        let pool = Workers::new(1);
        let held = pool.acquire(Priority::User).await;
        let gave_up = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire(Priority::Requeue).await })
        };
        tokio::task::yield_now().await;
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        // The permit came back instead of going to the one that left.
        let again = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            pool.acquire(Priority::Resync),
        )
        .await;
        assert!(again.is_ok());
        assert_eq!(lock(&pool.state).free, 0);
    }
}
