//! Shared helpers of the storage tests: a synchronous harness around `WalStorage` on `MemFs`.
//! `MemFs` never makes a future wait, so polling the writer once carries out every queued job.

#![allow(dead_code)]
// Test helpers outside `#[test]` functions: a failed setup step should panic.
#![allow(clippy::unwrap_used)]

pub mod crash_model;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use conclave_core::raft::{Entry, EntryPayload, HardState, NodeId, PersistBatch};
use conclave_core::seams::storage::{Storage, StorageFailure, StorageJob, StorageProgress};
use conclave_core::storage::mem_fs::{MemFs, MemFsConfig};
use conclave_core::storage::space::SpaceOptions;
use conclave_core::storage::{Recovered, StorageError, WalOptions, WalStorage};

pub type WriterFuture = Pin<Box<dyn Future<Output = Result<(), StorageFailure>>>>;

pub fn entry(index: u64, term: u64) -> Entry {
    // 64 bytes of payload, so that a few hundred entries fill several small segments.
    let payload = format!("{:<64}", format!("v{index}t{term}"));
    Entry { term, index, payload: EntryPayload::Command(Bytes::from(payload)) }
}

pub fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

pub fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote: NodeId(vote), commit }
}

/// Small segments so that tests roll and compact.
pub fn small_options() -> WalOptions {
    WalOptions {
        segment_bytes: 8 * 1024,
        max_record_bytes: 2 * 1024,
        // A small reserve: these tests reopen directories thousands of times.
        space: SpaceOptions { ballast_bytes: 4096, probe_bytes: 4096 },
        ..WalOptions::default()
    }
}

pub struct Harness {
    pub fs: MemFs,
    pub dir: PathBuf,
    pub options: WalOptions,
    storage: Option<WalStorage<MemFs>>,
    writer: Option<WriterFuture>,
    pub writer_result: Option<Result<(), StorageFailure>>,
    next_batch: u64,
}

impl Harness {
    pub fn new(seed: u64, torn_block_bytes: Option<u64>, options: WalOptions) -> Harness {
        let fs = MemFs::new(seed, MemFsConfig { torn_block_bytes, capacity_bytes: None });
        futures::executor::block_on(async {
            use conclave_core::storage::fs::FileSystem;
            fs.create_dir(std::path::Path::new("/srv")).await.unwrap();
            fs.sync_dir(std::path::Path::new("/")).await.unwrap();
        });
        Harness {
            fs,
            dir: PathBuf::from("/srv/data"),
            options,
            storage: None,
            writer: None,
            writer_result: None,
            next_batch: 1,
        }
    }

    /// Opens (recovers) the data directory; batch ids restart at 1 like a new Raft.
    pub fn open(&mut self) -> Result<Recovered, StorageError> {
        let (mut storage, recovered) = futures::executor::block_on(WalStorage::open(
            self.fs.clone(),
            self.dir.clone(),
            self.options,
        ))?;
        self.writer = Some(Box::pin(storage.writer()));
        self.storage = Some(storage);
        self.writer_result = None;
        self.next_batch = 1;
        self.assert_no_sync_under_pending_removal();
        Ok(recovered)
    }

    /// The storage engine never syncs a file created under a name whose earlier file's removal
    /// is not yet durable: the simulator's file system loses such a file's synced data
    /// (`conclave_core::storage::removal`).
    pub fn assert_no_sync_under_pending_removal(&self) {
        let synced = self.fs.synced_under_pending_removal();
        assert!(
            synced.is_empty(),
            "synced before the removal of their names was durable: {synced:?}"
        );
    }

    pub fn storage(&mut self) -> &mut WalStorage<MemFs> {
        self.storage.as_mut().expect("open first")
    }

    /// Submits a persist batch with the next id; returns the id.
    pub fn persist(
        &mut self,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        snapshot: Option<conclave_core::raft::Snapshot>,
    ) -> Result<u64, StorageFailure> {
        let id = self.next_batch;
        self.next_batch += 1;
        self.submit(StorageJob::Persist(PersistBatch { id, snapshot, entries, hard_state }))?;
        Ok(id)
    }

    pub fn submit(&mut self, job: StorageJob) -> Result<(), StorageFailure> {
        self.storage().submit(job)
    }

    /// Lets the writer carry out everything queued; returns the published progress.
    pub fn pump(&mut self) -> Result<StorageProgress, StorageFailure> {
        if let Some(writer) = self.writer.as_mut() {
            let mut context = Context::from_waker(futures::task::noop_waker_ref());
            if let Poll::Ready(result) = writer.as_mut().poll(&mut context) {
                self.writer = None;
                self.writer_result = Some(result);
            }
        }
        self.storage().current_progress()
    }

    pub fn load_snapshot(
        &mut self,
    ) -> Result<Option<conclave_core::raft::Snapshot>, StorageFailure> {
        futures::executor::block_on(self.storage().load_snapshot())
    }

    /// Power loss: the handle and the writer are gone, only durable data remains.
    pub fn crash(&mut self) {
        self.assert_no_sync_under_pending_removal();
        self.writer = None;
        self.storage = None;
        self.fs.crash();
    }
}
