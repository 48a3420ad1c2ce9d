//! The write-ahead-log storage end to end on the in-memory file system: what is reported
//! durable survives a crash, group commit, segment rolls, snapshots and compaction, and
//! recovery's answers to damaged directories.

// Helpers outside `#[test]` functions unwrap too: a failed setup step should panic.
#![allow(clippy::unwrap_used)]

use crate::storage_support;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use conclave_core::raft::{ClusterConfig, NodeId, Snapshot, SnapshotMeta};
use conclave_core::seams::storage::StorageJob;
use conclave_core::storage::StorageError;
use storage_support::*;

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: index,
            last_term: term,
            config: ClusterConfig::with_voters([NodeId(1)]),
        },
        data: Bytes::from(format!("state at {index}")),
    }
}

/// First index, last index and count, for failure messages (entries themselves are long).
fn summary(entries: &[conclave_core::raft::Entry]) -> String {
    match (entries.first(), entries.last()) {
        (Some(first), Some(last)) => {
            format!("{} entries {}..={}", entries.len(), first.index, last.index)
        }
        _ => "no entries".into(),
    }
}

/// The recovered log is exactly `expected` (shown in short when it is not).
fn assert_log(
    recovered: &conclave_core::storage::Recovered,
    expected: &[conclave_core::raft::Entry],
) {
    assert!(recovered.restored.entries == expected, "{}", summary(&recovered.restored.entries));
}

fn segment_files(harness: &Harness) -> Vec<PathBuf> {
    harness
        .fs
        .image()
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .cloned()
        .collect()
}

#[test]
fn fresh_directory_is_created_and_reopens_empty() {
    let mut h = Harness::new(1, Some(512), small_options());
    let recovered = h.open().unwrap();
    assert!(recovered.created);
    assert!(recovered.restored.entries.is_empty());
    assert!(recovered.snapshot_data.is_none());
    h.crash();
    let recovered = h.open().unwrap();
    assert!(!recovered.created, "{:?}", recovered.repairs);
    assert!(recovered.repairs.is_empty());
}

#[test]
fn durable_batches_survive_a_crash_exactly() {
    let mut h = Harness::new(2, Some(512), small_options());
    h.open().unwrap();
    h.persist(entries(1..=3, 1), Some(hard_state(1, 1, 0)), None).unwrap();
    h.persist(entries(4..=5, 1), Some(hard_state(1, 1, 3)), None).unwrap();
    let progress = h.pump().unwrap();
    assert_eq!(progress.durable_batch, 2);
    h.crash();
    let recovered = h.open().unwrap();
    assert_log(&recovered, &entries(1..=5, 1));
    assert_eq!(
        (recovered.restored.hard_state.term, recovered.restored.hard_state.vote),
        (1, NodeId(1))
    );
    assert!(recovered.restored.hard_state.commit <= 3);
}

#[test]
fn the_commit_index_rides_with_the_next_group_that_writes_and_is_recovered() {
    let mut h = Harness::new(7, None, small_options());
    h.open().unwrap();
    h.persist(entries(1..=3, 1), Some(hard_state(1, 1, 0)), None).unwrap();
    h.pump().unwrap();
    // A commit-only batch (a follower learns a commit once per round trip) costs no I/O...
    let ops_before = h.fs.ops();
    h.persist(vec![], Some(hard_state(1, 1, 3)), None).unwrap();
    assert_eq!(h.pump().unwrap().durable_batch, 2);
    assert_eq!(h.fs.ops() - ops_before, 0);
    h.crash();
    let recovered = h.open().unwrap();
    assert_eq!(recovered.restored.hard_state.commit, 0, "nothing recorded the commit yet");
    // ...and is recorded with the next group's records, in the same write and sync.
    h.persist(vec![], Some(hard_state(1, 1, 3)), None).unwrap();
    let ops_before = h.fs.ops();
    h.persist(entries(4..=5, 1), Some(hard_state(1, 1, 3)), None).unwrap();
    h.pump().unwrap();
    assert_eq!(h.fs.ops() - ops_before, 2, "one write and one sync");
    h.crash();
    let recovered = h.open().unwrap();
    assert_eq!(recovered.restored.hard_state.commit, 3);
    assert_log(&recovered, &entries(1..=5, 1));
    assert_eq!(
        (recovered.restored.hard_state.term, recovered.restored.hard_state.vote),
        (1, NodeId(1))
    );
}

