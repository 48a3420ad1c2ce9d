//! Violations proved from the reads-from relation, each with a small certificate.
//!
//! When every present value of the key has at most one writer, what a completed operation read
//! names the write it read from, and a value, once overwritten, never comes back. Each rule
//! below is a pattern that no linearization can have, found in O(n log n). A certificate is a
//! set of completed operations that cannot be linearized *whatever the other operations did*
//! (each of them may take effect at any point of its own interval, with any outcome, or not at
//! all — the meaning of a failing set in `minimize.rs`): the argument of every rule uses only
//! the operations of its certificate, the fact that nothing else writes their values, and
//! the intervals of the writers of the values they read (a writer left out of a certificate
//! still has to take effect within its interval for its value to be read).
//!
//! "Whatever the other operations did" includes a completed *failed* cas or create outside the
//! certificate succeeding after all, and a delete that found nothing deleting: relaxed, an
//! operation's recorded outcome no longer holds. So an argument that a value is written once
//! adds to its certificate the failed cas that would write it (required, they write nothing),
//! and every delete counts as a possible source of "absent".
//!
//! "v held at an operation" means: the key holds v just before a completed read of v (or a
//! successful cas expecting v) takes effect, or just after a completed write of v.

use super::register::{ABSENT, Kind, NEVER, Pos, RegOp, Register, Val};
use crate::history::Time;

/// Which pattern proved a violation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// A completed operation read a value that no operation can ever have written.
    PhantomRead,
    /// A completed operation read a value before any write of it could take effect.
    ReadBeforeWrite,
    /// Two successful cas (or creates) expected the same value: the first overwrote it, and
    /// it never comes back.
    DoubleSuccess,
    /// A read saw a value after the key certainly held another one since that value was
    /// written, and it is never written again.
    StaleRead,
    /// A read found the key absent after it certainly held a value, and no delete could take
    /// effect in between.
    AbsentAfterWrite,
    /// A failed cas (or create) while the key certainly held its expected value throughout.
    FalseFailure,
    /// Two values each held both before and after the other (Gibbons and Korach's
    /// overlapping zones).
    Interleaved,
}

impl Rule {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rule::PhantomRead => "read of a value no operation can have written",
            Rule::ReadBeforeWrite => "read of a value before any write of it could take effect",
            Rule::DoubleSuccess => "two successful compare-and-sets of the same expected value",
            Rule::StaleRead => "stale read: the value had certainly been overwritten",
            Rule::AbsentAfterWrite => {
                "key read as absent after a write, with no delete that could come in between"
            }
            Rule::FalseFailure => {
                "failed compare-and-set while the key certainly held its expected value"
            }
            Rule::Interleaved => "two values each seen both before and after the other",
        }
    }
}

/// A proved violation: the rule and its operations (positions, ascending).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refutation {
    pub(crate) rule: Rule,
    pub(crate) ops: Vec<Pos>,
}

/// The first violation the rules find, smallest certificates first; `None` proves nothing.
pub(super) fn refute(register: &Register) -> Option<Refutation> {
    let facts = Facts::new(register);
    let found = facts
        .unreachable_reads()
        .or_else(|| facts.double_successes())
        .or_else(|| facts.chain_order())
        .or_else(|| facts.stale_reads())
        .or_else(|| facts.absent_after_write())
        .or_else(|| facts.absent_throughout())
        .or_else(|| facts.false_failures_of_absent())
        .or_else(|| facts.false_failures())
        .or_else(|| facts.interleaved())?;
    let (rule, ops) = found;
    Some(Refutation { rule, ops: facts.without_implied_writers(ops) })
}

/// For every prefix of a list sorted by return time, the two latest calls with different
/// values, so that a query can leave one value out.
struct LatestCalls {
    rets: Vec<Time>,
    best: Vec<[Option<(Time, Val, Pos)>; 2]>,
}

