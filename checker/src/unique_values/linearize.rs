//! Building a linearization of one key whose present values are each written at most once,
//! left to right, without search.
//!
//! With unique values a linearization is a sequence of *blocks*: a write, then the reads of
//! its value (a value, once overwritten, never comes back). A successful cas ends the block of
//! the value it expected and starts the block of its own value, so blocks joined by cas form
//! *chains* that must run back to back. Completed gets of a present value are pinned to the
//! block of that value. The rest is *flexible*: reads of "absent" fit in any block started by
//! a delete (or the initial one), and a failed cas fits in any block but its expected value's.
//!
//! The builder keeps Lowe's just-in-time view of time: an operation can be placed once no
//! unplaced completed operation returned before its call. Reads (pinned or flexible) are placed
//! as soon as they can be, which never hurts (they change nothing, and nothing has to precede
//! them any more). Only the choice of the next chain is a decision, and it follows the rule
//! that decides registers with unique values exactly (Gibbons and Korach; the decrease-and-
//! conquer view of Lee and Mathur): the next chain must be a *source* of the "must precede"
//! relation between chains — no other remaining chain has an operation that returned before
//! one of its operations was called. Without deletes and failed cas that rule alone is
//! complete (any order of sources works); with them, the builder also keeps the deadlines of
//! waiting flexible reads and prefers a delete when a read of "absent" is waiting, which is a
//! heuristic: the caller checks the result with `replay.rs` and falls back to the general
//! search when the builder gives up.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::register::{ABSENT, Kind, NEVER, Pos, RegOp, Register, Val};
use crate::history::Time;

/// How far the builder looks among chains that are sources but not the most urgent, before
/// giving up (the general search then decides): keeps the builder O(n log n).
const SOURCE_SCAN_MAX: usize = 256;

/// A linearization of the key's operations (positions in order; operations of unknown outcome
/// that are not needed are left out), or `None` if the builder found none.
pub(super) fn linearize(register: &Register) -> Option<Vec<Pos>> {
    [Policy::DeletesLate, Policy::DeletesEarly]
        .into_iter()
        .find_map(|policy| Builder::new(register, policy)?.run())
}

/// When to start a delete that can start but is not needed yet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Policy {
    /// As late as its interval allows: it may still serve a later read of "absent".
    DeletesLate,
    /// At once if the key is absent anyway: it then wipes nothing.
    DeletesEarly,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Role {
    /// Starts block `block` (a chain's head, or the cas continuing one).
    Writer { block: u32 },
    /// A completed get of the value of block `block`.
    Member { block: u32 },
    /// A completed operation that needs the key absent (a get of nothing, a delete that found
    /// nothing); a successful create is a chain head instead.
    AbsentReader,
    /// A completed failed cas or create: the key did not hold `value`.
    NotHolding { value: Val },
    /// An operation of unknown outcome that no completed operation needs: left out unless a
    /// waiting flexible read needs the key to change.
    Extra,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stage {
    Waiting,
    Current,
    Done,
}

#[derive(Debug)]
struct Block {
    writer: Pos,
    value: Val,
    chain: u32,
    /// Members not placed yet.
    members_left: u32,
    /// Members that could be placed but whose block has not started.
    waiting: Vec<Pos>,
    /// The block a cas expecting this block's value starts.
    successor: Option<u32>,
    stage: Stage,
}

#[derive(Debug)]
struct Chain {
    head: u32,
    /// Earliest return and latest call over the completed operations of all its blocks.
    earliest_ret: Time,
    latest_call: Time,
    /// Its only value, when it has a single block (for the deadlines of failed cas).
    single_value: Option<Val>,
}

/// What the head of a chain needs the key to be when it starts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Precondition {
    Any,
    Absent,
    Present,
}

