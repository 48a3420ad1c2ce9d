//! The engine's port to durable storage. Work is submitted as jobs and performed, in order, by
//! a writer future the engine runs alongside its own loop (no threads, no spawned tasks), so the
//! leader keeps replicating while its own disk write is in flight, and every job that arrives
//! during a sync is made durable by the next single sync (group commit).
//!
//! The write-ahead-log implementation lives in `crate::storage`; [`MemoryStorage`] below keeps
//! "durable" state in memory for engine tests.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use thiserror::Error;
use tokio::sync::{mpsc, watch};

use super::clock::Clock;
use crate::raft::memory_cluster::DurableState;
use crate::raft::{LogIndex, PersistBatch, Snapshot};

#[derive(Clone, Debug)]
pub enum StorageJob {
    /// Make a Raft persist batch durable; progress reports its id once done.
    Persist(PersistBatch),
    /// Save a snapshot of the state machine durably, then drop log entries up to `compact_to`.
    SaveSnapshot { snapshot: Snapshot, compact_to: LogIndex },
}

/// What the writer has finished, monotonically.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageProgress {
    /// Every persist batch up to this id is durable.
    pub durable_batch: u64,
    /// The last index of the newest snapshot saved (by either kind of job).
    pub snapshot_index: LogIndex,
    /// The log is compacted up to here.
    pub compacted_to: LogIndex,
    /// The disk-full alarm: writes are waiting for space (see `storage/space.rs`); the engine
    /// refuses new client writes while it is up.
    pub disk_full: bool,
    /// Local snapshots given up for lack of space, since the start (the engine tries again
    /// later; the log is not compacted meanwhile).
    pub snapshots_abandoned: u64,
}

/// Storage failed. After a failed sync nothing can be trusted (the page cache may have
/// dropped the data), so the node stops and recovers from disk on restart.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("storage failed: {0}")]
pub struct StorageFailure(pub String);

pub trait Storage {
    /// Queues a job for the writer; never waits.
    fn submit(&mut self, job: StorageJob) -> Result<(), StorageFailure>;
    /// Resolves with the new progress once it advances, or the failure. Cancel-safe.
    fn progress_changed(&mut self)
    -> impl Future<Output = Result<StorageProgress, StorageFailure>>;
    /// The newest durable snapshot, to send to a follower that needs it.
    fn load_snapshot(&mut self) -> impl Future<Output = Result<Option<Snapshot>, StorageFailure>>;
    /// How far the storage asks the group to compact its log (0: it asks nothing). A log
    /// shared by many groups keeps a segment until every group with records in it has
    /// compacted past them, so it asks a group that lags for a snapshot (`storage/shared_log.rs`).
    fn compaction_wanted(&self) -> LogIndex {
        0
    }
}

/// In-memory storage for engine tests: "durable" state survives as long as the test keeps the
/// shared [`DurableState`]; a sync takes `sync_ms` of the node's clock.
pub struct MemoryStorage {
    jobs: mpsc::UnboundedSender<StorageJob>,
    progress: watch::Receiver<Result<StorageProgress, StorageFailure>>,
    durable: Rc<RefCell<DurableState>>,
}

impl MemoryStorage {
    /// Returns the storage handle and the writer future the engine must run.
    pub fn new<C: Clock>(
        durable: Rc<RefCell<DurableState>>,
        clock: C,
        sync_ms: u64,
    ) -> (MemoryStorage, impl Future<Output = Result<(), StorageFailure>>) {
        let (jobs, mut queue) = mpsc::unbounded_channel::<StorageJob>();
        let initial = StorageProgress {
            snapshot_index: durable.borrow().snapshot.as_ref().map_or(0, |s| s.meta.last_index),
            ..StorageProgress::default()
        };
        let (publish, progress) = watch::channel(Ok(initial));
        let shared = durable.clone();
        let writer = async move {
            let mut done = initial;
            while let Some(first) = queue.recv().await {
                // Group commit: everything queued by now shares one "sync".
                let mut group = vec![first];
                while let Ok(job) = queue.try_recv() {
                    group.push(job);
                }
                if sync_ms > 0 {
                    clock.sleep_ms(sync_ms).await;
                }
                let mut state = shared.borrow_mut();
                for job in group {
                    match job {
                        StorageJob::Persist(batch) => {
                            if let Some(snapshot) = &batch.snapshot {
                                done.snapshot_index =
                                    done.snapshot_index.max(snapshot.meta.last_index);
                            }
                            state.apply(&batch);
                            done.durable_batch = batch.id;
                        }
                        StorageJob::SaveSnapshot { snapshot, compact_to } => {
                            done.snapshot_index = done.snapshot_index.max(snapshot.meta.last_index);
                            state.entries.retain(|entry| entry.index > compact_to);
                            state.snapshot = Some(snapshot);
                            done.compacted_to = done.compacted_to.max(compact_to);
                        }
                    }
                }
                drop(state);
                if publish.send(Ok(done)).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        };
        (MemoryStorage { jobs, progress, durable }, writer)
    }
}

impl Storage for MemoryStorage {
    fn submit(&mut self, job: StorageJob) -> Result<(), StorageFailure> {
        self.jobs.send(job).map_err(|_| StorageFailure("the storage writer stopped".into()))
    }

    async fn progress_changed(&mut self) -> Result<StorageProgress, StorageFailure> {
        if self.progress.changed().await.is_err() {
            // The writer ended: report the last state once more, then wait forever (the engine
            // notices the writer's end through the future it joined).
            std::future::pending::<()>().await;
        }
        self.progress.borrow_and_update().clone()
    }

    async fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageFailure> {
        Ok(self.durable.borrow().snapshot.clone())
    }
}
