//! What the ACLRole, ACLAuthMethod and ACLBindingRule controllers share: the ownership
//! mark in a Consul description, status writes with the `Synced` condition, and failure
//! reports (condition always, Event once per new reason or message).
use super::{ObjectError, apply_status};
use crate::consul;
use crate::context::Context;
use crate::resources::{Condition, ConditionUpdate, find_condition, set_condition, types};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

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
    description.rsplit_once("[concord.io ").is_some_and(|(_, rest)| {
        rest.ends_with(']') && rest.starts_with(&format!("{namespace}/")) && !rest.contains(' ')
    })
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
    let mut status = obj.current_status().cloned().unwrap_or_default();
    find_condition(status.conditions_mut(), types::SYNCED).is_some_and(|c| c.status == "True")
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
    let mut status = obj.current_status().cloned().unwrap_or_default();
    let generation = obj.meta().generation;
    find_condition(status.conditions_mut(), types::SYNCED)
        .is_some_and(|c| c.status == "True" && c.observed_generation == generation)
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
