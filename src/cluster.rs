//! Which Consul an object talks to: resolves `spec.clusterRef` (default: the only
//! DiscoveryCluster in the namespace) to a Consul client, reading the ACL token from its
//! Secret. Clients are cached per cluster and purpose and rebuilt when the address or
//! token changes.
//!
//! A managed cluster with ACLs has two tokens of concord's own, one per purpose
//! ([`Purpose`]), and each is reached through its own function:
//! - [`ClusterCache::resolve`] / [`ClusterCache::client_for`]: the controller's sync token
//!   (catalog sync, DiscoveryCluster operation, config-entry and prepared-query imports);
//!   it holds no ACL, KV, session, event or keyring rights.
//! - [`ClusterCache::resolve_acl_admin`] / [`ClusterCache::acl_admin_for`]: the ACL-admin
//!   token (`acl = "write"`), for the code that manages ACLs (tenant-token derivation,
//!   the ACL controllers) and snapshots. Only the files listed in tests/layering.rs may
//!   call these.
//!
//! Tenant objects get neither: [`ClusterCache::resolve_tenant`] gives them the
//! namespace's derived token. An external cluster has one token (its `tokenSecretRef`),
//! used for both purposes: its Consul operator decides what it may do.
pub mod tenancy;
pub mod tenant_token;
pub mod tls;
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

/// How long the controller waits for one (non-blocking) Consul request. Consul itself
/// holds a request at most 7 s during a leader election (its RPC hold timeout), so 10 s
/// is enough; the client's 30 s default kept the catalog up to 25 s behind after a 5 s
/// partition, a request sent into the black hole waiting out its timeout after the heal
/// (tests/faults.rs, `controller_cut_off_from_consul_then_healed`). Blocking reads add
/// their wait to this; snapshots have their own timeout.
const CONSUL_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    #[error("DiscoveryCluster {namespace}/{name}: CA Secret {secret} key {key}: {reason}")]
    CaSecret { namespace: String, name: String, secret: String, key: String, reason: String },
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
            ClusterError::CaSecret { .. } => "ca_secret",
            ClusterError::Kube(_) => "kube",
            ClusterError::Consul(_) => "consul_config",
        }
    }
}

/// Which of a cluster's tokens a client carries (managed clusters with ACLs; see the
/// module).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Purpose {
    /// The controller (sync) token: `<cluster>-acl-controller`.
    Sync,
    /// The ACL-admin token: `<cluster>-acl-admin`.
    AclAdmin,
}

/// A cached client: the cluster's namespace and name, and the token's purpose.
type ClientKey = (String, String, Purpose);

