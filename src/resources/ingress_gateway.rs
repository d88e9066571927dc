//! `IngressGateway`: the Consul `ingress-gateway` entry of one gateway (named like the
//! object): the listeners it opens and the mesh services each routes to.
use super::{ConfigEntryStatus, HeaderModifiers, PassiveHealthCheck, Protocol, TlsVersion};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Listeners of one ingress gateway; the object's name is the gateway's Consul service name.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "IngressGateway",
    plural = "ingressgateways",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "igw",
    category = "concord",
    doc = "Consul ingress-gateway for the gateway service named like this object.",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IngressGatewaySpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// TLS of every listener (a listener may override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTls>,
    /// The ports the gateway listens on and the services behind each.
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.port == l.port))").message("each listener has a port of its own"))]
    #[schemars(length(max = 32))]
    pub listeners: Vec<IngressListener>,
    /// Limits and passive health checks of every upstream service (a service may override them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<IngressServiceDefaults>,
}

/// One port of the gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.protocol != 'tcp' || size(self.services) == 1").message("a tcp listener routes exactly one service"))]
#[x_kube(validation = Rule::new("self.protocol != 'tcp' || self.services.all(s, s.name != '*' && !has(s.hosts) && !has(s.requestHeaders) && !has(s.responseHeaders))").message("a tcp listener takes no wildcard service, hosts or header changes"))]
pub struct IngressListener {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `tcp`, `http`, `http2` or `grpc`; an HTTP-like listener needs its services'
    /// protocol to match (service-defaults or proxy-defaults).
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTls>,
    /// Services behind this port (`*`: every service, HTTP listeners only).
    #[x_kube(validation = Rule::new("size(self) > 0").message("a listener routes at least one service"))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("a listener names each service once"))]
    #[schemars(length(max = 64))]
    pub services: Vec<IngressService>,
}

/// A service behind a listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.name != '*' || !has(self.hosts)").message("hosts cannot be set on the wildcard service"))]
#[x_kube(validation = Rule::new("!has(self.tls) || (has(self.hosts) && size(self.hosts) > 0)").message("a service with its own TLS certificate needs hosts"))]
pub struct IngressService {
    /// Consul service name, or `*`.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Host headers routed to the service (HTTP listeners; default `<name>.ingress.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayServiceTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifiers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifiers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub max_pending_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub max_concurrent_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_health_check: Option<PassiveHealthCheck>,
}

/// Limits of every service behind the gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressServiceDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub max_pending_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub max_concurrent_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_health_check: Option<PassiveHealthCheck>,
}

/// TLS of the gateway or of one listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tlsMinVersion) || !has(self.tlsMaxVersion) || self.tlsMinVersion == 'TLS_AUTO' || self.tlsMaxVersion == 'TLS_AUTO' || self.tlsMinVersion <= self.tlsMaxVersion").message("tlsMinVersion must not be above tlsMaxVersion"))]
#[x_kube(validation = Rule::new("!has(self.cipherSuites) || size(self.cipherSuites) == 0 || !has(self.tlsMinVersion) || self.tlsMinVersion != 'TLSv1_3'").message("cipherSuites cannot be set with TLS 1.3 only"))]
pub struct GatewayTls {
    /// Serve TLS with certificates from Consul's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Certificates from an SDS server instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sds: Option<GatewaySds>,
    #[serde(default, rename = "tlsMinVersion", skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<TlsVersion>,
    #[serde(default, rename = "tlsMaxVersion", skip_serializing_if = "Option::is_none")]
    pub tls_max_version: Option<TlsVersion>,
    /// Envoy cipher suite names (TLS 1.2 and lower).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub cipher_suites: Vec<String>,
}

/// A service's own certificate (by SDS).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayServiceTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sds: Option<GatewaySds>,
}

/// Where Envoy fetches a certificate by SDS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySds {
    /// The SDS cluster (in the gateway's bootstrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster_name: Option<String>,
    /// The certificate's name at that server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub cert_resource: Option<String>,
}
