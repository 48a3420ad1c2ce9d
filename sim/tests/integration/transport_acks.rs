//! Acknowledgements between peers on turmoil's TCP. A receiver acknowledges plain messages
//! after a delay, all at once, not after every read: under load that halves the writes and
//! wake-ups of both ends. This checks both sides of that bargain — a busy, healthy stream sends
//! far fewer acknowledgements than messages and is never mistaken for a stalled one, while a
//! stream that really stalls (a partition) is still replaced within the delivery deadline.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use conclave_core::raft::{Message, MessageBody, NodeId};
use conclave_core::seams::transport::Transport;
use conclave_core::transport::PeerMessage;
use conclave_core::transport::tcp::{TcpTransportConfig, TransportCounters};

use crate::peer_pair;

/// One message per millisecond of simulated time, for this long before the partition.
const STEADY_MS: u64 = 3_000;

#[derive(Default)]
struct Seen {
    sender: TransportCounters,
    /// Heartbeat commit values in arrival order.
    received: Vec<u64>,
    sent: u64,
}

#[test]
fn acknowledgements_are_batched_yet_a_stalled_stream_is_still_replaced() -> turmoil::Result {
    let mut sim = peer_pair::simulation(11);
    let seen = Rc::new(RefCell::new(Seen::default()));

    let receiver_seen = seen.clone();
    sim.host("receiver", move || {
        let seen = receiver_seen.clone();
        async move {
            let mut transport =
                peer_pair::start_transport(peer_pair::RECEIVER, TcpTransportConfig::default())
                    .await?;
            while let Some(PeerMessage::Raft(message)) = transport.recv().await {
                if let MessageBody::Heartbeat { commit, .. } = message.body {
                    seen.borrow_mut().received.push(commit);
                }
            }
            Ok(())
        }
    });

    let sender_seen = seen.clone();
    sim.host("sender", move || {
        let seen = sender_seen.clone();
        async move {
            let mut transport =
                peer_pair::start_transport(peer_pair::SENDER, TcpTransportConfig::default())
                    .await?;
            let mut commit = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                commit += 1;
                let message = Message {
                    from: NodeId(1),
                    to: NodeId(2),
                    term: 1,
                    body: MessageBody::Heartbeat { commit, commit_term: 1, read_round: 0 },
                };
                let mut seen = seen.borrow_mut();
                if transport.send(NodeId(2), PeerMessage::Raft(message)) {
                    seen.sent += 1;
                }
                seen.sender = transport.counters();
            }
        }
    });

    for _ in 0..STEADY_MS {
        sim.step()?;
    }
    {
        let seen = seen.borrow();
        let counters = &seen.sender;
        println!(
            "steady stream: {} sent, {} received, {counters:?}",
            seen.sent,
            seen.received.len()
        );
        assert!(seen.sent >= STEADY_MS * 9 / 10, "the sender kept sending: {}", seen.sent);
        assert!(
            seen.received.len() as u64 + 10 >= seen.sent,
            "all but the last few in flight arrived: {} of {}",
            seen.received.len(),
            seen.sent
        );
        assert!(seen.received.windows(2).all(|w| w[0] < w[1]), "in order, without duplicates");
        assert_eq!(counters.connections_opened, 1, "one connection, never replaced: {counters:?}");
        assert_eq!(counters.connections_replaced_stalled, 0, "{counters:?}");
        assert!(counters.acknowledgements_received > 0, "the receiver acknowledges: {counters:?}");
        assert!(
            counters.acknowledgements_received * 20 <= counters.messages_sent,
            "acknowledgements are batched, not one per read: {counters:?}"
        );
    }

    // A partition longer than the delivery deadline: nothing is acknowledged any more, and the
    // sender must give the connection up rather than feed it forever.
    sim.partition("sender", "receiver");
    let deadline_ms = TcpTransportConfig::default().delivery_deadline_ms;
    for _ in 0..3 * deadline_ms {
        sim.step()?;
    }
    sim.repair("sender", "receiver");
    let received_at_repair = seen.borrow().received.len();
    for _ in 0..2 * deadline_ms {
        sim.step()?;
    }
    let seen = seen.borrow();
    let counters = &seen.sender;
    println!("after the partition: {counters:?}");
    // Whichever notices first gives the stream up: the delivery deadline (stalled) or the
    // transport itself reporting the connection broken (failed).
    assert!(
        counters.connections_replaced_stalled + counters.connections_failed >= 1,
        "the stalled stream was given up: {counters:?}"
    );
    assert!(counters.connections_opened >= 2, "{counters:?}");
    assert!(
        seen.received.len() > received_at_repair + 100,
        "messages flow again on the new connection"
    );
    assert!(seen.received.windows(2).all(|w| w[0] < w[1]), "never out of order or twice");
    Ok(())
}
