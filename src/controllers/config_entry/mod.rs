//! One controller for every Consul config-entry kind (service-intentions,
//! service-defaults, service-resolver, ...). A kind's module holds only its mapping
//! ([`ConfigEntryKind`]); this module gives every kind the same behaviour, the same
//! condition (`Synced`) and the same Event reasons:
//!
//! - Writes use check-and-set on the entry's ModifyIndex (a concurrent edit makes the
//!   write fail; the controller reads again and decides again, never a blind overwrite).
//! - Entries carry the owner mark in Meta; an entry stamped by someone else is left
//!   alone (`OwnedElsewhere`); two objects naming one entry: the newer reports the
//!   duplicate ([`entry`] has the pure rules).
//! - Drift: one blocking-query watch per cluster on the list of the kind's entries (and
//!   of the kinds it depends on) queues a reconcile of every object of the kind when any
//!   changes; an out-of-band edit of a managed entry is written back (Event
//!   `DriftCorrected`, metric `concord_drift_corrections_total`). The dependency watch is
//!   also what retries an entry Consul refused (`ProtocolMismatch`, `UnknownSubset`) as
//!   soon as, say, the service-defaults that sets protocol http is written.
//! - A refusal leaves Consul's last good entry in place; the condition quotes Consul.
//! - Import: a DiscoveryCluster that asks for a kind (`spec.sync.importConfigEntries`,
//!   or `importIntentions`) gets an object for every entry nothing manages, labelled
//!   `concord.io/imported=true`, which then adopts the entry; an entry the kind cannot
//!   express exactly is not imported.
//! - Deletion: the finalizer deletes the entry only when it carries this object's owner
//!   Meta (check-and-set; already gone = done).
pub mod entry;
mod exported_services;
mod ingress_gateway;
mod jwt_provider;
mod mesh;
mod proxy_defaults;
mod service_defaults;
mod service_resolver;
mod service_router;
mod service_splitter;
mod terminating_gateway;

use self::entry::{Claim, Decision, KeyRules, Owner, decide, from_consul_keys, owner_of, refusal_reason, winner};
use super::consul_watch::{BLOCKING_WAIT, WatchSet, watch_index};
use super::{
    apply_status, object_key, reconcile_with_finalizer, report_ready_when_primed, requeue_after_failure, watched_api,
};
use crate::cluster::{ClusterError, ClusterHandle, Grants};
use crate::consul::{self, ConsulIndex, QueryOptions};
use crate::context::metrics::ControllerLabels;
use crate::context::{Context, Runner};
use crate::resources::{
    ConditionUpdate, ConfigEntryStatus, DiscoveryCluster, find_condition, is_condition_true, set_condition, types,
};
use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const IMPORTED_LABEL: &str = "concord.io/imported";
const RESYNC: Duration = Duration::from_secs(300);
const MAX_ROUNDS: usize = 5;