#[test]
fn a_suffix_overwrite_replaces_the_conflicting_entries() {
    let mut h = Harness::new(3, None, small_options());
    h.open().unwrap();
    h.persist(entries(1..=6, 1), Some(hard_state(1, 0, 2)), None).unwrap();
    h.pump().unwrap();
    h.persist(entries(4..=5, 2), Some(hard_state(2, 0, 2)), None).unwrap();
    h.pump().unwrap();
    h.crash();
    let recovered = h.open().unwrap();
    let mut expected = entries(1..=3, 1);
    expected.extend(entries(4..=5, 2));
    assert_log(&recovered, &expected);
    assert_eq!(recovered.restored.hard_state.term, 2);
}

#[test]
fn segments_roll_and_the_log_reads_back_across_them() {
    let mut h = Harness::new(4, Some(512), small_options());
    h.open().unwrap();
    for start in (1..=400).step_by(10) {
        h.persist(entries(start..=start + 9, 1), None, None).unwrap();
        h.pump().unwrap();
    }
    assert!(segment_files(&h).len() > 3, "{:?}", segment_files(&h));
    h.crash();
    let recovered = h.open().unwrap();
    assert_log(&recovered, &entries(1..=400, 1));
}

#[test]
fn group_commit_makes_queued_batches_durable_together() {
    let mut h = Harness::new(5, None, small_options());
    h.open().unwrap();
    let ops_before = h.fs.ops();
    for index in 1..=50 {
        h.persist(vec![entry(index, 1)], None, None).unwrap();
    }
    assert_eq!(h.pump().unwrap().durable_batch, 50);
    // One write and one sync for fifty batches.
    assert_eq!(h.fs.ops() - ops_before, 2);
}

#[test]
fn snapshot_then_compaction_removes_whole_segments_and_recovers() {
    let mut h = Harness::new(6, Some(512), small_options());
    h.open().unwrap();
    for start in (1..=300).step_by(10) {
        h.persist(entries(start..=start + 9, 1), Some(hard_state(1, 0, start + 9)), None).unwrap();
    }
    h.pump().unwrap();
    let before = segment_files(&h).len();
    h.submit(StorageJob::SaveSnapshot { snapshot: snapshot(250, 1), compact_to: 200 }).unwrap();
    let progress = h.pump().unwrap();
    assert_eq!((progress.snapshot_index, progress.compacted_to), (250, 200));
    let after = segment_files(&h).len();
    assert!(after < before, "{before} -> {after}");
    assert_eq!(h.load_snapshot().unwrap(), Some(snapshot(250, 1)));
    h.crash();
    let recovered = h.open().unwrap();
    assert_eq!(recovered.restored.snapshot.last_index, 250);
    assert_eq!(recovered.snapshot_data, Some(snapshot(250, 1).data));
    assert_log(&recovered, &entries(251..=300, 1));
}

#[test]
fn an_installed_snapshot_replaces_a_conflicting_log() {
    let mut h = Harness::new(7, None, small_options());
    h.open().unwrap();
    h.persist(entries(1..=20, 1), Some(hard_state(1, 0, 5)), None).unwrap();
    h.pump().unwrap();
    // The leader's snapshot at 15 has term 2: entries 16..=20 of term 1 must go.
    h.persist(entries(16..=17, 2), Some(hard_state(2, 0, 15)), Some(snapshot(15, 2))).unwrap();
    h.pump().unwrap();
    h.crash();
    let recovered = h.open().unwrap();
    assert_eq!(recovered.restored.snapshot.last_index, 15);
    assert_log(&recovered, &entries(16..=17, 2));
}

