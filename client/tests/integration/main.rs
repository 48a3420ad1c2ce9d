//! The client library's integration tests, in one test binary: each file below is a module, so that
//! `cargo test` compiles and links them once instead of once per file (on a 2-core machine,
//! each extra binary cost about ten seconds of build). Run one file's tests with
//! `cargo test -p conclave-client --test integration {module}::`.

mod follows_the_leader;
mod follows_the_map;
