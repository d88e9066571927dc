//! Desired keys against what Consul holds → the writes to make (pure).
//!
//! Ownership is recorded in each key's KV `Flags`: the high 32 bits are a fixed concord
//! marker (ASCII "conc"), the low 32 bits the FNV-1a hash of the owner's
//! `namespace/name`. So:
//! - prune and delete touch only keys whose flags are exactly this object's;
//! - a key carrying another concord owner's flags is a conflict, reported by the object
//!   that did not write it; it is never overwritten, so two objects never flap;
//! - a key without the marker (written by hand or by another tool) that the object
//!   declares is adopted: written with the object's flags.
//!
//! Drift: `consul kv put` and most tools write flags 0, so a declared key whose flags are
//! not this object's and whose value differs was edited out of band. `Enforce` rewrites
//! it (counted as a correction); `Report` lists it and leaves it. A key still carrying
//! this object's flags with another value is a declared change (a new spec) and is
//! written under both policies. An edit that keeps concord's flags cannot be told from
//! concord's own earlier write; that is the documented limit of this scheme.
//!
//! Every write is check-and-set: creates with index 0 (must not exist), updates and
//! deletes with the ModifyIndex that was read. A lost race rolls the transaction back
//! and the caller reads again.
use super::desired::Value;
use crate::consul::{ConsulIndex, TxnOp};
use crate::resources::DriftPolicy;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// High 32 bits of every flags value concord writes: ASCII "conc".
pub const MARKER: u64 = 0x636f_6e63 << 32;

/// The flags that mark a key as written by the object `namespace/name`.
pub fn owner_flags(namespace: &str, name: &str) -> u64 {
    MARKER | u64::from(fnv1a32(format!("{namespace}/{name}").as_bytes()))
}

/// Whether any concord object wrote a key with these flags.
pub fn is_concord(flags: u64) -> bool {
    flags & 0xffff_ffff_0000_0000 == MARKER
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// One key as Consul holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actual {
    pub key: String,
    pub value: Value,
    pub flags: u64,
    pub modify_index: ConsulIndex,
}

/// One write; every variant is check-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The key must not exist yet (cas index 0).
    Create {
        key: String,
        value: Value,
        flags: u64,
    },
    Update {
        key: String,
        value: Value,
        flags: u64,
        index: ConsulIndex,
    },
    Delete {
        key: String,
        index: ConsulIndex,
    },
}

impl Write {
    pub fn key(&self) -> &str {
        match self {
            Write::Create { key, .. } | Write::Update { key, .. } | Write::Delete { key, .. } => key,
        }
    }

    pub fn to_txn(&self) -> TxnOp {
        match self {
            Write::Create { key, value, flags } => {
                TxnOp::KvCas { key: key.clone(), value: value.0.clone(), flags: *flags, index: ConsulIndex::ZERO }
            }
            Write::Update { key, value, flags, index } => {
                TxnOp::KvCas { key: key.clone(), value: value.0.clone(), flags: *flags, index: *index }
            }
            Write::Delete { key, index } => TxnOp::KvDeleteCas { key: key.clone(), index: *index },
        }
    }

    /// Bytes this operation adds to a `/v1/txn` body (base64 value + key + JSON framing).
    pub fn wire_size(&self) -> usize {
        let value = match self {
            Write::Create { value, .. } | Write::Update { value, .. } => value.0.len().div_ceil(3) * 4,
            Write::Delete { .. } => 0,
        };
        value + self.key().len() + 96
    }
}

/// What to do, and what to report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub writes: Vec<Write>,
    /// Declared keys whose value and ownership already match.
    pub in_sync: usize,
    /// Out-of-band edits left alone (`Report`).
    pub drifted: Vec<String>,
    /// Out-of-band edits being reverted (`Enforce`).
    pub corrected: Vec<String>,
    /// Declared keys another object owns.
    pub conflicts: Vec<String>,
}

/// Inputs of [`plan`] besides the keys.
#[derive(Clone, Debug)]
pub struct Policy<'a> {
    pub owner_flags: u64,
    pub drift: DriftPolicy,
    pub prune: bool,
    /// Keys an older object declares: this one reports a conflict and does not write.
    pub claimed_elsewhere: &'a BTreeSet<String>,
    /// Owner flags of younger objects of the same cluster: keys they wrote that this
    /// object declares are taken over (both were created within the same second).
    pub overridable_flags: &'a BTreeSet<u64>,
}

