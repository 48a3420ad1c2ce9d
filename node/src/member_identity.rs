//! Which member a data directory belongs to: its node id, its cluster's id and (for a named
//! member) its name, written when the directory is first used and checked at every start. Without it, a directory reused with
//! another `--port`, or a member restarted with another `--peers`, silently starts a different
//! node (or a one-node cluster, which would elect itself) on another node's log.
//!
//! ```text
//! [0..8) magic "CNCLIDNT"  [8..12) format version  [12..16) payload length
//! [16..20) CRC32C of the payload  [20..) postcard(MemberIdentity)
//! ```
//!
//! Version 1 had no name; it is still read (as a member without one).
//!
//! Written to a temporary name, synced, renamed over the old file, and the directory synced:
//! a crash leaves the old identity or the new one, never a torn one.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data_dir::{ReplaceError, replace_file};
use thiserror::Error;

pub const IDENTITY_FILE_NAME: &str = "identity";
const MAGIC: [u8; 8] = *b"CNCLIDNT";
const FORMAT_VERSION: u32 = 2;
/// Identities written before members had names.
const FORMAT_VERSION_UNNAMED: u32 = 1;
const HEADER_BYTES: usize = 20;
/// An identity is a few bytes; a larger file is not one.
const MAX_PAYLOAD_BYTES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberIdentity {
    pub node_id: u64,
    /// `None` for a directory restored from a backup without a member list: the first start
    /// records the cluster it is started into.
    pub cluster_id: Option<u64>,
    /// A named member's name (`--name`); `None` for a port-named member.
    pub name: Option<String>,
}

/// The payload of format version 1.
#[derive(Deserialize)]
struct UnnamedIdentity {
    node_id: u64,
    cluster_id: Option<u64>,
}

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("cannot {operation} {path}: {cause}")]
    Io { operation: &'static str, path: PathBuf, cause: std::io::Error },
    #[error("{path} is not a member identity file ({reason}); it was not written by conclave")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "the data directory {dir} belongs to node {found_node}{found_cluster}, but this node was \
         started as node {asked_node} of cluster {asked_cluster:#018x}; {hint}"
    )]
    Mismatch {
        dir: PathBuf,
        found_node: String,
        found_cluster: String,
        asked_node: String,
        asked_cluster: u64,
        hint: &'static str,
    },
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError {
    let path = path.to_path_buf();
    move |cause| IdentityError::Io { operation, path, cause }
}

/// The identity recorded in `dir`, if any.
pub fn read(dir: &Path) -> Result<Option<MemberIdentity>, IdentityError> {
    let path = dir.join(IDENTITY_FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("read", &path)(error)),
    };
    decode(&bytes).map(Some).map_err(|reason| IdentityError::Invalid { path: path.clone(), reason })
}

