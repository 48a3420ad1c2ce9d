//! What a node spends in user space turning one single-key HTTP request into what it asks the
//! engine, before any I/O: the request head parsed with the parser hyper uses (`httparse`) into
//! the `http` crate's request parts, as hyper does, then the node's own parsing — the key from
//! the path, the query string, the consistency level or the write's condition, TTL and session
//! headers — and, for a write, the log entry's bytes (`KvRequest::encode`, which the engine does
//! before proposing). The requests are the ones `conclave bench` sends: a lease get and a put of
//! a 100-byte value under a 16-byte key.
//!
//! Lease gets are bound by CPU (the kernel's loopback TCP on both ends takes most of it; see
//! `bench/RESULTS.md`), so this per-request user-space cost is the part of a lease get the
//! node's code decides.
//!
//! Run: `cargo bench -p conclave-node --bench request_parse`

use std::hint::black_box;

use axum::http::{self, request::Parts};
use bytes::Bytes;
use conclave_core::engine::{ReadConsistency, ReadQuery};
use conclave_core::kv::{Condition, KvCommand, KvRequest, SessionTag};
use conclave_node::http::key::key_from_path;
use conclave_node::http::params::{
    parse_condition, parse_consistency, parse_kv_params, parse_session, parse_ttl,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const KEY: &str = "k000000000001234";
const VALUE_BYTES: usize = 100;

fn get_request() -> Vec<u8> {
    format!("GET /kv/{KEY}?consistency=lease HTTP/1.1\r\nhost: 127.0.0.1:28001\r\n\r\n")
        .into_bytes()
}

fn put_request() -> Vec<u8> {
    let mut request = format!(
        "PUT /kv/{KEY} HTTP/1.1\r\nhost: 127.0.0.1:28001\r\ncontent-length: {VALUE_BYTES}\r\n\r\n"
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b'v', VALUE_BYTES));
    request
}

/// The request head as hyper hands it to the service, and the body bytes after it.
fn parse_head(raw: &[u8]) -> (Parts, Bytes) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_bytes) = head.parse(raw).expect("a valid request") else {
        panic!("the request head is complete");
    };
    let mut builder = http::Request::builder()
        .method(head.method.expect("a method"))
        .uri(head.path.expect("a path"));
    for header in head.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    let (parts, ()) = builder.body(()).expect("a valid request head").into_parts();
    (parts, Bytes::copy_from_slice(&raw[head_bytes..]))
}

fn parse_get(raw: &[u8]) -> (ReadQuery, ReadConsistency) {
    let (parts, _body) = parse_head(raw);
    let key = key_from_path(parts.uri.path()).expect("a UTF-8 key");
    let params = parse_kv_params(parts.uri.query()).expect("a valid query");
    let consistency = parse_consistency(params.consistency.as_deref()).expect("a known level");
    (ReadQuery::Get { key }, consistency)
}

fn parse_put(raw: &[u8], leader_time_ms: u64) -> (KvRequest, Bytes) {
    let (parts, value) = parse_head(raw);
    let key = key_from_path(parts.uri.path()).expect("a UTF-8 key");
    let params = parse_kv_params(parts.uri.query()).expect("a valid query");
    let condition = parse_condition(&parts.headers).expect("a valid condition");
    let ttl_ms = params.ttl.as_deref().map(parse_ttl).transpose().expect("a valid ttl");
    let session: Option<SessionTag> = parse_session(&parts.headers).expect("valid session");
    let request = KvRequest {
        session,
        leader_time_ms,
        command: KvCommand::Put { key, value, ttl_ms, condition },
    };
    let entry = request.encode().expect("a put encodes");
    (request, entry)
}

fn request_parse(c: &mut Criterion) {
    let (get, put) = (get_request(), put_request());
    // The benchmarks measure what they claim only if the requests parse to what the node sees.
    let (query, consistency) = parse_get(&get);
    assert_eq!(query, ReadQuery::Get { key: KEY.into() });
    assert_eq!(consistency, ReadConsistency::Lease);
    let (request, entry) = parse_put(&put, 1);
    let KvCommand::Put { key, value, ttl_ms, condition } = &request.command else {
        panic!("a put parses to a put: {request:?}");
    };
    assert_eq!((key.as_str(), value.len(), *ttl_ms), (KEY, VALUE_BYTES, None));
    assert_eq!(*condition, Condition::Always);
    assert_eq!(KvRequest::decode(&entry).expect("the entry decodes"), request);

    let mut group = c.benchmark_group("request_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lease_get", |b| b.iter(|| parse_get(black_box(&get))));
    group.bench_function("put_100b_to_log_entry", |b| {
        b.iter(|| parse_put(black_box(&put), black_box(1_764_000_000_000)))
    });
    group.finish();
}

criterion_group!(benches, request_parse);
criterion_main!(benches);
