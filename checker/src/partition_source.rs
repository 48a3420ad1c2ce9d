//! Where the checker takes its partitions from, one at a time, in the order it checks them.
//!
//! Two sources give the same partitions in the same order: [`SplitTable`], the partitions of
//! a table held whole in memory (`partition.rs` splits it), and the spilled partitions of a
//! file too large for that (`spilled_partitions.rs`), each read back from disk only while it
//! is checked. The check itself (`check.rs`) sees only a [`PartitionView`], so both give the
//! same report.

use std::convert::Infallible;

use crate::history::{History, OpIndex};
use crate::partition::{PartitionPlan, split};
use crate::table::Table;

/// One partition, ready to check.
pub(crate) struct PartitionView<'a> {
    /// Holds the partition's rows, perhaps among others.
    pub(crate) table: &'a Table<'a>,
    /// Sorted, distinct; empty only for the keyless partition (see `partition.rs`).
    pub(crate) keys: &'a [&'a str],
    /// Indexes into `table`, in call order (ties: history order).
    pub(crate) ops: &'a [usize],
    /// The history index of each row of `table`, ascending, when the table holds only this
    /// partition; `None` when table indexes are history indexes.
    pub(crate) history_indexes: Option<&'a [OpIndex]>,
}

impl PartitionView<'_> {
    /// The history index of row `index` of the table.
    pub(crate) fn history_index(&self, index: usize) -> OpIndex {
        match self.history_indexes {
            Some(indexes) => indexes[index],
            None => index,
        }
    }

    /// The partition's operations as a history of their own (call order, with their source
    /// lines), and the history index of each: what the report shows for a violation.
    pub(crate) fn shown(&self) -> (History, Vec<OpIndex>) {
        let indexes = self.ops.iter().map(|&index| self.history_index(index)).collect();
        (self.table.sub_history(self.ops), indexes)
    }
}

/// Partitions in check order: by operation count, ties in the order of their smallest key
/// (the keyless partition last), as `partition.rs` orders them.
pub(crate) trait PartitionSource {
    /// Why a partition could not be produced (reading it back from disk can fail).
    type Error;

    fn len(&self) -> usize;

    /// Calls `visit` with partition `position` (`< len()`). Any position may be visited again.
    fn visit<R>(
        &mut self,
        position: usize,
        visit: impl FnOnce(&PartitionView<'_>) -> R,
    ) -> Result<R, Self::Error>;
}

/// The partitions of a table held in memory.
pub(crate) struct SplitTable<'t> {
    table: &'t Table<'t>,
    plans: Vec<PartitionPlan<'t>>,
    /// Operations left out as unable to affect the verdict.
    pub(crate) dropped: usize,
}

impl<'t> SplitTable<'t> {
    pub(crate) fn new(table: &'t Table<'t>) -> SplitTable<'t> {
        let split = split(table);
        let mut plans = split.partitions;
        // Stable sort: equal sizes keep the partitioner's key order.
        plans.sort_by_key(|plan| plan.ops.len());
        SplitTable { table, plans, dropped: split.dropped }
    }
}

impl PartitionSource for SplitTable<'_> {
    type Error = Infallible;

    fn len(&self) -> usize {
        self.plans.len()
    }

    fn visit<R>(
        &mut self,
        position: usize,
        visit: impl FnOnce(&PartitionView<'_>) -> R,
    ) -> Result<R, Infallible> {
        let plan = &self.plans[position];
        Ok(visit(&PartitionView {
            table: self.table,
            keys: &plan.keys,
            ops: &plan.ops,
            history_indexes: None,
        }))
    }
}
