//! Reading a JSON Lines history as a stream: one line at a time, each bounded as it is read.
//!
//! A line longer than [`limits::LINE_BYTES_MAX`] is rejected as soon as that many bytes have
//! been read without a newline, so a corrupt gigabyte-long line costs a mebibyte, not a
//! gigabyte. Lines are parsed and validated one by one; nothing but the line being read is
//! buffered. [`read_history`] keeps the operations as a [`History`] (the library's form);
//! [`read_table`] keeps them as rows (`table.rs`), which is what the CLI checks: a fraction of
//! the memory, whole operations rebuilt only for the partitions that need them. For large
//! files the CLI keeps none of them: `spilled_partitions.rs` reads with the same [`Lines`]
//! and spills each operation to disk.

use std::io::{self, BufRead};

use crate::error::{HistoryError, HistoryErrorKind, Location};
use crate::history::{History, Operation, validate_clients, validate_operation};
use crate::jsonl::decode_line;
use crate::limits;
use crate::table::Table;

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    History(#[from] HistoryError),
}

/// Reads lines into a reused buffer, each at most [`limits::LINE_BYTES_MAX`] bytes (not
/// counting the newline and a `\r` before it).
pub(crate) struct Lines<R> {
    reader: R,
    buffer: Vec<u8>,
    /// 1-based number of the line last read.
    number: usize,
    bytes_read: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R) -> Lines<R> {
        Lines { reader, buffer: Vec::new(), number: 0, bytes_read: 0 }
    }

    /// Reads the next line (without its line ending) into `buffer`; `false` at the end.
    fn next_line(&mut self) -> Result<bool, ReadError> {
        self.buffer.clear();
        // One byte over the limit is allowed for a `\r` before the newline.
        let limit = limits::LINE_BYTES_MAX + 1;
        let mut ended = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            let (take, newline) = match available.iter().position(|&byte| byte == b'\n') {
                Some(at) => (at, true),
                None => (available.len(), false),
            };
            if self.buffer.len() + take > limit {
                // Rejected before buffering the rest of it.
                return Err(too_long(self.number + 1, self.buffer.len() + take));
            }
            self.buffer.extend_from_slice(&available[..take]);
            let consumed = take + usize::from(newline);
            self.reader.consume(consumed);
            self.bytes_read += consumed as u64;
            if self.bytes_read > limits::FILE_BYTES_MAX {
                return Err(ReadError::History(HistoryError {
                    location: Location::Line(self.number + 1),
                    kind: HistoryErrorKind::TooManyBytes { limit_bytes: limits::FILE_BYTES_MAX },
                }));
            }
            ended = true;
            if newline {
                break;
            }
        }
        if !ended {
            return Ok(false);
        }
        self.number += 1;
        if self.buffer.last() == Some(&b'\r') {
            self.buffer.pop();
        }
        if self.buffer.len() > limits::LINE_BYTES_MAX {
            return Err(too_long(self.number, self.buffer.len()));
        }
        Ok(true)
    }

    /// The next operation, its line number and the line's text, skipping blank lines.
    pub(crate) fn next_operation(&mut self) -> Result<Option<(Operation, usize, &str)>, ReadError> {
        loop {
            if !self.next_line()? {
                return Ok(None);
            }
            // Invalid UTF-8 is not blank: decoded below, it is reported.
            let blank = std::str::from_utf8(&self.buffer).is_ok_and(|text| text.trim().is_empty());
            if !blank {
                break;
            }
        }
        let number = self.number;
        let located = |kind| HistoryError { location: Location::Line(number), kind };
        let text = std::str::from_utf8(&self.buffer)
            .map_err(|_| located(HistoryErrorKind::MalformedJson("invalid UTF-8".into())))?;
        let operation = decode_line(text).map_err(located)?;
        validate_operation(&operation).map_err(located)?;
        Ok(Some((operation, number, text)))
    }
}

/// `size_bytes`: how much of the line was read before it was rejected.
fn too_long(line: usize, size_bytes: usize) -> ReadError {
    ReadError::History(HistoryError {
        location: Location::Line(line),
        kind: HistoryErrorKind::LineTooLong { size_bytes, limit_bytes: limits::LINE_BYTES_MAX },
    })
}

