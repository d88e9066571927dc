//! ACLPolicy controller: creates or updates the Consul ACL policy an object declares
//! (name = `spec.name`, else the object's name) and deletes it on delete (finalizer;
//! a policy already gone counts as deleted). Policies concord made carry an ownership
//! mark in their description; a same-named policy without it is reported
//! (`Synced=False, reason=NameTaken`), never overwritten or deleted. What Consul refuses
//! (rules that do not parse) is quoted in the `Synced` condition.
use super::{apply_status, drive, object_key, reconcile_with_finalizer, requeue_after_failure, watched_api};
use crate::cluster::ClusterError;
use crate::consul::{self, AclPolicy};
use crate::context::Context;
use crate::resources::{ACLPolicy, ACLPolicyStatus, ConditionUpdate, find_condition, set_condition, types};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const CONTROLLER: &str = "aclpolicy";
/// Finalizer that deletes the Consul policy before the object goes.
pub const FINALIZER: &str = "concord.io/aclpolicy";
const RESYNC: Duration = Duration::from_secs(300);

/// This controller's errors (shared with the other one-Consul-object controllers).
pub use super::ObjectError as Error;

/// Why one sync did not happen.
enum SyncError {
    NameTaken(String),
    Consul(consul::Error),
}

impl From<consul::Error> for SyncError {
    fn from(e: consul::Error) -> Self {
        SyncError::Consul(e)
    }
}

/// Whether Consul refused the policy itself. Consul answers rules that do not parse with
/// a 500 ("Failed to parse policy", "Invalid key_prefix policy: ..."), which is no
/// reason to retry.
pub fn is_refusal(e: &consul::Error) -> bool {
    match e {
        consul::Error::Http { message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("failed to parse") || (m.contains("invalid") && m.contains("policy"))
        }
        _ => false,
    }
}

/// The ownership mark in a policy's description.
pub fn ownership_mark(namespace: &str, name: &str) -> String {
    format!("[concord.io {namespace}/{name}]")
}

/// The Consul policy an object declares (pure).
pub fn desired_policy(p: &ACLPolicy) -> AclPolicy {
    let mark = ownership_mark(&p.namespace().unwrap_or_default(), &p.name_any());
    let description = match p.spec.description.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => format!("{d} {mark}"),
        _ => mark,
    };
    let mut datacenters = p.spec.datacenters.clone();
    datacenters.sort();
    AclPolicy {
        name: p.spec.name.clone().unwrap_or_else(|| p.name_any()),
        description,
        rules: p.spec.rules.clone(),
        datacenters,
        ..Default::default()
    }
}

/// Whether Consul's policy already is what is desired (IDs and indexes aside).
pub fn policy_matches(existing: &AclPolicy, desired: &AclPolicy) -> bool {
    let mut dcs = existing.datacenters.clone();
    dcs.sort();
    existing.name == desired.name
        && existing.description == desired.description
        && existing.rules == desired.rules
        && dcs == desired.datacenters
}

async fn find_existing(consul: &consul::Client, p: &ACLPolicy, name: &str) -> Result<Option<AclPolicy>, Error> {
    if let Some(id) = p.status.as_ref().and_then(|s| s.policy_id.as_deref())
        && let Some(found) = consul.acl_policy_read(id).await.map_err(Error::Consul)?
    {
        return Ok(Some(found));
    }
    consul.acl_policy_read_by_name(name).await.map_err(Error::Consul)
}

async fn write_status(
    ctx: &Context,
    p: &ACLPolicy,
    policy_id: Option<String>,
    update: ConditionUpdate,
) -> Result<(), Error> {
    let mut status = p.status.clone().unwrap_or_default();
    status.observed_generation = p.meta().generation;
    status.policy_id = policy_id.or(status.policy_id);
    status.conditions =
        set_condition(&status.conditions, update, p.meta().generation, k8s_openapi::jiff::Timestamp::now());
    apply_status::<ACLPolicy>(ctx, p, &ACLPolicyStatus { ..status }).await.map_err(Error::Status)
}

/// Reports a failure once as an Event, always in the condition.
async fn report(ctx: &Context, p: &ACLPolicy, reason: &'static str, message: String) -> Result<(), Error> {
    let conditions = p.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let known = find_condition(conditions, types::SYNCED).is_some_and(|c| c.reason == reason && c.message == message);
    write_status(ctx, p, None, ConditionUpdate::new(types::SYNCED, false, reason, message.clone())).await?;
    if !known {
        ctx.event(&p.object_ref(&()), true, reason, "Sync", message).await;
    }
    Ok(())
}

