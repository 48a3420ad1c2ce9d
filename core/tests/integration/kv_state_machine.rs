//! Scenario tests of the KV state machine: each command's semantics, conditions, transactions,
//! revisions, TTL by leader time, sessions, limits and snapshots.

use bytes::Bytes;
use conclave_core::kv::{
    ApplyResult, Compare, CompareOp, CompareTarget, Condition, KeyMeta, KvCommand, KvError,
    KvEvent, KvEventKind, KvLimits, KvRequest, KvResponse, KvStateMachine, RequestError,
    SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_WITH_SHARD_MAP, SessionTag, Txn, TxnOp, TxnOpResult,
};
use conclave_core::raft::NodeId;
use conclave_core::shard::{ShardMap, SlotCount};

/// Drives a state machine the way a node would: consecutive log indexes, a leader clock.
struct Harness {
    sm: KvStateMachine,
    index: u64,
    leader_time_ms: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with_limits(KvLimits::default())
    }

    fn with_limits(limits: KvLimits) -> Self {
        Harness {
            sm: KvStateMachine::new(limits).expect("valid limits"),
            index: 0,
            leader_time_ms: 1_000,
        }
    }

    fn apply(&mut self, session: Option<SessionTag>, command: KvCommand) -> ApplyResult {
        self.index += 1;
        let request = KvRequest { session, leader_time_ms: self.leader_time_ms, command };
        let result = self.sm.apply(self.index, &request);
        self.sm.check_invariants();
        assert_eq!(self.sm.applied_index(), self.index);
        result
    }

    fn run(&mut self, command: KvCommand) -> KvResponse {
        self.apply(None, command).response
    }

    fn put(&mut self, key: &str, value: &str) -> KvResponse {
        self.run(put(key, value))
    }

    fn value(&self, key: &str) -> Option<Bytes> {
        self.sm.get(key).map(|(value, _)| value)
    }

    fn meta(&self, key: &str) -> KeyMeta {
        self.sm.get(key).expect("key exists").1
    }
}

fn bytes(value: &str) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: bytes(value),
        ttl_ms: None,
        condition: Condition::Always,
    }
}

fn put_if(key: &str, value: &str, condition: Condition) -> KvCommand {
    KvCommand::Put { key: key.into(), value: bytes(value), ttl_ms: None, condition }
}

fn put_ttl(key: &str, value: &str, ttl_ms: u64) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: bytes(value),
        ttl_ms: Some(ttl_ms),
        condition: Condition::Always,
    }
}

fn delete(key: &str) -> KvCommand {
    KvCommand::Delete { key: key.into(), condition: Condition::Always }
}

