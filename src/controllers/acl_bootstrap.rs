//! ACL bootstrap of a DiscoveryCluster with `spec.acl.enabled`: bootstrap Consul's ACL
//! system once, keep the bootstrap (management) token in a Secret, and make the
//! controller's own tokens, one per purpose, each with a policy that is exactly what its
//! callers need:
//! - the controller (sync) token, Secret `<cluster>-acl-controller`, policy
//!   `concord-controller-<cluster>` ([`CONTROLLER_RULES`]): catalog sync, DiscoveryCluster
//!   operation, config-entry and prepared-query imports. No ACL, KV, session, event or
//!   keyring rights. `ClusterCache::resolve`/`client_for` hand it out.
//! - the ACL-admin token, Secret `<cluster>-acl-admin`, policy
//!   `concord-acl-admin-<cluster>` ([`ACL_ADMIN_RULES`]: `acl = "write"` only): tenant-token
//!   derivation, ACLPolicy, ACLToken, snapshots. `ClusterCache::resolve_acl_admin` hands
//!   it out, to those callers only (tests/layering.rs). In Consul `acl = "write"` is
//!   management-equivalent (it can mint any token); see docs/security.md, Known limits.
//!
//! Decisions:
//! - The bootstrap Secret (`spec.acl.bootstrapSecretName`, default
//!   `<cluster>-acl-bootstrap`) has no owner reference: it is the only copy of the
//!   management token, and Consul's ACL state lives in the Raft data, which outlives the
//!   DiscoveryCluster object (volume claims are kept by default). Deleting the object
//!   must not lose the key to the data that survives it.
//! - The controller's token Secrets are owned by the cluster: they can always be re-made
//!   from the bootstrap token (or from each other: the ACL-admin token re-makes the sync
//!   token).
//! - Upgrade from one controller token (whose policy held `acl = "write"`, key, intention
//!   and query write): the ACL-admin token is made first (with the bootstrap token, or
//!   with the old controller token itself when the bootstrap Secret is gone), then the
//!   controller policy's rules are rewritten in place. The sync token in its Secret stays
//!   the same token, so the catalog sync never stops; it just loses the rights it no
//!   longer needs.
//! - Bootstrap is called at most once per reconcile and never after a Secret was lost:
//!   Consul answering "ACL bootstrap no longer allowed" while concord holds no usable
//!   token is reported (condition `ACLBootstrapped=False, reason=BootstrapSecretLost` and
//!   a Warning Event), and a person restores the Secret or resets ACLs on purpose
//!   (`consul acl bootstrap` with the reset index).
//!
//! The DiscoveryCluster controller calls [`ensure_bootstrapped`] and writes
//! [`BootstrapOutcome::condition`] into its status.
use crate::cluster::token_secret::read_secret_token;
pub use crate::cluster::token_secret::{
    ACCESSOR_KEY, TOKEN_KEY, acl_admin_secret_name, bootstrap_secret_name, controller_secret_name,
};
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

