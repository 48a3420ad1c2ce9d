//! The node's durable storage: the write-ahead-log engine of `conclave_core::storage` on the real
//! file system (`crate::fs::OsFs`), wrapped to time every sync for the metrics and to honour
//! `--fsync=false`. The one place that decides what storage the node runs on.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use conclave_core::shard::ShardId;
use conclave_core::storage::fs::{DirEntry, EntryKind, FileSystem, FsFile, OpenMode};
use conclave_core::storage::{
    GroupStorage, Recovered, SharedLog, StorageError, WalOptions, WalStorage,
};
use prometheus_client::metrics::histogram::Histogram;

use crate::fs::{OsFile, OsFs};

/// The file system the node's storage runs on.
#[derive(Clone)]
pub struct NodeFs {
    inner: OsFs,
    fsync: bool,
    sync_seconds: Histogram,
}

pub struct NodeFile {
    inner: OsFile,
    fsync: bool,
    sync_seconds: Histogram,
}

impl NodeFile {
    async fn timed_sync(&self, sync: impl Future<Output = io::Result<()>>) -> io::Result<()> {
        if !self.fsync {
            // Operator's choice (--fsync=false): data reaches the page cache, which survives
            // a process crash but not a power loss.
            return Ok(());
        }
        let started = Instant::now();
        let result = sync.await;
        self.sync_seconds.observe(started.elapsed().as_secs_f64());
        result
    }
}

impl FsFile for NodeFile {
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_at(offset, len).await
    }

    async fn write_all_at(&self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        self.inner.write_all_at(offset, data).await
    }

    async fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes().await
    }

    async fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.inner.set_len(len_bytes).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.timed_sync(self.inner.sync_data()).await
    }

    async fn sync_all(&self) -> io::Result<()> {
        self.timed_sync(self.inner.sync_all()).await
    }

    async fn write_all_at_and_sync_data(&self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        if !self.fsync {
            return self.inner.write_all_at(offset, data).await;
        }
        // The fsync histogram then includes the write into the page cache: microseconds
        // beside the sync, and the price of doing both in one hand-off.
        self.timed_sync(self.inner.write_all_at_and_sync_data(offset, data)).await
    }
}

impl FileSystem for NodeFs {
    type File = NodeFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<NodeFile> {
        let inner = self.inner.open(path, mode).await?;
        Ok(NodeFile { inner, fsync: self.fsync, sync_seconds: self.sync_seconds.clone() })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to).await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path).await
    }

    async fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir(path).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.list_dir(path).await
    }

    async fn entry_kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        self.inner.entry_kind(path).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        self.inner.sync_dir(path).await
    }

    async fn wait_ms(&self, duration_ms: u64) {
        self.inner.wait_ms(duration_ms).await
    }
}

pub type NodeStorage = WalStorage<NodeFs>;

/// One hosted group's storage in a sharded node: its part of the node's shared log.
pub type NodeGroupStorage = GroupStorage<NodeFs>;

/// The shared log of a sharded node and each hosted group's storage and recovered state.
pub type OpenedSharedLog = (SharedLog<NodeFs>, BTreeMap<ShardId, (NodeGroupStorage, Recovered)>);

/// Opens (creating if needed) the data directory and recovers what it holds. The parent
/// directories are created first: `WalStorage` creates only the last component.
pub async fn open_storage(
    dir: &Path,
    fsync: bool,
    sync_seconds: Histogram,
    max_record_bytes: u64,
) -> Result<(NodeStorage, Recovered), StorageError> {
    create_parents(dir).await?;
    let fs = NodeFs { inner: OsFs, fsync, sync_seconds };
    WalStorage::open(fs, dir, wal_options(max_record_bytes)).await
}

/// Opens (creating if needed) the shared log of a sharded node in `dir` for the groups
/// `hosted`, recovering each group's part: N groups, one log, one sync per batch for all.
pub async fn open_shared_log(
    dir: &Path,
    hosted: &[ShardId],
    fsync: bool,
    sync_seconds: Histogram,
    max_record_bytes: u64,
) -> Result<OpenedSharedLog, StorageError> {
    create_parents(dir).await?;
    let fs = NodeFs { inner: OsFs, fsync, sync_seconds };
    SharedLog::open(fs, dir, hosted, wal_options(max_record_bytes)).await
}

async fn create_parents(dir: &Path) -> Result<(), StorageError> {
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        let parent: PathBuf = parent.to_path_buf();
        let created = tokio::task::spawn_blocking(move || std::fs::create_dir_all(parent)).await;
        match created {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(create_error(dir, source)),
            Err(error) => return Err(create_error(dir, io::Error::other(error))),
        }
    }
    Ok(())
}

fn wal_options(max_record_bytes: u64) -> WalOptions {
    let options = WalOptions {
        // The largest record must hold the largest entry (value + key + framing).
        max_record_bytes: max_record_bytes.clamp(1024, u32::MAX as u64) as u32,
        ..WalOptions::default()
    };
    WalOptions {
        segment_bytes: options.segment_bytes.max(2 * options.max_record_bytes as u64 + 4096),
        ..options
    }
}

fn create_error(dir: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        operation: "create the parent directories of",
        path: dir.to_path_buf(),
        cause: source,
    }
}
