//! Simulated clients. Each registers a session, then issues one operation at a time on a small
//! key set (so operations conflict): reads of one key or of a prefix range, puts, deletes,
//! compare-and-swaps, create-only puts and two-key transactions. A write that times out is retried with the same session sequence
//! number — exactly once, whichever node finally answers — and if no answer ever comes it is
//! recorded with an unknown outcome (`info`). Every completed operation goes into the history
//! the checker judges at the end.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conclave_checker::{
    Compare as HistoryCompare, KeyValue as HistoryKeyValue, Op, Operation, Range as HistoryRange,
    Status, Txn as HistoryTxn, TxnOp as HistoryTxnOp,
};
use conclave_core::engine::{EngineError, ReadConsistency, ReadQuery, ReadResult};
use conclave_core::kv::{
    Compare, CompareOp, CompareTarget, Condition, KvCommand, KvResponse, SessionTag, Txn, TxnOp,
    TxnOpResult,
};
use conclave_core::shard::{ShardId, ShardMap};
use conclave_core::transport::frame::{read_frame, write_frame};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use turmoil::net::TcpStream;

use crate::client_protocol::{
    CLIENT_PORT, ClientAnswer, ClientCall, ClientReply, ClientRequest, MAX_CLIENT_FRAME_BYTES,
};
use crate::schedule::Swarm;
use crate::trace::TraceHash;

/// How many times a read is tried (on different nodes) before it is given up.
const MAX_READ_ATTEMPTS: u32 = 6;

/// State shared by all clients and the run loop.
#[derive(Default)]
pub struct WorkloadShared {
    pub stop: Cell<bool>,
    pub operations: RefCell<Vec<Operation>>,
    /// The reads served under a lease, and by whom.
    pub lease_reads: RefCell<Vec<LeaseRead>>,
    /// Operations that began at or after this time (µs) and completed count for liveness.
    pub liveness_from_us: Cell<Option<u64>>,
    pub completed_since_liveness: Cell<u64>,
    pub trace: RefCell<TraceHash>,
    pub leader_hint: Cell<Option<u64>>,
    /// In a sharded world, the node believed to lead each group.
    pub group_leader_hints: RefCell<BTreeMap<ShardId, u64>>,
    pub clients_done: Cell<u64>,
    /// Writes a node refused because its disk was full (they were not applied; retried).
    pub refused_no_space: Cell<u64>,
    /// Puts with a TTL that may have taken effect.
    pub ttl_puts: RefCell<Vec<TtlPut>>,
    /// Every answered single-key read, whatever its consistency, and what each answered range
    /// read said of each key it covered (`read_check.rs`).
    pub reads: RefCell<Vec<ReadObservation>>,
    /// Range reads answered, at any consistency (the run report counts them).
    pub range_reads: Cell<u64>,
    /// While above 0, clients only read: a read-mostly stretch, where leases carry the load
    /// and followers' logs stay level with the leader's (the nemesis sets it, counting
    /// overlapping stretches).
    pub read_only_spells: Cell<u32>,
}

/// A read as a client saw it: the value and the key's `mod_revision`, and the store revision
/// the serving node's state machine was at.
pub struct ReadObservation {
    pub key: String,
    pub value: Option<(String, u64)>,
    pub store_revision: u64,
    pub stale: bool,
    pub call_us: u64,
    pub ret_us: u64,
}

/// A put with a TTL, as a client saw it.
pub struct TtlPut {
    pub key: String,
    pub value: String,
    pub call_us: u64,
}

