//! The node side of the client protocol: accepts client connections and serves each request
//! through the [`Consensus`] seam — the engine, or a deliberately broken stand-in.

use std::rc::Rc;

use conclave_core::engine::{EngineError, EngineHandle};
use conclave_core::seams::{Clock, Consensus};
use conclave_core::transport::frame::{read_frame, write_frame};
use turmoil::net::{TcpListener, TcpStream};

use crate::client_protocol::{
    CLIENT_PORT, ClientAnswer, ClientCall, ClientReply, ClientRequest, MAX_CLIENT_FRAME_BYTES,
};

/// Serves clients until the host stops. Connections are handled concurrently; requests on one
/// connection in order (a simulated client has one request outstanding). Operator calls go to
/// `admin` (the engine) whatever `consensus` is. Reads are first offered to
/// `Consensus::read_locally` with the node's `clock`, as the production HTTP server does.
pub async fn serve<C: Consensus + 'static, K: Clock>(
    consensus: Rc<C>,
    admin: Rc<EngineHandle>,
    clock: K,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", CLIENT_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let connection = serve_connection(consensus.clone(), admin.clone(), clock.clone(), stream);
        tokio::task::spawn_local(connection);
    }
}

async fn serve_connection<C: Consensus, K: Clock>(
    consensus: Rc<C>,
    admin: Rc<EngineHandle>,
    clock: K,
    mut stream: TcpStream,
) {
    loop {
        let request: ClientRequest = match read_frame(&mut stream, MAX_CLIENT_FRAME_BYTES).await {
            Ok(request) => request,
            Err(_) => return,
        };
        let result = match request.call {
            ClientCall::Write { command, session } => {
                consensus.write(command, session).await.map(ClientAnswer::Write)
            }
            ClientCall::Read { query, consistency } => {
                let now_ms = || clock.monotonic_ms();
                match consensus.read_locally(&query, consistency, &now_ms) {
                    Some(result) => Ok(ClientAnswer::Read(result)),
                    None => consensus.read(query, consistency).await.map(ClientAnswer::Read),
                }
            }
            ClientCall::ChangeMembership { change } => {
                admin.change_membership(change).await.map(ClientAnswer::Membership)
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
