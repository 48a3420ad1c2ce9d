//! Which member a data directory belongs to: its node id and its cluster's id, written when the
//! directory is first used and checked at every start. Without it, a directory reused with
//! another `--port`, or a member restarted with another `--peers`, silently starts a different
//! node (or a one-node cluster, which would elect itself) on another node's log.
//!
//! ```text
//! [0..8) magic "CNCLIDNT"  [8..12) format version  [12..16) payload length
//! [16..20) CRC32C of the payload  [20..) postcard(MemberIdentity)
//! ```
//!
//! Written to a temporary name, synced, renamed over the old file, and the directory synced:
//! a crash leaves the old identity or the new one, never a torn one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const IDENTITY_FILE_NAME: &str = "identity";
const MAGIC: [u8; 8] = *b"CNCLIDNT";
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 20;
/// An identity is a few bytes; a larger file is not one.
const MAX_PAYLOAD_BYTES: usize = 4096;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberIdentity {
    pub node_id: u64,
    /// `None` for a directory restored from a backup without a member list: the first start
    /// records the cluster it is started into.
    pub cluster_id: Option<u64>,
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
        found_node: u64,
        found_cluster: String,
        asked_node: u64,
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
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}; this build reads {FORMAT_VERSION}"));
    }
    if length > MAX_PAYLOAD_BYTES || bytes.len() != HEADER_BYTES + length {
        return Err(format!("payload of {length} bytes in a file of {} bytes", bytes.len()));
    }
    let payload = &bytes[HEADER_BYTES..];
    if crc32c::crc32c(payload) != checksum {
        return Err("checksum mismatch".into());
    }
    postcard::from_bytes(payload).map_err(|error| format!("undecodable: {error}"))
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
    let path = dir.join(IDENTITY_FILE_NAME);
    let temp = dir.join(format!("{IDENTITY_FILE_NAME}.tmp"));
    let mut file = fs::File::create(&temp).map_err(io_error("create", &temp))?;
    file.write_all(&encode(identity)).map_err(io_error("write", &temp))?;
    file.sync_all().map_err(io_error("sync", &temp))?;
    drop(file);
    fs::rename(&temp, &path).map_err(io_error("rename", &temp))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync", dir))?;
    Ok(())
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
        Some(found) if found.node_id != asked.node_id => Err(IdentityError::Mismatch {
            dir: dir.to_path_buf(),
            found_node: found.node_id,
            found_cluster: describe_cluster(found.cluster_id),
            asked_node: asked.node_id,
            asked_cluster,
            hint: "start it with the --port it was created with, or give this node its own \
                   --working-dir",
        }),
        Some(found) => match (found.cluster_id, asked.cluster_id) {
            (Some(found_cluster), Some(asked_cluster)) if found_cluster != asked_cluster => {
                Err(IdentityError::Mismatch {
                    dir: dir.to_path_buf(),
                    found_node: found.node_id,
                    found_cluster: describe_cluster(Some(found_cluster)),
                    asked_node: asked.node_id,
                    asked_cluster,
                    hint: "a cluster's id comes from its member list: start it with the --peers \
                           (and --host) it was created with; a new cluster needs new directories",
                })
            }
            (None, Some(_)) => {
                write(dir, &asked)?;
                Ok(asked)
            }
            _ => Ok(found),
        },
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
        let first = MemberIdentity { node_id: 8001, cluster_id: Some(7) };
        assert_eq!(check_or_record(dir, first).expect("recorded"), first);
        assert_eq!(check_or_record(dir, first).expect("same again"), first);
        let other_node = MemberIdentity { node_id: 9001, cluster_id: Some(7) };
        let error = check_or_record(dir, other_node).expect_err("another node id").to_string();
        assert!(
            error.contains("belongs to node 8001") && error.contains("as node 9001"),
            "{error}"
        );
        let other_cluster = MemberIdentity { node_id: 8001, cluster_id: Some(8) };
        let error = check_or_record(dir, other_cluster).expect_err("another cluster").to_string();
        assert!(error.contains("--peers"), "{error}");
    }

    #[test]
    fn a_restored_directory_learns_its_cluster_at_the_first_start() {
        let temp = TestDir::new("identity-restored");
        let dir = temp.path();
        write(dir, &MemberIdentity { node_id: 9001, cluster_id: None }).expect("written");
        let asked = MemberIdentity { node_id: 9001, cluster_id: Some(42) };
        assert_eq!(check_or_record(dir, asked).expect("adopted"), asked);
        assert_eq!(read(dir).expect("readable"), Some(asked));
    }

    #[test]
    fn damage_is_reported_not_ignored() {
        let temp = TestDir::new("identity-damaged");
        let dir = temp.path();
        write(dir, &MemberIdentity { node_id: 1, cluster_id: Some(2) }).expect("written");
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
