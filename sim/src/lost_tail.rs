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
//!
//! A node hosting many groups keeps one log for all of them (`shared_log.rs`): its newest
//! records interleave the groups, and each group has a floor of its own (what a majority of
//! *that group's* other voters hold). Walking back from the end, the cut stops at the first
//! record that any group could not lose, so every group loses only what its own peers hold.

use std::collections::BTreeMap;
use std::path::Path;

use conclave_core::raft::{EntryPayload, LogIndex, Term};
use conclave_core::shard::ShardId;
use conclave_core::storage::fs::{FileSystem, FsFile, OpenMode, read_whole_file};
use conclave_core::storage::segment::{
    HeaderRead, decode_segment_header, parse_segment_file_name, scan_segment,
};
use conclave_core::storage::wal::{LogLayout, WalRecord};

use crate::fs::SimFs;

/// A planned loss: at most `max_records` of the newest records, holding only entries of each
/// group at or below that group's floor (held durably by a majority of its other voters; a
/// group without a floor loses nothing), and never reaching back past a snapshot-installation
/// record or a configuration change (see `choose_cut`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailLoss {
    pub floors: BTreeMap<ShardId, LogIndex>,
    pub max_records: u32,
}

/// What one group lost.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LostTail {
    pub records: u32,
    /// The entries dropped: `first..=last`.
    pub first: LogIndex,
    pub last: LogIndex,
    /// The newest entry the log still holds (0 if none since the segment's start).
    pub kept: (LogIndex, Term),
}

