//! ACLRole controller: creates or updates the Consul ACL role an object declares (name =
//! `spec.name`, else the object's name) and deletes it on delete (finalizer; a role
//! already gone counts as deleted). Roles have no Meta in Consul, so ownership is the
//! mark `[concord.io <ns>/<name>]` at the end of the description (as for ACLPolicy): a
//! same-named role without it is reported (`NameTaken`), never overwritten or deleted.
//! Every policy must be granted by the DiscoveryCluster's `spec.tenancy.policies`
//! (management-equivalent ones only by exact `global-management`), every service
//! identity by `serviceIdentities`, every node identity by `nodeIdentities`. Consul is
//! compared every `--acl-drift-interval`; drift is written back.
//!
//! Import: a DiscoveryCluster listing `ACLRole` in `spec.sync.importConfigEntries` gets
//! an ACLRole (in its namespace, named like the role) for every Consul role without a
//! concord mark that no object of the namespace declares, when the object would declare
//! that role exactly and the cluster's grants allow every policy and identity of it;
//! the role is then adopted: its description gets the object's mark, nothing else
//! changes. A role the grants do not allow, or one the kind cannot declare, is not
//! imported and is named in a Warning Event on the DiscoveryCluster (`ImportRefused`).
//! The mapping ([`importable`]) is the one `concord import ACLRole` prints.
use super::acl_object::{self, marked_description, object_status, ownership_mark, report, write_status};
use super::config_entry::{IMPORTED_LABEL, is_dns_subdomain};
use super::{drive, object_key, reconcile_with_finalizer, requeue_after_failure, watched_api};
use crate::cluster::tenancy::rules_grant_acl_write;
use crate::cluster::{ClusterError, ClusterHandle};
use crate::consul::{self, AclLink, AclNodeIdentity, AclRole, AclServiceIdentity};
use crate::context::Context;
use crate::resources::{
    ACLPolicy, ACLRole, ACLRoleSpec, ACLRoleStatus, ConditionUpdate, DiscoveryCluster, NodeIdentity, ServiceIdentity,
    types,
};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::sync::Arc;

pub(crate) const CONTROLLER: &str = "aclrole";
/// Finalizer that deletes the Consul role before the object goes.
pub const FINALIZER: &str = "concord.io/aclrole";

pub use super::ObjectError as Error;

/// The kind's name in `spec.sync.importConfigEntries`.
pub const IMPORT_KIND: &str = "ACLRole";

pub use super::acl_object::marked;

object_status!(ACLRole, ACLRoleStatus);

/// The Consul role an object declares (pure; lists sorted).
pub fn desired_role(r: &ACLRole) -> AclRole {
    let ns = r.namespace().unwrap_or_default();
    let mut policies = r.spec.policies.clone();
    policies.sort();
    policies.dedup();
    let mut services: Vec<AclServiceIdentity> = r
        .spec
        .service_identities
        .iter()
        .map(|s| {
            let mut datacenters = s.datacenters.clone();
            datacenters.sort();
            AclServiceIdentity { service_name: s.service_name.clone(), datacenters }
        })
        .collect();
    services.sort_by(|a, b| a.service_name.cmp(&b.service_name));
    let mut nodes: Vec<AclNodeIdentity> = r
        .spec
        .node_identities
        .iter()
        .map(|n| AclNodeIdentity { node_name: n.node_name.clone(), datacenter: n.datacenter.clone() })
        .collect();
    nodes.sort_by(|a, b| (&a.node_name, &a.datacenter).cmp(&(&b.node_name, &b.datacenter)));
    AclRole {
        name: r.spec.name.clone().unwrap_or_else(|| r.name_any()),
        description: marked_description(r.spec.description.as_deref(), &ns, &r.name_any()),
        policies: policies.into_iter().map(AclLink::by_name).collect(),
        service_identities: services,
        node_identities: nodes,
        ..Default::default()
    }
}

