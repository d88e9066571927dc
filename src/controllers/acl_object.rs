//! What the ACLRole, ACLAuthMethod and ACLBindingRule controllers share: the ownership
//! mark in a Consul description, status writes with the `Synced` condition, failure
//! reports (condition always, Event once per new reason or message), and the import
//! pass that adopts unmarked Consul objects ([`import_loop`]).
use super::{ObjectError, apply_status, object_key, watched_api};
use crate::cluster::ClusterHandle;
use crate::consul;
use crate::context::Context;
use crate::resources::{
    ACLAuthMethod, ACLBindingRule, ACLRole, Condition, ConditionUpdate, DiscoveryCluster, find_condition,
    set_condition, types,
};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

/// A status with conditions and an observed generation.
pub(crate) trait ObjectStatus: Default + Clone + Serialize {
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

/// An object whose status is an [`ObjectStatus`].
pub(crate) trait WithStatus:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug
{
    type Status: ObjectStatus;
    fn current_status(&self) -> Option<&Self::Status>;
}

macro_rules! object_status {
    ($kind:ty, $status:ty) => {
        impl $crate::controllers::acl_object::ObjectStatus for $status {
            fn conditions_mut(&mut self) -> &mut Vec<$crate::resources::Condition> {
                &mut self.conditions
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
        impl $crate::controllers::acl_object::WithStatus for $kind {
            type Status = $status;
            fn current_status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
        }
    };
}
pub(crate) use object_status;

/// The ownership mark concord puts at the end of a Consul description.
pub fn ownership_mark(namespace: &str, name: &str) -> String {
    format!("[concord.io {namespace}/{name}]")
}

/// `description` (trimmed, may be empty) followed by the object's mark.
pub fn marked_description(description: Option<&str>, namespace: &str, name: &str) -> String {
    let mark = ownership_mark(namespace, name);
    match description.map(str::trim) {
        Some(d) if !d.is_empty() => format!("{d} {mark}"),
        _ => mark,
    }
}

/// Whether a Consul description carries the mark of some object of `namespace`.
pub fn owned_by_namespace(description: &str, namespace: &str) -> bool {
    mark_owner(description).is_some_and(|(ns, _)| ns == namespace)
}

/// The namespace and name of the object whose mark ends `description`, if any.
pub fn mark_owner(description: &str) -> Option<(&str, &str)> {
    let (_, rest) = description.rsplit_once("[concord.io ")?;
    let inner = rest.strip_suffix(']').filter(|r| !r.contains(' '))?;
    inner.split_once('/')
}

/// Whether a Consul description carries any concord mark (of any object).
pub fn marked(description: &str) -> bool {
    description.rsplit_once("[concord.io ").is_some_and(|(_, rest)| rest.ends_with(']') && !rest.contains(' '))
}

/// Whether a binding rule's selector already holds logins to `namespace`: exactly
/// `serviceaccount.namespace=="<namespace>"`, or that `and (<rest>)` with no parenthesis
/// in the rest (strict: so the rest cannot close the group and widen it).
pub fn selector_held_to(selector: &str, namespace: &str) -> bool {
    let clause = format!("serviceaccount.namespace==\"{namespace}\"");
    selector == clause
        || selector
            .strip_prefix(&format!("{clause} and ("))
            .and_then(|rest| rest.strip_suffix(')'))
            .is_some_and(|rest| !rest.contains(['(', ')']))
}

/// Writes `status` (with one condition updated) for `obj`.
pub(crate) async fn write_status<K: WithStatus>(
    ctx: &Context,
    obj: &K,
    mut status: K::Status,
    update: ConditionUpdate,
) -> Result<(), ObjectError> {
    let generation = obj.meta().generation;
    status.set_observed_generation(generation);
    let conditions = set_condition(status.conditions_mut(), update, generation, k8s_openapi::jiff::Timestamp::now());
    *status.conditions_mut() = conditions;
    apply_status(ctx, obj, &status).await.map_err(ObjectError::Status)
}

/// Reports a failure: `Synced=False` with `reason` always, a Warning Event once.
pub(crate) async fn report<K: WithStatus>(
    ctx: &Context,
    obj: &K,
    reason: &'static str,
    message: String,
) -> Result<(), ObjectError> {
    let mut previous = obj.current_status().cloned().unwrap_or_default();
    let known = find_condition(previous.conditions_mut(), types::SYNCED)
        .is_some_and(|c| c.reason == reason && c.message == message);
    write_status(ctx, obj, previous, ConditionUpdate::new(types::SYNCED, false, reason, message.clone())).await?;
    if !known {
        ctx.event(&obj.object_ref(&()), true, reason, "Sync", message).await;
    }
    Ok(())
}

/// The message for a write Consul refused because it names an ACL policy, role or auth
/// method that does not exist there (yet).
pub(crate) fn missing_reference(e: &consul::Error) -> String {
    format!("{e} in Consul: create it (for example as an ACL object of this namespace); retried as soon as one syncs")
}

/// Whether the object's `Synced` condition is `True` (at any generation).
fn synced_now<K: WithStatus>(obj: &K) -> bool {
    synced_condition(obj).is_some_and(|c| c.status == "True")
}

/// The object's `Synced` condition, if it has one.
fn synced_condition<K: WithStatus>(obj: &K) -> Option<Condition> {
    let mut status = obj.current_status()?.clone();
    find_condition(status.conditions_mut(), types::SYNCED).cloned()
}

/// For a controller's `watches`: when an object another one may depend on changes (a
/// policy a role names, a role a binding rule binds, ...), the objects of `store` in the
/// same namespace that are not synced, to try again at once instead of at the next drift
/// pass. Synced ones are left alone, so a busy namespace costs nothing extra.
pub(crate) fn unsynced_beside<K, D>(store: &Store<K>, dependency: &D) -> Vec<ObjectRef<K>>
where
    K: WithStatus,
    D: Resource,
{
    let namespace = dependency.meta().namespace.as_deref();
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == namespace && !synced_now(o.as_ref()))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Whether the object was already synced at this generation (no new success Event).
pub(crate) fn was_synced<K: WithStatus>(obj: &K) -> bool {
    synced_condition(obj).is_some_and(|c| c.status == "True" && c.observed_generation == obj.meta().generation)
}

/// One import pass's Consul objects of kind `K`, each with the object that would adopt
/// it, or why it is not imported.
pub(crate) type Candidates<K> = Vec<(<K as Importable>::Found, Result<K, String>)>;

/// A kind the ACL import pass adopts from Consul. Each kind's module says which Consul
/// objects it takes and why it refuses others; the pass itself is shared.
pub(crate) trait Importable: WithStatus + Serialize + Send + Sync + 'static {
    /// The kind's name in `spec.sync.importConfigEntries`.
    const IMPORT_KIND: &'static str;
    /// What Consul holds for one object.
    type Found: Send + Sync;
    /// One pass's candidates in `cluster` (the cluster of `dc`): each Consul object
    /// without a concord mark that no object of the namespace declares, with the object
    /// that would adopt it, or why it is not imported.
    fn candidates(
        ctx: &Context,
        cluster: &ClusterHandle,
        dc: &DiscoveryCluster,
    ) -> impl Future<Output = Result<Candidates<Self>, String>> + Send;
    /// `found` with `object`'s mark added to its description, nothing else changed (pure).
    fn adopted(found: &Self::Found, object: &Self) -> Self::Found;
    /// Writes `found` to Consul (by its ID or name).
    fn write(cluster: &ClusterHandle, found: &Self::Found) -> impl Future<Output = Result<(), consul::Error>> + Send;
    /// How logs name `found` (`role ops`).
    fn describe(found: &Self::Found) -> String;
    /// Consul's name (or ID) of `found`: the `related` object of its refusal Event.
    fn consul_name(found: &Self::Found) -> String;
}

/// Whether `dc` lists `kind` in `spec.sync.importConfigEntries`.
pub fn wants_import(dc: &DiscoveryCluster, kind: &str) -> bool {
    dc.spec.sync.as_ref().is_some_and(|s| s.import_config_entries.iter().any(|k| k == kind))
}

/// Imports the candidates of `K` for `dc`: marks each Consul object for its object,
/// then creates the object. A refusal is named once per message (`told`) in a Warning
/// Event `ImportRefused` on the DiscoveryCluster.
///
/// Mark first: the object's first reconcile then finds its Consul object by the mark and
/// adopts it as it is. (A binding rule has no name in Consul: an object that found no
/// mark would create a second rule; a role or method would report `NameTaken`.) When
/// the object cannot be made after all, the Consul object gets its old description back.
async fn import_kind<K: Importable>(
    ctx: &Context,
    cluster: &ClusterHandle,
    dc: &DiscoveryCluster,
    told: &mut HashSet<String>,
) -> Result<(), String> {
    let ns = dc.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let dc_ref = dc.object_ref(&());
    for (found, object) in K::candidates(ctx, cluster, dc).await? {
        let object = match object {
            Ok(object) => object,
            Err(msg) => {
                if told.insert(format!("{ns}/{}|{msg}", dc.name_any())) {
                    tracing::info!(kind = K::IMPORT_KIND, "{msg}");
                    // One Event per refused Consul object: each is `related` to its own.
                    let related = ObjectReference {
                        api_version: Some(K::api_version(&()).to_string()),
                        kind: Some(K::kind(&()).to_string()),
                        namespace: Some(ns.clone()),
                        name: Some(K::consul_name(&found)),
                        ..Default::default()
                    };
                    ctx.event_related(&dc_ref, Some(related), true, "ImportRefused", "Import", msg).await;
                }
                continue;
            }
        };
        // An object of that name is somebody's: its Consul object is not marked for it.
        if api.get_opt(&object.name_any()).await.map_err(|e| e.to_string())?.is_some() {
            continue;
        }
        K::write(cluster, &K::adopted(&found, &object)).await.map_err(|e| e.to_string())?;
        if let Err(e) = api.create(&PostParams::default(), &object).await {
            K::write(cluster, &found).await.map_err(|e| e.to_string())?;
            match e {
                kube::Error::Api(s) if s.code == 409 => continue,
                e => return Err(e.to_string()),
            }
        }
        tracing::info!(namespace = %ns, "imported {}", K::describe(&found));
    }
    Ok(())
}

/// One import pass for `dc`, kind by kind in an order where each may lean on the ones
/// before: roles, auth methods, then binding rules (a rule may bind a role, and is
/// imported only on a method of the namespace, both perhaps imported in this pass).
async fn import_pass(ctx: &Context, dc: &DiscoveryCluster, told: &mut HashSet<String>) {
    let roles = wants_import(dc, ACLRole::IMPORT_KIND);
    let methods = wants_import(dc, ACLAuthMethod::IMPORT_KIND);
    let rules = wants_import(dc, ACLBindingRule::IMPORT_KIND);
    if !(roles || methods || rules) {
        return;
    }
    let ns = dc.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, Some(&dc.name_any())).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(cluster = %object_key(dc), error = %e, "ACL import: cluster unavailable");
            return;
        }
    };
    if roles && let Err(e) = import_kind::<ACLRole>(ctx, &cluster, dc, told).await {
        tracing::warn!(cluster = %object_key(dc), error = %e, "importing ACL roles failed");
    }
    if methods && let Err(e) = import_kind::<ACLAuthMethod>(ctx, &cluster, dc, told).await {
        tracing::warn!(cluster = %object_key(dc), error = %e, "importing ACL auth methods failed");
    }
    if rules && let Err(e) = import_kind::<ACLBindingRule>(ctx, &cluster, dc, told).await {
        tracing::warn!(cluster = %object_key(dc), error = %e, "importing ACL binding rules failed");
    }
}

