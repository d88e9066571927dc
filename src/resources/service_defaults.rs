//! `ServiceDefaults`: the Consul `service-defaults` entry of one service (named like the
//! object): its protocol, and how its proxies treat upstreams (connection limits and
//! passive health checks: circuit breaking).
use super::{ConfigEntryStatus, MeshGatewayConfig, Protocol};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Defaults for one service; the object's name is the Consul service name.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ServiceDefaults",
    plural = "servicedefaults",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "sd",
    category = "concord",
    doc = "Consul service-defaults for the service named like this object.",
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDefaultsSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// The service's protocol; routers, splitters and L7 intentions need an HTTP one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// How the service's proxies reach their upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_config: Option<UpstreamConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_gateway: Option<MeshGatewayConfig>,
    /// SNI the service's TLS certificate answers to, for services outside the mesh.
    #[serde(default, rename = "externalSNI", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub external_sni: Option<String>,
    /// Milliseconds the proxy waits to connect to the local instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub local_connect_timeout_ms: Option<i64>,
    /// Milliseconds the proxy waits for the local instance to answer an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub local_request_timeout_ms: Option<i64>,
    /// Concurrent inbound connections each instance accepts (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_inbound_connections: Option<i64>,
}

/// Upstream settings: defaults for every upstream, and overrides per upstream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.overrides) || self.overrides.all(o, has(o.name))").message("each override names its upstream"))]
#[x_kube(validation = Rule::new("!has(self.overrides) || self.overrides.all(o, !has(o.name) || self.overrides.exists_one(p, has(p.name) && p.name == o.name))").message("overrides name each upstream once"))]
#[x_kube(validation = Rule::new("!has(self.defaults) || !has(self.defaults.name)").message("defaults apply to every upstream: no name"))]
pub struct UpstreamConfig {
    /// Per-upstream settings, by upstream service name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub overrides: Vec<UpstreamSettings>,
    /// Settings for every upstream without an override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<UpstreamSettings>,
}

/// Connection settings towards an upstream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSettings {
    /// The upstream service's Consul name (overrides only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub name: Option<String>,
    /// Milliseconds to wait for a connection to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub connect_timeout_ms: Option<i64>,
    /// Protocol the upstream speaks (overrides its own service-defaults for this caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Circuit breaking: connection and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<UpstreamLimits>,
    /// Circuit breaking: outlier detection that ejects failing instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_health_check: Option<PassiveHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_gateway: Option<MeshGatewayConfig>,
}

/// Connection and request limits per upstream cluster (Envoy circuit breakers).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamLimits {
    /// Concurrent connections to all instances of the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_connections: Option<i64>,
    /// Requests that may wait for a connection (HTTP/1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_pending_requests: Option<i64>,
    /// Concurrent requests (HTTP/2, gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_concurrent_requests: Option<i64>,
}

/// Outlier detection: eject an instance after consecutive failures.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassiveHealthCheck {
    /// Time between ejection sweeps (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub interval: Option<String>,
    /// Consecutive errors (5xx, or connection failures) that eject an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub max_failures: Option<i64>,
    /// Percent chance an instance that qualifies is ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub enforcing_consecutive_5xx: Option<i64>,
    /// Most instances, in percent, ejected at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_ejection_percent: Option<i64>,
    /// Base ejection time, multiplied by the number of times ejected (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub base_ejection_time: Option<String>,
}