fn keys_of(kvs: &[conclave_core::kv::KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

// ----- basic commands and revisions -----

#[test]
fn put_then_get_keeps_keys_and_values_exactly() {
    let mut h = Harness::new();
    let value = Bytes::from_static(b"  trailing spaces\n\0\xff  ");
    let key = "a:b.c d/🦀";
    let response = h.run(KvCommand::Put {
        key: key.into(),
        value: value.clone(),
        ttl_ms: None,
        condition: Condition::Always,
    });
    assert_eq!(response, KvResponse::Put { revision: 1, prev: None });
    assert_eq!(h.value(key), Some(value));
    assert_eq!(h.value("a:b.c d/"), None);
    // An empty value is a value (the HTTP layer decides whether to allow it).
    h.put("empty", "");
    assert_eq!(h.value("empty"), Some(Bytes::new()));
}

#[test]
fn revisions_follow_etcd_rules() {
    let mut h = Harness::new();
    assert_eq!(h.put("a", "1"), KvResponse::Put { revision: 1, prev: None });
    assert_eq!(h.put("b", "1"), KvResponse::Put { revision: 2, prev: None });
    let first = KeyMeta { create_revision: 1, mod_revision: 1, version: 1, expires_at_ms: None };
    assert_eq!(h.put("a", "2"), KvResponse::Put { revision: 3, prev: Some(first) });
    assert_eq!(
        h.meta("a"),
        KeyMeta { create_revision: 1, mod_revision: 3, version: 2, expires_at_ms: None }
    );
    assert_eq!(h.sm.revision(), 3);
    // Deleting and re-creating starts a new life: new create revision, version 1.
    h.run(delete("a"));
    assert_eq!(h.sm.revision(), 4);
    h.put("a", "3");
    assert_eq!(
        h.meta("a"),
        KeyMeta { create_revision: 5, mod_revision: 5, version: 1, expires_at_ms: None }
    );
}

#[test]
fn delete_returns_the_previous_value_and_missing_keys_change_nothing() {
    let mut h = Harness::new();
    h.put("k", "v");
    let ApplyResult { response, events } = h.apply(None, delete("k"));
    let KvResponse::Delete { revision: 2, prev: Some(prev) } = response else {
        panic!("unexpected {response:?}")
    };
    assert_eq!((prev.key.as_str(), prev.value.clone()), ("k", bytes("v")));
    assert_eq!(
        events,
        vec![KvEvent {
            key: "k".into(),
            kind: KvEventKind::Delete,
            value: bytes("v"),
            mod_revision: 2
        }]
    );
    let ApplyResult { response, events } = h.apply(None, delete("k"));
    assert_eq!(response, KvResponse::Delete { revision: 2, prev: None });
    assert!(events.is_empty());
}

#[test]
fn clear_removes_everything_at_one_revision() {
    let mut h = Harness::new();
    assert_eq!(h.run(KvCommand::Clear), KvResponse::Clear { revision: 0, deleted_keys: 0 });
    h.put("b", "2");
    h.put("a", "1");
    h.run(put_ttl("c", "3", 10_000));
    let ApplyResult { response, events } = h.apply(None, KvCommand::Clear);
    assert_eq!(response, KvResponse::Clear { revision: 4, deleted_keys: 3 });
    assert_eq!(keys_of_events(&events), vec!["a", "b", "c"]);
    assert!(events.iter().all(|e| e.kind == KvEventKind::Delete && e.mod_revision == 4));
    assert_eq!(h.sm.key_count(), 0);
    assert_eq!(h.sm.next_expiry_ms(), None, "TTL index cleared too");
}

#[test]
fn a_prefix_delete_removes_exactly_the_keys_under_it_at_one_revision() {
    let mut h = Harness::new();
    let under = |prefix: &str| KvCommand::DeletePrefix { prefix: prefix.into() };
    for key in ["app/a", "app/b", "apple", "ap", "b"] {
        h.put(key, "v");
    }
    h.run(put_ttl("app/c", "3", 10_000));
    let ApplyResult { response, events } = h.apply(None, under("app/"));
    assert_eq!(response, KvResponse::Clear { revision: 7, deleted_keys: 3 });
    assert_eq!(keys_of_events(&events), vec!["app/a", "app/b", "app/c"]);
    assert!(events.iter().all(|e| e.kind == KvEventKind::Delete && e.mod_revision == 7));
    assert_eq!(h.sm.next_expiry_ms(), None, "the TTL index lost the deleted key");
    // Nothing under the prefix: no revision spent.
    assert_eq!(h.run(under("app/")), KvResponse::Clear { revision: 7, deleted_keys: 0 });
    assert_eq!(h.run(under("ap")), KvResponse::Clear { revision: 8, deleted_keys: 2 });
    assert_eq!(h.sm.key_count(), 1, "only \"b\" is left");
    assert_eq!(h.run(under("")), KvResponse::Clear { revision: 9, deleted_keys: 1 });
}

fn keys_of_events(events: &[KvEvent]) -> Vec<&str> {
    events.iter().map(|event| event.key.as_str()).collect()
}

#[test]
fn reads_through_the_log_change_nothing() {
    let mut h = Harness::new();
    h.put("k", "v");
    let digest = h.sm.state_digest();
    let ApplyResult { response, events } = h.apply(None, KvCommand::Get { key: "k".into() });
    let KvResponse::Get { kv: Some(kv), revision: 1 } = response else { panic!() };
    assert_eq!(kv.value, bytes("v"));
    assert!(events.is_empty());
    let response = h.run(KvCommand::Range { prefix: String::new(), start_after: None, limit: 0 });
    assert!(
        matches!(response, KvResponse::Range { ref kvs, more: false, revision: 1 } if kvs.len() == 1)
    );
    assert_eq!(h.sm.revision(), 1);
    // Only the applied index moved.
    assert_ne!(h.sm.state_digest(), digest);
    assert!(!KvCommand::Get { key: "k".into() }.is_write());
    assert!(put("k", "v").is_write());
}

#[test]
fn range_by_prefix_with_limit_and_pagination() {
    let mut h = Harness::new();
    for key in ["a", "app", "apple", "apply", "b", "ap"] {
        h.put(key, key);
    }
    let (kvs, more) = h.sm.range("ap", 10);
    assert_eq!((keys_of(&kvs), more), (vec!["ap", "app", "apple", "apply"], false));
    let (kvs, more) = h.sm.range("ap", 2);
    assert_eq!((keys_of(&kvs), more), (vec!["ap", "app"], true));
    let (kvs, more) = h.sm.range_after("ap", Some("app"), 2);
    assert_eq!((keys_of(&kvs), more), (vec!["apple", "apply"], false));
    // A page boundary before the prefix starts at the prefix; one past it yields nothing.
    let (kvs, _) = h.sm.range_after("ap", Some("a"), 10);
    assert_eq!(kvs.len(), 4);
    let (kvs, more) = h.sm.range_after("ap", Some("b"), 10);
    assert_eq!((kvs.len(), more), (0, false));
    // Exactly `limit` matches: no more.
    let (kvs, more) = h.sm.range("app", 3);
    assert_eq!((kvs.len(), more), (3, false));
    let (kvs, more) = h.sm.range("", 0);
    assert_eq!((kvs.len(), more), (6, false));
    let (kvs, more) = h.sm.range("zzz", 5);
    assert_eq!((kvs.len(), more), (0, false));
}

#[test]
fn range_limit_zero_and_oversized_limits_mean_the_maximum() {
    let limits = KvLimits { max_range_limit: 3, ..KvLimits::default() };
    let mut h = Harness::with_limits(limits);
    for key in ["a", "b", "c", "d"] {
        h.put(key, key);
    }
    assert_eq!(h.sm.range("", 0), h.sm.range("", 3));
    assert_eq!(h.sm.range("", 1000).0.len(), 3);
    let response = h.run(KvCommand::Range { prefix: String::new(), start_after: None, limit: 0 });
    assert!(matches!(response, KvResponse::Range { ref kvs, more: true, .. } if kvs.len() == 3));
    // The maximum itself is a valid limit; one more is refused.
    let response = h.run(KvCommand::Range { prefix: String::new(), start_after: None, limit: 3 });
    assert!(matches!(response, KvResponse::Range { ref kvs, more: true, .. } if kvs.len() == 3));
    let response = h.run(KvCommand::Range { prefix: String::new(), start_after: None, limit: 4 });
    assert_eq!(
        response,
        KvResponse::Error(RequestError::RangeLimitTooLarge { limit: 4, max_limit: 3 })
    );
}

// ----- conditions and CAS -----

#[test]
fn create_only_put_fails_on_an_existing_key_with_its_etag() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(put_if("k", "first", Condition::Absent)),
        KvResponse::Put { revision: 1, prev: None }
    );
    h.put("other", "x");
    let response = h.run(put_if("k", "second", Condition::Absent));
    assert_eq!(
        response,
        KvResponse::ConditionFailed {
            revision: 2,
            current: Some(KeyMeta {
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                expires_at_ms: None
            }),
        }
    );
    assert_eq!(h.value("k"), Some(bytes("first")));
    assert_eq!(h.sm.revision(), 2, "a failed condition does not bump the revision");
}

