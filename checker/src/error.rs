//! Why a history was rejected, and where.
//!
//! Bad input is never a verdict: the CLI maps every [`HistoryError`] to exit code 3.

use std::fmt;

use crate::history::{ClientId, Time};

/// Where in the input a problem is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// A 1-based line of a JSON Lines file.
    Line(usize),
    /// An index into the operations given to [`crate::History::new`].
    Op(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Op(index) => write!(f, "operation #{index}"),
        }
    }
}

/// A rejected history: what is wrong and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct HistoryError {
    pub location: Location,
    pub kind: HistoryErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryErrorKind {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// `size_bytes`: how much of the line was read when it was rejected (reading stops there).
    #[error("line is longer than the limit of {limit_bytes} bytes (rejected after {size_bytes})")]
    LineTooLong { size_bytes: usize, limit_bytes: usize },
    #[error("expected a JSON object, one operation per line")]
    NotAnObject,
    #[error("missing field `{0}`")]
    MissingField(String),
    #[error("field `{field}` must be {expected}")]
    WrongType { field: String, expected: &'static str },
    #[error(
        "unknown op kind {0:?} (known: get, put, delete, cas, put_if_absent, txn, range; \
         txn branches: get, put, delete, range)"
    )]
    UnknownOp(String),
    #[error("unknown status {0:?} (known: ok, fail, info)")]
    UnknownStatus(String),
    #[error("unknown compare operator {0:?} (known: equal, not_equal, less, greater)")]
    UnknownCmp(String),
    #[error("a compare needs exactly one of `expected`, `cmp` with `value`, or `exists`")]
    AmbiguousCompare,
    #[error("status \"ok\" needs a `return` time")]
    MissingReturn,
    #[error("returns at {ret}, before its call at {call}")]
    ReturnBeforeCall { call: Time, ret: Time },
    #[error(
        "client {client} has two operations open at once: this one is called at {call} while \
         the one at {other} (call {other_call}, return {}) is still open",
        other_ret.map_or_else(|| "unknown".to_owned(), |ret| ret.to_string())
    )]
    ClientOverlap {
        client: ClientId,
        call: Time,
        other: Location,
        other_call: Time,
        other_ret: Option<Time>,
    },
    #[error("range `limit` must be at least 1 (omit it or use null for no limit)")]
    ZeroLimit,
    #[error("`{field}` has {count} entries, more than the limit of {limit}")]
    TooLarge { field: &'static str, count: usize, limit: usize },
    #[error("more than {limit} operations")]
    TooManyOps { limit: usize },
    #[error("the file is larger than the limit of {limit_bytes} bytes")]
    TooManyBytes { limit_bytes: u64 },
}
