//! The write-ahead log: a sequence of segment files holding framed records (`record.rs`) of
//! Raft entries and snapshot-installation markers, appended in groups and synced once per group.
//!
//! What a record means when the log is replayed (see `recovery.rs`):
//! - `Entries`: contiguous entries; the first one's index truncates every entry at or after it
//!   that the log already holds (Raft overwrites a conflicting suffix this way);
//! - `SnapshotInstalled`: a snapshot received from the leader replaced the log up to its last
//!   index; `keeps_suffix` records whether the entries after it stayed (Raft keeps them when the
//!   log held the snapshot's last entry with the same term — decided by the writer when it
//!   wrote the record, since compaction may later remove the entries the decision rested on).
//!   The snapshot file itself is made durable before this record is written;
//! - `Committed`: the commit index known when its group was written — a hint that lets a
//!   restarted node apply what it already knows is committed, never needed for safety. It rides
//!   in a group that writes records anyway, after them, so it costs neither a write nor a sync
//!   of its own and never claims an entry that is not durable with it;
//! - `TermAndVote`: a second copy of a term or vote change, written in the group that made it
//!   durable in the hard-state file (`hard_state.rs`), and again as the first record of every
//!   new segment. A synced hard-state slot that the disk later damages falls back to the older
//!   slot, which would let the node vote twice in a term; recovery takes the newer of the two
//!   copies instead (the log's survives compaction because every segment starts with one).
//!
//! A log has one of two layouts ([`LogLayout`]): a single group's log, whose records are the
//! records above, or the shared log of a node hosting many groups, where every record names the
//! group it belongs to. The shared log is what lets N groups on a node cost one `fdatasync` per
//! group commit instead of N: their records go into the same segment file, synced once (the
//! design TiKV's raft-engine and CockroachDB's shared write-ahead log follow too). Each group
//! keeps its own hard-state file and snapshots; only the log is shared.
//!
//! Segments roll when the next record does not fit; the full segment is sealed (synced) before
//! the next one receives a record, so only the last segment can end in a torn write. Log
//! compaction removes whole segments from the oldest on, once every entry in them is covered by
//! a durable snapshot; the active (last) segment is never removed. In the shared log a segment
//! goes only once every group with records in it has compacted past them: a group that never
//! compacts pins the segments it wrote to (see `shared_log.rs` for how the writer asks such a
//! group for a snapshot).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{StorageError, StorageResult};
use super::fs::{FileSystem, FsFile, OpenMode};
use super::record::{encode_record, record_bytes};
use super::removal::remove_durably;
use super::segment::{
    SEGMENT_HEADER_BYTES, SegmentHeader, encode_segment_header, segment_file_name,
};
use super::space::DiskSpace;
use crate::raft::{Entry, LogIndex, NodeId, Term};
use crate::shard::ShardId;

/// Whose records a log holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogLayout {
    /// One group's: records carry no group (the format of a node running one group, which
    /// the engine knows as [`SINGLE_GROUP`]).
    Single,
    /// Every group a node hosts: each record starts with its group's id.
    Shared,
}

/// The group a single-group log belongs to.
pub const SINGLE_GROUP: ShardId = ShardId::META;

/// The content of one log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    Entries(Vec<Entry>),
    SnapshotInstalled { last_index: LogIndex, last_term: Term, keeps_suffix: bool },
    Committed { index: LogIndex },
    TermAndVote { term: Term, vote: NodeId },
}

/// The same encoding as [`WalRecord`], borrowing the entries (no copy on the write path).
#[derive(Serialize)]
enum WalRecordRef<'a> {
    Entries(&'a [Entry]),
    SnapshotInstalled { last_index: LogIndex, last_term: Term, keeps_suffix: bool },
    Committed { index: LogIndex },
    TermAndVote { term: Term, vote: NodeId },
}

impl WalRecord {
    /// Decodes a single-group log record's payload (as recovery reads it).
    pub fn decode(payload: &[u8]) -> Result<WalRecord, postcard::Error> {
        postcard::from_bytes(payload)
    }

