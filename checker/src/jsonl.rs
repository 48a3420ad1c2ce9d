//! Reading and writing histories as JSON Lines (one operation per line).
//!
//! Decoding is done by hand from a `serde_json::Value` rather than by a derived `Deserialize`,
//! because the format is flat (the fields present depend on `op` and `status`) and because a
//! person fixing a file needs to be told exactly which field of which line is wrong.
//! Unknown fields are ignored, so that files written by other tools (which often add an index
//! or a wall-clock time) can still be read.

use std::borrow::Cow;
use std::io;

use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::error::{HistoryError, HistoryErrorKind};
use crate::history::{CmpOp, Compare, History, KeyValue, Op, Operation, Range, Status, Txn, TxnOp};
use crate::limits;
use crate::reader::{ReadError, read_history};

/// Parses a JSON Lines history. Blank lines are skipped; line numbers in errors are 1-based
/// lines of `text`. (`read_jsonl` reads from any `BufRead`, line by line.)
pub fn parse_jsonl(text: &str) -> Result<History, HistoryError> {
    match read_history(text.as_bytes()) {
        Ok(history) => Ok(history),
        Err(ReadError::History(error)) => Err(error),
        Err(ReadError::Io(error)) => unreachable!("reading a &[u8] cannot fail: {error}"),
    }
}

