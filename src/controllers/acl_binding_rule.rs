//! ACLBindingRule controller: a Consul binding rule on an ACLAuthMethod of the same
//! namespace: what a pod that logs in through it gets.
//!
//! Tenancy (an auth method accepts every ServiceAccount of the cluster, so the rules are
//! the boundary):
//! - `authMethodRef` names an ACLAuthMethod object of this namespace, and the Consul
//!   method it names must carry that object's mark: another namespace's method, or one
//!   made by hand, is refused (`NotGranted`).
//! - The selector written is `serviceaccount.namespace=="<namespace>" and (<selector>)`;
//!   a selector that could step out of its parentheses is refused, so no login from
//!   another namespace ever matches.
//! - `service`: the bind name must be granted by `spec.tenancy.serviceIdentities`; a
//!   templated one (`${serviceaccount.name}`) only when every service is (unset or `*`),
//!   since the ServiceAccount (and its `consul.hashicorp.com/service-name` annotation)
//!   then picks the name. `node`: granted by `nodeIdentities` (templated: `*`). `role`:
//!   a role in Consul carrying a mark of this namespace (never templated).
//!
//! Rules have no name in Consul: concord finds its own by `status.ruleId`, else by the
//! mark `[concord.io <ns>/<name>]` at the end of the description among the method's
//! rules. Drift is written back every `--acl-drift-interval`; delete removes the rule
//! (finalizer).
//!
//! Import: a DiscoveryCluster listing `ACLBindingRule` in `spec.sync.importConfigEntries`
//! gets an ACLBindingRule for every unmarked rule on a method this namespace owns (an
//! ACLAuthMethod of the namespace whose mark the method carries, an imported one
//! included), named `<authMethodRef>-<first 8 characters of the rule's ID>`. A rule is
//! imported only when the namespace could have written it itself: its selector already
//! holds logins to the namespace ([`acl_object::selector_held_to`]; `spec.selector` is
//! what follows the namespace clause), and its bind name is granted as above. The rule
//! is adopted: its description gets the object's mark, nothing else changes, so the
//! object finds it and writes no second rule. A rule refused is named in a Warning Event
//! `ImportRefused` on the DiscoveryCluster. The mapping ([`importable`]) is the one
//! `concord import ACLBindingRule` prints.
use super::acl_object::{
    self, marked, marked_description, object_status, owned_by_namespace, ownership_mark, report, selector_held_to,
    write_status,
};
use super::config_entry::{IMPORTED_LABEL, is_dns_subdomain};
use super::{drive, object_key, reconcile_with_finalizer, requeue_after_failure, watched_api};
use crate::cluster::tenancy::namespaced_selector;
use crate::cluster::{ClusterError, ClusterHandle};
use crate::consul::{self, AclBindingRule};
use crate::context::Context;
use crate::resources::{
    ACLAuthMethod, ACLBindingRule, ACLBindingRuleSpec, ACLBindingRuleStatus, ACLRole, BindType, ConditionUpdate,
    DiscoveryCluster, types,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

pub(crate) const CONTROLLER: &str = "aclbindingrule";
/// Finalizer that deletes the Consul binding rule before the object goes.
pub const FINALIZER: &str = "concord.io/aclbindingrule";

pub use super::ObjectError as Error;

/// The kind's name in `spec.sync.importConfigEntries`.
pub const IMPORT_KIND: &str = "ACLBindingRule";

object_status!(ACLBindingRule, ACLBindingRuleStatus);

/// The Consul rule an object declares for the method `method` (pure); `Err` for a
/// selector that could widen past the namespace.
pub fn desired_rule(b: &ACLBindingRule, method: &str) -> Result<AclBindingRule, String> {
    let ns = b.namespace().unwrap_or_default();
    Ok(AclBindingRule {
        description: marked_description(b.spec.description.as_deref(), &ns, &b.name_any()),
        auth_method: method.to_string(),
        selector: namespaced_selector(&ns, b.spec.selector.as_deref())?,
        bind_type: b.spec.bind_type.as_str().to_string(),
        bind_name: b.spec.bind_name.clone(),
        ..Default::default()
    })
}

/// Whether Consul's rule is what is desired (ID and indexes aside).
pub fn rule_matches(existing: &AclBindingRule, desired: &AclBindingRule) -> bool {
    existing.description == desired.description
        && existing.auth_method == desired.auth_method
        && existing.selector == desired.selector
        && existing.bind_type == desired.bind_type
        && existing.bind_name == desired.bind_name
}

/// Why the rule `found` is not imported into `namespace` (pure): a selector that does
/// not already hold logins to the namespace would, once the namespace's object owned it,
/// let that namespace edit or delete what serves others.
pub fn import_refusal(found: &AclBindingRule, namespace: &str) -> Option<String> {
    (!selector_held_to(&found.selector, namespace)).then(|| {
        format!(
            "binding rule {} on auth method {} has selector {:?}, not held to namespace {namespace}; not imported",
            found.id, found.auth_method, found.selector
        )
    })
}

/// The name of the object that adopts the rule `id` on the ACLAuthMethod `method_ref`
/// (rules have no name in Consul): `<method_ref>-<first 8 characters of the ID>`.
pub fn import_name(method_ref: &str, id: &str) -> String {
    let short: String = id.chars().take(8).collect::<String>().to_ascii_lowercase();
    let prefix: String = method_ref.chars().take(253 - short.len() - 1).collect();
    format!("{}-{short}", prefix.trim_end_matches(['-', '.']))
}

/// The object that would adopt `found`, a rule on the method of the ACLAuthMethod
/// `method_ref`, when it declares that rule exactly in `namespace` (so the selector must
/// already be held to it: see [`import_refusal`]), naming `cluster` (left out when None,
/// as `concord import` may). The controller's import and `concord import` both use this.
pub fn importable(
    found: &AclBindingRule,
    method_ref: &str,
    namespace: &str,
    cluster: Option<&str>,
) -> Option<ACLBindingRule> {
    if marked(&found.description) || found.description.trim() != found.description || found.id.is_empty() {
        return None;
    }
    let clause = format!("serviceaccount.namespace==\"{namespace}\"");
    let selector = match found.selector.strip_prefix(&clause)? {
        "" => None,
        rest => Some(rest.strip_prefix(" and (")?.strip_suffix(')')?.to_string()),
    };
    let bind_type = match found.bind_type.as_str() {
        "service" => BindType::Service,
        "node" => BindType::Node,
        "role" => BindType::Role,
        _ => return None,
    };
    // Within the schema's limits, or the object would not be admitted.
    if found.description.len() > 512
        || selector.as_ref().is_some_and(|s| s.len() > 1024)
        || found.bind_name.is_empty()
        || found.bind_name.len() > 256
    {
        return None;
    }
    let spec = ACLBindingRuleSpec {
        cluster_ref: cluster.map(str::to_string),
        auth_method_ref: method_ref.to_string(),
        description: Some(found.description.clone()).filter(|d| !d.is_empty()),
        selector,
        bind_type,
        bind_name: found.bind_name.clone(),
    };
    let name = import_name(method_ref, &found.id);
    if !is_dns_subdomain(&name) {
        return None;
    }
    let mut object = ACLBindingRule::new(&name, spec);
    object.metadata.namespace = Some(namespace.to_string());
    object.metadata.labels = Some([(IMPORTED_LABEL.to_string(), "true".to_string())].into());
    let declared = desired_rule(&object, &found.auth_method).ok()?;
    (selector_held_to(&found.selector, namespace) && rule_matches(&adopted(found, &object), &declared))
        .then_some(object)
}

/// `found` with the mark of `object` (the one [`importable`] made for it): the only
/// change adoption writes.
pub fn adopted(found: &AclBindingRule, object: &ACLBindingRule) -> AclBindingRule {
    let description =
        marked_description(Some(&found.description), &object.namespace().unwrap_or_default(), &object.name_any());
    AclBindingRule { description, ..found.clone() }
}

/// Whether the bind name is granted; `Err((reason, why))` when not. Roles are read from
/// Consul: a role that does not exist (yet) is `DependencyMissing`, retried when an
/// ACLRole of the namespace changes.
async fn bind_granted(
    cluster: &ClusterHandle,
    b: &ACLBindingRule,
) -> Result<Result<(), (&'static str, String)>, consul::Error> {
    let ns = b.namespace().unwrap_or_default();
    let name = b.spec.bind_name.as_str();
    let templated = name.contains("${");
    let refused = |msg: String| ("NotGranted", msg);
    Ok(match b.spec.bind_type {
        BindType::Service if templated => cluster.grants.templated_bind_name(false).map_err(refused),
        BindType::Service => cluster.grants.service_identity(name).map_err(refused),
        BindType::Node if templated => cluster.grants.templated_bind_name(true).map_err(refused),
        BindType::Node => cluster.grants.node_identity(name).map_err(refused),
        BindType::Role if templated => {
            Err(refused("a role bind name cannot be templated: the ServiceAccount would pick the role".to_string()))
        }
        BindType::Role => match cluster.consul.acl_role_read_by_name(name).await? {
            Some(role) if owned_by_namespace(&role.description, &ns) => Ok(()),
            Some(_) => Err(refused(format!(
                "role {name} is not an ACLRole of namespace {ns}; a binding rule may bind only those"
            ))),
            None => Err((
                "DependencyMissing",
                format!("role {name} does not exist in Consul (create it as an ACLRole of this namespace)"),
            )),
        },
    })
}

/// The Consul method the rule's `authMethodRef` stands for, if this namespace owns it.
async fn owned_method(
    ctx: &Context,
    cluster: &ClusterHandle,
    b: &ACLBindingRule,
) -> Result<Result<String, String>, Error> {
    let ns = b.namespace().unwrap_or_default();
    let reference = &b.spec.auth_method_ref;
    let api: Api<ACLAuthMethod> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(object) = api.get_opt(reference).await.map_err(Error::Status)? else {
        return Ok(Err(format!("ACLAuthMethod {reference} does not exist in namespace {ns}")));
    };
    let name = object.spec.name.clone().unwrap_or_else(|| object.name_any());
    match cluster.consul.acl_auth_method_read(&name).await.map_err(Error::Consul)? {
        Some(m) if m.description.ends_with(&ownership_mark(&ns, reference)) => Ok(Ok(name)),
        Some(_) => Ok(Err(format!(
            "auth method {name} in Consul was not made by ACLAuthMethod {ns}/{reference}; rules are written only on this namespace's own methods"
        ))),
        None => Ok(Err(format!("auth method {name} (ACLAuthMethod {reference}) does not exist in Consul yet"))),
    }
}

async fn find_existing(
    consul: &consul::Client,
    b: &ACLBindingRule,
    method: &str,
) -> Result<Option<AclBindingRule>, consul::Error> {
    if let Some(id) = b.status.as_ref().and_then(|s| s.rule_id.as_deref())
        && let Some(found) = consul.acl_binding_rule_read(id).await?
    {
        return Ok(Some(found));
    }
    let mark = ownership_mark(&b.namespace().unwrap_or_default(), &b.name_any());
    Ok(consul.acl_binding_rules(method).await?.into_iter().find(|r| r.description.ends_with(&mark)))
}

enum Outcome {
    Synced(String, bool),
    Refused(&'static str, String),
}

async fn apply(b: Arc<ACLBindingRule>, ctx: &Context) -> Result<Action, Error> {
    let key = format!("{CONTROLLER}:{}", object_key(b.as_ref()));
    let ns = b.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, b.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            report(ctx, b.as_ref(), "ClusterUnavailable", e.to_string()).await?;
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
    };
    let method = match owned_method(ctx, &cluster, &b).await {
        Ok(Ok(m)) => m,
        Ok(Err(msg)) => {
            let reason = if msg.contains("was not made by") { "NotGranted" } else { "AuthMethodNotFound" };
            report(ctx, b.as_ref(), reason, msg).await?;
            return Ok(Action::requeue(ctx.args.acl_drift_interval));
        }
        Err(Error::Consul(e)) if e.is_transient() => {
            report(ctx, b.as_ref(), "ConsulUnreachable", e.to_string()).await?;
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
        Err(e) => return Err(e),
    };
    let desired = match desired_rule(&b, &method) {
        Ok(d) => d,
        Err(msg) => {
            report(ctx, b.as_ref(), "NotGranted", msg).await?;
            return Ok(Action::await_change());
        }
    };
    let result: Result<Outcome, consul::Error> = async {
        if let Err((reason, msg)) = bind_granted(&cluster, &b).await? {
            return Ok(Outcome::Refused(reason, msg));
        }
        Ok(match find_existing(&cluster.consul, &b, &method).await? {
            None => Outcome::Synced(cluster.consul.acl_binding_rule_create(&desired).await?.id, true),
            Some(e) if !e.description.ends_with(&ownership_mark(&ns, &b.name_any())) => {
                // The ID in status now names someone else's rule: start over.
                Outcome::Synced(cluster.consul.acl_binding_rule_create(&desired).await?.id, true)
            }
            Some(e) if rule_matches(&e, &desired) => Outcome::Synced(e.id, false),
            Some(e) if e.auth_method != desired.auth_method => {
                // A rule cannot move to another method: replace it.
                let id = cluster.consul.acl_binding_rule_create(&desired).await?.id;
                match cluster.consul.acl_binding_rule_delete(&e.id).await {
                    Ok(()) => {}
                    Err(err) if err.is_not_found() => {}
                    Err(err) => return Err(err),
                }
                Outcome::Synced(id, true)
            }
            Some(e) => Outcome::Synced(
                cluster.consul.acl_binding_rule_update(&AclBindingRule { id: e.id, ..desired.clone() }).await?.id,
                true,
            ),
        })
    }
    .await;
    match result {
        Ok(Outcome::Synced(id, written)) => {
            let before = acl_object::was_synced(b.as_ref());
            let msg = format!("binding rule {id} on {method}: {} {}", desired.bind_type, desired.bind_name);
            let status = ACLBindingRuleStatus {
                rule_id: Some(id),
                selector: Some(desired.selector.clone()),
                ..b.status.clone().unwrap_or_default()
            };
            write_status(ctx, b.as_ref(), status, ConditionUpdate::new(types::SYNCED, true, "Synced", msg.clone()))
                .await?;
            if !before || written {
                let reason = if before { "DriftReverted" } else { "BindingRuleSynced" };
                ctx.event(&b.object_ref(&()), false, reason, "Sync", msg).await;
            }
            ctx.reset_backoff(&key);
            Ok(Action::requeue(ctx.args.acl_drift_interval))
        }
        Ok(Outcome::Refused(reason, msg)) => {
            report(ctx, b.as_ref(), reason, msg).await?;
            Ok(Action::requeue(ctx.args.acl_drift_interval))
        }
        Err(e) if e.is_missing_reference() => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, b.as_ref(), "DependencyMissing", acl_object::missing_reference(&e)).await?;
            Ok(Action::requeue(ctx.args.acl_drift_interval))
        }
        Err(e) if e.is_transient() => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, b.as_ref(), "ConsulUnreachable", e.to_string()).await?;
            Ok(Action::requeue(ctx.backoff(&key)))
        }
        Err(e) => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, b.as_ref(), "RejectedByConsul", format!("Consul refused the binding rule: {e}")).await?;
            Ok(Action::await_change())
        }
    }
}

