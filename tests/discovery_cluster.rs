//! Managed DiscoveryClusters against the real servers: kube-apiserver with
//! kube-controller-manager (so the StatefulSet controller creates claims and pods, and the
//! garbage collector deletes owned objects) and real Consul servers on loopback.
//!
//! There is no kubelet: pods are created but never run the Consul image, so
//! `readyReplicas` stays 0 unless a test plays kubelet and marks pods Ready itself. The
//! Consul that a managed cluster talks to is a local cluster started from concord's own
//! generated server config, reached through `--consul-address NAMESPACE/NAME=URL`.
mod support;

use concord::consul::{self, KvWriteOptions, QueryOptions};
use concord::controllers::discovery_cluster::build::{self, Inputs};
use concord::resources::{DiscoveryCluster, find_condition, types};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{eventually, install_crds, start_controller};
use testenv::{ConsulCluster, LoopbackServer};

const WAIT: Duration = Duration::from_secs(30);

/// Inputs for rendering the config of DiscoveryCluster `name` in `namespace`.
fn inputs(name: &str, namespace: &str, spec: Value) -> Inputs {
    let mut dc = DiscoveryCluster::new(name, serde_json::from_value(spec).expect("spec"));
    dc.metadata.namespace = Some(namespace.to_string());
    dc.metadata.uid = Some("test-uid".to_string());
    Inputs::new(&dc).expect("inputs")
}

/// concord's server config for `replicas` servers, adapted to loopback. Exactly these
/// keys are overridden, because a pod gets them from Kubernetes and a loopback process
/// cannot: `node_name` (the pod hostname `<name>-server-<i>`), `bind_addr`,
/// `advertise_addr` (`-advertise=$(POD_IP)` in the pod), `client_addr`, `ports.http`,
/// `ports.dns`, `ports.server`, `ports.serf_lan`, `ports.serf_wan` (free ports instead of
/// the fixed ones a pod IP allows), `data_dir` (a temp dir instead of the claim),
/// `retry_join` (loopback Serf addresses instead of the headless Service names), and
/// `encrypt` (the generated gossip key, `-encrypt=$(GOSSIP_KEY)` in the pod). Everything
/// else (`server`, `bootstrap_expect`, `datacenter`, `performance`, `autopilot`, `ui_config`,
/// `retry_interval`, `acl`, ...) is what the ConfigMap holds. With TLS (the default), the
/// certificate files are `tls`'s instead of the mounted Secret's, HTTPS is served on the
/// harness's API port, and plain HTTP (loopback-only in a pod) is off.
fn loopback_config(rendered: &Value, name: &str, gossip_key: &str, tls: &LoopbackTls, s: &LoopbackServer) -> Value {
    let mut config = rendered.clone();
    config["node_name"] = json!(build::server_node_name(name, s.index as i32));
    for key in ["bind_addr", "advertise_addr", "client_addr"] {
        config[key] = json!("127.0.0.1");
    }
    config["ports"]["http"] = json!(s.http);
    config["ports"]["dns"] = json!(s.dns);
    config["ports"]["server"] = json!(s.server);
    config["ports"]["serf_lan"] = json!(s.serf_lan);
    config["ports"]["serf_wan"] = json!(s.serf_wan);
    config["data_dir"] = json!(s.data_dir);
    config["retry_join"] = json!(s.serf_lan_addrs);
    config["encrypt"] = json!(gossip_key);
    if config.get("tls").is_some() {
        config["tls"]["defaults"]["ca_file"] = json!(tls.dir.join("ca.crt"));
        config["tls"]["defaults"]["cert_file"] = json!(tls.dir.join("tls.crt"));
        config["tls"]["defaults"]["key_file"] = json!(tls.dir.join("tls.key"));
        config["ports"]["https"] = json!(s.http);
        config["ports"]["http"] = json!(-1);
        if let Some(map) = config.as_object_mut() {
            map.remove("addresses");
        }
    }
    config
}

/// Certificate files for loopback servers: a CA and a server certificate made with
/// concord's own issuing code (`from_ca`), or taken from the Secret the controller issued
/// (`from_secret`). Removed when dropped.
struct LoopbackTls {
    ca: concord::cluster::tls::Ca,
    dir: std::path::PathBuf,
}

