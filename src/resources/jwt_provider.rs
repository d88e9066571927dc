//! `JWTProvider`: the Consul `jwt-provider` entry (named like the object): an issuer
//! whose JSON Web Tokens intentions may require, and where its keys come from. A local
//! key set may be inline (`jwks`, base64): public keys, not a secret, but concord never
//! logs it.
use super::ConfigEntryStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// One JWT issuer; the object's name is the provider's name in Consul (what intentions'
/// `jwt.providers[].name` refer to).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "JWTProvider",
    plural = "jwtproviders",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "jwtp",
    category = "concord",
    doc = "Consul jwt-provider named like this object.",
    printcolumn = r#"{"name":"Issuer","type":"string","jsonPath":".spec.issuer"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct JWTProviderSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Where the keys that sign the tokens come from.
    #[serde(rename = "jsonWebKeySet")]
    pub json_web_key_set: JsonWebKeySet,
    /// The `iss` claim tokens must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// Tokens must name one of these in `aud` (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 1024)))]
    pub audiences: Vec<String>,
    /// Where proxies look for the token (default: `Authorization: Bearer`, then the
    /// `access_token` query parameter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub locations: Vec<JwtLocation>,
    /// Forward the verified token's payload to the service in a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<JwtForwarding>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (Consul's default: 30).
    #[serde(default = "default_clock_skew")]
    #[schemars(range(min = 1, max = 3600))]
    pub clock_skew_seconds: i64,
    /// Cache of verified tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_config: Option<JwtCacheConfig>,
}

fn default_clock_skew() -> i64 {
    30
}

/// Exactly one of a local key set (inline or a file on the proxies' hosts) or a remote one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.local) != has(self.remote)").message("exactly one of local or remote"))]
pub struct JsonWebKeySet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalJwks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteJwks>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jwks) != has(self.filename)").message("exactly one of jwks or filename"))]
pub struct LocalJwks {
    /// The key set itself, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536), regex(pattern = r"^[A-Za-z0-9+/]+={0,2}$"))]
    pub jwks: Option<String>,
    /// Path of the key set on every proxy's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub filename: Option<String>,
}

/// A key set fetched over HTTP(S).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteJwks {
    /// The key set's URL.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub uri: String,
    /// Milliseconds before a fetch times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub request_timeout_ms: Option<i64>,
    /// How long fetched keys are kept (Go duration; Envoy's default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub cache_duration: Option<String>,
    /// Fetch on the first request instead of before the listener starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_asynchronously: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<JwksRetryPolicy>,
    /// How Envoy reaches the key set's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_cluster: Option<JwksCluster>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwksRetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub num_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy_back_off: Option<RetryPolicyBackOff>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.baseInterval) || !has(self.maxInterval) || duration(self.baseInterval) <= duration(self.maxInterval)").message("baseInterval must not be above maxInterval"))]
pub struct RetryPolicyBackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub base_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub max_interval: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwksCluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_type: Option<DiscoveryType>,
    /// How long Envoy waits to connect (Go duration; default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub connect_timeout: Option<String>,
    /// The CA that verifies the key set's server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificates: Option<JwksTlsCertificates>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscoveryType {
    Static,
    StrictDns,
    LogicalDns,
    Eds,
    OriginalDst,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.caCertificateProviderInstance) != has(self.trustedCA)").message("exactly one of caCertificateProviderInstance or trustedCA"))]
pub struct JwksTlsCertificates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_provider_instance: Option<JwksCertProviderInstance>,
    #[serde(default, rename = "trustedCA", skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<JwksTrustedCa>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwksCertProviderInstance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub instance_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub certificate_name: Option<String>,
}

/// Exactly one of a file on the proxies' hosts, an environment variable, or the PEM inline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.filename) ? 1 : 0) + (has(self.environmentVariable) ? 1 : 0) + (has(self.inlineString) ? 1 : 0) == 1").message("exactly one of filename, environmentVariable, inlineString"))]
pub struct JwksTrustedCa {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub environment_variable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub inline_string: Option<String>,
}

/// Exactly one place in a request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.header) ? 1 : 0) + (has(self.queryParam) ? 1 : 0) + (has(self.cookie) ? 1 : 0) == 1").message("a location is exactly one of header, queryParam, cookie"))]
pub struct JwtLocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<JwtLocationHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param: Option<JwtNamed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<JwtNamed>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtLocationHeader {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Text before the token in the header's value (`Bearer `).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub value_prefix: Option<String>,
    /// Pass the header on to the service after verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtNamed {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtForwarding {
    #[schemars(length(min = 1, max = 256))]
    pub header_name: String,
    /// Pad the base64url payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_forward_payload_header: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtCacheConfig {
    /// Verified tokens kept (0: no cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub size: Option<i64>,
}
