//! ServiceIntention controller: writes the Consul `service-intentions` config entry of
//! one destination, with check-and-set on its ModifyIndex (a concurrent edit makes the
//! write fail, and the controller reads again and decides again; never a blind
//! overwrite). Ownership and duplicate rules are in [`entry`] (pure).
//!
//! Drift: one blocking-query watch per cluster on the list of `service-intentions`
//! entries queues a reconcile of every ServiceIntention when any entry changes; an
//! out-of-band edit of a managed entry is written back (Event `DriftCorrected`, metric
//! `concord_drift_corrections_total`). The watch stops when the cluster's last object
//! goes and when the controller stops.
//!
//! Import: with `spec.sync.importIntentions: true` on a DiscoveryCluster, each entry no
//! object manages (no concord owner Meta, no ServiceIntention for its destination)
//! becomes a ServiceIntention `imported-<destination>` labelled
//! `concord.io/imported=true`, which then adopts the entry.
//!
//! Deletion: the finalizer deletes the entry only when it carries this object's owner
//! Meta (check-and-set; already gone = done).
pub mod entry;

use self::entry::{Claim, Decision, Owner, decide, from_consul, owner_of, to_consul, winner};
use super::consul_watch::{BLOCKING_WAIT, WatchSet, watch_index};
use super::{
    apply_status, object_key, reconcile_with_finalizer, report_ready_when_primed, requeue_after_failure, watched_api,
};
use crate::cluster::{ClusterError, ClusterHandle};
use crate::consul::{self, ConsulIndex, QueryOptions};
use crate::context::Context;
use crate::context::metrics::ControllerLabels;
use crate::resources::{
    ConditionUpdate, DiscoveryCluster, ServiceIntention, ServiceIntentionStatus, find_condition, is_condition_true,
    set_condition, types,
};
use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const CONTROLLER: &str = "serviceintention";
pub const FINALIZER: &str = "concord.io/serviceintention";
pub const IMPORTED_LABEL: &str = "concord.io/imported";
const RESYNC: Duration = Duration::from_secs(300);
const MAX_ROUNDS: usize = 5;