#[test]
fn if_match_etag_put_and_delete() {
    let mut h = Harness::new();
    h.put("k", "v1"); // revision 1
    h.put("x", "y"); // revision 2
    let stale = h.run(put_if("k", "v2", Condition::ModRevisionEquals(2)));
    assert!(
        matches!(stale, KvResponse::ConditionFailed { revision: 2, current: Some(m) } if m.mod_revision == 1)
    );
    let ok = h.run(put_if("k", "v2", Condition::ModRevisionEquals(1)));
    assert_eq!(
        ok,
        KvResponse::Put {
            revision: 3,
            prev: Some(KeyMeta {
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                expires_at_ms: None
            })
        }
    );
    let delete_stale =
        h.run(KvCommand::Delete { key: "k".into(), condition: Condition::ModRevisionEquals(1) });
    assert!(matches!(delete_stale, KvResponse::ConditionFailed { .. }));
    assert_eq!(h.value("k"), Some(bytes("v2")));
    let delete_ok =
        h.run(KvCommand::Delete { key: "k".into(), condition: Condition::ModRevisionEquals(3) });
    assert!(matches!(delete_ok, KvResponse::Delete { revision: 4, prev: Some(_) }));
    // If-Match on a missing key fails with no current meta (412, not 404).
    let missing = h.run(put_if("k", "v3", Condition::ModRevisionEquals(3)));
    assert_eq!(missing, KvResponse::ConditionFailed { revision: 4, current: None });
    let present = h.run(put_if("k", "v3", Condition::Present));
    assert_eq!(present, KvResponse::ConditionFailed { revision: 4, current: None });
}

#[test]
fn put_and_delete_guarded_by_value() {
    let mut h = Harness::new();
    h.put("k", "old");
    let wrong = h.run(put_if("k", "new", Condition::ValueEquals(bytes("nope"))));
    assert!(matches!(wrong, KvResponse::ConditionFailed { .. }));
    let right = h.run(put_if("k", "new", Condition::ValueEquals(bytes("old"))));
    assert!(matches!(right, KvResponse::Put { revision: 2, .. }));
    let delete =
        KvCommand::Delete { key: "k".into(), condition: Condition::ValueEquals(bytes("new")) };
    assert!(matches!(h.run(delete), KvResponse::Delete { prev: Some(_), .. }));
}

#[test]
fn cas_swaps_only_on_the_expected_value() {
    let mut h = Harness::new();
    let cas = |expected: Option<&str>, value: &str| KvCommand::Cas {
        key: "k".into(),
        expected: expected.map(bytes),
        value: bytes(value),
        ttl_ms: None,
    };
    assert_eq!(h.run(cas(None, "a")), KvResponse::Put { revision: 1, prev: None });
    assert!(matches!(
        h.run(cas(None, "b")),
        KvResponse::ConditionFailed { revision: 1, current: Some(_) }
    ));
    assert!(matches!(h.run(cas(Some("x"), "b")), KvResponse::ConditionFailed { .. }));
    assert!(matches!(h.run(cas(Some("a"), "b")), KvResponse::Put { revision: 2, prev: Some(_) }));
    assert_eq!(h.value("k"), Some(bytes("b")));
    h.run(delete("k"));
    assert_eq!(
        h.run(cas(Some("b"), "c")),
        KvResponse::ConditionFailed { revision: 3, current: None }
    );
}

// ----- transactions -----

fn txn(compares: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> KvCommand {
    KvCommand::Txn(Txn { compares, success, failure })
}

fn txn_put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put { key: key.into(), value: bytes(value), ttl_ms: None }
}

fn txn_get(key: &str) -> TxnOp {
    TxnOp::Get { key: key.into() }
}

