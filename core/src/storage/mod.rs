//! The storage engine: a segmented write-ahead log, the hard state, snapshot files, recovery and
//! backups, all over the [`fs::FileSystem`] seam so that the same code runs on the real disk
//! (`node/`) and on the simulated one (`sim/`).

pub mod backup;
pub mod error;
pub mod fs;
pub mod hard_state;
pub mod log_terms;
pub mod mem_fs;
pub mod record;
pub mod recovery;

pub use error::{StorageError, StorageResult};
pub mod segment;
pub mod snapshot_file;
pub mod wal;
pub mod wal_storage;

/// The on-disk format version, in every file's header. Recovery refuses any other version.
pub const FORMAT_VERSION: u32 = 1;

pub use wal_storage::{Recovered, WalOptions, WalStorage};
