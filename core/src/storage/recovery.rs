//! Recovery: turn a data directory into the state Raft restarts from, repairing only what a
//! crash can leave behind and refusing everything else with an error naming file and offset.
//!
//! Steps:
//! 1. a missing or empty directory is initialised (first segment, then the hard-state file —
//!    the hard-state file is created last, so its presence marks a completed initialisation);
//!    an initialisation a crash interrupted (segments but no hard-state file, and no record in
//!    them) is redone after its leftovers are removed *durably*, since it creates the first
//!    segment under the same name again (`removal.rs` says why that order matters);
//! 2. the hard state is read (`hard_state.rs`);
//! 3. leftover temporary snapshot files are removed (never renamed, never reported durable) and
//!    the newest snapshot that passes its checks is loaded; an older one is used only when the
//!    log still connects to it (otherwise the damaged newest one is reported);
//! 4. the segments are read in order; their sequence numbers and record numbers must be
//!    contiguous; the last segment's torn tail is truncated (`segment.rs` says exactly when a
//!    tail counts as torn) after a second read confirms the same bytes; a last segment whose
//!    creation never completed (no header, nothing written) is removed — except the only
//!    segment of a directory that was never used, which gets its header in place;
//! 5. the records are replayed into the log and the log is joined to the snapshot; the newest
//!    `Committed` record, when newer than the hard state's commit, replaces it;
//! 6. the last segment, the hard state and the directory are synced: after a process crash
//!    the page cache may hold writes the disk does not, and Raft will treat all of it as
//!    durable.
//!
//! Repairs done are listed in [`RecoveredParts::repairs`] for the operator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{StorageError, StorageResult};
use super::fs::{EntryKind, FileSystem, FsFile, OpenMode, read_whole_file};
use super::hard_state::{HARD_STATE_FILE_NAME, HardStateFile};
use super::log_terms::LogTerms;
use super::removal::remove_durably;
use super::segment::{
    HeaderRead, SEGMENT_HEADER_BYTES, SegmentEnd, SegmentHeader, decode_segment_header,
    parse_segment_file_name, scan_segment, segment_file_name,
};
use super::snapshot_file::{
    is_snapshot_temp_file_name, parse_snapshot_file_name, read_snapshot_file,
};
use super::wal::{
    LogLayout, SINGLE_GROUP, SegmentInfo, Wal, WalLimits, WalPosition, WalRecord, create_segment,
    restart_segment_in_place,
};
use crate::raft::planted::is_planted;
use crate::raft::{
    Entry, HardState, LogIndex, NodeId, PlantedBug, RestoredState, Snapshot, SnapshotMeta, Term,
};
use crate::shard::ShardId;

/// No segment file is read if larger than this (a segment is never written beyond its
/// preallocated size; this only bounds what a damaged directory can make us allocate).
const MAX_SEGMENT_FILE_BYTES: u64 = 1 << 30;

#[derive(Copy, Clone, Debug)]
pub struct RecoveryLimits {
    pub wal: WalLimits,
    pub max_snapshot_bytes: u64,
    pub planted_bug: Option<PlantedBug>,
}

/// Everything recovery hands to the writer and to the engine.
pub struct RecoveredParts<F: FileSystem> {
    pub wal: Wal<F>,
    /// Each group's part, by group.
    pub groups: BTreeMap<ShardId, RecoveredGroup<F>>,
    /// What recovery repaired, one sentence each.
    pub repairs: Vec<String>,
    /// The directory was empty (or missing) and has been initialised.
    pub created: bool,
}

/// One group's part of what recovery found.
pub struct RecoveredGroup<F: FileSystem> {
    /// Where the group's hard-state file and snapshots are.
    pub dir: PathBuf,
    pub hard_state_file: HardStateFile<F>,
    pub snapshot: Option<Snapshot>,
    /// Snapshot metadata (default when none), the hard state, and the entries after the
    /// snapshot, contiguous.
    pub restored: RestoredState,
    /// The terms of the recovered log, for the writer.
    pub log_terms: LogTerms,
}

/// The directory, inside a shared log's directory, of one group's hard state and snapshots.
pub fn group_dir(dir: &Path, group: ShardId) -> PathBuf {
    dir.join(format!("shard-{}", group.0))
}

/// What a data directory holds, by kind.
#[derive(Default)]
struct Listing {
    hard_state: bool,
    segments: Vec<u64>,
    snapshots: Vec<LogIndex>,
    snapshot_temps: Vec<String>,
}

