//! Catalog sync controller: runs the two sync directions ([`crate::sync`]) for every
//! DiscoveryCluster whose `spec.sync` (or, for an external cluster without one, the
//! controller's `--sync-*` flags) turns them on. A change of the sync settings or of the
//! cluster's address restarts its tasks; a direction turned off, or a DiscoveryCluster
//! deleted, has what it wrote removed (Consul instances with its identity; mirrored
//! Services and EndpointSlices).
use super::{report_ready_when_primed, watched_api};
use crate::cluster::ClusterHandle;
use crate::context::Context;
use crate::resources::{DiscoveryCluster, ExternalSpec};
use crate::sync::status::StatusBoard;
use crate::sync::{self, SyncConfig, SyncDefaults};
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector::store::Writer};
use kube::{Resource, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) const CONTROLLER: &str = "catalogsync";

/// The defaults for external clusters without `spec.sync`, from the controller flags.
pub fn defaults(args: &crate::context::ControllerArgs) -> SyncDefaults {
    SyncDefaults {
        to_consul: args.sync_to_consul,
        default_sync: args.sync_default,
        to_kubernetes: args.sync_to_kubernetes,
        target_namespace: args.sync_target_namespace.clone(),
        anti_entropy: args.sync_anti_entropy,
        default_service_account: args.default_service_account.clone(),
    }
}

/// The sync tasks of one DiscoveryCluster.
struct Running {
    config: SyncConfig,
    external: Option<ExternalSpec>,
    consul: crate::consul::Client,
    /// Of the cluster handle the tasks were started with (addresses and token).
    fingerprint: u64,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    async fn shut_down(mut self) -> (SyncConfig, crate::consul::Client) {
        self.stop.cancel();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), async { while self.tasks.join_next().await.is_some() {} })
                .await;
        self.tasks.abort_all();
        (self.config, self.consul)
    }
}

/// Removes what the directions in `old` but not in `new` wrote.
async fn clean_up(ctx: &Context, old: &SyncConfig, new: &SyncConfig, consul: &crate::consul::Client) {
    if let Some(tc) = &old.to_consul
        && new.to_consul.is_none()
    {
        match sync::to_consul::remove_all(consul, &tc.identity).await {
            Ok(n) => {
                tracing::info!(identity = %tc.identity, removed = n, "Kubernetes → Consul sync off; instances removed")
            }
            Err(e) => {
                ctx.metrics.reconcile_failed(CONTROLLER, e.category());
                tracing::warn!(error = %e, identity = %tc.identity, "cannot remove synced instances");
            }
        }
    }
    if let Some(tk) = &old.to_kubernetes
        && new.to_kubernetes.as_ref().is_none_or(|n| n.target_namespace != tk.target_namespace)
    {
        match sync::to_kubernetes::remove_all(&ctx.client_as(&tk.actor), tk).await {
            Ok(n) => {
                tracing::info!(identity = %tk.identity, removed = n, "Consul → Kubernetes sync off; Services removed")
            }
            Err(e) => {
                ctx.metrics.reconcile_failed(CONTROLLER, e.category());
                tracing::warn!(error = %e, identity = %tk.identity, "cannot remove mirrored Services");
            }
        }
    }
}

fn start(ctx: &Arc<Context>, dc: &DiscoveryCluster, config: SyncConfig, handle: ClusterHandle) -> Running {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let board = Arc::new(StatusBoard::default());
    if config.to_consul.is_some() || config.to_kubernetes.is_some() {
        tasks.spawn(board.clone().run_writer(
            ctx.client.clone(),
            dc.namespace().unwrap_or_default(),
            dc.name_any(),
            stop.clone(),
        ));
    }
    let reference = dc.object_ref(&());
    if let Some(tc) = config.to_consul.clone() {
        tasks.spawn(sync::to_consul::run(
            ctx.clone(),
            tc,
            handle.consul.clone(),
            board.clone(),
            reference.clone(),
            stop.clone(),
        ));
    }
    if let Some(tk) = config.to_kubernetes.clone() {
        tasks.spawn(sync::to_kubernetes::run(ctx.clone(), tk, handle.consul.clone(), board, reference, stop.clone()));
    }
    Running {
        config,
        external: dc.spec.external.clone(),
        consul: handle.consul,
        fingerprint: handle.fingerprint,
        stop,
        tasks,
    }
}

