//! The snapshot format of the KV state machine, and its validation on restore.
//!
//! Layout: one format-version byte, then the postcard encoding of [`SnapshotView`], then — in
//! format 2 only, the meta group's — the postcard encoding of its shard map. A state without a
//! map is written in format 1, byte for byte what it always was. Maps are
//! written as sequences of pairs in key order, so the same state always yields the same bytes
//! (which is also what the state digest hashes). Derived indexes (TTL order, session LRU order)
//! are not stored but rebuilt, so they cannot disagree with the data they index.
//!
//! A snapshot arrives from disk or from another node: everything in it is checked, and bad
//! data is an error, never a panic.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};

use super::error::KvError;
use super::keyspace::{KeyRecord, Keyspace};
use super::limits::KvLimits;
use super::session::{ClientSession, SessionTable};
use crate::hash::Fnv1a;
use crate::raft::LogIndex;
use crate::shard::ShardMap;

/// Bump when the encoding of anything below (requests' cached responses included) changes.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;
/// Format 1 followed by the shard map (a meta group's state).
pub const SNAPSHOT_FORMAT_WITH_SHARD_MAP: u8 = 2;

/// No store performs 2^62 writes; rejecting larger counters on restore means `+ 1` on a
/// revision or log index can never overflow afterwards.
const MAX_COUNTER: u64 = 1 << 62;

/// Serialises a map as a length-prefixed sequence of `(key, value)` pairs, in key order.
struct SortedPairs<'a, K, V>(&'a BTreeMap<K, V>);

impl<K: Serialize, V: Serialize> Serialize for SortedPairs<'_, K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

/// The whole state, borrowed, in encoding order. Field order is the format.
#[derive(Serialize)]
struct SnapshotView<'a> {
    limits: &'a KvLimits,
    applied_index: LogIndex,
    clock_ms: u64,
    revision: u64,
    keys: SortedPairs<'a, String, KeyRecord>,
    sessions: SortedPairs<'a, u64, ClientSession>,
}

/// What decoding reads: the same fields, owned, maps as pair lists to check their order.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize, Clone))]
struct SnapshotData {
    limits: KvLimits,
    applied_index: LogIndex,
    clock_ms: u64,
    revision: u64,
    keys: Vec<(String, KeyRecord)>,
    sessions: Vec<(u64, ClientSession)>,
}

/// The parts a state machine is made of, borrowed for encoding or owned after decoding.
pub(crate) struct SnapshotParts<L, K, S, M> {
    pub(crate) limits: L,
    pub(crate) applied_index: LogIndex,
    pub(crate) clock_ms: u64,
    pub(crate) keyspace: K,
    pub(crate) sessions: S,
    pub(crate) shard_map: Option<M>,
}

pub(crate) type BorrowedParts<'a> =
    SnapshotParts<&'a KvLimits, &'a Keyspace, &'a SessionTable, &'a ShardMap>;
pub(crate) type OwnedParts = SnapshotParts<KvLimits, Keyspace, SessionTable, ShardMap>;

fn format_version(parts: &BorrowedParts<'_>) -> u8 {
    match parts.shard_map {
        None => SNAPSHOT_FORMAT_VERSION,
        Some(_) => SNAPSHOT_FORMAT_WITH_SHARD_MAP,
    }
}

fn view<'a>(parts: &BorrowedParts<'a>) -> SnapshotView<'a> {
    SnapshotView {
        limits: parts.limits,
        applied_index: parts.applied_index,
        clock_ms: parts.clock_ms,
        revision: parts.keyspace.revision(),
        keys: SortedPairs(parts.keyspace.records()),
        sessions: SortedPairs(parts.sessions.sessions()),
    }
}

pub(crate) fn encode(parts: &BorrowedParts<'_>) -> Bytes {
    // Cannot fail: every sequence has a known length, no type has a fallible Serialize, and a
    // Vec never runs out of room.
    const INFALLIBLE: &str = "serialising the in-memory state cannot fail";
    let bytes = postcard::to_extend(&view(parts), vec![format_version(parts)]).expect(INFALLIBLE);
    let bytes = match parts.shard_map {
        Some(map) => postcard::to_extend(map, bytes).expect(INFALLIBLE),
        None => bytes,
    };
    Bytes::from(bytes)
}

