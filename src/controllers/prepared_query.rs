//! PreparedQuery controller: keeps the Consul prepared query an object declares
//! (`/v1/query`, answered through DNS as `<name>.query.consul`) equal to its spec.
//!
//! Prepared queries have no Meta, so concord's owner mark is an ignored health-check ID
//! no check has: `concord.io/owner=<namespace>/<name>` in `Service.IgnoreCheckIDs`
//! (ignoring a check that does not exist changes no answer). With the mark in Consul,
//! ownership survives a lost status and a crash between create and status write, as for
//! the config-entry kinds:
//! - a query with the declared name marked by another object is left alone
//!   (`OwnedElsewhere`); an unmarked one is adopted, as config entries are;
//! - a query the object marked under an old name is renamed (or deleted, when an
//!   unmarked query with the new name was adopted instead);
//! - drift: one blocking-query watch per cluster on the list of queries queues every
//!   object when any query changes; an out-of-band edit is written back
//!   (`DriftCorrected`, metric `concord_drift_corrections_total`);
//! - a definition Consul refuses (an invalid field, a template that does not compile)
//!   leaves the last good query in place and is quoted in the condition
//!   (`RejectedByConsul`);
//! - the finalizer deletes only queries carrying this object's mark;
//! - import: a DiscoveryCluster listing `PreparedQuery` in
//!   `spec.sync.importConfigEntries` gets an object for every unmarked query whose
//!   name can be an object's name and whose definition the kind can express exactly.
//!
//! Tenancy: the query's name and its service must both be granted by
//! `spec.tenancy.intentionDestinations` (a query name is a global DNS name); a template
//! serves any name and interpolates any service, so it needs `*`.
use super::config_entry::{IMPORTED_LABEL, is_dns_subdomain};
use super::consul_watch::{BLOCKING_WAIT, WatchSet, watch_index};
use super::{apply_status, object_key, reconcile_with_finalizer, report_ready_when_primed, requeue_after_failure};
use crate::cluster::{ClusterError, ClusterHandle, Grants};
use crate::consul::{self, QueryOptions};
use crate::context::metrics::ControllerLabels;
use crate::context::{Context, watched_api};
use crate::resources::{
    ConditionUpdate, DiscoveryCluster, PreparedQuery, PreparedQuerySpec, PreparedQueryStatus, QueryDnsSpec,
    QueryFailoverSpec, QueryServiceSpec, QueryTemplateSpec, QueryTemplateType, find_condition, set_condition, types,
};
use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const CONTROLLER: &str = "preparedquery";
/// Finalizer that deletes the Consul query before the object goes.
pub const FINALIZER: &str = "concord.io/preparedquery";
/// The owner mark: an ignored check ID, followed by `<namespace>/<name>`.
pub const OWNER_MARK_PREFIX: &str = "concord.io/owner=";
/// The kind's name in `spec.sync.importConfigEntries`.
pub const IMPORT_KIND: &str = "PreparedQuery";
const RESYNC: Duration = Duration::from_secs(300);
const TEMPLATE_TYPE: &str = "name_prefix_match";

/// The mark a query written for `namespace/name` carries.
pub fn owner_mark(owner: &str) -> String {
    format!("{OWNER_MARK_PREFIX}{owner}")
}

/// Who marked a query (`namespace/name`), if anyone.
pub fn owner_of(q: &consul::PreparedQuery) -> Option<&str> {
    q.service.ignore_check_ids.iter().find_map(|c| c.strip_prefix(OWNER_MARK_PREFIX))
}

/// The query's name in Consul: `spec.name`, else the object's name.
pub fn query_name(pq: &PreparedQuery) -> String {
    pq.spec.name.clone().unwrap_or_else(|| pq.name_any())
}

