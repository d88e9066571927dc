//! Which Consul an object talks to: resolves `spec.clusterRef` (default: the only
//! DiscoveryCluster in the namespace) to a Consul client, reading the ACL token from its
//! Secret. Clients are cached per cluster and rebuilt when the address or token changes.
pub mod tenancy;
pub mod tenant_token;
pub mod token_secret;

pub use tenancy::Grants;

use crate::consul::{self, ClientConfig, Token};
use crate::resources::DiscoveryCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// A resolved cluster: its identity and a ready Consul client.
#[derive(Clone, Debug)]
pub struct ClusterHandle {
    pub namespace: String,
    pub name: String,
    pub consul: consul::Client,
    /// Changes when the cluster's addresses or token change (e.g. the controller token
    /// that the ACL bootstrap stores): a long-lived user of `consul` starts over then.
    pub fingerprint: u64,
    /// What objects of the cluster's namespace may do in it (`spec.tenancy`).
    pub grants: Grants,
}

/// Why an object's cluster cannot be used (yet).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no DiscoveryCluster in namespace {namespace}; create one or set spec.clusterRef")]
    NoCluster { namespace: String },
    #[error("several DiscoveryClusters in namespace {namespace} ({names}); set spec.clusterRef")]
    Ambiguous { namespace: String, names: String },
    #[error("DiscoveryCluster {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("DiscoveryCluster {namespace}/{name}: token Secret {secret} key {key}: {reason}")]
    TokenSecret { namespace: String, name: String, secret: String, key: String, reason: String },
    #[error("cannot read DiscoveryClusters: {0}")]
    Kube(#[source] kube::Error),
    #[error("cannot build a Consul client: {0}")]
    Consul(#[source] consul::Error),
}

impl ClusterError {
    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::NoCluster { .. } | ClusterError::NotFound { .. } | ClusterError::Ambiguous { .. } => {
                "cluster_ref"
            }
            ClusterError::TokenSecret { .. } => "token_secret",
            ClusterError::Kube(_) => "kube",
            ClusterError::Consul(_) => "consul_config",
        }
    }
}

/// Consul clients per cluster, keyed by a fingerprint of what the client was built from.
#[derive(Default)]
pub struct ClusterCache {
    clients: Mutex<HashMap<(String, String), (u64, consul::Client)>>,
    /// Clients with each namespace's derived token (`tenant_token`).
    tenants: Mutex<HashMap<(String, String), (u64, consul::Client)>>,
    /// `--consul-address`: where to reach managed clusters instead of their client Service.
    overrides: HashMap<(String, String), Vec<String>>,
}

/// `--consul-address NAMESPACE/NAME=URL[,URL]`: reach the managed DiscoveryCluster
/// NAMESPACE/NAME at these URLs instead of its client Service (a controller outside the
/// cluster going through `kubectl port-forward`, or a test pointing at a local Consul).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressOverride {
    pub namespace: String,
    pub name: String,
    pub addresses: Vec<String>,
}

impl std::str::FromStr for AddressOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("expected NAMESPACE/NAME=URL[,URL], got {s:?}");
        let (cluster, urls) = s.split_once('=').ok_or_else(usage)?;
        let (namespace, name) = cluster.split_once('/').ok_or_else(usage)?;
        let addresses = external_addresses(urls);
        if namespace.is_empty() || name.is_empty() || addresses.is_empty() {
            return Err(usage());
        }
        if let Some(bad) = addresses.iter().find(|a| !(a.starts_with("http://") || a.starts_with("https://"))) {
            return Err(format!("{bad:?} is not an http:// or https:// URL"));
        }
        Ok(AddressOverride { namespace: namespace.to_string(), name: name.to_string(), addresses })
    }
}

/// Consul HTTP address of a managed cluster: its client Service.
pub fn managed_address(namespace: &str, name: &str) -> String {
    format!("http://{name}-client.{namespace}.svc:8500")
}

/// Splits `spec.external.address` ("http://a:8500, http://b:8500").
pub fn external_addresses(address: &str) -> Vec<String> {
    address.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect()
}

impl ClusterCache {
    /// A cache that reaches the named managed clusters at the given addresses.
    pub fn with_overrides(overrides: &[AddressOverride]) -> Self {
        let overrides =
            overrides.iter().map(|o| ((o.namespace.clone(), o.name.clone()), o.addresses.clone())).collect();
        ClusterCache { clients: Mutex::default(), tenants: Mutex::default(), overrides }
    }

    /// Where a managed cluster's Consul answers: the override, else its client Service.
    pub fn managed_addresses(&self, namespace: &str, name: &str) -> Vec<String> {
        match self.overrides.get(&(namespace.to_string(), name.to_string())) {
            Some(addresses) => addresses.clone(),
            None => vec![managed_address(namespace, name)],
        }
    }

