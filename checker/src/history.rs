//! The history model: what a client asked, when, and what it observed.
//!
//! The types mirror the JSON Lines format (`../shared/histories/README.md` plus the extensions in
//! this crate's README) one to one, so the simulator can build operations directly and any
//! outside tool can read what it writes. A [`History`] can only be built through validation
//! ([`History::new`] or [`crate::parse_jsonl`]), so the checker never sees a malformed one.

use std::fmt;

use crate::error::{HistoryError, HistoryErrorKind, Location};
use crate::limits;

/// Identifies the client (process) that issued an operation.
pub type ClientId = u64;

/// A point in time, in whatever unit the history uses (the same for the whole history).
pub type Time = u64;

/// Index of an operation in [`History::ops`].
pub type OpIndex = usize;

/// How an operation ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Completed as described; its outputs are what the client observed.
    Ok,
    /// Definitely did not take effect. The checker ignores it.
    Fail,
    /// Unknown: it may have taken effect once, at any time after its call, or never. Its outputs
    /// (read values, `success` flags) are unknown and ignored.
    Info,
}

impl Status {
    /// The spelling in the JSON format.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Info => "info",
        }
    }
}

/// A key and a value, as returned by a range read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// A range read: keys starting with `prefix` (and after `start_after` when given), in ascending
/// byte order, at most `limit` of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Range {
    pub prefix: String,
    /// Pagination: only keys strictly greater than this one.
    pub start_after: Option<String>,
    /// At most this many pairs; `None`: no limit. Never zero (validated).
    pub limit: Option<u64>,
    /// Output: the pairs returned, in the order returned.
    pub kvs: Vec<KeyValue>,
    /// Output, optional: whether the server said more matching keys follow the last one
    /// returned. `None`: not recorded, not checked.
    pub more: Option<bool>,
}

/// One condition of a transaction, evaluated against the key's current value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Compare {
    /// The key holds exactly `expected`; `None`: the key is absent.
    Equals { key: String, expected: Option<String> },
    /// The key exists and its value compares to `value` by `cmp` (byte-wise). An absent key
    /// makes every such compare false, as in etcd.
    Value { key: String, cmp: CmpOp, value: String },
    /// The key's presence equals `exists`.
    Exists { key: String, exists: bool },
}

impl Compare {
    pub fn key(&self) -> &str {
        match self {
            Compare::Equals { key, .. }
            | Compare::Value { key, .. }
            | Compare::Exists { key, .. } => key,
        }
    }
}

/// `current <cmp> given`, byte-wise.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Equal => "equal",
            CmpOp::NotEqual => "not_equal",
            CmpOp::Less => "less",
            CmpOp::Greater => "greater",
        }
    }

    pub fn accepts(self, ordering: std::cmp::Ordering) -> bool {
        match self {
            CmpOp::Equal => ordering.is_eq(),
            CmpOp::NotEqual => ordering.is_ne(),
            CmpOp::Less => ordering.is_lt(),
            CmpOp::Greater => ordering.is_gt(),
        }
    }
}

/// One operation of a transaction branch. Outputs (`value` of a get, the range result) are
/// meaningful only in the branch that ran, and only when the transaction's status is `ok`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TxnOp {
    Get { key: String, value: Option<String> },
    Put { key: String, value: String },
    Delete { key: String },
    Range(Range),
}

/// An etcd-style transaction: if every compare holds, the `success` branch runs, otherwise the
/// `failure` branch; the branch's operations run in order (a later get sees an earlier put of
/// the same transaction), atomically.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
    /// Output: whether the compares held (so the `success` branch ran).
    pub succeeded: bool,
}

