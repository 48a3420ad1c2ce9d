//! [`WalStorage`]: the engine's [`Storage`] on the write-ahead log, the hard-state file and
//! snapshot files, over any [`FileSystem`].
//!
//! Like `MemoryStorage`, it is a handle plus a writer future that the engine runs next to its
//! own loop (no threads, no spawned tasks). The writer (`log_writer.rs`) is the one a node
//! hosting many groups shares among them (`shared_log.rs`); here it serves one group, whose
//! records carry no group id (`LogLayout::Single` in `wal.rs`).

use std::future::Future;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::backup::{BackupMeta, BackupSource};
use super::error::{StorageError, StorageResult};
use super::fs::FileSystem;
use super::group_storage::GroupStorage;
use super::log_writer::{LogWriter, writer_future};
use super::record::record_bytes;
use super::recovery::{RecoveryLimits, recover};
use super::segment::SEGMENT_HEADER_BYTES;
use super::shared_log::assemble;
use super::space::SpaceOptions;
use super::wal::{SINGLE_GROUP, WalLimits};
use crate::raft::{ClusterConfig, PlantedBug, RestoredState, Snapshot};
use crate::seams::storage::{Storage, StorageFailure, StorageJob, StorageProgress};

#[derive(Copy, Clone, Debug)]
pub struct WalOptions {
    /// Size every log segment is preallocated to.
    pub segment_bytes: u64,
    /// The largest log record payload; must hold the largest entry (see the engine's
    /// `max_message_bytes`).
    pub max_record_bytes: u32,
    /// The largest snapshot file accepted, written or read.
    pub max_snapshot_bytes: u64,
    /// The most jobs one group commit takes; the rest wait for the next.
    pub max_jobs_per_group: usize,
    /// The ballast kept against a full disk, and the room writes need to resume (`space.rs`).
    pub space: SpaceOptions,
    /// A deliberately planted storage bug (simulator builds only, see `raft/planted.rs`).
    pub planted_bug: Option<PlantedBug>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 8 << 20,
            max_snapshot_bytes: 4 << 30,
            max_jobs_per_group: 4096,
            space: SpaceOptions { ballast_bytes: 16 << 20, probe_bytes: 8 << 20 },
            planted_bug: None,
        }
    }
}

impl WalOptions {
    pub fn validate(&self) -> StorageResult<()> {
        // A new segment starts with a copy of the term and vote (at most 21 bytes of payload),
        // then must take the largest record.
        let smallest_segment = (SEGMENT_HEADER_BYTES
            + record_bytes(32)
            + record_bytes(self.max_record_bytes as usize)) as u64;
        if self.max_record_bytes < 1024 {
            return Err(StorageError::InvalidOptions(
                "max_record_bytes must be at least 1024".into(),
            ));
        }
        if self.segment_bytes < smallest_segment {
            return Err(StorageError::InvalidOptions(format!(
                "segment_bytes {} cannot hold one record of max_record_bytes {} (needs {smallest_segment})",
                self.segment_bytes, self.max_record_bytes
            )));
        }
        if self.segment_bytes > 1 << 30 {
            return Err(StorageError::InvalidOptions("segment_bytes must be at most 1 GiB".into()));
        }
        if self.max_jobs_per_group == 0 {
            return Err(StorageError::InvalidOptions("max_jobs_per_group must be positive".into()));
        }
        Ok(())
    }

    pub(crate) fn limits(&self) -> RecoveryLimits {
        RecoveryLimits {
            wal: WalLimits {
                segment_bytes: self.segment_bytes,
                max_record_bytes: self.max_record_bytes,
            },
            max_snapshot_bytes: self.max_snapshot_bytes,
            planted_bug: self.planted_bug,
        }
    }
}

/// What a node restarts from.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// Hard state, snapshot metadata (default when there is no snapshot) and the entries after
    /// the snapshot — what `Raft::new` takes.
    pub restored: RestoredState,
    /// The snapshot's state-machine data, when there is a snapshot.
    pub snapshot_data: Option<Bytes>,
    /// What recovery repaired (torn tails truncated, leftovers removed), for the operator.
    pub repairs: Vec<String>,
    /// The data directory was empty or missing and has been initialised.
    pub created: bool,
}

impl Recovered {
    /// A node without a snapshot starts from its cluster's initial configuration at index 0
    /// (the storage does not keep it: the node is told it at every start, as with
    /// `RestoredState::bootstrap`). A snapshot carries its own configuration.
    pub fn with_initial_config(mut self, initial: &ClusterConfig) -> Recovered {
        if self.snapshot_data.is_none() {
            self.restored.snapshot.config = initial.clone();
        }
        self
    }
}

/// One group's storage on its own write-ahead log in its own directory.
pub struct WalStorage<F: FileSystem> {
    group: GroupStorage<F>,
    writer: Option<LogWriter<F>>,
}

impl<F: FileSystem> WalStorage<F> {
    /// Opens the data directory `dir` (creating it if missing; its parent must exist),
    /// recovering its content. Errors name the file and offset at fault.
    pub async fn open(
        fs: F,
        dir: impl Into<PathBuf>,
        options: WalOptions,
    ) -> StorageResult<(Self, Recovered)> {
        options.validate()?;
        let dir = dir.into();
        let parts = recover(&fs, &dir, options.limits()).await?;
        let (writer, mut groups) = assemble(fs, &dir, options, parts).await;
        let (group, recovered) = groups.remove(&SINGLE_GROUP).expect("the single group");
        Ok((WalStorage { group, writer: Some(writer) }, recovered))
    }

    /// The writer future the engine must run (`Engine::run(writer)`). It ends with `Ok` when
    /// the storage handle is dropped, with the failure otherwise. Only the first call gets the
    /// real writer; later calls get a future that fails at once.
    pub fn writer(&mut self) -> impl Future<Output = Result<(), StorageFailure>> + use<F> {
        writer_future(self.writer.take())
    }

    /// Writes a consistent backup of the running node to `path`: the newest durable snapshot
    /// with metadata, checksummed, in one file (see `backup.rs`). Fails if the node has no
    /// snapshot yet — have the engine take one first for an up-to-date backup.
    pub async fn backup_to(&self, path: &Path, source: &BackupSource) -> StorageResult<BackupMeta> {
        self.group.backup_to(path, source).await
    }

    /// The progress published so far (for tests and metrics).
    pub fn current_progress(&self) -> Result<StorageProgress, StorageFailure> {
        self.group.current_progress()
    }
}

impl<F: FileSystem> Storage for WalStorage<F> {
    fn submit(&mut self, job: StorageJob) -> Result<(), StorageFailure> {
        self.group.submit(job)
    }

    async fn progress_changed(&mut self) -> Result<StorageProgress, StorageFailure> {
        self.group.progress_changed().await
    }

    async fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageFailure> {
        self.group.load_snapshot().await
    }
}
