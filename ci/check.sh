#!/usr/bin/env bash
# What CI checks, in order: the toolchain's formatter and linter, then the README's test
# command (`cargo test --workspace`), then that the fuzz targets build. Installs what the
# real-process tests need first (they run real `conclave` processes; the partition test puts
# them in Linux network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

# An exported RUSTFLAGS silently replaces .cargo/config.toml's `--cfg tokio_unstable`, without
# which the simulator is not deterministic (conclave-sim refuses to compile without it).
unset RUSTFLAGS
export CARGO_TERM_COLOR=never
# Incremental artifacts only cost time and disk on a fresh clone.
export CARGO_INCREMENTAL=0

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "install test dependencies"
ci/install-test-deps.sh

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the shipped crates build alone (no simulator features unified in)"
# `cargo test --workspace` builds conclave-core with conclave-sim's `planted-bugs` feature;
# `cargo run --bin conclave` (the README's first command) and `cargo install` build it without.
cargo check --locked -p conclave-core --lib
cargo check --locked --bin conclave

step "tests: cargo test --workspace"
cargo test --workspace --locked

step "fuzz targets build (running them needs cargo-fuzz; see fuzz/README.md)"
if [ -f fuzz/Cargo.toml ]; then
  cargo build --manifest-path fuzz/Cargo.toml
fi

step "done"