/// Carries out `plan` on the log of `layout` in the node's data directory `dir`: what each
/// group lost. `None` if nothing could be dropped under the plan's rules (or the disk could not
/// be read: then nothing is changed).
pub async fn lose_synced_tail(
    fs: &SimFs,
    dir: &Path,
    layout: LogLayout,
    plan: &TailLoss,
) -> Option<BTreeMap<ShardId, LostTail>> {
    let entries = fs.list_dir(dir).await.ok()?;
    let seq = entries.iter().filter_map(|entry| parse_segment_file_name(&entry.name)).max()?;
    let path = dir.join(conclave_core::storage::segment::segment_file_name(seq));
    let file = fs.open(&path, OpenMode::ReadWrite).await.ok()?;
    let image = read_whole_file(&file, 64 << 20).await.ok()?;
    let HeaderRead::Valid(header) = decode_segment_header(&image, &path).ok()? else {
        return None;
    };
    let scan = scan_segment(&image, &path, header, true, usize::MAX >> 1).ok()?;
    let records: Vec<(u64, ShardId, WalRecord)> = scan
        .records
        .iter()
        .filter_map(|record| {
            let (group, decoded) =
                WalRecord::decode_in(layout, &image[record.payload.clone()]).ok()?;
            Some((record.offset, group, decoded))
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

/// How many of the newest `records` to drop under `plan`, and what each group loses: walking
/// back from the newest record, while fewer than `max_records` are dropped, every entry dropped
/// is at or below its group's floor, and neither a snapshot installation nor a configuration
/// change is reached. A node that forgot a configuration change would believe in an older
/// configuration, which may be two changes behind the cluster's: their majorities need not
/// overlap (a removed member and a lagging one can elect each other), and no Raft survives
/// that however many copies of the entries exist elsewhere. `None` if nothing can be dropped.
fn choose_cut(
    records: &[(u64, ShardId, WalRecord)],
    plan: &TailLoss,
) -> Option<(usize, BTreeMap<ShardId, LostTail>)> {
    let mut cut = records.len();
    let mut dropped = 0u32;
    let mut lost: BTreeMap<ShardId, LostTail> = BTreeMap::new();
    while cut > 0 && dropped < plan.max_records {
        let (_, group, record) = &records[cut - 1];
        match record {
            WalRecord::Committed { .. } | WalRecord::TermAndVote { .. } => {}
            WalRecord::Entries(batch) => {
                let (Some(first), Some(last)) = (batch.first(), batch.last()) else { break };
                let changes_config =
                    batch.iter().any(|entry| matches!(entry.payload, EntryPayload::Config(_)));
                let floor = plan.floors.get(group).copied().unwrap_or(0);
                if last.index > floor || changes_config {
                    break;
                }
                let group_lost = lost.entry(*group).or_insert(LostTail {
                    records: 0,
                    first: first.index,
                    last: last.index,
                    kept: (0, 0),
                });
                group_lost.records += 1;
                group_lost.first = group_lost.first.min(first.index);
                group_lost.last = group_lost.last.max(last.index);
            }
            WalRecord::SnapshotInstalled { .. } => break,
        }
        cut -= 1;
        dropped += 1;
    }
    if lost.is_empty() {
        return None;
    }
    for (group, group_lost) in &mut lost {
        group_lost.kept = newest_entry_after_replay(&records[..cut], *group);
    }
    Some((cut, lost))
}

/// The newest entry of `group`'s log that recovery rebuilds from `records` (0 if they hold
/// none of it). Not simply the newest entry below the lost ones: a lost record may have
/// overwritten an earlier record's suffix (a newer leader's entries replacing uncommitted
/// ones), and without it those older entries come back, at indexes the node had acknowledged
/// with other terms.
fn newest_entry_after_replay(
    records: &[(u64, ShardId, WalRecord)],
    group: ShardId,
) -> (LogIndex, Term) {
    let mut newest = (0, 0);
    for (_, _, record) in records.iter().filter(|(_, of, _)| *of == group) {
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

    const G: ShardId = ShardId::META;

    fn one_group(records: Vec<(u64, WalRecord)>) -> Vec<(u64, ShardId, WalRecord)> {
        records.into_iter().map(|(offset, record)| (offset, G, record)).collect()
    }

    fn plan(floor: LogIndex, max_records: u32) -> TailLoss {
        TailLoss { floors: BTreeMap::from([(G, floor)]), max_records }
    }

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
        let records =
            one_group(vec![(0, entries(1, &[1, 1, 1, 1, 1, 1])), (100, entries(3, &[2, 2]))]);
        assert_eq!(newest_entry_after_replay(&records, G), (4, 2));
        // Losing the second record brings back 3..=6 of term 1, not a log ending at 2.
        assert_eq!(newest_entry_after_replay(&records[..1], G), (6, 1));
    }

    #[test]
    fn a_snapshot_record_ends_the_log_unless_it_keeps_the_suffix() {
        let records = one_group(vec![
            (0, entries(1, &[1, 1, 1, 1])),
            (
                100,
                WalRecord::SnapshotInstalled { last_index: 9, last_term: 3, keeps_suffix: false },
            ),
        ]);
        assert_eq!(newest_entry_after_replay(&records, G), (9, 3));
        let kept = one_group(vec![
            (0, entries(1, &[1, 1, 1, 1])),
            (100, WalRecord::SnapshotInstalled { last_index: 2, last_term: 1, keeps_suffix: true }),
            (200, WalRecord::Committed { index: 4 }),
        ]);
        assert_eq!(newest_entry_after_replay(&kept, G), (4, 1));
        assert_eq!(newest_entry_after_replay(&[], G), (0, 0));
    }

    #[test]
    fn the_cut_stops_at_the_floor_the_record_limit_and_a_configuration_change() {
        let records = one_group(vec![
            (0, entries(1, &[1, 1])),
            (100, WalRecord::TermAndVote { term: 2, vote: NodeId(1) }),
            (200, entries(3, &[2])),
            (300, entries(4, &[2, 2])),
        ]);
        let (cut, lost) = choose_cut(&records, &plan(100, 2)).expect("a loss");
        let lost = lost[&G];
        assert_eq!((cut, lost.first, lost.last, lost.kept), (2, 3, 5, (2, 1)));
        // The floor: entries above what the others hold are never dropped.
        assert_eq!(choose_cut(&records, &plan(4, 2)), None);

        let config = Entry {
            index: 3,
            term: 2,
            payload: EntryPayload::Config(ClusterConfig::with_voters([NodeId(1), NodeId(2)])),
        };
        let with_config = one_group(vec![
            (0, entries(1, &[1, 1])),
            (200, WalRecord::Entries(vec![config])),
            (300, entries(4, &[2, 2])),
        ]);
        let (cut, lost) = choose_cut(&with_config, &plan(100, 2)).expect("the newest record");
        let lost = lost[&G];
        assert_eq!((cut, lost.first, lost.last, lost.kept), (2, 4, 5, (3, 2)));
        assert_eq!(choose_cut(&with_config[..2], &plan(100, 2)), None, "a configuration is kept");
    }

    #[test]
    fn in_a_shared_log_each_group_loses_only_what_its_own_peers_hold() {
        let (a, b, c) = (ShardId(1), ShardId(2), ShardId(3));
        // Group a's 1..=3, b's 1..=2, a's 4, b's 3, newest last.
        let records = vec![
            (0, a, entries(1, &[1, 1, 1])),
            (100, b, entries(1, &[1, 1])),
            (200, a, entries(4, &[1])),
            (300, b, entries(3, &[1])),
        ];
        let floors = |a_floor, b_floor| TailLoss {
            floors: BTreeMap::from([(a, a_floor), (b, b_floor)]),
            max_records: 10,
        };
        // Both floors cover everything: every record goes, each group's loss told apart.
        let (cut, lost) = choose_cut(&records, &floors(4, 3)).expect("a loss");
        assert_eq!(cut, 0);
        assert_eq!(
            (lost[&a].first, lost[&a].last, lost[&a].records, lost[&a].kept),
            (1, 4, 2, (0, 0))
        );
        assert_eq!(
            (lost[&b].first, lost[&b].last, lost[&b].records, lost[&b].kept),
            (1, 3, 2, (0, 0))
        );
        // Group a's peers hold only up to 3: the cut stops above a's entry 4, though b's
        // floor would allow more; a loses nothing.
        let (cut, lost) = choose_cut(&records, &floors(3, 3)).expect("b's newest record");
        assert_eq!(cut, 3);
        assert_eq!(lost.keys().copied().collect::<Vec<_>>(), vec![b]);
        assert_eq!((lost[&b].first, lost[&b].last, lost[&b].kept), (3, 3, (2, 1)));
        // A group with no floor (its peers' durable logs unknown) stops the cut at its record.
        let only_a = TailLoss { floors: BTreeMap::from([(a, 4)]), max_records: 10 };
        assert_eq!(choose_cut(&records, &only_a), None);
        // Another group's record (c has none here) never counts as a's.
        assert_eq!(newest_entry_after_replay(&records, c), (0, 0));
    }
}
