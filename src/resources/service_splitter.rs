//! `ServiceSplitter`: the Consul `service-splitter` entry of one service (named like the
//! object): weighted shares of its traffic to services or resolver subsets (a canary
//! split). Consul needs the service's protocol to be HTTP, and each subset to exist.
use super::{ConfigEntryStatus, HeaderModifiers};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Weighted traffic split of one service; the object's name is the service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ServiceSplitter",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "ssp",
    category = "concord",
    doc = "Consul service-splitter for the service named like this object.",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSplitterSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// The shares; their weights add up to 100.
    #[x_kube(validation = Rule::new("size(self) > 0").message("splits must name at least one share"))]
    #[x_kube(validation = Rule::new("self.map(s, s.weight).sum() >= 99.99 && self.map(s, s.weight).sum() <= 100.01").message("split weights must add up to 100").reason(Reason::FieldValueInvalid))]
    #[schemars(length(max = 32))]
    pub splits: Vec<Split>,
}

/// One share of the traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Split {
    /// Percent of requests, with up to two decimals.
    #[schemars(range(min = 0, max = 100))]
    pub weight: f64,
    /// Service to send to (default: this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub service: Option<String>,
    /// Resolver subset of that service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub service_subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifiers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifiers>,
}
