//! The framing of one write-ahead-log record, and how to tell a complete record, the zero-filled
//! end of the written data, a torn (incompletely written) record and a corrupt one apart.
//!
//! Layout (little endian):
//!
//! ```text
//! [0..4)    payload length in bytes (1..=max)
//! [4..12)   lsn: this record's sequence number (the log's records are numbered 1, 2, 3...)
//! [12..20)  durable_lsn: every record up to this one was synced before this record was written
//! [20..24)  CRC32C of the payload
//! [24..28)  CRC32C of bytes [0..24)
//! [28..31)  zero
//! [31]      header mark 0x5C
//! [32..32+n) payload (postcard)
//! [32+n]    end mark 0xE5
//! ```
//!
//! Why this shape: the segment tail after the last record is zero-filled (segments are
//! preallocated by extending them with zeros, and a repaired tail is zeroed again), so a record
//! is *recognisably torn* when the write that carried it stopped part-way: the bytes the disk
//! never wrote read as zeros. A write is cut at block boundaries counted from wherever it
//! started, so a torn record shows one of three signatures: its header mark is zero (the header
//! itself is cut), its extent runs past the end of the file, or its end mark is zero.
//! A record that is fully present (non-zero end mark, valid header) but fails its payload CRC
//! did not tear: the disk changed it after it was written, and that is corruption. The header
//! has its own CRC so that a later scan can recognise a valid record at any offset cheaply (see
//! `segment.rs`, which uses `durable_lsn` to tell a torn tail from damage in synced data).

/// Bytes before the payload.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Bytes after the payload (the end mark).
pub const RECORD_TRAILER_BYTES: usize = 1;
/// The last byte of every record. Non-zero, so that a record whose end never reached the disk is
/// recognisable; not 0xFF, a common erased-flash pattern.
pub const END_MARK: u8 = 0xE5;
/// The last byte of every record header, non-zero for the same reason.
pub const HEADER_MARK: u8 = 0x5C;

/// Total bytes a record with a payload of `payload_bytes` takes.
pub fn record_bytes(payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + payload_bytes + RECORD_TRAILER_BYTES
}

/// Appends one framed record to `out`.
pub fn encode_record(lsn: u64, durable_lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    assert!(!payload.is_empty(), "a record carries a payload");
    assert!(durable_lsn < lsn, "a record cannot vouch for itself");
    let length = u32::try_from(payload.len()).expect("the caller enforces the record size limit");
    let start = out.len();
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&durable_lsn.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&out[start..start + 24]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, HEADER_MARK]);
    out.extend_from_slice(payload);
    out.push(END_MARK);
}

