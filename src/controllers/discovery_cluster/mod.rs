//! DiscoveryCluster controller.
//! - External (`spec.external`): checks that Consul answers and reports its leader, Raft
//!   peers and version in status (Available / Degraded).
//! - Managed: runs the servers (see [`build`] for the objects, [`scale`] for the safety
//!   rules): dereference (StatefulSet, gossip Secret, Consul's Raft view) → decide
//!   (pure: replicas, peers to remove, rollout partition) → act (remove departing peers
//!   from Raft, then apply the objects) → status (Available, Progressing, Degraded).
//!
//! With `spec.acl.enabled`, [`super::acl_bootstrap::ensure_bootstrapped`] runs once the
//! servers have a leader, and its outcome is the `ACLBootstrapped` condition.
//!
//! Consul of a managed cluster is reached at its client Service, or at the addresses
//! given with `--consul-address NAMESPACE/NAME=URL` (port-forwards, tests).
pub mod build;
pub mod scale;

use super::{apply_status, drive, object_key, requeue_after_failure, watched_api};
use crate::consul::{self, QueryOptions, RaftPeer, RetryPolicy};
use crate::context::Context;
use crate::context::FIELD_MANAGER;
use crate::resources::{
    ConditionUpdate, DiscoveryCluster, DiscoveryClusterStatus, find_condition, set_condition, types,
};
use build::{GossipKeyRef, Inputs, StatefulSetPlan};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use scale::{ConsulView, Rollout, ScaleDecision, ServerView, StatefulSetView};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const CONTROLLER: &str = "discoverycluster";
/// How often a healthy cluster's status is refreshed.
const RESYNC: Duration = Duration::from_secs(30);
/// How often a cluster that is scaling, rolling or starting is looked at again.
const PROGRESS_RESYNC: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot write status: {0}")]
    Status(#[source] kube::Error),
    #[error("DiscoveryCluster has no namespace or uid yet")]
    Incomplete,
    #[error("cannot apply {what}: {source}")]
    Apply {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read or create the gossip key Secret: {0}")]
    GossipSecret(#[source] kube::Error),
    #[error("gossip key Secret {secret} key {key}: {reason}")]
    GossipKey { secret: String, key: String, reason: &'static str },
    #[error("cannot read or write the TLS Secrets: {0}")]
    TlsSecret(#[source] kube::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::cluster::tls::TlsError),
    #[error("cannot remove server {node} from Raft: {source}")]
    RemovePeer {
        node: String,
        #[source]
        source: consul::Error,
    },
    #[error("server {node} is still in the Raft configuration after its removal; not scaling down yet")]
    PeerStillPresent { node: String },
    #[error("ACL bootstrap: {0}")]
    Acl(#[source] super::acl_bootstrap::Error),
}

impl Error {
    fn category(&self) -> &'static str {
        match self {
            Error::Cluster(e) => e.category(),
            Error::Status(_) | Error::Apply { .. } | Error::GossipSecret(_) | Error::TlsSecret(_) => "kube",
            Error::GossipKey { .. } => "gossip_key",
            Error::Tls(_) => "tls",
            Error::Incomplete => "incomplete",
            Error::RemovePeer { .. } | Error::PeerStillPresent { .. } => "raft",
            Error::Acl(e) => e.category(),
        }
    }

    /// The reason of the `Degraded=True` condition and of the Warning Event.
    fn reason(&self) -> &'static str {
        match self {
            Error::Cluster(_) => "ConsulClientFailed",
            Error::Status(_) => "StatusWriteFailed",
            Error::Incomplete => "Incomplete",
            Error::Apply { .. } => "ApplyFailed",
            Error::GossipSecret(_) | Error::GossipKey { .. } => "GossipSecretFailed",
            Error::TlsSecret(_) | Error::Tls(_) => "TLSFailed",
            Error::RemovePeer { .. } => "RaftPeerRemovalFailed",
            Error::PeerStillPresent { .. } => "RaftPeerStillPresent",
            Error::Acl(_) => "ACLBootstrapFailed",
        }
    }
}

/// `previous` with `Degraded=True` for a failed reconcile; the rest stays as it was.
pub fn failed_status(
    previous: &DiscoveryClusterStatus,
    generation: Option<i64>,
    reason: &'static str,
    message: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> DiscoveryClusterStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let degraded = ConditionUpdate::new(types::DEGRADED, true, reason, message);
    status.conditions = set_condition(&status.conditions, degraded, generation, now);
    status
}

/// What Consul said about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub leader: String,
    pub peers: Vec<String>,
    pub version: Option<String>,
}

/// Why Consul could not be asked: the condition reason and the whole cause chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreachable {
    /// `TLSVerifyFailed` when the servers' certificate was refused (wrong CA, wrong
    /// name, expired), else `ConsulUnreachable`.
    pub reason: &'static str,
    pub message: String,
}

/// Condition reason of a server certificate the configured CA does not vouch for.
pub const TLS_VERIFY_FAILED: &str = "TLSVerifyFailed";

impl Unreachable {
    pub fn of(error: &consul::Error) -> Self {
        if error.is_tls_verify_failure() {
            let message = format!(
                "the Consul servers' TLS certificate is not trusted (check the CA Secret and the address): {error}"
            );
            Unreachable { reason: TLS_VERIFY_FAILED, message }
        } else {
            Unreachable { reason: "ConsulUnreachable", message: error.to_string() }
        }
    }
}

impl From<&str> for Unreachable {
    fn from(message: &str) -> Self {
        Unreachable { reason: "ConsulUnreachable", message: message.to_string() }
    }
}

/// Status of an external cluster from what was observed (pure).
pub fn external_status(
    previous: &DiscoveryClusterStatus,
    generation: Option<i64>,
    observed: Result<Observed, Unreachable>,
    now: k8s_openapi::jiff::Timestamp,
) -> DiscoveryClusterStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let (available, degraded) = match observed {
        Ok(o) if !o.leader.is_empty() => {
            let msg = format!("leader {} with {} Raft peers", o.leader, o.peers.len());
            status.leader = Some(o.leader);
            status.peers = o.peers;
            status.version = o.version.or(status.version);
            (
                ConditionUpdate::new(types::AVAILABLE, true, "LeaderElected", msg),
                ConditionUpdate::new(types::DEGRADED, false, "LeaderElected", ""),
            )
        }
        Ok(o) => {
            status.leader = None;
            status.peers = o.peers;
            (
                ConditionUpdate::new(types::AVAILABLE, false, "NoLeader", "Consul answers but has no Raft leader"),
                ConditionUpdate::new(types::DEGRADED, true, "NoLeader", "Consul answers but has no Raft leader"),
            )
        }
        Err(e) => {
            status.leader = None;
            (
                ConditionUpdate::new(types::AVAILABLE, false, e.reason, e.message.clone()),
                ConditionUpdate::new(types::DEGRADED, true, e.reason, e.message),
            )
        }
    };
    status.conditions = set_condition(&status.conditions, available, generation, now);
    status.conditions = set_condition(&status.conditions, degraded, generation, now);
    status
}

