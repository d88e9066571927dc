//! ACLToken controller: makes a Consul ACL token with the policies (by name) and service
//! identities an object declares, and writes its SecretID only into the Secret
//! `spec.secretName` (keys `token` and `accessorId`, owner-referenced to the ACLToken,
//! so Kubernetes deletes it with the object). Status holds the accessor, never the secret.
//!
//! The Secret is the journal: concord picks the token's AccessorID and SecretID itself,
//! writes them to the Secret first and only then creates the token in Consul with those
//! IDs. A crash in between is repaired by the next reconcile (the token the Secret names
//! is created), and no token exists in Consul that no Secret knows. Rotation (a new
//! `spec.rotation` value) writes a new pair, records the old accessor in the annotation
//! `concord.io/revoke-accessors`, creates the new token, revokes the old, then clears the
//! annotation. Delete revokes (finalizer; a token already gone counts as revoked).
use super::acl_object::{self, object_status};
use super::{apply_status, drive, object_key, reconcile_with_finalizer, requeue_after_failure, watched_api};
use crate::cluster::tenancy::rules_grant_acl_write;
use crate::cluster::{ClusterError, ClusterHandle};
use crate::consul::{self, AclLink, AclServiceIdentity, AclToken, Token};
use crate::context::FIELD_MANAGER;
use crate::context::tenant::is_forbidden;
use crate::context::{Actor, Context};
use crate::resources::{ACLPolicy, ACLToken, ACLTokenStatus, ConditionUpdate, find_condition, set_condition, types};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const CONTROLLER: &str = "acltoken";
/// Finalizer that revokes the token before the object goes.
pub const FINALIZER: &str = "concord.io/acltoken";
/// Secret key of the SecretID.
pub const TOKEN_KEY: &str = "token";
/// Secret key of the AccessorID.
pub const ACCESSOR_KEY: &str = "accessorId";
/// Secret annotation: the `spec.rotation` the stored token was made for.
pub const ROTATION_ANNOTATION: &str = "concord.io/rotation";
/// Secret annotation: accessors of replaced tokens still to revoke (comma-separated).
pub const REVOKE_ANNOTATION: &str = "concord.io/revoke-accessors";
/// Secret annotation: the `spec.expirationTTL` the stored token was made with.
pub const TTL_ANNOTATION: &str = "concord.io/expiration-ttl";
const RESYNC: Duration = Duration::from_secs(300);

object_status!(ACLToken, ACLTokenStatus);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write status: {0}")]
    Status(#[source] kube::Error),
    #[error("cannot read or write Secret {secret}: {source}")]
    Secret {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("Consul call failed: {0}")]
    Consul(#[source] consul::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    fn category(&self) -> &'static str {
        match self {
            Error::Status(_) | Error::Secret { .. } => "kube",
            Error::Consul(e) => e.category(),
            Error::Cluster(e) => e.category(),
            Error::Finalizer(e) => super::finalizer_category(e, Error::category),
        }
    }
}

/// How one round of token and Secret writes failed.
enum Failed {
    Consul(consul::Error),
    Secret(Error),
}

/// What the Secret holds (the SecretID stays a redacting [`Token`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub accessor: String,
    pub secret: Option<Token>,
    pub rotation: Option<String>,
    pub ttl: Option<String>,
    pub revoke: Vec<String>,
}

/// Whether the stored token must be replaced by a new one (pure): nothing usable is
/// stored, or it was made for another `spec.rotation` or `spec.expirationTTL`.
pub fn needs_new_token(stored: Option<&Stored>, rotation: Option<&str>, ttl: Option<&str>) -> bool {
    match stored {
        None => true,
        Some(s) => {
            s.accessor.is_empty()
                || s.secret.as_ref().is_none_or(Token::is_empty)
                || s.rotation.as_deref() != rotation
                || s.ttl.as_deref() != ttl
        }
    }
}

/// When a token that expires at `expires` after a lifetime of `ttl` is renewed: once
/// two thirds of the lifetime have passed, so consumers have the last third to pick up
/// the new one (pure).
pub fn renew_at(expires: Timestamp, ttl: Duration) -> Timestamp {
    let third = SignedDuration::try_from(ttl / 3).unwrap_or(SignedDuration::ZERO);
    expires.checked_sub(third).unwrap_or(expires)
}

