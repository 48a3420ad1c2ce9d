//! Change events: what an apply did to the key space, for the node to feed its watchers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Why a key changed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvEventKind {
    Put,
    /// Removed by `Delete`, `Clear` or a transaction.
    Delete,
    /// Removed because its TTL ran out (state-machine time).
    Expire,
}

/// One key's change. Events of one apply are in the order the changes happened; expiries
/// (which happen first, at their own revision) come before the request's own changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    pub key: String,
    pub kind: KvEventKind,
    /// For `Put` the new value; for `Delete` and `Expire` the value the key had.
    pub value: Bytes,
    /// The store revision of the change.
    pub mod_revision: u64,
}

impl KvEvent {
    /// A put of `value` to `key` at `mod_revision`.
    pub fn put(key: impl Into<String>, value: Bytes, mod_revision: u64) -> Self {
        KvEvent { key: key.into(), kind: KvEventKind::Put, value, mod_revision }
    }
}
