//! KVConfig controller: keeps the keys under `spec.prefix` as declared.
//!
//! Steps, as everywhere: resolve the cluster → read the ConfigMaps/Secrets named →
//! compute the declared keys ([`desired`], pure) → read the prefix → plan the writes
//! ([`plan`], pure: ownership in KV flags, drift, prune, conflicts) → write them in
//! check-and-set transactions of at most 64 operations → write status.
//!
//! Drift: one blocking-query watch per object on its prefix (`?keys`, so only key names
//! travel) queues a reconcile the moment anything under it changes; under `Enforce`
//! the reconcile writes the declared value back (Event `DriftCorrected`, metric
//! `concord_drift_corrections_total`), under `Report` it sets `Drifted=True` with the
//! keys. The watch stops when the object is deleted and when the controller stops.
//!
//! Conflicts between objects: a key declared inline by an older KVConfig of the same
//! cluster (creationTimestamp, then name) is the older one's, and a key carrying another
//! object's ownership flags is that object's (unless that object is younger and declares
//! it too, which happens only when both were created within one second). The object that
//! loses reports `Synced=False, reason=KeyConflict` and writes nothing to those keys.
//!
//! Deletion: a finalizer deletes the keys carrying this object's flags; with
//! `deletionPolicy: Retain` it keeps them and clears the flags, so another object (or a
//! re-created one) can adopt them. When the DiscoveryCluster itself is gone there is
//! nothing to clean and the object is released with an Event.
//!
//! Refusals: a declared key that is invalid, duplicated, or over Consul's 512 KiB value
//! limit refuses the whole object before any write (`Synced=False` with the key named);
//! Consul refusing a write is reported with Consul's own message. Values never appear in
//! logs, Events or status (they may come from Secrets); key names do.
pub mod desired;
pub mod export;
pub mod plan;
#[cfg(test)]
mod props;

use self::desired::{DesiredError, Sources, Value, desired_keys, folder, full_key};
use self::plan::{Actual, Policy, Write, batches, owner_flags, plan};
use super::consul_watch::{BLOCKING_WAIT, WatchSet, watch_index};
use super::{
    apply_status, object_key, reconcile_with_finalizer, report_ready_when_primed, requeue_after_failure, watched_api,
};
use crate::cluster::{ClusterError, ClusterHandle};
use crate::consul::{self, ConsulIndex, KvWriteOptions, QueryOptions, TxnOpResult, TxnOutcome};
use crate::context::tenant::is_forbidden;
use crate::context::{Actor, Context};
use crate::resources::{
    ConditionUpdate, DeletionPolicy, KVConfig, KVConfigStatus, find_condition, set_condition, types,
};
use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const CONTROLLER: &str = "kvconfig";
/// Label a Secret must carry (`"true"`) before a KVConfig may copy it to Consul
/// (`spec.fromSecret`): creating a KVConfig must not turn into reading every Secret of
/// the namespace. The controller watches only Secrets with this label.
pub const KV_SOURCE_LABEL: &str = "concord.io/kv-source";
/// Finalizer that removes the keys an object wrote.
pub const FINALIZER: &str = "concord.io/kvconfig";
/// Full re-check even without a change notification (the watch is the fast path).
const RESYNC: Duration = Duration::from_secs(300);
/// Read-plan-write rounds per reconcile before a lost CAS race is left to the backoff.
const MAX_ROUNDS: usize = 5;
/// Keys named in a condition message or Event at most.
const NAMED_KEYS: usize = 10;

