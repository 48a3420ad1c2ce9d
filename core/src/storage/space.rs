//! A full disk is an operating condition, not a failure.
//!
//! The data directory keeps a *ballast* file (`space-ballast`, `ballast_bytes` of filler), a
//! reserve of space in the manner of CockroachDB's emergency ballast. When a write, a file
//! creation or a size change fails for lack of space, the storage engine raises the
//! *disk-full alarm* and deletes the ballast: the freed room lets it finish what was already
//! under way (entries already proposed, a new leader's no-op, a vote) and lets a node restarted
//! on a full disk lead and serve reads, while the engine refuses new client writes for as long
//! as the alarm is up. The alarm comes down once the ballast is back and a *probe* — a scratch
//! file of `probe_bytes` written and removed — fits too, so writes resume only when there is
//! room for more than the next few records. If even the ballast's room is used up, the write
//! waits, probing every second; it is never given up and nothing is reported durable that is
//! not.
//!
//! The alarm is up exactly while the ballast is missing (or a probe has not yet fit since the
//! last failure): a node that starts with no room to restore its ballast starts with the alarm
//! up.
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

/// The reserve. Not a name any other part of the engine uses.
pub const BALLAST_FILE_NAME: &str = "space-ballast";
/// The scratch file of a probe.
pub const PROBE_FILE_NAME: &str = "space-probe.tmp";
/// How long to wait between attempts on a full disk.
pub const RETRY_INTERVAL_MS: u64 = 1_000;
/// Ballast and probes are written in chunks of this size (bounds the filler held at once).
const FILL_CHUNK_BYTES: usize = 1 << 20;

/// How much room the engine keeps and asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SpaceOptions {
    /// The ballast's size; 0 keeps none.
    pub ballast_bytes: u64,
    /// Room (besides the ballast) a probe must find for writes to resume.
    pub probe_bytes: u64,
}

/// The alarm, shared by everything that writes to one data directory; cheap to clone.
#[derive(Clone)]
pub struct DiskSpace<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    state: Rc<SpaceState>,
}

struct SpaceState {
    options: SpaceOptions,
    full: Cell<bool>,
    /// Bytes the next probe must write: at least `options.probe_bytes`, more after something
    /// larger (a snapshot) did not fit.
    probe_bytes: Cell<u64>,
    /// Times the alarm was raised since the node started.
    raised: Cell<u64>,
    /// Told of every change of the alarm.
    on_change: Box<dyn Fn(bool)>,
}

impl<F: FileSystem> DiskSpace<F> {
    pub fn new(fs: F, dir: &Path, options: SpaceOptions, on_change: Box<dyn Fn(bool)>) -> Self {
        DiskSpace {
            fs,
            dir: dir.to_path_buf(),
            state: Rc::new(SpaceState {
                options,
                full: Cell::new(false),
                probe_bytes: Cell::new(options.probe_bytes),
                raised: Cell::new(0),
                on_change,
            }),
        }
    }

    /// At start: restores the ballast if it is missing or short; with no room for it, the node
    /// starts with the alarm up.
    pub async fn prepare(&self) {
        if !self.restore_ballast().await {
            self.set_alarm(true, "no room for the ballast at start");
        }
    }

    pub fn is_full(&self) -> bool {
        self.state.full.get()
    }

    pub fn times_raised(&self) -> u64 {
        self.state.raised.get()
    }

    fn set_alarm(&self, full: bool, what: &str) {
        let state = &self.state;
        if state.full.replace(full) == full {
            return;
        }
        if full {
            state.raised.set(state.raised.get() + 1);
            tracing::warn!(
                dir = %self.dir.display(),
                what,
                "the disk is full: client writes are refused until space is freed"
            );
        } else {
            state.probe_bytes.set(state.options.probe_bytes);
            tracing::info!(dir = %self.dir.display(), "disk space is back: writes resume");
        }
        (state.on_change)(full);
    }

    /// Raises the alarm (a later probe must find room for at least `needed_bytes`) and deletes
    /// the ballast. Returns whether the ballast was there to delete, i.e. whether trying the
    /// failed operation again at once may succeed.
    pub async fn raise(&self, what: &str, needed_bytes: u64) -> bool {
        let state = &self.state;
        state.probe_bytes.set(state.probe_bytes.get().max(needed_bytes));
        self.set_alarm(true, what);
        let ballast = self.dir.join(BALLAST_FILE_NAME);
        match self.fs.entry_kind(&ballast).await {
            Ok(Some(_)) => {
                let removed = self.fs.remove_file(&ballast).await.is_ok();
                if removed {
                    tracing::warn!(
                        ballast_bytes = state.options.ballast_bytes,
                        "deleted the ballast file to finish the writes under way"
                    );
                }
                removed
            }
            _ => false,
        }
    }

    /// Called with an operation's error. For lack of space: raises the alarm, frees the
    /// ballast if there still is one, else waits until there is room again; then returns true
    /// (try the operation again). For any other error: false at once.
    pub async fn wait_after(&self, error: &io::Error, what: &str, needed_bytes: u64) -> bool {
        if !is_no_space(error) {
            return false;
        }
        if self.raise(what, needed_bytes).await {
            return true;
        }
        loop {
            self.fs.wait_ms(RETRY_INTERVAL_MS).await;
            if self.try_lower().await {
                return true;
            }
        }
    }