    /// Resolves the cluster of an object in `namespace` with optional `cluster_ref`.
    pub async fn resolve(
        &self,
        client: &kube::Client,
        namespace: &str,
        cluster_ref: Option<&str>,
    ) -> Result<ClusterHandle, ClusterError> {
        let api: Api<DiscoveryCluster> = Api::namespaced(client.clone(), namespace);
        let cluster =
            match cluster_ref {
                Some(name) => api.get_opt(name).await.map_err(ClusterError::Kube)?.ok_or_else(|| {
                    ClusterError::NotFound { namespace: namespace.to_string(), name: name.to_string() }
                })?,
                None => {
                    let mut list = api.list(&ListParams::default()).await.map_err(ClusterError::Kube)?.items;
                    match list.len() {
                        0 => return Err(ClusterError::NoCluster { namespace: namespace.to_string() }),
                        1 => list.remove(0),
                        _ => {
                            let names = list.iter().map(|c| c.name_any()).collect::<Vec<_>>().join(", ");
                            return Err(ClusterError::Ambiguous { namespace: namespace.to_string(), names });
                        }
                    }
                }
            };
        self.client_for(client, &cluster).await
    }

    /// The Consul client of one DiscoveryCluster.
    pub async fn client_for(
        &self,
        client: &kube::Client,
        cluster: &DiscoveryCluster,
    ) -> Result<ClusterHandle, ClusterError> {
        let namespace = cluster.namespace().unwrap_or_default();
        let name = cluster.name_any();
        let grants = Grants::of(cluster);
        let (addresses, token) = match &cluster.spec.external {
            Some(external) => {
                let token = match &external.token_secret_ref {
                    Some(r) => Some(read_token(client, &namespace, &name, &r.name, &r.key).await?),
                    None => None,
                };
                (external_addresses(&external.address), token)
            }
            // A managed cluster with ACLs uses the controller token that the ACL bootstrap
            // stored; before the bootstrap there is none yet, and calls go without one.
            None if cluster.spec.acl.as_ref().is_some_and(|a| a.enabled) => {
                let secret = token_secret::controller_secret_name(&name);
                let token = token_secret::read_secret_token(client, &namespace, &secret, token_secret::TOKEN_KEY)
                    .await
                    .map_err(ClusterError::Kube)?;
                (self.managed_addresses(&namespace, &name), token)
            }
            None => (self.managed_addresses(&namespace, &name), None),
        };
        let mut hasher = DefaultHasher::new();
        addresses.hash(&mut hasher);
        token.as_ref().map(|t| t.expose_secret()).hash(&mut hasher);
        let fingerprint = hasher.finish();
        let key = (namespace.clone(), name.clone());
        if let Ok(cache) = self.clients.lock()
            && let Some((fp, consul)) = cache.get(&key)
            && *fp == fingerprint
        {
            return Ok(ClusterHandle { namespace, name, consul: consul.clone(), fingerprint, grants });
        }
        let mut config = ClientConfig::new(addresses);
        if let Some(token) = token {
            config = config.token(token);
        }
        let consul = consul::Client::new(config).map_err(ClusterError::Consul)?;
        if let Ok(mut cache) = self.clients.lock() {
            cache.insert(key, (fingerprint, consul.clone()));
        }
        Ok(ClusterHandle { namespace, name, consul, fingerprint, grants })
    }
}

async fn read_token(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    secret: &str,
    key: &str,
) -> Result<Token, ClusterError> {
    let err = |reason: &str| ClusterError::TokenSecret {
        namespace: namespace.to_string(),
        name: cluster.to_string(),
        secret: secret.to_string(),
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = api.get_opt(secret).await.map_err(ClusterError::Kube)?.ok_or_else(|| err("Secret not found"))?;
    let bytes = found.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| err("key not found"))?;
    let text = String::from_utf8(bytes.0.clone()).map_err(|_| err("value is not UTF-8"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(err("value is empty"));
    }
    Ok(Token::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_external_addresses() {
        assert_eq!(
            external_addresses("http://127.0.0.1:8500, http://127.0.0.2:8500,"),
            vec!["http://127.0.0.1:8500", "http://127.0.0.2:8500"]
        );
    }

    #[test]
    fn managed_clusters_are_reached_through_their_client_service() {
        assert_eq!(managed_address("ops", "consul"), "http://consul-client.ops.svc:8500");
    }

    #[test]
    fn address_overrides_parse_and_apply_to_one_cluster() {
        let o: AddressOverride = "ops/consul=http://127.0.0.1:8500, http://127.0.0.1:8501".parse().expect("parses");
        assert_eq!(o.addresses, vec!["http://127.0.0.1:8500", "http://127.0.0.1:8501"]);
        let cache = ClusterCache::with_overrides(&[o]);
        assert_eq!(cache.managed_addresses("ops", "consul").len(), 2);
        assert_eq!(cache.managed_addresses("ops", "other"), vec!["http://other-client.ops.svc:8500"]);
        for bad in ["consul=http://x", "ops/consul", "ops/=http://x", "ops/consul=ftp://x", "ops/consul="] {
            assert!(bad.parse::<AddressOverride>().is_err(), "{bad} must be refused");
        }
    }
}