/// The query an object declares, marked as `owner`'s (pure).
pub fn desired_query(spec: &PreparedQuerySpec, name: &str, owner: &str) -> consul::PreparedQuery {
    let s = &spec.service;
    // The schema refuses a user's `concord.io/` check ID; never send a forged mark anyway.
    let mut ignore_check_ids: Vec<String> =
        s.ignore_check_ids.iter().filter(|c| !c.starts_with(OWNER_MARK_PREFIX)).cloned().collect();
    ignore_check_ids.push(owner_mark(owner));
    let failover = s.failover.as_ref().map(|f| consul::QueryFailover {
        nearest_n: f.nearest_n.unwrap_or(0),
        datacenters: f.datacenters.clone(),
        targets: Vec::new(),
    });
    let template = spec.template.as_ref().map(|t| consul::QueryTemplate {
        r#type: TEMPLATE_TYPE.into(),
        regexp: t.regexp.clone().unwrap_or_default(),
        remove_empty_tags: t.remove_empty_tags.unwrap_or(false),
    });
    consul::PreparedQuery {
        name: name.to_string(),
        template: template.unwrap_or_default(),
        service: consul::QueryService {
            service: s.service.clone(),
            failover: failover.unwrap_or_default(),
            only_passing: s.only_passing.unwrap_or(false),
            ignore_check_ids,
            near: s.near.clone().unwrap_or_default(),
            tags: s.tags.clone(),
            node_meta: s.node_meta.clone(),
            service_meta: s.service_meta.clone(),
            connect: s.connect.unwrap_or(false),
            ..Default::default()
        },
        dns: consul::QueryDns { ttl: spec.dns.as_ref().and_then(|d| d.ttl.clone()).unwrap_or_default() },
        ..Default::default()
    }
}

/// The spec that declares an existing, unmarked query, when the kind can express it
/// exactly (no session, token, peer, sameness group or failover targets); the caller
/// checks the round trip.
pub fn spec_of(q: &consul::PreparedQuery) -> Option<PreparedQuerySpec> {
    let s = &q.service;
    let expressible = q.session.is_empty()
        && q.token.is_empty()
        && s.peer.is_empty()
        && s.sameness_group.is_empty()
        && s.failover.targets.is_empty()
        && owner_of(q).is_none()
        && (q.template.r#type.is_empty() || q.template.r#type == TEMPLATE_TYPE);
    if !expressible {
        return None;
    }
    let some_str = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let some_true = |b: bool| b.then_some(true);
    let failover = &s.failover;
    Some(PreparedQuerySpec {
        cluster_ref: None,
        name: None,
        service: QueryServiceSpec {
            service: s.service.clone(),
            failover: (failover.nearest_n > 0 || !failover.datacenters.is_empty()).then(|| QueryFailoverSpec {
                nearest_n: (failover.nearest_n > 0).then_some(failover.nearest_n),
                datacenters: failover.datacenters.clone(),
            }),
            only_passing: some_true(s.only_passing),
            near: some_str(&s.near),
            tags: s.tags.clone(),
            node_meta: s.node_meta.clone(),
            service_meta: s.service_meta.clone(),
            ignore_check_ids: s.ignore_check_ids.clone(),
            connect: some_true(s.connect),
        },
        dns: some_str(&q.dns.ttl).map(|ttl| QueryDnsSpec { ttl: Some(ttl) }),
        template: (!q.template.r#type.is_empty()).then(|| QueryTemplateSpec {
            template_type: QueryTemplateType::NamePrefixMatch,
            regexp: some_str(&q.template.regexp),
            remove_empty_tags: some_true(q.template.remove_empty_tags),
        }),
    })
}

/// What to do with the queries Consul holds (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The query with the declared name is ours and says what is declared.
    InSync {
        id: String,
        stale: Vec<String>,
    },
    /// Write the declaration over this query (ours, or unmarked: adopted).
    Update {
        id: String,
        stale: Vec<String>,
    },
    Create,
    /// The declared name belongs to a query another object marked.
    OwnedElsewhere {
        id: String,
        owner: String,
    },
}

