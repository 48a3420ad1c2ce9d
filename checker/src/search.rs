//! The linearizability search for one partition: Wing & Gong's algorithm with Lowe's
//! just-in-time linearization and memoization, as in porcupine, re-implemented here.
//!
//! The history is a doubly linked list of call and return events in time order. Scanning from
//! the head, the search may linearize any operation whose call it meets before the first return
//! in the list (those are exactly the operations that could take effect next without breaking
//! real-time order). Linearizing one applies it to the model state and *lifts* its call and
//! return out of the list; meeting a return whose operation is not yet linearized means the
//! current order is a dead end, so the search pops the last linearized operation, puts its
//! events back (*unlift*) and tries the next candidate. The memo cache prunes configurations
//! already explored.
//!
//! Optional operations need not be linearized at all:
//! - `info` operations (unknown outcome) have their return at +infinity, after every real
//!   return. Reaching the first +infinity return means every required operation has been
//!   placed, which is success.
//! - *relaxed* operations (only the minimizer asks for them: "whatever this operation did, if
//!   anything") keep their real return. Reaching the return of one that is not placed means it
//!   is left out from here on: it is lifted without effect, as a decision with no alternative
//!   (every placement before its return has been tried at this point).

use crate::budget::{Budget, BudgetKind};
use crate::cache::MemoCache;
use crate::linset::LinSet;
use crate::model::{PartitionModel, State};

/// The answer for one set of operations of a partition.
#[derive(Debug)]
pub(crate) enum SearchResult {
    Linearizable,
    Violation {
        /// A prefix of the searched operations (model indexes) that fails on its own: see
        /// [`frontier`]. The minimizer re-checks it before relying on it.
        frontier: Vec<u32>,
        /// The longest partial linearization found (model indexes, in order); filled only when
        /// asked for, because copying it costs time on large partitions.
        longest_prefix: Vec<u32>,
    },
    Unknown(BudgetKind),
}

pub(crate) struct SearchOptions {
    pub(crate) max_cache_bytes: usize,
    pub(crate) record_longest_prefix: bool,
}

/// A point the search can come back to.
struct Frame {
    /// Position of the operation in the searched subset.
    position: u32,
    /// The state's undo mark before the operation was applied.
    undo_mark: usize,
    /// A decision without alternatives (a forced move, or leaving out a relaxed operation):
    /// if what follows fails, the configuration before it fails.
    forced: bool,
}

/// Per subset position: how the operation takes part in the search.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Role {
    /// Must be linearized, and its outputs must match.
    Required,
    /// `info`: may be linearized at any time after its call (outputs unknown), or never.
    Open,
    /// Relaxed by the minimizer: may be linearized within its interval (outputs ignored), or
    /// never.
    Relaxed,
}

/// The event list. Entry `2n` is the sentinel (head and tail of the circular list).
struct EventList {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Per entry: the position (in the subset) of its operation, and whether it is a return.
    position: Vec<u32>,
    is_return: Vec<bool>,
    call_entry: Vec<u32>,
    return_entry: Vec<u32>,
    sentinel: u32,
}

impl EventList {
    fn new(model: &PartitionModel<'_>, subset: &[u32], roles: &[Role]) -> EventList {
        let count = subset.len();
        // Sort key: (is an open return, time, is a return, position). Calls sort before
        // returns at equal times because intervals are closed: two operations that meet at an
        // instant overlap. Open returns go after everything else.
        let mut keys: Vec<(bool, u64, bool, u32)> = Vec::with_capacity(2 * count);
        for (position, &op) in subset.iter().enumerate() {
            let position = position as u32;
            keys.push((false, model.calls[op as usize], false, position));
            match (roles[position as usize], model.rets[op as usize]) {
                (Role::Open, _) | (_, None) => keys.push((true, 0, true, position)),
                (Role::Required | Role::Relaxed, Some(ret)) => {
                    keys.push((false, ret, true, position))
                }
            }
        }
        keys.sort_unstable();
        let sentinel = (2 * count) as u32;
        let mut list = EventList {
            next: (1..=sentinel).chain([0]).collect(),
            prev: [sentinel].into_iter().chain(0..sentinel).collect(),
            position: Vec::with_capacity(2 * count),
            is_return: Vec::with_capacity(2 * count),
            call_entry: vec![0; count],
            return_entry: vec![0; count],
            sentinel,
        };
        for (entry, &(_, _, is_return, position)) in keys.iter().enumerate() {
            list.position.push(position);
            list.is_return.push(is_return);
            if is_return {
                list.return_entry[position as usize] = entry as u32;
            } else {
                list.call_entry[position as usize] = entry as u32;
            }
        }
        list
    }

