//! `TerminatingGateway`: the Consul `terminating-gateway` entry of one gateway (named
//! like the object): the services outside the mesh it reaches on the mesh's behalf.
//! `caFile`, `certFile` and `keyFile` are paths on the gateway's host, never the
//! certificates themselves.
use super::ConfigEntryStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Services linked to one terminating gateway; the object's name is the gateway's
/// Consul service name.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "TerminatingGateway",
    plural = "terminatinggateways",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "tgw",
    category = "concord",
    doc = "Consul terminating-gateway for the gateway service named like this object.",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TerminatingGatewaySpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// The services the gateway reaches (`*`: every service).
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("each service is linked once"))]
    #[schemars(length(max = 256))]
    pub services: Vec<LinkedService>,
}

/// One service behind the gateway, with the TLS it originates to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(!has(self.certFile) && !has(self.keyFile)) || (has(self.caFile) && has(self.certFile) && has(self.keyFile))").message("certFile and keyFile go together, with caFile"))]
pub struct LinkedService {
    /// Consul service name, or `*`.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Path on the gateway's host of the CA that signs the service's certificate.
    #[serde(default, rename = "caFile", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub ca_file: Option<String>,
    /// Path on the gateway's host of the client certificate (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub cert_file: Option<String>,
    /// Path on the gateway's host of the client certificate's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub key_file: Option<String>,
    /// Server name sent in the TLS handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub sni: Option<String>,
}
