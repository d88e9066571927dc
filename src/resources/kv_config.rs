//! `KVConfig`: keys under one Consul KV prefix, declared in Git. Values are strings or
//! structured data (stored as canonical JSON), or come from a ConfigMap or Secret.
use super::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Keys under one Consul KV prefix.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "KVConfig",
    plural = "kvconfigs",
    namespaced,
    status = "KVConfigStatus",
    shortname = "kvc",
    category = "concord",
    doc = "Consul KV keys under one prefix, kept as declared.",
    printcolumn = r#"{"name":"Prefix","type":"string","jsonPath":".spec.prefix"}"#,
    printcolumn = r#"{"name":"Keys","type":"integer","jsonPath":".status.keysInSync"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Drifted","type":"string","jsonPath":".status.conditions[?(@.type==\"Drifted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KVConfigSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// ServiceAccount of this namespace whose rights concord uses to read and write this
    /// object's Kubernetes Secrets and ConfigMaps (impersonation, so Kubernetes RBAC
    /// decides). Default: the controller's `--default-service-account`, else concord's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("serviceAccountName must be a DNS subdomain name"))]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
    /// Key prefix every key lives under, e.g. `config/app/` (no leading `/`, no `..`).
    #[x_kube(validation = Rule::new("size(self) > 0").message("prefix must not be empty"))]
    #[x_kube(validation = Rule::new("!self.startsWith('/')").message("prefix must not start with /"))]
    #[x_kube(validation = Rule::new("!self.contains('..')").message("prefix must not contain .."))]
    #[schemars(length(max = 256))]
    pub prefix: String,
    /// Keys relative to the prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub keys: Vec<KvEntry>,
    /// Every key of these ConfigMaps becomes a key under the prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub from_config_map: Vec<KvSource>,
    /// Every key of these Secrets becomes a key under the prefix. Each Secret must carry
    /// the label `concord.io/kv-source: "true"` (set by whoever may edit it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub from_secret: Vec<KvSource>,
    /// What an out-of-band edit in Consul gets: reverted (Enforce) or reported (Report).
    #[serde(default)]
    pub drift_policy: DriftPolicy,
    /// Delete keys this object wrote and no longer declares (never keys it did not write).
    #[serde(default)]
    pub prune: bool,
    /// What happens to the keys when the object is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One key and its value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.json)").message("a key has either value or json, not both and not neither"))]
pub struct KvEntry {
    /// Key relative to the prefix (no leading `/`, no `..`).
    #[x_kube(validation = Rule::new("size(self) > 0").message("key must not be empty"))]
    #[x_kube(validation = Rule::new("!self.startsWith('/')").message("key must not start with /"))]
    #[x_kube(validation = Rule::new("!self.contains('..')").message("key must not contain .."))]
    #[schemars(length(max = 512))]
    pub key: String,
    /// A string value, stored as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A structured value (a JSON object), stored as canonical JSON (sorted keys, no whitespace).
    /// Lists and scalars go in `value` as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_schema")]
    pub json: Option<serde_json::Value>,
}

/// A ConfigMap or Secret whose keys become KV keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KvSource {
    /// Name in this namespace.
    pub name: String,
    /// Extra path segment between the prefix and the keys (no leading `/`, no `..`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("keyPrefix must not start with / nor contain .."))]
    #[schemars(length(max = 256))]
    pub key_prefix: Option<String>,
}

/// Drift handling.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum DriftPolicy {
    /// Restore the declared value.
    #[default]
    Enforce,
    /// Set `Drifted=True` and leave Consul alone.
    Report,
}

/// Deletion handling.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the keys this object wrote.
    #[default]
    Delete,
    /// Leave them in Consul.
    Retain,
}

/// Observed state of a KVConfig.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KVConfigStatus {
    /// Standard conditions: Synced, Drifted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Declared keys whose Consul value equals the declared one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_in_sync: Option<i64>,
    /// Keys that differ from what is declared (Report policy), at most 50 listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drifted_keys: Vec<String>,
    /// Consul index of the last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_index: Option<u64>,
}

/// A JSON object of any shape, kept as written. Typed as an object (not "any") so CEL
/// rules can see the field.
pub fn any_json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}
