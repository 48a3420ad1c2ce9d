//! Building a linearization of one key whose present values are each written at most once.
//!
//! With unique values a linearization is a sequence of *blocks*: a write, then the reads of
//! its value (a value, once overwritten, never comes back). A successful cas ends the block of
//! the value it expected and starts the block of its own value, so blocks joined by cas form
//! *chains* that run back to back. Completed gets of a present value are pinned to the block of
//! that value. The rest is *flexible*: reads of "absent" fit in any block started by a delete
//! (or the initial one), and a failed cas fits in any block but its expected value's.
//!
//! The builder keeps Lowe's just-in-time view of time: an operation can be placed once no
//! unplaced completed operation returned before its call. Reads (pinned or flexible) are placed
//! as soon as they can be, which never hurts (they change nothing, and nothing has to precede
//! them any more). Only the choice of the next chain is a decision. The next chain must be a
//! *source* of the "must precede" relation between chains — no other remaining chain has an
//! operation that returned before one of its operations was called — which is the rule that
//! decides registers with unique values exactly (Gibbons and Korach; the decrease-and-conquer
//! view of Lee and Mathur): without deletes and failed cas, any order of sources works and the
//! first choice never fails. With them the order matters (a delete placed too early or too
//! late, a value a failed cas expects placed last), so the builder searches: it tries the
//! sources in a heuristic order, undoes a choice that leads nowhere (an undo log, no copies),
//! remembers the states that failed (by a hash of the placed set: a collision can only make
//! it give up, since the result is checked), and gives up after a bounded number of choices.
//! The caller checks the result with `replay.rs` and falls back to the general search when the
//! builder gives up.

use std::collections::HashSet;

use super::register::{ABSENT, Kind, NEVER, Pos, RegOp, Register, Val};
use crate::history::Time;
use crate::model::mix64;

/// How far the builder looks among chains that are sources but not the most urgent: keeps
/// one choice O(log n).
const SOURCE_SCAN_MAX: usize = 256;

/// Alternatives tried at one decision, at most.
const ALTERNATIVES_MAX: usize = 8;

/// Choices the builder may undo, per chain plus a constant, before it gives up. A
/// linearizable history of the figures bench undoes none to a few thousand in 100,000
/// operations; a violation undoes until the budget runs out, so the first try is short.
const RETRIES_BASE: usize = 10_000;
pub(super) const RETRIES_PER_CHAIN_FIRST: usize = 1;
pub(super) const RETRIES_PER_CHAIN: usize = 16;

/// A linearization of the key's operations (positions in order; operations of unknown outcome
/// that are not needed are left out), or `None` if the builder found none undoing at most
/// `RETRIES_BASE + retries_per_chain` choices per chain.
pub(super) fn linearize(register: &Register, retries_per_chain: usize) -> Option<Vec<Pos>> {
    Builder::new(register)?.run(retries_per_chain)
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
    /// flexible read or a head needs the key to change.
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

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Next {
    Chain(u32),
    /// An operation of unknown outcome that nothing needs, placed to change the key.
    Extra(Pos),
}

/// Items sorted by time, each taken at most once (and put back only by undo): the first
/// untaken one in O(1) amortized. `cursor` is the first untaken item: it moves forward as
/// items are taken, and back only through the undo log. Sorted arrays instead of ordered
/// sets, because the builder takes items roughly in order and an undo log restores them.
#[derive(Debug, Default)]
struct Queue {
    /// (time, id): the id is a position or a chain, per queue.
    items: Vec<(Time, u32)>,
    cursor: usize,
}

impl Queue {
    fn new(mut items: Vec<(Time, u32)>) -> Queue {
        items.sort_unstable();
        Queue { items, cursor: 0 }
    }

    fn first(&self) -> Option<(Time, u32)> {
        self.items.get(self.cursor).copied()
    }

    /// The untaken items, in order.
    fn untaken<'q>(&'q self, taken: &'q [bool]) -> impl Iterator<Item = (Time, u32)> + 'q {
        self.items[self.cursor..].iter().copied().filter(move |&(_, id)| !taken[id as usize])
    }

    /// Moves the cursor past taken items; the previous cursor if it moved.
    fn advance(&mut self, taken: &[bool]) -> Option<usize> {
        let previous = self.cursor;
        while self.items.get(self.cursor).is_some_and(|&(_, id)| taken[id as usize]) {
            self.cursor += 1;
        }
        (self.cursor != previous).then_some(previous)
    }
}

/// The builder's queues, named for the undo log.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum QueueName {
    Unplaced,
    AbsentReaders,
    ByEarliestRet,
    ByLatestCall,
    Deletes,
    Creates,
}

