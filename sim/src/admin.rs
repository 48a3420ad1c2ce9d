//! The operator, simulated: a turmoil client that carries out the nemesis's membership changes
//! and leadership transfers through the leader, the way `conclave members …` would. It keeps
//! track of the configuration it last saw committed, never shrinks the cluster below three
//! voters (and asks the leader to decline a removal that would, in case its own view missed a
//! change), and retries each step until it succeeds, is refused for good, or runs out of time.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use conclave_core::engine::EngineError;
use conclave_core::raft::{MembershipChange, MembershipError, NodeId};
use conclave_core::shard::ShardId;
use conclave_core::transport::frame::{read_frame, write_frame};
use turmoil::net::TcpStream;

use crate::client_protocol::{
    CLIENT_PORT, ClientAnswer, ClientCall, ClientReply, ClientRequest, MAX_CLIENT_FRAME_BYTES,
    PEER_PORT,
};

/// One operator action, with "the leader" already resolved by the nemesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    Grow { node: u64 },
    Shrink { node: u64 },
    Replace { old: u64, new: u64 },
    TransferLeadership { to: u64 },
}

/// What the admin client achieved, for the run report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminStats {
    pub learners_added: u64,
    pub promotions: u64,
    pub removals: u64,
    pub transfers: u64,
    pub refused: u64,
}

#[derive(Default)]
pub struct AdminShared {
    pub queue: RefCell<VecDeque<AdminCommand>>,
    pub stop: Cell<bool>,
    pub stats: RefCell<AdminStats>,
    pub log: RefCell<Vec<String>>,
}

/// How long one step may take before the operator gives up on it.
const STEP_DEADLINE_MS: u64 = 15_000;
const MIN_VOTERS: usize = 3;

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64)
}

