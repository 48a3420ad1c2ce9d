//! The storage engine's file-system seam on the real disk (`std::fs`), for the `conclave`
//! binary. Every call runs on tokio's blocking thread pool (`spawn_blocking`), so a slow
//! `fdatasync` never stalls the runtime that serves requests and replicates.
//!
//! Durability calls map one to one: `sync_data` is `fdatasync(2)`, `sync_all` is `fsync(2)`,
//! and `sync_dir` opens the directory and `fsync`s it, which is what makes a created, renamed
//! or removed entry durable on Linux file systems. Unix only (positional I/O through
//! `std::os::unix::fs::FileExt`).

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use conclave_core::storage::fs::{DirEntry, EntryKind, FileSystem, FsFile, OpenMode, sync_failure};

/// Runs a blocking file-system call on the blocking pool.
async fn blocking<T, F>(call: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(error) => Err(io::Error::other(format!("file-system task failed: {error}"))),
    }
}

/// The real file system.
#[derive(Copy, Clone, Debug, Default)]
pub struct OsFs;

/// An open file; cheap to share with the blocking pool.
#[derive(Clone, Debug)]
pub struct OsFile {
    file: Arc<fs::File>,
}

impl FsFile for OsFile {
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.file.clone();
        blocking(move || {
            let mut buf = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(read) => filled += read,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            buf.truncate(filled);
            Ok(buf)
        })
        .await
    }

    async fn write_all_at(&self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        let file = self.file.clone();
        blocking(move || file.write_all_at(&data, offset)).await
    }

    async fn len_bytes(&self) -> io::Result<u64> {
        let file = self.file.clone();
        blocking(move || Ok(file.metadata()?.len())).await
    }

    async fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        let file = self.file.clone();
        blocking(move || file.set_len(len_bytes)).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        let file = self.file.clone();
        blocking(move || file.sync_data().map_err(sync_failure)).await
    }

    async fn sync_all(&self) -> io::Result<()> {
        let file = self.file.clone();
        blocking(move || file.sync_all().map_err(sync_failure)).await
    }

    async fn write_all_at_and_sync_data(&self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        let file = self.file.clone();
        // One trip to the blocking pool instead of two, on every group commit.
        blocking(move || {
            file.write_all_at(&data, offset)?;
            file.sync_data().map_err(sync_failure)
        })
        .await
    }
}

impl FileSystem for OsFs {
    type File = OsFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<OsFile> {
        let path = path.to_path_buf();
        blocking(move || {
            let mut options = fs::OpenOptions::new();
            match mode {
                OpenMode::Read => options.read(true),
                OpenMode::ReadWrite => options.read(true).write(true),
                OpenMode::CreateNew => options.read(true).write(true).create_new(true),
            };
            Ok(OsFile { file: Arc::new(options.open(&path)?) })
        })
        .await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        blocking(move || fs::rename(from, to)).await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || fs::remove_file(path)).await
    }

    async fn create_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || fs::create_dir(path)).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let path = path.to_path_buf();
        blocking(move || {
            let mut entries = Vec::new();
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                let kind = if entry.file_type()?.is_dir() {
                    EntryKind::Directory
                } else {
                    EntryKind::File
                };
                entries.push(DirEntry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    kind,
                });
            }
            entries.sort();
            Ok(entries)
        })
        .await
    }

    async fn entry_kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        let path: PathBuf = path.to_path_buf();
        blocking(move || match fs::metadata(&path) {
            Ok(metadata) if metadata.is_dir() => Ok(Some(EntryKind::Directory)),
            Ok(_) => Ok(Some(EntryKind::File)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        })
        .await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || fs::File::open(&path)?.sync_all().map_err(sync_failure)).await
    }

    async fn wait_ms(&self, duration_ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(duration_ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_core::raft::{Entry, EntryPayload, HardState, NodeId, PersistBatch};
    use conclave_core::seams::storage::{Storage, StorageJob};
    use conclave_core::storage::{WalOptions, WalStorage};

    use crate::test_dir::TestDir;

    #[tokio::test]
    async fn the_storage_engine_round_trips_on_the_real_disk() {
        let temp = TestDir::new("os-fs-test");
        let dir = temp.path().join("data");
        let options = WalOptions {
            segment_bytes: 64 * 1024,
            max_record_bytes: 16 * 1024,
            space: conclave_core::storage::space::SpaceOptions {
                ballast_bytes: 64 * 1024,
                probe_bytes: 64 * 1024,
            },
            ..WalOptions::default()
        };
        let entries: Vec<Entry> = (1..=2_000)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(vec![7u8; 100].into()),
            })
            .collect();
        {
            let (mut storage, recovered) = WalStorage::open(OsFs, &dir, options).await.unwrap();
            assert!(recovered.created);
            let writer = storage.writer();
            let work = async {
                for (id, chunk) in entries.chunks(100).enumerate() {
                    let hard_state = HardState { term: 1, vote: NodeId(1), commit: chunk[0].index };
                    let batch = PersistBatch {
                        id: id as u64 + 1,
                        snapshot: None,
                        entries: chunk.to_vec(),
                        hard_state: Some(hard_state),
                    };
                    storage.submit(StorageJob::Persist(batch)).unwrap();
                }
                loop {
                    let progress = storage.progress_changed().await.unwrap();
                    if progress.durable_batch == 20 {
                        break;
                    }
                }
            };
            tokio::select! {
                result = writer => panic!("the writer stopped: {result:?}"),
                () = work => {}
            }
        }
        let (_, recovered) = WalStorage::open(OsFs, &dir, options).await.unwrap();
        assert!(recovered.repairs.is_empty(), "{:?}", recovered.repairs);
        assert!(
            recovered.restored.entries == entries,
            "{} entries",
            recovered.restored.entries.len()
        );
        assert_eq!(
            (recovered.restored.hard_state.term, recovered.restored.hard_state.vote),
            (1, NodeId(1))
        );
        let segments = fs::read_dir(&dir).unwrap().filter(|e| {
            e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        });
        assert!(segments.count() > 2, "the log rolled over several segments");
    }
}
