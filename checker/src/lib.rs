//! History format and linearizability checker for Conclave.
//!
//! - [`History`], [`Operation`], [`Op`]: the JSON Lines history format (base format of
//!   `../shared/histories/README.md` plus the KV extensions documented in this crate's README),
//!   read with [`parse_jsonl`] and written with [`write_jsonl`].
//! - [`check`]: is the history linearizable against the KV model? Exact (a search with
//!   memoization, per independent partition of keys), bounded by a deterministic step budget,
//!   and explained: a violation comes with the failing keys and a minimal failing set of
//!   operations.
//! - [`render_timeline_html`]: a self-contained HTML timeline of a report.
//! - [`cli`]: the `check` verb, so that `conclave check` is a thin wrapper.
//! - [`spec`]: the same model as a stateright `SequentialSpec`.

mod budget;
mod cache;
mod check;
pub mod cli;
mod earliest_ops;
mod error;
mod explain;
mod fast_hash;
pub mod generate;
mod grouped_spill;
mod history;
mod interner;
mod jsonl;
mod key_joins;
pub mod limits;
mod linset;
mod minimize;
mod model;
mod op_record;
mod partition;
mod partition_source;
mod reader;
mod search;
pub mod spec;
mod spill_dir;
mod spilled_partitions;
mod table;
mod timeline_html;
mod union_find;
mod unique_values;
mod varint;

pub use budget::BudgetKind;
pub use check::{
    CheckOptions, CheckReport, FastPath, PartitionOutcome, PartitionReport, Unknown, Verdict,
    Violation, check,
};
pub use error::{HistoryError, HistoryErrorKind, Location};
pub use explain::{describe_indexed, describe_op, summarize};
pub use history::{
    ClientId, CmpOp, Compare, History, KeyValue, Op, OpIndex, Operation, Range, Status, Time, Txn,
    TxnOp,
};
pub use jsonl::{parse_jsonl, to_jsonl_string, write_jsonl};
pub use reader::{ReadError, read_history as read_jsonl};
pub use timeline_html::render_timeline_html;
