//! One module per controller. Each follows the same steps: read inputs → compute the
//! desired state (pure) → diff with what exists → apply → write status conditions with
//! observedGeneration. Helpers every controller uses live here.
pub mod acl_auth_method;
pub mod acl_binding_rule;
pub mod acl_bootstrap;
mod acl_object;
pub mod acl_policy;
pub mod acl_role;
pub mod acl_token;
pub mod catalog_sync;
pub mod config_entry;
pub mod config_template;
pub mod consul_watch;
pub mod discovery_cluster;
pub mod import;
pub mod kv_config;
pub mod prepared_query;
pub mod service_intention;
pub mod snapshot;
pub mod snapshot_schedule;

pub use crate::context::watched_api;
use crate::context::{Context, FIELD_MANAGER, Runner};
use crate::resources::{
    ExportedServices, IngressGateway, JWTProvider, Mesh, ProxyDefaults, ServiceDefaults, ServiceIntention,
    ServiceResolver, ServiceRouter, ServiceSplitter, TerminatingGateway,
};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;

/// Every controller, in the order the runtime starts them.
pub fn all() -> Vec<Runner> {
    vec![
        Runner { name: discovery_cluster::CONTROLLER, run: |ctx, stop| Box::pin(discovery_cluster::run(ctx, stop)) },
        Runner { name: catalog_sync::CONTROLLER, run: |ctx, stop| Box::pin(catalog_sync::run(ctx, stop)) },
        Runner { name: kv_config::CONTROLLER, run: |ctx, stop| Box::pin(kv_config::run(ctx, stop)) },
        config_entry::runner::<ServiceIntention>(),
        config_entry::runner::<ServiceDefaults>(),
        config_entry::runner::<ServiceResolver>(),
        config_entry::runner::<ServiceRouter>(),
        config_entry::runner::<ServiceSplitter>(),
        config_entry::runner::<ProxyDefaults>(),
        config_entry::runner::<Mesh>(),
        config_entry::runner::<ExportedServices>(),
        config_entry::runner::<IngressGateway>(),
        config_entry::runner::<TerminatingGateway>(),
        config_entry::runner::<JWTProvider>(),
        Runner { name: prepared_query::CONTROLLER, run: |ctx, stop| Box::pin(prepared_query::run(ctx, stop)) },
        Runner { name: config_template::CONTROLLER, run: |ctx, stop| Box::pin(config_template::run(ctx, stop)) },
        Runner { name: acl_policy::CONTROLLER, run: |ctx, stop| Box::pin(acl_policy::run(ctx, stop)) },
        Runner { name: acl_token::CONTROLLER, run: |ctx, stop| Box::pin(acl_token::run(ctx, stop)) },
        Runner { name: acl_role::CONTROLLER, run: |ctx, stop| Box::pin(acl_role::run(ctx, stop)) },
        Runner { name: acl_auth_method::CONTROLLER, run: |ctx, stop| Box::pin(acl_auth_method::run(ctx, stop)) },
        Runner { name: acl_binding_rule::CONTROLLER, run: |ctx, stop| Box::pin(acl_binding_rule::run(ctx, stop)) },
        Runner { name: acl_object::IMPORTER, run: |ctx, stop| Box::pin(acl_object::run_importer(ctx, stop)) },
        Runner { name: snapshot::CONTROLLER, run: |ctx, stop| Box::pin(snapshot::run(ctx, stop)) },
        Runner { name: snapshot_schedule::CONTROLLER, run: |ctx, stop| Box::pin(snapshot_schedule::run(ctx, stop)) },
    ]
}

/// Writes `.status` by server-side apply with concord's one field manager.
pub async fn apply_status<K>(ctx: &Context, obj: &K, status: &impl Serialize) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch)).await?;
    Ok(())
}

/// `namespace/name`, the key of per-object state such as backoff.
pub fn object_key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or(""), obj.meta().name.as_deref().unwrap_or(""))
}

