//! Every input the checker accepts is bounded, so that a hostile or corrupt history file is a
//! clear error instead of an out-of-memory kill or an index overflow.

/// Operations in one history. The search indexes operations with `u32` and keeps a bitset over
/// a partition's operations; ten million is far above any simulated run (about 2,000 operations)
/// or Jepsen history, and far below `u32::MAX`.
pub const HISTORY_OPS_MAX: usize = 10_000_000;

/// Bytes in one JSON line. A line is one operation; even a large transaction or range result
/// fits comfortably in a mebibyte, and the bound keeps one corrupt line from eating memory.
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// Bytes in a whole history file read by the CLI.
pub const FILE_BYTES_MAX: u64 = 4 << 30;

/// Compares in one transaction.
pub const TXN_COMPARES_MAX: usize = 256;

/// Operations in one branch (`success` or `failure`) of a transaction.
pub const TXN_OPS_MAX: usize = 1_024;

/// Key/value pairs a range read may return.
pub const RANGE_KVS_MAX: usize = 65_536;
