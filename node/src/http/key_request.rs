//! A single-key request (`/kv/{key}`) parsed from its head: the key, the query string, the read
//! consistency, and for a put its condition, TTL and session — everything the handlers in
//! `kv.rs` check before they ask the engine. Public for the request-parse benchmark
//! (`node/benches/request_parse.rs`), which measures exactly this code. Errors are the finished
//! 400 answers, built once on the cold path.
#![allow(clippy::result_large_err)]

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use conclave_core::engine::{ReadConsistency, ReadQuery};
use conclave_core::kv::{KvCommand, SessionTag};

use super::key::key_from_path;
use super::params::{
    KvParams, parse_condition, parse_consistency, parse_kv_params, parse_session, parse_ttl,
};
use super::reply::{KEY_EMPTY, bad_request, text};

/// The key of the request, or the 400 to answer.
pub fn request_key(uri: &Uri) -> Result<String, Response> {
    match key_from_path(uri.path()) {
        Ok(key) if key.is_empty() => Err(text(StatusCode::BAD_REQUEST, KEY_EMPTY)),
        Ok(key) => Ok(key),
        Err(error) => Err(bad_request(error)),
    }
}

/// The query parameters of a `/kv` request (`?ttl=`, `?consistency=`, `?prefix=`, `?limit=`),
/// or the 400 to answer.
pub fn kv_params(uri: &Uri) -> Result<KvParams, Response> {
    parse_kv_params(uri.query()).map_err(bad_request)
}

/// The read consistency `?consistency=` asks for (linearizable when absent), or the 400.
pub fn read_consistency(params: &KvParams) -> Result<ReadConsistency, Response> {
    parse_consistency(params.consistency.as_deref()).map_err(bad_request)
}

/// `GET /kv/{key}`: what to read and at which consistency.
pub fn parse_get(uri: &Uri) -> Result<(ReadQuery, ReadConsistency), Response> {
    let key = request_key(uri)?;
    let consistency = read_consistency(&kv_params(uri)?)?;
    Ok((ReadQuery::Get { key }, consistency))
}

/// The part of `PUT /kv/{key}` parsed before its body is read.
#[derive(Debug)]
pub struct PutHead {
    pub key: String,
    pub params: KvParams,
}

pub fn parse_put_head(uri: &Uri) -> Result<PutHead, Response> {
    Ok(PutHead { key: request_key(uri)?, params: kv_params(uri)? })
}

/// The write a put asks for, with its session, once its (non-empty) body `value` was read.
pub fn put_command(
    head: PutHead,
    headers: &HeaderMap,
    value: Bytes,
) -> Result<(KvCommand, Option<SessionTag>), Response> {
    debug_assert!(!value.is_empty(), "the handler answers an empty value first");
    let (condition, ttl_ms, session) = match (
        parse_condition(headers),
        head.params.ttl.as_deref().map(parse_ttl).transpose(),
        parse_session(headers),
    ) {
        (Ok(condition), Ok(ttl_ms), Ok(session)) => (condition, ttl_ms, session),
        (Err(message), _, _) | (_, Err(message), _) | (_, _, Err(message)) => {
            return Err(bad_request(message));
        }
    };
    Ok((KvCommand::Put { key: head.key, value, ttl_ms, condition }, session))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use conclave_core::kv::Condition;

    use super::*;
    use conclave_client::api::{CLIENT_ID_HEADER, SEQ_HEADER};

    fn uri(text: &'static str) -> Uri {
        Uri::from_static(text)
    }

    fn status<T: std::fmt::Debug>(result: Result<T, Response>) -> StatusCode {
        result.expect_err("a 400").status()
    }

    #[test]
    fn a_get_names_its_key_and_consistency() {
        let (query, consistency) = parse_get(&uri("/kv/a%20b?consistency=lease")).unwrap();
        assert_eq!(
            (query, consistency),
            (ReadQuery::Get { key: "a b".into() }, ReadConsistency::Lease)
        );
        let (_, consistency) = parse_get(&uri("/kv/a")).unwrap();
        assert_eq!(consistency, ReadConsistency::Linearizable);
        assert_eq!(status(parse_get(&uri("/kv/"))), StatusCode::BAD_REQUEST);
        assert_eq!(status(parse_get(&uri("/kv/%FF"))), StatusCode::BAD_REQUEST);
        assert_eq!(status(parse_get(&uri("/kv/a?consistency=strong"))), StatusCode::BAD_REQUEST);
        assert_eq!(status(parse_get(&uri("/kv/a?limit=many"))), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_put_becomes_its_command_with_condition_ttl_and_session() {
        let mut headers = HeaderMap::new();
        headers.insert("if-none-match", HeaderValue::from_static("*"));
        headers.insert(CLIENT_ID_HEADER, HeaderValue::from_static("7"));
        headers.insert(SEQ_HEADER, HeaderValue::from_static("3"));
        let head = parse_put_head(&uri("/kv/k?ttl=30s")).unwrap();
        let (command, session) = put_command(head, &headers, Bytes::from_static(b"v")).unwrap();
        let expected = KvCommand::Put {
            key: "k".into(),
            value: Bytes::from_static(b"v"),
            ttl_ms: Some(30_000),
            condition: Condition::Absent,
        };
        assert_eq!(command, expected);
        assert_eq!(session, Some(SessionTag { client_id: 7, seq: 3 }));

        let head = parse_put_head(&uri("/kv/k?ttl=10parsecs")).unwrap();
        assert_eq!(
            status(put_command(head, &HeaderMap::new(), Bytes::from_static(b"v"))),
            StatusCode::BAD_REQUEST
        );
        headers.remove(SEQ_HEADER);
        let head = parse_put_head(&uri("/kv/k")).unwrap();
        assert_eq!(
            status(put_command(head, &headers, Bytes::from_static(b"v"))),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status(parse_put_head(&uri("/kv/"))), StatusCode::BAD_REQUEST);
    }
}