async fn cleanup(b: Arc<ACLBindingRule>, ctx: &Context) -> Result<Action, Error> {
    let ns = b.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, b.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e @ (ClusterError::NotFound { .. } | ClusterError::NoCluster { .. })) => {
            ctx.event(&b.object_ref(&()), true, "ClusterGone", "Delete", format!("binding rule not deleted: {e}"))
                .await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let mark = ownership_mark(&ns, &b.name_any());
    let mut found = match b.status.as_ref().and_then(|s| s.rule_id.as_deref()) {
        Some(id) => cluster.consul.acl_binding_rule_read(id).await.map_err(Error::Consul)?,
        None => None,
    };
    if found.is_none() {
        // No ID recorded (e.g. the status write after a create failed): look for the mark
        // among the rules of the method the object names, if that method is still ours.
        if let Ok(Ok(method)) = owned_method(ctx, &cluster, &b).await {
            found = cluster
                .consul
                .acl_binding_rules(&method)
                .await
                .map_err(Error::Consul)?
                .into_iter()
                .find(|r| r.description.ends_with(&mark));
        }
    }
    if let Some(existing) = found
        && existing.description.ends_with(&mark)
    {
        match cluster.consul.acl_binding_rule_delete(&existing.id).await {
            Ok(()) => tracing::info!(rule = %existing.id, "deleted ACL binding rule"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::Consul(e)),
        }
    }
    Ok(Action::await_change())
}