/// Runs an import pass for every DiscoveryCluster that asks for ACL kinds, every
/// `--acl-drift-interval`.
pub(crate) async fn import_loop(ctx: Arc<Context>) {
    let mut told = HashSet::new();
    loop {
        if let Ok(dcs) = watched_api::<DiscoveryCluster>(&ctx).list(&Default::default()).await {
            for dc in &dcs.items {
                import_pass(&ctx, dc, &mut told).await;
            }
        }
        tokio::time::sleep(ctx.args.acl_drift_interval).await;
    }
}

/// Name of the ACL importer in the runtime's list.
pub const IMPORTER: &str = "aclimport";

/// Runs [`import_loop`] until `stop` resolves.
pub async fn run_importer(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let importer = tokio::spawn(import_loop(ctx));
    stop.await;
    importer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_name_the_object_and_ownership_is_by_namespace() {
        assert_eq!(marked_description(Some(" web role "), "team", "web"), "web role [concord.io team/web]");
        assert_eq!(marked_description(None, "team", "web"), "[concord.io team/web]");
        assert!(owned_by_namespace("web role [concord.io team/web]", "team"));
        assert!(!owned_by_namespace("web role [concord.io other/web]", "team"));
        assert!(!owned_by_namespace("[concord.io team-b/web]", "team"));
        assert!(!owned_by_namespace("made by hand", "team"));
        // A hand-made description that quotes a mark mid-text does not count.
        assert!(!owned_by_namespace("[concord.io team/web] copied", "team"));
        assert!(marked("x [concord.io other/web]") && !marked("made by hand"));
        assert_eq!(mark_owner("web role [concord.io team/web]"), Some(("team", "web")));
        assert_eq!(mark_owner("[concord.io team/web] copied"), None);
        assert_eq!(mark_owner("made by hand"), None);
    }

    #[test]
    fn a_selector_is_held_to_a_namespace_only_when_it_cannot_widen() {
        assert!(selector_held_to("serviceaccount.namespace==\"team\"", "team"));
        assert!(selector_held_to("serviceaccount.namespace==\"team\" and (serviceaccount.name==web)", "team"));
        assert!(!selector_held_to("serviceaccount.namespace==\"other\"", "team"));
        assert!(!selector_held_to("", "team"));
        assert!(!selector_held_to("serviceaccount.name==web", "team"));
        let widen = "serviceaccount.namespace==\"team\" and (serviceaccount.name==web) or (serviceaccount.name!=\"\")";
        assert!(!selector_held_to(widen, "team"));
    }
}
