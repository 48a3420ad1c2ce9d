//! Per-node disk fault switches, shared between the nemesis (which flips them) and the node's
//! simulated file system (which consults them on every operation). Faults stay on a minority
//! of nodes, drawn from the run's seed.

use std::cell::Cell;
use std::rc::Rc;

use crate::lost_tail::TailLoss;

#[derive(Clone, Debug, Default)]
pub struct DiskFaults {
    inner: Rc<DiskFaultState>,
}

#[derive(Debug, Default)]
struct DiskFaultState {
    io_error_permille: Cell<u32>,
    no_space: Cell<bool>,
    corrupt_read_permille: Cell<u32>,
    /// Synced records to lose before the node's next start (see `lost_tail.rs`).
    tail_loss: Cell<Option<TailLoss>>,
    /// How many faults actually hit an operation (for the run report).
    injected: Cell<u64>,
}

impl DiskFaults {
    pub fn set_io_error_permille(&self, permille: u32) {
        self.inner.io_error_permille.set(permille.min(1000));
    }

    pub fn set_no_space(&self, full: bool) {
        self.inner.no_space.set(full);
    }

    pub fn set_corrupt_read_permille(&self, permille: u32) {
        self.inner.corrupt_read_permille.set(permille.min(1000));
    }

    /// The node's next start finds its newest synced records gone (`lost_tail.rs`).
    pub fn plan_tail_loss(&self, plan: TailLoss) {
        self.inner.tail_loss.set(Some(plan));
    }

    pub fn take_tail_loss(&self) -> Option<TailLoss> {
        self.inner.tail_loss.take()
    }

    pub fn heal(&self) {
        self.inner.io_error_permille.set(0);
        self.inner.no_space.set(false);
        self.inner.corrupt_read_permille.set(0);
    }

    pub fn io_error_permille(&self) -> u32 {
        self.inner.io_error_permille.get()
    }

    pub fn no_space(&self) -> bool {
        self.inner.no_space.get()
    }

    pub fn corrupt_read_permille(&self) -> u32 {
        self.inner.corrupt_read_permille.get()
    }

    pub fn note_injected(&self) {
        self.inner.injected.set(self.inner.injected.get() + 1);
    }

    pub fn injected(&self) -> u64 {
        self.inner.injected.get()
    }
}
