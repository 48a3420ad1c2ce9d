//! How a member learns that it was removed from the cluster, so that it says so and stops
//! instead of campaigning forever as a pre-candidate that nobody answers (etcd's members do the
//! same: "the member has been permanently removed from the cluster").
//!
//! Why it has to be looked for: once the leader appends the configuration without a member, it
//! stops replicating to it, so the removed member usually never receives its own removal. A
//! member therefore suspects a removal when its own configuration no longer lists it (it did
//! receive the change: it was the leader, or a follower that got the entry) or when it has known
//! no leader for a while; then it asks the other members, and only the word of a current leader
//! of the same cluster (by cluster id) decides: a member removed from the leader's configuration
//! is removed. A leader lists the configuration it last appended, which may not commit (it can
//! lose its quorum, and the entry with it), so the word must be repeated: two inquiries in a
//! row, five seconds apart, both answered by a leader whose configuration leaves this node out.
//! A node that joins (`--join`, no configuration yet) suspects nothing until its configuration
//! lists it.

use std::sync::Arc;
use std::time::Duration;

use conclave_client::api::{ClusterInfoJson, MembersJson};
use conclave_core::engine::EngineHandle;
use conclave_core::raft::{NodeId, Role};

use crate::config::NodeConfig;

/// How often the node's own view is looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A node without a leader for this many checks asks the others.
const LEADERLESS_CHECKS: u32 = 3;
/// Asking the others at most once per this many checks.
const CHECKS_PER_INQUIRY: u32 = 5;
/// Inquiries in a row that must find this node left out before it believes it.
const CONFIRMATIONS: u32 = 2;
/// One inquiry's requests give up after this long.
const INQUIRY_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves, with the reason to print, once a leader of the cluster says this node is no
/// longer a member. Never resolves for a sharded node (its members are fixed at creation).
pub async fn removed(engine: EngineHandle, config: Arc<NodeConfig>) -> String {
    let Some(http) = (config.sharding.is_none())
        .then(|| reqwest::Client::builder().timeout(INQUIRY_TIMEOUT).build().ok())
        .flatten()
    else {
        return std::future::pending().await;
    };
    let me = config.node_id;
    let (mut leaderless_checks, mut since_inquiry) = (0u32, CHECKS_PER_INQUIRY);
    // Inquiries in a row that a leader answered without this node.
    let mut told_removed = 0u32;
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        since_inquiry = since_inquiry.saturating_add(1);
        let status = engine.status();
        if status.voters.is_empty() && status.learners.is_empty() {
            continue; // joining: not a member yet
        }
        let listed = status.voters.contains(&me) || status.learners.contains(&me);
        leaderless_checks = if status.leader.is_none() { leaderless_checks + 1 } else { 0 };
        let suspect =
            (!listed && status.role != Role::Leader) || leaderless_checks >= LEADERLESS_CHECKS;
        if !suspect {
            told_removed = 0;
            continue;
        }
        if since_inquiry < CHECKS_PER_INQUIRY {
            continue;
        }
        since_inquiry = 0;
        let mut others: Vec<NodeId> =
            status.voters.iter().chain(&status.learners).copied().collect();
        others.extend(config.members.keys().copied());
        others.sort_unstable();
        others.dedup();
        others.retain(|id| *id != me);
        let mut answer = None;
        for other in others {
            let record = engine.peer_address(other);
            let Some(address) = config.http_address_of(other, record.as_deref()) else {
                continue;
            };
            answer = leaders_members(&http, &address, config.cluster_id).await;
            if answer.is_some() {
                break;
            }
        }
        match answer {
            Some(members) if !members.members.iter().any(|member| member.id == me.0) => {
                told_removed += 1;
                if told_removed < CONFIRMATIONS {
                    continue;
                }
                let listed: Vec<u64> = members.members.iter().map(|member| member.id).collect();
                return format!(
                    "node {} was removed from the cluster: the leader's configuration lists \
                     members {listed:?}; to rejoin, add it again (`conclave members add`) and \
                     start it with --join on an empty data directory",
                    me.0
                );
            }
            Some(_) => told_removed = 0,
            None => {}
        }
    }
}

/// The members by the configuration of the leader that the node at `address` names (itself or
/// another); `None` if there is none or it does not answer.
async fn leaders_members(
    http: &reqwest::Client,
    address: &str,
    cluster_id: u64,
) -> Option<MembersJson> {
    let info = cluster_info(http, address).await?;
    let leader = match info.role.as_str() {
        "leader" => info,
        _ => cluster_info(http, &info.leader_http_address?).await?,
    };
    // Only a node of this cluster that leads right now speaks for its configuration (another
    // cluster may have been started on a reused address).
    (leader.role == "leader" && leader.cluster_id == cluster_id)
        .then_some(MembersJson { members: leader.members })
}

/// `GET /cluster/info` of the node at `address`.
async fn cluster_info(http: &reqwest::Client, address: &str) -> Option<ClusterInfoJson> {
    let response = http.get(format!("http://{address}/cluster/info")).send().await.ok()?;
    let body = response.error_for_status().ok()?.bytes().await.ok()?;
    serde_json::from_slice(&body).ok()
}