async fn observe(consul: &consul::Client) -> Result<Observed, consul::Error> {
    let leader = consul.status_leader().await?.unwrap_or_default();
    let peers = consul.status_peers().await?;
    let version = consul.agent_self().await.ok().map(|a| a.config.version);
    Ok(Observed { leader, peers, version })
}

/// The catalog sync writes `status.sync` under its own field manager; this controller
/// leaves it out of its apply so the two never co-own (and fight over) those fields.
fn without_sync(status: &DiscoveryClusterStatus) -> DiscoveryClusterStatus {
    DiscoveryClusterStatus { sync: None, ..status.clone() }
}

/// Every failure reaches `error_policy` reported: a `Degraded=True` condition saying why
/// and a Warning Event (once per new reason and message).
async fn reconcile(dc: Arc<DiscoveryCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_inner(dc.clone(), ctx.clone()).await;
    if let Err(error) = &result {
        let (reason, message) = (error.reason(), error.to_string());
        let previous = dc.status.clone().unwrap_or_default();
        let same = find_condition(&previous.conditions, types::DEGRADED)
            .is_some_and(|c| c.status == "True" && c.reason == reason && c.message == message);
        let status =
            failed_status(&previous, dc.meta().generation, reason, &message, k8s_openapi::jiff::Timestamp::now());
        if let Err(e) = apply_status(&ctx, dc.as_ref(), &without_sync(&status)).await {
            tracing::warn!(cluster = %dc.name_any(), error = %e, "cannot report the failure in status");
        }
        if !same {
            ctx.event(&dc.object_ref(&()), true, reason, "Reconcile", message).await;
        }
    }
    result
}