/// Consul clients per cluster and purpose, keyed by a fingerprint of what the client was
/// built from.
#[derive(Default)]
pub struct ClusterCache {
    clients: Mutex<HashMap<ClientKey, (u64, consul::Client)>>,
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

/// Consul HTTP(S) address of a managed cluster: its client Service (HTTPS on 8501 with
/// TLS, else HTTP on 8500).
pub fn managed_address(namespace: &str, name: &str, tls: bool) -> String {
    if tls {
        format!("https://{name}-client.{namespace}.svc:{}", tls::HTTPS_PORT)
    } else {
        format!("http://{name}-client.{namespace}.svc:8500")
    }
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
    pub fn managed_addresses(&self, namespace: &str, name: &str, tls: bool) -> Vec<String> {
        match self.overrides.get(&(namespace.to_string(), name.to_string())) {
            Some(addresses) => addresses.clone(),
            None => vec![managed_address(namespace, name, tls)],
        }
    }

    /// Resolves the cluster of an object in `namespace` with optional `cluster_ref`, with
    /// the controller's sync token (see the module): no ACL rights.
    pub async fn resolve(
        &self,
        client: &kube::Client,
        namespace: &str,
        cluster_ref: Option<&str>,
    ) -> Result<ClusterHandle, ClusterError> {
        let cluster = find_cluster(client, namespace, cluster_ref).await?;
        self.client_for(client, &cluster).await
    }

    /// Like [`ClusterCache::resolve`], with the cluster's ACL-admin token: only for the
    /// code that manages ACLs (tenant-token derivation, ACLPolicy, ACLToken) and
    /// snapshots. A managed cluster with ACLs whose admin token is not made yet is
    /// [`ClusterError::TokenSecret`].
    pub async fn resolve_acl_admin(
        &self,
        client: &kube::Client,
        namespace: &str,
        cluster_ref: Option<&str>,
    ) -> Result<ClusterHandle, ClusterError> {
        let cluster = find_cluster(client, namespace, cluster_ref).await?;
        self.acl_admin_for(client, &cluster).await
    }

    /// The Consul client of one DiscoveryCluster, with the controller's sync token.
    pub async fn client_for(
        &self,
        client: &kube::Client,
        cluster: &DiscoveryCluster,
    ) -> Result<ClusterHandle, ClusterError> {
        self.client_with(client, cluster, Purpose::Sync).await
    }

    /// The Consul client of one DiscoveryCluster, with its ACL-admin token (see
    /// [`ClusterCache::resolve_acl_admin`]).
    pub async fn acl_admin_for(
        &self,
        client: &kube::Client,
        cluster: &DiscoveryCluster,
    ) -> Result<ClusterHandle, ClusterError> {
        self.client_with(client, cluster, Purpose::AclAdmin).await
    }

    async fn client_with(
        &self,
        client: &kube::Client,
        cluster: &DiscoveryCluster,
        purpose: Purpose,
    ) -> Result<ClusterHandle, ClusterError> {
        let namespace = cluster.namespace().unwrap_or_default();
        let name = cluster.name_any();
        let grants = Grants::of(cluster);
        let tls = cluster.spec.managed_tls();
        let ca_pem = match (&cluster.spec.external, tls) {
            (Some(external), _) => match &external.ca_secret_ref {
                Some(r) => Some(read_ca(client, &namespace, &name, &r.name, &r.key).await?),
                None => None,
            },
            // The CA the DiscoveryCluster controller keeps; before it exists there is
            // nothing to verify against, and the servers are not serving yet either.
            (None, true) => {
                let secret = tls::ca_secret_name(&name);
                Some(read_ca(client, &namespace, &name, &secret, tls::CERT_KEY).await?)
            }
            (None, false) => None,
        };
        let (addresses, token) = match &cluster.spec.external {
            Some(external) => {
                let token = match &external.token_secret_ref {
                    Some(r) => Some(read_token(client, &namespace, &name, &r.name, &r.key).await?),
                    None => None,
                };
                (external_addresses(&external.address), token)
            }
            // A managed cluster with ACLs uses the token of the purpose that the ACL
            // bootstrap stored. Before the bootstrap there is no sync token yet, and calls
            // go without one (the bootstrap itself needs that); the ACL-admin token is
            // required (its callers cannot do anything without it).
            None if cluster.spec.acl.as_ref().is_some_and(|a| a.enabled) => {
                let secret = match purpose {
                    Purpose::Sync => token_secret::controller_secret_name(&name),
                    Purpose::AclAdmin => token_secret::acl_admin_secret_name(&name),
                };
                let token = token_secret::read_secret_token(client, &namespace, &secret, token_secret::TOKEN_KEY)
                    .await
                    .map_err(ClusterError::Kube)?;
                if token.is_none() && purpose == Purpose::AclAdmin {
                    return Err(ClusterError::TokenSecret {
                        namespace,
                        name,
                        secret,
                        key: token_secret::TOKEN_KEY.to_string(),
                        reason: "not made yet (the DiscoveryCluster makes it after the ACL bootstrap)".to_string(),
                    });
                }
                (self.managed_addresses(&namespace, &name, tls), token)
            }
            None => (self.managed_addresses(&namespace, &name, tls), None),
        };
        let server_name = cluster.spec.external.as_ref().and_then(|e| e.tls_server_name.clone());
        let mut hasher = DefaultHasher::new();
        addresses.hash(&mut hasher);
        ca_pem.hash(&mut hasher);
        server_name.hash(&mut hasher);
        token.as_ref().map(|t| t.expose_secret()).hash(&mut hasher);
        let fingerprint = hasher.finish();
        let key = (namespace.clone(), name.clone(), purpose);
        if let Ok(cache) = self.clients.lock()
            && let Some((fp, consul)) = cache.get(&key)
            && *fp == fingerprint
        {
            return Ok(ClusterHandle { namespace, name, consul: consul.clone(), fingerprint, grants });
        }
        let mut config = ClientConfig::new(addresses);
        config.request_timeout = CONSUL_REQUEST_TIMEOUT;
        if let Some(token) = token {
            config = config.token(token);
        }
        if let Some(pem) = ca_pem {
            config = config.ca_pem(pem);
        }
        if let Some(name) = server_name {
            config = config.tls_server_name(name);
        }
        let consul = consul::Client::new(config).map_err(ClusterError::Consul)?;
        if let Ok(mut cache) = self.clients.lock() {
            cache.insert(key, (fingerprint, consul.clone()));
        }
        Ok(ClusterHandle { namespace, name, consul, fingerprint, grants })
    }
}

/// The DiscoveryCluster `cluster_ref` names in `namespace`, else the only one there.
async fn find_cluster(
    client: &kube::Client,
    namespace: &str,
    cluster_ref: Option<&str>,
) -> Result<DiscoveryCluster, ClusterError> {
    let api: Api<DiscoveryCluster> = Api::namespaced(client.clone(), namespace);
    match cluster_ref {
        Some(name) => api
            .get_opt(name)
            .await
            .map_err(ClusterError::Kube)?
            .ok_or_else(|| ClusterError::NotFound { namespace: namespace.to_string(), name: name.to_string() }),
        None => {
            let mut list = api.list(&ListParams::default()).await.map_err(ClusterError::Kube)?.items;
            match list.len() {
                0 => Err(ClusterError::NoCluster { namespace: namespace.to_string() }),
                1 => Ok(list.remove(0)),
                _ => {
                    let names = list.iter().map(|c| c.name_any()).collect::<Vec<_>>().join(", ");
                    Err(ClusterError::Ambiguous { namespace: namespace.to_string(), names })
                }
            }
        }
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
    let bytes = secret_value(client, namespace, secret, key).await?.map_err(err)?;
    let text = String::from_utf8(bytes).map_err(|_| err("value is not UTF-8"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(err("value is empty"));
    }
    Ok(Token::new(text))
}

/// The bytes at `secret`/`key`; `Ok(Err(reason))` when the Secret or the key is missing.
async fn secret_value(
    client: &kube::Client,
    namespace: &str,
    secret: &str,
    key: &str,
) -> Result<Result<Vec<u8>, &'static str>, ClusterError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(found) = api.get_opt(secret).await.map_err(ClusterError::Kube)? else {
        return Ok(Err("Secret not found"));
    };
    Ok(found.data.and_then(|mut d| d.remove(key)).map(|b| b.0).ok_or("key not found"))
}

/// The PEM CA certificate at `secret`/`key` (read fresh on each resolve, so a replaced
/// CA takes effect at once).
async fn read_ca(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    secret: &str,
    key: &str,
) -> Result<Vec<u8>, ClusterError> {
    let err = |reason: &str| ClusterError::CaSecret {
        namespace: namespace.to_string(),
        name: cluster.to_string(),
        secret: secret.to_string(),
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let bytes = secret_value(client, namespace, secret, key).await?.map_err(err)?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(err("value is not a PEM certificate"));
    }
    Ok(bytes)
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
        assert_eq!(managed_address("ops", "consul", false), "http://consul-client.ops.svc:8500");
        assert_eq!(managed_address("ops", "consul", true), "https://consul-client.ops.svc:8501");
    }

    #[test]
    fn address_overrides_parse_and_apply_to_one_cluster() {
        let o: AddressOverride = "ops/consul=http://127.0.0.1:8500, http://127.0.0.1:8501".parse().expect("parses");
        assert_eq!(o.addresses, vec!["http://127.0.0.1:8500", "http://127.0.0.1:8501"]);
        let cache = ClusterCache::with_overrides(&[o]);
        assert_eq!(cache.managed_addresses("ops", "consul", true).len(), 2);
        assert_eq!(cache.managed_addresses("ops", "other", false), vec!["http://other-client.ops.svc:8500"]);
        for bad in ["consul=http://x", "ops/consul", "ops/=http://x", "ops/consul=ftp://x", "ops/consul="] {
            assert!(bad.parse::<AddressOverride>().is_err(), "{bad} must be refused");
        }
    }
}
