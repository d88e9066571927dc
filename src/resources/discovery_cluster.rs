//! `DiscoveryCluster`: a Consul server cluster, either managed by concord (StatefulSet)
//! or external (`spec.external`, an existing Consul the controller only talks to).
//! Every other kind points at one through `spec.clusterRef`.
use super::{Condition, KeyRef};
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Default Consul server image; matches the consul version the tests run.
pub const DEFAULT_CONSUL_IMAGE: &str = "hashicorp/consul:1.22.7";

/// A Consul server cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "DiscoveryCluster",
    namespaced,
    status = "DiscoveryClusterStatus",
    shortname = "dc",
    category = "concord",
    doc = "A HashiCorp Consul server cluster that concord runs (a StatefulSet) or connects to (external).",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Leader","type":"string","jsonPath":".status.leader"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryClusterSpec {
    /// Number of Consul servers: 1, 3 or 5 (Raft wants an odd quorum).
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self == 1 || self == 3 || self == 5").message("replicas must be 1, 3 or 5: Raft needs an odd number of servers").reason(Reason::FieldValueInvalid))]
    pub replicas: i32,
    /// Consul server image.
    #[serde(default = "default_image")]
    pub image: String,
    /// Consul datacenter name.
    #[serde(default = "default_datacenter")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9-]{0,62}$')").message("datacenter must be lowercase letters, digits and dashes"))]
    #[schemars(length(max = 63))]
    pub datacenter: String,
    /// Persistent storage of each server's Raft data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// CPU and memory of each server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Gossip encryption; on by default with a generated key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip: Option<GossipSpec>,
    /// ACL system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<AclSpec>,
    /// TLS of a managed cluster; on by default: concord keeps a CA in the Secret
    /// `<name>-ca`, issues the servers' certificate into `<name>-server-tls`, the servers
    /// serve HTTPS on 8501 (plain HTTP only on the pod's loopback) and verify each other
    /// on internal RPC, and concord verifies them against that CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Serve the Consul web UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<bool>,
    /// Expose Consul DNS (port 8600) on the client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<bool>,
    /// Catalog sync between Kubernetes and this Consul.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncSpec>,
    /// Scheduled snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<SnapshotScheduleSpec>,
    /// Connect to an existing Consul instead of running one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
    /// What the concord objects of this namespace (KVConfig, ACLToken, ACLPolicy, ACLRole,
    /// ACLBindingRule, ServiceIntention, ConfigTemplate, ConsulSnapshot) may do in this Consul; see
    /// docs/security.md. Management-equivalent ACLs are refused unless granted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<TenancySpec>,
    /// How this Consul reaches the Kubernetes API server for the ACLAuthMethods of this
    /// namespace (TokenReview at login). Default: the address and CA concord itself
    /// uses. Set it when Consul dials the API server at another address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_auth: Option<KubernetesAuthSpec>,
}

/// The API server as this Consul dials it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesAuthSpec {
    /// URL of the API server, e.g. `https://kubernetes.default.svc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("host must be an https:// URL"))]
    #[schemars(length(max = 512))]
    pub host: Option<String>,
    /// PEM CA bundle that signs the API server's certificate at that address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_cert: Option<String>,
}

fn default_replicas() -> i32 {
    3
}
fn default_image() -> String {
    DEFAULT_CONSUL_IMAGE.to_string()
}
fn default_datacenter() -> String {
    "dc1".to_string()
}

