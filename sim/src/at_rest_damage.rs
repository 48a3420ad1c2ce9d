//! Damage to data at rest: what a disk does to bytes it had already synced, applied to a
//! crashed node's data directory before it restarts (VOPR's storage fault model, one node per
//! run so that the cluster can always survive it):
//!
//! - **flipped bits** in a synced log record;
//! - a **lost write**: a synced record whose bytes never reached the platter (zeros), with later
//!   writes that did;
//! - a **misdirected write**: a synced record overwritten by a block meant for another place;
//! - a damaged **snapshot** file, or the damaged newest slot of the **hard state**;
//! - a **latent read error**: a block of a file that fails every read from now on.
//!
//! Only damage a node *can* tell from a crash is injected into the log: a record in a sealed
//! segment, or one a later record vouches for (see the scan rule in `segment.rs`). The newest,
//! unvouched record damaged exactly like a torn write is indistinguishable from one; that case
//! is `lost_tail.rs`, which limits itself to entries the rest of the cluster holds.
//!
//! A node hosting many groups keeps one log for all of them and each group's hard state and
//! snapshots in a directory of its own (`shared_log.rs`): log damage hits any group's records,
//! and a snapshot or hard state to damage is drawn from every group's directory.
//!
//! What must follow is checked elsewhere: the node either refuses to start (the run says so
//! and goes on without it), or it starts holding every vote and entry it had promised durable
//! (the observer's seam checks stay on for it).

use std::fmt;
use std::path::{Path, PathBuf};

use conclave_core::storage::fs::{FileSystem, FsFile, OpenMode, read_whole_file};
use conclave_core::storage::hard_state::{HARD_STATE_FILE_NAME, newest_slot_offset};
use conclave_core::storage::record::{RecordRead, read_record};
use conclave_core::storage::segment::{
    HeaderRead, SegmentEnd, decode_segment_header, parse_segment_file_name, scan_segment,
};
use conclave_core::storage::snapshot_file::parse_snapshot_file_name;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::fs::{SimFile, SimFs};

/// No file larger than this is read to be damaged (the simulator's files are small).
const MAX_FILE_BYTES: u64 = 64 << 20;
/// The unit a disk writes and fails in.
const BLOCK_BYTES: u64 = 512;
/// The bytes of a hard-state slot that hold anything (see `hard_state.rs`).
const HARD_STATE_ENCODED_BYTES: u64 = 44;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AtRestDamage {
    FlippedBits,
    LostWrite,
    MisdirectedWrite,
    DamagedSnapshot,
    DamagedHardState,
    LatentReadError,
}

impl AtRestDamage {
    pub const ALL: [AtRestDamage; 6] = [
        AtRestDamage::FlippedBits,
        AtRestDamage::LostWrite,
        AtRestDamage::MisdirectedWrite,
        AtRestDamage::DamagedSnapshot,
        AtRestDamage::DamagedHardState,
        AtRestDamage::LatentReadError,
    ];
}

impl fmt::Display for AtRestDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AtRestDamage::FlippedBits => "flipped bits in a synced log record",
            AtRestDamage::LostWrite => "a lost write of a synced log record",
            AtRestDamage::MisdirectedWrite => "a misdirected write over a synced log record",
            AtRestDamage::DamagedSnapshot => "a damaged snapshot file",
            AtRestDamage::DamagedHardState => "a damaged newest hard-state slot",
            AtRestDamage::LatentReadError => "a latent read error",
        })
    }
}

/// A file region that fails every read (a latent sector error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableBlock {
    pub path: PathBuf,
    pub offset: u64,
    pub len_bytes: u64,
}

impl UnreadableBlock {
    pub fn overlaps(&self, path: &Path, offset: u64, len_bytes: u64) -> bool {
        self.path == path
            && offset < self.offset + self.len_bytes
            && self.offset < offset + len_bytes
    }
}

/// What was done, for the run's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamageDone {
    pub description: String,
    /// Set for a latent read error: the file system must fail reads of this block from now on.
    pub unreadable: Option<UnreadableBlock>,
}

