//! Snapshot files: the state machine's serialized state with the metadata Raft needs (last
//! included index and term, the configuration), checksummed, written atomically.
//!
//! Writing: a temporary file is written and synced, renamed to its final name, and the
//! directory is synced; only then is the snapshot durable, and only then are older snapshot
//! files removed — a crash at any point leaves either the old or the new snapshot complete.
//! Leftover temporary files are deleted at recovery (they were never reported durable).
//!
//! ```text
//! [0..8)   magic "CNCLSNAP"   [8..12) format version   [12..16) metadata length
//! [16..24) data length        [24..28) CRC32C of metadata and data   [28..32) CRC32C of [0..28)
//! [32..)   postcard(SnapshotMeta), then the data
//! ```

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::error::{StorageError, StorageResult};
use super::fs::{FileSystem, FsFile, OpenMode, read_whole_file};
use super::removal::remove_durably;
use crate::raft::{LogIndex, Snapshot, SnapshotMeta};

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"CNCLSNAP";
const HEADER_BYTES: usize = 32;
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";
pub const TEMP_SUFFIX: &str = ".tmp";
/// The largest metadata we accept (a configuration with its addresses).
const MAX_META_BYTES: usize = 1 << 20;
/// Writes are split so that neither file system has to take one enormous buffer.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

pub fn snapshot_file_name(last_index: LogIndex) -> String {
    format!("{PREFIX}{last_index:020}{SUFFIX}")
}

pub fn parse_snapshot_file_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn is_snapshot_temp_file_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX).and_then(parse_snapshot_file_name).is_some()
}

/// The whole file image of a snapshot (also the body of a backup file).
pub fn encode_snapshot(snapshot: &Snapshot, max_bytes: u64) -> StorageResult<Vec<u8>> {
    let meta = postcard::to_allocvec(&snapshot.meta).map_err(|e| {
        StorageError::InvalidOptions(format!("cannot encode snapshot metadata: {e}"))
    })?;
    let total = (HEADER_BYTES + meta.len() + snapshot.data.len()) as u64;
    if total > max_bytes {
        return Err(StorageError::TooLarge {
            what: "snapshot",
            size_bytes: total,
            limit_bytes: max_bytes,
        });
    }
    if meta.len() > MAX_META_BYTES {
        return Err(StorageError::TooLarge {
            what: "snapshot metadata",
            size_bytes: meta.len() as u64,
            limit_bytes: MAX_META_BYTES as u64,
        });
    }
    let mut body_crc = crc32c::crc32c(&meta);
    body_crc = crc32c::crc32c_append(body_crc, &snapshot.data);
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&super::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    out.extend_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&snapshot.data);
    Ok(out)
}

/// Decodes a snapshot image; every failure names `path` and the offset.
pub fn decode_snapshot(image: &[u8], path: &Path) -> StorageResult<Snapshot> {
    if image.len() < HEADER_BYTES {
        return Err(StorageError::corrupt(
            path,
            0,
            format!("snapshot file of {} bytes is shorter than its header", image.len()),
        ));
    }
    if image[..8] != SNAPSHOT_MAGIC {
        return Err(StorageError::corrupt(path, 0, "not a Conclave snapshot (bad magic)"));
    }
    let version = u32::from_le_bytes([image[8], image[9], image[10], image[11]]);
    if version != super::FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: super::FORMAT_VERSION,
        });
    }
    let header_crc = u32::from_le_bytes([image[28], image[29], image[30], image[31]]);
    if crc32c::crc32c(&image[..28]) != header_crc {
        return Err(StorageError::corrupt(path, 0, "snapshot header checksum mismatch"));
    }
    let meta_len = u32::from_le_bytes([image[12], image[13], image[14], image[15]]) as usize;
    let mut data_len = [0u8; 8];
    data_len.copy_from_slice(&image[16..24]);
    let data_len = u64::from_le_bytes(data_len);
    let expected = (HEADER_BYTES as u64).saturating_add(meta_len as u64).saturating_add(data_len);
    if expected != image.len() as u64 {
        return Err(StorageError::corrupt(
            path,
            image.len().min(expected as usize) as u64,
            format!("snapshot file is {} bytes, its header says {expected}", image.len()),
        ));
    }
    let body = &image[HEADER_BYTES..];
    let body_crc = u32::from_le_bytes([image[24], image[25], image[26], image[27]]);
    if crc32c::crc32c(body) != body_crc {
        return Err(StorageError::corrupt(path, HEADER_BYTES as u64, "snapshot checksum mismatch"));
    }
    let meta: SnapshotMeta = postcard::from_bytes(&body[..meta_len]).map_err(|e| {
        StorageError::corrupt(
            path,
            HEADER_BYTES as u64,
            format!("undecodable snapshot metadata: {e}"),
        )
    })?;
    let data = Bytes::copy_from_slice(&body[meta_len..]);
    Ok(Snapshot { meta, data })
}