/// The grants of a cluster's namespace: whoever may create concord objects there may do
/// only this in Consul through concord, whatever the controller's own token allows.
/// Each list, once set, is the whole grant of its kind (an empty list grants nothing);
/// an unset list keeps concord's default for its kind (anything, management aside).
/// A pattern ending in `*` matches names that start with what precedes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenancySpec {
    /// KV prefixes KVConfig objects may write and ConfigTemplates may read, e.g. `app/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub kv_prefixes: Option<Vec<String>>,
    /// Consul policy names ACLTokens and ACLRoles may carry and ACLPolicies may create.
    /// `global-management`, and any policy whose rules hold `acl = "write"`, are allowed
    /// only when this lists `global-management` by exact name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub policies: Option<Vec<String>>,
    /// Service names ACLTokens and ACLRoles may carry as service identities, and
    /// ACLBindingRules may bind (a templated bind name needs every service: unset or `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub service_identities: Option<Vec<String>>,
    /// Services whose ServiceIntentions (as destination) and service config entries
    /// (ServiceDefaults, ServiceResolver, ServiceRouter, ServiceSplitter) objects in this
    /// namespace may write; the cluster-wide entries (ProxyDefaults, Mesh,
    /// ExportedServices) need `*`. A PreparedQuery needs both its name and its service
    /// here; a prepared-query template needs `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub intention_destinations: Option<Vec<String>>,
    /// Node names ACLRoles may carry as node identities and ACLBindingRules may bind
    /// (`bindType: node`). Unlike the other lists, unset grants none: node identities
    /// are new in concord, so only an explicit grant allows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub node_identities: Option<Vec<String>>,
    /// Snapshot locations (prefixes, e.g. `s3://backups/legacy/`) a Restore may read
    /// besides this namespace's own (`<root>/<namespace>/<folder>/<file>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub restore_from: Vec<String>,
}

/// Persistent volume of each server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each server's volume claim, e.g. 10Gi.
    #[serde(default = "default_storage_size")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(Ki|Mi|Gi|Ti)$')").message("size must be a quantity like 10Gi"))]
    #[schemars(length(max = 16))]
    pub size: String,
    /// StorageClass of the claims; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep the claims when the DiscoveryCluster is deleted (default true: data outlives the object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_on_delete: Option<bool>,
}

fn default_storage_size() -> String {
    "10Gi".to_string()
}

/// Gossip (Serf) encryption.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GossipSpec {
    /// Encrypt gossip traffic (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// An existing Secret key holding a base64 32-byte key; generated once when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,
}

/// The ACL system.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclSpec {
    /// Turn ACLs on (default policy deny) and bootstrap them once.
    #[serde(default)]
    pub enabled: bool,
    /// Secret that keeps the bootstrap token (default `<cluster>-acl-bootstrap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_secret_name: Option<String>,
}

/// TLS of a managed cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Serve HTTPS and verified RPC (default true). `false` is plain HTTP on 8500. A
    /// cluster created without TLS must keep `false`: switching a running cluster on is
    /// not a rolling change (its servers and concord would stop understanding each other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Catalog sync settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncSpec {
    /// Kubernetes Services and EndpointSlices to Consul.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_consul: Option<ToConsulSpec>,
    /// Consul services to selector-less Kubernetes Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_kubernetes: Option<ToKubernetesSpec>,
    /// Create ServiceIntention objects for intentions in Consul that no object manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_intentions: Option<bool>,
    /// Kinds (e.g. `ServiceDefaults`, `ServiceResolver`) whose Consul config entries that
    /// no object manages become objects of that kind, named like the entry; `PreparedQuery`
    /// imports the prepared queries no object marked; `ACLRole` imports and adopts the
    /// ACL roles without a concord mark whose policies and identities `tenancy` grants;
    /// `ACLAuthMethod` the unmarked `kubernetes` methods whose binding rules all hold
    /// logins to this namespace (concord then writes their host, CA and reviewer token);
    /// `ACLBindingRule` the unmarked rules on this namespace's methods whose selector holds
    /// logins to this namespace and whose bind name `tenancy` grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k in ['ServiceIntention', 'ServiceDefaults', 'ServiceResolver', 'ServiceRouter', 'ServiceSplitter', 'ProxyDefaults', 'Mesh', 'ExportedServices', 'IngressGateway', 'TerminatingGateway', 'JWTProvider', 'PreparedQuery', 'ACLRole', 'ACLAuthMethod', 'ACLBindingRule'])").message("importConfigEntries names config-entry kinds concord manages (or PreparedQuery, ACLRole, ACLAuthMethod, ACLBindingRule)"))]
    #[schemars(length(max = 16))]
    pub import_config_entries: Vec<String>,
    /// How often the full anti-entropy comparison runs (Go duration, default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub anti_entropy_interval: Option<String>,
    /// ServiceAccount of this namespace whose rights the sync uses in Kubernetes
    /// (impersonation, so Kubernetes RBAC decides): it writes the mirrored Services and
    /// EndpointSlices (`toKubernetes`, in `targetNamespace`), and `toConsul` publishes
    /// only namespaces where it may list Services and EndpointSlices. Default: the
    /// controller's `--default-service-account`, else concord's own rights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("serviceAccountName must be a DNS subdomain name"))]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
}