/// What an operation did and, for `ok` operations, what it observed.
///
/// Output fields are marked "output"; they are meaningful only when the status is
/// [`Status::Ok`], are ignored otherwise, and are not written for other statuses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Output `value`: the value read; `None`: the key was absent.
    Get {
        key: String,
        value: Option<String>,
    },
    Put {
        key: String,
        value: String,
    },
    /// Output `found`, optional: whether the key existed (HTTP 200 versus 404). `None`: not
    /// recorded, not checked.
    Delete {
        key: String,
        found: Option<bool>,
    },
    /// Writes `value` if the key holds `expected` (`None`: if the key is absent).
    /// Output `success`: whether the swap happened.
    Cas {
        key: String,
        expected: Option<String>,
        value: String,
        success: bool,
    },
    /// Create-only put. Output `success`: whether the key was absent and is now created.
    PutIfAbsent {
        key: String,
        value: String,
        success: bool,
    },
    Txn(Txn),
    Range(Range),
}

impl Op {
    /// The spelling of the kind in the JSON format.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Get { .. } => "get",
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Cas { .. } => "cas",
            Op::PutIfAbsent { .. } => "put_if_absent",
            Op::Txn(_) => "txn",
            Op::Range(_) => "range",
        }
    }

    /// The single key of a single-key operation; `None` for `txn` and `range`.
    pub fn key(&self) -> Option<&str> {
        match self {
            Op::Get { key, .. }
            | Op::Put { key, .. }
            | Op::Delete { key, .. }
            | Op::Cas { key, .. }
            | Op::PutIfAbsent { key, .. } => Some(key),
            Op::Txn(_) | Op::Range(_) => None,
        }
    }

    pub fn get(key: impl Into<String>, value: Option<&str>) -> Op {
        Op::Get { key: key.into(), value: value.map(str::to_owned) }
    }

    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Op {
        Op::Put { key: key.into(), value: value.into() }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into(), found: None }
    }

    pub fn cas(
        key: impl Into<String>,
        expected: Option<&str>,
        value: impl Into<String>,
        success: bool,
    ) -> Op {
        Op::Cas {
            key: key.into(),
            expected: expected.map(str::to_owned),
            value: value.into(),
            success,
        }
    }
}

/// One client operation: the unit of a history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    pub client: ClientId,
    /// Invocation time.
    pub call: Time,
    /// Completion time (JSON field `return`); `None` when the client never learned the outcome.
    /// Required for [`Status::Ok`]. For [`Status::Info`] it only says when the client stopped
    /// waiting: the operation may still take effect at any later time.
    pub ret: Option<Time>,
    pub status: Status,
    pub op: Op,
}

impl Operation {
    /// A completed operation whose outputs in `op` are what the client observed.
    pub fn ok(client: ClientId, call: Time, ret: Time, op: Op) -> Operation {
        Operation { client, call, ret: Some(ret), status: Status::Ok, op }
    }

    /// An operation whose outcome is unknown (a timeout, a lost connection).
    pub fn info(client: ClientId, call: Time, op: Op) -> Operation {
        Operation { client, call, ret: None, status: Status::Info, op }
    }

    /// An operation that definitely did not take effect.
    pub fn fail(client: ClientId, call: Time, ret: Time, op: Op) -> Operation {
        Operation { client, call, ret: Some(ret), status: Status::Fail, op }
    }
}

impl fmt::Display for Operation {
    /// A one-line human rendering, e.g. `client 3 cas r "1"->"2" success [10, 14] ok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} {} ",
            self.client,
            crate::explain::describe_op(&self.op, self.status)
        )?;
        match self.ret {
            Some(ret) => write!(f, "[{}, {}]", self.call, ret)?,
            None => write!(f, "[{}, ?]", self.call)?,
        }
        write!(f, " {}", self.status.as_str())
    }
}

/// A validated history: every operation well formed, no client with two operations open at
/// once, no return before its call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Operation>,
    /// 1-based source line of each operation when parsed from JSON Lines; empty otherwise.
    source_lines: Vec<usize>,
}

impl History {
    /// Validates operations built in code (the simulator's path). Errors name the operation's
    /// index in `ops`.
    pub fn new(ops: Vec<Operation>) -> Result<History, HistoryError> {
        History::from_parts(ops, Vec::new())
    }