    /// Decodes a record's payload in a log of `layout`, with the group it belongs to.
    pub fn decode_in(
        layout: LogLayout,
        payload: &[u8],
    ) -> Result<(ShardId, WalRecord), postcard::Error> {
        match layout {
            LogLayout::Single => Ok((SINGLE_GROUP, postcard::from_bytes(payload)?)),
            LogLayout::Shared => postcard::from_bytes(payload),
        }
    }

    /// The highest log index the record holds or installs (0 for none). A commit hint holds
    /// nothing: it must not keep its segment from being compacted.
    pub fn max_index(&self) -> LogIndex {
        match self {
            WalRecord::Entries(entries) => entries.last().map_or(0, |entry| entry.index),
            WalRecord::SnapshotInstalled { last_index, .. } => *last_index,
            WalRecord::Committed { .. } | WalRecord::TermAndVote { .. } => 0,
        }
    }
}

/// Size limits of the log.
#[derive(Copy, Clone, Debug)]
pub struct WalLimits {
    /// Every segment is preallocated to this size.
    pub segment_bytes: u64,
    /// The largest record payload.
    pub max_record_bytes: u32,
}

/// Buffered record bytes are written out once they reach this size, even before the sync.
const WRITE_BUFFER_BYTES: usize = 4 << 20;

/// How far ahead of the data the active segment is filled with written zeros. A segment is
/// created sparse (`set_len`); a sync after writing into a hole must also flush the block
/// allocation, which made each group commit's `fdatasync` about 1.5× slower on ext4. Writing
/// zeros ahead, in the same call as a group's data, allocates the blocks once per this many bytes.
const ZERO_AHEAD_BYTES: u64 = 1 << 20;

/// What the log knows about one segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub seq: u64,
    pub first_lsn: u64,
    /// The highest log index each group's records in it mention (groups with none absent).
    pub max_index: BTreeMap<ShardId, LogIndex>,
    pub path: PathBuf,
}

/// Where the log stands after recovery (or creation).
pub struct WalPosition {
    pub segments: Vec<SegmentInfo>,
    /// Where the next record goes in the last segment.
    pub write_offset: u64,
    pub next_lsn: u64,
}

pub struct Wal<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    limits: WalLimits,
    layout: LogLayout,
    /// Oldest first; the last is the active segment.
    segments: Vec<SegmentInfo>,
    active: F::File,
    /// The active segment's preallocated size.
    active_capacity: u64,
    /// The active segment's bytes before this offset were written (data or zeros), so its
    /// blocks are allocated.
    written_to: u64,
    /// Offset in the active segment where `buffer` starts.
    write_offset: u64,
    buffer: Vec<u8>,
    /// Bytes written to the active segment since its last sync.
    unsynced: bool,
    next_lsn: u64,
    /// Every record up to this lsn is durable.
    durable_lsn: u64,
    /// Set once the writer runs (recovery has none: its errors stop the start): writes that
    /// fail for lack of space wait for room and are tried again (see `space.rs`).
    space: Option<DiskSpace<F>>,
    /// Each group's durable term and vote, copied into every new segment as its first records.
    term_and_vote: BTreeMap<ShardId, (Term, NodeId)>,
    /// How far each hosted group has compacted its log. A group absent here is not hosted
    /// (its records, left by an earlier life of the node, keep no segment).
    compacted_to: BTreeMap<ShardId, LogIndex>,
}

/// Where a write whose data ends at `data_end` extends with zeros: `None` while the data stays
/// within the segment's written part (which ends at `written_to`), otherwise
/// `ZERO_AHEAD_BYTES` past the data, within the segment's `capacity`.
fn zero_fill_end(data_end: u64, written_to: u64, capacity: u64) -> Option<u64> {
    assert!(data_end <= capacity, "a write never passes the segment's end");
    (data_end > written_to).then(|| (data_end + ZERO_AHEAD_BYTES).min(capacity))
}