/// Compares the declared keys with the keys under the prefix (pure).
pub fn plan(desired: &BTreeMap<String, Value>, actual: &[Actual], policy: &Policy<'_>) -> Plan {
    let mut out = Plan::default();
    let by_key: BTreeMap<&str, &Actual> = actual.iter().map(|a| (a.key.as_str(), a)).collect();
    let ours = policy.owner_flags;
    for (key, value) in desired {
        let foreign_owner =
            |a: &Actual| is_concord(a.flags) && a.flags != ours && !policy.overridable_flags.contains(&a.flags);
        if policy.claimed_elsewhere.contains(key) {
            out.conflicts.push(key.clone());
            continue;
        }
        match by_key.get(key.as_str()) {
            None => out.writes.push(Write::Create { key: key.clone(), value: value.clone(), flags: ours }),
            Some(a) if foreign_owner(a) => out.conflicts.push(key.clone()),
            Some(a) if a.value == *value && a.flags == ours => out.in_sync += 1,
            Some(a) if a.value == *value || a.flags == ours => {
                // Same value with foreign flags: adopt it. Our flags with a new value: the
                // spec changed. Both are plain updates under either policy.
                out.writes.push(Write::Update {
                    key: key.clone(),
                    value: value.clone(),
                    flags: ours,
                    index: a.modify_index,
                });
            }
            Some(a) => match policy.drift {
                DriftPolicy::Report => out.drifted.push(key.clone()),
                DriftPolicy::Enforce => {
                    out.corrected.push(key.clone());
                    out.writes.push(Write::Update {
                        key: key.clone(),
                        value: value.clone(),
                        flags: ours,
                        index: a.modify_index,
                    });
                }
            },
        }
    }
    if policy.prune {
        for a in actual {
            if a.flags == ours && !desired.contains_key(&a.key) {
                out.writes.push(Write::Delete { key: a.key.clone(), index: a.modify_index });
            }
        }
    }
    out
}

/// What the finalizer does to the keys this object owns: delete them, or (Retain) keep
/// them with the ownership mark cleared so that another object may adopt them.
pub fn release(actual: &[Actual], owner_flags: u64, retain: bool) -> Vec<Write> {
    actual
        .iter()
        .filter(|a| a.flags == owner_flags)
        .map(|a| match retain {
            true => Write::Update { key: a.key.clone(), value: a.value.clone(), flags: 0, index: a.modify_index },
            false => Write::Delete { key: a.key.clone(), index: a.modify_index },
        })
        .collect()
}

/// Largest `/v1/txn` body sent; Consul refuses bodies over `txn_max_req_len` (512 KiB).
pub const TXN_BODY_BUDGET: usize = 384 * 1024;

/// Writes grouped for sending: transactions of at most 64 operations and
/// [`TXN_BODY_BUDGET`] bytes, and the writes too large for any transaction (each sent as
/// a single check-and-set `PUT /v1/kv`, which allows the full 512 KiB value).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batches {
    pub transactions: Vec<Vec<Write>>,
    pub singles: Vec<Write>,
}

pub fn batches(writes: Vec<Write>) -> Batches {
    let mut out = Batches::default();
    let mut current: Vec<Write> = Vec::new();
    let mut size = 0;
    for w in writes {
        let s = w.wire_size();
        if s > TXN_BODY_BUDGET {
            out.singles.push(w);
            continue;
        }
        if current.len() == crate::consul::MAX_TXN_OPS || size + s > TXN_BODY_BUDGET {
            out.transactions.push(std::mem::take(&mut current));
            size = 0;
        }
        size += s;
        current.push(w);
    }
    if !current.is_empty() {
        out.transactions.push(current);
    }
    out
}

