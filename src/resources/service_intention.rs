//! `ServiceIntention`: the Consul `service-intentions` config entry of one destination,
//! with L4 allow/deny sources or L7 permissions.
use super::ConfigEntryStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Who may call one destination service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ServiceIntention",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "si",
    category = "concord",
    doc = "Consul service intentions for one destination service.",
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".spec.destination"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceIntentionSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Consul name of the destination service (`*` for all).
    #[x_kube(validation = Rule::new("size(self) > 0").message("destination must not be empty"))]
    #[schemars(length(max = 128))]
    pub destination: String,
    /// Callers of the destination, each with an action or L7 permissions.
    #[x_kube(validation = Rule::new("size(self) > 0").message("sources must name at least one source"))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("source names must be unique"))]
    #[schemars(length(max = 64))]
    pub sources: Vec<IntentionSource>,
}

/// One source service of an intention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.action) != has(self.permissions)").message("a source has either action or permissions, not both and not neither").reason(Reason::FieldValueInvalid))]
pub struct IntentionSource {
    /// Consul name of the calling service (`*` for all).
    #[x_kube(validation = Rule::new("size(self) > 0").message("source name must not be empty"))]
    #[schemars(length(max = 128))]
    pub name: String,
    /// L4 decision for this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<IntentionAction>,
    /// L7 rules, evaluated in order; the first match decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub permissions: Option<Vec<IntentionPermission>>,
    /// Free text shown in Consul.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub description: Option<String>,
}

/// Allow or deny.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntentionAction {
    Allow,
    Deny,
}

/// One L7 permission.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntentionPermission {
    /// Decision when the request matches.
    pub action: IntentionAction,
    /// HTTP request match.
    pub http: HttpMatch,
}

/// HTTP request match of an L7 permission.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.pathExact) ? 1 : 0) + (has(self.pathPrefix) ? 1 : 0) + (has(self.pathRegex) ? 1 : 0) <= 1").message("at most one of pathExact, pathPrefix, pathRegex"))]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("pathExact must start with /"))]
    #[schemars(length(max = 1024))]
    pub path_exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("pathPrefix must start with /"))]
    #[schemars(length(max = 1024))]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path_regex: Option<String>,
    /// HTTP methods; any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub methods: Vec<HttpMethod>,
    /// Header matches; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub header: Vec<HeaderMatch>,
}

/// HTTP methods Consul accepts in an L7 permission.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

/// One header condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.present) && self.present ? 1 : 0) + (has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.suffix) ? 1 : 0) + (has(self.regex) ? 1 : 0) == 1").message("a header match has exactly one of present, exact, prefix, suffix, regex"))]
pub struct HeaderMatch {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub regex: Option<String>,
    /// Negate the match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
}

/// The status every config-entry kind shares (kept under its old name).
pub type ServiceIntentionStatus = super::ConfigEntryStatus;