/// A Kubernetes kind that declares one Consul config entry: its names and its mapping.
/// Everything else (writes, ownership, drift, import, deletion, status) is shared.
pub trait ConfigEntryKind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// Consul's name of the kind (`service-defaults`).
    const CONSUL_KIND: &'static str;
    /// Metric label, backoff key and finalizer suffix (`servicedefaults`).
    const CONTROLLER: &'static str;
    /// `concord.io/<controller>`.
    const FINALIZER: &'static str;
    /// Kinds whose entries can make Consul accept or refuse this one (a router needs
    /// the protocol from service-defaults or proxy-defaults, a splitter the resolver's
    /// subsets): a change to them retries this kind.
    const DEPENDS_ON: &'static [&'static str] = &[];
    /// The reason a second object naming the same entry gets.
    const DUPLICATE_REASON: &'static str = "DuplicateEntry";
    /// Field names whose keys are the user's, and opaque fields (for the key mapping).
    const KEY_RULES: KeyRules = KeyRules::NONE;

    fn cluster_ref(&self) -> Option<&str>;
    /// The Consul entry's name.
    fn entry_name(&self) -> String;
    /// The entry's fields in Consul's names, without Kind, Name and Meta.
    fn entry_body(&self) -> Value;
    fn config_status(&self) -> Option<&ConfigEntryStatus>;
    /// The Synced message once Consul holds the entry.
    fn synced_message(&self) -> String {
        format!("{} {} written to Consul", Self::CONSUL_KIND, self.entry_name())
    }
    /// Whether Consul's entry holds what `desired` declares.
    fn matches(desired: &Value, actual: &Value) -> bool {
        entry::covers(desired, actual)
    }
    /// The object name and spec (without clusterRef) that declare an existing entry, for
    /// import; None when the kind cannot hold it. The controller checks that the spec
    /// writes back exactly that entry before it creates anything.
    fn import(entry: &Value) -> Option<(String, Value)> {
        import_fields(entry, Self::KEY_RULES).filter(|(name, _)| is_dns_subdomain(name))
    }
    /// Whether the cluster's tenancy grants let this object's namespace write the entry
    /// (`Err` names what is missing). Default: a service's entries need the service in
    /// `intentionDestinations`; a kind with one entry per cluster needs every service
    /// granted (`*`, or the list unset).
    fn granted(&self, grants: &Grants) -> Result<(), String> {
        if is_cluster_wide::<Self>() {
            grants.intention_destination("*").map_err(|e| format!("{} is cluster-wide: {e}", Self::CONSUL_KIND))
        } else if is_gateway::<Self>() {
            // The gateway and each service it routes or links must be granted; and Consul
            // lets only a token with mesh write write a gateway entry (it opens the mesh
            // to the outside or the outside to the mesh), which the derived token holds
            // only when every service is granted.
            let linked = gateway_services(&self.entry_body());
            for service in std::iter::once(self.entry_name()).chain(linked) {
                grants.intention_destination(&service).map_err(|e| format!("{}: {e}", Self::CONSUL_KIND))?;
            }
            grants.intention_destination("*").map_err(|e| {
                format!(
                    "{} entries need Consul's mesh write, held only with every service granted: {e}",
                    Self::CONSUL_KIND
                )
            })
        } else {
            grants.intention_destination(&self.entry_name())
        }
    }
    /// Whether `dc` asks for entries of this kind to be imported.
    fn wants_import(dc: &DiscoveryCluster) -> bool {
        dc.spec.sync.as_ref().is_some_and(|s| s.import_config_entries.iter().any(|k| k == Self::kind(&()).as_ref()))
    }

    /// The whole entry this object declares, stamped with its owner.
    fn desired_entry(&self, owner: &Owner) -> Value {
        let mut body = self.entry_body();
        if let Some(fields) = body.as_object_mut() {
            fields.insert("Kind".into(), Value::String(Self::CONSUL_KIND.into()));
            // Consul refuses a Name on its one unnamed kind.
            if Self::CONSUL_KIND != consul::MESH {
                fields.insert("Name".into(), Value::String(self.entry_name()));
            }
            fields.insert("Meta".into(), owner.meta());
        }
        body
    }
}

/// Implements [`ConfigEntryKind`] for a kind whose spec maps field by field (camelCase
/// to PascalCase, `clusterRef` aside) and whose Consul entry is named like the object,
/// or has the one name Consul allows (`name: "global"`).
macro_rules! field_mapped_kind {
    ($kind:ty, consul: $consul:literal, controller: $ctl:literal, depends_on: [$($dep:literal),*], user_keys: [$($uk:literal),*], opaque: [$($op:literal),*] $(, name: $fixed:literal)?) => {
        impl $crate::controllers::config_entry::ConfigEntryKind for $kind {
            const CONSUL_KIND: &'static str = $consul;
            const CONTROLLER: &'static str = $ctl;
            const FINALIZER: &'static str = concat!("concord.io/", $ctl);
            const DEPENDS_ON: &'static [&'static str] = &[$($dep),*];
            const KEY_RULES: $crate::controllers::config_entry::entry::KeyRules =
                $crate::controllers::config_entry::entry::KeyRules { user_keys: &[$($uk),*], opaque: &[$($op),*] };

            fn cluster_ref(&self) -> Option<&str> {
                self.spec.cluster_ref.as_deref()
            }

            fn entry_name(&self) -> String {
                $crate::controllers::config_entry::entry_name_of!(self $(, $fixed)?)
            }

            fn entry_body(&self) -> serde_json::Value {
                let mut spec = serde_json::to_value(&self.spec).unwrap_or(serde_json::Value::Null);
                if let Some(fields) = spec.as_object_mut() {
                    fields.remove("clusterRef");
                }
                $crate::controllers::config_entry::entry::to_consul_keys(&spec, Self::KEY_RULES)
            }

            fn config_status(&self) -> Option<&$crate::resources::ConfigEntryStatus> {
                self.status.as_ref()
            }

            $(
            /// The one entry of the kind: imported under its own name.
            fn import(entry: &serde_json::Value) -> Option<(String, serde_json::Value)> {
                let (_, spec) = $crate::controllers::config_entry::import_fields(entry, Self::KEY_RULES)?;
                Some(($fixed.to_string(), spec))
            }
            )?
        }
    };
}
pub(crate) use field_mapped_kind;