/// One change to the builder's state, and what undoing it restores.
#[derive(Debug)]
enum Undo {
    Cursor(QueueName, usize),
    NotHoldingCursor(Val, u32),
    Placed(Pos),
    Available(Pos),
    MemberWaits(u32),
    AbsentWaits,
    AbsentTaken(Vec<Pos>),
    NotHoldingWaits,
    NotHoldingReplaced(Vec<Pos>),
    ExtraAvailable,
    Stage(u32, Stage),
    Current(Val, Option<u32>),
    ChainStarted(u32),
}

/// Where the deterministic part of the builder stopped.
enum Progress {
    Done,
    Stuck,
    Decide,
}

/// A decision point: the state to come back to, and what was tried there.
struct Frame {
    mark: usize,
    key: (u64, Val, u32),
    first: Next,
    /// Computed when the first choice fails.
    alternatives: Option<Vec<Next>>,
}

struct Builder<'r> {
    register: &'r Register,
    roles: Vec<Role>,
    blocks: Vec<Block>,
    chains: Vec<Chain>,
    /// Chains: by earliest return, by latest call, the deletes, the creates; `started`.
    by_earliest_ret: Queue,
    by_latest_call: Queue,
    deletes: Queue,
    creates: Queue,
    started: Vec<bool>,
    /// Completed operations, by return (taken when placed).
    unplaced: Queue,
    /// Flexible reads of "absent", by return.
    absent_readers: Queue,
    /// Failed cas grouped by the value they expected, by return; per value, where its group
    /// starts (`value_count + 1` entries) and its first unplaced entry.
    not_holding: Vec<(Time, Pos)>,
    not_holding_start: Vec<u32>,
    not_holding_cursor: Vec<u32>,
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
    /// XOR of a hash of every placed position: with the current block, names the state.
    placed_hash: u64,
    log: Vec<Undo>,
}

