//! Snapshots over the wire, in chunks. The core sees one `InstallSnapshot` message carrying the
//! whole snapshot; the transport sends it as a stream of [`SnapshotChunk`] frames so that
//!
//! - no frame is larger than a chunk (the frame limit stays small, a huge snapshot cannot be
//!   mistaken for a hostile peer), and heartbeats interleave with the chunks instead of waiting
//!   behind megabytes of state;
//! - the sender holds the snapshot once (`Bytes` shared with storage) and a bounded window of
//!   chunks in flight; the receiver holds at most `max_snapshot_bytes` per peer;
//! - a dropped connection costs only the chunks not yet acknowledged: the receiver keeps what it
//!   has (per peer, across connections) and, when a chunk does not continue it, answers with a
//!   [`Frame::SnapshotResume`](super::frame::Frame) naming the offset it needs;
//! - the transfer has its own deadline, independent of the heartbeat-sized delivery deadline:
//!   the engine learns the outcome (delivered or given up) and only then tells Raft, so the
//!   leader waits for a long transfer instead of re-requesting it every heartbeat.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::raft::{Message, MessageBody, NodeId, Snapshot, SnapshotMeta, Term};
use crate::shard::ShardId;

/// One piece of a snapshot. Every chunk carries the metadata, so a receiver that lost its
/// partial copy (a restart) recognises a transfer from any chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The group whose snapshot this is, on nodes hosting many (`None` on a single-group node).
    pub shard: Option<ShardId>,
    /// The term of the `InstallSnapshot` message being carried.
    pub term: Term,
    pub meta: SnapshotMeta,
    pub total_bytes: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

impl SnapshotChunk {
    fn transfer_key(&self) -> TransferKey {
        TransferKey {
            shard: self.shard,
            term: self.term,
            last_index: self.meta.last_index,
            last_term: self.meta.last_term,
        }
    }
}

/// Identifies one transfer: the same group's same snapshot, sent in the same term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransferKey {
    pub shard: Option<ShardId>,
    pub term: Term,
    pub last_index: u64,
    pub last_term: Term,
}

/// The sending side of one transfer (owned by the peer's writer, so it outlives connections).
#[derive(Debug)]
pub struct OutgoingTransfer {
    /// The group whose snapshot this is (`None` on a single-group node).
    pub shard: Option<ShardId>,
    pub from: NodeId,
    pub term: Term,
    pub snapshot: Snapshot,
    /// Next byte to send.
    next_offset: u64,
    /// Every byte before this was acknowledged by the receiver (it consumed those frames).
    acked_offset: u64,
    /// Chunks written on the current connection: (frame sequence number, end offset).
    in_flight: VecDeque<(u64, u64)>,
    pub started_ms: u64,
}

impl OutgoingTransfer {
    pub fn new(shard: Option<ShardId>, message: &Message, snapshot: Snapshot, now_ms: u64) -> Self {
        OutgoingTransfer {
            shard,
            from: message.from,
            term: message.term,
            snapshot,
            next_offset: 0,
            acked_offset: 0,
            in_flight: VecDeque::new(),
            started_ms: now_ms,
        }
    }