#[test]
fn txn_success_branch_runs_in_order_at_one_revision() {
    let mut h = Harness::new();
    h.put("balance", "10");
    let compares = vec![
        Compare {
            key: "balance".into(),
            target: CompareTarget::Value(CompareOp::Equal, bytes("10")),
        },
        Compare { key: "lock".into(), target: CompareTarget::Exists(false) },
    ];
    let success = vec![
        txn_put("balance", "7"),
        txn_put("log", "-3"),
        txn_get("balance"),
        TxnOp::Delete { key: "missing".into() },
        TxnOp::Range { prefix: String::new(), start_after: None, limit: 0 },
    ];
    let ApplyResult { response, events } =
        h.apply(None, txn(compares, success, vec![txn_put("failed", "1")]));
    let KvResponse::Txn { succeeded: true, results, revision: 2 } = response else {
        panic!("unexpected {response:?}")
    };
    assert_eq!(results.len(), 5);
    assert!(matches!(&results[0], TxnOpResult::Put { prev: Some(m) } if m.version == 1));
    assert_eq!(results[1], TxnOpResult::Put { prev: None });
    // The get sees the put made earlier in the same transaction, at the transaction's revision.
    let TxnOpResult::Get { kv: Some(kv) } = &results[2] else { panic!() };
    assert_eq!((kv.value.clone(), kv.meta.mod_revision, kv.meta.version), (bytes("7"), 2, 2));
    assert_eq!(results[3], TxnOpResult::Delete { prev: None });
    let TxnOpResult::Range { kvs, more: false } = &results[4] else { panic!() };
    assert_eq!(keys_of(kvs), vec!["balance", "log"]);
    assert!(events.iter().all(|event| event.mod_revision == 2));
    assert_eq!(keys_of_events(&events), vec!["balance", "log"]);
    assert_eq!(h.value("failed"), None);
    assert_eq!(h.sm.revision(), 2);
}

#[test]
fn txn_failure_branch_runs_when_any_compare_fails() {
    let mut h = Harness::new();
    h.put("k", "v");
    let compares = vec![
        Compare { key: "k".into(), target: CompareTarget::Version(CompareOp::Equal, 1) },
        Compare { key: "k".into(), target: CompareTarget::ModRevision(CompareOp::Greater, 1) },
    ];
    let response = h.run(txn(compares, vec![txn_put("s", "1")], vec![txn_get("k")]));
    let KvResponse::Txn { succeeded: false, results, revision: 1 } = response else { panic!() };
    assert!(matches!(&results[..], [TxnOpResult::Get { kv: Some(kv) }] if kv.value == bytes("v")));
    assert_eq!(h.value("s"), None);
    assert_eq!(h.sm.revision(), 1, "a read-only branch does not bump the revision");
}

#[test]
fn txn_compares_on_absent_keys() {
    let mut h = Harness::new();
    let on_absent =
        |target| txn(vec![Compare { key: "nope".into(), target }], vec![txn_get("nope")], vec![]);
    let succeeded = |response: KvResponse| match response {
        KvResponse::Txn { succeeded, .. } => succeeded,
        other => panic!("unexpected {other:?}"),
    };
    assert!(succeeded(h.run(on_absent(CompareTarget::CreateRevision(CompareOp::Equal, 0)))));
    assert!(succeeded(h.run(on_absent(CompareTarget::Version(CompareOp::Less, 1)))));
    assert!(!succeeded(h.run(on_absent(CompareTarget::Value(CompareOp::NotEqual, bytes("x"))))));
    assert!(succeeded(h.run(on_absent(CompareTarget::Exists(false)))));
}

#[test]
fn invalid_txn_applies_nothing() {
    let limits = KvLimits { max_value_bytes: 4, ..KvLimits::default() };
    let mut h = Harness::with_limits(limits);
    let digest_before = h.sm.state_digest();
    let command =
        txn(vec![], vec![txn_put("a", "ok"), txn_put("b", "too long"), txn_put("c", "ok")], vec![]);
    let ApplyResult { response, events } = h.apply(None, command);
    assert_eq!(
        response,
        KvResponse::Error(RequestError::ValueTooLarge { size_bytes: 8, max_bytes: 4 })
    );
    assert!(events.is_empty());
    assert_eq!((h.value("a"), h.value("c"), h.sm.revision()), (None, None, 0));
    assert_ne!(h.sm.state_digest(), digest_before, "only the applied index moved");
}

// ----- TTL -----

#[test]
fn ttl_expires_by_leader_time_with_an_expire_tick() {
    let mut h = Harness::new();
    h.leader_time_ms = 10_000;
    h.run(put_ttl("session", "alive", 500));
    h.put("forever", "1");
    assert_eq!(h.meta("session").expires_at_ms, Some(10_500));
    assert_eq!(h.sm.next_expiry_ms(), Some(10_500));
    h.leader_time_ms = 10_499;
    h.run(KvCommand::ExpireTick);
    assert_eq!(h.value("session"), Some(bytes("alive")));
    h.leader_time_ms = 10_500;
    let ApplyResult { response, events } = h.apply(None, KvCommand::ExpireTick);
    assert_eq!(response, KvResponse::ExpireTick { revision: 3 });
    assert_eq!(
        events,
        vec![KvEvent {
            key: "session".into(),
            kind: KvEventKind::Expire,
            value: bytes("alive"),
            mod_revision: 3
        }]
    );
    assert_eq!(h.value("session"), None);
    assert_eq!(h.value("forever"), Some(bytes("1")));
    assert_eq!(h.sm.next_expiry_ms(), None);
}