/// The controller (sync) token's policy: what each rule is for, and the rule. The policy
/// is exactly these. Every Consul call made with this token (through
/// `ClusterCache::resolve`/`client_for`) needs one of them:
/// - catalog sync to Consul (`sync::to_consul`): `/v1/txn` (node, service and check
///   register/delete), `/v1/catalog/nodes`, `/v1/catalog/node-services/<node>`,
///   `/v1/health/node/<node>`;
/// - catalog mirror to Kubernetes (`sync::to_kubernetes`): `/v1/catalog/services`,
///   `/v1/health/state/any`, `/v1/health/service/<name>`;
/// - DiscoveryCluster: `/v1/status/leader`, `/v1/status/peers` (no rule needed),
///   `/v1/operator/raft/configuration`, `/v1/operator/autopilot/state`,
///   `DELETE /v1/operator/raft/peer`, `/v1/agent/self`;
/// - the ACL bootstrap's check that the stored token works: `/v1/acl/token/self` (any
///   valid token may read itself);
/// - imports (`importConfigEntries`): `GET /v1/config/<kind>` for the service-scoped
///   kinds, service-intentions, proxy-defaults, mesh and exported-services, and
///   `GET /v1/query`.
///
/// Consul has no rule that tells catalog registration from agent registration, and a
/// service-scoped config entry (service-defaults, -resolver, -router, -splitter) is
/// written with `service:write`: the service rule below allows those too
/// (docs/security.md, Known limits).
pub const CONTROLLER_RULES: &[(&str, &str)] = &[
    (
        "catalog sync registers Kubernetes endpoints as services and reads them back; the mirror to Kubernetes \
         reads services; imports of service-scoped config entries read them; the service-intentions import reads \
         intentions (read only: ServiceIntention writes with the namespace's derived token)",
        "service_prefix \"\" {\n  policy = \"write\"\n  intentions = \"read\"\n}",
    ),
    (
        "catalog sync registers, reads and deletes its synthetic nodes; health reads need node read",
        "node_prefix \"\" {\n  policy = \"write\"\n}",
    ),
    (
        "DiscoveryCluster reads the Raft configuration and autopilot health, and removes Raft peers on scale-down",
        "operator = \"write\"",
    ),
    (
        "without it, operator write implies mesh write (proxy-defaults, mesh, exported-services); the \
         exported-services import reads it",
        "mesh = \"read\"",
    ),
    ("without it, operator write implies peering write; concord never peers", "peering = \"deny\""),
    ("DiscoveryCluster reads the servers' version (/v1/agent/self)", "agent_prefix \"\" {\n  policy = \"read\"\n}"),
    ("the PreparedQuery import lists prepared queries (read only)", "query_prefix \"\" {\n  policy = \"read\"\n}"),
];

/// The ACL-admin token's policy. Every Consul call made with this token (through
/// `ClusterCache::resolve_acl_admin`/`acl_admin_for`) needs it:
/// - tenant-token derivation (`cluster::tenant_token::ensure`): `/v1/acl/policy/name/<n>`,
///   `PUT /v1/acl/policy[/<id>]`, `/v1/acl/token/<accessor>`, `PUT /v1/acl/token[/<id>]`;
/// - ACLPolicy: `/v1/acl/policies`, policy create, update, delete;
/// - ACLToken: policy read by name (the grants check), token read, create, update,
///   delete, and `/v1/status/leader` (no rule needed);
/// - ConsulSnapshot and scheduled snapshots: `GET /v1/snapshot` and `PUT /v1/snapshot`.
///   Consul's documentation says "management"; its code allows snapshots to
///   `acl = "write"` (`policyAuthorizer.Snapshot`), and tests/least_privilege.rs checks it
///   on a real Consul. A snapshot holds every ACL token, so nothing less could do.
/// - the ACL bootstrap repairing the tokens: policy read/create/update, token list,
///   create, delete, and the anonymous token's update (the DNS policy).
pub const ACL_ADMIN_RULES: &[(&str, &str)] = &[(
    "tenant-token derivation, ACLPolicy and ACLToken manage policies and tokens; snapshot save and restore \
     require acl write. Management-equivalent in Consul: it can mint a token with any policy",
    "acl = \"write\"",
)];

fn policy_text(rules: &[(&str, &str)]) -> String {
    rules.iter().map(|(why, rule)| format!("# {why}\n{rule}\n")).collect::<Vec<_>>().join("\n")
}

/// The controller (sync) policy's rules (HCL), each preceded by a comment saying why.
pub fn controller_policy_rules() -> String {
    policy_text(CONTROLLER_RULES)
}

/// The ACL-admin policy's rules (HCL), each preceded by a comment saying why.
pub fn acl_admin_policy_rules() -> String {
    policy_text(ACL_ADMIN_RULES)
}