async fn reconcile_inner(dc: Arc<DiscoveryCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    if dc.spec.is_managed() {
        return reconcile_managed(&dc, &ctx).await;
    }
    let previous = dc.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let handle = ctx.clusters.client_for(&ctx.client, &dc).await?;
    let observed = observe(&handle.consul).await.map_err(|e| Unreachable::of(&e));
    let reachable = observed.is_ok();
    let refused_tls = observed.as_ref().err().filter(|e| e.reason == TLS_VERIFY_FAILED).cloned();
    let status = external_status(&previous, dc.meta().generation, observed, now);
    let became_available = status.leader.is_some() && previous.leader.is_none();
    apply_status(&ctx, dc.as_ref(), &without_sync(&status)).await.map_err(Error::Status)?;
    if let Some(refused) = refused_tls {
        let same = find_condition(&previous.conditions, types::AVAILABLE)
            .is_some_and(|c| c.reason == refused.reason && c.message == refused.message);
        if !same {
            ctx.event(&dc.object_ref(&()), true, refused.reason, "Reconcile", refused.message).await;
        }
    }
    if became_available {
        let note = format!("Consul leader {}", status.leader.as_deref().unwrap_or_default());
        ctx.event(&dc.object_ref(&()), false, "LeaderElected", "Reconcile", note).await;
    }
    if reachable {
        ctx.reset_backoff(&format!("{CONTROLLER}:{}", object_key(dc.as_ref())));
        Ok(Action::requeue(RESYNC))
    } else {
        Ok(Action::requeue(ctx.backoff(&format!("{CONTROLLER}:{}", object_key(dc.as_ref())))))
    }
}

/// Probes fail fast: an unreachable cluster is reported now and looked at again soon,
/// instead of holding the reconcile for the client's 30 s of retries.
fn probe_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        max_elapsed: Duration::from_secs(3),
    }
}

/// Raft configuration (stale reads work without a leader) joined with autopilot's
/// health (only with a leader), the leader and the version.
async fn observe_managed(consul: &consul::Client) -> Result<ConsulView, consul::Error> {
    let probe = consul.with_retry(probe_retry());
    let leader = probe.status_leader().await?;
    let raft = probe
        .operator_raft_configuration(&QueryOptions::default().with_consistency(consul::Consistency::Stale))
        .await?;
    let autopilot = match leader {
        Some(_) => probe.operator_autopilot_state().await.ok(),
        None => None,
    };
    let version = probe.agent_self().await.ok().map(|a| a.config.version);
    let servers = raft
        .servers
        .into_iter()
        .map(|s| ServerView {
            healthy: autopilot.as_ref().and_then(|a| a.servers.get(&s.id)).is_some_and(|a| a.healthy),
            id: s.id,
            node: s.node,
            address: s.address,
            voter: s.voter,
        })
        .collect();
    Ok(ConsulView { leader, servers, version })
}

async fn apply<K>(ctx: &Context, namespace: &str, obj: &K, what: &'static str) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj))
        .await
        .map_err(|source| Error::Apply { what, source })
}

/// Creates the generated gossip key Secret once; an existing one is never touched, so
/// the key is never regenerated. Returns whether it was created now.
async fn ensure_gossip_secret(ctx: &Context, inputs: &Inputs, gossip: &GossipKeyRef) -> Result<bool, Error> {
    if gossip.secret != build::gossip_secret_name(&inputs.name) {
        return Ok(false); // the user's own Secret (spec.gossip.secretRef)
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &inputs.namespace);
    if api.get_metadata_opt(&gossip.secret).await.map_err(Error::GossipSecret)?.is_some() {
        return Ok(false);
    }
    let secret = build::gossip_secret(inputs, build::new_gossip_key());
    let params = PostParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
    match api.create(&params, &secret).await {
        Ok(_) => Ok(true),
        // Another replica (or an earlier reconcile whose answer was lost) made it: keep it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::GossipSecret(e)),
    }
}

/// Writes the gossip key, read from its Secret (generated or the user's), as the
/// Consul config file the servers mount.
async fn ensure_gossip_config(ctx: &Context, inputs: &Inputs, gossip: &GossipKeyRef) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &inputs.namespace);
    let err = |reason| Error::GossipKey { secret: gossip.secret.clone(), key: gossip.key.clone(), reason };
    let secret = api.get_opt(&gossip.secret).await.map_err(Error::GossipSecret)?.ok_or_else(|| err("not found"))?;
    let value = secret.data.as_ref().and_then(|d| d.get(&gossip.key)).ok_or_else(|| err("key not found"))?;
    let key = std::str::from_utf8(&value.0).map_err(|_| err("value is not UTF-8"))?.trim();
    if key.is_empty() {
        return Err(err("value is empty"));
    }
    apply(ctx, &inputs.namespace, &build::gossip_config_secret(inputs, key), "gossip config Secret").await?;
    Ok(())
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok().filter(|t| !t.trim().is_empty())
}

