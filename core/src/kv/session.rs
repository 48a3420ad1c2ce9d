//! Client sessions: exactly-once writes over an at-least-once transport.
//!
//! A client that retries (because a leader crashed, a connection dropped, a deadline passed)
//! cannot know whether its earlier attempt was committed. Sessions let the state machine
//! recognise a retry and answer it with the first answer instead of applying it twice
//! (Raft dissertation §6.3).
//!
//! What a client must do:
//! 1. Register: propose `KvCommand::RegisterSession` (without a session tag) and keep the
//!    returned `client_id`. Ids are log indexes, so two registrations never share one.
//! 2. Tag every write with `SessionTag { client_id, seq }`, seq starting at 1 and strictly
//!    increasing, with **at most one outstanding request per session**: the table remembers only
//!    the last answer, so pipelining two requests would make the first one's retry "stale".
//! 3. Retry an unanswered request with the *same* seq (it may reach a new leader); the answer is
//!    the first one, whether the first attempt or the retry got applied.
//! 4. On `UnknownSession` (the session was evicted, least recently used first, because the
//!    table is full): the fate of the outstanding request is unknown. Register a *new* session;
//!    never reuse the old id. On `StaleRequest`: a newer request of this session was already
//!    applied — a client bug or a delayed duplicate; nothing was applied.
//!
//! The table is bounded by `KvLimits::max_sessions` and each cached answer by
//! `max_session_response_bytes`. Eviction order is a pure function of the log: the session
//! with the smallest last-active log index goes first (ties by client id, which cannot occur
//! as each entry touches one session, but the rule keeps the order total).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::SessionTag;
use super::response::KvResponse;
use crate::raft::LogIndex;

/// One client's session state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientSession {
    /// The seq of the last request applied for this client; 0 right after registration.
    pub(crate) last_seq: u64,
    /// The log index of the last entry that registered or used this session (the LRU key).
    pub(crate) last_active_index: LogIndex,
    /// The answer to `last_seq`; `None` exactly when `last_seq` is 0.
    pub(crate) last_response: Option<KvResponse>,
}

