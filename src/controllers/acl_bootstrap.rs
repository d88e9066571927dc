//! ACL bootstrap of a DiscoveryCluster with `spec.acl.enabled`: bootstrap Consul's ACL
//! system once, keep the bootstrap (management) token in a Secret, and create the
//! controller's own token, which concord uses from then on. That token is limited to what
//! the controllers use, but it holds `acl = "write"`, which in Consul is management-
//! equivalent (see `CONTROLLER_RULES` and docs/security.md, Known limits).
//!
//! Decisions:
//! - The bootstrap Secret (`spec.acl.bootstrapSecretName`, default
//!   `<cluster>-acl-bootstrap`) has no owner reference: it is the only copy of the
//!   management token, and Consul's ACL state lives in the Raft data, which outlives the
//!   DiscoveryCluster object (volume claims are kept by default). Deleting the object
//!   must not lose the key to the data that survives it.
//! - The controller token's Secret (`<cluster>-acl-controller`, key `token`) is owned by
//!   the cluster: it can always be re-made from the bootstrap token.
//! - Bootstrap is called at most once per reconcile and never after a Secret was lost:
//!   Consul answering "ACL bootstrap no longer allowed" while concord holds no usable
//!   token is reported (condition `ACLBootstrapped=False, reason=BootstrapSecretLost` and
//!   a Warning Event), and a person restores the Secret or resets ACLs on purpose
//!   (`consul acl bootstrap` with the reset index).
//!
//! The DiscoveryCluster controller calls [`ensure_bootstrapped`] and writes
//! [`BootstrapOutcome::condition`] into its status.
use crate::cluster::token_secret::read_secret_token;
pub use crate::cluster::token_secret::{ACCESSOR_KEY, TOKEN_KEY, bootstrap_secret_name, controller_secret_name};
use crate::consul::{self, AclLink, AclPolicy, AclToken, Token};
use crate::context::{Context, FIELD_MANAGER};
use crate::resources::{ConditionUpdate, DiscoveryCluster, find_condition};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;

/// Condition type the DiscoveryCluster reports the ACL bootstrap under.
pub const ACL_BOOTSTRAPPED: &str = "ACLBootstrapped";

/// What each rule of the controller's policy is for; the policy is exactly these.
///
/// `acl = "write"` is what the ACLPolicy and ACLToken controllers and `/v1/snapshot`
/// need; note that in Consul it is equivalent to management (it can mint any token), so
/// the real limit here is on everything else: no `keyring`, no `event`, no agent
/// writes, no `session`.
pub const CONTROLLER_RULES: &[(&str, &str)] = &[
    (
        "catalog sync to Consul registers services; ServiceIntention writes intentions",
        "service_prefix \"\" {\n  policy = \"write\"\n  intentions = \"write\"\n}",
    ),
    ("catalog sync registers Kubernetes endpoints on synthetic nodes", "node_prefix \"\" {\n  policy = \"write\"\n}"),
    (
        "KVConfig writes and watches its key prefixes; ConfigTemplate reads keys",
        "key_prefix \"\" {\n  policy = \"write\"\n}",
    ),
    ("ACLPolicy and ACLToken manage policies and tokens; snapshots need acl write", "acl = \"write\""),
    ("PreparedQuery creates, updates and deletes prepared queries", "query_prefix \"\" {\n  policy = \"write\"\n}"),
    ("DiscoveryCluster removes Raft peers on scale-down and reads the Raft configuration", "operator = \"write\""),
    ("DiscoveryCluster reads the servers' version and members", "agent_prefix \"\" {\n  policy = \"read\"\n}"),
];

/// The controller policy's rules (HCL), each preceded by a comment saying why.
pub fn controller_policy_rules() -> String {
    CONTROLLER_RULES.iter().map(|(why, rule)| format!("# {why}\n{rule}\n")).collect::<Vec<_>>().join("\n")
}

/// Name of the controller's policy in Consul.
pub fn controller_policy_name(cluster: &str) -> String {
    format!("concord-controller-{cluster}")
}

