//! The second line of the grants: a Consul token per DiscoveryCluster namespace, derived
//! from `spec.tenancy`, that the tenant controllers (KVConfig, ConfigTemplate,
//! ServiceIntention, the other config entries and PreparedQuery) write and read with. concord refuses
//! what the grants deny before it calls Consul; this token makes Consul's own ACLs refuse
//! it too, should a check in concord be wrong.
//!
//! The token is kept in Consul only: its AccessorID is derived from the cluster's
//! namespace and name, and its SecretID is read back with the cluster's ACL-admin token
//! ([`ClusterCache::resolve_acl_admin`]: a managed cluster's `<cluster>-acl-admin` token,
//! or an external cluster's one token when given with `acl = "write"`). A cluster whose
//! token cannot manage ACLs (an external token the Consul operator scoped) is used as it
//! is: that token is already the bound. A cluster without ACLs has no second line.
use super::tenancy::Grants;
use super::{ClusterCache, ClusterError, ClusterHandle};
use crate::consul::{self, AclLink, AclPolicy, AclToken};
use sha2::{Digest, Sha256};
use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

/// Consul policy rules for a namespace's grants (HCL). An unset list keeps what concord
/// always allowed for its kind (everything), exactly like the checks in `tenancy`.
pub fn rules(grants: &Grants) -> String {
    let tenancy = grants.declared_spec();
    let mut out = String::new();
    // Templates render services and nodes; config entries read their dependencies.
    out.push_str("service_prefix \"\" {\n  policy = \"read\"\n  intentions = \"read\"\n}\n");
    out.push_str("node_prefix \"\" {\n  policy = \"read\"\n}\n");
    match &tenancy.kv_prefixes {
        None => out.push_str("key_prefix \"\" {\n  policy = \"write\"\n}\n"),
        Some(prefixes) => {
            for p in prefixes {
                let _ = writeln!(out, "key_prefix {} {{\n  policy = \"write\"\n}}", quoted(p));
            }
        }
    }
    // Service writes (intentions, config entries) and prepared queries named like the
    // granted services (the PreparedQuery grant is the same list).
    let destinations = tenancy.intention_destinations.as_deref();
    match destinations {
        None => {
            out.push_str("service_prefix \"\" {\n  policy = \"write\"\n  intentions = \"write\"\n}\n");
            out.push_str("query_prefix \"\" {\n  policy = \"write\"\n}\n");
        }
        Some(list) => {
            for d in list {
                let (service, query, name) = match d.strip_suffix('*') {
                    Some(prefix) => ("service_prefix", "query_prefix", prefix),
                    None => ("service", "query", d.as_str()),
                };
                let name = quoted(name);
                let _ = writeln!(out, "{service} {name} {{\n  policy = \"write\"\n  intentions = \"write\"\n}}");
                let _ = writeln!(out, "{query} {name} {{\n  policy = \"write\"\n}}");
            }
        }
    }
    // Cluster-wide entries (proxy-defaults, mesh, exported-services) need mesh write; the
    // grants allow them only to an unset list or one with "*" (tenancy::intention_destination).
    let cluster_wide = destinations.is_none_or(|l| l.iter().any(|d| d == "*"));
    out.push_str(if cluster_wide { "mesh = \"write\"\n" } else { "mesh = \"read\"\n" });
    out
}

/// An HCL string literal.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Consul's name for the namespace's policy (`[A-Za-z0-9_-]`, at most 128).
pub fn policy_name(namespace: &str, cluster: &str) -> String {
    let name: String =
        format!("concord-tenant-{namespace}-{cluster}").chars().map(|c| if c == '.' { '_' } else { c }).collect();
    name.chars().take(128).collect()
}