/// A random version-4 UUID, the format Consul wants for accessor and secret IDs.
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The ownership mark in a token's description.
fn ownership_mark(namespace: &str, name: &str) -> String {
    format!("[concord.io {namespace}/{name}]")
}

/// The Consul token an object declares, for the given IDs (pure).
pub fn desired_token(t: &ACLToken, accessor: &str, secret: Option<Token>) -> AclToken {
    let mark = ownership_mark(&t.namespace().unwrap_or_default(), &t.name_any());
    let description = match t.spec.description.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => format!("{d} {mark}"),
        _ => mark,
    };
    let mut policies: Vec<String> = t.spec.policies.clone();
    policies.sort();
    policies.dedup();
    let mut identities: Vec<AclServiceIdentity> = t
        .spec
        .service_identities
        .iter()
        .map(|s| AclServiceIdentity { service_name: s.service_name.clone(), datacenters: s.datacenters.clone() })
        .collect();
    identities.sort_by(|a, b| a.service_name.cmp(&b.service_name));
    AclToken {
        accessor_id: accessor.to_string(),
        secret_id: secret,
        description,
        policies: policies.into_iter().map(AclLink::by_name).collect(),
        service_identities: identities,
        local: t.spec.local,
        expiration_ttl: t.spec.expiration_ttl.clone(),
        ..Default::default()
    }
}

/// Whether Consul's token grants what is desired (pure; IDs of policies aside).
pub fn token_matches(existing: &AclToken, desired: &AclToken) -> bool {
    let mut names: Vec<&str> = existing.policies.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    let want: Vec<&str> = desired.policies.iter().map(|p| p.name.as_str()).collect();
    let mut identities = existing.service_identities.clone();
    identities.sort_by(|a, b| a.service_name.cmp(&b.service_name));
    existing.description == desired.description && names == want && identities == desired.service_identities
}

fn stored_from(secret: &Secret) -> Stored {
    let get = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .unwrap_or_default()
    };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let secret_text = get(TOKEN_KEY);
    Stored {
        accessor: get(ACCESSOR_KEY).trim().to_string(),
        secret: (!secret_text.trim().is_empty()).then(|| Token::new(secret_text.trim())),
        rotation: annotations.get(ROTATION_ANNOTATION).cloned(),
        ttl: annotations.get(TTL_ANNOTATION).cloned(),
        revoke: annotations
            .get(REVOKE_ANNOTATION)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

/// The Secret for `stored`, owned by the ACLToken (pure).
pub fn secret_for(t: &ACLToken, stored: &Stored) -> Secret {
    let mut data = BTreeMap::new();
    if let Some(s) = &stored.secret {
        data.insert(TOKEN_KEY.to_string(), ByteString(s.expose_secret().as_bytes().to_vec()));
    }
    data.insert(ACCESSOR_KEY.to_string(), ByteString(stored.accessor.as_bytes().to_vec()));
    let mut annotations = BTreeMap::new();
    if let Some(r) = &stored.rotation {
        annotations.insert(ROTATION_ANNOTATION.to_string(), r.clone());
    }
    if let Some(ttl) = &stored.ttl {
        annotations.insert(TTL_ANNOTATION.to_string(), ttl.clone());
    }
    if !stored.revoke.is_empty() {
        annotations.insert(REVOKE_ANNOTATION.to_string(), stored.revoke.join(","));
    }
    let mut s = Secret { data: Some(data), type_: Some("Opaque".into()), ..Default::default() };
    s.metadata.name = Some(t.spec.secret_name.clone());
    s.metadata.namespace = t.namespace();
    s.metadata.annotations = Some(annotations);
    s.metadata.labels = Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string())]));
    s.metadata.owner_references = t.controller_owner_ref(&()).map(|o| vec![o]);
    s
}

/// Whose rights the Secret's reads and writes use (see `context::tenant`).
fn actor(ctx: &Context, t: &ACLToken) -> Actor {
    ctx.actor(&t.namespace().unwrap_or_default(), t.spec.service_account_name.as_deref())
}

/// The condition message for a Secret read or write the API server refused to `actor`.
fn forbidden(actor: &Actor, t: &ACLToken, e: &kube::Error) -> String {
    format!("{actor} may not read or write Secret {}: {e}", t.spec.secret_name)
}

