//! `ServiceResolver`: the Consul `service-resolver` entry of one service (named like the
//! object): subsets of its instances (by a filter on tags or meta), where its traffic
//! fails over to, redirects, timeouts and load balancing.
use super::ConfigEntryStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How requests to one service resolve to instances; the object's name is the service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ServiceResolver",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "sres",
    category = "concord",
    doc = "Consul service-resolver for the service named like this object.",
    printcolumn = r#"{"name":"Default Subset","type":"string","jsonPath":".spec.defaultSubset"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.defaultSubset) || (has(self.subsets) && self.defaultSubset in self.subsets)").message("defaultSubset must name one of subsets").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!has(self.redirect) || ((!has(self.subsets) || size(self.subsets) == 0) && (!has(self.failover) || size(self.failover) == 0) && !has(self.defaultSubset))").message("a redirect cannot have subsets, defaultSubset or failover"))]
#[x_kube(validation = Rule::new("!has(self.failover) || self.failover.all(k, k == '*' || (has(self.subsets) && k in self.subsets))").message("failover keys are '*' or a subset name"))]
pub struct ServiceResolverSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Subset used when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub default_subset: Option<String>,
    /// Named subsets of the service's instances.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?$') && size(k) <= 63)").message("subset names are lowercase DNS labels"))]
    #[schemars(extend("maxProperties" = 32))]
    pub subsets: BTreeMap<String, ResolverSubset>,
    /// Send every request to another service (or subset, datacenter, peer) instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<ResolverRedirect>,
    /// Where requests go when a subset (or `*`: any) has no healthy instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub failover: BTreeMap<String, ResolverFailover>,
    /// Time to establish a connection to an instance (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub connect_timeout: Option<String>,
    /// Time to wait for a whole HTTP response (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub request_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
}

/// Instances that pass a filter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolverSubset {
    /// Consul filter expression on the service instance, e.g. `"v2" in Service.Tags` or
    /// `Service.Meta.version == v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub filter: Option<String>,
    /// Only instances whose checks pass (warning ones excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_passing: Option<bool>,
}

/// Another service, subset, datacenter or peer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.service) || has(self.serviceSubset) || has(self.datacenter) || has(self.peer) || has(self.namespace) || has(self.partition) || has(self.samenessGroup)").message("a redirect names where to go"))]
pub struct ResolverRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub service: Option<String>,
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
    #[schemars(length(max = 64))]
    pub datacenter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub sameness_group: Option<String>,
}

/// Failover for one subset: another service or subset, other datacenters, or an
/// ordered list of targets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.service) || has(self.serviceSubset) || has(self.namespace) || (has(self.datacenters) && size(self.datacenters) > 0) || (has(self.targets) && size(self.targets) > 0) || has(self.samenessGroup)").message("a failover names at least one of service, serviceSubset, namespace, datacenters, targets, samenessGroup"))]
#[x_kube(validation = Rule::new("!has(self.targets) || size(self.targets) == 0 || (!has(self.service) && !has(self.serviceSubset) && !has(self.namespace) && (!has(self.datacenters) || size(self.datacenters) == 0))").message("targets cannot be combined with service, serviceSubset, namespace or datacenters"))]
pub struct ResolverFailover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub service_subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub namespace: Option<String>,
    /// Datacenters to try, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub datacenters: Vec<String>,
    /// Targets to try, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub targets: Vec<ResolverRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub sameness_group: Option<String>,
}

/// Load-balancing policy across the instances.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.leastRequestConfig) || (has(self.policy) && self.policy == 'least_request')").message("leastRequestConfig needs policy least_request"))]
#[x_kube(validation = Rule::new("!has(self.ringHashConfig) || (has(self.policy) && self.policy == 'ring_hash')").message("ringHashConfig needs policy ring_hash"))]
#[x_kube(validation = Rule::new("!has(self.hashPolicies) || size(self.hashPolicies) == 0 || (has(self.policy) && (self.policy == 'ring_hash' || self.policy == 'maglev'))").message("hashPolicies need policy ring_hash or maglev"))]
pub struct LoadBalancer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<LoadBalancerPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_request_config: Option<LeastRequestConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash_config: Option<RingHashConfig>,
    /// What a request's hash is computed from (ring_hash, maglev).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hash_policies: Vec<HashPolicy>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancerPolicy {
    Random,
    RoundRobin,
    LeastRequest,
    RingHash,
    Maglev,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeastRequestConfig {
    /// Instances sampled per pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2))]
    pub choice_count: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingHashConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub minimum_ring_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub maximum_ring_size: Option<i64>,
}

/// One input of the request hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.field) != (has(self.sourceIP) && self.sourceIP)").message("a hash policy hashes either a field or the source IP"))]
#[x_kube(validation = Rule::new("has(self.field) == has(self.fieldValue)").message("field and fieldValue go together"))]
pub struct HashPolicy {
    /// `header`, `cookie` or `query_parameter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<HashField>,
    /// Name of the header, cookie or query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub field_value: Option<String>,
    /// Hash the source IP address.
    #[serde(default, rename = "sourceIP", skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<bool>,
    /// Stop at this policy when it produced a hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashField {
    Header,
    Cookie,
    QueryParameter,
}
