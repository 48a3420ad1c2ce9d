//! A disk that loses the last records it had synced: the nemesis crashes a node, and before it
//! restarts, the newest log records of its active segment are gone (zeros where they were, as
//! if the writes had never reached the platter). Recovery then finds a clean log that simply
//! ends early, and the node comes back with a shorter log than it acknowledged.
//!
//! When a lost record had replaced the suffix of an earlier one (a newer leader overwriting
//! uncommitted entries), the older entries come back: the node then holds, at indexes it had
//! acknowledged, entries of an older term. The leader must not let it commit those (its
//! heartbeat names the term of the entry it asks the follower to commit).
//!
//! No node can tell this apart from a log that never had those records, so Raft's safety needs
//! the lost entries elsewhere: only entries that a majority of the *other* voters hold durably,
//! with the committed content, are ever dropped (the nemesis computes that floor from the
//! observer). What the fault tests is the leader's side: it recorded those entries as matched,
//! and must notice the follower's shorter log and catch it up, instead of waiting forever for
//! acknowledgements of entries the follower no longer has.

use std::path::Path;

use conclave_core::raft::{EntryPayload, LogIndex, Term};
use conclave_core::storage::fs::{FileSystem, FsFile, OpenMode, read_whole_file};
use conclave_core::storage::segment::{
    HeaderRead, decode_segment_header, parse_segment_file_name, scan_segment,
};
use conclave_core::storage::wal::WalRecord;

use crate::fs::SimFs;

/// A planned loss: at most `max_records` of the newest records, holding only entries at or
/// below `floor` (held durably by a majority of the other voters), and never reaching back past
/// a snapshot-installation record or a configuration change (see `choose_cut`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TailLoss {
    pub floor: LogIndex,
    pub max_records: u32,
}

/// What was lost.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LostTail {
    pub records: u32,
    /// The entries dropped: `first..=last`.
    pub first: LogIndex,
    pub last: LogIndex,
    /// The newest entry the log still holds (0 if none since the segment's start).
    pub kept: (LogIndex, Term),
}

/// Carries out `plan` on the node's data directory `dir`. `None` if nothing could be dropped
/// under the plan's rules (or the disk could not be read: then nothing is changed).
pub async fn lose_synced_tail(fs: &SimFs, dir: &Path, plan: TailLoss) -> Option<LostTail> {
    let entries = fs.list_dir(dir).await.ok()?;
    let seq = entries.iter().filter_map(|entry| parse_segment_file_name(&entry.name)).max()?;
    let path = dir.join(conclave_core::storage::segment::segment_file_name(seq));
    let file = fs.open(&path, OpenMode::ReadWrite).await.ok()?;
    let image = read_whole_file(&file, 64 << 20).await.ok()?;
    let HeaderRead::Valid(header) = decode_segment_header(&image, &path).ok()? else {
        return None;
    };
    let scan = scan_segment(&image, &path, header, true, usize::MAX >> 1).ok()?;
    let records: Vec<(u64, WalRecord)> = scan
        .records
        .iter()
        .filter_map(|record| {
            let decoded = WalRecord::decode(&image[record.payload.clone()]).ok()?;
            Some((record.offset, decoded))
        })
        .collect();
    if records.len() != scan.records.len() {
        return None;
    }
    let end = match scan.end {
        conclave_core::storage::segment::SegmentEnd::Clean { end_offset } => end_offset,
        conclave_core::storage::segment::SegmentEnd::Torn { offset, .. } => offset,
    };
    let (cut, lost) = choose_cut(&records, plan)?;
    let from = records[cut].0;
    file.write_all_at(from, vec![0u8; (end - from) as usize]).await.ok()?;
    file.sync_data().await.ok()?;
    Some(lost)
}

/// How many of the newest `records` to drop under `plan`, and what that loses: walking back
/// from the newest record, while fewer than `max_records` are dropped, every entry dropped is
/// at or below the floor, and neither a snapshot installation nor a configuration change is
/// reached. A node that forgot a configuration change would believe in an older
/// configuration, which may be two changes behind the cluster's: their majorities need not
/// overlap (a removed member and a lagging one can elect each other), and no Raft survives
/// that however many copies of the entries exist elsewhere. `None` if nothing can be dropped.
fn choose_cut(records: &[(u64, WalRecord)], plan: TailLoss) -> Option<(usize, LostTail)> {
    let mut cut = records.len();
    let mut lost = LostTail { records: 0, first: 0, last: 0, kept: (0, 0) };
    while cut > 0 && lost.records < plan.max_records {
        match &records[cut - 1].1 {
            WalRecord::Committed { .. } | WalRecord::TermAndVote { .. } => {}
            WalRecord::Entries(batch) => {
                let (Some(first), Some(last)) = (batch.first(), batch.last()) else { break };
                let changes_config =
                    batch.iter().any(|entry| matches!(entry.payload, EntryPayload::Config(_)));
                if last.index > plan.floor || changes_config {
                    break;
                }
                lost.first = first.index;
                lost.last = lost.last.max(last.index);
            }
            WalRecord::SnapshotInstalled { .. } => break,
        }
        cut -= 1;
        lost.records += 1;
    }
    if lost.first == 0 {
        return None;
    }
    lost.kept = newest_entry_after_replay(&records[..cut]);
    Some((cut, lost))
}

