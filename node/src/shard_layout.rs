//! How a member's data directory splits the keyspace: recorded when a sharded member first
//! uses the directory, and checked at every start. The shard map a sharded cluster starts from
//! is computed from `--shards`, `--replication`, `--slots` and the member list; a member
//! restarted with other values would open other groups' storage (or none) and route keys to
//! other shards than the ones that hold them, so a mismatch is refused with the values the
//! directory was created with.
//!
//! A single-group member (`--shards 1`, the default) keeps its log in the data directory itself,
//! as it always has; a sharded member keeps its shared log (`conclave_core::storage::SharedLog`)
//! in the `shards/` subdirectory and this record in `shard-layout.json` beside it. The record
//! is replaced atomically (`data_dir::replace_file`), so a crash leaves it whole or absent.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::Sharding;
use crate::data_dir::{ReplaceError, replace_file};

pub const LAYOUT_FILE_NAME: &str = "shard-layout.json";
/// Where a sharded member's shared log lives, inside its data directory.
pub const SHARED_LOG_DIR_NAME: &str = "shards";
/// Where `conclave restore` builds a shared log before renaming it to `shards`: its presence
/// means a restore was cut short, and the directory is refused.
pub const RESTORING_DIR_NAME: &str = "shards.restoring";
/// A single-group member's files in its data directory: their presence means the directory
/// already holds a single group's log.
const SINGLE_GROUP_MARKERS: [&str; 1] = ["hard_state"];
const SEGMENT_SUFFIX: &str = ".wal";
/// A record is a few dozen bytes: anything larger is not one.
const MAX_LAYOUT_FILE_BYTES: u64 = 4096;

/// What the directory records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardLayout {
    pub shards: u64,
    pub replication: usize,
    pub slots: u32,
}

impl From<&Sharding> for ShardLayout {
    fn from(sharding: &Sharding) -> Self {
        ShardLayout {
            shards: sharding.shards,
            replication: sharding.replication,
            slots: sharding.slots.get(),
        }
    }
}

impl std::fmt::Display for ShardLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--shards {} --replication {} --slots {}",
            self.shards, self.replication, self.slots
        )
    }
}

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("cannot {operation} {path}: {cause}")]
    Io { operation: &'static str, path: PathBuf, cause: std::io::Error },
    #[error("{path} is not a shard layout record ({reason}); it was not written by conclave")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{path} is left by a `conclave restore` that did not finish: delete the data directory \
         {dir} and restore again"
    )]
    InterruptedRestore { dir: PathBuf, path: PathBuf },
    #[error(
        "the data directory {dir} was created with {found}, but this node was started with \
         {asked}; start it with the values it was created with"
    )]
    Mismatch { dir: PathBuf, found: String, asked: String },
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError {
    let path = path.to_path_buf();
    move |cause| LayoutError::Io { operation, path, cause }
}

/// The shared log's directory inside the data directory `dir`.
pub fn shared_log_dir(dir: &Path) -> PathBuf {
    dir.join(SHARED_LOG_DIR_NAME)
}

/// The layout recorded in `dir`, if any.
pub fn read(dir: &Path) -> Result<Option<ShardLayout>, LayoutError> {
    let path = dir.join(LAYOUT_FILE_NAME);
    let size_bytes = match fs::metadata(&path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("read", &path)(error)),
    };
    if size_bytes > MAX_LAYOUT_FILE_BYTES {
        return Err(LayoutError::Invalid { path, reason: format!("{size_bytes} bytes") });
    }
    let bytes = fs::read(&path).map_err(io_error("read", &path))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| LayoutError::Invalid { path, reason: error.to_string() })
}

