//! `Mesh`: the Consul `mesh` entry (always named `mesh`): settings of the whole service
//! mesh, such as the TLS versions proxies accept and whether transparent proxies may only
//! reach mesh destinations.
use super::ConfigEntryStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Mesh-wide settings; one object per cluster manages Consul's `mesh` entry.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "Mesh",
    plural = "meshes",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "mesh",
    category = "concord",
    doc = "Consul mesh config entry.",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MeshSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent_proxy: Option<MeshTransparentProxy>,
    /// Allow services to set mutualTLSMode permissive.
    #[serde(default, rename = "allowEnablingPermissiveMutualTLS", skip_serializing_if = "Option::is_none")]
    pub allow_enabling_permissive_mutual_tls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<MeshTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<MeshHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peering: Option<MeshPeering>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshTransparentProxy {
    /// Transparent proxies reach only destinations in the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_destinations_only: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshTls {
    /// TLS of connections into proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming: Option<MeshTlsSettings>,
    /// TLS of connections out of proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<MeshTlsSettings>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tlsMinVersion) || !has(self.tlsMaxVersion) || self.tlsMinVersion == 'TLS_AUTO' || self.tlsMaxVersion == 'TLS_AUTO' || self.tlsMinVersion <= self.tlsMaxVersion").message("tlsMinVersion must not be above tlsMaxVersion"))]
#[x_kube(validation = Rule::new("!has(self.cipherSuites) || size(self.cipherSuites) == 0 || !has(self.tlsMinVersion) || self.tlsMinVersion != 'TLSv1_3'").message("cipherSuites cannot be set with TLS 1.3 only"))]
pub struct MeshTlsSettings {
    #[serde(default, rename = "tlsMinVersion", skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<TlsVersion>,
    #[serde(default, rename = "tlsMaxVersion", skip_serializing_if = "Option::is_none")]
    pub tls_max_version: Option<TlsVersion>,
    /// Envoy cipher suite names (TLS 1.2 and lower).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub cipher_suites: Vec<String>,
}

/// TLS versions as Consul names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TlsVersion {
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSv1_0")]
    V1_0,
    #[serde(rename = "TLSv1_1")]
    V1_1,
    #[serde(rename = "TLSv1_2")]
    V1_2,
    #[serde(rename = "TLSv1_3")]
    V1_3,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshHttp {
    /// Drop the X-Forwarded-Client-Cert header from incoming requests.
    #[serde(default, rename = "sanitizeXForwardedClientCert", skip_serializing_if = "Option::is_none")]
    pub sanitize_x_forwarded_client_cert: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshPeering {
    /// Peering control-plane traffic goes through mesh gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_through_mesh_gateways: Option<bool>,
}
