//! Where template data comes from: the [`DataSource`] trait (one read per dependency,
//! optionally a blocking query) and its Consul implementation, the only I/O edge of the
//! template engine.
use super::deps::{Data, Dependency, KvEntry, ServiceInstance, ServiceSummary};
use crate::cluster::Grants;
use crate::consul::{self, CheckStatus, ConsulIndex, QueryOptions};
use futures::future::BoxFuture;
use std::time::Duration;

/// One read's data and the index to block on next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub index: ConsulIndex,
    pub data: Data,
}

/// A read that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {dependency}: {source}")]
pub struct SourceError {
    pub dependency: Dependency,
    #[source]
    pub source: consul::Error,
}

impl SourceError {
    pub fn category(&self) -> &'static str {
        self.source.category()
    }
}

/// Reads one dependency. With `index`, a blocking query: returns once the data's index
/// passes it or `wait` elapses (then with the same data).
pub trait DataSource: Send + Sync + 'static {
    fn fetch<'a>(
        &'a self,
        dep: &'a Dependency,
        index: Option<ConsulIndex>,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Fetched, SourceError>>;
}

/// Templates read Consul through this.
#[derive(Clone, Debug)]
pub struct ConsulSource {
    client: consul::Client,
    grants: Grants,
}

impl ConsulSource {
    /// Reads whatever `client`'s token may (`concord render`).
    pub fn new(client: consul::Client) -> Self {
        Self { client, grants: Grants::default() }
    }

    /// Reads KV only under the prefixes `grants` allows (a ConfigTemplate reads with
    /// the controller's token, so its namespace's grants bound it); any other key is
    /// refused as permission denied, without a call to Consul.
    pub fn with_grants(client: consul::Client, grants: Grants) -> Self {
        Self { client, grants }
    }

    fn check_kv(&self, key: &str) -> Result<(), consul::Error> {
        self.grants.kv(key).map_err(|message| consul::Error::PermissionDenied {
            method: reqwest::Method::GET,
            path: format!("/v1/kv/{key}"),
            message,
        })
    }
}

impl DataSource for ConsulSource {
    fn fetch<'a>(
        &'a self,
        dep: &'a Dependency,
        index: Option<ConsulIndex>,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Fetched, SourceError>> {
        Box::pin(async move {
            let opts = match index {
                Some(i) => QueryOptions::blocking(i, wait),
                None => QueryOptions::default(),
            };
            let err = |source| SourceError { dependency: dep.clone(), source };
            match dep {
                Dependency::Key(key) => {
                    self.check_kv(key).map_err(err)?;
                    let resp = self.client.kv_get(key, &opts).await.map_err(err)?;
                    let value = resp.value.map(|p| String::from_utf8_lossy(&p.value).into_owned());
                    Ok(Fetched { index: resp.index, data: Data::Key(value) })
                }
                Dependency::Prefix(prefix) => {
                    self.check_kv(prefix).map_err(err)?;
                    let resp = self.client.kv_list(prefix, &opts).await.map_err(err)?;
                    Ok(Fetched { index: resp.index, data: Data::Prefix(prefix_entries(prefix, resp.value)) })
                }
                Dependency::Service { name, tag, passing_only } => {
                    let tags: Vec<&str> = tag.iter().map(String::as_str).collect();
                    let resp = self.client.health_service(name, &tags, *passing_only, &opts).await.map_err(err)?;
                    Ok(Fetched { index: resp.index, data: Data::Service(instances(resp.value)) })
                }
                Dependency::Services => {
                    let resp = self.client.catalog_services(&opts).await.map_err(err)?;
                    let list = resp
                        .value
                        .into_iter()
                        .map(|(name, mut tags)| {
                            tags.sort();
                            tags.dedup();
                            ServiceSummary { name, tags }
                        })
                        .collect();
                    Ok(Fetched { index: resp.index, data: Data::Services(list) })
                }
            }
        })
    }
}

/// Entries under a folder prefix, relative keys, folder markers (`a/`) left out.
pub fn prefix_entries(prefix: &str, pairs: Vec<consul::KvPair>) -> Vec<KvEntry> {
    let mut out: Vec<KvEntry> = pairs
        .into_iter()
        .filter(|p| !p.key.ends_with('/'))
        .filter_map(|p| {
            let key = p.key.strip_prefix(prefix)?.to_string();
            let value = String::from_utf8_lossy(&p.value).into_owned();
            Some(KvEntry { full_key: p.key, key, value })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Service instances as templates see them, sorted by node then id (stable output).
pub fn instances(entries: Vec<consul::ServiceEntry>) -> Vec<ServiceInstance> {
    let mut out: Vec<ServiceInstance> = entries
        .into_iter()
        .map(|e| {
            let status = match e.aggregated_status() {
                CheckStatus::Passing => "passing",
                CheckStatus::Warning => "warning",
                CheckStatus::Critical => "critical",
                CheckStatus::Maintenance => "maintenance",
            };
            ServiceInstance {
                address: e.address().to_string(),
                id: e.service.id,
                name: e.service.service,
                node: e.node.node,
                node_address: e.node.address,
                port: e.service.port,
                tags: e.service.tags,
                meta: e.service.meta,
                status: status.to_string(),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_entries_are_relative_and_skip_folders() {
        let pair = |k: &str, v: &str| consul::KvPair {
            key: k.into(),
            value: v.as_bytes().to_vec().into(),
            ..Default::default()
        };
        let out = prefix_entries(
            "config/app/",
            vec![pair("config/app/", ""), pair("config/app/z", "1"), pair("config/app/db/host", "h")],
        );
        let keys: Vec<_> = out.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["db/host", "z"]);
        assert_eq!(out[0].full_key, "config/app/db/host");
    }
}
