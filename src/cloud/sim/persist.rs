//! Write-through persistence of the inventory in `sim-cloud.redb`, so the simulated cloud
//! outlives the controller process (as AWS does).
//!
//! Design: one table, `kind/id` → JSON of one resource record (client tokens and every
//! absolute timestamp included, so in-flight operations resume by their start times). A
//! dedicated writer thread owns the redb `Database` and commits the changes of a mutation
//! durably before the mutation is acknowledged; it folds whatever else is queued into the
//! same transaction (group commit), so concurrent calls share one fsync.
//!
//! Invariants:
//! * Changes are queued while the inventory lock is held, so they reach the file in the
//!   order they happened in memory; the writer applies them in queue order.
//! * A call is answered only after its changes are committed with `Durability::Immediate`
//!   (redb's default): `kill -9` loses nothing that was acknowledged.
//! * The async executor never blocks on the file; only `open` (synchronous by signature)
//!   and `Drop` (which waits for the queue to drain) touch it from the caller's thread.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::SimError;
use super::calls::PersistStats;
use super::inventory::{Change, Inventory};

/// The file `SimCloud::open` keeps under its directory.
pub const FILE_NAME: &str = "sim-cloud.redb";

const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");

/// Most mutations folded into one commit.
const MAX_GROUP: usize = 256;

/// How the writer tells a caller its changes are durable (or why not).
pub(super) enum Ack {
    Async(tokio::sync::oneshot::Sender<Result<(), String>>),
    Blocking(mpsc::Sender<Result<(), String>>),
}

impl Ack {
    fn send(self, result: Result<(), String>) {
        // The caller may have gone away (a cancelled future); nothing to tell then.
        let _ = match self {
            Ack::Async(tx) => tx.send(result).map_err(drop),
            Ack::Blocking(tx) => tx.send(result).map_err(drop),
        };
    }
}

struct Job {
    changes: Vec<Change>,
    ack: Ack,
}

/// Handle of the writer thread.
pub(super) struct Persister {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    book: Arc<Mutex<CommitBook>>,
}

/// What the writer has done so far.
#[derive(Debug, Default)]
struct CommitBook {
    commits: u64,
    records: u64,
    total_micros: u64,
    max_micros: u64,
}

/// A caller's view of whether its changes are on disk yet.
pub(super) enum Durable {
    /// Nothing to write, or nowhere to write it (in-memory cloud).
    Done,
    Async(tokio::sync::oneshot::Receiver<Result<(), String>>),
    Blocking(mpsc::Receiver<Result<(), String>>),
}

impl Durable {
    /// An acknowledgement channel: `blocking` for synchronous callers.
    pub fn channel(blocking: bool) -> (Ack, Durable) {
        if blocking {
            let (tx, rx) = mpsc::channel();
            (Ack::Blocking(tx), Durable::Blocking(rx))
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Ack::Async(tx), Durable::Async(rx))
        }
    }

    pub async fn wait(self) -> Result<(), String> {
        match self {
            Durable::Done => Ok(()),
            Durable::Async(rx) => rx.await.unwrap_or_else(|_| Err(WRITER_GONE.into())),
            Durable::Blocking(rx) => rx.recv().unwrap_or_else(|_| Err(WRITER_GONE.into())),
        }
    }

    /// For synchronous callers; the writer is its own OS thread, so this cannot deadlock
    /// even on a single-threaded runtime.
    pub fn wait_blocking(self) -> Result<(), String> {
        match self {
            Durable::Done => Ok(()),
            Durable::Async(mut rx) => loop {
                match rx.try_recv() {
                    Ok(result) => return result,
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                    Err(_) => return Err(WRITER_GONE.into()),
                }
            },
            Durable::Blocking(rx) => rx.recv().unwrap_or_else(|_| Err(WRITER_GONE.into())),
        }
    }
}

const WRITER_GONE: &str = "simulated cloud writer stopped";

impl Persister {
    /// Opens or creates `dir/sim-cloud.redb`, loads every record into `inventory` and
    /// starts the writer.
    pub fn open(dir: &Path, inventory: &mut Inventory) -> Result<Self, SimError> {
        std::fs::create_dir_all(dir).map_err(persist_err)?;
        let db = Database::create(dir.join(FILE_NAME)).map_err(persist_err)?;
        ensure_table(&db)?;
        load(&db, inventory)?;
        let (queue, jobs) = mpsc::channel();
        let book = Arc::new(Mutex::new(CommitBook::default()));
        let writer_book = Arc::clone(&book);
        let thread = std::thread::Builder::new()
            .name("sim-cloud-writer".into())
            .spawn(move || write_loop(&db, &jobs, &writer_book))
            .map_err(persist_err)?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            book,
        })
    }

    /// Queues `changes`; `ack` hears when they are durable.
    pub fn submit(&self, changes: Vec<Change>, ack: Ack) {
        let job = Job { changes, ack };
        let sent = self.queue.as_ref().map(|q| q.send(job));
        match sent {
            Some(Ok(())) => {}
            Some(Err(mpsc::SendError(job))) => job.ack.send(Err(WRITER_GONE.into())),
            None => {}
        }
    }

    pub fn stats(&self) -> PersistStats {
        let b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        PersistStats {
            commits: b.commits,
            records_written: b.records,
            avg_commit_micros: b.total_micros.checked_div(b.commits).unwrap_or(0),
            max_commit_micros: b.max_micros,
        }
    }
}

impl Drop for Persister {
    /// Closes the queue and waits for the writer to commit what is queued and release the
    /// file, so the same directory can be reopened at once.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn persist_err(e: impl std::fmt::Display) -> SimError {
    SimError::Persist(e.to_string())
}

fn ensure_table(db: &Database) -> Result<(), SimError> {
    let txn = db.begin_write().map_err(persist_err)?;
    txn.open_table(RESOURCES).map_err(persist_err)?;
    txn.commit().map_err(persist_err)
}

fn load(db: &Database, inventory: &mut Inventory) -> Result<(), SimError> {
    let txn = db.begin_read().map_err(persist_err)?;
    let table = txn.open_table(RESOURCES).map_err(persist_err)?;
    for entry in table.iter().map_err(persist_err)? {
        let (key, value) = entry.map_err(persist_err)?;
        inventory
            .load(key.value(), value.value())
            .map_err(SimError::Persist)?;
    }
    Ok(())
}

fn write_loop(db: &Database, jobs: &mpsc::Receiver<Job>, book: &Mutex<CommitBook>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = commit(db, &group);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let records = group.iter().map(|j| j.changes.len() as u64).sum();
        note_commit(book, micros, records);
        if let Err(e) = &result {
            tracing::error!(error = %e, "simulated cloud: commit failed");
        }
        for job in group {
            job.ack.send(result.clone());
        }
    }
}

fn commit(db: &Database, group: &[Job]) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(RESOURCES).map_err(|e| e.to_string())?;
        for (key, value) in group.iter().flat_map(|j| &j.changes) {
            match value {
                Some(json) => table.insert(key.as_str(), json.as_slice()).map(drop),
                None => table.remove(key.as_str()).map(drop),
            }
            .map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

fn note_commit(book: &Mutex<CommitBook>, micros: u64, records: u64) {
    let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
    b.commits += 1;
    b.records += records;
    b.total_micros = b.total_micros.saturating_add(micros);
    b.max_micros = b.max_micros.max(micros);
}
