//! ACLAuthMethod controller: a Consul auth method of type `kubernetes` for the cluster
//! concord runs on, so pods log in with their ServiceAccount token (`/v1/acl/login`).
//!
//! - Host and CA: the DiscoveryCluster's `spec.kubernetesAuth` (how that Consul dials
//!   the API server), else `--kubernetes-api-host` / `--kubernetes-api-ca-file`, else the
//!   URL and CA of concord's own kube client. A tenant cannot point the method (and with
//!   it the reviewer token) at a server of its choice: there is no such field on the
//!   ACLAuthMethod.
//! - Reviewer token: Consul needs a JWT to call TokenReview and read ServiceAccounts
//!   (`Config.ServiceAccountJWT` is required; Consul does not use the login JWT for
//!   that). concord asks the API server for a short-lived token of the ServiceAccount
//!   `--auth-reviewer-service-account` (TokenRequest, [`REVIEWER_TTL`]) and writes it
//!   only into Consul, never into a Secret, status, Event or log; it renews it once two
//!   thirds of its life have passed (`status.reviewerTokenExpirationTime`).
//! - Tenancy: an auth method is cluster-wide in Consul and this one accepts any
//!   ServiceAccount of the cluster, so what a login gets is decided by the binding rules:
//!   concord writes those only from ACLBindingRules of the method's own namespace, with
//!   `serviceaccount.namespace=="<namespace>"` ANDed into every selector. Consul's open
//!   source edition has no namespace rules on the method itself.
//! - Ownership: the mark `[concord.io <ns>/<name>]` in the description (`NameTaken`
//!   otherwise); drift is written back every `--acl-drift-interval`; delete removes the
//!   method (and with it, in Consul, its binding rules and login tokens).
//! - Import: a DiscoveryCluster listing `ACLAuthMethod` in
//!   `spec.sync.importConfigEntries` gets an ACLAuthMethod (named like the method) for
//!   every unmarked `kubernetes` method whose binding rules all hold logins to the
//!   DiscoveryCluster's namespace (else the namespace could delete or bind on a method
//!   serving others); the method is adopted (its description marked), and from then on
//!   concord writes its host, CA and reviewer token like any of its methods. A method of
//!   another type, or with a rule held elsewhere, is not imported and is named in a
//!   Warning Event `ImportRefused` on the DiscoveryCluster.
use super::acl_object::{
    self, marked, marked_description, object_status, ownership_mark, report, selector_held_to, write_status,
};
use super::acl_token::renew_at;
use super::config_entry::{IMPORTED_LABEL, is_dns_subdomain};
use super::{drive, object_key, reconcile_with_finalizer, requeue_after_failure, watched_api};
use crate::cluster::{ClusterError, ClusterHandle};
use crate::consul::{self, AclAuthMethod, KubernetesAuthConfig, Token};
use crate::context::Context;
use crate::resources::{
    ACLAuthMethod, ACLAuthMethodSpec, ACLAuthMethodStatus, ConditionUpdate, DiscoveryCluster, TokenLocality,
    parse_duration, types,
};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const CONTROLLER: &str = "aclauthmethod";
/// Finalizer that deletes the Consul auth method before the object goes.
pub const FINALIZER: &str = "concord.io/aclauthmethod";
/// Lifetime concord asks for the reviewer token (the API server may shorten it).
pub const REVIEWER_TTL: Duration = Duration::from_secs(3600);

pub use super::ObjectError as Error;

/// The kind's name in `spec.sync.importConfigEntries`.
pub const IMPORT_KIND: &str = "ACLAuthMethod";

