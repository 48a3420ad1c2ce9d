//! The file-system seam: the few primitives the storage engine needs, async so that the real
//! implementation can run blocking calls on a thread pool and the simulated one can take
//! simulated time. Buffers are owned (`Vec<u8>` in and out) so an implementation may move them
//! to another thread.
//!
//! The storage engine relies on these durability rules, which every implementation must model:
//! - a write is durable only after `sync_data`/`sync_all` on the file returns `Ok`;
//! - a created, renamed or removed directory entry is durable only after `sync_dir` on its
//!   directory returns `Ok` (a synced file whose entry was never synced disappears on a crash);
//! - a crash may keep any prefix of an unsynced write, cut at a block boundary (a torn write);
//! - after a failed sync nothing about the unsynced data can be assumed, even a later successful
//!   sync: the kernel may have dropped the dirty pages and cleared the error.
//!
//! Running out of space is the one failure the storage engine waits out instead of stopping
//! for (see `space.rs`): a write, a file creation or a size change that fails with
//! [`is_no_space`] changed nothing that a retry of the same call would not overwrite. A *sync*
//! that fails for lack of space is different — data it was to make durable may already be
//! gone — so implementations report it as a plain I/O error, never with a no-space kind.
//!
//! No `Send` bound anywhere: the simulator runs everything on one thread.

use std::future::Future;
use std::io;
use std::path::Path;

/// How to open a file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write a new, empty file; fails with `AlreadyExists` if the name is taken.
    CreateNew,
}

/// What a directory entry is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    File,
    Directory,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    pub name: String,
    pub kind: EntryKind,
}

pub trait FileSystem: Clone + 'static {
    type File: FsFile;

    fn open(&self, path: &Path, mode: OpenMode) -> impl Future<Output = io::Result<Self::File>>;
    /// Atomically replaces `to` (if present) with `from`. Durable after `sync_dir`.
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>>;
    /// Removes a file. Durable after `sync_dir`.
    fn remove_file(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// Creates one directory (its parent must exist); `AlreadyExists` if it does.
    fn create_dir(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// The entries of a directory, sorted by name (implementations must sort: the storage
    /// engine's behaviour must not depend on the order a file system happens to list in).
    fn list_dir(&self, path: &Path) -> impl Future<Output = io::Result<Vec<DirEntry>>>;
    /// Whether `path` exists, and as what.
    fn entry_kind(&self, path: &Path) -> impl Future<Output = io::Result<Option<EntryKind>>>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// Waits `duration_ms` of this file system's time (the real clock, or the simulation's).
    /// The storage engine has no clock of its own; it waits here between attempts to write to
    /// a full disk.
    fn wait_ms(&self, duration_ms: u64) -> impl Future<Output = ()>;
}

/// Whether an operation failed because the disk (or the user's quota) is full.
pub fn is_no_space(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// What a sync's failure must look like (see the module documentation): a no-space error
/// becomes a plain one, so that nothing retries it.
pub fn sync_failure(error: io::Error) -> io::Error {
    if is_no_space(&error) {
        io::Error::other(format!("sync failed, written data may be lost: {error}"))
    } else {
        error
    }
}

pub trait FsFile {
    /// Reads up to `len` bytes at `offset`; fewer only when the file ends first.
    fn read_at(&self, offset: u64, len: usize) -> impl Future<Output = io::Result<Vec<u8>>>;
    /// Writes all of `data` at `offset`, extending the file if needed.
    fn write_all_at(&self, offset: u64, data: Vec<u8>) -> impl Future<Output = io::Result<()>>;
    fn len_bytes(&self) -> impl Future<Output = io::Result<u64>>;
    /// Truncates or extends (with zeros) the file.
    fn set_len(&self, len_bytes: u64) -> impl Future<Output = io::Result<()>>;
    /// Makes the file's data (and its size) durable: `fdatasync`.
    fn sync_data(&self) -> impl Future<Output = io::Result<()>>;
    /// Makes the file's data and metadata durable: `fsync`.
    fn sync_all(&self) -> impl Future<Output = io::Result<()>>;
    /// `write_all_at` then `sync_data`, as one operation: the log's group commit does both
    /// every time, and a file system whose calls each cost a hand-off to another thread can
    /// pay it once. Same failure semantics as the two calls in a row.
    fn write_all_at_and_sync_data(
        &self,
        offset: u64,
        data: Vec<u8>,
    ) -> impl Future<Output = io::Result<()>> {
        async move {
            self.write_all_at(offset, data).await?;
            self.sync_data().await
        }
    }
}

/// Reads a whole file of at most `limit_bytes`, in chunks (a huge read would make the simulated
/// and the real implementation allocate the whole buffer at once).
pub async fn read_whole_file<F: FsFile>(file: &F, limit_bytes: u64) -> io::Result<Vec<u8>> {
    const CHUNK_BYTES: usize = 1 << 20;
    let len = file.len_bytes().await?;
    if len > limit_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("file of {len} bytes exceeds the limit of {limit_bytes} bytes"),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let want = CHUNK_BYTES.min((len - out.len() as u64) as usize);
        let chunk = file.read_at(out.len() as u64, want).await?;
        if chunk.is_empty() {
            break; // the file shrank under us; the caller's checks will notice
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