/// FNV-1a of exactly the bytes [`encode`] produces, computed without materialising them.
pub(crate) fn digest(parts: &BorrowedParts<'_>) -> u64 {
    const INFALLIBLE: &str = "serialising the in-memory state cannot fail";
    let mut hasher = Fnv1a::default();
    hasher.write(&[format_version(parts)]);
    let hasher = postcard::to_extend(&view(parts), hasher).expect(INFALLIBLE);
    let hasher = match parts.shard_map {
        Some(map) => postcard::to_extend(map, hasher).expect(INFALLIBLE),
        None => hasher,
    };
    hasher.finish()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<OwnedParts, KvError> {
    let (&version, body) = bytes.split_first().ok_or(KvError::EmptySnapshot)?;
    if version != SNAPSHOT_FORMAT_VERSION && version != SNAPSHOT_FORMAT_WITH_SHARD_MAP {
        return Err(KvError::UnsupportedSnapshotVersion {
            found: version,
            supported: SNAPSHOT_FORMAT_WITH_SHARD_MAP,
        });
    }
    let (data, rest): (SnapshotData, _) =
        postcard::take_from_bytes(body).map_err(KvError::Decode)?;
    let (shard_map, rest) = if version == SNAPSHOT_FORMAT_WITH_SHARD_MAP {
        let (map, rest): (ShardMap, _) =
            postcard::take_from_bytes(rest).map_err(KvError::Decode)?;
        if map.validate().is_err() {
            return Err(KvError::InvalidSnapshot("invalid shard map"));
        }
        (Some(map), rest)
    } else {
        (None, rest)
    };
    if !rest.is_empty() {
        return Err(KvError::TrailingBytes { trailing_bytes: rest.len() as u64 });
    }
    data.limits.check()?;
    if data.applied_index > MAX_COUNTER || data.revision > MAX_COUNTER {
        return Err(KvError::InvalidSnapshot("applied index or revision out of range"));
    }
    let SnapshotData { limits, applied_index, clock_ms, revision, keys, sessions } = data;
    let records = check_keys(keys, &limits, revision, clock_ms)?;
    let sessions = check_sessions(sessions, &limits, applied_index)?;
    Ok(SnapshotParts {
        keyspace: Keyspace::from_parts(records, revision),
        sessions: SessionTable::from_parts(sessions),
        limits,
        applied_index,
        clock_ms,
        shard_map,
    })
}

fn check_keys(
    keys: Vec<(String, KeyRecord)>,
    limits: &KvLimits,
    revision: u64,
    clock_ms: u64,
) -> Result<BTreeMap<String, KeyRecord>, KvError> {
    let mut records = BTreeMap::new();
    for (key, record) in keys {
        let in_order =
            records.last_key_value().is_none_or(|(previous, _): (&String, _)| *previous < key);
        if !in_order {
            return Err(KvError::InvalidSnapshot("keys not in strictly increasing order"));
        }
        if key.is_empty() || key.len() as u64 > limits.max_key_bytes {
            return Err(KvError::InvalidSnapshot("key empty or longer than max_key_bytes"));
        }
        if record.value.len() as u64 > limits.max_value_bytes {
            return Err(KvError::InvalidSnapshot("value longer than max_value_bytes"));
        }
        let meta = record.meta;
        if meta.create_revision == 0
            || meta.create_revision > meta.mod_revision
            || meta.mod_revision > revision
        {
            return Err(KvError::InvalidSnapshot("key revisions out of order"));
        }
        if meta.version == 0 {
            return Err(KvError::InvalidSnapshot("key version is 0"));
        }
        // Every apply expires what is due before it returns, so a snapshot never holds a key
        // whose deadline has passed.
        if meta.expires_at_ms.is_some_and(|deadline_ms| deadline_ms <= clock_ms) {
            return Err(KvError::InvalidSnapshot("key past its deadline"));
        }
        records.insert(key, record);
    }
    Ok(records)
}

fn check_sessions(
    list: Vec<(u64, ClientSession)>,
    limits: &KvLimits,
    applied_index: LogIndex,
) -> Result<BTreeMap<u64, ClientSession>, KvError> {
    if list.len() as u64 > limits.max_sessions {
        return Err(KvError::InvalidSnapshot("more sessions than max_sessions"));
    }
    let mut sessions = BTreeMap::new();
    for (client_id, session) in list {
        if sessions.last_key_value().is_some_and(|(previous, _)| *previous >= client_id) {
            return Err(KvError::InvalidSnapshot("sessions not in strictly increasing order"));
        }
        // A session id is the log index that registered it; it is last active no earlier.
        if client_id == 0
            || client_id > session.last_active_index
            || session.last_active_index > applied_index
        {
            return Err(KvError::InvalidSnapshot("session indexes out of order"));
        }
        if session.last_response.is_some() != (session.last_seq > 0) {
            return Err(KvError::InvalidSnapshot("session response does not match its seq"));
        }
        if session.last_response.as_ref().is_some_and(|response| {
            response.retained_size_bytes() > limits.max_session_response_bytes
        }) {
            return Err(KvError::InvalidSnapshot("cached response over the size limit"));
        }
        sessions.insert(client_id, session);
    }
    Ok(sessions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::fnv1a;
    use crate::kv::{KeyMeta, KvResponse};

    fn record(value: &'static [u8], mod_revision: u64, expires_at_ms: Option<u64>) -> KeyRecord {
        KeyRecord {
            value: Bytes::from_static(value),
            meta: KeyMeta { create_revision: 1, mod_revision, version: 1, expires_at_ms },
        }
    }

    fn session(last_seq: u64, last_active_index: LogIndex) -> ClientSession {
        let last_response = (last_seq > 0).then_some(KvResponse::ExpireTick { revision: 1 });
        ClientSession { last_seq, last_active_index, last_response }
    }

    fn valid() -> SnapshotData {
        SnapshotData {
            limits: KvLimits { max_sessions: 2, ..KvLimits::default() },
            applied_index: 10,
            clock_ms: 1_000,
            revision: 5,
            keys: vec![
                ("a".into(), record(b"1", 2, None)),
                ("b".into(), record(b"2", 5, Some(1_001))),
            ],
            sessions: vec![(3, session(0, 3)), (4, session(2, 9))],
        }
    }

    fn encode_data(data: &SnapshotData) -> Vec<u8> {
        postcard::to_extend(data, vec![SNAPSHOT_FORMAT_VERSION]).unwrap()
    }

    fn borrowed(parts: &OwnedParts) -> BorrowedParts<'_> {
        SnapshotParts {
            limits: &parts.limits,
            applied_index: parts.applied_index,
            clock_ms: parts.clock_ms,
            keyspace: &parts.keyspace,
            sessions: &parts.sessions,
            shard_map: parts.shard_map.as_ref(),
        }
    }

    #[test]
    fn kv_snapshot_decodes_valid_data_and_reencodes_identically() {
        let bytes = encode_data(&valid());
        let parts = decode(&bytes).unwrap();
        assert_eq!(parts.keyspace.next_deadline_ms(), Some(1_001));
        assert_eq!(parts.sessions.len(), 2);
        assert_eq!(&encode(&borrowed(&parts))[..], &bytes[..]);
        assert_eq!(digest(&borrowed(&parts)), fnv1a(&bytes));
    }

    #[test]
    fn kv_snapshot_rejects_inconsistent_contents() {
        type Corruption = fn(&mut SnapshotData);
        let corruptions: Vec<(&str, Corruption)> = vec![
            ("keys not in strictly increasing order", |d| d.keys.swap(0, 1)),
            ("keys not in strictly increasing order", |d| d.keys[1].0 = "a".into()),
            ("key empty or longer than max_key_bytes", |d| d.keys[0].0 = String::new()),
            ("key revisions out of order", |d| d.keys[1].1.meta.mod_revision = 6),
            ("key revisions out of order", |d| d.keys[0].1.meta.create_revision = 0),
            ("key revisions out of order", |d| d.keys[0].1.meta.create_revision = 3),
            ("key version is 0", |d| d.keys[0].1.meta.version = 0),
            ("key past its deadline", |d| d.keys[1].1.meta.expires_at_ms = Some(1_000)),
            ("value longer than max_value_bytes", |d| {
                d.keys[0].1.value = Bytes::from(vec![0; 1024 * 1024 + 1]);
            }),
            ("more sessions than max_sessions", |d| d.limits.max_sessions = 1),
            ("sessions not in strictly increasing order", |d| d.sessions.swap(0, 1)),
            ("session indexes out of order", |d| d.sessions[1].1.last_active_index = 11),
            ("session indexes out of order", |d| d.sessions[1].1.last_active_index = 3),
            ("session response does not match its seq", |d| d.sessions[0].1.last_seq = 1),
            ("session response does not match its seq", |d| d.sessions[1].1.last_response = None),
            ("cached response over the size limit", |d| d.limits.max_session_response_bytes = 1),
            ("applied index or revision out of range", |d| d.revision = MAX_COUNTER + 1),
            ("applied index or revision out of range", |d| d.applied_index = u64::MAX),
        ];
        let mut zero_limit = valid();
        zero_limit.limits.max_txn_ops = 0;
        assert_eq!(
            decode(&encode_data(&zero_limit)).err(),
            Some(KvError::InvalidLimits("max_txn_ops"))
        );
        for (reason, corrupt) in corruptions {
            let mut data = valid();
            corrupt(&mut data);
            assert_eq!(decode(&encode_data(&data)).err(), Some(KvError::InvalidSnapshot(reason)));
        }
    }
}
