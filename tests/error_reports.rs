//! Every failure that reaches `error_policy` is reported on its object, against the real
//! kube-apiserver and Consul: a ConfigTemplate whose DiscoveryCluster does not exist gets
//! `Rendered=False` (ClusterUnavailable) and a Warning Event; a DiscoveryCluster whose
//! token Secret is missing gets `Degraded=True` (ConsulClientFailed) and a Warning Event.
//! Before, both only retried with backoff and said nothing on the object.
mod support;

use concord::resources::{ConfigTemplate, DiscoveryCluster, find_condition, types};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;
use support::{eventually, install_crds, start_controller};

const WAIT: Duration = Duration::from_secs(30);

async fn warning_notes(client: &kube::Client, ns: &str, object: &str, reason: &str) -> Vec<String> {
    let api = Api::<Event>::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_template_whose_cluster_is_missing_says_so_in_a_condition_and_an_event() {
    let kube_env = testenv::shared_kube().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("ct-report").await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;
    let obj = json!({"apiVersion": "concord.io/v1alpha1", "kind": "ConfigTemplate",
        "metadata": {"name": "orphan", "namespace": ns},
        "spec": {"clusterRef": "nowhere", "template": {"inline": "x\n"},
                 "output": {"configMap": {"name": "orphan-out", "key": "v"}}}});
    let api: Api<ConfigTemplate> = Api::namespaced(client.clone(), &ns);
    api.patch("orphan", &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.expect("applied");
    let ct = eventually("Rendered=False ClusterUnavailable", WAIT, || async {
        let ct = api.get("orphan").await.ok()?;
        let c = find_condition(&ct.status.as_ref()?.conditions, types::RENDERED)?;
        (c.status == "False" && c.reason == "ClusterUnavailable").then_some(ct.clone())
    })
    .await;
    let status = ct.status.expect("status");
    let c = find_condition(&status.conditions, types::RENDERED).expect("condition");
    assert!(c.message.contains("nowhere") && c.message.contains("not found"), "{}", c.message);
    assert_eq!(c.observed_generation, ct.metadata.generation);
    let notes = eventually("a Warning Event", WAIT, || async {
        let notes = warning_notes(&client, &ns, "orphan", "ClusterUnavailable").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    assert!(notes[0].contains("nowhere"), "{notes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_cluster_whose_token_secret_is_missing_is_degraded_with_an_event() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("dc-report").await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;
    let obj = json!({"apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": {"name": "consul", "namespace": ns},
        "spec": {"external": {"address": consul_env.http_addrs().join(","),
                              "tokenSecretRef": {"name": "no-such-secret", "key": "token"}}}});
    let api: Api<DiscoveryCluster> = Api::namespaced(client.clone(), &ns);
    api.patch("consul", &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.expect("applied");
    let dc = eventually("Degraded=True ConsulClientFailed", WAIT, || async {
        let dc = api.get("consul").await.ok()?;
        let c = find_condition(&dc.status.as_ref()?.conditions, types::DEGRADED)?;
        (c.status == "True" && c.reason == "ConsulClientFailed").then_some(dc.clone())
    })
    .await;
    let c = find_condition(&dc.status.as_ref().expect("status").conditions, types::DEGRADED).expect("condition");
    assert!(c.message.contains("no-such-secret"), "{}", c.message);
    let notes = eventually("a Warning Event", WAIT, || async {
        let notes = warning_notes(&client, &ns, "consul", "ConsulClientFailed").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    assert!(notes[0].contains("no-such-secret"), "{notes:?}");
}
