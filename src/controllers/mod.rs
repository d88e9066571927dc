//! One module per controller. Each follows the same steps: read inputs → compute the
//! desired state (pure) → diff with what exists → apply → write status conditions with
//! observedGeneration. Helpers every controller uses live here.
pub mod acl_bootstrap;
pub mod acl_policy;
pub mod acl_token;
pub mod catalog_sync;
pub mod config_entry;
pub mod config_template;
pub mod consul_watch;
pub mod discovery_cluster;
pub mod kv_config;
pub mod service_intention;
pub mod snapshot;
pub mod snapshot_schedule;

use crate::resources::{
    ExportedServices, Mesh, ProxyDefaults, ServiceDefaults, ServiceIntention, ServiceResolver, ServiceRouter,
    ServiceSplitter,
};
use crate::runtime::Context;
use crate::runtime::context::FIELD_MANAGER;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;

/// Runs every controller until `stopped()` resolves; returns when all have stopped.
pub async fn run_all<F>(ctx: Arc<Context>, stopped: impl Fn() -> F)
where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    futures::future::join_all([
        tokio::spawn(discovery_cluster::run(ctx.clone(), stopped())),
        tokio::spawn(catalog_sync::run(ctx.clone(), stopped())),
        tokio::spawn(kv_config::run(ctx.clone(), stopped())),
        tokio::spawn(config_entry::run::<ServiceIntention>(ctx.clone(), stopped())),
        tokio::spawn(config_entry::run::<ServiceDefaults>(ctx.clone(), stopped())),
        tokio::spawn(config_entry::run::<ServiceResolver>(ctx.clone(), stopped())),
        tokio::spawn(config_entry::run::<ServiceRouter>(ctx.clone(), stopped())),
        tokio::spawn(config_entry::run::<ServiceSplitter>(ctx.clone(), stopped())),
        tokio::spawn(config_entry::run::<ProxyDefaults>(ctx.clone(), stopped())),
        tokio::spawn(config_entry::run::<Mesh>(ctx.clone(), stopped())),
        tokio::spawn(config_entry::run::<ExportedServices>(ctx.clone(), stopped())),
        tokio::spawn(config_template::run(ctx.clone(), stopped())),
        tokio::spawn(acl_policy::run(ctx.clone(), stopped())),
        tokio::spawn(acl_token::run(ctx.clone(), stopped())),
        tokio::spawn(snapshot::run(ctx.clone(), stopped())),
        tokio::spawn(snapshot_schedule::run(ctx.clone(), stopped())),
    ])
    .await;
}

/// An `Api<K>` over the namespaces this controller watches.
pub fn watched_api<K>(ctx: &Context) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match &ctx.args.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
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
