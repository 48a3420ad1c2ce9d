//! What the engine tests (and the idle-cost bench) share: a clock on tokio's time, and a
//! runner for a test on one thread with tokio's clock paused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use conclave_core::seams::clock::Clock;

/// Tokio's clock (paused in tests, real in the bench), with a fixed wall-clock origin. It
/// counts the sleeps that ran to their end (every clone shares the count): how often the
/// engines it drives were woken by time rather than by an input.
#[derive(Clone)]
pub struct TestClock {
    origin: tokio::time::Instant,
    finished_sleeps: Arc<AtomicU64>,
}

impl TestClock {
    pub fn starting_now() -> TestClock {
        TestClock { origin: tokio::time::Instant::now(), finished_sleeps: Arc::default() }
    }

    pub fn finished_sleeps(&self) -> u64 {
        self.finished_sleeps.load(Ordering::Relaxed)
    }
}

impl Clock for TestClock {
    fn monotonic_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
    fn wall_ms(&self) -> u64 {
        1_700_000_000_000 + self.monotonic_ms()
    }
    async fn sleep_ms(&self, duration_ms: u64) {
        tokio::time::sleep(Duration::from_millis(duration_ms)).await;
        self.finished_sleeps.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `test` on a current-thread runtime with tokio's clock paused, failing it if it takes
/// more than `deadline` of virtual time. The clock jumps to the next timer, so an engine that
/// never commits would otherwise spin forever (a write waits on a commit that never comes,
/// while the engine's ticks keep the clock moving): the deadline turns such a hang into a
/// failure within a second or two of real time.
pub fn run_local<F: std::future::Future<Output = ()>>(deadline: Duration, test: F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        if tokio::time::timeout(deadline, test).await.is_err() {
            panic!("the test did not finish within {deadline:?} of virtual time");
        }
    });
}