async fn on_apply(
    ctx: &Arc<Context>,
    running: &mut HashMap<ObjectRef<DiscoveryCluster>, Running>,
    dc: &DiscoveryCluster,
) {
    let key = ObjectRef::from_obj(dc);
    let config = match sync::effective_config(dc, &defaults(&ctx.args)) {
        Ok(c) => c,
        Err(e) => {
            ctx.event(&dc.object_ref(&()), true, "InvalidSyncSpec", "CatalogSync", e).await;
            return;
        }
    };
    // The cluster's client as of now: a managed cluster's tasks start before its ACL
    // bootstrap (no token yet) and must start over once the controller token is stored.
    let handle = if config == SyncConfig::default() {
        None
    } else {
        match ctx.clusters.client_for(&ctx.client, dc).await {
            Ok(h) => Some(h),
            Err(e) => {
                ctx.metrics.reconcile_failed(CONTROLLER, e.category());
                tracing::warn!(error = %e, cluster = %dc.name_any(), "cannot reach the cluster's Consul; sync not (re)started");
                return;
            }
        }
    };
    if let Some(r) = running.get(&key)
        && r.config == config
        && r.external == dc.spec.external
        && handle.as_ref().is_none_or(|h| h.fingerprint == r.fingerprint)
    {
        return;
    }
    let previous = match running.remove(&key) {
        Some(r) => Some(r.shut_down().await),
        None => None,
    };
    if let Some((old, consul)) = &previous {
        clean_up(ctx, old, &config, consul).await;
    }
    if let Some(handle) = handle {
        running.insert(key, start(ctx, dc, config, handle));
        tracing::info!(cluster = %dc.name_any(), "catalog sync (re)started");
    }
}

async fn on_delete(
    ctx: &Context,
    running: &mut HashMap<ObjectRef<DiscoveryCluster>, Running>,
    key: &ObjectRef<DiscoveryCluster>,
) {
    if let Some(r) = running.remove(key) {
        let (old, consul) = r.shut_down().await;
        clean_up(ctx, &old, &SyncConfig::default(), &consul).await;
    }
}

/// Runs the catalog sync controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let writer: Writer<DiscoveryCluster> = Writer::default();
    report_ready_when_primed(&ctx, CONTROLLER, writer.as_reader());
    let mut events = reflector::reflector(
        writer,
        watcher::watcher(watched_api::<DiscoveryCluster>(&ctx), watcher::Config::default()),
    )
    .default_backoff()
    .boxed();
    let mut running: HashMap<ObjectRef<DiscoveryCluster>, Running> = HashMap::new();
    let mut relisted: HashSet<ObjectRef<DiscoveryCluster>> = HashSet::new();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            e = events.next() => e,
        };
        match event {
            Some(Ok(Event::Apply(dc))) => on_apply(&ctx, &mut running, &dc).await,
            Some(Ok(Event::Delete(dc))) => on_delete(&ctx, &mut running, &ObjectRef::from_obj(&dc)).await,
            Some(Ok(Event::Init)) => relisted.clear(),
            Some(Ok(Event::InitApply(dc))) => {
                relisted.insert(ObjectRef::from_obj(&dc));
                on_apply(&ctx, &mut running, &dc).await;
            }
            Some(Ok(Event::InitDone)) => {
                let gone: Vec<_> = running.keys().filter(|k| !relisted.contains(*k)).cloned().collect();
                for key in gone {
                    on_delete(&ctx, &mut running, &key).await;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "DiscoveryCluster watch failed; retrying"),
            None => break,
        }
    }
    // Shutting down is not turning sync off: what was written stays.
    for (_, r) in running.drain() {
        r.shut_down().await;
    }
}
