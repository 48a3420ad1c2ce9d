//! Log replication (Raft §5.3), the commit rule (§5.4.2), heartbeats and snapshot install (§7).
//!
//! The leader does not send per proposal: proposals only append, and `ready()` sends whatever
//! each follower is missing in as few messages as the limits allow — so proposals that arrive
//! together travel together (batching), and up to a window of messages is in flight to each
//! follower without waiting for answers (pipelining).

use super::log::ConflictHint;
use super::message::MessageBody;
use super::node::Raft;
use super::planted::PlantedBug;
use super::progress::ReplicationMode;
use super::quorum;
use super::ready::{Role, SnapshotRequest};
use super::types::{Entry, EntryPayload, LogIndex, NodeId, Snapshot, Term};

impl Raft {
    /// Appends one entry of the leader's own term and schedules replication.
    pub(super) fn append_as_leader(&mut self, entry: Entry) {
        debug_assert_eq!(self.role, Role::Leader);
        let is_config = matches!(entry.payload, EntryPayload::Config(_));
        self.log.append_as_leader([entry]);
        if is_config {
            self.config_changed();
        }
        let peers: Vec<NodeId> =
            self.progress.keys().copied().filter(|id| *id != self.id).collect();
        self.replication_pending.extend(peers);
    }

    /// Sends every follower what it is missing, within its window. Called from `ready()`.
    pub(super) fn flush_replication(&mut self) {
        let pending = std::mem::take(&mut self.replication_pending);
        let committed = self.log.committed();
        let peers: Vec<NodeId> =
            self.progress.keys().copied().filter(|id| *id != self.id).collect();
        for to in peers {
            let messages_before = self.messages.len();
            if pending.contains(&to) {
                while self.maybe_send_append(to, false) {}
            }
            // A follower with nothing left to receive still needs the new commit index, or it
            // would apply (and serve follower reads) only at the next heartbeat. One empty
            // append per flush covers every commit advance since the previous flush.
            let sent_nothing = self.messages.len() == messages_before;
            if sent_nothing
                && self.progress.get(&to).is_some_and(|p| {
                    p.mode == ReplicationMode::Replicate && p.commit_sent < committed.min(p.matched)
                })
            {
                self.maybe_send_append(to, true);
            }
        }
    }