/// The object that would adopt `found` (read by name, with its `Config`), when it is a
/// `kubernetes` method the object declares exactly, host, CA and reviewer token aside
/// (adoption hands those to concord): named like the method, in `namespace`, naming
/// `cluster`. The controller's import and `concord import` both use this one mapping.
pub fn importable(found: &AclAuthMethod, namespace: Option<&str>, cluster: Option<&str>) -> Option<ACLAuthMethod> {
    if found.kind != "kubernetes" || !is_dns_subdomain(&found.name) || marked(&found.description) {
        return None;
    }
    if found.description.trim() != found.description {
        return None;
    }
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let spec = ACLAuthMethodSpec {
        cluster_ref: cluster.map(str::to_string),
        name: None,
        display_name: some(&found.display_name),
        description: some(&found.description),
        max_token_ttl: found.max_token_ttl.clone().filter(|t| !ttl_of(Some(t)).is_zero()),
        token_locality: (found.token_locality == "global").then_some(TokenLocality::Global),
    };
    let mut object = ACLAuthMethod::new(&found.name, spec);
    object.metadata.namespace = namespace.map(str::to_string);
    object.metadata.labels = Some([(IMPORTED_LABEL.to_string(), "true".to_string())].into());
    let endpoint = Endpoint { host: found.config.host.clone(), ca_cert: found.config.ca_cert.clone() };
    let declared = desired_method(&object, &endpoint);
    let adopted = AclAuthMethod { config: declared.config.clone(), ..adopted(found, namespace.unwrap_or_default()) };
    method_matches(&adopted, &declared).then_some(object)
}

/// `found` with the mark of the object [`importable`] makes for it in `namespace`.
pub fn adopted(found: &AclAuthMethod, namespace: &str) -> AclAuthMethod {
    let description = marked_description(Some(&found.description), namespace, &found.name);
    AclAuthMethod { description, ..found.clone() }
}

/// Why `found` is not imported into `namespace`, given its binding rules (pure).
pub fn import_refusal(found: &AclAuthMethod, rules: &[consul::AclBindingRule], namespace: &str) -> Option<String> {
    if found.kind != "kubernetes" {
        return Some(format!("auth method {} is of type {:?}, not kubernetes; not imported", found.name, found.kind));
    }
    if let Some(r) = rules.iter().find(|r| !selector_held_to(&r.selector, namespace)) {
        return Some(format!(
            "auth method {} has binding rule {} not held to namespace {namespace}; not imported",
            found.name, r.id
        ));
    }
    None
}

object_status!(ACLAuthMethod, ACLAuthMethodStatus);

/// Where Consul reaches the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub ca_cert: String,
}

/// The endpoint from (in order) the DiscoveryCluster's `spec.kubernetesAuth`, the flags,
/// and concord's own kube client (pure; `Err` names what is missing).
pub fn endpoint(
    cluster: Option<&crate::resources::KubernetesAuthSpec>,
    flag_host: Option<&str>,
    flag_ca: Option<&str>,
    own_ca: Option<&str>,
) -> Result<Endpoint, String> {
    let pick = |a: Option<&str>, b: Option<&str>| a.or(b).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let host = pick(cluster.and_then(|c| c.host.as_deref()), flag_host).ok_or_else(|| {
        "no API server address for Consul: set the DiscoveryCluster's spec.kubernetesAuth.host or --kubernetes-api-host"
            .to_string()
    })?;
    let ca = pick(cluster.and_then(|c| c.ca_cert.as_deref()), flag_ca.or(own_ca)).ok_or_else(|| {
        "no CA for the API server: set the DiscoveryCluster's spec.kubernetesAuth.caCert or --kubernetes-api-ca-file"
            .to_string()
    })?;
    // Consul wants every PEM line to end with a newline.
    let ca_cert = if ca.ends_with('\n') { ca } else { format!("{ca}\n") };
    Ok(Endpoint { host, ca_cert })
}