/// The object that would adopt `found`, when it declares that role exactly: named like
/// the role, in `namespace`, naming `cluster` (both left out when None, as `concord
/// import` may). The controller's import and `concord import` both use this one mapping.
pub fn importable(found: &AclRole, namespace: Option<&str>, cluster: Option<&str>) -> Option<ACLRole> {
    if !is_dns_subdomain(&found.name) || marked(&found.description) {
        return None;
    }
    // Lossless only: a description the object would write differently is not imported.
    if found.description.trim() != found.description {
        return None;
    }
    let spec = ACLRoleSpec {
        cluster_ref: cluster.map(str::to_string),
        name: None,
        description: Some(found.description.clone()).filter(|d| !d.is_empty()),
        policies: found.policies.iter().map(|p| p.name.clone()).collect(),
        service_identities: found
            .service_identities
            .iter()
            .map(|s| ServiceIdentity { service_name: s.service_name.clone(), datacenters: s.datacenters.clone() })
            .collect(),
        node_identities: found
            .node_identities
            .iter()
            .map(|n| NodeIdentity { node_name: n.node_name.clone(), datacenter: n.datacenter.clone() })
            .collect(),
    };
    let mut object = ACLRole::new(&found.name, spec);
    object.metadata.namespace = namespace.map(str::to_string);
    object.metadata.labels = Some([(IMPORTED_LABEL.to_string(), "true".to_string())].into());
    let declared = desired_role(&object);
    let adopted = adopted(found, namespace.unwrap_or_default());
    (found.policies.iter().all(|p| !p.name.is_empty()) && role_matches(&adopted, &declared)).then_some(object)
}

/// `found` with the mark of the object [`importable`] makes for it in `namespace`:
/// the only change adoption writes.
pub fn adopted(found: &AclRole, namespace: &str) -> AclRole {
    let description = marked_description(Some(&found.description), namespace, &found.name);
    AclRole { description, ..found.clone() }
}

/// Whether Consul's role is what is desired (IDs, indexes and list order aside).
pub fn role_matches(existing: &AclRole, desired: &AclRole) -> bool {
    let mut names: Vec<&str> = existing.policies.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    let want: Vec<&str> = desired.policies.iter().map(|p| p.name.as_str()).collect();
    let mut services = existing.service_identities.clone();
    for s in &mut services {
        s.datacenters.sort();
    }
    services.sort_by(|a, b| a.service_name.cmp(&b.service_name));
    let mut nodes = existing.node_identities.clone();
    nodes.sort_by(|a, b| (&a.node_name, &a.datacenter).cmp(&(&b.node_name, &b.datacenter)));
    existing.name == desired.name
        && existing.description == desired.description
        && names == want
        && services == desired.service_identities
        && nodes == desired.node_identities
}

/// Whether the cluster's grants allow every policy and identity; `Err(reason)` when not.
/// A policy's rules are read from Consul to find management-equivalent ones.
async fn granted(cluster: &ClusterHandle, r: &ACLRole) -> Result<Result<(), String>, consul::Error> {
    for name in &r.spec.policies {
        let acl_write =
            cluster.consul.acl_policy_read_by_name(name).await?.is_some_and(|p| rules_grant_acl_write(&p.rules));
        if let Err(msg) = cluster.grants.policy(name, acl_write) {
            return Ok(Err(msg));
        }
    }
    for s in &r.spec.service_identities {
        if let Err(msg) = cluster.grants.service_identity(&s.service_name) {
            return Ok(Err(msg));
        }
    }
    for n in &r.spec.node_identities {
        if let Err(msg) = cluster.grants.node_identity(&n.node_name) {
            return Ok(Err(msg));
        }
    }
    Ok(Ok(()))
}

async fn find_existing(consul: &consul::Client, r: &ACLRole, name: &str) -> Result<Option<AclRole>, consul::Error> {
    if let Some(id) = r.status.as_ref().and_then(|s| s.role_id.as_deref())
        && let Some(found) = consul.acl_role_read(id).await?
    {
        return Ok(Some(found));
    }
    consul.acl_role_read_by_name(name).await
}