struct Builder<'r> {
    register: &'r Register,
    policy: Policy,
    roles: Vec<Role>,
    blocks: Vec<Block>,
    chains: Vec<Chain>,
    /// Chains not started: by earliest return, by latest call, and the absent ones (deletes).
    by_earliest_ret: BTreeSet<(Time, u32)>,
    by_latest_call: BTreeSet<(Time, u32)>,
    deletes: BTreeSet<(Time, u32)>,
    /// Chains not started whose head needs the key absent (a create, a cas expecting absence).
    creates: BTreeSet<(Time, u32)>,
    /// Completed operations not placed, by return (lazily cleaned).
    unplaced_rets: BinaryHeap<Reverse<(Time, Pos)>>,
    /// Flexible reads of "absent" not placed, by return (lazily cleaned).
    absent_reader_rets: BinaryHeap<Reverse<(Time, Pos)>>,
    /// Per value: failed cas expecting it, by return, and how many of the front are placed.
    not_holding: Vec<Vec<(Time, Pos)>>,
    not_holding_front: Vec<usize>,
    placed: Vec<bool>,
    available: Vec<bool>,
    required_left: usize,
    next_call: usize,
    current: Val,
    current_block: Option<u32>,
    /// Available flexible reads that the current value does not allow.
    absent_waiting: Vec<Pos>,
    not_holding_waiting: Vec<Pos>,
    extras: Vec<Pos>,
    order: Vec<Pos>,
}

