//! Desired instances vs what the catalog holds (pure): the changes that make them equal,
//! touching only instances this sync owns.
use super::desired::Instance;
use crate::consul::{HealthCheck, NodeService, TxnOp};
use crate::sync::{META_SYNC, SyncIdentity};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// One change to one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Write the instance; `service`/`check` say which half differs (both for a new one).
    Upsert { instance: Instance, service: bool, check: bool },
    /// `name` too: Consul wants the service name with the ID when deleting.
    Delete { id: String, name: String },
    /// Write the instance on its node and delete it from node `from`, in one transaction
    /// (instances found on another node than [`SyncIdentity::node_of`] names, e.g. left by
    /// an older layout): readers never see it missing or twice.
    Move { instance: Instance, from: String },
}

impl Change {
    pub fn id(&self) -> &str {
        match self {
            Change::Upsert { instance, .. } | Change::Move { instance, .. } => &instance.id,
            Change::Delete { id, .. } => id,
        }
    }

    /// Whether this change writes to its node (which must then exist).
    pub fn writes(&self) -> bool {
        !matches!(self, Change::Delete { .. })
    }

    /// How many operations [`Self::ops`] makes.
    pub fn op_count(&self) -> usize {
        match self {
            Change::Upsert { service, check, .. } => usize::from(*service) + usize::from(*check),
            Change::Delete { .. } => 1,
            Change::Move { instance, .. } => 2 + usize::from(instance.needs_check()),
        }
    }

    /// The transaction operations of this change on `node`, in the order Consul needs
    /// them (a check refers to its service).
    pub fn ops(&self, node: &str) -> Vec<TxnOp> {
        match self {
            Change::Upsert { instance, service, check } => {
                let mut ops = Vec::with_capacity(2);
                if *service {
                    ops.push(TxnOp::ServiceSet { node: node.to_string(), service: instance.node_service() });
                }
                // A ready instance has no check (see `Instance::needs_check`): the
                // change to ready deletes the one it had.
                if *check && instance.needs_check() {
                    ops.push(TxnOp::CheckSet(instance.health_check(node)));
                } else if *check {
                    ops.push(TxnOp::CheckDelete { node: node.to_string(), check_id: instance.check_id() });
                }
                ops
            }
            // Deleting a service deletes its checks too.
            Change::Delete { id, name } => vec![TxnOp::ServiceDelete {
                node: node.to_string(),
                service_id: id.clone(),
                service_name: name.clone(),
            }],
            Change::Move { instance, from } => {
                let mut ops = vec![TxnOp::ServiceSet { node: node.to_string(), service: instance.node_service() }];
                if instance.needs_check() {
                    ops.push(TxnOp::CheckSet(instance.health_check(node)));
                }
                // Deleting the service on the old node deletes its check there too.
                ops.push(TxnOp::ServiceDelete {
                    node: from.clone(),
                    service_id: instance.id.clone(),
                    service_name: instance.name.clone(),
                });
                ops
            }
        }
    }
}

/// The changes that turn `actual` into `desired` (both keyed by service ID).
pub fn diff(desired: &BTreeMap<String, Instance>, actual: &BTreeMap<String, Instance>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (id, want) in desired {
        match actual.get(id) {
            None => changes.push(Change::Upsert { instance: want.clone(), service: true, check: want.needs_check() }),
            Some(have) => {
                let service = have.name != want.name
                    || have.tags != want.tags
                    || have.address != want.address
                    || have.port != want.port
                    || have.meta != want.meta;
                let check = have.status != want.status || have.output != want.output;
                if service || check {
                    changes.push(Change::Upsert { instance: want.clone(), service, check });
                }
            }
        }
    }
    for (id, have) in actual {
        if !desired.contains_key(id) {
            changes.push(Change::Delete { id: id.clone(), name: have.name.clone() });
        }
    }
    changes
}

/// The instances on one of the sync's nodes that carry its identity, with their checks.
/// Anything else on the node (someone else's registration) is left out, so it is never
/// touched.
pub fn owned_instances(
    identity: &SyncIdentity,
    services: &[NodeService],
    checks: &[HealthCheck],
) -> BTreeMap<String, Instance> {
    let by_id: HashMap<&str, &HealthCheck> = checks.iter().map(|c| (c.check_id.as_str(), c)).collect();
    // Instances of one Service carry equal meta and tags: one shared copy each.
    let mut metas: HashSet<Arc<BTreeMap<String, String>>> = HashSet::new();
    let mut tags: HashSet<Arc<Vec<String>>> = HashSet::new();
    services
        .iter()
        .filter(|s| s.meta.get(META_SYNC).map(String::as_str) == Some(identity.as_str()))
        .map(|s| {
            let check = by_id.get(super::desired::check_id(&s.id).as_str()).copied();
            let mut instance = Instance::from_catalog(s, check);
            instance.meta = intern(&mut metas, instance.meta);
            instance.tags = intern(&mut tags, instance.tags);
            (s.id.clone(), instance)
        })
        .collect()
}

