//! Packing changes into Consul transactions (pure). An instance's service and check
//! always travel in one transaction, so no reader ever sees an instance without its
//! check (which Consul would count as passing). Each instance goes to its node
//! ([`SyncIdentity::node_of`]); a transaction that writes to a node not known to exist
//! registers it first, itself: transactions run in parallel, so none may rely on
//! another's node.
use super::diff::Change;
use super::sync_node;
use crate::consul::{MAX_TXN_OPS, TxnOp};
use crate::sync::SyncIdentity;
use std::collections::BTreeSet;

/// One transaction: the changes it carries (to record on commit), its operations, and the
/// nodes it registers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub ops: Vec<TxnOp>,
    pub nodes: BTreeSet<String>,
}

/// Splits `changes` into transactions of at most `max_ops` operations (capped at
/// Consul's [`MAX_TXN_OPS`]), never splitting one change, keeping the order. `existing`:
/// the sync's nodes known to be registered.
pub fn batches(
    identity: &SyncIdentity,
    existing: &BTreeSet<String>,
    changes: Vec<Change>,
    max_ops: usize,
) -> Vec<Batch> {
    let max_ops = max_ops.clamp(4, MAX_TXN_OPS);
    let mut out = Vec::new();
    let mut current = Batch::default();
    for change in changes {
        let node = identity.node_of(change.id());
        let ops = change.ops(&node);
        if ops.is_empty() {
            continue;
        }
        let register = |b: &Batch| change.writes() && !existing.contains(&node) && !b.nodes.contains(&node);
        if current.ops.len() + ops.len() + usize::from(register(&current)) > max_ops && !current.ops.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        if register(&current) {
            current.ops.push(TxnOp::NodeSet(sync_node(identity, &node)));
            current.nodes.insert(node);
        }
        current.ops.extend(ops);
        current.changes.push(change);
    }
    if !current.ops.is_empty() {
        out.push(current);
    }
    out
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
                tags: vec![],
                address: "10.0.0.1".into(),
                port: 80,
                meta: Default::default(),
                status: CheckStatus::Passing,
                output: String::new(),
            },
            service: true,
            check: true,
        }
    }

    fn me() -> SyncIdentity {
        SyncIdentity::new("me")
    }

    /// Every node the sync may use: none needs registering.
    fn all_nodes() -> BTreeSet<String> {
        (0..10_000).map(|i| me().node_of(&format!("i{i}"))).collect()
    }

    #[test]
    fn packs_up_to_64_ops_without_splitting_an_instance() {
        let mut changes: Vec<Change> = (0..40).map(upsert).collect();
        changes.push(Change::Delete { id: "old".into(), name: "s".into() });
        let b = batches(&me(), &all_nodes(), changes, 64);
        assert_eq!(b.iter().map(|b| b.ops.len()).collect::<Vec<_>>(), [64, 17]);
        assert_eq!(b[0].changes.len(), 32);
        assert_eq!(b[1].changes.last(), Some(&Change::Delete { id: "old".into(), name: "s".into() }));
        assert!(b.iter().all(|b| b.ops.len() <= MAX_TXN_OPS && b.nodes.is_empty()));
    }

    #[test]
    fn odd_limits_still_keep_pairs_together() {
        let b = batches(&me(), &all_nodes(), (0..3).map(upsert).collect(), 5);
        assert_eq!(b.iter().map(|b| b.ops.len()).collect::<Vec<_>>(), [4, 2]);
        assert!(batches(&me(), &all_nodes(), vec![], 64).is_empty());
    }

    #[test]
    fn instances_go_to_their_node_and_each_transaction_registers_the_new_nodes_it_writes_to() {
        let b = batches(&me(), &BTreeSet::new(), (0..100).map(upsert).collect(), 64);
        let mut registered_before: BTreeSet<String> = BTreeSet::new();
        for batch in &b {
            assert!(batch.ops.len() <= MAX_TXN_OPS);
            let mut here = BTreeSet::new();
            for op in &batch.ops {
                match op {
                    TxnOp::NodeSet(n) => {
                        assert_eq!(n.meta.get(crate::sync::META_SYNC).map(String::as_str), Some("me"));
                        here.insert(n.node.clone());
                    }
                    TxnOp::ServiceSet { node, service } => {
                        assert_eq!(node, &me().node_of(&service.id));
                        assert!(here.contains(node), "node registered earlier in the same transaction");
                    }
                    TxnOp::CheckSet(c) => assert_eq!(c.node, me().node_of(&c.service_id)),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(here, batch.nodes);
            registered_before.extend(here);
        }
        assert_eq!(registered_before.len(), crate::sync::SYNC_NODES as usize);
        // Known nodes are not registered again, and deletes never register one.
        let known: BTreeSet<String> = registered_before;
        let again = batches(&me(), &known, (0..100).map(upsert).collect(), 64);
        assert!(again.iter().all(|b| b.nodes.is_empty()));
        let deletes = (0..10).map(|i| Change::Delete { id: format!("i{i}"), name: "s".into() }).collect();
        assert!(batches(&me(), &BTreeSet::new(), deletes, 64).iter().all(|b| b.nodes.is_empty()));
    }
}