impl<'r> Builder<'r> {
    fn new(register: &'r Register, policy: Policy) -> Option<Builder<'r>> {
        let ops = &register.ops;
        let needed = register.needed_values();
        let mut roles = vec![Role::Extra; ops.len()];
        let mut block_of_value: Vec<Option<u32>> = vec![None; register.value_count];
        let mut blocks: Vec<Block> = Vec::new();
        // Blocks: every completed write, the unknown-outcome writes whose value is read.
        for (position, op) in ops.iter().enumerate() {
            let writes = match op.kind {
                Kind::Put { value } | Kind::Cas { value, success: Some(true) | None, .. } => {
                    Some(value)
                }
                Kind::Delete { found } if !op.ok || found != Some(false) => Some(ABSENT),
                Kind::Get { .. } | Kind::Delete { .. } | Kind::Cas { .. } => None,
            };
            let Some(value) = writes else { continue };
            if !op.ok && (value == ABSENT || !needed[value as usize]) {
                continue; // an Extra
            }
            let block = blocks.len() as u32;
            if value != ABSENT {
                block_of_value[value as usize] = Some(block);
            }
            roles[position] = Role::Writer { block };
            blocks.push(Block {
                writer: position as Pos,
                value,
                chain: u32::MAX,
                members_left: 0,
                waiting: Vec::new(),
                successor: None,
                stage: Stage::Waiting,
            });
        }
        // Members, successors and flexible reads.
        for (position, op) in ops.iter().enumerate() {
            if !op.ok {
                // A needed cas of unknown outcome continues the block of its expected value.
                if let (Role::Writer { block }, Kind::Cas { expected, .. }) =
                    (roles[position], op.kind)
                    && expected != ABSENT
                {
                    let previous = block_of_value[expected as usize]?;
                    if blocks[previous as usize].successor.replace(block).is_some() {
                        return None;
                    }
                }
                continue;
            }
            match op.kind {
                Kind::Get { value } if value == ABSENT => roles[position] = Role::AbsentReader,
                Kind::Get { value } => {
                    let block = block_of_value[value as usize]?;
                    roles[position] = Role::Member { block };
                    blocks[block as usize].members_left += 1;
                }
                Kind::Delete { found: Some(false) } => roles[position] = Role::AbsentReader,
                Kind::Cas { expected, success: Some(true), .. } if expected != ABSENT => {
                    let Role::Writer { block } = roles[position] else {
                        unreachable!("a completed successful cas is a writer");
                    };
                    let previous = block_of_value[expected as usize]?;
                    if blocks[previous as usize].successor.replace(block).is_some() {
                        return None; // two cas replacing one value: refuted elsewhere
                    }
                }
                Kind::Cas { expected, success: Some(false), .. } => {
                    roles[position] = Role::NotHolding { value: expected };
                }
                Kind::Put { .. } | Kind::Delete { .. } | Kind::Cas { .. } => {}
            }
        }
        // Chains: from every block that does not continue another one.
        let mut is_successor = vec![false; blocks.len()];
        for block in &blocks {
            if let Some(next) = block.successor {
                is_successor[next as usize] = true;
            }
        }
        let mut chains: Vec<Chain> = Vec::new();
        for head in 0..blocks.len() as u32 {
            if is_successor[head as usize] {
                continue;
            }
            let chain = chains.len() as u32;
            let mut earliest_ret = NEVER;
            let mut latest_call = 0;
            let mut length = 0usize;
            let mut block = Some(head);
            while let Some(current) = block {
                let entry = &mut blocks[current as usize];
                if entry.chain != u32::MAX {
                    return None; // a loop of cas: never startable
                }
                entry.chain = chain;
                let writer = &ops[entry.writer as usize];
                latest_call = latest_call.max(writer.call);
                earliest_ret = earliest_ret.min(writer.ret);
                length += 1;
                block = entry.successor;
            }
            chains.push(Chain {
                head,
                earliest_ret,
                latest_call,
                single_value: (length == 1).then_some(blocks[head as usize].value),
            });
        }
        for (position, role) in roles.iter().enumerate() {
            if let Role::Member { block } = *role {
                let chain = &mut chains[blocks[block as usize].chain as usize];
                chain.earliest_ret = chain.earliest_ret.min(ops[position].ret);
                chain.latest_call = chain.latest_call.max(ops[position].call);
            }
        }
        if blocks.iter().any(|block| block.chain == u32::MAX) {
            return None; // blocks only reachable through a loop of cas
        }

        let mut not_holding: Vec<Vec<(Time, Pos)>> = vec![Vec::new(); register.value_count];
        let mut unplaced_rets = BinaryHeap::new();
        let mut absent_reader_rets = BinaryHeap::new();
        let mut required_left = 0;
        for (position, op) in ops.iter().enumerate() {
            let position = position as Pos;
            if op.ok {
                required_left += 1;
                unplaced_rets.push(Reverse((op.ret, position)));
            }
            match roles[position as usize] {
                Role::AbsentReader => absent_reader_rets.push(Reverse((op.ret, position))),
                Role::NotHolding { value } => not_holding[value as usize].push((op.ret, position)),
                Role::Writer { .. } | Role::Member { .. } | Role::Extra => {}
            }
        }
        for list in &mut not_holding {
            list.sort_unstable();
        }
        let mut by_earliest_ret = BTreeSet::new();
        let mut by_latest_call = BTreeSet::new();
        let mut deletes = BTreeSet::new();
        let mut creates = BTreeSet::new();
        for (id, chain) in chains.iter().enumerate() {
            let id = id as u32;
            by_earliest_ret.insert((chain.earliest_ret, id));
            by_latest_call.insert((chain.latest_call, id));
            let head = &blocks[chain.head as usize];
            if head.value == ABSENT {
                deletes.insert((chain.earliest_ret, id));
            }
            if let Kind::Cas { expected: ABSENT, .. } = ops[head.writer as usize].kind {
                creates.insert((chain.earliest_ret, id));
            }
        }
        Some(Builder {
            register,
            policy,
            roles,
            blocks,
            chains,
            by_earliest_ret,
            by_latest_call,
            deletes,
            creates,
            unplaced_rets,
            absent_reader_rets,
            not_holding_front: vec![0; register.value_count],
            not_holding,
            placed: vec![false; ops.len()],
            available: vec![false; ops.len()],
            required_left,
            next_call: 0,
            current: ABSENT,
            current_block: None,
            absent_waiting: Vec::new(),
            not_holding_waiting: Vec::new(),
            extras: Vec::new(),
            order: Vec::with_capacity(ops.len()),
        })
    }

    fn op(&self, position: Pos) -> &'r RegOp {
        self.register.op(position)
    }

    /// The earliest return among unplaced completed operations: every operation called by
    /// then may be placed next.
    fn horizon(&mut self) -> Time {
        while let Some(&Reverse((ret, position))) = self.unplaced_rets.peek() {
            if !self.placed[position as usize] {
                return ret;
            }
            self.unplaced_rets.pop();
        }
        NEVER
    }

    fn earliest_absent_reader_ret(&mut self) -> Time {
        while let Some(&Reverse((ret, position))) = self.absent_reader_rets.peek() {
            if !self.placed[position as usize] {
                return ret;
            }
            self.absent_reader_rets.pop();
        }
        NEVER
    }