async fn list<F: FileSystem>(fs: &F, dir: &Path) -> StorageResult<Listing> {
    let mut listing = Listing::default();
    for entry in fs.list_dir(dir).await.map_err(|e| StorageError::io("list", dir, e))? {
        if entry.kind != EntryKind::File {
            continue;
        }
        if entry.name == HARD_STATE_FILE_NAME {
            listing.hard_state = true;
        } else if let Some(seq) = parse_segment_file_name(&entry.name) {
            listing.segments.push(seq);
        } else if let Some(index) = parse_snapshot_file_name(&entry.name) {
            listing.snapshots.push(index);
        } else if is_snapshot_temp_file_name(&entry.name) {
            listing.snapshot_temps.push(entry.name);
        }
        // Anything else is not ours (an operator's note, lost+found): left alone.
    }
    listing.segments.sort_unstable();
    listing.snapshots.sort_unstable();
    Ok(listing)
}

/// Creates `dir` if it is missing, durably; a file in its place is refused.
async fn ensure_dir<F: FileSystem>(fs: &F, dir: &Path) -> StorageResult<()> {
    match fs.entry_kind(dir).await.map_err(|e| StorageError::io("stat", dir, e))? {
        Some(EntryKind::Directory) => Ok(()),
        Some(EntryKind::File) => {
            Err(StorageError::inconsistent(dir, "the data directory is a file"))
        }
        None => {
            fs.create_dir(dir).await.map_err(|e| StorageError::io("create directory", dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs.sync_dir(parent)
                    .await
                    .map_err(|e| StorageError::io("sync directory", parent, e))?;
            }
            Ok(())
        }
    }
}

/// Opens (recovering) or creates the data directory `dir` of a single group.
pub async fn recover<F: FileSystem>(
    fs: &F,
    dir: &Path,
    limits: RecoveryLimits,
) -> StorageResult<RecoveredParts<F>> {
    let mut repairs = Vec::new();
    ensure_dir(fs, dir).await?;
    let listing = list(fs, dir).await?;
    if !listing.hard_state {
        if !listing.snapshots.is_empty() {
            return Err(StorageError::inconsistent(
                dir,
                "snapshots exist but the hard-state file is missing",
            ));
        }
        // Initialisation is the only thing that writes segments before the hard-state file, and
        // it writes no records: segments holding records mean the hard state was lost.
        for seq in &listing.segments {
            let path = dir.join(segment_file_name(*seq));
            let file = fs
                .open(&path, OpenMode::Read)
                .await
                .map_err(|e| StorageError::io("open", &path, e))?;
            let image = read_whole_file(&file, MAX_SEGMENT_FILE_BYTES)
                .await
                .map_err(|e| StorageError::io("read", &path, e))?;
            if image.len() > SEGMENT_HEADER_BYTES
                && image[SEGMENT_HEADER_BYTES..].iter().any(|b| *b != 0)
            {
                return Err(StorageError::inconsistent(
                    dir,
                    format!(
                        "the hard-state file is missing but {} holds log records",
                        path.display()
                    ),
                ));
            }
        }
        // Durably, before `initialise` creates the first segment under the same name again
        // (`removal.rs`).
        let segments: Vec<PathBuf> =
            listing.segments.iter().map(|seq| dir.join(segment_file_name(*seq))).collect();
        let temps = listing.snapshot_temps.iter().map(|name| dir.join(name));
        let leftovers: Vec<PathBuf> = segments.iter().cloned().chain(temps).collect();
        remove_durably(fs, dir, &leftovers).await?;
        for path in &segments {
            repairs
                .push(format!("removed {} left by an interrupted initialisation", path.display()));
        }
        return initialise(
            fs,
            dir,
            LogLayout::Single,
            &[(SINGLE_GROUP, dir.to_path_buf())],
            limits,
            repairs,
        )
        .await;
    }

    let opened = open_group_files(fs, dir, &listing, &mut repairs).await?;
    // A directory whose initialisation stopped after the hard-state file was created but
    // before the first segment's header became durable: the node never ran on it.
    let never_ran = opened.hard_state == HardState::default() && listing.snapshots.is_empty();
    let log =
        read_log(fs, dir, &listing.segments, LogLayout::Single, limits, never_ran, &mut repairs)
            .await?;
    let replay = log.replays.get(&SINGLE_GROUP).cloned().unwrap_or_default();
    let group =
        recover_group(fs, dir, opened, &listing.snapshots, &replay, limits, &mut repairs).await?;
    let groups = BTreeMap::from([(SINGLE_GROUP, group)]);
    finish(fs, dir, LogLayout::Single, log, groups, limits, repairs).await
}

/// Opens (recovering) or creates the shared log in `dir` of a node hosting `hosted` groups
/// (`wal.rs`, "layouts"): the log's segments in `dir`, each group's hard-state file and
/// snapshots in its own directory (`group_dir`).
///
/// A group without a hard-state file has never run on this node and starts empty — unless the
/// log holds records of it or it has snapshots, which means its hard state was lost: refused,
/// like a single group's. Records of groups not hosted any more are kept until compaction
/// removes their segments (they keep none from being removed).
pub async fn recover_shared<F: FileSystem>(
    fs: &F,
    dir: &Path,
    hosted: &[ShardId],
    limits: RecoveryLimits,
) -> StorageResult<RecoveredParts<F>> {
    let mut repairs = Vec::new();
    ensure_dir(fs, dir).await?;
    let listing = list(fs, dir).await?;
    if listing.hard_state || !listing.snapshots.is_empty() {
        return Err(StorageError::inconsistent(
            dir,
            "this directory holds a single group's data, not a shared log",
        ));
    }
    let mut listings = BTreeMap::new();
    for &group in hosted {
        let group_dir = group_dir(dir, group);
        ensure_dir(fs, &group_dir).await?;
        let group_listing = list(fs, &group_dir).await?;
        if !group_listing.segments.is_empty() {
            return Err(StorageError::inconsistent(
                &group_dir,
                "log segments in a group's directory",
            ));
        }
        listings.insert(group, (group_dir, group_listing));
    }
    if listing.segments.is_empty() {
        if let Some((group_dir, _)) =
            listings.values().find(|(_, l)| l.hard_state || !l.snapshots.is_empty())
        {
            return Err(StorageError::inconsistent(
                group_dir,
                "a group has a hard state or snapshots but the shared log has no segment",
            ));
        }
        for (group_dir, group_listing) in listings.values() {
            let temps: Vec<PathBuf> =
                group_listing.snapshot_temps.iter().map(|name| group_dir.join(name)).collect();
            remove_durably(fs, group_dir, &temps).await?;
        }
        let groups: Vec<(ShardId, PathBuf)> =
            listings.into_iter().map(|(group, (group_dir, _))| (group, group_dir)).collect();
        return initialise(fs, dir, LogLayout::Shared, &groups, limits, repairs).await;
    }
    let mut opened = BTreeMap::new();
    for (group, (group_dir, group_listing)) in &listings {
        if group_listing.hard_state {
            let files = open_group_files(fs, group_dir, group_listing, &mut repairs).await?;
            opened.insert(*group, files);
        }
    }
    // The log was created before any group's hard-state file; if its first segment never got
    // its header, no group has ever run here.
    let never_ran = listings.values().all(|(_, l)| l.snapshots.is_empty())
        && opened.values().all(|files| files.hard_state == HardState::default());
    let log =
        read_log(fs, dir, &listing.segments, LogLayout::Shared, limits, never_ran, &mut repairs)
            .await?;
    let mut groups = BTreeMap::new();
    for (group, (group_dir, group_listing)) in listings {
        let replay = log.replays.get(&group).cloned().unwrap_or_default();
        let recovered = match opened.remove(&group) {
            Some(files) => {
                recover_group(
                    fs,
                    &group_dir,
                    files,
                    &group_listing.snapshots,
                    &replay,
                    limits,
                    &mut repairs,
                )
                .await?
            }
            None => {
                if !group_listing.snapshots.is_empty() || !replay.is_empty() {
                    return Err(StorageError::inconsistent(
                        &group_dir,
                        format!(
                            "the hard-state file of {group} is missing but its snapshots or log records exist"
                        ),
                    ));
                }
                let temps: Vec<PathBuf> =
                    group_listing.snapshot_temps.iter().map(|name| group_dir.join(name)).collect();
                remove_durably(fs, &group_dir, &temps).await?;
                (new_group(fs, &group_dir).await?, false)
            }
        };
        groups.insert(group, recovered);
    }
    finish(fs, dir, LogLayout::Shared, log, groups, limits, repairs).await
}

/// A group's hard-state file, opened, before the log is read.
struct GroupFiles<F: FileSystem> {
    hard_state_file: HardStateFile<F>,
    hard_state: HardState,
}

/// Opens a group's hard-state file and removes its incomplete snapshots.
async fn open_group_files<F: FileSystem>(
    fs: &F,
    dir: &Path,
    listing: &Listing,
    repairs: &mut Vec<String>,
) -> StorageResult<GroupFiles<F>> {
    let (hard_state_file, hard_state) = HardStateFile::open(fs, dir).await?;
    for name in &listing.snapshot_temps {
        let path = dir.join(name);
        fs.remove_file(&path).await.map_err(|e| StorageError::io("remove", &path, e))?;
        repairs.push(format!("removed the incomplete snapshot {}", path.display()));
    }
    Ok(GroupFiles { hard_state_file, hard_state })
}

/// A group that starts on this node with nothing: its hard-state file, created durably.
async fn new_group<F: FileSystem>(fs: &F, dir: &Path) -> StorageResult<RecoveredGroup<F>> {
    let hard_state_file = HardStateFile::create(fs, dir, HardState::default()).await?;
    fs.sync_dir(dir).await.map_err(|e| StorageError::io("sync directory", dir, e))?;
    Ok(RecoveredGroup {
        dir: dir.to_path_buf(),
        hard_state_file,
        snapshot: None,
        restored: RestoredState::default(),
        log_terms: LogTerms::default(),
    })
}

/// One group's state from its files and its records in the log: the hard state (repaired from
/// the log's copy when newer), the newest usable snapshot, and the entries after it; and
/// whether the snapshot replaced the log without a record saying so (`finish` writes it).
async fn recover_group<F: FileSystem>(
    fs: &F,
    dir: &Path,
    files: GroupFiles<F>,
    snapshots: &[LogIndex],
    replay: &LogReplay,
    limits: RecoveryLimits,
    repairs: &mut Vec<String>,
) -> StorageResult<(RecoveredGroup<F>, bool)> {
    let GroupFiles { mut hard_state_file, hard_state } = files;
    let hard_state = if is_planted(limits.planted_bug, PlantedBug::HardStateFileOnly) {
        hard_state
    } else {
        newer_term_and_vote(&mut hard_state_file, hard_state, replay, dir, repairs).await?
    };

    // The newest snapshot that is intact and that the log connects to.
    let mut snapshot = None;
    let mut first_error = None;
    for index in snapshots.iter().rev() {
        let path = dir.join(super::snapshot_file::snapshot_file_name(*index));
        match read_snapshot_file(fs, &path, limits.max_snapshot_bytes).await {
            Ok(loaded) => match join(replay, Some(&loaded.meta), dir) {
                Ok(_) => {
                    if let Some(error) = &first_error {
                        repairs.push(format!("fell back to {} because: {error}", path.display()));
                    }
                    snapshot = Some(loaded);
                    break;
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            },
            Err(
                error @ (StorageError::Corrupt { .. } | StorageError::UnsupportedVersion { .. }),
            ) => {
                first_error.get_or_insert(error);
            }
            Err(error) => return Err(error),
        }
    }
    if snapshot.is_none()
        && let Some(error) = first_error
    {
        return Err(error);
    }
    let joined = join(replay, snapshot.as_ref().map(|s| &s.meta), dir)?;
    let replaced = joined == Join::Replaced;
    let entries = joined.into_entries();
    // The commit index restarts from what the surviving log vouches for: its newest commit
    // record (written after the entries it covers, so every entry it covers survived with it)
    // or the snapshot. The hard-state file's copy, taken at the last term or vote change, is
    // not enough alone: a disk that lost the log's newest synced records may have brought back
    // entries that a lost record had overwritten, at indexes that copy calls committed —
    // applying them would diverge from every other replica. Without such a loss the log
    // always vouches for at least as much (the copy is a commit the log had recorded).
    let snapshot_index = snapshot.as_ref().map_or(0, |s| s.meta.last_index);
    let vouched = replay.committed.max(snapshot_index);
    if hard_state.commit > vouched {
        repairs.push(format!(
            "{}: the hard-state file says entries up to {} are committed, but the log's newest \
             records are gone and it vouches only for {vouched}; restarting from {vouched} (the \
             leader brings the rest)",
            dir.display(),
            hard_state.commit
        ));
    }
    let commit = vouched;
    let restored = RestoredState {
        hard_state: HardState { commit, ..hard_state },
        snapshot: snapshot.as_ref().map(|s| s.meta.clone()).unwrap_or_default(),
        entries,
    };
    let floor = (restored.snapshot.last_index, restored.snapshot.last_term);
    let log_terms = LogTerms::new(floor, &restored.entries);
    let group =
        RecoveredGroup { dir: dir.to_path_buf(), hard_state_file, snapshot, restored, log_terms };
    Ok((group, replaced))
}

/// The end of every recovery: the last segment and the directories synced (after a process
/// crash the page cache may hold writes the disk does not, and Raft will treat all of it as
/// durable), the log reopened for writing, and for each group whose snapshot replaced its log
/// without the record saying so (lost in a crash), that record written now.
async fn finish<F: FileSystem>(
    fs: &F,
    dir: &Path,
    layout: LogLayout,
    log: LogRead<F>,
    groups: BTreeMap<ShardId, (RecoveredGroup<F>, bool)>,
    limits: RecoveryLimits,
    mut repairs: Vec<String>,
) -> StorageResult<RecoveredParts<F>> {
    log.active.sync_data().await.map_err(|e| StorageError::io("sync", &log.active_path, e))?;
    fs.sync_dir(dir).await.map_err(|e| StorageError::io("sync directory", dir, e))?;
    if layout == LogLayout::Shared {
        for (group, _) in groups.values() {
            fs.sync_dir(&group.dir)
                .await
                .map_err(|e| StorageError::io("sync directory", &group.dir, e))?;
        }
    }
    let floors = groups
        .iter()
        .map(|(shard, (group, _))| (*shard, group.restored.snapshot.last_index))
        .collect();
    let mut wal = Wal::resume(
        fs.clone(),
        dir.to_path_buf(),
        limits.wal,
        layout,
        floors,
        log.position,
        log.active,
    )
    .await?;
    let mut rewrote = false;
    let mut recovered = BTreeMap::new();
    for (shard, (group, replaced)) in groups {
        let hard_state = group.restored.hard_state;
        wal.carry_term_and_vote(shard, hard_state.term, hard_state.vote);
        if replaced && let Some(snapshot) = &group.snapshot {
            let meta = &snapshot.meta;
            wal.append_snapshot_installed(shard, meta.last_index, meta.last_term, false).await?;
            rewrote = true;
            let whose = match layout {
                LogLayout::Single => String::new(),
                LogLayout::Shared => format!(" of {shard}"),
            };
            repairs.push(format!(
                "recorded in the log that the snapshot at index {}{whose} replaces it (the record \
                 saying so was lost in a crash)",
                meta.last_index
            ));
        }
        recovered.insert(shard, group);
    }
    if rewrote {
        wal.sync().await?;
    }
    Ok(RecoveredParts { wal, groups: recovered, repairs, created: false })
}
/// The hard state to restart from: the file's, unless the log's copy of the term and vote
/// (`TermAndVote` in `wal.rs`) is newer — the file's newest slot was then damaged after it was
/// synced, and the file is repaired from the log. Copies that disagree within one term are
/// corruption.
async fn newer_term_and_vote<F: FileSystem>(
    file: &mut HardStateFile<F>,
    from_file: HardState,
    replay: &LogReplay,
    dir: &Path,
    repairs: &mut Vec<String>,
) -> StorageResult<HardState> {
    let Some((term, vote)) = replay.term_and_vote else { return Ok(from_file) };
    let newer = term > from_file.term
        || (term == from_file.term && from_file.vote.is_none() && !vote.is_none());
    if !newer {
        if term == from_file.term && !vote.is_none() && vote != from_file.vote {
            return Err(StorageError::inconsistent(
                dir,
                format!(
                    "the hard-state file says term {term} vote {}, the log says vote {vote}",
                    from_file.vote
                ),
            ));
        }
        return Ok(from_file);
    }
    let repaired = HardState { term, vote, ..from_file };
    file.write(repaired, true).await?;
    repairs.push(format!(
        "the hard-state file held term {} vote {} but the log recorded term {term} vote {vote} \
         as durable: the file's newest slot was damaged; rewrote it from the log",
        from_file.term, from_file.vote
    ));
    Ok(repaired)
}

/// Creates the log's first segment, then each group's hard-state file (whose presence marks a
/// group's completed initialisation, see the module notes).
async fn initialise<F: FileSystem>(
    fs: &F,
    dir: &Path,
    layout: LogLayout,
    groups: &[(ShardId, PathBuf)],
    limits: RecoveryLimits,
    repairs: Vec<String>,
) -> StorageResult<RecoveredParts<F>> {
    let header = SegmentHeader { seq: 1, first_lsn: 1 };
    let (active, path) = create_segment(fs, dir, header, limits.wal.segment_bytes).await?;
    let mut recovered = BTreeMap::new();
    for (group, group_dir) in groups {
        let hard_state_file = HardStateFile::create(fs, group_dir, HardState::default()).await?;
        if group_dir != dir {
            fs.sync_dir(group_dir)
                .await
                .map_err(|e| StorageError::io("sync directory", group_dir, e))?;
        }
        recovered.insert(
            *group,
            RecoveredGroup {
                dir: group_dir.clone(),
                hard_state_file,
                snapshot: None,
                restored: RestoredState::default(),
                log_terms: LogTerms::default(),
            },
        );
    }
    fs.sync_dir(dir).await.map_err(|e| StorageError::io("sync directory", dir, e))?;
    let position = WalPosition {
        segments: vec![SegmentInfo { seq: 1, first_lsn: 1, max_index: BTreeMap::new(), path }],
        write_offset: SEGMENT_HEADER_BYTES as u64,
        next_lsn: 1,
    };
    let floors = groups.iter().map(|(group, _)| (*group, 0)).collect();
    let wal =
        Wal::resume(fs.clone(), dir.to_path_buf(), limits.wal, layout, floors, position, active)
            .await?;
    Ok(RecoveredParts { wal, groups: recovered, repairs, created: true })
}

struct LogRead<F: FileSystem> {
    /// Each group's records, replayed.
    replays: BTreeMap<ShardId, LogReplay>,
    position: WalPosition,
    active: F::File,
    active_path: PathBuf,
}

async fn read_log<F: FileSystem>(
    fs: &F,
    dir: &Path,
    seqs: &[u64],
    layout: LogLayout,
    limits: RecoveryLimits,
    never_ran: bool,
    repairs: &mut Vec<String>,
) -> StorageResult<LogRead<F>> {
    let Some(&last_seq) = seqs.last() else {
        return Err(StorageError::inconsistent(dir, "the log has no segment files"));
    };
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(StorageError::inconsistent(
                dir,
                format!("log segment {} is missing", segment_file_name(pair[0] + 1)),
            ));
        }
    }
    let max_payload = limits.wal.max_record_bytes as usize;
    let mut replays: BTreeMap<ShardId, LogReplay> = BTreeMap::new();
    let mut segments = Vec::new();
    let mut next_lsn: Option<u64> = None;
    let mut write_offset = SEGMENT_HEADER_BYTES as u64;
    let mut active = None;
    for &seq in seqs {
        let path = dir.join(segment_file_name(seq));
        let is_last = seq == last_seq;
        let mode = if is_last { OpenMode::ReadWrite } else { OpenMode::Read };
        let file = fs.open(&path, mode).await.map_err(|e| StorageError::io("open", &path, e))?;
        let mut image = read_whole_file(&file, MAX_SEGMENT_FILE_BYTES)
            .await
            .map_err(|e| StorageError::io("read", &path, e))?;
        let header = match decode_segment_header(&image, &path)? {
            HeaderRead::Valid(header) => header,
            HeaderRead::Missing if never_ran && seqs == [1] && image.iter().all(|b| *b == 0) => {
                // Records are appended only after the header is synced, so an all-zero first
                // segment never held one; with a pristine hard state and no snapshot nothing
                // was ever promised from this directory. Start the segment again, in place:
                // removing and recreating it would leave, for a crash in between, a hard-state
                // file without any segment (refused), and would create a name whose removal is
                // not durable (`removal.rs`).
                let header = SegmentHeader { seq: 1, first_lsn: 1 };
                let capacity = (image.len() as u64).max(limits.wal.segment_bytes);
                restart_segment_in_place(&file, &path, header, capacity).await?;
                image = read_whole_file(&file, MAX_SEGMENT_FILE_BYTES)
                    .await
                    .map_err(|e| StorageError::io("read", &path, e))?;
                repairs.push(format!(
                    "rewrote {} whose creation never completed (the directory was never used)",
                    path.display()
                ));
                header
            }
            HeaderRead::Missing if is_last && image.iter().all(|b| *b == 0) && seqs.len() > 1 => {
                // Its creation never completed (it is synced before it gets any record).
                drop(file);
                fs.remove_file(&path).await.map_err(|e| StorageError::io("remove", &path, e))?;
                repairs.push(format!("removed {} whose creation never completed", path.display()));
                break;
            }
            HeaderRead::Missing => {
                return Err(StorageError::corrupt(&path, 0, "segment without a header"));
            }
        };
        if header.seq != seq {
            return Err(StorageError::corrupt(
                &path,
                0,
                format!("segment header says segment {}", header.seq),
            ));
        }
        if let Some(expected) = next_lsn
            && header.first_lsn != expected
        {
            return Err(StorageError::corrupt(
                &path,
                0,
                format!(
                    "segment starts at record {}, the previous one ended before record {expected}",
                    header.first_lsn
                ),
            ));
        }
        let scan = match scan_segment(&image, &path, header, is_last, max_payload) {
            Err(StorageError::Corrupt { offset, .. })
                if is_last && is_planted(limits.planted_bug, PlantedBug::TruncateAtDamage) =>
            {
                image[offset as usize..].fill(0);
                scan_segment(&image, &path, header, is_last, max_payload)?
            }
            scanned => scanned?,
        };
        let mut max_index = BTreeMap::new();
        for record in &scan.records {
            let payload = &image[record.payload.clone()];
            let (group, decoded) = WalRecord::decode_in(layout, payload).map_err(|e| {
                StorageError::corrupt(
                    &path,
                    record.offset,
                    format!("undecodable log record {}: {e}", record.lsn),
                )
            })?;
            let mark = max_index.entry(group).or_insert(0);
            *mark = decoded.max_index().max(*mark);
            replays.entry(group).or_default().apply(decoded, &path, record.offset)?;
        }
        next_lsn = Some(header.first_lsn + scan.records.len() as u64);
        match scan.end {
            SegmentEnd::Clean { end_offset } => write_offset = end_offset,
            SegmentEnd::Torn { offset, reason } => {
                // A torn tail is stable; bytes that change between two reads are a failing disk.
                let again = read_whole_file(&file, MAX_SEGMENT_FILE_BYTES)
                    .await
                    .map_err(|e| StorageError::io("read", &path, e))?;
                if again != image {
                    return Err(StorageError::corrupt(
                        &path,
                        offset,
                        "two reads of the segment returned different bytes",
                    ));
                }
                let capacity = image.len() as u64;
                file.set_len(offset).await.map_err(|e| StorageError::io("truncate", &path, e))?;
                file.set_len(capacity.max(limits.wal.segment_bytes))
                    .await
                    .map_err(|e| StorageError::io("preallocate", &path, e))?;
                file.sync_data().await.map_err(|e| StorageError::io("sync", &path, e))?;
                repairs.push(format!(
                    "truncated the torn tail of {} at byte offset {offset} ({reason})",
                    path.display()
                ));
                write_offset = offset;
            }
        }
        segments.push(SegmentInfo {
            seq,
            first_lsn: header.first_lsn,
            max_index,
            path: path.clone(),
        });
        if is_last {
            active = Some((file, path));
        }
    }
    let (active, active_path) = match active {
        Some(active) => active,
        None => {
            // The last segment was an interrupted roll and is gone: continue in the one before
            // it, which was sealed with its zero-filled tail.
            let last = segments
                .last()
                .ok_or_else(|| StorageError::inconsistent(dir, "no segment left"))?;
            let file = fs
                .open(&last.path, OpenMode::ReadWrite)
                .await
                .map_err(|e| StorageError::io("open", &last.path, e))?;
            (file, last.path.clone())
        }
    };
    let position = WalPosition { segments, write_offset, next_lsn: next_lsn.unwrap_or(1) };
    Ok(LogRead { replays, position, active, active_path })
}