impl LatestCalls {
    /// `items`: (return, call, value, position).
    fn new(mut items: Vec<(Time, Time, Val, Pos)>) -> LatestCalls {
        items.sort_unstable_by_key(|&(ret, _, _, position)| (ret, position));
        let mut best = Vec::with_capacity(items.len());
        let mut top: [Option<(Time, Val, Pos)>; 2] = [None, None];
        for &(_, call, value, position) in &items {
            let candidate = (call, value, position);
            top = match top {
                [Some(first), second] if call > first.0 => {
                    if value == first.1 {
                        [Some(candidate), second]
                    } else {
                        [Some(candidate), Some(first)]
                    }
                }
                [Some(first), second] if value != first.1 => match second {
                    Some(second) if second.0 >= call => [Some(first), Some(second)],
                    _ => [Some(first), Some(candidate)],
                },
                [Some(first), second] => [Some(first), second],
                [None, _] => [Some(candidate), None],
            };
            best.push(top);
        }
        LatestCalls { rets: items.iter().map(|item| item.0).collect(), best }
    }

    /// Among the operations that returned strictly before `before` with a value other than
    /// `excluded`: the latest call, and whose it is.
    fn latest(&self, before: Time, excluded: Val) -> Option<(Time, Pos)> {
        let count = self.rets.partition_point(|&ret| ret < before);
        let top = self.best.get(count.checked_sub(1)?)?;
        top.iter()
            .flatten()
            .find(|(_, value, _)| *value != excluded)
            .map(|&(call, _, position)| (call, position))
    }
}

/// Operations that may change the key, sorted by call: for every prefix, the two latest
/// returns ([`NEVER`] for an unfinished one), so that a query can leave one out (the operation
/// being explained, when it is one of them).
struct LatestReturns {
    calls: Vec<Time>,
    latest_rets: Vec<[Option<(Time, Pos)>; 2]>,
}

impl LatestReturns {
    fn new(register: &Register, include: impl Fn(&RegOp) -> bool) -> LatestReturns {
        let mut calls = Vec::with_capacity(register.ops.len());
        let mut latest_rets = Vec::with_capacity(register.ops.len());
        let mut top: [Option<(Time, Pos)>; 2] = [None, None];
        // Positions are in call order, so the operations come out sorted by call.
        for (position, op) in register.ops.iter().enumerate() {
            if !include(op) {
                continue;
            }
            let entry = (op.ret, position as Pos);
            top = match top {
                [Some(first), _] if entry > first => [Some(entry), Some(first)],
                [Some(first), Some(second)] if entry > second => [Some(first), Some(entry)],
                [Some(first), None] => [Some(first), Some(entry)],
                [None, _] => [Some(entry), None],
                unchanged => unchanged,
            };
            calls.push(op.call);
            latest_rets.push(top);
        }
        LatestReturns { calls, latest_rets }
    }

    /// Whether one of the operations other than `excluded` can take effect strictly between
    /// `after` and `before`: one called by `before` that returns at `after` or later.
    fn may_act_between(&self, after: Time, before: Time, excluded: Option<Pos>) -> bool {
        let count = self.calls.partition_point(|&call| call <= before);
        let Some(top) = count.checked_sub(1).map(|last| self.latest_rets[last]) else {
            return false;
        };
        top.iter()
            .flatten()
            .find(|&&(_, position)| Some(position) != excluded)
            .is_some_and(|&(ret, _)| ret >= after)
    }

    fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// Per value: the completed operations at which the key certainly held it ("holders": its
/// completed writer, completed reads of it, successful cas expecting it).
#[derive(Clone, Default)]
struct Holders {
    /// The two earliest returns (position), for "held before" with one operation excluded.
    earliest_rets: [Option<(Time, Pos)>; 2],
    /// The latest call (position).
    latest_call: Option<(Time, Pos)>,
}

impl Holders {
    fn add(&mut self, op: &RegOp, position: Pos) {
        let entry = (op.ret, position);
        self.earliest_rets = match self.earliest_rets {
            [Some(first), _] if entry < first => [Some(entry), Some(first)],
            [Some(first), Some(second)] if entry < second => [Some(first), Some(entry)],
            [Some(first), None] => [Some(first), Some(entry)],
            [None, _] => [Some(entry), None],
            unchanged => unchanged,
        };
        if self.latest_call.is_none_or(|latest| (op.call, position) > latest) {
            self.latest_call = Some((op.call, position));
        }
    }

