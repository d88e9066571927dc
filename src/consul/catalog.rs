//! The catalog (register, deregister, list) and health (instances with their checks).
//!
//! Catalog sync registers services on a synthetic node with "external" checks: checks
//! with no definition that no agent runs, whose status the sync writes itself.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::{Client, ConsulIndex, QueryOptions, QueryResponse, null_default};

/// A catalog node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    #[serde(rename = "ID", skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub node: String,
    pub address: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub create_index: ConsulIndex,
    /// Sent only for check-and-set transaction operations.
    #[serde(skip_serializing_if = "is_zero")]
    pub modify_index: ConsulIndex,
}

/// A service instance on a node (Consul's `AgentService` / `NodeService`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeService {
    /// Unique per node; defaults to `service` when empty.
    #[serde(rename = "ID", skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub service: String,
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub port: u16,
    #[serde(deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    /// Always sent: in a transaction a missing `Weights` becomes 0/0, which DNS SRV
    /// answers would then carry.
    pub weights: Weights,
    pub enable_tag_override: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub create_index: ConsulIndex,
    /// Sent only for check-and-set transaction operations.
    #[serde(skip_serializing_if = "is_zero")]
    pub modify_index: ConsulIndex,
}

/// DNS SRV weights by health state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self { passing: 1, warning: 1 }
    }
}

/// A health check's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passing,
    Warning,
    #[default]
    Critical,
    Maintenance,
}

/// A health check as stored in the catalog. With no definition it is an "external"
/// check: nothing runs it, its status is whatever the last registration wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheck {
    /// Defaults to the registration's node in a catalog registration.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: CheckStatus,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub notes: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// The service instance this check belongs to; empty for a node-level check.
    #[serde(rename = "ServiceID", skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub service_tags: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub create_index: ConsulIndex,
    /// Sent only for check-and-set transaction operations.
    #[serde(skip_serializing_if = "is_zero")]
    pub modify_index: ConsulIndex,
}

/// `PUT /v1/catalog/register`: a node, optionally one service and its checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogRegistration {
    #[serde(rename = "ID", skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub node: String,
    pub address: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_meta: BTreeMap<String, String>,
    /// Filled with the client's datacenter when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<NodeService>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<HealthCheck>,
    /// Leave the node's address and meta alone (they belong to someone else).
    pub skip_node_update: bool,
}

/// `PUT /v1/catalog/deregister`: the node (with everything on it) when neither a service
/// nor a check is named, else just that service (with its checks) or that check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogDeregistration {
    pub node: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    #[serde(rename = "ServiceID", skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    #[serde(rename = "CheckID", skip_serializing_if = "String::is_empty")]
    pub check_id: String,
}

/// One instance from `GET /v1/catalog/service/:name` (node and service fields flattened,
/// as Consul sends them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogService {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    #[serde(deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    pub node_meta: BTreeMap<String, String>,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_address: String,
    #[serde(deserialize_with = "null_default")]
    pub service_tags: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub service_meta: BTreeMap<String, String>,
    pub service_port: u16,
    pub create_index: ConsulIndex,
    pub modify_index: ConsulIndex,
}

/// One instance from `GET /v1/health/service/:name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceEntry {
    pub node: Node,
    pub service: NodeService,
    #[serde(deserialize_with = "null_default")]
    pub checks: Vec<HealthCheck>,
}

impl ServiceEntry {
    /// The address clients should dial: the service's own, else its node's.
    pub fn address(&self) -> &str {
        if self.service.address.is_empty() { &self.node.address } else { &self.service.address }
    }

    /// The worst status among the instance's checks (passing when it has none), the way
    /// Consul's DNS and `?passing` judge it.
    pub fn aggregated_status(&self) -> CheckStatus {
        let rank = |s: CheckStatus| match s {
            CheckStatus::Passing => 0,
            CheckStatus::Warning => 1,
            CheckStatus::Critical => 2,
            CheckStatus::Maintenance => 3,
        };
        self.checks.iter().map(|c| c.status).max_by_key(|s| rank(*s)).unwrap_or(CheckStatus::Passing)
    }
}

