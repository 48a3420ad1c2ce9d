//! One operation as a spilled record: a flag byte, then varints (`varint.rs`) and strings.
//!
//! A single-key operation is written by its parts, its key as an id of the history-wide key
//! list (a partition's keys are few, its values many): about 25 bytes for a typical line of
//! 110. A transaction or a range keeps its JSON line, decoded again when read back: they are
//! rare, and their structure would need a format of its own.

use std::io;

use crate::history::{ClientId, Op, OpIndex, Operation, Status, Time};
use crate::jsonl::decode_line;
use crate::table::{RowKind, SingleKeyOp};
use crate::varint::{self, Cursor, corrupt};

/// Flag byte: the kind in the low three bits, then the status in two, then three flags.
const KIND_BITS: u8 = 0b111;
const STATUS_SHIFT: u8 = 3;
const HAS_RET: u8 = 1 << 5;
/// A cas's or put_if_absent's `success`; a delete's `found` when recorded.
const SUCCESS: u8 = 1 << 6;
const FOUND_RECORDED: u8 = 1 << 7;

const KINDS: [RowKind; 7] = [
    RowKind::Get,
    RowKind::Put,
    RowKind::Delete,
    RowKind::Cas,
    RowKind::PutIfAbsent,
    RowKind::Txn,
    RowKind::Range,
];
const STATUSES: [Status; 3] = [Status::Ok, Status::Fail, Status::Info];

/// What a record holds besides its times and place.
pub(crate) enum Body<'a> {
    Single(SingleKeyOp<'a>),
    /// A transaction or a range, whole.
    Whole(Operation),
}

/// A record read back.
pub(crate) struct OpRecord<'a> {
    /// Its index in the history (non-blank lines counted from 0).
    pub(crate) index: OpIndex,
    /// Its 1-based line in the file.
    pub(crate) line: usize,
    pub(crate) body: Body<'a>,
}

/// Appends the record of `operation`, the `index`th of the history, read from `line` (whose
/// text is `json`); `key` is the id of a single-key operation's key.
pub(crate) fn encode(
    operation: &Operation,
    index: OpIndex,
    line: usize,
    key: Option<u32>,
    json: &str,
    out: &mut Vec<u8>,
) {
    // Each operation has a line of its own, after those of the operations before it.
    assert!(line > index, "line {line} of operation {index}");
    let (kind, value, expected, success, found) = match &operation.op {
        Op::Get { value, .. } => (RowKind::Get, value.as_deref(), None, false, None),
        Op::Put { value, .. } => (RowKind::Put, Some(value.as_str()), None, false, None),
        Op::Delete { found, .. } => (RowKind::Delete, None, None, false, *found),
        Op::Cas { expected, value, success, .. } => {
            (RowKind::Cas, Some(value.as_str()), expected.as_deref(), *success, None)
        }
        Op::PutIfAbsent { value, success, .. } => {
            (RowKind::PutIfAbsent, Some(value.as_str()), None, *success, None)
        }
        Op::Txn(_) => (RowKind::Txn, None, None, false, None),
        Op::Range(_) => (RowKind::Range, None, None, false, None),
    };
    let kind_bits = KINDS.iter().position(|&known| known == kind).unwrap_or(0) as u8;
    let status_bits = STATUSES.iter().position(|&known| known == operation.status).unwrap_or(0);
    let mut flags = kind_bits | (status_bits as u8) << STATUS_SHIFT;
    if operation.ret.is_some() {
        flags |= HAS_RET;
    }
    if success || found == Some(true) {
        flags |= SUCCESS;
    }
    if found.is_some() {
        flags |= FOUND_RECORDED;
    }
    out.push(flags);
    varint::put(out, index as u64);
    varint::put(out, (line - index - 1) as u64);
    varint::put(out, operation.client);
    varint::put(out, operation.call);
    if let Some(ret) = operation.ret {
        assert!(ret >= operation.call, "validated before it is spilled");
        varint::put(out, ret - operation.call);
    }
    match (kind, key) {
        (RowKind::Txn | RowKind::Range, _) => varint::put_str(out, json),
        (_, Some(key)) => {
            varint::put(out, u64::from(key));
            put_optional(out, value);
            put_optional(out, expected);
        }
        (_, None) => unreachable!("a single-key operation is spilled with its key's id"),
    }
}