    /// A lower bound for the time of an operation of unknown outcome that must have taken
    /// effect holding the value, with the completed read that forces it standing in for it.
    fn add_call(&mut self, call: Time, stand_in: Pos) {
        if self.latest_call.is_none_or(|latest| (call, stand_in) > latest) {
            self.latest_call = Some((call, stand_in));
        }
    }

    /// The earliest return among the holders other than `excluded`.
    fn earliest_ret_except(&self, excluded: Pos) -> Option<(Time, Pos)> {
        self.earliest_rets.iter().flatten().find(|(_, position)| *position != excluded).copied()
    }
}

/// Everything the rules look up, computed once in O(n log n).
struct Facts<'r> {
    register: &'r Register,
    /// Per value: the earliest time the key can hold it, `None`: never (`ABSENT`: from the
    /// start).
    earliest: Vec<Option<Time>>,
    holders: Vec<Holders>,
    /// Per value: the first completed successful cas expecting it.
    first_success: Vec<Option<Pos>>,
    /// Completed operations after which the key certainly holds a known value.
    after: LatestCalls,
    /// Per value: the completed failed cas expecting it, as "held something else": sorted by
    /// return, each entry (return, the latest call so far and whose it is).
    failed_expecting: Vec<Vec<(Time, (Time, Pos))>>,
    /// Per value: the completed failed cas that would write it (in call order).
    failed_writing: Vec<Vec<Pos>>,
    /// Every delete: relaxed, even one that found nothing may delete.
    absence: LatestReturns,
    /// Every put, cas and create: relaxed, even a failed one may write.
    presence: LatestReturns,
    /// Completed operations after which the key is certainly absent (deletes, gets of
    /// nothing).
    absent_after: LatestCalls,
}

