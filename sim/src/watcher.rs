//! A simulated watcher: it follows the changes of one prefix through every fault, the way an
//! application that caches keys or reacts to changes would. It watches one node; when the
//! stream breaks (a crash, a cut, the node's history lost events), when the node stays silent
//! for a while (cut off from the cluster), and sometimes for no reason at all (a client that
//! reconnects, often inside a revision that carries several changes), it resumes from the
//! position after the last change it received, on a node of its choice. Only when no node's
//! history still holds that position does it start again from the present, and that restart
//! is recorded. `watch_check.rs` judges what it received.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use conclave_core::engine::WatchPosition;
use conclave_core::kv::KvEvent;
use conclave_core::shard::ShardId;
use conclave_core::transport::frame::{read_frame, write_frame};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use turmoil::net::TcpStream;

use crate::client_protocol::{
    CLIENT_PORT, ClientAnswer, ClientCall, ClientReply, ClientRequest, MAX_CLIENT_FRAME_BYTES,
    WatchFrame,
};

/// How long a watch may stay silent before the watcher tries another node. A node cut off
/// from the cluster serves a correct but frozen stream; a real watcher would time out too.
const SILENCE_MS: u64 = 1_000;
/// How long a node that was silent is passed over.
const SILENT_NODE_REST_MS: u64 = 5_000;
/// One change in this many ends the stream on the watcher's side, to exercise resumption.
const VOLUNTARY_RECONNECT_ONE_IN: u32 = 25;
const CONNECT_TIMEOUT_MS: u64 = 500;

/// What the watcher received, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchRecord {
    Change {
        event: KvEvent,
        after: WatchPosition,
        node: u64,
    },
    /// No node held the position any more: the watcher started again from the present.
    RestartedFromNow,
}

/// Shared with the run loop and the check.
#[derive(Default)]
pub struct WatchShared {
    pub records: RefCell<Vec<WatchRecord>>,
    /// Streams resumed from a position (after any end of a stream).
    pub resumes: Cell<u64>,
}

impl WatchShared {
    /// The position after the newest change received.
    pub fn last_position(&self) -> Option<WatchPosition> {
        self.records.borrow().iter().rev().find_map(|record| match record {
            WatchRecord::Change { after, .. } => Some(*after),
            WatchRecord::RestartedFromNow => None,
        })
    }
}

pub struct WatcherSetup {
    /// Every host that may serve it (voters and spares).
    pub hosts: u64,
    pub prefix: String,
    pub seed: u64,
}

enum StreamEnd {
    /// The stream ended (or was left); the position to resume from.
    Resume,
    /// The node sent nothing for `SILENCE_MS`: it may be cut off or no longer a member.
    Silent,
    /// This node's history no longer holds the position.
    Compacted,
}

pub async fn run_watcher(setup: WatcherSetup, shared: Rc<WatchShared>) -> turmoil::Result {
    let mut watcher = Watcher {
        rng: ChaCha8Rng::seed_from_u64(setup.seed ^ 0x3a7c_4e5d_0b57_e11e),
        // From the first revision: every change of the run is this watcher's.
        from: Some(WatchPosition::start_of(1)),
        setup,
        shared,
        next_request_id: 0,
    };
    // Since the last change received: the nodes tried, and whether any no longer held the
    // position. Each node is tried once, in random order (one removed from the cluster serves
    // a frozen stream, and a watcher that kept going back to it would fall behind for good).
    // Once every node was tried (a node that is down counts: it may never return) and one
    // had compacted, no node can continue the stream.
    let mut tried = BTreeSet::new();
    let mut compacted = false;
    // Nodes that were silent are left alone for a while, unless no other is left to try.
    let mut silent_until_ms = BTreeMap::new();
    loop {
        let now_ms = turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64);
        let untried: Vec<u64> =
            (1..=watcher.setup.hosts).filter(|node| !tried.contains(node)).collect();
        let awake: Vec<u64> = untried
            .iter()
            .copied()
            .filter(|node| silent_until_ms.get(node).is_none_or(|until| *until <= now_ms))
            .collect();
        let choices = if awake.is_empty() { &untried } else { &awake };
        let node = choices[watcher.rng.random_range(0..choices.len())];
        let received_before = watcher.shared.records.borrow().len();
        let end = watcher.watch(node).await;
        if watcher.shared.records.borrow().len() > received_before {
            tried.clear();
            compacted = false;
        }
        tried.insert(node);
        compacted |= matches!(end, StreamEnd::Compacted);
        if matches!(end, StreamEnd::Silent) {
            silent_until_ms.insert(node, now_ms + SILENT_NODE_REST_MS);
        }
        if tried.len() as u64 == watcher.setup.hosts {
            tried.clear();
            if compacted {
                compacted = false;
                watcher.from = None;
                watcher.shared.records.borrow_mut().push(WatchRecord::RestartedFromNow);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Watcher {
    setup: WatcherSetup,
    shared: Rc<WatchShared>,
    rng: ChaCha8Rng,
    from: Option<WatchPosition>,
    next_request_id: u64,
}

impl Watcher {
    /// One stream from `node`, until it ends or the watcher leaves it.
    async fn watch(&mut self, node: u64) -> StreamEnd {
        let connect = TcpStream::connect((format!("n{node}"), CLIENT_PORT));
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await
        else {
            return StreamEnd::Resume;
        };
        self.next_request_id += 1;
        let id = self.next_request_id;
        let call = ClientCall::Watch { prefix: self.setup.prefix.clone(), from: self.from };
        if write_frame(
            &mut stream,
            &ClientRequest { id, shard: ShardId::META, call },
            MAX_CLIENT_FRAME_BYTES,
        )
        .await
        .is_err()
        {
            return StreamEnd::Resume;
        }
        if self.from.is_some() {
            self.shared.resumes.set(self.shared.resumes.get() + 1);
        }
        loop {
            let read = read_frame::<ClientReply, _>(&mut stream, MAX_CLIENT_FRAME_BYTES);
            let reply = match tokio::time::timeout(Duration::from_millis(SILENCE_MS), read).await {
                Ok(Ok(reply)) if reply.id == id => reply,
                Err(_) => return StreamEnd::Silent,
                _ => return StreamEnd::Resume,
            };
            match reply.result {
                Ok(ClientAnswer::Watch(WatchFrame::Change { event, after })) => {
                    self.from = Some(after);
                    let record = WatchRecord::Change { event, after, node };
                    self.shared.records.borrow_mut().push(record);
                    if self.rng.random_ratio(1, VOLUNTARY_RECONNECT_ONE_IN) {
                        return StreamEnd::Resume;
                    }
                }
                Ok(ClientAnswer::Watch(WatchFrame::Lost { resume, .. })) => {
                    // The watcher resumes from what it received, not from what the node says
                    // it sent; only a stream from "now" that delivered nothing yet takes the
                    // node's word for where "now" was.
                    self.from.get_or_insert(resume);
                    return StreamEnd::Resume;
                }
                Ok(ClientAnswer::Watch(WatchFrame::Compacted { .. })) => {
                    return StreamEnd::Compacted;
                }
                _ => return StreamEnd::Resume,
            }
        }
    }
}