/// The history operations of the TTL expiries that happened: each a delete of the key if it
/// still holds the put's value (values are unique, so the value names the put), between the
/// put's call and the moment the first node applied the expiry (`expiries`, from the
/// observer: an expiry takes effect at the entry whose leader time passes the deadline, which
/// commits before any node applies it). A TTL that never expired — overwritten first, or not
/// yet due — is no operation at all.
pub fn expiry_operations(
    ttl_puts: &[TtlPut],
    expiries: &BTreeMap<(String, String), u64>,
) -> Vec<Operation> {
    ttl_puts
        .iter()
        .enumerate()
        .filter_map(|(at, put)| {
            let applied_us = *expiries.get(&(put.key.clone(), put.value.clone()))?;
            assert!(applied_us >= put.call_us, "an expiry applied before its put was called");
            Some(Operation::ok(
                // The leader does it, not this client, and it may overlap this client's next
                // operations and other expiries: each is recorded under a client of its own.
                EXPIRY_CLIENT_BASE + at as u64,
                put.call_us,
                applied_us,
                Op::Txn(HistoryTxn {
                    compare: vec![HistoryCompare::Equals {
                        key: put.key.clone(),
                        expected: Some(put.value.clone()),
                    }],
                    success: vec![HistoryTxnOp::Delete { key: put.key.clone() }],
                    failure: Vec::new(),
                    succeeded: true,
                }),
            ))
        })
        .collect()
}

pub struct ClientSetup {
    pub index: u64,
    pub nodes: u64,
    pub keys: u64,
    pub swarm: Swarm,
    pub ops_limit: Option<u64>,
    pub seed: u64,
    /// The world's shard map (sharded worlds only): the client routes each key to its shard's
    /// replicas, as the production client does with the map it fetched.
    pub map: Option<Arc<ShardMap>>,
}

