//! What a managed DiscoveryCluster consists of, as plain Kubernetes objects built from the
//! spec (pure: no I/O). The reconcile applies them with server-side apply; every object
//! carries an owner reference to the DiscoveryCluster, so deleting it cleans them up.
//!
//! Decisions written down here:
//! - The server config is JSON (`server.json` in a ConfigMap, loaded with `-config-dir`).
//!   The pod's address comes from the command line (`-advertise=$(POD_IP)`). The gossip
//!   key is a second config file (`{"encrypt": ...}`) in a Secret concord derives from the
//!   key's Secret, mounted read-only: it is in no argument, no env var and not in the
//!   ConfigMap. The node name is the pod's hostname.
//! - TLS (on unless `spec.tls.enabled: false`): the servers serve HTTPS on 8501 with the
//!   certificate concord issues into `<name>-server-tls` (mounted at `/consul/tls`),
//!   verify each other on internal RPC (`verify_incoming`, `verify_outgoing`,
//!   `verify_server_hostname`), and keep plain HTTP on 8500 bound to the pod's loopback
//!   only, for the readiness probe and `consul` commands run inside the pod.
//! - `podManagementPolicy: Parallel`: every server must start for `bootstrap_expect`
//!   to elect the first leader; ordered start would wait forever for server 0 to be ready.
//! - `updateStrategy: RollingUpdate` with a `partition` the controller lowers one server
//!   at a time (see `scale::rollout`).
//! - Scaling (`bootstrap_expect`, `retry_join`) does not roll the servers: see
//!   [`config_hash`].
use crate::resources::{DiscoveryCluster, GossipSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Consul's ports inside the pod (the official image's defaults).
pub const HTTP_PORT: i32 = 8500;
pub const HTTPS_PORT: i32 = crate::cluster::tls::HTTPS_PORT;
pub const DNS_PORT: i32 = 8600;
pub const SERVER_PORT: i32 = 8300;
pub const SERF_LAN_PORT: i32 = 8301;
pub const SERF_WAN_PORT: i32 = 8302;
/// uid and gid of the `consul` user in the official image.
pub const CONSUL_UID: i64 = 100;
pub const CONSUL_GID: i64 = 1000;
/// Key of the generated gossip Secret.
pub const GOSSIP_KEY: &str = "key";
/// Where the servers keep Raft data (the claim) and read their config (the ConfigMap).
pub const DATA_DIR: &str = "/consul/data";
pub const CONFIG_DIR: &str = "/consul/config";
/// Where the servers read their TLS certificate, key and CA (the `<name>-server-tls` Secret).
pub const TLS_DIR: &str = "/consul/tls";
/// Where the servers read the gossip key config file (the `<name>-gossip-config` Secret).
pub const GOSSIP_DIR: &str = "/consul/gossip";
/// The key (and file name) of the gossip config in its Secret.
pub const GOSSIP_CONFIG_KEY: &str = "gossip.json";
/// Annotation on the StatefulSet: hash of the pod template concord last applied; a
/// different hash means the servers must roll.
pub const TEMPLATE_HASH: &str = "concord.io/template-hash";
/// Annotation on the pod template: hash of the server config (without `bootstrap_expect`).
pub const CONFIG_HASH: &str = "concord.io/config-hash";

/// StatefulSet and headless Service: `<name>-server`; pods `<name>-server-<i>`.
pub fn server_name(cluster: &str) -> String {
    format!("{cluster}-server")
}
/// Client Service (HTTP and DNS): `<name>-client`.
pub fn client_service_name(cluster: &str) -> String {
    format!("{cluster}-client")
}
pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-server-config")
}
/// The gossip key Secret concord generates when `spec.gossip.secretRef` is unset.
pub fn gossip_secret_name(cluster: &str) -> String {
    format!("{cluster}-gossip")
}
/// The Secret holding the gossip key as a Consul config file, derived from the key's
/// Secret (generated or the user's) and mounted into the servers.
pub fn gossip_config_secret_name(cluster: &str) -> String {
    format!("{cluster}-gossip-config")
}
/// Node name (and pod name, and hostname) of server `ordinal`.
pub fn server_node_name(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-server-{ordinal}")
}
/// Stable DNS name of server `ordinal` through the headless Service.
pub fn server_dns_name(cluster: &str, namespace: &str, ordinal: i32) -> String {
    format!("{}.{}.{namespace}.svc", server_node_name(cluster, ordinal), server_name(cluster))
}

