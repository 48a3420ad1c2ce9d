//! [`WalStorage`]: the engine's [`Storage`] on the write-ahead log, the hard-state file and
//! snapshot files, over any [`FileSystem`].
//!
//! Like `MemoryStorage`, it is a handle plus a writer future that the engine runs next to its
//! own loop (no threads, no spawned tasks). The writer takes every job queued so far as one
//! group: all their records are written, then synced once, then the progress is published —
//! so every job that arrives while a sync is in flight shares the next single sync (group
//! commit). Within a group the jobs are carried out in order; the only extra syncs are for a
//! term or vote change (durable before the batch's records, see `hard_state.rs`), a snapshot
//! (written atomically before anything that follows it) and a segment roll.
//!
//! Any failure ends the writer with a [`StorageFailure`] and makes every later call fail:
//! after a failed sync the page cache may have dropped the data, so retrying and carrying on
//! could report lost writes as durable. The node stops and recovers from disk on restart.
//! The exception is a full disk (`space.rs`): the writer raises the disk-full alarm and waits
//! for room, trying the same write again; a local snapshot that does not fit is given up
//! instead (the engine tries again later), so that it never holds up the log.

use std::cell::RefCell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::backup::{BackupMeta, BackupSource, write_backup};
use super::error::{StorageError, StorageResult};
use super::fs::FileSystem;
use super::hard_state::HardStateFile;
use super::log_terms::LogTerms;
use super::record::record_bytes;
use super::recovery::{RecoveryLimits, recover};
use super::segment::SEGMENT_HEADER_BYTES;
use super::snapshot_file::save_snapshot;
use super::space::{DiskSpace, SpaceOptions};
use super::wal::{Wal, WalLimits};
use crate::raft::{
    ClusterConfig, HardState, LogIndex, PersistBatch, PlantedBug, RestoredState, Snapshot,
};
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

    fn limits(&self) -> RecoveryLimits {
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

pub struct WalStorage<F: FileSystem> {
    fs: F,
    options: WalOptions,
    jobs: mpsc::UnboundedSender<StorageJob>,
    progress: watch::Receiver<Result<StorageProgress, StorageFailure>>,
    /// The newest durable snapshot, shared with the writer (it replaces it).
    latest_snapshot: Rc<RefCell<Option<Snapshot>>>,
    writer: Option<Writer<F>>,
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
        let recovered = Recovered {
            restored: parts.restored,
            snapshot_data: parts.snapshot.as_ref().map(|s| s.data.clone()),
            repairs: parts.repairs,
            created: parts.created,
        };
        let snapshot_index = parts.snapshot.as_ref().map_or(0, |s| s.meta.last_index);
        let progress = StorageProgress { snapshot_index, ..StorageProgress::default() };
        let (jobs, queue) = mpsc::unbounded_channel();
        let (publish, progress_rx) = watch::channel(Ok(progress));
        let publish = Rc::new(publish);
        let alarm = publish.clone();
        let space = DiskSpace::new(
            fs.clone(),
            &dir,
            options.space,
            Box::new(move |full| {
                alarm.send_modify(|progress| {
                    if let Ok(progress) = progress {
                        progress.disk_full = full;
                    }
                })
            }),
        );
        space.prepare().await;
        let mut wal = parts.wal;
        wal.wait_for_space_with(space.clone());
        let latest_snapshot = Rc::new(RefCell::new(parts.snapshot));
        let writer = Writer {
            fs: fs.clone(),
            dir,
            options,
            queue,
            publish,
            space,
            wal,
            hard_state: parts.hard_state_file,
            latest_snapshot: latest_snapshot.clone(),
            snapshot_index,
            log_terms: parts.log_terms,
            progress,
            recorded_commit: recovered.restored.hard_state.commit,
            known_commit: recovered.restored.hard_state.commit,
            groups_while_full: 0,
        };
        let storage = WalStorage {
            fs,
            options,
            jobs,
            progress: progress_rx,
            latest_snapshot,
            writer: Some(writer),
        };
        Ok((storage, recovered))
    }

    /// The writer future the engine must run (`Engine::run(writer)`). It ends with `Ok` when
    /// the storage handle is dropped, with the failure otherwise. Only the first call gets the
    /// real writer; later calls get a future that fails at once.
    pub fn writer(&mut self) -> impl Future<Output = Result<(), StorageFailure>> + use<F> {
        let writer = self.writer.take();
        async move {
            match writer {
                Some(writer) => writer.run().await,
                None => Err(StorageFailure("the storage writer was already taken".into())),
            }
        }
    }

    /// Writes a consistent backup of the running node to `path`: the newest durable snapshot
    /// with metadata, checksummed, in one file (see `backup.rs`). Fails if the node has no
    /// snapshot yet — have the engine take one first for an up-to-date backup.
    pub async fn backup_to(&self, path: &Path, source: &BackupSource) -> StorageResult<BackupMeta> {
        let snapshot = self.latest_snapshot.borrow().clone();
        let Some(snapshot) = snapshot else {
            return Err(StorageError::InvalidOptions(
                "no durable snapshot to back up yet; take a snapshot first".into(),
            ));
        };
        write_backup(&self.fs, path, &snapshot, source, self.options.max_snapshot_bytes).await
    }

    /// The progress published so far (for tests and metrics).
    pub fn current_progress(&self) -> Result<StorageProgress, StorageFailure> {
        self.progress.borrow().clone()
    }
}