#[test]
fn after_a_failed_sync_the_writer_stops_and_everything_fails() {
    let mut h = Harness::new(8, None, small_options());
    h.open().unwrap();
    h.persist(entries(1..=2, 1), None, None).unwrap();
    h.pump().unwrap();
    h.fs.faults().set_io_error_permille(1000);
    h.persist(entries(3..=4, 1), None, None).unwrap();
    assert!(h.pump().is_err());
    assert!(matches!(h.writer_result, Some(Err(_))));
    h.fs.faults().heal();
    assert!(h.persist(entries(5..=5, 1), None, None).is_err(), "no retry after a failed sync");
    assert!(h.load_snapshot().is_err());
    h.crash();
    assert!(h.open().unwrap().restored.entries == entries(1..=2, 1));
}

/// Pumps the writer until `done` holds for its progress (a waiting writer needs several polls:
/// each wait for space gives control back once on this file system).
fn pump_until(
    h: &mut Harness,
    what: &str,
    done: impl Fn(&conclave_core::seams::storage::StorageProgress) -> bool,
) -> conclave_core::seams::storage::StorageProgress {
    for _ in 0..100 {
        let progress = h.pump().unwrap();
        if done(&progress) {
            return progress;
        }
    }
    panic!("the writer never reached: {what}");
}

#[test]
fn a_full_disk_raises_the_alarm_and_writes_wait_for_space_losing_nothing() {
    let mut h = Harness::new(9, None, small_options());
    h.open().unwrap();
    h.persist(entries(1..=2, 1), Some(hard_state(1, 1, 0)), None).unwrap();
    assert_eq!(h.pump().unwrap().durable_batch, 1);
    h.fs.faults().set_no_space(true);
    // Enough entries to roll a segment while the disk is full, and a vote change.
    h.persist(entries(3..=200, 2), Some(hard_state(2, 2, 2)), None).unwrap();
    let progress = pump_until(&mut h, "the alarm", |progress| progress.disk_full);
    assert_eq!(progress.durable_batch, 1, "nothing is reported durable while the disk is full");
    for _ in 0..10 {
        let progress = h.pump().unwrap();
        assert!(progress.disk_full && progress.durable_batch == 1);
    }
    assert!(h.writer_result.is_none(), "a full disk does not stop the writer");
    h.fs.faults().set_no_space(false);
    let progress = pump_until(&mut h, "durability", |progress| progress.durable_batch == 2);
    assert!(!progress.disk_full, "the alarm comes down once the writes succeed");
    h.crash();
    let recovered = h.open().unwrap();
    let mut expected = entries(1..=2, 1);
    expected.extend(entries(3..=200, 2));
    assert_log(&recovered, &expected);
    assert_eq!(recovered.restored.hard_state.term, 2);
}

#[test]
fn a_snapshot_that_does_not_fit_is_given_up_and_the_log_goes_on() {
    let mut h = Harness::new(14, None, small_options());
    h.open().unwrap();
    h.persist(entries(1..=20, 1), Some(hard_state(1, 1, 20)), None).unwrap();
    h.pump().unwrap();
    h.fs.faults().set_no_space(true);
    h.submit(StorageJob::SaveSnapshot { snapshot: snapshot(20, 1), compact_to: 20 }).unwrap();
    let progress = pump_until(&mut h, "the abandoned snapshot", |p| p.snapshots_abandoned == 1);
    assert!(progress.disk_full);
    assert_eq!(progress.snapshot_index, 0);
    assert!(h.load_snapshot().unwrap().is_none(), "no snapshot was kept");
    // Space comes back; with nothing to write, the writer's own probe notices.
    h.fs.faults().set_no_space(false);
    pump_until(&mut h, "the alarm coming down", |progress| !progress.disk_full);
    h.persist(entries(21..=22, 1), None, None).unwrap();
    pump_until(&mut h, "durability", |progress| progress.durable_batch == 2);
    h.crash();
    assert_log(&h.open().unwrap(), &entries(1..=22, 1));
}