/// Kubernetes to Consul.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToConsulSpec {
    /// Turn this direction on.
    #[serde(default)]
    pub enabled: bool,
    /// Sync Services without a `concord.io/sync` annotation (default false: opt-in).
    #[serde(default)]
    pub default_sync: bool,
    /// Only these namespaces (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_namespaces: Vec<String>,
    /// Never these namespaces (wins over allow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_namespaces: Vec<String>,
}

/// Consul to Kubernetes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToKubernetesSpec {
    /// Turn this direction on.
    #[serde(default)]
    pub enabled: bool,
    /// Namespace that receives the Services (default: the DiscoveryCluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Prefix of every created Service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Consul services never mirrored (default: consul).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_services: Option<Vec<String>>,
}

/// Scheduled snapshots.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScheduleSpec {
    /// Interval between snapshots (Go duration, e.g. 1h).
    #[schemars(schema_with = "super::duration_schema")]
    pub every: String,
    /// How many snapshots to keep; the oldest beyond this are pruned.
    #[schemars(range(min = 1, max = 1000))]
    pub retain: i32,
    /// Where snapshots go: a directory (`file:///var/lib/concord/snapshots`) or an object store URL (`s3://bucket/prefix`).
    #[x_kube(validation = Rule::new("self.startsWith('file:///') || self.startsWith('s3://') || self.startsWith('/')").message("location must be an absolute path, a file:/// URL or an s3:// URL"))]
    #[schemars(length(max = 1024))]
    pub location: String,
}

/// An existing Consul.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSpec {
    /// HTTP(S) address of a Consul server or agent; several may be given, comma-separated.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^, ]+( *, *https?://[^, ]+)*$')").message("address must be one or more http:// or https:// URLs, comma-separated"))]
    #[schemars(length(max = 1024))]
    pub address: String,
    /// Secret key holding the ACL token concord uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<KeyRef>,
    /// Secret key holding the PEM certificate of the CA that signed the servers' HTTPS
    /// certificates; `https://` addresses are then verified against it alone. Unset:
    /// the system's public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<KeyRef>,
    /// The name the servers' certificates must be valid for, when it is not the
    /// address's host (e.g. `server.dc1.consul` for servers addressed by IP; then the
    /// addresses must be IPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tls_server_name: Option<String>,
}

/// Observed state of a Consul cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryClusterStatus {
    /// Standard conditions: Available, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Server pods that are ready (managed mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Raft leader address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Raft peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Consul version the servers report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Catalog sync counters and problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
}

/// Catalog sync report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// Consul service instances registered from Kubernetes.
    #[serde(default)]
    pub to_consul_instances: i64,
    /// Kubernetes Services created from Consul.
    #[serde(default)]
    pub to_kubernetes_services: i64,
    /// Consul services skipped because a Service concord does not own has the name.
    /// Always written (even empty) so that a resolved clash disappears from the status.
    #[serde(default)]
    pub name_clashes: Vec<String>,
    /// Kubernetes Services whose registration is held at its last good state: invalid
    /// sync annotations, or an operation Consul refused (`<namespace>/<name>: <why>`,
    /// at most 100). Always written (even empty), like `nameClashes`.
    #[serde(default)]
    pub rejected_services: Vec<String>,
    /// What the sync's ServiceAccount (`spec.sync.serviceAccountName`) may not do, in the
    /// API server's words (`<direction> <namespace>: <why>`): namespaces `toConsul` does not publish,
    /// and a `targetNamespace` where `toKubernetes` may not write. Always written (even
    /// empty), like `nameClashes`.
    #[serde(default)]
    pub forbidden: Vec<String>,
}

impl DiscoveryClusterSpec {
    /// True when concord runs the servers (no `external`).
    pub fn is_managed(&self) -> bool {
        self.external.is_none()
    }

    /// True for a managed cluster whose servers speak TLS (the default).
    pub fn managed_tls(&self) -> bool {
        self.is_managed() && self.tls.as_ref().and_then(|t| t.enabled) != Some(false)
    }
}