    fn head(&self) -> u32 {
        self.next[self.sentinel as usize]
    }

    fn unlink(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = next;
        self.prev[next as usize] = prev;
    }

    /// Undoes `unlink(entry)`; valid only in reverse order of the unlinks (dancing links).
    fn relink(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = entry;
        self.prev[next as usize] = entry;
    }

    fn lift(&mut self, position: u32) {
        self.unlink(self.call_entry[position as usize]);
        self.unlink(self.return_entry[position as usize]);
    }

    fn unlift(&mut self, position: u32) {
        self.relink(self.return_entry[position as usize]);
        self.relink(self.call_entry[position as usize]);
    }
}

/// Per-fact counters for the dead-end rule: how many operations not yet decided may still
/// establish a fact, and how many required ones still need it.
struct FactCounters {
    producers_left: Vec<u32>,
    consumers_left: Vec<u32>,
    /// Facts whose consumers were ever found doomed, for the frontier.
    doomed: Vec<bool>,
}

impl FactCounters {
    fn new(model: &PartitionModel<'_>, subset: &[u32], roles: &[Role]) -> FactCounters {
        let count = model.dependencies.fact_count();
        let mut counters = FactCounters {
            producers_left: vec![0; count],
            consumers_left: vec![0; count],
            doomed: vec![false; count],
        };
        for (position, &op) in subset.iter().enumerate() {
            counters.adjust(model, op as usize, roles[position], |count| *count += 1);
        }
        counters
    }

    fn adjust(
        &mut self,
        model: &PartitionModel<'_>,
        op: usize,
        role: Role,
        change: impl Fn(&mut u32),
    ) {
        for &fact in model.dependencies.produces(op, role == Role::Required) {
            change(&mut self.producers_left[fact as usize]);
        }
        if role == Role::Required {
            for &fact in model.dependencies.requires(op) {
                change(&mut self.consumers_left[fact as usize]);
            }
        }
    }

    fn is_doomed(&mut self, fact: u32) -> bool {
        let fact = fact as usize;
        let doomed = self.producers_left[fact] == 0 && self.consumers_left[fact] > 0;
        self.doomed[fact] |= doomed;
        doomed
    }
}

/// The dead-end rule. After `op` took effect (counters already updated): if some value a slot
/// just lost, or that `op` wrote and then overwrote, is still needed by a required operation
/// not yet placed but can no longer be written by anyone, that operation can never take
/// effect, so no completion of this configuration exists. Detecting it here, instead of when
/// the search reaches that operation's return, saves exploring everything in between.
fn dead_end(
    model: &PartitionModel<'_>,
    op: usize,
    role: Role,
    state: &State,
    undo_mark: usize,
    counters: &mut FactCounters,
) -> bool {
    let dependencies = &model.dependencies;
    if dependencies.fact_count() == 0 {
        return false;
    }
    for &(slot, old) in state.undo_since(undo_mark) {
        if state.values()[slot as usize] != old
            && let Some(fact) = dependencies.fact_id(slot, old)
            && counters.is_doomed(fact)
        {
            return true;
        }
    }
    for &fact in dependencies.produces(op, role == Role::Required) {
        if counters.is_doomed(fact) && !state.holds_fact(dependencies, fact) {
            return true;
        }
    }
    false
}

/// What the search does next.
#[derive(Copy, Clone, Debug)]
enum Next {
    /// A configuration was just reached: check for success, look for a forced move.
    Enter,
    /// Try the candidate at this list entry, or act on the return there.
    Scan(u32),
    /// The current configuration has no (further) completion.
    Backtrack,
}

