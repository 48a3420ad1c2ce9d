//! Time, as a node sees it. Raft timers and leases run on the monotonic clock; TTLs are stamped
//! with the leader's wall clock. In simulation each node's clock has its own offset, drift and
//! jumps, so every use of time goes through this trait.

use std::future::Future;

pub trait Clock: Clone + 'static {
    /// Milliseconds since an arbitrary origin; never goes backwards.
    fn monotonic_ms(&self) -> u64;
    /// Milliseconds since the Unix epoch; may jump (NTP steps, operator changes).
    fn wall_ms(&self) -> u64;
    /// Completes after `duration_ms` milliseconds of this node's monotonic clock.
    fn sleep_ms(&self, duration_ms: u64) -> impl Future<Output = ()>;
}

/// Runs `future` with a deadline on `clock`; `None` if the deadline passed first.
pub async fn with_deadline<C: Clock, T>(
    clock: &C,
    deadline_ms: u64,
    future: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        value = future => Some(value),
        () = clock.sleep_ms(deadline_ms) => None,
    }
}
