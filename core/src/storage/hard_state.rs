//! The hard state (term, vote, commit) in a file of two checksummed slots, written alternately.
//!
//! Why two slots rather than write-new + sync + rename + sync-dir: a slot update is one small
//! write and one `fdatasync` of a file whose size never changes, while the rename scheme needs
//! an fsync of the new file *and* of the directory. Term and vote change at every election, so
//! the cheap path keeps elections fast. Atomicity comes from the checksum: a write torn by a
//! crash fails it, and the other slot still holds the previous durable state.
//!
//! The rule that makes the fallback correct: a write always goes to the slot that does *not*
//! hold the last synced state, so the last synced state is never overwritten before a newer
//! one is synced. Each slot carries a sequence number; the valid slot with the higher one wins.
//!
//! Two slots survive a torn write, not a disk that damages the newest slot after it was
//! synced: that falls back to the older slot, a vote the node may already have sent would be
//! forgotten, and it could vote twice. So every term or vote change also goes into the log
//! (`TermAndVote` in `wal.rs`), and recovery takes the newer of the two copies.
//!
//! Durability policy (enforced by the writer, `wal_storage.rs`):
//! - a change of term or vote is written and synced *before* the log records of the same batch
//!   and before the batch is reported durable, because Raft grants a vote (or accepts a leader)
//!   only once it is durable — a node that forgot its vote could vote twice in one term;
//! - a change of commit alone is not written here at all: it rides in the log as a `Committed`
//!   record of the next group that writes records anyway (`wal.rs`), after the entries it
//!   covers, so it costs no write or sync of its own and never claims more than the durable log
//!   holds. Commit is not needed for safety: after a restart a stale commit only delays applying
//!   until the leader's next message carries the current one. The commit kept in this file is
//!   the one known at the last term or vote change; recovery takes the newer of the two.

use std::path::{Path, PathBuf};

use super::error::{StorageError, StorageResult};
use super::fs::{FileSystem, FsFile, OpenMode};
use super::space::DiskSpace;
use crate::raft::{HardState, NodeId};

pub const HARD_STATE_FILE_NAME: &str = "hard_state";
/// One slot per 512-byte sector, so that a torn write of one slot never touches the other.
const SLOT_BYTES: u64 = 512;
const FILE_BYTES: u64 = 2 * SLOT_BYTES;
const SLOT_MAGIC: [u8; 4] = *b"CNHS";
/// magic(4) version(4) seq(8) term(8) vote(8) commit(8) crc(4)
const SLOT_ENCODED_BYTES: usize = 44;

fn encode_slot(seq: u64, hard_state: HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_ENCODED_BYTES);
    out.extend_from_slice(&SLOT_MAGIC);
    out.extend_from_slice(&super::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&hard_state.term.to_le_bytes());
    out.extend_from_slice(&hard_state.vote.0.to_le_bytes());
    out.extend_from_slice(&hard_state.commit.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Slot {
    Valid { seq: u64, hard_state: HardState },
    Empty,
    Invalid(&'static str),
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn decode_slot(buf: &[u8], path: &Path) -> StorageResult<Slot> {
    if buf.iter().all(|byte| *byte == 0) {
        return Ok(Slot::Empty);
    }
    if buf.len() < SLOT_ENCODED_BYTES {
        return Ok(Slot::Invalid("short slot"));
    }
    if buf[..4] != SLOT_MAGIC {
        return Ok(Slot::Invalid("bad magic"));
    }
    let crc = u32::from_le_bytes([buf[40], buf[41], buf[42], buf[43]]);
    if crc32c::crc32c(&buf[..40]) != crc {
        return Ok(Slot::Invalid("checksum mismatch"));
    }
    let version = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if version != super::FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: super::FORMAT_VERSION,
        });
    }
    Ok(Slot::Valid {
        seq: u64_at(buf, 8),
        hard_state: HardState {
            term: u64_at(buf, 16),
            vote: NodeId(u64_at(buf, 24)),
            commit: u64_at(buf, 32),
        },
    })
}

