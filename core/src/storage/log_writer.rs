//! The writer behind every storage handle: it takes the jobs of one group ([`WalStorage`]) or of
//! all the groups a node hosts (`shared_log.rs`), writes their records into one log, syncs it
//! once, and publishes each group's progress.
//!
//! It takes every job queued so far as one group commit: all their records are written, then
//! synced once, then the progress is published — so every job that arrives while a sync is in
//! flight shares the next single sync, whichever group it belongs to. Within a commit the jobs
//! are carried out in the order they were submitted; the only extra syncs are for a term or
//! vote change (durable before the batch's records, see `hard_state.rs`), a snapshot (written
//! atomically before anything that follows it) and a segment roll.
//!
//! Any failure ends the writer with a [`StorageFailure`] for every group and makes every later
//! call fail: after a failed sync the page cache may have dropped the data, so retrying and
//! carrying on could report lost writes as durable. The node stops and recovers from disk on
//! restart. The exception is a full disk (`space.rs`): the writer raises the disk-full alarm and
//! waits for room, trying the same write again; a local snapshot that does not fit is given up
//! instead (the engine tries again later), so that it never holds up the log.
//!
//! [`WalStorage`]: super::WalStorage

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;

use tokio::sync::{mpsc, watch};

use super::error::{StorageError, StorageResult};
use super::fs::FileSystem;
use super::hard_state::HardStateFile;
use super::log_terms::LogTerms;
use super::recovery::RecoveredGroup;
use super::snapshot_file::save_snapshot;
use super::space::DiskSpace;
use super::wal::Wal;
use super::wal_storage::WalOptions;
use crate::raft::{HardState, LogIndex, NodeId, PersistBatch, Snapshot};
use crate::seams::storage::{StorageFailure, StorageJob, StorageProgress};
use crate::shard::ShardId;

/// What a group's handle and the writer share: the progress channel (the disk-full alarm
/// publishes on it too) and the newest durable snapshot (the writer replaces it).
pub(crate) struct GroupChannels {
    pub publish: Rc<watch::Sender<Result<StorageProgress, StorageFailure>>>,
    pub latest_snapshot: Rc<RefCell<Option<Snapshot>>>,
    /// How far the writer asks the group to compact (`Storage::compaction_wanted`).
    pub compaction_wanted: Rc<Cell<LogIndex>>,
}

/// The writer asks the groups keeping the oldest segment to compact once the log holds more
/// segments than this: enough that a group's own snapshot schedule usually frees them first.
const SEGMENTS_BEFORE_ASKING: usize = 3;

pub(crate) struct LogWriter<F: FileSystem> {
    fs: F,
    options: WalOptions,
    queue: mpsc::UnboundedReceiver<(ShardId, StorageJob)>,
    space: DiskSpace<F>,
    wal: Wal<F>,
    groups: BTreeMap<ShardId, GroupWriter<F>>,
    /// Commits taken while the disk-full alarm was up (paces the probes of a busy writer).
    commits_while_full: u64,
}

/// What the writer keeps for one group.
struct GroupWriter<F: FileSystem> {
    /// Where the group's hard-state file and snapshots are.
    dir: PathBuf,
    channels: GroupChannels,
    hard_state: HardStateFile<F>,
    snapshot_index: LogIndex,
    /// The terms of the group's log written so far (to record how an installed snapshot joins
    /// it).
    log_terms: LogTerms,
    progress: StorageProgress,
    /// The newest commit index the log (or the hard-state file) records.
    recorded_commit: LogIndex,
    /// The newest commit index the engine has passed on; recorded with the next commit that
    /// writes records anyway (see `Committed` in `wal.rs`).
    known_commit: LogIndex,
}

/// What one group commit did for one group.
#[derive(Default)]
struct GroupOutcome {
    /// The newest persist batch it made durable.
    last_batch: Option<u64>,
    /// How far the group's local snapshots allow its log to be compacted.
    compact_to: Option<LogIndex>,
}

/// The future a storage handle hands the engine to run: the writer, if the handle still has it
/// (only the first call gets it; later ones get a future that fails at once).
pub(crate) async fn writer_future<F: FileSystem>(
    writer: Option<LogWriter<F>>,
) -> Result<(), StorageFailure> {
    match writer {
        Some(writer) => writer.run().await,
        None => Err(StorageFailure("the storage writer was already taken".into())),
    }
}