/// TLS material of a managed cluster: the CA Secret (created once) and the servers'
/// certificate Secret (issued again when its names or the CA change, or a month before
/// it ends). Returns what it did, for an Event.
async fn ensure_tls(ctx: &Context, inputs: &Inputs) -> Result<Vec<(&'static str, String)>, Error> {
    use crate::cluster::tls;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &inputs.namespace);
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut done = Vec::new();
    let ca_name = tls::ca_secret_name(&inputs.name);
    let ca_secret = match api.get_opt(&ca_name).await.map_err(Error::TlsSecret)? {
        Some(secret) => secret,
        None => {
            let ca = tls::new_ca(&inputs.name, &inputs.namespace, now)?;
            let params = PostParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
            match api.create(&params, &build::ca_secret(inputs, &ca)).await {
                Ok(created) => {
                    done.push(("CAGenerated", format!("generated the cluster's TLS CA in Secret {ca_name}")));
                    created
                }
                // Another replica made it first: use theirs.
                Err(kube::Error::Api(s)) if s.code == 409 => api.get(&ca_name).await.map_err(Error::TlsSecret)?,
                Err(e) => return Err(Error::TlsSecret(e)),
            }
        }
    };
    let (Some(ca_cert), Some(ca_key)) = (secret_text(&ca_secret, tls::CERT_KEY), secret_text(&ca_secret, tls::KEY_KEY))
    else {
        return Err(Error::Tls(tls::TlsError::BadCaKey { secret: ca_name }));
    };
    let ca = tls::Ca { cert_pem: ca_cert, key_pem: ca_key };
    let names = tls::server_names(&inputs.name, &inputs.namespace, &inputs.spec.datacenter);
    let digest = tls::names_digest(&names, &ca.cert_pem);
    let server_name = tls::server_secret_name(&inputs.name);
    let current = api.get_opt(&server_name).await.map_err(Error::TlsSecret)?;
    let annotation =
        |key: &str| current.as_ref().and_then(|s| s.metadata.annotations.as_ref()).and_then(|a| a.get(key)).cloned();
    let fresh = annotation(tls::NAMES_ANNOTATION).as_deref() == Some(digest.as_str())
        && annotation(tls::NOT_AFTER_ANNOTATION)
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .is_some_and(|not_after| now < not_after - tls::RENEW_BEFORE)
        && current.as_ref().is_some_and(|s| secret_text(s, tls::KEY_KEY).is_some());
    if !fresh {
        let issued = tls::issue_server_cert(&ca, &ca_name, &inputs.name, &inputs.namespace, &names, now)?;
        apply(ctx, &inputs.namespace, &build::server_tls_secret(inputs, &issued, &ca.cert_pem, &digest), "TLS Secret")
            .await?;
        let what = if current.is_some() { "reissued" } else { "issued" };
        let note =
            format!("{what} the servers' TLS certificate in Secret {server_name} (valid until {})", issued.not_after);
        done.push(("ServerCertificateIssued", note));
    }
    Ok(done)
}

fn statefulset_view(sts: &StatefulSet) -> StatefulSetView {
    let spec = sts.spec.as_ref();
    let status = sts.status.as_ref();
    StatefulSetView {
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        partition: spec
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0),
        observed: status.and_then(|s| s.observed_generation) >= sts.metadata.generation,
        ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        updated_replicas: status.and_then(|s| s.updated_replicas).unwrap_or(0),
        template_hash: build::applied_template_hash(sts).map(str::to_string),
    }
}

