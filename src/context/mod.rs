//! The state every controller shares: one kube client, the Consul clients per cluster,
//! metrics, readiness, the event reporter, and the flags parsed once at start.
//!
//! It sits below `sync` and `controllers` (which take it) and above `cluster` and
//! `snapshot` (which it holds); `runtime` builds it and hands it to the controllers.
pub mod args;
pub mod metrics;
pub mod readiness;
pub mod telemetry;
pub mod tenant;

pub use args::ControllerArgs;
pub use metrics::Metrics;
pub use readiness::Readiness;
pub use tenant::Actor;

use crate::cluster::ClusterCache;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shared by every reconcile through `Arc<Context>`.
pub struct Context {
    pub client: kube::Client,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub args: ControllerArgs,
    pub clusters: ClusterCache,
    tenants: tenant::TenantClients,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
}

/// Resolves once a controller is asked to stop (shutdown, or the leader Lease lost).
pub type Stop = std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// One controller as the runtime starts it: a name (for logs) and its run loop, which
/// returns once `Stop` resolved and in-flight work finished. `controllers::all()` builds
/// the list; `runtime` is handed it and knows no controller by name.
#[derive(Clone, Copy)]
pub struct Runner {
    pub name: &'static str,
    pub run: fn(Arc<Context>, Stop) -> futures::future::BoxFuture<'static, ()>,
}

/// Field manager of every server-side apply concord makes.
pub const FIELD_MANAGER: &str = "concord";

impl Context {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>, readiness: Readiness, args: ControllerArgs) -> Self {
        let reporter = Reporter { controller: "concord".to_string(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            clusters: ClusterCache::with_overrides(&args.consul_address),
            tenants: tenant::TenantClients::default(),
            client,
            metrics,
            readiness,
            args,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whose rights a read or write for an object of `namespace` uses: the
    /// ServiceAccount its spec names, else `--default-service-account`, else concord's own.
    pub fn actor(&self, namespace: &str, service_account: Option<&str>) -> Actor {
        Actor::of(namespace, service_account, self.args.default_service_account.as_deref())
    }

    /// A kube client acting as `actor` (see [`tenant`]).
    pub fn client_as(&self, actor: &Actor) -> kube::Client {
        self.tenants.client(&self.client, actor)
    }

    /// Publishes an Event on an object; a failure to publish is logged, never fatal.
    pub async fn event(&self, object: &ObjectReference, warning: bool, reason: &str, action: &str, note: String) {
        self.event_related(object, None, warning, reason, action, note).await;
    }

    /// Publishes an Event on an object about a second one (`related`). The recorder folds
    /// Events with the same object, reason and action into one series that keeps the
    /// first note; a `related` object of its own keeps each one's note.
    pub async fn event_related(
        &self,
        object: &ObjectReference,
        related: Option<ObjectReference>,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            note: Some(truncate(note, 1000)),
            action: action.to_string(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// Per-object exponential backoff with jitter: 1s, 2s, 4s ... capped at 5 minutes.
    pub fn backoff(&self, key: &str) -> Duration {
        let attempt = match self.failures.lock() {
            Ok(mut f) => {
                let n = f.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 8,
        };
        backoff_delay(attempt, rand::random::<f64>())
    }

    /// Forgets an object's failures after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }
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

/// Delay before retry number `attempt` (1-based); `jitter` in [0, 1) spreads it by ±20%.
pub fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let base = 2f64.powi(attempt.saturating_sub(1).min(16) as i32).min(300.0);
    Duration::from_secs_f64(base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_delay(1, 0.5), Duration::from_secs(1));
        assert_eq!(backoff_delay(3, 0.5), Duration::from_secs(4));
        assert_eq!(backoff_delay(40, 0.5), Duration::from_secs(300));
        assert!(backoff_delay(2, 0.0) < backoff_delay(2, 0.99));
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("ééé".to_string(), 3), "é…");
        assert_eq!(truncate("abc".to_string(), 3), "abc");
    }
}