/// The errors of a controller that keeps one Consul object per resource (ACLPolicy,
/// PreparedQuery).
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("cannot write status: {0}")]
    Status(#[source] kube::Error),
    #[error("Consul call failed: {0}")]
    Consul(#[source] crate::consul::Error),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<ObjectError>>),
}

impl ObjectError {
    /// The metrics label of the failure.
    pub fn category(&self) -> &'static str {
        match self {
            ObjectError::Status(_) => "kube",
            ObjectError::Consul(e) => e.category(),
            ObjectError::Cluster(e) => e.category(),
            ObjectError::Finalizer(e) => finalizer_category(e, ObjectError::category),
        }
    }
}

/// Bounded category of a finalizer error: the inner error's own category when apply or
/// cleanup failed (so metrics and Events say why), else "finalizer".
pub fn finalizer_category<E>(
    error: &kube::runtime::finalizer::Error<E>,
    inner: impl Fn(&E) -> &'static str,
) -> &'static str
where
    E: std::error::Error + 'static,
{
    use kube::runtime::finalizer::Error as F;
    match error {
        F::ApplyFailed(e) | F::CleanupFailed(e) => inner(e),
        _ => "finalizer",
    }
}

/// Reconciles `obj` under the finalizer `name`: `apply` while it lives (the finalizer is
/// added first), `cleanup` once it is being deleted (the finalizer is removed after a
/// successful cleanup). The error comes boxed, as each controller's error enum holds it.
pub async fn reconcile_with_finalizer<K, E, A, AF, C, CF>(
    client: &kube::Client,
    name: &str,
    obj: Arc<K>,
    apply: A,
    cleanup: C,
) -> Result<Action, Box<kube::runtime::finalizer::Error<E>>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + Debug,
    K::DynamicType: Default,
    E: std::error::Error + 'static,
    A: FnOnce(Arc<K>) -> AF,
    AF: Future<Output = Result<Action, E>>,
    C: FnOnce(Arc<K>) -> CF,
    CF: Future<Output = Result<Action, E>>,
{
    use kube::runtime::finalizer::{Event, finalizer};
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    finalizer(&api, name, obj, |event| async move {
        match event {
            Event::Apply(obj) => apply(obj).await,
            Event::Cleanup(obj) => cleanup(obj).await,
        }
    })
    .await
    .map_err(Box::new)
}

/// Runs a built controller until `stop`: it shows in `/readyz` once its watch is primed,
/// then reconciles until shutdown (in-flight reconciles finish first).
pub async fn drive<K, Fut>(
    ctx: Arc<Context>,
    name: &'static str,
    controller: kube::runtime::Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Context>) -> Fut,
    error_policy: impl Fn(Arc<K>, &Fut::Error, Arc<Context>) -> Action,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K: Clone + Resource<DynamicType = ()> + DeserializeOwned + Debug + Send + Sync + 'static,
    Fut: futures::TryFuture<Ok = Action> + Send + 'static,
    Fut::Error: std::error::Error + Send + 'static,
{
    use futures::StreamExt;
    report_ready_when_primed(&ctx, name, controller.store());
    controller
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Marks a controller ready in `/readyz` once its watch has listed everything once.
pub fn report_ready_when_primed<K>(ctx: &Context, name: &'static str, store: kube::runtime::reflector::Store<K>)
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    ctx.readiness.register(name);
    let readiness = ctx.readiness.clone();
    tokio::spawn(async move {
        // The store's readiness is a oneshot that keeps one waker, and the controller's own
        // runner waits on it too; so poll with a timeout instead of waiting for a wake-up.
        loop {
            match tokio::time::timeout(std::time::Duration::from_millis(200), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    readiness.set(name, true);
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
    });
}

/// The standard error policy: count the failure by category and retry with per-object
/// exponential backoff and jitter.
pub fn requeue_after_failure<K: Resource>(
    ctx: &Context,
    controller: &'static str,
    obj: &K,
    category: &'static str,
) -> Action {
    ctx.metrics.reconcile_failed(controller, category);
    Action::requeue(ctx.backoff(&format!("{controller}:{}", object_key(obj))))
}
