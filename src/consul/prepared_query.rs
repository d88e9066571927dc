//! Prepared queries (`/v1/query`): named service lookups with failover, tag filters and
//! a DNS TTL, answered through DNS as `<name>.query.consul`.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::{Client, ConsulIndex, QueryOptions, QueryResponse, null_default};

/// A prepared query as Consul stores it. Every field Consul returns is here, so that two
/// queries compare equal only when they answer the same way (`ID` and the indexes aside,
/// see [`PreparedQuery::same_definition`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PreparedQuery {
    /// Consul's ID (a UUID); empty when creating.
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// What DNS answers for as `<name>.query.consul`; a template's name is the prefix it
    /// matches.
    #[serde(default)]
    pub name: String,
    /// A session the query is tied to (it is deleted with it). concord never sets one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// A token the query runs with instead of the caller's. concord never sets one;
    /// Consul shows `<hidden>` to tokens that may not read it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[serde(default)]
    pub template: QueryTemplate,
    #[serde(default)]
    pub service: QueryService,
    #[serde(rename = "DNS", default)]
    pub dns: QueryDns,
    #[serde(default, skip_serializing)]
    pub create_index: ConsulIndex,
    #[serde(default, skip_serializing)]
    pub modify_index: ConsulIndex,
}

impl PreparedQuery {
    /// Whether both answer the same way: every field but the ID and the indexes.
    pub fn same_definition(&self, other: &PreparedQuery) -> bool {
        let strip = |q: &PreparedQuery| PreparedQuery {
            id: String::new(),
            create_index: ConsulIndex::ZERO,
            modify_index: ConsulIndex::ZERO,
            ..q.clone()
        };
        strip(self) == strip(other)
    }
}

