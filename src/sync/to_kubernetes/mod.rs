//! Consul → Kubernetes. [`watch`] follows the whole catalog with two blocking queries
//! (service names, and every check outside the sync nodes) and re-reads only the services
//! whose checks changed, a few at once; whatever the number of mirrored services, the
//! sync holds two long-lived connections to Consul. Each change applies the Service and
//! its EndpointSlices ([`desired::objects`]) by server-side apply, a few services at once,
//! one write at a time per service.
//!
//! A Service that exists under the wanted name without this sync's identity label is
//! someone else's: it is never touched; the clash is reported in an Event on the
//! DiscoveryCluster and in `status.sync.nameClashes`. Services this sync created whose
//! Consul service vanished are deleted, at once and on every anti-entropy pass.
pub mod desired;
pub mod watch;

use crate::consul;
use crate::context::Context;
use crate::sync::names::{NamePlan, plan_names};
use crate::sync::status::StatusBoard;
use crate::sync::{ANNOTATION_CONSUL_SERVICE, FIELD_MANAGER, SYNC_IDENTITY_LABEL, ToKubernetesConfig};
use desired::MirrorInstance;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use watch::Msg;

const CONTROLLER: &str = "catalogsync-to-kubernetes";
/// Services written at once.
const PARALLEL_APPLIES: usize = 8;
/// How soon writes the target namespace refused are tried again.
const FORBIDDEN_RETRY: Duration = Duration::from_secs(15);
/// Marks this direction's lines in `status.sync.forbidden`.
const FORBIDDEN_PREFIX: &str = "toKubernetes ";
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("Service {0} exists and is not managed by this sync")]
    Clash(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Clash(_) => "name_clash",
        }
    }
}

/// What applying one Consul service did.
enum Applied {
    Written,
    Removed,
}

/// One finished write: (Consul name, Kubernetes name, outcome, names of an earlier
/// mapping removed after the new one was written).
type ApplyDone = (String, String, Result<Applied, Error>, Vec<String>);

struct Writer {
    services: Api<Service>,
    slices: Api<EndpointSlice>,
    cfg: ToKubernetesConfig,
}

impl Writer {
    fn slice_selector(&self, k8s_name: &str) -> String {
        format!("kubernetes.io/service-name={k8s_name},{SYNC_IDENTITY_LABEL}={}", self.cfg.identity)
    }

    async fn apply(&self, consul_name: &str, k8s_name: &str, instances: &[MirrorInstance]) -> Result<Applied, Error> {
        if let Some(existing) = self.services.get_opt(k8s_name).await?
            && !desired::owned_by(&self.cfg.identity, existing.metadata.labels.as_ref())
        {
            return Err(Error::Clash(k8s_name.to_string()));
        }
        let objects = desired::objects(&self.cfg, consul_name, k8s_name, instances);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        self.services.patch(k8s_name, &pp, &Patch::Apply(&with_kind(&objects.service, "v1", "Service"))).await?;
        let mut keep = HashSet::new();
        for slice in &objects.slices {
            let name = slice.name_any();
            self.slices
                .patch(&name, &pp, &Patch::Apply(&with_kind(slice, "discovery.k8s.io/v1", "EndpointSlice")))
                .await?;
            keep.insert(name);
        }
        let existing = self.slices.list_metadata(&ListParams::default().labels(&self.slice_selector(k8s_name))).await?;
        for s in existing.items {
            let name = s.name_any();
            if !keep.contains(&name) {
                ignore_not_found(self.slices.delete(&name, &DeleteParams::default()).await.map(|_| ()))?;
            }
        }
        Ok(Applied::Written)
    }

