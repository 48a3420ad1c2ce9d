//! conclave-core's integration tests, in one test binary: each file below is a module, so that
//! `cargo test` compiles and links them once instead of once per file (on a 2-core machine,
//! each extra binary cost about ten seconds of build). Run one file's tests with
//! `cargo test -p conclave-core --test integration {module}::`.

mod engine_cluster;
mod engine_hosting;
mod engine_support;
mod group_host;
mod kv_proptest;
mod kv_state_machine;
mod raft_properties;
mod raft_quiescence;
mod raft_scenarios;
mod raft_suspect_messages;
mod shard_fan_out;
mod storage_crash;
mod storage_shared_log;
mod storage_support;
mod storage_wal;
