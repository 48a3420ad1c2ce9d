//! Per-node disk fault switches, shared between the nemesis (which flips them) and the node's
//! simulated file system (which consults them on every operation). Faults stay on a minority
//! of nodes, drawn from the run's seed.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use crate::at_rest_damage::{AtRestDamage, UnreadableBlock};
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
    tail_loss: RefCell<Option<TailLoss>>,
    /// Damage to apply to synced data before the node's next start (`at_rest_damage.rs`).
    at_rest_damage: Cell<Option<AtRestDamage>>,
    /// Whether data at rest was ever damaged (a refusal to start is then expected).
    damaged_at_rest: Cell<bool>,
    /// Blocks that fail every read until they are written again (latent sector errors).
    unreadable: RefCell<Vec<UnreadableBlock>>,
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
        *self.inner.tail_loss.borrow_mut() = Some(plan);
    }

    /// Whether the node's next start is to lose synced records (planned, not yet carried out).
    pub fn has_planned_tail_loss(&self) -> bool {
        self.inner.tail_loss.borrow().is_some()
    }

    pub fn take_tail_loss(&self) -> Option<TailLoss> {
        self.inner.tail_loss.borrow_mut().take()
    }

    /// The node's next start finds its synced data damaged (`at_rest_damage.rs`).
    pub fn plan_at_rest_damage(&self, damage: AtRestDamage) {
        self.inner.at_rest_damage.set(Some(damage));
    }

    pub fn take_at_rest_damage(&self) -> Option<AtRestDamage> {
        self.inner.at_rest_damage.take()
    }

    pub fn note_damaged_at_rest(&self, unreadable: Option<UnreadableBlock>) {
        self.inner.damaged_at_rest.set(true);
        self.inner.unreadable.borrow_mut().extend(unreadable);
    }

    pub fn damaged_at_rest(&self) -> bool {
        self.inner.damaged_at_rest.get()
    }

    /// Whether a read of `len_bytes` at `offset` of `path` hits a latent sector error.
    pub fn is_unreadable(&self, path: &Path, offset: u64, len_bytes: u64) -> bool {
        self.inner.unreadable.borrow().iter().any(|block| block.overlaps(path, offset, len_bytes))
    }

    /// A write remaps the sectors it covers: their latent errors are gone.
    pub fn on_written(&self, path: &Path, offset: u64, len_bytes: u64) {
        let mut unreadable = self.inner.unreadable.borrow_mut();
        if !unreadable.is_empty() {
            unreadable.retain(|block| {
                !(block.path == path
                    && offset <= block.offset
                    && block.offset + block.len_bytes <= offset + len_bytes)
            });
        }
    }

    /// A removed (or replaced) file takes its bad sectors with it.
    pub fn on_file_gone(&self, path: &Path) {
        self.inner.unreadable.borrow_mut().retain(|block| block.path != path);
    }

    /// Ends the transient faults (errors, a full disk, corrupted reads); damage at rest stays.
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