/// Reads and verifies a snapshot file.
pub async fn read_snapshot_file<F: FileSystem>(
    fs: &F,
    path: &Path,
    max_bytes: u64,
) -> StorageResult<Snapshot> {
    let file =
        fs.open(path, OpenMode::Read).await.map_err(|e| StorageError::io("open", path, e))?;
    let image =
        read_whole_file(&file, max_bytes).await.map_err(|e| StorageError::io("read", path, e))?;
    let snapshot = decode_snapshot(&image, path)?;
    let named = path.file_name().and_then(|n| n.to_str()).and_then(parse_snapshot_file_name);
    if named.is_some_and(|index| index != snapshot.meta.last_index) {
        return Err(StorageError::corrupt(
            path,
            HEADER_BYTES as u64,
            format!(
                "the file name does not match the snapshot's last index {}",
                snapshot.meta.last_index
            ),
        ));
    }
    Ok(snapshot)
}

/// Writes `image` to `path` atomically: temporary file, sync, rename, directory sync.
pub async fn write_file_atomically<F: FileSystem>(
    fs: &F,
    dir: &Path,
    path: &Path,
    image: Vec<u8>,
) -> StorageResult<()> {
    write_parts_atomically(fs, dir, path, &[&image]).await
}

/// [`write_file_atomically`] of a file made of `parts`, one after another (a file assembled
/// from pieces the caller already holds, without copying them into one buffer first).
pub async fn write_parts_atomically<F: FileSystem>(
    fs: &F,
    dir: &Path,
    path: &Path,
    parts: &[&[u8]],
) -> StorageResult<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(TEMP_SUFFIX);
    let temp = PathBuf::from(temp);
    // A leftover of the same name goes durably before the name is created again (`removal.rs`).
    if fs.entry_kind(&temp).await.map_err(|e| StorageError::io("stat", &temp, e))?.is_some() {
        remove_durably(fs, dir, std::slice::from_ref(&temp)).await?;
    }
    let file = fs
        .open(&temp, OpenMode::CreateNew)
        .await
        .map_err(|e| StorageError::io("create", &temp, e))?;
    let mut file_offset = 0u64;
    for part in parts {
        let mut offset = 0usize;
        while offset < part.len() {
            let end = (offset + WRITE_CHUNK_BYTES).min(part.len());
            let written = file.write_all_at(file_offset, part[offset..end].to_vec()).await;
            if let Err(error) = written {
                // A partial temporary file only takes room (on a full disk, the room the rest
                // of the node needs): remove it now rather than at the next recovery — durably,
                // as the next attempt at this snapshot creates the same name (`removal.rs`).
                drop(file);
                let _ = remove_durably(fs, dir, std::slice::from_ref(&temp)).await;
                return Err(StorageError::io("write", &temp, error));
            }
            file_offset += (end - offset) as u64;
            offset = end;
        }
    }
    file.sync_all().await.map_err(|e| StorageError::io("sync", &temp, e))?;
    drop(file);
    fs.rename(&temp, path).await.map_err(|e| StorageError::io("rename", &temp, e))?;
    fs.sync_dir(dir).await.map_err(|e| StorageError::io("sync directory", dir, e))?;
    Ok(())
}

