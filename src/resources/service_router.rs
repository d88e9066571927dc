//! `ServiceRouter`: the Consul `service-router` entry of one service (named like the
//! object): L7 routes by path, header, query parameter or method, each to a service or
//! subset, with retries and timeouts. Consul needs the service's protocol to be HTTP.
use super::{ConfigEntryStatus, HeaderModifiers};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// HTTP routes of one service; the object's name is the service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ServiceRouter",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "srt",
    category = "concord",
    doc = "Consul service-router for the service named like this object.",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRouterSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Routes in order; the first match wins, and unmatched requests go to the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub routes: Vec<Route>,
}

/// One route: a match and where matching requests go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.destination) || !has(self.destination.prefixRewrite) || (has(self.match) && has(self.match.http) && (has(self.match.http.pathExact) || has(self.match.http.pathPrefix)))").message("prefixRewrite needs a pathExact or pathPrefix match"))]
pub struct Route {
    /// What requests this route takes (all when empty).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub route_match: Option<RouteMatch>,
    /// Where they go (the service itself when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<RouteDestination>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<RouteHttpMatch>,
}

/// HTTP request match; all given conditions must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.pathExact) ? 1 : 0) + (has(self.pathPrefix) ? 1 : 0) + (has(self.pathRegex) ? 1 : 0) <= 1").message("at most one of pathExact, pathPrefix, pathRegex"))]
pub struct RouteHttpMatch {
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub header: Vec<RouteHeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub query_param: Vec<RouteQueryMatch>,
    /// HTTP methods (upper case); any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub methods: Vec<super::HttpMethod>,
}

/// One header condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.present) && self.present ? 1 : 0) + (has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.suffix) ? 1 : 0) + (has(self.regex) ? 1 : 0) <= 1").message("a header match has at most one of present, exact, prefix, suffix, regex"))]
pub struct RouteHeaderMatch {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
}

/// One query-parameter condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.present) && self.present ? 1 : 0) + (has(self.exact) ? 1 : 0) + (has(self.regex) ? 1 : 0) <= 1").message("a query match has at most one of present, exact, regex"))]
pub struct RouteQueryMatch {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub regex: Option<String>,
}

/// Where a route sends requests, with retries and timeouts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
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
    /// Replaces the matched path prefix before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub prefix_rewrite: Option<String>,
    /// Time for the whole request, retries included (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub request_timeout: Option<String>,
    /// Time a stream may stay idle (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub idle_timeout: Option<String>,
    /// Retries after a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub num_retries: Option<i64>,
    /// Retry when a connection fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on_connect_failure: Option<bool>,
    /// Retry on these HTTP status codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(c, c >= 100 && c <= 599)").message("status codes are 100-599"))]
    #[schemars(length(max = 32))]
    pub retry_on_status_codes: Vec<i64>,
    /// Envoy retry conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub retry_on: Vec<RetryOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifiers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifiers>,
}

/// The retry conditions Consul accepts in `RetryOn`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    #[serde(rename = "5xx")]
    FiveXx,
    GatewayError,
    Reset,
    ConnectFailure,
    EnvoyRatelimited,
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
    RefusedStream,
    Cancelled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Unavailable,
}