/// Searches for a linearization of the model operations `subset` (ascending, i.e. in call
/// order) of one partition. `relaxed` is empty, or says per position which operations are
/// relaxed (see the module documentation).
///
/// Two exact prunings on top of the memo cache:
/// - *Forced moves.* If a *pure* required operation (one that never changes the state where
///   it is valid: a read, a failed cas; see `PartitionModel::is_pure`) can take effect now,
///   some completion places it first if any completion exists: nothing still pending has to
///   precede it in real time (it is a candidate), and moving it to the front changes nothing
///   for the others. So it is placed without trying alternatives, and if that fails, the
///   configuration fails.
/// - *Dead ends*, see [`dead_end`].
pub(crate) fn search(
    model: &PartitionModel<'_>,
    subset: &[u32],
    relaxed: &[bool],
    options: &SearchOptions,
    budget: &mut Budget,
) -> SearchResult {
    assert!(subset.windows(2).all(|pair| pair[0] < pair[1]), "subset must ascend");
    assert!(subset.last().is_none_or(|&op| (op as usize) < model.len()));
    assert!(relaxed.is_empty() || relaxed.len() == subset.len());
    let roles: Vec<Role> = subset
        .iter()
        .enumerate()
        .map(|(position, &op)| {
            if model.is_optional(op as usize) {
                Role::Open
            } else if relaxed.get(position).copied().unwrap_or(false) {
                Role::Relaxed
            } else {
                Role::Required
            }
        })
        .collect();
    let mut list = EventList::new(model, subset, &roles);
    let mut state = State::new(model.keys.len());
    let mut decided = LinSet::new(subset.len());
    let mut cache = MemoCache::new(model.keys.len(), options.max_cache_bytes);
    let mut counters = FactCounters::new(model, subset, &roles);
    let mut stack: Vec<Frame> = Vec::with_capacity(subset.len());
    let mut longest_prefix: Vec<u32> = Vec::new();
    // The latest (in list order) return entry a scan had to stop at.
    let mut furthest_stop: u32 = 0;

    let mut next = Next::Enter;
    loop {
        next = match next {
            Next::Enter => {
                let head = list.head();
                if head == list.sentinel {
                    return SearchResult::Linearizable; // every event lifted: all decided
                }
                // Look for a forced move among the candidates: the calls before the first
                // return. The list is not empty, so that return exists.
                let mut scan = head;
                let mut forced = None;
                while !list.is_return[scan as usize] {
                    let position = list.position[scan as usize];
                    let op = subset[position as usize] as usize;
                    if roles[position as usize] == Role::Required && model.is_pure(op) {
                        if let Err(kind) = budget.tick() {
                            return SearchResult::Unknown(kind);
                        }
                        let undo_mark = state.mark();
                        let valid = model.apply(op, &mut state, true);
                        assert!(
                            !valid || !state.changed_since(undo_mark),
                            "pure ops change nothing"
                        );
                        state.rollback(undo_mark);
                        if valid {
                            forced = Some(position);
                            break;
                        }
                    }
                    scan = list.next[scan as usize];
                }
                match forced {
                    None => Next::Scan(head),
                    Some(position) => {
                        let op = subset[position as usize] as usize;
                        let undo_mark = state.mark();
                        let applied = model.apply(op, &mut state, true);
                        assert!(applied, "a forced move was checked a moment ago");
                        decided.insert(position);
                        if cache.insert_if_new(&decided, &state) {
                            counters.adjust(model, op, Role::Required, |count| *count -= 1);
                            stack.push(Frame { position, undo_mark, forced: true });
                            list.lift(position);
                            record_prefix(options, &stack, subset, &roles, &mut longest_prefix);
                            Next::Enter
                        } else {
                            // Explored before, and it failed then: so does this configuration.
                            decided.remove(position);
                            state.rollback(undo_mark);
                            Next::Backtrack
                        }
                    }
                }
            }
            Next::Scan(entry) => {
                assert_ne!(entry, list.sentinel, "a scan always meets a return first");
                let position = list.position[entry as usize];
                let role = roles[position as usize];
                if list.is_return[entry as usize] {
                    match role {
                        Role::Open => return SearchResult::Linearizable, // only optional left
                        Role::Required => {
                            furthest_stop = furthest_stop.max(entry);
                            Next::Backtrack
                        }
                        Role::Relaxed => {
                            // Every placement before its return was tried: leave it out.
                            let op = subset[position as usize] as usize;
                            decided.insert(position);
                            if cache.insert_if_new(&decided, &state) {
                                counters.adjust(model, op, role, |count| *count -= 1);
                                let undo_mark = state.mark();
                                stack.push(Frame { position, undo_mark, forced: true });
                                list.lift(position);
                                Next::Enter
                            } else {
                                decided.remove(position);
                                Next::Backtrack
                            }
                        }
                    }
                } else {
                    if let Err(kind) = budget.tick() {
                        return SearchResult::Unknown(kind);
                    }
                    let op = subset[position as usize] as usize;
                    let undo_mark = state.mark();
                    // An optional operation that would leave the state unchanged is never worth
                    // placing: leaving it out (always allowed) reaches the same state with
                    // fewer obligations, and it stays available for a later position.
                    let worth_it = model.apply(op, &mut state, role == Role::Required)
                        && (role == Role::Required || state.changed_since(undo_mark));
                    let mut placed = false;
                    if worth_it {
                        counters.adjust(model, op, role, |count| *count -= 1);
                        decided.insert(position);
                        if !dead_end(model, op, role, &state, undo_mark, &mut counters)
                            && cache.insert_if_new(&decided, &state)
                        {
                            stack.push(Frame { position, undo_mark, forced: false });
                            list.lift(position);
                            record_prefix(options, &stack, subset, &roles, &mut longest_prefix);
                            placed = true;
                        } else {
                            decided.remove(position);
                            counters.adjust(model, op, role, |count| *count += 1);
                        }
                    }
                    if placed {
                        Next::Enter
                    } else {
                        state.rollback(undo_mark);
                        Next::Scan(list.next[entry as usize])
                    }
                }
            }
            Next::Backtrack => loop {
                // Undo decisions until one leaves an untried alternative.
                let Some(frame) = stack.pop() else {
                    let frontier = frontier(model, subset, &list, furthest_stop, &counters);
                    return SearchResult::Violation { frontier, longest_prefix };
                };
                let op = subset[frame.position as usize] as usize;
                state.rollback(frame.undo_mark);
                decided.remove(frame.position);
                counters.adjust(model, op, roles[frame.position as usize], |count| *count += 1);
                list.unlift(frame.position);
                if !frame.forced {
                    break Next::Scan(list.next[list.call_entry[frame.position as usize] as usize]);
                }
            },
        };
    }
}