async fn apply(p: Arc<ACLPolicy>, ctx: &Context) -> Result<Action, Error> {
    let key = format!("{CONTROLLER}:{}", object_key(p.as_ref()));
    let ns = p.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, p.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            report(ctx, &p, "ClusterUnavailable", e.to_string()).await?;
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
    };
    let desired = desired_policy(&p);
    let acl_write = crate::cluster::tenancy::rules_grant_acl_write(&desired.rules);
    if let Err(msg) = cluster.grants.policy(&desired.name, acl_write) {
        report(ctx, &p, "NotGranted", msg).await?;
        return Ok(Action::requeue(RESYNC));
    }
    let result: Result<String, SyncError> = async {
        let existing = match find_existing(&cluster.consul, &p, &desired.name).await {
            Ok(e) => e,
            Err(Error::Consul(e)) => return Err(SyncError::Consul(e)),
            Err(_) => None,
        };
        match existing {
            None => Ok(cluster.consul.acl_policy_create(&desired).await?.id),
            Some(e) if !e.description.ends_with(&ownership_mark(&ns, &p.name_any())) => Err(SyncError::NameTaken(
                format!("policy {} exists in Consul and was not made by this object; not overwritten", e.name),
            )),
            Some(e) if policy_matches(&e, &desired) => Ok(e.id),
            Some(e) => Ok(cluster.consul.acl_policy_update(&AclPolicy { id: e.id, ..desired.clone() }).await?.id),
        }
    }
    .await;
    match result {
        Ok(id) => {
            let was_synced = p.status.as_ref().is_some_and(|s| {
                s.policy_id.as_deref() == Some(id.as_str())
                    && s.observed_generation == p.meta().generation
                    && find_condition(&s.conditions, types::SYNCED).is_some_and(|c| c.status == "True")
            });
            let msg = format!("policy {} ({id})", desired.name);
            write_status(ctx, &p, Some(id), ConditionUpdate::new(types::SYNCED, true, "Synced", msg.clone())).await?;
            if !was_synced {
                ctx.event(&p.object_ref(&()), false, "PolicySynced", "Sync", msg).await;
            }
            ctx.reset_backoff(&key);
            Ok(Action::requeue(RESYNC))
        }
        Err(SyncError::NameTaken(msg)) => {
            report(ctx, &p, "NameTaken", msg).await?;
            Ok(Action::requeue(RESYNC))
        }
        Err(SyncError::Consul(e)) if e.is_transient() && !is_refusal(&e) => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, &p, "ConsulUnreachable", e.to_string()).await?;
            Ok(Action::requeue(ctx.backoff(&key)))
        }
        Err(SyncError::Consul(e)) => {
            // Consul refused what the object says (bad rules, bad datacenter): quote it and
            // wait for the object to change.
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, &p, "RejectedByConsul", format!("Consul refused policy {}: {e}", desired.name)).await?;
            Ok(Action::await_change())
        }
    }
}

async fn cleanup(p: Arc<ACLPolicy>, ctx: &Context) -> Result<Action, Error> {
    let ns = p.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, p.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e @ (ClusterError::NotFound { .. } | ClusterError::NoCluster { .. })) => {
            // The cluster object is gone: there is nothing left to delete from.
            ctx.event(&p.object_ref(&()), true, "ClusterGone", "Delete", format!("policy not deleted: {e}")).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let desired = desired_policy(&p);
    if let Some(existing) = find_existing(&cluster.consul, &p, &desired.name).await?
        && existing.description.ends_with(&ownership_mark(&ns, &p.name_any()))
    {
        match cluster.consul.acl_policy_delete(&existing.id).await {
            Ok(()) => tracing::info!(policy = %existing.name, id = %existing.id, "deleted ACL policy"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::Consul(e)),
        }
    }
    Ok(Action::await_change())
}

async fn reconcile(p: Arc<ACLPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    reconcile_with_finalizer(&ctx.client, FINALIZER, p, |p| apply(p, &ctx), |p| cleanup(p, &ctx))
        .await
        .map_err(Error::Finalizer)
}

fn error_policy(p: Arc<ACLPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %p.name_any(), error = %error, "reconcile failed");
    requeue_after_failure(&ctx, CONTROLLER, p.as_ref(), error.category())
}

/// Runs the controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<ACLPolicy>(&ctx), watcher::Config::default());
    drive(ctx, CONTROLLER, controller, reconcile, error_policy, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ACLPolicySpec;

    fn policy(name: Option<&str>, description: Option<&str>) -> ACLPolicy {
        let mut p = ACLPolicy::new(
            "app-kv",
            ACLPolicySpec {
                cluster_ref: None,
                name: name.map(str::to_string),
                description: description.map(str::to_string),
                rules: "key_prefix \"app/\" { policy = \"write\" }".into(),
                datacenters: vec!["dc2".into(), "dc1".into()],
            },
        );
        p.metadata.namespace = Some("team".into());
        p
    }

    #[test]
    fn consul_name_defaults_to_the_object_name_and_description_carries_the_mark() {
        let d = desired_policy(&policy(None, Some("app keys")));
        assert_eq!(d.name, "app-kv");
        assert_eq!(d.description, "app keys [concord.io team/app-kv]");
        assert_eq!(d.datacenters, vec!["dc1", "dc2"]);
        assert_eq!(desired_policy(&policy(Some("custom"), None)).name, "custom");
        assert_eq!(desired_policy(&policy(None, Some("  "))).description, "[concord.io team/app-kv]");
    }

    #[test]
    fn rule_parse_errors_are_refusals_not_outages() {
        let parse = consul::Error::Http {
            method: reqwest::Method::PUT,
            path: "/v1/acl/policy".into(),
            status: reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            message: "Failed to parse policy: Invalid key policy: \"bogus\"".into(),
        };
        assert!(is_refusal(&parse));
        let outage = consul::Error::Http {
            method: reqwest::Method::PUT,
            path: "/v1/acl/policy".into(),
            status: reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            message: "rpc error making call: No cluster leader".into(),
        };
        assert!(!is_refusal(&outage));
    }

    #[test]
    fn matching_ignores_ids_and_datacenter_order() {
        let desired = desired_policy(&policy(None, None));
        let mut existing = desired.clone();
        existing.id = "abc".into();
        existing.datacenters = vec!["dc2".into(), "dc1".into()];
        assert!(policy_matches(&existing, &desired));
        existing.rules = "key_prefix \"\" { policy = \"read\" }".into();
        assert!(!policy_matches(&existing, &desired));
    }
}
