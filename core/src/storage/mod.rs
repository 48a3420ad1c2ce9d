//! The storage engine: a segmented write-ahead log, the hard state, snapshot files, recovery and
//! backups, all over the [`fs::FileSystem`] seam so that the same code runs on the real disk
//! (`node/`) and on the simulated one (`sim/`).
//!
//! A data directory holds:
//!
//! ```text
//! 00000000000000000007.wal              log segments, numbered without gaps (segment.rs, wal.rs)
//! 00000000000000000008.wal              the last one is the one being appended to
//! hard_state                            term, vote, commit in two checksummed slots (hard_state.rs)
//! snapshot-00000000000000012345.snap    the newest snapshot (snapshot_file.rs); during a
//!                                       snapshot save also the previous one and a `.snap.tmp`
//! space-probe.tmp                       only while the disk is full (space.rs)
//! ```
//!
//! Entry points: [`WalStorage::open`] recovers (or creates) a directory and returns the
//! storage handle and what the node restarts from ([`Recovered`]); [`WalStorage::writer`] is the
//! future that does the I/O (group commit); [`WalStorage::backup_to`] and
//! [`backup::restore_backup`] make and restore backups.
//!
//! A node hosting many Raft groups opens a [`SharedLog`] instead: one log for all its groups
//! (one sync per group commit, whatever the number of groups), with each group's hard state
//! and snapshots in a `shard-N/` directory beside the segments, and one [`GroupStorage`] handle
//! per group (`shared_log.rs` says why and what it costs).
//!
//! Every file starts with a magic number and [`FORMAT_VERSION`]; every record and file is
//! checksummed with CRC32C. What recovery repairs and what it refuses is in `recovery.rs`.

pub mod backup;
pub mod error;
pub mod fs;
pub mod group_storage;
pub mod hard_state;
pub mod log_terms;
mod log_writer;
pub mod mem_fs;
pub mod record;
pub mod recovery;
pub mod removal;
pub mod segment;
pub mod sharded_backup;
pub mod shared_log;
pub mod snapshot_file;
pub mod space;
pub mod wal;
pub mod wal_storage;

pub use error::{StorageError, StorageResult};
pub use group_storage::GroupStorage;
pub use shared_log::SharedLog;
pub use wal_storage::{Recovered, WalOptions, WalStorage};

/// The on-disk format version, in every file's header. Recovery refuses any other version.
pub const FORMAT_VERSION: u32 = 1;
