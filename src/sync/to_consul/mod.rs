//! Kubernetes → Consul. Watches Services, EndpointSlices and Namespaces into an index
//! keyed by Service, and keeps the sync's synthetic Consul nodes
//! (`k8s-sync-<identity>-NN`, [`SYNC_NODES`](crate::sync::SYNC_NODES) of them, an instance
//! placed by a hash of its ID) holding exactly the instances
//! [`desired::service_instances`] computes.
//!
//! - Incremental: every watch event marks its Service dirty; the loop drains every event
//!   already waiting, diffs the dirty Services against what it last wrote, and writes.
//! - Batching: writes go through `/v1/txn`. When idle, a change is written at once in a
//!   transaction of its own; while a write is in flight the loop keeps reading the watches
//!   into the index, and the next round carries everything that arrived meanwhile, packed
//!   64 operations per transaction, a few transactions in parallel. Latency first,
//!   throughput under bursts, no timer in between.
//! - Per-round timings (events, keys, changes, idle/read/compute/write time, transaction
//!   latency) are logged at debug level (`RUST_LOG=concord::sync::to_consul=debug`).
//! - Anti-entropy: at start (once every watch has listed) and every `anti_entropy`, the
//!   catalog's instances with our identity on our nodes (found by their node meta) are
//!   read back and compared with the desired set: orphans are removed, gaps filled,
//!   instances on the wrong node moved, empty nodes removed. A failed write schedules one
//!   too. This is what makes a controller killed mid-write converge on restart.
//! - Ownership: only instances carrying `concord-sync=<identity>` on our nodes are ever
//!   changed or removed.
//! - Bad input keeps the last good state: a Service whose sync annotations are invalid
//!   is registered as its annotations last were when valid (with its current
//!   endpoints), or, when this process never saw them valid, left as the catalog holds
//!   it; an operation Consul refuses is taken out of its transaction and the others are
//!   committed without it. Either way the Service gets a Warning Event and a line in
//!   `status.sync.rejectedServices` until it is fixed.
pub mod batch;
pub mod desired;
pub mod diff;
pub mod gate;
#[cfg(test)]
mod props;

use crate::consul::{self, Node, QueryOptions, TxnOp, TxnOutcome};
use crate::context::Context;
use crate::context::metrics::ReconcileTimer;
use crate::sync::status::StatusBoard;
use crate::sync::{EXTERNAL_SOURCE_KUBERNETES, META_EXTERNAL_SOURCE, META_SYNC, SyncIdentity, ToConsulConfig};
use desired::{Instance, ServiceKey, SliceEndpoints};
use diff::Change;
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const CONTROLLER: &str = "catalogsync-to-consul";
/// The longest wait before a full comparison retries after failed rounds. After a fault
/// heals, the churn that failed may never be followed by another event (a Service changed
/// once during a partition), so this retry is what repairs it: uncapped, the backoff
/// reached 26-38 s after 6 failures in a few seconds of partition (the fault suite's
/// minority partition and the soak's leader partition missed their 35 s recovery). A
/// retry is one read of this sync's own nodes; every 5 s is cheap for Consul.
const FULL_RETRY_CAP: Duration = Duration::from_secs(5);
/// Transactions in flight at once during a burst (public for the benchmark's floor).
pub const PARALLEL_TXNS: usize = 4;
/// The label the EndpointSlice controller (and hand-made slices) name their Service with.
const SLICE_SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// Every annotation the sync reads starts with this (`concord.io/sync`, `concord.io/tags`, ...).
const CONCORD_ANNOTATION_PREFIX: &str = "concord.io/";

/// Why a round of writes failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Consul: {0}")]
    Consul(#[from] consul::Error),
    #[error("Consul rolled back a catalog transaction: {0}")]
    RolledBack(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Consul(e) => e.category(),
            Error::RolledBack(_) => "txn_rolled_back",
        }
    }
}

enum Input {
    Service(Box<Event<Service>>),
    Slice(Event<IndexedSlice>),
    /// A namespace's name and whether it is active (not being deleted).
    Namespace(Event<(String, bool)>),
}

/// Services, their slices and namespace states, as the watches last reported them.
#[derive(Default)]
struct Index {
    services: HashMap<ServiceKey, Arc<Service>>,
    slices: HashMap<ServiceKey, BTreeMap<String, SliceEndpoints>>,
    /// (namespace, slice name) → the Service it was filed under.
    slice_owner: HashMap<(String, String), ServiceKey>,
    /// Namespace → active (exists and is not being deleted).
    namespaces: HashMap<String, bool>,
    /// With a ServiceAccount: the namespaces it may list Services and EndpointSlices in
    /// ([`gate`]); the others count as inactive. `None`: the controller's rights.
    allowed: Option<HashSet<String>>,
    relist_services: Option<Vec<Service>>,
    relist_slices: Option<Vec<IndexedSlice>>,
    relist_namespaces: Option<Vec<(String, bool)>>,
    primed: [bool; 3],
}

fn key_of<K: Resource>(obj: &K) -> ServiceKey {
    (obj.meta().namespace.clone().unwrap_or_default(), obj.meta().name.clone().unwrap_or_default())
}

/// An EndpointSlice as the index keeps it: where it is, the Service it names, and what
/// [`desired::service_instances`] reads of it. Converted as each watch event arrives, so
/// neither the index nor a relist in progress holds k8s-openapi's slices.
struct IndexedSlice {
    namespace: String,
    name: String,
    service: Option<String>,
    endpoints: SliceEndpoints,
}

impl From<EndpointSlice> for IndexedSlice {
    fn from(mut slice: EndpointSlice) -> Self {
        let (namespace, name) = key_of(&slice);
        let service = slice.metadata.labels.as_mut().and_then(|l| l.remove(SLICE_SERVICE_LABEL));
        Self { namespace, name, service, endpoints: slice.into() }
    }
}

/// `ev` with its object converted by `f`.
fn map_event<A, B>(ev: Event<A>, f: impl FnOnce(A) -> B) -> Event<B> {
    match ev {
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::InitDone => Event::InitDone,
    }
}

impl Index {
    fn is_primed(&self) -> bool {
        self.primed.iter().all(|p| *p)
    }

    fn namespace_active(&self, ns: &str) -> bool {
        self.namespaces.get(ns).copied().unwrap_or(false) && self.allowed.as_ref().is_none_or(|a| a.contains(ns))
    }

    fn put_service(&mut self, svc: Service, dirty: &mut BTreeSet<ServiceKey>) {
        let key = key_of(&svc);
        dirty.insert(key.clone());
        self.services.insert(key, Arc::new(svc));
    }