fn put_optional(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => varint::put(out, 0),
        Some(text) => {
            varint::put(out, text.len() as u64 + 1);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

fn optional<'a>(cursor: &mut Cursor<'a>) -> io::Result<Option<&'a str>> {
    match cursor.usize()? {
        0 => Ok(None),
        len => {
            let bytes = cursor.take(len - 1)?;
            std::str::from_utf8(bytes).map(Some).map_err(|_| corrupt("invalid UTF-8"))
        }
    }
}

/// Reads a record; `key_of` names the key of a single-key operation by its id.
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    key_of: impl Fn(u32) -> Option<&'a str>,
) -> io::Result<OpRecord<'a>> {
    let mut cursor = Cursor::new(bytes);
    let flags = cursor.byte()?;
    let kind = *KINDS.get(usize::from(flags & KIND_BITS)).ok_or_else(|| corrupt("kind"))?;
    let status = *STATUSES
        .get(usize::from((flags >> STATUS_SHIFT) & 0b11))
        .ok_or_else(|| corrupt("status"))?;
    let index = cursor.usize()?;
    let line = index
        .checked_add(cursor.usize()?)
        .and_then(|line| line.checked_add(1))
        .ok_or_else(|| corrupt("line"))?;
    let client: ClientId = cursor.u64()?;
    let call: Time = cursor.u64()?;
    let ret = match flags & HAS_RET {
        0 => None,
        _ => Some(call.checked_add(cursor.u64()?).ok_or_else(|| corrupt("return"))?),
    };
    let body = match kind {
        RowKind::Txn | RowKind::Range => {
            let json = cursor.str()?;
            let operation = decode_line(json)
                .map_err(|error| corrupt(&format!("its line no longer decodes: {error}")))?;
            Body::Whole(operation)
        }
        _ => {
            let key = key_of(cursor.u32()?).ok_or_else(|| corrupt("no such key"))?;
            let value = optional(&mut cursor)?;
            let expected = optional(&mut cursor)?;
            let found = (flags & FOUND_RECORDED != 0).then_some(flags & SUCCESS != 0);
            let success = flags & SUCCESS != 0 && found.is_none();
            Body::Single(SingleKeyOp {
                client,
                call,
                ret,
                status,
                kind,
                key,
                value,
                expected,
                success,
                found,
            })
        }
    };
    if !cursor.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(OpRecord { index, line, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Range, Txn};
    use crate::table::Table;

    #[test]
    fn records_rebuild_their_operations() {
        let ops = vec![
            Operation::ok(1, 0, 3, Op::put("k", "v1")),
            Operation::ok(2, 1, 4, Op::get("k", None)),
            Operation::ok(3, 2, 5, Op::cas("k", Some("v1"), "v2", true)),
            Operation::info(4, 6, Op::cas("k", None, "", false)),
            Operation::ok(1, 7, 8, Op::Delete { key: "k".into(), found: Some(false) }),
            Operation::ok(1, 9, 9, Op::Delete { key: "k".into(), found: None }),
            Operation::ok(
                2,
                u64::MAX - 1,
                u64::MAX,
                Op::PutIfAbsent { key: "k".into(), value: "ü".into(), success: true },
            ),
            Operation::ok(
                5,
                10,
                11,
                Op::Txn(Txn { compare: vec![], success: vec![], failure: vec![], succeeded: true }),
            ),
            Operation::info(
                6,
                10,
                Op::Range(Range {
                    prefix: "k".into(),
                    start_after: None,
                    limit: Some(2),
                    kvs: vec![],
                    more: None,
                }),
            ),
        ];
        let keys = ["k"];
        let mut rebuilt = Table::new();
        for (index, operation) in ops.iter().enumerate() {
            let json = serde_json::to_string(operation).expect("serializes");
            let line = 2 * index + 1;
            let mut bytes = Vec::new();
            encode(operation, index, line, operation.op.key().map(|_| 0), &json, &mut bytes);
            let record = decode(&bytes, |id| keys.get(id as usize).copied()).expect("decodes");
            assert_eq!((record.index, record.line), (index, line));
            match record.body {
                Body::Single(single) => rebuilt.push_single_key(&single),
                Body::Whole(whole) => rebuilt.push(&whole),
            }
            assert_eq!(&*rebuilt.operation(index), operation);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut], |_| Some("k")).is_err(), "cut at {cut}");
            }
            assert!(decode(&bytes, |_| None).is_err() || operation.op.key().is_none());
        }
    }
}
