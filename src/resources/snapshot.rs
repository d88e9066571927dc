//! `ConsulSnapshot`: one Save of Consul's state to a location, or one Restore from it.
//! The spec is immutable: a snapshot is a record of one operation.
use super::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// One snapshot operation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "concord.io",
    version = "v1alpha1",
    kind = "ConsulSnapshot",
    namespaced,
    status = "ConsulSnapshotStatus",
    shortname = "csnap",
    category = "concord",
    doc = "Save Consul's state to a location, or restore it from one.",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Complete","type":"string","jsonPath":".status.conditions[?(@.type==\"Complete\")].status"}"#,
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".status.size"}"#,
    printcolumn = r#"{"name":"SHA256","type":"string","jsonPath":".status.sha256","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: create a new ConsulSnapshot"))]
pub struct ConsulSnapshotSpec {
    /// DiscoveryCluster in this namespace (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// Save or Restore.
    pub action: SnapshotAction,
    /// File (`/path`, `file:///path` on the controller's volume) or object (`s3://bucket/key`).
    #[x_kube(validation = Rule::new("self.startsWith('file:///') || self.startsWith('s3://') || self.startsWith('/')").message("location must be an absolute path, a file:/// URL or an s3:// URL"))]
    #[schemars(length(max = 1024))]
    pub location: String,
    /// Restore only: the expected sha256 (hex); default: the one recorded at save time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{64}$')").message("sha256 must be 64 lowercase hex digits"))]
    #[schemars(length(max = 64))]
    pub sha256: Option<String>,
}

/// What the snapshot does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SnapshotAction {
    Save,
    Restore,
}

/// Observed state of a snapshot operation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsulSnapshotStatus {
    /// Standard conditions: Complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Bytes saved or restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// sha256 (hex) of the snapshot bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When the operation finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}
