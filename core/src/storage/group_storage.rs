//! [`GroupStorage`]: one group's handle on a log writer — the engine's [`Storage`] for that
//! group. Its jobs go to the writer tagged with the group; its progress and newest snapshot are
//! the group's own.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use tokio::sync::{mpsc, watch};

use super::backup::{BackupMeta, BackupSource, write_backup};
use super::error::{StorageError, StorageResult};
use super::fs::FileSystem;
use crate::raft::{LogIndex, Snapshot};
use crate::seams::storage::{Storage, StorageFailure, StorageJob, StorageProgress};
use crate::shard::ShardId;

pub struct GroupStorage<F: FileSystem> {
    pub(crate) fs: F,
    pub(crate) shard: ShardId,
    pub(crate) max_snapshot_bytes: u64,
    pub(crate) jobs: mpsc::UnboundedSender<(ShardId, StorageJob)>,
    pub(crate) progress: watch::Receiver<Result<StorageProgress, StorageFailure>>,
    /// The newest durable snapshot, shared with the writer (it replaces it).
    pub(crate) latest_snapshot: Rc<RefCell<Option<Snapshot>>>,
    /// How far the writer asks the group to compact (see `Storage::compaction_wanted`).
    pub(crate) compaction_wanted: Rc<Cell<LogIndex>>,
}

impl<F: FileSystem> GroupStorage<F> {
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Writes a consistent backup of the group to `path`: its newest durable snapshot with
    /// metadata, checksummed, in one file (see `backup.rs`). Fails if the group has no
    /// snapshot yet — have the engine take one first for an up-to-date backup.
    pub async fn backup_to(&self, path: &Path, source: &BackupSource) -> StorageResult<BackupMeta> {
        let snapshot = self.latest_snapshot.borrow().clone();
        let Some(snapshot) = snapshot else {
            return Err(StorageError::InvalidOptions(
                "no durable snapshot to back up yet; take a snapshot first".into(),
            ));
        };
        write_backup(&self.fs, path, &snapshot, source, self.max_snapshot_bytes).await
    }

    /// The progress published so far (for tests and metrics).
    pub fn current_progress(&self) -> Result<StorageProgress, StorageFailure> {
        self.progress.borrow().clone()
    }
}

impl<F: FileSystem> Storage for GroupStorage<F> {
    fn submit(&mut self, job: StorageJob) -> Result<(), StorageFailure> {
        if let Err(failure) = &*self.progress.borrow() {
            return Err(failure.clone());
        }
        self.jobs
            .send((self.shard, job))
            .map_err(|_| StorageFailure("the storage writer stopped".into()))
    }

    async fn progress_changed(&mut self) -> Result<StorageProgress, StorageFailure> {
        if self.progress.changed().await.is_err() {
            // The writer ended; the engine learns why from the writer future it runs.
            std::future::pending::<()>().await;
        }
        self.progress.borrow_and_update().clone()
    }

    async fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageFailure> {
        if let Err(failure) = &*self.progress.borrow() {
            return Err(failure.clone());
        }
        Ok(self.latest_snapshot.borrow().clone())
    }

    fn compaction_wanted(&self) -> LogIndex {
        self.compaction_wanted.get()
    }
}