fn decode(bytes: &[u8]) -> Result<MemberIdentity, String> {
    if bytes.len() < HEADER_BYTES || bytes[..8] != MAGIC {
        return Err("no identity header".into());
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (version, length, checksum) = (word(8), word(12) as usize, word(16));
    if version != FORMAT_VERSION && version != FORMAT_VERSION_UNNAMED {
        return Err(format!("format version {version}; this build reads up to {FORMAT_VERSION}"));
    }
    if length > MAX_PAYLOAD_BYTES || bytes.len() != HEADER_BYTES + length {
        return Err(format!("payload of {length} bytes in a file of {} bytes", bytes.len()));
    }
    let payload = &bytes[HEADER_BYTES..];
    if crc32c::crc32c(payload) != checksum {
        return Err("checksum mismatch".into());
    }
    let undecodable = |error: postcard::Error| format!("undecodable: {error}");
    if version == FORMAT_VERSION_UNNAMED {
        let old: UnnamedIdentity = postcard::from_bytes(payload).map_err(undecodable)?;
        return Ok(MemberIdentity { node_id: old.node_id, cluster_id: old.cluster_id, name: None });
    }
    postcard::from_bytes(payload).map_err(undecodable)
}

fn encode(identity: &MemberIdentity) -> Vec<u8> {
    let payload = postcard::to_allocvec(identity).expect("a fixed-shape struct always encodes");
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

/// Records `identity` in `dir`, durably.
pub fn write(dir: &Path, identity: &MemberIdentity) -> Result<(), IdentityError> {
    replace_file(dir, IDENTITY_FILE_NAME, &encode(identity)).map_err(
        |ReplaceError { operation, path, cause }| IdentityError::Io { operation, path, cause },
    )
}

/// Checks `dir`'s identity against the node being started (`asked`), recording it if the
/// directory has none yet (a new directory, one from before identities, or a restored one).
/// Returns the identity in force.
pub fn check_or_record(dir: &Path, asked: MemberIdentity) -> Result<MemberIdentity, IdentityError> {
    let asked_cluster = asked.cluster_id.unwrap_or(0);
    match read(dir)? {
        None => {
            write(dir, &asked)?;
            Ok(asked)
        }
        // Names are compared only when both have one: a port-named member may be given --name
        // later (it is only shown), and a named member's id already depends on its name.
        Some(found)
            if found.node_id != asked.node_id
                || (found.name.is_some() && asked.name.is_some() && found.name != asked.name) =>
        {
            Err(IdentityError::Mismatch {
                dir: dir.to_path_buf(),
                found_node: describe_member(found.node_id, found.name.as_deref()),
                found_cluster: describe_cluster(found.cluster_id),
                asked_node: describe_member(asked.node_id, asked.name.as_deref()),
                asked_cluster,
                hint: "start it with the --port, or the --name and --initial-cluster-token, it \
                       was created with, or give this node its own --working-dir",
            })
        }
        Some(found) => match (found.cluster_id, asked.cluster_id) {
            (Some(found_cluster), Some(asked_cluster)) if found_cluster != asked_cluster => {
                Err(IdentityError::Mismatch {
                    dir: dir.to_path_buf(),
                    found_node: describe_member(found.node_id, found.name.as_deref()),
                    found_cluster: describe_cluster(Some(found_cluster)),
                    asked_node: describe_member(asked.node_id, asked.name.as_deref()),
                    asked_cluster,
                    hint: "a cluster's id comes from its --initial-cluster-token, or from its \
                           member list for --peers: start it with the --peers (and --host) or \
                           the token it was created with; a new cluster needs new directories",
                })
            }
            (found_cluster, asked_cluster)
                if (found_cluster.is_none() && asked_cluster.is_some())
                    || (found.name.is_none() && asked.name.is_some()) =>
            {
                // Learn what the directory did not record yet (restored without a member
                // list, or written before members had names).
                let learned = MemberIdentity {
                    node_id: found.node_id,
                    cluster_id: found_cluster.or(asked_cluster),
                    name: found.name.or(asked.name),
                };
                write(dir, &learned)?;
                Ok(learned)
            }
            _ => Ok(found),
        },
    }
}

fn describe_member(node_id: u64, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{node_id} ({name})"),
        None => node_id.to_string(),
    }
}

fn describe_cluster(cluster_id: Option<u64>) -> String {
    match cluster_id {
        Some(id) => format!(" of cluster {id:#018x}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn a_directory_keeps_the_identity_it_was_first_started_with() {
        let temp = TestDir::new("identity-keeps");
        let dir = temp.path();
        let first = MemberIdentity { node_id: 8001, cluster_id: Some(7), name: None };
        assert_eq!(check_or_record(dir, first.clone()).expect("recorded"), first);
        assert_eq!(check_or_record(dir, first.clone()).expect("same again"), first);
        let other_node = MemberIdentity { node_id: 9001, cluster_id: Some(7), name: None };
        let error = check_or_record(dir, other_node).expect_err("another node id").to_string();
        assert!(
            error.contains("belongs to node 8001") && error.contains("as node 9001"),
            "{error}"
        );
        let other_cluster = MemberIdentity { node_id: 8001, cluster_id: Some(8), name: None };
        let error = check_or_record(dir, other_cluster).expect_err("another cluster").to_string();
        assert!(error.contains("--peers"), "{error}");
    }

    #[test]
    fn a_restored_directory_learns_its_cluster_at_the_first_start() {
        let temp = TestDir::new("identity-restored");
        let dir = temp.path();
        write(dir, &MemberIdentity { node_id: 9001, cluster_id: None, name: None })
            .expect("written");
        let asked = MemberIdentity { node_id: 9001, cluster_id: Some(42), name: None };
        assert_eq!(check_or_record(dir, asked.clone()).expect("adopted"), asked);
        assert_eq!(read(dir).expect("readable"), Some(asked));
    }

    #[test]
    fn a_named_member_is_refused_another_name_and_old_files_are_read() {
        let temp = TestDir::new("identity-named");
        let dir = temp.path();
        let a = MemberIdentity { node_id: 70_001, cluster_id: Some(5), name: Some("a".into()) };
        check_or_record(dir, a.clone()).expect("recorded");
        let b = MemberIdentity { name: Some("b".into()), ..a.clone() };
        let error = check_or_record(dir, b).expect_err("another name").to_string();
        assert!(error.contains("node 70001 (a)") && error.contains("as node 70001 (b)"), "{error}");
        // A version-1 file (no name): read as unnamed, and given the name at the next start.
        let payload = postcard::to_allocvec(&(8001u64, Some(7u64))).expect("encodes");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION_UNNAMED.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        fs::write(dir.join(IDENTITY_FILE_NAME), &bytes).expect("written");
        let old = read(dir).expect("readable").expect("present");
        assert_eq!(old, MemberIdentity { node_id: 8001, cluster_id: Some(7), name: None });
        let named = MemberIdentity { name: Some("web-1".into()), ..old };
        assert_eq!(check_or_record(dir, named.clone()).expect("accepted"), named);
        assert_eq!(read(dir).expect("readable"), Some(named));
    }

    #[test]
    fn damage_is_reported_not_ignored() {
        let temp = TestDir::new("identity-damaged");
        let dir = temp.path();
        write(dir, &MemberIdentity { node_id: 1, cluster_id: Some(2), name: None })
            .expect("written");
        let path = dir.join(IDENTITY_FILE_NAME);
        let mut bytes = fs::read(&path).expect("readable");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x5a;
        fs::write(&path, &bytes).expect("rewritten");
        assert!(matches!(read(dir), Err(IdentityError::Invalid { .. })));
        fs::write(&path, b"hello").expect("rewritten");
        assert!(matches!(read(dir), Err(IdentityError::Invalid { .. })));
    }
}