/// Writes a snapshot file durably, then removes older snapshot files. Returns its path.
pub async fn save_snapshot<F: FileSystem>(
    fs: &F,
    dir: &Path,
    snapshot: &Snapshot,
    max_bytes: u64,
) -> StorageResult<PathBuf> {
    let image = encode_snapshot(snapshot, max_bytes)?;
    let path = dir.join(snapshot_file_name(snapshot.meta.last_index));
    write_file_atomically(fs, dir, &path, image).await?;
    // The new snapshot is durable: the older ones may go. Their removal need not be durable —
    // recovery always picks the newest — so the next directory sync carries it.
    for entry in fs.list_dir(dir).await.map_err(|e| StorageError::io("list", dir, e))? {
        if parse_snapshot_file_name(&entry.name)
            .is_some_and(|index| index < snapshot.meta.last_index)
        {
            let old = dir.join(&entry.name);
            fs.remove_file(&old).await.map_err(|e| StorageError::io("remove", &old, e))?;
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ClusterConfig, NodeId};
    use crate::storage::mem_fs::{MemFs, MemFsConfig};
    use futures::executor::block_on;

    fn snapshot(index: u64) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_index: index,
                last_term: 3,
                config: ClusterConfig::with_voters([NodeId(1), NodeId(2)]),
            },
            data: Bytes::from(vec![index as u8; 1000]),
        }
    }

    fn setup(seed: u64) -> (MemFs, PathBuf) {
        let fs = MemFs::new(seed, MemFsConfig { torn_block_bytes: Some(64), ..Default::default() });
        let dir = PathBuf::from("/d");
        block_on(async {
            fs.create_dir(&dir).await.unwrap();
            fs.sync_dir(Path::new("/")).await.unwrap();
        });
        (fs, dir)
    }

    #[test]
    fn round_trip_and_older_files_removed() {
        let (fs, dir) = setup(0);
        block_on(async {
            save_snapshot(&fs, &dir, &snapshot(10), 1 << 20).await.unwrap();
            let path = save_snapshot(&fs, &dir, &snapshot(20), 1 << 20).await.unwrap();
            let names: Vec<String> =
                fs.list_dir(&dir).await.unwrap().into_iter().map(|e| e.name).collect();
            assert_eq!(names, vec![snapshot_file_name(20)]);
            assert_eq!(read_snapshot_file(&fs, &path, 1 << 20).await.unwrap(), snapshot(20));
        });
    }

    #[test]
    fn a_crash_at_any_operation_leaves_the_old_or_the_new_snapshot() {
        for cut in 0..12 {
            for seed in 0..8 {
                let (fs, dir) = setup(seed);
                block_on(save_snapshot(&fs, &dir, &snapshot(10), 1 << 20)).unwrap();
                fs.faults().power_cut_after_ops(cut);
                let _ = block_on(save_snapshot(&fs, &dir, &snapshot(20), 1 << 20));
                fs.crash();
                let complete: Vec<u64> = fs
                    .image()
                    .iter()
                    .filter_map(|(path, image)| {
                        let name = path.file_name()?.to_str()?;
                        let index = parse_snapshot_file_name(name)?;
                        assert_eq!(
                            decode_snapshot(image, path).unwrap(),
                            snapshot(index),
                            "cut {cut}"
                        );
                        Some(index)
                    })
                    .collect();
                assert!(!complete.is_empty(), "cut {cut} seed {seed}: no snapshot survived");
            }
        }
    }

    #[test]
    fn damage_is_reported_with_file_and_offset() {
        let image = encode_snapshot(&snapshot(5), 1 << 20).unwrap();
        let path = PathBuf::from("/d/snapshot-00000000000000000005.snap");
        let mut bad = image.clone();
        bad[600] ^= 1;
        let error = decode_snapshot(&bad, &path).unwrap_err().to_string();
        assert!(
            error.contains("checksum") && error.contains("snapshot-00000000000000000005.snap"),
            "{error}"
        );
        let error = decode_snapshot(&image[..image.len() - 1], &path).unwrap_err().to_string();
        assert!(error.contains("header says"), "{error}");
        let mut other = image.clone();
        other[8] = 7;
        assert!(matches!(
            decode_snapshot(&other, &path),
            Err(StorageError::UnsupportedVersion { found: 7, .. })
        ));
        assert!(decode_snapshot(&[], &path).is_err());
        assert!(matches!(encode_snapshot(&snapshot(5), 100), Err(StorageError::TooLarge { .. })));
    }
}
