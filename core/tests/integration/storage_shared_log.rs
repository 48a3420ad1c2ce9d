//! The shared log of a node hosting many groups (`storage/shared_log.rs`) on the in-memory file
//! system: one sync per group commit whatever the number of groups, every group recovered after
//! power loss, segments kept while any group still needs them, and directories that cannot be
//! trusted refused.

// Test setup: a failed step should panic.
#![allow(clippy::unwrap_used)]

use crate::storage_support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use conclave_core::raft::{PersistBatch, Snapshot, SnapshotMeta};
use conclave_core::seams::storage::{Storage, StorageJob, StorageProgress};
use conclave_core::shard::ShardId;
use conclave_core::storage::fs::FileSystem;
use conclave_core::storage::mem_fs::{MemFs, MemFsConfig};
use conclave_core::storage::segment::parse_segment_file_name;
use conclave_core::storage::{
    GroupStorage, Recovered, SharedLog, StorageError, WalOptions, WalStorage,
};
use storage_support::{entries, hard_state, small_options};

type Writer =
    Pin<Box<dyn Future<Output = Result<(), conclave_core::seams::storage::StorageFailure>>>>;

/// A node's shared log, opened for some groups, driven by hand (`MemFs` never makes a future
/// wait, so one poll of the writer carries out everything queued).
struct Node {
    fs: MemFs,
    dir: PathBuf,
    options: WalOptions,
    groups: BTreeMap<ShardId, GroupStorage<MemFs>>,
    writer: Option<Writer>,
    next_batch: BTreeMap<ShardId, u64>,
}

impl Node {
    fn new(seed: u64, options: WalOptions) -> Node {
        let fs =
            MemFs::new(seed, MemFsConfig { torn_block_bytes: Some(512), capacity_bytes: None });
        futures::executor::block_on(async {
            fs.create_dir(Path::new("/srv")).await.unwrap();
            fs.sync_dir(Path::new("/")).await.unwrap();
        });
        Node {
            fs,
            dir: PathBuf::from("/srv/data"),
            options,
            groups: BTreeMap::new(),
            writer: None,
            next_batch: BTreeMap::new(),
        }
    }

    fn open(&mut self, hosted: &[ShardId]) -> Result<BTreeMap<ShardId, Recovered>, StorageError> {
        let (mut log, groups) = futures::executor::block_on(SharedLog::open(
            self.fs.clone(),
            self.dir.clone(),
            hosted,
            self.options,
        ))?;
        self.writer = Some(Box::pin(log.writer()));
        let mut recovered = BTreeMap::new();
        self.groups.clear();
        for (shard, (storage, group)) in groups {
            assert_eq!(storage.shard(), shard);
            self.groups.insert(shard, storage);
            recovered.insert(shard, group);
        }
        self.next_batch.clear();
        Ok(recovered)
    }

    fn persist(&mut self, shard: ShardId, batch: PersistBatch) {
        self.groups.get_mut(&shard).unwrap().submit(StorageJob::Persist(batch)).unwrap();
    }

    /// Persists `entries` (and a hard state) for `shard` with the group's next batch id.
    fn append(
        &mut self,
        shard: ShardId,
        entries: Vec<conclave_core::raft::Entry>,
        hard: Option<conclave_core::raft::HardState>,
    ) {
        let id = self.next_batch.entry(shard).or_insert(0);
        *id += 1;
        let batch = PersistBatch { id: *id, snapshot: None, entries, hard_state: hard };
        self.persist(shard, batch);
    }

    fn save_snapshot(&mut self, shard: ShardId, last_index: u64, last_term: u64, compact_to: u64) {
        let snapshot = Snapshot {
            meta: SnapshotMeta { last_index, last_term, ..SnapshotMeta::default() },
            data: Bytes::from(format!("state of {shard} at {last_index}")),
        };
        let job = StorageJob::SaveSnapshot { snapshot, compact_to };
        self.groups.get_mut(&shard).unwrap().submit(job).unwrap();
    }

