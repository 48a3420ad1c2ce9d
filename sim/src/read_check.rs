//! Checks on every single-key read, stale ones included, that the linearizability checker
//! cannot make for reads that may be arbitrarily old:
//!
//! 1. **A state that existed.** A store revision names one state of the key space (the log up
//!    to the entry that made it), so every read served at the same store revision — by any
//!    node, at any consistency — must see the same value of the key; and a key's `mod_revision`
//!    names the write that gave it its value.
//! 2. **Nothing from nowhere, nothing from the future.** A value read must have been written by
//!    a write that was not refused, called before the read returned.
//!
//! 3. **The very state of its revision.** The observer records the changes every store
//!    revision made, as the replicas applied them. Replaying them gives the state at each
//!    revision, and every read — one key, or each key a range returned or passed over — must
//!    see exactly that state's value and `mod_revision` at the revision it was served at.
//!
//! A replica that served reads from a state no committed log prefix produces (a divergent
//! state machine, an entry applied out of order, a value from a failed write, a range cut
//! short but reported complete) fails one of these even when every read it served was stale.

use std::collections::BTreeMap;

use conclave_checker::{Op, Operation, Status, TxnOp};
use conclave_core::kv::{KvEvent, KvEventKind};

use crate::workload::ReadObservation;

/// The first violation found, if any.
pub fn check_reads(reads: &[ReadObservation], history: &[Operation]) -> Option<String> {
    // (key, store revision) -> the first read served there.
    let mut at_revision: BTreeMap<(&str, u64), &ReadObservation> = BTreeMap::new();
    let mut by_mod_revision: BTreeMap<(&str, u64), &str> = BTreeMap::new();
    for read in reads {
        let first = *at_revision.entry((read.key.as_str(), read.store_revision)).or_insert(read);
        if first.value != read.value {
            return Some(format!(
                "reads: two reads of {} at store revision {} saw {} and {} (a {} read at \
                 {:.3} s and a {} read at {:.3} s): no single state of the store gives both",
                read.key,
                read.store_revision,
                describe(&first.value),
                describe(&read.value),
                kind(first),
                first.ret_us as f64 / 1e6,
                kind(read),
                read.ret_us as f64 / 1e6,
            ));
        }
        if let Some((value, mod_revision)) = &read.value {
            let first = by_mod_revision.entry((read.key.as_str(), *mod_revision)).or_insert(value);
            if *first != value.as_str() {
                return Some(format!(
                    "reads: {} at mod revision {mod_revision} was read as {first:?} and as \
                     {value:?}",
                    read.key
                ));
            }
        }
    }
    let writes = written_values(history);
    for read in reads {
        let Some((value, _)) = &read.value else { continue };
        match writes.get(&(read.key.as_str(), value.as_str())) {
            None => {
                return Some(format!(
                    "reads: a {} read of {} returned {value:?} at {:.3} s, which no write that \
                     was not refused ever wrote",
                    kind(read),
                    read.key,
                    read.ret_us as f64 / 1e6
                ));
            }
            Some(call_us) if *call_us > read.ret_us => {
                return Some(format!(
                    "reads: a {} read of {} returned {value:?} at {:.3} s, written only by a \
                     write called later, at {:.3} s",
                    kind(read),
                    read.key,
                    read.ret_us as f64 / 1e6,
                    *call_us as f64 / 1e6
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// Check 3: each read against the state at its store revision, replayed from `changes`
/// (revision -> the changes made there). Every revision changes at least one key, so a
/// revision missing from `changes` means the observer never saw it applied: reads at or after
/// it are not judged (none is missing in a run whose replicas all applied by log). Returns the
/// first violation, and how many reads were judged.
pub fn check_reads_against_changes<'a>(
    reads: impl IntoIterator<Item = &'a ReadObservation>,
    changes: &BTreeMap<u64, Vec<KvEvent>>,
) -> (Option<String>, usize) {
    let mut by_revision: Vec<&ReadObservation> = reads.into_iter().collect();
    by_revision.sort_by_key(|read| read.store_revision);
    // key -> (value, mod_revision) at revision `replayed_to`.
    let mut state: BTreeMap<&str, (String, u64)> = BTreeMap::new();
    let mut replayed_to = 0u64;
    let mut pending = changes.iter().peekable();
    let mut judged = 0;
    for read in by_revision {
        while let Some((&revision, events)) = pending.next_if(|(revision, _)| {
            **revision <= read.store_revision && **revision == replayed_to + 1
        }) {
            for event in events {
                match event.kind {
                    KvEventKind::Put => {
                        let value = String::from_utf8_lossy(&event.value).into_owned();
                        state.insert(event.key.as_str(), (value, event.mod_revision));
                    }
                    KvEventKind::Delete | KvEventKind::Expire => {
                        state.remove(event.key.as_str());
                    }
                }
            }
            replayed_to = revision;
        }
        if replayed_to < read.store_revision {
            // A revision the observer did not see: this read and every later one unjudged.
            break;
        }
        judged += 1;
        let expected = state.get(read.key.as_str()).cloned();
        if expected != read.value {
            let violation = format!(
                "reads: a {} read of {} at store revision {} saw {}, but the replicas' changes \
                 up to that revision leave {} (read at {:.3} s)",
                kind(read),
                read.key,
                read.store_revision,
                describe(&read.value),
                describe(&expected),
                read.ret_us as f64 / 1e6,
            );
            return (Some(violation), judged);
        }
    }
    (None, judged)
}

/// (key, value) -> the earliest call of a write that may have written it (not refused).
fn written_values(history: &[Operation]) -> BTreeMap<(&str, &str), u64> {
    let mut writes: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for operation in history.iter().filter(|op| op.status != Status::Fail) {
        let mut written: Vec<(&str, &str)> = Vec::new();
        match &operation.op {
            Op::Put { key, value } | Op::PutIfAbsent { key, value, .. } => {
                written.push((key, value))
            }
            Op::Cas { key, value, .. } => written.push((key, value)),
            Op::Txn(txn) => {
                for txn_op in txn.success.iter().chain(&txn.failure) {
                    if let TxnOp::Put { key, value } = txn_op {
                        written.push((key, value));
                    }
                }
            }
            Op::Get { .. } | Op::Delete { .. } | Op::Range(_) => {}
        }
        for key_value in written {
            let call = writes.entry(key_value).or_insert(operation.call);
            *call = (*call).min(operation.call);
        }
    }
    writes
}

fn describe(value: &Option<(String, u64)>) -> String {
    match value {
        Some((value, mod_revision)) => format!("{value:?} (mod revision {mod_revision})"),
        None => "no value".to_string(),
    }
}

fn kind(read: &ReadObservation) -> &'static str {
    if read.stale { "stale" } else { "linearizable" }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn put(call: u64, key: &str, value: &str) -> Operation {
        Operation::ok(1, call, call + 10, Op::Put { key: key.into(), value: value.into() })
    }

    fn read(
        key: &str,
        value: Option<(&str, u64)>,
        store_revision: u64,
        ret_us: u64,
    ) -> ReadObservation {
        ReadObservation {
            key: key.into(),
            value: value.map(|(v, r)| (v.to_string(), r)),
            store_revision,
            stale: true,
            call_us: ret_us - 5,
            ret_us,
        }
    }

    #[test]
    fn reads_of_states_that_existed_pass() {
        let history = [put(100, "k", "a"), put(200, "k", "b")];
        let reads = [
            read("k", None, 1, 50),
            read("k", Some(("a", 2)), 2, 150),
            read("k", Some(("a", 2)), 2, 400),
            read("k", Some(("b", 3)), 3, 300),
            read("k", Some(("a", 2)), 2, 900),
        ];
        assert_eq!(check_reads(&reads, &history), None);
    }

    #[test]
    fn two_values_at_one_store_revision_are_a_violation() {
        let history = [put(100, "k", "a"), put(200, "k", "b")];
        let reads = [read("k", Some(("a", 2)), 3, 150), read("k", Some(("b", 3)), 3, 300)];
        let violation = check_reads(&reads, &history).unwrap();
        assert!(violation.contains("store revision 3"), "{violation}");
        let reads = [read("k", Some(("a", 2)), 2, 150), read("k", None, 2, 300)];
        assert!(check_reads(&reads, &history).unwrap().contains("store revision 2"));
    }

    #[test]
    fn one_mod_revision_with_two_values_is_a_violation() {
        let history = [put(100, "k", "a"), put(200, "k", "b")];
        let reads = [read("k", Some(("a", 2)), 2, 150), read("k", Some(("b", 2)), 4, 300)];
        assert!(check_reads(&reads, &history).unwrap().contains("mod revision 2"));
    }

    fn changes(events: &[(u64, &str, Option<&str>)]) -> BTreeMap<u64, Vec<KvEvent>> {
        let mut changes: BTreeMap<u64, Vec<KvEvent>> = BTreeMap::new();
        for (revision, key, value) in events {
            let event = match value {
                Some(value) => KvEvent::put(*key, Bytes::from(value.to_string()), *revision),
                None => KvEvent {
                    key: key.to_string(),
                    kind: KvEventKind::Delete,
                    value: Bytes::new(),
                    mod_revision: *revision,
                },
            };
            changes.entry(*revision).or_default().push(event);
        }
        changes
    }

    #[test]
    fn reads_of_the_state_at_their_revision_pass() {
        let changes = changes(&[(1, "k", Some("a")), (2, "j", Some("x")), (3, "k", None)]);
        let reads = [
            read("k", Some(("a", 1)), 2, 300),
            read("k", None, 0, 100),
            read("j", None, 1, 200),
            read("j", Some(("x", 2)), 3, 500),
            read("k", None, 3, 400),
        ];
        assert_eq!(check_reads_against_changes(&reads, &changes), (None, 5));
    }

    #[test]
    fn a_read_that_differs_from_the_state_at_its_revision_is_a_violation() {
        let changes = changes(&[(1, "k", Some("a")), (2, "k", Some("b"))]);
        // A single read suffices: no second read at that revision is needed.
        let (violation, _) = check_reads_against_changes(&[read("k", None, 2, 300)], &changes);
        let violation = violation.unwrap();
        assert!(violation.contains("store revision 2"), "{violation}");
        assert!(violation.contains("\"b\" (mod revision 2)"), "{violation}");
        let stale_mod_revision = [read("k", Some(("b", 1)), 2, 300)];
        assert!(check_reads_against_changes(&stale_mod_revision, &changes).0.is_some());
    }

    #[test]
    fn reads_past_a_revision_the_observer_missed_are_not_judged() {
        let changes = changes(&[(1, "k", Some("a")), (3, "k", Some("c"))]);
        let reads = [read("k", Some(("a", 1)), 1, 100), read("k", Some(("wrong", 9)), 3, 200)];
        assert_eq!(check_reads_against_changes(&reads, &changes), (None, 1));
    }

    #[test]
    fn values_nobody_wrote_or_written_later_or_refused_are_violations() {
        let history = [
            put(100, "k", "a"),
            put(500, "k", "late"),
            Operation::fail(1, 600, 700, Op::Put { key: "k".into(), value: "refused".into() }),
        ];
        let phantom = [read("k", Some(("x", 2)), 2, 150)];
        assert!(check_reads(&phantom, &history).unwrap().contains("no write"));
        let future = [read("k", Some(("late", 2)), 2, 300)];
        assert!(check_reads(&future, &history).unwrap().contains("called later"));
        let refused = [read("k", Some(("refused", 2)), 2, 800)];
        assert!(check_reads(&refused, &history).unwrap().contains("no write"));
    }
}