#[test]
fn a_segment_roll_that_runs_out_of_space_at_any_step_loses_nothing() {
    // The disk fills up at each operation of a group that rolls the segment in turn; a
    // segment creation that fails part-way is removed and created again under its name.
    let mut full_disks = 0;
    for ok_ops in 0.. {
        let mut h = Harness::new(20 + ok_ops, None, small_options());
        h.open().unwrap();
        h.persist(entries(1..=60, 1), Some(hard_state(1, 1, 0)), None).unwrap();
        assert_eq!(h.pump().unwrap().durable_batch, 1);
        let segments = segment_files(&h).len();
        h.fs.faults().no_space_after_ops(ok_ops);
        h.persist(entries(61..=120, 1), None, None).unwrap();
        let progress = h.pump().unwrap();
        h.fs.faults().heal();
        if progress.durable_batch == 2 && !progress.disk_full {
            assert!(segment_files(&h).len() > segments, "the group rolled the segment");
            break;
        }
        full_disks += 1;
        pump_until(&mut h, "durability", |p| p.durable_batch == 2 && !p.disk_full);
        h.crash();
        assert_log(&h.open().unwrap(), &entries(1..=120, 1));
    }
    assert!(full_disks > 5, "the group has {full_disks} operations");
}

#[test]
fn a_snapshot_saved_again_after_running_out_of_space_keeps_its_file() {
    let mut h = Harness::new(21, None, small_options());
    h.open().unwrap();
    h.persist(entries(1..=20, 1), Some(hard_state(1, 1, 20)), None).unwrap();
    h.pump().unwrap();
    // Room for the temporary file, not for its content: it is removed again.
    h.fs.faults().no_space_after_ops(2);
    h.submit(StorageJob::SaveSnapshot { snapshot: snapshot(20, 1), compact_to: 20 }).unwrap();
    let progress = pump_until(&mut h, "the abandoned snapshot", |p| p.snapshots_abandoned == 1);
    assert_eq!(progress.snapshot_index, 0);
    h.fs.faults().heal();
    pump_until(&mut h, "the alarm coming down", |progress| !progress.disk_full);
    // The same snapshot again: its temporary file has the name of the removed one.
    h.submit(StorageJob::SaveSnapshot { snapshot: snapshot(20, 1), compact_to: 20 }).unwrap();
    pump_until(&mut h, "the saved snapshot", |p| p.snapshot_index == 20);
    h.crash();
    let recovered = h.open().unwrap();
    assert_eq!(recovered.snapshot_data, Some(snapshot(20, 1).data));
}

// ---- damaged directories ----------------------------------------------------------------------

/// A directory holding entries 1..=n in several segments, closed cleanly.
fn written(n: u64) -> Harness {
    let mut h = Harness::new(10, None, small_options());
    h.open().unwrap();
    for start in (1..=n).step_by(10) {
        h.persist(entries(start..=(start + 9).min(n), 1), Some(hard_state(1, 1, 0)), None).unwrap();
        h.pump().unwrap();
    }
    h.crash();
    h
}