/// A synced log record that may be damaged: its segment file and byte range.
struct Target {
    path: PathBuf,
    lsn: u64,
    start: u64,
    end: u64,
}

/// Damages the data of a node as `damage` says: the log's segments in `dir`, and the hard
/// states and snapshots in `group_dirs` (`dir` itself for a single group's node). `None` when
/// there was nothing it could damage under the rules above (then nothing changed).
pub async fn damage_at_rest(
    fs: &SimFs,
    dir: &Path,
    group_dirs: &[PathBuf],
    damage: AtRestDamage,
    seed: u64,
) -> Option<DamageDone> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match damage {
        AtRestDamage::FlippedBits | AtRestDamage::LostWrite | AtRestDamage::MisdirectedWrite => {
            let targets = damageable_records(fs, dir).await?;
            let target = &targets[rng.random_range(0..targets.len())];
            let file = fs.open(&target.path, OpenMode::ReadWrite).await.ok()?;
            let len = target.end - target.start;
            let bytes = match damage {
                AtRestDamage::FlippedBits => {
                    let mut bytes = file.read_at(target.start, len as usize).await.ok()?;
                    for _ in 0..rng.random_range(1..=3) {
                        let at = rng.random_range(0..bytes.len());
                        bytes[at] ^= rng.random_range(1..=255u8);
                    }
                    bytes
                }
                AtRestDamage::LostWrite => vec![0u8; len as usize],
                _ => {
                    // A block of the same file, from another place.
                    let file_len = file.len_bytes().await.ok()?;
                    let blocks = file_len / BLOCK_BYTES;
                    let from = rng.random_range(0..blocks.max(1)) * BLOCK_BYTES;
                    let mut bytes = file.read_at(from, len.min(BLOCK_BYTES) as usize).await.ok()?;
                    let original = file.read_at(target.start, bytes.len()).await.ok()?;
                    if bytes == original {
                        bytes.iter_mut().for_each(|byte| *byte = !*byte);
                    }
                    bytes
                }
            };
            file.write_all_at(target.start, bytes).await.ok()?;
            file.sync_data().await.ok()?;
            Some(DamageDone {
                description: format!(
                    "{damage}: record {} at bytes {}..{} of {}",
                    target.lsn,
                    target.start,
                    target.end,
                    target.path.display()
                ),
                unreadable: None,
            })
        }
        AtRestDamage::DamagedSnapshot => {
            let snapshots = newest_snapshots(fs, group_dirs).await;
            let path = pick(&mut rng, &snapshots)?.clone();
            let file = fs.open(&path, OpenMode::ReadWrite).await.ok()?;
            let len = file.len_bytes().await.ok()?;
            let at = rng.random_range(0..len.max(1));
            flip_byte(&file, at, &mut rng).await?;
            Some(DamageDone {
                description: format!("{damage}: byte {at} of {}", path.display()),
                unreadable: None,
            })
        }
        AtRestDamage::DamagedHardState => {
            let path = pick(&mut rng, group_dirs)?.join(HARD_STATE_FILE_NAME);
            let file = fs.open(&path, OpenMode::ReadWrite).await.ok()?;
            let image = read_whole_file(&file, MAX_FILE_BYTES).await.ok()?;
            let slot_offset = newest_slot_offset(&image, &path).ok()?;
            // Within the slot's encoded bytes (magic, version, sequence, state, checksum).
            let at = slot_offset + rng.random_range(0..HARD_STATE_ENCODED_BYTES);
            flip_byte(&file, at, &mut rng).await?;
            Some(DamageDone {
                description: format!("{damage}: byte {at} of {}", path.display()),
                unreadable: None,
            })
        }
        AtRestDamage::LatentReadError => {
            let mut files: Vec<PathBuf> =
                group_dirs.iter().map(|group| group.join(HARD_STATE_FILE_NAME)).collect();
            files.extend(newest_snapshots(fs, group_dirs).await);
            if let Some(targets) = damageable_records(fs, dir).await {
                files.extend(targets.into_iter().map(|target| target.path));
                files.dedup();
            }
            let path = files[rng.random_range(0..files.len())].clone();
            let file = fs.open(&path, OpenMode::Read).await.ok()?;
            let blocks = file.len_bytes().await.ok()?.div_ceil(BLOCK_BYTES);
            let offset = rng.random_range(0..blocks.max(1)) * BLOCK_BYTES;
            let block = UnreadableBlock { path, offset, len_bytes: BLOCK_BYTES };
            Some(DamageDone {
                description: format!(
                    "{damage}: bytes {}..{} of {}",
                    block.offset,
                    block.offset + BLOCK_BYTES,
                    block.path.display()
                ),
                unreadable: Some(block),
            })
        }
    }
}

