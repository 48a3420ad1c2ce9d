//! LEB128 unsigned integers: seven bits a byte, low first, the high bit set on every byte but
//! the last. Spilled records are mostly small numbers (times, indexes, ids), which this keeps to
//! one to four bytes instead of eight.

use std::io;

/// Bytes of the longest encoding of a `u64`.
pub(crate) const BYTES_MAX: usize = 10;

pub(crate) fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads values and byte strings back from a record, failing cleanly on a truncated or
/// corrupt one (a spilled file is input like any other).
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn byte(&mut self) -> io::Result<u8> {
        let (&first, rest) = self.bytes.split_first().ok_or_else(|| corrupt("truncated"))?;
        self.bytes = rest;
        Ok(first)
    }

    pub(crate) fn u64(&mut self) -> io::Result<u64> {
        let mut value: u64 = 0;
        for position in 0..BYTES_MAX {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte holds the top bit only.
            if position == BYTES_MAX - 1 && bits > 1 {
                return Err(corrupt("integer over 64 bits"));
            }
            value |= bits << (7 * position);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("integer over 64 bits"))
    }

    pub(crate) fn usize(&mut self) -> io::Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| corrupt("length over usize"))
    }

    pub(crate) fn u32(&mut self) -> io::Result<u32> {
        u32::try_from(self.u64()?).map_err(|_| corrupt("id over u32"))
    }

    /// `len` bytes.
    pub(crate) fn take(&mut self, len: usize) -> io::Result<&'a [u8]> {
        if len > self.bytes.len() {
            return Err(corrupt("truncated"));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    /// A string written as its length and its UTF-8 bytes.
    pub(crate) fn str(&mut self) -> io::Result<&'a str> {
        let len = self.usize()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| corrupt("invalid UTF-8"))
    }
}

/// Writes `text` as its length and its bytes, for [`Cursor::str`].
pub(crate) fn put_str(out: &mut Vec<u8>, text: &str) {
    put(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// A spilled file that does not read back as it was written: the disk or another process
/// changed it.
pub(crate) fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("spilled record is corrupt: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_corruption_is_an_error() {
        let values = [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX];
        let mut bytes = Vec::new();
        for &value in &values {
            put(&mut bytes, value);
        }
        put_str(&mut bytes, "ключ");
        assert_eq!(bytes[0], 0);
        let mut cursor = Cursor::new(&bytes);
        for &value in &values {
            assert_eq!(cursor.u64().expect("valid"), value);
        }
        assert_eq!(cursor.str().expect("valid"), "ключ");
        assert!(cursor.is_empty());
        assert!(Cursor::new(&[0x80]).u64().is_err(), "truncated");
        assert!(Cursor::new(&[0xff; 11]).u64().is_err(), "too long");
        assert!(Cursor::new(&[2, 0xff, 0xfe]).str().is_err(), "not UTF-8");
        assert!(Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]).u32().is_err(), "over u32");
    }
}