/// Writes a history as JSON Lines, one operation per line, in the history's order.
pub fn write_jsonl(history: &History, out: &mut impl io::Write) -> io::Result<()> {
    for operation in history.ops() {
        serde_json::to_writer(&mut *out, operation)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// [`write_jsonl`] into a `String`.
pub fn to_jsonl_string(history: &History) -> String {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail, and serde_json emits UTF-8 only.
    if write_jsonl(history, &mut bytes).is_err() {
        unreachable!("writing JSON into a Vec<u8> cannot fail");
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

impl serde::Serialize for Operation {
    /// The flat JSON Lines object, fields in a fixed, readable order; outputs only when `ok`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let outputs = self.status == Status::Ok;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("client", &self.client)?;
        map.serialize_entry("op", self.op.kind())?;
        match &self.op {
            Op::Get { key, value } => {
                map.serialize_entry("key", key)?;
                if outputs {
                    map.serialize_entry("value", value)?;
                }
            }
            Op::Put { key, value } => {
                map.serialize_entry("key", key)?;
                map.serialize_entry("value", value)?;
            }
            Op::Delete { key, found } => {
                map.serialize_entry("key", key)?;
                if let (true, Some(found)) = (outputs, found) {
                    map.serialize_entry("found", found)?;
                }
            }
            Op::Cas { key, expected, value, success } => {
                map.serialize_entry("key", key)?;
                map.serialize_entry("expected", expected)?;
                map.serialize_entry("value", value)?;
                if outputs {
                    map.serialize_entry("success", success)?;
                }
            }
            Op::PutIfAbsent { key, value, success } => {
                map.serialize_entry("key", key)?;
                map.serialize_entry("value", value)?;
                if outputs {
                    map.serialize_entry("success", success)?;
                }
            }
            Op::Txn(txn) => {
                let compare: Vec<Value> = txn.compare.iter().map(encode_compare).collect();
                map.serialize_entry("compare", &compare)?;
                let success: Vec<Value> = txn
                    .success
                    .iter()
                    .map(|sub| encode_txn_op(sub, outputs && txn.succeeded))
                    .collect();
                map.serialize_entry("success", &success)?;
                let failure: Vec<Value> = txn
                    .failure
                    .iter()
                    .map(|sub| encode_txn_op(sub, outputs && !txn.succeeded))
                    .collect();
                map.serialize_entry("failure", &failure)?;
                if outputs {
                    map.serialize_entry("succeeded", &txn.succeeded)?;
                }
            }
            Op::Range(range) => {
                for (field, value) in encode_range_fields(range, outputs) {
                    map.serialize_entry(field, &value)?;
                }
            }
        }
        map.serialize_entry("call", &self.call)?;
        if let Some(ret) = self.ret {
            map.serialize_entry("return", &ret)?;
        }
        map.serialize_entry("status", self.status.as_str())?;
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Operation {
    /// Accepts exactly what [`parse_jsonl`] accepts on one line (without the history-wide
    /// checks, which need the other operations).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        decode_operation(&value).map_err(serde::de::Error::custom)
    }
}

fn encode_compare(compare: &Compare) -> Value {
    let mut object = Map::new();
    object.insert("key".into(), Value::from(compare.key()));
    match compare {
        Compare::Equals { expected, .. } => {
            object.insert("expected".into(), expected.clone().map_or(Value::Null, Value::from));
        }
        Compare::Value { cmp, value, .. } => {
            object.insert("cmp".into(), Value::from(cmp.as_str()));
            object.insert("value".into(), Value::from(value.as_str()));
        }
        Compare::Exists { exists, .. } => {
            object.insert("exists".into(), Value::from(*exists));
        }
    }
    Value::Object(object)
}

fn encode_txn_op(sub: &TxnOp, outputs: bool) -> Value {
    let mut object = Map::new();
    match sub {
        TxnOp::Get { key, value } => {
            object.insert("op".into(), Value::from("get"));
            object.insert("key".into(), Value::from(key.as_str()));
            if outputs {
                object.insert("value".into(), value.clone().map_or(Value::Null, Value::from));
            }
        }
        TxnOp::Put { key, value } => {
            object.insert("op".into(), Value::from("put"));
            object.insert("key".into(), Value::from(key.as_str()));
            object.insert("value".into(), Value::from(value.as_str()));
        }
        TxnOp::Delete { key } => {
            object.insert("op".into(), Value::from("delete"));
            object.insert("key".into(), Value::from(key.as_str()));
        }
        TxnOp::Range(range) => {
            object.insert("op".into(), Value::from("range"));
            for (field, value) in encode_range_fields(range, outputs) {
                object.insert(field.into(), value);
            }
        }
    }
    Value::Object(object)
}

fn encode_range_fields(range: &Range, outputs: bool) -> Vec<(&'static str, Value)> {
    let mut fields = vec![("prefix", Value::from(range.prefix.as_str()))];
    if let Some(start_after) = &range.start_after {
        fields.push(("start_after", Value::from(start_after.as_str())));
    }
    if let Some(limit) = range.limit {
        fields.push(("limit", Value::from(limit)));
    }
    if outputs {
        let kvs = range
            .kvs
            .iter()
            .map(|kv| {
                let mut pair = Map::new();
                pair.insert("key".into(), Value::from(kv.key.as_str()));
                pair.insert("value".into(), Value::from(kv.value.as_str()));
                Value::Object(pair)
            })
            .collect();
        fields.push(("kvs", Value::Array(kvs)));
        if let Some(more) = range.more {
            fields.push(("more", Value::from(more)));
        }
    }
    fields
}

/// Reads fields of one JSON object, naming nested fields by path (`success[2].key`).
struct Fields<'a> {
    object: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, path: String) -> Result<Fields<'a>, HistoryErrorKind> {
        match value {
            Value::Object(object) => Ok(Fields { object, path }),
            _ if path.is_empty() => Err(HistoryErrorKind::NotAnObject),
            _ => Err(HistoryErrorKind::WrongType { field: path, expected: "an object" }),
        }
    }

    fn name(&self, field: &str) -> String {
        if self.path.is_empty() { field.to_owned() } else { format!("{}.{field}", self.path) }
    }

    fn wrong(&self, field: &str, expected: &'static str) -> HistoryErrorKind {
        HistoryErrorKind::WrongType { field: self.name(field), expected }
    }

    /// `None` for an absent field; JSON `null` is returned as `Some(Value::Null)`.
    fn raw(&self, field: &str) -> Option<&'a Value> {
        self.object.get(field)
    }

    fn required(&self, field: &str) -> Result<&'a Value, HistoryErrorKind> {
        self.raw(field).ok_or_else(|| HistoryErrorKind::MissingField(self.name(field)))
    }

    fn string(&self, field: &str) -> Result<String, HistoryErrorKind> {
        match self.required(field)? {
            Value::String(text) => Ok(text.clone()),
            _ => Err(self.wrong(field, "a string")),
        }
    }

    /// A required field that is a string or `null`.
    fn nullable_string(&self, field: &str) -> Result<Option<String>, HistoryErrorKind> {
        match self.required(field)? {
            Value::String(text) => Ok(Some(text.clone())),
            Value::Null => Ok(None),
            _ => Err(self.wrong(field, "a string or null")),
        }
    }

    /// An optional field that is a string or `null` (both absence and `null` give `None`).
    fn optional_string(&self, field: &str) -> Result<Option<String>, HistoryErrorKind> {
        match self.raw(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(self.wrong(field, "a string or null")),
        }
    }

    fn integer(&self, field: &str) -> Result<u64, HistoryErrorKind> {
        self.required(field)?.as_u64().ok_or_else(|| self.wrong(field, "a non-negative integer"))
    }

    fn optional_integer(&self, field: &str) -> Result<Option<u64>, HistoryErrorKind> {
        match self.raw(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => {
                value.as_u64().map(Some).ok_or_else(|| self.wrong(field, "a non-negative integer"))
            }
        }
    }

    fn boolean(&self, field: &str) -> Result<bool, HistoryErrorKind> {
        self.required(field)?.as_bool().ok_or_else(|| self.wrong(field, "true or false"))
    }

    fn optional_boolean(&self, field: &str) -> Result<Option<bool>, HistoryErrorKind> {
        match self.raw(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => {
                value.as_bool().map(Some).ok_or_else(|| self.wrong(field, "true or false"))
            }
        }
    }

    /// An array field; absent counts as empty when `required` is false.
    fn array(&self, field: &str, required: bool) -> Result<&'a [Value], HistoryErrorKind> {
        match self.raw(field) {
            None if !required => Ok(&[]),
            None => Err(HistoryErrorKind::MissingField(self.name(field))),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.wrong(field, "an array")),
        }
    }
}