/// Labels on every object and pod of one cluster; the first three select the pods.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "consul".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
        ("app.kubernetes.io/component".to_string(), "server".to_string()),
    ])
}

fn labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert("app.kubernetes.io/managed-by".to_string(), "concord".to_string());
    labels
}

/// Where the gossip key comes from, once resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipKeyRef {
    pub secret: String,
    pub key: String,
}

/// The gossip key Secret to read, or `None` when encryption is off.
pub fn gossip_key_ref(cluster: &str, gossip: Option<&GossipSpec>) -> Option<GossipKeyRef> {
    if gossip.and_then(|g| g.enabled) == Some(false) {
        return None;
    }
    Some(match gossip.and_then(|g| g.secret_ref.as_ref()) {
        Some(r) => GossipKeyRef { secret: r.name.clone(), key: r.key.clone() },
        None => GossipKeyRef { secret: gossip_secret_name(cluster), key: GOSSIP_KEY.to_string() },
    })
}

/// A fresh gossip key: 32 random bytes, base64 (what `consul keygen` prints).
pub fn new_gossip_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// Everything the builders need, taken from the DiscoveryCluster once.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub spec: crate::resources::DiscoveryClusterSpec,
}

impl Inputs {
    pub fn new(dc: &DiscoveryCluster) -> Option<Self> {
        Some(Inputs {
            name: dc.name_any(),
            namespace: dc.namespace()?,
            owner: dc.controller_owner_ref(&())?,
            spec: dc.spec.clone(),
        })
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    fn dns_enabled(&self) -> bool {
        self.spec.dns != Some(false)
    }

    fn acl_enabled(&self) -> bool {
        self.spec.acl.as_ref().is_some_and(|a| a.enabled)
    }

    pub fn tls_enabled(&self) -> bool {
        self.spec.managed_tls()
    }

    /// The port clients reach the API on: HTTPS with TLS, else HTTP.
    fn api_port(&self) -> (&'static str, i32) {
        if self.tls_enabled() { ("https", HTTPS_PORT) } else { ("http", HTTP_PORT) }
    }
}

/// The server config (`server.json`) for `replicas` servers.
pub fn server_config(inputs: &Inputs, replicas: i32) -> Value {
    let retry_join: Vec<String> = (0..replicas).map(|i| server_dns_name(&inputs.name, &inputs.namespace, i)).collect();
    let mut config = json!({
        "server": true,
        "bootstrap_expect": replicas,
        "datacenter": inputs.spec.datacenter,
        "data_dir": DATA_DIR,
        "bind_addr": "0.0.0.0",
        "client_addr": "0.0.0.0",
        "retry_join": retry_join,
        // Pods come up in any order; retry often instead of Consul's default 30 s.
        "retry_interval": "5s",
        "ports": {
            "http": HTTP_PORT,
            "https": -1,
            "dns": if inputs.dns_enabled() { DNS_PORT } else { -1 },
            "server": SERVER_PORT,
            "serf_lan": SERF_LAN_PORT,
            "serf_wan": SERF_WAN_PORT,
            "grpc": -1,
            "grpc_tls": -1,
        },
        "ui_config": { "enabled": inputs.spec.ui.unwrap_or(true) },
        // Production Raft timings (Consul's default of 5 is for tiny dev machines).
        "performance": { "raft_multiplier": 1 },
        // A server whose pod is gone for good leaves Raft on its own, as long as that
        // does not drop below quorum; concord removes scaled-down servers itself first.
        "autopilot": { "cleanup_dead_servers": true },
        "disable_update_check": true,
        "log_level": "info",
    });
    if inputs.tls_enabled() {
        config["ports"]["https"] = json!(HTTPS_PORT);
        // Plain HTTP only inside the pod: the readiness probe and `consul` commands.
        config["addresses"] = json!({ "http": "127.0.0.1" });
        config["tls"] = json!({
            "defaults": {
                "ca_file": format!("{TLS_DIR}/{}", crate::cluster::tls::CA_KEY),
                "cert_file": format!("{TLS_DIR}/{}", crate::cluster::tls::CERT_KEY),
                "key_file": format!("{TLS_DIR}/{}", crate::cluster::tls::KEY_KEY),
                // HTTPS clients authenticate with ACL tokens, not certificates.
                "verify_incoming": false,
                "verify_outgoing": true,
            },
            "internal_rpc": {
                "verify_incoming": true,
                "verify_server_hostname": true,
            },
        });
        // A reissued certificate (new names, renewal) is picked up without a restart.
        config["auto_reload_config"] = json!(true);
    }
    if inputs.acl_enabled() {
        config["acl"] = json!({
            "enabled": true,
            "default_policy": "deny",
            "down_policy": "extend-cache",
            "enable_token_persistence": true,
        });
    }
    config
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Hash of the config without what scaling changes (`bootstrap_expect` only matters
/// for the first election, `retry_join` is a list of hints of which any one is enough):
/// scaling must not roll the servers.
pub fn config_hash(config: &Value) -> String {
    let mut config = config.clone();
    if let Some(map) = config.as_object_mut() {
        map.remove("bootstrap_expect");
        map.remove("retry_join");
    }
    sha256_hex(config.to_string().as_bytes())
}

pub fn config_map(inputs: &Inputs, replicas: i32) -> ConfigMap {
    let config = server_config(inputs, replicas);
    let text = serde_json::to_string_pretty(&config).unwrap_or_else(|_| config.to_string());
    ConfigMap {
        metadata: inputs.meta(config_map_name(&inputs.name)),
        data: Some(BTreeMap::from([("server.json".to_string(), text)])),
        ..Default::default()
    }
}

fn port(name: &str, port: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.to_string()),
        ..Default::default()
    }
}

/// Headless Service that gives each server its stable DNS name; it publishes pods that
/// are not ready, because servers must find each other before any of them is ready.
pub fn headless_service(inputs: &Inputs) -> Service {
    Service {
        metadata: inputs.meta(server_name(&inputs.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&inputs.name)),
            ports: Some(vec![
                port("server", SERVER_PORT, "TCP"),
                port("serflan-tcp", SERF_LAN_PORT, "TCP"),
                port("serflan-udp", SERF_LAN_PORT, "UDP"),
                port("serfwan-tcp", SERF_WAN_PORT, "TCP"),
                port("serfwan-udp", SERF_WAN_PORT, "UDP"),
                port(inputs.api_port().0, inputs.api_port().1, "TCP"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Client Service: the HTTPS (or, without TLS, HTTP) API and (unless `spec.dns: false`)
/// DNS over TCP and UDP, answered only by ready servers (servers with a leader).
pub fn client_service(inputs: &Inputs) -> Service {
    let (name, api_port) = inputs.api_port();
    let mut ports = vec![port(name, api_port, "TCP")];
    if inputs.dns_enabled() {
        ports.push(port("dns-tcp", DNS_PORT, "TCP"));
        ports.push(port("dns-udp", DNS_PORT, "UDP"));
    }
    Service {
        metadata: inputs.meta(client_service_name(&inputs.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(&inputs.name)),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one server away at a time (voluntary disruptions), so a 3- or 5-server
/// cluster keeps its quorum through node drains.
pub fn pod_disruption_budget(inputs: &Inputs) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: inputs.meta(server_name(&inputs.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(&inputs.name)), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The gossip key as a Consul config file (`{"encrypt": key}`), applied on each
/// reconcile from the key's Secret.
pub fn gossip_config_secret(inputs: &Inputs, key: &str) -> Secret {
    let file = json!({ "encrypt": key }).to_string();
    Secret {
        metadata: inputs.meta(gossip_config_secret_name(&inputs.name)),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(GOSSIP_CONFIG_KEY.to_string(), ByteString(file.into_bytes()))])),
        ..Default::default()
    }
}

/// The CA Secret (created once, never applied again).
pub fn ca_secret(inputs: &Inputs, ca: &crate::cluster::tls::Ca) -> Secret {
    use crate::cluster::tls;
    Secret {
        metadata: inputs.meta(tls::ca_secret_name(&inputs.name)),
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (tls::CERT_KEY.to_string(), ByteString(ca.cert_pem.clone().into_bytes())),
            (tls::KEY_KEY.to_string(), ByteString(ca.key_pem.clone().into_bytes())),
        ])),
        ..Default::default()
    }
}

/// The servers' certificate Secret, with what it was issued for in its annotations.
pub fn server_tls_secret(inputs: &Inputs, issued: &crate::cluster::tls::Issued, ca_pem: &str, digest: &str) -> Secret {
    use crate::cluster::tls;
    let mut meta = inputs.meta(tls::server_secret_name(&inputs.name));
    meta.annotations = Some(BTreeMap::from([
        (tls::NAMES_ANNOTATION.to_string(), digest.to_string()),
        (tls::NOT_AFTER_ANNOTATION.to_string(), issued.not_after.to_string()),
    ]));
    Secret {
        metadata: meta,
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (tls::CERT_KEY.to_string(), ByteString(issued.cert_pem.clone().into_bytes())),
            (tls::KEY_KEY.to_string(), ByteString(issued.key_pem.clone().into_bytes())),
            (tls::CA_KEY.to_string(), ByteString(ca_pem.as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

/// The generated gossip key Secret (created once, never applied again).
pub fn gossip_secret(inputs: &Inputs, key: String) -> Secret {
    Secret {
        metadata: inputs.meta(gossip_secret_name(&inputs.name)),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(GOSSIP_KEY.to_string(), ByteString(key.into_bytes()))])),
        ..Default::default()
    }
}

/// Size and class of each server's claim. Claim templates cannot change after the
/// StatefulSet exists, so the reconcile passes the existing ones back in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimStorage {
    pub size: String,
    pub storage_class_name: Option<String>,
}

impl ClaimStorage {
    pub fn from_spec(inputs: &Inputs) -> Self {
        match &inputs.spec.storage {
            Some(s) => ClaimStorage { size: s.size.clone(), storage_class_name: s.storage_class_name.clone() },
            None => ClaimStorage { size: "10Gi".to_string(), storage_class_name: None },
        }
    }

    /// The claim template of an existing StatefulSet, if it has ours.
    pub fn from_statefulset(sts: &StatefulSet) -> Option<Self> {
        let claim = sts.spec.as_ref()?.volume_claim_templates.as_ref()?.iter().find(|c| c.name_any() == "data")?;
        let spec = claim.spec.as_ref()?;
        let size = spec.resources.as_ref()?.requests.as_ref()?.get("storage")?.0.clone();
        Some(ClaimStorage { size, storage_class_name: spec.storage_class_name.clone() })
    }
}

/// What the reconcile decided for the StatefulSet beyond the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatefulSetPlan {
    pub replicas: i32,
    pub partition: i32,
    pub storage: ClaimStorage,
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.to_string(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some(protocol.to_string()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only).filter(|r| *r),
        ..Default::default()
    }
}

/// A Secret as read-only files for the consul user's group only (the pod's fsGroup).
fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            default_mode: Some(0o440),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The server pod template (its hash decides whether the servers roll).
pub fn pod_template(inputs: &Inputs, gossip: Option<&GossipKeyRef>, config_hash: &str) -> PodTemplateSpec {
    let mut args = vec![
        "agent".to_string(),
        format!("-config-dir={CONFIG_DIR}"),
        // Kubernetes expands $(VAR) from the container's env.
        "-advertise=$(POD_IP)".to_string(),
    ];
    let env = vec![env_from_field("POD_IP", "status.podIP")];
    let mut mounts = vec![
        mount("data", DATA_DIR, false),
        mount("config", CONFIG_DIR, true),
        // The root filesystem is read-only; Consul and the shell want a scratch dir.
        mount("tmp", "/tmp", false),
    ];
    let mut volumes = vec![
        Volume {
            name: "config".to_string(),
            config_map: Some(ConfigMapVolumeSource { name: config_map_name(&inputs.name), ..Default::default() }),
            ..Default::default()
        },
        Volume { name: "tmp".to_string(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ];
    if gossip.is_some() {
        args.push(format!("-config-file={GOSSIP_DIR}/{GOSSIP_CONFIG_KEY}"));
        mounts.push(mount("gossip", GOSSIP_DIR, true));
        volumes.push(secret_volume("gossip", &gossip_config_secret_name(&inputs.name)));
    }
    if inputs.tls_enabled() {
        mounts.push(mount("tls", TLS_DIR, true));
        volumes.push(secret_volume("tls", &crate::cluster::tls::server_secret_name(&inputs.name)));
    }
    let (api_name, api_port) = inputs.api_port();
    let mut ports = vec![
        container_port(api_name, api_port, "TCP"),
        container_port("server", SERVER_PORT, "TCP"),
        container_port("serflan-tcp", SERF_LAN_PORT, "TCP"),
        container_port("serflan-udp", SERF_LAN_PORT, "UDP"),
        container_port("serfwan-tcp", SERF_WAN_PORT, "TCP"),
        container_port("serfwan-udp", SERF_WAN_PORT, "UDP"),
    ];
    if inputs.dns_enabled() {
        ports.push(container_port("dns-tcp", DNS_PORT, "TCP"));
        ports.push(container_port("dns-udp", DNS_PORT, "UDP"));
    }
    let container = Container {
        name: "consul".to_string(),
        image: Some(inputs.spec.image.clone()),
        // The binary itself, not the image's entrypoint script (which wants root to chown).
        command: Some(vec!["consul".to_string()]),
        args: Some(args),
        env: Some(env),
        ports: Some(ports),
        // Ready only when this server knows a leader: the client Service then sends
        // traffic only to servers that can answer, and a rolling update waits for it.
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "/bin/sh".to_string(),
                    "-ec".to_string(),
                    // busybox `timeout` + `wget`: in the official (Alpine) image and in the
                    // offline-built one (whose Debian busybox crashes on `wget -T`).
                    format!(
                        "timeout 3 wget -q -O - http://127.0.0.1:{HTTP_PORT}/v1/status/leader 2>/dev/null | grep -E '\".+\"'"
                    ),
                ]),
            }),
            initial_delay_seconds: Some(5),
            period_seconds: Some(3),
            timeout_seconds: Some(5),
            failure_threshold: Some(2),
            success_threshold: Some(1),
            ..Default::default()
        }),
        resources: inputs.spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(CONSUL_UID),
            run_as_group: Some(CONSUL_GID),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let selector = selector_labels(&inputs.name);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&inputs.name)),
            annotations: Some(BTreeMap::from([(CONFIG_HASH.to_string(), config_hash.to_string())])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(CONSUL_UID),
                run_as_group: Some(CONSUL_GID),
                fs_group: Some(CONSUL_GID),
                // With the container's settings above, this passes Pod Security "restricted".
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_string(), ..Default::default() }),
                ..Default::default()
            }),
            // Spread servers over nodes when there are enough; a small cluster still runs.
            affinity: Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(LabelSelector { match_labels: Some(selector), ..Default::default() }),
                            topology_key: "kubernetes.io/hostname".to_string(),
                            ..Default::default()
                        },
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            termination_grace_period_seconds: Some(30),
            automount_service_account_token: Some(false),
            volumes: Some(volumes),
            ..Default::default()
        }),
    }
}