    /// Lets the writer carry out everything queued.
    fn pump(&mut self) {
        let writer = self.writer.as_mut().expect("open first");
        let mut context = Context::from_waker(futures::task::noop_waker_ref());
        if let Poll::Ready(result) = writer.as_mut().poll(&mut context) {
            panic!("the writer ended: {result:?}");
        }
    }

    fn progress(&self, shard: ShardId) -> StorageProgress {
        self.groups[&shard].current_progress().unwrap()
    }

    fn segments(&self) -> Vec<u64> {
        let listing = futures::executor::block_on(self.fs.list_dir(&self.dir)).unwrap();
        let mut seqs: Vec<u64> =
            listing.iter().filter_map(|entry| parse_segment_file_name(&entry.name)).collect();
        seqs.sort_unstable();
        seqs
    }

    fn crash(&mut self) {
        self.writer = None;
        self.groups.clear();
        self.fs.crash();
    }
}

fn shards(count: u32) -> Vec<ShardId> {
    (0..count).map(ShardId).collect()
}

#[test]
fn a_group_commit_of_many_groups_costs_one_sync() {
    const GROUPS: u32 = 16;
    // Segments no roll gets in the way of, a small disk-space reserve (17 directories).
    let options = WalOptions {
        segment_bytes: 1 << 20,
        max_record_bytes: 64 << 10,
        space: small_options().space,
        ..WalOptions::default()
    };
    let mut node = Node::new(1, options);
    node.open(&shards(GROUPS)).unwrap();
    node.pump();
    let before = node.fs.file_syncs();
    for shard in shards(GROUPS) {
        node.append(shard, entries(1..=3, 1), None);
    }
    node.pump();
    assert_eq!(node.fs.file_syncs() - before, 1, "one fdatasync for all {GROUPS} groups");
    for shard in shards(GROUPS) {
        assert_eq!(node.progress(shard).durable_batch, 1, "{shard} is durable");
    }

    // The same work with a log per group: one sync each.
    let fs = MemFs::new(2, MemFsConfig { torn_block_bytes: None, capacity_bytes: None });
    let mut storages = Vec::new();
    for shard in shards(GROUPS) {
        let dir = format!("/group-{}", shard.0);
        let (mut storage, _) =
            futures::executor::block_on(WalStorage::open(fs.clone(), dir, options)).unwrap();
        let writer: Writer = Box::pin(storage.writer());
        storages.push((storage, writer));
    }
    let before = fs.file_syncs();
    let mut context = Context::from_waker(futures::task::noop_waker_ref());
    for (storage, writer) in &mut storages {
        let batch =
            PersistBatch { id: 1, snapshot: None, entries: entries(1..=3, 1), hard_state: None };
        storage.submit(StorageJob::Persist(batch)).unwrap();
        assert!(writer.as_mut().poll(&mut context).is_pending());
    }
    assert_eq!(fs.file_syncs() - before, u64::from(GROUPS), "a log per group syncs per group");
}

#[test]
fn every_group_recovers_what_was_durable_after_power_loss() {
    let mut node = Node::new(3, small_options());
    let hosted = shards(4);
    node.open(&hosted).unwrap();
    node.pump();
    // Each group: its own term and vote, entries over several commits (rolling segments).
    for round in 0..30u64 {
        for shard in &hosted {
            let term = u64::from(shard.0) + 1;
            let first = round * 4 + 1;
            let hard = (round == 0).then(|| hard_state(term, u64::from(shard.0) + 1, 0));
            node.append(*shard, entries(first..=first + 3, term), hard);
        }
        node.pump();
    }
    assert!(node.segments().len() > 2, "the groups' records span several segments");
    // Unsynced at the crash: shard 2's next batch is queued but never carried out.
    node.append(ShardId(2), entries(121..=124, 3), None);
    node.crash();

    let recovered = node.open(&hosted).unwrap();
    for shard in &hosted {
        let restored = &recovered[shard].restored;
        let term = u64::from(shard.0) + 1;
        assert_eq!(restored.hard_state.term, term, "{shard}'s term");
        assert_eq!(restored.hard_state.vote.0, u64::from(shard.0) + 1, "{shard}'s vote");
        let indexes: Vec<u64> = restored.entries.iter().map(|entry| entry.index).collect();
        assert_eq!(indexes, (1..=120).collect::<Vec<_>>(), "{shard}'s entries");
        assert!(restored.entries.iter().all(|entry| entry.term == term), "{shard}'s terms");
    }
}