/// Removes the departing servers from Raft, one at a time, and checks that they are gone
/// before the caller lowers the replicas.
async fn remove_departing_peers(
    ctx: &Context,
    dc: &DiscoveryCluster,
    consul: &consul::Client,
    remove: &[ServerView],
) -> Result<(), Error> {
    for server in remove {
        consul
            .operator_raft_remove_peer(&RaftPeer::Id(server.id.clone()))
            .await
            .map_err(|source| Error::RemovePeer { node: server.node.clone(), source })?;
        let note = format!("removed server {} ({}) from Raft before scaling down", server.node, server.address);
        ctx.event(&dc.object_ref(&()), false, "RaftPeerRemoved", "ScaleDown", note).await;
    }
    if remove.is_empty() {
        return Ok(());
    }
    let raft = consul
        .operator_raft_configuration(&QueryOptions::default())
        .await
        .map_err(|source| Error::RemovePeer { node: remove[0].node.clone(), source })?;
    if let Some(left) = remove.iter().find(|r| raft.servers.iter().any(|s| s.id == r.id)) {
        return Err(Error::PeerStillPresent { node: left.node.clone() });
    }
    Ok(())
}

async fn reconcile_managed(dc: &DiscoveryCluster, ctx: &Context) -> Result<Action, Error> {
    let inputs = Inputs::new(dc).ok_or(Error::Incomplete)?;
    let key = format!("{CONTROLLER}:{}", object_key(dc));
    let previous = dc.status.clone().unwrap_or_default();

    // Dereference: the StatefulSet, the gossip key, and what Consul says.
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &inputs.namespace);
    let current = sts_api
        .get_opt(&build::server_name(&inputs.name))
        .await
        .map_err(|source| Error::Apply { what: "StatefulSet", source })?;
    let current_view = current.as_ref().map(statefulset_view);
    let gossip = build::gossip_key_ref(&inputs.name, dc.spec.gossip.as_ref());
    if let Some(gossip) = &gossip
        && ensure_gossip_secret(ctx, &inputs, gossip).await?
    {
        let note = format!("generated the gossip encryption key in Secret {}", gossip.secret);
        ctx.event(&dc.object_ref(&()), false, "GossipKeyGenerated", "Reconcile", note).await;
    }
    if let Some(gossip) = &gossip {
        ensure_gossip_config(ctx, &inputs, gossip).await?;
    }
    if inputs.tls_enabled() {
        for (reason, note) in ensure_tls(ctx, &inputs).await? {
            ctx.event(&dc.object_ref(&()), false, reason, "Reconcile", note).await;
        }
    }
    let mut consul = ctx.clusters.client_for(&ctx.client, dc).await?.consul;
    // ACLs: bootstrap once the servers have a leader (the ACL bootstrap module keeps the
    // tokens in Secrets and never re-bootstraps); then talk to Consul with the
    // controller's own token, which the cluster cache picks up from its Secret.
    let acl = match &dc.spec.acl {
        Some(acl) if acl.enabled => {
            let leader = consul.with_retry(probe_retry()).status_leader().await.ok().flatten();
            match leader {
                Some(_) => {
                    let outcome =
                        super::acl_bootstrap::ensure_bootstrapped(ctx, dc, &consul).await.map_err(Error::Acl)?;
                    consul = ctx.clusters.client_for(&ctx.client, dc).await?.consul;
                    Some(outcome.condition())
                }
                None if find_condition(&previous.conditions, super::acl_bootstrap::ACL_BOOTSTRAPPED).is_none() => {
                    Some(ConditionUpdate::new(
                        super::acl_bootstrap::ACL_BOOTSTRAPPED,
                        false,
                        "WaitingForLeader",
                        "ACLs are bootstrapped once the servers have a leader",
                    ))
                }
                None => None,
            }
        }
        _ => None,
    };
    let observed = observe_managed(&consul).await.map_err(|e| e.to_string());

    // Decide (pure).
    let desired = dc.spec.replicas;
    let scale = scale::plan_scale(
        &inputs.name,
        current_view.as_ref().map(|v| v.replicas),
        desired,
        observed.as_ref().map_err(String::as_str),
    );

    // Act: departing servers leave Raft before their pods go.
    if let ScaleDecision::Down { remove, .. } = &scale {
        remove_departing_peers(ctx, dc, &consul, remove).await?;
    }
    let replicas = scale.replicas();
    let storage = current
        .as_ref()
        .and_then(build::ClaimStorage::from_statefulset)
        .unwrap_or_else(|| build::ClaimStorage::from_spec(&inputs));
    let health = match &observed {
        Ok(view) => view.healthy(&inputs.name, replicas),
        Err(e) => Err(format!("Consul is unavailable: {e}")),
    };
    let desired_hash = build::desired_template_hash(&inputs, gossip.as_ref(), replicas);
    let rollout = scale::plan_rollout(current_view.as_ref(), &desired_hash, replicas, health);
    let plan = StatefulSetPlan { replicas, partition: rollout.partition(), storage };

    apply(ctx, &inputs.namespace, &build::config_map(&inputs, replicas), "ConfigMap").await?;
    apply(ctx, &inputs.namespace, &build::headless_service(&inputs), "headless Service").await?;
    apply(ctx, &inputs.namespace, &build::client_service(&inputs), "client Service").await?;
    apply(ctx, &inputs.namespace, &build::pod_disruption_budget(&inputs), "PodDisruptionBudget").await?;
    let applied =
        apply(ctx, &inputs.namespace, &build::statefulset(&inputs, gossip.as_ref(), &plan), "StatefulSet").await?;

    // Status and Events.
    let now = k8s_openapi::jiff::Timestamp::now();
    let status = managed_status(
        &previous,
        dc.meta().generation,
        &ManagedObservation {
            name: &inputs.name,
            desired,
            ready_replicas: applied.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
            consul: observed.as_ref().map_err(String::as_str),
            scale: &scale,
            rollout: &rollout,
        },
        now,
    );
    let mut status = status;
    if let Some(acl) = acl {
        status.conditions = set_condition(&status.conditions, acl, dc.meta().generation, now);
    }
    apply_status(ctx, dc, &without_sync(&status)).await.map_err(Error::Status)?;
    publish_events(ctx, dc, &previous, &status, &scale, &rollout).await;

    ctx.reset_backoff(&key);
    let progressing = find_condition(&status.conditions, types::PROGRESSING).is_some_and(|c| c.status == "True");
    let refused = matches!(scale, ScaleDecision::Refused { .. });
    Ok(Action::requeue(if progressing || refused || observed.is_err() { PROGRESS_RESYNC } else { RESYNC }))
}