#[test]
fn expiry_happens_before_the_request_at_its_own_revision() {
    let mut h = Harness::new();
    h.leader_time_ms = 0;
    h.run(put_ttl("a", "1", 100));
    h.run(put_ttl("b", "2", 100));
    h.run(put_ttl("c", "3", 300));
    h.leader_time_ms = 200;
    // The create-only put sees "a" already gone.
    let ApplyResult { response, events } = h.apply(None, put_if("a", "new", Condition::Absent));
    assert_eq!(response, KvResponse::Put { revision: 5, prev: None });
    let summary: Vec<_> = events.iter().map(|e| (e.key.as_str(), e.kind, e.mod_revision)).collect();
    assert_eq!(
        summary,
        vec![
            ("a", KvEventKind::Expire, 4),
            ("b", KvEventKind::Expire, 4),
            ("a", KvEventKind::Put, 5)
        ]
    );
    assert_eq!(h.sm.next_expiry_ms(), Some(300));
}

#[test]
fn reads_use_state_machine_time_not_wall_time() {
    let mut h = Harness::new();
    h.leader_time_ms = 1_000;
    h.run(put_ttl("k", "v", 10));
    // No entry has been applied since: whatever any wall clock says, "k" is visible on every
    // node until the leader proposes something stamped at or after its deadline.
    assert_eq!(h.sm.clock_ms(), 1_000);
    assert_eq!(h.value("k"), Some(bytes("v")));
    assert_eq!(h.sm.range("", 0).0.len(), 1);
}

#[test]
fn a_leader_whose_clock_is_behind_does_not_move_time_backwards() {
    let mut h = Harness::new();
    h.leader_time_ms = 10_000;
    h.run(put_ttl("old", "1", 500)); // deadline 10_500
    h.leader_time_ms = 10_400;
    h.run(KvCommand::ExpireTick);
    // A new leader whose clock is 5 s behind.
    h.leader_time_ms = 5_400;
    h.run(put_ttl("new", "2", 1_000));
    assert_eq!(h.sm.clock_ms(), 10_400, "the clock is the largest stamp seen");
    // The TTL counts from the state machine's clock, so it is not born half-spent.
    assert_eq!(h.meta("new").expires_at_ms, Some(11_400));
    assert_eq!(h.value("old"), Some(bytes("1")));
    // Its stamps never catch up with the deadline of "old"...
    h.leader_time_ms = 6_000;
    h.run(KvCommand::ExpireTick);
    assert_eq!(h.value("old"), Some(bytes("1")));
    // ... until a stamp passes it.
    h.leader_time_ms = 10_500;
    h.run(KvCommand::ExpireTick);
    assert_eq!(h.value("old"), None);
    // Once expired, a key stays expired whatever later stamps say.
    h.leader_time_ms = 1;
    h.run(KvCommand::ExpireTick);
    assert_eq!(h.value("old"), None);
    assert_eq!(h.value("new"), Some(bytes("2")));
}

#[test]
fn a_later_put_replaces_or_clears_the_ttl() {
    let mut h = Harness::new();
    h.leader_time_ms = 0;
    h.run(put_ttl("k", "1", 100));
    h.run(put_ttl("k", "2", 1_000));
    h.leader_time_ms = 500;
    h.run(KvCommand::ExpireTick);
    assert_eq!(h.value("k"), Some(bytes("2")), "the old deadline no longer applies");
    h.put("k", "3");
    assert_eq!(h.meta("k").expires_at_ms, None);
    assert_eq!(h.sm.next_expiry_ms(), None);
    h.leader_time_ms = 5_000;
    h.run(KvCommand::ExpireTick);
    assert_eq!(h.value("k"), Some(bytes("3")));
}

#[test]
fn ttl_near_the_end_of_time_saturates() {
    let mut h = Harness::new();
    h.leader_time_ms = u64::MAX - 10;
    h.run(put_ttl("k", "v", u64::MAX));
    assert_eq!(h.meta("k").expires_at_ms, Some(u64::MAX));
    let restored = KvStateMachine::restore(&h.sm.snapshot()).unwrap();
    assert_eq!(restored, h.sm);
}

// ----- sessions -----

fn register(h: &mut Harness) -> u64 {
    match h.run(KvCommand::RegisterSession) {
        KvResponse::SessionRegistered { client_id } => client_id,
        other => panic!("unexpected {other:?}"),
    }
}

fn tag(client_id: u64, seq: u64) -> Option<SessionTag> {
    Some(SessionTag { client_id, seq })
}

#[test]
fn a_retried_request_returns_the_first_answer_without_reapplying() {
    let mut h = Harness::new();
    let client = register(&mut h);
    assert_eq!(client, 1, "the session id is the registering entry's index");
    let first = h.apply(tag(client, 1), put_if("k", "mine", Condition::Absent));
    assert_eq!(first.response, KvResponse::Put { revision: 1, prev: None });
    h.put("k", "someone else's");
    // The retry would now fail its condition if applied again; it gets the first answer.
    let retry = h.apply(tag(client, 1), put_if("k", "mine", Condition::Absent));
    assert_eq!(retry.response, first.response);
    assert!(retry.events.is_empty());
    assert_eq!(h.value("k"), Some(bytes("someone else's")));
    assert_eq!(h.sm.revision(), 2);
    // The next seq is applied normally.
    let next = h.apply(tag(client, 2), delete("k"));
    assert!(matches!(next.response, KvResponse::Delete { revision: 3, prev: Some(_) }));
}

