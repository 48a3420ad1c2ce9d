//! A full disk is an operating condition, not a failure. When a write, a file creation or a
//! size change fails for lack of space, the storage engine raises the *disk-full alarm* (the
//! engine refuses new client writes while it is up, and the node reports it), waits, and tries
//! the same operation again — it never reports anything durable that is not, and never gives
//! up data it was asked to keep. The alarm comes down once a *probe* succeeds: a scratch file of
//! `probe_bytes` written and removed, so that writes resume only when there is room for more
//! than the next few records.
//!
//! Why retrying is safe: a failed write changed nothing a rewrite of the same bytes at the same
//! place does not overwrite, and a failed creation is removed before it is tried again. A sync
//! that fails for lack of space is reported by the file system as a plain error (see `fs.rs`)
//! and stays fatal: the data it was to make durable may be gone.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::fs::{FileSystem, FsFile, OpenMode, is_no_space};

/// The scratch file of a probe; not a name any other part of the engine uses.
pub const PROBE_FILE_NAME: &str = "space-probe.tmp";
/// How long to wait between attempts on a full disk.
pub const RETRY_INTERVAL_MS: u64 = 1_000;
/// A probe writes in chunks of this size (bounds the zeros held in memory at once).
const PROBE_CHUNK_BYTES: usize = 1 << 20;

/// The alarm, shared by everything that writes to one data directory; cheap to clone.
#[derive(Clone)]
pub struct DiskSpace<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    state: Rc<SpaceState>,
}

struct SpaceState {
    full: Cell<bool>,
    /// Bytes a probe must write for the alarm to come down.
    probe_bytes: Cell<u64>,
    /// The smallest probe: enough for the next groups of log records.
    base_probe_bytes: u64,
    /// Times the alarm was raised since the node started (for metrics and tests).
    raised: Cell<u64>,
    /// Told of every change of the alarm.
    on_change: Box<dyn Fn(bool)>,
}

impl<F: FileSystem> DiskSpace<F> {
    pub fn new(fs: F, dir: &Path, probe_bytes: u64, on_change: Box<dyn Fn(bool)>) -> Self {
        DiskSpace {
            fs,
            dir: dir.to_path_buf(),
            state: Rc::new(SpaceState {
                full: Cell::new(false),
                probe_bytes: Cell::new(probe_bytes),
                base_probe_bytes: probe_bytes,
                raised: Cell::new(0),
                on_change,
            }),
        }
    }

    pub fn is_full(&self) -> bool {
        self.state.full.get()
    }

    pub fn times_raised(&self) -> u64 {
        self.state.raised.get()
    }

    /// Raises the alarm; a later probe must find room for at least `needed_bytes`.
    pub fn raise(&self, what: &str, needed_bytes: u64) {
        let state = &self.state;
        state.probe_bytes.set(state.probe_bytes.get().max(needed_bytes));
        if !state.full.replace(true) {
            state.raised.set(state.raised.get() + 1);
            tracing::warn!(
                dir = %self.dir.display(),
                what,
                "the disk is full: client writes are refused until space is freed"
            );
            (state.on_change)(true);
        }
    }

    /// Lowers the alarm (an operation that needed space succeeded, or a probe did).
    fn lower(&self) {
        let state = &self.state;
        if state.full.replace(false) {
            state.probe_bytes.set(state.base_probe_bytes);
            tracing::info!(dir = %self.dir.display(), "disk space is back: writes resume");
            (state.on_change)(false);
        }
    }

    /// An operation succeeded: if the alarm was up, there is room again.
    pub fn succeeded(&self) {
        if self.is_full() {
            self.lower();
        }
    }

    /// Called with an operation's error. For lack of space: raises the alarm and waits until a
    /// probe finds room, then returns true (try the operation again). For any other error:
    /// false at once.
    pub async fn wait_after(&self, error: &io::Error, what: &str, needed_bytes: u64) -> bool {
        if !is_no_space(error) {
            return false;
        }
        self.raise(what, needed_bytes);
        loop {
            self.fs.wait_ms(RETRY_INTERVAL_MS).await;
            if self.probe().await {
                return true;
            }
        }
    }

    /// One probe while the alarm is up and nothing else is being written: lowers the alarm if
    /// there is room. Returns whether it did.
    pub async fn probe_and_lower(&self) -> bool {
        if self.probe().await {
            self.lower();
            return true;
        }
        false
    }

    /// Writes and removes a scratch file of the probe's size. Nothing it writes is needed, so it
    /// is never synced, and a probe file left by a crash is simply replaced.
    async fn probe(&self) -> bool {
        let path = self.dir.join(PROBE_FILE_NAME);
        if let Ok(Some(_)) = self.fs.entry_kind(&path).await {
            let _ = self.fs.remove_file(&path).await;
        }
        let Ok(file) = self.fs.open(&path, OpenMode::CreateNew).await else { return false };
        let mut written = 0u64;
        let total = self.state.probe_bytes.get();
        let mut fits = true;
        while written < total {
            let chunk = PROBE_CHUNK_BYTES.min((total - written) as usize);
            if file.write_all_at(written, vec![0u8; chunk]).await.is_err() {
                fits = false;
                break;
            }
            written += chunk as u64;
        }
        drop(file);
        // A probe file that cannot be removed would eat the room it measured: report no room.
        let removed = self.fs.remove_file(&path).await.is_ok();
        fits && removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem_fs::{MemFs, MemFsConfig};
    use futures::executor::block_on;

    #[test]
    fn the_alarm_comes_down_only_when_a_probe_finds_room() {
        let fs = MemFs::new(3, MemFsConfig { torn_block_bytes: None, capacity_bytes: Some(4096) });
        let changes = Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = changes.clone();
        let dir = PathBuf::from("/");
        let space = DiskSpace::new(
            fs.clone(),
            &dir,
            1024,
            Box::new(move |full| seen.borrow_mut().push(full)),
        );
        block_on(async {
            space.raise("a test", 0);
            assert!(space.is_full());
            // Room for 1 KiB: the probe fits, the alarm comes down.
            assert!(space.probe_and_lower().await);
            assert!(!space.is_full());
            // A snapshot of 8 KiB did not fit: the disk holds 4 KiB, no probe of 8 KiB can.
            space.raise("a snapshot", 8192);
            assert!(!space.probe_and_lower().await);
            assert!(space.is_full());
            assert!(fs.image().keys().all(|path| !path.ends_with(PROBE_FILE_NAME)));
        });
        assert_eq!(*changes.borrow(), vec![true, false, true]);
        assert_eq!(space.times_raised(), 2);
    }
}