impl<'r> Builder<'r> {
    fn new(register: &'r Register) -> Option<Builder<'r>> {
        let ops = &register.ops;
        let mut roles = vec![Role::Extra; ops.len()];
        let mut block_of_value: Vec<Option<u32>> = vec![None; register.value_count];
        let mut blocks: Vec<Block> = Vec::with_capacity(ops.len());
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
            if !op.ok && (value == ABSENT || !register.is_needed(value)) {
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
        let mut chains: Vec<Chain> = Vec::with_capacity(blocks.len());
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
        if blocks.iter().any(|block| block.chain == u32::MAX) {
            return None; // blocks only reachable through a loop of cas
        }
        for (position, role) in roles.iter().enumerate() {
            if let Role::Member { block } = *role {
                let chain = &mut chains[blocks[block as usize].chain as usize];
                chain.earliest_ret = chain.earliest_ret.min(ops[position].ret);
                chain.latest_call = chain.latest_call.max(ops[position].call);
            }
        }

        // Built from sorted vectors: a bulk build, much cheaper than inserting one by one.
        let mut unplaced = Vec::with_capacity(ops.len());
        let mut absent_readers = Vec::new();
        let mut not_holding = Vec::new();
        let mut required_left = 0;
        for (position, op) in ops.iter().enumerate() {
            let position = position as Pos;
            if op.ok {
                required_left += 1;
                unplaced.push((op.ret, position));
            }
            match roles[position as usize] {
                Role::AbsentReader => absent_readers.push((op.ret, position)),
                Role::NotHolding { value } => not_holding.push((value, op.ret, position)),
                Role::Writer { .. } | Role::Member { .. } | Role::Extra => {}
            }
        }
        let mut by_earliest_ret = Vec::with_capacity(chains.len());
        let mut by_latest_call = Vec::with_capacity(chains.len());
        let mut deletes = Vec::new();
        let mut creates = Vec::new();
        for (id, chain) in chains.iter().enumerate() {
            let id = id as u32;
            by_earliest_ret.push((chain.earliest_ret, id));
            by_latest_call.push((chain.latest_call, id));
            let head = &blocks[chain.head as usize];
            if head.value == ABSENT {
                deletes.push((chain.earliest_ret, id));
            }
            if let Kind::Cas { expected: ABSENT, .. } = ops[head.writer as usize].kind {
                creates.push((chain.earliest_ret, id));
            }
        }
        // Failed cas grouped by expected value (counting sort), by return within a group.
        not_holding.sort_unstable();
        let mut not_holding_start = vec![0u32; register.value_count + 1];
        for &(value, _, _) in &not_holding {
            not_holding_start[value as usize + 1] += 1;
        }
        for value in 0..register.value_count {
            not_holding_start[value + 1] += not_holding_start[value];
        }
        let not_holding_cursor = not_holding_start[..register.value_count].to_vec();
        let not_holding: Vec<(Time, Pos)> =
            not_holding.into_iter().map(|(_, ret, position)| (ret, position)).collect();
        let chain_count = chains.len();
        Some(Builder {
            register,
            roles,
            blocks,
            chains,
            by_earliest_ret: Queue::new(by_earliest_ret),
            by_latest_call: Queue::new(by_latest_call),
            deletes: Queue::new(deletes),
            creates: Queue::new(creates),
            started: vec![false; chain_count],
            unplaced: Queue::new(unplaced),
            absent_readers: Queue::new(absent_readers),
            not_holding,
            not_holding_start,
            not_holding_cursor,
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
            placed_hash: 0,
            log: Vec::with_capacity(4 * ops.len()),
        })
    }

    fn op(&self, position: Pos) -> &'r RegOp {
        self.register.op(position)
    }

    /// The earliest return among unplaced completed operations: every operation called by
    /// then may be placed next.
    fn horizon(&self) -> Time {
        self.unplaced.first().map_or(NEVER, |(ret, _)| ret)
    }

    fn earliest_absent_reader_ret(&self) -> Time {
        self.absent_readers.first().map_or(NEVER, |(ret, _)| ret)
    }

    fn earliest_not_holding_ret(&self, value: Val) -> Time {
        let cursor = self.not_holding_cursor[value as usize] as usize;
        if cursor < self.not_holding_start[value as usize + 1] as usize {
            self.not_holding[cursor].0
        } else {
            NEVER
        }
    }

    /// Moves a queue's cursor past what is taken, logging the move.
    fn skip_taken(&mut self, name: QueueName) {
        let (queue, taken) = match name {
            QueueName::Unplaced => (&mut self.unplaced, &self.placed),
            QueueName::AbsentReaders => (&mut self.absent_readers, &self.placed),
            QueueName::ByEarliestRet => (&mut self.by_earliest_ret, &self.started),
            QueueName::ByLatestCall => (&mut self.by_latest_call, &self.started),
            QueueName::Deletes => (&mut self.deletes, &self.started),
            QueueName::Creates => (&mut self.creates, &self.started),
        };
        if let Some(previous) = queue.advance(taken) {
            self.log.push(Undo::Cursor(name, previous));
        }
    }

    fn queue_mut(&mut self, name: QueueName) -> &mut Queue {
        match name {
            QueueName::Unplaced => &mut self.unplaced,
            QueueName::AbsentReaders => &mut self.absent_readers,
            QueueName::ByEarliestRet => &mut self.by_earliest_ret,
            QueueName::ByLatestCall => &mut self.by_latest_call,
            QueueName::Deletes => &mut self.deletes,
            QueueName::Creates => &mut self.creates,
        }
    }

    fn place(&mut self, position: Pos) {
        assert!(!self.placed[position as usize], "placed twice");
        self.placed[position as usize] = true;
        self.order.push(position);
        self.placed_hash ^= mix64(u64::from(position));
        self.log.push(Undo::Placed(position));
        if self.op(position).ok {
            self.required_left -= 1;
            self.skip_taken(QueueName::Unplaced);
        }
        match self.roles[position as usize] {
            Role::Member { block } => self.blocks[block as usize].members_left -= 1,
            Role::AbsentReader => self.skip_taken(QueueName::AbsentReaders),
            Role::NotHolding { value } => {
                let end = self.not_holding_start[value as usize + 1];
                let previous = self.not_holding_cursor[value as usize];
                let mut cursor = previous;
                while cursor < end && self.placed[self.not_holding[cursor as usize].1 as usize] {
                    cursor += 1;
                }
                if cursor != previous {
                    self.not_holding_cursor[value as usize] = cursor;
                    self.log.push(Undo::NotHoldingCursor(value, previous));
                }
            }
            Role::Writer { .. } | Role::Extra => {}
        }
    }

    fn unplace(&mut self, position: Pos) {
        assert_eq!(self.order.pop(), Some(position), "undone in reverse order");
        self.placed[position as usize] = false;
        self.placed_hash ^= mix64(u64::from(position));
        if self.op(position).ok {
            self.required_left += 1;
        }
        if let Role::Member { block } = self.roles[position as usize] {
            self.blocks[block as usize].members_left += 1;
        }
    }

    /// Undoes every change made since the log had `mark` entries.
    fn undo_to(&mut self, mark: usize) {
        while self.log.len() > mark {
            let Some(change) = self.log.pop() else { break };
            match change {
                Undo::Placed(position) => self.unplace(position),
                Undo::Cursor(name, previous) => self.queue_mut(name).cursor = previous,
                Undo::NotHoldingCursor(value, previous) => {
                    self.not_holding_cursor[value as usize] = previous;
                }
                Undo::Available(position) => {
                    self.available[position as usize] = false;
                    self.next_call -= 1;
                    assert_eq!(self.next_call, position as usize, "made available in call order");
                }
                Undo::MemberWaits(block) => {
                    self.blocks[block as usize].waiting.pop();
                }
                Undo::AbsentWaits => {
                    self.absent_waiting.pop();
                }
                Undo::AbsentTaken(readers) => self.absent_waiting = readers,
                Undo::NotHoldingWaits => {
                    self.not_holding_waiting.pop();
                }
                Undo::NotHoldingReplaced(readers) => self.not_holding_waiting = readers,
                Undo::ExtraAvailable => {
                    self.extras.pop();
                }
                Undo::Stage(block, stage) => self.blocks[block as usize].stage = stage,
                Undo::Current(value, block) => {
                    self.current = value;
                    self.current_block = block;
                }
                Undo::ChainStarted(chain) => self.started[chain as usize] = false,
            }
        }
    }

    /// The operation at `position` can now be placed as far as time goes. `false`: it is a
    /// read of a value whose block is over, so this order fails.
    fn make_available(&mut self, position: Pos) -> bool {
        assert_eq!(self.next_call, position as usize, "made available in call order");
        self.next_call += 1;
        self.available[position as usize] = true;
        self.log.push(Undo::Available(position));
        match self.roles[position as usize] {
            Role::Writer { .. } => {}
            Role::Member { block } => match self.blocks[block as usize].stage {
                Stage::Current => self.place(position),
                Stage::Waiting => {
                    self.blocks[block as usize].waiting.push(position);
                    self.log.push(Undo::MemberWaits(block));
                }
                Stage::Done => return false,
            },
            Role::AbsentReader => {
                if self.current == ABSENT {
                    self.place(position);
                } else {
                    self.absent_waiting.push(position);
                    self.log.push(Undo::AbsentWaits);
                }
            }
            Role::NotHolding { value } => {
                if self.current != value {
                    self.place(position);
                } else {
                    self.not_holding_waiting.push(position);
                    self.log.push(Undo::NotHoldingWaits);
                }
            }
            Role::Extra => {
                self.extras.push(position);
                self.log.push(Undo::ExtraAvailable);
            }
        }
        true
    }

    /// The key now holds `value` (written by the operation just placed): place what waited
    /// for that.
    fn set_current(&mut self, value: Val, block: Option<u32>) {
        self.log.push(Undo::Current(self.current, self.current_block));
        if let Some(previous) = self.current_block {
            self.log.push(Undo::Stage(previous, self.blocks[previous as usize].stage));
            self.blocks[previous as usize].stage = Stage::Done;
        }
        self.current = value;
        self.current_block = block;
        if let Some(block) = block {
            self.log.push(Undo::Stage(block, self.blocks[block as usize].stage));
            self.blocks[block as usize].stage = Stage::Current;
            // The list stays as it is: no member waits once the block has started, and undoing
            // the start unplaces them again.
            for slot in 0..self.blocks[block as usize].waiting.len() {
                let position = self.blocks[block as usize].waiting[slot];
                self.place(position);
            }
        }
        // Moved into the log after use (not copied): undo restores the list and unplaces its
        // operations, in whichever order.
        if value == ABSENT && !self.absent_waiting.is_empty() {
            let readers = std::mem::take(&mut self.absent_waiting);
            for &position in &readers {
                self.place(position);
            }
            self.log.push(Undo::AbsentTaken(readers));
        }
        if !self.not_holding_waiting.is_empty() {
            let (still, now): (Vec<Pos>, Vec<Pos>) =
                self.not_holding_waiting.iter().partition(|&&position| {
                    self.roles[position as usize] == Role::NotHolding { value }
                });
            let previous = std::mem::replace(&mut self.not_holding_waiting, still);
            for position in now {
                self.place(position);
            }
            self.log.push(Undo::NotHoldingReplaced(previous));
        }
    }

    fn start_block(&mut self, block: u32) {
        let (writer, value) =
            (self.blocks[block as usize].writer, self.blocks[block as usize].value);
        assert!(self.available[writer as usize], "a block starts once its writer may");
        self.place(writer);
        self.set_current(value, Some(block));
    }

    fn apply(&mut self, next: Next) {
        match next {
            Next::Chain(chain) => {
                assert!(!self.started[chain as usize], "a chain starts once");
                self.started[chain as usize] = true;
                self.log.push(Undo::ChainStarted(chain));
                for name in [
                    QueueName::ByEarliestRet,
                    QueueName::ByLatestCall,
                    QueueName::Deletes,
                    QueueName::Creates,
                ] {
                    self.skip_taken(name);
                }
                let head = self.chains[chain as usize].head;
                self.start_block(head);
            }
            Next::Extra(position) => {
                let value = self.op(position).may_write().unwrap_or(ABSENT);
                self.place(position);
                self.set_current(value, None);
            }
        }
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

    fn is_delete(&self, chain: u32) -> bool {
        self.blocks[self.chains[chain as usize].head as usize].value == ABSENT
    }

    /// Whether chain `chain` can start now: its head may be placed, the key is as it needs,
    /// no other remaining chain has an operation that must precede one of its operations
    /// (`others_earliest_ret`), and no flexible read it cannot host has to precede one either.
    /// Each is needed by any linearization that continues from here with this chain.
    fn can_start(&self, chain: u32, others_earliest_ret: Time) -> bool {
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
            .untaken(&self.started)
            .find(|&(_, other)| other != chain)
            .map_or(NEVER, |(ret, _)| ret)
    }

    /// The choices at this decision, best first, at most `max` of them.
    ///
    /// Creates first while the key is absent (any other write would make them wait for a
    /// delete); a delete first when a read of "absent" waits; a value some failed cas
    /// expects before others (so that a later write can replace it in time); then the most
    /// urgent chain and the other sources, writes of a value before deletes (a delete placed
    /// late may still serve a later read of "absent"); last, operations of unknown outcome
    /// that change the key for a waiting read or head.
    fn alternatives(&self, max: usize) -> Vec<Next> {
        let mut list: Vec<Next> = Vec::new();
        let add = |next: Next, list: &mut Vec<Next>| {
            if list.len() < max && !list.contains(&next) {
                list.push(next);
            }
        };
        let most_urgent = self.by_earliest_ret.first();
        let urgent = most_urgent.map(|(_, urgent)| urgent);
        let limit = most_urgent.map_or(NEVER, |(ret, _)| ret);
        let can = |chain: u32| {
            let others =
                if Some(chain) == urgent { self.others_earliest_ret(chain) } else { limit };
            self.can_start(chain, others)
        };
        if self.current == ABSENT {
            for (_, chain) in self.creates.untaken(&self.started).take(SOURCE_SCAN_MAX) {
                if can(chain) {
                    add(Next::Chain(chain), &mut list);
                }
            }
        }
        if !self.absent_waiting.is_empty() {
            // A more urgent write goes before the delete the waiting reads need: the delete
            // stays available until it returns, the write would have to wait for the next one.
            let reads_due = self
                .absent_waiting
                .iter()
                .map(|&position| self.op(position).ret)
                .min()
                .unwrap_or(NEVER);
            if let Some((urgent_ret, chain)) = most_urgent
                && urgent_ret <= reads_due
                && !self.is_delete(chain)
                && can(chain)
            {
                add(Next::Chain(chain), &mut list);
            }
            for (_, chain) in self.deletes.untaken(&self.started).take(SOURCE_SCAN_MAX) {
                if can(chain) {
                    add(Next::Chain(chain), &mut list);
                }
            }
        }
        let sources: Vec<u32> = urgent
            .into_iter()
            .chain(
                self.by_latest_call.items[self.by_latest_call.cursor..]
                    .iter()
                    .take(SOURCE_SCAN_MAX)
                    .take_while(|&&(call, _)| call <= limit)
                    .map(|&(_, chain)| chain)
                    .filter(|&chain| !self.started[chain as usize] && Some(chain) != urgent),
            )
            .filter(|&chain| can(chain))
            .collect();
        let mut expected_soonest: Option<(Time, u32)> = None;
        for &chain in &sources {
            if let Some(value) = self.chains[chain as usize].single_value
                && value != ABSENT
            {
                let deadline = self.earliest_not_holding_ret(value);
                if deadline != NEVER
                    && expected_soonest.is_none_or(|(soonest, _)| deadline < soonest)
                {
                    expected_soonest = Some((deadline, chain));
                }
            }
        }
        if let Some((_, chain)) = expected_soonest {
            add(Next::Chain(chain), &mut list);
        }
        for deletes in [false, true] {
            for &chain in &sources {
                if self.is_delete(chain) == deletes {
                    add(Next::Chain(chain), &mut list);
                }
            }
        }
        let wants_absent = !self.absent_waiting.is_empty()
            || (urgent.is_some_and(|chain| self.precondition(chain) == Precondition::Absent)
                && self.current != ABSENT);
        let wants_change = wants_absent
            || !self.not_holding_waiting.is_empty()
            || (urgent.is_some_and(|chain| self.precondition(chain) == Precondition::Present)
                && self.current == ABSENT);
        if wants_change {
            for &position in &self.extras {
                if self.placed[position as usize] {
                    continue;
                }
                let useful = match self.op(position).kind {
                    Kind::Delete { .. } => self.current != ABSENT,
                    _ if wants_absent => false,
                    Kind::Put { .. } => true,
                    Kind::Cas { expected, .. } => expected == self.current,
                    Kind::Get { .. } => false,
                };
                if useful {
                    add(Next::Extra(position), &mut list);
                }
            }
        }
        list
    }

    /// Places what follows from the state alone: everything that became placeable, and the
    /// cas that continues the current chain.
    fn advance(&mut self) -> Progress {
        let count = self.register.ops.len();
        loop {
            while self.next_call < count && self.op(self.next_call as Pos).call <= self.horizon() {
                if !self.make_available(self.next_call as Pos) {
                    return Progress::Stuck;
                }
            }
            if self.required_left == 0 {
                return Progress::Done;
            }
            // A value never comes back: its block must be complete before the next starts.
            let Some(block) = self.current_block else { return Progress::Decide };
            let block = &self.blocks[block as usize];
            if block.members_left > 0 {
                return Progress::Stuck;
            }
            let Some(next) = block.successor else { return Progress::Decide };
            if !self.available[self.blocks[next as usize].writer as usize] {
                return Progress::Stuck;
            }
            self.start_block(next);
        }
    }

    fn run(&mut self, retries_per_chain: usize) -> Option<Vec<Pos>> {
        let mut choices_left = RETRIES_BASE + retries_per_chain * self.chains.len();
        let mut failed: HashSet<(u64, Val, u32)> = HashSet::new();
        let mut frames: Vec<Frame> = Vec::new();
        loop {
            let progress = match self.advance() {
                Progress::Done => return Some(std::mem::take(&mut self.order)),
                Progress::Stuck => Progress::Stuck,
                Progress::Decide => {
                    let key =
                        (self.placed_hash, self.current, self.current_block.unwrap_or(u32::MAX));
                    match self.alternatives(1).first() {
                        Some(&first) if !failed.contains(&key) => {
                            frames.push(Frame {
                                mark: self.log.len(),
                                key,
                                first,
                                alternatives: None,
                            });
                            self.apply(first);
                            Progress::Decide
                        }
                        _ => {
                            failed.insert(key);
                            Progress::Stuck
                        }
                    }
                }
            };
            if !matches!(progress, Progress::Stuck) {
                continue;
            }
            // Back to the latest decision with an untried alternative.
            loop {
                choices_left = choices_left.checked_sub(1)?;
                let frame = frames.last_mut()?;
                let mark = frame.mark;
                self.undo_to(mark);
                let frame = frames.last_mut()?;
                if frame.alternatives.is_none() {
                    let first = frame.first;
                    let mut alternatives = self.alternatives(ALTERNATIVES_MAX);
                    alternatives.retain(|&next| next != first);
                    alternatives.reverse(); // popped from the back, best first
                    frames.last_mut()?.alternatives = Some(alternatives);
                }
                let frame = frames.last_mut()?;
                match frame.alternatives.as_mut().and_then(Vec::pop) {
                    Some(next) => {
                        self.apply(next);
                        break;
                    }
                    None => {
                        failed.insert(frame.key);
                        frames.pop();
                    }
                }
            }
        }
    }
}
