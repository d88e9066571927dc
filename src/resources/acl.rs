//! `ACLPolicy` and `ACLToken`: Consul ACL policies and tokens as Kubernetes objects. A
//! token's SecretID is written only into the Secret the spec names.
use super::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A Consul ACL policy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ACLPolicy",
    plural = "aclpolicies",
    namespaced,
    status = "ACLPolicyStatus",
    shortname = "aclp",
    category = "concord",
    doc = "A Consul ACL policy.",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.policyId","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ACLPolicySpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Policy name in Consul (default: the object's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]{1,128}$')").message("name must be 1-128 letters, digits, _ or -"))]
    #[schemars(length(max = 128))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub description: Option<String>,
    /// Rules in Consul's HCL or JSON policy language.
    #[x_kube(validation = Rule::new("size(self) > 0").message("rules must not be empty"))]
    #[schemars(length(max = 65536))]
    pub rules: String,
    /// Datacenters the policy applies in (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// Observed state of a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ACLPolicyStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Consul's ID of the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
}

/// A Consul ACL token; its secret goes only into `spec.secretName`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ACLToken",
    namespaced,
    status = "ACLTokenStatus",
    shortname = "aclt",
    category = "concord",
    doc = "A Consul ACL token whose SecretID concord writes into a Secret.",
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretName"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Accessor","type":"string","jsonPath":".status.accessorId","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.policies) ? size(self.policies) : 0) + (has(self.serviceIdentities) ? size(self.serviceIdentities) : 0) > 0").message("a token needs at least one policy or service identity"))]
pub struct ACLTokenSpec {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub description: Option<String>,
    /// Names of Consul policies (an ACLPolicy's Consul name works).
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub policies: Vec<String>,
    /// Service identities (Consul's templated policy for one service).
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub service_identities: Vec<ServiceIdentity>,
    /// Secret (this namespace) that receives the token under key `token`.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("secretName must be a DNS subdomain name"))]
    #[schemars(length(max = 253))]
    pub secret_name: String,
    /// Change this value to rotate the token: a new one is created, the Secret updated, the old revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub rotation: Option<String>,
    /// A datacenter-local token.
    #[serde(default)]
    pub local: bool,
}

/// A service identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceIdentity {
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?$')").message("serviceName must be lowercase letters, digits and dashes"))]
    #[schemars(length(max = 256))]
    pub service_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// Observed state of a token. Never holds the SecretID.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ACLTokenStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Public ID of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessor_id: Option<String>,
    /// The `spec.rotation` value the current token was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
}
