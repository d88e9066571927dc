//! Config entries, generically by kind, and typed for `service-intentions`.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::{Client, ConsulIndex, QueryOptions, QueryResponse, null_default};

pub const SERVICE_INTENTIONS: &str = "service-intentions";
/// The one config entry kind without a Name field (its name is the kind).
pub const MESH: &str = "mesh";

/// What every config entry has; lets [`Client::config_entry_set`] name the entry in a
/// CAS conflict and check its kind.
pub trait ConfigEntry: Serialize {
    fn kind(&self) -> &str;
    fn name(&self) -> &str;
}

/// Any entry as Consul's JSON (`Kind` and `Name` fields), for kinds handled generically.
impl ConfigEntry for serde_json::Value {
    fn kind(&self) -> &str {
        self.get("Kind").and_then(serde_json::Value::as_str).unwrap_or("")
    }
    /// The `mesh` entry has no Name field; Consul calls it `mesh`.
    fn name(&self) -> &str {
        match self.get("Name").and_then(serde_json::Value::as_str) {
            Some(name) => name,
            None if self.kind() == MESH => MESH,
            None => "",
        }
    }
}

/// The `service-intentions` entry: every source allowed to, or denied from, reaching
/// one destination service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceIntentionsEntry {
    /// Always [`SERVICE_INTENTIONS`].
    pub kind: String,
    /// The destination service (`*` for every service).
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub sources: Vec<SourceIntention>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    #[serde(default, skip_serializing)]
    pub create_index: ConsulIndex,
    /// The index to pass as `cas` to update or delete this exact version.
    #[serde(default, skip_serializing)]
    pub modify_index: ConsulIndex,
}

impl ServiceIntentionsEntry {
    pub fn new(destination: impl Into<String>, sources: Vec<SourceIntention>) -> Self {
        Self {
            kind: SERVICE_INTENTIONS.to_owned(),
            name: destination.into(),
            sources,
            meta: BTreeMap::new(),
            create_index: ConsulIndex::ZERO,
            modify_index: ConsulIndex::ZERO,
        }
    }
}

impl ConfigEntry for ServiceIntentionsEntry {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// One source of an intention: either an `action` (L4) or `permissions` (L7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SourceIntention {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<IntentionAction>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<IntentionPermission>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Computed by Consul; ignored on write.
    #[serde(default, skip_serializing)]
    pub precedence: i64,
    /// `consul` (the only type there is today); computed by Consul when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentionAction {
    Allow,
    Deny,
}