/// Name of the policy the anonymous token carries so DNS answers without a token.
pub fn dns_policy_name(cluster: &str) -> String {
    format!("concord-dns-{cluster}")
}

/// Consul's built-in anonymous token: what a request without a token (every DNS
/// query, unless the agents have a DNS token) is allowed to do.
pub const ANONYMOUS_TOKEN_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// What DNS needs (`<name>.service.consul`, SRV records, `<name>.query.consul`): read the
/// catalog's services, nodes and prepared queries. Not KV, ACLs or intentions.
pub const DNS_POLICY_RULES: &str = "# DNS lookups without a token: services, nodes and prepared queries, read only
service_prefix \"\" {\n  policy = \"read\"\n}\nnode_prefix \"\" {\n  policy = \"read\"\n}\nquery_prefix \"\" {\n  policy = \"read\"\n}\n";

fn controller_token_description(namespace: &str, cluster: &str) -> String {
    format!("concord controller for DiscoveryCluster {namespace}/{cluster}")
}

/// Where the ACL system stands after [`ensure_bootstrapped`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// Bootstrapped in this call; both Secrets written.
    Bootstrapped { controller_accessor: String },
    /// Already bootstrapped by concord; the controller token works.
    Ready { controller_accessor: String, bootstrap_secret_present: bool },
    /// Consul is bootstrapped, but concord holds no usable management or controller
    /// token. Reported, never re-bootstrapped.
    BootstrapSecretLost { detail: String },
}

impl BootstrapOutcome {
    /// The `ACLBootstrapped` condition for the DiscoveryCluster's status.
    pub fn condition(&self) -> ConditionUpdate {
        match self {
            BootstrapOutcome::Bootstrapped { controller_accessor } => ConditionUpdate::new(
                ACL_BOOTSTRAPPED,
                true,
                "Bootstrapped",
                format!("ACLs bootstrapped; controller token {controller_accessor}"),
            ),
            BootstrapOutcome::Ready { controller_accessor, bootstrap_secret_present: true } => ConditionUpdate::new(
                ACL_BOOTSTRAPPED,
                true,
                "Bootstrapped",
                format!("controller token {controller_accessor}"),
            ),
            BootstrapOutcome::Ready { controller_accessor, bootstrap_secret_present: false } => ConditionUpdate::new(
                ACL_BOOTSTRAPPED,
                true,
                "BootstrapSecretMissing",
                format!(
                    "controller token {controller_accessor} works, but the bootstrap Secret is gone: restore it from a backup"
                ),
            ),
            BootstrapOutcome::BootstrapSecretLost { detail } => {
                ConditionUpdate::new(ACL_BOOTSTRAPPED, false, "BootstrapSecretLost", detail.clone())
            }
        }
    }
}

/// Why the bootstrap could not be decided this time (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read or write ACL Secrets: {0}")]
    Kube(#[source] kube::Error),
    #[error("Consul ACL call failed: {0}")]
    Consul(#[source] consul::Error),
    #[error(
        "ACLs were bootstrapped but the bootstrap token could not be stored in Secret {secret}: {source}; it is lost"
    )]
    BootstrapTokenNotStored {
        secret: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Consul(e) => e.category(),
            Error::BootstrapTokenNotStored { .. } => "bootstrap_token_lost",
        }
    }
}

fn token_secret(
    name: &str,
    namespace: &str,
    cluster: &str,
    token: &AclToken,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> Secret {
    let mut data = BTreeMap::new();
    if let Some(secret) = &token.secret_id {
        data.insert(TOKEN_KEY.to_string(), ByteString(secret.expose_secret().as_bytes().to_vec()));
    }
    data.insert(ACCESSOR_KEY.to_string(), ByteString(token.accessor_id.as_bytes().to_vec()));
    let mut s = Secret { data: Some(data), type_: Some("Opaque".to_string()), ..Default::default() };
    s.metadata.name = Some(name.to_string());
    s.metadata.namespace = Some(namespace.to_string());
    s.metadata.labels = Some(BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string()),
        ("concord.io/cluster".to_string(), cluster.to_string()),
    ]));
    s.metadata.owner_references = owner.map(|o| vec![o]);
    s
}

