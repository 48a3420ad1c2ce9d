//! What many Raft groups on one node cost the disk: the shared log (`SharedLog`, one log and
//! one `fdatasync` per group commit for all groups) against one log per group (`WalStorage`
//! each, one sync per group per commit), on the real file system.
//!
//! Every group keeps one persist batch of one 100-byte entry in flight, as a group with one
//! client at a time does: the worst case for per-group logs, and the common one for a node
//! hosting many lightly loaded groups. Printed per group count: batches made durable per
//! second across all groups, with each design.
//!
//! The directories live under `CONCLAVE_BENCH_DIR` or the system's temporary directory (it
//! must be a real disk: on tmpfs a sync costs nothing).
//!
//! Run: `cargo bench -p conclave-node --bench group_logs`

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conclave_core::raft::{Entry, EntryPayload, PersistBatch};
use conclave_core::seams::storage::{Storage, StorageFailure, StorageJob};
use conclave_core::shard::ShardId;
use conclave_core::storage::{SharedLog, WalOptions, WalStorage};
use conclave_node::fs::OsFs;

const ENTRY_BYTES: usize = 100;
/// How long each configuration is driven.
const RUN_FOR: Duration = Duration::from_secs(4);
const GROUP_COUNTS: [u32; 4] = [1, 4, 16, 64];

fn options() -> WalOptions {
    // Segments that do not roll during a run (a roll costs syncs of its own).
    WalOptions { segment_bytes: 256 << 20, ..WalOptions::default() }
}

/// One group's client: one batch at a time, each waited for, until `RUN_FOR` has passed.
/// Returns the batches made durable.
async fn one_at_a_time<S: Storage>(mut storage: S, start: Instant) -> u64 {
    let payload = Bytes::from(vec![0x5Au8; ENTRY_BYTES]);
    let mut id = 0;
    while start.elapsed() < RUN_FOR {
        id += 1;
        let entry = Entry { term: 1, index: id, payload: EntryPayload::Command(payload.clone()) };
        let batch = PersistBatch { id, snapshot: None, entries: vec![entry], hard_state: None };
        storage.submit(StorageJob::Persist(batch)).expect("submit");
        while storage.progress_changed().await.expect("progress").durable_batch < id {}
    }
    id
}

/// Drives every group's client alongside the writers until all clients are done; returns
/// durable batches per second across all groups.
async fn drive<S: Storage>(
    storages: Vec<S>,
    writers: impl Future<Output = Result<(), StorageFailure>>,
) -> f64 {
    let start = Instant::now();
    let clients = futures::future::join_all(
        storages.into_iter().map(|storage| one_at_a_time(storage, start)),
    );
    let durable: u64 = tokio::select! {
        result = writers => panic!("a storage writer stopped: {result:?}"),
        counts = clients => counts.into_iter().sum(),
    };
    durable as f64 / start.elapsed().as_secs_f64()
}

fn shared(groups: u32) -> f64 {
    let dir = support::bench_dir(&format!("group-logs-shared-{groups}"));
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let rate = runtime.block_on(async {
        let hosted: Vec<ShardId> = (0..groups).map(ShardId).collect();
        let (mut log, opened) =
            SharedLog::open(OsFs, &dir, &hosted, options()).await.expect("open");
        let storages = opened.into_values().map(|(storage, _)| storage).collect();
        drive(storages, log.writer()).await
    });
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

fn per_group(groups: u32) -> f64 {
    let dir = support::bench_dir(&format!("group-logs-per-group-{groups}"));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let rate = runtime.block_on(async {
        let mut storages = Vec::new();
        let mut writers = Vec::new();
        for group in 0..groups {
            let (mut storage, _) =
                WalStorage::open(OsFs, dir.join(format!("group-{group}")), options())
                    .await
                    .expect("open");
            writers.push(storage.writer());
            storages.push(storage);
        }
        let writers = async move { futures::future::try_join_all(writers).await.map(|_| ()) };
        drive(storages, writers).await
    });
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    println!(
        "persist batches made durable per second, all groups together \
         (one 100-byte entry per batch, one batch in flight per group, {} s each)",
        RUN_FOR.as_secs()
    );
    println!("{:>7}  {:>14}  {:>16}  {:>8}", "groups", "shared log", "a log per group", "ratio");
    for groups in GROUP_COUNTS {
        let shared_rate = shared(groups);
        let per_group_rate = per_group(groups);
        println!(
            "{groups:>7}  {shared_rate:>12.0}/s  {per_group_rate:>14.0}/s  {:>7.1}×",
            shared_rate / per_group_rate
        );
    }
}