/// What the bytes at some offset of a segment hold.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordRead<'a> {
    Valid(ValidRecord<'a>),
    /// The header is all zeros: no record starts here (the written data ended before).
    Zero,
    /// The signature of a write that stopped part-way (see the module docs).
    Torn(&'static str),
    /// A fully written record that fails a check: the disk changed it.
    Corrupt(String),
}

#[derive(Debug, PartialEq, Eq)]
pub struct ValidRecord<'a> {
    pub lsn: u64,
    pub durable_lsn: u64,
    pub payload: &'a [u8],
    /// Bytes the whole record takes.
    pub len_bytes: usize,
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Reads the record at the start of `buf` (which runs to the end of the file).
pub fn read_record(buf: &[u8], max_payload_bytes: usize) -> RecordRead<'_> {
    if buf.len() < RECORD_HEADER_BYTES {
        return if buf.iter().all(|byte| *byte == 0) {
            RecordRead::Zero
        } else {
            RecordRead::Torn("the record header runs past the end of the file")
        };
    }
    let header = &buf[..RECORD_HEADER_BYTES];
    if header.iter().all(|byte| *byte == 0) {
        return RecordRead::Zero;
    }
    match header[RECORD_HEADER_BYTES - 1] {
        0 => return RecordRead::Torn("the record header was not completely written"),
        HEADER_MARK => {}
        other => return RecordRead::Corrupt(format!("bad header mark {other:#04x}")),
    }
    if header[28..31].iter().any(|byte| *byte != 0) {
        return RecordRead::Corrupt("non-zero reserved header bytes".into());
    }
    if crc32c::crc32c(&header[..24]) != u32_at(header, 24) {
        return RecordRead::Corrupt("record header checksum mismatch".into());
    }
    let payload_bytes = u32_at(header, 0) as usize;
    let lsn = u64_at(header, 4);
    let durable_lsn = u64_at(header, 12);
    if payload_bytes == 0 || payload_bytes > max_payload_bytes {
        return RecordRead::Corrupt(format!(
            "record length {payload_bytes} is outside 1..={max_payload_bytes}"
        ));
    }
    if durable_lsn >= lsn {
        return RecordRead::Corrupt(format!(
            "record {lsn} claims records up to {durable_lsn} were durable before it"
        ));
    }
    let total = record_bytes(payload_bytes);
    if buf.len() < total {
        return RecordRead::Torn("the record runs past the end of the file");
    }
    match buf[total - 1] {
        0 => return RecordRead::Torn("the record's end mark was not written"),
        END_MARK => {}
        other => return RecordRead::Corrupt(format!("bad end mark {other:#04x}")),
    }
    let payload = &buf[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_bytes];
    if crc32c::crc32c(payload) != u32_at(header, 20) {
        return RecordRead::Corrupt(format!("record {lsn}: payload checksum mismatch"));
    }
    RecordRead::Valid(ValidRecord { lsn, durable_lsn, payload, len_bytes: total })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn one(lsn: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(lsn, lsn - 1, payload, &mut out);
        out
    }

    #[test]
    fn round_trip() {
        let bytes = one(7, b"hello");
        assert_eq!(bytes.len(), record_bytes(5));
        match read_record(&bytes, MAX) {
            RecordRead::Valid(record) => {
                assert_eq!((record.lsn, record.durable_lsn, record.payload), (7, 6, &b"hello"[..]));
                assert_eq!(record.len_bytes, bytes.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zeros_are_the_end_of_data() {
        assert_eq!(read_record(&[0u8; 100], MAX), RecordRead::Zero);
        assert_eq!(read_record(&[0u8; 3], MAX), RecordRead::Zero);
        assert_eq!(read_record(&[], MAX), RecordRead::Zero);
    }

    #[test]
    fn every_prefix_of_a_record_followed_by_zeros_reads_as_torn_or_zero() {
        // This is exactly what a torn write leaves in a zero-filled segment.
        let bytes = one(3, &[0xAB; 300]);
        for cut in 0..bytes.len() {
            let mut torn = bytes[..cut].to_vec();
            torn.resize(bytes.len() + 64, 0);
            let read = read_record(&torn, MAX);
            assert!(
                matches!(read, RecordRead::Torn(_) | RecordRead::Zero),
                "cut at {cut}: {read:?}"
            );
            // And when the file simply ends there.
            let read = read_record(&bytes[..cut], MAX);
            assert!(
                matches!(read, RecordRead::Torn(_) | RecordRead::Zero),
                "eof at {cut}: {read:?}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_complete_record_is_corruption_not_a_tear() {
        let bytes = one(3, &[0x11; 64]);
        for at in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= bit;
                let read = read_record(&bad, MAX);
                assert!(matches!(read, RecordRead::Corrupt(_)), "byte {at} bit {bit:#x}: {read:?}");
            }
        }
    }

    #[test]
    fn zero_length_and_oversized_lengths_are_corrupt() {
        let mut bytes = one(2, b"x");
        // Rewrite the length to 0 and fix up the header CRC: a header that checks but lies.
        bytes[0..4].copy_from_slice(&0u32.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..24]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(read_record(&bytes, MAX), RecordRead::Corrupt(_)));
        let bytes = one(2, &[1u8; 100]);
        assert!(matches!(read_record(&bytes, 99), RecordRead::Corrupt(_)));
    }

    #[test]
    fn garbage_is_never_valid() {
        let garbage: Vec<u8> =
            (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for start in 0..512 {
            assert!(!matches!(read_record(&garbage[start..], MAX), RecordRead::Valid(_)));
        }
    }
}