async fn publish_events(
    ctx: &Context,
    dc: &DiscoveryCluster,
    previous: &DiscoveryClusterStatus,
    status: &DiscoveryClusterStatus,
    scale: &ScaleDecision,
    rollout: &Rollout,
) {
    let object = dc.object_ref(&());
    match scale {
        ScaleDecision::Refused { why, .. } => {
            let was = find_condition(&previous.conditions, types::DEGRADED)
                .is_some_and(|c| c.reason == "ScaleDownRefused" && c.message == why.to_string());
            if !was {
                ctx.event(&object, true, "ScaleDownRefused", "Scale", why.to_string()).await;
            }
        }
        ScaleDecision::Up { from, to } | ScaleDecision::Down { from, to, .. } => {
            ctx.event(&object, false, "Scaled", "Scale", format!("servers {from} → {to}")).await;
        }
        ScaleDecision::Create(_) | ScaleDecision::Unchanged(_) => {}
    }
    match rollout {
        Rollout::Start { partition } => {
            let note = format!("new server template: rolling one server at a time from partition {partition}");
            ctx.event(&object, false, "RollingUpdateStarted", "RollingUpdate", note).await;
        }
        Rollout::Advance { from, to } => {
            let note = format!("server {from} updated and the cluster healthy: partition {from} → {to}");
            ctx.event(&object, false, "PartitionAdvanced", "RollingUpdate", note).await;
        }
        Rollout::Steady | Rollout::Waiting { .. } => {}
    }
    if status.leader.is_some() && previous.leader.is_none() {
        let note = format!("Consul leader {}", status.leader.as_deref().unwrap_or_default());
        ctx.event(&object, false, "LeaderElected", "Reconcile", note).await;
    }
}

/// What the managed status is computed from.
pub struct ManagedObservation<'a> {
    /// The DiscoveryCluster's name (servers are `<name>-server-<i>`).
    pub name: &'a str,
    pub desired: i32,
    pub ready_replicas: i32,
    pub consul: Result<&'a ConsulView, &'a str>,
    pub scale: &'a ScaleDecision,
    pub rollout: &'a Rollout,
}