pub struct SiContext {
    pub ctx: Arc<Context>,
    store: Store<ServiceIntention>,
    watches: WatchSet,
    trigger: mpsc::UnboundedSender<()>,
    /// Generation each object last had in sync in Consul: an Update at that same
    /// generation is an out-of-band edit being reverted (kept here, not read from the
    /// status, which the watch-triggered reconcile may see a moment late).
    in_sync: std::sync::Mutex<std::collections::HashMap<String, Option<i64>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Consul: {0}")]
    Consul(#[source] consul::Error),
    #[error("cannot resolve the cluster: {0}")]
    Cluster(#[source] ClusterError),
    #[error("cannot write status: {0}")]
    Status(#[source] kube::Error),
    #[error(transparent)]
    Finalizer(#[from] Box<finalizer::Error<Error>>),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Consul(e) => e.category(),
            Error::Cluster(e) => e.category(),
            Error::Status(_) => "kube",
            Error::Finalizer(e) => super::finalizer_category(e, Error::category),
        }
    }
}

async fn reconcile(obj: Arc<ServiceIntention>, sctx: Arc<SiContext>) -> Result<Action, Error> {
    let _timer = sctx.ctx.metrics.reconcile_started(CONTROLLER);
    reconcile_with_finalizer(&sctx.ctx.client, FINALIZER, obj, |o| apply(o, &sctx), |o| cleanup(o, &sctx))
        .await
        .map_err(Error::Finalizer)
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn owner(obj: &ServiceIntention) -> Owner {
    Owner { namespace: obj.namespace().unwrap_or_default(), name: obj.name_any(), uid: obj.uid().unwrap_or_default() }
}

fn claim(obj: &ServiceIntention) -> Claim {
    Claim {
        id: object_key(obj),
        created: obj.meta().creation_timestamp.as_ref().map(|t| t.0.as_second()),
        cluster: format!("{}/{}", obj.namespace().unwrap_or_default(), obj.spec.cluster_ref.as_deref().unwrap_or("")),
        destination: obj.spec.destination.clone(),
    }
}

/// Claims of the other live objects in the store.
fn other_claims(store: &Store<ServiceIntention>, obj: &ServiceIntention) -> Vec<Claim> {
    let me = object_key(obj);
    store
        .state()
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none() && object_key(o.as_ref()) != me)
        .map(|o| claim(o))
        .collect()
}

/// Writes the Synced condition (and the modify index when known); an Event on change.
async fn report(
    sctx: &SiContext,
    obj: &ServiceIntention,
    synced: ConditionUpdate,
    index: Option<ConsulIndex>,
) -> Result<(), Error> {
    let previous = obj.status.clone().unwrap_or_default();
    let generation = obj.meta().generation;
    let prev_c = find_condition(&previous.conditions, types::SYNCED);
    let changed = prev_c.is_none_or(|c| c.reason != synced.reason || c.message != synced.message);
    let (warning, reason, message) = (!synced.status, synced.reason, synced.message.clone());
    let status = ServiceIntentionStatus {
        conditions: set_condition(&previous.conditions, synced, generation, now()),
        observed_generation: generation,
        consul_modify_index: index.map(|i| i.0).or(previous.consul_modify_index),
    };
    if status != previous {
        apply_status(&sctx.ctx, obj, &status).await.map_err(Error::Status)?;
    }
    if changed && warning {
        sctx.ctx.event(&obj.object_ref(&()), true, reason, "Reconcile", message).await;
    }
    Ok(())
}

fn backoff(sctx: &SiContext, obj: &ServiceIntention) -> Action {
    Action::requeue(sctx.ctx.backoff(&format!("{CONTROLLER}:{}", object_key(obj))))
}

async fn apply(obj: Arc<ServiceIntention>, sctx: &Arc<SiContext>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let handle = match sctx.ctx.clusters.resolve(&sctx.ctx.client, &ns, obj.spec.cluster_ref.as_deref()).await {
        Ok(h) => h,
        Err(e) => {
            report(sctx, &obj, ConditionUpdate::new(types::SYNCED, false, "ClusterNotReady", e.to_string()), None)
                .await?;
            return Ok(backoff(sctx, &obj));
        }
    };
    if let Err(msg) = handle.grants.intention_destination(&obj.spec.destination) {
        report(sctx, &obj, ConditionUpdate::new(types::SYNCED, false, "NotGranted", msg), None).await?;
        return Ok(Action::requeue(RESYNC));
    }
    start_watch(sctx, &handle, false);

    let mine = claim(&obj);
    let others = other_claims(&sctx.store, &obj);
    if let Some(w) = winner(&mine, &others) {
        let msg = format!("destination {} is already managed by ServiceIntention {} (older)", mine.destination, w.id);
        report(sctx, &obj, ConditionUpdate::new(types::SYNCED, false, "DuplicateDestination", msg), None).await?;
        return Ok(Action::requeue(RESYNC));
    }
    // Entries stamped by younger objects claiming the same destination are taken over.
    let younger: Vec<String> = others
        .iter()
        .filter(|c| c.destination == mine.destination && c.cluster == mine.cluster)
        .map(|c| c.id.clone())
        .collect();

    let me = owner(&obj);
    let desired = to_consul(&obj.spec, &me);
    let previous = obj.status.clone().unwrap_or_default();
    let key = object_key(obj.as_ref());
    let remembered = sctx.in_sync.lock().ok().and_then(|m| m.get(&key).copied());
    let was_synced = match remembered {
        Some(generation) => generation == obj.meta().generation,
        None => {
            is_condition_true(&previous.conditions, types::SYNCED)
                && previous.observed_generation == obj.meta().generation
        }
    };
    let mut corrected = false;
    for _ in 0..MAX_ROUNDS {
        let actual = handle
            .consul
            .service_intentions_get(&desired.name, &QueryOptions::default())
            .await
            .map_err(Error::Consul)?;
        let cas = match decide(&desired, actual.value.as_ref(), &me.id(), |o| younger.iter().any(|y| y == o)) {
            Decision::InSync { index } => {
                if let Ok(mut m) = sctx.in_sync.lock() {
                    m.insert(key.clone(), obj.meta().generation);
                }
                if corrected {
                    sctx.ctx
                        .metrics
                        .drift_corrections
                        .get_or_create(&ControllerLabels { controller: CONTROLLER })
                        .inc();
                    let note = format!("reverted an out-of-band edit of the intentions of {}", desired.name);
                    sctx.ctx.event(&obj.object_ref(&()), false, "DriftCorrected", "Reconcile", note).await;
                }
                let msg = format!("{} sources written to Consul", desired.sources.len());
                report(sctx, &obj, ConditionUpdate::new(types::SYNCED, true, "Synced", msg), Some(index)).await?;
                sctx.ctx.reset_backoff(&format!("{CONTROLLER}:{}", object_key(obj.as_ref())));
                return Ok(Action::requeue(RESYNC));
            }
            Decision::OwnedElsewhere { owner } => {
                let msg = format!("the Consul entry for {} belongs to {owner}; left alone", desired.name);
                report(sctx, &obj, ConditionUpdate::new(types::SYNCED, false, "OwnedElsewhere", msg), None).await?;
                return Ok(Action::requeue(RESYNC));
            }
            Decision::Create => ConsulIndex::ZERO,
            Decision::Update { index } => {
                corrected = corrected || was_synced;
                index
            }
        };
        match handle.consul.config_entry_set(&desired, Some(cas)).await {
            Ok(()) => {}
            Err(e) if e.is_cas_conflict() => {}
            Err(e) => {
                // Consul answers some validation failures with a 5xx: the condition quotes
                // its message either way; transient errors also go through the backoff.
                let msg = format!("Consul refused the entry: {e}");
                report(sctx, &obj, ConditionUpdate::new(types::SYNCED, false, "ConsulError", msg), None).await?;
                if e.is_transient() {
                    return Err(Error::Consul(e));
                }
                return Ok(backoff(sctx, &obj));
            }
        }
    }
    let msg = format!("writes kept losing check-and-set races ({MAX_ROUNDS} rounds)");
    report(sctx, &obj, ConditionUpdate::new(types::SYNCED, false, "ConsulError", msg), None).await?;
    Ok(backoff(sctx, &obj))
}

async fn cleanup(obj: Arc<ServiceIntention>, sctx: &Arc<SiContext>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let handle = match sctx.ctx.clusters.resolve(&sctx.ctx.client, &ns, obj.spec.cluster_ref.as_deref()).await {
        Ok(h) => h,
        Err(e @ (ClusterError::NoCluster { .. } | ClusterError::NotFound { .. })) => {
            let note = format!("entry left in Consul: {e}");
            sctx.ctx.event(&obj.object_ref(&()), true, "CleanupSkipped", "Delete", note).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(Error::Cluster(e)),
    };
    let me = owner(&obj).id();
    if let Ok(mut m) = sctx.in_sync.lock() {
        m.remove(&me);
    }
    for _ in 0..MAX_ROUNDS {
        let current = handle
            .consul
            .service_intentions_get(&obj.spec.destination, &QueryOptions::default())
            .await
            .map_err(Error::Consul)?
            .value;
        let Some(entry) = current.filter(|e| owner_of(e) == Some(me.as_str())) else {
            break; // gone, or not ours to delete
        };
        match handle.consul.config_entry_delete(consul::SERVICE_INTENTIONS, &entry.name, Some(entry.modify_index)).await
        {
            Ok(()) => break,
            Err(e) if e.is_cas_conflict() => {}
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(Error::Consul(e)),
        }
    }
    // A younger object naming the same destination may take over now.
    let _ = sctx.trigger.unbounded_send(());
    let cluster_in_use = other_claims(&sctx.store, &obj).iter().any(|c| c.cluster.starts_with(&format!("{ns}/")));
    if !cluster_in_use && !import_enabled(sctx, &handle).await {
        sctx.watches.stop(&cluster_key(&handle));
    }
    Ok(Action::await_change())
}

fn cluster_key(handle: &ClusterHandle) -> String {
    format!("{}/{}", handle.namespace, handle.name)
}

async fn import_enabled(sctx: &SiContext, handle: &ClusterHandle) -> bool {
    let api: Api<DiscoveryCluster> = Api::namespaced(sctx.ctx.client.clone(), &handle.namespace);
    matches!(api.get_opt(&handle.name).await, Ok(Some(dc)) if wants_import(&dc))
}

fn wants_import(dc: &DiscoveryCluster) -> bool {
    dc.spec.sync.as_ref().and_then(|s| s.import_intentions).unwrap_or(false)
}

/// Starts (or keeps) the cluster's watch on the intentions entries.
fn start_watch(sctx: &Arc<SiContext>, handle: &ClusterHandle, import: bool) {
    let key = cluster_key(handle);
    let fingerprint = format!("{key}|import={import}");
    let existing = sctx.watches.keys().contains(&key);
    if existing && !import {
        return; // an importing watch also triggers; keep whichever runs
    }
    let consul = handle.consul.clone();
    let handle = handle.clone();
    let weak = Arc::downgrade(sctx);
    sctx.watches.ensure(&key, &fingerprint, move || async move {
        let query = move |index| {
            let consul = consul.clone();
            async move {
                consul.service_intentions_list(&QueryOptions::blocking(index, BLOCKING_WAIT)).await.map(|r| r.index)
            }
        };
        let (changed_tx, mut changed_rx) = mpsc::unbounded::<()>();
        if import {
            let _ = changed_tx.unbounded_send(()); // import once at start
        }
        let watch = watch_index("serviceintention", query, move || {
            let _ = changed_tx.unbounded_send(());
        });
        let react = async move {
            while changed_rx.next().await.is_some() {
                let Some(sctx) = weak.upgrade() else { return };
                let _ = sctx.trigger.unbounded_send(());
                if import && let Err(e) = import_unmanaged(&sctx, &handle).await {
                    tracing::warn!(cluster = %cluster_key(&handle), error = %e, "importing intentions failed");
                }
            }
        };
        futures::future::join(watch, react).await;
    });
}

/// Creates a ServiceIntention for each entry nothing manages.
async fn import_unmanaged(sctx: &SiContext, handle: &ClusterHandle) -> Result<(), String> {
    if !import_enabled(sctx, handle).await {
        return Ok(());
    }
    let entries = handle.consul.service_intentions_list(&QueryOptions::default()).await.map_err(|e| e.to_string())?;
    let managed: Vec<String> = sctx
        .store
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(handle.namespace.as_str()))
        .map(|o| o.spec.destination.clone())
        .collect();
    let api: Api<ServiceIntention> = Api::namespaced(sctx.ctx.client.clone(), &handle.namespace);
    for entry in entries.value {
        if owner_of(&entry).is_some() || managed.contains(&entry.name) {
            continue;
        }
        let Some(mut spec) = from_consul(&entry) else {
            tracing::info!(destination = %entry.name, "intentions entry uses features a ServiceIntention cannot declare; not imported");
            continue;
        };
        spec.cluster_ref = Some(handle.name.clone());
        let name = imported_name(&entry.name);
        let object = serde_json::json!({
            "apiVersion": "concord.io/v1alpha1",
            "kind": "ServiceIntention",
            "metadata": { "name": name, "namespace": handle.namespace, "labels": { IMPORTED_LABEL: "true" } },
            "spec": spec,
        });
        // Create only: an existing object of that name is somebody's, never overwritten.
        if let Err(e) =
            api.create(&Default::default(), &serde_json::from_value(object).map_err(|e| e.to_string())?).await
        {
            if !matches!(&e, kube::Error::Api(s) if s.code == 409) {
                return Err(e.to_string());
            }
        } else {
            tracing::info!(destination = %entry.name, object = %name, "imported intentions");
        }
    }
    Ok(())
}

/// `imported-<destination>` as a DNS-1123 name (`*` → `all`).
pub fn imported_name(destination: &str) -> String {
    let base = if destination == "*" { "all".to_string() } else { destination.to_ascii_lowercase() };
    let mut name: String = format!("imported-{base}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

fn error_policy(obj: Arc<ServiceIntention>, error: &Error, sctx: Arc<SiContext>) -> Action {
    tracing::warn!(serviceintention = %object_key(obj.as_ref()), error = %error, "reconcile failed");
    requeue_after_failure(&sctx.ctx, CONTROLLER, obj.as_ref(), error.category())
}

/// Starts the importing watch for every DiscoveryCluster that asks for it.
async fn watch_import_settings(sctx: Arc<SiContext>) {
    let api = watched_api::<DiscoveryCluster>(&sctx.ctx);
    let mut clusters = watcher(api, watcher::Config::default()).applied_objects().boxed();
    while let Some(next) = clusters.next().await {
        let Ok(dc) = next else { continue };
        if wants_import(&dc)
            && let Ok(handle) = sctx.ctx.clusters.client_for(&sctx.ctx.client, &dc).await
        {
            start_watch(&sctx, &handle, true);
        }
    }
}

/// Runs the controller until `stop` resolves; its watches stop with it.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<ServiceIntention>(&ctx), watcher::Config::default());
    let store = controller.store();
    report_ready_when_primed(&ctx, CONTROLLER, store.clone());
    let (trigger, triggered) = mpsc::unbounded();
    let sctx = Arc::new(SiContext {
        ctx: ctx.clone(),
        store,
        watches: WatchSet::default(),
        trigger,
        in_sync: Default::default(),
    });
    let importer = tokio::spawn(watch_import_settings(sctx.clone()));
    controller
        .reconcile_all_on(triggered)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, sctx.clone())
        .for_each(|_| futures::future::ready(()))
        .await;
    importer.abort();
    sctx.watches.stop_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_names_are_dns_labels() {
        assert_eq!(imported_name("api"), "imported-api");
        assert_eq!(imported_name("*"), "imported-all");
        assert_eq!(imported_name("Web_Front"), "imported-web-front");
    }
}