async fn write_secret(ctx: &Context, t: &ACLToken, stored: &Stored) -> Result<(), Error> {
    let secret = secret_for(t, stored);
    let api: Api<Secret> = Api::namespaced(ctx.client_as(&actor(ctx, t)), &t.namespace().unwrap_or_default());
    let err = |source| Error::Secret { secret: t.spec.secret_name.clone(), source };
    let mut body = serde_json::to_value(&secret).map_err(|e| err(kube::Error::SerdeError(e)))?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    api.patch(&t.spec.secret_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
        .await
        .map_err(err)?;
    Ok(())
}

/// Reads the Secret; `Err(reason)` when it exists but belongs to something else.
async fn read_secret(ctx: &Context, t: &ACLToken) -> Result<Result<Option<Stored>, String>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client_as(&actor(ctx, t)), &t.namespace().unwrap_or_default());
    let found = api
        .get_opt(&t.spec.secret_name)
        .await
        .map_err(|source| Error::Secret { secret: t.spec.secret_name.clone(), source })?;
    let Some(secret) = found else { return Ok(Ok(None)) };
    let uid = t.uid().unwrap_or_default();
    let owned = secret.owner_references().iter().any(|o| o.uid == uid);
    if !owned {
        return Ok(Err(format!(
            "Secret {} exists and is not owned by this ACLToken; concord does not overwrite it",
            t.spec.secret_name
        )));
    }
    Ok(Ok(Some(stored_from(&secret))))
}

async fn write_status(
    ctx: &Context,
    t: &ACLToken,
    status: ACLTokenStatus,
    update: ConditionUpdate,
) -> Result<(), Error> {
    let mut status = status;
    status.observed_generation = t.meta().generation;
    status.conditions =
        set_condition(&status.conditions, update, t.meta().generation, k8s_openapi::jiff::Timestamp::now());
    apply_status(ctx, t, &status).await.map_err(Error::Status)
}

async fn report(ctx: &Context, t: &ACLToken, reason: &'static str, message: String) -> Result<(), Error> {
    let previous = t.status.clone().unwrap_or_default();
    let known =
        find_condition(&previous.conditions, types::SYNCED).is_some_and(|c| c.reason == reason && c.message == message);
    write_status(ctx, t, previous, ConditionUpdate::new(types::SYNCED, false, reason, message.clone())).await?;
    if !known {
        ctx.event(&t.object_ref(&()), true, reason, "Sync", message).await;
    }
    Ok(())
}

/// Whether the cluster's grants allow every policy and service identity the token
/// names; `Err(reason)` when not. A policy's rules are read from Consul to find
/// management-equivalent ones (`acl = "write"`) whatever their name.
async fn granted(cluster: &ClusterHandle, t: &ACLToken) -> Result<Result<(), String>, Error> {
    for name in &t.spec.policies {
        let acl_write = match cluster.consul.acl_policy_read_by_name(name).await {
            Ok(found) => found.is_some_and(|p| rules_grant_acl_write(&p.rules)),
            Err(e) => return Err(Error::Consul(e)),
        };
        if let Err(msg) = cluster.grants.policy(name, acl_write) {
            return Ok(Err(msg));
        }
    }
    for identity in &t.spec.service_identities {
        if let Err(msg) = cluster.grants.service_identity(&identity.service_name) {
            return Ok(Err(msg));
        }
    }
    Ok(Ok(()))
}

