//! The concord.io/v1alpha1 resource types: what users apply, with the schema, CEL rules,
//! printer columns and status shapes the API server enforces. Pure data; no I/O here.
mod acl;
mod conditions;
mod config_entry;
mod config_template;
mod discovery_cluster;
mod duration;
mod exported_services;
mod ingress_gateway;
mod jwt_provider;
mod kv_config;
mod mesh;
mod prepared_query;
mod proxy_defaults;
mod service_defaults;
mod service_intention;
mod service_resolver;
mod service_router;
mod service_splitter;
mod snapshot;
mod terminating_gateway;

pub use acl::*;
pub use conditions::*;
pub use config_entry::*;
pub use config_template::*;
pub use discovery_cluster::*;
pub use duration::*;
pub use exported_services::*;
pub use ingress_gateway::*;
pub use jwt_provider::*;
pub use kv_config::*;
pub use mesh::*;
pub use prepared_query::*;
pub use proxy_defaults::*;
pub use service_defaults::*;
pub use service_intention::*;
pub use service_resolver::*;
pub use service_router::*;
pub use service_splitter::*;
pub use snapshot::*;
pub use terminating_gateway::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every concord resource.
pub const GROUP: &str = "concord.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// A key in a Secret or ConfigMap of the object's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the Secret or ConfigMap.
    pub name: String,
    /// Key inside it.
    pub key: String,
}
