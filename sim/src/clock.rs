//! A node's clock in the simulation: simulated time seen through this node's offset, drift and
//! jumps. Raft's timers run on the drifting monotonic clock (so a fast clock makes a node time
//! out early — what threatens lease reads); TTL timestamps use the wall clock, which can also
//! jump.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use conclave_core::seams::Clock;

/// Parts-per-million scale of drift: +100_000 ppm runs 10% fast.
const PPM: i64 = 1_000_000;

/// The adjustable state of one node's clock, shared with the nemesis.
#[derive(Clone, Debug)]
pub struct ClockModel {
    /// Simulated milliseconds at the last change of drift.
    anchor_sim_ms: u64,
    /// This clock's monotonic reading at that moment.
    anchor_node_ms: u64,
    drift_ppm: i64,
    /// Wall clock = epoch + monotonic + offset (jumps change the offset).
    wall_offset_ms: i64,
    /// Every change of drift: (simulated ms, new drift in ppm), oldest first.
    drift_history: Vec<(u64, i64)>,
}

impl ClockModel {
    fn new() -> Self {
        ClockModel {
            anchor_sim_ms: 0,
            anchor_node_ms: 0,
            drift_ppm: 0,
            wall_offset_ms: 0,
            drift_history: Vec::new(),
        }
    }

    fn monotonic_at(&self, sim_ms: u64) -> u64 {
        let elapsed = sim_ms.saturating_sub(self.anchor_sim_ms) as i64;
        let scaled = elapsed + elapsed * self.drift_ppm / PPM;
        self.anchor_node_ms + scaled.max(0) as u64
    }
}

/// The clock handle a node's engine uses; the nemesis holds the same `Rc`.
#[derive(Clone, Debug)]
pub struct SimClock {
    model: Rc<RefCell<ClockModel>>,
    epoch_ms: u64,
}

/// Simulated time from turmoil (the current host's view; all hosts share the simulation time).
fn sim_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl SimClock {
    pub fn new(epoch_ms: u64) -> Self {
        SimClock { model: Rc::new(RefCell::new(ClockModel::new())), epoch_ms }
    }

    /// Changes the drift from simulated time `at_sim_ms` on; earlier readings are unaffected.
    pub fn set_drift(&self, at_sim_ms: u64, drift_ppm: i64) {
        let mut model = self.model.borrow_mut();
        let now_node = model.monotonic_at(at_sim_ms);
        model.anchor_sim_ms = at_sim_ms;
        model.anchor_node_ms = now_node;
        model.drift_ppm = drift_ppm.clamp(-PPM / 2, PPM);
        let drift = model.drift_ppm;
        model.drift_history.push((at_sim_ms, drift));
    }

    /// The largest drift (in absolute ppm) this clock had at any moment of the simulated
    /// interval `[from_ms, to_ms]`.
    pub fn max_drift_ppm_between(&self, from_ms: u64, to_ms: u64) -> i64 {
        let model = self.model.borrow();
        let mut in_force = 0;
        let mut largest = 0;
        for (at_ms, drift) in &model.drift_history {
            if *at_ms > to_ms {
                break;
            }
            if *at_ms <= from_ms {
                in_force = drift.abs();
            } else {
                largest = largest.max(drift.abs());
            }
        }
        largest.max(in_force)
    }

    /// Steps the wall clock by `delta_ms` (forwards or backwards).
    pub fn jump_wall(&self, delta_ms: i64) {
        self.model.borrow_mut().wall_offset_ms += delta_ms;
    }

    pub fn set_wall_offset(&self, offset_ms: i64) {
        self.model.borrow_mut().wall_offset_ms = offset_ms;
    }

    pub fn drift_ppm(&self) -> i64 {
        self.model.borrow().drift_ppm
    }
}

impl Clock for SimClock {
    fn monotonic_ms(&self) -> u64 {
        self.model.borrow().monotonic_at(sim_ms())
    }

    fn wall_ms(&self) -> u64 {
        let model = self.model.borrow();
        let wall =
            self.epoch_ms as i64 + model.monotonic_at(sim_ms()) as i64 + model.wall_offset_ms;
        wall.max(0) as u64
    }

    async fn sleep_ms(&self, duration_ms: u64) {
        // A clock running fast reaches `duration_ms` of its own time sooner in real time.
        let drift_ppm = self.model.borrow().drift_ppm;
        let real_ms = (duration_ms as i64 * PPM).div_euclid(PPM + drift_ppm).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(real_ms.max(if duration_ms > 0 { 1 } else { 0 })))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_scales_elapsed_time_from_the_anchor() {
        let mut model = ClockModel::new();
        assert_eq!(model.monotonic_at(1_000), 1_000);
        model.anchor_sim_ms = 1_000;
        model.anchor_node_ms = 1_000;
        model.drift_ppm = 100_000;
        assert_eq!(model.monotonic_at(2_000), 2_100, "10% fast");
        model.drift_ppm = -100_000;
        assert_eq!(model.monotonic_at(2_000), 1_900, "10% slow");
    }
}