    fn earliest_not_holding_ret(&mut self, value: Val) -> Time {
        let list = &self.not_holding[value as usize];
        let front = &mut self.not_holding_front[value as usize];
        while *front < list.len() && self.placed[list[*front].1 as usize] {
            *front += 1;
        }
        list.get(*front).map_or(NEVER, |&(ret, _)| ret)
    }

    fn place(&mut self, position: Pos) {
        assert!(!self.placed[position as usize], "placed twice");
        self.placed[position as usize] = true;
        self.order.push(position);
        if self.op(position).ok {
            self.required_left -= 1;
        }
        if let Role::Member { block } = self.roles[position as usize] {
            self.blocks[block as usize].members_left -= 1;
        }
    }

    /// The operation at `position` can now be placed as far as time goes. `false`: it is a
    /// read of a value whose block is over, so this order fails.
    fn make_available(&mut self, position: Pos) -> bool {
        self.available[position as usize] = true;
        match self.roles[position as usize] {
            Role::Writer { .. } => {}
            Role::Member { block } => match self.blocks[block as usize].stage {
                Stage::Current => self.place(position),
                Stage::Waiting => self.blocks[block as usize].waiting.push(position),
                Stage::Done => return false,
            },
            Role::AbsentReader => {
                if self.current == ABSENT {
                    self.place(position);
                } else {
                    self.absent_waiting.push(position);
                }
            }
            Role::NotHolding { value } => {
                if self.current != value {
                    self.place(position);
                } else {
                    self.not_holding_waiting.push(position);
                }
            }
            Role::Extra => self.extras.push(position),
        }
        true
    }

    /// The key now holds `value` (written by the operation just placed): place what waited
    /// for that.
    fn set_current(&mut self, value: Val, block: Option<u32>) {
        if let Some(previous) = self.current_block {
            self.blocks[previous as usize].stage = Stage::Done;
        }
        self.current = value;
        self.current_block = block;
        if let Some(block) = block {
            self.blocks[block as usize].stage = Stage::Current;
            for position in std::mem::take(&mut self.blocks[block as usize].waiting) {
                self.place(position);
            }
        }
        if value == ABSENT {
            for position in std::mem::take(&mut self.absent_waiting) {
                self.place(position);
            }
        }
        let waiting = std::mem::take(&mut self.not_holding_waiting);
        for position in waiting {
            match self.roles[position as usize] {
                Role::NotHolding { value: expected } if expected != value => self.place(position),
                _ => self.not_holding_waiting.push(position),
            }
        }
    }

    fn start_block(&mut self, block: u32) {
        let (writer, value) =
            (self.blocks[block as usize].writer, self.blocks[block as usize].value);
        assert!(self.available[writer as usize], "a block starts once its writer may");
        self.place(writer);
        self.set_current(value, Some(block));
    }

    fn start_chain(&mut self, chain: u32) {
        let entry = &self.chains[chain as usize];
        let key_ret = (entry.earliest_ret, chain);
        self.by_earliest_ret.remove(&key_ret);
        self.by_latest_call.remove(&(entry.latest_call, chain));
        self.deletes.remove(&key_ret);
        self.creates.remove(&key_ret);
        let head = entry.head;
        self.start_block(head);
    }

    fn precondition(&self, chain: u32) -> Precondition {
        let writer = self.op(self.blocks[self.chains[chain as usize].head as usize].writer);
        match writer.kind {
            Kind::Cas { expected: ABSENT, .. } => Precondition::Absent,
            Kind::Delete { found: Some(true) } => Precondition::Present,
            Kind::Get { .. } | Kind::Put { .. } | Kind::Delete { .. } | Kind::Cas { .. } => {
                Precondition::Any
            }
        }
    }

    fn precondition_holds(&self, chain: u32) -> bool {
        match self.precondition(chain) {
            Precondition::Any => true,
            Precondition::Absent => self.current == ABSENT,
            Precondition::Present => self.current != ABSENT,
        }
    }

