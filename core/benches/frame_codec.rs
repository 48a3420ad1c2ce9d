//! Peer-message framing on the hot path: encoding and decoding (length, CRC32C, postcard) of an
//! AppendEntries frame carrying 64 entries of 100-byte commands, as the leader sends and a
//! follower parses them.

use std::hint::black_box;

use bytes::Bytes;
use conclave_core::raft::{Entry, EntryPayload, Message, MessageBody, NodeId};
use conclave_core::transport::PeerMessage;
use conclave_core::transport::frame::{Frame, decode_frame, encode_frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ENTRIES: u64 = 64;
const MAX_FRAME_BYTES: u32 = 64 << 20;

fn append_frame() -> Frame {
    let entries = (0..ENTRIES)
        .map(|i| Entry {
            term: 3,
            index: 1_000 + i,
            payload: EntryPayload::Command(Bytes::from(vec![b'v'; 100])),
        })
        .collect();
    Frame::Message(PeerMessage::Raft(Message {
        from: NodeId(1),
        to: NodeId(2),
        term: 3,
        body: MessageBody::AppendRequest {
            prev_log_index: 999,
            prev_log_term: 3,
            entries,
            leader_commit: 990,
        },
    }))
}

fn frame_codec(c: &mut Criterion) {
    let frame = append_frame();
    let mut encoded = Vec::new();
    encode_frame(&frame, &mut encoded, MAX_FRAME_BYTES).expect("encodes");
    let mut group = c.benchmark_group("frame_codec_append_64x100b");
    group.throughput(Throughput::Elements(ENTRIES));
    group.bench_function("encode", |b| {
        let mut buffer = Vec::with_capacity(encoded.len());
        b.iter(|| {
            buffer.clear();
            encode_frame(black_box(&frame), &mut buffer, MAX_FRAME_BYTES).expect("encodes");
            black_box(buffer.len())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            let decoded: Option<(Frame, usize)> =
                decode_frame(black_box(&encoded), MAX_FRAME_BYTES).expect("decodes");
            black_box(decoded)
        })
    });
    group.finish();
}

criterion_group!(benches, frame_codec);
criterion_main!(benches);
