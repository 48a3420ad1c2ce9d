//! Recovery from an arbitrary data directory must never panic: it either refuses with an error
//! or hands back a state Raft can start from (entries contiguous after the snapshot), and the
//! recovered storage must accept appends.
//!
//! The input picks one of two ways to build the directory image on the in-memory file system:
//! - first byte even: a healthy directory written by the storage engine itself (log segments,
//!   hard state, a snapshot), then damaged by edits the rest of the input describes (flip,
//!   zero or set bytes, truncate, extend, delete or duplicate files) — this reaches deep into
//!   recovery;
//! - first byte odd: files whose names and contents come straight from the input.

#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use conclave_core::raft::{ClusterConfig, Entry, EntryPayload, HardState, NodeId, PersistBatch, Snapshot, SnapshotMeta};
use conclave_core::seams::storage::{Storage, StorageJob};
use conclave_core::storage::mem_fs::{MemFs, MemFsConfig};
use conclave_core::storage::{WalOptions, WalStorage};
use futures::executor::block_on;
use futures::FutureExt;
use libfuzzer_sys::fuzz_target;

const DATA_DIR: &str = "/data";

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 4_096,
        max_record_bytes: 1_024,
        max_snapshot_bytes: 1 << 20,
        space: conclave_core::storage::space::SpaceOptions { ballast_bytes: 1024, probe_bytes: 1024 },
        ..WalOptions::default()
    }
}

/// A healthy directory: 120 entries over several segments, a term change, a snapshot.
fn healthy_image() -> BTreeMap<PathBuf, Vec<u8>> {
    let fs = MemFs::new(0, MemFsConfig::default());
    block_on(async {
        let (mut storage, _) = WalStorage::open(fs.clone(), DATA_DIR, options()).await.expect("open");
        let mut writer = Box::pin(storage.writer());
        for id in 1..=12u64 {
            let term = if id < 8 { 1 } else { 2 };
            let entries: Vec<Entry> = (id * 10 - 9..=id * 10)
                .map(|index| Entry { term, index, payload: EntryPayload::Command(Bytes::from(vec![id as u8; 24])) })
                .collect();
            let hard_state = HardState { term, vote: NodeId(1), commit: id * 10 - 5 };
            let batch = PersistBatch { id, snapshot: None, entries, hard_state: Some(hard_state) };
            storage.submit(StorageJob::Persist(batch)).expect("submit");
            if id == 9 {
                let snapshot = Snapshot {
                    meta: SnapshotMeta { last_index: 60, last_term: 1, config: ClusterConfig::with_voters([NodeId(1)]) },
                    data: Bytes::from_static(b"state"),
                };
                storage.submit(StorageJob::SaveSnapshot { snapshot, compact_to: 50 }).expect("submit");
            }
            // MemFs never waits: one poll carries out everything queued.
            assert!((&mut writer).now_or_never().is_none(), "the writer stopped");
        }
    });
    fs.image()
}

fn read_u16(input: &mut &[u8]) -> u16 {
    let value = u16::from_le_bytes([input.first().copied().unwrap_or(0), input.get(1).copied().unwrap_or(0)]);
    *input = input.get(2..).unwrap_or(&[]);
    value
}

fn read_u8(input: &mut &[u8]) -> u8 {
    let value = input.first().copied().unwrap_or(0);
    *input = input.get(1..).unwrap_or(&[]);
    value
}

const NAMES: [&str; 8] = [
    "hard_state",
    "00000000000000000001.wal",
    "00000000000000000002.wal",
    "00000000000000000003.wal",
    "snapshot-00000000000000000060.snap",
    "snapshot-00000000000000000090.snap",
    "snapshot-00000000000000000090.snap.tmp",
    "README",
];

fn damaged_image(mut input: &[u8]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut image = healthy_image();
    while !input.is_empty() && image.len() < 32 {
        let paths: Vec<PathBuf> = image.keys().cloned().collect();
        let Some(path) = paths.get(read_u8(&mut input) as usize % paths.len().max(1)).cloned() else { break };
        let op = read_u8(&mut input) % 7;
        let offset = read_u16(&mut input) as usize;
        let value = read_u8(&mut input);
        let Some(content) = image.get_mut(&path) else { break };
        let at = if content.is_empty() { 0 } else { offset % content.len() };
        match op {
            0 if !content.is_empty() => content[at] ^= value.max(1),
            1 if !content.is_empty() => content[at] = value,
            2 => content.truncate(at),
            3 => content.resize(content.len() + offset % 4096, value),
            4 => {
                let end = (at + value as usize).min(content.len());
                content[at..end].fill(0);
            }
            5 => {
                image.remove(&path);
            }
            _ => {
                let name = NAMES[value as usize % NAMES.len()];
                let copy = content.clone();
                image.insert(Path::new(DATA_DIR).join(name), copy);
            }
        }
    }
    image
}

fn raw_image(mut input: &[u8]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut image = BTreeMap::new();
    while !input.is_empty() && image.len() < 16 {
        let name = NAMES[read_u8(&mut input) as usize % NAMES.len()];
        let len = (read_u16(&mut input) as usize).min(input.len());
        image.insert(Path::new(DATA_DIR).join(name), input[..len].to_vec());
        input = &input[len..];
    }
    image
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let image = if mode % 2 == 0 { damaged_image(rest) } else { raw_image(rest) };
    let fs = MemFs::from_image(u64::from(mode), MemFsConfig::default(), &image);
    let Ok((mut storage, recovered)) = block_on(WalStorage::open(fs, DATA_DIR, options())) else { return };
    let restored = &recovered.restored;
    let first = restored.snapshot.last_index + 1;
    for (offset, entry) in restored.entries.iter().enumerate() {
        assert_eq!(entry.index, first + offset as u64, "recovered entries are contiguous after the snapshot");
    }
    // The recovered storage accepts the next append.
    let next = restored.entries.last().map_or(restored.snapshot.last_index, |e| e.index) + 1;
    let term = restored.hard_state.term.max(1);
    let entry = Entry { term, index: next, payload: EntryPayload::Noop };
    let batch = PersistBatch { id: 1, snapshot: None, entries: vec![entry], hard_state: None };
    let mut writer = Box::pin(storage.writer());
    if storage.submit(StorageJob::Persist(batch)).is_ok() {
        let _ = (&mut writer).now_or_never();
    }
});