/// Name of the controller's (sync) policy in Consul.
pub fn controller_policy_name(cluster: &str) -> String {
    format!("concord-controller-{cluster}")
}

/// Name of the ACL-admin policy in Consul.
pub fn acl_admin_policy_name(cluster: &str) -> String {
    format!("concord-acl-admin-{cluster}")
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

/// The controller's two tokens (see the module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Sync,
    AclAdmin,
}

impl Purpose {
    fn secret_name(self, cluster: &str) -> String {
        match self {
            Purpose::Sync => controller_secret_name(cluster),
            Purpose::AclAdmin => acl_admin_secret_name(cluster),
        }
    }

    fn policy_name(self, cluster: &str) -> String {
        match self {
            Purpose::Sync => controller_policy_name(cluster),
            Purpose::AclAdmin => acl_admin_policy_name(cluster),
        }
    }

    fn rules(self) -> String {
        match self {
            Purpose::Sync => controller_policy_rules(),
            Purpose::AclAdmin => acl_admin_policy_rules(),
        }
    }

    /// The token's description: how earlier tokens of this purpose are found to revoke.
    fn token_description(self, namespace: &str, cluster: &str) -> String {
        match self {
            Purpose::Sync => format!("concord controller for DiscoveryCluster {namespace}/{cluster}"),
            Purpose::AclAdmin => format!("concord ACL admin for DiscoveryCluster {namespace}/{cluster}"),
        }
    }

    fn policy_description(self, namespace: &str, cluster: &str) -> String {
        match self {
            Purpose::Sync => format!("concord controller: sync and operation (DiscoveryCluster {namespace}/{cluster})"),
            Purpose::AclAdmin => {
                format!(
                    "concord ACL admin: tenant tokens, ACLPolicy, ACLToken, snapshots (DiscoveryCluster {namespace}/{cluster})"
                )
            }
        }
    }
}

/// Where the ACL system stands after [`ensure_bootstrapped`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// Bootstrapped in this call; the three Secrets written.
    Bootstrapped { controller_accessor: String, admin_accessor: String },
    /// Already bootstrapped by concord; both controller tokens work and carry their
    /// policies.
    Ready { controller_accessor: String, admin_accessor: String, bootstrap_secret_present: bool },
    /// Consul is bootstrapped, but concord holds no usable management or controller
    /// token. Reported, never re-bootstrapped.
    BootstrapSecretLost { detail: String },
}