    /// `source_lines` is empty, or holds the 1-based line of each operation.
    pub(crate) fn from_parts(
        ops: Vec<Operation>,
        source_lines: Vec<usize>,
    ) -> Result<History, HistoryError> {
        assert!(source_lines.is_empty() || source_lines.len() == ops.len());
        let history = History { ops, source_lines };
        if history.ops.len() > limits::HISTORY_OPS_MAX {
            return Err(HistoryError {
                location: history.location(limits::HISTORY_OPS_MAX),
                kind: HistoryErrorKind::TooManyOps { limit: limits::HISTORY_OPS_MAX },
            });
        }
        for (index, operation) in history.ops.iter().enumerate() {
            validate_operation(operation)
                .map_err(|kind| HistoryError { location: history.location(index), kind })?;
        }
        history.validate_clients()?;
        Ok(history)
    }

    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn into_ops(self) -> Vec<Operation> {
        self.ops
    }

    /// The 1-based line an operation came from, when the history was parsed from a file.
    pub fn source_line(&self, index: OpIndex) -> Option<usize> {
        self.source_lines.get(index).copied()
    }

    /// Where an operation came from, for messages: its line, or its index.
    pub fn location(&self, index: OpIndex) -> Location {
        match self.source_line(index) {
            Some(line) => Location::Line(line),
            None => Location::Op(index),
        }
    }

    /// See [`validate_clients`].
    fn validate_clients(&self) -> Result<(), HistoryError> {
        validate_clients(
            self.ops.len(),
            |index| {
                let operation = &self.ops[index];
                (operation.client, operation.call, operation.ret)
            },
            |index| self.location(index),
        )
    }
}

/// A client is sequential: each of its operations must end before its next one starts.
/// `operation(index)` gives the client, call and return of operation `index` of `count`.
///
/// An operation without a return time (an `info` whose client gave up) does not block the
/// client's next operation: the client stopped waiting at some unknown point before it.
/// A return equal to the next call is accepted, because coarse clocks (the simulator's
/// millisecond ticks) make it common; the checker then treats the two as concurrent, which
/// can only hide an anomaly confined to that instant, never invent one.
pub(crate) fn validate_clients(
    count: usize,
    operation: impl Fn(usize) -> (ClientId, Time, Option<Time>),
    location: impl Fn(usize) -> Location,
) -> Result<(), HistoryError> {
    assert!(count <= limits::HISTORY_OPS_MAX, "bounded before");
    // By client, then call; ties fall back to file order so that the error names the later
    // line. `u32` indexes: ten million operations fit, in half the memory.
    let mut order: Vec<u32> = (0..count as u32).collect();
    order.sort_unstable_by_key(|&index| {
        let (client, call, _) = operation(index as usize);
        (client, call, index)
    });
    for pair in order.windows(2) {
        let (earlier, later) = (pair[0] as usize, pair[1] as usize);
        let (client, earlier_call, earlier_ret) = operation(earlier);
        let (later_client, later_call, _) = operation(later);
        if client != later_client {
            continue;
        }
        let still_open = match earlier_ret {
            _ if earlier_call == later_call => true,
            Some(ret) => ret > later_call,
            None => false,
        };
        if still_open {
            return Err(HistoryError {
                location: location(later),
                kind: HistoryErrorKind::ClientOverlap {
                    client: later_client,
                    call: later_call,
                    other: location(earlier),
                    other_call: earlier_call,
                    other_ret: earlier_ret,
                },
            });
        }
    }
    Ok(())
}

impl TryFrom<Vec<Operation>> for History {
    type Error = HistoryError;

    fn try_from(ops: Vec<Operation>) -> Result<History, HistoryError> {
        History::new(ops)
    }
}

