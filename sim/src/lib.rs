//! conclave-sim: the deterministic simulation harness. Real engines (Raft core, key-value state
//! machine, storage, transport framing) run as turmoil hosts on a simulated network, disk and
//! clocks; a nemesis injects partitions, crashes, clock skew and disk faults drawn from a seed;
//! an observer checks Raft's invariants after every step; the checker judges every client
//! history. A failing seed replays exactly and shrinks to a small schedule.

// Without tokio_unstable, tokio's scheduler is not seedable and a seed no longer reproduces a run.
#[cfg(not(tokio_unstable))]
compile_error!(
    "conclave-sim must be built with `--cfg tokio_unstable` (set in .cargo/config.toml; an exported RUSTFLAGS replaces it)"
);

pub mod admin;
pub mod at_rest_damage;
pub mod client_protocol;
pub mod client_server;
pub mod clock;
pub mod disk;
pub mod fs;
pub mod lost_tail;
pub mod nemesis;
pub mod network;
pub mod node_host;
pub mod observer;
pub mod observers;
pub mod panic_capture;
pub mod read_check;
pub mod run;
pub mod schedule;
pub mod shrink;
pub mod trace;
pub mod watch_check;
pub mod watcher;
pub mod workload;

pub use run::{FailureKind, Outcome, ReadSummary, RunOptions, RunReport, run};
pub use schedule::{DrawOptions, DrawProfile, Fault, PlantedBug, RunConfig};