impl LoopbackTls {
    fn files(label: &str, ca_pem: &str, cert: &str, key: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("concord-dc-tls-{}-{label}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (file, text) in [("ca.crt", ca_pem), ("tls.crt", cert), ("tls.key", key)] {
            std::fs::write(dir.join(file), text).expect("write TLS file");
        }
        dir
    }

    /// A fresh CA for cluster `name` in `ns` and a server certificate it signed.
    fn from_ca(name: &str, ns: &str) -> Self {
        use concord::cluster::tls;
        let now = k8s_openapi::jiff::Timestamp::now();
        let ca = tls::new_ca(name, ns, now).expect("CA");
        let names = tls::server_names(name, ns, "dc1");
        let issued = tls::issue_server_cert(&ca, "test", name, ns, &names, now).expect("server certificate");
        let dir = Self::files(ns, &ca.cert_pem, &issued.cert_pem, &issued.key_pem);
        LoopbackTls { ca, dir }
    }

    /// The files of the controller's `<name>-server-tls` Secret.
    fn from_secret(label: &str, secret: &Secret) -> Self {
        let text =
            |key: &str| String::from_utf8(secret.data.as_ref().expect("data")[key].0.clone()).expect("PEM is UTF-8");
        let dir = Self::files(label, &text("ca.crt"), &text("tls.crt"), &text("tls.key"));
        LoopbackTls { ca: concord::cluster::tls::Ca { cert_pem: text("ca.crt"), key_pem: String::new() }, dir }
    }

    /// Puts the CA into `<name>-ca`, where the controller finds it (and then issues the
    /// servers' certificate from it instead of making a CA of its own).
    async fn install(&self, client: &kube::Client, ns: &str) {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "consul-ca", "namespace": ns },
            "type": "kubernetes.io/tls", "stringData": { "tls.crt": self.ca.cert_pem, "tls.key": self.ca.key_pem },
        });
        Api::<Secret>::namespaced(client.clone(), ns)
            .patch("consul-ca", &PatchParams::apply("concord-test").force(), &Patch::Apply(&secret))
            .await
            .expect("CA Secret");
    }
}

impl Drop for LoopbackTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback Consul started from concord's config for cluster `name` with `replicas`,
/// TLS on (the default) with a CA of the test's: [`LoopbackTls::install`] it before the
/// controller looks.
async fn consul_from_generated_config(name: &str, namespace: &str, replicas: i32) -> (ConsulCluster, LoopbackTls) {
    let rendered = build::server_config(&inputs(name, namespace, json!({ "replicas": replicas })), replicas);
    start_loopback(&rendered, name, LoopbackTls::from_ca(name, namespace), replicas).await
}

async fn start_loopback(rendered: &Value, name: &str, tls: LoopbackTls, replicas: i32) -> (ConsulCluster, LoopbackTls) {
    let key = build::new_gossip_key();
    let cluster = ConsulCluster::start_with_tls_configs(replicas as usize, tls.ca.cert_pem.clone(), |s| {
        loopback_config(rendered, name, &key, &tls, s)
    })
    .await
    .expect("Consul servers start from the generated config");
    (cluster, tls)
}

fn consul_client(cluster: &ConsulCluster) -> consul::Client {
    consul::Client::new(support::consul_config(cluster)).expect("client")
}

async fn apply_cluster(client: &kube::Client, ns: &str, spec: Value) {
    let api: Api<DiscoveryCluster> = Api::namespaced(client.clone(), ns);
    let obj = json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": { "name": "consul", "namespace": ns }, "spec": spec,
    });
    api.patch("consul", &PatchParams::apply("concord-test").force(), &Patch::Apply(&obj)).await.expect("applied");
}

async fn patch_spec(client: &kube::Client, ns: &str, spec: Value) {
    let api: Api<DiscoveryCluster> = Api::namespaced(client.clone(), ns);
    api.patch("consul", &PatchParams::default(), &Patch::Merge(json!({ "spec": spec }))).await.expect("patched");
}

fn override_flag(ns: &str, addrs: &[String]) -> String {
    format!("{ns}/consul={}", addrs.join(","))
}

fn sts_replicas(sts: &StatefulSet) -> i32 {
    sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1)
}

fn sts_partition(sts: &StatefulSet) -> i32 {
    sts.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(-1)
}

async fn condition(api: &Api<DiscoveryCluster>, t: &str) -> Option<concord::resources::Condition> {
    let status = api.get("consul").await.ok()?.status?;
    find_condition(&status.conditions, t).cloned()
}

