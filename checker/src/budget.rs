//! How much work a check may do before it answers "unknown".
//!
//! The step budget is deterministic (the simulator replays a seed and must get the same
//! verdict); the wall-clock deadline is optional, for people at a terminal.

use std::time::Instant;

/// Which budget ran out.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BudgetKind {
    /// The deterministic step budget (`CheckOptions::max_steps` / `minimize_max_steps`).
    Steps,
    /// The wall-clock budget (`CheckOptions::timeout`).
    Time,
}

impl BudgetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::Steps => "step budget exhausted",
            BudgetKind::Time => "time budget exhausted",
        }
    }
}

/// Reading the clock on every step would cost more than the step itself.
const STEPS_PER_CLOCK_READ: u64 = 4_096;

/// One step is one attempt to linearize one operation (one model transition tried).
#[derive(Debug)]
pub(crate) struct Budget {
    steps_left: u64,
    steps_used: u64,
    deadline: Option<Instant>,
}

impl Budget {
    pub(crate) fn new(max_steps: u64, deadline: Option<Instant>) -> Budget {
        Budget { steps_left: max_steps, steps_used: 0, deadline }
    }

    pub(crate) fn steps_used(&self) -> u64 {
        self.steps_used
    }

    /// A budget for part of the work: at most `max_steps` of what is left, same deadline.
    /// Its use is added back with [`Budget::charge`].
    pub(crate) fn child(&self, max_steps: u64) -> Budget {
        Budget::new(self.steps_left.min(max_steps), self.deadline)
    }

    /// Counts the steps a child budget used as used here.
    pub(crate) fn charge(&mut self, child: &Budget) {
        assert!(child.steps_used <= self.steps_left, "a child never has more than its parent");
        self.steps_left -= child.steps_used;
        self.steps_used += child.steps_used;
    }

    #[inline]
    pub(crate) fn tick(&mut self) -> Result<(), BudgetKind> {
        if self.steps_left == 0 {
            return Err(BudgetKind::Steps);
        }
        self.steps_left -= 1;
        self.steps_used += 1;
        if self.steps_used.is_multiple_of(STEPS_PER_CLOCK_READ) {
            self.check_deadline()?;
        }
        Ok(())
    }

    /// Also called between partitions, so that many tiny partitions still notice the deadline.
    pub(crate) fn check_deadline(&self) -> Result<(), BudgetKind> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(BudgetKind::Time),
            _ => Ok(()),
        }
    }
}
