//! Log append throughput of the storage engine on the real file system, 100-byte entries:
//! with group commit (64 batches in flight, as many concurrent proposers would keep — every
//! batch that arrives during a sync joins the next one) against one sync per entry (one batch
//! in flight). The data directory lives under `CONCLAVE_BENCH_DIR` or the system's temporary
//! directory (it must be a real disk: on tmpfs a sync costs nothing).
//!
//! Run: `cargo bench -p conclave-node --bench wal_append`

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use conclave_core::raft::{Entry, EntryPayload, PersistBatch};
use conclave_core::seams::storage::{Storage, StorageJob};
use conclave_core::storage::{WalOptions, WalStorage};
use conclave_node::fs::OsFs;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ENTRY_BYTES: usize = 100;

/// Appends `iterations * entries_per_iteration` entries, one entry per persist batch, keeping
/// at most `in_flight` batches not yet durable. Returns the time from the first submission
/// until the last batch is durable (opening the directory is not timed).
fn append(iterations: u64, entries_per_iteration: u64, in_flight: u64, name: &str) -> Duration {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = support::bench_dir(&format!("wal-{name}"));
    let elapsed = runtime.block_on(async {
        let (mut storage, _) =
            WalStorage::open(OsFs, &dir, WalOptions::default()).await.expect("open");
        let writer = storage.writer();
        let total = iterations * entries_per_iteration;
        let payload = Bytes::from(vec![0x5Au8; ENTRY_BYTES]);
        let work = async {
            let start = Instant::now();
            let (mut submitted, mut durable) = (0u64, 0u64);
            while durable < total {
                while submitted < total && submitted - durable < in_flight {
                    submitted += 1;
                    let entry = Entry {
                        term: 1,
                        index: submitted,
                        payload: EntryPayload::Command(payload.clone()),
                    };
                    let batch = PersistBatch {
                        id: submitted,
                        snapshot: None,
                        entries: vec![entry],
                        hard_state: None,
                    };
                    storage.submit(StorageJob::Persist(batch)).expect("submit");
                }
                durable = storage.progress_changed().await.expect("progress").durable_batch;
            }
            start.elapsed()
        };
        tokio::select! {
            result = writer => panic!("the storage writer stopped: {result:?}"),
            elapsed = work => elapsed,
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

fn wal_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12));
    let entries = 2_000u64;
    group.throughput(Throughput::ElementsAndBytes {
        elements: entries,
        bytes: entries * ENTRY_BYTES as u64,
    });
    group.bench_function("group_commit_64_in_flight", |b| {
        b.iter_custom(|iterations| append(iterations, entries, 64, "group"))
    });
    let entries = 200u64;
    group.throughput(Throughput::ElementsAndBytes {
        elements: entries,
        bytes: entries * ENTRY_BYTES as u64,
    });
    group.bench_function("sync_per_entry", |b| {
        b.iter_custom(|iterations| append(iterations, entries, 1, "single"))
    });
    group.finish();
}

criterion_group!(benches, wal_append);
criterion_main!(benches);