/// Hash of a pod template as concord builds it.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    sha256_hex(serde_json::to_string(template).unwrap_or_default().as_bytes())
}

/// The StatefulSet of the servers.
pub fn statefulset(inputs: &Inputs, gossip: Option<&GossipKeyRef>, plan: &StatefulSetPlan) -> StatefulSet {
    let config_hash = config_hash(&server_config(inputs, plan.replicas));
    let template = pod_template(inputs, gossip, &config_hash);
    let mut meta = inputs.meta(server_name(&inputs.name));
    meta.annotations = Some(BTreeMap::from([(TEMPLATE_HASH.to_string(), template_hash(&template))]));
    let retain = inputs.spec.storage.as_ref().and_then(|s| s.retain_on_delete) != Some(false);
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".to_string()), ..Default::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: plan.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(plan.storage.size.clone()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    StatefulSet {
        metadata: meta,
        spec: Some(StatefulSetSpec {
            replicas: Some(plan.replicas),
            service_name: Some(server_name(&inputs.name)),
            pod_management_policy: Some("Parallel".to_string()),
            selector: LabelSelector { match_labels: Some(selector_labels(&inputs.name)), ..Default::default() },
            template,
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(plan.partition),
                    ..Default::default()
                }),
            }),
            volume_claim_templates: Some(vec![claim]),
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(if retain { "Retain" } else { "Delete" }.to_string()),
                // A server scaled away may come back (scale up again) with its data.
                when_scaled: Some("Retain".to_string()),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The pod template hash the StatefulSet was last applied with.
