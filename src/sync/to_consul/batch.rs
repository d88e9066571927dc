//! Packing changes into Consul transactions (pure). An instance's service and check (an
//! instance that is not ready has one) always travel in one transaction, so no reader
//! ever sees such an instance without its check (which Consul would count as passing). Each instance goes to its node
//! ([`SyncIdentity::node_of`]), which must be registered before (see [`nodes_to_register`]).
//! Batches are built lazily, as the writer takes them: an operation is about 0.5 KiB, and
//! an initial sync of 10,000 instances built up front held 10 MiB of them at once.
use super::diff::Change;
use crate::consul::{MAX_TXN_OPS, TxnOp};
use crate::sync::SyncIdentity;
use std::collections::{BTreeSet, VecDeque};

/// One transaction: the changes it carries (to record on commit) and its operations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub ops: Vec<TxnOp>,
}

/// The sync's nodes that `changes` write to and that are not in `existing`.
pub fn nodes_to_register(identity: &SyncIdentity, existing: &BTreeSet<String>, changes: &[Change]) -> BTreeSet<String> {
    changes.iter().filter(|c| c.writes()).map(|c| identity.node_of(c.id())).filter(|n| !existing.contains(n)).collect()
}

/// Splits `changes` into transactions of at most `max_ops` operations (capped at
/// Consul's [`MAX_TXN_OPS`]), never splitting one change, keeping the order. A run of
/// consecutive changes of one `group` (one Service) is kept in one transaction when it
/// fits one, so a Service is written whole or not at all (a refused operation holds
/// back its whole Service, see `commit_isolating`); a larger run fills transactions.
pub fn batches<G: PartialEq>(
    identity: SyncIdentity,
    changes: Vec<Change>,
    max_ops: usize,
    group: impl Fn(&Change) -> G,
) -> impl Iterator<Item = Batch> {
    let max_ops = max_ops.clamp(3, MAX_TXN_OPS);
    let mut pending: VecDeque<Change> = changes.into();
    std::iter::from_fn(move || {
        let mut batch = Batch::default();
        while let Some(first) = pending.front() {
            let g = group(first);
            let run = pending.iter().take_while(|c| group(c) == g).count();
            let run_ops: usize = pending.iter().take(run).map(Change::op_count).sum();
            if !batch.ops.is_empty() && batch.ops.len() + run_ops > max_ops && run_ops <= max_ops {
                break;
            }
            for _ in 0..run {
                let Some(change) = pending.front() else { break };
                if !batch.ops.is_empty() && batch.ops.len() + change.op_count() > max_ops {
                    return Some(batch);
                }
                batch.ops.extend(change.ops(&identity.node_of(change.id())));
                batch.changes.extend(pending.pop_front());
            }
        }
        (!batch.changes.is_empty()).then_some(batch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::CheckStatus;
    use crate::sync::to_consul::desired::Instance;

    fn upsert(i: usize) -> Change {
        Change::Upsert {
            instance: Instance {
                id: format!("i{i}"),
                name: "s".into(),
                tags: Default::default(),
                address: "10.0.0.1".into(),
                port: 80,
                meta: Default::default(),
                status: CheckStatus::Passing,
                output: "".into(),
            },
            service: true,
            check: true,
        }
    }

    fn me() -> SyncIdentity {
        SyncIdentity::new("me")
    }

    fn all(changes: Vec<Change>, max_ops: usize) -> Vec<Batch> {
        batches(me(), changes, max_ops, |_| ()).collect()
    }

    #[test]
    fn a_services_changes_stay_in_one_transaction_when_they_fit() {
        // Groups of 3 changes (6 ops) by i / 3: a 64-op transaction takes 10 groups (60
        // ops), not 32 changes that would split the eleventh.
        let changes: Vec<Change> = (0..40).map(upsert).collect();
        let group = |c: &Change| c.id()[1..].parse::<usize>().expect("number") / 3;
        let b: Vec<Batch> = batches(me(), changes, 64, group).collect();
        assert_eq!(b.iter().map(|b| b.ops.len()).collect::<Vec<_>>(), [60, 20]);
        for batch in &b {
            let groups: BTreeSet<usize> = batch.changes.iter().map(group).collect();
            for other in b.iter().filter(|o| *o != batch) {
                assert!(other.changes.iter().all(|c| !groups.contains(&group(c))), "a group was split");
            }
        }
        // A group larger than a transaction fills transactions in order.
        let big: Vec<Batch> = batches(me(), (0..40).map(upsert).collect(), 64, |_| 0).collect();
        assert_eq!(big.iter().map(|b| b.ops.len()).collect::<Vec<_>>(), [64, 16]);
    }

    #[test]
    fn packs_up_to_64_ops_without_splitting_an_instance() {
        let mut changes: Vec<Change> = (0..40).map(upsert).collect();
        changes.push(Change::Delete { id: "old".into(), name: "s".into() });
        let b = all(changes, 64);
        assert_eq!(b.iter().map(|b| b.ops.len()).collect::<Vec<_>>(), [64, 17]);
        assert_eq!(b[0].changes.len(), 32);
        assert_eq!(b[1].changes.last(), Some(&Change::Delete { id: "old".into(), name: "s".into() }));
        assert!(b.iter().all(|b| b.ops.len() <= MAX_TXN_OPS));
    }

    #[test]
    fn odd_limits_still_keep_pairs_together() {
        let b = all((0..3).map(upsert).collect(), 3);
        assert_eq!(b.iter().map(|b| b.ops.len()).collect::<Vec<_>>(), [2, 2, 2]);
        assert!(all(vec![], 64).is_empty());
    }

    #[test]
    fn instances_go_to_their_node_and_new_nodes_are_named_once() {
        for batch in all((0..100).map(upsert).collect(), 64) {
            for op in &batch.ops {
                match op {
                    TxnOp::ServiceSet { node, service } => assert_eq!(node, &me().node_of(&service.id)),
                    TxnOp::CheckSet(c) => assert_eq!(c.node, me().node_of(&c.service_id)),
                    TxnOp::CheckDelete { node, check_id } => {
                        assert_eq!(node, &me().node_of(check_id.trim_end_matches("/ready")))
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        let changes: Vec<Change> = (0..100).map(upsert).collect();
        let every = nodes_to_register(&me(), &BTreeSet::new(), &changes);
        assert_eq!(every.len(), crate::sync::SYNC_NODES as usize);
        let known: BTreeSet<String> = every.iter().skip(3).cloned().collect();
        assert_eq!(nodes_to_register(&me(), &known, &changes), every.iter().take(3).cloned().collect());
        // Deletes need no node.
        let deletes: Vec<Change> = (0..10).map(|i| Change::Delete { id: format!("i{i}"), name: "s".into() }).collect();
        assert!(nodes_to_register(&me(), &BTreeSet::new(), &deletes).is_empty());
    }
}