async fn reconcile(b: Arc<ACLBindingRule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    reconcile_with_finalizer(&ctx.client, FINALIZER, b, |b| apply(b, &ctx), |b| cleanup(b, &ctx))
        .await
        .map_err(Error::Finalizer)
}

fn error_policy(b: Arc<ACLBindingRule>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(rule = %b.name_any(), error = %error, "reconcile failed");
    requeue_after_failure(&ctx, CONTROLLER, b.as_ref(), error.category())
}

impl acl_object::Importable for ACLBindingRule {
    const IMPORT_KIND: &'static str = IMPORT_KIND;
    type Found = AclBindingRule;

    /// The unmarked rules on the methods this namespace owns (see the module's doc).
    async fn candidates(
        ctx: &Context,
        cluster: &ClusterHandle,
        dc: &DiscoveryCluster,
    ) -> Result<acl_object::Candidates<ACLBindingRule>, String> {
        let ns = dc.namespace().unwrap_or_default();
        let objects = Api::<ACLBindingRule>::namespaced(ctx.client.clone(), &ns)
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        // A rule some object holds by ID is that object's, mark or not.
        let held: Vec<String> = objects.items.iter().filter_map(|b| b.status.as_ref()?.rule_id.clone()).collect();
        let methods = Api::<ACLAuthMethod>::namespaced(ctx.client.clone(), &ns)
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let in_consul = cluster.consul.acl_auth_methods().await.map_err(|e| e.to_string())?;
        let mut candidates = Vec::new();
        for m in methods.items.iter().filter(|m| m.metadata.deletion_timestamp.is_none()) {
            let name = m.spec.name.clone().unwrap_or_else(|| m.name_any());
            let mark = ownership_mark(&ns, &m.name_any());
            if !in_consul.iter().any(|c| c.name == name && c.description.ends_with(&mark)) {
                continue;
            }
            for found in cluster.consul.acl_binding_rules(&name).await.map_err(|e| e.to_string())? {
                if marked(&found.description) || held.contains(&found.id) {
                    continue;
                }
                let object = match import_refusal(&found, &ns) {
                    Some(msg) => Err(msg),
                    None => match importable(&found, &m.name_any(), &ns, Some(&dc.name_any())) {
                        None => Err(format!(
                            "binding rule {} on auth method {name} uses what ACLBindingRule cannot declare; not imported",
                            found.id
                        )),
                        Some(object) => match bind_granted(cluster, &object).await.map_err(|e| e.to_string())? {
                            Err((_, msg)) => {
                                Err(format!("binding rule {} on auth method {name} not imported: {msg}", found.id))
                            }
                            Ok(()) => Ok(object),
                        },
                    },
                };
                candidates.push((found, object));
            }
        }
        Ok(candidates)
    }