/// An L7 rule: `action` for requests matching `http`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IntentionPermission {
    pub action: IntentionAction,
    #[serde(rename = "HTTP", default, skip_serializing_if = "Option::is_none")]
    pub http: Option<IntentionHttpPermission>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IntentionHttpPermission {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<IntentionHttpHeaderPermission>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// A header match; exactly one of present/exact/prefix/suffix/regex is meant to be set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IntentionHttpHeaderPermission {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub present: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

impl Client {
    /// `GET /v1/config/:kind/:name`, decoded as `T`; `None` when absent.
    pub async fn config_entry_get<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
        opts: &QueryOptions,
    ) -> Result<QueryResponse<Option<T>>> {
        let req = self.read(["v1", "config", kind, name], opts);
        self.query_optional(&req).await
    }

    /// `GET /v1/config/:kind`: every entry of a kind (blocking, for drift watches).
    /// Use `serde_json::Value` as `T` for kinds without a typed struct.
    pub async fn config_entries_list<T: DeserializeOwned>(
        &self,
        kind: &str,
        opts: &QueryOptions,
    ) -> Result<QueryResponse<Vec<T>>> {
        let req = self.read(["v1", "config", kind], opts);
        let resp = self.query::<Option<Vec<T>>>(&req).await?;
        Ok(resp.map(Option::unwrap_or_default))
    }

    /// `PUT /v1/config` (`?cas=` when given; 0 means "only if absent"). A lost race is
    /// [`Error::CasConflict`].
    pub async fn config_entry_set<T: ConfigEntry>(&self, entry: &T, cas: Option<ConsulIndex>) -> Result<()> {
        if entry.kind().is_empty() || entry.name().is_empty() {
            return Err(Error::InvalidRequest("a config entry needs a kind and a name".into()));
        }
        let mut req = self.request(Method::PUT, ["v1", "config"]).json_body(entry)?;
        if let Some(cas) = cas {
            req = req.param("cas", cas);
        }
        let what = format!("config entry {}/{}", entry.kind(), entry.name());
        self.call_bool(&req, &what, cas).await
    }

    /// `DELETE /v1/config/:kind/:name` (`?cas=` when given); deleting what is already
    /// gone succeeds.
    pub async fn config_entry_delete(&self, kind: &str, name: &str, cas: Option<ConsulIndex>) -> Result<()> {
        let mut req = self.request(Method::DELETE, ["v1", "config", kind, name]);
        match cas {
            Some(cas) => {
                req = req.param("cas", cas);
                let what = format!("config entry {kind}/{name}");
                self.call_bool(&req, &what, Some(cas)).await
            }
            // Without cas, Consul answers an empty object, not a boolean.
            None => self.call_unit(&req).await,
        }
    }

    /// `GET /v1/discovery-chain/:service`: what Consul compiles the service's routers,
    /// splitters and resolvers to (the `Chain` object).
    pub async fn discovery_chain(
        &self,
        service: &str,
        opts: &QueryOptions,
    ) -> Result<QueryResponse<serde_json::Value>> {
        let req = self.read(["v1", "discovery-chain", service], opts);
        let resp = self.query::<serde_json::Value>(&req).await?;
        Ok(resp.map(|mut v| v.get_mut("Chain").map(serde_json::Value::take).unwrap_or_default()))
    }

    /// The `service-intentions` entry for `destination`, if any.
    pub async fn service_intentions_get(
        &self,
        destination: &str,
        opts: &QueryOptions,
    ) -> Result<QueryResponse<Option<ServiceIntentionsEntry>>> {
        self.config_entry_get(SERVICE_INTENTIONS, destination, opts).await
    }

    pub async fn service_intentions_list(
        &self,
        opts: &QueryOptions,
    ) -> Result<QueryResponse<Vec<ServiceIntentionsEntry>>> {
        self.config_entries_list(SERVICE_INTENTIONS, opts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn l7_intention_serializes_to_consul_field_names() {
        let entry = ServiceIntentionsEntry::new(
            "api",
            vec![SourceIntention {
                name: "web".into(),
                permissions: vec![IntentionPermission {
                    action: IntentionAction::Allow,
                    http: Some(IntentionHttpPermission {
                        path_prefix: Some("/v1/".into()),
                        methods: vec!["GET".into()],
                        header: vec![IntentionHttpHeaderPermission {
                            name: "x-debug".into(),
                            present: true,
                            invert: true,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            }],
        );
        assert_eq!(
            serde_json::to_value(&entry).expect("encode"),
            json!({
                "Kind": "service-intentions",
                "Name": "api",
                "Sources": [{
                    "Name": "web",
                    "Permissions": [{
                        "Action": "allow",
                        "HTTP": {
                            "PathPrefix": "/v1/",
                            "Header": [{"Name": "x-debug", "Present": true, "Invert": true}],
                            "Methods": ["GET"]
                        }
                    }]
                }]
            })
        );
    }

    #[test]
    fn intention_from_consul_decodes_with_indexes() {
        let body = json!({
            "Kind": "service-intentions", "Name": "api",
            "Sources": [{"Name": "web", "Action": "deny", "Precedence": 9, "Type": "consul"}],
            "CreateIndex": 10, "ModifyIndex": 12
        });
        let entry: ServiceIntentionsEntry = serde_json::from_value(body).expect("decode");
        assert_eq!(entry.modify_index, ConsulIndex(12));
        assert_eq!(entry.sources[0].action, Some(IntentionAction::Deny));
        assert_eq!(entry.sources[0].precedence, 9);
    }
}