/// Makes the query a template for every name starting with its name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryTemplate {
    /// `name_prefix_match`, or empty for a plain query.
    #[serde(default)]
    pub r#type: String,
    /// Captures `${match(N)}` from the whole name looked up.
    #[serde(default)]
    pub regexp: String,
    #[serde(default)]
    pub remove_empty_tags: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryService {
    #[serde(default)]
    pub service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sameness_group: String,
    #[serde(default)]
    pub failover: QueryFailover,
    #[serde(default)]
    pub only_passing: bool,
    #[serde(rename = "IgnoreCheckIDs", default, deserialize_with = "null_default")]
    pub ignore_check_ids: Vec<String>,
    #[serde(default)]
    pub near: String,
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub node_meta: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub service_meta: BTreeMap<String, String>,
    #[serde(default)]
    pub connect: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryFailover {
    /// Try the N datacenters nearest by round-trip time when no local instance is healthy.
    #[serde(default)]
    pub nearest_n: u32,
    /// Then these, in order.
    #[serde(default, deserialize_with = "null_default")]
    pub datacenters: Vec<String>,
    /// Peers and partitions (not declared by concord; kept so a hand-made one differs).
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryDns {
    /// Go duration; empty means the agent's default.
    #[serde(rename = "TTL", default)]
    pub ttl: String,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

impl Client {
    /// `GET /v1/query`: every prepared query (blocking, for drift watches).
    pub async fn prepared_queries_list(&self, opts: &QueryOptions) -> Result<QueryResponse<Vec<PreparedQuery>>> {
        let req = self.read(["v1", "query"], opts);
        let resp = self.query::<Option<Vec<PreparedQuery>>>(&req).await?;
        Ok(resp.map(Option::unwrap_or_default))
    }

    /// `GET /v1/query/:id`; `None` when there is no query with that ID.
    pub async fn prepared_query_get(&self, id: &str) -> Result<Option<PreparedQuery>> {
        if id.is_empty() {
            return Err(Error::InvalidRequest("a prepared query ID must not be empty".into()));
        }
        let req = self.read(["v1", "query", id], &QueryOptions::default());
        let resp = self.query_optional::<Vec<PreparedQuery>>(&req).await?;
        Ok(resp.value.and_then(|v| v.into_iter().next()))
    }

    /// `POST /v1/query`: creates the query and returns its ID. Consul refuses an
    /// invalid definition or a taken name with a 500, so this is never retried on one
    /// (the caller reads the refusal; a retry could not help).
    pub async fn prepared_query_create(&self, query: &PreparedQuery) -> Result<String> {
        if !query.id.is_empty() {
            return Err(Error::InvalidRequest("Consul assigns a new prepared query's ID".into()));
        }
        let req = self.request(Method::POST, ["v1", "query"]).json_body(query)?.not_idempotent();
        Ok(self.call::<Created>(&req).await?.id)
    }

    /// `PUT /v1/query/:id`: replaces the whole definition (refusals as for create).
    pub async fn prepared_query_update(&self, query: &PreparedQuery) -> Result<()> {
        if query.id.is_empty() {
            return Err(Error::InvalidRequest("updating a prepared query needs its ID".into()));
        }
        let req = self.request(Method::PUT, ["v1", "query", query.id.as_str()]).json_body(query)?.not_idempotent();
        self.call_unit(&req).await
    }

    /// `DELETE /v1/query/:id`; a query already gone counts as deleted.
    pub async fn prepared_query_delete(&self, id: &str) -> Result<()> {
        if id.is_empty() {
            return Err(Error::InvalidRequest("a prepared query ID must not be empty".into()));
        }
        let req = self.request(Method::DELETE, ["v1", "query", id]);
        match self.call_unit(&req).await {
            // Consul answers 500 "Cannot modify non-existent prepared query" for a gone ID.
            Err(Error::Http { message, .. }) if message.contains("non-existent") => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}

/// Whether Consul refused the definition itself (a 500 that no retry can fix): an
/// invalid field, a name another query has, a template that does not compile.
pub fn is_query_refusal(e: &Error) -> bool {
    match e {
        Error::Http { message, .. } => {
            let m = message.to_ascii_lowercase();
            ["invalid prepared query", "aliases an existing query", "failed compiling template", "bad "]
                .iter()
                .any(|needle| m.contains(needle))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_what_consul_returns_and_encodes_only_what_it_needs() {
        let stored = json!({
            "ID": "8e35c5ad-7694-4454-51b2-6ac83f2bda95", "Name": "web", "Session": "", "Token": "",
            "Template": { "Type": "", "Regexp": "", "RemoveEmptyTags": false },
            "Service": { "Service": "web", "SamenessGroup": "", "Failover": { "NearestN": 2, "Datacenters": null, "Targets": null },
                "OnlyPassing": false, "IgnoreCheckIDs": null, "Near": "", "Tags": null, "NodeMeta": null,
                "ServiceMeta": null, "Connect": false, "Peer": "" },
            "DNS": { "TTL": "10s" }, "CreateIndex": 18, "ModifyIndex": 18
        });
        let q: PreparedQuery = serde_json::from_value(stored).expect("decode");
        assert_eq!(q.service.failover.nearest_n, 2);
        assert_eq!(q.dns.ttl, "10s");
        assert_eq!(q.modify_index, ConsulIndex(18));
        let sent = serde_json::to_value(PreparedQuery { id: String::new(), ..q.clone() }).expect("encode");
        assert_eq!(sent.get("ID"), None);
        assert_eq!(sent.get("Token"), None, "concord never sends a token");
        assert_eq!(sent.get("ModifyIndex"), None);
        assert_eq!(sent["Service"]["Failover"], json!({ "NearestN": 2, "Datacenters": [] }));
        let mut other = q.clone();
        other.id = "another".into();
        other.modify_index = ConsulIndex(40);
        assert!(q.same_definition(&other));
        other.service.tags = vec!["!v1".into()];
        assert!(!q.same_definition(&other));
    }

    #[test]
    fn refusals_are_told_from_outages() {
        let http = |message: &str| Error::Http {
            method: Method::POST,
            path: "/v1/query".into(),
            status: reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        };
        assert!(is_query_refusal(&http("Invalid prepared query: Bad NearestN '-1', must be >= 0")));
        assert!(is_query_refusal(&http("raft apply failed: name 'web' aliases an existing query name")));
        assert!(is_query_refusal(&http("raft apply failed: failed compiling template: Bad Regexp: missing ]")));
        assert!(!is_query_refusal(&http("rpc error making call: No cluster leader")));
    }
}