pub async fn run_admin(
    hosts: u64,
    initial_voters: u64,
    shared: Rc<AdminShared>,
) -> turmoil::Result {
    let mut admin = Admin {
        hosts,
        voters: (1..=initial_voters).collect(),
        members: (1..=initial_voters).collect(),
        shared,
        leader_hint: None,
        next_request_id: 0,
    };
    while !admin.shared.stop.get() {
        let command = admin.shared.queue.borrow_mut().pop_front();
        match command {
            Some(command) => admin.execute(command).await,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Ok(())
}

struct Admin {
    hosts: u64,
    /// Voters and members as of the last configuration this operator saw committed.
    voters: BTreeSet<u64>,
    members: BTreeSet<u64>,
    shared: Rc<AdminShared>,
    leader_hint: Option<u64>,
    next_request_id: u64,
}

enum StepEnd {
    Done,
    GiveUp(String),
}

impl Admin {
    fn note(&self, line: String) {
        self.shared
            .log
            .borrow_mut()
            .push(format!("{:>7.3} s  operator: {line}", now_ms() as f64 / 1000.0));
    }

    async fn execute(&mut self, command: AdminCommand) {
        match command {
            AdminCommand::Grow { node } => {
                let _ = self.grow(node).await;
            }
            AdminCommand::Shrink { node } => self.shrink(node).await,
            AdminCommand::Replace { old, new } => {
                if self.grow(new).await {
                    self.shrink(old).await;
                }
            }
            AdminCommand::TransferLeadership { to } => {
                if !self.voters.contains(&to) {
                    return;
                }
                if let StepEnd::Done =
                    self.step(ClientCall::TransferLeadership { to: NodeId(to) }).await
                {
                    self.shared.stats.borrow_mut().transfers += 1;
                    self.note(format!("leadership transfer to n{to} started"));
                }
            }
        }
    }

    /// Adds `node` as a learner and promotes it. Returns whether it is a voter now.
    async fn grow(&mut self, node: u64) -> bool {
        if self.members.contains(&node) {
            return self.voters.contains(&node);
        }
        let address = format!("n{node}:{PEER_PORT}");
        let add = MembershipChange::AddLearner { id: NodeId(node), address };
        match self.step(self.membership_call(add)).await {
            StepEnd::Done => {
                self.members.insert(node);
                self.shared.stats.borrow_mut().learners_added += 1;
                self.note(format!("n{node} added as a learner"));
            }
            StepEnd::GiveUp(reason) => {
                self.note(format!("adding n{node} gave up: {reason}"));
                return false;
            }
        }
        match self.step(self.membership_call(MembershipChange::Promote { id: NodeId(node) })).await
        {
            StepEnd::Done => {
                self.voters.insert(node);
                self.shared.stats.borrow_mut().promotions += 1;
                self.note(format!("n{node} promoted to voter"));
                true
            }
            StepEnd::GiveUp(reason) => {
                self.note(format!("promoting n{node} gave up: {reason}"));
                false
            }
        }
    }

    async fn shrink(&mut self, node: u64) {
        if !self.members.contains(&node)
            || (self.voters.contains(&node) && self.voters.len() <= MIN_VOTERS)
        {
            return;
        }
        let remove = MembershipChange::Remove { id: NodeId(node) };
        match self.step(self.membership_call(remove)).await {
            StepEnd::Done => {
                self.members.remove(&node);
                self.voters.remove(&node);
                self.shared.stats.borrow_mut().removals += 1;
                self.note(format!("n{node} removed"));
            }
            StepEnd::GiveUp(reason) => self.note(format!("removing n{node} gave up: {reason}")),
        }
    }

    fn membership_call(&self, change: MembershipChange) -> ClientCall {
        ClientCall::ChangeMembership { change, min_voters: MIN_VOTERS }
    }

    /// Sends one operator call to the leader until it succeeds or fails for good.
    async fn step(&mut self, call: ClientCall) -> StepEnd {
        let deadline_ms = now_ms() + STEP_DEADLINE_MS;
        let mut attempt = 0u64;
        while now_ms() < deadline_ms && !self.shared.stop.get() {
            attempt += 1;
            let node = self.leader_hint.unwrap_or(1 + attempt % self.hosts);
            match self.send(node, call.clone()).await {
                Some(Ok(ClientAnswer::Membership(config))) => {
                    self.voters = config.voters.iter().map(|id| id.0).collect();
                    self.members = config.members().iter().map(|id| id.0).collect();
                    return StepEnd::Done;
                }
                Some(Ok(ClientAnswer::Declined(reason))) => {
                    self.shared.stats.borrow_mut().refused += 1;
                    return StepEnd::GiveUp(reason);
                }
                Some(Ok(_)) => return StepEnd::Done,
                Some(Err(EngineError::NotLeader { leader })) => {
                    self.leader_hint = leader.map(|id| id.0);
                    if leader.is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Some(Err(EngineError::MembershipRefused(refused))) => match refused {
                    // Transient: wait and try again.
                    MembershipError::ChangeInProgress { .. }
                    | MembershipError::LeaderNotReady
                    | MembershipError::LearnerBehind { .. }
                    | MembershipError::TransferInProgress
                    // Lifted by the next leader change, which the nemesis brings soon enough.
                    | MembershipError::TransferTargetMayCampaign { .. }
                    | MembershipError::Busy
                    | MembershipError::WouldLoseQuorum { .. } => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    MembershipError::NotLeader { .. } => self.leader_hint = None,
                    permanent => {
                        self.shared.stats.borrow_mut().refused += 1;
                        return StepEnd::GiveUp(permanent.to_string());
                    }
                },
                Some(Err(_)) | None => {
                    self.leader_hint = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        StepEnd::GiveUp("no answer before the deadline".into())
    }

    async fn send(
        &mut self,
        node: u64,
        call: ClientCall,
    ) -> Option<Result<ClientAnswer, EngineError>> {
        let timeout = Duration::from_millis(2_000);
        let connect = TcpStream::connect((format!("n{node}"), CLIENT_PORT));
        let mut stream = tokio::time::timeout(timeout, connect).await.ok()?.ok()?;
        self.next_request_id += 1;
        let request = ClientRequest { id: self.next_request_id, shard: ShardId::META, call };
        let exchange = async {
            write_frame(&mut stream, &request, MAX_CLIENT_FRAME_BYTES).await.ok()?;
            read_frame::<ClientReply, _>(&mut stream, MAX_CLIENT_FRAME_BYTES).await.ok()
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Some(reply)) if reply.id == request.id => Some(reply.result),
            _ => None,
        }
    }
}
