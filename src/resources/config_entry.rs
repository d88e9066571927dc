//! What every config-entry kind shares: the status shape, and pieces several kinds'
//! schemas use (HTTP header modifiers, mesh gateway mode).
use super::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Observed state of a Consul config entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigEntryStatus {
    /// Standard conditions: Synced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ModifyIndex of the config entry concord last wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_modify_index: Option<u64>,
}

/// Headers to add, set or remove on a request or a response.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifiers {
    /// Appended to any existing values of the header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub add: BTreeMap<String, String>,
    /// Replaces the header's values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub set: BTreeMap<String, String>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub remove: Vec<String>,
}

/// How traffic to a service reaches another datacenter or partition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshGatewayConfig {
    /// `none`, `local` or `remote` (empty: inherit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MeshGatewayMode>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MeshGatewayMode {
    None,
    Local,
    Remote,
}

/// The protocols Consul's L4/L7 proxies speak.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Http,
    Http2,
    Grpc,
}