async fn revoke(consul: &consul::Client, accessor: &str) -> Result<(), consul::Error> {
    match consul.acl_token_delete(accessor).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

async fn apply(t: Arc<ACLToken>, ctx: &Context) -> Result<Action, Error> {
    let key = format!("{CONTROLLER}:{}", object_key(t.as_ref()));
    let ns = t.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, t.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            report(ctx, &t, "ClusterUnavailable", e.to_string()).await?;
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
    };
    let consul = &cluster.consul;
    if let Err(msg) = granted(&cluster, &t).await? {
        report(ctx, &t, "NotGranted", msg).await?;
        return Ok(Action::requeue(RESYNC));
    }
    let stored = match read_secret(ctx, &t).await {
        Ok(Ok(s)) => s,
        Ok(Err(msg)) => {
            report(ctx, &t, "SecretNotOwned", msg).await?;
            return Ok(Action::requeue(RESYNC));
        }
        Err(Error::Secret { source, .. }) if is_forbidden(&source) => {
            report(ctx, &t, "Forbidden", forbidden(&actor(ctx, &t), &t, &source)).await?;
            return Ok(Action::requeue(RESYNC));
        }
        Err(e) => return Err(e),
    };
    let rotation = t.spec.rotation.as_deref();
    let ttl = t.spec.expiration_ttl.as_deref();
    let lifetime = ttl.and_then(|d| crate::resources::parse_duration(d).ok());
    let result: Result<(Stored, Renewal, Option<String>), Failed> = async {
        let mut stored = stored.unwrap_or_default();
        let mut current = if stored.accessor.is_empty() {
            None
        } else {
            consul.acl_token_read(&stored.accessor).await.map_err(Failed::Consul)?
        };
        let renewal = if needs_new_token(Some(&stored), rotation, ttl) {
            Renewal::Rotated
        } else if let Some(lifetime) = lifetime {
            // An expiring token: renewed when gone (expired and reaped) or due.
            let due = match current.as_ref().map(|c| c.expiration_time.as_deref()) {
                None => true,
                Some(Some(at)) => at.parse::<Timestamp>().is_ok_and(|at| Timestamp::now() >= renew_at(at, lifetime)),
                Some(None) => false,
            };
            if due { Renewal::Expiring } else { Renewal::None }
        } else {
            Renewal::None
        };
        if renewal != Renewal::None {
            // Do not replace a working token while Consul cannot take the new one.
            consul.status_leader().await.map_err(Failed::Consul)?;
            if !stored.accessor.is_empty() {
                stored.revoke.push(stored.accessor.clone());
            }
            stored.accessor = random_uuid();
            stored.secret = Some(Token::new(random_uuid()));
            stored.rotation = t.spec.rotation.clone();
            stored.ttl = t.spec.expiration_ttl.clone();
            write_secret(ctx, &t, &stored).await.map_err(Failed::Secret)?;
            current = None;
        }
        let desired = desired_token(&t, &stored.accessor, stored.secret.clone());
        let expires = match current {
            None => consul.acl_token_create(&desired).await.map_err(Failed::Consul)?.expiration_time,
            Some(existing) if token_matches(&existing, &desired) => existing.expiration_time,
            Some(_) => {
                // Consul cannot change a token's expiry: sent only on create.
                let update = AclToken { secret_id: None, expiration_ttl: None, ..desired };
                consul.acl_token_update(&update).await.map_err(Failed::Consul)?.expiration_time
            }
        };
        if !stored.revoke.is_empty() {
            for old in &stored.revoke {
                revoke(consul, old).await.map_err(Failed::Consul)?;
            }
            stored.revoke.clear();
            write_secret(ctx, &t, &stored).await.map_err(Failed::Secret)?;
        }
        Ok((stored, renewal, expires))
    }
    .await;
    match result {
        Ok((stored, renewal, expires)) => {
            let mut status = t.status.clone().unwrap_or_default();
            let first = status.accessor_id.is_none();
            status.accessor_id = Some(stored.accessor.clone());
            status.rotation = stored.rotation.clone();
            status.expiration_time = expires.clone();
            let msg = match &expires {
                Some(at) => format!("token {} in Secret {}, expires {at}", stored.accessor, t.spec.secret_name),
                None => format!("token {} in Secret {}", stored.accessor, t.spec.secret_name),
            };
            write_status(ctx, &t, status, ConditionUpdate::new(types::SYNCED, true, "Synced", msg.clone())).await?;
            let reason = match renewal {
                Renewal::Rotated if first => Some("TokenCreated"),
                Renewal::Rotated => Some("TokenRotated"),
                Renewal::Expiring => Some("TokenRenewed"),
                Renewal::None => None,
            };
            if let Some(reason) = reason {
                ctx.event(&t.object_ref(&()), false, reason, "Sync", msg).await;
            }
            tracing::debug!(token = %t.name_any(), accessor = %stored.accessor, "ACL token synced");
            ctx.reset_backoff(&key);
            Ok(Action::requeue(next_check(expires.as_deref(), lifetime, Timestamp::now())))
        }
        Err(Failed::Consul(e)) if e.is_missing_reference() => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, &t, "DependencyMissing", acl_object::missing_reference(&e)).await?;
            Ok(Action::requeue(ctx.args.acl_drift_interval))
        }
        Err(Failed::Consul(e)) if e.is_transient() => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, &t, "ConsulUnreachable", e.to_string()).await?;
            Ok(Action::requeue(ctx.backoff(&key)))
        }
        Err(Failed::Secret(Error::Secret { source, .. })) if is_forbidden(&source) => {
            // Nothing reached Consul: the Secret is written before the token is made.
            ctx.metrics.reconcile_failed(CONTROLLER, "kube");
            report(ctx, &t, "Forbidden", forbidden(&actor(ctx, &t), &t, &source)).await?;
            Ok(Action::requeue(RESYNC))
        }
        Err(Failed::Secret(e)) => {
            ctx.metrics.reconcile_failed(CONTROLLER, "kube");
            report(ctx, &t, "SecretWriteFailed", e.to_string()).await?;
            Ok(Action::requeue(ctx.backoff(&key)))
        }
        Err(Failed::Consul(e)) => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, &t, "RejectedByConsul", format!("Consul refused the token: {e}")).await?;
            Ok(Action::requeue(ctx.backoff(&key)))
        }
    }
}