/// The newest entry of the log that recovery rebuilds from `records` (0 if they hold none).
/// Not simply the newest entry below the lost ones: a lost record may have overwritten an
/// earlier record's suffix (a newer leader's entries replacing uncommitted ones), and without
/// it those older entries come back, at indexes the node had acknowledged with other terms.
fn newest_entry_after_replay(records: &[(u64, WalRecord)]) -> (LogIndex, Term) {
    let mut newest = (0, 0);
    for (_, record) in records {
        match record {
            WalRecord::Entries(batch) => {
                if let Some(last) = batch.last() {
                    newest = (last.index, last.term);
                }
            }
            WalRecord::SnapshotInstalled { last_index, last_term, keeps_suffix } => {
                if !keeps_suffix || newest.0 < *last_index {
                    newest = (*last_index, *last_term);
                }
            }
            WalRecord::Committed { .. } | WalRecord::TermAndVote { .. } => {}
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use conclave_core::raft::{ClusterConfig, Entry, NodeId};

    use super::*;

    fn entries(first: LogIndex, terms: &[Term]) -> WalRecord {
        let batch = terms
            .iter()
            .enumerate()
            .map(|(offset, term)| Entry {
                index: first + offset as u64,
                term: *term,
                payload: EntryPayload::Noop,
            })
            .collect();
        WalRecord::Entries(batch)
    }

    #[test]
    fn entries_a_lost_record_had_overwritten_come_back() {
        // 1..=6 of term 1, then a newer leader's 3..=4 of term 2 replaced 3..=6.
        let records = vec![(0, entries(1, &[1, 1, 1, 1, 1, 1])), (100, entries(3, &[2, 2]))];
        assert_eq!(newest_entry_after_replay(&records), (4, 2));
        // Losing the second record brings back 3..=6 of term 1, not a log ending at 2.
        assert_eq!(newest_entry_after_replay(&records[..1]), (6, 1));
    }

    #[test]
    fn a_snapshot_record_ends_the_log_unless_it_keeps_the_suffix() {
        let records = vec![
            (0, entries(1, &[1, 1, 1, 1])),
            (
                100,
                WalRecord::SnapshotInstalled { last_index: 9, last_term: 3, keeps_suffix: false },
            ),
        ];
        assert_eq!(newest_entry_after_replay(&records), (9, 3));
        let kept = vec![
            (0, entries(1, &[1, 1, 1, 1])),
            (100, WalRecord::SnapshotInstalled { last_index: 2, last_term: 1, keeps_suffix: true }),
            (200, WalRecord::Committed { index: 4 }),
        ];
        assert_eq!(newest_entry_after_replay(&kept), (4, 1));
        assert_eq!(newest_entry_after_replay(&[]), (0, 0));
    }

    #[test]
    fn the_cut_stops_at_the_floor_the_record_limit_and_a_configuration_change() {
        let plan = TailLoss { floor: 100, max_records: 2 };
        let records = vec![
            (0, entries(1, &[1, 1])),
            (100, WalRecord::TermAndVote { term: 2, vote: NodeId(1) }),
            (200, entries(3, &[2])),
            (300, entries(4, &[2, 2])),
        ];
        let (cut, lost) = choose_cut(&records, plan).expect("a loss");
        assert_eq!((cut, lost.first, lost.last, lost.kept), (2, 3, 5, (2, 1)));
        // The floor: entries above what the others hold are never dropped.
        assert_eq!(choose_cut(&records, TailLoss { floor: 4, max_records: 2 }), None);

        let config = Entry {
            index: 3,
            term: 2,
            payload: EntryPayload::Config(ClusterConfig::with_voters([NodeId(1), NodeId(2)])),
        };
        let with_config = vec![
            (0, entries(1, &[1, 1])),
            (200, WalRecord::Entries(vec![config])),
            (300, entries(4, &[2, 2])),
        ];
        let (cut, lost) = choose_cut(&with_config, plan).expect("the newest record");
        assert_eq!((cut, lost.first, lost.last, lost.kept), (2, 4, 5, (3, 2)));
        assert_eq!(choose_cut(&with_config[..2], plan), None, "a configuration is never lost");
    }
}
