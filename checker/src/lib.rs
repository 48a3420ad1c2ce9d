//! History format and linearizability checker.
