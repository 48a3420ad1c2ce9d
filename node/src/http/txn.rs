//! `POST /txn`: an etcd-style transaction in JSON (see `api::TxnRequestJson`). Malformed JSON
//! or an invalid compare answers 400 naming the problem (with serde's line and column).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use conclave_core::kv::{
    Compare, CompareOp, CompareTarget, KvCommand, KvResponse, Txn, TxnOp, TxnOpResult,
};

use super::AppState;
use super::kv::{key_value_json, read_body};
use super::leader::Forwardable;
use super::params::{parse_session, parse_ttl};
use super::propose::{unexpected, write};
use super::reply::{self, bad_request};
use conclave_client::api::{
    CompareJson, TxnOpJson, TxnRequestJson, TxnResponseJson, TxnResultJson, decode_value,
};

fn parse_op(op: Option<&str>) -> Result<CompareOp, String> {
    match op.unwrap_or("=") {
        "=" | "==" | "equal" => Ok(CompareOp::Equal),
        "!=" | "not_equal" => Ok(CompareOp::NotEqual),
        "<" | "less" => Ok(CompareOp::Less),
        ">" | "greater" => Ok(CompareOp::Greater),
        other => Err(format!("op {other:?} is not one of =, !=, <, >")),
    }
}

fn parse_compare(index: usize, compare: &CompareJson) -> Result<Compare, String> {
    let at = |message: String| format!("compare[{index}] (key {:?}): {message}", compare.key);
    let op = parse_op(compare.op.as_deref()).map_err(at)?;
    let need = |field: Option<u64>, name: &str| {
        field.ok_or_else(|| at(format!("target {} needs the field {name}", compare.target)))
    };
    let target = match compare.target.as_str() {
        "value" => CompareTarget::Value(
            op,
            decode_value(compare.value.as_deref(), compare.value_base64.as_deref(), "compare")
                .map_err(at)?,
        ),
        "mod_revision" => CompareTarget::ModRevision(op, need(compare.revision, "revision")?),
        "create_revision" => CompareTarget::CreateRevision(op, need(compare.revision, "revision")?),
        "version" => CompareTarget::Version(op, need(compare.version, "version")?),
        "exists" => CompareTarget::Exists(
            compare.exists.ok_or_else(|| at("target exists needs the field exists".into()))?,
        ),
        other => {
            return Err(at(format!(
                "target {other:?} is not one of value, mod_revision, create_revision, version, exists"
            )));
        }
    };
    Ok(Compare { key: compare.key.clone(), target })
}

fn parse_ops(branch: &str, ops: &[TxnOpJson]) -> Result<Vec<TxnOp>, String> {
    ops.iter()
        .enumerate()
        .map(|(index, op)| {
            let at = |message: String| format!("{branch}[{index}]: {message}");
            Ok(match op {
                TxnOpJson::Put { key, value, value_base64, ttl } => TxnOp::Put {
                    key: key.clone(),
                    value: decode_value(value.as_deref(), value_base64.as_deref(), key)
                        .map_err(at)?,
                    ttl_ms: ttl.as_deref().map(parse_ttl).transpose().map_err(at)?,
                },
                TxnOpJson::Delete { key } => TxnOp::Delete { key: key.clone() },
                TxnOpJson::Get { key } => TxnOp::Get { key: key.clone() },
                TxnOpJson::Range { prefix, limit } => {
                    TxnOp::Range { prefix: prefix.clone(), start_after: None, limit: *limit }
                }
            })
        })
        .collect()
}

/// The core transaction of a JSON request.
pub fn parse_txn(request: &TxnRequestJson) -> Result<Txn, String> {
    let compares = request
        .compare
        .iter()
        .enumerate()
        .map(|(index, compare)| parse_compare(index, compare))
        .collect::<Result<_, _>>()?;
    Ok(Txn {
        compares,
        success: parse_ops("success", &request.success)?,
        failure: parse_ops("failure", &request.failure)?,
    })
}

fn result_json(result: &TxnOpResult) -> TxnResultJson {
    match result {
        TxnOpResult::Put { prev } => TxnResultJson::Put { created: prev.is_none() },
        TxnOpResult::Delete { prev } => TxnResultJson::Delete { deleted: prev.is_some() },
        TxnOpResult::Get { kv } => TxnResultJson::Get { kv: kv.as_ref().map(key_value_json) },
        TxnOpResult::Range { kvs, more } => {
            TxnResultJson::Range { kvs: kvs.iter().map(key_value_json).collect(), more: *more }
        }
    }
}

pub async fn txn(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // JSON costs up to 4/3 of the bytes (base64) plus field names.
    let limit_bytes = state.config.kv_limits.max_request_bytes * 2 + 64 * 1024;
    let body = match read_body(&state, body, limit_bytes, "transaction").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request: TxnRequestJson = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("invalid transaction JSON: {error}")),
    };
    let txn = match parse_txn(&request) {
        Ok(txn) => txn,
        Err(message) => return bad_request(format!("invalid transaction: {message}")),
    };
    let session = match parse_session(&headers) {
        Ok(session) => session,
        Err(message) => return bad_request(message),
    };
    let forward = Forwardable { method: &method, uri: &uri, headers: &headers, body };
    match write(&state, KvCommand::Txn(txn), session, forward).await {
        Ok(KvResponse::Txn { succeeded, results, revision }) => {
            let results = results.iter().map(result_json).collect();
            reply::json(StatusCode::OK, &TxnResponseJson { succeeded, revision, results })
        }
        Ok(KvResponse::Error(error)) => reply::request_error(&error),
        Ok(other) => unexpected(&other),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_name_their_problem() {
        let request: TxnRequestJson =
            serde_json::from_str(r#"{"compare":[{"key":"a","target":"mod_revision","op":"<"}]}"#)
                .expect("json");
        let error = parse_txn(&request).expect_err("missing revision");
        assert!(error.contains("compare[0]") && error.contains("revision"), "{error}");
        let request: TxnRequestJson = serde_json::from_str(
            r#"{"compare":[{"key":"a","target":"version","op":"~","version":1}]}"#,
        )
        .expect("json");
        assert!(parse_txn(&request).expect_err("bad op").contains("op"));
    }
}