/// Decides from the declared query and every query Consul holds. `stale` lists other
/// queries this owner marked (left from a rename), to delete once the write is done.
pub fn decide(desired: &consul::PreparedQuery, existing: &[consul::PreparedQuery], me: &str) -> Decision {
    let holder = existing.iter().find(|q| q.name == desired.name);
    if let Some(h) = holder
        && let Some(owner) = owner_of(h).filter(|o| *o != me)
    {
        return Decision::OwnedElsewhere { id: h.id.clone(), owner: owner.to_string() };
    }
    let target = holder.or_else(|| existing.iter().find(|q| owner_of(q) == Some(me)));
    let Some(target) = target else { return Decision::Create };
    let stale =
        existing.iter().filter(|q| q.id != target.id && owner_of(q) == Some(me)).map(|q| q.id.clone()).collect();
    if target.same_definition(desired) {
        Decision::InSync { id: target.id.clone(), stale }
    } else {
        Decision::Update { id: target.id.clone(), stale }
    }
}

/// Whether the namespace's grants cover the query: its name and its service, or `*` for
/// a template.
pub fn granted(spec: &PreparedQuerySpec, name: &str, grants: &Grants) -> Result<(), String> {
    if spec.template.is_some() {
        return grants
            .intention_destination("*")
            .map_err(|e| format!("a prepared query template serves any name and service: {e}"));
    }
    grants.intention_destination(name).map_err(|e| format!("prepared query name: {e}"))?;
    grants.intention_destination(&spec.service.service).map_err(|e| format!("prepared query service: {e}"))
}

/// This controller's errors (shared with the other one-Consul-object controllers).
pub use super::ObjectError as Error;

struct Ctx {
    ctx: Arc<Context>,
    store: Store<PreparedQuery>,
    watches: WatchSet,
    trigger: mpsc::UnboundedSender<()>,
    /// Generation each object last had in sync: an Update at that same generation is an
    /// out-of-band edit being reverted (the status may be read a moment late).
    in_sync: Mutex<HashMap<String, Option<i64>>>,
}

fn owner_id(pq: &PreparedQuery) -> String {
    format!("{}/{}", pq.namespace().unwrap_or_default(), pq.name_any())
}

/// Writes the Synced condition (and the query ID when known); a Warning Event when a
/// failure is new.
async fn report(c: &Ctx, pq: &PreparedQuery, update: ConditionUpdate, id: Option<String>) -> Result<(), Error> {
    let previous = pq.status.clone().unwrap_or_default();
    let generation = pq.meta().generation;
    let changed = find_condition(&previous.conditions, types::SYNCED)
        .is_none_or(|c| c.reason != update.reason || c.message != update.message);
    let (warning, reason, message) = (!update.status, update.reason, update.message.clone());
    let status = PreparedQueryStatus {
        conditions: set_condition(&previous.conditions, update, generation, k8s_openapi::jiff::Timestamp::now()),
        observed_generation: generation,
        query_id: id.or(previous.query_id.clone()),
    };
    if status != previous {
        apply_status(&c.ctx, pq, &status).await.map_err(Error::Status)?;
    }
    if changed && warning {
        c.ctx.event(&pq.object_ref(&()), true, reason, "Sync", message).await;
    }
    Ok(())
}

