//! `/kv/{key}` (GET, PUT, DELETE), `GET /kv?prefix=&limit=`, `DELETE /clear` and
//! `POST /session`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use conclave_core::engine::{ReadQuery, ReadResult};
use conclave_core::kv::{Condition, KeyValue, KvCommand, KvResponse};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Body as HttpBody;

use super::AppState;
use super::fan_out;
use super::key_request::{
    kv_params, parse_get, parse_put_head, put_command, read_consistency, request_key,
};
use super::leader::Forwardable;
use super::params::{parse_condition, parse_session};
use super::propose::{read, shard_asked, unexpected, write};
use super::reply::{
    self, KEY_EMPTY, KEY_NOT_FOUND, VALUE_EMPTY, bad_request, etag, text, with_header,
};
use conclave_client::api::DELETED_KEYS_HEADER;
use conclave_client::api::{
    DELETED_HEADER, KeyValueJson, REVISION_HEADER, RangeJson, SHARD_EPOCH_HEADER, SessionJson,
    encode_value,
};

/// Reads a request body of at most `limit_bytes`, which must arrive within the node's body
/// timeout. A body announced larger than the limit (`Content-Length`) is refused before any of
/// it is read; one that grows past it while arriving (chunked) as soon as it does. A body that
/// is not valid HTTP framing (a malformed chunk) is a 400, and one that stops arriving a 408:
/// a slow or stalled sender must not hold a connection (and its memory) indefinitely.
pub async fn read_body<B>(
    state: &AppState,
    body: B,
    limit_bytes: u64,
    what: &str,
) -> Result<Bytes, Response>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} is larger than the limit of {limit_bytes} bytes\n"),
        )
    };
    if body.size_hint().lower() > limit_bytes {
        return Err(too_large());
    }
    let limit = usize::try_from(limit_bytes).unwrap_or(usize::MAX);
    let timeout = Duration::from_millis(state.config.http.body_timeout_ms);
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(error)) => Err(bad_request(format!("malformed request body: {error}"))),
        Err(_) => {
            let mut response = text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms\n",
                    state.config.http.body_timeout_ms
                ),
            );
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

pub async fn empty_key() -> Response {
    text(StatusCode::BAD_REQUEST, KEY_EMPTY)
}

/// `GET /kv/{key}` as a router handler; the work is in [`get_key`].
pub async fn get_key_route(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    get_key(&state, &parts).await
}

/// `PUT /kv/{key}` as a router handler; the work is in [`put_key`].
pub async fn put_key_route(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    put_key(&state, &parts, body).await
}

/// `DELETE /kv/{key}` as a router handler; the work is in [`delete_key`].
pub async fn delete_key_route(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    delete_key(&state, &parts).await
}

/// `GET /kv/{key}`. Takes the request's parts by reference, not extractor by extractor:
/// extracting `HeaderMap` clones it, on every request of the hottest route.
pub async fn get_key(state: &AppState, parts: &Parts) -> Response {
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let (query, consistency) = match parse_get(uri) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let request = Forwardable { method, uri, headers, body: Bytes::new() };
    match read(state, query, consistency, request).await {
        Ok(ReadResult::Value { value: Some((value, meta)), revision, .. }) => {
            let mut response = value.into_response();
            let headers = response.headers_mut();
            headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(header::ETAG, etag(meta.mod_revision));
            with_header(response, REVISION_HEADER, revision)
        }
        Ok(ReadResult::Value { value: None, revision, .. }) => {
            with_header(text(StatusCode::NOT_FOUND, KEY_NOT_FOUND), REVISION_HEADER, revision)
        }
        Ok(ReadResult::Range { .. }) => {
            reply::text(StatusCode::INTERNAL_SERVER_ERROR, "range answer to a get\n")
        }
        Err(response) => response,
    }
}

/// `PUT /kv/{key}`.
pub async fn put_key<B>(state: &AppState, parts: &Parts, body: B) -> Response
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let head = match parse_put_head(uri) {
        Ok(head) => head,
        Err(response) => return response,
    };
    let limits = &state.config.kv_limits;
    let value = match read_body(state, body, limits.max_value_bytes, "value").await {
        Ok(value) => value,
        Err(response) => return response,
    };
    if value.is_empty() {
        return text(StatusCode::BAD_REQUEST, VALUE_EMPTY);
    }
    let (command, session) = match put_command(head, headers, value.clone()) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let request = Forwardable { method, uri, headers, body: value };
    match write(state, command, session, request).await {
        Ok(KvResponse::Put { revision, .. }) => {
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().insert(header::ETAG, etag(revision));
            with_header(response, REVISION_HEADER, revision)
        }
        Ok(answer) => write_answer(&answer),
        Err(response) => response,
    }
}

