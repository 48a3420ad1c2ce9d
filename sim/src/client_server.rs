//! The node side of the client protocol: accepts client connections and serves each request
//! through the [`Consensus`] seam — the engine, or a deliberately broken stand-in — and
//! watches through the production watch history and cursor.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use conclave_core::engine::{
    Compacted, EngineError, EngineHandle, WatchCursor, WatchHub, WatchItem, WatchPosition,
};
use conclave_core::raft::{MembershipChange, Role};
use conclave_core::seams::{Clock, Consensus};
use conclave_core::shard::ShardId;
use conclave_core::transport::frame::{read_frame, write_frame};
use turmoil::net::{TcpListener, TcpStream};

use crate::client_protocol::{
    CLIENT_PORT, ClientAnswer, ClientCall, ClientReply, ClientRequest, MAX_CLIENT_FRAME_BYTES,
    WatchFrame,
};

/// Serves clients until the host stops. Connections are handled concurrently; requests on one
/// connection in order (a simulated client has one request outstanding). Each request goes to
/// the group it names, among `groups` (the engine's handles, or a deliberately broken
/// stand-in); a group the node does not host is refused as `NotHosted`. Operator calls go to
/// `admin` (the engine; the meta group's handle on a sharded node). Reads are first offered
/// to `Consensus::read_locally` with the node's `clock`, as the production HTTP server does.
/// Watches are served only with `watches` (not by a sharded node, as in production).
pub async fn serve<C: Consensus + 'static, K: Clock>(
    groups: BTreeMap<ShardId, Rc<C>>,
    admin: Rc<EngineHandle>,
    clock: K,
    watches: Option<Watches>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", CLIENT_PORT)).await?;
    let groups = Rc::new(groups);
    loop {
        let (stream, _) = listener.accept().await?;
        let connection =
            serve_connection(groups.clone(), admin.clone(), clock.clone(), watches.clone(), stream);
        tokio::task::spawn_local(connection);
    }
}

/// What a node serves watches from: the production watch history, fed by its engine.
#[derive(Clone)]
pub struct Watches {
    pub hub: Arc<WatchHub>,
    pub planted_bug: Option<conclave_core::raft::PlantedBug>,
}

async fn serve_connection<C: Consensus, K: Clock>(
    groups: Rc<BTreeMap<ShardId, Rc<C>>>,
    admin: Rc<EngineHandle>,
    clock: K,
    watches: Option<Watches>,
    mut stream: TcpStream,
) {
    loop {
        let request: ClientRequest = match read_frame(&mut stream, MAX_CLIENT_FRAME_BYTES).await {
            Ok(request) => request,
            Err(_) => return,
        };
        let group = groups.get(&request.shard);
        let not_hosted = EngineError::NotHosted { shard: request.shard.0 };
        let result = match request.call {
            ClientCall::Watch { prefix, from } => match &watches {
                Some(watches) => {
                    let revision = admin.status().revision;
                    return stream_watch(watches, prefix, from, revision, request.id, stream).await;
                }
                None => Ok(ClientAnswer::Declined("a sharded node serves no watches".into())),
            },
            ClientCall::ShardMap => {
                Ok(ClientAnswer::ShardMap(admin.followed_shard_map().map(|map| (*map).clone())))
            }
            ClientCall::Write { command, session } => match group {
                Some(group) => group.write(command, session).await.map(ClientAnswer::Write),
                None => Err(not_hosted),
            },
            ClientCall::Read { query, consistency } => match group {
                Some(group) => {
                    let now_ms = || clock.monotonic_ms();
                    match group.read_locally(&query, consistency, &now_ms) {
                        Some(result) => Ok(ClientAnswer::Read(result)),
                        None => group.read(query, consistency).await.map(ClientAnswer::Read),
                    }
                }
                None => Err(not_hosted),
            },
            // Operator calls are the meta group's (the only group of a single-group world).
            ClientCall::ChangeMembership { .. } | ClientCall::TransferLeadership { .. }
                if admin.shard() != request.shard =>
            {
                Err(not_hosted)
            }
            ClientCall::ChangeMembership { change, min_voters } => {
                match removal_below_floor(&admin, &change, min_voters) {
                    Some(reason) => Ok(ClientAnswer::Declined(reason)),
                    None => admin.change_membership(change).await.map(ClientAnswer::Membership),
                }
            }
            ClientCall::TransferLeadership { to } => {
                admin.transfer_leadership(to).await.map(|()| ClientAnswer::Transferring).or_else(
                    |error| match error {
                        EngineError::NotLeader { .. } => Err(error),
                        _ => Ok(ClientAnswer::Transferring),
                    },
                )
            }
        };
        let reply = ClientReply { id: request.id, result };
        if write_frame(&mut stream, &reply, MAX_CLIENT_FRAME_BYTES).await.is_err() {
            return;
        }
    }
}

/// Why a removal would take the leader's newest configuration to fewer than `min_voters`
/// voters, if it would. A follower's view may be stale, so only a leader judges; a follower
/// passes the call on to be refused as "not the leader". The engine accepts one configuration
/// change at a time, so a removal proposed just before this check (and not yet visible in the
/// status) makes the call fail as "change in progress", and its retry sees the newer voters.
fn removal_below_floor(
    admin: &EngineHandle,
    change: &MembershipChange,
    min_voters: usize,
) -> Option<String> {
    let MembershipChange::Remove { id } = change else { return None };
    let status = admin.status();
    let floor_reached = status.role == Role::Leader
        && status.voters.contains(id)
        && status.voters.len() <= min_voters;
    floor_reached.then(|| {
        format!("removing {id} would leave fewer than {min_voters} voters of {:?}", status.voters)
    })
}

/// Serves one watch on `stream` with the production cursor until the stream ends or the
/// client goes away.
async fn stream_watch(
    watches: &Watches,
    prefix: String,
    from: Option<WatchPosition>,
    current_revision: u64,
    id: u64,
    mut stream: TcpStream,
) {
    let opened =
        WatchCursor::open(&watches.hub, prefix, from, current_revision, watches.planted_bug);
    let mut cursor = match opened {
        Ok(cursor) => cursor,
        Err(Compacted { requested, floor }) => {
            let frame = WatchFrame::Compacted { requested, floor };
            let reply = ClientReply { id, result: Ok(ClientAnswer::Watch(frame)) };
            let _ = write_frame(&mut stream, &reply, MAX_CLIENT_FRAME_BYTES).await;
            return;
        }
    };
    loop {
        let (frame, last) = match cursor.next().await {
            WatchItem::Change { event, after } => {
                (WatchFrame::Change { event: (*event).clone(), after }, false)
            }
            WatchItem::Lost { reason, resume } => {
                (WatchFrame::Lost { reason: reason.to_string(), resume }, true)
            }
            WatchItem::Closed => return,
        };
        let reply = ClientReply { id, result: Ok(ClientAnswer::Watch(frame)) };
        if write_frame(&mut stream, &reply, MAX_CLIENT_FRAME_BYTES).await.is_err() || last {
            return;
        }
    }
}
