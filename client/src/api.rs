//! The JSON shapes of the HTTP API, shared by the server and the client library. Values are
//! bytes: JSON carries them as `value` when they are valid UTF-8, otherwise as `value_base64`
//! (standard alphabet, padded); requests may use either.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Request headers of the session protocol (exactly-once writes; see the crate docs).
pub const CLIENT_ID_HEADER: &str = "x-conclave-client-id";
pub const SEQ_HEADER: &str = "x-conclave-seq";
/// The leader's node id, on redirects and "not the leader" answers.
pub const LEADER_HEADER: &str = "x-conclave-leader";
/// The store revision a response reflects.
pub const REVISION_HEADER: &str = "x-conclave-revision";
/// On the 200 of a `DELETE /kv/{key}`: `1` if the key existed and was removed, `0` if there
/// was nothing to delete.
pub const DELETED_HEADER: &str = "x-conclave-deleted";
/// How many keys a clear or a prefix delete deleted.
pub const DELETED_KEYS_HEADER: &str = "x-conclave-deleted-keys";
/// Set on a request one node forwarded to the leader, so that it is never forwarded twice.
pub const FORWARDED_HEADER: &str = "x-conclave-forwarded";
/// Set on a request one node of a sharded cluster sent to another that holds a replica of the
/// request's shard (its value: the shard's number). The receiver serves it from that shard's
/// group (forwarding it to the group's leader if need be) and never routes it to a third node:
/// a node without a replica answers 421 Misdirected Request.
pub const SHARD_HEADER: &str = "x-conclave-shard";
/// On a 421 Misdirected Request: the epoch of the shard map the refusing node routes by.
pub const SHARD_EPOCH_HEADER: &str = "x-conclave-shard-epoch";
/// On a backup (`GET /admin/backup`): the log index and term of the state it holds.
pub const BACKUP_INDEX_HEADER: &str = "x-conclave-backup-index";
pub const BACKUP_TERM_HEADER: &str = "x-conclave-backup-term";
/// On `GET /cluster/shard-map`: the replicas per shard the cluster was created with
/// (`--replication`), which a backup records.
pub const REPLICATION_HEADER: &str = "x-conclave-replication";

/// Splits bytes into the JSON `value` / `value_base64` pair.
pub fn encode_value(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (None, Some(BASE64.encode(bytes))),
    }
}