async fn apply_secret(client: &kube::Client, secret: &Secret) -> Result<(), kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), secret.metadata.namespace.as_deref().unwrap_or_default());
    let mut body = serde_json::to_value(secret).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    let name = secret.metadata.name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body)).await?;
    Ok(())
}

/// Whether a token is refused as unknown or invalid (rather than Consul being unwell).
fn is_rejected_token(e: &consul::Error) -> bool {
    matches!(e, consul::Error::PermissionDenied { .. } | consul::Error::NotFound { .. })
}

/// Bootstraps the cluster's ACLs once and makes sure the controller's token exists and
/// is stored. `consul` talks to the cluster; its own token (if any) is not used for ACL
/// calls. Emits Events for a bootstrap and for a lost bootstrap Secret (once).
pub async fn ensure_bootstrapped(
    ctx: &Context,
    dc: &DiscoveryCluster,
    consul: &consul::Client,
) -> Result<BootstrapOutcome, Error> {
    let namespace = dc.namespace().unwrap_or_default();
    let cluster = dc.name_any();
    let bootstrap_secret = bootstrap_secret_name(dc);
    let controller_secret = controller_secret_name(&cluster);
    let reference = dc.object_ref(&());

    let management =
        read_secret_token(&ctx.client, &namespace, &bootstrap_secret, TOKEN_KEY).await.map_err(Error::Kube)?;
    // 1. The controller token in its Secret still works: nothing to do.
    if let Some(token) =
        read_secret_token(&ctx.client, &namespace, &controller_secret, TOKEN_KEY).await.map_err(Error::Kube)?
    {
        let own = consul.with_token(token).map_err(Error::Consul)?;
        match own.acl_token_read_self().await {
            Ok(me) => {
                return Ok(BootstrapOutcome::Ready {
                    controller_accessor: me.accessor_id,
                    bootstrap_secret_present: management.is_some(),
                });
            }
            Err(e) if is_rejected_token(&e) => {
                tracing::info!(cluster = %cluster, "stored controller token is not accepted; making a new one")
            }
            Err(e) => return Err(Error::Consul(e)),
        }
    }
    // 2. A stored management token: make the controller token with it.
    if let Some(token) = management {
        let admin = consul.with_token(token).map_err(Error::Consul)?;
        return match make_controller_token(ctx, dc, &admin).await {
            Ok(accessor) => {
                Ok(BootstrapOutcome::Ready { controller_accessor: accessor, bootstrap_secret_present: true })
            }
            Err(Error::Consul(e)) if is_rejected_token(&e) => {
                let detail = format!(
                    "the token in Secret {bootstrap_secret} is refused by Consul ({e}); concord will not re-bootstrap"
                );
                report_lost(ctx, dc, &reference, detail).await
            }
            Err(e) => Err(e),
        };
    }
    // 3. No token at all: bootstrap, once.
    match consul.acl_bootstrap().await {
        Ok(token) => {
            let secret = token_secret(&bootstrap_secret, &namespace, &cluster, &token, None);
            store_bootstrap_secret(&ctx.client, &secret).await.map_err(|source| {
                tracing::error!(cluster = %cluster, secret = %bootstrap_secret, accessor = %token.accessor_id,
                    "ACL bootstrap token could not be stored and is lost");
                Error::BootstrapTokenNotStored { secret: bootstrap_secret.clone(), source }
            })?;
            let note = format!("ACLs bootstrapped; management token stored in Secret {bootstrap_secret}");
            ctx.event(&reference, false, "ACLBootstrapped", "Bootstrap", note).await;
            let admin =
                consul.with_token(token.secret_id.clone().unwrap_or_else(|| Token::new(""))).map_err(Error::Consul)?;
            let accessor = make_controller_token(ctx, dc, &admin).await?;
            Ok(BootstrapOutcome::Bootstrapped { controller_accessor: accessor })
        }
        Err(consul::Error::AclAlreadyBootstrapped { reset_index }) => {
            let reset = reset_index.map(|i| format!(" (reset index {i})")).unwrap_or_default();
            let detail = format!(
                "Consul's ACLs are already bootstrapped{reset} but Secret {bootstrap_secret} holds no token and no \
                 working controller token is stored; restore the Secret, or reset ACL bootstrap on purpose"
            );
            report_lost(ctx, dc, &reference, detail).await
        }
        Err(e) => Err(Error::Consul(e)),
    }
}