#[test]
fn a_segment_stays_until_every_group_with_records_in_it_has_compacted() {
    let mut node = Node::new(4, small_options());
    let (busy, quiet) = (ShardId(1), ShardId(2));
    node.open(&[busy, quiet]).unwrap();
    node.pump();
    // The quiet group writes once, into the first segment.
    node.append(quiet, entries(1..=2, 1), Some(hard_state(1, 1, 0)));
    node.append(busy, entries(1..=4, 1), Some(hard_state(1, 1, 0)));
    node.pump();
    // The busy group fills segments and compacts behind itself.
    let mut last = 4;
    for _ in 0..120 {
        node.append(busy, entries(last + 1..=last + 4, 1), None);
        last += 4;
        node.pump();
    }
    node.save_snapshot(busy, last, 1, last);
    node.pump();
    assert_eq!(node.progress(busy).compacted_to, last);
    let segments = node.segments();
    assert!(segments.len() > 3, "segments behind the busy group's snapshot stay: {segments:?}");
    assert_eq!(segments[0], 1, "the quiet group's records keep the first segment");
    // The writer asks the quiet group to compact past its records there; what it asked of the
    // busy group (before its snapshot) is met already.
    assert_eq!(node.groups[&quiet].compaction_wanted(), 2);
    assert!(node.groups[&busy].compaction_wanted() <= last);

    // Once the quiet group compacts past its records, everything but the active segment goes.
    node.save_snapshot(quiet, 2, 1, 2);
    node.pump();
    let segments = node.segments();
    assert_eq!(segments.len(), 1, "only the active segment is left: {segments:?}");

    // And both groups still recover: from their snapshots, with nothing after them.
    node.crash();
    let recovered = node.open(&[busy, quiet]).unwrap();
    assert_eq!(recovered[&busy].restored.snapshot.last_index, last);
    assert_eq!(recovered[&quiet].restored.snapshot.last_index, 2);
    assert!(recovered.values().all(|group| group.restored.entries.is_empty()));
}

#[test]
fn a_group_new_to_the_node_starts_empty_and_one_that_lost_its_hard_state_is_refused() {
    let mut node = Node::new(5, small_options());
    node.open(&shards(2)).unwrap();
    node.pump();
    node.append(ShardId(0), entries(1..=3, 1), Some(hard_state(1, 1, 0)));
    node.append(ShardId(1), entries(1..=3, 1), Some(hard_state(1, 2, 0)));
    node.pump();
    node.crash();

    // A third group joins: nothing of it anywhere, so it starts empty.
    let recovered = node.open(&shards(3)).unwrap();
    assert!(recovered[&ShardId(2)].restored.entries.is_empty());
    assert_eq!(recovered[&ShardId(1)].restored.entries.len(), 3);
    node.crash();

    // A group whose hard-state file is gone while the log holds its records.
    node.fs.remove_durable_file(&node.dir.join("shard-1").join("hard_state"));
    let refused = node.open(&shards(3)).map(|_| ());
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("hard-state file of shard 1 is missing"), "{error}");
}

#[test]
fn a_single_group_directory_is_not_taken_for_a_shared_log() {
    let mut node = Node::new(6, small_options());
    let (mut storage, _) = futures::executor::block_on(WalStorage::open(
        node.fs.clone(),
        node.dir.clone(),
        small_options(),
    ))
    .unwrap();
    let mut writer: Writer = Box::pin(storage.writer());
    let batch =
        PersistBatch { id: 1, snapshot: None, entries: entries(1..=2, 1), hard_state: None };
    storage.submit(StorageJob::Persist(batch)).unwrap();
    let mut context = Context::from_waker(futures::task::noop_waker_ref());
    assert!(writer.as_mut().poll(&mut context).is_pending());
    drop((storage, writer));
    let error = node.open(&shards(2)).map(|_| ()).unwrap_err().to_string();
    assert!(error.contains("single group's data"), "{error}");
}