    fn put_slice(&mut self, slice: IndexedSlice, dirty: &mut BTreeSet<ServiceKey>) {
        let IndexedSlice { namespace: ns, name, service, endpoints } = slice;
        self.remove_slice(&ns, &name, dirty);
        if let Some(service) = service {
            let owner = (ns.clone(), service);
            dirty.insert(owner.clone());
            self.slice_owner.insert((ns, name.clone()), owner.clone());
            self.slices.entry(owner).or_default().insert(name, endpoints);
        }
    }

    fn remove_slice(&mut self, ns: &str, name: &str, dirty: &mut BTreeSet<ServiceKey>) {
        if let Some(owner) = self.slice_owner.remove(&(ns.to_string(), name.to_string())) {
            if let Some(m) = self.slices.get_mut(&owner) {
                m.remove(name);
                if m.is_empty() {
                    self.slices.remove(&owner);
                }
            }
            dirty.insert(owner);
        }
    }

    fn dirty_namespace(&self, ns: &str, dirty: &mut BTreeSet<ServiceKey>) {
        dirty.extend(self.services.keys().filter(|(n, _)| n == ns).cloned());
    }

    fn apply(&mut self, input: Input, dirty: &mut BTreeSet<ServiceKey>) {
        match input {
            Input::Service(ev) => match *ev {
                Event::Apply(s) => self.put_service(s, dirty),
                Event::Delete(s) => {
                    let key = key_of(&s);
                    self.services.remove(&key);
                    dirty.insert(key);
                }
                Event::Init => self.relist_services = Some(Vec::new()),
                Event::InitApply(s) => self.relist_services.get_or_insert_with(Vec::new).push(s),
                Event::InitDone => {
                    // A relist may hide deletes: everything old and new is dirty.
                    dirty.extend(self.services.keys().cloned());
                    self.services.clear();
                    for s in self.relist_services.take().unwrap_or_default() {
                        self.put_service(s, dirty);
                    }
                    self.primed[0] = true;
                }
            },
            Input::Slice(ev) => match ev {
                Event::Apply(s) => self.put_slice(s, dirty),
                Event::Delete(s) => self.remove_slice(&s.namespace, &s.name, dirty),
                Event::Init => self.relist_slices = Some(Vec::new()),
                Event::InitApply(s) => self.relist_slices.get_or_insert_with(Vec::new).push(s),
                Event::InitDone => {
                    dirty.extend(self.slices.keys().cloned());
                    self.slices.clear();
                    self.slice_owner.clear();
                    for s in self.relist_slices.take().unwrap_or_default() {
                        self.put_slice(s, dirty);
                    }
                    self.primed[1] = true;
                }
            },
            Input::Namespace(ev) => match ev {
                Event::Apply((name, active)) => {
                    self.namespaces.insert(name.clone(), active);
                    self.dirty_namespace(&name, dirty);
                }
                Event::Delete((name, _)) => {
                    self.namespaces.remove(&name);
                    self.dirty_namespace(&name, dirty);
                }
                Event::Init => self.relist_namespaces = Some(Vec::new()),
                Event::InitApply(n) => self.relist_namespaces.get_or_insert_with(Vec::new).push(n),
                Event::InitDone => {
                    self.namespaces = self.relist_namespaces.take().unwrap_or_default().into_iter().collect();
                    dirty.extend(self.services.keys().cloned());
                    self.primed[2] = true;
                }
            },
        }
    }

    /// What `key` would be with its validated annotations set to `good` (their values
    /// when last valid; absent ones removed).
    fn desired_with(
        &self,
        cfg: &ToConsulConfig,
        key: &ServiceKey,
        good: &BTreeMap<String, String>,
    ) -> desired::Desired {
        let Some(svc) = self.services.get(key) else { return desired::Desired::default() };
        let mut svc = Service::clone(svc);
        let annotations = svc.metadata.annotations.get_or_insert_with(Default::default);
        for name in desired::VALIDATED_ANNOTATIONS {
            match good.get(name) {
                Some(v) => annotations.insert(name.to_string(), v.clone()),
                None => annotations.remove(name),
            };
        }
        desired::service_instances(cfg, &svc, &self.slices_of(key), self.namespace_active(&key.0))
    }

    fn desired_for(&self, cfg: &ToConsulConfig, key: &ServiceKey) -> desired::Desired {
        let Some(svc) = self.services.get(key) else { return desired::Desired::default() };
        desired::service_instances(cfg, svc, &self.slices_of(key), self.namespace_active(&key.0))
    }

    fn slices_of(&self, key: &ServiceKey) -> Vec<&SliceEndpoints> {
        self.slices.get(key).map(|m| m.values().collect()).unwrap_or_default()
    }
}

/// What this sync believes the catalog holds (its own instances), by ID and by Service,
/// and which of its nodes are registered.
#[derive(Default)]
struct Applied {
    by_id: BTreeMap<String, Instance>,
    by_key: HashMap<ServiceKey, BTreeSet<String>>,
    nodes: BTreeSet<String>,
}

impl Applied {
    fn reset(&mut self, actual: Owned) {
        self.by_key.clear();
        for (id, i) in &actual.instances {
            self.by_key.entry(i.key()).or_default().insert(id.clone());
        }
        self.by_id = actual.instances;
        self.nodes = actual.nodes;
    }

    fn of_key(&self, key: &ServiceKey) -> BTreeMap<String, Instance> {
        self.by_key
            .get(key)
            .map(|ids| ids.iter().filter_map(|id| self.by_id.get(id).map(|i| (id.clone(), i.clone()))).collect())
            .unwrap_or_default()
    }

    /// Records a committed change, taking it by value: a full pass commits thousands, and
    /// cloning each instance again here would double the peak memory of that pass.
    fn record(&mut self, change: Change) {
        match change {
            Change::Upsert { instance, .. } | Change::Move { instance, .. } => {
                let key = instance.key();
                let id = instance.id.clone();
                if let Some(old) = self.by_id.insert(id.clone(), instance)
                    && old.key() != key
                    && let Some(ids) = self.by_key.get_mut(&old.key())
                {
                    ids.remove(&old.id);
                }
                self.by_key.entry(key).or_default().insert(id);
            }
            Change::Delete { id, .. } => {
                if let Some(old) = self.by_id.remove(&id) {
                    let key = old.key();
                    if let Some(ids) = self.by_key.get_mut(&key) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            self.by_key.remove(&key);
                        }
                    }
                }
            }
        }
    }
}

