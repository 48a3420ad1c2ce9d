//! The storage engine: a segmented write-ahead log, the hard state, snapshot files, recovery and
//! backups, all over the [`fs::FileSystem`] seam so that the same code runs on the real disk
//! (`node/`) and on the simulated one (`sim/`).

pub mod error;
pub mod fs;
pub mod mem_fs;
pub mod record;

pub use error::{StorageError, StorageResult};
