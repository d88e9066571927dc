//! `ExportedServices`: the Consul `exported-services` entry of the partition (named
//! `default` on Consul CE): which services peers or partitions may consume.
use super::ConfigEntryStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Services offered to cluster peers (or partitions); one object per cluster manages the
/// partition's entry.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ExportedServices",
    plural = "exportedservices",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "exp",
    category = "concord",
    doc = "Consul exported-services of the partition.",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExportedServicesSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Each exported service and who may consume it.
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("each service is exported once"))]
    #[schemars(length(max = 64))]
    pub services: Vec<ExportedService>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedService {
    /// Consul service name (`*` for all).
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    #[x_kube(validation = Rule::new("size(self) > 0").message("an exported service names at least one consumer"))]
    #[schemars(length(max = 32))]
    pub consumers: Vec<ServiceConsumer>,
}

/// One consumer: a cluster peer, an admin partition or a sameness group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.peer) ? 1 : 0) + (has(self.partition) ? 1 : 0) + (has(self.samenessGroup) ? 1 : 0) == 1").message("a consumer is exactly one of peer, partition, samenessGroup"))]
pub struct ServiceConsumer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub sameness_group: Option<String>,
}
