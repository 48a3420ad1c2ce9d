//! Where a member keeps its data, and the lock that keeps it to one process.
//!
//! Layout. `--working-dir DIR` may be shared by several members of one cluster (harnesses do
//! that): member N keeps its data in `DIR/member-N/` (a named member: `DIR/member-NAME/`), so only a real duplicate — the same
//! member twice — collides. A directory written by an earlier version holds the log directly
//! in `DIR` (a `hard_state` file or `*.wal` segments there); it keeps working where it is.
//!
//! Lock. Two processes on one data directory both accept writes and interleave their log
//! records: after a crash the directory no longer opens, and every acknowledged write is lost.
//! So the first thing a process does with a data directory, before reading anything, is take
//! an exclusive `flock` on `LOCK` in it (as etcd and RocksDB do), and write its pid there for
//! the message a second process prints. The kernel releases the lock when the process dies,
//! however it dies, so a stale lock file never blocks a restart.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use thiserror::Error;

pub const LOCK_FILE_NAME: &str = "LOCK";
/// Files whose presence in `--working-dir` itself marks the layout of earlier versions.
const LEGACY_MARKERS: [&str; 1] = ["hard_state"];

#[derive(Debug, Error)]
pub enum DataDirError {
    #[error("cannot {operation} {path}: {cause}")]
    Io { operation: &'static str, path: PathBuf, cause: std::io::Error },
    #[error(
        "the data directory {path} is in use by another process{}; two processes on one \
         directory would corrupt it (stop that process, or give this one another --working-dir)",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
}

/// Why [`replace_file`] failed: what it was doing, to which path.
#[derive(Debug)]
pub struct ReplaceError {
    pub operation: &'static str,
    pub path: PathBuf,
    pub cause: std::io::Error,
}

/// Replaces the small file `name` in `dir` with `bytes`, durably and atomically: written to a
/// temporary name and synced, renamed over the old file, and the directory synced, so a crash
/// leaves the old contents or the new, never a torn file. For the records a data directory
/// keeps beside its log (its member identity, its shard layout).
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ReplaceError> {
    let failed = |operation, path: &Path| {
        let path = path.to_path_buf();
        move |cause| ReplaceError { operation, path, cause }
    };
    let path = dir.join(name);
    let temp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temp).map_err(failed("create", &temp))?;
    file.write_all(bytes).map_err(failed("write", &temp))?;
    file.sync_all().map_err(failed("sync", &temp))?;
    drop(file);
    fs::rename(&temp, &path).map_err(failed("rename", &temp))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(failed("sync", dir))?;
    Ok(())
}

/// A member's data directory, locked for as long as this value lives.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Holds the lock; closing it releases the lock.
    _lock: File,
}

impl DataDir {
    /// Creates (if needed) and locks the data directory of member `member` (a port-named
    /// member's id, a named member's name) under `working_dir`.
    pub fn open(working_dir: &Path, member: &str) -> Result<DataDir, DataDirError> {
        let path = member_dir(working_dir, member);
        fs::create_dir_all(&path).map_err(|cause| DataDirError::Io {
            operation: "create the data directory",
            path: path.clone(),
            cause,
        })?;
        let lock = lock(&path)?;
        Ok(DataDir { path, _lock: lock })
    }

    /// Locks an existing or new directory that is used as is (a restore's target).
    pub fn lock_exact(path: &Path) -> Result<DataDir, DataDirError> {
        fs::create_dir_all(path).map_err(|cause| DataDirError::Io {
            operation: "create the data directory",
            path: path.to_path_buf(),
            cause,
        })?;
        let lock = lock(path)?;
        Ok(DataDir { path: path.to_path_buf(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where member `member` keeps its data under `working_dir`: `working_dir/member-MEMBER`, or
/// `working_dir` itself if it holds the log in the layout of earlier versions. A port-named
/// member is named by its id (`member-8001`), a named member by its name (`member-node-a`),
/// not by its id: a named member's id depends on its cluster's token, and a member restarted
/// with another token must find its directory (and be refused by it), not start afresh in
/// another one. Names are never digits only, so the two kinds cannot collide.
pub fn member_dir(working_dir: &Path, member: &str) -> PathBuf {
    if is_legacy_layout(working_dir) {
        working_dir.to_path_buf()
    } else {
        working_dir.join(format!("member-{member}"))
    }
}

fn is_legacy_layout(dir: &Path) -> bool {
    if LEGACY_MARKERS.iter().any(|name| dir.join(name).is_file()) {
        return true;
    }
    let Ok(entries) = fs::read_dir(dir) else { return false };
    entries.flatten().any(|entry| entry.file_name().to_string_lossy().ends_with(".wal"))
}

/// Takes the exclusive lock of `dir` (or says who holds it) and records this process's pid.
fn lock(dir: &Path) -> Result<File, DataDirError> {
    let path = dir.join(LOCK_FILE_NAME);
    let io = |operation| {
        let path = path.clone();
        move |cause| DataDirError::Io { operation, path, cause }
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("open"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(DataDirError::Locked {
                path: dir.to_path_buf(),
                holder: holder_pid(&mut file),
            });
        }
        Err(TryLockError::Error(cause)) => return Err(io("lock")(cause)),
    }
    file.set_len(0).map_err(io("truncate"))?;
    file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
    writeln!(file, "{}", std::process::id()).map_err(io("write"))?;
    Ok(file)
}

/// The pid the holder of a lock wrote into the lock file, if readable.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Whether `dir` is the data directory of a running process (its lock is held).
pub fn is_locked_by_another_process(dir: &Path) -> Option<Option<u32>> {
    let mut file = OpenOptions::new().read(true).write(true).open(dir.join(LOCK_FILE_NAME)).ok()?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => Some(holder_pid(&mut file)),
        Err(TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn a_second_open_of_one_member_is_refused_naming_the_holder() {
        let temp = TestDir::new("datadir-lock");
        let dir = temp.path();
        let first = DataDir::open(dir, "8001").expect("first open");
        assert_eq!(first.path(), dir.join("member-8001"));
        let error = DataDir::open(dir, "8001").expect_err("second open");
        let message = error.to_string();
        assert!(message.contains("in use by another process"), "{message}");
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        assert!(is_locked_by_another_process(first.path()).is_some());
        // Another member of the same cluster may share the working directory.
        let other = DataDir::open(dir, "8002").expect("another member");
        assert_eq!(other.path(), dir.join("member-8002"));
        drop(first);
        assert!(is_locked_by_another_process(&dir.join("member-8001")).is_none());
        DataDir::open(dir, "8001").expect("free again once the holder is gone");
    }

    #[test]
    fn a_directory_of_the_earlier_layout_is_used_in_place() {
        let legacy = TestDir::new("datadir-legacy");
        fs::write(legacy.path().join("hard_state"), b"x").expect("marker");
        assert_eq!(member_dir(legacy.path(), "8001"), legacy.path());
        let fresh = TestDir::new("datadir-fresh");
        assert_eq!(member_dir(fresh.path(), "8001"), fresh.path().join("member-8001"));
    }
}