/// `DELETE /kv/{key}`.
pub async fn delete_key(state: &AppState, parts: &Parts) -> Response {
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let key = match request_key(uri) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let (condition, session) = match (parse_condition(headers), parse_session(headers)) {
        (Ok(condition), Ok(session)) => (condition, session),
        (Err(message), _) | (_, Err(message)) => return bad_request(message),
    };
    if condition == Condition::Absent {
        return bad_request("If-None-Match: * makes no sense on DELETE");
    }
    let command = KvCommand::Delete { key, condition };
    let request = Forwardable { method, uri, headers, body: Bytes::new() };
    match write(state, command, session, request).await {
        // Idempotent, as the challenge contract, etcd and Consul have it: deleting a missing
        // key succeeds. Whether something was removed is in a header.
        Ok(KvResponse::Delete { prev, revision }) => {
            let response = with_header(StatusCode::OK.into_response(), REVISION_HEADER, revision);
            with_header(response, DELETED_HEADER, u64::from(prev.is_some()))
        }
        Ok(answer) => write_answer(&answer),
        Err(response) => response,
    }
}

/// The shared answers of single-key writes: failed conditions and refused requests.
fn write_answer(answer: &KvResponse) -> Response {
    match answer {
        KvResponse::ConditionFailed { current, revision } => {
            let mut response = text(StatusCode::PRECONDITION_FAILED, "precondition failed\n");
            if let Some(meta) = current {
                response.headers_mut().insert(header::ETAG, etag(meta.mod_revision));
            }
            with_header(response, REVISION_HEADER, *revision)
        }
        KvResponse::Error(error) => reply::request_error(error),
        other => unexpected(other),
    }
}

pub async fn range(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params = match kv_params(&uri) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let consistency = match read_consistency(&params) {
        Ok(consistency) => consistency,
        Err(response) => return response,
    };
    let limits = &state.config.kv_limits;
    let limit = params.limit.unwrap_or(0);
    if limit > limits.max_range_limit {
        return bad_request(format!(
            "limit {limit} exceeds the maximum {}",
            limits.max_range_limit
        ));
    }
    let prefix = params.prefix.unwrap_or_default();
    let start_after = params.start_after;
    let longest = prefix.len().max(start_after.as_ref().map_or(0, String::len));
    if let Some(refusal) = longer_than_a_key(&state, "prefix or start_after", longest) {
        return refusal;
    }
    let keys_only = params.keys_only.unwrap_or(false);
    let request = Forwardable { method: &method, uri: &uri, headers: &headers, body: Bytes::new() };
    let query = ReadQuery::Range { prefix, start_after, limit };
    if state.groups.is_sharded() {
        match shard_asked(&request) {
            Ok(Some(_)) => {} // one shard's page, for the node that fans out
            Ok(None) => {
                return fan_out::range(&state, query, keys_only, consistency, request).await;
            }
            Err(message) => return bad_request(message),
        }
    }
    match read(&state, query, consistency, request).await {
        Ok(ReadResult::Range { entries, more, revision, .. }) => {
            let kvs = entries.iter().map(|kv| listed_json(kv, keys_only)).collect();
            reply::json(StatusCode::OK, &RangeJson { revision, more, kvs })
        }
        Ok(ReadResult::Value { .. }) => {
            reply::text(StatusCode::INTERNAL_SERVER_ERROR, "value answer to a range\n")
        }
        Err(response) => response,
    }
}

/// `DELETE /clear`: every key.
pub async fn clear(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    delete_many(&state, KvCommand::Clear, &method, &uri, &headers).await
}

