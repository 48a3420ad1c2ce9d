//! Backups of a sharded cluster: one file holding a backup of every shard, each in the
//! single-group format of [`super::backup`] (a checksummed snapshot with its metadata), with the
//! shard map the cluster routed by and its replication factor; and a restore that seeds an empty
//! shared log ([`super::SharedLog`]) with the snapshots of the shards one node hosts.
//!
//! The shards' snapshots are taken one by one, each at its own shard's leader after a
//! linearizable read: each holds every write its shard acknowledged before the backup began.
//! Like everything else in a sharded cluster, a backup is consistent per shard, not across
//! shards (there is no cross-shard snapshot).
//!
//! ```text
//! [0..8)   magic "CNCLSHBK"   [8..12) format version   [12..16) metadata length
//! [16..20) CRC32C of the metadata   [20..24) CRC32C of [0..20)
//! [24..)   postcard(ShardedBackupMeta), then every shard's backup file, in the order and with
//!          the sizes the metadata lists (each verified by its own checksums)
//! ```
//!
//! A restore of a shared log writes the log's first (empty) segment, then each group's snapshot
//! and, last, its hard-state file. A crash part-way leaves groups missing: the caller stages the
//! directory under another name and renames it into place once this returns.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::backup::{BACKUP_MAGIC, BackupMeta, BackupSource, decode_backup, prepare_empty_dir};
use super::error::{StorageError, StorageResult};
use super::fs::{FileSystem, OpenMode, read_whole_file};
use super::hard_state::HardStateFile;
use super::recovery::group_dir;
use super::segment::SegmentHeader;
use super::snapshot_file::{save_snapshot, write_parts_atomically};
use super::wal::create_segment;
use crate::raft::{HardState, NodeId, Snapshot};
use crate::shard::{ShardId, ShardMap};

pub const SHARDED_BACKUP_MAGIC: [u8; 8] = *b"CNCLSHBK";
const HEADER_BYTES: usize = 24;
/// A map of the largest size (4,096 shards of 9 replicas, a 64 Ki-slot table) is well under it.
const MAX_META_BYTES: usize = 4 << 20;

/// What a sharded backup file says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardedBackupMeta {
    /// The map the cluster routed by when the backup began.
    pub map: ShardMap,
    /// Replicas per shard (`--replication`) of the backed-up cluster.
    pub replication: u32,
    pub created_wall_ms: u64,
    pub description: String,
    /// The shards' backups that follow the metadata, in file order.
    pub parts: Vec<BackupPart>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPart {
    pub shard: ShardId,
    pub size_bytes: u64,
}

/// Every shard's backup in a sharded backup file, by shard.
pub type ShardBackups = BTreeMap<ShardId, (BackupMeta, Snapshot)>;

/// A backup file of either kind, read and verified.
#[derive(Clone, Debug)]
pub enum BackupContents {
    /// A single group's backup (`conclave backup` of a cluster with one group).
    SingleGroup { meta: BackupMeta, snapshot: Snapshot },
    /// Every shard of a sharded cluster.
    Sharded { meta: ShardedBackupMeta, shards: ShardBackups },
}

/// Writes a sharded backup of `map`'s cluster at `path`, atomically: `parts` are each shard's
/// backup file (as `GET /admin/backup?shard=N` serves it), one per shard of the map, in shard
/// order. Every part is verified before anything is written.
pub async fn write_sharded_backup<F: FileSystem>(
    fs: &F,
    path: &Path,
    map: &ShardMap,
    replication: u32,
    source: &BackupSource,
    parts: &[(ShardId, Vec<u8>)],
) -> StorageResult<ShardedBackupMeta> {
    let listed: Vec<ShardId> = parts.iter().map(|(shard, _)| *shard).collect();
    let mapped: Vec<ShardId> = map.shards().map(|(shard, _)| shard).collect();
    if listed != mapped {
        return Err(StorageError::InvalidOptions(format!(
            "a sharded backup holds every shard of the map once, in order: the map has {mapped:?}, \
             the parts are {listed:?}"
        )));
    }
    for (shard, bytes) in parts {
        decode_backup(bytes, &path.join(format!("{shard}")))?;
    }
    let meta = ShardedBackupMeta {
        map: map.clone(),
        replication,
        created_wall_ms: source.created_wall_ms,
        description: source.description.clone(),
        parts: parts
            .iter()
            .map(|(shard, bytes)| BackupPart { shard: *shard, size_bytes: bytes.len() as u64 })
            .collect(),
    };
    let prefix = encode_prefix(&meta)?;
    let mut pieces: Vec<&[u8]> = vec![&prefix];
    pieces.extend(parts.iter().map(|(_, bytes)| bytes.as_slice()));
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    write_parts_atomically(fs, dir, path, &pieces).await?;
    Ok(meta)
}

