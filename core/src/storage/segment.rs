//! One segment file of the write-ahead log: its name, its header, and the scan that turns its
//! bytes into records while deciding where the written data ends.
//!
//! A segment is created by writing its header, extending it with zeros to the segment size
//! (preallocation: its size never changes again, so the per-group `fdatasync` has no metadata to
//! flush), syncing it and syncing the directory — all before it receives its first record. It
//! is *sealed* (synced) before the next segment receives any record, so only the last segment
//! can end in a torn write.
//!
//! # Where the written data ends (the rule)
//!
//! Records follow each other from the header on, their sequence numbers (lsn) counting up by
//! one. The scan stops at the first offset X where no valid record starts:
//! 1. the bytes from X to the end of the file are all zero: this is the preallocated tail, and
//!    X is the end of the data;
//! 2. otherwise, if any valid record at an offset after X says (`durable_lsn`) that the record
//!    X should hold had been synced before it was written, the record at X was acknowledged
//!    data and is damaged: corruption, recovery refuses to start;
//! 3. otherwise, in the *last* segment, if the record at X shows the signature of an incomplete
//!    write (see `record.rs`) — or X holds a zero header followed by stray bytes — it is the torn
//!    tail of the last, unsynced group write: the data ends at X and recovery truncates there;
//! 4. everything else is corruption: a damaged record in a sealed segment, a fully written
//!    record with a bad checksum, or garbage that does not look like any record.
//!
//! Rule 3 cannot tell a torn write from a synced last record that the disk later damaged in
//! exactly the way a tear looks (a zeroed suffix) — no later record exists to vouch for it. That
//! is the one case where damage is repaired rather than refused.

use std::ops::Range;
use std::path::Path;

use super::error::{StorageError, StorageResult};
use super::record::{RecordRead, read_record};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CNCLWAL\0";
pub const SEGMENT_HEADER_BYTES: usize = 32;
const SEGMENT_SUFFIX: &str = ".wal";

pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

/// The sequence number of a segment file name, or `None` if the name is not one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segments are numbered 1, 2, 3... without gaps.
    pub seq: u64,
    /// The lsn of the segment's first record (the previous segment's last plus one).
    pub first_lsn: u64,
}

/// ```text
/// [0..8) magic  [8..12) format version  [12..20) seq  [20..28) first lsn  [28..32) CRC32C of [0..28)
/// ```
pub fn encode_segment_header(header: SegmentHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&super::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&header.seq.to_le_bytes());
    out.extend_from_slice(&header.first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), SEGMENT_HEADER_BYTES);
    out
}

/// What the first bytes of a segment file say.
#[derive(Debug)]
pub enum HeaderRead {
    Valid(SegmentHeader),
    /// Empty, or all zeros where the header belongs: a segment whose creation never completed.
    Missing,
}

pub fn decode_segment_header(buf: &[u8], path: &Path) -> StorageResult<HeaderRead> {
    let head = &buf[..buf.len().min(SEGMENT_HEADER_BYTES)];
    if head.iter().all(|byte| *byte == 0) {
        return Ok(HeaderRead::Missing);
    }
    if head.len() < SEGMENT_HEADER_BYTES {
        return Err(StorageError::corrupt(path, 0, "segment file shorter than its header"));
    }
    if head[..8] != SEGMENT_MAGIC {
        return Err(StorageError::corrupt(path, 0, "not a Conclave WAL segment (bad magic)"));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != super::FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: super::FORMAT_VERSION,
        });
    }
    let stored_crc = u32::from_le_bytes([head[28], head[29], head[30], head[31]]);
    if crc32c::crc32c(&head[..28]) != stored_crc {
        return Err(StorageError::corrupt(path, 0, "segment header checksum mismatch"));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[12..20]);
    let mut first_lsn = [0u8; 8];
    first_lsn.copy_from_slice(&head[20..28]);
    Ok(HeaderRead::Valid(SegmentHeader {
        seq: u64::from_le_bytes(seq),
        first_lsn: u64::from_le_bytes(first_lsn),
    }))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    pub offset: u64,
    pub lsn: u64,
    /// Where the payload lies in the scanned buffer.
    pub payload: Range<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The data ends here; zeros follow (or the file ends).
    Clean { end_offset: u64 },
    /// A torn write starts here (last segment only): truncate to `offset`.
    Torn { offset: u64, reason: &'static str },
}

#[derive(Clone, Debug)]
pub struct SegmentScan {
    pub header: SegmentHeader,
    pub records: Vec<ScannedRecord>,
    pub end: SegmentEnd,
}

