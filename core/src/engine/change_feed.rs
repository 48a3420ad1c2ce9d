//! What the engine tells its change subscribers (the watch history): every change it applies,
//! in order, and every jump of the store past changes it never applied one by one — a
//! snapshot installed from the leader. Without the jump, a history would splice the changes
//! before the snapshot onto the ones after it, and a watch resumed across the splice would
//! silently miss the changes in between.

use crate::kv::KvEvent;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeFeed {
    Change(KvEvent),
    /// The store now stands at `revision` without having made the changes before it here.
    Skipped {
        revision: u64,
    },
}