async fn apply(pq: Arc<PreparedQuery>, c: &Arc<Ctx>) -> Result<Action, Error> {
    let key = object_key(pq.as_ref());
    let backoff_key = format!("{CONTROLLER}:{key}");
    let ns = pq.namespace().unwrap_or_default();
    let handle = match c.ctx.clusters.resolve_tenant(&c.ctx.client, &ns, pq.spec.cluster_ref.as_deref()).await {
        Ok(h) => h,
        Err(e) => {
            report(c, &pq, ConditionUpdate::new(types::SYNCED, false, "ClusterNotReady", e.to_string()), None).await?;
            return Ok(Action::requeue(c.ctx.backoff(&backoff_key)));
        }
    };
    let name = query_name(&pq);
    if let Err(msg) = granted(&pq.spec, &name, &handle.grants) {
        report(c, &pq, ConditionUpdate::new(types::SYNCED, false, "NotGranted", msg), None).await?;
        return Ok(Action::requeue(RESYNC));
    }
    start_watch(c, &handle, false);

    let me = owner_id(&pq);
    let desired = desired_query(&pq.spec, &name, &me);
    let existing = match handle.consul.prepared_queries_list(&QueryOptions::default()).await {
        Ok(list) => list.value,
        Err(e) => return consul_failed(c, &pq, &backoff_key, e).await,
    };
    let remembered = c.in_sync.lock().ok().and_then(|m| m.get(&key).copied());
    let was_synced = remembered.is_some_and(|g| g == pq.meta().generation);
    let (written, id, stale) = match decide(&desired, &existing, &me) {
        Decision::OwnedElsewhere { id, owner } => {
            let msg = format!("prepared query {name} ({id}) belongs to {owner}; left alone");
            report(c, &pq, ConditionUpdate::new(types::SYNCED, false, "OwnedElsewhere", msg), None).await?;
            return Ok(Action::requeue(RESYNC));
        }
        Decision::InSync { id, stale } => (false, id, stale),
        Decision::Create => match handle.consul.prepared_query_create(&desired).await {
            Ok(id) => (true, id, Vec::new()),
            Err(e) => return consul_failed(c, &pq, &backoff_key, e).await,
        },
        Decision::Update { id, stale } => {
            let update = consul::PreparedQuery { id: id.clone(), ..desired.clone() };
            match handle.consul.prepared_query_update(&update).await {
                Ok(()) => (true, id, stale),
                Err(e) => return consul_failed(c, &pq, &backoff_key, e).await,
            }
        }
    };
    for old in stale {
        if let Err(e) = handle.consul.prepared_query_delete(&old).await {
            return consul_failed(c, &pq, &backoff_key, e).await;
        }
    }
    if let Ok(mut m) = c.in_sync.lock() {
        m.insert(key.clone(), pq.meta().generation);
    }
    if written && was_synced {
        c.ctx.metrics.drift_corrections.get_or_create(&ControllerLabels { controller: CONTROLLER }).inc();
        let note = format!("reverted an out-of-band edit of prepared query {name}");
        c.ctx.event(&pq.object_ref(&()), false, "DriftCorrected", "Sync", note).await;
    }
    let msg = format!("prepared query {name} ({id}) written to Consul");
    report(c, &pq, ConditionUpdate::new(types::SYNCED, true, "Synced", msg), Some(id)).await?;
    c.ctx.reset_backoff(&backoff_key);
    Ok(Action::requeue(RESYNC))
}

/// Reports a failed Consul call: a refusal quotes Consul and waits for a change (or the
/// next change of any query); an outage backs off.
async fn consul_failed(c: &Ctx, pq: &PreparedQuery, backoff_key: &str, e: consul::Error) -> Result<Action, Error> {
    c.ctx.metrics.reconcile_failed(CONTROLLER, e.category());
    if consul::is_query_refusal(&e) {
        let msg = format!("Consul refused prepared query {}: {e}", query_name(pq));
        report(c, pq, ConditionUpdate::new(types::SYNCED, false, "RejectedByConsul", msg), None).await?;
        return Ok(Action::requeue(RESYNC));
    }
    let reason = if matches!(e, consul::Error::PermissionDenied { .. }) { "PermissionDenied" } else { "ConsulError" };
    report(c, pq, ConditionUpdate::new(types::SYNCED, false, reason, e.to_string()), None).await?;
    Ok(Action::requeue(c.ctx.backoff(backoff_key)))
}

