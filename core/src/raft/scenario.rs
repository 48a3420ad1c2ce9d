//! A small scripting language over [`MemoryCluster`], so that scenario tests read like the
//! figures of the Raft paper (in the spirit of etcd raft's `testdata/*.txt`). One command per
//! line; `#` starts a comment. Node lists accept `all`; message filters are `FROM->TO` where
//! either side may be `*`.
//!
//! ```text
//! cluster 5 [manual-persist] [no-prevote] [no-checkquorum] [max-entries=N] [lease]
//! node 3 term=4 [vote=1] [commit=2] log=1 1 2      # reset a node's durable state and restart it
//! campaign 1 | tick 2 [N] | tick all [N] | elect | stabilize
//! propose 1 [N] | propose-together 1 N | read 1 | transfer 1 3 | snapshot 2
//! deliver 1->* [one] | drop *->3 | partition 1 2 | 3 4 5 | isolate 3 | heal
//! crash 2 | restart 2 | persist 2 | persist all
//! lose-tail 3 4                                   # 3 restarts keeping only entries 1..=4
//! expect leader 1 | expect leader none | expect role 2 follower | expect term 2 5
//! expect commit all 4 | expect applied 2 4 | expect log all = 1 1 2 | expect vote 3 1
//! expect reads-served 1 2 | expect reads-failed 1 1 | expect propose-fails 2
//! expect term 3 >1 | expect messages 1->* 2 | expect term-at all 2 3 | expect logs-equal
//! expect counter 1 check-quorum-step-downs 1      # a `RaftCounters` field, dashes for `_`
//! expect leader-in 2 3 | run 30                    # 30 rounds of: tick everyone, stabilize
//! cluster 3 spares=2                               # nodes 4 and 5 run but are not members
//! add-learner 4 | promote 4 | remove 1             # membership changes at the leader
//! set-address 2 n2-moved                          # a member's address record changes
//! expect address all 2 = n2-moved
//! membership-fails promote 5 | expect voters all = 1 2 4 | expect learners 2 = 5
//! ```
//!
//! Where a node id is expected, `leader` names the current leader. Numeric expectations accept
//! a comparison prefix: `>N`, `<N`, `>=N`, `<=N`, `!=N`.

use std::fmt::Write as _;

use bytes::Bytes;

use super::config::{LeaseConfig, RaftConfig};
use super::membership::MembershipChange;
use super::memory_cluster::{DurableState, HarnessOptions, MemoryCluster};
use super::ready::Role;
use super::types::{Entry, EntryPayload, HardState, NodeId};

/// Runs a script; returns a description of the first failing line.
pub fn run_script(name: &str, script: &str) -> Result<(), String> {
    let mut runner = Runner { cluster: None };
    for (line_number, raw_line) in script.lines().enumerate() {
        let line = raw_line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Err(problem) = runner.execute(line) {
            let state = runner.describe();
            return Err(format!(
                "{name}:{}: `{line}`: {problem}\ncluster state:\n{state}",
                line_number + 1
            ));
        }
    }
    Ok(())
}

struct Runner {
    cluster: Option<MemoryCluster>,
}

type Step = Result<(), String>;

impl Runner {
    fn cluster(&mut self) -> Result<&mut MemoryCluster, String> {
        self.cluster.as_mut().ok_or_else(|| "no `cluster` command yet".to_string())
    }

    fn describe(&self) -> String {
        let Some(cluster) = &self.cluster else { return String::from("(none)") };
        let mut out = String::new();
        for node in cluster.nodes.values() {
            match &node.raft {
                None => {
                    let _ = writeln!(out, "  {}: crashed", node.id);
                }
                Some(raft) => {
                    let terms: Vec<String> = (raft.log().first_index()..=raft.log().last_index())
                        .filter_map(|i| raft.log().term(i))
                        .map(|t| t.to_string())
                        .collect();
                    let _ = writeln!(
                        out,
                        "  {}: {:?} term={} vote={} leader={} commit={} applied={} log=[{}]",
                        node.id,
                        raft.role(),
                        raft.term(),
                        raft.hard_state().vote,
                        raft.leader(),
                        raft.log().committed(),
                        node.state.applied_index,
                        terms.join(" ")
                    );
                }
            }
        }
        let _ = writeln!(out, "  in flight: {} messages", cluster.in_flight.len());
        out
    }

