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
//! mark in the description among the method's rules. Drift is written back every
//! `--acl-drift-interval`; delete removes the rule (finalizer).
use super::acl_object::{
    self, marked_description, object_status, owned_by_namespace, ownership_mark, report, write_status,
};
use super::{drive, object_key, reconcile_with_finalizer, requeue_after_failure, watched_api};
use crate::cluster::tenancy::namespaced_selector;
use crate::cluster::{ClusterError, ClusterHandle};
use crate::consul::{self, AclBindingRule};
use crate::context::Context;
use crate::resources::{
    ACLAuthMethod, ACLBindingRule, ACLBindingRuleStatus, ACLRole, BindType, ConditionUpdate, types,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

pub(crate) const CONTROLLER: &str = "aclbindingrule";
/// Finalizer that deletes the Consul binding rule before the object goes.
pub const FINALIZER: &str = "concord.io/aclbindingrule";

pub use super::ObjectError as Error;

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
}