/// Status of a managed cluster (pure).
pub fn managed_status(
    previous: &DiscoveryClusterStatus,
    generation: Option<i64>,
    obs: &ManagedObservation<'_>,
    now: k8s_openapi::jiff::Timestamp,
) -> DiscoveryClusterStatus {
    let mut status = previous.clone();
    let name = obs.name;
    status.observed_generation = generation;
    status.ready_replicas = Some(obs.ready_replicas);
    let pods = format!("{} of {} server pods ready", obs.ready_replicas, obs.desired);
    let (available, mut degraded) = match obs.consul {
        Ok(view) => {
            status.leader = view.leader.clone();
            status.peers = view.voters().map(|s| s.address.clone()).collect();
            status.version = view.version.clone().or(status.version.take());
            match (&view.leader, view.healthy(name, obs.desired)) {
                (Some(leader), health) => {
                    let msg = format!("leader {leader} with {} Raft voters; {pods}", status.peers.len());
                    let degraded = match health {
                        Ok(()) => ConditionUpdate::new(types::DEGRADED, false, "Healthy", ""),
                        Err(e) => ConditionUpdate::new(types::DEGRADED, true, "ServersUnhealthy", e),
                    };
                    (ConditionUpdate::new(types::AVAILABLE, true, "LeaderElected", msg), degraded)
                }
                (None, _) => {
                    let msg = format!("Consul answers but has no Raft leader; {pods}");
                    (
                        ConditionUpdate::new(types::AVAILABLE, false, "NoLeader", msg.clone()),
                        ConditionUpdate::new(types::DEGRADED, true, "NoLeader", msg),
                    )
                }
            }
        }
        Err(e) => {
            status.leader = None;
            let msg = format!("{e}; {pods}");
            (
                ConditionUpdate::new(types::AVAILABLE, false, "ConsulUnreachable", msg.clone()),
                ConditionUpdate::new(types::DEGRADED, true, "ConsulUnreachable", msg),
            )
        }
    };
    let progressing = match (obs.scale, obs.rollout) {
        (ScaleDecision::Refused { why, .. }, _) => {
            degraded = ConditionUpdate::new(types::DEGRADED, true, "ScaleDownRefused", why.to_string());
            ConditionUpdate::new(types::PROGRESSING, false, "ScaleDownRefused", why.to_string())
        }
        (ScaleDecision::Create(n), _) => {
            ConditionUpdate::new(types::PROGRESSING, true, "Creating", format!("creating {n} servers"))
        }
        (ScaleDecision::Up { from, to } | ScaleDecision::Down { from, to, .. }, _) => {
            ConditionUpdate::new(types::PROGRESSING, true, "Scaling", format!("servers {from} → {to}; {pods}"))
        }
        (_, Rollout::Start { partition }) => ConditionUpdate::new(
            types::PROGRESSING,
            true,
            "RollingUpdate",
            format!("new template; updating servers from ordinal {partition} up"),
        ),
        (_, Rollout::Waiting { partition, reason }) => ConditionUpdate::new(
            types::PROGRESSING,
            true,
            "RollingUpdate",
            format!("partition {partition}: waiting: {reason}"),
        ),
        (_, Rollout::Advance { from, to }) => {
            ConditionUpdate::new(types::PROGRESSING, true, "RollingUpdate", format!("partition {from} → {to}"))
        }
        (_, Rollout::Steady) if obs.ready_replicas < obs.desired => {
            ConditionUpdate::new(types::PROGRESSING, true, "WaitingForServers", pods.clone())
        }
        (_, Rollout::Steady) => ConditionUpdate::new(types::PROGRESSING, false, "Stable", pods.clone()),
    };
    for update in [available, progressing, degraded] {
        status.conditions = set_condition(&status.conditions, update, generation, now);
    }
    status
}

fn error_policy(dc: Arc<DiscoveryCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %dc.name_any(), error = %error, "reconcile failed");
    requeue_after_failure(&ctx, CONTROLLER, dc.as_ref(), error.category())
}