pub fn applied_template_hash(sts: &StatefulSet) -> Option<&str> {
    sts.metadata.annotations.as_ref()?.get(TEMPLATE_HASH).map(String::as_str)
}

/// The hash `statefulset` would stamp for this spec (to detect a roll before applying).
pub fn desired_template_hash(inputs: &Inputs, gossip: Option<&GossipKeyRef>, replicas: i32) -> String {
    template_hash(&pod_template(inputs, gossip, &config_hash(&server_config(inputs, replicas))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{AclSpec, DiscoveryClusterSpec, StorageSpec};

    fn inputs(spec: serde_json::Value) -> Inputs {
        let spec: DiscoveryClusterSpec = serde_json::from_value(spec).expect("spec");
        Inputs {
            name: "consul".into(),
            namespace: "ops".into(),
            owner: OwnerReference {
                api_version: "concord.io/v1alpha1".into(),
                kind: "DiscoveryCluster".into(),
                name: "consul".into(),
                uid: "u-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            spec,
        }
    }

    fn plan(replicas: i32, partition: i32) -> StatefulSetPlan {
        StatefulSetPlan { replicas, partition, storage: ClaimStorage { size: "10Gi".into(), storage_class_name: None } }
    }

    #[test]
    fn server_config_joins_every_server_through_the_headless_service() {
        let config = server_config(&inputs(json!({"datacenter": "east"})), 3);
        assert_eq!(config["server"], true);
        assert_eq!(config["bootstrap_expect"], 3);
        assert_eq!(config["datacenter"], "east");
        assert_eq!(
            config["retry_join"],
            json!([
                "consul-server-0.consul-server.ops.svc",
                "consul-server-1.consul-server.ops.svc",
                "consul-server-2.consul-server.ops.svc",
            ])
        );
        assert_eq!(config["performance"]["raft_multiplier"], 1);
        assert_eq!(config["ui_config"]["enabled"], true);
        assert_eq!(config["ports"]["dns"], DNS_PORT);
        assert!(config.get("acl").is_none());
        assert!(config.get("encrypt").is_none(), "the gossip key never goes into the ConfigMap");
    }

    #[test]
    fn acl_ui_and_dns_follow_the_spec() {
        let mut i = inputs(json!({"ui": false, "dns": false}));
        i.spec.acl = Some(AclSpec { enabled: true, bootstrap_secret_name: None });
        let config = server_config(&i, 1);
        assert_eq!(config["acl"]["enabled"], true);
        assert_eq!(config["acl"]["default_policy"], "deny");
        assert_eq!(config["ui_config"]["enabled"], false);
        assert_eq!(config["ports"]["dns"], -1);
        let ports: Vec<i32> =
            client_service(&i).spec.and_then(|s| s.ports).unwrap_or_default().iter().map(|p| p.port).collect();
        assert_eq!(ports, vec![HTTPS_PORT]);
    }

    #[test]
    fn scaling_does_not_change_the_config_hash_but_other_changes_do() {
        let i = inputs(json!({}));
        assert_eq!(config_hash(&server_config(&i, 3)), config_hash(&server_config(&i, 5)));
        let other = inputs(json!({"datacenter": "west"}));
        assert_ne!(config_hash(&server_config(&i, 3)), config_hash(&server_config(&other, 3)));
        assert_eq!(desired_template_hash(&i, None, 3), desired_template_hash(&i, None, 5));
        let new_image = inputs(json!({"image": "hashicorp/consul:1.23.0"}));
        assert_ne!(desired_template_hash(&i, None, 3), desired_template_hash(&new_image, None, 3));
    }

    #[test]
    fn services_headless_publishes_not_ready_and_client_serves_http_and_dns() {
        let i = inputs(json!({}));
        let headless = headless_service(&i).spec.expect("spec");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        let raft_serf: Vec<(i32, &str)> = headless
            .ports
            .as_ref()
            .expect("ports")
            .iter()
            .map(|p| (p.port, p.protocol.as_deref().unwrap_or("")))
            .collect();
        assert!(raft_serf.contains(&(SERVER_PORT, "TCP")) && raft_serf.contains(&(SERF_LAN_PORT, "UDP")));
        let client = client_service(&i).spec.expect("spec");
        let ports: Vec<(i32, String)> =
            client.ports.expect("ports").into_iter().map(|p| (p.port, p.protocol.unwrap_or_default())).collect();
        assert_eq!(ports, vec![(8501, "TCP".into()), (8600, "TCP".into()), (8600, "UDP".into())]);
        let pdb = pod_disruption_budget(&i).spec.expect("spec");
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    }

    #[test]
    fn statefulset_runs_consul_non_root_with_a_leader_probe_and_claims() {
        let mut i = inputs(json!({"image": "hashicorp/consul:1.22.7"}));
        i.spec.storage =
            Some(StorageSpec { size: "1Gi".into(), storage_class_name: Some("fast".into()), retain_on_delete: None });
        let gossip = gossip_key_ref("consul", None);
        let sts = statefulset(
            &i,
            gossip.as_ref(),
            &StatefulSetPlan { replicas: 3, partition: 2, storage: ClaimStorage::from_spec(&i) },
        );
        assert_eq!(sts.metadata.owner_references.as_ref().expect("owner")[0].uid, "u-1");
        let spec = sts.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("consul-server"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let partition = spec.update_strategy.as_ref().and_then(|u| u.rolling_update.as_ref()).and_then(|r| r.partition);
        assert_eq!(partition, Some(2));
        let retention = spec.persistent_volume_claim_retention_policy.as_ref().expect("retention");
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        let claim = &spec.volume_claim_templates.as_ref().expect("claims")[0];
        assert_eq!(ClaimStorage::from_statefulset(&sts), Some(ClaimStorage::from_spec(&i)));
        assert_eq!(claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()), Some("fast"));

        let pod = spec.template.spec.as_ref().expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("hashicorp/consul:1.22.7"));
        let args = c.args.as_ref().expect("args");
        assert!(args.contains(&"-config-file=/consul/gossip/gossip.json".to_string()));
        assert!(args.contains(&"-advertise=$(POD_IP)".to_string()));
        let volume_secret = |name: &str| {
            pod.volumes.as_ref().expect("volumes").iter().find(|v| v.name == name).and_then(|v| v.secret.clone())
        };
        let gossip = volume_secret("gossip").expect("gossip config volume");
        assert_eq!(gossip.secret_name.as_deref(), Some("consul-gossip-config"));
        assert_eq!(gossip.default_mode, Some(0o440));
        let tls = volume_secret("tls").expect("TLS volume");
        assert_eq!(tls.secret_name.as_deref(), Some("consul-server-tls"));
        let mounts: Vec<(&str, &str)> = c
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert!(mounts.contains(&("gossip", GOSSIP_DIR)) && mounts.contains(&("tls", TLS_DIR)), "{mounts:?}");
        let api_ports: Vec<i32> = c.ports.as_ref().expect("ports").iter().map(|p| p.container_port).collect();
        assert!(api_ports.contains(&HTTPS_PORT) && !api_ports.contains(&HTTP_PORT), "{api_ports:?}");
        let probe = c.readiness_probe.as_ref().and_then(|p| p.exec.as_ref()).and_then(|e| e.command.as_ref());
        assert!(probe.expect("exec probe").join(" ").contains("/v1/status/leader"));
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(
            (sc.run_as_user, sc.run_as_non_root, sc.read_only_root_filesystem),
            (Some(100), Some(true), Some(true))
        );
        let pod_sc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("RuntimeDefault"));
        let anti = pod.affinity.as_ref().and_then(|a| a.pod_anti_affinity.as_ref()).expect("anti-affinity");
        assert!(anti.preferred_during_scheduling_ignored_during_execution.is_some());
        assert!(anti.required_during_scheduling_ignored_during_execution.is_none());
    }

    #[test]
    fn claims_are_deleted_with_the_cluster_only_when_asked_and_gossip_can_be_off() {
        let mut i = inputs(json!({"gossip": {"enabled": false}}));
        i.spec.storage =
            Some(StorageSpec { size: "1Gi".into(), storage_class_name: None, retain_on_delete: Some(false) });
        let gossip = gossip_key_ref("consul", i.spec.gossip.as_ref());
        assert_eq!(gossip, None);
        let sts = statefulset(&i, None, &plan(1, 0));
        let spec = sts.spec.expect("spec");
        assert_eq!(
            spec.persistent_volume_claim_retention_policy.and_then(|p| p.when_deleted).as_deref(),
            Some("Delete")
        );
        let pod = spec.template.spec.expect("pod");
        let args = pod.containers[0].args.clone().expect("args");
        assert!(!args.iter().any(|a| a.contains("gossip")), "{args:?}");
        assert!(!pod.volumes.unwrap_or_default().iter().any(|v| v.name == "gossip"));
    }

    #[test]
    fn the_gossip_key_is_in_no_argument_env_var_or_configmap_only_in_its_secret_file() {
        let i = inputs(json!({}));
        let gossip = gossip_key_ref("consul", None);
        let sts = statefulset(&i, gossip.as_ref(), &plan(3, 0));
        let key = new_gossip_key();
        let config_secret = gossip_config_secret(&i, &key);
        let file = &config_secret.data.as_ref().expect("data")[GOSSIP_CONFIG_KEY].0;
        let file: Value = serde_json::from_slice(file).expect("JSON");
        assert_eq!(file, json!({ "encrypt": key }));
        let container = &sts.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod").containers[0];
        let visible = serde_json::to_string(&(&container.command, &container.args, &container.env)).expect("json");
        for leak in ["encrypt", "GOSSIP", "consul-gossip\"", "secretKeyRef", key.as_str()] {
            assert!(!visible.contains(leak), "{leak} in the pod spec's command, args or env: {visible}");
        }
        let config_map = serde_json::to_string(&config_map(&i, 3)).expect("json");
        assert!(!config_map.contains("encrypt"));
    }

    #[test]
    fn tls_is_on_by_default_with_https_verified_rpc_and_loopback_only_http() {
        let config = server_config(&inputs(json!({})), 3);
        assert_eq!(config["ports"]["https"], HTTPS_PORT);
        assert_eq!(config["ports"]["http"], HTTP_PORT);
        assert_eq!(config["addresses"]["http"], "127.0.0.1");
        assert_eq!(config["tls"]["defaults"]["ca_file"], "/consul/tls/ca.crt");
        assert_eq!(config["tls"]["defaults"]["verify_outgoing"], true);
        assert_eq!(config["tls"]["internal_rpc"]["verify_incoming"], true);
        assert_eq!(config["tls"]["internal_rpc"]["verify_server_hostname"], true);

        let off = inputs(json!({ "tls": { "enabled": false } }));
        let config = server_config(&off, 3);
        assert_eq!(config["ports"]["https"], -1);
        assert!(config.get("tls").is_none() && config.get("addresses").is_none());
        let ports: Vec<i32> =
            client_service(&off).spec.and_then(|s| s.ports).unwrap_or_default().iter().map(|p| p.port).collect();
        assert_eq!(ports[0], HTTP_PORT);
        let sts = statefulset(&off, None, &plan(3, 0));
        let volumes = sts.spec.and_then(|s| s.template.spec).and_then(|p| p.volumes).unwrap_or_default();
        assert!(!volumes.iter().any(|v| v.name == "tls"));
        assert_ne!(
            desired_template_hash(&off, None, 3),
            desired_template_hash(&inputs(json!({})), None, 3),
            "turning TLS off or on rolls the servers"
        );
    }

    #[test]
    fn a_user_gossip_secret_is_referenced_not_generated() {
        let i = inputs(json!({"gossip": {"secretRef": {"name": "mine", "key": "gossip"}}}));
        assert_eq!(
            gossip_key_ref("consul", i.spec.gossip.as_ref()),
            Some(GossipKeyRef { secret: "mine".into(), key: "gossip".into() })
        );
    }

    #[test]
    fn gossip_keys_are_32_random_bytes_in_base64() {
        use base64::Engine;
        let key = new_gossip_key();
        let bytes = base64::engine::general_purpose::STANDARD.decode(&key).expect("base64");
        assert_eq!(bytes.len(), 32);
        assert_ne!(key, new_gossip_key());
    }
}