/// `DELETE /kv?prefix=P`: every key under `P`, in one log entry per shard; the answer names
/// how many were deleted (`x-conclave-deleted-keys`). `prefix` is required: an empty one
/// deletes every key, as `DELETE /clear` does.
pub async fn delete_prefix(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params = match kv_params(&uri) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let Some(prefix) = params.prefix else {
        return bad_request(
            "DELETE /kv needs ?prefix= (the keys to delete; an empty prefix deletes every key)",
        );
    };
    if let Some(refusal) = longer_than_a_key(&state, "prefix", prefix.len()) {
        return refusal;
    }
    let command = KvCommand::DeletePrefix { prefix };
    delete_many(&state, command, &method, &uri, &headers).await
}

/// 413 when `what` (a prefix, a cursor), `length` bytes long, is longer than a key may be.
fn longer_than_a_key(state: &AppState, what: &str, length: usize) -> Option<Response> {
    let max_key_bytes = state.config.kv_limits.max_key_bytes;
    (length as u64 > max_key_bytes).then(|| {
        let reason = format!("{what} is longer than the key limit of {max_key_bytes} bytes\n");
        text(StatusCode::PAYLOAD_TOO_LARGE, reason)
    })
}

/// A write that deletes many keys (`Clear`, `DeletePrefix`): on every shard of a sharded
/// cluster, where it takes no session.
async fn delete_many(
    state: &AppState,
    command: KvCommand,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let session = match parse_session(headers) {
        Ok(session) => session,
        Err(message) => return bad_request(message),
    };
    let request = Forwardable { method, uri, headers, body: Bytes::new() };
    if state.groups.is_sharded() {
        if session.is_some() {
            return bad_request(CLEAR_TAKES_NO_SESSION.trim_end());
        }
        match shard_asked(&request) {
            Ok(Some(_)) => {} // one shard's part, for the node that fans out
            Ok(None) => return fan_out::delete_many(state, &command, request).await,
            Err(message) => return bad_request(message),
        }
    }
    match write(state, command, session, request).await {
        Ok(KvResponse::Clear { revision, deleted_keys }) => {
            let response = with_header(StatusCode::OK.into_response(), REVISION_HEADER, revision);
            with_header(response, DELETED_KEYS_HEADER, deleted_keys)
        }
        Ok(answer) => write_answer(&answer),
        Err(response) => response,
    }
}

/// Why a sharded cluster refuses a clear under a session: a session lives in one shard's group,
/// and a clear goes to every shard.
const CLEAR_TAKES_NO_SESSION: &str = "a clear or prefix delete of a sharded cluster takes no \
     session (a session lives in one shard's group, these go to every shard); send it without one\n";

/// Why a sharded cluster refuses a session without a shard.
const SESSION_NEEDS_A_SHARD: &str = "sessions are per shard in a sharded cluster: register one \
     in the shard of the keys it will write (header x-conclave-shard: N; GET /cluster/shards \
     maps keys to shards)\n";

/// Opens a client session for exactly-once writes (see the `conclave-client` crate).
pub async fn register_session(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request = Forwardable { method: &method, uri: &uri, headers: &headers, body: Bytes::new() };
    if let Some(map) = state.groups.map() {
        // A session lives in one shard's group and serves writes of that shard's keys.
        match shard_asked(&request) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let refused = bad_request(SESSION_NEEDS_A_SHARD.trim_end());
                return with_header(refused, SHARD_EPOCH_HEADER, map.epoch());
            }
            Err(message) => return bad_request(message),
        }
    }
    match write(&state, KvCommand::RegisterSession, None, request).await {
        Ok(KvResponse::SessionRegistered { client_id }) => {
            reply::json(StatusCode::OK, &SessionJson { client_id })
        }
        Ok(answer) => write_answer(&answer),
        Err(response) => response,
    }
}

/// A key, its value and its revisions as the JSON API shows them.
/// A listed key: with its value, or (`keys_only`) without.
pub fn listed_json(kv: &KeyValue, keys_only: bool) -> KeyValueJson {
    let mut json = key_value_json(kv);
    if keys_only {
        json.value = None;
        json.value_base64 = None;
    }
    json
}

pub fn key_value_json(kv: &KeyValue) -> KeyValueJson {
    let (value, value_base64) = encode_value(&kv.value);
    KeyValueJson {
        key: kv.key.clone(),
        value,
        value_base64,
        create_revision: kv.meta.create_revision,
        mod_revision: kv.meta.mod_revision,
        version: kv.meta.version,
        expires_at_ms: kv.meta.expires_at_ms,
    }
}