/// Why a new token was made, if one was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renewal {
    None,
    /// First token, or `spec.rotation` / `spec.expirationTTL` changed.
    Rotated,
    /// Two thirds of the token's lifetime passed, or it expired.
    Expiring,
}

/// When to look at the token again: the resync, or its renewal time if sooner (pure).
pub fn next_check(expires: Option<&str>, lifetime: Option<Duration>, now: Timestamp) -> Duration {
    let (Some(at), Some(lifetime)) = (expires.and_then(|e| e.parse::<Timestamp>().ok()), lifetime) else {
        return RESYNC;
    };
    let wait = renew_at(at, lifetime).duration_since(now);
    Duration::try_from(wait).unwrap_or(Duration::ZERO).clamp(Duration::from_secs(1), RESYNC)
}

async fn cleanup(t: Arc<ACLToken>, ctx: &Context) -> Result<Action, Error> {
    let ns = t.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, t.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e @ (ClusterError::NotFound { .. } | ClusterError::NoCluster { .. })) => {
            ctx.event(&t.object_ref(&()), true, "ClusterGone", "Revoke", format!("token not revoked: {e}")).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let mut accessors: Vec<String> = t.status.as_ref().and_then(|s| s.accessor_id.clone()).into_iter().collect();
    match read_secret(ctx, &t).await {
        Ok(Ok(Some(stored))) => {
            accessors.push(stored.accessor);
            accessors.extend(stored.revoke);
        }
        // The ServiceAccount lost its rights: revoke what status knows.
        Err(Error::Secret { source, .. }) if is_forbidden(&source) => {}
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    accessors.retain(|a| !a.is_empty());
    accessors.sort();
    accessors.dedup();
    for accessor in &accessors {
        revoke(&cluster.consul, accessor).await.map_err(Error::Consul)?;
        tracing::info!(token = %t.name_any(), accessor = %accessor, "revoked ACL token");
    }
    ctx.event(&t.object_ref(&()), false, "TokenRevoked", "Revoke", format!("revoked {}", accessors.join(", "))).await;
    Ok(Action::await_change())
}

async fn reconcile(t: Arc<ACLToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    reconcile_with_finalizer(&ctx.client, FINALIZER, t, |t| apply(t, &ctx), |t| cleanup(t, &ctx))
        .await
        .map_err(Error::Finalizer)
}

fn error_policy(t: Arc<ACLToken>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(token = %t.name_any(), error = %error, "reconcile failed");
    requeue_after_failure(&ctx, CONTROLLER, t.as_ref(), error.category())
}

/// Runs the controller until `stop` resolves. It owns the Secrets it writes, so a
/// deleted or edited Secret is repaired.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let secrets = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    let controller = Controller::new(watched_api::<ACLToken>(&ctx), watcher::Config::default())
        .owns(watched_api::<Secret>(&ctx), secrets);
    // A token naming a policy that does not exist yet is retried when an ACLPolicy of its
    // namespace changes (e.g. reports that it wrote the policy).
    let tokens = controller.store();
    let controller = controller.watches(watched_api::<ACLPolicy>(&ctx), watcher::Config::default(), move |p| {
        acl_object::unsynced_beside(&tokens, &p)
    });
    drive(ctx, CONTROLLER, controller, reconcile, error_policy, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ACLTokenSpec, ServiceIdentity};

    fn token(rotation: Option<&str>) -> ACLToken {
        let mut t = ACLToken::new(
            "app",
            ACLTokenSpec {
                cluster_ref: None,
                service_account_name: None,
                description: Some("app token".into()),
                policies: vec!["b".into(), "a".into(), "a".into()],
                service_identities: vec![ServiceIdentity { service_name: "web".into(), datacenters: vec![] }],
                secret_name: "app-token".into(),
                rotation: rotation.map(str::to_string),
                local: false,
                expiration_ttl: None,
            },
        );
        t.metadata.namespace = Some("team".into());
        t.metadata.uid = Some("uid-1".into());
        t
    }

    #[test]
    fn uuids_are_version_4() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, random_uuid());
    }

    #[test]
    fn a_new_token_is_needed_when_nothing_is_stored_or_rotation_changed() {
        let stored = Stored {
            accessor: "a".into(),
            secret: Some(Token::new("s")),
            rotation: Some("1".into()),
            ttl: None,
            revoke: vec![],
        };
        assert!(needs_new_token(None, None, None));
        assert!(!needs_new_token(Some(&stored), Some("1"), None));
        assert!(needs_new_token(Some(&stored), Some("2"), None));
        assert!(needs_new_token(Some(&stored), None, None));
        let empty = Stored { secret: None, ..stored.clone() };
        assert!(needs_new_token(Some(&empty), Some("1"), None));
        // Consul cannot change a token's expiry: another TTL is another token.
        assert!(needs_new_token(Some(&stored), Some("1"), Some("1h")));
        let expiring = Stored { ttl: Some("1h".into()), ..stored.clone() };
        assert!(!needs_new_token(Some(&expiring), Some("1"), Some("1h")));
        assert!(needs_new_token(Some(&expiring), Some("1"), None));
    }

    #[test]
    fn an_expiring_token_is_renewed_after_two_thirds_of_its_life() {
        let expires: Timestamp = "2026-12-01T12:00:00Z".parse().expect("time");
        let hour = Duration::from_secs(3600);
        assert_eq!(renew_at(expires, hour), "2026-12-01T11:40:00Z".parse::<Timestamp>().expect("time"));
        let at = |s: &str| s.parse::<Timestamp>().expect("time");
        let e = Some("2026-12-01T12:00:00Z");
        assert_eq!(next_check(e, Some(hour), at("2026-12-01T11:37:00Z")), Duration::from_secs(180));
        assert_eq!(next_check(e, Some(hour), at("2026-12-01T11:50:00Z")), Duration::from_secs(1), "overdue: soon");
        assert_eq!(next_check(e, Some(hour), at("2026-12-01T11:00:00Z")), RESYNC, "never later than the resync");
        assert_eq!(next_check(None, None, at("2026-12-01T11:00:00Z")), RESYNC);
    }

    #[test]
    fn desired_token_sorts_dedups_and_marks() {
        let d = desired_token(&token(None), "acc", None);
        assert_eq!(d.policies.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(d.description, "app token [concord.io team/app]");
        assert_eq!(d.service_identities[0].service_name, "web");
        let mut existing = d.clone();
        existing.policies =
            vec![AclLink { id: "2".into(), name: "b".into() }, AclLink { id: "1".into(), name: "a".into() }];
        assert!(token_matches(&existing, &d));
        existing.policies.pop();
        assert!(!token_matches(&existing, &d));
    }

    #[test]
    fn the_secret_holds_the_token_in_data_only_and_is_owned() {
        let stored = Stored {
            accessor: "acc".into(),
            secret: Some(Token::new("sekret")),
            rotation: Some("r1".into()),
            ttl: Some("1h".into()),
            revoke: vec!["old1".into(), "old2".into()],
        };
        let s = secret_for(&token(Some("r1")), &stored);
        assert_eq!(s.metadata.owner_references.as_ref().map(|o| o[0].uid.as_str()), Some("uid-1"));
        let ann = s.metadata.annotations.clone().expect("annotations");
        assert_eq!(ann.get(REVOKE_ANNOTATION).map(String::as_str), Some("old1,old2"));
        assert!(!format!("{:?}", s.metadata).contains("sekret"));
        assert_eq!(stored_from(&s), stored);
        assert!(!format!("{stored:?}").contains("sekret"));
    }
}