/// Whether `dir` already holds a single group's log.
fn holds_single_group(dir: &Path) -> Result<bool, LayoutError> {
    let entries = fs::read_dir(dir).map_err(io_error("list", dir))?;
    for entry in entries {
        let name = entry.map_err(io_error("list", dir))?.file_name();
        let name = name.to_string_lossy();
        if SINGLE_GROUP_MARKERS.contains(&name.as_ref()) || name.ends_with(SEGMENT_SUFFIX) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks the data directory `dir` against how this node was started (`asked`: `None` for a
/// single group), recording a sharded layout in a directory that has none yet.
pub fn check_or_record(dir: &Path, asked: Option<&Sharding>) -> Result<(), LayoutError> {
    let asked = asked.map(ShardLayout::from);
    let describe = |layout: &Option<ShardLayout>| match layout {
        Some(layout) => layout.to_string(),
        None => "--shards 1".to_string(),
    };
    let staging = dir.join(RESTORING_DIR_NAME);
    if staging.exists() {
        return Err(LayoutError::InterruptedRestore { dir: dir.to_path_buf(), path: staging });
    }
    let found = read(dir)?;
    match (&found, &asked) {
        (Some(found), Some(asked)) if found == asked => Ok(()),
        (None, None) => Ok(()),
        (None, Some(layout)) => {
            if holds_single_group(dir)? {
                return Err(LayoutError::Mismatch {
                    dir: dir.to_path_buf(),
                    found: describe(&None),
                    asked: layout.to_string(),
                });
            }
            write(dir, layout)
        }
        _ => Err(LayoutError::Mismatch {
            dir: dir.to_path_buf(),
            found: describe(&found),
            asked: describe(&asked),
        }),
    }
}

/// Records `layout` in `dir` without the checks of [`check_or_record`]: for a restore, which
/// records the layout of the directory it is building before that directory is in place.
pub fn record(dir: &Path, layout: &ShardLayout) -> Result<(), LayoutError> {
    write(dir, layout)
}

fn write(dir: &Path, layout: &ShardLayout) -> Result<(), LayoutError> {
    let mut bytes = serde_json::to_vec_pretty(layout).expect("a plain struct always encodes");
    bytes.push(b'\n');
    replace_file(dir, LAYOUT_FILE_NAME, &bytes).map_err(
        |ReplaceError { operation, path, cause }| LayoutError::Io { operation, path, cause },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use conclave_core::shard::SlotCount;

    fn sharding(shards: u64) -> Sharding {
        Sharding { shards, replication: 3, slots: SlotCount::DEFAULT }
    }

    #[test]
    fn a_sharded_directory_is_recorded_once_and_checked_at_every_start() {
        let dir = TestDir::new("layout-recorded");
        check_or_record(dir.path(), Some(&sharding(8))).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(ShardLayout::from(&sharding(8))));
        check_or_record(dir.path(), Some(&sharding(8))).unwrap();
        let other = check_or_record(dir.path(), Some(&sharding(4))).unwrap_err().to_string();
        assert!(other.contains("--shards 8") && other.contains("--shards 4"), "{other}");
        let single = check_or_record(dir.path(), None).unwrap_err().to_string();
        assert!(single.contains("--shards 8 --replication 3"), "{single}");
    }

    #[test]
    fn a_single_group_directory_cannot_be_restarted_sharded() {
        let dir = TestDir::new("layout-single");
        check_or_record(dir.path(), None).unwrap();
        fs::write(dir.path().join("hard_state"), b"x").unwrap();
        check_or_record(dir.path(), None).unwrap();
        let error = check_or_record(dir.path(), Some(&sharding(8))).unwrap_err().to_string();
        assert!(error.contains("created with --shards 1"), "{error}");
        assert_eq!(read(dir.path()).unwrap(), None, "nothing recorded after a refusal");
    }

    #[test]
    fn a_damaged_record_is_reported_not_replaced() {
        let dir = TestDir::new("layout-damaged");
        fs::write(dir.path().join(LAYOUT_FILE_NAME), b"{\"shards\": ").unwrap();
        let error = check_or_record(dir.path(), Some(&sharding(8))).unwrap_err();
        assert!(matches!(error, LayoutError::Invalid { .. }), "{error}");
    }

    #[test]
    fn a_directory_left_by_an_interrupted_restore_is_refused() {
        let dir = TestDir::new("layout-restoring");
        fs::create_dir(dir.path().join(RESTORING_DIR_NAME)).unwrap();
        for asked in [Some(sharding(8)), None] {
            let error = check_or_record(dir.path(), asked.as_ref()).unwrap_err();
            assert!(matches!(error, LayoutError::InterruptedRestore { .. }), "{error}");
            assert!(error.to_string().contains("restore again"), "{error}");
        }
        assert_eq!(read(dir.path()).unwrap(), None, "nothing recorded after a refusal");
    }
}
