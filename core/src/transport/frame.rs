//! Framing for every byte stream between nodes: `[length u32 LE][crc32c u32 LE][payload]`,
//! the payload a postcard-encoded value — a [`Frame`] between peers, or any serde type for
//! other protocols that reuse the framing (the simulator's clients). A frame whose length
//! exceeds the limit or whose checksum fails ends the connection — the peer is broken or not a
//! Conclave node — and never reaches the engine.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::peer_message::PeerMessage;
use super::snapshot_stream::{SnapshotChunk, TransferKey};
use crate::raft::NodeId;

/// Bumped whenever `Frame` or anything inside it changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 6;

const HEADER_BYTES: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame on every connection, from the connecting side.
    Hello {
        protocol_version: u32,
        cluster_id: u64,
        from: NodeId,
        to: NodeId,
        /// Where the sender's own peer transport listens, if it knows: the receiver can answer
        /// a node that its (perhaps stale) configuration does not list.
        reply_to: Option<String>,
    },
    Message(PeerMessage),
    /// From the accepting side: how many `Message` frames it has received so far. The sender
    /// uses it as its delivery deadline: a stream whose frames stay unacknowledged is stalled
    /// (a lost segment that will never be retransmitted, a dead peer) and is replaced.
    Ack {
        received: u64,
    },
    /// A piece of a snapshot (see `snapshot_stream.rs`); counted like a `Message` by `Ack`.
    SnapshotChunk(SnapshotChunk),
    /// From the accepting side: a chunk did not continue what it holds of this transfer;
    /// resume at `offset`.
    SnapshotResume {
        key: TransferKey,
        offset: u64,
    },
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge { size_bytes: u64, limit_bytes: u64 },
    #[error("frame checksum mismatch (peer sent damaged or non-Conclave data)")]
    Checksum,
    #[error("undecodable frame: {0}")]
    Decode(postcard::Error),
    #[error("unencodable frame: {0}")]
    Encode(postcard::Error),
}

/// Appends the encoding of `frame` to `buffer` (so several frames go out in one write).
pub fn encode_frame<T: Serialize>(
    frame: &T,
    buffer: &mut Vec<u8>,
    max_frame_bytes: u32,
) -> Result<(), FrameError> {
    let start = buffer.len();
    buffer.extend_from_slice(&[0u8; HEADER_BYTES]);
    let encoded = postcard::to_extend(frame, std::mem::take(buffer)).map_err(FrameError::Encode)?;
    *buffer = encoded;
    let payload_bytes = buffer.len() - start - HEADER_BYTES;
    if payload_bytes > max_frame_bytes as usize {
        buffer.truncate(start);
        return Err(FrameError::TooLarge {
            size_bytes: payload_bytes as u64,
            limit_bytes: max_frame_bytes as u64,
        });
    }
    let checksum = crc32c::crc32c(&buffer[start + HEADER_BYTES..]);
    buffer[start..start + 4].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
    buffer[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
    Ok(())
}

/// Decodes one frame from the start of `bytes`; returns it and the bytes it used.
pub fn decode_frame<T: DeserializeOwned>(
    bytes: &[u8],
    max_frame_bytes: u32,
) -> Result<Option<(T, usize)>, FrameError> {
    if bytes.len() < HEADER_BYTES {
        return Ok(None);
    }
    let length = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let checksum = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if length > max_frame_bytes {
        return Err(FrameError::TooLarge {
            size_bytes: length as u64,
            limit_bytes: max_frame_bytes as u64,
        });
    }
    let end = HEADER_BYTES + length as usize;
    if bytes.len() < end {
        return Ok(None);
    }
    let payload = &bytes[HEADER_BYTES..end];
    if crc32c::crc32c(payload) != checksum {
        return Err(FrameError::Checksum);
    }
    let frame = postcard::from_bytes(payload).map_err(FrameError::Decode)?;
    Ok(Some((frame, end)))
}

/// Reads exactly one frame.
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: u32,
) -> Result<T, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Closed);
        }
        Err(error) => return Err(FrameError::Io(error)),
    }
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length > max_frame_bytes {
        return Err(FrameError::TooLarge {
            size_bytes: length as u64,
            limit_bytes: max_frame_bytes as u64,
        });
    }
    // The buffer grows as bytes arrive, never to what the header merely announces: a peer
    // that promises a large frame and sends nothing must not make us allocate it.
    let mut payload = Vec::new();
    let read = reader.take(u64::from(length)).read_to_end(&mut payload).await?;
    if read < length as usize {
        return Err(FrameError::Closed);
    }
    if crc32c::crc32c(&payload) != checksum {
        return Err(FrameError::Checksum);
    }
    postcard::from_bytes(&payload).map_err(FrameError::Decode)
}

pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &T,
    max_frame_bytes: u32,
) -> Result<(), FrameError> {
    let mut buffer = Vec::new();
    encode_frame(frame, &mut buffer, max_frame_bytes)?;
    writer.write_all(&buffer).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Message, MessageBody};

    fn heartbeat() -> Frame {
        Frame::Message(PeerMessage::Raft(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: 3,
            body: MessageBody::Heartbeat { commit: 4, commit_term: 2, read_round: 5 },
        }))
    }

    #[test]
    fn frames_round_trip_and_concatenate() {
        let mut buffer = Vec::new();
        encode_frame(&heartbeat(), &mut buffer, 1024).unwrap();
        encode_frame(&Frame::Ack { received: 9 }, &mut buffer, 1024).unwrap();
        let (first, used) = decode_frame::<Frame>(&buffer, 1024).unwrap().unwrap();
        assert_eq!(first, heartbeat());
        let (second, rest) = decode_frame::<Frame>(&buffer[used..], 1024).unwrap().unwrap();
        assert_eq!(second, Frame::Ack { received: 9 });
        assert_eq!(used + rest, buffer.len());
        assert!(
            decode_frame::<Frame>(&buffer[..used - 1], 1024).unwrap().is_none(),
            "partial frame waits"
        );
    }

    #[test]
    fn a_node_batch_round_trips_with_every_group_message() {
        use crate::shard::{Hosting, NodeBatch, ShardId};
        let mut batch = NodeBatch::new(NodeId(1), NodeId(2), Hosting::default());
        let Frame::Message(PeerMessage::Raft(heartbeat)) = heartbeat() else { unreachable!() };
        batch.push(ShardId(3), heartbeat.clone(), true);
        let vote = Message {
            body: MessageBody::VoteResponse { pre_vote: false, granted: true },
            ..heartbeat
        };
        batch.push(ShardId(7), vote, false);
        let frame = Frame::Message(PeerMessage::Batch(batch));
        let mut buffer = Vec::new();
        encode_frame(&frame, &mut buffer, 1024).unwrap();
        let (decoded, used) = decode_frame::<Frame>(&buffer, 1024).unwrap().unwrap();
        assert_eq!((decoded, used), (frame, buffer.len()));
    }

    #[test]
    fn damage_and_oversize_are_errors_not_panics() {
        let mut buffer = Vec::new();
        encode_frame(&heartbeat(), &mut buffer, 1024).unwrap();
        let last = buffer.len() - 1;
        buffer[last] ^= 0xff;
        assert!(matches!(decode_frame::<Frame>(&buffer, 1024), Err(FrameError::Checksum)));
        let huge = [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        assert!(matches!(decode_frame::<Frame>(&huge, 1024), Err(FrameError::TooLarge { .. })));
        let mut small = Vec::new();
        assert!(matches!(
            encode_frame(&heartbeat(), &mut small, 4),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(small.is_empty(), "a refused frame leaves nothing behind");
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_u32;
        for _ in 0..2_000 {
            let mut bytes = Vec::new();
            for _ in 0..(state % 64) {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                bytes.push((state >> 24) as u8);
            }
            let _ = decode_frame::<Frame>(&bytes, 1 << 20);
        }
    }
}