fn intern<T: Eq + std::hash::Hash>(seen: &mut HashSet<Arc<T>>, value: Arc<T>) -> Arc<T> {
    match seen.get(&value) {
        Some(shared) => shared.clone(),
        None => {
            seen.insert(value.clone());
            value
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::CheckStatus;
    use crate::sync::META_SYNC;

    fn inst(id: &str, port: u16, status: CheckStatus) -> Instance {
        Instance {
            id: id.into(),
            name: "api".into(),
            tags: std::sync::Arc::new(vec!["v1".into()]),
            address: "10.0.0.1".into(),
            port,
            meta: std::sync::Arc::new([(META_SYNC.to_string(), "me".to_string())].into()),
            status,
            output: "".into(),
        }
    }

    /// A ready instance, as `service_instances` makes it: registered without a check.
    fn ready(id: &str, port: u16) -> Instance {
        Instance { output: super::super::desired::READY_OUTPUT.into(), ..inst(id, port, CheckStatus::Passing) }
    }

    fn map(v: Vec<Instance>) -> BTreeMap<String, Instance> {
        v.into_iter().map(|i| (i.id.clone(), i)).collect()
    }

    #[test]
    fn finds_gaps_orphans_and_changed_halves() {
        let desired = map(vec![
            inst("a", 1, CheckStatus::Passing),
            inst("b", 2, CheckStatus::Critical),
            inst("c", 3, CheckStatus::Passing),
        ]);
        let actual = map(vec![
            inst("b", 2, CheckStatus::Passing),
            inst("c", 4, CheckStatus::Passing),
            inst("z", 9, CheckStatus::Passing),
        ]);
        let changes = diff(&desired, &actual);
        assert_eq!(changes.len(), 4);
        // A new instance: its service, and a check only when it is not ready.
        assert!(matches!(&changes[0], Change::Upsert { instance, service: true, check: true } if instance.id == "a"));
        let ready = map(vec![ready("a", 1)]);
        assert!(matches!(&diff(&ready, &BTreeMap::new())[..], [Change::Upsert { service: true, check: false, .. }]));
        assert!(matches!(&changes[1], Change::Upsert { instance, service: false, check: true } if instance.id == "b"));
        assert!(matches!(&changes[2], Change::Upsert { instance, service: true, check: false } if instance.id == "c"));
        assert_eq!(changes[3], Change::Delete { id: "z".into(), name: "api".into() });
        assert!(diff(&desired, &desired).is_empty());
    }

    #[test]
    fn a_ready_instance_has_no_check_and_becoming_ready_deletes_it() {
        let r = ready("a", 1);
        assert!(!r.needs_check());
        let new = Change::Upsert { instance: r.clone(), service: true, check: false };
        assert!(matches!(&new.ops("n")[..], [TxnOp::ServiceSet { .. }]));
        assert_eq!(new.op_count(), 1);
        // Not ready → ready: the critical check goes.
        let critical = Instance { output: "endpoint not ready".into(), ..inst("a", 1, CheckStatus::Critical) };
        let changes = diff(&map(vec![r.clone()]), &map(vec![critical.clone()]));
        assert_eq!(changes.len(), 1);
        assert!(
            matches!(&changes[0].ops("n")[..], [TxnOp::CheckDelete { node, check_id }] if node == "n" && check_id == "a/ready")
        );
        // Ready → not ready: a critical check is set.
        let changes = diff(&map(vec![critical.clone()]), &map(vec![r.clone()]));
        assert!(matches!(&changes[0].ops("n")[..], [TxnOp::CheckSet(c)] if c.status == CheckStatus::Critical));
        // What the catalog holds without a check reads back as ready: nothing to do.
        let back = Instance::from_catalog(&r.node_service(), None);
        assert_eq!(back, r);
        // A move of a ready instance carries no check.
        let ops = Change::Move { instance: r, from: "old".into() }.ops("new");
        assert!(matches!(&ops[..], [TxnOp::ServiceSet { .. }, TxnOp::ServiceDelete { .. }]));
    }

    #[test]
    fn a_move_writes_the_new_place_before_deleting_the_old_one() {
        let i = inst("a", 1, CheckStatus::Passing);
        let ops = Change::Move { instance: i, from: "old".into() }.ops("new");
        assert_eq!(ops.len(), 3);
        assert!(matches!(&ops[0], TxnOp::ServiceSet { node, .. } if node == "new"));
        assert!(matches!(&ops[1], TxnOp::CheckSet(c) if c.node == "new"));
        assert!(matches!(&ops[2], TxnOp::ServiceDelete { node, service_id, .. } if node == "old" && service_id == "a"));
        assert!(!Change::Delete { id: "a".into(), name: "api".into() }.writes());
    }

    #[test]
    fn a_new_instance_writes_its_service_before_its_check() {
        let ops = Change::Upsert { instance: inst("a", 1, CheckStatus::Critical), service: true, check: true }.ops("n");
        assert!(matches!(&ops[0], TxnOp::ServiceSet { node, service } if node == "n" && service.id == "a"));
        assert!(
            matches!(&ops[1], TxnOp::CheckSet(c) if c.check_id == "a/ready" && c.service_id == "a" && c.node == "n")
        );
    }

    #[test]
    fn only_instances_with_our_identity_are_owned() {
        let me = SyncIdentity::new("me");
        let mine = inst("a", 1, CheckStatus::Passing);
        let mut theirs = inst("b", 1, CheckStatus::Passing).node_service();
        theirs.meta.insert(META_SYNC.into(), "other".into());
        let mut untagged = inst("c", 1, CheckStatus::Passing).node_service();
        untagged.meta.clear();
        let owned = owned_instances(&me, &[mine.node_service(), theirs, untagged], &[mine.health_check("n")]);
        assert_eq!(owned.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(owned["a"], mine);
        // Equal meta read back is one shared copy.
        let (x, y) = (inst("x", 1, CheckStatus::Passing), inst("y", 2, CheckStatus::Passing));
        let owned = owned_instances(&me, &[x.node_service(), y.node_service()], &[]);
        assert!(Arc::ptr_eq(&owned["x"].meta, &owned["y"].meta));
        assert!(Arc::ptr_eq(&owned["x"].tags, &owned["y"].tags));
    }
}