    /// Whether chain `chain` can start now: its head may be placed, the key is as it needs,
    /// no other remaining chain has an operation that must precede one of its operations
    /// (`others_earliest_ret`), and no flexible read it cannot host has to precede one either.
    fn can_start(&mut self, chain: u32, others_earliest_ret: Time) -> bool {
        let head_writer = self.blocks[self.chains[chain as usize].head as usize].writer;
        if !self.available[head_writer as usize] || !self.precondition_holds(chain) {
            return false;
        }
        let latest_call = self.chains[chain as usize].latest_call;
        if latest_call > others_earliest_ret {
            return false;
        }
        let first_value = self.blocks[self.chains[chain as usize].head as usize].value;
        if first_value != ABSENT && latest_call > self.earliest_absent_reader_ret() {
            return false;
        }
        match self.chains[chain as usize].single_value {
            Some(value) => latest_call <= self.earliest_not_holding_ret(value),
            None => true,
        }
    }

    /// The earliest return among remaining chains other than `chain`.
    fn others_earliest_ret(&self, chain: u32) -> Time {
        self.by_earliest_ret
            .iter()
            .find(|&&(_, other)| other != chain)
            .map_or(NEVER, |&(ret, _)| ret)
    }

    fn is_delete(&self, chain: u32) -> bool {
        self.blocks[self.chains[chain as usize].head as usize].value == ABSENT
    }

    /// The next chain to start, or an unneeded operation of unknown outcome to place.
    ///
    /// Among chains that can start, the order matters only through flexible reads and through
    /// what a head needs (absence for a create, presence for a delete that found something).
    /// A delete starts a block nothing is pinned to: placed early it may waste itself on a key
    /// already absent, placed late it may wipe a value a failed create needed; the two
    /// policies try each.
    fn choose(&mut self) -> Option<Next> {
        let most_urgent = self.by_earliest_ret.first().copied();
        let limit = most_urgent.map_or(NEVER, |(ret, _)| ret);
        let urgent_can_start = most_urgent.is_some_and(|(_, urgent)| {
            let second = self.others_earliest_ret(urgent);
            self.can_start(urgent, second)
        });
        let urgent_delete = most_urgent.is_some_and(|(_, urgent)| self.is_delete(urgent));
        // A delete costs nothing while the key is absent anyway.
        if self.policy == Policy::DeletesEarly
            && self.current == ABSENT
            && let Some(next) = self.a_startable_delete()
        {
            return Some(next);
        }
        // While the key is absent, a create that can start does: any other write would make
        // it wait for a delete, and without one left it could never succeed.
        if self.current == ABSENT {
            let creates: Vec<u32> =
                self.creates.iter().take(SOURCE_SCAN_MAX).map(|&(_, chain)| chain).collect();
            for chain in creates {
                let others = self.others_earliest_ret(chain);
                if self.can_start(chain, others) {
                    return Some(Next::Chain(chain));
                }
            }
        }
        if !self.absent_waiting.is_empty()
            && let Some(next) = self.a_delete()
        {
            return Some(next);
        }
        // Another source: its latest call is not after the most urgent earliest return.
        let candidates: Vec<u32> = self
            .by_latest_call
            .iter()
            .take(SOURCE_SCAN_MAX)
            .take_while(|&&(call, _)| call <= limit)
            .map(|&(_, chain)| chain)
            .filter(|&chain| Some(chain) != most_urgent.map(|(_, urgent)| urgent))
            .collect();
        // A value some failed cas expects goes first, so that a later write can replace it
        // before those reads must be done; the earliest such deadline first.
        let mut expected_soonest: Option<(Time, u32)> = None;
        for chain in most_urgent.map(|(_, urgent)| urgent).into_iter().chain(candidates.clone()) {
            let Some(value) = self.chains[chain as usize].single_value else { continue };
            let deadline = self.earliest_not_holding_ret(value);
            let others = if Some(chain) == most_urgent.map(|(_, urgent)| urgent) {
                self.others_earliest_ret(chain)
            } else {
                limit
            };
            if deadline != NEVER
                && expected_soonest.is_none_or(|(soonest, _)| deadline < soonest)
                && self.can_start(chain, others)
            {
                expected_soonest = Some((deadline, chain));
            }
        }
        if let Some((_, chain)) = expected_soonest {
            return Some(Next::Chain(chain));
        }
        if urgent_can_start && !(urgent_delete && self.policy == Policy::DeletesLate) {
            return most_urgent.map(|(_, urgent)| Next::Chain(urgent));
        }
        // Writes of a value before deletes.
        for deletes in [false, true] {
            for &chain in &candidates {
                if self.is_delete(chain) == deletes && self.can_start(chain, limit) {
                    return Some(Next::Chain(chain));
                }
            }
            if deletes && urgent_can_start {
                return most_urgent.map(|(_, urgent)| Next::Chain(urgent));
            }
        }
        // The most urgent chain waits for the key to be absent, or present.
        if let Some((_, urgent)) = most_urgent {
            match self.precondition(urgent) {
                Precondition::Absent if self.current != ABSENT => {
                    if let Some(next) = self.a_delete() {
                        return Some(next);
                    }
                }
                Precondition::Present if self.current == ABSENT => {
                    if let Some(next) = self.an_extra(false) {
                        return Some(next);
                    }
                }
                Precondition::Absent | Precondition::Present | Precondition::Any => {}
            }
        }
        // A waiting flexible read needs the key to change, and only an operation of unknown
        // outcome can do it.
        if !self.absent_waiting.is_empty() || !self.not_holding_waiting.is_empty() {
            return self.an_extra(!self.absent_waiting.is_empty());
        }
        None
    }