/// The writer's state of `shard`. Jobs come only through the handles of the groups the writer
/// was built with, so every shard it meets is one of them.
fn hosted<F: FileSystem>(
    groups: &mut BTreeMap<ShardId, GroupWriter<F>>,
    shard: ShardId,
) -> &mut GroupWriter<F> {
    groups.get_mut(&shard).expect("jobs come only from the groups the writer hosts")
}

impl<F: FileSystem> LogWriter<F> {
    /// A writer for the groups recovery found, each with its channels.
    pub fn new(
        fs: F,
        options: WalOptions,
        queue: mpsc::UnboundedReceiver<(ShardId, StorageJob)>,
        space: DiskSpace<F>,
        wal: Wal<F>,
        groups: Vec<(ShardId, RecoveredGroup<F>, GroupChannels)>,
    ) -> Self {
        let groups = groups
            .into_iter()
            .map(|(shard, recovered, channels)| {
                let snapshot_index = recovered.snapshot.as_ref().map_or(0, |s| s.meta.last_index);
                let commit = recovered.restored.hard_state.commit;
                let progress =
                    *channels.publish.borrow().as_ref().expect("a new writer's progress");
                let group = GroupWriter {
                    dir: recovered.dir,
                    progress,
                    channels,
                    hard_state: recovered.hard_state_file,
                    snapshot_index,
                    log_terms: recovered.log_terms,
                    recorded_commit: commit,
                    known_commit: commit,
                };
                (shard, group)
            })
            .collect();
        LogWriter { fs, options, queue, space, wal, groups, commits_while_full: 0 }
    }