    /// Sends one AppendEntries to `to` if it is not paused and (unless `allow_empty`) has
    /// entries to receive. Returns whether a message with entries was sent and more may follow.
    pub(super) fn maybe_send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&to) else { return false };
        if progress.is_paused() {
            return false;
        }
        let next = progress.next;
        let prev_log_index = next - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // The entries it needs were compacted into a snapshot: send that instead.
            let snapshot_index = self.log.snapshot_index();
            if let Some(progress) = self.progress.get_mut(&to) {
                progress.become_snapshot(snapshot_index);
            }
            self.snapshot_requests.push(SnapshotRequest {
                to,
                term: self.term,
                min_index: snapshot_index,
            });
            return false;
        };
        let entries = self.log.slice(
            next,
            self.log.last_index(),
            self.config.max_entries_per_message,
            self.config.max_message_bytes,
        );
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let size_bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last_sent = entries.last().map_or(prev_log_index, |entry| entry.index);
        let sent_entries = !entries.is_empty();
        let leader_commit = self.log.committed();
        self.send(
            to,
            MessageBody::AppendRequest { prev_log_index, prev_log_term, entries, leader_commit },
        );
        let Some(progress) = self.progress.get_mut(&to) else { return false };
        progress.commit_sent = progress.commit_sent.max(leader_commit.min(last_sent));
        if progress.mode == ReplicationMode::Probe {
            // One probe at a time: the next waits for this one's answer.
            progress.probe_sent = true;
            return false;
        }
        if !sent_entries {
            return false; // an empty append only carried the commit index
        }
        // Replicate mode (a paused snapshot mode sends nothing): pipeline, optimistically.
        progress.next = last_sent + 1;
        progress.inflights.add(last_sent, size_bytes.max(1));
        !progress.is_paused() && last_sent < self.log.last_index()
    }

    /// The commit index (and its term) a heartbeat tells a follower that holds our log up to
    /// `matched`. Never past what it is known to hold: its log beyond `matched` may still
    /// conflict with ours. (Below our snapshot the term is gone; such a follower is sent the
    /// snapshot, and its heartbeat commits nothing.)
    pub(super) fn heartbeat_commit(&self, matched: LogIndex) -> (LogIndex, Term) {
        match matched.min(self.log.committed()) {
            commit if commit < self.log.snapshot_index() => (0, 0),
            commit => (commit, self.log.term(commit).unwrap_or(0)),
        }
    }

    /// A heartbeat to every member; it also starts a ReadIndex round.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.start_round(self.tick_count, self.log.committed());
        if let Some(own) = self.progress.get_mut(&self.id) {
            own.acked_read_round = round;
        }
        let peers: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, progress)| (*id, progress.matched))
            .collect();
        for (to, matched) in peers {
            let (commit, commit_term) = self.heartbeat_commit(matched);
            self.send(to, MessageBody::Heartbeat { commit, commit_term, read_round: round });
            if let Some(progress) = self.progress.get_mut(&to) {
                progress.commit_sent = progress.commit_sent.max(commit);
            }
        }
        if self.is_single_voter() {
            self.confirm_reads(round);
        }
    }

    /// The commit rule: the highest index stored on a quorum — counting the leader only for
    /// what it has made durable — commits if its entry is of the current term (§5.4.2).
    pub(super) fn maybe_commit(&mut self) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let candidate = quorum::committed_value(self.log.config(), |id| {
            self.progress.get(&id).map_or(0, |progress| progress.matched)
        });
        let counts_old_terms = self.planted(PlantedBug::CommitOldTermByCounting);
        if candidate <= self.log.committed()
            || (self.log.term(candidate) != Some(self.term) && !counts_old_terms)
        {
            return false;
        }
        let previous = self.log.committed();
        self.log.commit_to(candidate);
        // Summed in place: a copy of the newly committed entries (as `slice` makes) would cost
        // an allocation and a reference count per entry on every commit.
        let newly_committed_bytes: u64 = (previous + 1..=candidate)
            .filter_map(|index| self.log.entry(index))
            .map(Entry::size_bytes)
            .sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(newly_committed_bytes);
        if self.leader_has_committed_in_term() {
            self.reads.leader_committed();
            if self.reads.has_reads_waiting_for_round() && !self.reads.has_round_in_flight() {
                self.broadcast_heartbeat();
            }
        }
        // A configuration that removes the leader takes full effect once committed: the
        // leader managed the change and now steps down (§4.2.2).
        let config = self.log.config();
        if self.log.config_index() <= candidate && !config.is_voter(self.id) {
            self.hand_over_to_successor();
            let term = self.term;
            self.become_follower(term, NodeId::NONE);
            return true;
        }
        true
    }

    /// A leader that just committed its own removal tells a remaining voter that holds its
    /// whole log to campaign at once, as a leadership transfer does: otherwise the cluster
    /// waits an election timeout for someone to notice the leader has gone quiet. (If none is
    /// caught up yet, the election timeout it is.)
    fn hand_over_to_successor(&mut self) {
        let last_index = self.log.last_index();
        let successor = self
            .log
            .config()
            .voters
            .iter()
            .filter(|id| **id != self.id)
            .filter_map(|id| self.progress.get(id).map(|progress| (*id, progress.matched)))
            .filter(|(_, matched)| *matched == last_index)
            .map(|(id, _)| id)
            .next();
        if let Some(successor) = successor {
            self.send_timeout_now(successor);
        }
    }

    pub(super) fn handle_append_request(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: &[Entry],
        leader_commit: LogIndex,
    ) {
        if self.role != Role::Follower {
            let term = self.term;
            self.become_follower(term, from);
        }
        self.leader = from;
        self.election_elapsed = 0;
        let committed = self.log.committed();
        if prev_log_index < committed {
            // The prefix up to our commit index is settled; consider only what lies beyond it.
            // (A delayed message from this leader may start far behind.) Knowing an index is
            // committed does not make it durable *here*, so even this answer waits for storage.
            let skip = (committed - prev_log_index) as usize;
            if skip >= entries.len() {
                self.send_after_persist(from, append_success(committed));
                return;
            }
            let Some(committed_term) = self.log.term(committed) else {
                self.send_after_persist(from, append_success(committed));
                return;
            };
            if entries[skip - 1].term != committed_term || entries[skip - 1].index != committed {
                // Would contradict a committed entry: not from a correct leader of this term.
                self.counters.messages_dropped += 1;
                return;
            }
            return self.handle_append_request(
                from,
                committed,
                committed_term,
                &entries[skip..],
                leader_commit,
            );
        }
        let config_before = self.log.config_index();
        match self.log.try_append(prev_log_index, prev_log_term, entries) {
            Ok(last_new) => {
                self.log.commit_to(leader_commit.min(last_new));
                if self.log.config_index() != config_before {
                    self.config_changed();
                }
                // Acknowledge only what is durable: the answer waits for the batch.
                if self.planted(PlantedBug::AckBeforeSync) {
                    self.send(from, append_success(last_new));
                } else {
                    self.send_after_persist(from, append_success(last_new));
                }
            }
            Err(hint) => self.send(from, append_rejection(prev_log_index, hint)),
        }
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let tick = self.tick_count;
        let Some(progress) = self.progress.get_mut(&from) else { return };
        progress.recently_active = true;
        progress.last_active_tick = Some(tick);
        if success {
            if index > last_index {
                // Claims entries we never had in this term: not a correct follower's answer.
                self.counters.messages_dropped += 1;
                return;
            }
            let updated = progress.acknowledge(index);
            match progress.mode {
                // Any success ends probing: the logs agree up to `matched`.
                ReplicationMode::Probe => progress.become_replicate(),
                ReplicationMode::Snapshot { snapshot_index }
                    if progress.matched >= snapshot_index =>
                {
                    progress.become_probe();
                    progress.become_replicate();
                }
                _ => {}
            }
            if updated {
                self.maybe_commit();
                if self.role != Role::Leader {
                    // The commit removed this leader from the configuration: it stepped down.
                    return;
                }
            }
            if self.transfer_target == Some(from)
                && self.progress.get(&from).is_some_and(|p| p.matched == self.log.last_index())
            {
                self.send_timeout_now(from);
            }
            self.replication_pending.insert(from);
        } else {
            // Jump back over the whole mismatching term at once (fast backtracking): find the
            // largest index in our log at or below the hint whose term is <= the hint's term.
            let (retry_index, _) = self.log.find_conflict_by_term(hint_index, hint_term);
            // How far the follower's log may still match ours. Its hinted entry is the end of
            // its log or of what it has at or below our term; if that entry is not ours (a disk
            // that lost synced writes can bring back entries it had overwritten), it matches
            // at most below it.
            let follower_log_hint = if self.planted(PlantedBug::IgnoreShortenedLog) {
                LogIndex::MAX
            } else if self.log.matches(hint_index, hint_term) {
                hint_index
            } else {
                retry_index.min(hint_index.saturating_sub(1))
            };
            let Some(progress) = self.progress.get_mut(&from) else { return };
            if progress.reject(index, follower_log_hint, retry_index + 1) {
                self.maybe_send_append(from, true);
            }
        }
    }

    pub(super) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        (commit, commit_term): (LogIndex, Term),
        read_round: u64,
    ) {
        if self.role != Role::Follower {
            let term = self.term;
            self.become_follower(term, from);
        }
        self.leader = from;
        self.election_elapsed = 0;
        if commit > self.log.committed() {
            if self.log.matches(commit, commit_term) {
                // Log matching: holding the leader's entry at `commit` means holding the
                // leader's log up to it.
                self.log.commit_to(commit);
            } else {
                // The leader counts on entries we do not hold (or hold from another term):
                // our log lost what we acknowledged. Tell it, as a rejection, where to start.
                let hint = self.log.conflict_hint(commit, commit_term);
                self.counters.unverified_commits_refused += 1;
                self.send(from, append_rejection(commit, hint));
            }
        }
        // A leader's lease rests on this acknowledgement: this node will not vote for anyone
        // else in this term, nor, after a restart, for an election timeout (`election.rs`) —
        // a promise only a durable term can keep. A node whose term change is still waiting
        // for its disk (a full one, say) acknowledges once it is durable, not before.
        let response = MessageBody::HeartbeatResponse { read_round };
        if self.term_is_durable() {
            self.send(from, response);
        } else {
            self.send_after_persist(from, response);
        }
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let tick = self.tick_count;
        let Some(progress) = self.progress.get_mut(&from) else { return };
        progress.recently_active = true;
        progress.last_active_tick = Some(tick);
        progress.acked_read_round = progress.acked_read_round.max(read_round);
        // A probe lost on the way is retried once the follower is known to be reachable, and
        // so are streamed entries that evidently got lost.
        progress.probe_sent = false;
        progress.heartbeat_answered(last_index);
        let behind = progress.matched < last_index;
        let confirmed_round = quorum::committed_value(self.log.config(), |id| {
            self.progress.get(&id).map_or(0, |progress| progress.acked_read_round)
        });
        self.confirm_reads(confirmed_round);
        if behind {
            self.maybe_send_append(from, true);
        }
    }

    pub(super) fn handle_install_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        if self.role != Role::Follower {
            let term = self.term;
            self.become_follower(term, from);
        }
        self.leader = from;
        self.election_elapsed = 0;
        let meta = &snapshot.meta;
        if meta.last_index <= self.log.committed() {
            // Nothing new: what it covers is already committed here (durable once storage
            // catches up, hence the deferred answer).
            let committed = self.log.committed();
            self.send_after_persist(from, append_success(committed));
            return;
        }
        let last_index = meta.last_index;
        self.log.install_snapshot(meta);
        self.config_changed();
        self.stage_snapshot(snapshot);
        self.send_after_persist(from, append_success(last_index));
    }
}

fn append_success(index: LogIndex) -> MessageBody {
    MessageBody::AppendResponse { success: true, index, hint_index: 0, hint_term: 0 }
}

/// The rejection of an append (or of a heartbeat's commit) at `index`, with where to look next.
fn append_rejection(index: LogIndex, hint: ConflictHint) -> MessageBody {
    MessageBody::AppendResponse {
        success: false,
        index,
        hint_index: hint.index,
        hint_term: hint.term,
    }
}
