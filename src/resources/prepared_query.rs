//! `PreparedQuery`: a Consul prepared query (`/v1/query`), answered through DNS as
//! `<name>.query.consul`: a service lookup with failover to other datacenters, tag and
//! health filters, sorting by distance (`near`), a DNS TTL, and templates that serve a
//! whole family of names (`name_prefix_match`, with an optional regexp).
use super::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Consul prepared query.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "PreparedQuery",
    plural = "preparedqueries",
    namespaced,
    status = "PreparedQueryStatus",
    shortname = "pq",
    category = "concord",
    doc = "A Consul prepared query, answered through DNS as <name>.query.consul.",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service.service"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.queryId","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.template) || !has(self.name) || (size(self.name) > 0 && !self.name.endsWith('-'))").message("only a template may have an empty name (a catch-all) or one ending in - (a prefix)"))]
#[x_kube(validation = Rule::new("has(self.template) || !self.service.service.contains('${')").message("service may use ${...} interpolation only in a template"))]
pub struct PreparedQuerySpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// The query's name in Consul, looked up as `<name>.query.consul` (default: the
    /// object's name). A template serves every name that starts with it; `""` makes a
    /// catch-all template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == '' || self.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?-?$')").message("name must be a lowercase DNS label (a template's prefix may also end in - or be empty)"))]
    #[schemars(length(max = 63))]
    pub name: Option<String>,
    /// What the query looks up.
    pub service: QueryServiceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<QueryDnsSpec>,
    /// Makes the query a template (Consul's `Template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<QueryTemplateSpec>,
}

/// The service a query returns healthy instances of, and how it picks them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryServiceSpec {
    /// Service name. In a template it may interpolate `${name.full}`, `${name.prefix}`,
    /// `${name.suffix}` or `${match(N)}`.
    #[x_kube(validation = Rule::new("size(self) > 0").message("service must not be empty"))]
    #[schemars(length(max = 256))]
    pub service: String,
    /// Where to look when no instance in the local datacenter is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<QueryFailoverSpec>,
    /// Leave out instances whose checks are `warning` (critical ones are always out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_passing: Option<bool>,
    /// Sort by round-trip time from this node: a node name, `_agent` (the agent asked)
    /// or `_ip` (the caller's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub near: Option<String>,
    /// Instances must carry every tag listed; `!tag` means must not carry it (no white
    /// space; in a template, `${...}` interpolations are allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256), pattern(r"^!?[^!\s]+$")))]
    pub tags: Vec<String>,
    /// Node meta every instance's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_meta: BTreeMap<String, String>,
    /// Service meta every instance must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub service_meta: BTreeMap<String, String>,
    /// Health checks (by ID) whose state does not count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(c, !c.startsWith('concord.io/'))").message("check IDs starting with concord.io/ are reserved (concord's owner mark)"))]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    pub ignore_check_ids: Vec<String>,
    /// Return Connect-capable endpoints (sidecars, native) instead of the instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<bool>,
}

/// Failover to other datacenters: first the `nearestN` nearest by round-trip time,
/// then `datacenters` in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.nearestN) && self.nearestN > 0) || (has(self.datacenters) && size(self.datacenters) > 0)").message("failover needs nearestN > 0 or at least one datacenter"))]
pub struct QueryFailoverSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub nearest_n: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Datacenters to try in order; each once.
    #[schemars(length(max = 32), inner(length(min = 1, max = 64)), extend("x-kubernetes-list-type" = "set"))]
    pub datacenters: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryDnsSpec {
    /// TTL of the DNS answers (Go duration; default: the agent's `dns_config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub ttl: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryTemplateSpec {
    /// The one type Consul has: the template serves names starting with the query's name.
    #[serde(default, rename = "type")]
    pub template_type: QueryTemplateType,
    /// Regular expression (RE2) over the whole name looked up; its groups are
    /// `${match(1)}`, ... in `service.service` and `service.tags`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub regexp: Option<String>,
    /// Drop tags that interpolate to an empty string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_empty_tags: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum QueryTemplateType {
    #[default]
    #[serde(rename = "name_prefix_match")]
    NamePrefixMatch,
}

/// Observed state of a prepared query.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreparedQueryStatus {
    /// Standard conditions: Synced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Consul's ID of the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<String>,
}