    pub fn key(&self) -> TransferKey {
        TransferKey {
            shard: self.shard,
            term: self.term,
            last_index: self.snapshot.meta.last_index,
            last_term: self.snapshot.meta.last_term,
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.snapshot.data.len() as u64
    }

    pub fn in_flight_chunks(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether chunks remain to be written (not whether the transfer is acknowledged).
    pub fn has_unsent(&self) -> bool {
        self.next_offset < self.total_bytes()
    }

    /// Every byte is acknowledged: the receiver has assembled and delivered the snapshot.
    pub fn is_delivered(&self) -> bool {
        self.acked_offset >= self.total_bytes()
    }

    /// The next chunk, to be written as frame number `frame_seq` of the current connection.
    pub fn next_chunk(&mut self, chunk_bytes: usize, frame_seq: u64) -> SnapshotChunk {
        assert!(self.has_unsent(), "no chunk left to send");
        let start = self.next_offset as usize;
        let end = (start + chunk_bytes.max(1)).min(self.snapshot.data.len());
        let data: Bytes = self.snapshot.data.slice(start..end);
        self.next_offset = end as u64;
        self.in_flight.push_back((frame_seq, end as u64));
        SnapshotChunk {
            shard: self.shard,
            term: self.term,
            meta: self.snapshot.meta.clone(),
            total_bytes: self.total_bytes(),
            offset: start as u64,
            data: data.to_vec(),
        }
    }

    /// The receiver consumed every frame up to `received` on the current connection.
    pub fn frames_acknowledged(&mut self, received: u64) {
        while let Some(&(seq, end)) = self.in_flight.front() {
            if seq > received {
                break;
            }
            self.in_flight.pop_front();
            self.acked_offset = self.acked_offset.max(end);
        }
    }

    /// The connection was replaced: what was in flight on it may be lost; continue from what
    /// the receiver acknowledged (it says so if it holds less, see [`Self::resume_at`]).
    pub fn connection_lost(&mut self) {
        self.in_flight.clear();
        self.next_offset = self.acked_offset;
    }

    /// The receiver holds exactly the first `offset` bytes of this transfer.
    pub fn resume_at(&mut self, offset: u64) {
        let offset = offset.min(self.total_bytes());
        self.in_flight.clear();
        self.next_offset = offset;
        self.acked_offset = offset;
    }
}

/// What the receiver does with a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Kept (or already held); more to come.
    Stored,
    /// The last chunk: here is the whole `InstallSnapshot` message for the engine, and the
    /// group it is for (`None` on a single-group node).
    Complete { shard: Option<ShardId>, message: Message },
    /// The chunk does not continue what is held: ask the sender to resume at this offset.
    Resume { key: TransferKey, offset: u64 },
    /// Ignored: a gap already reported (the sender is rewinding).
    Ignored,
    /// The peer announced a snapshot larger than this node accepts.
    TooLarge { total_bytes: u64, limit_bytes: u64 },
}

#[derive(Debug)]
struct PartialSnapshot {
    key: TransferKey,
    meta: SnapshotMeta,
    total_bytes: u64,
    data: Vec<u8>,
    /// The offset last asked for, so a burst of out-of-place chunks asks only once.
    resume_asked: Option<u64>,
}

/// The receiving side: at most one partial snapshot per peer and group, kept across
/// connections.
#[derive(Debug, Default)]
pub struct IncomingTransfers {
    partial: BTreeMap<(NodeId, Option<ShardId>), PartialSnapshot>,
}

impl IncomingTransfers {
    pub fn held_bytes(&self) -> u64 {
        self.partial.values().map(|p| p.data.len() as u64).sum()
    }

    pub fn accept(
        &mut self,
        from: NodeId,
        to: NodeId,
        chunk: SnapshotChunk,
        max_snapshot_bytes: u64,
    ) -> ChunkOutcome {
        if chunk.total_bytes > max_snapshot_bytes {
            self.partial.remove(&(from, chunk.shard));
            return ChunkOutcome::TooLarge {
                total_bytes: chunk.total_bytes,
                limit_bytes: max_snapshot_bytes,
            };
        }
        let key = chunk.transfer_key();
        let slot = (from, chunk.shard);
        let continues = self.partial.get(&slot).is_some_and(|p| p.key == key);
        if !continues {
            if chunk.offset != 0 {
                // A transfer we hold nothing of (we restarted, or a newer snapshot replaced
                // it): start over.
                return self.ask_resume(from, key, chunk, 0);
            }
            let capacity = chunk.total_bytes.min(64 * 1024 * 1024) as usize;
            self.partial.insert(
                slot,
                PartialSnapshot {
                    key,
                    meta: chunk.meta.clone(),
                    total_bytes: chunk.total_bytes,
                    data: Vec::with_capacity(capacity),
                    resume_asked: None,
                },
            );
        }
        let Some(partial) = self.partial.get_mut(&slot) else { unreachable!("inserted above") };
        let held = partial.data.len() as u64;
        let end = chunk.offset + chunk.data.len() as u64;
        if chunk.offset > held {
            return self.ask_resume(from, key, chunk, held);
        }
        if end > chunk.total_bytes {
            // Inconsistent with its own header: drop what we hold and start over.
            self.partial.remove(&slot);
            return ChunkOutcome::Resume { key, offset: 0 };
        }
        if end > held {
            let skip = (held - chunk.offset) as usize;
            partial.data.extend_from_slice(&chunk.data[skip..]);
            partial.resume_asked = None;
        }
        if partial.data.len() as u64 == partial.total_bytes {
            let Some(done) = self.partial.remove(&slot) else { unreachable!("present above") };
            let message = Message {
                from,
                to,
                term: done.key.term,
                body: MessageBody::InstallSnapshot {
                    snapshot: Snapshot { meta: done.meta, data: Bytes::from(done.data) },
                },
            };
            return ChunkOutcome::Complete { shard: slot.1, message };
        }
        ChunkOutcome::Stored
    }

