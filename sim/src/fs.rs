//! The storage engine's file-system seam on turmoil's simulated file system (`unstable-fs`):
//! unsynced writes and unsynced directory entries are lost when the nemesis crashes a host,
//! pending writes tear at the configured block size, and every operation has a chance to fail
//! or (for reads) to return corrupted bytes, as the node's [`DiskFaults`] switches say.
//!
//! Everything random comes from a ChaCha generator seeded from the run's seed, so a run stays a
//! pure function of its seed.
//!
//! One fact of turmoil 0.7's model to know: it keeps file data by path, so a file created under
//! a name whose removal is not yet durable (no directory sync since) loses its synced data
//! when that removal is flushed. The storage engine never does that
//! (`conclave_core::storage::removal`); `tests/integration/interrupted_initialisation.rs`
//! pins the fact.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use conclave_core::storage::fs::{DirEntry, EntryKind, FileSystem, FsFile, OpenMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use turmoil::fs::shim::tokio::fs as sim_fs;

use crate::disk::DiskFaults;

/// Largest single read asked of turmoil at once (bounds the buffer we allocate per call).
const MAX_READ_BYTES: usize = 4 << 20;

/// One node's file system, as its storage sees it. Cheap to clone.
#[derive(Clone)]
pub struct SimFs {
    faults: DiskFaults,
    rng: Rc<RefCell<ChaCha8Rng>>,
    /// Simulated time a sync takes (the disk's flush latency).
    sync_ms: u64,
}

impl SimFs {
    pub fn new(faults: DiskFaults, seed: u64, sync_ms: u64) -> SimFs {
        SimFs { faults, rng: Rc::new(RefCell::new(ChaCha8Rng::seed_from_u64(seed))), sync_ms }
    }

    /// Fails the operation if a fault switch says so.
    fn inject(&self, allocates: bool, what: &str, path: &Path) -> io::Result<()> {
        let permille = self.faults.io_error_permille();
        if permille > 0 && self.rng.borrow_mut().random_range(0..1000) < permille {
            self.faults.note_injected();
            return Err(io::Error::other(format!("injected EIO: {what} {}", path.display())));
        }
        if allocates && self.faults.no_space() {
            self.faults.note_injected();
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("injected ENOSPC: {what} {}", path.display()),
            ));
        }
        Ok(())
    }

    /// Flips one byte of `data` if the corrupted-read switch says so.
    fn maybe_corrupt(&self, data: &mut [u8]) {
        let permille = self.faults.corrupt_read_permille();
        if permille == 0 || data.is_empty() {
            return;
        }
        let mut rng = self.rng.borrow_mut();
        if rng.random_range(0..1000) < permille {
            let at = rng.random_range(0..data.len());
            let mask: u8 = rng.random_range(1..=255);
            data[at] ^= mask;
            self.faults.note_injected();
        }
    }

    async fn sync_delay(&self) {
        if self.sync_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.sync_ms)).await;
        }
    }
}

pub struct SimFile {
    file: sim_fs::File,
    path: PathBuf,
    fs: SimFs,
}

impl FsFile for SimFile {
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.fs.inject(false, "read", &self.path)?;
        if self.fs.faults.is_unreadable(&self.path, offset, len as u64) {
            return Err(io::Error::other(format!(
                "latent read error: {} bytes {offset}..{}",
                self.path.display(),
                offset + len as u64
            )));
        }
        let mut out = Vec::with_capacity(len.min(MAX_READ_BYTES));
        while out.len() < len {
            let want = (len - out.len()).min(MAX_READ_BYTES);
            let mut buf = vec![0u8; want];
            let read = self.file.read_at(&mut buf, offset + out.len() as u64).await?;
            if read == 0 {
                break;
            }
            out.extend_from_slice(&buf[..read]);
        }
        self.fs.maybe_corrupt(&mut out);
        Ok(out)
    }

    async fn write_all_at(&self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        self.fs.inject(true, "write", &self.path)?;
        self.fs.faults.on_written(&self.path, offset, data.len() as u64);
        let mut written = 0;
        while written < data.len() {
            let wrote = self.file.write_at(&data[written..], offset + written as u64).await?;
            if wrote == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
            }
            written += wrote;
        }
        Ok(())
    }

    async fn len_bytes(&self) -> io::Result<u64> {
        self.fs.inject(false, "stat", &self.path)?;
        Ok(self.file.metadata().await?.len())
    }

    async fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.fs.inject(true, "set_len", &self.path)?;
        self.file.set_len(len_bytes).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.fs.sync_delay().await;
        self.fs.inject(false, "fdatasync", &self.path)?;
        self.file.sync_data().await
    }

    async fn sync_all(&self) -> io::Result<()> {
        self.fs.sync_delay().await;
        self.fs.inject(false, "fsync", &self.path)?;
        self.file.sync_all().await
    }
}

impl FileSystem for SimFs {
    type File = SimFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        self.inject(mode == OpenMode::CreateNew, "open", path)?;
        let mut options = sim_fs::OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
        };
        let file = options.open(path).await?;
        Ok(SimFile { file, path: path.to_path_buf(), fs: self.clone() })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inject(false, "rename", from)?;
        sim_fs::rename(from, to).await?;
        self.faults.on_file_gone(to);
        Ok(())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inject(false, "remove", path)?;
        sim_fs::remove_file(path).await?;
        self.faults.on_file_gone(path);
        Ok(())
    }

    async fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.inject(true, "mkdir", path)?;
        sim_fs::create_dir(path).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.inject(false, "list", path)?;
        let mut entries = Vec::new();
        for entry in sim_fs::read_dir(path).await? {
            let entry = entry?;
            let kind =
                if entry.file_type()?.is_dir() { EntryKind::Directory } else { EntryKind::File };
            entries.push(DirEntry { name: entry.file_name().to_string_lossy().into_owned(), kind });
        }
        entries.sort();
        Ok(entries)
    }

    async fn entry_kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        self.inject(false, "stat", path)?;
        match sim_fs::metadata(path).await {
            Ok(metadata) if metadata.is_dir() => Ok(Some(EntryKind::Directory)),
            Ok(_) => Ok(Some(EntryKind::File)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.sync_delay().await;
        self.inject(false, "sync directory", path)?;
        sim_fs::sync_dir(path).await
    }

    async fn wait_ms(&self, duration_ms: u64) {
        tokio::time::sleep(Duration::from_millis(duration_ms)).await;
    }
}