    /// A delete that can start now.
    fn a_startable_delete(&mut self) -> Option<Next> {
        let deletes: Vec<u32> =
            self.deletes.iter().take(SOURCE_SCAN_MAX).map(|&(_, chain)| chain).collect();
        deletes
            .into_iter()
            .find(|&chain| {
                let others = self.others_earliest_ret(chain);
                self.can_start(chain, others)
            })
            .map(Next::Chain)
    }

    /// A delete that can start now, or else an unneeded delete of unknown outcome.
    fn a_delete(&mut self) -> Option<Next> {
        if let Some(next) = self.a_startable_delete() {
            return Some(next);
        }
        self.extras
            .iter()
            .copied()
            .find(|&position| {
                !self.placed[position as usize]
                    && matches!(self.op(position).kind, Kind::Delete { .. })
            })
            .map(Next::Extra)
    }

    /// An unneeded operation of unknown outcome that changes the key now: to absent if
    /// `wants_absent`, else to some present value.
    fn an_extra(&self, wants_absent: bool) -> Option<Next> {
        self.extras
            .iter()
            .copied()
            .find(|&position| {
                if self.placed[position as usize] {
                    return false;
                }
                match self.op(position).kind {
                    Kind::Delete { .. } => wants_absent && self.current != ABSENT,
                    _ if wants_absent => false,
                    Kind::Put { .. } => true,
                    Kind::Cas { expected, .. } => expected == self.current,
                    Kind::Get { .. } => false,
                }
            })
            .map(Next::Extra)
    }

    fn run(&mut self) -> Option<Vec<Pos>> {
        let ops = &self.register.ops;
        loop {
            // Everything called by the horizon may be placed; placing reads moves it.
            loop {
                let horizon = self.horizon();
                if self.next_call >= ops.len() || ops[self.next_call].call > horizon {
                    break;
                }
                let position = self.next_call as Pos;
                self.next_call += 1;
                if !self.make_available(position) {
                    return None;
                }
            }
            if self.required_left == 0 {
                return Some(std::mem::take(&mut self.order));
            }
            // A value never comes back: its block must be complete before the next starts.
            if let Some(block) = self.current_block {
                let block = &self.blocks[block as usize];
                if block.members_left > 0 {
                    return None;
                }
                if let Some(next) = block.successor {
                    if !self.available[self.blocks[next as usize].writer as usize] {
                        return None;
                    }
                    self.start_block(next);
                    continue;
                }
            }
            match self.choose()? {
                Next::Chain(chain) => self.start_chain(chain),
                Next::Extra(position) => {
                    let value = self.op(position).may_write().unwrap_or(ABSENT);
                    self.place(position);
                    self.set_current(value, None);
                }
            }
        }
    }
}

enum Next {
    Chain(u32),
    Extra(Pos),
}