impl<F: FileSystem> Storage for WalStorage<F> {
    fn submit(&mut self, job: StorageJob) -> Result<(), StorageFailure> {
        if let Err(failure) = &*self.progress.borrow() {
            return Err(failure.clone());
        }
        self.jobs.send(job).map_err(|_| StorageFailure("the storage writer stopped".into()))
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
}

struct Writer<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    options: WalOptions,
    queue: mpsc::UnboundedReceiver<StorageJob>,
    /// Shared with the disk-full alarm, which publishes its changes at once.
    publish: Rc<watch::Sender<Result<StorageProgress, StorageFailure>>>,
    space: DiskSpace<F>,
    wal: Wal<F>,
    hard_state: HardStateFile<F>,
    latest_snapshot: Rc<RefCell<Option<Snapshot>>>,
    snapshot_index: LogIndex,
    /// The terms of the log written so far (to record how an installed snapshot joins it).
    log_terms: LogTerms,
    progress: StorageProgress,
    /// The newest commit index the log (or the hard-state file) records.
    recorded_commit: LogIndex,
    /// The newest commit index the engine has passed on; recorded with the next group that
    /// writes records anyway (see `Committed` in `wal.rs`).
    known_commit: LogIndex,
    /// Groups taken while the disk-full alarm was up (paces the probes of a busy writer).
    groups_while_full: u64,
}

impl<F: FileSystem> Writer<F> {
    /// The next job. While the disk-full alarm is up, the writer also looks for space: every
    /// retry interval when nothing is queued (the engine refuses client writes meanwhile, so
    /// often nothing is written), and every `PROBE_EVERY_GROUPS` groups when the queue is never
    /// empty (a follower kept busy by its leader).
    async fn next_job(&mut self) -> Option<StorageJob> {
        const PROBE_EVERY_GROUPS: u64 = 100;
        loop {
            if !self.space.is_full() {
                return self.queue.recv().await;
            }
            self.groups_while_full += 1;
            if self.groups_while_full.is_multiple_of(PROBE_EVERY_GROUPS) {
                self.space.try_lower().await;
                continue;
            }
            tokio::select! {
                biased;
                job = self.queue.recv() => return job,
                () = self.fs.wait_ms(super::space::RETRY_INTERVAL_MS) => {
                    self.space.try_lower().await;
                }
            }
        }
    }

    /// Publishes the progress (with the alarm's current state); false once nobody listens.
    fn publish_progress(&mut self) -> bool {
        self.progress.disk_full = self.space.is_full();
        self.publish.send(Ok(self.progress)).is_ok()
    }

