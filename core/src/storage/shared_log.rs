//! [`SharedLog`]: the storage of a node hosting many Raft groups — one write-ahead log for all
//! of them, so that a group commit costs one `fdatasync` however many groups it carries.
//!
//! Why one log: with a log per group, N groups with writes in flight cost N syncs per round;
//! on a disk where a sync takes a millisecond that caps a node at about a thousand group
//! commits per second across all its groups, and an idle group's log still costs a file
//! descriptor and a preallocated segment. With one log, every group's records go into the same
//! segment and one `fdatasync` makes all of them durable (TiKV's raft-engine and CockroachDB's
//! shared write-ahead log make the same choice). What stays per group is small and rarely
//! written: the hard-state file (written on a term or vote change) and the snapshots.
//!
//! The price is compaction: a segment is removed only once every group with records in it has
//! compacted past them (`wal.rs`), so one quiet group could keep old segments alive. Once the
//! log holds more than a few segments, the writer asks the groups that keep the oldest one for
//! a compaction past their records in it ([`Storage::compaction_wanted`]); the engine then
//! takes a snapshot of each such group early, whatever its own schedule.
//!
//! Layout of the directory:
//!
//! ```text
//! 00000000000000000007.wal   the shared log's segments; every record names its group
//! shard-0/hard_state         each group's hard state and snapshots, as in a single group's
//! shard-0/snapshot-….snap    directory
//! shard-3/…
//! ```
//!
//! [`Storage::compaction_wanted`]: crate::seams::storage::Storage::compaction_wanted

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tokio::sync::{mpsc, watch};

use super::error::StorageResult;
use super::fs::FileSystem;
use super::group_storage::GroupStorage;
use super::log_writer::{GroupChannels, LogWriter, writer_future};
use super::recovery::{RecoveredParts, recover_shared};
use super::space::DiskSpace;
use super::wal_storage::{Recovered, WalOptions};
use crate::seams::storage::{StorageFailure, StorageProgress};
use crate::shard::ShardId;

/// The shared log of a node: opened with the groups it hosts, it hands out one
/// [`GroupStorage`] per group and one writer future for all of them.
pub struct SharedLog<F: FileSystem> {
    writer: Option<LogWriter<F>>,
}

impl<F: FileSystem> SharedLog<F> {
    /// Opens the shared log in `dir` (creating it if missing; its parent must exist) for the
    /// groups `hosted`, recovering every group. Errors name the file and offset at fault.
    pub async fn open(
        fs: F,
        dir: impl Into<PathBuf>,
        hosted: &[ShardId],
        options: WalOptions,
    ) -> StorageResult<(Self, BTreeMap<ShardId, (GroupStorage<F>, Recovered)>)> {
        options.validate()?;
        let dir = dir.into();
        let parts = recover_shared(&fs, &dir, hosted, options.limits()).await?;
        let (writer, groups) = assemble(fs, &dir, options, parts).await;
        Ok((SharedLog { writer: Some(writer) }, groups))
    }

    /// The writer future the engine must run, for all the groups. It ends with `Ok` when every
    /// group's handle is dropped, with the failure otherwise. Only the first call gets the real
    /// writer; later calls get a future that fails at once.
    pub fn writer(&mut self) -> impl Future<Output = Result<(), StorageFailure>> + use<F> {
        writer_future(self.writer.take())
    }
}

/// Builds the writer and each group's handle from what recovery found: the progress channels,
/// the disk-space alarm (which publishes on every group's channel), the job queue.
pub(crate) async fn assemble<F: FileSystem>(
    fs: F,
    dir: &Path,
    options: WalOptions,
    parts: RecoveredParts<F>,
) -> (LogWriter<F>, BTreeMap<ShardId, (GroupStorage<F>, Recovered)>) {
    let RecoveredParts { mut wal, groups, repairs, created } = parts;
    let (jobs, queue) = mpsc::unbounded_channel();
    let mut publishers = Vec::new();
    let mut handles = BTreeMap::new();
    let mut writer_groups = Vec::new();
    for (shard, group) in groups {
        let snapshot_index = group.snapshot.as_ref().map_or(0, |s| s.meta.last_index);
        let progress = StorageProgress { snapshot_index, ..StorageProgress::default() };
        let (publish, progress_rx) = watch::channel(Ok(progress));
        let publish = Rc::new(publish);
        publishers.push(publish.clone());
        let latest_snapshot = Rc::new(RefCell::new(group.snapshot.clone()));
        let compaction_wanted = Rc::new(Cell::new(0));
        let recovered = Recovered {
            restored: group.restored.clone(),
            snapshot_data: group.snapshot.as_ref().map(|s| s.data.clone()),
            repairs: repairs.clone(),
            created,
        };
        let handle = GroupStorage {
            fs: fs.clone(),
            shard,
            max_snapshot_bytes: options.max_snapshot_bytes,
            jobs: jobs.clone(),
            progress: progress_rx,
            latest_snapshot: latest_snapshot.clone(),
            compaction_wanted: compaction_wanted.clone(),
        };
        handles.insert(shard, (handle, recovered));
        writer_groups.push((
            shard,
            group,
            GroupChannels { publish, latest_snapshot, compaction_wanted },
        ));
    }
    drop(jobs);
    let space = DiskSpace::new(
        fs.clone(),
        dir,
        options.space,
        Box::new(move |full| {
            for publish in &publishers {
                publish.send_modify(|progress| {
                    if let Ok(progress) = progress {
                        progress.disk_full = full;
                    }
                });
            }
        }),
    );
    space.prepare().await;
    wal.wait_for_space_with(space.clone());
    let writer = LogWriter::new(fs, options, queue, space, wal, writer_groups);
    (writer, handles)
}