/// What one sync came to.
enum Outcome {
    /// The role's ID, and whether concord wrote it.
    Synced(String, bool),
    /// Not written: a reason and why.
    Refused(&'static str, String),
}

async fn apply(r: Arc<ACLRole>, ctx: &Context) -> Result<Action, Error> {
    let key = format!("{CONTROLLER}:{}", object_key(r.as_ref()));
    let ns = r.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, r.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            report(ctx, r.as_ref(), "ClusterUnavailable", e.to_string()).await?;
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
    };
    let desired = desired_role(&r);
    let result: Result<Outcome, consul::Error> = async {
        if let Err(msg) = granted(&cluster, &r).await? {
            return Ok(Outcome::Refused("NotGranted", msg));
        }
        Ok(match find_existing(&cluster.consul, &r, &desired.name).await? {
            None => Outcome::Synced(cluster.consul.acl_role_create(&desired).await?.id, true),
            Some(e) if !e.description.ends_with(&ownership_mark(&ns, &r.name_any())) => Outcome::Refused(
                "NameTaken",
                format!("role {} exists in Consul and was not made by this object; not overwritten", e.name),
            ),
            Some(e) if role_matches(&e, &desired) => Outcome::Synced(e.id, false),
            Some(e) => Outcome::Synced(
                cluster.consul.acl_role_update(&AclRole { id: e.id, ..desired.clone() }).await?.id,
                true,
            ),
        })
    }
    .await;
    match result {
        Ok(Outcome::Synced(id, written)) => {
            let msg = format!("role {} ({id})", desired.name);
            let before = acl_object::was_synced(r.as_ref());
            let status = ACLRoleStatus { role_id: Some(id), ..r.status.clone().unwrap_or_default() };
            write_status(ctx, r.as_ref(), status, ConditionUpdate::new(types::SYNCED, true, "Synced", msg.clone()))
                .await?;
            if !before || written {
                let reason = if before { "DriftReverted" } else { "RoleSynced" };
                ctx.event(&r.object_ref(&()), false, reason, "Sync", msg).await;
            }
            ctx.reset_backoff(&key);
            Ok(Action::requeue(ctx.args.acl_drift_interval))
        }
        Ok(Outcome::Refused(reason, msg)) => {
            report(ctx, r.as_ref(), reason, msg).await?;
            Ok(Action::requeue(ctx.args.acl_drift_interval))
        }
        Err(e) if e.is_missing_reference() => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, r.as_ref(), "DependencyMissing", acl_object::missing_reference(&e)).await?;
            Ok(Action::requeue(ctx.args.acl_drift_interval))
        }
        Err(e) if e.is_transient() => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, r.as_ref(), "ConsulUnreachable", e.to_string()).await?;
            Ok(Action::requeue(ctx.backoff(&key)))
        }
        Err(e) => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            report(ctx, r.as_ref(), "RejectedByConsul", format!("Consul refused role {}: {e}", desired.name)).await?;
            Ok(Action::await_change())
        }
    }
}