/// The Consul auth method an object declares, without the reviewer token (pure).
pub fn desired_method(m: &ACLAuthMethod, endpoint: &Endpoint) -> AclAuthMethod {
    let ns = m.namespace().unwrap_or_default();
    AclAuthMethod {
        name: m.spec.name.clone().unwrap_or_else(|| m.name_any()),
        kind: "kubernetes".into(),
        display_name: m.spec.display_name.clone().unwrap_or_default(),
        description: marked_description(m.spec.description.as_deref(), &ns, &m.name_any()),
        max_token_ttl: m.spec.max_token_ttl.clone(),
        token_locality: match m.spec.token_locality {
            Some(TokenLocality::Global) => "global".into(),
            _ => String::new(),
        },
        config: KubernetesAuthConfig {
            host: endpoint.host.clone(),
            ca_cert: endpoint.ca_cert.clone(),
            service_account_jwt: None,
        },
        ..Default::default()
    }
}

fn ttl_of(v: Option<&str>) -> Duration {
    v.and_then(|s| parse_duration(s).ok()).unwrap_or(Duration::ZERO)
}

/// Whether Consul's method is what is desired (the reviewer token aside, which Consul
/// may not show; an empty one shown counts as drift).
pub fn method_matches(existing: &AclAuthMethod, desired: &AclAuthMethod) -> bool {
    let locality = |l: &str| if l.is_empty() { "local".to_string() } else { l.to_string() };
    existing.name == desired.name
        && existing.kind == desired.kind
        && existing.display_name == desired.display_name
        && existing.description == desired.description
        && ttl_of(existing.max_token_ttl.as_deref()) == ttl_of(desired.max_token_ttl.as_deref())
        && locality(&existing.token_locality) == locality(&desired.token_locality)
        && existing.config.host == desired.config.host
        && existing.config.ca_cert.trim() == desired.config.ca_cert.trim()
        && existing.config.service_account_jwt.as_ref().is_none_or(|t| !t.is_empty())
}

/// When the reviewer token in Consul must be replaced: at two thirds of its life.
fn reviewer_due(status: Option<&ACLAuthMethodStatus>) -> Option<Timestamp> {
    let expires: Timestamp = status?.reviewer_token_expiration_time.as_deref()?.parse().ok()?;
    Some(renew_at(expires, REVIEWER_TTL))
}

/// A fresh reviewer token by TokenRequest, and when it expires.
async fn reviewer_token(ctx: &Context) -> Result<(Token, Timestamp), String> {
    let Some(sa) = ctx.args.auth_reviewer_service_account.as_deref() else {
        return Err("no reviewer ServiceAccount: start concord with --auth-reviewer-service-account NAMESPACE/NAME (the chart sets it)".into());
    };
    let Some((namespace, name)) = sa.split_once('/') else {
        return Err(format!("--auth-reviewer-service-account {sa:?} is not NAMESPACE/NAME"));
    };
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(REVIEWER_TTL.as_secs() as i64), ..Default::default() },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let answer = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("cannot get a token for the reviewer ServiceAccount {sa}: {e}"))?;
    let status = answer.status.ok_or_else(|| format!("TokenRequest for {sa} answered without a token"))?;
    Ok((Token::new(status.token), status.expiration_timestamp.0))
}