/// Picks the newest valid slot of a hard-state file image: (slot index, seq, state).
fn choose(image: &[u8], path: &Path) -> StorageResult<(usize, u64, HardState)> {
    let mut best: Option<(usize, u64, HardState)> = None;
    let mut problems = Vec::new();
    for index in 0..2 {
        let start = (index as u64 * SLOT_BYTES) as usize;
        let end = (start + SLOT_BYTES as usize).min(image.len());
        let bytes = if start < image.len() { &image[start..end] } else { &[][..] };
        match decode_slot(bytes, path)? {
            Slot::Valid { seq, hard_state } => match best {
                Some((_, best_seq, _)) if best_seq == seq => {
                    return Err(StorageError::corrupt(
                        path,
                        start as u64,
                        "two slots with one sequence number",
                    ));
                }
                Some((_, best_seq, _)) if best_seq > seq => {}
                _ => best = Some((index, seq, hard_state)),
            },
            Slot::Empty => {}
            Slot::Invalid(reason) => problems.push((start, reason)),
        }
    }
    match best {
        Some(best) => Ok(best),
        None => {
            let (offset, reason) = problems.first().copied().unwrap_or((0, "both slots are empty"));
            Err(StorageError::corrupt(
                path,
                offset as u64,
                format!("no valid hard-state slot: {reason}"),
            ))
        }
    }
}

/// Which slot (0 or 1) of a hard-state file image holds the newest valid state, and where it
/// starts: what a fault injector aims at to damage the newest durable state.
pub fn newest_slot_offset(image: &[u8], path: &Path) -> StorageResult<u64> {
    choose(image, path).map(|(index, _, _)| index as u64 * SLOT_BYTES)
}

/// The open hard-state file.
pub struct HardStateFile<F: FileSystem> {
    file: F::File,
    path: PathBuf,
    /// The slot holding the last *synced* state; writes go to the other one.
    durable_slot: usize,
    /// Sequence number of the last write.
    seq: u64,
    /// The last state written (synced or not) and the last synced one.
    written: HardState,
    synced: HardState,
}