/// Checks one operation on its own: times, required outputs, sizes.
pub(crate) fn validate_operation(operation: &Operation) -> Result<(), HistoryErrorKind> {
    match (operation.status, operation.ret) {
        (Status::Ok, None) => return Err(HistoryErrorKind::MissingReturn),
        (_, Some(ret)) if ret < operation.call => {
            return Err(HistoryErrorKind::ReturnBeforeCall { call: operation.call, ret });
        }
        _ => {}
    }
    match &operation.op {
        Op::Txn(txn) => {
            check_size("compare", txn.compare.len(), limits::TXN_COMPARES_MAX)?;
            check_size("success", txn.success.len(), limits::TXN_OPS_MAX)?;
            check_size("failure", txn.failure.len(), limits::TXN_OPS_MAX)?;
            for sub in txn.success.iter().chain(&txn.failure) {
                if let TxnOp::Range(range) = sub {
                    validate_range(range)?;
                }
            }
        }
        Op::Range(range) => validate_range(range)?,
        Op::Get { .. }
        | Op::Put { .. }
        | Op::Delete { .. }
        | Op::Cas { .. }
        | Op::PutIfAbsent { .. } => {}
    }
    Ok(())
}

fn validate_range(range: &Range) -> Result<(), HistoryErrorKind> {
    if range.limit == Some(0) {
        return Err(HistoryErrorKind::ZeroLimit);
    }
    check_size("kvs", range.kvs.len(), limits::RANGE_KVS_MAX)
}

fn check_size(field: &'static str, count: usize, limit: usize) -> Result<(), HistoryErrorKind> {
    if count > limit {
        return Err(HistoryErrorKind::TooLarge { field, count, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_without_return_is_rejected() {
        let op =
            Operation { client: 1, call: 5, ret: None, status: Status::Ok, op: Op::delete("k") };
        let error = History::new(vec![op]).unwrap_err();
        assert_eq!(error.location, Location::Op(0));
        assert_eq!(error.kind, HistoryErrorKind::MissingReturn);
    }

    #[test]
    fn return_before_call_is_rejected() {
        let error = History::new(vec![Operation::ok(1, 9, 3, Op::put("k", "v"))]).unwrap_err();
        assert_eq!(error.kind, HistoryErrorKind::ReturnBeforeCall { call: 9, ret: 3 });
    }

    #[test]
    fn overlapping_operations_of_one_client_are_rejected() {
        let ops = vec![
            Operation::ok(7, 0, 10, Op::put("k", "1")),
            Operation::ok(8, 1, 2, Op::get("k", None)),
            Operation::ok(7, 5, 12, Op::get("k", Some("1"))),
        ];
        let error = History::new(ops).unwrap_err();
        assert_eq!(error.location, Location::Op(2));
        assert!(matches!(
            error.kind,
            HistoryErrorKind::ClientOverlap { client: 7, other: Location::Op(0), .. }
        ));
    }

    #[test]
    fn same_call_time_twice_for_one_client_is_rejected() {
        let ops = vec![
            Operation::info(3, 4, Op::put("k", "1")),
            Operation::info(3, 4, Op::put("k", "2")),
        ];
        assert!(History::new(ops).is_err());
    }

    #[test]
    fn client_may_move_on_after_giving_up_and_after_a_touching_return() {
        let ops = vec![
            Operation::info(3, 0, Op::get("k", None)),
            Operation::ok(3, 5, 9, Op::put("k", "1")),
            Operation::ok(3, 9, 11, Op::get("k", Some("1"))),
        ];
        assert_eq!(History::new(ops).unwrap().len(), 3);
    }

    #[test]
    fn zero_range_limit_is_rejected() {
        let range = Range {
            prefix: "a".into(),
            start_after: None,
            limit: Some(0),
            kvs: vec![],
            more: None,
        };
        let error = History::new(vec![Operation::ok(1, 0, 1, Op::Range(range))]).unwrap_err();
        assert_eq!(error.kind, HistoryErrorKind::ZeroLimit);
    }
}