/// What one sync came to.
enum Outcome {
    Synced { written: bool, expires: Option<Timestamp> },
    Refused(&'static str, String),
}

async fn apply(m: Arc<ACLAuthMethod>, ctx: &Context) -> Result<Action, Error> {
    let key = format!("{CONTROLLER}:{}", object_key(m.as_ref()));
    let ns = m.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, m.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            report(ctx, m.as_ref(), "ClusterUnavailable", e.to_string()).await?;
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
    };
    let dc = Api::<DiscoveryCluster>::namespaced(ctx.client.clone(), &ns).get_opt(&cluster.name).await;
    let kubernetes_auth = dc.ok().flatten().and_then(|d| d.spec.kubernetes_auth);
    let flag_ca = match &ctx.args.kubernetes_api_ca_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(pem) => Some(pem),
            Err(e) => {
                report(ctx, m.as_ref(), "NoKubernetesEndpoint", format!("cannot read {}: {e}", path.display())).await?;
                return Ok(Action::requeue(ctx.backoff(&key)));
            }
        },
        None => None,
    };
    let endpoint = match endpoint(
        kubernetes_auth.as_ref(),
        ctx.args.kubernetes_api_host.as_deref(),
        flag_ca.as_deref(),
        ctx.args.kubernetes_api_ca_pem.as_deref(),
    ) {
        Ok(e) => e,
        Err(msg) => {
            report(ctx, m.as_ref(), "NoKubernetesEndpoint", msg).await?;
            return Ok(Action::requeue(ctx.args.acl_drift_interval));
        }
    };
    let desired = desired_method(&m, &endpoint);
    let now = Timestamp::now();
    let due = reviewer_due(m.status.as_ref());
    let result: Result<Outcome, consul::Error> = async {
        let existing = cluster.consul.acl_auth_method_read(&desired.name).await?;
        if let Some(e) = &existing
            && !e.description.ends_with(&ownership_mark(&ns, &m.name_any()))
        {
            return Ok(Outcome::Refused(
                "NameTaken",
                format!("auth method {} exists in Consul and was not made by this object; not overwritten", e.name),
            ));
        }
        let current = existing.as_ref().is_some_and(|e| method_matches(e, &desired)) && due.is_some_and(|d| now < d);
        if current {
            return Ok(Outcome::Synced { written: false, expires: None });
        }
        let (jwt, expires) = match reviewer_token(ctx).await {
            Ok(t) => t,
            Err(msg) => return Ok(Outcome::Refused("ReviewerUnavailable", msg)),
        };
        let mut body = desired.clone();
        body.config.service_account_jwt = Some(jwt);
        match existing {
            None => cluster.consul.acl_auth_method_create(&body).await?,
            Some(_) => cluster.consul.acl_auth_method_update(&body).await?,
        };
        Ok(Outcome::Synced { written: true, expires: Some(expires) })
    }
    .await;
    match result {
        Ok(Outcome::Synced { written, expires }) => {
            let before = acl_object::was_synced(m.as_ref());
            let mut status = m.status.clone().unwrap_or_default();
            status.method_name = Some(desired.name.clone());
            status.host = Some(endpoint.host.clone());
            if let Some(at) = expires {
                status.reviewer_token_expiration_time = Some(at.to_string());
            }
            let msg = format!("auth method {} (kubernetes, API server {})", desired.name, endpoint.host);
            let next_renewal = status
                .reviewer_token_expiration_time
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|exp| renew_at(exp, REVIEWER_TTL));
            write_status(ctx, m.as_ref(), status, ConditionUpdate::new(types::SYNCED, true, "Synced", msg.clone()))
                .await?;
            if !before {
                ctx.event(&m.object_ref(&()), false, "AuthMethodSynced", "Sync", msg).await;
            } else if written && due.is_some_and(|d| now >= d) {
                ctx.event(&m.object_ref(&()), false, "ReviewerTokenRenewed", "Sync", msg).await;
            } else if written {
                ctx.event(&m.object_ref(&()), false, "DriftReverted", "Sync", msg).await;
            }
            ctx.reset_backoff(&key);
            let until_renewal = next_renewal
                .map(|at| at.duration_since(Timestamp::now()).unsigned_abs())
                .unwrap_or(ctx.args.acl_drift_interval);
            Ok(Action::requeue(until_renewal.min(ctx.args.acl_drift_interval).max(Duration::from_secs(1))))
        }
        Ok(Outcome::Refused(reason, msg)) => {
            report(ctx, m.as_ref(), reason, msg).await?;
            Ok(Action::requeue(ctx.backoff(&key).max(Duration::from_secs(5)).min(ctx.args.acl_drift_interval)))
        }
        Err(e) if e.is_transient() => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, m.as_ref(), "ConsulUnreachable", e.to_string()).await?;
            Ok(Action::requeue(ctx.backoff(&key)))
        }
        Err(e) => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, m.as_ref(), "RejectedByConsul", format!("Consul refused auth method {}: {e}", desired.name))
                .await?;
            Ok(Action::await_change())
        }
    }
}