/// Scans a segment whose whole content is `buf`. `is_last` allows a torn tail (rule 3).
pub fn scan_segment(
    buf: &[u8],
    path: &Path,
    header: SegmentHeader,
    is_last: bool,
    max_payload_bytes: usize,
) -> StorageResult<SegmentScan> {
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected_lsn = header.first_lsn;
    let end = loop {
        let problem = match read_record(&buf[offset..], max_payload_bytes) {
            RecordRead::Valid(record) => {
                if record.lsn != expected_lsn {
                    return Err(StorageError::corrupt(
                        path,
                        offset as u64,
                        format!("expected record {expected_lsn}, found record {}", record.lsn),
                    ));
                }
                let payload_start = offset + super::record::RECORD_HEADER_BYTES;
                records.push(ScannedRecord {
                    offset: offset as u64,
                    lsn: record.lsn,
                    payload: payload_start..payload_start + record.payload.len(),
                });
                offset += record.len_bytes;
                expected_lsn += 1;
                continue;
            }
            RecordRead::Zero if buf[offset..].iter().all(|byte| *byte == 0) => {
                break SegmentEnd::Clean { end_offset: offset as u64 };
            }
            RecordRead::Zero => Err("a zero record header followed by stray bytes"),
            RecordRead::Torn(reason) => Err(reason),
            RecordRead::Corrupt(reason) => Ok(reason),
        };
        // Rule 2: a later record vouching for this one makes any damage here corruption.
        if let Some((at, lsn)) = find_voucher(buf, offset + 1, expected_lsn, max_payload_bytes) {
            let what = match &problem {
                Ok(reason) => reason.clone(),
                Err(reason) => (*reason).to_owned(),
            };
            return Err(StorageError::corrupt(
                path,
                offset as u64,
                format!(
                    "record {expected_lsn} is damaged ({what}) although record {lsn} at offset \
                     {at} shows it had been synced"
                ),
            ));
        }
        match problem {
            Err(reason) if is_last => break SegmentEnd::Torn { offset: offset as u64, reason },
            Err(reason) => {
                return Err(StorageError::corrupt(
                    path,
                    offset as u64,
                    format!("torn record in a sealed (not the last) segment: {reason}"),
                ));
            }
            Ok(reason) => return Err(StorageError::corrupt(path, offset as u64, reason)),
        }
    };
    Ok(SegmentScan { header, records, end })
}