/// Decodes one line. The common lines (the base kinds, well formed) take a typed decode that
/// borrows the line's strings; anything else — transactions, ranges, and every malformed line,
/// whose error must name the field — goes through [`decode_operation`], so that one decoder
/// decides what is accepted and says what is wrong.
pub(crate) fn decode_line(line: &str) -> Result<Operation, HistoryErrorKind> {
    if let Some(operation) = decode_flat(line) {
        return Ok(operation);
    }
    let value: Value = serde_json::from_str(line)
        .map_err(|error| HistoryErrorKind::MalformedJson(error.to_string()))?;
    decode_operation(&value)
}

/// The fields of a line of a base kind, as they appear.
#[derive(serde::Deserialize)]
struct FlatLine<'a> {
    client: u64,
    call: u64,
    #[serde(rename = "return")]
    ret: Option<u64>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    key: Option<Cow<'a, str>>,
    /// Absent: `None`; `null`: `Some(None)`.
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<Option<Cow<'a, str>>>,
    #[serde(default, borrow, deserialize_with = "present")]
    expected: Option<Option<Cow<'a, str>>>,
    success: Option<bool>,
    found: Option<bool>,
}

/// For a field that may be `null`: present (even as `null`) is `Some`.
fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// The typed decode of [`decode_line`]; `None` sends the line to the general decoder, which
/// accepts it with the same meaning or names what is wrong. Same rules as
/// [`decode_operation`]: outputs are read only for `ok` operations.
fn decode_flat(line: &str) -> Option<Operation> {
    let flat: FlatLine<'_> = serde_json::from_str(line).ok()?;
    let status = match &*flat.status {
        "ok" => Status::Ok,
        "fail" => Status::Fail,
        "info" => Status::Info,
        _ => return None,
    };
    let outputs = status == Status::Ok;
    let key = flat.key?.into_owned();
    let written = || -> Option<String> { Some(flat.value.clone()??.into_owned()) };
    let op = match &*flat.op {
        "get" => Op::Get {
            key,
            value: if outputs { flat.value.clone()?.map(Cow::into_owned) } else { None },
        },
        "put" => Op::Put { key, value: written()? },
        "delete" => Op::Delete { key, found: if outputs { flat.found } else { None } },
        "cas" => Op::Cas {
            key,
            expected: flat.expected.clone()?.map(Cow::into_owned),
            value: written()?,
            success: outputs && flat.success?,
        },
        "put_if_absent" => {
            Op::PutIfAbsent { key, value: written()?, success: outputs && flat.success? }
        }
        _ => return None,
    };
    Some(Operation { client: flat.client, call: flat.call, ret: flat.ret, status, op })
}

/// Decodes one operation object. Outputs are read only for `ok` operations.
pub(crate) fn decode_operation(value: &Value) -> Result<Operation, HistoryErrorKind> {
    let fields = Fields::new(value, String::new())?;
    let client = fields.integer("client")?;
    let call = fields.integer("call")?;
    let ret = fields.optional_integer("return")?;
    let status = match fields.string("status")?.as_str() {
        "ok" => Status::Ok,
        "fail" => Status::Fail,
        "info" => Status::Info,
        other => return Err(HistoryErrorKind::UnknownStatus(other.to_owned())),
    };
    let outputs = status == Status::Ok;
    let kind = fields.string("op")?;
    let op = match kind.as_str() {
        "get" => Op::Get {
            key: fields.string("key")?,
            value: if outputs { fields.nullable_string("value")? } else { None },
        },
        "put" => Op::Put { key: fields.string("key")?, value: fields.string("value")? },
        "delete" => Op::Delete {
            key: fields.string("key")?,
            found: if outputs { fields.optional_boolean("found")? } else { None },
        },
        "cas" => Op::Cas {
            key: fields.string("key")?,
            expected: fields.nullable_string("expected")?,
            value: fields.string("value")?,
            success: outputs && fields.boolean("success")?,
        },
        "put_if_absent" => Op::PutIfAbsent {
            key: fields.string("key")?,
            value: fields.string("value")?,
            success: outputs && fields.boolean("success")?,
        },
        "txn" => Op::Txn(decode_txn(&fields, outputs)?),
        "range" => Op::Range(decode_range(&fields, outputs)?),
        other => return Err(HistoryErrorKind::UnknownOp(other.to_owned())),
    };
    Ok(Operation { client, call, ret, status, op })
}