async fn report_lost(
    ctx: &Context,
    dc: &DiscoveryCluster,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    detail: String,
) -> Result<BootstrapOutcome, Error> {
    let conditions = dc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let reported = find_condition(conditions, ACL_BOOTSTRAPPED).is_some_and(|c| c.reason == "BootstrapSecretLost");
    if !reported {
        ctx.event(reference, true, "ACLBootstrapSecretLost", "Bootstrap", detail.clone()).await;
    }
    tracing::warn!(cluster = %dc.name_any(), "ACL bootstrap Secret lost; not re-bootstrapping");
    Ok(BootstrapOutcome::BootstrapSecretLost { detail })
}

/// The freshly minted bootstrap token exists nowhere else: try a few times before
/// giving up (bounded, about 6 s).
async fn store_bootstrap_secret(client: &kube::Client, secret: &Secret) -> Result<(), kube::Error> {
    let mut attempt = 0u32;
    loop {
        match apply_secret(client, secret).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 5 => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "storing the ACL bootstrap token failed; retrying");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * 2u64.pow(attempt))).await;
            }
        }
    }
}

/// Creates (or updates) the controller policy and a new controller token with
/// `admin`, revoking earlier controller tokens of this cluster, and stores the token.
async fn make_controller_token(ctx: &Context, dc: &DiscoveryCluster, admin: &consul::Client) -> Result<String, Error> {
    let namespace = dc.namespace().unwrap_or_default();
    let cluster = dc.name_any();
    let policy_name = controller_policy_name(&cluster);
    let rules = controller_policy_rules();
    let description = format!("concord controller (DiscoveryCluster {namespace}/{cluster})");
    match admin.acl_policy_read_by_name(&policy_name).await.map_err(Error::Consul)? {
        Some(existing) if existing.rules == rules => {}
        Some(mut existing) => {
            existing.rules = rules;
            admin.acl_policy_update(&existing).await.map_err(Error::Consul)?;
        }
        None => {
            let policy = AclPolicy { name: policy_name.clone(), description, rules, ..Default::default() };
            admin.acl_policy_create(&policy).await.map_err(Error::Consul)?;
        }
    }
    if dc.spec.dns != Some(false) {
        ensure_dns_policy(admin, &cluster).await?;
    }
    // Earlier controller tokens of this cluster were only ever stored in the Secret being
    // replaced: revoke them so they do not pile up.
    let token_description = controller_token_description(&namespace, &cluster);
    for old in admin.acl_tokens().await.map_err(Error::Consul)? {
        if old.description == token_description {
            match admin.acl_token_delete(&old.accessor_id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::Consul(e)),
            }
        }
    }
    let request = AclToken {
        description: token_description,
        policies: vec![AclLink::by_name(policy_name)],
        ..Default::default()
    };
    let token = admin.acl_token_create(&request).await.map_err(Error::Consul)?;
    let secret =
        token_secret(&controller_secret_name(&cluster), &namespace, &cluster, &token, dc.controller_owner_ref(&()));
    apply_secret(&ctx.client, &secret).await.map_err(Error::Kube)?;
    tracing::info!(cluster = %cluster, accessor = %token.accessor_id, "controller ACL token stored");
    Ok(token.accessor_id)
}