impl<F: FileSystem> HardStateFile<F> {
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(HARD_STATE_FILE_NAME)
    }

    /// Creates the file holding `initial`, synced. The caller syncs the directory.
    pub async fn create(fs: &F, dir: &Path, initial: HardState) -> StorageResult<Self> {
        let path = Self::path_in(dir);
        let file = fs
            .open(&path, OpenMode::CreateNew)
            .await
            .map_err(|e| StorageError::io("create", &path, e))?;
        file.set_len(FILE_BYTES).await.map_err(|e| StorageError::io("extend", &path, e))?;
        file.write_all_at(0, encode_slot(1, initial))
            .await
            .map_err(|e| StorageError::io("write", &path, e))?;
        file.sync_all().await.map_err(|e| StorageError::io("sync", &path, e))?;
        Ok(HardStateFile { file, path, durable_slot: 0, seq: 1, written: initial, synced: initial })
    }

    /// Opens the file and reads the newest valid slot. A slot that fails its checksum is
    /// normal after a crash (a torn unsynced write) — but the same bytes must read the same
    /// twice, or a transient read error could make us fall back to an older vote.
    pub async fn open(fs: &F, dir: &Path) -> StorageResult<(Self, HardState)> {
        let path = Self::path_in(dir);
        let file = fs
            .open(&path, OpenMode::ReadWrite)
            .await
            .map_err(|e| StorageError::io("open", &path, e))?;
        let image = file
            .read_at(0, FILE_BYTES as usize)
            .await
            .map_err(|e| StorageError::io("read", &path, e))?;
        let (slot, seq, hard_state) = choose(&image, &path)?;
        let other = 1 - slot;
        let other_range =
            (other as u64 * SLOT_BYTES) as usize..((other as u64 + 1) * SLOT_BYTES) as usize;
        let other_bytes = image.get(other_range.clone()).unwrap_or(&[]);
        if !matches!(decode_slot(other_bytes, &path)?, Slot::Valid { .. } | Slot::Empty) {
            let again = file
                .read_at(0, FILE_BYTES as usize)
                .await
                .map_err(|e| StorageError::io("read", &path, e))?;
            if again != image {
                return Err(StorageError::corrupt(
                    &path,
                    0,
                    "two reads of the hard-state file returned different bytes",
                ));
            }
        }
        if image.len() as u64 != FILE_BYTES {
            file.set_len(FILE_BYTES).await.map_err(|e| StorageError::io("extend", &path, e))?;
        }
        // After a process crash the page cache may hold what the disk does not: make what we
        // are about to rely on durable.
        file.sync_all().await.map_err(|e| StorageError::io("sync", &path, e))?;
        let opened = HardStateFile {
            file,
            path,
            durable_slot: slot,
            seq,
            written: hard_state,
            synced: hard_state,
        };
        Ok((opened, hard_state))
    }

    /// The last state written (possibly not yet synced).
    pub fn written(&self) -> HardState {
        self.written
    }

    /// The last state made durable.
    pub fn synced(&self) -> HardState {
        self.synced
    }

    /// Writes `hard_state` to the slot not holding the last synced state; with `sync`, makes
    /// it durable (and it becomes the slot to keep).
    pub async fn write(&mut self, hard_state: HardState, sync: bool) -> StorageResult<()> {
        self.write_waiting_for_space(hard_state, sync, None).await
    }

    /// `write`, except that a write refused for lack of space waits for room (`space`) and is
    /// tried again: the slot it targets holds nothing durable, so rewriting it is harmless.
    pub async fn write_waiting_for_space(
        &mut self,
        hard_state: HardState,
        sync: bool,
        space: Option<&DiskSpace<F>>,
    ) -> StorageResult<()> {
        let slot = 1 - self.durable_slot;
        self.seq += 1;
        let offset = slot as u64 * SLOT_BYTES;
        loop {
            let written = self.file.write_all_at(offset, encode_slot(self.seq, hard_state)).await;
            let error = match written {
                Ok(()) => break,
                Err(error) => error,
            };
            match space {
                Some(space) if space.wait_after(&error, "hard state", SLOT_BYTES).await => {}
                _ => return Err(StorageError::io("write", &self.path, error)),
            }
        }
        self.written = hard_state;
        if sync {
            self.file.sync_data().await.map_err(|e| StorageError::io("sync", &self.path, e))?;
            self.durable_slot = slot;
            self.synced = hard_state;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem_fs::{MemFs, MemFsConfig};
    use futures::executor::block_on;

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState { term, vote: NodeId(vote), commit }
    }

    fn setup(seed: u64) -> (MemFs, PathBuf) {
        let fs = MemFs::new(seed, MemFsConfig { torn_block_bytes: Some(8), ..Default::default() });
        let dir = PathBuf::from("/d");
        block_on(async {
            fs.create_dir(&dir).await.unwrap();
            fs.sync_dir(Path::new("/")).await.unwrap();
            HardStateFile::create(&fs, &dir, hs(0, 0, 0)).await.unwrap();
            fs.sync_dir(&dir).await.unwrap();
        });
        (fs, dir)
    }

    #[test]
    fn synced_state_survives_and_unsynced_writes_never_regress_it() {
        // Torn writes at 8-byte blocks across many seeds: after a crash we always read either
        // the last synced state or a later written one, never an older one, never an error.
        for seed in 0..200 {
            let (fs, dir) = setup(seed);
            block_on(async {
                let (mut file, _) = HardStateFile::open(&fs, &dir).await.unwrap();
                file.write(hs(1, 2, 0), true).await.unwrap();
                file.write(hs(1, 2, 5), false).await.unwrap();
                file.write(hs(1, 2, 7), false).await.unwrap();
                file.write(hs(2, 3, 7), true).await.unwrap();
                file.write(hs(2, 3, 9), false).await.unwrap();
                if seed % 2 == 0 {
                    file.write(hs(3, 0, 9), false).await.unwrap(); // never synced
                }
            });
            fs.crash();
            let (_, recovered) = block_on(HardStateFile::open(&fs, &dir)).unwrap();
            assert!(
                [hs(2, 3, 7), hs(2, 3, 9), hs(3, 0, 9)].contains(&recovered),
                "seed {seed}: {recovered:?}"
            );
        }
    }

    #[test]
    fn both_slots_damaged_is_an_error_naming_the_file() {
        let (fs, dir) = setup(1);
        let path = dir.join(HARD_STATE_FILE_NAME);
        let mut image = fs.image()[&path].clone();
        image[3] ^= 0xFF;
        image[512] = 7;
        fs.put_durable_file(&path, image);
        let error = block_on(HardStateFile::open(&fs, &dir)).err().unwrap().to_string();
        assert!(error.contains("/d/hard_state") && error.contains("offset 0"), "{error}");
    }

    #[test]
    fn other_version_is_refused() {
        let (fs, dir) = setup(1);
        let path = dir.join(HARD_STATE_FILE_NAME);
        let mut image = fs.image()[&path].clone();
        image[4] = 2;
        let crc = crc32c::crc32c(&image[..40]);
        image[40..44].copy_from_slice(&crc.to_le_bytes());
        fs.put_durable_file(&path, image);
        let error = block_on(HardStateFile::open(&fs, &dir)).err().unwrap();
        assert!(
            matches!(error, StorageError::UnsupportedVersion { found: 2, supported: 1, .. }),
            "{error}"
        );
    }
}