/// Bytes helper for tests and callers.
pub fn value(s: impl Into<Bytes>) -> Value {
    Value(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "team";

    fn ours() -> u64 {
        owner_flags(NS, "app")
    }

    fn actual(key: &str, v: &str, flags: u64, index: u64) -> Actual {
        Actual { key: key.into(), value: value(v.to_string()), flags, modify_index: ConsulIndex(index) }
    }

    fn desired(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), value(v.to_string()))).collect()
    }

    static NO_FLAGS: BTreeSet<u64> = BTreeSet::new();

    fn policy(drift: DriftPolicy, prune: bool, claimed: &BTreeSet<String>) -> Policy<'_> {
        Policy { owner_flags: ours(), drift, prune, claimed_elsewhere: claimed, overridable_flags: &NO_FLAGS }
    }

    #[test]
    fn owner_flags_carry_the_marker_and_differ_per_object() {
        assert!(is_concord(ours()));
        assert!(!is_concord(0));
        assert!(!is_concord(42));
        assert_ne!(owner_flags(NS, "app"), owner_flags(NS, "other"));
        assert_ne!(owner_flags("a", "b/c"), owner_flags("a/b", "c") ^ 1);
        assert_eq!(owner_flags(NS, "app"), owner_flags(NS, "app"));
    }

    #[test]
    fn missing_keys_are_created_with_cas_zero_and_equal_keys_left_alone() {
        let none = BTreeSet::new();
        let p = plan(
            &desired(&[("a/x", "1"), ("a/y", "2")]),
            &[actual("a/y", "2", ours(), 7)],
            &policy(DriftPolicy::Enforce, false, &none),
        );
        assert_eq!(p.writes, vec![Write::Create { key: "a/x".into(), value: value("1"), flags: ours() }]);
        assert_eq!(p.in_sync, 1);
        assert_eq!(
            p.writes[0].to_txn(),
            TxnOp::KvCas {
                key: "a/x".into(),
                value: Bytes::from_static(b"1"),
                flags: ours(),
                index: ConsulIndex::ZERO
            }
        );
    }

    #[test]
    fn a_hand_edit_is_reverted_under_enforce_and_only_reported_under_report() {
        let none = BTreeSet::new();
        let d = desired(&[("a/x", "1")]);
        let edited = [actual("a/x", "hand", 0, 9)];
        let p = plan(&d, &edited, &policy(DriftPolicy::Enforce, false, &none));
        assert_eq!(p.corrected, vec!["a/x"]);
        assert_eq!(
            p.writes,
            vec![Write::Update { key: "a/x".into(), value: value("1"), flags: ours(), index: ConsulIndex(9) }]
        );
        let p = plan(&d, &edited, &policy(DriftPolicy::Report, false, &none));
        assert_eq!(p.drifted, vec!["a/x"]);
        assert!(p.writes.is_empty());
    }

    #[test]
    fn a_spec_change_is_written_under_report_too() {
        let none = BTreeSet::new();
        let p = plan(
            &desired(&[("a/x", "new")]),
            &[actual("a/x", "old", ours(), 3)],
            &policy(DriftPolicy::Report, false, &none),
        );
        assert!(p.drifted.is_empty());
        assert_eq!(p.writes.len(), 1);
    }

    #[test]
    fn prune_deletes_only_owned_undeclared_keys() {
        let none = BTreeSet::new();
        let other = owner_flags(NS, "other");
        let present = [
            actual("a/keep", "1", ours(), 1),
            actual("a/gone", "1", ours(), 2),
            actual("a/hand", "1", 0, 3),
            actual("a/theirs", "1", other, 4),
        ];
        let p = plan(&desired(&[("a/keep", "1")]), &present, &policy(DriftPolicy::Enforce, true, &none));
        assert_eq!(p.writes, vec![Write::Delete { key: "a/gone".into(), index: ConsulIndex(2) }]);
        let p = plan(&desired(&[("a/keep", "1")]), &present, &policy(DriftPolicy::Enforce, false, &none));
        assert!(p.writes.is_empty());
    }

    #[test]
    fn a_key_owned_by_another_object_or_claimed_by_an_older_one_is_a_conflict() {
        let claimed: BTreeSet<String> = ["a/claimed".to_string()].into();
        let p = plan(
            &desired(&[("a/theirs", "mine"), ("a/claimed", "mine")]),
            &[actual("a/theirs", "theirs", owner_flags(NS, "other"), 4)],
            &policy(DriftPolicy::Enforce, true, &claimed),
        );
        assert_eq!(p.conflicts, vec!["a/claimed", "a/theirs"]);
        assert!(p.writes.is_empty());
    }

    #[test]
    fn a_key_written_by_a_younger_object_is_taken_over() {
        let none = BTreeSet::new();
        let younger: BTreeSet<u64> = [owner_flags(NS, "younger")].into();
        let policy = Policy { overridable_flags: &younger, ..policy(DriftPolicy::Enforce, false, &none) };
        let p = plan(&desired(&[("a/x", "mine")]), &[actual("a/x", "theirs", owner_flags(NS, "younger"), 4)], &policy);
        assert!(p.conflicts.is_empty());
        assert_eq!(p.writes.len(), 1);
    }

    #[test]
    fn an_unowned_key_with_the_declared_value_is_adopted() {
        let none = BTreeSet::new();
        let p =
            plan(&desired(&[("a/x", "1")]), &[actual("a/x", "1", 0, 5)], &policy(DriftPolicy::Report, false, &none));
        assert_eq!(p.writes.len(), 1);
        assert!(p.corrected.is_empty() && p.drifted.is_empty());
    }

    #[test]
    fn release_deletes_or_unmarks_only_owned_keys() {
        let present = [actual("a/mine", "1", ours(), 1), actual("a/hand", "1", 0, 2)];
        assert_eq!(
            release(&present, ours(), false),
            vec![Write::Delete { key: "a/mine".into(), index: ConsulIndex(1) }]
        );
        assert_eq!(
            release(&present, ours(), true),
            vec![Write::Update { key: "a/mine".into(), value: value("1"), flags: 0, index: ConsulIndex(1) }]
        );
    }

    #[test]
    fn batches_respect_the_op_limit_and_the_body_budget() {
        let small: Vec<Write> =
            (0..150).map(|i| Write::Create { key: format!("k/{i}"), value: value("v"), flags: 0 }).collect();
        let b = batches(small);
        assert_eq!(b.transactions.iter().map(Vec::len).collect::<Vec<_>>(), [64, 64, 22]);
        assert!(b.singles.is_empty());

        let hundred_k = || Write::Create { key: "k".into(), value: value(vec![b'x'; 100 * 1024]), flags: 0 };
        let huge = Write::Create { key: "huge".into(), value: value(vec![b'x'; 400 * 1024]), flags: 0 };
        let b = batches(vec![hundred_k(), hundred_k(), huge.clone(), hundred_k(), hundred_k()]);
        assert_eq!(b.singles, vec![huge]);
        assert_eq!(b.transactions.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        for t in &b.transactions {
            assert!(t.iter().map(Write::wire_size).sum::<usize>() <= TXN_BODY_BUDGET);
        }
    }
}
