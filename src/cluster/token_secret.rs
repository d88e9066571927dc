//! Where a managed cluster's ACL tokens are kept in Kubernetes: the names of the
//! bootstrap, controller (sync) and ACL-admin token Secrets, their keys, and reading a
//! token back. The ACL bootstrap (controllers) writes these Secrets; [`super::ClusterCache`]
//! reads the controller token for [`super::ClusterCache::resolve`], and the ACL-admin token
//! only for the ACL and snapshot code (see `cluster.rs`). Both sides name them through
//! this module.
use crate::consul::Token;
use crate::resources::DiscoveryCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

/// Key of the token in the bootstrap and controller Secrets.
pub const TOKEN_KEY: &str = "token";
/// Key of the token's accessor (public ID) in the bootstrap and controller Secrets.
pub const ACCESSOR_KEY: &str = "accessorId";

/// Name of the Secret that keeps the bootstrap token.
pub fn bootstrap_secret_name(dc: &DiscoveryCluster) -> String {
    dc.spec
        .acl
        .as_ref()
        .and_then(|a| a.bootstrap_secret_name.clone())
        .unwrap_or_else(|| format!("{}-acl-bootstrap", dc.name_any()))
}

/// Name of the Secret that holds the controller's own (sync) token: catalog sync,
/// DiscoveryCluster operation, imports. No ACL rights.
pub fn controller_secret_name(cluster: &str) -> String {
    format!("{cluster}-acl-controller")
}

/// Name of the Secret that holds the cluster's ACL-admin token (`acl = "write"`): used
/// only to derive tenant tokens, by the ACL controllers and for snapshots.
pub fn acl_admin_secret_name(cluster: &str) -> String {
    format!("{cluster}-acl-admin")
}

/// Reads a token from a Secret key; `None` when the Secret or key is missing or empty.
pub async fn read_secret_token(
    client: &kube::Client,
    namespace: &str,
    secret: &str,
    key: &str,
) -> Result<Option<Token>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(found) = api.get_opt(secret).await? else { return Ok(None) };
    let text = found
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    Ok(text.map(Token::new))
}