    async fn run(mut self) -> Result<(), StorageFailure> {
        while let Some(first) = self.next_job().await {
            let mut group = vec![first];
            while group.len() < self.options.max_jobs_per_group {
                match self.queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let compact_to = match self.carry_out(group).await {
                Ok(compact_to) => compact_to,
                Err(error) => return Err(self.fail(error)),
            };
            // Durability is reported before the compaction that follows the sync: the engine
            // acknowledges writes on it, and they must not wait for segment removals.
            if !self.publish_progress() {
                return Ok(()); // nobody is listening any more
            }
            let published = self.progress;
            if let Some(up_to) = compact_to
                && let Err(error) = self.compact(up_to).await
            {
                return Err(self.fail(error));
            }
            self.progress.snapshot_index = self.snapshot_index;
            // A second notice only if there is news: each one wakes the engine.
            if self.progress != published && !self.publish_progress() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn fail(&mut self, error: StorageError) -> StorageFailure {
        let failure = StorageFailure::from(error);
        let _previous = self.publish.send_replace(Err(failure.clone()));
        failure
    }

    /// Carries out a group of jobs up to and including its one log sync. Returns how far the
    /// group's local snapshots allow the log to be compacted.
    async fn carry_out(&mut self, group: Vec<StorageJob>) -> StorageResult<Option<LogIndex>> {
        let mut last_batch = None;
        let mut compact_to: Option<LogIndex> = None;
        for job in group {
            match job {
                StorageJob::Persist(batch) => {
                    self.persist(&batch).await?;
                    if let Some(hard_state) = batch.hard_state {
                        let written = self.hard_state.written();
                        assert_eq!(
                            (hard_state.term, hard_state.vote),
                            (written.term, written.vote),
                            "term and vote changes are made durable before the batch's records"
                        );
                        self.known_commit = self.known_commit.max(hard_state.commit);
                    }
                    last_batch = Some(batch.id);
                }
                StorageJob::SaveSnapshot { snapshot, compact_to: up_to } => {
                    // A local snapshot does not change the log, so it needs no log sync first.
                    if snapshot.meta.last_index > self.snapshot_index {
                        let size_bytes = snapshot.data.len() as u64;
                        match self.save(snapshot).await {
                            Ok(()) => {}
                            Err(error) if error.is_no_space() => {
                                // Nothing depends on it: the log stays uncompacted, the engine
                                // tries again once there is room for one this size.
                                self.space.raise("snapshot", size_bytes).await;
                                self.progress.snapshots_abandoned += 1;
                                tracing::warn!(%error, "a snapshot did not fit on the disk");
                                continue;
                            }
                            Err(error) => return Err(error),
                        }
                    }
                    compact_to = Some(compact_to.map_or(up_to, |c| c.max(up_to)));
                }
            }
        }
        // The commit index rides along only when the group writes to the log anyway: a
        // commit-only group (the engine learns commits once per round trip) would otherwise
        // cost a sync, or a write, of its own.
        if self.known_commit > self.recorded_commit && self.wal.has_unsynced() {
            self.wal.append_committed(self.known_commit).await?;
            self.recorded_commit = self.known_commit;
        }
        // The one sync of the group.
        self.wal.sync().await?;
        if let Some(id) = last_batch {
            assert!(id > self.progress.durable_batch, "persist batches arrive in id order");
            self.progress.durable_batch = id;
        }
        Ok(compact_to)
    }

    /// Compacts the log up to `up_to`, never beyond what a durable snapshot covers.
    async fn compact(&mut self, up_to: LogIndex) -> StorageResult<()> {
        let up_to = up_to.min(self.snapshot_index);
        self.wal.compact(up_to).await?;
        self.progress.compacted_to = self.progress.compacted_to.max(up_to);
        Ok(())
    }

    /// Carries out one persist batch in the order `PersistBatch` prescribes, except that a
    /// term or vote change is made durable first (see `hard_state.rs`).
    async fn persist(&mut self, batch: &PersistBatch) -> StorageResult<()> {
        if let Some(hard_state) = batch.hard_state {
            let written = self.hard_state.written();
            if (hard_state.term, hard_state.vote) != (written.term, written.vote) {
                assert!(hard_state.term >= written.term, "the term never goes back");
                // Records of earlier batches first: batches become durable in id order.
                self.wal.sync().await?;
                // The commit written with it must not claim entries not yet durable: the one
                // recorded by a group that has synced (this group records its own at its end).
                let durable_commit = self.recorded_commit;
                let hard_state = HardState { commit: durable_commit, ..hard_state };
                self.hard_state
                    .write_waiting_for_space(hard_state, true, Some(&self.space))
                    .await?;
                // The second copy, durable with this group (see `TermAndVote` in `wal.rs`).
                self.wal.append_term_and_vote(hard_state.term, hard_state.vote).await?;
            }
        }
        if let Some(snapshot) = &batch.snapshot {
            self.wal.sync().await?;
            // A snapshot from the leader must be kept before it is acknowledged: wait for room.
            loop {
                match self.save(snapshot.clone()).await {
                    Ok(()) => break,
                    Err(StorageError::Io { cause, .. })
                        if self
                            .space
                            .wait_after(&cause, "received snapshot", snapshot.data.len() as u64)
                            .await => {}
                    Err(error) => return Err(error),
                }
            }
            let meta = &snapshot.meta;
            let keeps_suffix = self.log_terms.install(meta.last_index, meta.last_term);
            self.wal
                .append_snapshot_installed(meta.last_index, meta.last_term, keeps_suffix)
                .await?;
        }
        if !batch.entries.is_empty() {
            self.wal.append_entries(&batch.entries).await?;
            self.log_terms.append(&batch.entries);
        }
        Ok(())
    }

    async fn save(&mut self, snapshot: Snapshot) -> StorageResult<()> {
        save_snapshot(&self.fs, &self.dir, &snapshot, self.options.max_snapshot_bytes).await?;
        if snapshot.meta.last_index >= self.snapshot_index {
            self.snapshot_index = snapshot.meta.last_index;
            *self.latest_snapshot.borrow_mut() = Some(snapshot);
        }
        Ok(())
    }
}