fn decode_txn(fields: &Fields<'_>, outputs: bool) -> Result<Txn, HistoryErrorKind> {
    let succeeded = outputs && fields.boolean("succeeded")?;
    let compare_items = fields.array("compare", true)?;
    check_count("compare", compare_items.len(), limits::TXN_COMPARES_MAX)?;
    let compare = compare_items
        .iter()
        .enumerate()
        .map(|(index, item)| decode_compare(&Fields::new(item, format!("compare[{index}]"))?))
        .collect::<Result<Vec<_>, _>>()?;
    let branch = |field: &'static str, taken: bool| -> Result<Vec<TxnOp>, HistoryErrorKind> {
        let items = fields.array(field, false)?;
        check_count(field, items.len(), limits::TXN_OPS_MAX)?;
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                decode_txn_op(&Fields::new(item, format!("{field}[{index}]"))?, outputs && taken)
            })
            .collect()
    };
    let success = branch("success", succeeded)?;
    let failure = branch("failure", !succeeded)?;
    Ok(Txn { compare, success, failure, succeeded })
}

fn decode_compare(fields: &Fields<'_>) -> Result<Compare, HistoryErrorKind> {
    let key = fields.string("key")?;
    let has = |field| fields.raw(field).is_some();
    match (has("expected"), has("cmp"), has("exists")) {
        (true, false, false) => {
            Ok(Compare::Equals { key, expected: fields.nullable_string("expected")? })
        }
        (false, true, false) => {
            let cmp = match fields.string("cmp")?.as_str() {
                "equal" => CmpOp::Equal,
                "not_equal" => CmpOp::NotEqual,
                "less" => CmpOp::Less,
                "greater" => CmpOp::Greater,
                other => return Err(HistoryErrorKind::UnknownCmp(other.to_owned())),
            };
            Ok(Compare::Value { key, cmp, value: fields.string("value")? })
        }
        (false, false, true) => Ok(Compare::Exists { key, exists: fields.boolean("exists")? }),
        _ => Err(HistoryErrorKind::AmbiguousCompare),
    }
}

fn decode_txn_op(fields: &Fields<'_>, outputs: bool) -> Result<TxnOp, HistoryErrorKind> {
    let kind = fields.string("op")?;
    Ok(match kind.as_str() {
        "get" => TxnOp::Get {
            key: fields.string("key")?,
            value: if outputs { fields.nullable_string("value")? } else { None },
        },
        "put" => TxnOp::Put { key: fields.string("key")?, value: fields.string("value")? },
        "delete" => TxnOp::Delete { key: fields.string("key")? },
        "range" => TxnOp::Range(decode_range(fields, outputs)?),
        other => return Err(HistoryErrorKind::UnknownOp(other.to_owned())),
    })
}

fn decode_range(fields: &Fields<'_>, outputs: bool) -> Result<Range, HistoryErrorKind> {
    let prefix = fields.string("prefix")?;
    let start_after = fields.optional_string("start_after")?;
    let limit = fields.optional_integer("limit")?;
    let (kvs, more) = if outputs {
        let items = fields.array("kvs", true)?;
        check_count("kvs", items.len(), limits::RANGE_KVS_MAX)?;
        let kvs = items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let pair = Fields::new(item, fields.name(&format!("kvs[{index}]")))?;
                Ok(KeyValue { key: pair.string("key")?, value: pair.string("value")? })
            })
            .collect::<Result<Vec<_>, HistoryErrorKind>>()?;
        (kvs, fields.optional_boolean("more")?)
    } else {
        (Vec::new(), None)
    };
    Ok(Range { prefix, start_after, limit, kvs, more })
}