/// One group's log as the records describe it, before it is joined to a snapshot.
#[derive(Clone, Default, Debug)]
struct LogReplay {
    /// The last snapshot installation seen: (index, term).
    base: Option<(LogIndex, Term)>,
    /// Whether that installation replaced the whole log (so the log continues right after it).
    base_ends_log: bool,
    /// Contiguous entries.
    entries: Vec<Entry>,
    /// The highest commit index recorded in the log (0 for none).
    committed: LogIndex,
    /// The newest copy of the term and vote the log holds.
    term_and_vote: Option<(Term, NodeId)>,
}

impl LogReplay {
    /// Whether no record of the group was found.
    fn is_empty(&self) -> bool {
        self.base.is_none()
            && self.entries.is_empty()
            && self.committed == 0
            && self.term_and_vote.is_none()
    }

    fn term(&self, index: LogIndex) -> Option<Term> {
        if let Some((base_index, base_term)) = self.base
            && base_index == index
        {
            return Some(base_term);
        }
        let first = self.entries.first()?.index;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize).map(|entry| entry.term)
    }

    fn apply(&mut self, record: WalRecord, path: &Path, offset: u64) -> StorageResult<()> {
        match record {
            WalRecord::Committed { index } => self.committed = self.committed.max(index),
            WalRecord::TermAndVote { term, vote } => {
                if let Some((newest_term, newest_vote)) = self.term_and_vote
                    && (term < newest_term
                        || (term == newest_term && vote != newest_vote && !newest_vote.is_none()))
                {
                    return Err(StorageError::corrupt(
                        path,
                        offset,
                        format!(
                            "term {term} vote {vote} recorded after term {newest_term} vote \
                             {newest_vote}"
                        ),
                    ));
                }
                self.term_and_vote = Some((term, vote));
            }
            WalRecord::SnapshotInstalled { last_index, last_term, keeps_suffix } => {
                // The decision Raft made, recorded by the writer.
                if keeps_suffix {
                    self.entries.retain(|entry| entry.index > last_index);
                } else {
                    self.entries.clear();
                }
                self.base = Some((last_index, last_term));
                self.base_ends_log = !keeps_suffix;
            }
            WalRecord::Entries(mut entries) => {
                if entries.is_empty() {
                    return Err(StorageError::corrupt(
                        path,
                        offset,
                        "a log record with no entries",
                    ));
                }
                if entries.windows(2).any(|pair| pair[1].index != pair[0].index + 1) {
                    return Err(StorageError::corrupt(
                        path,
                        offset,
                        "a log record with non-contiguous entries",
                    ));
                }
                if let Some((base_index, _)) = self.base {
                    entries.retain(|entry| entry.index > base_index);
                    if entries.is_empty() {
                        return Ok(());
                    }
                }
                let first_new = entries[0].index;
                match (self.entries.first().map(|e| e.index), self.entries.last().map(|e| e.index))
                {
                    (Some(first), Some(last)) => {
                        if first_new > last + 1 {
                            return Err(StorageError::corrupt(
                                path,
                                offset,
                                format!(
                                    "entries start at index {first_new} but the log ends at {last}"
                                ),
                            ));
                        }
                        // Entries at or after the first new one are overwritten; a rewrite from
                        // before the first surviving entry replaces everything (it can only be
                        // a re-append of committed entries whose segment was compacted).
                        self.entries.truncate(first_new.saturating_sub(first) as usize);
                    }
                    _ => {
                        // After a snapshot that replaced the log, the log continues right after
                        // it. (After one that kept the suffix, the kept entries may have been
                        // compacted away: the next record then starts the surviving log.)
                        if let Some((base_index, _)) = self.base
                            && self.base_ends_log
                            && first_new != base_index + 1
                        {
                            return Err(StorageError::corrupt(
                                path,
                                offset,
                                format!(
                                    "entries start at index {first_new} after a snapshot at {base_index}"
                                ),
                            ));
                        }
                    }
                }
                self.entries.extend(entries);
            }
        }
        Ok(())
    }
}