impl<'r> Facts<'r> {
    fn new(register: &'r Register) -> Facts<'r> {
        let count = register.value_count;
        let mut holders = vec![Holders::default(); count];
        let mut first_success: Vec<Option<Pos>> = vec![None; count];
        let mut failed_expecting: Vec<Vec<(Time, (Time, Pos))>> = vec![Vec::new(); count];
        let mut failed_writing: Vec<Vec<Pos>> = vec![Vec::new(); count];
        let mut after_items = Vec::with_capacity(register.ops.len());
        for (position, op) in register.ops.iter().enumerate() {
            let position = position as Pos;
            if !op.ok {
                continue;
            }
            if let Some(value) = op.reads() {
                holders[value as usize].add(op, position);
                if let Kind::Cas { success: Some(true), .. } = op.kind {
                    first_success[value as usize].get_or_insert(position);
                }
            }
            if let Some(value) = op.holds_after() {
                after_items.push((op.ret, op.call, value, position));
                if matches!(op.kind, Kind::Put { .. } | Kind::Cas { .. }) {
                    holders[value as usize].add(op, position);
                }
            }
            if let (Some(value), Kind::Cas { value: written, .. }) = (op.reads_not(), op.kind) {
                failed_expecting[value as usize].push((op.ret, (op.call, position)));
                failed_writing[written as usize].push(position);
            }
        }
        // An operation of unknown outcome that wrote a value a completed operation needs took
        // effect after its call, holding its value (and, for a cas, its expected value just
        // before). The needing read stands for it in certificates.
        for op in register.ops.iter().filter(|op| !op.ok) {
            let Some(value) = op.may_write().filter(|&value| value != ABSENT) else { continue };
            let Some(reader) = register.needed_by(value) else { continue };
            holders[value as usize].add_call(op.call, reader);
            if let Kind::Cas { expected, .. } = op.kind {
                holders[expected as usize].add_call(op.call, reader);
            }
        }
        for failed in &mut failed_expecting {
            failed.sort_unstable();
            let mut latest = (0, 0);
            for entry in failed.iter_mut() {
                latest = latest.max(entry.1);
                entry.1 = latest;
            }
        }
        Facts {
            register,
            earliest: earliest_times(register),
            holders,
            first_success,
            after: LatestCalls::new(after_items),
            failed_expecting,
            failed_writing,
            absence: LatestReturns::new(register, |op| matches!(op.kind, Kind::Delete { .. })),
            presence: LatestReturns::new(register, |op| {
                matches!(op.kind, Kind::Put { .. } | Kind::Cas { .. })
            }),
            absent_after: LatestCalls::new(
                register
                    .ops
                    .iter()
                    .enumerate()
                    .filter(|(_, op)| op.holds_after() == Some(ABSENT))
                    .map(|(position, op)| (op.ret, op.call, ABSENT, position as Pos))
                    .collect(),
            ),
        }
    }

    fn op(&self, position: Pos) -> &RegOp {
        self.register.op(position)
    }

    /// `ops` plus the completed failed cas that would write one of `values` and are called by
    /// `until`: relaxed, they could write it, so the certificate requires them as recorded.
    fn with_failed_writers(&self, mut ops: Vec<Pos>, values: &[Val], until: Time) -> Vec<Pos> {
        for &value in values {
            ops.extend(
                self.failed_writing[value as usize]
                    .iter()
                    .copied()
                    .take_while(|&position| self.op(position).call <= until),
            );
        }
        sorted(ops)
    }

    /// `value` and the values its writer needs first, through successful cas.
    fn chain(&self, value: Val) -> Vec<Val> {
        let mut values = vec![value];
        let mut current = value;
        while let Some(writer) = self.register.writer[current as usize]
            && let Kind::Cas { expected, .. } = self.op(writer).kind
            && expected != ABSENT
            && !values.contains(&expected)
        {
            values.push(expected);
            current = expected;
        }
        values
    }

    /// The values from what `reader` read back to `value`, through the cas that wrote them:
    /// each must be written once for the read to need `value`.
    fn values_between(&self, reader: Pos, value: Val) -> Vec<Val> {
        let mut values = Vec::new();
        let mut current = self.op(reader).reads();
        while let Some(held) = current
            && held != ABSENT
            && !values.contains(&held)
        {
            values.push(held);
            if held == value {
                break;
            }
            current =
                self.register.writer[held as usize].and_then(|writer| match self.op(writer).kind {
                    Kind::Cas { expected, .. } => Some(expected),
                    Kind::Get { .. } | Kind::Put { .. } | Kind::Delete { .. } => None,
                });
        }
        values
    }

    /// The latest return among `ops`, for the reach of `with_failed_writers`.
    fn latest_ret(&self, ops: &[Pos]) -> Time {
        ops.iter().map(|&position| self.op(position).ret).max().unwrap_or(0)
    }

    /// Completed reads of a present value that can never be written, or not before the read
    /// returned: the read alone fails, whatever the writers did within their intervals.
    fn unreachable_reads(&self) -> Option<(Rule, Vec<Pos>)> {
        self.register.ops.iter().enumerate().find_map(|(position, op)| {
            let value = op.reads().filter(|&value| value != ABSENT)?;
            let rule = match self.earliest[value as usize] {
                None => Rule::PhantomRead,
                Some(earliest) if op.ret < earliest => Rule::ReadBeforeWrite,
                Some(_) => return None,
            };
            let ops = self.with_failed_writers(vec![position as Pos], &self.chain(value), op.ret);
            Some((rule, ops))
        })
    }

    /// Two cas that both replaced the same value: completed successful ones, or ones of
    /// unknown outcome whose value a completed operation read (they must have succeeded; the
    /// read stands for them in the certificate). A present value is written once, and each of
    /// them replaces it. For "absent", a delete would have to take effect between them: with
    /// deletes in the partition only completed neighbours in call order are compared, which
    /// keeps it linear.
    fn double_successes(&self) -> Option<(Rule, Vec<Pos>)> {
        let deletes = !self.absence.is_empty();
        // Per expected value: the first replacement (its certificate op, and the values between
        // it and the read that stands for it).
        let mut seen: Vec<Option<(Pos, Vec<Val>)>> = vec![None; self.register.value_count];
        let mut previous_absent: Option<Pos> = None;
        for (position, op) in self.register.ops.iter().enumerate() {
            let position = position as Pos;
            let Kind::Cas { expected, value, success } = op.kind else { continue };
            let replacement = match (op.ok, success) {
                (true, Some(true)) => (position, Vec::new()),
                (false, _) => match self.register.needed_by(value) {
                    Some(reader) => (reader, self.values_between(reader, value)),
                    None => continue,
                },
                (true, _) => continue,
            };
            if expected != ABSENT || !deletes {
                if let Some(first) = &seen[expected as usize] {
                    let pair = vec![first.0, replacement.0];
                    let until = self.latest_ret(&pair);
                    let values: Vec<Val> = std::iter::once(expected)
                        .chain(first.1.iter().copied())
                        .chain(replacement.1)
                        .collect();
                    let ops = self.with_failed_writers(pair, &values, until);
                    return Some((Rule::DoubleSuccess, ops));
                }
                seen[expected as usize] = Some(replacement);
                continue;
            }
            if !op.ok {
                continue;
            }
            if let Some(first) = previous_absent {
                let earlier = self.op(first);
                // Call order: `earlier` was called first, so whichever took effect first did so
                // at or after its call, and the second by the later of the two returns.
                if !self.absence.may_act_between(earlier.call, earlier.ret.max(op.ret), None) {
                    return Some((Rule::DoubleSuccess, vec![first, position]));
                }
            }
            previous_absent = Some(position);
        }
        None
    }

    /// Values joined by successful cas follow each other in one order: each cas reads the
    /// value before it and writes the next, and no value comes back. A holder of a later value
    /// that returned before a holder of an earlier one was called is a stale read. Chains
    /// start at the initial absence when nothing can delete the key, and at values not written
    /// by a successful cas. (Run after `double_successes`: each value has one successor.)
    fn chain_order(&self) -> Option<(Rule, Vec<Pos>)> {
        let count = self.register.value_count;
        let deletes = !self.absence.is_empty();
        let mut successor: Vec<Option<Val>> = vec![None; count];
        let mut has_predecessor = vec![false; count];
        for op in &self.register.ops {
            let Kind::Cas { expected, value, success } = op.kind else { continue };
            let succeeded = success == Some(true) || (!op.ok && self.register.is_needed(value));
            if succeeded && (expected != ABSENT || !deletes) {
                if successor[expected as usize].is_some() {
                    return None; // two successors: not a chain, and refuted elsewhere
                }
                successor[expected as usize] = Some(value);
                has_predecessor[value as usize] = true;
            }
        }
        let mut visited = vec![false; count];
        for start in 0..count as Val {
            if has_predecessor[start as usize] || successor[start as usize].is_none() {
                continue;
            }
            if start == ABSENT && deletes {
                continue;
            }
            // Latest call among the holders of the values so far (and their values).
            let mut latest: Option<(Time, Pos)> = None;
            let mut values: Vec<Val> = Vec::new();
            let mut current = Some(start);
            while let Some(value) = current {
                if std::mem::replace(&mut visited[value as usize], true) {
                    break; // a loop of cas: never written, refuted elsewhere
                }
                values.push(value);
                let holders = &self.holders[value as usize];
                if let (Some((held_call, earlier)), Some((ret, later))) =
                    (latest, holders.earliest_rets[0])
                    && ret < held_call
                {
                    let pair = sorted(vec![earlier, later]);
                    let until = self.latest_ret(&pair);
                    return Some((Rule::StaleRead, self.with_failed_writers(pair, &values, until)));
                }
                if let Some(last) = holders.latest_call
                    && latest.is_none_or(|current| last > current)
                {
                    latest = Some(last);
                }
                current = successor[value as usize];
            }
        }
        None
    }

    /// A completed read of a present value v, and an operation that certainly saw another
    /// value, after v was certainly held and before the read began.
    fn stale_reads(&self) -> Option<(Rule, Vec<Pos>)> {
        for (position, read) in self.register.ops.iter().enumerate() {
            let position = position as Pos;
            let Some(value) = read.reads().filter(|&value| value != ABSENT) else { continue };
            // A successful cas expecting v replaced it: nothing reads v after it returned.
            if let Some(cas) = self.first_success[value as usize]
                && cas != position
                && self.op(cas).ret < read.call
            {
                let ops = self.with_failed_writers(vec![cas, position], &[value], read.ret);
                return Some((Rule::StaleRead, ops));
            }
            // The latest-called operation before the read that saw something other than v.
            let other = self.after.latest(read.call, value);
            let failed = latest_failed(&self.failed_expecting[value as usize], read.call);
            let Some((other_call, other)) = other.into_iter().chain(failed).max() else {
                continue;
            };
            // v certainly held before it: its completed writer returned before...
            let writer = self.register.writer[value as usize].map(|writer| self.op(writer));
            if writer.is_some_and(|writer| writer.ok && writer.ret < other_call) {
                let ops = self.with_failed_writers(vec![other, position], &[value], read.ret);
                return Some((Rule::StaleRead, ops));
            }
            // ...or some other operation that saw v returned before.
            if let Some((held_ret, holder)) =
                self.holders[value as usize].earliest_ret_except(position)
                && held_ret < other_call
            {
                let ops =
                    self.with_failed_writers(vec![holder, other, position], &[value], read.ret);
                return Some((Rule::StaleRead, ops));
            }
        }
        None
    }

    /// A completed read of "absent" after an operation that certainly saw a present value
    /// returned, with no delete that can take effect in between.
    fn absent_after_write(&self) -> Option<(Rule, Vec<Pos>)> {
        for (position, read) in self.register.ops.iter().enumerate() {
            if read.reads() != Some(ABSENT) {
                continue;
            }
            let Some((present_call, present)) = self.after.latest(read.call, ABSENT) else {
                continue;
            };
            if !self.absence.may_act_between(present_call, read.ret, Some(position as Pos)) {
                return Some((Rule::AbsentAfterWrite, vec![present, position as Pos]));
            }
        }
        None
    }

    /// A failed cas or create that expected "absent", or a delete that found the key, while
    /// the key was certainly absent throughout: from the start, or since an operation that
    /// left or saw it absent returned, nothing could write a value before it returned.
    fn absent_throughout(&self) -> Option<(Rule, Vec<Pos>)> {
        for (position, op) in self.register.ops.iter().enumerate() {
            let position = position as Pos;
            if op.reads_not() != Some(ABSENT) {
                continue;
            }
            if !self.presence.may_act_between(0, op.ret, Some(position)) {
                return Some((Rule::FalseFailure, vec![position]));
            }
            if let Some((since_call, since)) = self.absent_after.latest(op.call, Val::MAX)
                && !self.presence.may_act_between(since_call, op.ret, Some(position))
            {
                return Some((Rule::FalseFailure, vec![since, position]));
            }
        }
        None
    }

    /// A failed cas or create that expected "absent" (so the key was present when it took
    /// effect), and a later read of "absent", with no delete that can take effect between.
    fn false_failures_of_absent(&self) -> Option<(Rule, Vec<Pos>)> {
        let absent_reads: Vec<Pos> = (0..self.register.ops.len() as Pos)
            .filter(|&position| self.op(position).reads() == Some(ABSENT))
            .collect();
        // Suffix minimum of returns over the absent reads, which are in call order.
        let mut earliest_ret_from: Vec<(Time, Pos)> = vec![(NEVER, 0); absent_reads.len() + 1];
        for (slot, &position) in absent_reads.iter().enumerate().rev() {
            earliest_ret_from[slot] =
                earliest_ret_from[slot + 1].min((self.op(position).ret, position));
        }
        for (position, failed) in self.register.ops.iter().enumerate() {
            if failed.reads_not() != Some(ABSENT) || !matches!(failed.kind, Kind::Cas { .. }) {
                continue;
            }
            let first_after =
                absent_reads.partition_point(|&read| self.op(read).call <= failed.ret);
            let (read_ret, read) = earliest_ret_from[first_after];
            if read_ret == NEVER {
                continue;
            }
            if !self.absence.may_act_between(failed.call, read_ret, Some(read)) {
                return Some((Rule::FalseFailure, vec![position as Pos, read]));
            }
        }
        None
    }

    /// A failed cas expecting a present value v, with v certainly held before its call and
    /// after its return: v, written once, was held throughout.
    fn false_failures(&self) -> Option<(Rule, Vec<Pos>)> {
        for (position, failed) in self.register.ops.iter().enumerate() {
            let Some(value) = failed.reads_not().filter(|&value| value != ABSENT) else {
                continue;
            };
            let holders = &self.holders[value as usize];
            let (Some((before_ret, before)), Some((after_call, after))) =
                (holders.earliest_rets[0], holders.latest_call)
            else {
                continue;
            };
            if before_ret < failed.call && after_call > failed.ret {
                let triple = vec![before, after, position as Pos];
                let until = self.latest_ret(&triple);
                return Some((
                    Rule::FalseFailure,
                    self.with_failed_writers(triple, &[value], until),
                ));
            }
        }
        None
    }

    /// Two *groups* A and B, each held at an operation that returned before an operation that
    /// held the other was called (Gibbons and Korach's overlapping zones). A group is a value,
    /// or values joined by successful cas (a cas ends its expected value's time and starts its
    /// own: they follow each other with nothing in between), and the initial absence with the
    /// creates that replaced it when nothing can delete the key. A group's time is one stretch
    /// of every linearization, so A before B and B before A cannot both hold. Groups sorted by
    /// earliest return; for each B, the latest call among the other groups whose earliest
    /// return is before B's latest call.
    fn interleaved(&self) -> Option<(Rule, Vec<Pos>)> {
        let count = self.register.value_count;
        let deletes = !self.absence.is_empty();
        let mut group = crate::union_find::DisjointSets::new(count);
        // A cas of unknown outcome whose value is needed succeeded.
        for op in &self.register.ops {
            let Kind::Cas { expected, value, success } = op.kind else { continue };
            let succeeded = success == Some(true) || (!op.ok && self.register.is_needed(value));
            if succeeded && (expected != ABSENT || !deletes) {
                group.union(expected, value);
            }
        }
        // Per group root: earliest return (holder; `None` for the initial absence, which is
        // before everything) and latest call (holder), and its values.
        let mut earliest: Vec<Option<(Time, Option<Pos>)>> = vec![None; count];
        let mut latest: Vec<Option<(Time, Pos)>> = vec![None; count];
        for value in 0..count as Val {
            if value == ABSENT && deletes {
                continue;
            }
            let holders = &self.holders[value as usize];
            let root = group.find(value) as usize;
            let first = if value == ABSENT {
                Some((0, None))
            } else {
                holders.earliest_rets[0].map(|(ret, position)| (ret, Some(position)))
            };
            if let Some(first) = first
                && earliest[root].is_none_or(|current| first < current)
            {
                earliest[root] = Some(first);
            }
            if let Some(last) = holders.latest_call
                && latest[root].is_none_or(|current| last > current)
            {
                latest[root] = Some(last);
            }
        }
        // The values of two groups, for a certificate.
        let mut members = |a: usize, b: usize| -> Vec<Val> {
            (0..count as Val)
                .filter(|&value| {
                    let root = group.find(value) as usize;
                    (root == a || root == b) && (value != ABSENT || !deletes)
                })
                .collect()
        };
        let groups: Vec<(Time, Option<Pos>, Time, Pos, usize)> = (0..count)
            .filter_map(|root| match (earliest[root], latest[root]) {
                (Some((ret, first)), Some((call, last))) => Some((ret, first, call, last, root)),
                _ => None,
            })
            .collect();
        // The initial absence comes first: any other group with an operation that returned
        // before the initial group's latest call closes the cycle.
        if let Some(&(_, None, init_call, init_last, init_root)) =
            groups.iter().find(|group| group.1.is_none())
            && let Some(&(b_ret, Some(b_first), _, _, b_root)) = groups
                .iter()
                .filter(|group| group.1.is_some())
                .min_by_key(|group| (group.0, group.1))
            && b_ret < init_call
        {
            let ops = sorted(vec![b_first, init_last]);
            let values = members(init_root, b_root);
            let until = self.latest_ret(&ops);
            return Some((Rule::Interleaved, self.with_failed_writers(ops, &values, until)));
        }
        let latest_calls = LatestCalls::new(
            groups
                .iter()
                .enumerate()
                .map(|(index, &(ret, _, call, _, _))| (ret, call, index as Val, index as Pos))
                .collect(),
        );
        for (b, &(b_ret, b_first, b_call, b_last, b_root)) in groups.iter().enumerate() {
            let Some((a_call, a)) = latest_calls.latest(b_call, b as Val) else { continue };
            if a_call > b_ret {
                let (_, a_first, _, a_last, a_root) = groups[a as usize];
                let ops: Vec<Pos> =
                    [a_first, Some(b_last), b_first, Some(a_last)].into_iter().flatten().collect();
                let values = members(a_root, b_root);
                let ops = sorted(ops);
                let until = self.latest_ret(&ops);
                return Some((Rule::Interleaved, self.with_failed_writers(ops, &values, until)));
            }
        }
        None
    }

    /// A completed writer of v is implied by any other operation of the certificate that reads
    /// v: the read needs the write, which then takes effect within its interval whether or not
    /// it is part of the set (a relaxed cas still needs its expected value to write, so its
    /// read is implied too). Dropping it keeps the set failing and makes it smaller; writers
    /// are dropped one at a time, each implied by what is left.
    fn without_implied_writers(&self, mut ops: Vec<Pos>) -> Vec<Pos> {
        let mut slot = 0;
        while slot < ops.len() {
            let op = self.op(ops[slot]);
            let writes = match op.kind {
                Kind::Put { value } | Kind::Cas { value, success: Some(true), .. } if op.ok => {
                    Some(value)
                }
                Kind::Get { .. } | Kind::Put { .. } | Kind::Delete { .. } | Kind::Cas { .. } => {
                    None
                }
            };
            let implied = writes.is_some_and(|value| {
                ops.iter().any(|&other| other != ops[slot] && self.op(other).reads() == Some(value))
            });
            if implied {
                ops.remove(slot);
            } else {
                slot += 1;
            }
        }
        assert!(!ops.is_empty(), "the last operation left implies no other");
        ops
    }
}

/// Among failed cas expecting one value (see [`Facts::failed_expecting`]): the latest call of
/// those that returned strictly before `before`.
fn latest_failed(failed: &[(Time, (Time, Pos))], before: Time) -> Option<(Time, Pos)> {
    let count = failed.partition_point(|&(ret, _)| ret < before);
    count.checked_sub(1).map(|last| failed[last].1)
}

fn sorted(mut ops: Vec<Pos>) -> Vec<Pos> {
    ops.sort_unstable();
    ops.dedup();
    ops
}

/// Per value, the earliest time the key can hold it with every other operation left out: a
/// put or a create from its call; a cas once its expected value can be held, if that is before
/// it returns. Values that depend on each other in a loop (cas a→b, cas b→a) are never held.
fn earliest_times(register: &Register) -> Vec<Option<Time>> {
    #[derive(Copy, Clone, PartialEq, Eq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let count = register.value_count;
    let mut earliest: Vec<Option<Time>> = vec![None; count];
    let mut mark = vec![Mark::New; count];
    earliest[ABSENT as usize] = Some(0);
    mark[ABSENT as usize] = Mark::Done;
    // (value, its writer), for values written by a cas whose expected value is not known yet.
    let mut path: Vec<(Val, Pos)> = Vec::new();
    for start in 1..count as Val {
        // Follow "written by a cas expecting" links until a known value, a loop or the end;
        // iterative, because a chain of successful cas can be as long as the history.
        let mut value = start;
        let base = loop {
            match mark[value as usize] {
                Mark::Done => break earliest[value as usize],
                Mark::OnPath => break None,
                Mark::New => {}
            }
            let Some(writer_position) = register.writer[value as usize] else {
                mark[value as usize] = Mark::Done;
                break None;
            };
            let writer = register.op(writer_position);
            match writer.kind {
                Kind::Cas { expected, .. } if expected != ABSENT => {
                    mark[value as usize] = Mark::OnPath;
                    path.push((value, writer_position));
                    value = expected;
                }
                _ => {
                    mark[value as usize] = Mark::Done;
                    earliest[value as usize] = Some(writer.call);
                    break earliest[value as usize];
                }
            }
        };
        let mut held = base;
        while let Some((value, writer)) = path.pop() {
            let writer = register.op(writer);
            held = held.filter(|&time| time <= writer.ret).map(|time| time.max(writer.call));
            earliest[value as usize] = held;
            mark[value as usize] = Mark::Done;
        }
    }
    earliest
}
