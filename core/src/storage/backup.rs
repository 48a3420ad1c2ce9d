//! Online backups: one self-contained file holding a snapshot (the state machine's state with
//! its last index, term and configuration) and metadata, checksummed; and a restore that seeds
//! an empty data directory from it — to rebuild a node, or a new cluster.
//!
//! A backup is consistent by construction: a snapshot is an immutable image of the state
//! machine at one log index, so it is taken from the newest durable snapshot while the node
//! keeps running (see `WalStorage::backup_to`).
//!
//! ```text
//! [0..8)   magic "CNCLBKUP"   [8..12) format version   [12..16) metadata length
//! [16..24) snapshot image length   [24..28) CRC32C of metadata and image   [28..32) CRC32C of [0..28)
//! [32..)   postcard(BackupMeta), then the snapshot image (the snapshot-file encoding)
//! ```
//!
//! A restore writes the snapshot file, an empty log segment and, last, the hard-state file
//! (term = the snapshot's term, no vote, commit = its index). Recovery refuses a directory
//! holding a snapshot but no hard-state file, so a restore interrupted by a crash is never
//! mistaken for a node: delete the directory and restore again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{StorageError, StorageResult};
use super::fs::{FileSystem, OpenMode, read_whole_file};
use super::hard_state::HardStateFile;
use super::segment::SegmentHeader;
use super::snapshot_file::{
    decode_snapshot, encode_snapshot, save_snapshot, write_file_atomically,
};
use super::wal::create_segment;
use crate::raft::{ClusterConfig, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};

pub const BACKUP_MAGIC: [u8; 8] = *b"CNCLBKUP";
const HEADER_BYTES: usize = 32;
const MAX_META_BYTES: usize = 64 * 1024;

/// Who made a backup and when (the storage has no clock: the caller says).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupSource {
    /// Wall-clock milliseconds since the Unix epoch when the backup was taken.
    pub created_wall_ms: u64,
    /// Free text: the node and cluster it came from.
    pub description: String,
}

/// What a backup file says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    pub last_index: LogIndex,
    pub last_term: Term,
    pub config: ClusterConfig,
    pub created_wall_ms: u64,
    pub description: String,
    pub snapshot_bytes: u64,
}

/// The bytes of a backup file holding `snapshot` (what `write_backup` writes; a node serves them
/// over HTTP so a backup can be taken from anywhere).
pub fn encode_backup(
    snapshot: &Snapshot,
    source: &BackupSource,
    max_bytes: u64,
) -> StorageResult<(BackupMeta, Vec<u8>)> {
    let image = encode_snapshot(snapshot, max_bytes)?;
    let meta = BackupMeta {
        last_index: snapshot.meta.last_index,
        last_term: snapshot.meta.last_term,
        config: snapshot.meta.config.clone(),
        created_wall_ms: source.created_wall_ms,
        description: source.description.clone(),
        snapshot_bytes: image.len() as u64,
    };
    let encoded_meta = postcard::to_allocvec(&meta)
        .map_err(|e| StorageError::InvalidOptions(format!("cannot encode backup metadata: {e}")))?;
    if encoded_meta.len() > MAX_META_BYTES {
        return Err(StorageError::TooLarge {
            what: "backup metadata",
            size_bytes: encoded_meta.len() as u64,
            limit_bytes: MAX_META_BYTES as u64,
        });
    }
    let body_crc = crc32c::crc32c_append(crc32c::crc32c(&encoded_meta), &image);
    let mut out = Vec::with_capacity(HEADER_BYTES + encoded_meta.len() + image.len());
    out.extend_from_slice(&BACKUP_MAGIC);
    out.extend_from_slice(&super::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(encoded_meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&(image.len() as u64).to_le_bytes());
    out.extend_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&encoded_meta);
    out.extend_from_slice(&image);
    Ok((meta, out))
}

