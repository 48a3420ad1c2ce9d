//! Evaluating the guards of single-key writes ([`Condition`]) and of transactions
//! ([`Compare`]) against a key's current state (`None`: absent or expired).

use std::cmp::Ordering;

use super::command::{Compare, CompareOp, CompareTarget, Condition};
use super::keyspace::KeyRecord;

impl Condition {
    pub(crate) fn holds(&self, current: Option<&KeyRecord>) -> bool {
        match (self, current) {
            (Condition::Always, _) => true,
            (Condition::Absent, current) => current.is_none(),
            (Condition::Present, current) => current.is_some(),
            (Condition::ValueEquals(expected), Some(record)) => record.value == *expected,
            (Condition::ModRevisionEquals(revision), Some(record)) => {
                record.meta.mod_revision == *revision
            }
            (Condition::ValueEquals(_) | Condition::ModRevisionEquals(_), None) => false,
        }
    }
}

impl CompareOp {
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Less => ordering == Ordering::Less,
            CompareOp::Greater => ordering == Ordering::Greater,
        }
    }
}

impl Compare {
    pub(crate) fn holds(&self, current: Option<&KeyRecord>) -> bool {
        let meta = current.map(|record| record.meta);
        match &self.target {
            // No value to compare with: false whatever the operator, as in etcd.
            CompareTarget::Value(op, expected) => {
                current.is_some_and(|record| op.accepts(record.value[..].cmp(&expected[..])))
            }
            CompareTarget::ModRevision(op, revision) => {
                op.accepts(meta.map_or(0, |meta| meta.mod_revision).cmp(revision))
            }
            CompareTarget::CreateRevision(op, revision) => {
                op.accepts(meta.map_or(0, |meta| meta.create_revision).cmp(revision))
            }
            CompareTarget::Version(op, version) => {
                op.accepts(meta.map_or(0, |meta| meta.version).cmp(version))
            }
            CompareTarget::Exists(exists) => current.is_some() == *exists,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::kv::KeyMeta;

    fn record(value: &'static [u8]) -> KeyRecord {
        KeyRecord {
            value: Bytes::from_static(value),
            meta: KeyMeta { create_revision: 2, mod_revision: 5, version: 3, expires_at_ms: None },
        }
    }

    fn compare(target: CompareTarget) -> Compare {
        Compare { key: "k".into(), target }
    }

    #[test]
    fn kv_conditions_against_present_and_absent_keys() {
        let present = record(b"v");
        let cases = [
            (Condition::Always, true, true),
            (Condition::Absent, false, true),
            (Condition::Present, true, false),
            (Condition::ValueEquals(Bytes::from_static(b"v")), true, false),
            (Condition::ValueEquals(Bytes::from_static(b"w")), false, false),
            (Condition::ModRevisionEquals(5), true, false),
            (Condition::ModRevisionEquals(4), false, false),
        ];
        for (condition, on_present, on_absent) in cases {
            assert_eq!(condition.holds(Some(&present)), on_present, "{condition:?} on present");
            assert_eq!(condition.holds(None), on_absent, "{condition:?} on absent");
        }
    }

    #[test]
    fn kv_compares_follow_etcd_semantics() {
        let present = record(b"m");
        let value = |op, v: &'static [u8]| compare(CompareTarget::Value(op, Bytes::from_static(v)));
        assert!(value(CompareOp::Equal, b"m").holds(Some(&present)));
        assert!(value(CompareOp::Less, b"n").holds(Some(&present)));
        assert!(value(CompareOp::Greater, b"l").holds(Some(&present)));
        assert!(value(CompareOp::NotEqual, b"x").holds(Some(&present)));
        // An absent key has no value: every value compare is false, even NotEqual.
        assert!(!value(CompareOp::NotEqual, b"x").holds(None));
        // ... but its revisions and version read as 0.
        assert!(compare(CompareTarget::ModRevision(CompareOp::Equal, 0)).holds(None));
        assert!(compare(CompareTarget::CreateRevision(CompareOp::Less, 1)).holds(None));
        assert!(compare(CompareTarget::Version(CompareOp::Equal, 0)).holds(None));
        assert!(compare(CompareTarget::ModRevision(CompareOp::Greater, 4)).holds(Some(&present)));
        assert!(compare(CompareTarget::CreateRevision(CompareOp::Equal, 2)).holds(Some(&present)));
        assert!(compare(CompareTarget::Version(CompareOp::Less, 4)).holds(Some(&present)));
        assert!(compare(CompareTarget::Exists(true)).holds(Some(&present)));
        assert!(compare(CompareTarget::Exists(false)).holds(None));
        assert!(!compare(CompareTarget::Exists(true)).holds(None));
    }
}
