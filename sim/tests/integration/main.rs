//! The simulator's integration tests, in one test binary: each file below is a module, so that
//! `cargo test` compiles and links them once instead of once per file (on a 2-core machine,
//! each extra binary cost about ten seconds of build). The seed campaign and the planted-bug
//! test keep binaries of their own, so that `--test seeds` runs just the campaign. Run one
//! file's tests with `cargo test -p conclave-sim --test integration {module}::`.

mod campaign_seeds;
mod crash_ends_connections;
mod determinism;
mod disk_full;
mod hosted_groups;
mod interrupted_initialisation;
mod peer_pair;
mod replay_output;
mod shrinking;
mod snapshot_stream;
mod storage_crash;
mod transport_acks;