fn check_count(field: &'static str, count: usize, limit: usize) -> Result<(), HistoryErrorKind> {
    if count > limit {
        return Err(HistoryErrorKind::TooLarge { field, count, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Location;

    fn kind_of(text: &str) -> (Location, HistoryErrorKind) {
        let error = parse_jsonl(text).unwrap_err();
        (error.location, error.kind)
    }

    #[test]
    fn base_format_line_parses() {
        let history = parse_jsonl(
            "{\"client\":2,\"key\":\"r\",\"call\":19,\"status\":\"ok\",\"op\":\"cas\",\
             \"expected\":\"3\",\"value\":\"0\",\"return\":20,\"success\":true}\n\
             \n\
             {\"client\":4,\"key\":\"r\",\"call\":54,\"status\":\"info\",\"op\":\"put\",\"value\":\"1\"}\n",
        )
        .unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history.ops()[0], Operation::ok(2, 19, 20, Op::cas("r", Some("3"), "0", true)));
        assert_eq!(history.ops()[1], Operation::info(4, 54, Op::put("r", "1")));
        assert_eq!(history.source_line(1), Some(3));
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let good = "{\"client\":1,\"op\":\"put\",\"key\":\"k\",\"value\":\"v\",\"call\":1,\"return\":2,\"status\":\"ok\"}";
        assert!(matches!(
            kind_of(&format!("{good}\n{{\"client\":1,")),
            (Location::Line(2), HistoryErrorKind::MalformedJson(_))
        ));
        assert_eq!(
            kind_of("{\"client\":1,\"op\":\"incr\",\"key\":\"k\",\"call\":1,\"status\":\"ok\"}"),
            (Location::Line(1), HistoryErrorKind::UnknownOp("incr".into()))
        );
        assert_eq!(
            kind_of(
                "{\"client\":1,\"op\":\"get\",\"key\":\"k\",\"call\":1,\"return\":3,\"status\":\"ok\"}"
            ),
            (Location::Line(1), HistoryErrorKind::MissingField("value".into()))
        );
        assert_eq!(
            kind_of("{\"client\":-1,\"op\":\"get\",\"key\":\"k\",\"call\":1,\"status\":\"info\"}"),
            (
                Location::Line(1),
                HistoryErrorKind::WrongType {
                    field: "client".into(),
                    expected: "a non-negative integer"
                }
            )
        );
        assert_eq!(kind_of("[1,2]"), (Location::Line(1), HistoryErrorKind::NotAnObject));
        assert_eq!(
            kind_of(
                "{\"client\":1,\"op\":\"txn\",\"compare\":[{\"key\":\"a\",\"expected\":null}],\
                 \"success\":[{\"op\":\"put\",\"key\":\"a\"}],\"succeeded\":true,\
                 \"call\":1,\"return\":3,\"status\":\"ok\"}"
            ),
            (Location::Line(1), HistoryErrorKind::MissingField("success[0].value".into()))
        );
    }

    #[test]
    fn extensions_round_trip() {
        let txn = Txn {
            compare: vec![
                Compare::Equals { key: "a".into(), expected: None },
                Compare::Value { key: "b".into(), cmp: CmpOp::Less, value: "9".into() },
                Compare::Exists { key: "c".into(), exists: true },
            ],
            success: vec![
                TxnOp::Put { key: "a".into(), value: "1".into() },
                TxnOp::Get { key: "a".into(), value: Some("1".into()) },
                TxnOp::Range(Range {
                    prefix: "a".into(),
                    start_after: Some("a0".into()),
                    limit: Some(2),
                    kvs: vec![KeyValue { key: "a1".into(), value: "x".into() }],
                    more: Some(false),
                }),
            ],
            failure: vec![
                TxnOp::Delete { key: "c".into() },
                TxnOp::Get { key: "c".into(), value: None },
            ],
            succeeded: true,
        };
        let ops = vec![
            Operation::ok(1, 0, 5, Op::Txn(txn)),
            Operation::ok(
                2,
                1,
                2,
                Op::PutIfAbsent { key: "z".into(), value: "1".into(), success: false },
            ),
            Operation::ok(2, 3, 4, Op::Delete { key: "z".into(), found: Some(true) }),
            Operation::ok(
                3,
                0,
                9,
                Op::Range(Range {
                    prefix: String::new(),
                    start_after: None,
                    limit: None,
                    kvs: vec![],
                    more: None,
                }),
            ),
            Operation::fail(4, 0, 9, Op::get("q", None)),
        ];
        let history = History::new(ops).unwrap();
        let text = to_jsonl_string(&history);
        let parsed = parse_jsonl(&text).unwrap();
        assert_eq!(parsed.ops(), history.ops());
        let single: Operation = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(&single, &history.ops()[0]);
    }
}