async fn cleanup(pq: Arc<PreparedQuery>, c: &Arc<Ctx>) -> Result<Action, Error> {
    let ns = pq.namespace().unwrap_or_default();
    let handle = match c.ctx.clusters.resolve_tenant(&c.ctx.client, &ns, pq.spec.cluster_ref.as_deref()).await {
        Ok(h) => h,
        Err(e @ (ClusterError::NoCluster { .. } | ClusterError::NotFound { .. })) => {
            let note = format!("prepared query left in Consul: {e}");
            c.ctx.event(&pq.object_ref(&()), true, "CleanupSkipped", "Delete", note).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(Error::Cluster(e)),
    };
    if let Ok(mut m) = c.in_sync.lock() {
        m.remove(&object_key(pq.as_ref()));
    }
    let me = owner_id(&pq);
    let existing = handle.consul.prepared_queries_list(&QueryOptions::default()).await.map_err(Error::Consul)?;
    for q in existing.value.iter().filter(|q| owner_of(q) == Some(me.as_str())) {
        handle.consul.prepared_query_delete(&q.id).await.map_err(Error::Consul)?;
        tracing::info!(query = %q.name, id = %q.id, "deleted prepared query");
    }
    // Another object waiting for this name may take it now.
    let _ = c.trigger.unbounded_send(());
    let in_use = c.store.state().iter().any(|o| {
        o.meta().deletion_timestamp.is_none()
            && object_key(o.as_ref()) != object_key(pq.as_ref())
            && o.namespace().as_deref() == Some(ns.as_str())
    });
    if !in_use && !import_enabled(c, &handle).await {
        c.watches.stop(&cluster_key(&handle));
    }
    Ok(Action::await_change())
}

fn cluster_key(handle: &ClusterHandle) -> String {
    format!("{}/{}", handle.namespace, handle.name)
}

/// Whether `dc` asks for unmanaged queries to be imported.
pub fn wants_import(dc: &DiscoveryCluster) -> bool {
    dc.spec.sync.as_ref().is_some_and(|s| s.import_config_entries.iter().any(|k| k == IMPORT_KIND))
}

async fn import_enabled(c: &Ctx, handle: &ClusterHandle) -> bool {
    let api: Api<DiscoveryCluster> = Api::namespaced(c.ctx.client.clone(), &handle.namespace);
    matches!(api.get_opt(&handle.name).await, Ok(Some(dc)) if wants_import(&dc))
}

/// Starts (or keeps) the cluster's blocking watch on the list of queries.
fn start_watch(c: &Arc<Ctx>, handle: &ClusterHandle, import: bool) {
    let key = cluster_key(handle);
    if c.watches.keys().contains(&key) && !import {
        return; // an importing watch also triggers; keep whichever runs
    }
    let fingerprint = format!("{key}|import={import}");
    let consul = handle.consul.clone();
    let handle = handle.clone();
    let weak = Arc::downgrade(c);
    c.watches.ensure(&key, &fingerprint, move || async move {
        let (changed_tx, mut changed_rx) = mpsc::unbounded::<()>();
        if import {
            let _ = changed_tx.unbounded_send(()); // import once at start
        }
        let query = move |index| {
            let consul = consul.clone();
            async move {
                consul.prepared_queries_list(&QueryOptions::blocking(index, BLOCKING_WAIT)).await.map(|r| r.index)
            }
        };
        let watch = watch_index(CONTROLLER, query, move || {
            let _ = changed_tx.unbounded_send(());
        });
        let react = async move {
            while changed_rx.next().await.is_some() {
                let Some(c) = weak.upgrade() else { return };
                let _ = c.trigger.unbounded_send(());
                if import && let Err(e) = import_unmanaged(&c, &handle).await {
                    tracing::warn!(cluster = %cluster_key(&handle), error = %e, "importing prepared queries failed");
                }
            }
        };
        futures::future::join(watch, react).await;
    });
}

/// The object that would adopt `found`, when it declares that query exactly.
pub fn importable(found: &consul::PreparedQuery, namespace: &str, cluster: &str) -> Option<PreparedQuery> {
    if !is_dns_subdomain(&found.name) || found.name.contains('.') {
        return None;
    }
    let mut spec = spec_of(found)?;
    spec.cluster_ref = Some(cluster.to_string());
    let mut object = PreparedQuery::new(&found.name, spec);
    object.metadata.namespace = Some(namespace.to_string());
    object.metadata.labels = Some([(IMPORTED_LABEL.to_string(), "true".to_string())].into());
    // Lossless only: what the object would write, its mark aside, is what Consul holds.
    let mut declared = desired_query(&object.spec, &found.name, "");
    declared.service.ignore_check_ids.retain(|c| !c.starts_with(OWNER_MARK_PREFIX));
    declared.same_definition(found).then_some(object)
}

/// Creates an object for each query nothing marked and no object declares.
async fn import_unmanaged(c: &Ctx, handle: &ClusterHandle) -> Result<(), String> {
    if !import_enabled(c, handle).await {
        return Ok(());
    }
    let queries = handle.consul.prepared_queries_list(&QueryOptions::default()).await.map_err(|e| e.to_string())?;
    let declared: Vec<String> = c
        .store
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(handle.namespace.as_str()))
        .map(|o| query_name(o))
        .collect();
    let api: Api<PreparedQuery> = Api::namespaced(c.ctx.client.clone(), &handle.namespace);
    for found in queries.value {
        if owner_of(&found).is_some() || declared.contains(&found.name) {
            continue;
        }
        let Some(object) = importable(&found, &handle.namespace, &handle.name) else {
            tracing::info!(query = %found.name, "prepared query uses what the kind cannot declare; not imported");
            continue;
        };
        // Create only: an existing object of that name is somebody's, never overwritten.
        match api.create(&Default::default(), &object).await {
            Ok(_) => tracing::info!(query = %found.name, "imported prepared query"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Starts the importing watch for every DiscoveryCluster that asks for it.
async fn watch_import_settings(c: Arc<Ctx>) {
    let api = watched_api::<DiscoveryCluster>(&c.ctx);
    let mut clusters = watcher(api, watcher::Config::default()).applied_objects().boxed();
    while let Some(next) = clusters.next().await {
        let Ok(dc) = next else { continue };
        if wants_import(&dc)
            && let Ok(handle) = c.ctx.clusters.client_for(&c.ctx.client, &dc).await
        {
            start_watch(&c, &handle, true);
        }
    }
}

async fn reconcile(pq: Arc<PreparedQuery>, c: Arc<Ctx>) -> Result<Action, Error> {
    let _timer = c.ctx.metrics.reconcile_started(CONTROLLER);
    reconcile_with_finalizer(&c.ctx.client, FINALIZER, pq, |o| apply(o, &c), |o| cleanup(o, &c))
        .await
        .map_err(Error::Finalizer)
}

fn error_policy(pq: Arc<PreparedQuery>, error: &Error, c: Arc<Ctx>) -> Action {
    tracing::warn!(object = %object_key(pq.as_ref()), error = %error, "reconcile failed");
    requeue_after_failure(&c.ctx, CONTROLLER, pq.as_ref(), error.category())
}

/// Runs the controller until `stop` resolves; its watches stop with it.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<PreparedQuery>(&ctx), watcher::Config::default());
    let store = controller.store();
    report_ready_when_primed(&ctx, CONTROLLER, store.clone());
    let (trigger, triggered) = mpsc::unbounded();
    let c =
        Arc::new(Ctx { ctx: ctx.clone(), store, watches: WatchSet::default(), trigger, in_sync: Default::default() });
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
    use crate::resources::TenancySpec;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PreparedQuerySpec {
        serde_json::from_value(v).expect("spec")
    }

    fn stored(mut q: consul::PreparedQuery, id: &str) -> consul::PreparedQuery {
        q.id = id.into();
        q.create_index = consul::ConsulIndex(5);
        q.modify_index = consul::ConsulIndex(7);
        q
    }

    #[test]
    fn the_declaration_maps_to_consul_fields_with_the_owner_mark() {
        let s = spec(json!({ "service": { "service": "db", "onlyPassing": true, "near": "_agent",
            "tags": ["primary", "!canary"], "failover": { "nearestN": 2, "datacenters": ["dc2", "dc3"] },
            "ignoreCheckIds": ["serfHealth"] }, "dns": { "ttl": "10s" } }));
        let q = desired_query(&s, "db", "team/db");
        let wire = serde_json::to_value(&q).expect("encode");
        assert_eq!(wire["Name"], json!("db"));
        assert_eq!(wire["Service"]["Failover"], json!({ "NearestN": 2, "Datacenters": ["dc2", "dc3"] }));
        assert_eq!(wire["Service"]["Tags"], json!(["primary", "!canary"]));
        assert_eq!(wire["Service"]["IgnoreCheckIDs"], json!(["serfHealth", "concord.io/owner=team/db"]));
        assert_eq!(wire["Service"]["OnlyPassing"], json!(true));
        assert_eq!(wire["DNS"]["TTL"], json!("10s"));
        assert_eq!(wire["Template"]["Type"], json!(""));
        assert_eq!(owner_of(&q), Some("team/db"));

        let t = spec(json!({ "name": "geo-db", "service": { "service": "${match(1)}" },
            "template": { "type": "name_prefix_match", "regexp": "^geo-db-(.*)$" } }));
        let q = desired_query(&t, "geo-db", "team/geo");
        assert_eq!(q.template.r#type, "name_prefix_match");
        assert_eq!(q.template.regexp, "^geo-db-(.*)$");
    }

    #[test]
    fn decisions_follow_the_mark() {
        let s = spec(json!({ "service": { "service": "db" } }));
        let desired = desired_query(&s, "db", "team/db");
        assert_eq!(decide(&desired, &[], "team/db"), Decision::Create);
        let ours = stored(desired.clone(), "id-1");
        assert_eq!(
            decide(&desired, std::slice::from_ref(&ours), "team/db"),
            Decision::InSync { id: "id-1".into(), stale: vec![] }
        );

        // A hand edit (and a lost mark) is written back.
        let mut edited = ours.clone();
        edited.service.only_passing = true;
        edited.service.ignore_check_ids.clear();
        assert_eq!(decide(&desired, &[edited], "team/db"), Decision::Update { id: "id-1".into(), stale: vec![] });

        // Another object's query with this name is left alone.
        let theirs = stored(desired_query(&s, "db", "other/db"), "id-2");
        assert_eq!(
            decide(&desired, &[theirs], "team/db"),
            Decision::OwnedElsewhere { id: "id-2".into(), owner: "other/db".into() }
        );

        // Renamed: our old query is updated in place; when an unmarked query already has
        // the new name it is adopted and the old one goes.
        let renamed = desired_query(&s, "db2", "team/db");
        assert_eq!(
            decide(&renamed, std::slice::from_ref(&ours), "team/db"),
            Decision::Update { id: "id-1".into(), stale: vec![] }
        );
        let mut unmarked = stored(renamed.clone(), "id-3");
        unmarked.service.ignore_check_ids.clear();
        assert_eq!(
            decide(&renamed, &[ours, unmarked], "team/db"),
            Decision::Update { id: "id-3".into(), stale: vec!["id-1".into()] }
        );
    }

    #[test]
    fn names_services_and_templates_need_grants() {
        let grants =
            Grants::declared(TenancySpec { intention_destinations: Some(vec!["team-*".into()]), ..Default::default() });
        let ok = spec(json!({ "service": { "service": "team-db" } }));
        assert!(granted(&ok, "team-db", &grants).is_ok());
        assert!(granted(&ok, "payments", &grants).expect_err("name outside the grant").contains("prepared query name"));
        let other = spec(json!({ "service": { "service": "payments" } }));
        assert!(
            granted(&other, "team-db", &grants)
                .expect_err("service outside the grant")
                .contains("prepared query service")
        );
        let template = spec(json!({ "name": "team-", "service": { "service": "${name.suffix}" },
            "template": { "type": "name_prefix_match" } }));
        assert!(granted(&template, "team-", &grants).expect_err("template without *").contains("template"));
        let all =
            Grants::declared(TenancySpec { intention_destinations: Some(vec!["*".into()]), ..Default::default() });
        assert!(granted(&template, "team-", &all).is_ok());
    }

    #[test]
    fn import_round_trips_and_refuses_what_the_kind_cannot_say() {
        let mut found = desired_query(
            &spec(json!({ "service": { "service": "db", "tags": ["!v1"], "failover": { "datacenters": ["dc2"] } },
                "dns": { "ttl": "30s" } })),
            "db",
            "",
        );
        found.service.ignore_check_ids.clear();
        let found = stored(found, "id-9");
        let object = importable(&found, "team", "consul").expect("importable");
        assert_eq!(object.name_any(), "db");
        assert_eq!(object.spec.cluster_ref.as_deref(), Some("consul"));
        assert_eq!(object.spec.dns.as_ref().and_then(|d| d.ttl.as_deref()), Some("30s"));
        let mut with_token = found.clone();
        with_token.token = "<hidden>".into();
        assert!(importable(&with_token, "team", "consul").is_none(), "a query with its own token");
        let mut bad_name = found.clone();
        bad_name.name = "Geo_DB".into();
        assert!(importable(&bad_name, "team", "consul").is_none(), "not an object name");
    }
}
