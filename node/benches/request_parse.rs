//! What a node spends in user space turning one single-key HTTP request into what it asks the
//! engine, before any I/O: the request head parsed with the parser hyper uses (`httparse`) into
//! the `http` crate's request parts, as hyper does, then the node's own parsing, the same
//! functions its handlers call (`http/key_request.rs`: the key, the query string, the
//! consistency level or the write's condition, TTL and session) — and, for a write, the log
//! entry's bytes (`KvRequest::encode`, which the engine does before proposing). The requests
//! are the ones `conclave bench` sends: a lease get and a put of a 100-byte value under a
//! 16-byte key.
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
use conclave_core::kv::{Condition, KvCommand, KvRequest};
use conclave_node::http::key_request::{parse_get, parse_put_head, put_command};
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

fn get_from_bytes(raw: &[u8]) -> (ReadQuery, ReadConsistency) {
    let (parts, _body) = parse_head(raw);
    parse_get(&parts.uri).expect("a valid get")
}

fn put_from_bytes(raw: &[u8], leader_time_ms: u64) -> (KvRequest, Bytes) {
    let (parts, value) = parse_head(raw);
    let head = parse_put_head(&parts.uri).expect("a valid put");
    let (command, session) = put_command(head, &parts.headers, value).expect("a valid put");
    let request = KvRequest { session, leader_time_ms, command };
    let entry = request.encode().expect("a put encodes");
    (request, entry)
}

fn request_parse(c: &mut Criterion) {
    let (get, put) = (get_request(), put_request());
    // The benchmarks measure what they claim only if the requests parse to what the node sees.
    let (query, consistency) = get_from_bytes(&get);
    assert_eq!(query, ReadQuery::Get { key: KEY.into() });
    assert_eq!(consistency, ReadConsistency::Lease);
    let (request, entry) = put_from_bytes(&put, 1);
    let KvCommand::Put { key, value, ttl_ms, condition } = &request.command else {
        panic!("a put parses to a put: {request:?}");
    };
    assert_eq!((key.as_str(), value.len(), *ttl_ms), (KEY, VALUE_BYTES, None));
    assert_eq!(*condition, Condition::Always);
    assert_eq!(KvRequest::decode(&entry).expect("the entry decodes"), request);

    let mut group = c.benchmark_group("request_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lease_get", |b| b.iter(|| get_from_bytes(black_box(&get))));
    group.bench_function("put_100b_to_log_entry", |b| {
        b.iter(|| put_from_bytes(black_box(&put), black_box(1_764_000_000_000)))
    });
    group.finish();
}

criterion_group!(benches, request_parse);
criterion_main!(benches);
