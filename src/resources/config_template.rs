//! `ConfigTemplate`: a Handlebars template rendered from Consul KV and catalog data into a
//! ConfigMap or Secret key, re-rendered when what it read changes.
use super::{Condition, KeyRef};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A template and where its output goes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ConfigTemplate",
    namespaced,
    status = "ConfigTemplateStatus",
    shortname = "ctpl",
    category = "concord",
    doc = "A Handlebars template rendered from Consul data into a ConfigMap or Secret.",
    printcolumn = r#"{"name":"Rendered","type":"string","jsonPath":".status.conditions[?(@.type==\"Rendered\")].status"}"#,
    printcolumn = r#"{"name":"Hash","type":"string","jsonPath":".status.outputHash","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigTemplateSpec {
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
    /// The template text or where to read it.
    pub template: TemplateSource,
    /// Where the rendered bytes go.
    pub output: TemplateOutput,
    /// Quiescence: render after `min` without changes, at the latest `max` after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitSpec>,
    /// Workloads whose pod template gets the output hash annotation, so they roll on change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rollout: Vec<WorkloadRef>,
}

/// Inline text or a ConfigMap key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.inline) != has(self.configMapRef)").message("template has exactly one of inline or configMapRef"))]
pub struct TemplateSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
}

/// Exactly one of a ConfigMap key or a Secret key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.secret)").message("output names exactly one of configMap or secret"))]
pub struct TemplateOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<KeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<KeyRef>,
}

/// consul-template's wait: min and max quiescence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitSpec {
    #[schemars(schema_with = "super::duration_schema")]
    pub min: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_duration_schema")]
    pub max: Option<String>,
}

/// A Deployment or StatefulSet in this namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    pub name: String,
}

/// Kinds that can be rolled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// Observed state of a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigTemplateStatus {
    /// Standard conditions: Rendered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// sha256 of the output last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_hash: Option<String>,
    /// What the last render read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<TemplateDependencies>,
}

/// The Consul data one render read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateDependencies {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}
