//! Errors of the storage engine. Every error that concerns data on disk names the file and, when
//! it is about a place inside a file, the byte offset, so that an operator can look at it.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::seams::storage::StorageFailure;

#[derive(Debug, Error)]
pub enum StorageError {
    /// The file system refused an operation (EIO, ENOSPC, permissions...).
    // The message includes the cause; it is deliberately not also a `#[source]`, or error
    // chains (`{:#}`) would print it twice.
    #[error("{operation} {path}: {cause}")]
    Io { operation: &'static str, path: PathBuf, cause: io::Error },
    /// Data on disk failed a check (checksum, framing, sequence). Never repaired silently.
    #[error("corrupt data in {path} at byte offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// A file written by another on-disk format version.
    #[error("{path} has on-disk format version {found}; this build reads only version {supported}")]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },
    /// The files of the data directory do not fit together (a missing segment, a log that does
    /// not reach its snapshot, a missing hard-state file...).
    #[error("inconsistent data directory {path}: {reason}")]
    Inconsistent { path: PathBuf, reason: String },
    /// Something is larger than the configured limit.
    #[error("{what} of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge { what: &'static str, size_bytes: u64, limit_bytes: u64 },
    /// A restore refuses to overwrite an existing data directory.
    #[error("{path} is not empty; restore only into an empty or missing data directory")]
    NotEmpty { path: PathBuf },
    /// An earlier failure (typically a failed sync) made everything after it untrustworthy.
    #[error("storage already failed: {0}")]
    AlreadyFailed(String),
    /// Invalid options.
    #[error("invalid storage options: {0}")]
    InvalidOptions(String),
}

impl StorageError {
    /// Whether the file system refused an operation for lack of space (see `space.rs`).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::Io { cause, .. } if super::fs::is_no_space(cause))
    }

    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io { operation, path: path.into(), cause: source }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        StorageError::Corrupt { path: path.into(), offset, reason: reason.into() }
    }

    pub(crate) fn inconsistent(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        StorageError::Inconsistent { path: path.into(), reason: reason.into() }
    }
}

impl From<StorageError> for StorageFailure {
    fn from(error: StorageError) -> Self {
        StorageFailure(error.to_string())
    }
}

pub type StorageResult<T> = Result<T, StorageError>;
