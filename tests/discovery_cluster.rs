//! Managed DiscoveryClusters against the real servers: kube-apiserver with
//! kube-controller-manager (so the StatefulSet controller creates claims and pods, and the
//! garbage collector deletes owned objects) and real Consul servers on loopback.
//!
//! There is no kubelet: pods are created but never run the Consul image, so
//! `readyReplicas` stays 0 unless a test plays kubelet and marks pods Ready itself. The
//! Consul that a managed cluster talks to is a local cluster started from concord's own
//! generated server config, reached through `--consul-address NAMESPACE/NAME=URL`.
mod support;

use concord::consul::{self, ClientConfig, KvWriteOptions, QueryOptions};
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
/// `retry_interval`, `acl`, ...) is what the ConfigMap holds.
fn loopback_config(rendered: &Value, name: &str, gossip_key: &str, s: &LoopbackServer) -> Value {
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
    config
}

/// A loopback Consul started from concord's config for cluster `name` with `replicas`.
async fn consul_from_generated_config(name: &str, namespace: &str, replicas: i32) -> ConsulCluster {
    let rendered = build::server_config(&inputs(name, namespace, json!({ "replicas": replicas })), replicas);
    let key = build::new_gossip_key();
    ConsulCluster::start_with_configs(replicas as usize, |s| loopback_config(&rendered, name, &key, s))
        .await
        .expect("Consul servers start from the generated config")
}

fn consul_client(cluster: &ConsulCluster) -> consul::Client {
    consul::Client::new(ClientConfig::new(cluster.http_addrs())).expect("client")
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
    let consul = consul_from_generated_config("consul", "ops", 3).await;
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
    let gossip_env = container.env.as_ref().expect("env").iter().find(|e| e.name == "GOSSIP_KEY").expect("GOSSIP_KEY");
    let secret_ref = gossip_env.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("from a Secret");
    assert_eq!((secret_ref.name.as_str(), secret_ref.key.as_str()), ("consul-gossip", "key"));
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
    assert_eq!(ports, vec![(8500, "TCP".into()), (8600, "TCP".into()), (8600, "UDP".into())]);

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
    let cluster = consul_from_generated_config("consul", &ns, 5).await;
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
    let cluster = consul_from_generated_config("consul", &ns, 3).await;
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
    let key = build::new_gossip_key();
    let cluster = ConsulCluster::start_with_configs(3, |s| loopback_config(&rendered, "consul", &key, s))
        .await
        .expect("ACL-enabled servers start from the generated config");
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
    for name in ["consul-acl-bootstrap", "consul-acl-controller"] {
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