/// The header and metadata of a sharded backup: what comes before the shards' backups.
fn encode_prefix(meta: &ShardedBackupMeta) -> StorageResult<Vec<u8>> {
    let encoded = postcard::to_allocvec(meta).map_err(|e| {
        StorageError::InvalidOptions(format!("cannot encode sharded backup metadata: {e}"))
    })?;
    if encoded.len() > MAX_META_BYTES {
        return Err(StorageError::TooLarge {
            what: "sharded backup metadata",
            size_bytes: encoded.len() as u64,
            limit_bytes: MAX_META_BYTES as u64,
        });
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + encoded.len());
    out.extend_from_slice(&SHARDED_BACKUP_MAGIC);
    out.extend_from_slice(&super::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&encoded).to_le_bytes());
    let header_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&encoded);
    Ok(out)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Decodes and verifies a sharded backup file's bytes (`path` names it in errors): the header,
/// the metadata, and every shard's backup.
pub fn decode_sharded_backup(
    bytes: &[u8],
    path: &Path,
) -> StorageResult<(ShardedBackupMeta, ShardBackups)> {
    if bytes.len() < HEADER_BYTES || bytes[..8] != SHARDED_BACKUP_MAGIC {
        return Err(StorageError::corrupt(path, 0, "not a sharded Conclave backup"));
    }
    let version = u32_at(bytes, 8);
    if version != super::FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: super::FORMAT_VERSION,
        });
    }
    if crc32c::crc32c(&bytes[..20]) != u32_at(bytes, 20) {
        return Err(StorageError::corrupt(path, 0, "sharded backup header checksum mismatch"));
    }
    let meta_len = u32_at(bytes, 12) as usize;
    if meta_len > MAX_META_BYTES || HEADER_BYTES + meta_len > bytes.len() {
        return Err(StorageError::corrupt(
            path,
            12,
            format!("metadata length {meta_len} does not fit the file"),
        ));
    }
    let encoded = &bytes[HEADER_BYTES..HEADER_BYTES + meta_len];
    if crc32c::crc32c(encoded) != u32_at(bytes, 16) {
        return Err(StorageError::corrupt(
            path,
            HEADER_BYTES as u64,
            "sharded backup metadata checksum mismatch",
        ));
    }
    let meta: ShardedBackupMeta = postcard::from_bytes(encoded).map_err(|e| {
        StorageError::corrupt(path, HEADER_BYTES as u64, format!("undecodable metadata: {e}"))
    })?;
    meta.map.validate().map_err(|e| {
        StorageError::corrupt(path, HEADER_BYTES as u64, format!("invalid shard map: {e}"))
    })?;
    let listed: Vec<ShardId> = meta.parts.iter().map(|part| part.shard).collect();
    let mapped: Vec<ShardId> = meta.map.shards().map(|(shard, _)| shard).collect();
    if listed != mapped {
        return Err(StorageError::corrupt(
            path,
            HEADER_BYTES as u64,
            format!("the backup holds shards {listed:?}, its map has {mapped:?}"),
        ));
    }
    let mut offset = (HEADER_BYTES + meta_len) as u64;
    let mut shards = BTreeMap::new();
    for part in &meta.parts {
        let end = offset.saturating_add(part.size_bytes);
        if end > bytes.len() as u64 {
            return Err(StorageError::corrupt(
                path,
                offset,
                format!("{} ends at byte {end}, past the end of the file", part.shard),
            ));
        }
        let part_path = path.join(format!("{}", part.shard));
        let decoded = decode_backup(&bytes[offset as usize..end as usize], &part_path)?;
        shards.insert(part.shard, decoded);
        offset = end;
    }
    if offset != bytes.len() as u64 {
        return Err(StorageError::corrupt(
            path,
            offset,
            format!("{} bytes after the last shard", bytes.len() as u64 - offset),
        ));
    }
    Ok((meta, shards))
}