/// Joins the JSON `value` / `value_base64` pair back into bytes; exactly one must be present.
pub fn decode_value(
    value: Option<&str>,
    value_base64: Option<&str>,
    what: &str,
) -> Result<Bytes, String> {
    match (value, value_base64) {
        (Some(text), None) => Ok(Bytes::copy_from_slice(text.as_bytes())),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map(Bytes::from)
            .map_err(|error| format!("{what}: value_base64 is not valid base64: {error}")),
        (Some(_), Some(_)) => Err(format!("{what}: give either value or value_base64, not both")),
        (None, None) => Err(format!("{what}: value (or value_base64) is missing")),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValueJson {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl KeyValueJson {
    /// The value's bytes.
    pub fn bytes(&self) -> Result<Bytes, String> {
        decode_value(self.value.as_deref(), self.value_base64.as_deref(), &self.key)
    }
}

/// `GET /kv?prefix=&limit=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeJson {
    pub revision: u64,
    pub more: bool,
    pub kvs: Vec<KeyValueJson>,
}

/// `POST /txn`: if every compare holds, run `success`, else `failure` (etcd's model).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnRequestJson {
    #[serde(default)]
    pub compare: Vec<CompareJson>,
    #[serde(default)]
    pub success: Vec<TxnOpJson>,
    #[serde(default)]
    pub failure: Vec<TxnOpJson>,
}

impl TxnRequestJson {
    /// The first key it names (a compare's, else an operation's): in a sharded cluster every
    /// key of a transaction is in one shard, so this one routes it.
    pub fn first_key(&self) -> Option<&str> {
        fn op_key(op: &TxnOpJson) -> Option<&str> {
            match op {
                TxnOpJson::Put { key, .. } | TxnOpJson::Delete { key } | TxnOpJson::Get { key } => {
                    Some(key.as_str())
                }
                TxnOpJson::Range { .. } => None,
            }
        }
        self.compare
            .first()
            .map(|compare| compare.key.as_str())
            .or_else(|| self.success.iter().chain(&self.failure).find_map(op_key))
    }
}

/// One compare: `{"key":"a","target":"value","op":"=","value":"x"}`. Targets: `value` (with
/// `value` or `value_base64`), `mod_revision` / `create_revision` (with `revision`), `version`
/// (with `version`), `exists` (with `exists`). Ops: `=`, `!=`, `<`, `>` (default `=`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareJson {
    pub key: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// One operation: `{"put":{"key":"a","value":"1","ttl":"30s"}}`, `{"delete":{"key":"a"}}`,
/// `{"get":{"key":"a"}}`, `{"range":{"prefix":"a","limit":10}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOpJson {
    Put {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value_base64: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl: Option<String>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
    Range {
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        limit: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponseJson {
    pub succeeded: bool,
    pub revision: u64,
    pub results: Vec<TxnResultJson>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnResultJson {
    Put { created: bool },
    Delete { deleted: bool },
    Get { kv: Option<KeyValueJson> },
    Range { kvs: Vec<KeyValueJson>, more: bool },
}

/// `POST /session`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionJson {
    pub client_id: u64,
}

/// One member as `/cluster/info` and `/cluster/members` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberJson {
    pub id: u64,
    /// A named member's name (`--name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `voter` or `learner`.
    pub role: String,
    pub is_leader: bool,
    #[serde(default)]
    pub http_address: Option<String>,
    #[serde(default)]
    pub peer_address: Option<String>,
    /// Known on the leader only: the highest log index the member has stored.
    #[serde(default)]
    pub matched_index: Option<u64>,
    /// Known on the leader only: log entries the member is behind.
    #[serde(default)]
    pub lag: Option<u64>,
}

/// `GET /cluster/shards`: the shard map a node routes by, and each shard's state as its
/// replicas report it (the leader's report when it can be reached). A single-group cluster
/// answers with one shard that owns every slot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardsJson {
    /// The map's epoch (0 for a single-group cluster, which has no map).
    pub epoch: u64,
    /// The number of slots keys are hashed into.
    pub slot_count: u32,
    pub shards: Vec<ShardJson>,
    /// The HTTP address (`host:port`) of each member the map names, as the answering node
    /// knows it: where a client sends a shard's requests.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub addresses: std::collections::BTreeMap<u64, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardJson {
    pub shard: u32,
    /// The slots it owns, as ranges: `0-127,512-600`.
    pub slots: String,
    pub slot_count: u32,
    /// Its replicas' member ids, by the map.
    pub replicas: Vec<u64>,
    /// The rest is what a replica reported; absent when no replica answered.
    #[serde(default)]
    pub leader: Option<u64>,
    #[serde(default)]
    pub term: Option<u64>,
    #[serde(default)]
    pub commit_index: Option<u64>,
    #[serde(default)]
    pub applied_index: Option<u64>,
    /// Entries the most lagging replica is behind the leader's log (known from the leader).
    #[serde(default)]
    pub lag: Option<u64>,
    #[serde(default)]
    pub reported_by: Option<u64>,
}

/// `GET /version`: the server's build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionJson {
    /// The `conclave` version the node runs (its crate version).
    pub version: String,
    /// The node's member id.
    pub id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfoJson {
    pub id: u64,
    /// Nodes of different clusters refuse each other; a joining node learns it here.
    #[serde(default)]
    pub cluster_id: u64,
    /// `leader`, `follower`, `candidate` or `pre_candidate`.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_http_address: Option<String>,
    /// This node's name, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    pub revision: u64,
    pub key_count: u64,
    pub leader_changes: u64,
    pub proposals_committed: u64,
    pub proposals_failed: u64,
    pub proposals_pending: u64,
    pub members: Vec<MemberJson>,
    /// Bytes of files in the node's data directory (its log, snapshots and state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersJson {
    pub members: Vec<MemberJson>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthJson {
    pub health: bool,
    pub role: String,
    pub leader: Option<u64>,
    /// Why the node is not healthy (empty when it is): `no leader`, `disk full: ...`.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The alarms raised on the node, as etcd names them: `NOSPACE` while its disk is full.
    #[serde(default)]
    pub alarms: Vec<String>,
}

/// The `data` of one server-sent watch event (the SSE `id` is `mod_revision`, the SSE event
/// name is `kind`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEventJson {
    /// `put`, `delete` or `expire`.
    pub kind: String,
    pub key: String,
    /// For `put` the new value, for `delete`/`expire` the value the key had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// The revision of the change, in its shard's revisions.
    pub mod_revision: u64,
    /// The shard the change was made in (a watch of every shard of a sharded cluster only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_as_text_or_base64() {
        for bytes in [&b"plain text"[..], "emoji \u{1f600}\t".as_bytes(), &[0xff, 0x00, 0xfe][..]] {
            let (value, value_base64) = encode_value(bytes);
            assert!(value.is_some() != value_base64.is_some());
            let back = decode_value(value.as_deref(), value_base64.as_deref(), "k").expect("ok");
            assert_eq!(&back[..], bytes);
        }
        assert!(decode_value(None, None, "k").is_err());
        assert!(decode_value(Some("a"), Some("YQ=="), "k").is_err());
        assert!(decode_value(None, Some("%%"), "k").is_err());
    }

    #[test]
    fn txn_json_parses_etcd_style_requests() {
        let text = r#"{"compare":[{"key":"a","target":"value","op":"=","value":"1"}],
            "success":[{"put":{"key":"a","value":"2"}},{"get":{"key":"a"}}],
            "failure":[{"range":{"prefix":"a"}}]}"#;
        let txn: TxnRequestJson = serde_json::from_str(text).expect("valid");
        assert_eq!(txn.success.len(), 2);
        assert!(serde_json::from_str::<TxnRequestJson>(r#"{"compares":[]}"#).is_err());
    }
}