/// The token's AccessorID: a UUID derived from the namespace and cluster name, so
/// concord finds its token again after a restart without storing anything.
pub fn accessor_id(namespace: &str, cluster: &str) -> String {
    let digest = Sha256::digest(format!("concord-tenant/{namespace}/{cluster}").as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    // Version 4 / variant 1 bits, so Consul accepts it as a UUID.
    let mut chars: Vec<char> = hex.chars().collect();
    chars[12] = '4';
    chars[16] = ['8', '9', 'a', 'b'][usize::from(digest[8] & 0x3)];
    let s: String = chars.into_iter().collect();
    format!("{}-{}-{}-{}-{}", &s[0..8], &s[8..12], &s[12..16], &s[16..20], &s[20..32])
}

/// Makes sure the namespace's policy has `rules` and its token exists; returns the
/// token, or `None` when `consul`'s token may not manage ACLs.
pub async fn ensure(
    consul: &consul::Client,
    namespace: &str,
    cluster: &str,
    rules: &str,
) -> Result<Option<consul::Token>, consul::Error> {
    let name = policy_name(namespace, cluster);
    let description = format!("concord: objects of namespace {namespace} in DiscoveryCluster {cluster} (spec.tenancy)");
    let existing = match consul.acl_policy_read_by_name(&name).await {
        Ok(p) => p,
        Err(consul::Error::PermissionDenied { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    match existing {
        Some(p) if p.rules == rules => {}
        Some(p) => {
            consul
                .acl_policy_update(&AclPolicy { rules: rules.to_string(), description: description.clone(), ..p })
                .await?;
        }
        None => {
            let policy = AclPolicy {
                name: name.clone(),
                description: description.clone(),
                rules: rules.to_string(),
                ..Default::default()
            };
            match consul.acl_policy_create(&policy).await {
                Ok(_) => {}
                Err(consul::Error::PermissionDenied { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
    let accessor = accessor_id(namespace, cluster);
    let existing = consul.acl_token_read(&accessor).await?;
    if let Some(token) = &existing
        && let Some(secret) = &token.secret_id
        && token.policies.iter().any(|l| l.name == name)
    {
        return Ok(Some(secret.clone()));
    }
    let token = AclToken {
        accessor_id: accessor.clone(),
        description,
        policies: vec![AclLink { name: name.clone(), ..Default::default() }],
        ..Default::default()
    };
    let made = match existing {
        // Exists without the policy (edited by hand): put it back.
        Some(existing) => consul
            .acl_token_update(&AclToken { secret_id: None, ..token })
            .await
            .map(|t| t.secret_id.or(existing.secret_id))?,
        None => match consul.acl_token_create(&token).await {
            Ok(t) => t.secret_id,
            Err(consul::Error::PermissionDenied { .. }) => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    Ok(made)
}

impl ClusterCache {
    /// The cluster as the objects of its namespace use it: like [`ClusterCache::resolve`],
    /// with the Consul client carrying the namespace's derived token (see the module). The
    /// token is derived with the cluster's ACL-admin token, which the caller never sees.
    pub async fn resolve_tenant(
        &self,
        client: &kube::Client,
        namespace: &str,
        cluster_ref: Option<&str>,
    ) -> Result<ClusterHandle, ClusterError> {
        let mut handle = self.resolve_acl_admin(client, namespace, cluster_ref).await?;
        if !handle.consul.has_token() {
            return Ok(handle);
        }
        let rules = rules(&handle.grants);
        let mut hasher = DefaultHasher::new();
        (handle.fingerprint, &rules).hash(&mut hasher);
        let fingerprint = hasher.finish();
        let key = (handle.namespace.clone(), handle.name.clone());
        if let Ok(cache) = self.tenants.lock()
            && let Some((fp, consul)) = cache.get(&key)
            && *fp == fingerprint
        {
            handle.consul = consul.clone();
            return Ok(handle);
        }
        let derived =
            ensure(&handle.consul, &handle.namespace, &handle.name, &rules).await.map_err(ClusterError::Consul)?;
        if let Some(token) = derived {
            handle.consul = handle.consul.with_token(token).map_err(ClusterError::Consul)?;
        }
        if let Ok(mut cache) = self.tenants.lock() {
            cache.insert(key, (fingerprint, handle.consul.clone()));
        }
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::TenancySpec;

    #[test]
    fn unset_grants_keep_everything_and_set_ones_only_what_they_list() {
        let open = rules(&Grants::default());
        assert!(open.contains("key_prefix \"\" {\n  policy = \"write\""), "{open}");
        assert!(open.contains("mesh = \"write\""), "{open}");
        assert!(!open.contains("acl"), "never ACL rights: {open}");

        let tenancy = TenancySpec {
            kv_prefixes: Some(vec!["team-a/".into()]),
            intention_destinations: Some(vec!["web".into(), "api-*".into()]),
            ..Default::default()
        };
        let bound = rules(&Grants::declared(tenancy));
        assert!(bound.contains("key_prefix \"team-a/\" {\n  policy = \"write\""), "{bound}");
        assert!(!bound.contains("key_prefix \"\" {\n  policy = \"write\""), "{bound}");
        assert!(bound.contains("service \"web\" {\n  policy = \"write\"\n  intentions = \"write\""), "{bound}");
        assert!(bound.contains("service_prefix \"api-\" {\n  policy = \"write\""), "{bound}");
        assert!(bound.contains("query \"web\" {\n  policy = \"write\""), "{bound}");
        assert!(bound.contains("query_prefix \"api-\" {\n  policy = \"write\""), "{bound}");
        assert!(!bound.contains("query_prefix \"\""), "{bound}");
        assert!(bound.contains("mesh = \"read\""), "{bound}");
        assert!(!bound.contains("acl"), "{bound}");

        let none = rules(&Grants::declared(TenancySpec { kv_prefixes: Some(vec![]), ..Default::default() }));
        assert!(!none.contains("key_prefix"), "an empty list grants no key: {none}");
    }

    #[test]
    fn a_prefix_with_quotes_stays_one_hcl_string() {
        let tenancy = TenancySpec { kv_prefixes: Some(vec!["a\" } acl = \"write".into()]), ..Default::default() };
        let r = rules(&Grants::declared(tenancy));
        assert!(r.contains(r#"key_prefix "a\" } acl = \"write" {"#), "{r}");
    }

    #[test]
    fn names_and_accessors_are_stable_and_valid() {
        assert_eq!(policy_name("team.a", "consul"), "concord-tenant-team_a-consul");
        let a = accessor_id("team-a", "consul");
        assert_eq!(a, accessor_id("team-a", "consul"));
        assert_ne!(a, accessor_id("team-b", "consul"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