    /// While the alarm is up: restores the ballast and probes for room; lowers the alarm if
    /// both fit. Returns whether it did.
    pub async fn try_lower(&self) -> bool {
        if self.restore_ballast().await && self.probe().await {
            self.set_alarm(false, "");
            return true;
        }
        false
    }

    /// Makes the ballast whole; false if there is no room for it.
    async fn restore_ballast(&self) -> bool {
        let size = self.state.options.ballast_bytes;
        if size == 0 {
            return true;
        }
        let path = self.dir.join(BALLAST_FILE_NAME);
        let file = match self.fs.entry_kind(&path).await {
            Ok(Some(_)) => self.fs.open(&path, OpenMode::ReadWrite).await,
            _ => self.fs.open(&path, OpenMode::CreateNew).await,
        };
        let Ok(file) = file else { return false };
        // A ballast cut short by a crash (it is never synced: its content does not matter)
        // is completed rather than rewritten.
        let from = file.len_bytes().await.unwrap_or(0).min(size);
        fill(&file, from, size).await.is_ok()
    }

    /// Writes and removes a scratch file of the probe's size; whether it fit.
    async fn probe(&self) -> bool {
        let path = self.dir.join(PROBE_FILE_NAME);
        if let Ok(Some(_)) = self.fs.entry_kind(&path).await {
            let _ = self.fs.remove_file(&path).await;
        }
        let Ok(file) = self.fs.open(&path, OpenMode::CreateNew).await else { return false };
        let fits = fill(&file, 0, self.state.probe_bytes.get()).await.is_ok();
        drop(file);
        // A probe file that cannot be removed would eat the room it measured: report no room.
        let removed = self.fs.remove_file(&path).await.is_ok();
        fits && removed
    }
}

/// Writes filler from `from` to `to`. Not zeros: a file system that compresses or
/// deduplicates would store zeros (or any repetition) in next to nothing, and the reserve or
/// the probe would measure nothing.
async fn fill<File: FsFile>(file: &File, from: u64, to: u64) -> io::Result<()> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ from;
    let mut at = from;
    while at < to {
        let len = FILL_CHUNK_BYTES.min((to - at) as usize);
        let mut chunk = Vec::with_capacity(len);
        while chunk.len() < len {
            // xorshift64: cheap, incompressible enough for a reserve.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&state.to_le_bytes());
        }
        chunk.truncate(len);
        file.write_all_at(at, chunk).await?;
        at += len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem_fs::{MemFs, MemFsConfig};
    use futures::executor::block_on;

    fn space(
        capacity_bytes: u64,
        options: SpaceOptions,
    ) -> (MemFs, DiskSpace<MemFs>, Rc<std::cell::RefCell<Vec<bool>>>) {
        let fs = MemFs::new(
            3,
            MemFsConfig { torn_block_bytes: None, capacity_bytes: Some(capacity_bytes) },
        );
        let changes = Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = changes.clone();
        let space = DiskSpace::new(
            fs.clone(),
            Path::new("/"),
            options,
            Box::new(move |full| seen.borrow_mut().push(full)),
        );
        (fs, space, changes)
    }

    #[test]
    fn the_ballast_is_given_up_first_and_the_alarm_comes_down_only_with_room_to_spare() {
        let options = SpaceOptions { ballast_bytes: 2048, probe_bytes: 1024 };
        let (fs, space, changes) = space(8192, options);
        block_on(async {
            space.prepare().await;
            assert!(!space.is_full());
            assert!(fs.image().keys().any(|path| path.ends_with(BALLAST_FILE_NAME)));
            // A write failed: the ballast goes, so trying again at once is worth it.
            assert!(space.raise("a write", 0).await);
            assert!(space.is_full());
            assert!(!fs.image().keys().any(|path| path.ends_with(BALLAST_FILE_NAME)));
            // Nothing left to give up the second time.
            assert!(!space.raise("a write", 0).await);
            // Room for the ballast and the probe: the alarm comes down, the ballast is back.
            assert!(space.try_lower().await);
            assert!(!space.is_full());
            assert!(fs.image().keys().any(|path| path.ends_with(BALLAST_FILE_NAME)));
            // A snapshot of 16 KiB did not fit: no probe of that size can on an 8 KiB disk.
            space.raise("a snapshot", 16 << 10).await;
            assert!(!space.try_lower().await);
            assert!(space.is_full());
            assert!(!fs.image().keys().any(|path| path.ends_with(PROBE_FILE_NAME)));
        });
        assert_eq!(*changes.borrow(), vec![true, false, true]);
        assert_eq!(space.times_raised(), 2);
    }

    #[test]
    fn a_node_without_room_for_its_ballast_starts_with_the_alarm_up() {
        let options = SpaceOptions { ballast_bytes: 16 << 10, probe_bytes: 1024 };
        let (_fs, space, changes) = space(8192, options);
        block_on(space.prepare());
        assert!(space.is_full());
        assert_eq!(*changes.borrow(), vec![true]);
    }
}