/// Creates segment `seq` durably: header, preallocation, file sync, directory sync.
pub async fn create_segment<F: FileSystem>(
    fs: &F,
    dir: &Path,
    header: SegmentHeader,
    segment_bytes: u64,
) -> StorageResult<(F::File, PathBuf)> {
    let path = dir.join(segment_file_name(header.seq));
    match create_segment_file(fs, &path, header, segment_bytes).await {
        Ok(file) => {
            file.sync_all().await.map_err(|e| StorageError::io("sync", &path, e))?;
            fs.sync_dir(dir).await.map_err(|e| StorageError::io("sync directory", dir, e))?;
            Ok((file, path))
        }
        Err((operation, error)) => Err(StorageError::io(operation, &path, error)),
    }
}

/// The part of a segment's creation that needs space: a failure of it leaves a file that
/// recovery removes (no header) or that the next attempt removes first.
async fn create_segment_file<F: FileSystem>(
    fs: &F,
    path: &Path,
    header: SegmentHeader,
    segment_bytes: u64,
) -> Result<F::File, (&'static str, std::io::Error)> {
    let file = fs.open(path, OpenMode::CreateNew).await.map_err(|e| ("create", e))?;
    write_segment_start(&file, header, segment_bytes).await?;
    Ok(file)
}

/// Writes a segment's header and preallocates it to `capacity_bytes`.
async fn write_segment_start<File: FsFile>(
    file: &File,
    header: SegmentHeader,
    capacity_bytes: u64,
) -> Result<(), (&'static str, std::io::Error)> {
    file.write_all_at(0, encode_segment_header(header)).await.map_err(|e| ("write", e))?;
    file.set_len(capacity_bytes).await.map_err(|e| ("preallocate", e))
}

/// Gives an existing, all-zero segment file the header `header` and syncs it, keeping the file
/// (and its name) instead of creating it again: recovery does this to the first segment of a
/// directory whose initialisation never completed (see `recovery.rs`). The directory entry is
/// already there; recovery's final directory sync covers it.
pub async fn restart_segment_in_place<File: FsFile>(
    file: &File,
    path: &Path,
    header: SegmentHeader,
    capacity_bytes: u64,
) -> StorageResult<()> {
    assert!(capacity_bytes >= SEGMENT_HEADER_BYTES as u64, "a segment holds at least its header");
    write_segment_start(file, header, capacity_bytes)
        .await
        .map_err(|(operation, error)| StorageError::io(operation, path, error))?;
    file.sync_all().await.map_err(|e| StorageError::io("sync", path, e))
}

impl<F: FileSystem> Wal<F> {
    /// Continues the log recovery found. `active` is the last segment, open for writing, and
    /// everything in the log is durable (recovery synced it).
    /// `groups` are the groups hosted, with how far each has compacted its log.
    pub async fn resume(
        fs: F,
        dir: PathBuf,
        limits: WalLimits,
        layout: LogLayout,
        groups: BTreeMap<ShardId, LogIndex>,
        position: WalPosition,
        active: F::File,
    ) -> StorageResult<Self> {
        assert!(
            layout == LogLayout::Shared || groups.keys().eq([&SINGLE_GROUP]),
            "a single-group log holds one group"
        );
        assert!(!position.segments.is_empty(), "the log always has an active segment");
        let path = &position.segments[position.segments.len() - 1].path;
        let active_capacity = active
            .len_bytes()
            .await
            .map_err(|e| StorageError::io("stat", path, e))?
            .max(limits.segment_bytes);
        Ok(Wal {
            fs,
            dir,
            limits,
            layout,
            segments: position.segments,
            active,
            active_capacity,
            // Which blocks past the data recovery found are allocated is unknown; the tail there
            // holds no data, so zeros may be written over it.
            written_to: position.write_offset,
            write_offset: position.write_offset,
            buffer: Vec::new(),
            unsynced: false,
            next_lsn: position.next_lsn,
            durable_lsn: position.next_lsn - 1,
            space: None,
            term_and_vote: BTreeMap::new(),
            compacted_to: groups,
        })
    }