#[test]
fn stale_unknown_and_zero_seq_requests_are_refused_without_effect() {
    let mut h = Harness::new();
    let client = register(&mut h);
    h.apply(tag(client, 1), put("a", "1"));
    h.apply(tag(client, 3), put("a", "3")); // gaps are allowed
    let stale = h.apply(tag(client, 2), put("a", "2"));
    assert_eq!(
        stale.response,
        KvResponse::Error(RequestError::StaleRequest { client_id: client, seq: 2, last_seq: 3 })
    );
    let unknown = h.apply(tag(999, 1), put("a", "x"));
    assert_eq!(
        unknown.response,
        KvResponse::Error(RequestError::UnknownSession { client_id: 999 })
    );
    let zero = KvRequest { session: tag(client, 0), leader_time_ms: 0, command: put("a", "0") };
    assert_eq!(h.sm.validate(&zero), Err(RequestError::ZeroSeq));
    assert_eq!(h.run_request(zero), KvResponse::Error(RequestError::ZeroSeq));
    assert_eq!(h.value("a"), Some(bytes("3")));
    assert_eq!(h.sm.revision(), 2);
}

impl Harness {
    fn run_request(&mut self, request: KvRequest) -> KvResponse {
        self.index += 1;
        self.sm.apply(self.index, &request).response
    }
}

#[test]
fn the_least_recently_active_session_is_evicted_first() {
    let limits = KvLimits { max_sessions: 2, ..KvLimits::default() };
    let mut h = Harness::with_limits(limits);
    let a = register(&mut h);
    let b = register(&mut h);
    h.apply(tag(a, 1), put("k", "a")); // a is now more recently active than b
    let c = register(&mut h);
    assert_eq!(h.sm.session_count(), 2);
    let evicted = h.apply(tag(b, 1), put("k", "b"));
    assert_eq!(evicted.response, KvResponse::Error(RequestError::UnknownSession { client_id: b }));
    // A retry counts as activity: a's retry makes c the next victim.
    h.apply(tag(a, 1), put("k", "a"));
    let d = register(&mut h);
    let response = h.apply(tag(c, 1), put("k", "c")).response;
    assert_eq!(response, KvResponse::Error(RequestError::UnknownSession { client_id: c }));
    assert!(matches!(h.apply(tag(a, 2), put("k", "a2")).response, KvResponse::Put { .. }));
    assert!(matches!(h.apply(tag(d, 1), put("k", "d")).response, KvResponse::Put { .. }));
}

#[test]
fn oversized_responses_are_not_retained_for_retries() {
    let limits = KvLimits { max_session_response_bytes: 100, ..KvLimits::default() };
    let mut h = Harness::with_limits(limits);
    let client = register(&mut h);
    h.put("big", &"x".repeat(200));
    let first = h.apply(tag(client, 1), KvCommand::Get { key: "big".into() });
    assert!(matches!(first.response, KvResponse::Get { kv: Some(_), .. }), "first answer is full");
    let retry = h.apply(tag(client, 1), KvCommand::Get { key: "big".into() });
    assert_eq!(
        retry.response,
        KvResponse::Error(RequestError::ResponseNotRetained { client_id: client, seq: 1 })
    );
    // Small answers are kept.
    let put_response = h.apply(tag(client, 2), put("small", "1")).response;
    assert_eq!(h.apply(tag(client, 2), put("small", "1")).response, put_response);
}

#[test]
fn a_session_tag_on_a_registration_is_ignored() {
    let limits = KvLimits { max_sessions: 1, ..KvLimits::default() };
    let mut h = Harness::with_limits(limits);
    let first = register(&mut h);
    // Registering from within a full table evicts the tagged session itself: no panic.
    let response = h.apply(tag(first, 1), KvCommand::RegisterSession).response;
    assert_eq!(response, KvResponse::SessionRegistered { client_id: 2 });
    assert_eq!(h.sm.session_count(), 1);
}

// ----- limits and bad input -----

#[test]
fn validation_errors_are_precise_and_apply_agrees() {
    let limits = KvLimits {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_request_bytes: 40,
        max_txn_ops: 2,
        ..KvLimits::default()
    };
    let cases = vec![
        (put("", "v"), RequestError::EmptyKey),
        (put("123456789", "v"), RequestError::KeyTooLarge { size_bytes: 9, max_bytes: 8 }),
        (put("k", &"v".repeat(17)), RequestError::ValueTooLarge { size_bytes: 17, max_bytes: 16 }),
        (put_ttl("k", "v", 0), RequestError::ZeroTtl),
        (
            KvCommand::Range { prefix: "123456789".into(), start_after: None, limit: 1 },
            RequestError::KeyTooLarge { size_bytes: 9, max_bytes: 8 },
        ),
        (
            txn(vec![], vec![txn_get("a"), txn_get("b"), txn_get("c")], vec![]),
            RequestError::TooManyTxnOps { ops: 3, max_ops: 2 },
        ),
        (
            txn(
                vec![Compare {
                    key: "k".into(),
                    target: CompareTarget::Value(CompareOp::Equal, bytes(&"c".repeat(16))),
                }],
                vec![txn_put("a", &"1".repeat(16))],
                vec![txn_put("b", &"2".repeat(16))],
            ),
            RequestError::RequestTooLarge { size_bytes: 51, max_bytes: 40 },
        ),
        (txn(vec![], vec![TxnOp::Delete { key: String::new() }], vec![]), RequestError::EmptyKey),
    ];
    let mut h = Harness::with_limits(limits.clone());
    for (command, expected) in cases {
        let request = KvRequest::new(command);
        assert_eq!(limits.validate(&request), Err(expected.clone()), "{request:?}");
        let revision = h.sm.revision();
        assert_eq!(h.run_request(request), KvResponse::Error(expected));
        assert_eq!(h.sm.revision(), revision);
    }
    // The request budget counts every key and value: 2 + 32 bytes fit in 40, 51 did not.
    let fits =
        txn(vec![], vec![txn_put("a", &"1".repeat(16)), txn_put("b", &"2".repeat(16))], vec![]);
    assert_eq!(limits.validate_command(&fits), Ok(()));
    assert!(matches!(h.run(fits), KvResponse::Txn { succeeded: true, .. }));
    assert!(RequestError::ValueTooLarge { size_bytes: 1, max_bytes: 0 }.is_payload_too_large());
    assert!(RequestError::RequestTooLarge { size_bytes: 1, max_bytes: 0 }.is_payload_too_large());
    assert!(!RequestError::EmptyKey.is_payload_too_large());
    assert_eq!(RequestError::EmptyKey.to_string(), "key cannot be empty");
}