/// The KVConfig controller's state next to the shared [`Context`].
pub struct KvContext {
    pub ctx: Arc<Context>,
    store: Store<KVConfig>,
    watches: WatchSet,
    trigger: mpsc::UnboundedSender<ObjectRef<KVConfig>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Consul: {0}")]
    Consul(#[source] consul::Error),
    #[error("cannot resolve the cluster: {0}")]
    Cluster(#[source] ClusterError),
    #[error("cannot read {kind} {name}: {source}")]
    Source {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
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
            Error::Source { .. } | Error::Status(_) => "kube",
            Error::Finalizer(e) => super::finalizer_category(e, Error::category),
        }
    }
}

/// How one round of writes ended.
enum Written {
    /// Everything committed; the highest ModifyIndex written.
    Committed(Option<u64>),
    /// A check-and-set lost (someone wrote in between): read again. Carries Consul's words.
    LostRace(String),
}

async fn reconcile(obj: Arc<KVConfig>, kctx: Arc<KvContext>) -> Result<Action, Error> {
    let _timer = kctx.ctx.metrics.reconcile_started(CONTROLLER);
    reconcile_with_finalizer(&kctx.ctx.client, FINALIZER, obj, |o| apply(o, &kctx), |o| cleanup(o, &kctx))
        .await
        .map_err(Error::Finalizer)
}

/// Writes one Synced condition (and keeps the rest of the status).
async fn report(kctx: &KvContext, obj: &KVConfig, synced: ConditionUpdate, warn_event: bool) -> Result<(), Error> {
    let previous = obj.status.clone().unwrap_or_default();
    let generation = obj.meta().generation;
    let was = find_condition(&previous.conditions, types::SYNCED).map(|c| (c.reason.clone(), c.message.clone()));
    let changed = was.as_ref().map(|(r, m)| (r.as_str(), m.as_str())) != Some((synced.reason, synced.message.as_str()));
    let mut status = previous;
    status.observed_generation = generation;
    let (reason, message) = (synced.reason, synced.message.clone());
    status.conditions = set_condition(&status.conditions, synced, generation, now());
    apply_status(&kctx.ctx, obj, &status).await.map_err(Error::Status)?;
    if warn_event && changed {
        kctx.ctx.event(&obj.object_ref(&()), true, reason, "Reconcile", message).await;
    }
    Ok(())
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn backoff(kctx: &KvContext, obj: &KVConfig) -> Action {
    Action::requeue(kctx.ctx.backoff(&format!("{CONTROLLER}:{}", object_key(obj))))
}

async fn apply(obj: Arc<KVConfig>, kctx: &KvContext) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let handle = match kctx.ctx.clusters.resolve_tenant(&kctx.ctx.client, &ns, obj.spec.cluster_ref.as_deref()).await {
        Ok(h) => h,
        Err(e) => {
            report(kctx, &obj, ConditionUpdate::new(types::SYNCED, false, "ClusterNotReady", e.to_string()), true)
                .await?;
            return Ok(backoff(kctx, &obj));
        }
    };
    let prefix = folder(&obj.spec.prefix);
    if let Err(msg) = handle.grants.kv(&prefix) {
        report(kctx, &obj, ConditionUpdate::new(types::SYNCED, false, "NotGranted", msg), true).await?;
        return Ok(Action::requeue(RESYNC));
    }
    start_watch(kctx, &obj, &handle, &prefix);

    let actor = kctx.ctx.actor(&ns, obj.spec.service_account_name.as_deref());
    let sources = match read_sources(&kctx.ctx.client_as(&actor), &actor, &ns, &obj).await? {
        Ok(sources) => sources,
        Err((reason, msg)) => {
            report(kctx, &obj, ConditionUpdate::new(types::SYNCED, false, reason, msg), true).await?;
            // Labelling the Secret shows up through the (label-selected) Secret watch; a
            // new RoleBinding is seen at the next resync.
            return Ok(Action::requeue(RESYNC));
        }
    };
    let desired = match desired_keys(&obj.spec, &sources) {
        Ok(d) => d,
        Err(e) => {
            let retry = matches!(e, DesiredError::SourceNotFound { .. });
            report(kctx, &obj, ConditionUpdate::new(types::SYNCED, false, e.reason(), e.to_string()), true).await?;
            // A missing source shows up through the ConfigMap/Secret watch; a bad spec
            // waits for a new generation.
            return Ok(if retry { Action::requeue(RESYNC) } else { Action::await_change() });
        }
    };

    let me = owner_flags(&ns, &obj.name_any());
    let (claimed, yielding) = neighbours(&kctx.store, &obj);
    let policy = Policy {
        owner_flags: me,
        drift: obj.spec.drift_policy,
        prune: obj.spec.prune,
        claimed_elsewhere: &claimed,
        overridable_flags: &yielding,
    };
    let previous = obj.status.clone().unwrap_or_default();
    let mut last_index = previous.last_applied_index;
    let mut corrected = BTreeSet::new();
    let mut last_race = String::new();
    let mut settled = None;
    for _ in 0..MAX_ROUNDS {
        let actual = read_prefix(&handle.consul, &prefix).await.map_err(Error::Consul)?;
        let p = plan(&desired, &actual, &policy);
        if p.writes.is_empty() {
            settled = Some(p);
            break;
        }
        corrected.extend(p.corrected.iter().cloned());
        match write(&handle.consul, p.writes).await {
            Ok(Written::Committed(index)) => last_index = index.max(last_index),
            Ok(Written::LostRace(what)) => last_race = what,
            Err(e) => {
                let msg = format!("Consul refused the write: {e}");
                report(kctx, &obj, ConditionUpdate::new(types::SYNCED, false, "ConsulError", msg), true).await?;
                if e.is_transient() {
                    return Err(Error::Consul(e));
                }
                return Ok(backoff(kctx, &obj));
            }
        }
    }
    let Some(p) = settled else {
        let msg = format!("writes kept losing check-and-set races ({MAX_ROUNDS} rounds); last: {last_race}");
        report(kctx, &obj, ConditionUpdate::new(types::SYNCED, false, "ConsulError", msg), true).await?;
        return Ok(backoff(kctx, &obj));
    };

    if !corrected.is_empty() {
        kctx.ctx
            .metrics
            .drift_corrections
            .get_or_create(&crate::context::metrics::ControllerLabels { controller: CONTROLLER })
            .inc_by(corrected.len() as u64);
        let note = format!("reverted out-of-band edits of {} keys: {}", corrected.len(), name_some(corrected.iter()));
        kctx.ctx.event(&obj.object_ref(&()), false, "DriftCorrected", "Reconcile", note).await;
    }

    let generation = obj.meta().generation;
    let mut status = KVConfigStatus {
        observed_generation: generation,
        keys_in_sync: Some(p.in_sync as i64),
        drifted_keys: p.drifted.iter().take(50).cloned().collect(),
        last_applied_index: last_index,
        conditions: previous.conditions.clone(),
    };
    let synced = if p.conflicts.is_empty() {
        ConditionUpdate::new(types::SYNCED, true, "Synced", format!("{} keys in sync under {prefix}", p.in_sync))
    } else {
        let msg = format!(
            "{} declared keys belong to another KVConfig and were left alone: {}",
            p.conflicts.len(),
            name_some(p.conflicts.iter())
        );
        ConditionUpdate::new(types::SYNCED, false, "KeyConflict", msg)
    };
    let drifted = if p.drifted.is_empty() {
        ConditionUpdate::new(types::DRIFTED, false, "InSync", "")
    } else {
        let msg = format!("{} keys differ from the declared values: {}", p.drifted.len(), name_some(p.drifted.iter()));
        ConditionUpdate::new(types::DRIFTED, true, "DriftDetected", msg)
    };
    let new_conflict = !p.conflicts.is_empty()
        && find_condition(&previous.conditions, types::SYNCED).is_none_or(|c| c.message != synced.message);
    let new_drift = !p.drifted.is_empty() && previous.drifted_keys != status.drifted_keys;
    let (conflict_msg, drift_msg) = (synced.message.clone(), drifted.message.clone());
    status.conditions = set_condition(&status.conditions, synced, generation, now());
    status.conditions = set_condition(&status.conditions, drifted, generation, now());
    if status != previous {
        apply_status(&kctx.ctx, obj.as_ref(), &status).await.map_err(Error::Status)?;
    }
    if new_conflict {
        kctx.ctx.event(&obj.object_ref(&()), true, "KeyConflict", "Reconcile", conflict_msg).await;
    }
    if new_drift {
        kctx.ctx.event(&obj.object_ref(&()), true, "DriftDetected", "Reconcile", drift_msg).await;
    }
    kctx.ctx.reset_backoff(&format!("{CONTROLLER}:{}", object_key(obj.as_ref())));
    Ok(Action::requeue(RESYNC))
}

async fn cleanup(obj: Arc<KVConfig>, kctx: &KvContext) -> Result<Action, Error> {
    let key = object_key(obj.as_ref());
    kctx.watches.stop(&key);
    let ns = obj.namespace().unwrap_or_default();
    let handle = match kctx.ctx.clusters.resolve_tenant(&kctx.ctx.client, &ns, obj.spec.cluster_ref.as_deref()).await {
        Ok(h) => h,
        Err(e @ (ClusterError::NoCluster { .. } | ClusterError::NotFound { .. })) => {
            let note = format!("keys left in Consul: {e}");
            kctx.ctx.event(&obj.object_ref(&()), true, "CleanupSkipped", "Delete", note).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(Error::Cluster(e)),
    };
    let prefix = folder(&obj.spec.prefix);
    let me = owner_flags(&ns, &obj.name_any());
    let retain = obj.spec.deletion_policy == DeletionPolicy::Retain;
    for _ in 0..MAX_ROUNDS {
        let actual = read_prefix(&handle.consul, &prefix).await.map_err(Error::Consul)?;
        let writes = plan::release(&actual, me, retain);
        if writes.is_empty() {
            // Objects that deferred to this one may take the keys over now.
            for other in kctx.store.state() {
                if other.namespace() == obj.namespace() && other.name_any() != obj.name_any() {
                    let _ = kctx.trigger.unbounded_send(ObjectRef::from_obj(other.as_ref()));
                }
            }
            return Ok(Action::await_change());
        }
        match write(&handle.consul, writes).await.map_err(Error::Consul)? {
            Written::Committed(_) | Written::LostRace(_) => {}
        }
    }
    Err(Error::Consul(consul::Error::CasConflict { what: format!("keys under {prefix}"), index: ConsulIndex::ZERO }))
}

/// Starts (or keeps) the blocking-query watch on the object's prefix.
fn start_watch(kctx: &KvContext, obj: &KVConfig, handle: &ClusterHandle, prefix: &str) {
    let fingerprint = format!("{}/{}|{prefix}", handle.namespace, handle.name);
    let consul = handle.consul.clone();
    let prefix = prefix.to_string();
    let target = ObjectRef::from_obj(obj);
    let trigger = kctx.trigger.clone();
    kctx.watches.ensure(&object_key(obj), &fingerprint, move || async move {
        let query = move |index| {
            let (consul, prefix) = (consul.clone(), prefix.clone());
            async move {
                consul.kv_keys(&prefix, None, &QueryOptions::blocking(index, BLOCKING_WAIT)).await.map(|r| r.index)
            }
        };
        watch_index("kvconfig", query, move || {
            let _ = trigger.unbounded_send(target.clone());
        })
        .await;
    });
}

/// Every key under the prefix, as the planner sees it.
async fn read_prefix(consul: &consul::Client, prefix: &str) -> Result<Vec<Actual>, consul::Error> {
    let pairs = consul.kv_list(prefix, &QueryOptions::default()).await?.value;
    Ok(pairs
        .into_iter()
        .map(|p| Actual { key: p.key, value: Value(p.value), flags: p.flags, modify_index: p.modify_index })
        .collect())
}

/// Sends the writes: transactions of ≤ 64 check-and-set operations, oversized values as
/// single check-and-set PUTs. Stops at the first lost race.
async fn write(consul: &consul::Client, writes: Vec<Write>) -> Result<Written, consul::Error> {
    let b = batches(writes);
    let mut highest: Option<u64> = None;
    for txn in &b.transactions {
        let ops: Vec<_> = txn.iter().map(Write::to_txn).collect();
        match consul.txn(&ops).await? {
            TxnOutcome::Committed(results) => {
                for r in results {
                    if let TxnOpResult::Kv(pair) = r {
                        highest = Some(highest.unwrap_or(0).max(pair.modify_index.0));
                    }
                }
            }
            TxnOutcome::RolledBack { errors, .. } => {
                let what = errors.into_iter().map(|e| e.what).collect::<Vec<_>>().join("; ");
                return Ok(Written::LostRace(what));
            }
        }
    }
    for single in &b.singles {
        let result = match single {
            Write::Create { key, value, flags } => {
                consul
                    .kv_put(key, value.0.clone(), &KvWriteOptions { flags: *flags, cas: Some(ConsulIndex::ZERO) })
                    .await
            }
            Write::Update { key, value, flags, index } => {
                consul.kv_put(key, value.0.clone(), &KvWriteOptions { flags: *flags, cas: Some(*index) }).await
            }
            Write::Delete { key, index } => consul.kv_delete(key, Some(*index)).await,
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_cas_conflict() => return Ok(Written::LostRace(e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(Written::Committed(highest))
}

/// Reads the ConfigMaps and Secrets named, as `actor` (see `context::tenant`); a missing
/// one is left out (the pure step reports it). `Err((reason, message))` when a Secret
/// exists without the opt-in label [`KV_SOURCE_LABEL`] (its data is then never read), or
/// when the API server does not let `actor` read a source.
async fn read_sources(
    client: &kube::Client,
    actor: &Actor,
    ns: &str,
    obj: &KVConfig,
) -> Result<Result<Sources, (&'static str, String)>, Error> {
    match read_sources_as(client, ns, obj).await {
        Err(Error::Source { kind, name, source }) if is_forbidden(&source) => {
            Ok(Err(("Forbidden", format!("{actor} may not read {kind} {name}: {source}"))))
        }
        other => other,
    }
}

async fn read_sources_as(
    client: &kube::Client,
    ns: &str,
    obj: &KVConfig,
) -> Result<Result<Sources, (&'static str, String)>, Error> {
    let mut sources = Sources::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for s in &obj.spec.from_config_map {
        let found = cms.get_opt(&s.name).await.map_err(|source| Error::Source {
            kind: "ConfigMap",
            name: s.name.clone(),
            source,
        })?;
        if let Some(cm) = found {
            let mut data: BTreeMap<String, Value> = BTreeMap::new();
            for (k, v) in cm.data.unwrap_or_default() {
                data.insert(k, Value(v.into()));
            }
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, Value(v.0.into()));
            }
            sources.config_maps.insert(s.name.clone(), data);
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for s in &obj.spec.from_secret {
        let err = |source| Error::Source { kind: "Secret", name: s.name.clone(), source };
        let meta = secrets.get_metadata_opt(&s.name).await.map_err(err)?;
        if meta.is_some_and(|m| m.labels().get(KV_SOURCE_LABEL).map(String::as_str) != Some("true")) {
            return Ok(Err((
                "SourceNotLabelled",
                format!(
                    "Secret {} is not labelled {KV_SOURCE_LABEL}=true; whoever may edit it labels it to let KVConfig objects copy it to Consul",
                    s.name
                ),
            )));
        }
        let found = secrets.get_opt(&s.name).await.map_err(|source| Error::Source {
            kind: "Secret",
            name: s.name.clone(),
            source,
        })?;
        if let Some(secret) = found {
            let data = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, Value(v.0.into()))).collect();
            sources.secrets.insert(s.name.clone(), data);
        }
    }
    Ok(Ok(sources))
}

/// Same cluster: same namespace and same `clusterRef`.
fn same_cluster(a: &KVConfig, b: &KVConfig) -> bool {
    a.namespace() == b.namespace() && a.spec.cluster_ref == b.spec.cluster_ref
}

/// Older first: creationTimestamp, then name.
fn is_older(a: &KVConfig, b: &KVConfig) -> bool {
    let age = |o: &KVConfig| (o.meta().creation_timestamp.clone().map(|t| t.0), o.name_any());
    age(a) < age(b)
}

/// Keys older objects of the same cluster declare inline (they win them), and the
/// ownership flags of younger ones (whose keys this object may take over).
fn neighbours(store: &Store<KVConfig>, obj: &KVConfig) -> (BTreeSet<String>, BTreeSet<u64>) {
    let mut claimed = BTreeSet::new();
    let mut yielding = BTreeSet::new();
    for other in store.state() {
        if other.name_any() == obj.name_any() && other.namespace() == obj.namespace() {
            continue;
        }
        if !same_cluster(&other, obj) || other.meta().deletion_timestamp.is_some() {
            continue;
        }
        if is_older(&other, obj) {
            claimed.extend(other.spec.keys.iter().map(|k| full_key(&other.spec.prefix, &k.key)));
        } else {
            yielding.insert(owner_flags(&other.namespace().unwrap_or_default(), &other.name_any()));
        }
    }
    (claimed, yielding)
}

/// The objects that read a ConfigMap or Secret (for the watches on them).
fn readers(store: &Store<KVConfig>, ns: Option<String>, name: &str, secret: bool) -> Vec<ObjectRef<KVConfig>> {
    store
        .state()
        .into_iter()
        .filter(|o| o.namespace() == ns)
        .filter(|o| {
            let list = if secret { &o.spec.from_secret } else { &o.spec.from_config_map };
            list.iter().any(|s| s.name == name)
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Up to [`NAMED_KEYS`] names, then "and N more".
fn name_some<'a>(keys: impl ExactSizeIterator<Item = &'a String>) -> String {
    let total = keys.len();
    let mut out: Vec<&str> = keys.take(NAMED_KEYS).map(String::as_str).collect();
    let more = total.saturating_sub(out.len());
    let more_text = format!("and {more} more");
    if more > 0 {
        out.push(&more_text);
    }
    out.join(", ")
}

fn error_policy(obj: Arc<KVConfig>, error: &Error, kctx: Arc<KvContext>) -> Action {
    tracing::warn!(kvconfig = %object_key(obj.as_ref()), error = %error, "reconcile failed");
    requeue_after_failure(&kctx.ctx, CONTROLLER, obj.as_ref(), error.category())
}

/// Runs the controller until `stop` resolves; its prefix watches stop with it.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<KVConfig>(&ctx), watcher::Config::default());
    let store = controller.store();
    report_ready_when_primed(&ctx, CONTROLLER, store.clone());
    let (trigger, triggered) = mpsc::unbounded();
    let kctx = Arc::new(KvContext { ctx: ctx.clone(), store: store.clone(), watches: WatchSet::default(), trigger });
    let (cm_store, secret_store) = (store.clone(), store);
    controller
        .watches(watched_api::<ConfigMap>(&ctx), watcher::Config::default(), move |cm| {
            readers(&cm_store, cm.namespace(), &cm.name_any(), false)
        })
        .watches(
            watched_api::<Secret>(&ctx),
            watcher::Config::default().labels(&format!("{KV_SOURCE_LABEL}=true")),
            move |s| readers(&secret_store, s.namespace(), &s.name_any(), true),
        )
        .reconcile_on(triggered)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, kctx.clone())
        .for_each(|_| futures::future::ready(()))
        .await;
    kctx.watches.stop_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_some_caps_the_list() {
        let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        assert_eq!(name_some(keys.iter()), "k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, and 2 more");
        assert_eq!(name_some(keys[..2].iter()), "k0, k1");
    }
}