/// The error for operation number [`limits::HISTORY_OPS_MAX`] + 1, read from `line`.
pub(crate) fn too_many(line: usize) -> ReadError {
    ReadError::History(HistoryError {
        location: Location::Line(line),
        kind: HistoryErrorKind::TooManyOps { limit: limits::HISTORY_OPS_MAX },
    })
}

/// Reads and validates a JSON Lines history as a [`History`]. Line numbers in errors are
/// 1-based.
pub fn read_history(reader: impl BufRead) -> Result<History, ReadError> {
    let mut lines = Lines::new(reader);
    let mut ops = Vec::new();
    let mut source_lines = Vec::new();
    while let Some((operation, line, _)) = lines.next_operation()? {
        if ops.len() == limits::HISTORY_OPS_MAX {
            return Err(too_many(line));
        }
        ops.push(operation);
        source_lines.push(line);
    }
    Ok(History::from_parts(ops, source_lines)?)
}

/// Reads and validates a JSON Lines history as rows (`table.rs`).
pub(crate) fn read_table(reader: impl BufRead) -> Result<Table<'static>, ReadError> {
    let mut lines = Lines::new(reader);
    let mut table = Table::new();
    while let Some((operation, line, _)) = lines.next_operation()? {
        if table.len() == limits::HISTORY_OPS_MAX {
            return Err(too_many(line));
        }
        table.push_line(&operation, line);
    }
    table.finish();
    validate_clients(
        table.len(),
        |index| {
            let row = table.row(index);
            (row.client, row.call, row.ret())
        },
        |index| table.source_line(index).map_or(Location::Op(index), Location::Line),
    )?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        r#"{"client":1,"op":"put","key":"k","value":"v","call":1,"return":2,"status":"ok"}"#;

    #[test]
    fn an_oversized_line_is_rejected_before_it_is_all_read() {
        // A reader that fails if read past a little more than the limit: the line never ends.
        struct Endless {
            served: usize,
        }
        impl io::Read for Endless {
            fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
                assert!(self.served <= 2 * limits::LINE_BYTES_MAX, "read far past the limit");
                buffer.fill(b'x');
                self.served += buffer.len();
                Ok(buffer.len())
            }
        }
        let text = format!("{GOOD}\n");
        let reader = io::BufReader::new(io::Read::chain(text.as_bytes(), Endless { served: 0 }));
        let Err(ReadError::History(error)) = read_history(reader) else {
            panic!("an endless line must be rejected")
        };
        assert_eq!(error.location, Location::Line(2));
        assert!(matches!(error.kind, HistoryErrorKind::LineTooLong { .. }));
    }

    #[test]
    fn lines_at_the_limit_pass_and_crlf_is_stripped() {
        let padding = " ".repeat(limits::LINE_BYTES_MAX - GOOD.len());
        let other_client = GOOD.replace("\"client\":1", "\"client\":2");
        let text = format!("{GOOD}{padding}\r\n\n{other_client}");
        let history = read_history(text.as_bytes()).unwrap();
        assert_eq!((history.len(), history.source_line(1)), (2, Some(3)));
        let too_long = format!("{GOOD}{padding} \n");
        assert!(matches!(
            read_history(too_long.as_bytes()),
            Err(ReadError::History(HistoryError { location: Location::Line(1), .. }))
        ));
    }

    #[test]
    fn the_table_reader_validates_like_the_history_reader() {
        let overlap = format!("{GOOD}\n{GOOD}");
        let table_error = read_table(overlap.as_bytes()).unwrap_err().to_string();
        let history_error = read_history(overlap.as_bytes()).unwrap_err().to_string();
        assert_eq!(table_error, history_error);
        assert!(table_error.starts_with("line 2: client 1 has two operations open"));
        let table = read_table(format!("\n{GOOD}\n").as_bytes()).unwrap();
        assert_eq!((table.len(), table.source_line(0)), (1, Some(2)));
    }
}