    fn execute(&mut self, line: &str) -> Step {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["cluster", size, options @ ..] => self.new_cluster(size, options),
            ["node", id, rest @ ..] => self.reset_node(id, rest),
            ["lose-tail", id, keep] => {
                // A disk that dropped synced writes: the node restarts with a prefix of its log.
                let (id, keep) = (self.node(id)?, parse_u64(keep)?);
                let cluster = self.cluster()?;
                cluster.crash(id);
                let node = cluster.nodes.get_mut(&id).ok_or("unknown node")?;
                node.durable.entries.retain(|entry| entry.index <= keep);
                node.durable.hard_state.commit = node.durable.hard_state.commit.min(keep);
                cluster.restart(id);
                Ok(())
            }
            ["campaign", id] => {
                let id = self.node(id)?;
                self.cluster()?.raft_mut(id).campaign();
                self.cluster()?.process(id);
                Ok(())
            }
            ["tick", who, rest @ ..] => {
                let times = match rest {
                    [] => 1,
                    [n] => parse_u64(n)?,
                    _ => return Err("usage: tick ID|all [N]".into()),
                };
                let ids = self.nodes(who)?;
                for _ in 0..times {
                    for id in &ids {
                        self.cluster()?.tick(*id);
                    }
                }
                Ok(())
            }
            ["run", rounds] => {
                for _ in 0..parse_u64(rounds)? {
                    let cluster = self.cluster()?;
                    cluster.tick_all();
                    cluster.stabilize();
                }
                Ok(())
            }
            ["elect"] => {
                let elected = self.cluster()?.elect_leader(10_000);
                elected.map(|_| ()).ok_or_else(|| "no leader after 10,000 ticks".to_string())
            }
            ["stabilize"] => {
                self.cluster()?.stabilize();
                Ok(())
            }
            ["propose", id, rest @ ..] => {
                let count = rest.first().map(|n| parse_u64(n)).transpose()?.unwrap_or(1);
                let id = self.node(id)?;
                for _ in 0..count {
                    self.cluster()?
                        .propose(id)
                        .ok_or_else(|| format!("{id} refused the proposal"))?;
                }
                Ok(())
            }
            ["propose-together", id, count] => {
                let (id, count) = (self.node(id)?, parse_u64(count)?);
                self.cluster()?
                    .propose_many(id, count)
                    .map(|_| ())
                    .ok_or_else(|| format!("{id} refused the proposals"))
            }
            ["read", id] => {
                let id = self.node(id)?;
                self.cluster()?.read(id).map(|_| ()).ok_or_else(|| format!("{id} refused the read"))
            }
            ["transfer", from, to] => {
                let (from, to) = (self.node(from)?, self.node(to)?);
                self.cluster()?
                    .raft_mut(from)
                    .transfer_leadership(to)
                    .map_err(|e| e.to_string())?;
                self.cluster()?.process(from);
                Ok(())
            }
            ["snapshot", who] => {
                for id in self.nodes(who)? {
                    self.cluster()?.snapshot(id);
                }
                Ok(())
            }
            ["deliver", filter, rest @ ..] => self.deliver(filter, rest.first() == Some(&"one")),
            ["drop", filter] => {
                let (from, to) = self.filter(filter)?;
                let cluster = self.cluster()?;
                cluster.in_flight.retain(|m| {
                    !(from.is_none_or(|f| m.from == f) && to.is_none_or(|t| m.to == t))
                });
                Ok(())
            }
            ["partition", rest @ ..] => {
                let split =
                    rest.iter().position(|w| *w == "|").ok_or("usage: partition A B | C D")?;
                let left =
                    rest[..split].iter().map(|w| self.node(w)).collect::<Result<Vec<_>, _>>()?;
                let right = rest[split + 1..]
                    .iter()
                    .map(|w| self.node(w))
                    .collect::<Result<Vec<_>, _>>()?;
                self.cluster()?.partition(&left, &right);
                Ok(())
            }
            ["isolate", id] => {
                let id = self.node(id)?;
                self.cluster()?.isolate(id);
                Ok(())
            }
            ["heal"] => {
                self.cluster()?.heal();
                Ok(())
            }
            ["crash", who] => {
                for id in self.nodes(who)? {
                    self.cluster()?.crash(id);
                }
                Ok(())
            }
            ["restart", who] => {
                for id in self.nodes(who)? {
                    self.cluster()?.restart(id);
                }
                Ok(())
            }
            ["persist", who] => {
                for id in self.nodes(who)? {
                    self.cluster()?.persist_all(id);
                }
                Ok(())
            }
            ["add-learner", id] => self.membership(MembershipChange::AddLearner {
                id: self.node(id)?,
                address: format!("n{id}"),
            }),
            ["promote", id] => self.membership(MembershipChange::Promote { id: self.node(id)? }),
            ["remove", id] => self.membership(MembershipChange::Remove { id: self.node(id)? }),
            ["set-address", id, address] => self.membership(MembershipChange::SetAddress {
                id: self.node(id)?,
                address: address.to_string(),
            }),
            ["membership-fails", action, id] => {
                let id = self.node(id)?;
                let change = match *action {
                    "add-learner" => {
                        MembershipChange::AddLearner { id, address: format!("n{}", id.0) }
                    }
                    "promote" => MembershipChange::Promote { id },
                    "remove" => MembershipChange::Remove { id },
                    "set-address" => {
                        MembershipChange::SetAddress { id, address: "elsewhere".into() }
                    }
                    other => return Err(format!("unknown membership change {other}")),
                };
                match self.cluster()?.change_membership(change) {
                    Err(_) => Ok(()),
                    Ok(config) => Err(format!("the change was accepted: {config:?}")),
                }
            }
            ["expect", rest @ ..] => self.expect(rest),
            _ => Err("unknown command".into()),
        }
    }

    fn membership(&mut self, change: MembershipChange) -> Step {
        self.cluster()?.change_membership(change).map(|_| ()).map_err(|error| error.to_string())
    }

    fn new_cluster(&mut self, size: &str, options: &[&str]) -> Step {
        let size = parse_u64(size)?;
        let mut config = RaftConfig {
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            ..Default::default()
        };
        let mut harness = HarnessOptions::default();
        let mut spares = 0;
        for option in options {
            match *option {
                "manual-persist" => harness.auto_persist = false,
                "no-prevote" => config.pre_vote = false,
                "no-checkquorum" => config.check_quorum = false,
                "lease" => config.lease_read = Some(LeaseConfig { max_clock_drift_ppm: 100_000 }),
                other => match other.split_once('=') {
                    Some(("max-entries", n)) => {
                        config.max_entries_per_message = parse_u64(n)? as usize
                    }
                    Some(("spares", n)) => spares = parse_u64(n)?,
                    _ => return Err(format!("unknown cluster option {other}")),
                },
            }
        }
        self.cluster = Some(MemoryCluster::with_spares(size, spares, config, 0x5eed, harness));
        Ok(())
    }

    fn reset_node(&mut self, id: &str, settings: &[&str]) -> Step {
        let id = self.node(id)?;
        let mut hard_state = HardState::default();
        let mut terms = Vec::new();
        let mut in_log = false;
        for setting in settings {
            if in_log {
                terms.push(parse_u64(setting)?);
                continue;
            }
            match setting.split_once('=') {
                Some(("term", v)) => hard_state.term = parse_u64(v)?,
                Some(("vote", v)) => hard_state.vote = NodeId(parse_u64(v)?),
                Some(("commit", v)) => hard_state.commit = parse_u64(v)?,
                Some(("log", v)) => {
                    in_log = true;
                    if !v.is_empty() {
                        terms.push(parse_u64(v)?);
                    }
                }
                _ => return Err(format!("unknown node setting {setting}")),
            }
        }
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, term)| Entry {
                index: i as u64 + 1,
                term: *term,
                // Payloads name their origin (term and index) so equal positions from the same
                // leader are equal entries, as in the paper's figures.
                payload: EntryPayload::Command(Bytes::from(format!("t{term}i{}", i + 1))),
            })
            .collect();
        let cluster = self.cluster()?;
        cluster.crash(id);
        let node = cluster.nodes.get_mut(&id).ok_or("unknown node")?;
        node.durable = DurableState { hard_state, snapshot: None, entries };
        cluster.restart(id);
        Ok(())
    }

    fn deliver(&mut self, filter: &str, only_one: bool) -> Step {
        let (from, to) = self.filter(filter)?;
        let cluster = self.cluster()?;
        loop {
            let position = cluster
                .in_flight
                .iter()
                .position(|m| from.is_none_or(|f| m.from == f) && to.is_none_or(|t| m.to == t));
            let Some(position) = position else { return Ok(()) };
            cluster.deliver(position);
            if only_one {
                return Ok(());
            }
        }
    }

    fn expect(&mut self, words: &[&str]) -> Step {
        match words {
            ["leader", "none"] => match self.cluster()?.leader() {
                None => Ok(()),
                Some(leader) => Err(format!("expected no leader, found {leader}")),
            },
            ["leader", id] => {
                let id = self.node(id)?;
                match self.cluster()?.leader() {
                    Some(leader) if leader == id => Ok(()),
                    other => Err(format!("expected leader {id}, found {other:?}")),
                }
            }
            ["role", id, role] => {
                let id = self.node(id)?;
                let expected = match *role {
                    "follower" => Role::Follower,
                    "pre-candidate" => Role::PreCandidate,
                    "candidate" => Role::Candidate,
                    "leader" => Role::Leader,
                    other => return Err(format!("unknown role {other}")),
                };
                let actual = self.cluster()?.raft(id).role();
                (actual == expected).then_some(()).ok_or(format!("{id} is {actual:?}"))
            }
            ["term", who, term] => self.expect_each(who, term, |c, id| c.raft(id).term()),
            ["commit", who, value] => {
                self.expect_each(who, value, |c, id| c.raft(id).log().committed())
            }
            ["applied", who, value] => {
                self.expect_each(who, value, |c, id| c.nodes[&id].state.applied_index)
            }
            ["vote", who, value] => {
                self.expect_each(who, value, |c, id| c.raft(id).hard_state().vote.0)
            }
            ["reads-served", who, value] => {
                self.expect_each(who, value, |c, id| c.nodes[&id].reads_served.len() as u64)
            }
            ["reads-failed", who, value] => {
                self.expect_each(who, value, |c, id| c.nodes[&id].reads_failed.len() as u64)
            }
            ["leader-in", ids @ ..] => {
                let allowed = ids.iter().map(|w| self.node(w)).collect::<Result<Vec<_>, _>>()?;
                match self.cluster()?.leader() {
                    Some(leader) if allowed.contains(&leader) => Ok(()),
                    other => Err(format!("expected a leader among {allowed:?}, found {other:?}")),
                }
            }
            ["counter", who, name, value] => {
                let read: fn(&super::node::RaftCounters) -> u64 = match *name {
                    "elections-started" => |c| c.elections_started,
                    "pre-votes-started" => |c| c.pre_votes_started,
                    "leader-terms" => |c| c.leader_terms,
                    "messages-dropped" => |c| c.messages_dropped,
                    "proposals-rejected-busy" => |c| c.proposals_rejected_busy,
                    "check-quorum-step-downs" => |c| c.check_quorum_step_downs,
                    "unverified-commits-refused" => |c| c.unverified_commits_refused,
                    other => return Err(format!("unknown counter {other:?}")),
                };
                self.expect_each(who, value, |c, id| read(c.raft(id).counters()))
            }
            ["messages", filter, value] => {
                let (from, to) = self.filter(filter)?;
                let count = self
                    .cluster()?
                    .in_flight
                    .iter()
                    .filter(|m| from.is_none_or(|f| m.from == f) && to.is_none_or(|t| m.to == t))
                    .count() as u64;
                compare(count, value)
            }
            ["term-at", who, index, value] => {
                let index = parse_u64(index)?;
                self.expect_each(who, value, |c, id| c.raft(id).log().term(index).unwrap_or(0))
            }
            ["logs-equal"] => {
                let cluster = self.cluster()?;
                let logs: Vec<(NodeId, Vec<Entry>)> = cluster
                    .ids()
                    .into_iter()
                    .filter(|id| cluster.is_running(*id))
                    .map(|id| {
                        let log = cluster.raft(id).log();
                        (id, log.slice(log.first_index(), log.last_index(), usize::MAX, u64::MAX))
                    })
                    .collect();
                let top =
                    logs.iter().map(|(_, l)| l.last().map_or(0, |e| e.index)).max().unwrap_or(0);
                for (id, log) in &logs {
                    let last = log.last().map_or(0, |e| e.index);
                    if last != top {
                        return Err(format!("{id} ends at index {last}, others at {top}"));
                    }
                }
                for pair in logs.windows(2) {
                    let (a, b) = (&pair[0], &pair[1]);
                    for entry in &a.1 {
                        if let Some(other) = b.1.iter().find(|e| e.index == entry.index)
                            && other != entry
                        {
                            return Err(format!(
                                "{} and {} differ at index {}",
                                a.0, b.0, entry.index
                            ));
                        }
                    }
                }
                Ok(())
            }
            ["propose-fails", id] => {
                let id = self.node(id)?;
                match self.cluster()?.propose(id) {
                    None => Ok(()),
                    Some(position) => Err(format!("{id} accepted a proposal at {position:?}")),
                }
            }
            ["voters", who, "=", ids @ ..] | ["learners", who, "=", ids @ ..] => {
                let expected = ids.iter().map(|w| self.node(w)).collect::<Result<Vec<_>, _>>()?;
                let voters = words[0] == "voters";
                for id in self.nodes(who)? {
                    let config = self.cluster()?.raft(id).log().config().clone();
                    let actual: Vec<NodeId> = if voters {
                        config.voters.into_iter().collect()
                    } else {
                        config.learners.into_iter().collect()
                    };
                    if actual != expected {
                        return Err(format!("{id} has {} {actual:?}", words[0]));
                    }
                }
                Ok(())
            }
            ["address", who, member, "=", address] => {
                let member = self.node(member)?;
                for id in self.nodes(who)? {
                    let config = self.cluster()?.raft(id).log().config().clone();
                    let actual = config.addresses.get(&member).cloned();
                    if actual.as_deref() != Some(*address) {
                        return Err(format!("{id} has address {actual:?} for {member}"));
                    }
                }
                Ok(())
            }
            ["log", who, "=", terms @ ..] => {
                let expected = terms.iter().map(|t| parse_u64(t)).collect::<Result<Vec<_>, _>>()?;
                for id in self.nodes(who)? {
                    let log = self.cluster()?.raft(id).log().clone();
                    let actual: Vec<u64> = (log.first_index()..=log.last_index())
                        .filter_map(|i| log.term(i))
                        .collect();
                    if actual != expected {
                        return Err(format!("{id} has log terms {actual:?}"));
                    }
                }
                Ok(())
            }
            _ => Err("unknown expectation".into()),
        }
    }

    fn expect_each(
        &mut self,
        who: &str,
        value: &str,
        read: impl Fn(&MemoryCluster, NodeId) -> u64,
    ) -> Step {
        for id in self.nodes(who)? {
            let cluster = self.cluster()?;
            if !cluster.is_running(id) {
                continue;
            }
            compare(read(cluster, id), value).map_err(|problem| format!("{id}: {problem}"))?;
        }
        Ok(())
    }

    fn node(&self, word: &str) -> Result<NodeId, String> {
        if word == "leader" {
            return self
                .cluster
                .as_ref()
                .and_then(MemoryCluster::leader)
                .ok_or_else(|| "no leader".to_string());
        }
        let id = NodeId(parse_u64(word)?);
        let known = self.cluster.as_ref().is_some_and(|c| c.nodes.contains_key(&id));
        known.then_some(id).ok_or_else(|| format!("unknown node {word}"))
    }

    fn nodes(&mut self, word: &str) -> Result<Vec<NodeId>, String> {
        if word == "all" {
            let cluster = self.cluster()?;
            return Ok(cluster.ids().into_iter().filter(|id| cluster.is_running(*id)).collect());
        }
        Ok(vec![self.node(word)?])
    }

    fn filter(&self, word: &str) -> Result<(Option<NodeId>, Option<NodeId>), String> {
        let (from, to) = word.split_once("->").ok_or("a message filter is FROM->TO")?;
        let side = |w: &str| if w == "*" { Ok(None) } else { self.node(w).map(Some) };
        Ok((side(from)?, side(to)?))
    }
}

/// Checks `actual` against an expectation such as `5`, `>5`, `<=5` or `!=0`.
fn compare(actual: u64, expectation: &str) -> Step {
    let (operator, number) = ["<=", ">=", "!=", "<", ">"]
        .iter()
        .find_map(|op| expectation.strip_prefix(op).map(|rest| (*op, rest)))
        .unwrap_or(("=", expectation));
    let expected = parse_u64(number)?;
    let holds = match operator {
        "<=" => actual <= expected,
        ">=" => actual >= expected,
        "!=" => actual != expected,
        "<" => actual < expected,
        ">" => actual > expected,
        _ => actual == expected,
    };
    holds.then_some(()).ok_or_else(|| format!("expected {expectation}, found {actual}"))
}

fn parse_u64(word: &str) -> Result<u64, String> {
    word.parse().map_err(|_| format!("expected a number, found {word:?}"))
}
