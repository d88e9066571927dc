//! Catalog sync between Kubernetes and Consul, both directions.
//!
//! - [`to_consul`]: Services and EndpointSlices → instances on [`SYNC_NODES`] synthetic
//!   Consul nodes per sync identity (`k8s-sync-<identity>-NN`), written through `/v1/txn`.
//! - [`to_kubernetes`]: Consul services that did not come from Kubernetes → selector-less
//!   Services with EndpointSlices of their passing instances.
//!
//! Each direction keeps the decision of what should exist in pure functions of plain data
//! (`desired`, `diff`), and the I/O (watches, writes) in its `mod.rs`. Loops are broken
//! by ownership marks: what `to_kubernetes` creates carries the [`SYNC_IDENTITY_LABEL`]
//! and is never registered into Consul, and what `to_consul` registers carries
//! `external-source=kubernetes` and is never mirrored into Kubernetes. Only objects that
//! carry this sync's own mark are ever changed or removed.
pub mod names;
pub mod status;
pub mod to_consul;
pub mod to_kubernetes;

use crate::context::Actor;
use crate::resources::{DiscoveryCluster, SyncSpec, parse_duration};
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::time::Duration;

/// `"true"`/`"false"`: sync this Service to Consul or not, whatever the default.
pub const ANNOTATION_SYNC: &str = "concord.io/sync";
/// Consul service name (default: the Service name); several Services may share one.
pub const ANNOTATION_SERVICE_NAME: &str = "concord.io/service-name";
/// Comma-separated Consul tags.
pub const ANNOTATION_TAGS: &str = "concord.io/tags";
/// A JSON object of extra Consul service meta.
pub const ANNOTATION_META: &str = "concord.io/meta";
/// The port to register, by name or number (default: the Service's first port).
pub const ANNOTATION_PORT: &str = "concord.io/port";
/// `"true"`: register the LoadBalancer ingress addresses instead of the endpoints.
pub const ANNOTATION_USE_LB_IP: &str = "concord.io/use-load-balancer-ip";
/// On Services mirrored from Consul: the Consul service name.
pub const ANNOTATION_CONSUL_SERVICE: &str = "concord.io/consul-service";

/// Consul meta: where an instance came from (`kubernetes`, as consul-k8s writes it).
pub const META_EXTERNAL_SOURCE: &str = "external-source";
pub const EXTERNAL_SOURCE_KUBERNETES: &str = "kubernetes";
pub const META_K8S_NAMESPACE: &str = "k8s-namespace";
pub const META_K8S_SERVICE: &str = "k8s-service";
/// Consul meta: the sync identity that owns an instance.
pub const META_SYNC: &str = "concord-sync";

/// Standard label on every Kubernetes object concord creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "concord";
/// On Services and EndpointSlices mirrored from Consul: the owning sync identity.
pub const SYNC_IDENTITY_LABEL: &str = "concord.io/sync-identity";
/// EndpointSlice controller label; a value other than the built-in controller's keeps
/// kube-controller-manager's hands off our slices.
pub const LABEL_SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const SLICE_MANAGED_BY: &str = "concord.io";
/// Field manager of every object the sync applies (its own, so it never fights others).
pub const FIELD_MANAGER: &str = "concord-catalog-sync";

/// How many synthetic Consul nodes one sync spreads its instances over. Consul re-reads
/// every check of a node for each service it writes there inside a transaction, so one
/// node holding 10,000 instances makes an initial sync quadratic (measured: a 64-operation
/// transaction took 19 ms with 1,600 instances on the node and 127 ms with 10,000). Spread
/// over 16 nodes a node holds ~600 at 10,000 instances. Changing this number moves
/// instances at the next anti-entropy pass (each move is atomic: no gap in DNS).
pub const SYNC_NODES: u32 = 16;

/// 32-bit FNV-1a: a hash that is stable across processes, platforms and Rust releases
/// (std's hashers promise none of that), for placing instances on nodes.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Default period of the full anti-entropy comparison.
pub const DEFAULT_ANTI_ENTROPY: Duration = Duration::from_secs(300);

/// Who owns what this sync writes: `<namespace>-<name>` of its DiscoveryCluster, as a
/// label-safe value. Two DiscoveryClusters (or two Kubernetes clusters with different
/// names) writing to one Consul never touch each other's instances.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncIdentity(String);

impl SyncIdentity {
    pub fn new(value: &str) -> Self {
        Self(names::label_value(value))
    }