async fn cleanup(r: Arc<ACLRole>, ctx: &Context) -> Result<Action, Error> {
    let ns = r.namespace().unwrap_or_default();
    let cluster = match ctx.clusters.resolve_acl_admin(&ctx.client, &ns, r.spec.cluster_ref.as_deref()).await {
        Ok(c) => c,
        Err(e @ (ClusterError::NotFound { .. } | ClusterError::NoCluster { .. })) => {
            ctx.event(&r.object_ref(&()), true, "ClusterGone", "Delete", format!("role not deleted: {e}")).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let desired = desired_role(&r);
    if let Some(existing) = find_existing(&cluster.consul, &r, &desired.name).await.map_err(Error::Consul)?
        && existing.description.ends_with(&ownership_mark(&ns, &r.name_any()))
    {
        match cluster.consul.acl_role_delete(&existing.id).await {
            Ok(()) => tracing::info!(role = %existing.name, id = %existing.id, "deleted ACL role"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::Consul(e)),
        }
    }
    Ok(Action::await_change())
}

async fn reconcile(r: Arc<ACLRole>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    reconcile_with_finalizer(&ctx.client, FINALIZER, r, |r| apply(r, &ctx), |r| cleanup(r, &ctx))
        .await
        .map_err(Error::Finalizer)
}

fn error_policy(r: Arc<ACLRole>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(role = %r.name_any(), error = %error, "reconcile failed");
    requeue_after_failure(&ctx, CONTROLLER, r.as_ref(), error.category())
}

impl acl_object::Importable for ACLRole {
    const IMPORT_KIND: &'static str = IMPORT_KIND;
    type Found = AclRole;

    /// The unmarked roles no object of the namespace declares (see the module's doc).
    async fn candidates(
        ctx: &Context,
        cluster: &ClusterHandle,
        dc: &DiscoveryCluster,
    ) -> Result<acl_object::Candidates<ACLRole>, String> {
        let ns = dc.namespace().unwrap_or_default();
        let roles = cluster.consul.acl_roles().await.map_err(|e| e.to_string())?;
        let api: Api<ACLRole> = Api::namespaced(ctx.client.clone(), &ns);
        let objects = api.list(&Default::default()).await.map_err(|e| e.to_string())?;
        let declared: Vec<String> =
            objects.items.iter().map(|r| r.spec.name.clone().unwrap_or_else(|| r.name_any())).collect();
        let mut candidates = Vec::new();
        for found in roles {
            if marked(&found.description) || declared.contains(&found.name) {
                continue;
            }
            let object = match importable(&found, Some(&ns), Some(&dc.name_any())) {
                None => Err(format!("role {} uses what ACLRole cannot declare; not imported", found.name)),
                Some(object) => match granted(cluster, &object).await.map_err(|e| e.to_string())? {
                    Err(msg) => Err(format!("role {} not imported: {msg}", found.name)),
                    Ok(()) => Ok(object),
                },
            };
            candidates.push((found, object));
        }
        Ok(candidates)
    }

    fn adopted(found: &AclRole, object: &ACLRole) -> AclRole {
        adopted(found, &object.namespace().unwrap_or_default())
    }

    async fn write(cluster: &ClusterHandle, found: &AclRole) -> Result<(), consul::Error> {
        cluster.consul.acl_role_update(found).await.map(|_| ())
    }

    fn describe(found: &AclRole) -> String {
        format!("ACL role {}", found.name)
    }

    fn consul_name(found: &AclRole) -> String {
        found.name.clone()
    }
}

/// Runs the controller until `stop` resolves (the import runs in `acl_object::import_loop`).
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<ACLRole>(&ctx), watcher::Config::default());
    // A role naming a policy that does not exist yet is retried when an ACLPolicy of its
    // namespace changes (e.g. reports that it wrote the policy).
    let roles = controller.store();
    let controller = controller.watches(watched_api::<ACLPolicy>(&ctx), watcher::Config::default(), move |p| {
        acl_object::unsynced_beside(&roles, &p)
    });
    drive(ctx, CONTROLLER, controller, reconcile, error_policy, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ACLRoleSpec, NodeIdentity, ServiceIdentity};

    fn role() -> ACLRole {
        let mut r = ACLRole::new(
            "web",
            ACLRoleSpec {
                cluster_ref: None,
                name: None,
                description: Some("web pods".into()),
                policies: vec!["b".into(), "a".into(), "a".into()],
                service_identities: vec![
                    ServiceIdentity { service_name: "web".into(), datacenters: vec!["dc2".into(), "dc1".into()] },
                    ServiceIdentity { service_name: "api".into(), datacenters: vec![] },
                ],
                node_identities: vec![NodeIdentity { node_name: "n1".into(), datacenter: "dc1".into() }],
            },
        );
        r.metadata.namespace = Some("team".into());
        r
    }

    #[test]
    fn desired_role_is_sorted_and_marked() {
        let d = desired_role(&role());
        assert_eq!(d.name, "web");
        assert_eq!(d.description, "web pods [concord.io team/web]");
        assert_eq!(d.policies.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(d.service_identities[0].service_name, "api");
        assert_eq!(d.service_identities[1].datacenters, vec!["dc1", "dc2"]);
    }

    #[test]
    fn matching_ignores_ids_and_order_but_not_content() {
        let desired = desired_role(&role());
        let mut existing = desired.clone();
        existing.id = "x".into();
        existing.policies =
            vec![AclLink { id: "p2".into(), name: "b".into() }, AclLink { id: "p1".into(), name: "a".into() }];
        existing.service_identities.reverse();
        assert!(role_matches(&existing, &desired));
        existing.service_identities.pop();
        assert!(!role_matches(&existing, &desired));
        let mut other = desired.clone();
        other.node_identities.clear();
        assert!(!role_matches(&other, &desired));
    }

    #[test]
    fn import_round_trips_adds_only_the_mark_and_refuses_what_the_kind_cannot_say() {
        let found = AclRole {
            id: "r1".into(),
            name: "ops".into(),
            description: "made by hand".into(),
            policies: vec![AclLink { id: "p1".into(), name: "team-read".into() }],
            service_identities: vec![AclServiceIdentity { service_name: "web".into(), datacenters: vec![] }],
            ..Default::default()
        };
        let object = importable(&found, Some("team"), Some("consul")).expect("importable");
        assert_eq!(object.name_any(), "ops");
        assert_eq!(object.namespace().as_deref(), Some("team"));
        assert_eq!(object.spec.cluster_ref.as_deref(), Some("consul"));
        assert_eq!(object.labels().get(IMPORTED_LABEL).map(String::as_str), Some("true"));
        assert_eq!(object.spec.policies, vec!["team-read"]);
        let adopted = adopted(&found, "team");
        assert_eq!(adopted.description, "made by hand [concord.io team/ops]");
        assert_eq!(AclRole { description: found.description.clone(), ..adopted.clone() }, found);
        assert!(role_matches(&adopted, &desired_role(&object)), "the adopted role is what the object declares");
        let owned = AclRole { description: "x [concord.io other/ops]".into(), ..found.clone() };
        assert!(importable(&owned, Some("team"), None).is_none(), "a marked role");
        let bad_name = AclRole { name: "Ops_Role".into(), ..found.clone() };
        assert!(importable(&bad_name, Some("team"), None).is_none(), "not an object name");
        let padded = AclRole { description: " hand ".into(), ..found };
        assert!(importable(&padded, Some("team"), None).is_none(), "a description the object would trim");
    }
}