/// The fixed Consul name, else the object's name (for [`field_mapped_kind`]).
macro_rules! entry_name_of {
    ($self:ident, $fixed:literal) => {
        $fixed.to_string()
    };
    ($self:ident) => {
        $self.metadata.name.clone().unwrap_or_default()
    };
}
pub(crate) use entry_name_of;

/// Kinds with one entry per cluster (proxy-defaults, mesh, exported-services), and
/// jwt-provider: a provider any service's intentions may name, written with Consul's
/// mesh write.
fn is_cluster_wide<K: ConfigEntryKind>() -> bool {
    [consul::MESH, "proxy-defaults", "exported-services", "jwt-provider"].contains(&K::CONSUL_KIND)
}

/// Gateway kinds: named after the gateway's service, and routing to (ingress) or
/// linking (terminating) other services.
fn is_gateway<K: ConfigEntryKind>() -> bool {
    ["ingress-gateway", "terminating-gateway"].contains(&K::CONSUL_KIND)
}

/// The services a gateway entry (Consul's names) routes to or links, `*` included.
pub fn gateway_services(entry: &Value) -> Vec<String> {
    let named = |services: &Value| -> Vec<String> {
        services
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.get("Name")?.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut out = named(&entry["Services"]);
    for listener in entry["Listeners"].as_array().into_iter().flatten() {
        out.extend(named(&listener["Services"]));
    }
    out.sort();
    out.dedup();
    out
}

/// The entry's name and its fields as a spec (camelCase, without what Consul computes).
pub fn import_fields(entry: &Value, rules: KeyRules) -> Option<(String, Value)> {
    let name = entry.get("Name").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut spec = from_consul_keys(entry, rules);
    let fields = spec.as_object_mut()?;
    for k in ["kind", "name", "meta", "createIndex", "modifyIndex", "hash", "namespace", "partition"] {
        fields.remove(k);
    }
    Some((name, spec))
}

/// A DNS-1123 subdomain (what an object's name may be).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

struct Ctx<K: ConfigEntryKind> {
    ctx: Arc<Context>,
    store: Store<K>,
    watches: WatchSet,
    trigger: mpsc::UnboundedSender<()>,
    /// Generation each object last had in sync in Consul: an Update at that same
    /// generation is an out-of-band edit being reverted (kept here, not read from the
    /// status, which the watch-triggered reconcile may see a moment late).
    in_sync: Mutex<HashMap<String, Option<i64>>>,
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

async fn reconcile<K: ConfigEntryKind>(obj: Arc<K>, c: Arc<Ctx<K>>) -> Result<Action, Error> {
    let _timer = c.ctx.metrics.reconcile_started(K::CONTROLLER);
    reconcile_with_finalizer(&c.ctx.client, K::FINALIZER, obj, |o| apply(o, &c), |o| cleanup(o, &c))
        .await
        .map_err(Error::Finalizer)
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn owner<K: ConfigEntryKind>(obj: &K) -> Owner {
    Owner { namespace: obj.namespace().unwrap_or_default(), name: obj.name_any(), uid: obj.uid().unwrap_or_default() }
}

fn claim<K: ConfigEntryKind>(obj: &K) -> Claim {
    Claim {
        id: object_key(obj),
        created: obj.meta().creation_timestamp.as_ref().map(|t| t.0.as_second()),
        cluster: format!("{}/{}", obj.namespace().unwrap_or_default(), obj.cluster_ref().unwrap_or("")),
        entry: obj.entry_name(),
    }
}

/// Claims of the other live objects in the store.
fn other_claims<K: ConfigEntryKind>(store: &Store<K>, obj: &K) -> Vec<Claim> {
    let me = object_key(obj);
    store
        .state()
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none() && object_key(o.as_ref()) != me)
        .map(|o| claim(o.as_ref()))
        .collect()
}

/// Writes the Synced condition (and the modify index when known); an Event on change.
async fn report<K: ConfigEntryKind>(
    c: &Ctx<K>,
    obj: &K,
    synced: ConditionUpdate,
    index: Option<ConsulIndex>,
) -> Result<(), Error> {
    let previous = obj.config_status().cloned().unwrap_or_default();
    let generation = obj.meta().generation;
    let prev_c = find_condition(&previous.conditions, types::SYNCED);
    let changed = prev_c.is_none_or(|c| c.reason != synced.reason || c.message != synced.message);
    let (warning, reason, message) = (!synced.status, synced.reason, synced.message.clone());
    let status = ConfigEntryStatus {
        conditions: set_condition(&previous.conditions, synced, generation, now()),
        observed_generation: generation,
        consul_modify_index: index.map(|i| i.0).or(previous.consul_modify_index),
    };
    if status != previous {
        apply_status(&c.ctx, obj, &status).await.map_err(Error::Status)?;
    }
    if changed && warning {
        c.ctx.event(&obj.object_ref(&()), true, reason, "Reconcile", message).await;
    }
    Ok(())
}

fn backoff<K: ConfigEntryKind>(c: &Ctx<K>, obj: &K) -> Action {
    Action::requeue(c.ctx.backoff(&format!("{}:{}", K::CONTROLLER, object_key(obj))))
}

async fn apply<K: ConfigEntryKind>(obj: Arc<K>, c: &Arc<Ctx<K>>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let handle = match c.ctx.clusters.resolve_tenant(&c.ctx.client, &ns, obj.cluster_ref()).await {
        Ok(h) => h,
        Err(e) => {
            report(c, &obj, ConditionUpdate::new(types::SYNCED, false, "ClusterNotReady", e.to_string()), None).await?;
            return Ok(backoff(c, obj.as_ref()));
        }
    };
    if let Err(msg) = obj.granted(&handle.grants) {
        report(c, &obj, ConditionUpdate::new(types::SYNCED, false, "NotGranted", msg), None).await?;
        return Ok(Action::requeue(RESYNC));
    }
    start_watch(c, &handle, false);

    let mine = claim(obj.as_ref());
    let others = other_claims(&c.store, obj.as_ref());
    if let Some(w) = winner(&mine, &others) {
        let msg = format!("{} {} is already managed by {} {} (older)", K::CONSUL_KIND, mine.entry, K::kind(&()), w.id);
        report(c, &obj, ConditionUpdate::new(types::SYNCED, false, K::DUPLICATE_REASON, msg), None).await?;
        return Ok(Action::requeue(RESYNC));
    }
    // Entries stamped by younger objects claiming the same entry are taken over.
    let younger: Vec<String> =
        others.iter().filter(|o| o.entry == mine.entry && o.cluster == mine.cluster).map(|o| o.id.clone()).collect();

    let me = owner(obj.as_ref());
    let desired = obj.desired_entry(&me);
    let name = obj.entry_name();
    let previous = obj.config_status().cloned().unwrap_or_default();
    let key = object_key(obj.as_ref());
    let remembered = c.in_sync.lock().ok().and_then(|m| m.get(&key).copied());
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
            .config_entry_get::<Value>(K::CONSUL_KIND, &name, &QueryOptions::default())
            .await
            .map_err(Error::Consul)?;
        let cas =
            match decide(&desired, actual.value.as_ref(), &me.id(), K::matches, |o| younger.iter().any(|y| y == o)) {
                Decision::InSync { index } => {
                    if let Ok(mut m) = c.in_sync.lock() {
                        m.insert(key.clone(), obj.meta().generation);
                    }
                    if corrected {
                        c.ctx
                            .metrics
                            .drift_corrections
                            .get_or_create(&ControllerLabels { controller: K::CONTROLLER })
                            .inc();
                        let note = format!("reverted an out-of-band edit of {} {name}", K::CONSUL_KIND);
                        c.ctx.event(&obj.object_ref(&()), false, "DriftCorrected", "Reconcile", note).await;
                    }
                    let msg = obj.synced_message();
                    report(c, &obj, ConditionUpdate::new(types::SYNCED, true, "Synced", msg), Some(index)).await?;
                    c.ctx.reset_backoff(&format!("{}:{key}", K::CONTROLLER));
                    return Ok(Action::requeue(RESYNC));
                }
                Decision::OwnedElsewhere { owner } => {
                    let msg = format!("the Consul {} entry {name} belongs to {owner}; left alone", K::CONSUL_KIND);
                    report(c, &obj, ConditionUpdate::new(types::SYNCED, false, "OwnedElsewhere", msg), None).await?;
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
                // Whatever Consul held before stays in place.
                let text = e.to_string();
                let reason = refusal_reason(&text);
                let msg = format!("Consul refused the entry: {text}");
                report(c, &obj, ConditionUpdate::new(types::SYNCED, false, reason, msg), None).await?;
                if e.is_transient() {
                    return Err(Error::Consul(e));
                }
                return Ok(backoff(c, obj.as_ref()));
            }
        }
    }
    let msg = format!("writes kept losing check-and-set races ({MAX_ROUNDS} rounds)");
    report(c, &obj, ConditionUpdate::new(types::SYNCED, false, "ConsulError", msg), None).await?;
    Ok(backoff(c, obj.as_ref()))
}

async fn cleanup<K: ConfigEntryKind>(obj: Arc<K>, c: &Arc<Ctx<K>>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let handle = match c.ctx.clusters.resolve_tenant(&c.ctx.client, &ns, obj.cluster_ref()).await {
        Ok(h) => h,
        Err(e @ (ClusterError::NoCluster { .. } | ClusterError::NotFound { .. })) => {
            let note = format!("entry left in Consul: {e}");
            c.ctx.event(&obj.object_ref(&()), true, "CleanupSkipped", "Delete", note).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(Error::Cluster(e)),
    };
    let me = owner(obj.as_ref()).id();
    if let Ok(mut m) = c.in_sync.lock() {
        m.remove(&me);
    }
    let name = obj.entry_name();
    for _ in 0..MAX_ROUNDS {
        let current = handle
            .consul
            .config_entry_get::<Value>(K::CONSUL_KIND, &name, &QueryOptions::default())
            .await
            .map_err(Error::Consul)?
            .value;
        let Some(entry) = current.filter(|e| owner_of(e) == Some(me.as_str())) else {
            break; // gone, or not ours to delete
        };
        match handle.consul.config_entry_delete(K::CONSUL_KIND, &name, Some(entry::modify_index(&entry))).await {
            Ok(()) => break,
            Err(e) if e.is_cas_conflict() => {}
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(Error::Consul(e)),
        }
    }
    // A younger object naming the same entry may take over now.
    let _ = c.trigger.unbounded_send(());
    let cluster_in_use = other_claims(&c.store, obj.as_ref()).iter().any(|o| o.cluster.starts_with(&format!("{ns}/")));
    if !cluster_in_use && !import_enabled(c, &handle).await {
        c.watches.stop(&cluster_key(&handle));
    }
    Ok(Action::await_change())
}

fn cluster_key(handle: &ClusterHandle) -> String {
    format!("{}/{}", handle.namespace, handle.name)
}

async fn import_enabled<K: ConfigEntryKind>(c: &Ctx<K>, handle: &ClusterHandle) -> bool {
    let api: Api<DiscoveryCluster> = Api::namespaced(c.ctx.client.clone(), &handle.namespace);
    matches!(api.get_opt(&handle.name).await, Ok(Some(dc)) if K::wants_import(&dc))
}

/// Starts (or keeps) the cluster's watch on the kind's entries and its dependencies'.
fn start_watch<K: ConfigEntryKind>(c: &Arc<Ctx<K>>, handle: &ClusterHandle, import: bool) {
    let key = cluster_key(handle);
    let fingerprint = format!("{key}|import={import}");
    let existing = c.watches.keys().contains(&key);
    if existing && !import {
        return; // an importing watch also triggers; keep whichever runs
    }
    let consul = handle.consul.clone();
    let handle = handle.clone();
    let weak = Arc::downgrade(c);
    c.watches.ensure(&key, &fingerprint, move || async move {
        let (changed_tx, mut changed_rx) = mpsc::unbounded::<()>();
        if import {
            let _ = changed_tx.unbounded_send(()); // import once at start
        }
        let watches = std::iter::once(K::CONSUL_KIND).chain(K::DEPENDS_ON.iter().copied()).map(|kind| {
            let consul = consul.clone();
            let changed_tx = changed_tx.clone();
            let query = move |index| {
                let consul = consul.clone();
                async move {
                    consul
                        .config_entries_list::<serde::de::IgnoredAny>(kind, &QueryOptions::blocking(index, BLOCKING_WAIT))
                        .await
                        .map(|r| r.index)
                }
            };
            watch_index(K::CONTROLLER, query, move || {
                let _ = changed_tx.unbounded_send(());
            })
        });
        let watch = futures::future::join_all(watches);
        let react = async move {
            while changed_rx.next().await.is_some() {
                let Some(c) = weak.upgrade() else { return };
                let _ = c.trigger.unbounded_send(());
                if import && let Err(e) = import_unmanaged(&c, &handle).await {
                    tracing::warn!(cluster = %cluster_key(&handle), kind = K::CONSUL_KIND, error = %e, "importing config entries failed");
                }
            }
        };
        futures::future::join(watch, react).await;
    });
}

/// Creates an object for each entry nothing manages.
async fn import_unmanaged<K: ConfigEntryKind>(c: &Ctx<K>, handle: &ClusterHandle) -> Result<(), String> {
    if !import_enabled(c, handle).await {
        return Ok(());
    }
    let entries = handle
        .consul
        .config_entries_list::<Value>(K::CONSUL_KIND, &QueryOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let managed: Vec<String> = c
        .store
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(handle.namespace.as_str()))
        .map(|o| o.entry_name())
        .collect();
    let api: Api<K> = Api::namespaced(c.ctx.client.clone(), &handle.namespace);
    for found in entries.value {
        let entry_name = consul::ConfigEntry::name(&found).to_string();
        if owner_of(&found).is_some() || managed.contains(&entry_name) {
            continue;
        }
        let Some(object) = importable::<K>(&found, Some(&handle.namespace), Some(&handle.name)) else {
            tracing::info!(kind = K::CONSUL_KIND, entry = %entry_name, "entry uses features its kind cannot declare; not imported");
            continue;
        };
        // Create only: an existing object of that name is somebody's, never overwritten.
        match api.create(&Default::default(), &object).await {
            Ok(_) => {
                tracing::info!(kind = K::CONSUL_KIND, entry = %entry_name, object = %object.name_any(), "imported")
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The object that would adopt `found`, when it declares that entry exactly: in
/// `namespace`, naming `cluster` (both left out when None, as `concord import` may).
/// The controller's import and `concord import` both use this one mapping.
pub fn importable<K: ConfigEntryKind>(found: &Value, namespace: Option<&str>, cluster: Option<&str>) -> Option<K> {
    let (name, mut spec) = K::import(found)?;
    if let Some(cluster) = cluster {
        spec.as_object_mut()?.insert("clusterRef".into(), Value::String(cluster.to_string()));
    }
    let mut metadata = serde_json::json!({ "name": name, "labels": { IMPORTED_LABEL: "true" } });
    if let Some(namespace) = namespace {
        metadata["namespace"] = Value::String(namespace.to_string());
    }
    let object: K = serde_json::from_value(serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "spec": spec,
    }))
    .ok()?;
    // Lossless only: what the object would write must be what Consul holds (Meta aside).
    let mut declared =
        object.desired_entry(&Owner { namespace: String::new(), name: String::new(), uid: String::new() });
    let mut held = found.clone();
    for v in [&mut declared, &mut held] {
        if let Some(fields) = v.as_object_mut() {
            fields.remove("Meta");
        }
    }
    K::matches(&declared, &held).then_some(object)
}

fn error_policy<K: ConfigEntryKind>(obj: Arc<K>, error: &Error, c: Arc<Ctx<K>>) -> Action {
    tracing::warn!(kind = K::CONSUL_KIND, object = %object_key(obj.as_ref()), error = %error, "reconcile failed");
    requeue_after_failure(&c.ctx, K::CONTROLLER, obj.as_ref(), error.category())
}

/// Starts the importing watch for every DiscoveryCluster that asks for it.
async fn watch_import_settings<K: ConfigEntryKind>(c: Arc<Ctx<K>>) {
    let api = watched_api::<DiscoveryCluster>(&c.ctx);
    let mut clusters = watcher(api, watcher::Config::default()).applied_objects().boxed();
    while let Some(next) = clusters.next().await {
        let Ok(dc) = next else { continue };
        if K::wants_import(&dc)
            && let Ok(handle) = c.ctx.clusters.client_for(&c.ctx.client, &dc).await
        {
            start_watch(&c, &handle, true);
        }
    }
}

/// The runtime's handle on the controller of kind `K`.
pub fn runner<K: ConfigEntryKind>() -> Runner {
    Runner { name: K::CONTROLLER, run: |ctx, stop| Box::pin(run::<K>(ctx, stop)) }
}

/// Runs the controller of kind `K` until `stop` resolves; its watches stop with it.
pub async fn run<K: ConfigEntryKind>(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<K>(&ctx), watcher::Config::default());
    let store = controller.store();
    report_ready_when_primed(&ctx, K::CONTROLLER, store.clone());
    let (trigger, triggered) = mpsc::unbounded();
    let c = Arc::new(Ctx::<K> {
        ctx: ctx.clone(),
        store,
        watches: WatchSet::default(),
        trigger,
        in_sync: Default::default(),
    });
    let importer = tokio::spawn(watch_import_settings(c.clone()));
    controller
        .reconcile_all_on(triggered)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, c.clone())
        .for_each(|_| futures::future::ready(()))
        .await;
    importer.abort();
    c.watches.stop_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ServiceDefaults, ServiceResolver, ServiceRouter, ServiceSplitter};
    use serde_json::json;

    fn object<K: ConfigEntryKind>(name: &str, spec: Value) -> K {
        serde_json::from_value(json!({
            "apiVersion": "concord.io/v1alpha1", "kind": K::kind(&()),
            "metadata": { "name": name, "namespace": "team", "uid": "u-1" }, "spec": spec,
        }))
        .expect("object")
    }

    fn owner() -> Owner {
        Owner { namespace: "team".into(), name: "api".into(), uid: "u-1".into() }
    }

    /// What Consul would hold after a write: the entry plus its computed fields.
    fn stored(mut entry: Value) -> Value {
        entry["CreateIndex"] = json!(3);
        entry["ModifyIndex"] = json!(4);
        entry
    }

    #[test]
    fn service_defaults_map_circuit_breaking_to_consul_names() {
        let sd: ServiceDefaults = object(
            "web",
            json!({ "clusterRef": "consul", "protocol": "http",
            "externalSNI": "web.example", "upstreamConfig": { "overrides": [{ "name": "api",
                "limits": { "maxConnections": 100 },
                "passiveHealthCheck": { "maxFailures": 5, "enforcingConsecutive5xx": 100, "baseEjectionTime": "30s" } }] } }),
        );
        let entry = sd.desired_entry(&owner());
        assert_eq!(
            entry,
            json!({ "Kind": "service-defaults", "Name": "web", "Protocol": "http", "ExternalSNI": "web.example",
                "Meta": { "concord.io/owner": "team/api", "concord.io/owner-uid": "u-1" },
                "UpstreamConfig": { "Overrides": [{ "Name": "api", "Limits": { "MaxConnections": 100 },
                    "PassiveHealthCheck": { "MaxFailures": 5, "EnforcingConsecutive5xx": 100, "BaseEjectionTime": "30s" } }] } })
        );
        assert!(ServiceDefaults::matches(&entry, &stored(entry.clone())));
    }

    #[test]
    fn resolver_keeps_subset_names_and_failover_keys() {
        let sr: ServiceResolver = object(
            "api",
            json!({ "defaultSubset": "v1", "subsets": {
            "v1": { "filter": "\"v1\" in Service.Tags" }, "canary-2": { "onlyPassing": true } },
            "failover": { "*": { "datacenters": ["dc2"] } }, "connectTimeout": "1m" }),
        );
        let entry = sr.desired_entry(&owner());
        assert_eq!(entry["Subsets"]["canary-2"], json!({ "OnlyPassing": true }));
        assert_eq!(entry["Failover"]["*"], json!({ "Datacenters": ["dc2"] }));
        let mut held = stored(entry.clone());
        held["ConnectTimeout"] = json!("1m0s");
        assert!(ServiceResolver::matches(&entry, &held));
    }

    #[test]
    fn import_round_trips_each_kind_and_refuses_what_a_kind_cannot_say() {
        let cases: Vec<Value> = vec![
            json!({ "Kind": "service-router", "Name": "api", "Routes": [{ "Match": { "HTTP": { "PathPrefix": "/v2", "Methods": ["GET"] } },
                "Destination": { "ServiceSubset": "v2", "NumRetries": 2, "RequestHeaders": { "Set": { "X-Env": "prod" } } } }] }),
            json!({ "Kind": "service-splitter", "Name": "api", "Splits": [{ "Weight": 90, "ServiceSubset": "v1" }, { "Weight": 10, "ServiceSubset": "v2" }] }),
        ];
        let router: ServiceRouter = {
            let (name, mut spec) = ServiceRouter::import(&cases[0]).expect("router importable");
            spec["clusterRef"] = json!("consul");
            object(&name, spec)
        };
        assert_eq!(router.spec.routes[0].destination.as_ref().and_then(|d| d.num_retries), Some(2));
        let set =
            &router.spec.routes[0].destination.as_ref().and_then(|d| d.request_headers.clone()).expect("headers").set;
        assert_eq!(set.get("X-Env").map(String::as_str), Some("prod"), "header names are kept as written");
        let declared = router.desired_entry(&owner());
        let mut held = stored(cases[0].clone());
        held["Meta"] = owner().meta();
        assert!(ServiceRouter::matches(&declared, &held));

        let (name, spec) = ServiceSplitter::import(&cases[1]).expect("splitter importable");
        let splitter: ServiceSplitter = object(&name, spec);
        assert_eq!(splitter.spec.splits.len(), 2);

        // A field the kind does not model would be lost on the first write: not imported.
        let found = json!({ "Kind": "service-defaults", "Name": "api", "Protocol": "http", "Mode": "transparent" });
        let (name, spec) = ServiceDefaults::import(&found).expect("named");
        let sd: ServiceDefaults = object(&name, spec);
        let mut declared = sd.desired_entry(&owner());
        declared.as_object_mut().expect("object").remove("Meta");
        assert!(!ServiceDefaults::matches(&declared, &found), "transparent mode would be dropped");
    }

    #[test]
    fn object_names_must_be_dns_subdomains() {
        assert!(is_dns_subdomain("api"));
        assert!(is_dns_subdomain("api.v2"));
        assert!(!is_dns_subdomain("Api"));
        assert!(!is_dns_subdomain("api_v2"));
        assert!(!is_dns_subdomain("-api"));
        assert!(!is_dns_subdomain(""));
    }
}