async fn has_event(client: &kube::Client, ns: &str, reason: &str) -> Option<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events.list(&ListParams::default()).await.ok()?.items.into_iter().find(|e| e.reason.as_deref() == Some(reason))
}

/// Waits until autopilot (what the controller reads) reports `node` unhealthy.
async fn wait_unhealthy(consul: &consul::Client, node: &str) {
    eventually(&format!("autopilot reports {node} unhealthy"), WAIT, || async {
        let state = consul.operator_autopilot_state().await.ok()?;
        state.servers.values().any(|s| s.name == node && !s.healthy).then_some(())
    })
    .await;
}

async fn raft_nodes(consul: &consul::Client) -> Vec<String> {
    let raft = consul.operator_raft_configuration(&QueryOptions::default()).await.expect("raft configuration");
    raft.servers.into_iter().map(|s| s.node).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_server_config_forms_a_three_server_cluster() {
    let (consul, _tls) = consul_from_generated_config("consul", "ops", 3).await;
    assert!(consul.http_addr().starts_with("https://"));
    let client = consul_client(&consul);
    let raft = client.operator_raft_configuration(&QueryOptions::default()).await.expect("raft");
    assert!(raft.leader().is_some(), "a leader: {raft:?}");
    let mut voters: Vec<String> = raft.servers.iter().filter(|s| s.voter).map(|s| s.node.clone()).collect();
    voters.sort();
    assert_eq!(voters, vec!["consul-server-0", "consul-server-1", "consul-server-2"]);
    let state = client.operator_autopilot_state().await.expect("autopilot");
    assert!(state.healthy, "autopilot reports the cluster healthy: {state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_cluster_yields_its_objects_keeps_its_gossip_key_and_is_garbage_collected() {
    let env = testenv::shared_kube_with_controllers().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("dc-objects").await;
    // Nothing answers here: the objects do not need Consul, and the status says so.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let _controller = start_controller(client.clone(), &ns, &["--consul-address", &override_flag(&ns, &[dead])]).await;
    apply_cluster(&client, &ns, json!({ "replicas": 3, "storage": { "size": "1Gi" } })).await;
    let dcs: Api<DiscoveryCluster> = Api::namespaced(client.clone(), &ns);
    let uid = dcs.get("consul").await.expect("cluster").metadata.uid.expect("uid");

    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts =
        eventually("the StatefulSet", WAIT, || async { sts_api.get_opt("consul-server").await.ok().flatten() }).await;
    assert_eq!(sts.metadata.owner_references.as_ref().expect("owned")[0].uid, uid);
    let spec = sts.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("consul-server"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(sts_partition(&sts), 0);
    let claim = &spec.volume_claim_templates.as_ref().expect("claims")[0];
    let size = claim.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref());
    assert_eq!(size.and_then(|r| r.get("storage")).map(|q| q.0.as_str()), Some("1Gi"));
    let retention = spec.persistent_volume_claim_retention_policy.as_ref().expect("retention policy");
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some(concord::resources::DEFAULT_CONSUL_IMAGE));
    let security = container.security_context.as_ref().expect("security context");
    assert_eq!((security.run_as_user, security.run_as_non_root), (Some(100), Some(true)));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let probe = container.readiness_probe.as_ref().and_then(|p| p.exec.as_ref()).and_then(|e| e.command.clone());
    assert!(probe.expect("exec readiness probe").join(" ").contains("/v1/status/leader"));
    let volume = |name: &str| pod.volumes.as_ref().expect("volumes").iter().find(|v| v.name == name).cloned();
    let gossip_volume = volume("gossip").and_then(|v| v.secret).expect("the gossip config is a Secret volume");
    assert_eq!(gossip_volume.secret_name.as_deref(), Some("consul-gossip-config"));
    let tls_volume = volume("tls").and_then(|v| v.secret).expect("the TLS Secret is mounted");
    assert_eq!(tls_volume.secret_name.as_deref(), Some("consul-server-tls"));
    let anti = pod.affinity.as_ref().and_then(|a| a.pod_anti_affinity.as_ref());
    assert!(anti.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()).is_some());

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let headless = services.get("consul-server").await.expect("headless Service").spec.expect("spec");
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    let ports: Vec<(i32, String)> =
        headless.ports.unwrap_or_default().into_iter().map(|p| (p.port, p.protocol.unwrap_or_default())).collect();
    for raft_serf in [(8300, "TCP"), (8301, "TCP"), (8301, "UDP")] {
        assert!(ports.contains(&(raft_serf.0, raft_serf.1.to_string())), "{raft_serf:?} in {ports:?}");
    }
    let client_svc = services.get("consul-client").await.expect("client Service").spec.expect("spec");
    let ports: Vec<(i32, String)> =
        client_svc.ports.unwrap_or_default().into_iter().map(|p| (p.port, p.protocol.unwrap_or_default())).collect();
    assert_eq!(ports, vec![(8501, "TCP".into()), (8600, "TCP".into()), (8600, "UDP".into())]);

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let pdb = pdbs.get("consul-server").await.expect("PDB").spec.expect("spec");
    assert_eq!(pdb.max_unavailable, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)));

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let server_json = |cm: ConfigMap| -> Value {
        serde_json::from_str(cm.data.expect("data").get("server.json").expect("server.json")).expect("JSON")
    };
    let config = server_json(config_maps.get("consul-server-config").await.expect("ConfigMap"));
    assert_eq!(config["bootstrap_expect"], 3);
    assert_eq!(config["retry_join"][2], format!("consul-server-2.consul-server.{ns}.svc"));
    assert_eq!(config["ui_config"]["enabled"], true);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets.get("consul-gossip").await.expect("gossip Secret");
    let key = secret.data.as_ref().and_then(|d| d.get("key")).expect("key").0.clone();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(&key).expect("base64 key");
    assert_eq!(raw.len(), 32);
    // The key reaches the servers only as a mounted config file: it is nowhere in the
    // StatefulSet as the API server holds it (command, args, env), nor in the ConfigMap.
    let key_text = String::from_utf8(key.clone()).expect("key text");
    let gossip_config = eventually("the gossip config Secret", WAIT, || async {
        secrets.get_opt("consul-gossip-config").await.ok().flatten()
    })
    .await;
    let file: Value =
        serde_json::from_slice(&gossip_config.data.as_ref().expect("data")["gossip.json"].0).expect("gossip.json");
    assert_eq!(file, json!({ "encrypt": key_text }));
    let sts_json = serde_json::to_string(&sts_api.get("consul-server").await.expect("sts")).expect("json");
    assert!(!sts_json.contains(&key_text), "the gossip key is in the StatefulSet");
    assert!(!sts_json.contains("encrypt") && !sts_json.contains("GOSSIP_KEY"), "{sts_json}");
    let cm_json = serde_json::to_string(&config_maps.get("consul-server-config").await.expect("cm")).expect("json");
    assert!(!cm_json.contains(&key_text) && !cm_json.contains("encrypt"));
    // TLS: a CA and the servers' certificate, both owned by the cluster.
    for name in ["consul-ca", "consul-server-tls"] {
        let secret = secrets.get(name).await.unwrap_or_else(|e| panic!("Secret {name}: {e}"));
        assert_eq!(secret.metadata.owner_references.as_ref().expect("owned")[0].uid, uid, "{name}");
    }

    // Status: Consul is unreachable, no pod is ready (no kubelet), the objects exist.
    let available = eventually("Available=False, ConsulUnreachable", WAIT, || async {
        condition(&dcs, types::AVAILABLE).await.filter(|c| c.reason == "ConsulUnreachable")
    })
    .await;
    assert_eq!(available.status, "False");
    let status = dcs.get("consul").await.expect("cluster").status.expect("status");
    assert_eq!(status.ready_replicas, Some(0));

    // Another reconcile (a spec change) keeps the gossip Secret byte for byte.
    patch_spec(&client, &ns, json!({ "ui": false })).await;
    eventually("the ConfigMap follows the spec", WAIT, || async {
        let config = server_json(config_maps.get("consul-server-config").await.ok()?);
        (config["ui_config"]["enabled"] == false).then_some(())
    })
    .await;
    let again = secrets.get("consul-gossip").await.expect("gossip Secret");
    assert_eq!(again.data.as_ref().and_then(|d| d.get("key")).map(|k| &k.0), Some(&key));
    assert_eq!(again.metadata.resource_version, secret.metadata.resource_version, "never rewritten");

    // The StatefulSet controller made a claim per server; deleting the cluster removes
    // every owned object (garbage collector) and keeps the claims (retainOnDelete default).
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    eventually("3 claims", WAIT, || async {
        (claims.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await;
    dcs.delete("consul", &DeleteParams::background()).await.expect("deleted");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually("owned objects garbage-collected", Duration::from_secs(60), || async {
        let gone = sts_api.get_opt("consul-server").await.ok()?.is_none()
            && services.get_opt("consul-server").await.ok()?.is_none()
            && services.get_opt("consul-client").await.ok()?.is_none()
            && pdbs.get_opt("consul-server").await.ok()?.is_none()
            && config_maps.get_opt("consul-server-config").await.ok()?.is_none()
            && secrets.get_opt("consul-gossip").await.ok()?.is_none()
            && secrets.get_opt("consul-gossip-config").await.ok()?.is_none()
            && secrets.get_opt("consul-ca").await.ok()?.is_none()
            && secrets.get_opt("consul-server-tls").await.ok()?.is_none()
            && pods.list(&ListParams::default()).await.ok()?.items.is_empty();
        gone.then_some(())
    })
    .await;
    let left: Vec<String> = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .iter()
        .map(|c| {
            assert!(c.metadata.deletion_timestamp.is_none(), "claims are not being deleted");
            c.metadata.name.clone().unwrap_or_default()
        })
        .collect();
    assert_eq!(left.len(), 3, "claims kept: {left:?}");
}

/// From testenv, not `bind(0)`: a parallel test's `bind(0)` may get the same port.
fn free_port() -> u16 {
    testenv::free_port().expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_3_5_3_removes_departing_servers_from_raft_first_and_refuses_to_lose_quorum() {
    let env = testenv::shared_kube_with_controllers().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("dc-scale").await;
    // Five real servers named like the pods of a 5-server cluster.
    let (cluster, tls) = consul_from_generated_config("consul", &ns, 5).await;
    tls.install(&client, &ns).await;
    let consul = consul_client(&cluster);
    consul.kv_put("scale/data", "kept", &KvWriteOptions::default()).await.expect("kv put");
    let _controller =
        start_controller(client.clone(), &ns, &["--consul-address", &override_flag(&ns, &cluster.http_addrs())]).await;
    apply_cluster(&client, &ns, json!({ "replicas": 3 })).await;
    let dcs: Api<DiscoveryCluster> = Api::namespaced(client.clone(), &ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts_has = |n: i32| {
        let sts_api = sts_api.clone();
        async move { sts_api.get_opt("consul-server").await.ok().flatten().filter(|s| sts_replicas(s) == n).map(|_| ()) }
    };
    eventually("3 replicas", WAIT, || sts_has(3)).await;
    let status = eventually("leader, peers and version in status", WAIT, || async {
        let status = dcs.get("consul").await.ok()?.status?;
        (status.leader.is_some() && status.peers.len() == 5 && status.version.is_some()).then_some(status)
    })
    .await;
    assert_eq!(status.ready_replicas, Some(0), "no kubelet: no pod is ever ready");
    assert_eq!(condition(&dcs, types::AVAILABLE).await.map(|c| c.status).as_deref(), Some("True"));

    // Up: only the StatefulSet changes; Raft is left to the joining servers.
    patch_spec(&client, &ns, json!({ "replicas": 5 })).await;
    eventually("5 replicas", WAIT, || sts_has(5)).await;
    assert_eq!(raft_nodes(&consul).await.len(), 5);

    // Server 0 dies: going to 1 server would leave the unhealthy server 0 alone. Refused.
    cluster.kill(0);
    wait_unhealthy(&consul, "consul-server-0").await;
    patch_spec(&client, &ns, json!({ "replicas": 1 })).await;
    let refused = eventually("Degraded=True, ScaleDownRefused", WAIT, || async {
        condition(&dcs, types::DEGRADED).await.filter(|c| c.reason == "ScaleDownRefused" && c.status == "True")
    })
    .await;
    assert!(refused.message.contains("would lose quorum"), "{}", refused.message);
    let progressing = condition(&dcs, types::PROGRESSING).await.expect("Progressing");
    assert_eq!((progressing.status.as_str(), progressing.reason.as_str()), ("False", "ScaleDownRefused"));
    eventually("a ScaleDownRefused Warning event", WAIT, || has_event(&client, &ns, "ScaleDownRefused")).await;
    assert_eq!(sts_replicas(&sts_api.get("consul-server").await.expect("sts")), 5, "replicas kept");
    // Nothing removed (autopilot may prune the dead server 0 on its own; that is Consul's
    // dead-server cleanup, not concord).
    let nodes = raft_nodes(&consul).await;
    for live in 1..5 {
        assert!(nodes.contains(&format!("consul-server-{live}")), "server {live} still in Raft: {nodes:?}");
    }
    assert!(has_event(&client, &ns, "RaftPeerRemoved").await.is_none(), "no peer removed");

    // Down to 3 keeps quorum even with server 0 dead. Watch the StatefulSet: when its
    // replicas drop, servers 3 and 4 must already be out of the Raft configuration.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let watch_api = sts_api.clone();
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watch_object(watch_api, "consul-server").boxed());
        while let Some(Ok(Some(sts))) = stream.next().await {
            if sts_replicas(&sts) == 3 && seen_tx.send(()).is_err() {
                return;
            }
        }
    });
    patch_spec(&client, &ns, json!({ "replicas": 3 })).await;
    tokio::time::timeout(WAIT, seen_rx.recv()).await.expect("replicas drop to 3 within 30s").expect("watch");
    let nodes = raft_nodes(&consul).await;
    watch.abort();
    assert!(
        !nodes.iter().any(|n| n == "consul-server-3" || n == "consul-server-4"),
        "departing servers left Raft before the replicas dropped: {nodes:?}"
    );
    // Their pods go away now; what the controller did is in Events, and the data stayed.
    cluster.kill(3);
    cluster.kill(4);
    eventually("RaftPeerRemoved events", WAIT, || has_event(&client, &ns, "RaftPeerRemoved")).await;
    let value = consul.kv_get("scale/data", &QueryOptions::default()).await.expect("kv get").value.expect("key");
    assert_eq!(&value.value[..], b"kept");
    let left = raft_nodes(&consul).await;
    let expected = ["consul-server-0", "consul-server-1", "consul-server-2"];
    assert!(left.iter().all(|n| expected.contains(&n.as_str())), "only servers 0, 1 and 2 remain: {left:?}");
    assert!(left.len() >= 2, "servers 1 and 2 remain: {left:?}");
}

/// Plays kubelet for the pods of one namespace: marks every pod Running and Ready, the
/// way a kubelet would once the readiness probe (a Raft leader) passes.
fn fake_kubelet(client: kube::Client, ns: &str) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        // Bounded by the test: the handle is aborted when the test ends.
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for pod in list.items {
                    let ready = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    if ready || pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let status = json!({ "status": {
                        "phase": "Running",
                        "conditions": [{ "type": "Ready", "status": "True" }, { "type": "ContainersReady", "status": "True" }],
                    }});
                    let name = pod.metadata.name.unwrap_or_default();
                    let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_change_rolls_one_server_at_a_time_only_while_the_cluster_is_healthy() {
    let env = testenv::shared_kube_with_controllers().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("dc-roll").await;
    let (cluster, tls) = consul_from_generated_config("consul", &ns, 3).await;
    tls.install(&client, &ns).await;
    let consul = consul_client(&cluster);
    let kubelet = fake_kubelet(client.clone(), &ns);
    let _controller =
        start_controller(client.clone(), &ns, &["--consul-address", &override_flag(&ns, &cluster.http_addrs())]).await;
    apply_cluster(&client, &ns, json!({ "replicas": 3, "image": "hashicorp/consul:1.22.7" })).await;
    let dcs: Api<DiscoveryCluster> = Api::namespaced(client.clone(), &ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    eventually("3 ready servers, stable", WAIT, || async {
        let status = dcs.get("consul").await.ok()?.status?;
        let stable = find_condition(&status.conditions, types::PROGRESSING).is_some_and(|c| c.reason == "Stable");
        (status.ready_replicas == Some(3) && stable).then_some(())
    })
    .await;

    // Record every partition the StatefulSet goes through.
    let partitions = Arc::new(Mutex::new(Vec::<i32>::new()));
    let seen = partitions.clone();
    let watch_api = sts_api.clone();
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watch_object(watch_api, "consul-server").boxed());
        while let Some(Ok(Some(sts))) = stream.next().await {
            let p = sts_partition(&sts);
            let mut seen = seen.lock().expect("lock");
            if seen.last() != Some(&p) {
                seen.push(p);
            }
        }
    });

    // Server 1 is down: the roll may start (server 2 is staged) but must not go further.
    cluster.kill(1);
    wait_unhealthy(&consul, "consul-server-1").await;
    patch_spec(&client, &ns, json!({ "image": "hashicorp/consul:1.22.8" })).await;
    let waiting = eventually("the roll waits for a healthy cluster at partition 2", WAIT, || async {
        let sts = sts_api.get("consul-server").await.ok()?;
        let status = sts.status.clone()?;
        let c = condition(&dcs, types::PROGRESSING).await?;
        // Server 2 runs the new template and every pod is ready: only Consul holds it back.
        let only_consul = status.updated_replicas == Some(1) && status.ready_replicas == Some(3);
        (sts_partition(&sts) == 2 && only_consul && c.message.contains("consul-server-1")).then_some(c)
    })
    .await;
    assert_eq!(waiting.reason, "RollingUpdate");
    let sts = sts_api.get("consul-server").await.expect("sts");
    let image = sts.spec.as_ref().map(|s| s.template.spec.as_ref().expect("pod").containers[0].image.clone());
    assert_eq!(image.flatten().as_deref(), Some("hashicorp/consul:1.22.8"));

    // Healthy again: the partition walks down 2 → 1 → 0, one server at a time.
    cluster.restart(1).await.expect("server 1 back");
    eventually("the roll finishes", Duration::from_secs(60), || async {
        let sts = sts_api.get("consul-server").await.ok()?;
        let status = sts.status.clone()?;
        let done = sts_partition(&sts) == 0 && status.updated_replicas == Some(3) && status.ready_replicas == Some(3);
        done.then_some(())
    })
    .await;
    watch.abort();
    kubelet.abort();
    let seen = partitions.lock().expect("lock").clone();
    let from_start: Vec<i32> = seen.iter().copied().skip_while(|p| *p != 2).collect();
    assert_eq!(from_start, vec![2, 1, 0], "partitions seen: {seen:?}");
    eventually("PartitionAdvanced events", WAIT, || has_event(&client, &ns, "PartitionAdvanced")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_cluster_with_acls_is_bootstrapped_once_and_then_read_with_the_controller_token() {
    let env = testenv::shared_kube_with_controllers().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("dc-acl").await;
    let spec = json!({ "replicas": 3, "acl": { "enabled": true }, "sync": { "toConsul": { "enabled": true } } });
    // The generated config with its ACL block (default deny, not bootstrapped).
    let rendered = build::server_config(&inputs("consul", &ns, spec.clone()), 3);
    assert_eq!(rendered["acl"]["default_policy"], "deny");
    let (cluster, tls) = start_loopback(&rendered, "consul", LoopbackTls::from_ca("consul", &ns), 3).await;
    tls.install(&client, &ns).await;
    let _controller =
        start_controller(client.clone(), &ns, &["--consul-address", &override_flag(&ns, &cluster.http_addrs())]).await;
    apply_cluster(&client, &ns, spec).await;
    let dcs: Api<DiscoveryCluster> = Api::namespaced(client.clone(), &ns);
    let bootstrapped = eventually("ACLBootstrapped=True", WAIT, || async {
        condition(&dcs, "ACLBootstrapped").await.filter(|c| c.status == "True")
    })
    .await;
    assert_eq!(bootstrapped.reason, "Bootstrapped");
    // Raft configuration and autopilot need operator rights: with ACLs on (default deny)
    // the peers only show up when the controller uses its own token.
    let status = eventually("leader and 3 voters read with the controller token", WAIT, || async {
        let status = dcs.get("consul").await.ok()?.status?;
        (status.leader.is_some() && status.peers.len() == 3).then_some(status)
    })
    .await;
    assert!(find_condition(&status.conditions, types::AVAILABLE).is_some_and(|c| c.status == "True"));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for name in ["consul-acl-bootstrap", "consul-acl-controller", "consul-acl-admin"] {
        assert!(secrets.get_opt(name).await.expect("read").is_some(), "Secret {name}");
    }
    eventually("one ACLBootstrapped event", WAIT, || has_event(&client, &ns, "ACLBootstrapped")).await;

    // Default deny, yet DNS answers without a token: the anonymous token carries the
    // DNS policy (catalog read). KV stays closed to requests without a token.
    let dns = support::resolver(cluster.dns_addr(0));
    // (All three servers advertise 127.0.0.1 here.)
    let servers = eventually("A consul.service.consul answers without a token", WAIT, || async {
        let found = dns.ipv4_lookup("consul.service.consul.").await.ok()?;
        let addrs: Vec<String> = found.iter().map(|a| a.to_string()).collect();
        (!addrs.is_empty()).then_some(addrs)
    })
    .await;
    assert!(servers.iter().all(|a| a == "127.0.0.1"), "{servers:?}");
    // The catalog sync started before the bootstrap, without a token: it must pick up
    // the controller token and register (found when real pods first ran this, on kind).
    support::service(&client, &ns, "web", 80, json!({"concord.io/sync": "true"})).await;
    support::slice(&client, &ns, "web", 8080, &[("10.20.0.1", true)]).await;
    let management = secrets.get("consul-acl-bootstrap").await.expect("bootstrap Secret");
    let management = String::from_utf8(management.data.expect("data")["token"].0.clone()).expect("utf-8");
    let admin = consul_client(&cluster).with_token(consul::Token::new(management)).expect("admin client");
    eventually("web registered in Consul by the sync after the bootstrap", WAIT, || async {
        let found = admin.health_service("web", &[], true, &QueryOptions::default()).await.ok()?.value;
        (found.len() == 1 && found[0].service.address == "10.20.0.1").then_some(())
    })
    .await;

    let anonymous = consul_client(&cluster);
    let kv = anonymous.kv_get("config/secret", &QueryOptions::default()).await;
    assert!(
        matches!(&kv, Err(consul::Error::PermissionDenied { .. })),
        "KV without a token must be denied, got {:?}",
        kv.map(|r| r.value.is_some())
    );
}

/// TLS on by default, end to end: the controller makes the CA and issues the servers'
/// certificate; three real servers run on exactly that certificate and the ConfigMap's
/// `server.json` (HTTPS only, `verify_incoming`/`verify_outgoing`/`verify_server_hostname`
/// on internal RPC, so they form a cluster only if the certificate is right for it); the
/// controller reaches them over HTTPS, verifying against the CA Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_cluster_issues_its_own_certificates_and_real_servers_form_a_verified_cluster_on_them() {
    let env = testenv::shared_kube_with_controllers().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("dc-tls").await;
    // First only the objects (nothing answers at this address).
    let dead = format!("https://127.0.0.1:{}", free_port());
    let first = start_controller(client.clone(), &ns, &["--consul-address", &override_flag(&ns, &[dead])]).await;
    apply_cluster(&client, &ns, json!({ "replicas": 3 })).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let issued = eventually("the servers' certificate Secret", WAIT, || async {
        secrets.get_opt("consul-server-tls").await.ok().flatten()
    })
    .await;
    let ca = secrets.get("consul-ca").await.expect("CA Secret");
    assert_eq!(ca.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        issued.data.as_ref().expect("data")["ca.crt"].0,
        ca.data.as_ref().expect("data")["tls.crt"].0,
        "the servers trust the CA concord keeps"
    );
    for reason in ["CAGenerated", "ServerCertificateIssued"] {
        eventually(reason, WAIT, || has_event(&client, &ns, reason)).await;
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = eventually("the ConfigMap", WAIT, || async {
        config_maps.get_opt("consul-server-config").await.ok().flatten()
    })
    .await;
    let rendered: Value = serde_json::from_str(&cm.data.expect("data")["server.json"]).expect("server.json");
    first.stop().await;

    let (cluster, _tls) = start_loopback(&rendered, "consul", LoopbackTls::from_secret(&ns, &issued), 3).await;
    assert!(cluster.http_addr().starts_with("https://"));
    let _controller =
        start_controller(client.clone(), &ns, &["--consul-address", &override_flag(&ns, &cluster.http_addrs())]).await;
    let dcs: Api<DiscoveryCluster> = Api::namespaced(client.clone(), &ns);
    let status = eventually("leader and 3 voters over verified HTTPS", WAIT, || async {
        let status = dcs.get("consul").await.ok()?.status?;
        (status.leader.is_some() && status.peers.len() == 3).then_some(status)
    })
    .await;
    assert!(find_condition(&status.conditions, types::AVAILABLE).is_some_and(|c| c.status == "True"));
    let again = secrets.get("consul-server-tls").await.expect("Secret");
    assert_eq!(again.metadata.resource_version, issued.metadata.resource_version, "not reissued without cause");
}