    /// The identity of a DiscoveryCluster's sync.
    pub fn of(dc: &DiscoveryCluster) -> Self {
        Self::new(&format!("{}-{}", dc.namespace().unwrap_or_default(), dc.name_any()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The synthetic Consul node that holds the instance `service_id`: one of
    /// [`SYNC_NODES`], chosen by a stable hash of the ID, so every instance has exactly one
    /// right place, whatever the order of writes and across restarts and versions.
    pub fn node_of(&self, service_id: &str) -> String {
        format!("k8s-sync-{}-{:02}", self.0, fnv1a(service_id.as_bytes()) % SYNC_NODES)
    }

    /// The Consul filter expression (`/v1/catalog/nodes?filter=`) that finds this sync's
    /// nodes, including ones from an older layout. The identity is label-safe (no quotes).
    pub fn nodes_filter(&self) -> String {
        format!(r#"Meta["{META_SYNC}"] == "{}""#, self.0)
    }
}

impl std::fmt::Display for SyncIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Kubernetes → Consul settings, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToConsulConfig {
    pub identity: SyncIdentity,
    pub default_sync: bool,
    pub allow_namespaces: BTreeSet<String>,
    pub deny_namespaces: BTreeSet<String>,
    pub anti_entropy: Duration,
    /// Whose right to list Services and EndpointSlices decides which namespaces are published.
    pub actor: Actor,
}

impl ToConsulConfig {
    /// Whether Services of `namespace` may be synced at all (deny wins over allow).
    pub fn namespace_allowed(&self, namespace: &str) -> bool {
        !self.deny_namespaces.contains(namespace)
            && (self.allow_namespaces.is_empty() || self.allow_namespaces.contains(namespace))
    }
}

/// Consul → Kubernetes settings, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToKubernetesConfig {
    pub identity: SyncIdentity,
    pub target_namespace: String,
    pub prefix: String,
    pub deny_services: BTreeSet<String>,
    pub anti_entropy: Duration,
    /// Whose rights write the mirrored Services and EndpointSlices.
    pub actor: Actor,
}

/// Both directions; `None` means off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncConfig {
    pub to_consul: Option<ToConsulConfig>,
    pub to_kubernetes: Option<ToKubernetesConfig>,
}

/// What an external DiscoveryCluster without `spec.sync` gets (the controller's
/// `--sync-*` flags). A managed cluster without `spec.sync` syncs nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncDefaults {
    pub to_consul: bool,
    pub default_sync: bool,
    pub to_kubernetes: bool,
    pub target_namespace: Option<String>,
    pub anti_entropy: Option<Duration>,
    /// The controller's `--default-service-account`.
    pub default_service_account: Option<String>,
}

/// The sync settings of a DiscoveryCluster (pure): its `spec.sync`, else for an external
/// cluster the controller-wide defaults.
pub fn effective_config(dc: &DiscoveryCluster, defaults: &SyncDefaults) -> Result<SyncConfig, String> {
    let identity = SyncIdentity::of(dc);
    let namespace = dc.namespace().unwrap_or_default();
    let from_flags;
    let spec: &SyncSpec = match (&dc.spec.sync, dc.spec.external.is_some()) {
        (Some(spec), _) => spec,
        (None, true) => {
            from_flags = SyncSpec {
                to_consul: Some(crate::resources::ToConsulSpec {
                    enabled: defaults.to_consul,
                    default_sync: defaults.default_sync,
                    ..Default::default()
                }),
                to_kubernetes: Some(crate::resources::ToKubernetesSpec {
                    enabled: defaults.to_kubernetes,
                    target_namespace: defaults.target_namespace.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            &from_flags
        }
        (None, false) => return Ok(SyncConfig::default()),
    };
    let anti_entropy = match &spec.anti_entropy_interval {
        Some(s) => parse_duration(s).map_err(|e| e.to_string())?.max(Duration::from_secs(1)),
        None => defaults.anti_entropy.unwrap_or(DEFAULT_ANTI_ENTROPY),
    };
    let actor =
        Actor::of(&namespace, spec.service_account_name.as_deref(), defaults.default_service_account.as_deref());
    let to_consul = spec.to_consul.as_ref().filter(|t| t.enabled).map(|t| ToConsulConfig {
        identity: identity.clone(),
        default_sync: t.default_sync,
        allow_namespaces: t.allow_namespaces.iter().cloned().collect(),
        deny_namespaces: t.deny_namespaces.iter().cloned().collect(),
        anti_entropy,
        actor: actor.clone(),
    });
    let to_kubernetes = spec.to_kubernetes.as_ref().filter(|t| t.enabled).map(|t| ToKubernetesConfig {
        identity: identity.clone(),
        target_namespace: t.target_namespace.clone().unwrap_or_else(|| namespace.clone()),
        prefix: t.prefix.clone().unwrap_or_default(),
        deny_services: t.deny_services.clone().unwrap_or_else(|| vec!["consul".to_string()]).into_iter().collect(),
        anti_entropy,
        actor,
    });
    Ok(SyncConfig { to_consul, to_kubernetes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::DiscoveryClusterSpec;

    fn dc(spec: serde_json::Value) -> DiscoveryCluster {
        let spec: DiscoveryClusterSpec = serde_json::from_value(spec).expect("spec");
        let mut dc = DiscoveryCluster::new("consul", spec);
        dc.metadata.namespace = Some("ops".into());
        dc
    }

    #[test]
    fn spec_sync_wins_and_consul_is_denied_by_default() {
        let d = dc(serde_json::json!({
            "external": {"address": "http://127.0.0.1:8500"},
            "sync": {"toConsul": {"enabled": true, "denyNamespaces": ["kube-system"]},
                     "toKubernetes": {"enabled": true, "prefix": "c-"}, "antiEntropyInterval": "1m"}
        }));
        let cfg = effective_config(&d, &SyncDefaults::default()).expect("valid");
        let tc = cfg.to_consul.expect("on");
        assert_eq!(tc.identity.as_str(), "ops-consul");
        assert_eq!(tc.identity.nodes_filter(), r#"Meta["concord-sync"] == "ops-consul""#);
        assert!(!tc.namespace_allowed("kube-system"));
        assert!(tc.namespace_allowed("default"));
        assert_eq!(tc.anti_entropy, Duration::from_secs(60));
        let tk = cfg.to_kubernetes.expect("on");
        assert_eq!(tk.target_namespace, "ops");
        assert!(tk.deny_services.contains("consul"));
        assert_eq!(tk.prefix, "c-");
    }

    #[test]
    fn external_clusters_without_spec_sync_use_the_flags_managed_ones_nothing() {
        let defaults = SyncDefaults { to_consul: true, default_sync: true, ..Default::default() };
        let ext = dc(serde_json::json!({"external": {"address": "http://127.0.0.1:8500"}}));
        let cfg = effective_config(&ext, &defaults).expect("valid");
        assert!(cfg.to_consul.expect("on").default_sync);
        assert!(cfg.to_kubernetes.is_none());
        let managed = dc(serde_json::json!({}));
        assert_eq!(effective_config(&managed, &defaults).expect("valid"), SyncConfig::default());
    }

    #[test]
    fn instances_spread_over_a_fixed_set_of_nodes_by_a_stable_hash() {
        // FNV-1a's published test vectors: the placement never changes between versions.
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
        let id = SyncIdentity::new("ops-consul");
        assert_eq!(id.node_of("a"), format!("k8s-sync-ops-consul-{:02}", 0xe40c_292c_u32 % SYNC_NODES));
        let nodes: BTreeSet<String> = (0..1000).map(|i| id.node_of(&format!("ns-svc-10.0.{i}.1-80"))).collect();
        assert_eq!(nodes.len(), SYNC_NODES as usize, "1,000 instances use every node");
        let mut per_node: std::collections::BTreeMap<String, usize> = Default::default();
        for i in 0..10_000 {
            *per_node
                .entry(id.node_of(&format!("ns-b-{}-10.{}.{}.{}-80", i / 10, i / 2500, i % 250, i % 10)))
                .or_default() += 1;
        }
        let (min, max) = (per_node.values().min().copied(), per_node.values().max().copied());
        assert!(max.unwrap_or(0) < 2 * min.unwrap_or(0), "balanced enough: {per_node:?}");
    }

    #[test]
    fn the_sync_acts_as_its_service_account_else_the_default_else_the_controller() {
        let sa = |name: &str| Actor::ServiceAccount { namespace: "ops".into(), name: name.into() };
        let on = serde_json::json!({"toConsul": {"enabled": true}, "toKubernetes": {"enabled": true}});
        let mut named = on.clone();
        named["serviceAccountName"] = "sync".into();
        let with_default = SyncDefaults { default_service_account: Some("tenant".into()), ..Default::default() };
        for (sync, defaults, want) in [
            (&named, &with_default, sa("sync")),
            (&on, &with_default, sa("tenant")),
            (&on, &SyncDefaults::default(), Actor::Controller),
        ] {
            let cfg = effective_config(&dc(serde_json::json!({"sync": sync})), defaults).expect("valid");
            assert_eq!(cfg.to_consul.expect("on").actor, want);
            assert_eq!(cfg.to_kubernetes.expect("on").actor, want);
        }
    }

    #[test]
    fn allow_list_limits_namespaces() {
        let d = dc(serde_json::json!({"sync": {"toConsul": {"enabled": true, "allowNamespaces": ["a"]}}}));
        let tc = effective_config(&d, &SyncDefaults::default()).expect("valid").to_consul.expect("on");
        assert!(tc.namespace_allowed("a"));
        assert!(!tc.namespace_allowed("b"));
    }
}