/// The services registered on one node (`GET /v1/catalog/node-services/:node`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeServices {
    pub node: Node,
    #[serde(deserialize_with = "null_default")]
    pub services: Vec<NodeService>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServicesWire {
    node: Option<Node>,
    #[serde(default, deserialize_with = "null_default")]
    services: Vec<NodeService>,
}

fn is_zero(index: &ConsulIndex) -> bool {
    index.0 == 0
}

impl Client {
    /// `PUT /v1/catalog/register`. Idempotent: registering the same thing twice is one
    /// registration, so it is retried through leader elections.
    pub async fn catalog_register(&self, registration: &CatalogRegistration) -> Result<()> {
        let mut body = registration.clone();
        if body.datacenter.is_empty() {
            body.datacenter = self.datacenter().unwrap_or_default().to_owned();
        }
        let req = self.request(Method::PUT, ["v1", "catalog", "register"]).json_body(&body)?;
        self.call_bool(&req, &registration.node, None).await
    }

    /// `PUT /v1/catalog/deregister`; removing what is already gone succeeds.
    pub async fn catalog_deregister(&self, deregistration: &CatalogDeregistration) -> Result<()> {
        let mut body = deregistration.clone();
        if body.datacenter.is_empty() {
            body.datacenter = self.datacenter().unwrap_or_default().to_owned();
        }
        let req = self.request(Method::PUT, ["v1", "catalog", "deregister"]).json_body(&body)?;
        self.call_bool(&req, &deregistration.node, None).await
    }

    /// `GET /v1/catalog/services`: service names with the union of their tags.
    pub async fn catalog_services(&self, opts: &QueryOptions) -> Result<QueryResponse<BTreeMap<String, Vec<String>>>> {
        let req = self.read(["v1", "catalog", "services"], opts);
        let resp = self.query::<BTreeMap<String, Option<Vec<String>>>>(&req).await?;
        Ok(resp.map(|m| m.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect()))
    }

    /// `GET /v1/catalog/service/:name`: every instance, healthy or not, having all `tags`.
    pub async fn catalog_service(
        &self,
        name: &str,
        tags: &[&str],
        opts: &QueryOptions,
    ) -> Result<QueryResponse<Vec<CatalogService>>> {
        let mut req = self.read(["v1", "catalog", "service", name], opts);
        for tag in tags {
            req = req.param("tag", tag);
        }
        let resp = self.query::<Option<Vec<CatalogService>>>(&req).await?;
        Ok(resp.map(Option::unwrap_or_default))
    }

    /// `GET /v1/catalog/nodes`.
    pub async fn catalog_nodes(&self, opts: &QueryOptions) -> Result<QueryResponse<Vec<Node>>> {
        let req = self.read(["v1", "catalog", "nodes"], opts);
        let resp = self.query::<Option<Vec<Node>>>(&req).await?;
        Ok(resp.map(Option::unwrap_or_default))
    }

    /// `GET /v1/catalog/node-services/:node`: `None` when the node is not registered.
    pub async fn catalog_node_services(
        &self,
        node: &str,
        opts: &QueryOptions,
    ) -> Result<QueryResponse<Option<NodeServices>>> {
        let req = self.read(["v1", "catalog", "node-services", node], opts);
        let resp = self.query_optional::<Option<NodeServicesWire>>(&req).await?;
        Ok(resp.map(|wire| {
            let wire = wire.flatten()?;
            Some(NodeServices { node: wire.node?, services: wire.services })
        }))
    }

    /// `GET /v1/health/node/:node`: every check on a node (node-level and per service),
    /// with its status; empty when the node is not registered.
    pub async fn health_node(&self, node: &str, opts: &QueryOptions) -> Result<QueryResponse<Vec<HealthCheck>>> {
        let req = self.read(["v1", "health", "node", node], opts);
        let resp = self.query::<Option<Vec<HealthCheck>>>(&req).await?;
        Ok(resp.map(Option::unwrap_or_default))
    }