fn now_us() -> u64 {
    turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// The expiry of the n-th TTL put is recorded as an operation of client `EXPIRY_CLIENT_BASE`
/// plus n (see `expiry_operations`).
pub const EXPIRY_CLIENT_BASE: u64 = 1_000_000;

/// A read answered from a leader's lease: which operation, which node, when.
#[derive(Clone, Copy, Debug)]
pub struct LeaseRead {
    /// Index into the recorded operations.
    pub operation: usize,
    /// The group that served it, and its node.
    pub shard: ShardId,
    pub node: u64,
    pub call_us: u64,
    pub ret_us: u64,
}

/// What became of one attempt sequence.
enum Outcome {
    /// The answer, and the node that gave it.
    Answer(ClientAnswer, u64),
    /// Definitely did not take effect.
    NotApplied,
    /// May or may not have taken effect.
    Unknown,
}

struct Client {
    setup: ClientSetup,
    shared: Rc<WorkloadShared>,
    rng: ChaCha8Rng,
    connection: Option<(u64, TcpStream)>,
    next_request_id: u64,
    /// What this client last saw in each key, to make plausible CAS expectations.
    last_seen: BTreeMap<String, Option<String>>,
    values_written: u64,
    /// The session registered with each group, and the last sequence number used in it.
    sessions: BTreeMap<ShardId, (u64, u64)>,
}

pub async fn run_client(setup: ClientSetup, shared: Rc<WorkloadShared>) -> turmoil::Result {
    let rng = ChaCha8Rng::seed_from_u64(setup.seed ^ (setup.index << 40) ^ 0x00c1_1e47);
    let mut client = Client {
        setup,
        shared,
        rng,
        connection: None,
        next_request_id: 0,
        last_seen: BTreeMap::new(),
        values_written: 0,
        sessions: BTreeMap::new(),
    };
    client.run().await;
    client.shared.clients_done.set(client.shared.clients_done.get() + 1);
    Ok(())
}

impl Client {
    async fn run(&mut self) {
        // A single group's session is registered up front; a sharded world's clients register
        // one with each group they write to, when they first do (sessions are per group, as
        // revisions are).
        if self.setup.map.is_none() {
            let Some(client_id) = self.register_session(ShardId::META).await else { return };
            self.sessions.insert(ShardId::META, (client_id, 0));
        }
        let mut issued = 0u64;
        while !self.shared.stop.get() && self.setup.ops_limit.is_none_or(|limit| issued < limit) {
            let think_ms = self.rng.random_range(0..=self.setup.swarm.client_think_max_ms);
            tokio::time::sleep(Duration::from_millis(think_ms)).await;
            if self.shared.stop.get() {
                return;
            }
            issued += 1;
            let planned = self.plan();
            let shard = self.shard_of(planned.routing_key());
            let session = if planned.is_write() {
                if !self.sessions.contains_key(&shard) {
                    let Some(client_id) = self.register_session(shard).await else { return };
                    self.sessions.insert(shard, (client_id, 0));
                }
                let (client_id, seq) = self.sessions.get_mut(&shard).expect("registered above");
                *seq += 1;
                Some(SessionTag { client_id: *client_id, seq: *seq })
            } else {
                None
            };
            let call_us = now_us();
            let outcome = self.execute(shard, planned.call(session)).await;
            self.record(planned, shard, call_us, outcome);
        }
    }

    async fn register_session(&mut self, shard: ShardId) -> Option<u64> {
        while !self.shared.stop.get() {
            let call = ClientCall::Write { command: KvCommand::RegisterSession, session: None };
            if let Outcome::Answer(
                ClientAnswer::Write(KvResponse::SessionRegistered { client_id }),
                _,
            ) = self.execute(shard, call).await
            {
                return Some(client_id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn key(&mut self) -> String {
        let index = self.rng.random_range(0..self.setup.keys);
        self.key_name(index)
    }

    /// The name of key `index`: `k3`; in a sharded world `{t1}k3`, whose hash tag it shares
    /// with one other key (`k2`), so that a transaction on the pair stays within one shard.
    fn key_name(&self, index: u64) -> String {
        match self.setup.map {
            None => format!("k{index}"),
            Some(_) => format!("{{t{}}}k{index}", index / 2),
        }
    }

    /// The shard of `key` by the world's map (shard 0 in a single-group world).
    fn shard_of(&self, key: &str) -> ShardId {
        self.setup.map.as_ref().map_or(ShardId::META, |map| map.shard_of_key(key.as_bytes()))
    }

    fn fresh_value(&mut self) -> String {
        self.values_written += 1;
        format!("c{}-{}", self.setup.index, self.values_written)
    }

    fn expectation(&mut self, key: &str) -> Option<String> {
        match self.last_seen.get(key) {
            Some(seen) if self.rng.random_bool(0.8) => seen.clone(),
            _ => None,
        }
    }

    fn plan(&mut self) -> Planned {
        let swarm = &self.setup.swarm;
        let (read, delete, cas, create, txn) = (
            swarm.read_percent,
            swarm.delete_percent,
            swarm.cas_percent,
            swarm.create_percent,
            swarm.txn_percent,
        );
        let lease_reads = swarm.lease_reads;
        let roll = self.rng.random_range(0..100u32);
        let index = self.rng.random_range(0..self.setup.keys);
        let key = self.key_name(index);
        if roll < read || self.shared.read_only_spells.get() > 0 {
            let lease = lease_reads && self.rng.random_bool(0.5);
            let stale = !lease && self.rng.random_bool(self.stale_share());
            // No draw at all in seeds without ranges: their operations stay as they were.
            let range_share = self.range_share();
            if range_share > 0.0 && self.rng.random_bool(range_share) {
                let prefix = self.range_prefix(&key);
                // Up to one more than there are keys: some ranges are cut short by their
                // limit (`more`), others are not.
                let limit = self.rng.random_range(1..=self.setup.keys + 1);
                return Planned::Range { prefix, limit, lease, stale };
            }
            Planned::Get { key, lease, stale }
        } else if roll < read + delete {
            Planned::Delete { key }
        } else if roll < read + delete + cas {
            let expected = self.expectation(&key);
            let value = self.fresh_value();
            Planned::Cas { key, expected, value }
        } else if roll < read + delete + cas + create {
            let value = self.fresh_value();
            Planned::Create { key, value }
        } else if roll < read + delete + cas + create + txn {
            let other = match self.setup.map {
                None => self.key(),
                // The key that shares its hash tag: a transaction across shards is refused.
                Some(_) => self.partner_of(index),
            };
            let expected = self.expectation(&key);
            let value = self.fresh_value();
            Planned::Txn { key, other, expected, value }
        } else {
            let value = self.fresh_value();
            // Some puts carry a TTL, short enough that keys expire within the run — under the
            // nemesis's clock drift and jumps, which move when the leader expires them.
            let ttl_ms =
                self.rng.random_bool(self.ttl_share()).then(|| self.rng.random_range(50..=3_000));
            Planned::Put { key, value, ttl_ms }
        }
    }

    /// The share of (non-lease) reads that ask for whatever the node has applied: drawn per
    /// seed, from the seed itself.
    fn stale_share(&self) -> f64 {
        [0.0, 0.1, 0.25, 0.5][(self.setup.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 62) as usize]
    }

    /// The share of reads that read a prefix range instead of one key: drawn per seed, from
    /// the seed itself.
    fn range_share(&self) -> f64 {
        [0.0, 0.1, 0.3, 0.6][(self.setup.seed.wrapping_mul(0xd6e8_feb8_6659_fd93) >> 62) as usize]
    }

    /// Every key, or the keys that start with one key's name (only that key while there are
    /// fewer than ten).
    fn range_prefix(&mut self, key: &str) -> String {
        if self.setup.map.is_some() {
            // Every key of one hash tag, or one key: a listing within one shard (a listing of
            // every key fans out to every shard, which the production router does).
            let tag_end = key.find('}').map_or(0, |end| end + 1);
            return if self.rng.random_bool(0.5) {
                key[..tag_end].to_string()
            } else {
                key.to_string()
            };
        }
        if self.rng.random_bool(0.5) { String::new() } else { key.to_string() }
    }

    /// The other key with key `index`'s hash tag (or that key itself, if the key count is odd
    /// and it has none).
    fn partner_of(&self, index: u64) -> String {
        let partner = index ^ 1;
        self.key_name(if partner < self.setup.keys { partner } else { index })
    }

    /// The share of puts with a TTL: drawn per seed (none in some seeds, many in others),
    /// from the seed itself so that the rest of the draw stays as it was.
    fn ttl_share(&self) -> f64 {
        [0.0, 0.05, 0.15, 0.3][(self.setup.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 62) as usize]
    }

    /// Mostly the node believed to lead; sometimes any node, so follower reads (ReadIndex
    /// forwarding) and deposed leaders that do not know it yet are exercised too.
    fn choose_node(&mut self, shard: ShardId, is_read: bool) -> u64 {
        let stray = if is_read { 0.3 } else { 0.1 };
        let Some(map) = self.setup.map.clone() else {
            return match self.shared.leader_hint.get() {
                Some(node) if !self.rng.random_bool(stray) => node,
                _ => self.rng.random_range(1..=self.setup.nodes),
            };
        };
        let hint = self.shared.group_leader_hints.borrow().get(&shard).copied();
        match hint {
            Some(node) if !self.rng.random_bool(stray) => node,
            // Now and then a node without a replica of the shard, which must refuse.
            _ if self.rng.random_bool(0.05) => self.rng.random_range(1..=self.setup.nodes),
            _ => {
                let replicas = map.shard(shard).map(|info| info.replicas.clone());
                let replicas = replicas.unwrap_or_default();
                match replicas.len() {
                    0 => self.rng.random_range(1..=self.setup.nodes),
                    count => replicas[self.rng.random_range(0..count)].0,
                }
            }
        }
    }

    fn set_leader_hint(&self, shard: ShardId, leader: Option<u64>) {
        if self.setup.map.is_none() {
            self.shared.leader_hint.set(leader);
            return;
        }
        let mut hints = self.shared.group_leader_hints.borrow_mut();
        match leader {
            Some(node) => hints.insert(shard, node),
            None => hints.remove(&shard),
        };
    }

    /// Sends `call` until it has an answer. A read gives up after a few attempts (it changed
    /// nothing). A write keeps its session sequence number and is retried until some node
    /// answers — the session makes that exactly-once — or the run ends, so an unknown outcome
    /// is recorded only for writes still unresolved at the end: histories stay checkable.
    async fn execute(&mut self, shard: ShardId, call: ClientCall) -> Outcome {
        let is_write = matches!(call, ClientCall::Write { .. });
        let mut maybe_applied = false;
        let mut attempt = 0u32;
        loop {
            if attempt > 0
                && (self.shared.stop.get() || (!is_write && attempt >= MAX_READ_ATTEMPTS))
            {
                break;
            }
            attempt += 1;
            let node = self.choose_node(shard, !is_write);
            match self.send(node, shard, call.clone()).await {
                Some(Ok(answer)) => return Outcome::Answer(answer, node),
                Some(Err(EngineError::NotLeader { leader })) => {
                    self.set_leader_hint(shard, leader.map(|id| id.0));
                    if leader.is_none() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                // Refused before it was proposed (a full disk refuses writes that way, a node
                // without the key's shard too): this attempt changed nothing; try again.
                Some(Err(
                    error @ (EngineError::Busy
                    | EngineError::Stopped
                    | EngineError::NoSpace
                    | EngineError::NotHosted { .. }
                    | EngineError::WrongShard { .. }),
                )) => {
                    if error == EngineError::NoSpace {
                        self.shared.refused_no_space.set(self.shared.refused_no_space.get() + 1);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // This attempt's entry lost its slot; an earlier attempt's may still apply.
                Some(Err(EngineError::NotCommitted)) => {}
                Some(Err(EngineError::Unknown)) => maybe_applied = true,
                Some(Err(EngineError::Invalid(_) | EngineError::MembershipRefused(_))) => {
                    return if maybe_applied { Outcome::Unknown } else { Outcome::NotApplied };
                }
                None => {
                    // No answer: the request may have reached the leader.
                    maybe_applied |= is_write;
                    self.set_leader_hint(shard, None);
                }
            }
        }
        if maybe_applied { Outcome::Unknown } else { Outcome::NotApplied }
    }

    /// One request to one node; `None` if no reply came in time.
    async fn send(
        &mut self,
        node: u64,
        shard: ShardId,
        call: ClientCall,
    ) -> Option<Result<ClientAnswer, EngineError>> {
        let timeout = Duration::from_millis(self.setup.swarm.client_timeout_ms);
        if self.connection.as_ref().is_none_or(|(connected, _)| *connected != node) {
            self.connection = None;
            let connect = TcpStream::connect((format!("n{node}"), CLIENT_PORT));
            let stream = tokio::time::timeout(timeout, connect).await.ok()?.ok()?;
            self.connection = Some((node, stream));
        }
        self.next_request_id += 1;
        let request = ClientRequest { id: self.next_request_id, shard, call };
        let (_, stream) = self.connection.as_mut()?;
        let exchange = async {
            write_frame(stream, &request, MAX_CLIENT_FRAME_BYTES).await.ok()?;
            read_frame::<ClientReply, _>(stream, MAX_CLIENT_FRAME_BYTES).await.ok()
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Some(reply)) if reply.id == request.id => Some(reply.result),
            _ => {
                // A late reply could arrive on this connection: never reuse it.
                self.connection = None;
                None
            }
        }
    }

    fn record(&mut self, planned: Planned, shard: ShardId, call_us: u64, outcome: Outcome) {
        let client = self.setup.index;
        let ret_us = now_us();
        let is_lease_read = matches!(
            planned,
            Planned::Get { lease: true, .. } | Planned::Range { lease: true, .. }
        );
        let planned_ttl = match &planned {
            Planned::Put { key, value, ttl_ms: Some(_) } => Some((key.clone(), value.clone())),
            _ => None,
        };
        let mut answered_by = None;
        // How a read was served, for the read check (each observation names its key).
        let served = |store_revision: u64, stale: bool| ReadObservation {
            key: String::new(),
            value: None,
            store_revision,
            stale,
            call_us,
            ret_us,
        };
        if let (
            Planned::Get { key, stale, .. },
            Outcome::Answer(ClientAnswer::Read(ReadResult::Value { value, revision, .. }), _),
        ) = (&planned, &outcome)
        {
            self.shared.reads.borrow_mut().push(ReadObservation {
                key: key.clone(),
                value: value.as_ref().map(|(bytes, meta)| {
                    (String::from_utf8_lossy(bytes).into_owned(), meta.mod_revision)
                }),
                ..served(*revision, *stale)
            });
        }
        if let (
            Planned::Range { prefix, stale, .. },
            Outcome::Answer(
                ClientAnswer::Read(ReadResult::Range { entries, more, revision, .. }),
                _,
            ),
        ) = (&planned, &outcome)
        {
            let observations =
                self.range_observations(prefix, entries, *more, &served(*revision, *stale));
            self.shared.reads.borrow_mut().extend(observations);
            self.shared.range_reads.set(self.shared.range_reads.get() + 1);
        }
        let operation = match outcome {
            Outcome::Answer(answer, node) => match self.observe(planned, answer) {
                Some(op) => {
                    answered_by = Some(node);
                    Operation::ok(client, call_us, ret_us, op)
                }
                None => return,
            },
            Outcome::NotApplied => match planned.history_op() {
                Some(op) => Operation::fail(client, call_us, ret_us, op),
                None => return,
            },
            Outcome::Unknown => match planned.history_op() {
                Some(op) => Operation::info(client, call_us, op),
                None => return,
            },
        };
        let mut trace = self.shared.trace.borrow_mut();
        trace.add(client);
        trace.add(call_us);
        trace.add(ret_us);
        trace.add_bytes(operation.op.kind().as_bytes());
        drop(trace);
        if operation.status == conclave_checker::Status::Ok
            && self.shared.liveness_from_us.get().is_some_and(|from| call_us >= from)
        {
            self.shared
                .completed_since_liveness
                .set(self.shared.completed_since_liveness.get() + 1);
        }
        // A put with a TTL may be followed by its expiry (`expiry_operations`).
        if let (Some((key, value)), Status::Ok | Status::Info) = (planned_ttl, operation.status) {
            self.shared.ttl_puts.borrow_mut().push(TtlPut { key, value, call_us });
        }
        let mut operations = self.shared.operations.borrow_mut();
        if is_lease_read && let Some(node) = answered_by {
            let read = LeaseRead { operation: operations.len(), shard, node, call_us, ret_us };
            self.shared.lease_reads.borrow_mut().push(read);
        }
        operations.push(operation);
    }

    /// What a range read says about each key of the run under its prefix, as single-key
    /// observations for `read_check.rs`: the keys it returned hold those values at the store
    /// revision it was served at, and the keys it passed over — every one before its last key,
    /// or all of them when nothing more followed — held no value there.
    /// `served` says how the range was served (its key and value are not used).
    fn range_observations(
        &self,
        prefix: &str,
        entries: &[conclave_core::kv::KeyValue],
        more: bool,
        served: &ReadObservation,
    ) -> Vec<ReadObservation> {
        let observation = |key: &str, value: Option<(String, u64)>| ReadObservation {
            key: key.to_string(),
            value,
            ..*served
        };
        let mut observations: Vec<ReadObservation> = entries
            .iter()
            .map(|kv| {
                let value = String::from_utf8_lossy(&kv.value).into_owned();
                observation(&kv.key, Some((value, kv.meta.mod_revision)))
            })
            .collect();
        let last_returned = entries.last().map(|kv| kv.key.as_str());
        for index in 0..self.setup.keys {
            let key = self.key_name(index);
            let covered = key.starts_with(prefix)
                && (!more || last_returned.is_some_and(|last| key.as_str() < last));
            if covered && !entries.iter().any(|kv| kv.key == key) {
                observations.push(observation(&key, None));
            }
        }
        observations
    }

    /// Turns a server answer into the history operation it demonstrates.
    fn observe(&mut self, planned: Planned, answer: ClientAnswer) -> Option<Op> {
        let text = |bytes: &Bytes| String::from_utf8_lossy(bytes).into_owned();
        match (planned, answer) {
            // Checked apart (`read_check.rs`): a stale read is no linearizable operation.
            (Planned::Get { stale: true, .. }, _) => None,
            (Planned::Get { key, .. }, ClientAnswer::Read(ReadResult::Value { value, .. })) => {
                let value = value.map(|(bytes, _)| text(&bytes));
                self.last_seen.insert(key.clone(), value.clone());
                Some(Op::Get { key, value })
            }
            (Planned::Range { stale: true, .. }, _) => None,
            (
                Planned::Range { prefix, limit, .. },
                ClientAnswer::Read(ReadResult::Range { entries, more, .. }),
            ) => {
                let kvs: Vec<HistoryKeyValue> = entries
                    .iter()
                    .map(|kv| HistoryKeyValue { key: kv.key.clone(), value: text(&kv.value) })
                    .collect();
                for kv in &kvs {
                    self.last_seen.insert(kv.key.clone(), Some(kv.value.clone()));
                }
                Some(Op::Range(HistoryRange {
                    prefix,
                    start_after: None,
                    limit: Some(limit),
                    kvs,
                    more: Some(more),
                }))
            }
            (Planned::Put { key, value, .. }, ClientAnswer::Write(KvResponse::Put { .. })) => {
                self.last_seen.insert(key.clone(), Some(value.clone()));
                Some(Op::Put { key, value })
            }
            (Planned::Delete { key }, ClientAnswer::Write(KvResponse::Delete { prev, .. })) => {
                self.last_seen.insert(key.clone(), None);
                Some(Op::Delete { key, found: Some(prev.is_some()) })
            }
            (Planned::Cas { key, expected, value }, ClientAnswer::Write(response)) => {
                let success = matches!(response, KvResponse::Put { .. });
                if !success && !matches!(response, KvResponse::ConditionFailed { .. }) {
                    return None;
                }
                if success {
                    self.last_seen.insert(key.clone(), Some(value.clone()));
                }
                Some(Op::Cas { key, expected, value, success })
            }
            (Planned::Create { key, value }, ClientAnswer::Write(response)) => {
                let success = matches!(response, KvResponse::Put { .. });
                if !success && !matches!(response, KvResponse::ConditionFailed { .. }) {
                    return None;
                }
                Some(Op::PutIfAbsent { key, value, success })
            }
            (
                Planned::Txn { key, other, expected, value },
                ClientAnswer::Write(KvResponse::Txn { succeeded, results, .. }),
            ) => {
                let read_back = match results.first() {
                    Some(TxnOpResult::Get { kv }) => kv.as_ref().map(|kv| text(&kv.value)),
                    _ => None,
                };
                let txn = HistoryTxn {
                    compare: vec![HistoryCompare::Equals { key: key.clone(), expected }],
                    success: vec![
                        HistoryTxnOp::Put { key: key.clone(), value: value.clone() },
                        HistoryTxnOp::Put { key: other.clone(), value: value.clone() },
                    ],
                    failure: vec![HistoryTxnOp::Get { key: key.clone(), value: read_back }],
                    succeeded,
                };
                Some(Op::Txn(txn))
            }
            _ => None,
        }
    }
}

/// An operation before it is sent.
enum Planned {
    Get {
        key: String,
        lease: bool,
        /// Served from whatever the node has applied (`ReadConsistency::Stale`): not in the
        /// linearizable history, checked by `read_check.rs` instead.
        stale: bool,
    },
    /// At most `limit` keys starting with `prefix`, at the consistency `Get` would have.
    Range {
        prefix: String,
        limit: u64,
        lease: bool,
        stale: bool,
    },
    /// With `ttl_ms`, the key expires that long after the put applies (by the leader's clock).
    Put {
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    },
    Delete {
        key: String,
    },
    Cas {
        key: String,
        expected: Option<String>,
        value: String,
    },
    Create {
        key: String,
        value: String,
    },
    Txn {
        key: String,
        other: String,
        expected: Option<String>,
        value: String,
    },
}

impl Planned {
    fn is_write(&self) -> bool {
        !matches!(self, Planned::Get { .. } | Planned::Range { .. })
    }

    /// What the request is routed by: its key (a transaction's keys share a shard), or a
    /// listing's prefix (the hash tag of the keys it lists, in a sharded world).
    fn routing_key(&self) -> &str {
        match self {
            Planned::Range { prefix, .. } => prefix,
            Planned::Get { key, .. }
            | Planned::Put { key, .. }
            | Planned::Delete { key }
            | Planned::Cas { key, .. }
            | Planned::Create { key, .. }
            | Planned::Txn { key, .. } => key,
        }
    }

    fn call(&self, session: Option<SessionTag>) -> ClientCall {
        let bytes = |value: &str| Bytes::from(value.to_string());
        let command = match self {
            Planned::Get { key, lease, stale } => {
                return ClientCall::Read {
                    query: ReadQuery::Get { key: key.clone() },
                    consistency: read_consistency(*lease, *stale),
                };
            }
            Planned::Range { prefix, limit, lease, stale } => {
                return ClientCall::Read {
                    query: ReadQuery::Range {
                        prefix: prefix.clone(),
                        start_after: None,
                        limit: *limit,
                    },
                    consistency: read_consistency(*lease, *stale),
                };
            }
            Planned::Put { key, value, ttl_ms } => KvCommand::Put {
                key: key.clone(),
                value: bytes(value),
                ttl_ms: *ttl_ms,
                condition: Condition::Always,
            },
            Planned::Delete { key } => {
                KvCommand::Delete { key: key.clone(), condition: Condition::Always }
            }
            Planned::Cas { key, expected, value } => KvCommand::Cas {
                key: key.clone(),
                expected: expected.as_deref().map(bytes),
                value: bytes(value),
                ttl_ms: None,
            },
            Planned::Create { key, value } => KvCommand::Put {
                key: key.clone(),
                value: bytes(value),
                ttl_ms: None,
                condition: Condition::Absent,
            },
            Planned::Txn { key, other, expected, value } => {
                let target = match expected {
                    Some(expected) => CompareTarget::Value(CompareOp::Equal, bytes(expected)),
                    None => CompareTarget::Exists(false),
                };
                KvCommand::Txn(Txn {
                    compares: vec![Compare { key: key.clone(), target }],
                    success: vec![
                        TxnOp::Put { key: key.clone(), value: bytes(value), ttl_ms: None },
                        TxnOp::Put { key: other.clone(), value: bytes(value), ttl_ms: None },
                    ],
                    failure: vec![TxnOp::Get { key: key.clone() }],
                })
            }
        };
        ClientCall::Write { command, session }
    }

    /// The history operation for an outcome without an answer (outputs unknown). None for a
    /// read: it changes nothing, so one that never got an answer is not recorded at all.
    fn history_op(&self) -> Option<Op> {
        Some(match self {
            Planned::Get { .. } | Planned::Range { .. } => return None,
            Planned::Put { key, value, .. } => Op::Put { key: key.clone(), value: value.clone() },
            Planned::Delete { key } => Op::Delete { key: key.clone(), found: None },
            Planned::Cas { key, expected, value } => Op::Cas {
                key: key.clone(),
                expected: expected.clone(),
                value: value.clone(),
                success: false,
            },
            Planned::Create { key, value } => {
                Op::PutIfAbsent { key: key.clone(), value: value.clone(), success: false }
            }
            Planned::Txn { key, other, expected, value } => Op::Txn(HistoryTxn {
                compare: vec![HistoryCompare::Equals {
                    key: key.clone(),
                    expected: expected.clone(),
                }],
                success: vec![
                    HistoryTxnOp::Put { key: key.clone(), value: value.clone() },
                    HistoryTxnOp::Put { key: other.clone(), value: value.clone() },
                ],
                failure: vec![HistoryTxnOp::Get { key: key.clone(), value: None }],
                succeeded: false,
            }),
        })
    }
}

fn read_consistency(lease: bool, stale: bool) -> ReadConsistency {
    match (lease, stale) {
        (_, true) => ReadConsistency::Stale,
        (true, false) => ReadConsistency::Lease,
        (false, false) => ReadConsistency::Linearizable,
    }
}