async fn cleanup(m: Arc<ACLAuthMethod>, ctx: &Context) -> Result<Action, Error> {
    let ns = m.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, m.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e @ (ClusterError::NotFound { .. } | ClusterError::NoCluster { .. })) => {
            ctx.event(&m.object_ref(&()), true, "ClusterGone", "Delete", format!("auth method not deleted: {e}")).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let name = m.spec.name.clone().unwrap_or_else(|| m.name_any());
    if let Some(existing) = cluster.consul.acl_auth_method_read(&name).await.map_err(Error::Consul)?
        && existing.description.ends_with(&ownership_mark(&ns, &m.name_any()))
    {
        match cluster.consul.acl_auth_method_delete(&name).await {
            Ok(()) => tracing::info!(method = %name, "deleted ACL auth method"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::Consul(e)),
        }
    }
    Ok(Action::await_change())
}

async fn reconcile(m: Arc<ACLAuthMethod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    reconcile_with_finalizer(&ctx.client, FINALIZER, m, |m| apply(m, &ctx), |m| cleanup(m, &ctx))
        .await
        .map_err(Error::Finalizer)
}

fn error_policy(m: Arc<ACLAuthMethod>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(method = %m.name_any(), error = %error, "reconcile failed");
    requeue_after_failure(&ctx, CONTROLLER, m.as_ref(), error.category())
}

impl acl_object::Importable for ACLAuthMethod {
    const IMPORT_KIND: &'static str = IMPORT_KIND;
    type Found = AclAuthMethod;

    /// The unmarked methods no object of the namespace declares (see the module's doc).
    async fn candidates(
        ctx: &Context,
        cluster: &ClusterHandle,
        dc: &DiscoveryCluster,
    ) -> Result<acl_object::Candidates<ACLAuthMethod>, String> {
        let ns = dc.namespace().unwrap_or_default();
        let stubs = cluster.consul.acl_auth_methods().await.map_err(|e| e.to_string())?;
        let api: Api<ACLAuthMethod> = Api::namespaced(ctx.client.clone(), &ns);
        let objects = api.list(&Default::default()).await.map_err(|e| e.to_string())?;
        let declared: Vec<String> =
            objects.items.iter().map(|m| m.spec.name.clone().unwrap_or_else(|| m.name_any())).collect();
        let mut candidates = Vec::new();
        for stub in stubs {
            if marked(&stub.description) || declared.contains(&stub.name) {
                continue;
            }
            let Some(found) = cluster.consul.acl_auth_method_read(&stub.name).await.map_err(|e| e.to_string())? else {
                continue;
            };
            let rules = cluster.consul.acl_binding_rules(&found.name).await.map_err(|e| e.to_string())?;
            let object = import_refusal(&found, &rules, &ns).map(Err).unwrap_or_else(|| {
                importable(&found, Some(&ns), Some(&dc.name_any())).ok_or_else(|| {
                    format!("auth method {} uses what ACLAuthMethod cannot declare; not imported", found.name)
                })
            });
            candidates.push((found, object));
        }
        Ok(candidates)
    }

    fn adopted(found: &AclAuthMethod, object: &ACLAuthMethod) -> AclAuthMethod {
        adopted(found, &object.namespace().unwrap_or_default())
    }

    async fn write(cluster: &ClusterHandle, found: &AclAuthMethod) -> Result<(), consul::Error> {
        cluster.consul.acl_auth_method_update(found).await.map(|_| ())
    }

    fn describe(found: &AclAuthMethod) -> String {
        format!("ACL auth method {}", found.name)
    }

    fn consul_name(found: &AclAuthMethod) -> String {
        found.name.clone()
    }
}