#[test]
fn limits_must_be_positive() {
    let zero = KvLimits { max_sessions: 0, ..KvLimits::default() };
    assert_eq!(KvStateMachine::new(zero).err(), Some(KvError::InvalidLimits("max_sessions")));
    assert!(KvLimits::default().check().is_ok());
}

#[test]
fn undecodable_log_entries_get_an_error_answer() {
    let mut sm = KvStateMachine::default();
    let result = sm.apply_command_bytes(1, &[0xff, 0xff, 0xff]);
    assert_eq!(result.response, KvResponse::Error(RequestError::MalformedCommand));
    assert_eq!(sm.applied_index(), 1);
    let good = KvRequest::new(put("k", "v")).encode().unwrap();
    assert!(matches!(sm.apply_command_bytes(2, &good).response, KvResponse::Put { .. }));
    sm.advance_applied_index(5); // e.g. a Raft no-op
    assert_eq!(sm.applied_index(), 5);
}

#[test]
#[should_panic(expected = "apply out of order")]
fn applying_an_index_twice_is_an_invariant_violation() {
    let mut sm = KvStateMachine::default();
    sm.apply(3, &KvRequest::new(KvCommand::ExpireTick));
    sm.apply(3, &KvRequest::new(KvCommand::ExpireTick));
}

// ----- snapshots and digests -----

fn populated() -> Harness {
    let limits = KvLimits { max_sessions: 3, ..KvLimits::default() };
    let mut h = Harness::with_limits(limits);
    h.leader_time_ms = 50_000;
    let a = register(&mut h);
    let b = register(&mut h);
    h.apply(tag(a, 1), put("x", "1"));
    h.apply(tag(b, 4), put_ttl("ttl", "soon", 100));
    h.run(put_ttl("later", "l", 10_000));
    h.put("y", "2");
    h.run(delete("x"));
    register(&mut h);
    h
}

#[test]
fn snapshot_round_trip_preserves_everything() {
    let mut h = populated();
    let bytes = h.sm.snapshot();
    assert_eq!(bytes[0], SNAPSHOT_FORMAT_VERSION);
    let mut restored = KvStateMachine::restore(&bytes).unwrap();
    assert_eq!(restored, h.sm);
    assert_eq!(restored.state_digest(), h.sm.state_digest());
    assert_eq!(restored.snapshot(), bytes, "same state, same bytes");
    // The rebuilt TTL index and session LRU order behave like the originals.
    let steps = vec![
        KvRequest { session: tag(2, 5), leader_time_ms: 50_100, command: put("z", "3") },
        KvRequest { session: tag(2, 5), leader_time_ms: 50_100, command: put("z", "3") },
        KvRequest { session: None, leader_time_ms: 50_200, command: KvCommand::RegisterSession },
        KvRequest { session: tag(1, 2), leader_time_ms: 50_300, command: put("w", "4") },
        KvRequest { session: None, leader_time_ms: 60_000, command: KvCommand::ExpireTick },
    ];
    for request in steps {
        h.index += 1;
        let original = h.sm.apply(h.index, &request);
        let copy = restored.apply(h.index, &request);
        assert_eq!(original, copy);
        assert_eq!(original.response, copy.response);
        assert_eq!(restored.state_digest(), h.sm.state_digest());
    }
    assert_eq!(restored, h.sm);
    assert_eq!(h.sm.key_count(), 2, "both TTL keys expired");
}

#[test]
fn digests_differ_when_states_differ() {
    let h = populated();
    let mut other = KvStateMachine::restore(&h.sm.snapshot()).unwrap();
    other.apply(h.index + 1, &KvRequest::new(KvCommand::Get { key: "y".into() }));
    assert_ne!(other.state_digest(), h.sm.state_digest());
    assert_ne!(KvStateMachine::default().state_digest(), h.sm.state_digest());
    // The digest is a fixed function of the state (stable across runs and builds).
    assert_eq!(KvStateMachine::default().state_digest(), KvStateMachine::default().state_digest());
}