/// Creates or updates the DNS policy and links it to the anonymous token (default-deny
/// ACLs would otherwise make every DNS lookup answer nothing). Idempotent.
async fn ensure_dns_policy(admin: &consul::Client, cluster: &str) -> Result<(), Error> {
    let name = dns_policy_name(cluster);
    let rules = DNS_POLICY_RULES.to_string();
    match admin.acl_policy_read_by_name(&name).await.map_err(Error::Consul)? {
        Some(existing) if existing.rules == rules => {}
        Some(mut existing) => {
            existing.rules = rules;
            admin.acl_policy_update(&existing).await.map_err(Error::Consul)?;
        }
        None => {
            let description = "concord: DNS answers without a token (catalog read, no KV)".to_string();
            let policy = AclPolicy { name: name.clone(), description, rules, ..Default::default() };
            admin.acl_policy_create(&policy).await.map_err(Error::Consul)?;
        }
    }
    let mut anonymous =
        admin.acl_token_read(ANONYMOUS_TOKEN_ACCESSOR).await.map_err(Error::Consul)?.ok_or_else(|| {
            Error::Consul(consul::Error::NotFound {
                method: http::Method::GET,
                path: format!("/v1/acl/token/{ANONYMOUS_TOKEN_ACCESSOR}"),
                message: "Consul has no anonymous token".to_string(),
            })
        })?;
    if !anonymous.policies.iter().any(|p| p.name == name) {
        anonymous.policies.push(AclLink::by_name(name));
        admin.acl_token_update(&anonymous).await.map_err(Error::Consul)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_policy_grants_what_the_controllers_need_and_nothing_else() {
        let rules = controller_policy_rules();
        for needed in [
            "service_prefix \"\" {\n  policy = \"write\"\n  intentions = \"write\"",
            "node_prefix \"\" {\n  policy = \"write\"",
            "key_prefix \"\" {\n  policy = \"write\"",
            "acl = \"write\"",
            "operator = \"write\"",
            "agent_prefix \"\" {\n  policy = \"read\"",
            "query_prefix \"\" {\n  policy = \"write\"",
        ] {
            assert!(rules.contains(needed), "missing {needed:?} in\n{rules}");
        }
        for never in ["keyring", "event", "session", "mesh", "peering"] {
            let granted = rules.lines().filter(|l| !l.trim_start().starts_with('#')).any(|l| l.contains(never));
            assert!(!granted, "{never} must not be granted:\n{rules}");
        }
        // Every rule says why it is there.
        assert_eq!(rules.matches("\n# ").count() + 1, CONTROLLER_RULES.len());
    }

    #[test]
    fn secret_names_default_from_the_cluster() {
        let mut dc = DiscoveryCluster::new("consul", serde_json::from_value(serde_json::json!({})).expect("spec"));
        assert_eq!(bootstrap_secret_name(&dc), "consul-acl-bootstrap");
        dc.spec.acl = Some(crate::resources::AclSpec { enabled: true, bootstrap_secret_name: Some("keep-me".into()) });
        assert_eq!(bootstrap_secret_name(&dc), "keep-me");
        assert_eq!(controller_secret_name("consul"), "consul-acl-controller");
    }

    #[test]
    fn a_lost_secret_is_a_false_condition_and_a_missing_bootstrap_secret_a_warning() {
        let lost = BootstrapOutcome::BootstrapSecretLost { detail: "x".into() }.condition();
        assert!(!lost.status);
        assert_eq!(lost.reason, "BootstrapSecretLost");
        let ready = BootstrapOutcome::Ready { controller_accessor: "a".into(), bootstrap_secret_present: false };
        assert_eq!(ready.condition().reason, "BootstrapSecretMissing");
        assert!(ready.condition().status);
    }

    #[test]
    fn token_secrets_hold_the_secret_only_in_data() {
        let token = AclToken { accessor_id: "acc".into(), secret_id: Some(Token::new("sekret")), ..Default::default() };
        let s = token_secret("n", "ns", "consul", &token, None);
        let data = s.data.as_ref().expect("data");
        assert_eq!(data.get(TOKEN_KEY).map(|b| b.0.as_slice()), Some(b"sekret".as_slice()));
        assert_eq!(data.get(ACCESSOR_KEY).map(|b| b.0.as_slice()), Some(b"acc".as_slice()));
        assert!(!format!("{:?}", s.metadata).contains("sekret"));
    }
}