    fn ask_resume(
        &mut self,
        from: NodeId,
        key: TransferKey,
        chunk: SnapshotChunk,
        offset: u64,
    ) -> ChunkOutcome {
        let slot = (from, chunk.shard);
        if offset == 0 {
            // Remember that we asked, so the rest of the burst is ignored quietly.
            let entry = self.partial.entry(slot).or_insert_with(|| PartialSnapshot {
                key,
                meta: chunk.meta.clone(),
                total_bytes: chunk.total_bytes,
                data: Vec::new(),
                resume_asked: None,
            });
            if entry.key != key {
                *entry = PartialSnapshot {
                    key,
                    meta: chunk.meta,
                    total_bytes: chunk.total_bytes,
                    data: Vec::new(),
                    resume_asked: None,
                };
            }
        }
        let Some(partial) = self.partial.get_mut(&slot) else { unreachable!("present") };
        if partial.resume_asked == Some(offset) {
            return ChunkOutcome::Ignored;
        }
        partial.resume_asked = Some(offset);
        ChunkOutcome::Resume { key, offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::ClusterConfig;

    fn snapshot(size: usize) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta { last_index: 40, last_term: 3, config: ClusterConfig::default() },
            data: Bytes::from((0..size).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>()),
        }
    }

    fn header() -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: 5,
            body: MessageBody::TimeoutNow, // only from and term are read
        }
    }

    fn deliver(incoming: &mut IncomingTransfers, chunk: SnapshotChunk) -> ChunkOutcome {
        incoming.accept(NodeId(1), NodeId(2), chunk, 1 << 20)
    }

    #[test]
    fn chunks_in_order_assemble_the_exact_snapshot() {
        let original = snapshot(10_000);
        let mut out = OutgoingTransfer::new(None, &header(), original.clone(), 0);
        let mut incoming = IncomingTransfers::default();
        let mut seq = 0;
        let mut result = None;
        while out.has_unsent() {
            seq += 1;
            match deliver(&mut incoming, out.next_chunk(3_000, seq)) {
                ChunkOutcome::Stored => {}
                ChunkOutcome::Complete { shard: None, message } => result = Some(message),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seq, 4, "10,000 bytes in chunks of 3,000");
        let message = result.expect("the last chunk completes the transfer");
        assert_eq!(message.term, 5);
        assert_eq!(message.body, MessageBody::InstallSnapshot { snapshot: original });
        assert_eq!(incoming.held_bytes(), 0);
    }

    #[test]
    fn a_lost_connection_resumes_from_the_acknowledged_offset() {
        let original = snapshot(10_000);
        let mut out = OutgoingTransfer::new(None, &header(), original.clone(), 0);
        let mut incoming = IncomingTransfers::default();
        // Two chunks arrive and are acknowledged; the third is lost with the connection.
        for seq in 1..=2 {
            assert_eq!(deliver(&mut incoming, out.next_chunk(2_000, seq)), ChunkOutcome::Stored);
        }
        out.frames_acknowledged(2);
        let _lost = out.next_chunk(2_000, 3);
        out.connection_lost();
        // On the new connection the sender continues at 4,000, not at 0.
        let chunk = out.next_chunk(2_000, 1);
        assert_eq!(chunk.offset, 4_000);
        let mut outcome = deliver(&mut incoming, chunk);
        let mut seq = 1;
        while out.has_unsent() {
            assert_eq!(outcome, ChunkOutcome::Stored);
            seq += 1;
            outcome = deliver(&mut incoming, out.next_chunk(2_000, seq));
        }
        assert_eq!(
            outcome,
            ChunkOutcome::Complete {
                shard: None,
                message: Message {
                    from: NodeId(1),
                    to: NodeId(2),
                    term: 5,
                    body: MessageBody::InstallSnapshot { snapshot: original },
                }
            }
        );
    }

    #[test]
    fn a_gap_asks_once_for_the_missing_offset_and_the_sender_rewinds() {
        let original = snapshot(9_000);
        let mut out = OutgoingTransfer::new(None, &header(), original, 0);
        let mut incoming = IncomingTransfers::default();
        assert_eq!(deliver(&mut incoming, out.next_chunk(1_000, 1)), ChunkOutcome::Stored);
        let _lost = out.next_chunk(1_000, 2);
        let key = out.key();
        assert_eq!(
            deliver(&mut incoming, out.next_chunk(1_000, 3)),
            ChunkOutcome::Resume { key, offset: 1_000 }
        );
        assert_eq!(deliver(&mut incoming, out.next_chunk(1_000, 4)), ChunkOutcome::Ignored);
        out.resume_at(1_000);
        assert_eq!(out.next_chunk(1_000, 5).offset, 1_000);
    }

    #[test]
    fn a_receiver_that_lost_its_copy_asks_to_start_over() {
        let original = snapshot(5_000);
        let mut out = OutgoingTransfer::new(None, &header(), original, 0);
        let _before_restart = out.next_chunk(1_000, 1);
        let mut restarted = IncomingTransfers::default();
        let key = out.key();
        assert_eq!(
            deliver(&mut restarted, out.next_chunk(1_000, 2)),
            ChunkOutcome::Resume { key, offset: 0 }
        );
        out.resume_at(0);
        assert_eq!(deliver(&mut restarted, out.next_chunk(1_000, 3)), ChunkOutcome::Stored);
    }

    #[test]
    fn an_oversized_snapshot_is_refused_before_anything_is_buffered() {
        let mut out = OutgoingTransfer::new(None, &header(), snapshot(5_000), 0);
        let mut incoming = IncomingTransfers::default();
        let outcome = incoming.accept(NodeId(1), NodeId(2), out.next_chunk(1_000, 1), 4_096);
        assert_eq!(outcome, ChunkOutcome::TooLarge { total_bytes: 5_000, limit_bytes: 4_096 });
        assert_eq!(incoming.held_bytes(), 0);
    }

    #[test]
    fn a_newer_snapshot_replaces_a_partial_one() {
        let mut incoming = IncomingTransfers::default();
        let mut old = OutgoingTransfer::new(None, &header(), snapshot(5_000), 0);
        assert_eq!(deliver(&mut incoming, old.next_chunk(1_000, 1)), ChunkOutcome::Stored);
        let mut newer_snapshot = snapshot(1_500);
        newer_snapshot.meta.last_index = 90;
        let mut newer = OutgoingTransfer::new(None, &header(), newer_snapshot.clone(), 0);
        assert_eq!(deliver(&mut incoming, newer.next_chunk(1_000, 2)), ChunkOutcome::Stored);
        match deliver(&mut incoming, newer.next_chunk(1_000, 3)) {
            ChunkOutcome::Complete { message, .. } => {
                assert_eq!(message.body, MessageBody::InstallSnapshot { snapshot: newer_snapshot })
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn two_groups_from_one_peer_assemble_side_by_side() {
        let mut incoming = IncomingTransfers::default();
        let (first, mut second) = (snapshot(3_000), snapshot(2_000));
        second.meta.last_index = 77;
        let mut of_3 = OutgoingTransfer::new(Some(ShardId(3)), &header(), first.clone(), 0);
        let mut of_5 = OutgoingTransfer::new(Some(ShardId(5)), &header(), second.clone(), 0);
        assert_ne!(of_3.key(), of_5.key(), "a transfer is known by its group too");
        // Interleaved chunks of the two groups: neither makes the other start over.
        assert_eq!(deliver(&mut incoming, of_3.next_chunk(1_000, 1)), ChunkOutcome::Stored);
        assert_eq!(deliver(&mut incoming, of_5.next_chunk(1_000, 2)), ChunkOutcome::Stored);
        assert_eq!(deliver(&mut incoming, of_3.next_chunk(1_000, 3)), ChunkOutcome::Stored);
        let done_5 = deliver(&mut incoming, of_5.next_chunk(1_000, 4));
        let done_3 = deliver(&mut incoming, of_3.next_chunk(1_000, 5));
        for (outcome, shard, snapshot) in [(done_5, 5, second), (done_3, 3, first)] {
            match outcome {
                ChunkOutcome::Complete { shard: Some(got), message } => {
                    assert_eq!(got, ShardId(shard));
                    assert_eq!(message.body, MessageBody::InstallSnapshot { snapshot });
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(incoming.held_bytes(), 0);
    }
}
