//! The key space: keys, values, per-key revisions, the global revision and the TTL index.
//! It knows nothing of requests, conditions or sessions (see `state_machine.rs`); it offers the
//! primitive changes and keeps its two maps consistent.
//!
//! Revisions: a write request runs all its changes at `revision() + 1` (a transaction is one
//! revision, like etcd) and the caller then commits that revision with
//! [`Keyspace::commit_revision`] — but only if something changed, so a delete of an absent key
//! or an empty clear leaves the revision where it was.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::event::{KvEvent, KvEventKind};
use super::expiry::ExpiryIndex;
use super::response::{KeyMeta, KeyValue};

/// A stored key's value and bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub(crate) value: Bytes,
    pub(crate) meta: KeyMeta,
}

impl KeyRecord {
    /// A key is visible until the state machine's clock reaches its deadline.
    pub(crate) fn is_live(&self, now_ms: u64) -> bool {
        self.meta.expires_at_ms.is_none_or(|deadline_ms| deadline_ms > now_ms)
    }

    fn to_key_value(&self, key: &str) -> KeyValue {
        KeyValue { key: key.to_owned(), value: self.value.clone(), meta: self.meta }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Keyspace {
    records: BTreeMap<String, KeyRecord>,
    expiry: ExpiryIndex,
    revision: u64,
}

impl Keyspace {
    /// Rebuilds a key space from restored parts; the TTL index is derived, not stored.
    pub(crate) fn from_parts(records: BTreeMap<String, KeyRecord>, revision: u64) -> Self {
        let mut expiry = ExpiryIndex::default();
        for (key, record) in &records {
            if let Some(deadline_ms) = record.meta.expires_at_ms {
                expiry.insert(deadline_ms, key);
            }
        }
        Keyspace { records, expiry, revision }
    }

    pub(crate) fn records(&self) -> &BTreeMap<String, KeyRecord> {
        &self.records
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The revision every change of the write request being applied carries.
    pub(crate) fn pending_revision(&self) -> u64 {
        // Cannot overflow: restore rejects revisions near u64::MAX and one write adds one.
        self.revision + 1
    }

    /// Makes the changes made at `revision` (= `pending_revision()`) the current state.
    pub(crate) fn commit_revision(&mut self, revision: u64) {
        assert_eq!(revision, self.revision + 1, "revisions advance one per write");
        self.revision = revision;
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.expiry.next_deadline_ms()
    }

    /// The key's record if it exists and is live at `now_ms`.
    pub(crate) fn lookup(&self, key: &str, now_ms: u64) -> Option<&KeyRecord> {
        self.records.get(key).filter(|record| record.is_live(now_ms))
    }

    pub(crate) fn key_value(&self, key: &str, now_ms: u64) -> Option<KeyValue> {
        self.lookup(key, now_ms).map(|record| record.to_key_value(key))
    }

    /// Up to `limit` live keys starting with `prefix`, in key order, strictly after
    /// `start_after` if given; `more` tells whether further matching keys exist.
    pub(crate) fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> (Vec<KeyValue>, bool) {
        // Keys sharing a prefix are contiguous in key order and start at `prefix` itself.
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut kvs = Vec::new();
        for (key, record) in self.records.range::<str, _>((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if !record.is_live(now_ms) {
                continue;
            }
            if kvs.len() == limit {
                return (kvs, true);
            }
            kvs.push(record.to_key_value(key));
        }
        (kvs, false)
    }

    /// Writes `key`, returning its previous bookkeeping (`None`: created).
    pub(crate) fn put(
        &mut self,
        key: &str,
        value: Bytes,
        expires_at_ms: Option<u64>,
        revision: u64,
        events: &mut Vec<KvEvent>,
    ) -> Option<KeyMeta> {
        assert_eq!(revision, self.pending_revision());
        assert!(!key.is_empty());
        events.push(KvEvent {
            key: key.to_owned(),
            kind: KvEventKind::Put,
            value: value.clone(),
            mod_revision: revision,
        });
        // One search of the map: an existing key (the common case under load) is updated in
        // place, and only a new key allocates its owned copy.
        let prev = match self.records.get_mut(key) {
            Some(record) => {
                let prev = record.meta;
                record.value = value;
                record.meta = KeyMeta {
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                    version: prev.version.saturating_add(1),
                    expires_at_ms,
                };
                Some(prev)
            }
            None => {
                let meta = KeyMeta {
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                    expires_at_ms,
                };
                self.records.insert(key.to_owned(), KeyRecord { value, meta });
                None
            }
        };
        let old_deadline_ms = prev.and_then(|meta| meta.expires_at_ms);
        if old_deadline_ms != expires_at_ms {
            if let Some(deadline_ms) = old_deadline_ms {
                self.expiry.remove(deadline_ms, key);
            }
            if let Some(deadline_ms) = expires_at_ms {
                self.expiry.insert(deadline_ms, key);
            }
        }
        prev
    }

    /// Removes `key` if present, returning what it was.
    pub(crate) fn delete(
        &mut self,
        key: &str,
        revision: u64,
        kind: KvEventKind,
        events: &mut Vec<KvEvent>,
    ) -> Option<KeyValue> {
        assert_eq!(revision, self.pending_revision());
        let (key, record) = self.records.remove_entry(key)?;
        if let Some(deadline_ms) = record.meta.expires_at_ms {
            self.expiry.remove(deadline_ms, &key);
        }
        events.push(KvEvent {
            key: key.clone(),
            kind,
            value: record.value.clone(),
            mod_revision: revision,
        });
        Some(KeyValue { key, value: record.value, meta: record.meta })
    }

    /// Removes every key that starts with `prefix`, returning how many there were (an empty
    /// prefix removes every key, as [`Self::clear`] does).
    pub(crate) fn delete_prefix(
        &mut self,
        prefix: &str,
        revision: u64,
        events: &mut Vec<KvEvent>,
    ) -> u64 {
        let doomed: Vec<String> = self
            .records
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(key, _)| key)
            .take_while(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        for key in &doomed {
            let deleted = self.delete(key, revision, KvEventKind::Delete, events);
            assert!(deleted.is_some(), "{key:?} was listed under the prefix");
        }
        doomed.len() as u64
    }

    /// Removes every key, returning how many there were.
    pub(crate) fn clear(&mut self, revision: u64, events: &mut Vec<KvEvent>) -> u64 {
        assert_eq!(revision, self.pending_revision());
        let records = std::mem::take(&mut self.records);
        self.expiry = ExpiryIndex::default();
        let deleted_keys = records.len() as u64;
        events.extend(records.into_iter().map(|(key, record)| KvEvent {
            key,
            kind: KvEventKind::Delete,
            value: record.value,
            mod_revision: revision,
        }));
        deleted_keys
    }

    /// Removes every key whose deadline is at or before `now_ms`, returning how many.
    pub(crate) fn expire_due(
        &mut self,
        now_ms: u64,
        revision: u64,
        events: &mut Vec<KvEvent>,
    ) -> u64 {
        assert_eq!(revision, self.pending_revision());
        let mut expired_keys = 0;
        while let Some((deadline_ms, key)) = self.expiry.pop_due(now_ms) {
            let record = self.records.remove(&key);
            let record = record.unwrap_or_else(|| panic!("TTL index names missing key {key:?}"));
            assert_eq!(record.meta.expires_at_ms, Some(deadline_ms), "TTL index out of date");
            events.push(KvEvent {
                key,
                kind: KvEventKind::Expire,
                value: record.value,
                mod_revision: revision,
            });
            expired_keys += 1;
        }
        assert!(self.expiry.next_deadline_ms().is_none_or(|deadline_ms| deadline_ms > now_ms));
        expired_keys
    }

    /// Cross-checks the two maps (used by tests and after a restore).
    pub(crate) fn check_invariants(&self) {
        let with_ttl = self.records.values().filter(|r| r.meta.expires_at_ms.is_some()).count();
        assert_eq!(with_ttl, self.expiry.len(), "TTL index and key space disagree");
        for record in self.records.values() {
            let meta = record.meta;
            assert!(meta.create_revision >= 1 && meta.create_revision <= meta.mod_revision);
            assert!(meta.mod_revision <= self.revision && meta.version >= 1);
        }
    }
}
