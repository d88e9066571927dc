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
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expirationTime","priority":1}"#,
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
    /// Lifetime of each token (Go duration, e.g. `1h`; Consul allows 1m to 24h unless
    /// its `acl.token_min/max_expiration_ttl` say otherwise). Once two thirds of it have
    /// passed, or when the token is gone, a new token is written to the Secret and the
    /// old one revoked (Event `TokenRenewed`). Changing it makes a new token.
    #[serde(rename = "expirationTTL", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub expiration_ttl: Option<String>,
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
    /// When Consul expires the current token (RFC 3339), with `spec.expirationTTL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
}

/// A Consul ACL role: policies and identities under one name, for tokens and for
/// ACLBindingRules of type `role`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ACLRole",
    namespaced,
    status = "ACLRoleStatus",
    shortname = "aclr",
    category = "concord",
    doc = "A Consul ACL role.",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.roleId","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.policies) ? size(self.policies) : 0) + (has(self.serviceIdentities) ? size(self.serviceIdentities) : 0) + (has(self.nodeIdentities) ? size(self.nodeIdentities) : 0) > 0").message("a role needs at least one policy, service identity or node identity"))]
pub struct ACLRoleSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Role name in Consul (default: the object's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]{1,256}$')").message("name must be 1-256 letters, digits, _ or -"))]
    #[schemars(length(max = 256))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub description: Option<String>,
    /// Names of Consul policies (an ACLPolicy's Consul name works).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub policies: Vec<String>,
    /// Service identities (Consul's templated policy for one service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub service_identities: Vec<ServiceIdentity>,
    /// Node identities (register that node, read services); granted only by
    /// the DiscoveryCluster's `spec.tenancy.nodeIdentities`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub node_identities: Vec<NodeIdentity>,
}

/// A node identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeIdentity {
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$')").message("nodeName must be letters, digits and dashes"))]
    #[schemars(length(max = 256))]
    pub node_name: String,
    #[x_kube(validation = Rule::new("size(self) > 0").message("datacenter must not be empty"))]
    #[schemars(length(max = 64))]
    pub datacenter: String,
}

/// Observed state of a role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ACLRoleStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Consul's ID of the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
}

/// A Consul ACL auth method of type `kubernetes`, configured for the cluster concord
/// runs on: pods log in to Consul with their ServiceAccount token (`/v1/acl/login`) and
/// get what the ACLBindingRules of this method bind. concord fills the API server's
/// address and CA, and writes a short-lived reviewer token (TokenRequest, renewed) only
/// into Consul: nothing is stored in a Secret.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ACLAuthMethod",
    namespaced,
    status = "ACLAuthMethodStatus",
    shortname = "aclam",
    category = "concord",
    doc = "A Consul ACL auth method of type kubernetes for the cluster concord runs on.",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".status.host","priority":1}"#,
    printcolumn = r#"{"name":"TTL","type":"string","jsonPath":".spec.maxTokenTTL"}"#,
    printcolumn = r#"{"name":"Reviewer-Expires","type":"string","jsonPath":".status.reviewerTokenExpirationTime","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ACLAuthMethodSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Auth method name in Consul (default: the object's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]{1,128}$')").message("name must be 1-128 letters, digits, _ or -"))]
    #[schemars(length(max = 128))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub description: Option<String>,
    /// Lifetime of every token a login makes (Go duration, e.g. `1h`; Consul allows 1m
    /// to 24h by default). Unset: tokens live until logout.
    #[serde(rename = "maxTokenTTL", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub max_token_ttl: Option<String>,
    /// `local` (default: valid in this datacenter only) or `global`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_locality: Option<TokenLocality>,
}

/// Where the tokens of a login are valid.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenLocality {
    Local,
    Global,
}

/// Observed state of an auth method. Never holds the reviewer token.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ACLAuthMethodStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The method's name in Consul.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_name: Option<String>,
    /// The API server address Consul dials for TokenReview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When the reviewer token written into Consul expires (RFC 3339); concord renews it
    /// once two thirds of its life have passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer_token_expiration_time: Option<String>,
}

/// A Consul ACL binding rule: what a pod of this namespace that logs in through an
/// ACLAuthMethod of this namespace gets. concord adds
/// `serviceaccount.namespace=="<this namespace>"` to the selector, so no other
/// namespace's ServiceAccounts match.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ACLBindingRule",
    namespaced,
    status = "ACLBindingRuleStatus",
    shortname = "aclbr",
    category = "concord",
    doc = "A Consul ACL binding rule on an ACLAuthMethod of the same namespace.",
    printcolumn = r#"{"name":"Method","type":"string","jsonPath":".spec.authMethodRef"}"#,
    printcolumn = r#"{"name":"Bind","type":"string","jsonPath":".spec.bindType"}"#,
    printcolumn = r#"{"name":"Name","type":"string","jsonPath":".spec.bindName"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Selector","type":"string","jsonPath":".status.selector","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ACLBindingRuleSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Name of an ACLAuthMethod object in this namespace.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("authMethodRef must be the name of an ACLAuthMethod in this namespace"))]
    #[schemars(length(max = 253))]
    pub auth_method_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub description: Option<String>,
    /// Which logins match, in Consul's filter language over `serviceaccount.name`,
    /// `serviceaccount.namespace` and `serviceaccount.uid` (all of this namespace when
    /// unset). concord ANDs it with `serviceaccount.namespace=="<namespace>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub selector: Option<String>,
    /// What a match gets: a service identity, a node identity, or a role.
    pub bind_type: BindType,
    /// The service, node or role name; may use `${serviceaccount.name}` and the other
    /// fields (a templated service or node name needs the grant `*`).
    #[x_kube(validation = Rule::new("size(self) > 0").message("bindName must not be empty"))]
    #[schemars(length(max = 256))]
    pub bind_name: String,
}

/// What a binding rule binds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BindType {
    Service,
    Node,
    Role,
}

impl BindType {
    pub fn as_str(self) -> &'static str {
        match self {
            BindType::Service => "service",
            BindType::Node => "node",
            BindType::Role => "role",
        }
    }
}

/// Observed state of a binding rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ACLBindingRuleStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Consul's ID of the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// The selector written to Consul (the namespace condition included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}
