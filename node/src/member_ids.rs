//! Numbers for names: a cluster's id from its token, a member's id from its name.
//!
//! A member of a cluster formed with `--initial-cluster` is named (`--name`), and its Raft id is
//! derived from its name and its cluster's id. Every member computes every other member's id
//! from the same list without talking to anyone, and the leader computes a new member's id from
//! the name given to `conclave members add` — the very id the new node computes for itself from
//! `--name` and `--initial-cluster-token`. The id is recorded in the member's data directory
//! (`member_identity.rs`) and checked at every start.
//!
//! A name removed and added again gets its old id back. That is what a StatefulSet wants (a pod
//! scaled away and back comes back with its volume, its identity file and its log, and catches
//! up as a learner); the one hazard of a reused id, a wiped member voting twice in one term,
//! needs it to be re-added, caught up and promoted within the term in which it voted before its
//! removal — the operator's rule stays "a wiped disk is a new member: give it a new name".
//!
//! Port-named members (`--peers=:8001,...`) keep their port as their id. Derived ids start at
//! 65,536 so that the two kinds never collide, and stay below 2^53 so that JSON tools that read
//! numbers as doubles print them exactly.

use conclave_core::hash::Fnv1a;
use conclave_core::raft::NodeId;

/// The smallest derived id: above every port.
pub const MIN_NAMED_ID: u64 = 1 << 16;
/// One past the largest derived id (exact in an IEEE double).
pub const NAMED_ID_LIMIT: u64 = 1 << 53;

/// FNV-1a, 64 bits: stable across versions and platforms, which is all an id needs (it is a
/// name, not a secret).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hasher = Fnv1a::default();
    for part in parts {
        hasher.write(part);
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        hasher.write(&[0xff]);
    }
    hasher.finish()
}

/// The cluster id peers check in their hello, from `--initial-cluster-token`: clusters with
/// different tokens refuse each other's connections, so they can never merge.
pub fn cluster_id_for_token(token: &str) -> u64 {
    let id = fnv1a(&[b"conclave cluster token", token.as_bytes()]);
    // 0 means "unknown" in `/cluster/info`; a token that hashes there gets another value.
    if id == 0 { 1 } else { id }
}

/// Member `name`'s id in cluster `cluster_id`.
pub fn member_id_for_name(cluster_id: u64, name: &str) -> NodeId {
    let hash = fnv1a(&[b"conclave member name", &cluster_id.to_le_bytes(), name.as_bytes()]);
    let id = MIN_NAMED_ID + hash % (NAMED_ID_LIMIT - MIN_NAMED_ID);
    debug_assert!((MIN_NAMED_ID..NAMED_ID_LIMIT).contains(&id));
    NodeId(id)
}

/// This machine's host name: the default `--name` (a pod's name in a StatefulSet).
pub fn host_name() -> Result<String, String> {
    let name = nix::unistd::gethostname().map_err(|error| format!("gethostname: {error}"))?;
    let name = name.into_string().map_err(|_| "the host name is not UTF-8".to_string())?;
    // The first label only: `node-1.example.com` is member `node-1`.
    Ok(name.split('.').next().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_the_name_and_the_cluster_only() {
        let cluster = cluster_id_for_token("prod-kv");
        assert_eq!(cluster, cluster_id_for_token("prod-kv"));
        assert_ne!(cluster, cluster_id_for_token("prod-kv2"));
        let a = member_id_for_name(cluster, "node-a");
        assert_eq!(a, member_id_for_name(cluster, "node-a"));
        assert_ne!(a, member_id_for_name(cluster, "node-b"));
        assert_ne!(a, member_id_for_name(cluster_id_for_token("other"), "node-a"));
        for name in ["a", "node-1", "conclave-0", "x".repeat(63).as_str()] {
            let id = member_id_for_name(cluster, name).0;
            assert!((MIN_NAMED_ID..NAMED_ID_LIMIT).contains(&id), "{name}: {id}");
        }
    }

    #[test]
    fn the_default_name_is_a_usable_member_name() {
        let name = host_name().expect("this machine has a host name");
        assert!(!name.contains('.'), "{name}");
    }
}