    /// The next job. While the disk-full alarm is up, the writer also looks for space: every
    /// retry interval when nothing is queued (the engine refuses client writes meanwhile, so
    /// often nothing is written), and every `PROBE_EVERY_COMMITS` commits when the queue is
    /// never empty (a follower kept busy by its leader).
    async fn next_job(&mut self) -> Option<(ShardId, StorageJob)> {
        const PROBE_EVERY_COMMITS: u64 = 100;
        loop {
            if !self.space.is_full() {
                return self.queue.recv().await;
            }
            self.commits_while_full += 1;
            if self.commits_while_full.is_multiple_of(PROBE_EVERY_COMMITS) {
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

    /// Publishes the progress of `shards` (with the alarm's current state); false once nobody
    /// listens to any of them.
    fn publish_progress(&mut self, shards: &BTreeSet<ShardId>) -> bool {
        let disk_full = self.space.is_full();
        let mut listened = false;
        for shard in shards {
            let group = hosted(&mut self.groups, *shard);
            group.progress.disk_full = disk_full;
            listened |= group.channels.publish.send(Ok(group.progress)).is_ok();
        }
        listened
    }

    pub async fn run(mut self) -> Result<(), StorageFailure> {
        while let Some(first) = self.next_job().await {
            let mut commit = vec![first];
            while commit.len() < self.options.max_jobs_per_group {
                match self.queue.try_recv() {
                    Ok(job) => commit.push(job),
                    Err(_) => break,
                }
            }
            let outcomes = match self.carry_out(commit).await {
                Ok(outcomes) => outcomes,
                Err(error) => return Err(self.fail(error)),
            };
            let touched: BTreeSet<ShardId> = outcomes.keys().copied().collect();
            // Durability is reported before the compaction that follows the sync: the engine
            // acknowledges writes on it, and they must not wait for segment removals.
            if !self.publish_progress(&touched) {
                return Ok(()); // nobody is listening any more
            }
            let mut changed = BTreeSet::new();
            for (shard, outcome) in outcomes {
                let published = self.groups[&shard].progress;
                if let Some(up_to) = outcome.compact_to
                    && let Err(error) = self.compact(shard, up_to).await
                {
                    return Err(self.fail(error));
                }
                let group = hosted(&mut self.groups, shard);
                group.progress.snapshot_index = group.snapshot_index;
                // A second notice only if there is news: each one wakes the engine.
                if group.progress != published {
                    changed.insert(shard);
                }
            }
            if !changed.is_empty() && !self.publish_progress(&changed) {
                return Ok(());
            }
            self.ask_groups_keeping_the_oldest_segment();
        }
        Ok(())
    }

    /// When the log has grown past `SEGMENTS_BEFORE_ASKING` segments, asks each group whose
    /// records keep the oldest one to compact past them.
    fn ask_groups_keeping_the_oldest_segment(&mut self) {
        if self.wal.segment_count() <= SEGMENTS_BEFORE_ASKING {
            return;
        }
        for (shard, index) in self.wal.pinning_groups() {
            let wanted = &self.groups[&shard].channels.compaction_wanted;
            if index > wanted.get() {
                tracing::debug!(%shard, index, "asking a group to compact the shared log");
                wanted.set(index);
            }
        }
    }

    fn fail(&mut self, error: StorageError) -> StorageFailure {
        let failure = StorageFailure::from(error);
        for group in self.groups.values() {
            let _previous = group.channels.publish.send_replace(Err(failure.clone()));
        }
        failure
    }

    /// Carries out a group commit up to and including its one log sync. Returns what it did
    /// for each group that had a job in it.
    async fn carry_out(
        &mut self,
        commit: Vec<(ShardId, StorageJob)>,
    ) -> StorageResult<BTreeMap<ShardId, GroupOutcome>> {
        let mut outcomes: BTreeMap<ShardId, GroupOutcome> = BTreeMap::new();
        self.make_term_and_vote_changes_durable(&commit).await?;
        for (shard, job) in commit {
            let outcome = outcomes.entry(shard).or_default();
            match job {
                StorageJob::Persist(batch) => {
                    self.persist(shard, &batch).await?;
                    let group = hosted(&mut self.groups, shard);
                    if let Some(hard_state) = batch.hard_state {
                        // Durable already, or overtaken by a later batch of the same commit.
                        let written = group.hard_state.written();
                        assert!(
                            (written.term, written.vote) == (hard_state.term, hard_state.vote)
                                || written.term > hard_state.term
                                || hard_state.vote == NodeId::NONE,
                            "term and vote changes are made durable before the batch's records"
                        );
                        group.known_commit = group.known_commit.max(hard_state.commit);
                    }
                    outcome.last_batch = Some(batch.id);
                }
                StorageJob::SaveSnapshot { snapshot, compact_to: up_to } => {
                    // A local snapshot does not change the log, so it needs no log sync first.
                    if snapshot.meta.last_index > self.groups[&shard].snapshot_index {
                        let size_bytes = snapshot.data.len() as u64;
                        match self.save(shard, snapshot).await {
                            Ok(()) => {}
                            Err(error) if error.is_no_space() => {
                                // Nothing depends on it: the log stays uncompacted, the engine
                                // tries again once there is room for one this size.
                                self.space.raise("snapshot", size_bytes).await;
                                let group = hosted(&mut self.groups, shard);
                                group.progress.snapshots_abandoned += 1;
                                tracing::warn!(%error, %shard, "a snapshot did not fit on the disk");
                                continue;
                            }
                            Err(error) => return Err(error),
                        }
                    }
                    outcome.compact_to = Some(outcome.compact_to.map_or(up_to, |c| c.max(up_to)));
                }
            }
        }
        // Commit indexes ride along only when the commit writes to the log anyway: a
        // commit-only group (the engine learns commits once per round trip) would otherwise
        // cost a sync, or a write, of its own.
        if self.wal.has_unsynced() {
            for shard in outcomes.keys() {
                let group = hosted(&mut self.groups, *shard);
                if group.known_commit > group.recorded_commit {
                    self.wal.append_committed(*shard, group.known_commit).await?;
                    group.recorded_commit = group.known_commit;
                }
            }
        }
        // The one sync of the commit.
        self.wal.sync().await?;
        for (shard, outcome) in &outcomes {
            if let Some(id) = outcome.last_batch {
                let group = hosted(&mut self.groups, *shard);
                assert!(id > group.progress.durable_batch, "persist batches arrive in id order");
                group.progress.durable_batch = id;
            }
        }
        Ok(outcomes)
    }

    /// Compacts `shard`'s log up to `up_to`, never beyond what a durable snapshot covers.
    async fn compact(&mut self, shard: ShardId, up_to: LogIndex) -> StorageResult<()> {
        let group = hosted(&mut self.groups, shard);
        let up_to = up_to.min(group.snapshot_index);
        group.progress.compacted_to = group.progress.compacted_to.max(up_to);
        self.wal.compact(shard, up_to).await?;
        Ok(())
    }

    /// Makes every term or vote change of `commit` durable before any of its records are
    /// written (`hard_state.rs`): the log's earlier records are synced once, then each changed
    /// group's hard-state file is written and synced, all groups' at once, and the log copy of
    /// each change appended. At once because elections come in waves: when a node with a
    /// thousand groups restarts, or a peer dies, hundreds of groups change term together, and
    /// their syncs one after the other took longer than an election timeout, so the elections
    /// never ended (3 nodes × 500 groups: none elected in 30 s). Concurrent syncs of different
    /// files share the file system's journal commits. A group with several batches in the
    /// commit writes its last state only: all of them become durable together.
    async fn make_term_and_vote_changes_durable(
        &mut self,
        commit: &[(ShardId, StorageJob)],
    ) -> StorageResult<()> {
        let mut changed: BTreeMap<ShardId, HardState> = BTreeMap::new();
        for (shard, job) in commit {
            let StorageJob::Persist(batch) = job else { continue };
            let Some(hard_state) = batch.hard_state else { continue };
            let written = self.groups[shard].hard_state.written();
            if (hard_state.term, hard_state.vote) != (written.term, written.vote) {
                assert!(hard_state.term >= written.term, "the term never goes back");
                changed.insert(*shard, hard_state);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        // Records of earlier commits' batches first: batches become durable in id order.
        self.wal.sync().await?;
        let space = &self.space;
        let writes = self.groups.iter_mut().filter_map(|(shard, group)| {
            let hard_state = changed.get(shard)?;
            // The commit written with it must not claim entries not yet durable: the one
            // recorded by a commit that has synced (this commit records its own at its end).
            let hard_state = HardState { commit: group.recorded_commit, ..*hard_state };
            Some(group.hard_state.write_waiting_for_space(hard_state, true, Some(space)))
        });
        for written in futures::future::join_all(writes).await {
            written?;
        }
        for (shard, hard_state) in &changed {
            // The second copy, durable with this commit (see `TermAndVote` in `wal.rs`).
            self.wal.append_term_and_vote(*shard, hard_state.term, hard_state.vote).await?;
        }
        Ok(())
    }

    /// Carries out one persist batch in the order `PersistBatch` prescribes; its term or vote
    /// change was made durable before the commit's records
    /// (`make_term_and_vote_changes_durable`).
    async fn persist(&mut self, shard: ShardId, batch: &PersistBatch) -> StorageResult<()> {
        if let Some(snapshot) = &batch.snapshot {
            self.wal.sync().await?;
            // A snapshot from the leader must be kept before it is acknowledged: wait for room.
            loop {
                match self.save(shard, snapshot.clone()).await {
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
            let group = hosted(&mut self.groups, shard);
            let keeps_suffix = group.log_terms.install(meta.last_index, meta.last_term);
            self.wal
                .append_snapshot_installed(shard, meta.last_index, meta.last_term, keeps_suffix)
                .await?;
        }
        if !batch.entries.is_empty() {
            self.wal.append_entries(shard, &batch.entries).await?;
            let group = hosted(&mut self.groups, shard);
            group.log_terms.append(&batch.entries);
        }
        Ok(())
    }

    async fn save(&mut self, shard: ShardId, snapshot: Snapshot) -> StorageResult<()> {
        let group = hosted(&mut self.groups, shard);
        save_snapshot(&self.fs, &group.dir, &snapshot, self.options.max_snapshot_bytes).await?;
        if snapshot.meta.last_index >= group.snapshot_index {
            group.snapshot_index = snapshot.meta.last_index;
            *group.channels.latest_snapshot.borrow_mut() = Some(snapshot);
        }
        Ok(())
    }
}