    fn adopted(found: &AclBindingRule, object: &ACLBindingRule) -> AclBindingRule {
        adopted(found, object)
    }

    async fn write(cluster: &ClusterHandle, found: &AclBindingRule) -> Result<(), consul::Error> {
        cluster.consul.acl_binding_rule_update(found).await.map(|_| ())
    }

    fn describe(found: &AclBindingRule) -> String {
        format!("ACL binding rule {} on {}", found.id, found.auth_method)
    }

    fn consul_name(found: &AclBindingRule) -> String {
        found.id.clone()
    }
}

/// Runs the controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<ACLBindingRule>(&ctx), watcher::Config::default());
    // A rule whose method or role does not exist yet is retried when an ACLAuthMethod or
    // ACLRole of its namespace changes.
    let (by_method, by_role) = (controller.store(), controller.store());
    let controller = controller
        .watches(watched_api::<ACLAuthMethod>(&ctx), watcher::Config::default(), move |m| {
            acl_object::unsynced_beside(&by_method, &m)
        })
        .watches(watched_api::<ACLRole>(&ctx), watcher::Config::default(), move |r| {
            acl_object::unsynced_beside(&by_role, &r)
        });
    drive(ctx, CONTROLLER, controller, reconcile, error_policy, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ACLBindingRuleSpec;

    fn rule(selector: Option<&str>) -> ACLBindingRule {
        let mut b = ACLBindingRule::new(
            "web",
            ACLBindingRuleSpec {
                cluster_ref: None,
                auth_method_ref: "pods".into(),
                description: None,
                selector: selector.map(str::to_string),
                bind_type: BindType::Service,
                bind_name: "web".into(),
            },
        );
        b.metadata.namespace = Some("team".into());
        b
    }

    #[test]
    fn the_written_selector_always_holds_the_namespace() {
        let d = desired_rule(&rule(Some("serviceaccount.name==web")), "pods").expect("rule");
        assert_eq!(d.selector, "serviceaccount.namespace==\"team\" and (serviceaccount.name==web)");
        assert_eq!(d.bind_type, "service");
        assert_eq!(d.description, "[concord.io team/web]");
        assert_eq!(desired_rule(&rule(None), "pods").expect("rule").selector, "serviceaccount.namespace==\"team\"");
        assert!(desired_rule(&rule(Some("serviceaccount.name==web) or (serviceaccount.name!=\"\"")), "pods").is_err());
        let mut drifted = d.clone();
        drifted.selector = "serviceaccount.name==web".into();
        assert!(!rule_matches(&drifted, &d));
        assert!(rule_matches(&AclBindingRule { id: "x".into(), ..d.clone() }, &d));
    }

    fn hand_made(selector: &str) -> AclBindingRule {
        AclBindingRule {
            id: "3F2A9C1E-0000-4000-8000-000000000001".into(),
            description: "made by hand".into(),
            auth_method: "team-pods".into(),
            selector: selector.into(),
            bind_type: "service".into(),
            bind_name: "web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_imported_rule_declares_the_same_rule_and_adoption_adds_only_the_mark() {
        let found = hand_made("serviceaccount.namespace==\"team\" and (serviceaccount.name==web)");
        assert!(import_refusal(&found, "team").is_none());
        let object = importable(&found, "pods", "team", Some("consul")).expect("importable");
        assert_eq!(object.name_any(), "pods-3f2a9c1e");
        assert_eq!(object.namespace().as_deref(), Some("team"));
        assert_eq!(object.labels().get(IMPORTED_LABEL).map(String::as_str), Some("true"));
        assert_eq!(object.spec.auth_method_ref, "pods");
        assert_eq!(object.spec.cluster_ref.as_deref(), Some("consul"));
        assert_eq!(object.spec.selector.as_deref(), Some("serviceaccount.name==web"));
        assert_eq!(object.spec.description.as_deref(), Some("made by hand"));
        assert_eq!((object.spec.bind_type, object.spec.bind_name.as_str()), (BindType::Service, "web"));
        let adopted = adopted(&found, &object);
        assert_eq!(adopted.description, "made by hand [concord.io team/pods-3f2a9c1e]");
        assert_eq!(AclBindingRule { description: found.description.clone(), ..adopted.clone() }, found);
        let desired = desired_rule(&object, "team-pods").expect("desired");
        assert!(rule_matches(&adopted, &desired), "the object finds the adopted rule as it is: no second rule");
        // The whole namespace, no selector of its own.
        let all = hand_made("serviceaccount.namespace==\"team\"");
        assert_eq!(importable(&all, "pods", "team", None).expect("importable").spec.selector, None);
    }

    #[test]
    fn a_rule_reaching_past_the_namespace_is_not_imported_into_it() {
        for hostile in [
            // Logins of every namespace, or of another one.
            "",
            "serviceaccount.name==web",
            "serviceaccount.namespace==\"other\"",
            "serviceaccount.namespace==\"team-b\" and (serviceaccount.name==web)",
            // The namespace clause, then a way out of it.
            "serviceaccount.namespace==\"team\" or serviceaccount.namespace==\"other\"",
            "serviceaccount.namespace==\"team\" and (serviceaccount.name==web) or (serviceaccount.name!=\"\")",
            "serviceaccount.namespace==\"team\" and (serviceaccount.name==web)) or ((serviceaccount.name!=\"\")",
            "serviceaccount.namespace==\"team\" and serviceaccount.name==web or serviceaccount.name!=\"\"",
            // The clause not first.
            "serviceaccount.name!=\"\" or serviceaccount.namespace==\"team\"",
        ] {
            let found = hand_made(hostile);
            assert!(import_refusal(&found, "team").is_some(), "{hostile} refused");
            assert!(importable(&found, "pods", "team", None).is_none(), "{hostile} not importable");
        }
        let refusal = import_refusal(&hand_made(""), "team").expect("refused");
        assert!(refusal.contains("not held to namespace team"), "{refusal}");
    }

    #[test]
    fn what_the_kind_cannot_declare_exactly_is_not_imported() {
        let held = "serviceaccount.namespace==\"team\" and (serviceaccount.name==web)";
        let policy = AclBindingRule { bind_type: "policy".into(), ..hand_made(held) };
        assert!(importable(&policy, "pods", "team", None).is_none(), "a bind type the kind lacks");
        let marked = AclBindingRule { description: "x [concord.io team/web]".into(), ..hand_made(held) };
        assert!(importable(&marked, "pods", "team", None).is_none(), "an object's rule already");
        let padded = AclBindingRule { description: " hand ".into(), ..hand_made(held) };
        assert!(importable(&padded, "pods", "team", None).is_none(), "a description the object would trim");
        let spaced = hand_made("serviceaccount.namespace==\"team\" and ( serviceaccount.name==web)");
        assert!(importable(&spaced, "pods", "team", None).is_none(), "a selector the object would trim");
        let empty = hand_made("serviceaccount.namespace==\"team\" and ()");
        assert!(importable(&empty, "pods", "team", None).is_none());
        let node =
            AclBindingRule { bind_type: "node".into(), bind_name: "${serviceaccount.name}".into(), ..hand_made(held) };
        assert_eq!(importable(&node, "pods", "team", None).expect("node").spec.bind_type, BindType::Node);
    }

    #[test]
    fn import_names_are_object_names_even_for_long_method_names() {
        assert_eq!(import_name("pods", "ABCDEF12-3456"), "pods-abcdef12");
        let long = "a".repeat(250);
        let name = import_name(&long, "abcdef12-3456");
        assert!(is_dns_subdomain(&name) && name.ends_with("-abcdef12"), "{name}");
        assert_eq!(import_name("p.", "abcdef12"), "p-abcdef12");
    }
}
