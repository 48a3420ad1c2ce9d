//! conclave-sim: the deterministic simulation harness.

// Without tokio_unstable, tokio's scheduler is not seedable and a seed no longer reproduces a run.
#[cfg(not(tokio_unstable))]
compile_error!(
    "conclave-sim must be built with `--cfg tokio_unstable` (set in .cargo/config.toml; an exported RUSTFLAGS replaces it)"
);