/// Watches `api`, dropping from each object what the sync never reads: its field
/// ownership bookkeeping (most of an object's size), and whatever `slim` drops.
fn watch<K>(api: Api<K>, cfg: watcher::Config, slim: fn(&mut K)) -> BoxStream<'static, Event<K>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watcher::watcher(api, cfg)
        .default_backoff()
        .modify(move |o: &mut K| {
            o.meta_mut().managed_fields = None;
            slim(o);
        })
        .filter_map(|r| async move {
            match r {
                Ok(ev) => Some(ev),
                Err(e) => {
                    tracing::warn!(error = %e, "watch failed; retrying");
                    None
                }
            }
        })
        .boxed()
}

/// Drops the parts of a Service the sync never reads: of its spec all but ports, type and
/// external name (selector, cluster IPs, ...), its status unless its LoadBalancer ingress
/// is what gets registered, and every annotation that is not one of concord's (such as
/// `kubectl.kubernetes.io/last-applied-configuration`, a copy of the whole object). Its
/// name, namespace, UID and resource version stay: Events name the Service by them.
fn slim_service(svc: &mut Service) {
    if let Some(spec) = svc.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::ServiceSpec {
            ports: spec.ports.take().map(|mut p| {
                p.shrink_to_fit();
                p
            }),
            type_: spec.type_.take(),
            external_name: spec.external_name.take(),
            ..Default::default()
        };
    }
    svc.metadata.owner_references = None;
    if let Some(annotations) = svc.metadata.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with(CONCORD_ANNOTATION_PREFIX));
    }
    let uses_lb = svc.metadata.annotations.as_ref().and_then(|a| a.get(crate::sync::ANNOTATION_USE_LB_IP)).is_some();
    if !uses_lb {
        svc.status = None;
    }
}