/// Reads and verifies a backup file of either kind (at most `max_bytes`).
pub async fn read_any_backup<F: FileSystem>(
    fs: &F,
    path: &Path,
    max_bytes: u64,
) -> StorageResult<BackupContents> {
    let file =
        fs.open(path, OpenMode::Read).await.map_err(|e| StorageError::io("open", path, e))?;
    let bytes =
        read_whole_file(&file, max_bytes).await.map_err(|e| StorageError::io("read", path, e))?;
    if bytes.starts_with(&BACKUP_MAGIC) {
        let (meta, snapshot) = decode_backup(&bytes, path)?;
        return Ok(BackupContents::SingleGroup { meta, snapshot });
    }
    let (meta, shards) = decode_sharded_backup(&bytes, path)?;
    Ok(BackupContents::Sharded { meta, shards })
}

/// Seeds `log_dir`, which must be missing or empty, as the shared log of a node hosting the
/// groups of `snapshots`, each starting from its snapshot (term = the snapshot's, no vote,
/// commit = its index). See the module docs for what a crash part-way leaves.
pub async fn restore_shared_log<F: FileSystem>(
    fs: &F,
    log_dir: &Path,
    snapshots: &BTreeMap<ShardId, Snapshot>,
    segment_bytes: u64,
    max_snapshot_bytes: u64,
) -> StorageResult<()> {
    if snapshots.is_empty() {
        return Err(StorageError::InvalidOptions("a shared log hosts at least one group".into()));
    }
    prepare_empty_dir(fs, log_dir, &[]).await?;
    // The log comes before any group's files, as when a shared log is created (`recovery.rs`).
    create_segment(fs, log_dir, SegmentHeader { seq: 1, first_lsn: 1 }, segment_bytes).await?;
    for (shard, snapshot) in snapshots {
        let dir = group_dir(log_dir, *shard);
        prepare_empty_dir(fs, &dir, &[]).await?;
        save_snapshot(fs, &dir, snapshot, max_snapshot_bytes).await?;
        let hard_state = HardState {
            term: snapshot.meta.last_term,
            vote: NodeId::NONE,
            commit: snapshot.meta.last_index,
        };
        HardStateFile::create(fs, &dir, hard_state).await?;
        fs.sync_dir(&dir).await.map_err(|e| StorageError::io("sync directory", &dir, e))?;
    }
    fs.sync_dir(log_dir).await.map_err(|e| StorageError::io("sync directory", log_dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::raft::{ClusterConfig, SnapshotMeta};
    use crate::shard::SlotCount;
    use crate::storage::backup::encode_backup;
    use crate::storage::mem_fs::{MemFs, MemFsConfig};
    use crate::storage::recovery::recover_shared;
    use crate::storage::wal_storage::WalOptions;
    use bytes::Bytes;
    use futures::executor::block_on;

    fn map() -> ShardMap {
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        ShardMap::bootstrap(SlotCount::new(64).unwrap(), 3, &members, 3).unwrap()
    }

    fn snapshot(shard: ShardId) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_index: 10 + u64::from(shard.0),
                last_term: 2,
                config: ClusterConfig::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            },
            data: Bytes::from(format!("the state of {shard}")),
        }
    }

    fn parts() -> Vec<(ShardId, Vec<u8>)> {
        map()
            .shards()
            .map(|(shard, _)| {
                let (_, bytes) =
                    encode_backup(&snapshot(shard), &BackupSource::default(), 1 << 20).unwrap();
                (shard, bytes)
            })
            .collect()
    }

    #[test]
    fn a_sharded_backup_round_trips_and_any_damage_is_refused() {
        let fs = MemFs::new(1, MemFsConfig::default());
        let path = PathBuf::from("/cluster.backup");
        let source = BackupSource { created_wall_ms: 5, description: "test cluster".into() };
        let written =
            block_on(write_sharded_backup(&fs, &path, &map(), 3, &source, &parts())).unwrap();
        let BackupContents::Sharded { meta, shards } =
            block_on(read_any_backup(&fs, &path, 1 << 20)).unwrap()
        else {
            panic!("a sharded backup read as a single group's");
        };
        assert_eq!(meta, written);
        assert_eq!(meta.map, map());
        assert_eq!(shards.len(), 3);
        for (shard, (_, snapshot)) in &shards {
            assert_eq!(*snapshot, super::tests::snapshot(*shard));
        }
        // Every byte matters: a flip anywhere (header, metadata, a shard's backup) is refused.
        let image = fs.image()[&path].clone();
        for at in [3, 13, HEADER_BYTES + 2, image.len() / 2, image.len() - 1] {
            let mut damaged = image.clone();
            damaged[at] ^= 0x10;
            assert!(decode_sharded_backup(&damaged, &path).is_err(), "a flip at {at} passed");
        }
        let short = &image[..image.len() - 1];
        assert!(decode_sharded_backup(short, &path).is_err(), "a truncated file passed");
        let mut long = image.clone();
        long.push(0);
        assert!(decode_sharded_backup(&long, &path).is_err(), "trailing bytes passed");
    }

    #[test]
    fn a_sharded_backup_must_hold_every_shard_of_its_map() {
        let fs = MemFs::new(1, MemFsConfig::default());
        let path = PathBuf::from("/cluster.backup");
        let mut missing = parts();
        missing.remove(1);
        let error = block_on(write_sharded_backup(
            &fs,
            &path,
            &map(),
            3,
            &BackupSource::default(),
            &missing,
        ))
        .unwrap_err();
        assert!(matches!(error, StorageError::InvalidOptions(_)), "{error}");
        let mut damaged = parts();
        let last = damaged[2].1.len() - 1;
        damaged[2].1[last] ^= 1;
        let error = block_on(write_sharded_backup(
            &fs,
            &path,
            &map(),
            3,
            &BackupSource::default(),
            &damaged,
        ))
        .unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        assert!(!fs.image().contains_key(&path), "nothing written for a bad part");
    }

    #[test]
    fn a_restored_shared_log_recovers_every_group_from_its_snapshot() {
        let fs = MemFs::new(1, MemFsConfig::default());
        fs.put_durable_file(Path::new("/node/lock"), Vec::new());
        let log_dir = PathBuf::from("/node/shards");
        let snapshots: BTreeMap<ShardId, Snapshot> =
            [ShardId(0), ShardId(2)].into_iter().map(|shard| (shard, snapshot(shard))).collect();
        block_on(restore_shared_log(&fs, &log_dir, &snapshots, 64 * 1024, 1 << 20)).unwrap();
        let hosted: Vec<ShardId> = snapshots.keys().copied().collect();
        let parts =
            block_on(recover_shared(&fs, &log_dir, &hosted, WalOptions::default().limits()))
                .unwrap();
        assert!(!parts.created);
        for (shard, group) in &parts.groups {
            let expected = &snapshots[shard];
            assert_eq!(group.snapshot.as_ref(), Some(expected), "{shard}");
            assert_eq!(group.restored.hard_state.commit, expected.meta.last_index);
            assert_eq!(group.restored.hard_state.term, expected.meta.last_term);
            assert_eq!(group.restored.hard_state.vote, NodeId::NONE);
        }
        let again = block_on(restore_shared_log(&fs, &log_dir, &snapshots, 64 * 1024, 1 << 20));
        assert!(matches!(again, Err(StorageError::NotEmpty { .. })), "{again:?}");
    }
}