impl BootstrapOutcome {
    /// The `ACLBootstrapped` condition for the DiscoveryCluster's status.
    pub fn condition(&self) -> ConditionUpdate {
        match self {
            BootstrapOutcome::Bootstrapped { controller_accessor, admin_accessor } => ConditionUpdate::new(
                ACL_BOOTSTRAPPED,
                true,
                "Bootstrapped",
                format!("ACLs bootstrapped; controller token {controller_accessor}, ACL-admin token {admin_accessor}"),
            ),
            BootstrapOutcome::Ready { controller_accessor, admin_accessor, bootstrap_secret_present: true } => {
                ConditionUpdate::new(
                    ACL_BOOTSTRAPPED,
                    true,
                    "Bootstrapped",
                    format!("controller token {controller_accessor}, ACL-admin token {admin_accessor}"),
                )
            }
            BootstrapOutcome::Ready { controller_accessor, admin_accessor, bootstrap_secret_present: false } => {
                ConditionUpdate::new(
                    ACL_BOOTSTRAPPED,
                    true,
                    "BootstrapSecretMissing",
                    format!(
                        "controller token {controller_accessor} and ACL-admin token {admin_accessor} work, but the \
                         bootstrap Secret is gone: restore it from a backup"
                    ),
                )
            }
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

/// A token concord stored that Consul still accepts: a client with it, and what Consul
/// says the token is.
struct Held {
    client: consul::Client,
    me: AclToken,
}

impl Held {
    fn carries(&self, policy: &str) -> bool {
        self.me.policies.iter().any(|p| p.name == policy)
    }
}

/// The token stored in Secret `secret`, if any and if Consul accepts it.
async fn held(ctx: &Context, consul: &consul::Client, namespace: &str, secret: &str) -> Result<Option<Held>, Error> {
    let Some(token) = read_secret_token(&ctx.client, namespace, secret, TOKEN_KEY).await.map_err(Error::Kube)? else {
        return Ok(None);
    };
    let client = consul.with_token(token).map_err(Error::Consul)?;
    match client.acl_token_read_self().await {
        Ok(me) => Ok(Some(Held { client, me })),
        Err(e) if is_rejected_token(&e) => {
            tracing::info!(secret = %secret, "stored token is not accepted; making a new one");
            Ok(None)
        }
        Err(e) => Err(Error::Consul(e)),
    }
}

/// Whether both controller policies hold exactly their rules (read with `admin`).
async fn policies_current(admin: &consul::Client, cluster: &str) -> Result<bool, Error> {
    for purpose in [Purpose::Sync, Purpose::AclAdmin] {
        let found = admin.acl_policy_read_by_name(&purpose.policy_name(cluster)).await.map_err(Error::Consul)?;
        if found.is_none_or(|p| p.rules != purpose.rules()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Bootstraps the cluster's ACLs once and makes sure both controller tokens exist, carry
/// their policies, and are stored; upgrades a cluster from the single controller token
/// (see the module). `consul` talks to the cluster; its own token (if any) is not used
/// for ACL calls. Emits Events for a bootstrap and for a lost bootstrap Secret (once).
pub async fn ensure_bootstrapped(
    ctx: &Context,
    dc: &DiscoveryCluster,
    consul: &consul::Client,
) -> Result<BootstrapOutcome, Error> {
    let namespace = dc.namespace().unwrap_or_default();
    let cluster = dc.name_any();
    let bootstrap_secret = bootstrap_secret_name(dc);
    let reference = dc.object_ref(&());

    let management =
        read_secret_token(&ctx.client, &namespace, &bootstrap_secret, TOKEN_KEY).await.map_err(Error::Kube)?;
    let sync = held(ctx, consul, &namespace, &Purpose::Sync.secret_name(&cluster)).await?;
    let admin = held(ctx, consul, &namespace, &Purpose::AclAdmin.secret_name(&cluster)).await?;
    // 1. Both tokens work, carry their policies, and the policies are current.
    if let (Some(s), Some(a)) = (&sync, &admin)
        && s.carries(&controller_policy_name(&cluster))
        && a.carries(&acl_admin_policy_name(&cluster))
        && policies_current(&a.client, &cluster).await?
    {
        return Ok(BootstrapOutcome::Ready {
            controller_accessor: s.me.accessor_id.clone(),
            admin_accessor: a.me.accessor_id.clone(),
            bootstrap_secret_present: management.is_some(),
        });
    }
    // 2. Something to make, repair or upgrade: with the first token that may manage ACLs.
    //    The ACL-admin token; else the management token; else the controller token, whose
    //    policy held `acl = "write"` before the split (an upgrade after the bootstrap
    //    Secret was removed).
    let mut candidates = Vec::new();
    if let Some(a) = &admin {
        candidates.push(a.client.clone());
    }
    if let Some(token) = &management {
        candidates.push(consul.with_token(token.clone()).map_err(Error::Consul)?);
    }
    if let Some(s) = &sync {
        candidates.push(s.client.clone());
    }
    let mut refused = None;
    for candidate in candidates {
        match candidate.acl_policy_read_by_name(&acl_admin_policy_name(&cluster)).await {
            Ok(_) => {
                let (controller_accessor, admin_accessor) = repair(ctx, dc, &candidate, sync, admin).await?;
                return Ok(BootstrapOutcome::Ready {
                    controller_accessor,
                    admin_accessor,
                    bootstrap_secret_present: management.is_some(),
                });
            }
            Err(e) if is_rejected_token(&e) => refused = Some(e),
            Err(e) => return Err(Error::Consul(e)),
        }
    }
    if let Some(e) = refused {
        let detail = if management.is_some() {
            format!("the token in Secret {bootstrap_secret} is refused by Consul ({e}); concord will not re-bootstrap")
        } else {
            format!(
                "no token concord holds may manage ACLs ({e}) and Secret {bootstrap_secret} holds no token; restore \
                 the Secret, or reset ACL bootstrap on purpose"
            )
        };
        return report_lost(ctx, dc, &reference, detail).await;
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
            let management =
                consul.with_token(token.secret_id.clone().unwrap_or_else(|| Token::new(""))).map_err(Error::Consul)?;
            let (controller_accessor, admin_accessor) = repair(ctx, dc, &management, None, None).await?;
            Ok(BootstrapOutcome::Bootstrapped { controller_accessor, admin_accessor })
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

/// Makes both policies say what they should and both tokens exist and carry them, with
/// `maintainer` (a token that may manage ACLs). The ACL-admin token comes first: on an
/// upgrade the maintainer may be the old controller token, which loses `acl = "write"`
/// when its policy is rewritten; everything after that is done with the ACL-admin token.
/// Returns the accessors of the controller (sync) and ACL-admin tokens.
async fn repair(
    ctx: &Context,
    dc: &DiscoveryCluster,
    maintainer: &consul::Client,
    sync: Option<Held>,
    admin: Option<Held>,
) -> Result<(String, String), Error> {
    let cluster = dc.name_any();
    ensure_policy(dc, maintainer, Purpose::AclAdmin).await?;
    let admin = match admin {
        Some(a) if a.carries(&acl_admin_policy_name(&cluster)) => a,
        _ => make_token(ctx, dc, maintainer, Purpose::AclAdmin).await?,
    };
    // Rewritten in place: the sync token in its Secret keeps working, with the new rules.
    ensure_policy(dc, &admin.client, Purpose::Sync).await?;
    let sync = match sync {
        Some(s) if s.carries(&controller_policy_name(&cluster)) => s,
        _ => make_token(ctx, dc, &admin.client, Purpose::Sync).await?,
    };
    if dc.spec.dns != Some(false) {
        ensure_dns_policy(&admin.client, &cluster).await?;
    }
    Ok((sync.me.accessor_id, admin.me.accessor_id))
}

/// Creates the purpose's policy or rewrites its rules in place (same policy ID, so every
/// token linked to it changes with it).
async fn ensure_policy(dc: &DiscoveryCluster, admin: &consul::Client, purpose: Purpose) -> Result<(), Error> {
    let namespace = dc.namespace().unwrap_or_default();
    let cluster = dc.name_any();
    let name = purpose.policy_name(&cluster);
    let rules = purpose.rules();
    match admin.acl_policy_read_by_name(&name).await.map_err(Error::Consul)? {
        Some(existing) if existing.rules == rules => {}
        Some(mut existing) => {
            existing.rules = rules;
            admin.acl_policy_update(&existing).await.map_err(Error::Consul)?;
            tracing::info!(cluster = %cluster, policy = %name, "controller policy rules rewritten");
        }
        None => {
            let description = purpose.policy_description(&namespace, &cluster);
            let policy = AclPolicy { name, description, rules, ..Default::default() };
            admin.acl_policy_create(&policy).await.map_err(Error::Consul)?;
        }
    }
    Ok(())
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

/// Makes a new token of `purpose` with `admin`, revoking earlier ones of this cluster
/// (they were only ever stored in the Secret being replaced), and stores it in its Secret
/// (owned by the cluster).
async fn make_token(
    ctx: &Context,
    dc: &DiscoveryCluster,
    admin: &consul::Client,
    purpose: Purpose,
) -> Result<Held, Error> {
    let namespace = dc.namespace().unwrap_or_default();
    let cluster = dc.name_any();
    let description = purpose.token_description(&namespace, &cluster);
    for old in admin.acl_tokens().await.map_err(Error::Consul)? {
        if old.description == description {
            match admin.acl_token_delete(&old.accessor_id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::Consul(e)),
            }
        }
    }
    let request =
        AclToken { description, policies: vec![AclLink::by_name(purpose.policy_name(&cluster))], ..Default::default() };
    let token = admin.acl_token_create(&request).await.map_err(Error::Consul)?;
    let secret_name = purpose.secret_name(&cluster);
    let secret = token_secret(&secret_name, &namespace, &cluster, &token, dc.controller_owner_ref(&()));
    apply_secret(&ctx.client, &secret).await.map_err(Error::Kube)?;
    tracing::info!(cluster = %cluster, secret = %secret_name, accessor = %token.accessor_id, "controller ACL token stored");
    let client = admin.with_token(token.secret_id.clone().unwrap_or_else(|| Token::new(""))).map_err(Error::Consul)?;
    Ok(Held { client, me: token })
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

    /// The rule lines of a policy (comments left out).
    fn granted(rules: &str) -> String {
        rules.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn the_controller_policy_grants_sync_and_operation_and_no_acl_kv_or_writes_of_tenant_objects() {
        let rules = granted(&controller_policy_rules());
        for needed in [
            "service_prefix \"\" {\n  policy = \"write\"\n  intentions = \"read\"",
            "node_prefix \"\" {\n  policy = \"write\"",
            "operator = \"write\"",
            "mesh = \"read\"",
            "peering = \"deny\"",
            "agent_prefix \"\" {\n  policy = \"read\"",
            "query_prefix \"\" {\n  policy = \"read\"",
        ] {
            assert!(rules.contains(needed), "missing {needed:?} in\n{rules}");
        }
        for never in ["acl", "key", "keyring", "event", "session", "intentions = \"write\"", "mesh = \"write\""] {
            assert!(!rules.contains(never), "{never} must not be granted:\n{rules}");
        }
        // Every rule says why it is there.
        assert_eq!(controller_policy_rules().matches("\n# ").count() + 1, CONTROLLER_RULES.len());
    }

    #[test]
    fn the_acl_admin_policy_is_acl_write_and_nothing_else() {
        assert_eq!(granted(&acl_admin_policy_rules()), "acl = \"write\"");
        assert!(acl_admin_policy_rules().starts_with("# "), "it says why");
        assert_ne!(acl_admin_policy_name("consul"), controller_policy_name("consul"));
    }

    #[test]
    fn secret_names_default_from_the_cluster() {
        let mut dc = DiscoveryCluster::new("consul", serde_json::from_value(serde_json::json!({})).expect("spec"));
        assert_eq!(bootstrap_secret_name(&dc), "consul-acl-bootstrap");
        dc.spec.acl = Some(crate::resources::AclSpec { enabled: true, bootstrap_secret_name: Some("keep-me".into()) });
        assert_eq!(bootstrap_secret_name(&dc), "keep-me");
        assert_eq!(controller_secret_name("consul"), "consul-acl-controller");
        assert_eq!(acl_admin_secret_name("consul"), "consul-acl-admin");
    }

    #[test]
    fn a_lost_secret_is_a_false_condition_and_a_missing_bootstrap_secret_a_warning() {
        let lost = BootstrapOutcome::BootstrapSecretLost { detail: "x".into() }.condition();
        assert!(!lost.status);
        assert_eq!(lost.reason, "BootstrapSecretLost");
        let ready = BootstrapOutcome::Ready {
            controller_accessor: "a".into(),
            admin_accessor: "b".into(),
            bootstrap_secret_present: false,
        };
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