/// How the replayed log joins the snapshot.
#[derive(Debug, PartialEq, Eq)]
enum Join {
    /// The log continues the snapshot; these entries follow it.
    Continues(Vec<Entry>),
    /// The log does not reach past the snapshot, or conflicts with it (an installed snapshot
    /// whose marker record did not survive): no entry follows it. The log must record this
    /// decision (a marker record), or entries appended later would be replayed onto the old,
    /// conflicting or too short log.
    Replaced,
}

impl Join {
    fn into_entries(self) -> Vec<Entry> {
        match self {
            Join::Continues(entries) => entries,
            Join::Replaced => Vec::new(),
        }
    }
}

/// Joins the replayed log to the snapshot, or explains why it cannot.
fn join(replay: &LogReplay, snapshot: Option<&SnapshotMeta>, dir: &Path) -> StorageResult<Join> {
    let (index, term) = snapshot.map_or((0, 0), |meta| (meta.last_index, meta.last_term));
    if let Some((base_index, _)) = replay.base
        && base_index > index
    {
        return Err(StorageError::inconsistent(
            dir,
            format!(
                "the log continues from a snapshot at index {base_index}, but the newest usable snapshot ends at {index}"
            ),
        ));
    }
    let after =
        |entries: &[Entry]| entries.iter().filter(|e| e.index > index).cloned().collect::<Vec<_>>();
    if snapshot.is_none() {
        return match replay.entries.first() {
            None => Ok(Join::Continues(Vec::new())),
            Some(first) if first.index == 1 => Ok(Join::Continues(replay.entries.clone())),
            Some(first) => Err(StorageError::inconsistent(
                dir,
                format!("the log starts at index {} and there is no snapshot", first.index),
            )),
        };
    }
    match replay.term(index) {
        Some(log_term) if log_term == term => Ok(Join::Continues(after(&replay.entries))),
        Some(_) => Ok(Join::Replaced),
        None => match replay.entries.first() {
            // The log ends at an older installed snapshot: later appends must not be replayed
            // onto it.
            None if replay.base.is_some() => Ok(Join::Replaced),
            None => Ok(Join::Continues(Vec::new())),
            Some(first) if first.index == index + 1 => Ok(Join::Continues(replay.entries.clone())),
            Some(first) if first.index > index + 1 => Err(StorageError::inconsistent(
                dir,
                format!("the log starts at index {} but the snapshot ends at {index}", first.index),
            )),
            // Everything in the log lies below the snapshot.
            Some(_) => Ok(Join::Replaced),
        },
    }
}