#[test]
fn restore_rejects_bad_bytes_with_errors() {
    assert_eq!(KvStateMachine::restore(&[]), Err(KvError::EmptySnapshot));
    assert_eq!(
        KvStateMachine::restore(&[99, 0, 0]),
        Err(KvError::UnsupportedSnapshotVersion {
            found: 99,
            supported: SNAPSHOT_FORMAT_WITH_SHARD_MAP
        })
    );
    assert!(KvStateMachine::restore(b"\x01garbage that is not a snapshot").is_err());
    let bytes = populated().sm.snapshot();
    for cut in 0..bytes.len() {
        assert!(KvStateMachine::restore(&bytes[..cut]).is_err(), "a {cut}-byte prefix restored");
    }
    let mut longer = bytes.to_vec();
    longer.push(7);
    assert_eq!(KvStateMachine::restore(&longer), Err(KvError::TrailingBytes { trailing_bytes: 1 }));
}

// ----- the shard map (the meta group's) -----

fn shard_map(epoch: u64, slots: u64, shards: u64) -> ShardMap {
    let slot_count = SlotCount::new(slots).expect("a valid slot count");
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let mut map = ShardMap::initial(slot_count, shards, &members).expect("a valid map");
    while map.epoch() < epoch {
        map = map.changed(|_| Ok(())).expect("the next epoch");
    }
    map
}

#[test]
fn the_shard_map_is_taken_first_and_then_only_at_its_next_epoch() {
    let mut h = Harness::new();
    assert_eq!(h.sm.shard_map(), None);
    // The first map may start at any epoch (a cluster rebuilt from a backup keeps counting).
    assert_eq!(
        h.run(KvCommand::SetShardMap(shard_map(3, 64, 4))),
        KvResponse::ShardMapSet { epoch: 3 }
    );
    let refused = |current_epoch, proposed_epoch| {
        KvResponse::Error(RequestError::ShardMapEpoch { current_epoch, proposed_epoch })
    };
    // The same epoch again (two nodes proposing from one map: the second loses), an older
    // one (a delayed proposal), one that skips an epoch, another slot count: all refused.
    assert_eq!(h.run(KvCommand::SetShardMap(shard_map(3, 64, 2))), refused(3, 3));
    assert_eq!(h.run(KvCommand::SetShardMap(shard_map(2, 64, 4))), refused(3, 2));
    assert_eq!(h.run(KvCommand::SetShardMap(shard_map(5, 64, 4))), refused(3, 5));
    assert_eq!(h.run(KvCommand::SetShardMap(shard_map(4, 128, 4))), refused(3, 4));
    assert_eq!(h.sm.shard_map().map(ShardMap::epoch), Some(3));
    assert_eq!(h.sm.shard_map().map(|map| map.shards().count()), Some(4));
    // The next epoch is taken.
    let next = shard_map(4, 64, 2);
    assert_eq!(h.run(KvCommand::SetShardMap(next.clone())), KvResponse::ShardMapSet { epoch: 4 });
    assert_eq!(h.sm.shard_map(), Some(&next));
    // Keys and revisions are untouched by maps.
    assert_eq!(h.sm.revision(), 0);
    assert_eq!(h.sm.key_count(), 0);
}

#[test]
fn a_shard_map_that_breaks_its_invariants_is_refused_before_and_at_apply() {
    // Built by decoding, as one arriving in a log entry would be: an epoch of 0.
    let map = shard_map(1, 16, 2);
    let mut bytes = postcard::to_allocvec(&map).expect("encodes");
    assert_eq!(bytes[0], 1, "the epoch leads the encoding");
    bytes[0] = 0;
    let broken: ShardMap = postcard::from_bytes(&bytes).expect("decodes");
    let command = KvCommand::SetShardMap(broken);
    let request = KvRequest::new(command.clone());
    let mut h = Harness::new();
    let error = h.sm.validate(&request).expect_err("refused before proposing");
    assert!(matches!(&error, RequestError::InvalidShardMap(reason) if reason.contains("epoch")));
    assert_eq!(h.run(command), KvResponse::Error(error));
    assert_eq!(h.sm.shard_map(), None);
}

#[test]
fn a_snapshot_carries_the_shard_map_only_when_there_is_one() {
    let mut h = Harness::new();
    h.put("k", "v");
    let without = h.sm.snapshot();
    assert_eq!(without[0], SNAPSHOT_FORMAT_VERSION, "a state without a map keeps format 1");
    h.run(KvCommand::SetShardMap(shard_map(1, 32, 3)));
    let with = h.sm.snapshot();
    assert_eq!(with[0], SNAPSHOT_FORMAT_WITH_SHARD_MAP);
    let restored = KvStateMachine::restore(&with).expect("restores");
    assert_eq!(restored, h.sm);
    assert_eq!(restored.shard_map(), h.sm.shard_map());
    assert_eq!(restored.state_digest(), h.sm.state_digest());
    // The digest covers the map: the same keys under another map differ.
    let mut other = Harness::new();
    other.put("k", "v");
    other.run(KvCommand::SetShardMap(shard_map(1, 32, 2)));
    assert_ne!(other.sm.state_digest(), h.sm.state_digest());
    // A map that fails its checks makes the snapshot invalid.
    let mut corrupted = with.to_vec();
    let map_bytes = postcard::to_allocvec(h.sm.shard_map().expect("a map")).expect("encodes");
    let map_at = corrupted.len() - map_bytes.len();
    corrupted[map_at] = 0; // epoch 0
    assert_eq!(
        KvStateMachine::restore(&corrupted),
        Err(KvError::InvalidSnapshot("invalid shard map"))
    );
}