/// The synthetic node `name` of this sync, as it registers it.
pub fn sync_node(identity: &SyncIdentity, name: &str) -> Node {
    Node {
        node: name.to_string(),
        address: "127.0.0.1".into(),
        meta: [
            (META_EXTERNAL_SOURCE.to_string(), EXTERNAL_SOURCE_KUBERNETES.to_string()),
            (META_SYNC.to_string(), identity.as_str().to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

/// One of this sync's nodes as the catalog holds it.
struct FoundNode {
    name: String,
    /// Every service on it, ours or not.
    services: usize,
    /// Ours (our identity in the service meta), with their checks.
    owned: BTreeMap<String, Instance>,
}

/// Reads every node carrying this sync's identity (whatever its name: older layouts
/// included), with the instances it holds.
async fn read_nodes(consul: &consul::Client, identity: &SyncIdentity) -> Result<Vec<FoundNode>, Error> {
    let opts = QueryOptions { filter: Some(identity.nodes_filter()), ..Default::default() };
    let nodes = consul.catalog_nodes(&opts).await?.value;
    futures::stream::iter(nodes.into_iter().map(|n| async move {
        let services = consul.catalog_node_services(&n.node, &QueryOptions::default()).await?.value;
        let checks = consul.health_node(&n.node, &QueryOptions::default()).await?.value;
        let services = services.map(|s| s.services).unwrap_or_default();
        let owned = diff::owned_instances(identity, &services, &checks);
        Ok(FoundNode { name: n.node, services: services.len(), owned })
    }))
    .buffer_unordered(PARALLEL_TXNS)
    .try_collect()
    .await
}

/// This sync's instances as the catalog holds them, and its registered nodes.
#[derive(Default)]
struct Owned {
    instances: BTreeMap<String, Instance>,
    nodes: BTreeSet<String>,
}

fn rolled_back(errors: Vec<consul::TxnError>) -> Error {
    Error::RolledBack(errors.into_iter().map(|e| e.what).collect::<Vec<_>>().join("; "))
}

/// Commits `ops` as one transaction; a rollback is an error.
async fn commit(consul: &consul::Client, ops: &[TxnOp]) -> Result<(), Error> {
    match consul.txn(ops).await? {
        TxnOutcome::Committed(_) => Ok(()),
        TxnOutcome::RolledBack { errors, .. } => Err(rolled_back(errors)),
    }
}

/// Commits `ops` one after the other, [`consul::MAX_TXN_OPS`] per transaction.
async fn commit_in_chunks(consul: &consul::Client, ops: &[TxnOp]) -> Result<(), Error> {
    for chunk in ops.chunks(consul::MAX_TXN_OPS) {
        commit(consul, chunk).await?;
    }
    Ok(())
}

/// Deletes whole nodes (their services and checks with them).
async fn delete_nodes(consul: &consul::Client, nodes: Vec<String>) -> Result<(), Error> {
    let ops: Vec<TxnOp> = nodes.into_iter().map(|node| TxnOp::NodeDelete { node }).collect();
    commit_in_chunks(consul, &ops).await
}

/// Reads this sync's instances back from the catalog for a full comparison. Instances on
/// another node than their own (an older layout, or a changed node count) are moved
/// first, each atomically; nodes left with no service at all are removed.
async fn read_owned(consul: &consul::Client, identity: &SyncIdentity) -> Result<Owned, Error> {
    let found = read_nodes(consul, identity).await?;
    let mut out = Owned::default();
    let mut moves = Vec::new();
    let mut left: BTreeMap<String, usize> = BTreeMap::new();
    for node in found {
        let mut services = node.services;
        for (id, instance) in node.owned {
            if identity.node_of(&id) == node.name {
                out.instances.insert(id, instance);
            } else {
                services -= 1;
                moves.push(Change::Move { instance, from: node.name.clone() });
            }
        }
        left.insert(node.name, services);
    }
    out.nodes = left.iter().filter(|(_, s)| **s > 0).map(|(n, _)| n.clone()).collect();
    if !moves.is_empty() {
        tracing::info!(identity = %identity, instances = moves.len(), "moving instances to their nodes");
        let written = write(consul.clone(), identity.clone(), out.nodes.clone(), moves, HashMap::new()).await;
        if let Some(e) = written.error {
            return Err(e);
        }
        out.nodes.extend(written.nodes);
        for change in written.committed {
            if let Change::Move { instance, .. } = change {
                // A node instances just moved to is not empty, whatever it held before.
                if let Some(s) = left.get_mut(&identity.node_of(&instance.id)) {
                    *s += 1;
                }
                out.instances.insert(instance.id.clone(), instance);
            }
        }
    }
    let empty: Vec<String> = left.into_iter().filter(|(_, s)| *s == 0).map(|(n, _)| n).collect();
    if !empty.is_empty() {
        delete_nodes(consul, empty).await?;
    }
    Ok(out)
}

/// What one round of writes did: the changes Consul committed (to record in
/// [`Applied`]), those it refused (with its reason; the rest of their transaction was
/// committed without them), the nodes it registered, and the first failure, if any.
struct Written {
    committed: Vec<Change>,
    refused: Vec<(Change, String)>,
    nodes: Vec<String>,
    error: Option<Error>,
}

/// How one transaction ended once refused operations were taken out of it.
struct Isolated {
    committed: Vec<Change>,
    refused: Vec<(Change, String)>,
    error: Option<Error>,
}

/// The change each operation of `changes` (packed as [`batch::batches`] packs them)
/// belongs to, by operation index.
fn op_owners(identity: &SyncIdentity, changes: &[Change]) -> Vec<usize> {
    changes
        .iter()
        .enumerate()
        .flat_map(|(i, c)| std::iter::repeat_n(i, c.ops(&identity.node_of(c.id())).len()))
        .collect()
}

/// The Service a change is for; a delete names only its instance, so those are looked
/// up in `deletes` (instance ID → Service, from the round that planned them).
fn change_key(change: &Change, deletes: &HashMap<String, ServiceKey>) -> Option<ServiceKey> {
    match change {
        Change::Upsert { instance, .. } | Change::Move { instance, .. } => Some(instance.key()),
        Change::Delete { id, .. } => deletes.get(id).cloned(),
    }
}

/// Commits one batch; when Consul rolls it back naming the operations it refused, the
/// changes those belong to are set aside with every other change of their Services in
/// the batch (a Service is written whole or not at all: a refused new instance must not
/// leave the old one deleted), and the rest is committed again (each retry drops at least
/// one change, so this ends). A rollback that names no operation of ours is an error
/// for the whole batch.
async fn commit_isolating(
    consul: &consul::Client,
    identity: &SyncIdentity,
    deletes: &HashMap<String, ServiceKey>,
    batch: batch::Batch,
) -> Isolated {
    let mut changes = batch.changes;
    let mut ops = batch.ops;
    let mut refused = Vec::new();
    loop {
        match consul.txn(&ops).await {
            Ok(TxnOutcome::Committed(_)) => return Isolated { committed: changes, refused, error: None },
            Err(e) => return Isolated { committed: Vec::new(), refused, error: Some(Error::Consul(e)) },
            Ok(TxnOutcome::RolledBack { errors, .. }) => {
                let owners = op_owners(identity, &changes);
                let mut why: BTreeMap<usize, String> = BTreeMap::new();
                for e in &errors {
                    if let Some(&owner) = owners.get(e.op_index) {
                        why.entry(owner).or_insert_with(|| e.what.clone());
                    }
                }
                if why.is_empty() {
                    return Isolated { committed: Vec::new(), refused, error: Some(rolled_back(errors)) };
                }
                let held: BTreeSet<ServiceKey> = why.keys().filter_map(|i| change_key(&changes[*i], deletes)).collect();
                let mut kept = Vec::new();
                for (i, change) in changes.into_iter().enumerate() {
                    match why.remove(&i) {
                        Some(reason) => refused.push((change, reason)),
                        // Held back with its Service; written once the Service is.
                        None if change_key(&change, deletes).is_some_and(|k| held.contains(&k)) => {}
                        None => kept.push(change),
                    }
                }
                tracing::warn!(
                    refused = refused.len(),
                    retried = kept.len(),
                    "Consul refused operations of a catalog transaction; committing the others without them"
                );
                if kept.is_empty() {
                    return Isolated { committed: Vec::new(), refused, error: None };
                }
                ops = kept.iter().flat_map(|c| c.ops(&identity.node_of(c.id()))).collect();
                changes = kept;
            }
        }
    }
}

/// Writes `changes`, packed into transactions, [`PARALLEL_TXNS`] in flight; `nodes`: the
/// sync's nodes known to be registered. Owns its inputs so the loop can keep reading watch
/// events while it runs.
async fn write(
    consul: consul::Client,
    identity: SyncIdentity,
    nodes: BTreeSet<String>,
    changes: Vec<Change>,
    deletes: HashMap<String, ServiceKey>,
) -> Written {
    let mut out = Written { committed: Vec::new(), refused: Vec::new(), nodes: Vec::new(), error: None };
    // New nodes first, in a transaction of their own: the batches then run in parallel
    // without each having to register the nodes it touches.
    let register = batch::nodes_to_register(&identity, &nodes, &changes);
    if !register.is_empty() {
        let ops: Vec<TxnOp> = register.iter().map(|n| TxnOp::NodeSet(sync_node(&identity, n))).collect();
        if let Err(e) = commit_in_chunks(&consul, &ops).await {
            out.error = Some(e);
            return out;
        }
        out.nodes.extend(register);
    }
    let (consul, id, deletes) = (&consul, &identity, &deletes);
    let packed = batch::batches(identity.clone(), changes, consul::MAX_TXN_OPS, |c| change_key(c, deletes));
    let mut results = futures::stream::iter(packed.map(|b| async move {
        let started = Instant::now();
        let outcome = commit_isolating(consul, id, deletes, b).await;
        (outcome, started.elapsed())
    }))
    .buffer_unordered(PARALLEL_TXNS);
    let (mut txns, mut txn_total, mut txn_max) = (0u32, Duration::ZERO, Duration::ZERO);
    while let Some((outcome, took)) = results.next().await {
        txns += 1;
        txn_total += took;
        txn_max = txn_max.max(took);
        out.committed.extend(outcome.committed);
        out.refused.extend(outcome.refused);
        if let Some(e) = outcome.error {
            out.error.get_or_insert(e);
        }
    }
    if txns > 0 {
        tracing::debug!(
            txns,
            txn_mean_ms = (txn_total / txns).as_millis() as u64,
            txn_max_ms = txn_max.as_millis() as u64,
            "to-consul transactions"
        );
    }
    out
}

/// A round of writes in flight, with what the loop needs when it ends.
struct InFlight<'a> {
    full: bool,
    changes: usize,
    started: Instant,
    _timer: ReconcileTimer<'a>,
}

/// Records what a round committed, and schedules the next full comparison: after the
/// anti-entropy period when a full pass succeeded, after a backoff when a write failed.
fn finish_round(
    ctx: &Context,
    cfg: &ToConsulConfig,
    round: InFlight<'_>,
    written: Written,
    applied: &mut Applied,
    failures: &mut u32,
    full_due: &mut Instant,
) -> Vec<(ServiceKey, String)> {
    let n = written.committed.len();
    // The Service each refused change is for (a delete names only the instance).
    let refused: Vec<(ServiceKey, String)> = written
        .refused
        .into_iter()
        .filter_map(|(change, why)| {
            let key = match &change {
                Change::Upsert { instance, .. } | Change::Move { instance, .. } => instance.key(),
                Change::Delete { id, .. } => applied.by_id.get(id)?.key(),
            };
            Some((key, format!("Consul refused instance {}: {why}", change.id())))
        })
        .collect();
    for c in written.committed {
        applied.record(c);
    }
    applied.nodes.extend(written.nodes);
    let write_ms = round.started.elapsed().as_millis() as u64;
    let failed_before = *failures;
    *full_due = next_full_due(
        Instant::now(),
        *full_due,
        round.full,
        failed_before,
        written.error.is_some(),
        cfg,
        rand::random(),
    );
    match written.error {
        None => {
            *failures = 0;
            if round.full {
                let instances = applied.by_id.len();
                tracing::info!(identity = %cfg.identity, changes = n, instances, write_ms, "anti-entropy pass done");
            } else if failed_before > 0 {
                tracing::info!(identity = %cfg.identity, changes = n, write_ms, "Consul answers again; a full comparison follows now");
            } else {
                tracing::debug!(changes = n, write_ms, "catalog updated");
            }
        }
        Some(e) => {
            *failures += 1;
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            tracing::warn!(
                error = %e, changes = round.changes, written = n, identity = %cfg.identity,
                "catalog write failed; a full comparison follows"
            );
        }
    }
    refused
}

/// When the next full comparison is due, after a round of writes ended: the anti-entropy
/// period after a full pass that succeeded; a backoff after a failure (`failed_before`
/// failures came before this one), at most [`FULL_RETRY_CAP`]; at once after the first
/// success that follows failures,
/// since Consul answers again and what the failed rounds left undone must not wait out
/// the backoff (no watch event may ever come to redo it: the soak found a leader
/// partition whose heal took 39 s this way); else unchanged.
fn next_full_due(
    now: Instant,
    due: Instant,
    full: bool,
    failed_before: u32,
    failed: bool,
    cfg: &ToConsulConfig,
    jitter: f64,
) -> Instant {
    match (failed, full) {
        (true, _) => now + crate::context::backoff_delay(failed_before + 1, jitter).min(FULL_RETRY_CAP),
        (false, true) => now + cfg.anti_entropy,
        (false, false) if failed_before > 0 => now,
        (false, false) => due,
    }
}

/// Runs Kubernetes → Consul for one DiscoveryCluster until `stop`.
pub async fn run(
    ctx: Arc<Context>,
    cfg: ToConsulConfig,
    consul: consul::Client,
    board: Arc<StatusBoard>,
    cluster: ObjectReference,
    stop: CancellationToken,
) {
    let services: Api<Service> = crate::context::watched_api(&ctx);
    let slices: Api<EndpointSlice> = crate::context::watched_api(&ctx);
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let ns_cfg = match &ctx.args.namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let mut inputs: SelectAll<BoxStream<'static, Input>> = futures::stream::select_all([
        watch(services, watcher::Config::default(), slim_service).map(|e| Input::Service(Box::new(e))).boxed(),
        watch(slices, watcher::Config::default(), |_| {})
            .map(|e| Input::Slice(map_event(e, IndexedSlice::from)))
            .boxed(),
        watch(namespaces, ns_cfg, |n| n.spec = None)
            .map(|e| Input::Namespace(map_event(e, |n| (n.name_any(), n.metadata.deletion_timestamp.is_none()))))
            .boxed(),
    ]);

    let mut gate = gate::NamespaceGate::new(ctx.client_as(&cfg.actor), &cfg.actor);
    let mut index = Index { allowed: gate.as_ref().map(|_| HashSet::new()), ..Default::default() };
    let mut applied = Applied::default();
    let mut dirty: BTreeSet<ServiceKey> = BTreeSet::new();
    // Per Service: its annotation problems (reported once per new set), the values of
    // its validated annotations when last valid, and what Consul last refused of it.
    let mut problems: HashMap<ServiceKey, Vec<String>> = HashMap::new();
    let mut last_good: HashMap<ServiceKey, BTreeMap<String, String>> = HashMap::new();
    let mut refused: BTreeMap<ServiceKey, String> = BTreeMap::new();
    // When the next full comparison is due; the first runs once the watches are primed.
    let mut full_due = Instant::now();
    let mut failures: u32 = 0;
    tracing::info!(identity = %cfg.identity, "Kubernetes → Consul sync started");
    // The round of writes in flight, if any. While it runs the loop keeps applying watch
    // events to the index (marking Services dirty), so the next round carries everything
    // that arrived meanwhile. Draining only what is already buffered is not enough: the
    // HTTP body of a watch is read on demand, so unread events stay in the socket.
    let mut writing: Option<(InFlight<'_>, futures::future::BoxFuture<'static, Written>)> = None;
    // Watch events applied since the last round started, and when the loop last went idle.
    let mut events = 0usize;
    let mut idle_since = Instant::now();
    loop {
        let primed = index.is_primed();
        tokio::select! {
            _ = stop.cancelled() => break,
            input = inputs.next() => match input {
                Some(i) => {
                    index.apply(i, &mut dirty);
                    events += 1;
                }
                None => break,
            },
            written = futures::future::OptionFuture::from(writing.as_mut().map(|(_, w)| w)),
                if writing.is_some() =>
            {
                if let (Some((done, _)), Some(written)) = (writing.take(), written) {
                    let committed: BTreeSet<ServiceKey> = written.committed.iter().filter_map(|c| match c {
                        Change::Upsert { instance, .. } | Change::Move { instance, .. } => Some(instance.key()),
                        Change::Delete { .. } => None,
                    }).collect();
                    let now_refused = finish_round(&ctx, &cfg, done, written, &mut applied, &mut failures, &mut full_due);
                    // A Service with a write committed is fixed, unless this round also refused some of it.
                    let keys: BTreeSet<&ServiceKey> = now_refused.iter().map(|(k, _)| k).collect();
                    refused.retain(|k, _| {
                        index.services.contains_key(k) && (!committed.contains(k) || keys.contains(k))
                    });
                    for (key, why) in now_refused {
                        if refused.get(&key) != Some(&why) {
                            if let Some(svc) = index.services.get(&key) {
                                ctx.event(&svc.object_ref(&()), true, "ConsulRefused", "SyncToConsul", why.clone()).await;
                            }
                            refused.insert(key, why);
                        }
                    }
                    board.update(|s| {
                        s.to_consul_instances = applied.by_id.len() as i64;
                        s.rejected_services = rejected_lines(&problems, &refused);
                    });
                }
                idle_since = Instant::now();
            }
            _ = tokio::time::sleep_until(full_due), if primed && writing.is_none() => {}
        }
        // Drain everything that is already waiting: one write round carries it all.
        while let Some(Some(i)) = inputs.next().now_or_never() {
            index.apply(i, &mut dirty);
            events += 1;
        }
        if !index.is_primed() || writing.is_some() {
            continue;
        }
        if let Some(g) = gate.as_mut() {
            // Every namespace again on an anti-entropy pass; a new one at once.
            let all = Instant::now() >= full_due;
            let wanted: BTreeSet<String> = index
                .services
                .keys()
                .map(|(ns, _)| ns)
                .filter(|ns| cfg.namespace_allowed(ns) && index.namespaces.get(*ns) == Some(&true))
                .cloned()
                .collect();
            if all || g.needs_check(wanted.iter()) {
                let refreshed = g.refresh(&wanted, all).await;
                for ns in &refreshed.changed {
                    index.dirty_namespace(ns, &mut dirty);
                }
                for line in refreshed.newly_forbidden {
                    ctx.event(&cluster, true, "Forbidden", "SyncToConsul", line).await;
                }
                index.allowed = Some(g.allowed());
                let lines = g.lines();
                board.update(|s| {
                    s.forbidden.retain(|l| !l.starts_with(gate::FORBIDDEN_PREFIX));
                    s.forbidden.extend(lines);
                });
            }
        }
        let full = Instant::now() >= full_due;
        if !full && dirty.is_empty() {
            continue;
        }
        let reading = Instant::now();
        let keys: Vec<ServiceKey> = if full {
            dirty.clear();
            match read_owned(&consul, &cfg.identity).await {
                Ok(actual) => applied.reset(actual),
                Err(e) => {
                    failures += 1;
                    ctx.metrics.reconcile_failed(CONTROLLER, e.category());
                    tracing::warn!(error = %e, identity = %cfg.identity, "cannot read the catalog; retrying");
                    full_due =
                        Instant::now() + crate::context::backoff_delay(failures, rand::random()).min(FULL_RETRY_CAP);
                    continue;
                }
            }
            index.services.keys().chain(applied.by_key.keys()).cloned().collect::<BTreeSet<_>>().into_iter().collect()
        } else {
            std::mem::take(&mut dirty).into_iter().collect()
        };
        let read = reading.elapsed();
        if keys.is_empty() {
            if full {
                full_due = Instant::now() + cfg.anti_entropy;
            }
            continue;
        }
        let timer = ctx.metrics.reconcile_started(CONTROLLER);
        let computing = Instant::now();
        let mut changes = Vec::new();
        let mut deletes: HashMap<String, ServiceKey> = HashMap::new();
        for key in &keys {
            let d = index.desired_for(&cfg, key);
            let valid = d.problems.is_empty();
            report_problems(&ctx, &index, key, d.problems, &mut problems).await;
            let instances = if valid {
                match index.services.get(key) {
                    Some(svc) => last_good.insert(key.clone(), validated_annotations(svc)),
                    None => last_good.remove(key),
                };
                d.instances
            } else {
                // Invalid annotations: register as they last were when valid, else leave
                // the Service as the catalog holds it.
                match last_good.get(key).map(|good| index.desired_with(&cfg, key, good)) {
                    Some(d) if d.problems.is_empty() => d.instances,
                    _ => continue,
                }
            };
            let want: BTreeMap<String, Instance> = instances.into_iter().map(|i| (i.id.clone(), i)).collect();
            let planned = diff::diff(&want, &applied.of_key(key));
            if planned.is_empty() {
                refused.remove(key);
            }
            for change in &planned {
                if let Change::Delete { id, .. } = change {
                    deletes.insert(id.clone(), key.clone());
                }
            }
            changes.extend(planned);
        }
        board.update(|s| s.rejected_services = rejected_lines(&problems, &refused));
        tracing::debug!(
            full,
            events,
            keys = keys.len(),
            changes = changes.len(),
            idle_ms = reading.saturating_duration_since(idle_since).as_millis() as u64,
            read_ms = read.as_millis() as u64,
            compute_ms = computing.elapsed().as_millis() as u64,
            "to-consul round"
        );
        events = 0;
        let round = InFlight { full, changes: changes.len(), started: Instant::now(), _timer: timer };
        let nodes = applied.nodes.clone();
        writing = Some((round, write(consul.clone(), cfg.identity.clone(), nodes, changes, deletes).boxed()));
    }
    tracing::info!(identity = %cfg.identity, "Kubernetes → Consul sync stopped");
}

/// The values of `svc`'s validated annotations.
fn validated_annotations(svc: &Service) -> BTreeMap<String, String> {
    let Some(annotations) = svc.metadata.annotations.as_ref() else { return BTreeMap::new() };
    desired::VALIDATED_ANNOTATIONS
        .iter()
        .filter_map(|name| Some((name.to_string(), annotations.get(*name)?.clone())))
        .collect()
}

/// At most this many lines in `status.sync.rejectedServices`.
const MAX_REJECTED_LINES: usize = 100;

/// `status.sync.rejectedServices`: `<ns>/<name>: <why>`, sorted, bounded.
fn rejected_lines(problems: &HashMap<ServiceKey, Vec<String>>, refused: &BTreeMap<ServiceKey, String>) -> Vec<String> {
    let mut lines: BTreeMap<&ServiceKey, Vec<&str>> = BTreeMap::new();
    for (key, p) in problems {
        lines.entry(key).or_default().extend(p.iter().map(String::as_str));
    }
    for (key, why) in refused {
        lines.entry(key).or_default().push(why);
    }
    let total = lines.len();
    let mut out: Vec<String> = lines
        .into_iter()
        .take(MAX_REJECTED_LINES)
        .map(|((ns, name), why)| format!("{ns}/{name}: {}", why.join("; ")))
        .collect();
    if total > MAX_REJECTED_LINES {
        out.push(format!("... and {} more", total - MAX_REJECTED_LINES));
    }
    out
}

/// Publishes an Event on a Service whose annotations are wrong, once per new problem set.
async fn report_problems(
    ctx: &Context,
    index: &Index,
    key: &ServiceKey,
    now: Vec<String>,
    seen: &mut HashMap<ServiceKey, Vec<String>>,
) {
    if now.is_empty() {
        seen.remove(key);
        return;
    }
    if seen.get(key) == Some(&now) {
        return;
    }
    if let Some(svc) = index.services.get(key) {
        let reference = svc.object_ref(&());
        let note = format!("{}; the last good registration stays", now.join("; "));
        ctx.event(&reference, true, "InvalidSyncAnnotation", "SyncToConsul", note).await;
    }
    seen.insert(key.clone(), now);
}

/// Removes every instance this sync owns, and each of its nodes that has nothing else on
/// it (sync turned off, or its DiscoveryCluster deleted), in bounded transactions
/// ([`removal_batches`]), [`PARALLEL_TXNS`] in flight.
pub async fn remove_all(consul: &consul::Client, identity: &SyncIdentity) -> Result<usize, Error> {
    let found = read_nodes(consul, identity).await?;
    let removed = found.iter().map(|n| n.owned.len()).sum();
    let (services, nodes) = removal_batches(&found);
    for phase in [services, nodes] {
        futures::stream::iter(phase)
            .map(|ops| async move { commit(consul, &ops).await })
            .buffer_unordered(PARALLEL_TXNS)
            .try_collect::<()>()
            .await?;
    }
    Ok(removed)
}

/// The transactions that remove `found`: first the services to delete one by one, then
/// the nodes to delete whole, each phase packed so that no transaction removes more than
/// [`consul::MAX_TXN_OPS`] services. Deleting a node deletes all of its services in one
/// Raft entry, which every server applies before any other write (about 0.3 ms a
/// service: 2 s for a node of 6,250 at 100,000 instances, 30 s for 16 such nodes in one
/// transaction, past the client's timeout). So only a node holding at most that many
/// services goes whole; on a larger one its services are deleted first, 64 at a time,
/// and the node after them. On a node shared with someone else's services only ours are
/// deleted, and the node stays.
fn removal_batches(found: &[FoundNode]) -> (Vec<Vec<TxnOp>>, Vec<Vec<TxnOp>>) {
    let max = consul::MAX_TXN_OPS;
    let mut service_ops = Vec::new();
    // (node, services it still holds when the node delete runs)
    let mut node_deletes = Vec::new();
    for n in found {
        let whole = n.services == n.owned.len();
        if whole && n.services <= max {
            node_deletes.push((n.name.clone(), n.services));
            continue;
        }
        service_ops.extend(n.owned.values().map(|i| TxnOp::ServiceDelete {
            node: n.name.clone(),
            service_id: i.id.clone(),
            service_name: i.name.clone(),
        }));
        if whole {
            node_deletes.push((n.name.clone(), 0));
        }
    }
    let services = service_ops.chunks(max).map(<[TxnOp]>::to_vec).collect();
    let mut nodes: Vec<Vec<TxnOp>> = Vec::new();
    let mut weight = 0;
    for (node, held) in node_deletes {
        let w = held.max(1);
        if nodes.is_empty() || weight + w > max {
            nodes.push(Vec::new());
            weight = 0;
        }
        weight += w;
        nodes.last_mut().expect("pushed above").push(TxnOp::NodeDelete { node });
    }
    (services, nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::CheckStatus;
    use crate::sync::{META_K8S_NAMESPACE, META_K8S_SERVICE};

    fn inst(id: &str, svc: &str) -> Instance {
        Instance {
            id: id.into(),
            name: "api".into(),
            tags: Default::default(),
            address: "10.0.0.1".into(),
            port: 80,
            meta: Arc::new(
                [(META_K8S_NAMESPACE.to_string(), "ns".to_string()), (META_K8S_SERVICE.to_string(), svc.into())].into(),
            ),
            status: CheckStatus::Passing,
            output: "".into(),
        }
    }

    #[test]
    fn removal_never_puts_more_than_64_services_in_one_transaction() {
        let node = |name: &str, ours: usize, others: usize| FoundNode {
            name: name.into(),
            services: ours + others,
            owned: (0..ours).map(|i| (format!("{name}-{i}"), inst(&format!("{name}-{i}"), "api"))).collect(),
        };
        // Two small nodes of ours, one of 6,250 (a node at 100,000 instances), one shared.
        let found = [node("small-a", 40, 0), node("small-b", 30, 0), node("big", 6_250, 0), node("shared", 3, 2)];
        let (services, nodes) = removal_batches(&found);
        let deleted = |batches: &[Vec<TxnOp>]| -> Vec<String> {
            batches
                .iter()
                .flatten()
                .filter_map(|op| match op {
                    TxnOp::ServiceDelete { service_id, .. } => Some(service_id.clone()),
                    _ => None,
                })
                .collect()
        };
        // The big node's services and ours on the shared node go one by one, 64 a
        // transaction; nobody else's service is touched.
        let one_by_one = deleted(&services);
        assert_eq!(one_by_one.len(), 6_253);
        assert!(one_by_one.iter().all(|id| id.starts_with("big-") || id.starts_with("shared-")));
        assert!(services.iter().all(|t| t.len() <= consul::MAX_TXN_OPS));
        assert_eq!(services.len(), 6_253_usize.div_ceil(64));
        // Then the nodes: the small ones whole (40 + 30 services would be 70 in one
        // transaction, so they go in two), the emptied big one with them; never the shared one.
        assert!(deleted(&nodes).is_empty());
        let node_batches: Vec<Vec<String>> = nodes
            .iter()
            .map(|t| {
                t.iter()
                    .map(|op| match op {
                        TxnOp::NodeDelete { node } => node.clone(),
                        other => panic!("{other:?}"),
                    })
                    .collect()
            })
            .collect();
        assert_eq!(node_batches, [vec!["small-a".to_string()], vec!["small-b".to_string(), "big".to_string()]]);
    }

    #[test]
    fn the_first_success_after_failed_rounds_brings_the_full_comparison_forward() {
        let cfg = crate::sync::ToConsulConfig {
            identity: SyncIdentity::new("me"),
            default_sync: true,
            allow_namespaces: Default::default(),
            deny_namespaces: Default::default(),
            anti_entropy: Duration::from_secs(300),
            actor: crate::context::Actor::Controller,
        };
        let now = Instant::now();
        let later = now + Duration::from_secs(120);
        // The second failure in a row backs off 2 s (± 20 %); the sixth would back off 32 s,
        // but retries come at least every 5 s: no event may ever come to redo what failed.
        assert_eq!(next_full_due(now, later, false, 1, true, &cfg, 0.5), now + Duration::from_secs(2));
        let backoff = next_full_due(now, later, false, 5, true, &cfg, 0.5);
        assert_eq!(backoff, now + FULL_RETRY_CAP);
        // Then a round of fresh changes succeeds: the full comparison runs now.
        assert_eq!(next_full_due(now, backoff, false, 6, false, &cfg, 0.5), now);
        // Without failures before, an incremental round leaves the schedule alone ...
        assert_eq!(next_full_due(now, later, false, 0, false, &cfg, 0.5), later);
        // ... and a full pass schedules the next one an anti-entropy period away.
        assert_eq!(next_full_due(now, now, true, 3, false, &cfg, 0.5), now + Duration::from_secs(300));
    }

    #[test]
    fn slimmed_objects_give_the_same_instances() {
        let cfg = crate::sync::ToConsulConfig {
            identity: SyncIdentity::new("me"),
            default_sync: true,
            allow_namespaces: Default::default(),
            deny_namespaces: Default::default(),
            anti_entropy: Duration::from_secs(60),
            actor: crate::context::Actor::Controller,
        };
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "s1",
                         "annotations": {"concord.io/tags": "a,b", "concord.io/port": "http",
                                         "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Service\"}"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"}]},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .expect("service");
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "ns", "uid": "u1",
                         "labels": {"kubernetes.io/service-name": "web", "app": "web",
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"}},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": "n1", "zone": "z1",
                 "hostname": "web-0", "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "ns", "uid": "p"},
                 "hints": {"forZones": [{"name": "z1"}]}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}, "nodeName": "n2"}
            ]
        }))
        .expect("slice");
        // The index keeps of a slice where it is, its Service and what the sync reads.
        let indexed = IndexedSlice::from(slice);
        assert_eq!((indexed.namespace.as_str(), indexed.name.as_str()), ("ns", "web-abc"));
        assert_eq!(indexed.service.as_deref(), Some("web"));
        let before = desired::service_instances(&cfg, &svc, &[&indexed.endpoints], true);
        let got: Vec<_> = before.instances.iter().map(|i| (i.id.as_str(), i.port, i.status, &*i.output)).collect();
        assert_eq!(
            got,
            [
                ("ns-web-10.0.0.1-8080", 8080, consul::CheckStatus::Passing, desired::READY_OUTPUT),
                ("ns-web-10.0.0.2-8080", 8080, consul::CheckStatus::Critical, "endpoint terminating"),
            ]
        );
        let mut svc2 = svc.clone();
        slim_service(&mut svc2);
        assert_eq!(desired::service_instances(&cfg, &svc2, &[&indexed.endpoints], true), before);
        assert!(svc2.spec.as_ref().is_some_and(|s| s.selector.is_none() && s.cluster_ips.is_none()));
        // Only concord's annotations are kept; what names the Service in an Event stays.
        let annotations = svc2.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["concord.io/port", "concord.io/tags"]);
        assert_eq!(svc2.object_ref(&()), svc.object_ref(&()));

        // A Service whose LoadBalancer ingress is registered keeps its status; the others
        // drop it.
        let lb: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "edge", "namespace": "ns", "annotations": {"concord.io/use-load-balancer-ip": "true"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
        }))
        .expect("service");
        let before = desired::service_instances(&cfg, &lb, &[], true);
        assert_eq!(before.instances.len(), 1);
        let mut lb2 = lb.clone();
        slim_service(&mut lb2);
        assert_eq!(desired::service_instances(&cfg, &lb2, &[], true), before);
        let mut plain = svc.clone();
        plain.status = lb.status.clone();
        slim_service(&mut plain);
        assert!(plain.status.is_none());
    }

    #[test]
    fn refused_operations_map_back_to_their_change_and_service() {
        let me = SyncIdentity::new("me");
        let changes = vec![
            Change::Upsert { instance: inst("a", "v1"), service: true, check: true },
            Change::Delete { id: "old".into(), name: "api".into() },
            Change::Upsert { instance: inst("b", "v2"), service: false, check: true },
        ];
        // Ops: a's service, a's check, old's delete, b's check.
        assert_eq!(op_owners(&me, &changes), [0, 0, 1, 2]);
        let v1 = ("ns".to_string(), "v1".to_string());
        let deletes: HashMap<String, ServiceKey> = [("old".to_string(), v1.clone())].into();
        assert_eq!(change_key(&changes[1], &deletes), Some(v1.clone()));
        assert_eq!(change_key(&changes[0], &deletes), Some(v1));
        assert_eq!(change_key(&changes[1], &HashMap::new()), None);
    }

    #[test]
    fn rejected_lines_are_sorted_merged_and_bounded() {
        let key = |n: usize| ("ns".to_string(), format!("s{n:03}"));
        let problems: HashMap<ServiceKey, Vec<String>> =
            [(key(2), vec!["bad port".to_string(), "bad tags".to_string()])].into();
        let refused: BTreeMap<ServiceKey, String> =
            [(key(1), "Consul refused x".to_string()), (key(2), "Consul refused y".to_string())].into();
        assert_eq!(
            rejected_lines(&problems, &refused),
            ["ns/s001: Consul refused x", "ns/s002: bad port; bad tags; Consul refused y"]
        );
        let many: BTreeMap<ServiceKey, String> = (0..150).map(|n| (key(n), "x".to_string())).collect();
        let lines = rejected_lines(&HashMap::new(), &many);
        assert_eq!(lines.len(), MAX_REJECTED_LINES + 1);
        assert_eq!(lines.last().map(String::as_str), Some("... and 50 more"));
    }

    #[test]
    fn recorded_changes_are_indexed_by_id_and_by_service() {
        let mut applied = Applied::default();
        applied.record(Change::Upsert { instance: inst("a", "v1"), service: true, check: true });
        applied.record(Change::Upsert { instance: inst("b", "v1"), service: true, check: true });
        let v1 = ("ns".to_string(), "v1".to_string());
        let v2 = ("ns".to_string(), "v2".to_string());
        assert_eq!(applied.of_key(&v1).keys().collect::<Vec<_>>(), ["a", "b"]);
        // An instance that moves to another Service leaves the old one's set.
        applied.record(Change::Upsert { instance: inst("b", "v2"), service: true, check: false });
        assert_eq!(applied.of_key(&v1).keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(applied.of_key(&v2)["b"], inst("b", "v2"));
        applied.record(Change::Delete { id: "a".into(), name: "api".into() });
        assert!(applied.of_key(&v1).is_empty());
        assert!(!applied.by_key.contains_key(&v1));
        assert_eq!(applied.by_id.keys().collect::<Vec<_>>(), ["b"]);
    }
}
