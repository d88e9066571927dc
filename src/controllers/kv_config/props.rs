//! Properties of the KV planner ([`plan::plan`]) over random prefixes holding keys of
//! this object, of other concord objects and of nobody (hand-written), applied with
//! Consul's check-and-set semantics to a model KV store:
//! - it never touches what it does not own: keys another concord object owns, and keys
//!   it does not declare that are not its own, come out unchanged;
//! - the result equals the declared state: every declared key another object does not
//!   own holds the declared value with this object's flags (with `Enforce`), and with
//!   `prune` none of its own undeclared keys is left;
//! - applying a plan twice changes nothing: planning again on the result writes nothing.
use super::desired::Value;
use super::plan::{self, Actual, Policy, Write, owner_flags};
use crate::consul::ConsulIndex;
use crate::resources::DriftPolicy;
use bytes::Bytes;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Key → (value, flags, modify index).
type Store = BTreeMap<String, (Value, u64, u64)>;

fn ours() -> u64 {
    owner_flags("ns", "me")
}

fn other() -> u64 {
    owner_flags("ns", "someone-else")
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![Just("a"), Just("b"), Just("")].prop_map(|v| Value(Bytes::from_static(v.as_bytes())))
}

/// Who wrote a key: us, another concord object, nobody (flags 0), or a tool's own flags.
fn flags() -> impl Strategy<Value = u64> {
    prop_oneof![Just(ours()), Just(other()), Just(0u64), Just(7u64)]
}

fn key() -> impl Strategy<Value = String> {
    (0..8u8).prop_map(|k| format!("app/k{k}"))
}

fn store() -> impl Strategy<Value = Store> {
    prop::collection::btree_map(key(), (value(), flags(), 1..100u64), 0..8)
}

fn actual(store: &Store) -> Vec<Actual> {
    store
        .iter()
        .map(|(k, (v, f, i))| Actual { key: k.clone(), value: v.clone(), flags: *f, modify_index: ConsulIndex(*i) })
        .collect()
}

/// Applies the writes as Consul's check-and-set does; every one must succeed (nothing
/// else writes meanwhile).
fn apply(store: &mut Store, writes: &[Write], next_index: &mut u64) -> Result<(), String> {
    for w in writes {
        *next_index += 1;
        match w {
            Write::Create { key, value, flags } => {
                if store.contains_key(key) {
                    return Err(format!("create of existing {key}"));
                }
                store.insert(key.clone(), (value.clone(), *flags, *next_index));
            }
            Write::Update { key, value, flags, index } => match store.get(key) {
                Some((_, _, i)) if *i == index.0 => {
                    store.insert(key.clone(), (value.clone(), *flags, *next_index));
                }
                _ => return Err(format!("stale update of {key}")),
            },
            Write::Delete { key, index } => match store.get(key) {
                Some((_, _, i)) if *i == index.0 => {
                    store.remove(key);
                }
                _ => return Err(format!("stale delete of {key}")),
            },
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_kv_plan_touches_only_what_it_may_and_converges_in_one_pass(
        desired in prop::collection::btree_map(key(), value(), 0..8),
        mut store in store(),
        prune in any::<bool>(),
        enforce in any::<bool>(),
    ) {
        let (unclaimed, no_overrides) = (BTreeSet::new(), BTreeSet::new());
        let policy = Policy {
            owner_flags: ours(),
            drift: if enforce { DriftPolicy::Enforce } else { DriftPolicy::Report },
            prune,
            claimed_elsewhere: &unclaimed,
            overridable_flags: &no_overrides,
        };
        let before = store.clone();
        let first = plan::plan(&desired, &actual(&store), &policy);
        let mut index = 1000;
        apply(&mut store, &first.writes, &mut index).map_err(TestCaseError::fail)?;

        for (key, was) in &before {
            let untouchable = was.1 == other() || (!desired.contains_key(key) && was.1 != ours());
            if untouchable {
                prop_assert_eq!(store.get(key), Some(was), "{} is not ours to change", key);
            }
        }
        for (key, want) in &desired {
            let foreign = before.get(key).is_some_and(|(_, f, _)| *f == other());
            let drift_left = !enforce && before.get(key).is_some_and(|(v, f, _)| *f != ours() && v != want && *f != other());
            if foreign || drift_left {
                continue;
            }
            prop_assert_eq!(store.get(key).map(|(v, f, _)| (v, *f)), Some((want, ours())), "{} not as declared", key);
        }
        if prune {
            for (key, (_, f, _)) in &store {
                prop_assert!(desired.contains_key(key) || *f != ours(), "{} should have been pruned", key);
            }
        }
        let second = plan::plan(&desired, &actual(&store), &policy);
        prop_assert!(second.writes.is_empty(), "a second pass still writes {:?}", second.writes);
    }
}
