//! The client's one retry policy, for every call that may be sent again: exponential pauses
//! (from 25 ms, doubling up to 1 s, each stretched by a random jitter of up to 100%), until the call's deadline, and only for the
//! failures an attempt marks as transient. Built on `backon`.
//!
//! Jitter keeps many clients that lost the same leader from retrying in step; the deadline,
//! not a number of attempts, bounds a call, because how long an election or a failover takes
//! does not depend on how many times the client asked.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

/// The first pause after a failed attempt.
const FIRST_PAUSE: Duration = Duration::from_millis(25);
/// Pauses stop growing here.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// How an attempt failed.
#[derive(Debug)]
pub(crate) enum Failure<E> {
    /// Worth another attempt (no leader yet, a node that did not answer, a write whose
    /// outcome the node is still waiting for).
    Transient(E),
    /// The answer: another attempt would get the same.
    Permanent(E),
}

impl<E> Failure<E> {
    fn into_inner(self) -> E {
        match self {
            Failure::Transient(error) | Failure::Permanent(error) => error,
        }
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or `deadline` passes; returns the last
/// failure's error. No pause runs past the deadline.
pub(crate) async fn until_deadline<T, E, F, Fut>(deadline: Instant, attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let policy = ExponentialBuilder::new()
        .with_min_delay(FIRST_PAUSE)
        .with_max_delay(MAX_PAUSE)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    attempt
        .retry(policy)
        .sleep(tokio::time::sleep)
        .when(|failure| matches!(failure, Failure::Transient(_)) && Instant::now() < deadline)
        .adjust(|_, pause| {
            let left = deadline.saturating_duration_since(Instant::now());
            pause.map(|pause| pause.min(left))
        })
        .await
        .map_err(Failure::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let result: Result<u32, &str> = until_deadline(deadline, || async {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if call < 4 { Err(Failure::Transient("not yet")) } else { Ok(call) }
        })
        .await;
        assert_eq!(result, Ok(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_ends_the_call_at_once() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let result: Result<(), &str> = until_deadline(deadline, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure::Permanent("refused"))
        })
        .await;
        assert_eq!((result, calls.load(Ordering::SeqCst)), (Err("refused"), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_the_call_and_no_pause_overshoots_it() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(2_500);
        let calls = AtomicU32::new(0);
        let result: Result<(), u32> = until_deadline(deadline, || async {
            Err(Failure::Transient(calls.fetch_add(1, Ordering::SeqCst) + 1))
        })
        .await;
        let attempts = result.expect_err("never succeeds");
        // Pauses double from 25 ms and jitter at most doubles one: the first six pauses take
        // at most 1.55 s, so at least seven attempts fit in 2.5 s, the last one at the deadline
        // itself (the last pause was cut to end there).
        assert!(attempts >= 7, "only {attempts} attempts");
        assert_eq!(Instant::now(), deadline, "the last pause ends at the deadline");
    }
}
