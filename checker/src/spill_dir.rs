//! A private directory for the files a streamed check spills, removed with its contents when
//! the check is done (or fails, or panics: on drop).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Names tried before giving up when every candidate exists already (left behind by a killed
/// run with the same process id, say).
const ATTEMPTS_MAX: u64 = 64;

/// Distinguishes the directories of one process (tests check several histories at once).
static NEXT: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub(crate) struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    /// Creates `conclave-checker-PID-N` in `parent`. `create_dir` fails on an existing name,
    /// so two runs never share a directory.
    pub(crate) fn create(parent: &Path) -> io::Result<SpillDir> {
        let pid = std::process::id();
        for _ in 0..ATTEMPTS_MAX {
            let number = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("conclave-checker-{pid}-{number}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(SpillDir { path }),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free name for a spill directory in {}", parent.display()),
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        // Nothing to report to: a directory that cannot be removed is left for the system's
        // temporary-file cleaning.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_distinct_and_removed_on_drop() {
        let parent = std::env::temp_dir();
        let first = SpillDir::create(&parent).expect("create");
        let second = SpillDir::create(&parent).expect("create");
        assert_ne!(first.path(), second.path());
        std::fs::write(first.path().join("file"), b"x").expect("write");
        let path = first.path().to_owned();
        drop(first);
        assert!(!path.exists());
        assert!(second.path().is_dir());
    }
}