/// Keeps the longest sequence of placed required operations seen, for the explanation.
fn record_prefix(
    options: &SearchOptions,
    stack: &[Frame],
    subset: &[u32],
    roles: &[Role],
    longest: &mut Vec<u32>,
) {
    if !options.record_longest_prefix {
        return;
    }
    let placed = stack.iter().filter(|frame| roles[frame.position as usize] == Role::Required);
    if placed.clone().count() > longest.len() {
        longest.clear();
        longest.extend(placed.map(|frame| subset[frame.position as usize]));
    }
}

/// A prefix that fails on its own: the operations called before the latest return a scan had
/// to stop at, extended, for every fact a dead end found doomed, to the last operation needing
/// it (the dead-end rule looked at those too). Without relaxed operations the search on this
/// prefix makes the same decisions and fails the same way; the minimizer re-checks it anyway.
fn frontier(
    model: &PartitionModel<'_>,
    subset: &[u32],
    list: &EventList,
    furthest_stop: u32,
    counters: &FactCounters,
) -> Vec<u32> {
    let mut stop = furthest_stop;
    let mut uncovered = counters.doomed.clone();
    for (position, &op) in subset.iter().enumerate().rev() {
        for &fact in model.dependencies.requires(op as usize) {
            if uncovered[fact as usize] {
                uncovered[fact as usize] = false;
                stop = stop.max(list.call_entry[position] + 1);
            }
        }
    }
    subset
        .iter()
        .enumerate()
        .filter(|&(position, _)| list.call_entry[position] < stop)
        .map(|(_, &op)| op)
        .collect()
}
