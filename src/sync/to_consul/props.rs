//! Properties of the catalog planner ([`diff::owned_instances`] + [`diff::diff`]) over
//! random catalogs holding our instances and someone else's, applied to a model of one
//! Consul node (services by ID, each with its check if it has one: a ready instance has
//! none):
//! - it never touches what it does not own: someone else's instances come out
//!   unchanged, whatever they are;
//! - the result equals the declared state: our instances read back are the desired ones;
//! - applying a plan twice changes nothing: planning again on the result is empty.
use super::desired::Instance;
use super::diff::{self, Change};
use crate::consul::{CheckStatus, HealthCheck, NodeService};
use crate::sync::{META_K8S_NAMESPACE, META_K8S_SERVICE, META_SYNC, SyncIdentity};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

const NODE: &str = "k8s-sync-me-00";

fn me() -> SyncIdentity {
    SyncIdentity::new("me")
}

/// One node of the catalog: service ID → (service, its check if any).
type Node = BTreeMap<String, (NodeService, Option<HealthCheck>)>;

fn status() -> impl Strategy<Value = CheckStatus> {
    prop_oneof![
        Just(CheckStatus::Passing),
        Just(CheckStatus::Warning),
        Just(CheckStatus::Critical),
        Just(CheckStatus::Maintenance)
    ]
}

/// One of ours, as the sync would want it (IDs from a small set, so desired and actual
/// overlap often).
fn our_instance() -> impl Strategy<Value = Instance> {
    (0..8u8, 0..3u8, prop::collection::vec("[a-c]{1,2}", 0..3), 0..3u8, 1..4u16, status(), "[a-z ]{0,6}").prop_map(
        |(id, svc, tags, addr, port, status, output)| Instance {
            id: format!("i{id}"),
            name: format!("svc{svc}"),
            tags: Arc::new(tags),
            address: format!("10.0.0.{addr}"),
            port,
            meta: Arc::new(
                [
                    (META_SYNC.to_string(), me().as_str().to_string()),
                    (META_K8S_NAMESPACE.to_string(), "ns".to_string()),
                    (META_K8S_SERVICE.to_string(), format!("svc{svc}")),
                ]
                .into(),
            ),
            status,
            output: output.into(),
        },
    )
}

fn instances(max: usize) -> impl Strategy<Value = BTreeMap<String, Instance>> {
    prop::collection::vec(our_instance(), 0..max).prop_map(|v| v.into_iter().map(|i| (i.id.clone(), i)).collect())
}

/// Someone else's registration on the node: another sync's identity, or none at all, with
/// or without a check (IDs outside ours: a service ID is unique on a node).
fn foreign() -> impl Strategy<Value = (NodeService, Option<HealthCheck>)> {
    (0..8u8, prop::option::of("[a-z]{1,5}"), 1..9u16, any::<bool>(), status()).prop_map(
        |(id, owner, port, checked, status)| {
            let id = format!("f{id}");
            let mut meta = BTreeMap::new();
            if let Some(owner) = owner {
                meta.insert(META_SYNC.to_string(), format!("other-{owner}"));
            }
            let service = NodeService { id: id.clone(), service: "theirs".into(), port, meta, ..Default::default() };
            let check = checked.then(|| HealthCheck {
                node: NODE.into(),
                check_id: super::desired::check_id(&id),
                status,
                service_id: id,
                ..Default::default()
            });
            (service, check)
        },
    )
}

fn node_of(ours: &BTreeMap<String, Instance>, theirs: &[(NodeService, Option<HealthCheck>)]) -> Node {
    let mut node: Node = theirs.iter().map(|(s, c)| (s.id.clone(), (s.clone(), c.clone()))).collect();
    for i in ours.values() {
        node.insert(i.id.clone(), (i.node_service(), i.needs_check().then(|| i.health_check(NODE))));
    }
    node
}

fn owned(node: &Node) -> BTreeMap<String, Instance> {
    let services: Vec<NodeService> = node.values().map(|(s, _)| s.clone()).collect();
    let checks: Vec<HealthCheck> = node.values().filter_map(|(_, c)| c.clone()).collect();
    diff::owned_instances(&me(), &services, &checks)
}

/// What Consul does with the plan's operations on this node.
fn apply(node: &mut Node, changes: &[Change]) {
    for change in changes {
        match change {
            Change::Upsert { instance, service, check } => {
                let entry = node.entry(instance.id.clone()).or_insert_with(|| (instance.node_service(), None));
                if *service {
                    entry.0 = instance.node_service();
                }
                if *check {
                    entry.1 = instance.needs_check().then(|| instance.health_check(NODE));
                }
            }
            Change::Delete { id, .. } => {
                node.remove(id);
            }
            Change::Move { instance, .. } => {
                node.insert(
                    instance.id.clone(),
                    (instance.node_service(), instance.needs_check().then(|| instance.health_check(NODE))),
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_catalog_plan_touches_only_ours_and_converges_in_one_pass(
        desired in instances(8),
        actual in instances(8),
        theirs in prop::collection::vec(foreign(), 0..6),
        // Some of ours lost their check (a crash between two writes).
        unchecked in prop::collection::vec(0..8u8, 0..3),
    ) {
        let mut node = node_of(&actual, &theirs);
        for id in unchecked {
            if let Some(entry) = node.get_mut(&format!("i{id}")) {
                entry.1 = None;
            }
        }
        let foreign_before: Node = node.iter().filter(|(id, _)| id.starts_with('f')).map(|(k, v)| (k.clone(), v.clone())).collect();

        let plan = diff::diff(&desired, &owned(&node));
        for change in &plan {
            prop_assert!(change.id().starts_with('i'), "the plan touches {}", change.id());
        }
        apply(&mut node, &plan);

        let foreign_after: Node = node.iter().filter(|(id, _)| id.starts_with('f')).map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(&foreign_after, &foreign_before, "someone else's instances changed");
        prop_assert_eq!(&owned(&node), &desired, "the result is not the declared state");
        let again = diff::diff(&desired, &owned(&node));
        prop_assert!(again.is_empty(), "a second pass still changes {:?}", again);
    }
}
