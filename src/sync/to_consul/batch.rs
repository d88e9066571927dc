//! Packing changes into Consul transactions (pure). An instance's service and check
//! always travel in one transaction, so no reader ever sees an instance without its
//! check (which Consul would count as passing).
use super::diff::Change;
use crate::consul::{MAX_TXN_OPS, TxnOp};

/// One transaction: the changes it carries (to record on commit) and its operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub ops: Vec<TxnOp>,
}

/// Splits `changes` into transactions of at most `max_ops` operations (capped at
/// Consul's [`MAX_TXN_OPS`]), never splitting one change, keeping the order.
pub fn batches(node: &str, changes: Vec<Change>, max_ops: usize) -> Vec<Batch> {
    let max_ops = max_ops.clamp(2, MAX_TXN_OPS);
    let mut out = Vec::new();
    let mut current = Batch { changes: Vec::new(), ops: Vec::new() };
    for change in changes {
        let ops = change.ops(node);
        if ops.is_empty() {
            continue;
        }
        if current.ops.len() + ops.len() > max_ops && !current.ops.is_empty() {
            out.push(std::mem::replace(&mut current, Batch { changes: Vec::new(), ops: Vec::new() }));
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

    #[test]
    fn packs_up_to_64_ops_without_splitting_an_instance() {
        let mut changes: Vec<Change> = (0..40).map(upsert).collect();
        changes.push(Change::Delete { id: "old".into(), name: "s".into() });
        let b = batches("n", changes, 64);
        assert_eq!(b.iter().map(|b| b.ops.len()).collect::<Vec<_>>(), [64, 17]);
        assert_eq!(b[0].changes.len(), 32);
        assert_eq!(b[1].changes.last(), Some(&Change::Delete { id: "old".into(), name: "s".into() }));
        assert!(b.iter().all(|b| b.ops.len() <= MAX_TXN_OPS));
    }

    #[test]
    fn odd_limits_still_keep_pairs_together() {
        let b = batches("n", (0..3).map(upsert).collect(), 3);
        assert_eq!(b.iter().map(|b| b.ops.len()).collect::<Vec<_>>(), [2, 2, 2]);
        assert!(batches("n", vec![], 64).is_empty());
    }
}