    /// Deletes the Service `k8s_name` and its slices, if this sync owns them.
    async fn remove(&self, k8s_name: &str) -> Result<Applied, Error> {
        if let Some(existing) = self.services.get_opt(k8s_name).await?
            && desired::owned_by(&self.cfg.identity, existing.metadata.labels.as_ref())
        {
            ignore_not_found(self.services.delete(k8s_name, &DeleteParams::default()).await.map(|_| ()))?;
        }
        let slices = self.slices.list_metadata(&ListParams::default().labels(&self.slice_selector(k8s_name))).await?;
        for s in slices.items {
            ignore_not_found(self.slices.delete(&s.name_any(), &DeleteParams::default()).await.map(|_| ()))?;
        }
        Ok(Applied::Removed)
    }

    /// Services this sync created: Kubernetes name → Consul name.
    async fn owned(&self) -> Result<BTreeMap<String, String>, Error> {
        let list = self
            .services
            .list_metadata(&ListParams::default().labels(&format!("{SYNC_IDENTITY_LABEL}={}", self.cfg.identity)))
            .await?;
        Ok(list
            .items
            .into_iter()
            .map(|s| {
                let consul = s.annotations().get(ANNOTATION_CONSUL_SERVICE).cloned().unwrap_or_default();
                (s.name_any(), consul)
            })
            .collect())
    }
}

fn ignore_not_found(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}

fn with_kind<T: serde::Serialize>(obj: &T, api_version: &str, kind: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    v["apiVersion"] = api_version.into();
    v["kind"] = kind.into();
    v
}

