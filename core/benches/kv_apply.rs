//! Apply throughput of the KV state machine alone (no Raft, no disk): puts of 100-byte values
//! over 10,000 keys, as decoded requests and as log bytes (decode included), with and without
//! a client session.

use std::hint::black_box;

use bytes::Bytes;
use conclave_core::kv::{Condition, KvCommand, KvRequest, KvStateMachine, SessionTag};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const KEY_COUNT: u64 = 10_000;
const BATCH: u64 = 1_000;

fn put_request(n: u64, value: &Bytes) -> KvRequest {
    KvRequest {
        session: None,
        leader_time_ms: n,
        command: KvCommand::Put {
            key: format!("key/{:05}", n % KEY_COUNT),
            value: value.clone(),
            ttl_ms: None,
            condition: Condition::Always,
        },
    }
}

fn kv_apply(c: &mut Criterion) {
    let value = Bytes::from(vec![b'x'; 100]);
    let mut group = c.benchmark_group("kv_apply");
    group.throughput(Throughput::Elements(BATCH));

    group.bench_function("put_100b", |b| {
        let requests: Vec<KvRequest> = (0..BATCH).map(|n| put_request(n, &value)).collect();
        let mut sm = KvStateMachine::default();
        let mut index = 0;
        b.iter(|| {
            for request in &requests {
                index += 1;
                black_box(sm.apply(index, request));
            }
        });
    });

    group.bench_function("put_100b_from_log_bytes", |b| {
        let entries: Vec<Bytes> =
            (0..BATCH).map(|n| put_request(n, &value).encode().expect("encodes")).collect();
        let mut sm = KvStateMachine::default();
        let mut index = 0;
        b.iter(|| {
            for bytes in &entries {
                index += 1;
                black_box(sm.apply_command_bytes(index, bytes));
            }
        });
    });

    group.bench_function("put_100b_in_session", |b| {
        let mut requests: Vec<KvRequest> = (0..BATCH).map(|n| put_request(n, &value)).collect();
        let mut sm = KvStateMachine::default();
        let mut index = 1;
        sm.apply(index, &KvRequest::new(KvCommand::RegisterSession));
        let mut seq = 0;
        b.iter(|| {
            for request in &mut requests {
                index += 1;
                seq += 1;
                request.session = Some(SessionTag { client_id: 1, seq });
                black_box(sm.apply(index, request));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, kv_apply);
criterion_main!(benches);