fn error_of(h: &mut Harness) -> String {
    match h.open() {
        Ok(recovered) => panic!(
            "opened: {} entries, repairs {:?}",
            recovered.restored.entries.len(),
            recovered.repairs
        ),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_truncated_middle_segment_is_refused_with_file_and_offset() {
    let mut h = written(300);
    let segments = segment_files(&h);
    let victim = &segments[1];
    let mut image = h.fs.image()[victim].clone();
    image.truncate(1000);
    h.fs.put_durable_file(victim, image);
    let error = error_of(&mut h);
    assert!(error.contains(&victim.display().to_string()), "{error}");
    assert!(error.contains("offset"), "{error}");
}

#[test]
fn a_zero_length_segment_in_the_middle_is_refused_and_a_missing_one_is_named() {
    let mut h = written(300);
    let segments = segment_files(&h);
    h.fs.put_durable_file(&segments[1], Vec::new());
    let error = error_of(&mut h);
    assert!(
        error.contains(&segments[1].display().to_string()) && error.contains("without a header"),
        "{error}"
    );
    h.fs.remove_durable_file(&segments[1]);
    let error = error_of(&mut h);
    assert!(error.contains("00000000000000000002.wal is missing"), "{error}");
}

#[test]
fn a_zero_length_last_segment_is_an_interrupted_roll_and_is_removed() {
    let mut h = written(300);
    let segments = segment_files(&h);
    let next = segments.len() + 1;
    let path = h.dir.join(format!("{next:020}.wal"));
    h.fs.put_durable_file(&path, Vec::new());
    let recovered = h.open().unwrap();
    assert_log(&recovered, &entries(1..=300, 1));
    assert!(
        recovered.repairs.iter().any(|r| r.contains("creation never completed")),
        "{:?}",
        recovered.repairs
    );
}

#[test]
fn a_headerless_first_segment_of_a_never_used_directory_is_rewritten() {
    // Initialisation stopped after the hard-state file was written but before the first
    // segment's header reached the disk.
    let mut h = Harness::new(3, None, small_options());
    h.open().unwrap();
    h.crash();
    let first = segment_files(&h)[0].clone();
    let zeros = vec![0u8; h.fs.image()[&first].len()];
    h.fs.put_durable_file(&first, zeros);
    let recovered = h.open().unwrap();
    assert!(recovered.restored.entries.is_empty());
    assert!(
        recovered.repairs.iter().any(|r| r.contains("creation never completed")),
        "{:?}",
        recovered.repairs
    );
    // The directory works again: what is written now survives a crash.
    h.persist(entries(1..=5, 1), Some(hard_state(1, 1, 0)), None).unwrap();
    h.pump().unwrap();
    h.crash();
    assert!(h.open().unwrap().restored.entries == entries(1..=5, 1));
}

/// Opens with the power failing after `after_ops` file-system operations; whether the open
/// finished first.
fn open_with_power_cut(h: &mut Harness, after_ops: u64) -> bool {
    h.fs.faults().power_cut_after_ops(after_ops);
    let finished = h.open().is_ok();
    h.fs.faults().heal();
    finished
}

#[test]
fn an_initialisation_cut_off_anywhere_is_redone_and_keeps_what_it_syncs() {
    // Seeds 2455 and 2825 of the simulator crashed a node after its first segment was synced
    // and before its hard-state file was: the restart redid the initialisation and created the
    // segment again under the name whose removal it had not made durable, and the simulator's
    // file system lost the new segment's header (see `storage::removal`). Every cut point of
    // the initialisation, then every cut point of the restart that redoes it.
    let mut cut_points = 0;
    for first_cut in 0.. {
        let mut h = Harness::new(first_cut, Some(512), small_options());
        if open_with_power_cut(&mut h, first_cut) {
            break;
        }
        cut_points += 1;
        for second_cut in 0.. {
            let mut h = Harness::new(first_cut, Some(512), small_options());
            assert!(!open_with_power_cut(&mut h, first_cut));
            h.crash();
            let redo_finished = open_with_power_cut(&mut h, second_cut);
            h.crash();
            let recovered = h.open().unwrap_or_else(|error| {
                panic!("cut after {first_cut} then {second_cut} operations: {error}")
            });
            assert!(recovered.restored.entries.is_empty());
            h.persist(entries(1..=5, 1), Some(hard_state(1, 1, 0)), None).unwrap();
            assert_eq!(h.pump().unwrap().durable_batch, 1);
            h.crash();
            let recovered = h.open().unwrap_or_else(|error| {
                panic!("cut after {first_cut} then {second_cut} operations, then used: {error}")
            });
            assert_log(&recovered, &entries(1..=5, 1));
            if redo_finished {
                break;
            }
        }
    }
    assert!(cut_points > 10, "the initialisation has {cut_points} cut points");
}

#[test]
fn a_headerless_only_segment_is_refused_once_the_directory_was_used() {
    // A vote or term was recorded: the zeroed segment may have held promised entries.
    let mut h = Harness::new(4, None, small_options());
    h.open().unwrap();
    h.persist(Vec::new(), Some(hard_state(2, 1, 0)), None).unwrap();
    h.pump().unwrap();
    h.crash();
    let first = segment_files(&h)[0].clone();
    let zeros = vec![0u8; h.fs.image()[&first].len()];
    h.fs.put_durable_file(&first, zeros);
    let error = error_of(&mut h);
    assert!(error.contains("segment without a header"), "{error}");
}

#[test]
fn garbage_appended_to_the_last_segment_is_refused() {
    let mut h = written(100);
    let segments = segment_files(&h);
    let last = segments.last().unwrap();
    let mut image = h.fs.image()[last].clone();
    let end = image.iter().rposition(|b| *b != 0).unwrap() + 1;
    for (i, byte) in image[end..end + 200].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(91).wrapping_add(3);
    }
    h.fs.put_durable_file(last, image);
    let error = error_of(&mut h);
    assert!(
        error.contains(&last.display().to_string()) && error.contains(&format!("offset {end}")),
        "{error}"
    );
}

#[test]
fn a_torn_tail_is_truncated_and_appending_continues() {
    let mut h = written(100);
    let segments = segment_files(&h);
    let last = segments.last().unwrap().clone();
    let mut image = h.fs.image()[&last].clone();
    let end = image.iter().rposition(|b| *b != 0).unwrap() + 1;
    // Zero the last 30 bytes of the last record: the write stopped early.
    image[end - 30..end].fill(0);
    h.fs.put_durable_file(&last, image);
    let recovered = h.open().unwrap();
    assert!(recovered.repairs.iter().any(|r| r.contains("torn tail")), "{:?}", recovered.repairs);
    // The last record (a chunk of the last batch) is gone, everything before it is intact.
    let kept = recovered.restored.entries.len() as u64;
    assert!((90..100).contains(&kept), "{}", summary(&recovered.restored.entries));
    assert_log(&recovered, &entries(1..=kept, 1));
    h.persist(entries(kept + 1..=kept + 5, 2), None, None).unwrap();
    h.pump().unwrap();
    h.crash();
    let recovered = h.open().unwrap();
    assert!(recovered.repairs.is_empty(), "{:?}", recovered.repairs);
    let mut expected = entries(1..=kept, 1);
    expected.extend(entries(kept + 1..=kept + 5, 2));
    assert_log(&recovered, &expected);
}

#[test]
fn a_bit_flip_in_the_middle_of_the_log_is_refused() {
    let mut h = written(100);
    let last = segment_files(&h).last().unwrap().clone();
    let mut image = h.fs.image()[&last].clone();
    image[100] ^= 0x04;
    h.fs.put_durable_file(&last, image);
    let error = error_of(&mut h);
    assert!(error.contains("checksum") || error.contains("synced"), "{error}");
    assert!(error.contains(&last.display().to_string()), "{error}");
}

/// Flips a byte of the hard-state file's newest slot, as a disk might after it was synced.
fn damage_newest_hard_state_slot(h: &mut Harness) {
    let path = h.dir.join(conclave_core::storage::hard_state::HARD_STATE_FILE_NAME);
    let mut image = h.fs.image()[&path].clone();
    let slot = conclave_core::storage::hard_state::newest_slot_offset(&image, &path).unwrap();
    image[slot as usize + 20] ^= 0x10;
    h.fs.put_durable_file(&path, image);
}

#[test]
fn a_damaged_newest_hard_state_slot_is_repaired_from_the_log() {
    let mut h = Harness::new(12, None, small_options());
    h.open().unwrap();
    h.persist(entries(1..=3, 1), Some(hard_state(1, 1, 0)), None).unwrap();
    h.persist(entries(4..=5, 2), Some(hard_state(2, 3, 3)), None).unwrap();
    h.pump().unwrap();
    h.crash();
    damage_newest_hard_state_slot(&mut h);
    let recovered = h.open().unwrap();
    let restored = &recovered.restored.hard_state;
    assert_eq!((restored.term, restored.vote), (2, NodeId(3)), "{:?}", recovered.repairs);
    assert!(recovered.repairs.iter().any(|r| r.contains("rewrote it from the log")));
    // The file itself was repaired: the next start needs no repair.
    h.crash();
    let recovered = h.open().unwrap();
    assert_eq!(
        (recovered.restored.hard_state.term, recovered.restored.hard_state.vote),
        (2, NodeId(3))
    );
    assert!(recovered.repairs.is_empty(), "{:?}", recovered.repairs);
}

#[test]
fn the_log_copy_of_term_and_vote_survives_compaction_of_the_segment_that_recorded_it() {
    let mut h = Harness::new(13, None, small_options());
    h.open().unwrap();
    // The vote is recorded once, in the first segment; hundreds of entries later that
    // segment is compacted away, and every segment rolled to since starts with a copy.
    h.persist(entries(1..=10, 4), Some(hard_state(4, 2, 0)), None).unwrap();
    for start in (11..=400).step_by(10) {
        h.persist(entries(start..=start + 9, 4), Some(hard_state(4, 2, start - 1)), None).unwrap();
        h.pump().unwrap();
    }
    let first_segment = segment_files(&h)[0].clone();
    h.submit(StorageJob::SaveSnapshot { snapshot: snapshot(390, 4), compact_to: 390 }).unwrap();
    h.pump().unwrap();
    assert!(!segment_files(&h).contains(&first_segment), "the first segment was compacted");
    h.crash();
    damage_newest_hard_state_slot(&mut h);
    let recovered = h.open().unwrap();
    let restored = &recovered.restored.hard_state;
    assert_eq!((restored.term, restored.vote), (4, NodeId(2)), "{:?}", recovered.repairs);
}

#[test]
fn a_snapshot_with_a_bad_checksum_is_refused_when_nothing_else_reaches_the_log() {
    let mut h = Harness::new(11, None, small_options());
    h.open().unwrap();
    for start in (1..=300).step_by(10) {
        h.persist(entries(start..=start + 9, 1), Some(hard_state(1, 0, start + 9)), None).unwrap();
    }
    h.submit(StorageJob::SaveSnapshot { snapshot: snapshot(250, 1), compact_to: 250 }).unwrap();
    h.pump().unwrap();
    h.crash();
    let path = h.dir.join("snapshot-00000000000000000250.snap");
    let mut image = h.fs.image()[&path].clone();
    let at = image.len() - 3;
    image[at] ^= 0x40;
    h.fs.put_durable_file(&path, image);
    let error = error_of(&mut h);
    assert!(
        error.contains("snapshot-00000000000000000250.snap") && error.contains("checksum"),
        "{error}"
    );
}

#[test]
fn a_directory_of_another_format_version_is_refused() {
    let mut h = written(30);
    let first = segment_files(&h)[0].clone();
    let mut image = h.fs.image()[&first].clone();
    image[8..12].copy_from_slice(&2u32.to_le_bytes());
    h.fs.put_durable_file(&first, image);
    match h.open() {
        Err(StorageError::UnsupportedVersion { path, found: 2, supported: 1 }) => {
            assert_eq!(path, first)
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn a_missing_hard_state_with_records_is_refused() {
    let mut h = written(30);
    h.fs.remove_durable_file(&h.dir.join("hard_state"));
    let error = error_of(&mut h);
    assert!(error.contains("hard-state file is missing"), "{error}");
}

#[test]
fn leftover_temporary_snapshot_files_are_removed() {
    let mut h = written(30);
    let temp = h.dir.join("snapshot-00000000000000000020.snap.tmp");
    h.fs.put_durable_file(&temp, vec![1, 2, 3]);
    let recovered = h.open().unwrap();
    assert!(recovered.repairs.iter().any(|r| r.contains("incomplete snapshot")));
    assert!(!h.fs.image().contains_key(&temp));
    assert_log(&recovered, &entries(1..=30, 1));
    let _ = Path::new("/");
}

#[test]
fn an_online_backup_restores_into_an_empty_directory_and_the_node_continues() {
    use conclave_core::storage::backup::{BackupSource, RestoreOptions, restore_backup};
    let mut h = Harness::new(12, Some(512), small_options());
    h.open().unwrap();
    for start in (1..=100).step_by(10) {
        h.persist(entries(start..=start + 9, 3), Some(hard_state(3, 1, start + 9)), None).unwrap();
    }
    h.submit(StorageJob::SaveSnapshot { snapshot: snapshot(90, 3), compact_to: 80 }).unwrap();
    h.pump().unwrap();
    let backup = PathBuf::from("/srv/backup.cnb");
    let source = BackupSource { created_wall_ms: 1, description: "n1".into() };
    let meta = futures::executor::block_on(h.storage().backup_to(&backup, &source)).unwrap();
    assert_eq!((meta.last_index, meta.last_term), (90, 3));
    // Restore on another machine, into an empty directory, as a new cluster of other members.
    let image = h.fs.image()[&backup].clone();
    let mut other = Harness::new(13, Some(512), small_options());
    other.fs.put_durable_file(&backup, image);
    let options = RestoreOptions {
        config: Some(ClusterConfig::with_voters([NodeId(7)])),
        segment_bytes: small_options().segment_bytes,
        max_snapshot_bytes: 1 << 20,
        foreign_entries: Vec::new(),
    };
    futures::executor::block_on(restore_backup(&other.fs, &backup, &other.dir, &options)).unwrap();
    let recovered = other.open().unwrap();
    assert_eq!(recovered.restored.snapshot.last_index, 90);
    assert_eq!(recovered.restored.snapshot.config, ClusterConfig::with_voters([NodeId(7)]));
    assert_eq!(recovered.snapshot_data, Some(snapshot(90, 3).data));
    assert_eq!((recovered.restored.hard_state.term, recovered.restored.hard_state.commit), (3, 90));
    assert!(recovered.restored.entries.is_empty());
    other.persist(entries(91..=95, 4), Some(hard_state(4, 7, 90)), None).unwrap();
    other.pump().unwrap();
    other.crash();
    let recovered = other.open().unwrap();
    assert!(recovered.restored.entries == entries(91..=95, 4));
    // A second restore into the now used directory is refused.
    let error =
        futures::executor::block_on(restore_backup(&other.fs, &backup, &other.dir, &options));
    assert!(matches!(error, Err(StorageError::NotEmpty { .. })));
}

#[test]
fn a_lost_tail_never_lets_the_hard_states_commit_cover_entries_it_brought_back() {
    use conclave_core::storage::segment::{HeaderRead, decode_segment_header, scan_segment};
    use conclave_core::storage::wal::WalRecord;

    let mut h = Harness::new(66_228, None, small_options());
    h.open().unwrap();
    // Term 1 writes 1..=3; a term-2 leader overwrites 3 and commits it (a commit record after
    // the entries), and a term-3 change then copies commit 3 into the hard-state file.
    h.persist(entries(1..=3, 1), Some(hard_state(1, 1, 0)), None).unwrap();
    h.pump().unwrap();
    h.persist(entries(3..=3, 2), Some(hard_state(2, 2, 0)), None).unwrap();
    h.pump().unwrap();
    h.persist(entries(4..=4, 2), Some(hard_state(2, 2, 3)), None).unwrap();
    h.pump().unwrap();
    h.persist(Vec::new(), Some(hard_state(3, 3, 3)), None).unwrap();
    h.pump().unwrap();
    h.crash();

    // The disk loses every record from the term-2 overwrite on, though they had been synced:
    // the term-1 entry at 3 comes back.
    let segments = segment_files(&h);
    let last = segments.last().unwrap();
    let mut image = h.fs.image()[last].clone();
    let HeaderRead::Valid(header) = decode_segment_header(&image, last).unwrap() else {
        panic!("a valid segment header");
    };
    let scan = scan_segment(&image, last, header, true, usize::MAX >> 1).unwrap();
    let overwrite = scan
        .records
        .iter()
        .find(|record| {
            matches!(WalRecord::decode(&image[record.payload.clone()]),
                Ok(WalRecord::Entries(batch)) if batch[0].term == 2)
        })
        .expect("the term-2 record");
    let cut = overwrite.offset as usize;
    image[cut..].fill(0);
    h.fs.put_durable_file(last, image);

    let recovered = h.open().unwrap();
    let restored = &recovered.restored;
    assert_eq!(restored.hard_state.term, 3, "the hard-state file keeps the newest term");
    let at_3 = restored.entries.iter().find(|entry| entry.index == 3).expect("an entry at 3");
    assert_eq!(at_3.term, 1, "the lost overwrite brought the term-1 entry back");
    assert!(
        restored.hard_state.commit < 3,
        "commit {} covers an entry no replica committed",
        restored.hard_state.commit
    );
    assert!(
        recovered.repairs.iter().any(|repair| repair.contains("vouches only for")),
        "{:?}",
        recovered.repairs
    );
}