/// Runs Consul → Kubernetes for one DiscoveryCluster until `stop`.
pub async fn run(
    ctx: Arc<Context>,
    cfg: ToKubernetesConfig,
    consul: consul::Client,
    board: Arc<StatusBoard>,
    cluster: ObjectReference,
    stop: CancellationToken,
) {
    // Written with the sync's ServiceAccount's rights: the target namespace's RBAC decides.
    let client = ctx.client_as(&cfg.actor);
    let writer = Arc::new(Writer {
        services: Api::namespaced(client.clone(), &cfg.target_namespace),
        slices: Api::namespaced(client, &cfg.target_namespace),
        cfg: cfg.clone(),
    });
    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    let mut watchers: JoinSet<()> = JoinSet::new();
    watchers.spawn(watch::run(consul, cfg.clone(), tx));
    // The mirrored Consul service names, as the watch last reported them.
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut plan = NamePlan::default();
    let mut latest: HashMap<String, Vec<MirrorInstance>> = HashMap::new();
    // Kubernetes name → Consul name, of what this sync wrote (or found at start).
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut applies: JoinSet<ApplyDone> = JoinSet::new();
    let mut clashes: BTreeMap<String, String> = BTreeMap::new();
    // The API server's refusal of the last write, while writes are refused.
    let mut forbidden: Option<String> = None;
    let mut catalog_seen = false;
    let mut full_due = Instant::now() + cfg.anti_entropy;
    let mut retry_due: Option<Instant> = None;
    tracing::info!(identity = %cfg.identity, namespace = %cfg.target_namespace, "Consul → Kubernetes sync started");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            msg = rx.recv() => match msg {
                Some(Msg::Catalog(names)) => {
                    for gone in known.difference(&names) {
                        latest.remove(gone);
                        pending.insert(gone.clone());
                    }
                    known = names.clone();
                    let new_plan = plan_names(&cfg.prefix, &names);
                    for (c, k) in &new_plan.names {
                        if plan.names.get(c) != Some(k) {
                            pending.insert(c.clone());
                        }
                    }
                    plan = new_plan;
                    if !catalog_seen {
                        catalog_seen = true;
                        // Orphans from before a restart: owned Services whose Consul service is gone.
                        match writer.owned().await {
                            Ok(owned) => {
                                for (k8s, consul_name) in owned {
                                    if plan.names.get(&consul_name) != Some(&k8s) {
                                        pending.insert(consul_name.clone());
                                    }
                                    written.insert(k8s, consul_name);
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot list mirrored Services"),
                        }
                    }
                    let skipped: BTreeMap<String, String> = plan.skipped.clone();
                    update_clashes(&ctx, &cluster, &board, &mut clashes, |c| {
                        c.retain(|name, _| plan.names.contains_key(name) || skipped.contains_key(name));
                        c.extend(skipped);
                    }).await;
                }
                Some(Msg::Health(name, instances)) => {
                    if known.contains(&name) {
                        latest.insert(name.clone(), instances);
                        pending.insert(name);
                    }
                }
                None => break,
            },
            Some(done) = applies.join_next(), if !applies.is_empty() => {
                let Ok((consul_name, k8s_name, result, removed)) = done else { continue };
                in_flight.remove(&consul_name);
                for k8s in &removed {
                    written.remove(k8s);
                }
                if result.is_ok() && forbidden.is_some() {
                    update_forbidden(&ctx, &cluster, &board, &cfg, &mut forbidden, None).await;
                }
                match result {
                    Ok(Applied::Written) => {
                        written.insert(k8s_name, consul_name.clone());
                        update_clashes(&ctx, &cluster, &board, &mut clashes, |c| { c.remove(&consul_name); }).await;
                    }
                    Ok(Applied::Removed) => {
                        written.remove(&k8s_name);
                    }
                    Err(Error::Clash(k8s)) => {
                        let msg = format!("Service {k8s} exists and is not managed by concord; not overwritten");
                        update_clashes(&ctx, &cluster, &board, &mut clashes, |c| { c.insert(consul_name.clone(), msg); }).await;
                    }
                    Err(Error::Kube(kube::Error::Api(e))) if e.code == 403 => {
                        // RBAC of the target namespace refuses the sync's ServiceAccount:
                        // reported once, retried slowly (a RoleBinding may come later).
                        ctx.metrics.reconcile_failed(CONTROLLER, "forbidden");
                        pending.insert(consul_name);
                        retry_due.get_or_insert(Instant::now() + FORBIDDEN_RETRY);
                        update_forbidden(&ctx, &cluster, &board, &cfg, &mut forbidden, Some(e.message)).await;
                    }
                    Err(e) => {
                        ctx.metrics.reconcile_failed(CONTROLLER, e.category());
                        tracing::warn!(error = %e, service = %consul_name, "cannot mirror Consul service; retrying");
                        pending.insert(consul_name);
                        retry_due.get_or_insert(Instant::now() + Duration::from_secs(2));
                    }
                }
                let count = written.len() as i64;
                board.update(|s| s.to_kubernetes_services = count);
            },
            _ = tokio::time::sleep_until(full_due) => {
                full_due = Instant::now() + cfg.anti_entropy;
                pending.extend(plan.names.keys().filter(|n| latest.contains_key(*n)).cloned());
                if let Ok(owned) = writer.owned().await {
                    for (k8s, consul_name) in owned {
                        if plan.names.get(&consul_name) != Some(&k8s) {
                            pending.insert(consul_name.clone());
                        }
                        written.insert(k8s, consul_name);
                    }
                }
            },
            _ = tokio::time::sleep_until(retry_due.unwrap_or_else(Instant::now)), if retry_due.is_some() => {
                retry_due = None;
            },
        }
        // Start writes for pending services: a few at once, one at a time per service.
        if retry_due.is_some() {
            continue;
        }
        let ready: Vec<String> = pending.iter().filter(|n| !in_flight.contains(*n)).cloned().collect();
        for consul_name in ready {
            if applies.len() >= PARALLEL_APPLIES {
                break;
            }
            let target = match plan.names.get(&consul_name) {
                Some(k8s) => match latest.get(&consul_name) {
                    // Every instance came from Kubernetes (or none is left): not mirrored.
                    Some(instances) if instances.is_empty() => Some((k8s.clone(), None)),
                    Some(instances) => Some((k8s.clone(), Some(instances.clone()))),
                    None => None, // first health answer not in yet
                },
                None => None,
            };
            pending.remove(&consul_name);
            // Also remove what an earlier name mapping wrote for this Consul service.
            let stale: Vec<String> = written
                .iter()
                .filter(|(k8s, c)| **c == consul_name && target.as_ref().is_none_or(|(t, _)| t != *k8s))
                .map(|(k8s, _)| k8s.clone())
                .collect();
            let (k8s_name, instances) = match target {
                Some((k8s, instances)) => (Some(k8s), instances),
                None if !plan.names.contains_key(&consul_name) => (None, None),
                None => continue,
            };
            if k8s_name.is_none() && stale.is_empty() {
                continue;
            }
            in_flight.insert(consul_name.clone());
            let w = writer.clone();
            applies.spawn(async move {
                // The new name first, then what an earlier mapping wrote (a renamed
                // Service, e.g. after the name hash changed): no gap between the two.
                let (k8s, result) = match (k8s_name, instances) {
                    (Some(k8s), Some(inst)) => {
                        let r = w.apply(&consul_name, &k8s, &inst).await;
                        (k8s, r)
                    }
                    (Some(k8s), None) => {
                        let r = w.remove(&k8s).await;
                        (k8s, r)
                    }
                    (None, _) => (stale.last().cloned().unwrap_or_default(), Ok(Applied::Removed)),
                };
                if result.is_err() {
                    return (consul_name, k8s, result, Vec::new());
                }
                let mut removed = Vec::new();
                for k in stale {
                    if let Err(e) = w.remove(&k).await {
                        return (consul_name, k, Err(e), removed);
                    }
                    removed.push(k);
                }
                (consul_name, k8s, result, removed)
            });
        }
    }
    watchers.abort_all();
    applies.abort_all();
    tracing::info!(identity = %cfg.identity, "Consul → Kubernetes sync stopped");
}