/// Decodes and verifies the bytes of a backup file (`path` names it in errors).
pub fn decode_backup(bytes: &[u8], path: &Path) -> StorageResult<(BackupMeta, Snapshot)> {
    if bytes.len() < HEADER_BYTES || bytes[..8] != BACKUP_MAGIC {
        return Err(StorageError::corrupt(
            path,
            0,
            "not a Conclave backup (bad magic or too short)",
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != super::FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: super::FORMAT_VERSION,
        });
    }
    let header_crc = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    if crc32c::crc32c(&bytes[..28]) != header_crc {
        return Err(StorageError::corrupt(path, 0, "backup header checksum mismatch"));
    }
    let meta_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as u64;
    let mut image_len = [0u8; 8];
    image_len.copy_from_slice(&bytes[16..24]);
    let image_len = u64::from_le_bytes(image_len);
    let expected = (HEADER_BYTES as u64).saturating_add(meta_len).saturating_add(image_len);
    if expected != bytes.len() as u64 {
        return Err(StorageError::corrupt(
            path,
            bytes.len().min(expected as usize) as u64,
            format!("backup file is {} bytes, its header says {expected}", bytes.len()),
        ));
    }
    let body = &bytes[HEADER_BYTES..];
    let body_crc = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    if crc32c::crc32c(body) != body_crc {
        return Err(StorageError::corrupt(path, HEADER_BYTES as u64, "backup checksum mismatch"));
    }
    let meta: BackupMeta = postcard::from_bytes(&body[..meta_len as usize]).map_err(|e| {
        StorageError::corrupt(
            path,
            HEADER_BYTES as u64,
            format!("undecodable backup metadata: {e}"),
        )
    })?;
    let snapshot = decode_snapshot(&body[meta_len as usize..], path)?;
    if (snapshot.meta.last_index, snapshot.meta.last_term) != (meta.last_index, meta.last_term) {
        return Err(StorageError::corrupt(
            path,
            HEADER_BYTES as u64,
            "backup metadata and snapshot disagree",
        ));
    }
    Ok((meta, snapshot))
}

/// Writes `snapshot` as a backup file at `path`, atomically (temporary file, sync, rename,
/// directory sync). The directory of `path` must exist.
pub async fn write_backup<F: FileSystem>(
    fs: &F,
    path: &Path,
    snapshot: &Snapshot,
    source: &BackupSource,
    max_snapshot_bytes: u64,
) -> StorageResult<BackupMeta> {
    let (meta, bytes) = encode_backup(snapshot, source, max_snapshot_bytes)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    write_file_atomically(fs, dir, path, bytes).await?;
    Ok(meta)
}

/// Reads and verifies a backup file.
pub async fn read_backup<F: FileSystem>(
    fs: &F,
    path: &Path,
    max_snapshot_bytes: u64,
) -> StorageResult<(BackupMeta, Snapshot)> {
    let file =
        fs.open(path, OpenMode::Read).await.map_err(|e| StorageError::io("open", path, e))?;
    let limit = max_snapshot_bytes.saturating_add((HEADER_BYTES + MAX_META_BYTES) as u64);
    let bytes =
        read_whole_file(&file, limit).await.map_err(|e| StorageError::io("read", path, e))?;
    decode_backup(&bytes, path)
}

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Seed a *new* cluster with other members than the backed-up one (the configuration the
    /// restored node starts from); `None` keeps the backup's configuration.
    pub config: Option<ClusterConfig>,
    pub segment_bytes: u64,
    pub max_snapshot_bytes: u64,
    /// Names that may already be in `data_dir` and do not make it "not empty": what the caller
    /// put there itself (the node's lock file, taken before the restore writes anything).
    pub foreign_entries: Vec<String>,
}