/// Runs the controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<DiscoveryCluster>(&ctx), watcher::Config::default()).owns(
        watched_api::<StatefulSet>(&ctx),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=concord"),
    );
    drive(ctx, CONTROLLER, controller, reconcile, error_policy, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::is_condition_true;

    fn now() -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(1_000).expect("time")
    }

    #[test]
    fn a_cluster_with_a_leader_is_available() {
        let observed = Observed {
            leader: "127.0.0.1:8300".into(),
            peers: vec!["a".into(), "b".into(), "c".into()],
            version: Some("1.22.7".into()),
        };
        let s = external_status(&Default::default(), Some(2), Ok(observed), now());
        assert!(is_condition_true(&s.conditions, types::AVAILABLE));
        assert!(!is_condition_true(&s.conditions, types::DEGRADED));
        assert_eq!(s.peers.len(), 3);
        assert_eq!(s.observed_generation, Some(2));
    }

    fn consul_view(healthy: bool) -> ConsulView {
        ConsulView {
            leader: Some("10.0.0.1:8300".into()),
            servers: (0..3)
                .map(|i| ServerView {
                    id: format!("id-{i}"),
                    node: build::server_node_name("consul", i),
                    address: format!("10.0.0.{}:8300", i + 1),
                    voter: true,
                    healthy: healthy || i != 2,
                })
                .collect(),
            version: Some("1.22.7".into()),
        }
    }

    #[test]
    fn a_managed_cluster_with_a_leader_but_no_ready_pods_is_available_and_progressing() {
        let view = consul_view(true);
        let obs = ManagedObservation {
            name: "consul",
            desired: 3,
            ready_replicas: 0,
            consul: Ok(&view),
            scale: &ScaleDecision::Unchanged(3),
            rollout: &Rollout::Steady,
        };
        let s = managed_status(&Default::default(), Some(4), &obs, now());
        assert!(is_condition_true(&s.conditions, types::AVAILABLE));
        assert!(!is_condition_true(&s.conditions, types::DEGRADED));
        let progressing = find_condition(&s.conditions, types::PROGRESSING).expect("set");
        assert_eq!((progressing.status.as_str(), progressing.reason.as_str()), ("True", "WaitingForServers"));
        assert_eq!(progressing.observed_generation, Some(4));
        assert_eq!(s.ready_replicas, Some(0));
        assert_eq!(s.peers.len(), 3);
        assert_eq!(s.version.as_deref(), Some("1.22.7"));
        let stable = ManagedObservation { ready_replicas: 3, ..obs };
        let s = managed_status(&s, Some(4), &stable, now());
        assert!(!is_condition_true(&s.conditions, types::PROGRESSING));
    }

    #[test]
    fn a_refused_scale_down_is_degraded_and_not_progressing_with_the_reason() {
        let view = consul_view(false);
        let why = scale::Refusal::QuorumLoss { from: 5, to: 1, size: 1, healthy: 0, needed: 1 };
        let refused = ScaleDecision::Refused { from: 5, to: 1, why };
        let obs = ManagedObservation {
            name: "consul",
            desired: 1,
            ready_replicas: 5,
            consul: Ok(&view),
            scale: &refused,
            rollout: &Rollout::Steady,
        };
        let s = managed_status(&Default::default(), Some(2), &obs, now());
        for t in [types::DEGRADED, types::PROGRESSING] {
            let c = find_condition(&s.conditions, t).expect("set");
            assert_eq!(c.reason, "ScaleDownRefused");
            assert!(c.message.contains("would lose quorum"), "{}", c.message);
        }
        assert!(is_condition_true(&s.conditions, types::DEGRADED));
        assert!(!is_condition_true(&s.conditions, types::PROGRESSING));
    }

    #[test]
    fn an_unreachable_managed_cluster_is_unavailable_and_a_rollout_is_reported() {
        let rollout = Rollout::Waiting { partition: 2, reason: "1 of 3 server pods ready".into() };
        let obs = ManagedObservation {
            name: "consul",
            desired: 3,
            ready_replicas: 1,
            consul: Err("connection refused"),
            scale: &ScaleDecision::Unchanged(3),
            rollout: &rollout,
        };
        let s = managed_status(&Default::default(), Some(1), &obs, now());
        let available = find_condition(&s.conditions, types::AVAILABLE).expect("set");
        assert_eq!((available.status.as_str(), available.reason.as_str()), ("False", "ConsulUnreachable"));
        let progressing = find_condition(&s.conditions, types::PROGRESSING).expect("set");
        assert_eq!(progressing.reason, "RollingUpdate");
        assert!(progressing.message.contains("partition 2"));
    }

    #[test]
    fn an_unreachable_cluster_is_degraded_and_keeps_its_last_version() {
        let prev =
            DiscoveryClusterStatus { version: Some("1.22.7".into()), leader: Some("x".into()), ..Default::default() };
        let s = external_status(&prev, Some(1), Err(Unreachable::from("connection refused")), now());
        assert!(!is_condition_true(&s.conditions, types::AVAILABLE));
        assert!(is_condition_true(&s.conditions, types::DEGRADED));
        assert_eq!(s.leader, None);
        assert_eq!(s.version.as_deref(), Some("1.22.7"));
        let available = find_condition(&s.conditions, types::AVAILABLE).expect("set");
        assert_eq!(available.reason, "ConsulUnreachable");
        assert_eq!(available.message, "connection refused");
    }
}