    /// From now on, writes that fail for lack of space raise `space`'s alarm and wait.
    pub fn wait_for_space_with(&mut self, space: DiskSpace<F>) {
        self.space = Some(space);
    }

    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Whether records were appended since the last sync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced || !self.buffer.is_empty()
    }

    pub fn layout(&self) -> LogLayout {
        self.layout
    }

    /// Appends `group`'s entries, split into records below the record size limit.
    pub async fn append_entries(&mut self, group: ShardId, entries: &[Entry]) -> StorageResult<()> {
        // Chunk on the entries' approximate size, with room to spare for the encoding.
        let budget = u64::from(self.limits.max_record_bytes) / 2;
        let mut start = 0;
        let mut size = 0u64;
        for (at, entry) in entries.iter().enumerate() {
            let entry_size = entry.size_bytes() + 16;
            if at > start && size + entry_size > budget {
                let record = WalRecordRef::Entries(&entries[start..at]);
                self.append(group, &record, entries[at - 1].index).await?;
                start = at;
                size = 0;
            }
            size += entry_size;
        }
        if start < entries.len() {
            let last = entries[entries.len() - 1].index;
            self.append(group, &WalRecordRef::Entries(&entries[start..]), last).await?;
        }
        Ok(())
    }

    pub async fn append_snapshot_installed(
        &mut self,
        group: ShardId,
        last_index: LogIndex,
        last_term: Term,
        keeps_suffix: bool,
    ) -> StorageResult<()> {
        let record = WalRecordRef::SnapshotInstalled { last_index, last_term, keeps_suffix };
        self.append(group, &record, last_index).await
    }

    /// Records a term or vote change of `group` that its hard-state file holds durably (see
    /// `TermAndVote` above), and carries it into every segment from now on.
    pub async fn append_term_and_vote(
        &mut self,
        group: ShardId,
        term: Term,
        vote: NodeId,
    ) -> StorageResult<()> {
        self.term_and_vote.insert(group, (term, vote));
        self.append(group, &WalRecordRef::TermAndVote { term, vote }, 0).await
    }

    /// The term and vote of `group` to carry into new segments, without a record now (after
    /// recovery).
    pub fn carry_term_and_vote(&mut self, group: ShardId, term: Term, vote: NodeId) {
        self.term_and_vote.insert(group, (term, vote));
    }

    /// Records `group`'s commit index (see `Committed` above). The caller appends it only to a
    /// group commit that has other records to write, and only once the entries are appended.
    pub async fn append_committed(&mut self, group: ShardId, index: LogIndex) -> StorageResult<()> {
        self.append(group, &WalRecordRef::Committed { index }, 0).await
    }

    /// A record's payload in this log's layout.
    fn encode(&self, group: ShardId, record: &WalRecordRef<'_>) -> StorageResult<Vec<u8>> {
        let encoded = match self.layout {
            LogLayout::Single => {
                assert_eq!(group, SINGLE_GROUP, "a single-group log holds one group");
                postcard::to_allocvec(record)
            }
            LogLayout::Shared => postcard::to_allocvec(&(group, record)),
        };
        encoded
            .map_err(|e| StorageError::InvalidOptions(format!("cannot encode a log record: {e}")))
    }

    async fn append(
        &mut self,
        group: ShardId,
        record: &WalRecordRef<'_>,
        max_index: LogIndex,
    ) -> StorageResult<()> {
        let payload = self.encode(group, record)?;
        if payload.len() > self.limits.max_record_bytes as usize {
            return Err(StorageError::TooLarge {
                what: "log record",
                size_bytes: payload.len() as u64,
                limit_bytes: u64::from(self.limits.max_record_bytes),
            });
        }
        let needed = record_bytes(payload.len()) as u64;
        let end = self.write_offset + self.buffer.len() as u64 + needed;
        if end > self.active_capacity {
            self.roll().await?;
            let carried: Vec<(ShardId, Term, NodeId)> = self
                .term_and_vote
                .iter()
                .map(|(group, (term, vote))| (*group, *term, *vote))
                .collect();
            for (carried_group, term, vote) in carried {
                // The record being appended is that group's copy already.
                if carried_group == group && matches!(record, WalRecordRef::TermAndVote { .. }) {
                    continue;
                }
                let copy = self.encode(carried_group, &WalRecordRef::TermAndVote { term, vote })?;
                encode_record(self.next_lsn, self.durable_lsn, &copy, &mut self.buffer);
                self.next_lsn += 1;
            }
        }
        encode_record(self.next_lsn, self.durable_lsn, &payload, &mut self.buffer);
        self.next_lsn += 1;
        let active = self.segments.len() - 1;
        let mark = self.segments[active].max_index.entry(group).or_insert(0);
        *mark = (*mark).max(max_index);
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.write_buffer(false).await?;
        }
        Ok(())
    }

    /// Writes the buffered records to the active segment; with `and_sync`, also makes them
    /// (and anything written before) durable, in the same file-system call.
    async fn write_buffer(&mut self, and_sync: bool) -> StorageResult<()> {
        let path = &self.segments[self.segments.len() - 1].path;
        if self.buffer.is_empty() {
            if and_sync && self.unsynced {
                self.active.sync_data().await.map_err(|e| StorageError::io("sync", path, e))?;
                self.unsynced = false;
            }
            return Ok(());
        }
        let len = self.buffer.len() as u64;
        let data_end = self.write_offset + len;
        let mut zero_fill = zero_fill_end(data_end, self.written_to, self.active_capacity);
        let operation = if and_sync { "write and sync" } else { "write" };
        loop {
            // The buffer stays until the write succeeds: a write refused for lack of space is
            // tried again with the same bytes at the same place.
            let mut data = self.buffer.clone();
            if let Some(zeroed_to) = zero_fill {
                // Past the data lies the preallocated tail, which recovery requires to be zeros.
                data.resize((zeroed_to - self.write_offset) as usize, 0);
            }
            let written = if and_sync {
                self.active.write_all_at_and_sync_data(self.write_offset, data).await
            } else {
                self.active.write_all_at(self.write_offset, data).await
            };
            let error = match written {
                Ok(()) => break,
                Err(error) => error,
            };
            let Some(space) = &self.space else {
                return Err(StorageError::io(operation, path, error));
            };
            // Writing zeros ahead only saves work later; on a nearly full disk the data alone
            // may fit (the tail past it is a hole, which reads as zeros too).
            zero_fill = None;
            if !space.wait_after(&error, "log write", len).await {
                return Err(StorageError::io(operation, path, error));
            }
        }
        self.buffer.clear();
        if let Some(zeroed_to) = zero_fill {
            self.written_to = zeroed_to;
        }
        self.write_offset += len;
        self.unsynced = !and_sync;
        Ok(())
    }

    /// Makes every appended record durable (one `fdatasync`, whatever the number of records).
    pub async fn sync(&mut self) -> StorageResult<()> {
        self.write_buffer(true).await?;
        self.durable_lsn = self.next_lsn - 1;
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    async fn roll(&mut self) -> StorageResult<()> {
        self.sync().await?;
        let seq = self.segments[self.segments.len() - 1].seq + 1;
        let header = SegmentHeader { seq, first_lsn: self.next_lsn };
        let (file, path) = self.create_segment_waiting_for_space(header).await?;
        self.segments.push(SegmentInfo {
            seq,
            first_lsn: self.next_lsn,
            max_index: BTreeMap::new(),
            path,
        });
        self.active = file;
        self.active_capacity = self.limits.segment_bytes;
        self.write_offset = SEGMENT_HEADER_BYTES as u64;
        self.written_to = self.write_offset;
        Ok(())
    }

    /// `create_segment`, waiting out a full disk: a partly created file is removed, durably,
    /// before the next attempt creates the same name again (`removal.rs` says why durably).
    async fn create_segment_waiting_for_space(
        &self,
        header: SegmentHeader,
    ) -> StorageResult<(F::File, PathBuf)> {
        let Some(space) = &self.space else {
            return create_segment(&self.fs, &self.dir, header, self.limits.segment_bytes).await;
        };
        let path = self.dir.join(segment_file_name(header.seq));
        loop {
            match create_segment_file(&self.fs, &path, header, self.limits.segment_bytes).await {
                Ok(file) => {
                    file.sync_all().await.map_err(|e| StorageError::io("sync", &path, e))?;
                    self.fs
                        .sync_dir(&self.dir)
                        .await
                        .map_err(|e| StorageError::io("sync directory", &self.dir, e))?;
                    return Ok((file, path));
                }
                Err((operation, error)) => {
                    let removed = match self.fs.entry_kind(&path).await {
                        Ok(Some(_)) => {
                            let partial = std::slice::from_ref(&path);
                            remove_durably(&self.fs, &self.dir, partial).await.is_ok()
                        }
                        Ok(None) => true,
                        Err(_) => false,
                    };
                    let needed = SEGMENT_HEADER_BYTES as u64;
                    if !removed || !space.wait_after(&error, "new log segment", needed).await {
                        return Err(StorageError::io(operation, &path, error));
                    }
                }
            }
        }
    }

    /// Records that `group` no longer needs its entries up to `up_to`, and removes the oldest
    /// segments whose records every hosted group has compacted past (never the active one).
    /// Returns whether any was removed.
    pub async fn compact(&mut self, group: ShardId, up_to: LogIndex) -> StorageResult<bool> {
        let floor = self.compacted_to.get_mut(&group).expect("only hosted groups compact");
        *floor = (*floor).max(up_to);
        let removable = self
            .segments
            .iter()
            .take(self.segments.len() - 1)
            .take_while(|segment| self.is_compacted(segment))
            .count();
        if removable == 0 {
            return Ok(false);
        }
        for segment in self.segments.drain(..removable) {
            self.fs
                .remove_file(&segment.path)
                .await
                .map_err(|e| StorageError::io("remove", &segment.path, e))?;
        }
        // Removing from the oldest on and syncing keeps the surviving segments contiguous even
        // across a crash (a file system may not keep unsynced removals in order).
        self.fs
            .sync_dir(&self.dir)
            .await
            .map_err(|e| StorageError::io("sync directory", &self.dir, e))?;
        Ok(true)
    }

    /// Whether every hosted group has compacted past its records in `segment`.
    fn is_compacted(&self, segment: &SegmentInfo) -> bool {
        segment.max_index.iter().all(|(group, max_index)| {
            self.compacted_to.get(group).is_none_or(|compacted_to| max_index <= compacted_to)
        })
    }

    /// The oldest segment's groups that keep it from being removed, with the index each must
    /// compact to for it to go. Empty when the log is a single segment.
    pub fn pinning_groups(&self) -> Vec<(ShardId, LogIndex)> {
        let Some(oldest) = self.segments.first().filter(|_| self.segments.len() > 1) else {
            return Vec::new();
        };
        oldest
            .max_index
            .iter()
            .filter(|(group, max_index)| {
                self.compacted_to.get(group).is_some_and(|compacted_to| *max_index > compacted_to)
            })
            .map(|(group, max_index)| (*group, *max_index))
            .collect()
    }

    /// How many segment files the log holds.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_written_ahead_only_once_the_data_passes_the_written_part() {
        let capacity = 64 << 20;
        // Within the written part: nothing more to zero.
        assert_eq!(zero_fill_end(4_096, 8_192, capacity), None);
        assert_eq!(zero_fill_end(8_192, 8_192, capacity), None);
        // Past it: zeros reach ZERO_AHEAD_BYTES beyond the data.
        assert_eq!(zero_fill_end(8_193, 8_192, capacity), Some(8_193 + ZERO_AHEAD_BYTES));
        // Never past the segment's preallocated end.
        assert_eq!(zero_fill_end(capacity - 10, 0, capacity), Some(capacity));
        assert_eq!(zero_fill_end(capacity, capacity - 1, capacity), Some(capacity));
    }
}