/// Restores `backup` into `data_dir`, which must be missing or empty (its parent must exist).
/// Returns the restored snapshot's metadata. The node then opens `data_dir` as usual.
pub async fn restore_backup<F: FileSystem>(
    fs: &F,
    backup: &Path,
    data_dir: &Path,
    options: &RestoreOptions,
) -> StorageResult<SnapshotMeta> {
    let (_, mut snapshot) = read_backup(fs, backup, options.max_snapshot_bytes).await?;
    prepare_empty_dir(fs, data_dir, &options.foreign_entries).await?;
    if let Some(config) = &options.config {
        snapshot.meta.config = config.clone();
    }
    save_snapshot(fs, data_dir, &snapshot, options.max_snapshot_bytes).await?;
    create_segment(fs, data_dir, SegmentHeader { seq: 1, first_lsn: 1 }, options.segment_bytes)
        .await?;
    let hard_state = HardState {
        term: snapshot.meta.last_term,
        vote: NodeId::NONE,
        commit: snapshot.meta.last_index,
    };
    HardStateFile::create(fs, data_dir, hard_state).await?;
    fs.sync_dir(data_dir).await.map_err(|e| StorageError::io("sync directory", data_dir, e))?;
    Ok(snapshot.meta)
}

/// Makes sure `dir` exists and is empty but for `foreign_entries` (creating it, durably, if it
/// is missing; its parent must exist): a restore never writes over anything.
pub(crate) async fn prepare_empty_dir<F: FileSystem>(
    fs: &F,
    dir: &Path,
    foreign_entries: &[String],
) -> StorageResult<()> {
    match fs.entry_kind(dir).await.map_err(|e| StorageError::io("stat", dir, e))? {
        None => {
            fs.create_dir(dir).await.map_err(|e| StorageError::io("create directory", dir, e))?;
            let parent: PathBuf = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            fs.sync_dir(&parent)
                .await
                .map_err(|e| StorageError::io("sync directory", &parent, e))?;
        }
        Some(super::fs::EntryKind::Directory) => {
            let entries = fs.list_dir(dir).await.map_err(|e| StorageError::io("list", dir, e))?;
            if entries.iter().any(|entry| !foreign_entries.contains(&entry.name)) {
                return Err(StorageError::NotEmpty { path: dir.to_path_buf() });
            }
        }
        Some(super::fs::EntryKind::File) => {
            return Err(StorageError::NotEmpty { path: dir.to_path_buf() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem_fs::{MemFs, MemFsConfig};
    use bytes::Bytes;
    use futures::executor::block_on;

    fn snapshot() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_index: 42,
                last_term: 7,
                config: ClusterConfig::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            },
            data: Bytes::from_static(b"the whole key-value state"),
        }
    }

    fn options() -> RestoreOptions {
        RestoreOptions {
            config: None,
            segment_bytes: 64 * 1024,
            max_snapshot_bytes: 1 << 20,
            foreign_entries: Vec::new(),
        }
    }

    #[test]
    fn backup_round_trips_and_detects_damage() {
        let fs = MemFs::new(1, MemFsConfig::default());
        let path = PathBuf::from("/backup.cnb");
        let source =
            BackupSource { created_wall_ms: 1_700_000_000_000, description: "n1 of test".into() };
        let meta = block_on(write_backup(&fs, &path, &snapshot(), &source, 1 << 20)).unwrap();
        assert_eq!((meta.last_index, meta.last_term), (42, 7));
        let (read_meta, read) = block_on(read_backup(&fs, &path, 1 << 20)).unwrap();
        assert_eq!((read_meta, read), (meta, snapshot()));
        let mut image = fs.image()[&path].clone();
        let at = image.len() - 2;
        image[at] ^= 1;
        fs.put_durable_file(&path, image);
        let error = block_on(read_backup(&fs, &path, 1 << 20)).unwrap_err().to_string();
        assert!(error.contains("/backup.cnb") && error.contains("checksum"), "{error}");
    }

    #[test]
    fn restore_refuses_a_non_empty_directory() {
        let fs = MemFs::new(1, MemFsConfig::default());
        let path = PathBuf::from("/backup.cnb");
        block_on(write_backup(&fs, &path, &snapshot(), &BackupSource::default(), 1 << 20)).unwrap();
        fs.put_durable_file(Path::new("/data/something"), vec![1]);
        let error =
            block_on(restore_backup(&fs, &path, Path::new("/data"), &options())).unwrap_err();
        assert!(matches!(error, StorageError::NotEmpty { .. }), "{error}");
    }
}
