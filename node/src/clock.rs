//! The engine's clock seam on the operating system: `Instant` for timers (never goes back),
//! `SystemTime` for the wall-clock stamps that TTLs are computed from.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conclave_core::seams::Clock;

#[derive(Clone, Debug)]
pub struct OsClock {
    origin: Instant,
}

impl OsClock {
    pub fn new() -> OsClock {
        OsClock { origin: Instant::now() }
    }
}

impl Default for OsClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for OsClock {
    fn monotonic_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn wall_ms(&self) -> u64 {
        // A clock set before 1970 reads as the epoch: TTLs then count from 0, which only makes
        // keys live longer, never shorter.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
    }

    async fn sleep_ms(&self, duration_ms: u64) {
        tokio::time::sleep(Duration::from_millis(duration_ms)).await
    }
}
