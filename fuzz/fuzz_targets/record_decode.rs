//! Every decoder of on-disk bytes must answer arbitrary input with a value or an error, never a
//! panic: WAL records, segment headers and whole segments, log record payloads, snapshot files,
//! backup files of a single group and of a sharded cluster.
//! A record that decodes as valid must re-encode to the same bytes.

#![no_main]

use std::path::Path;

use conclave_core::storage::backup::decode_backup;
use conclave_core::storage::record::{RecordRead, encode_record, read_record};
use conclave_core::storage::sharded_backup::decode_sharded_backup;
use conclave_core::storage::segment::{HeaderRead, decode_segment_header, scan_segment};
use conclave_core::storage::snapshot_file::decode_snapshot;
use conclave_core::storage::wal::WalRecord;
use libfuzzer_sys::fuzz_target;

const MAX_PAYLOAD_BYTES: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/00000000000000000001.wal");
    if let RecordRead::Valid(record) = read_record(data, MAX_PAYLOAD_BYTES) {
        let mut again = Vec::new();
        encode_record(record.lsn, record.durable_lsn, record.payload, &mut again);
        assert_eq!(&again[..], &data[..record.len_bytes], "a valid record re-encodes to itself");
        let _ = postcard::from_bytes::<WalRecord>(record.payload);
    }
    let _ = postcard::from_bytes::<WalRecord>(data);
    if let Ok(HeaderRead::Valid(header)) = decode_segment_header(data, path) {
        for is_last in [false, true] {
            let _ = scan_segment(data, path, header, is_last, MAX_PAYLOAD_BYTES);
        }
    }
    let _ = decode_snapshot(data, Path::new("/fuzz/snapshot-00000000000000000001.snap"));
    let _ = decode_backup(data, Path::new("/fuzz/node.backup"));
    let _ = decode_sharded_backup(data, Path::new("/fuzz/cluster.backup"));
});