/// How a tagged request relates to its session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionCheck<'a> {
    /// No such session (never registered, or evicted): refuse.
    Unknown,
    /// Older than the last applied request: refuse.
    Stale { last_seq: u64 },
    /// A retry of the last applied request: answer from the cache.
    Duplicate(&'a KvResponse),
    /// A new request: apply it, then [`SessionTable::record`] its answer.
    New,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SessionTable {
    sessions: BTreeMap<u64, ClientSession>,
    /// `(last_active_index, client_id)` of every session: the first one is evicted next.
    by_last_active: BTreeSet<(LogIndex, u64)>,
}

impl SessionTable {
    /// Rebuilds a table from restored sessions; the LRU order is derived, not stored.
    pub(crate) fn from_parts(sessions: BTreeMap<u64, ClientSession>) -> Self {
        let by_last_active = sessions
            .iter()
            .map(|(client_id, session)| (session.last_active_index, *client_id))
            .collect();
        SessionTable { sessions, by_last_active }
    }

    pub(crate) fn sessions(&self) -> &BTreeMap<u64, ClientSession> {
        &self.sessions
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Opens session `client_id` at log index `index`, first evicting least recently used
    /// sessions until there is room for it under `max_sessions`. Returns the evicted ids.
    pub(crate) fn register(
        &mut self,
        client_id: u64,
        index: LogIndex,
        max_sessions: u64,
    ) -> Vec<u64> {
        assert!(max_sessions >= 1);
        let mut evicted = Vec::new();
        while self.sessions.len() as u64 >= max_sessions {
            let Some((_, victim)) = self.by_last_active.pop_first() else { break };
            let removed = self.sessions.remove(&victim);
            assert!(removed.is_some(), "LRU index names missing session {victim}");
            evicted.push(victim);
        }
        let session = ClientSession { last_seq: 0, last_active_index: index, last_response: None };
        let previous = self.sessions.insert(client_id, session);
        assert!(previous.is_none(), "session {client_id} registered twice");
        self.by_last_active.insert((index, client_id));
        self.check_sizes();
        evicted
    }

    pub(crate) fn check(&self, tag: SessionTag) -> SessionCheck<'_> {
        let Some(session) = self.sessions.get(&tag.client_id) else {
            return SessionCheck::Unknown;
        };
        if tag.seq > session.last_seq {
            return SessionCheck::New;
        }
        match &session.last_response {
            Some(response) if tag.seq == session.last_seq => SessionCheck::Duplicate(response),
            _ => SessionCheck::Stale { last_seq: session.last_seq },
        }
    }

    /// Marks the session used by the entry at `index` (a retry counts as use).
    pub(crate) fn touch(&mut self, client_id: u64, index: LogIndex) {
        let Some(session) = self.sessions.get_mut(&client_id) else {
            panic!("touch of unknown session {client_id}");
        };
        assert!(index > session.last_active_index, "log indexes only grow");
        let removed = self.by_last_active.remove(&(session.last_active_index, client_id));
        assert!(removed, "LRU index out of date for session {client_id}");
        session.last_active_index = index;
        self.by_last_active.insert((index, client_id));
    }

    /// Stores the answer to a [`SessionCheck::New`] request applied at `index`.
    pub(crate) fn record(&mut self, tag: SessionTag, index: LogIndex, response: KvResponse) {
        self.touch(tag.client_id, index);
        let Some(session) = self.sessions.get_mut(&tag.client_id) else {
            panic!("record for unknown session {}", tag.client_id);
        };
        assert!(tag.seq > session.last_seq, "only new requests are recorded");
        session.last_seq = tag.seq;
        session.last_response = Some(response);
    }

    fn check_sizes(&self) {
        assert_eq!(self.sessions.len(), self.by_last_active.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(revision: u64) -> KvResponse {
        KvResponse::Put { revision, prev: None }
    }

    #[test]
    fn kv_session_check_distinguishes_new_duplicate_stale_unknown() {
        let mut table = SessionTable::default();
        table.register(1, 1, 10);
        assert_eq!(table.check(SessionTag { client_id: 2, seq: 1 }), SessionCheck::Unknown);
        // Right after registration nothing is cached: seq 0 is stale, seq 1 is new.
        assert_eq!(
            table.check(SessionTag { client_id: 1, seq: 0 }),
            SessionCheck::Stale { last_seq: 0 }
        );
        assert_eq!(table.check(SessionTag { client_id: 1, seq: 1 }), SessionCheck::New);
        table.record(SessionTag { client_id: 1, seq: 1 }, 2, answer(7));
        assert_eq!(
            table.check(SessionTag { client_id: 1, seq: 1 }),
            SessionCheck::Duplicate(&answer(7))
        );
        assert_eq!(table.check(SessionTag { client_id: 1, seq: 5 }), SessionCheck::New);
        table.record(SessionTag { client_id: 1, seq: 5 }, 3, answer(8));
        assert_eq!(
            table.check(SessionTag { client_id: 1, seq: 4 }),
            SessionCheck::Stale { last_seq: 5 }
        );
    }

    #[test]
    fn kv_session_eviction_is_least_recently_active_first() {
        let mut table = SessionTable::default();
        assert!(table.register(10, 10, 3).is_empty());
        assert!(table.register(11, 11, 3).is_empty());
        assert!(table.register(12, 12, 3).is_empty());
        // Using session 10 makes 11 the least recently active.
        table.record(SessionTag { client_id: 10, seq: 1 }, 13, answer(1));
        assert_eq!(table.register(14, 14, 3), vec![11]);
        assert_eq!(table.register(15, 15, 3), vec![12]);
        assert_eq!(table.register(16, 16, 3), vec![10]);
        assert_eq!(table.sessions().keys().copied().collect::<Vec<_>>(), vec![14, 15, 16]);
    }

    #[test]
    fn kv_session_rebuilt_table_evicts_like_the_original() {
        let mut table = SessionTable::default();
        for id in 1..=4 {
            table.register(id, id, 4);
        }
        table.touch(2, 5);
        table.touch(1, 6);
        let mut rebuilt = SessionTable::from_parts(table.sessions().clone());
        assert_eq!(rebuilt, table);
        assert_eq!(rebuilt.register(7, 7, 4), table.register(7, 7, 4));
        assert_eq!(rebuilt.register(8, 8, 4), vec![4]);
    }
}