/// Records whether the target namespace refuses the sync's writes: in
/// `status.sync.forbidden`, and a Warning Event (`Forbidden`) when a refusal starts.
async fn update_forbidden(
    ctx: &Context,
    cluster: &ObjectReference,
    board: &StatusBoard,
    cfg: &ToKubernetesConfig,
    forbidden: &mut Option<String>,
    now: Option<String>,
) {
    if *forbidden == now {
        return;
    }
    let line = now.as_ref().map(|why| {
        format!("{FORBIDDEN_PREFIX}{}: {} may not write mirrored Services: {why}", cfg.target_namespace, cfg.actor)
    });
    if forbidden.is_none()
        && let Some(line) = &line
    {
        ctx.event(cluster, true, "Forbidden", "SyncToKubernetes", line.clone()).await;
    }
    *forbidden = now;
    board.update(|s| {
        s.forbidden.retain(|l| !l.starts_with(FORBIDDEN_PREFIX));
        s.forbidden.extend(line);
    });
}

/// Applies `f` to the clash list; new clashes get a Warning Event on the DiscoveryCluster.
async fn update_clashes(
    ctx: &Context,
    cluster: &ObjectReference,
    board: &StatusBoard,
    clashes: &mut BTreeMap<String, String>,
    f: impl FnOnce(&mut BTreeMap<String, String>),
) {
    let before = clashes.clone();
    f(clashes);
    if *clashes == before {
        return;
    }
    for (name, why) in clashes.iter().filter(|(n, _)| !before.contains_key(*n)) {
        ctx.event(cluster, true, "ServiceNameClash", "SyncToKubernetes", format!("Consul service {name}: {why}")).await;
    }
    let lines: Vec<String> = clashes.iter().map(|(n, why)| format!("{n}: {why}")).collect();
    board.update(|s| s.name_clashes = lines);
}

/// Deletes every Service and EndpointSlice this sync created (direction turned off).
pub async fn remove_all(client: &kube::Client, cfg: &ToKubernetesConfig) -> Result<usize, Error> {
    let writer = Writer {
        services: Api::namespaced(client.clone(), &cfg.target_namespace),
        slices: Api::namespaced(client.clone(), &cfg.target_namespace),
        cfg: cfg.clone(),
    };
    let owned = writer.owned().await?;
    for k8s in owned.keys() {
        writer.remove(k8s).await?;
    }
    Ok(owned.len())
}
