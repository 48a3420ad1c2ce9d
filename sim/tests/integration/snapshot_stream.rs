//! Snapshots over the wire on turmoil's TCP: a snapshot larger than many chunks reaches the
//! peer byte for byte, a partition in the middle of the transfer costs only the chunks that were
//! in flight (the transfer resumes, it does not start over), and the sender learns the outcome.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use conclave_core::raft::{ClusterConfig, Message, MessageBody, NodeId, Snapshot, SnapshotMeta};
use conclave_core::seams::transport::Transport;
use conclave_core::transport::PeerMessage;
use conclave_core::transport::tcp::{TcpTransportConfig, TransportCounters};

use crate::peer_pair;

const SNAPSHOT_BYTES: usize = 200_000;
const CHUNK_BYTES: usize = 1_000;

fn config() -> TcpTransportConfig {
    TcpTransportConfig { snapshot_chunk_bytes: CHUNK_BYTES, ..TcpTransportConfig::default() }
}

fn snapshot() -> Snapshot {
    Snapshot {
        meta: SnapshotMeta { last_index: 1_234, last_term: 7, config: ClusterConfig::default() },
        data: Bytes::from((0..SNAPSHOT_BYTES).map(|i| (i * 31 % 253) as u8).collect::<Vec<u8>>()),
    }
}

#[derive(Default)]
struct Seen {
    sender: TransportCounters,
    reports: Vec<(NodeId, bool)>,
    received: Vec<Message>,
}

#[test]
fn a_partition_mid_transfer_resumes_instead_of_starting_over() -> turmoil::Result {
    let mut sim = peer_pair::simulation(5);
    let seen = Rc::new(RefCell::new(Seen::default()));

    let receiver_seen = seen.clone();
    sim.host("receiver", move || {
        let seen = receiver_seen.clone();
        async move {
            let mut transport = peer_pair::start_transport(peer_pair::RECEIVER, config()).await?;
            while let Some(PeerMessage::Raft(message)) = transport.recv().await {
                seen.borrow_mut().received.push(message);
            }
            Ok(())
        }
    });

    let sender_seen = seen.clone();
    sim.host("sender", move || {
        let seen = sender_seen.clone();
        async move {
            let mut transport = peer_pair::start_transport(peer_pair::SENDER, config()).await?;
            let message = Message {
                from: NodeId(1),
                to: NodeId(2),
                term: 3,
                body: MessageBody::InstallSnapshot { snapshot: snapshot() },
            };
            assert!(transport.send(NodeId(2), PeerMessage::Raft(message)));
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let mut seen = seen.borrow_mut();
                seen.sender = transport.counters();
                seen.reports.extend(
                    transport.take_snapshot_reports().into_iter().map(|r| (r.peer, r.delivered)),
                );
            }
        }
    });

    // Let part of the snapshot through, then cut the link for longer than the delivery
    // deadline, so the connection is replaced in the middle of the transfer.
    let total_chunks = SNAPSHOT_BYTES.div_ceil(CHUNK_BYTES) as u64;
    while seen.borrow().sender.snapshot_chunks_sent < total_chunks / 3 {
        sim.step()?;
    }
    sim.partition("sender", "receiver");
    for _ in 0..3_000 {
        sim.step()?;
    }
    assert!(seen.borrow().received.is_empty(), "nothing can be complete yet");
    sim.repair("sender", "receiver");
    while seen.borrow().reports.is_empty() {
        sim.step()?;
    }

    let seen = seen.borrow();
    assert_eq!(seen.reports, vec![(NodeId(2), true)], "the sender learns of the delivery");
    assert_eq!(seen.received.len(), 1, "exactly one InstallSnapshot reaches the engine");
    let expected = MessageBody::InstallSnapshot { snapshot: snapshot() };
    assert!(seen.received[0].body == expected, "the snapshot arrives byte for byte");
    assert_eq!((seen.received[0].from, seen.received[0].term), (NodeId(1), 3));
    let counters = &seen.sender;
    println!("{total_chunks} chunks needed; sender counters: {counters:?}");
    assert!(counters.snapshot_transfers_resumed >= 1, "{counters:?}");
    assert!(counters.connections_replaced_stalled + counters.connections_failed >= 1);
    // Starting over would have sent the first third again; resuming loses at most the window.
    let window = TcpTransportConfig::default().snapshot_window_chunks as u64;
    assert!(
        counters.snapshot_chunks_sent <= total_chunks + window,
        "{} chunks sent for {total_chunks}: the transfer started over ({counters:?})",
        counters.snapshot_chunks_sent
    );
    Ok(())
}
