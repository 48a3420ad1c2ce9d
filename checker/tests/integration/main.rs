//! The checker's integration tests, in one test binary: each file below is a module, so that
//! `cargo test` compiles and links them once instead of once per file (on a 2-core machine,
//! each extra binary cost about ten seconds of build). Run one file's tests with
//! `cargo test -p conclave-checker --test integration {module}::`.

mod agreement;
mod bad_input;
mod cli;
mod jepsen_etcd;
mod oracle;
mod planted_anomalies;
mod semantics;
mod unique_values;