/// Runs the controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<ACLAuthMethod>(&ctx), watcher::Config::default());
    drive(ctx, CONTROLLER, controller, reconcile, error_policy, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ACLAuthMethodSpec, KubernetesAuthSpec};

    #[test]
    fn the_cluster_override_beats_the_flags_which_beat_concords_own_client() {
        let own = endpoint(None, Some("https://10.96.0.1"), None, Some("OWN-CA")).expect("own");
        assert_eq!(own, Endpoint { host: "https://10.96.0.1".into(), ca_cert: "OWN-CA\n".into() });
        let flag = endpoint(None, Some("https://10.96.0.1"), Some("FLAG-CA\n"), Some("OWN-CA")).expect("flag");
        assert_eq!(flag.ca_cert, "FLAG-CA\n");
        let over = KubernetesAuthSpec { host: Some("https://api.example:6443".into()), ca_cert: None };
        let cluster = endpoint(Some(&over), Some("https://10.96.0.1"), None, Some("OWN-CA")).expect("cluster");
        assert_eq!(cluster.host, "https://api.example:6443");
        assert_eq!(cluster.ca_cert, "OWN-CA\n");
        assert!(endpoint(None, None, None, Some("CA")).is_err());
        assert!(endpoint(None, Some("https://h"), None, None).is_err());
    }

    #[test]
    fn desired_method_is_marked_and_matching_ignores_ttl_spelling_and_the_reviewer() {
        let mut m = ACLAuthMethod::new(
            "pods",
            ACLAuthMethodSpec {
                cluster_ref: None,
                name: None,
                display_name: None,
                description: None,
                max_token_ttl: Some("1h".into()),
                token_locality: None,
            },
        );
        m.metadata.namespace = Some("team".into());
        let ep = Endpoint { host: "https://h".into(), ca_cert: "CA\n".into() };
        let desired = desired_method(&m, &ep);
        assert_eq!(desired.name, "pods");
        assert_eq!(desired.description, "[concord.io team/pods]");
        let mut existing = desired.clone();
        existing.max_token_ttl = Some("1h0m0s".into());
        existing.token_locality = "local".into();
        assert!(method_matches(&existing, &desired));
        existing.config.service_account_jwt = Some(Token::new("jwt"));
        assert!(method_matches(&existing, &desired));
        existing.config.service_account_jwt = Some(Token::new(""));
        assert!(!method_matches(&existing, &desired), "a reviewer token removed is drift");
        let mut moved = desired.clone();
        moved.config.host = "https://evil".into();
        assert!(!method_matches(&moved, &desired));
        let mut longer = desired.clone();
        longer.max_token_ttl = Some("2h".into());
        assert!(!method_matches(&longer, &desired));
    }

    #[test]
    fn import_takes_kubernetes_methods_whose_rules_hold_to_the_namespace() {
        let found = AclAuthMethod {
            name: "pods".into(),
            kind: "kubernetes".into(),
            description: "by hand".into(),
            max_token_ttl: Some("1h0m0s".into()),
            config: KubernetesAuthConfig {
                host: "https://h".into(),
                ca_cert: "CA\n".into(),
                service_account_jwt: None,
            },
            ..Default::default()
        };
        let object = importable(&found, Some("team"), Some("consul")).expect("importable");
        assert_eq!(object.spec.max_token_ttl.as_deref(), Some("1h0m0s"));
        assert_eq!(object.spec.description.as_deref(), Some("by hand"));
        assert_eq!(adopted(&found, "team").description, "by hand [concord.io team/pods]");
        let jwt = AclAuthMethod { kind: "jwt".into(), ..found.clone() };
        assert!(importable(&jwt, Some("team"), None).is_none());
        assert!(import_refusal(&jwt, &[], "team").expect("refused").contains("\"jwt\""));
        let rule = |selector: &str| consul::AclBindingRule { selector: selector.into(), ..Default::default() };
        assert!(import_refusal(&found, &[rule("serviceaccount.namespace==\"team\"")], "team").is_none());
        assert!(import_refusal(&found, &[rule("serviceaccount.namespace==\"other\"")], "team").is_some());
        assert!(import_refusal(&found, &[rule("")], "team").is_some(), "a rule for every namespace");
    }
}
