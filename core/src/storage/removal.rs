//! Removing files whose names will be used again.
//!
//! # The rule
//!
//! The storage engine creates a file under a name only once the removal of any earlier file of
//! that name is durable: [`remove_durably`] removes and then syncs the directory, and every
//! path that removes a file and creates another one of the same name goes through it (redoing
//! an interrupted initialisation, retrying a segment creation that ran out of space, replacing
//! a leftover temporary snapshot file). Where the file can be kept instead, it is: the all-zero
//! first segment of a never-used directory gets its header in place (`recovery.rs`).
//! Recovery's other removals (a last segment whose creation never completed, leftover temporary
//! snapshot files) are made durable by its final directory sync, before the writer can create
//! anything.
//!
//! # Why
//!
//! On a POSIX file system the rule is not needed for correctness: an unlinked file and a new
//! file of the same name are different inodes, and a crash leaves either of them, never a mix.
//! But a file-system model that keeps file data by *name* gets exactly this sequence wrong, and
//! turmoil 0.7's `unstable-fs`, which the simulator runs this same code on, is one: the new
//! file's `fsync` lands on the record of the removed file (still there, its removal pending),
//! and the directory sync that later makes the removal durable drops that record, synced data
//! and all, and leaves the new name empty. The simulator then sees a node whose synced segment
//! header vanished without any damage (seeds 2455 and 2825: a crash during initialisation, then
//! a restart that redid it). The engine is the same code in both worlds (DESIGN.md, "The
//! seams") and is only as well tested as the simulated crashes it meets, so it keeps to the
//! sequences both file systems model faithfully; the cost is one directory sync on paths that
//! run only after a crash or a failure.
//!
//! Files whose content is never synced (the ballast and the space probe of `space.rs`) are
//! exempt: they have no synced data to lose, and their size is checked when they are used.
//! [`crate::storage::mem_fs::MemFs`] lists the files synced against the rule
//! ([`crate::storage::mem_fs::MemFs::synced_under_pending_removal`]), and the storage tests
//! require that list to stay empty.

use std::path::{Path, PathBuf};

use super::error::{StorageError, StorageResult};
use super::fs::FileSystem;

/// Removes `paths`, which must all be files in `dir`, and makes the removals durable with one
/// directory sync. Nothing to remove syncs nothing.
pub async fn remove_durably<F: FileSystem>(
    fs: &F,
    dir: &Path,
    paths: &[PathBuf],
) -> StorageResult<()> {
    for path in paths {
        // One directory sync covers only the entries of that directory.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        assert_eq!(parent, dir, "{} is not in {}", path.display(), dir.display());
        fs.remove_file(path).await.map_err(|e| StorageError::io("remove", path, e))?;
    }
    if !paths.is_empty() {
        fs.sync_dir(dir).await.map_err(|e| StorageError::io("sync directory", dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::{FsFile, OpenMode};
    use crate::storage::mem_fs::{MemFs, MemFsConfig};
    use futures::executor::block_on;

    #[test]
    fn a_durable_removal_lets_the_name_be_created_and_synced_again() {
        let fs = MemFs::new(3, MemFsConfig::default());
        let dir = Path::new("/");
        let path = PathBuf::from("/a");
        block_on(async {
            let old = fs.open(&path, OpenMode::CreateNew).await.unwrap();
            old.write_all_at(0, b"old".to_vec()).await.unwrap();
            old.sync_all().await.unwrap();
            fs.sync_dir(dir).await.unwrap();
            remove_durably(&fs, dir, std::slice::from_ref(&path)).await.unwrap();
            let new = fs.open(&path, OpenMode::CreateNew).await.unwrap();
            new.write_all_at(0, b"new".to_vec()).await.unwrap();
            new.sync_all().await.unwrap();
            fs.sync_dir(dir).await.unwrap();
        });
        assert!(fs.synced_under_pending_removal().is_empty());
        fs.crash();
        assert_eq!(fs.image().get(&path), Some(&b"new".to_vec()));
    }

    #[test]
    #[should_panic(expected = "is not in")]
    fn a_path_outside_the_directory_is_a_bug() {
        let fs = MemFs::new(3, MemFsConfig::default());
        let _ = block_on(remove_durably(&fs, Path::new("/x"), &[PathBuf::from("/a")]));
    }
}
