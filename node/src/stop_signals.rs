//! SIGTERM and SIGINT as a stream a process installs once, at startup. A handler installed only
//! when the process starts waiting for it leaves a window in which the default action (exit at
//! once) applies: `conclave dev` would die and leave its nodes running, and `conclave serve`
//! would skip its orderly shutdown.

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The stop signals, caught from the moment [`StopSignals::install`] returns until the process
/// exits; a signal that arrives before anyone waits is kept and reported by the next wait.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Must be called inside a tokio runtime.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Resolves with the name of the next stop signal: "SIGTERM" or "SIGINT".
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
