//! The watch check: a watcher must receive every change of its prefix, in order, exactly
//! once, each with the position that names it — across every reconnection, on whichever node
//! it resumed. The truth is the changes the replicas made at each revision (the observer
//! records them as the first replica applies each revision and holds every other to them).
//!
//! A watcher that had to start again from the present (no node held its position) begins a
//! new segment: its first change must open a revision, and from there the same rules hold.
//! At the end, the last segment must reach `target`, the newest change known when the cluster
//! had converged: a stream that silently stops is a lost watch.

use std::collections::BTreeMap;

use conclave_core::engine::WatchPosition;
use conclave_core::kv::KvEvent;

use crate::watcher::WatchRecord;

/// What the check saw, for the run's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchSummary {
    pub changes_received: usize,
    pub restarts_from_now: usize,
}

/// The changes under `prefix`, in order, each with the position after it.
fn expected_changes<'a>(
    reference: &'a BTreeMap<u64, Vec<KvEvent>>,
    prefix: &str,
) -> Vec<(WatchPosition, &'a KvEvent)> {
    let mut expected = Vec::new();
    for (revision, changes) in reference {
        let under_prefix = changes.iter().filter(|change| change.key.starts_with(prefix));
        for (index, change) in under_prefix.enumerate() {
            let after =
                WatchPosition { revision: *revision, delivered_at_revision: index as u32 + 1 };
            expected.push((after, change));
        }
    }
    expected
}

/// The position after the newest change under `prefix` the replicas made: where a watcher
/// that has received everything so far stands.
pub fn last_change_position(
    reference: &BTreeMap<u64, Vec<KvEvent>>,
    prefix: &str,
) -> Option<WatchPosition> {
    expected_changes(reference, prefix).last().map(|(position, _)| *position)
}

/// Checks what a watcher received against the changes the replicas made.
pub fn check_watch(
    records: &[WatchRecord],
    reference: &BTreeMap<u64, Vec<KvEvent>>,
    prefix: &str,
    target: Option<u64>,
) -> Result<WatchSummary, String> {
    let expected = expected_changes(reference, prefix);
    let mut summary = WatchSummary::default();
    // The next expected change; `None` at the start of a segment from the present.
    let mut next: Option<usize> = Some(0);
    for (number, record) in records.iter().enumerate() {
        let (event, after, node) = match record {
            WatchRecord::RestartedFromNow => {
                summary.restarts_from_now += 1;
                next = None;
                continue;
            }
            WatchRecord::Change { event, after, node } => (event, after, node),
        };
        summary.changes_received += 1;
        let at = match next {
            Some(at) => at,
            None => {
                // A stream from the present starts with a whole revision.
                if after.delivered_at_revision != 1 {
                    return Err(format!(
                        "change #{number} from n{node} ({event:?} at {after:?}) opened a watch \
                         from the present in the middle of its revision"
                    ));
                }
                expected.partition_point(|(position, _)| position < after)
            }
        };
        match expected.get(at) {
            Some((position, change)) if position == after && *change == event => {}
            Some((position, change)) if position < after => {
                return Err(format!(
                    "the watcher never received {change:?} (at {position:?}): change #{number} \
                     from n{node} was already {event:?} at {after:?}"
                ));
            }
            Some((position, change)) if position == after => {
                return Err(format!(
                    "change #{number} from n{node} is {event:?} at {after:?}, but the replicas \
                     made {change:?} there"
                ));
            }
            found => {
                let repeated = records[..number].iter().any(|earlier| {
                    matches!(earlier, WatchRecord::Change { after: seen, .. } if seen == after)
                });
                let what = if repeated {
                    "a second time"
                } else if found.is_some() {
                    "out of order"
                } else {
                    "although no replica made it"
                };
                return Err(format!(
                    "change #{number} from n{node} ({event:?} at {after:?}) was delivered {what}"
                ));
            }
        }
        next = Some(at + 1);
    }
    if let (Some(target), Some(at)) = (target, next)
        && let Some((position, change)) = expected.get(at)
        && position.revision <= target
    {
        return Err(format!(
            "the watch stopped short: it never received {change:?} (at {position:?}), although \
             the cluster had converged on revision {target} or later"
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn put(key: &str, revision: u64) -> KvEvent {
        KvEvent::put(key, Bytes::from_static(b"v"), revision)
    }

    /// Revision 2 carries two changes under "k" (a transaction), revision 3 one elsewhere.
    fn reference() -> BTreeMap<u64, Vec<KvEvent>> {
        BTreeMap::from([
            (1, vec![put("k1", 1)]),
            (2, vec![put("k1", 2), put("k2", 2)]),
            (3, vec![put("other", 3)]),
            (4, vec![put("k2", 4)]),
        ])
    }

    fn change(key: &str, revision: u64, delivered: u32) -> WatchRecord {
        WatchRecord::Change {
            event: put(key, revision),
            after: WatchPosition { revision, delivered_at_revision: delivered },
            node: 1,
        }
    }

    #[test]
    fn every_change_once_in_order_passes() {
        let records =
            [change("k1", 1, 1), change("k1", 2, 1), change("k2", 2, 2), change("k2", 4, 1)];
        let summary = check_watch(&records, &reference(), "k", Some(4)).expect("exact");
        assert_eq!(summary.changes_received, 4);
    }

    #[test]
    fn a_repeated_change_fails() {
        let records = [change("k1", 1, 1), change("k1", 2, 1), change("k1", 2, 1)];
        let error = check_watch(&records, &reference(), "k", None).unwrap_err();
        assert!(error.contains("a second time"), "{error}");
    }

    #[test]
    fn a_lost_change_inside_a_revision_fails() {
        let records = [change("k1", 1, 1), change("k1", 2, 1), change("k2", 4, 1)];
        let error = check_watch(&records, &reference(), "k", None).unwrap_err();
        assert!(error.contains("never received") && error.contains("k2"), "{error}");
    }

    #[test]
    fn a_stream_that_stops_before_the_target_fails_and_one_that_reaches_it_passes() {
        let records = [change("k1", 1, 1), change("k1", 2, 1), change("k2", 2, 2)];
        assert!(check_watch(&records, &reference(), "k", Some(3)).is_ok());
        let error = check_watch(&records, &reference(), "k", Some(4)).unwrap_err();
        assert!(error.contains("stopped short"), "{error}");
    }

    #[test]
    fn a_restart_from_the_present_must_open_a_whole_revision() {
        let whole = [change("k1", 1, 1), WatchRecord::RestartedFromNow, change("k2", 4, 1)];
        assert_eq!(
            check_watch(&whole, &reference(), "k", Some(4)).expect("exact").restarts_from_now,
            1
        );
        let partial = [WatchRecord::RestartedFromNow, change("k2", 2, 2)];
        let error = check_watch(&partial, &reference(), "k", None).unwrap_err();
        assert!(error.contains("middle of its revision"), "{error}");
    }

    #[test]
    fn a_change_no_replica_made_fails() {
        let records = [change("k1", 1, 1), change("k9", 7, 1)];
        let error = check_watch(&records, &reference(), "k", None).unwrap_err();
        assert!(error.contains("never received") || error.contains("no replica"), "{error}");
    }
}
