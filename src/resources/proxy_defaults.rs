//! `ProxyDefaults`: the Consul `proxy-defaults` entry (always named `global`): settings
//! every sidecar proxy of the cluster starts from, such as the default protocol.
use super::{ConfigEntryStatus, MeshGatewayConfig};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Defaults for every proxy; one object per cluster manages Consul's `global` entry.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ProxyDefaults",
    plural = "proxydefaults",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "pd",
    category = "concord",
    doc = "Consul proxy-defaults (the `global` entry).",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProxyDefaultsSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Opaque proxy configuration passed to Envoy (e.g. `protocol: http`,
    /// `local_connect_timeout_ms`); keys are kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_json_schema")]
    pub config: Option<serde_json::Value>,
    /// `direct` or `transparent` (empty: Consul's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ProxyMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent_proxy: Option<TransparentProxyConfig>,
    /// `strict` or `permissive` mutual TLS for inbound traffic.
    #[serde(default, rename = "mutualTLSMode", skip_serializing_if = "Option::is_none")]
    pub mutual_tls_mode: Option<MutualTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_gateway: Option<MeshGatewayConfig>,
    /// Envoy access logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_logs: Option<AccessLogs>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    Direct,
    Transparent,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MutualTlsMode {
    Strict,
    Permissive,
}

/// Transparent proxy settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransparentProxyConfig {
    /// Port the outbound listener binds (default 15001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub outbound_listener_port: Option<i64>,
    /// Let downstreams dial instances directly instead of through the virtual IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialed_directly: Option<bool>,
}

/// Envoy access logging.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.path) || (has(self.type) && self.type == 'file')").message("path needs type file"))]
#[x_kube(validation = Rule::new("!(has(self.jsonFormat) && has(self.textFormat))").message("at most one of jsonFormat and textFormat"))]
pub struct AccessLogs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_listener_logs: Option<bool>,
    /// `stdout` (default), `stderr` or `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<AccessLogType>,
    /// File to write (type `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    #[serde(default, rename = "jsonFormat", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub json_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub text_format: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogType {
    Stdout,
    Stderr,
    File,
}