    /// `GET /v1/health/state/:state` (`any`, `passing`, `warning`, `critical`): every
    /// check in that state, node-level and per service instance, in one answer (one
    /// blocking query watches the health of the whole catalog).
    pub async fn health_state(&self, state: &str, opts: &QueryOptions) -> Result<QueryResponse<Vec<HealthCheck>>> {
        let req = self.read(["v1", "health", "state", state], opts);
        let resp = self.query::<Option<Vec<HealthCheck>>>(&req).await?;
        Ok(resp.map(Option::unwrap_or_default))
    }

    /// `GET /v1/health/service/:name`: instances with their node and checks, filtered
    /// to those having every tag in `tags`, and to those whose checks all pass when
    /// `passing_only` (what DNS answers).
    pub async fn health_service(
        &self,
        name: &str,
        tags: &[&str],
        passing_only: bool,
        opts: &QueryOptions,
    ) -> Result<QueryResponse<Vec<ServiceEntry>>> {
        let mut req = self.read(["v1", "health", "service", name], opts);
        for tag in tags {
            req = req.param("tag", tag);
        }
        if passing_only {
            req = req.flag("passing");
        }
        let resp = self.query::<Option<Vec<ServiceEntry>>>(&req).await?;
        Ok(resp.map(Option::unwrap_or_default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registration_serializes_like_consul_expects() {
        let reg = CatalogRegistration {
            node: "k8s-sync".into(),
            address: "127.0.0.1".into(),
            node_meta: [("external-source".to_owned(), "kubernetes".to_owned())].into(),
            service: Some(NodeService {
                id: "web-10-0-0-1-80".into(),
                service: "web".into(),
                tags: vec!["v1".into()],
                address: "10.0.0.1".into(),
                port: 80,
                ..Default::default()
            }),
            checks: vec![HealthCheck {
                check_id: "web-10-0-0-1-80/ready".into(),
                name: "Kubernetes readiness".into(),
                status: CheckStatus::Passing,
                service_id: "web-10-0-0-1-80".into(),
                ..Default::default()
            }],
            skip_node_update: true,
            ..Default::default()
        };
        let value = serde_json::to_value(&reg).expect("encode");
        assert_eq!(
            value,
            json!({
                "Node": "k8s-sync",
                "Address": "127.0.0.1",
                "NodeMeta": {"external-source": "kubernetes"},
                "Service": {
                    "ID": "web-10-0-0-1-80", "Service": "web", "Tags": ["v1"],
                    "Address": "10.0.0.1", "Port": 80, "Meta": {},
                    "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false
                },
                "Checks": [{
                    "CheckID": "web-10-0-0-1-80/ready", "Name": "Kubernetes readiness",
                    "Status": "passing", "ServiceID": "web-10-0-0-1-80"
                }],
                "SkipNodeUpdate": true
            })
        );
    }

    #[test]
    fn health_entries_tolerate_consul_nulls() {
        let body = json!([{
            "Node": {"ID": "n1", "Node": "k8s-sync", "Address": "127.0.0.1", "Datacenter": "dc1",
                     "TaggedAddresses": null, "Meta": null, "CreateIndex": 5, "ModifyIndex": 5},
            "Service": {"ID": "web-1", "Service": "web", "Tags": null, "Address": "", "Port": 80,
                        "Meta": null, "Weights": {"Passing": 1, "Warning": 1},
                        "EnableTagOverride": false, "CreateIndex": 6, "ModifyIndex": 6},
            "Checks": [
                {"Node": "k8s-sync", "CheckID": "a", "Name": "a", "Status": "passing",
                 "ServiceTags": null, "Definition": {}},
                {"Node": "k8s-sync", "CheckID": "b", "Name": "b", "Status": "warning"}
            ]
        }]);
        let entries: Vec<ServiceEntry> = serde_json::from_value(body).expect("decode");
        assert_eq!(entries[0].address(), "127.0.0.1");
        assert_eq!(entries[0].aggregated_status(), CheckStatus::Warning);
        assert!(entries[0].service.tags.is_empty());
    }
}
