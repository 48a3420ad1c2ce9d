//! A member keeps what the log says about it current: its advertised client URL, its peer URL
//! and its name (its record, `member_record.rs`).
//!
//! Why: a named cluster starts from `--initial-cluster`, which gives peer URLs only, so at first
//! no member knows where another serves clients, and a follower could not redirect a client to
//! its leader. etcd solves it the same way: each member publishes its own attributes through
//! the log once there is a leader. A member that restarts with another `--advertise-client-url`
//! (moved to another host) publishes the new one the same way.
//!
//! How: whenever the configuration in force has a record for this node that differs from the
//! one it wants, and there is a leader, the change (`SetAddress`) is proposed — by the leader
//! itself when this node leads, otherwise through the leader's HTTP API (the leader publishes
//! first, since it needs nobody's address, so its followers can then reach it). A refused or
//! failed attempt is retried after a pause: a configuration change waits for the one before it
//! to commit, so members publishing at once take turns.

use std::sync::Arc;
use std::time::Duration;

use conclave_core::engine::EngineHandle;
use conclave_core::raft::{MembershipChange, Role};
use tokio::sync::watch;

use crate::config::NodeConfig;

/// Pause after a failed or refused attempt.
const RETRY_PAUSE_MS: u64 = 300;
/// An attempt through the leader's HTTP API that takes longer is given up (and retried).
const ATTEMPT_TIMEOUT_MS: u64 = 3_000;

/// Runs until `shutdown` flips to true.
pub async fn run(
    engine: EngineHandle,
    config: Arc<NodeConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(wanted) = config.own_record() else { return };
    let me = config.node_id;
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_millis(ATTEMPT_TIMEOUT_MS))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, "cannot build the HTTP client that publishes this member's address");
            return;
        }
    };
    let mut status = engine.status_receiver();
    loop {
        let attempt = {
            let now = status.borrow_and_update();
            let member = now.voters.contains(&me) || now.learners.contains(&me);
            let current = now.peer_addresses.get(&me);
            match now.leader {
                Some(leader) if member && current != Some(&wanted) => Some((leader, now.role)),
                _ => None,
            }
        };
        let published = match attempt {
            None => true,
            Some((_, Role::Leader)) => {
                let change = MembershipChange::SetAddress { id: me, address: wanted.clone() };
                match engine.change_membership(change).await {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::debug!(%error, "publishing this member's address: not yet");
                        false
                    }
                }
            }
            Some((leader, _)) => {
                let leader_address =
                    config.http_address_of(leader, engine.peer_address(leader).as_deref());
                match leader_address {
                    Some(address) => {
                        ask_leader(&http, &address, me.0, &wanted).await
                            && shows(&mut status, me, &wanted).await
                    }
                    // The leader has not published its own yet: it will, then this node can.
                    None => false,
                }
            }
        };
        if published {
            tracing::debug!(record = %wanted, "this member's record is current (or nothing to do)");
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)) => {}
                _ = shutdown.changed() => return,
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Waits (within the attempt timeout) until this node's configuration has the record the
/// leader committed, so that a change not applied here yet is not asked for twice.
async fn shows(
    status: &mut watch::Receiver<conclave_core::engine::EngineStatus>,
    me: conclave_core::raft::NodeId,
    wanted: &str,
) -> bool {
    let arrived = async {
        loop {
            if status.borrow_and_update().peer_addresses.get(&me).map(String::as_str)
                == Some(wanted)
            {
                return;
            }
            if status.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(ATTEMPT_TIMEOUT_MS), arrived).await.is_ok()
}

/// `POST /cluster/members` `set-address` at the leader; true if it committed.
async fn ask_leader(http: &reqwest::Client, leader: &str, id: u64, record: &str) -> bool {
    let body =
        serde_json::json!({ "action": "set-address", "member": id.to_string(), "address": record });
    let url = format!("http://{leader}/cluster/members");
    let request = http.post(&url).header("content-type", "application/json").body(body.to_string());
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            tracing::info!(record, "published this member's address");
            true
        }
        Ok(response) => {
            let status = response.status();
            let reason = response.text().await.unwrap_or_default();
            tracing::debug!(%status, reason = reason.trim(), "publishing this member's address: not yet");
            false
        }
        Err(error) => {
            tracing::debug!(%error, url, "publishing this member's address: leader unreachable");
            false
        }
    }
}