/// Changes the byte at `at` of `file` for good (written and synced, as the disk now holds it).
async fn flip_byte(file: &SimFile, at: u64, rng: &mut ChaCha8Rng) -> Option<()> {
    let mut byte = file.read_at(at, 1).await.ok()?;
    *byte.first_mut()? ^= rng.random_range(1..=255u8);
    file.write_all_at(at, byte).await.ok()?;
    file.sync_data().await.ok()
}

/// Every synced log record whose damage a node can tell from a torn write (module docs).
async fn damageable_records(fs: &SimFs, dir: &Path) -> Option<Vec<Target>> {
    let entries = fs.list_dir(dir).await.ok()?;
    let mut seqs: Vec<u64> =
        entries.iter().filter_map(|entry| parse_segment_file_name(&entry.name)).collect();
    seqs.sort_unstable();
    let last_seq = *seqs.last()?;
    let mut targets = Vec::new();
    for seq in seqs {
        let path = dir.join(conclave_core::storage::segment::segment_file_name(seq));
        let file = fs.open(&path, OpenMode::Read).await.ok()?;
        let image = read_whole_file(&file, MAX_FILE_BYTES).await.ok()?;
        let HeaderRead::Valid(header) = decode_segment_header(&image, &path).ok()? else {
            continue;
        };
        let is_last = seq == last_seq;
        let scan = scan_segment(&image, &path, header, is_last, usize::MAX >> 1).ok()?;
        let end = match scan.end {
            SegmentEnd::Clean { end_offset } => end_offset,
            SegmentEnd::Torn { offset, .. } => offset,
        };
        // The highest `durable_lsn` any later record of this segment carries.
        let mut vouched_up_to = Vec::with_capacity(scan.records.len());
        let mut highest = 0;
        for record in scan.records.iter().rev() {
            vouched_up_to.push(highest);
            if let RecordRead::Valid(valid) =
                read_record(&image[record.offset as usize..], usize::MAX >> 1)
            {
                highest = highest.max(valid.durable_lsn);
            }
        }
        vouched_up_to.reverse();
        for (at, record) in scan.records.iter().enumerate() {
            let record_end = scan.records.get(at + 1).map_or(end, |next| next.offset);
            if !is_last || vouched_up_to[at] >= record.lsn {
                targets.push(Target {
                    path: path.clone(),
                    lsn: record.lsn,
                    start: record.offset,
                    end: record_end,
                });
            }
        }
    }
    (!targets.is_empty()).then_some(targets)
}

/// One of `items`, drawn only when there is a choice (a single group's draws stay as they were
/// before nodes hosted many groups).
fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> Option<&'a T> {
    match items.len() {
        0 | 1 => items.first(),
        len => items.get(rng.random_range(0..len)),
    }
}

/// The newest snapshot file of each of `dirs` that has one.
async fn newest_snapshots(fs: &SimFs, dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut newest_files = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs.list_dir(dir).await else { continue };
        let newest = entries.iter().filter_map(|entry| parse_snapshot_file_name(&entry.name)).max();
        if let Some(newest) = newest {
            let name = conclave_core::storage::snapshot_file::snapshot_file_name(newest);
            newest_files.push(dir.join(name));
        }
    }
    newest_files
}