/// Looks for a valid record at or after `from` whose `durable_lsn` covers `lsn`. Skips zero
/// runs quickly: after a crash the rest of the segment is usually the zero-filled tail.
fn find_voucher(buf: &[u8], from: usize, lsn: u64, max_payload_bytes: usize) -> Option<(u64, u64)> {
    use super::record::RECORD_HEADER_BYTES;
    let mut at = from;
    while at + RECORD_HEADER_BYTES <= buf.len() {
        if buf[at..at + RECORD_HEADER_BYTES].iter().all(|byte| *byte == 0) {
            // Jump so that the window's last byte lands on the next non-zero byte.
            let next_non_zero = buf[at..].iter().position(|byte| *byte != 0)?;
            at = (at + next_non_zero + 1).saturating_sub(RECORD_HEADER_BYTES).max(at + 1);
            continue;
        }
        if let RecordRead::Valid(record) = read_record(&buf[at..], max_payload_bytes)
            && record.durable_lsn >= lsn
        {
            return Some((at as u64, record.lsn));
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::encode_record;
    use std::path::PathBuf;

    const MAX: usize = 1 << 16;

    fn path() -> PathBuf {
        PathBuf::from("/data/00000000000000000001.wal")
    }

    /// A segment of `size` bytes with records 1..=n (payload = [lsn; 50]), each group of
    /// `group` records sharing a `durable_lsn` like the writer does.
    fn segment(n: u64, group: u64, size: usize) -> Vec<u8> {
        let header = SegmentHeader { seq: 1, first_lsn: 1 };
        let mut buf = encode_segment_header(header);
        for lsn in 1..=n {
            let durable = ((lsn - 1) / group) * group;
            encode_record(lsn, durable, &[lsn as u8; 50], &mut buf);
        }
        buf.resize(size, 0);
        buf
    }

    fn scan(buf: &[u8], last: bool) -> StorageResult<SegmentScan> {
        let HeaderRead::Valid(header) = decode_segment_header(buf, &path()).unwrap() else {
            panic!("no header")
        };
        scan_segment(buf, &path(), header, last, MAX)
    }

    #[test]
    fn names_round_trip_and_reject_others() {
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.wal"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.wal.tmp"), None);
    }

    #[test]
    fn clean_segment_ends_at_the_zero_tail() {
        let buf = segment(5, 2, 4096);
        let scan = scan(&buf, false).unwrap();
        assert_eq!(scan.records.len(), 5);
        let SegmentEnd::Clean { end_offset } = scan.end else { panic!() };
        assert_eq!(end_offset as usize, SEGMENT_HEADER_BYTES + 5 * (50 + 33));
        // A file that ends exactly after the last record is clean too.
        let scan = scan_at_len(&buf, end_offset as usize);
        assert!(matches!(scan.end, SegmentEnd::Clean { .. }));
    }

    fn scan_at_len(buf: &[u8], len: usize) -> SegmentScan {
        scan(&buf[..len], true).unwrap()
    }

    #[test]
    fn a_torn_last_record_is_a_torn_tail_in_the_last_segment_only() {
        let mut buf = segment(6, 3, 4096);
        let last_record = SEGMENT_HEADER_BYTES + 5 * 83;
        buf[last_record + 40..last_record + 83].fill(0); // the write stopped inside the payload
        let scan = scan(&buf, true).unwrap();
        assert_eq!(scan.records.len(), 5);
        assert_eq!(
            scan.end,
            SegmentEnd::Torn {
                offset: last_record as u64,
                reason: "the record's end mark was not written"
            }
        );
        let error = super::tests::scan(&buf, false).unwrap_err().to_string();
        assert!(error.contains(&format!("offset {last_record}")), "{error}");
        assert!(error.contains("sealed"), "{error}");
    }

    #[test]
    fn damage_vouched_for_by_a_later_record_is_corruption() {
        // Records 1..=6 written in groups of 2: records 5 and 6 carry durable_lsn 4, so they
        // prove record 3 was synced. Damage record 3 the way a tear would look.
        let mut buf = segment(6, 2, 4096);
        let third = SEGMENT_HEADER_BYTES + 2 * 83;
        buf[third + 60..third + 83].fill(0);
        let error = scan(&buf, true).unwrap_err().to_string();
        assert!(error.contains(&format!("byte offset {third}")), "{error}");
        assert!(error.contains("shows it had been synced"), "{error}");
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_corruption() {
        let mut buf = segment(4, 4, 4096);
        let last = SEGMENT_HEADER_BYTES + 3 * 83;
        buf[last + 40] ^= 0x10;
        let error = scan(&buf, true).unwrap_err().to_string();
        assert!(error.contains("checksum"), "{error}");
        assert!(error.contains(&format!("byte offset {last}")), "{error}");
    }

    #[test]
    fn garbage_after_the_data_is_refused_and_stray_bytes_after_zeros_are_a_tear() {
        let mut buf = segment(3, 1, 4096);
        let end = SEGMENT_HEADER_BYTES + 3 * 83;
        for (i, byte) in buf[end..end + 100].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(37).wrapping_add(1);
        }
        let error = scan(&buf, true).unwrap_err().to_string();
        assert!(error.contains(&format!("byte offset {end}")), "{error}");
        let mut buf = segment(3, 1, 4096);
        buf[end + 700] = 9;
        let scan = scan(&buf, true).unwrap();
        assert!(matches!(scan.end, SegmentEnd::Torn { offset, .. } if offset as usize == end));
    }

    #[test]
    fn headers_check_magic_version_and_checksum() {
        let mut buf = segment(1, 1, 256);
        assert!(matches!(decode_segment_header(&buf, &path()), Ok(HeaderRead::Valid(_))));
        assert!(matches!(decode_segment_header(&[0; 10], &path()), Ok(HeaderRead::Missing)));
        assert!(matches!(decode_segment_header(&[], &path()), Ok(HeaderRead::Missing)));
        buf[8] = 9;
        let error = decode_segment_header(&buf, &path()).unwrap_err();
        assert!(matches!(error, StorageError::UnsupportedVersion { found: 9, .. }), "{error}");
        let mut buf = segment(1, 1, 256);
        buf[15] ^= 1;
        assert!(decode_segment_header(&buf, &path()).unwrap_err().to_string().contains("checksum"));
        let mut buf = segment(1, 1, 256);
        buf[0] = b'X';
        assert!(decode_segment_header(&buf, &path()).unwrap_err().to_string().contains("magic"));
    }
}
