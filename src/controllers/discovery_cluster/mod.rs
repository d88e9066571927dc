//! DiscoveryCluster controller. For an external cluster it checks that Consul answers
//! and reports its leader, Raft peers and version in status (Available / Degraded).
//! Managed mode (running the servers as a StatefulSet) is not built yet: such objects
//! get `Available=False, reason=ManagedModeUnsupported` and an Event, never silence.
use super::{apply_status, object_key, report_ready_when_primed, requeue_after_failure, watched_api};
use crate::consul;
use crate::resources::{
    ConditionUpdate, DiscoveryCluster, DiscoveryClusterStatus, find_condition, set_condition, types,
};
use crate::runtime::Context;
use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "discoverycluster";
/// How often a healthy cluster's status is refreshed.
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot write status: {0}")]
    Status(#[source] kube::Error),
}

impl Error {
    fn category(&self) -> &'static str {
        match self {
            Error::Cluster(e) => e.category(),
            Error::Status(_) => "kube",
        }
    }
}

/// What Consul said about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub leader: String,
    pub peers: Vec<String>,
    pub version: Option<String>,
}

/// Status of an external cluster from what was observed (pure).
pub fn external_status(
    previous: &DiscoveryClusterStatus,
    generation: Option<i64>,
    observed: Result<Observed, String>,
    now: k8s_openapi::jiff::Timestamp,
) -> DiscoveryClusterStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let (available, degraded) = match observed {
        Ok(o) if !o.leader.is_empty() => {
            let msg = format!("leader {} with {} Raft peers", o.leader, o.peers.len());
            status.leader = Some(o.leader);
            status.peers = o.peers;
            status.version = o.version.or(status.version);
            (
                ConditionUpdate::new(types::AVAILABLE, true, "LeaderElected", msg),
                ConditionUpdate::new(types::DEGRADED, false, "LeaderElected", ""),
            )
        }
        Ok(o) => {
            status.leader = None;
            status.peers = o.peers;
            (
                ConditionUpdate::new(types::AVAILABLE, false, "NoLeader", "Consul answers but has no Raft leader"),
                ConditionUpdate::new(types::DEGRADED, true, "NoLeader", "Consul answers but has no Raft leader"),
            )
        }
        Err(e) => {
            status.leader = None;
            (
                ConditionUpdate::new(types::AVAILABLE, false, "ConsulUnreachable", e.clone()),
                ConditionUpdate::new(types::DEGRADED, true, "ConsulUnreachable", e),
            )
        }
    };
    status.conditions = set_condition(&status.conditions, available, generation, now);
    status.conditions = set_condition(&status.conditions, degraded, generation, now);
    status
}

async fn observe(consul: &consul::Client) -> Result<Observed, consul::Error> {
    let leader = consul.status_leader().await?.unwrap_or_default();
    let peers = consul.status_peers().await?;
    let version = consul.agent_self().await.ok().map(|a| a.config.version);
    Ok(Observed { leader, peers, version })
}

async fn reconcile(dc: Arc<DiscoveryCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let previous = dc.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    if dc.spec.is_managed() {
        let msg = "managed mode (concord running the Consul servers as a StatefulSet) is not available in \
                   this build; set spec.external to use an existing Consul";
        let was_reported = find_condition(&previous.conditions, types::AVAILABLE)
            .is_some_and(|c| c.reason == "ManagedModeUnsupported");
        let mut status = previous.clone();
        status.observed_generation = dc.meta().generation;
        status.conditions = set_condition(
            &status.conditions,
            ConditionUpdate::new(types::AVAILABLE, false, "ManagedModeUnsupported", msg),
            dc.meta().generation,
            now,
        );
        apply_status(&ctx, dc.as_ref(), &status).await.map_err(Error::Status)?;
        if !was_reported {
            ctx.event(&dc.object_ref(&()), true, "ManagedModeUnsupported", "Reconcile", msg.to_string()).await;
        }
        return Ok(Action::await_change());
    }
    let handle = ctx.clusters.client_for(&ctx.client, &dc).await?;
    let observed = observe(&handle.consul).await.map_err(|e| e.to_string());
    let reachable = observed.is_ok();
    let status = external_status(&previous, dc.meta().generation, observed, now);
    let became_available = status.leader.is_some() && previous.leader.is_none();
    apply_status(&ctx, dc.as_ref(), &status).await.map_err(Error::Status)?;
    if became_available {
        let note = format!("Consul leader {}", status.leader.as_deref().unwrap_or_default());
        ctx.event(&dc.object_ref(&()), false, "LeaderElected", "Reconcile", note).await;
    }
    if reachable {
        ctx.reset_backoff(&format!("{CONTROLLER}:{}", object_key(dc.as_ref())));
        Ok(Action::requeue(RESYNC))
    } else {
        Ok(Action::requeue(ctx.backoff(&format!("{CONTROLLER}:{}", object_key(dc.as_ref())))))
    }
}

fn error_policy(dc: Arc<DiscoveryCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %dc.name_any(), error = %error, "reconcile failed");
    requeue_after_failure(&ctx, CONTROLLER, dc.as_ref(), error.category())
}

/// Runs the controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<DiscoveryCluster>(&ctx), watcher::Config::default());
    report_ready_when_primed(&ctx, CONTROLLER, controller.store());
    controller
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::is_condition_true;

    fn now() -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(1_000).expect("time")
    }

    #[test]
    fn a_cluster_with_a_leader_is_available() {
        let observed = Observed {
            leader: "127.0.0.1:8300".into(),
            peers: vec!["a".into(), "b".into(), "c".into()],
            version: Some("1.22.7".into()),
        };
        let s = external_status(&Default::default(), Some(2), Ok(observed), now());
        assert!(is_condition_true(&s.conditions, types::AVAILABLE));
        assert!(!is_condition_true(&s.conditions, types::DEGRADED));
        assert_eq!(s.peers.len(), 3);
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn an_unreachable_cluster_is_degraded_and_keeps_its_last_version() {
        let mut prev = DiscoveryClusterStatus::default();
        prev.version = Some("1.22.7".into());
        prev.leader = Some("x".into());
        let s = external_status(&prev, Some(1), Err("connection refused".into()), now());
        assert!(!is_condition_true(&s.conditions, types::AVAILABLE));
        assert!(is_condition_true(&s.conditions, types::DEGRADED));
        assert_eq!(s.leader, None);
        assert_eq!(s.version.as_deref(), Some("1.22.7"));
        let available = find_condition(&s.conditions, types::AVAILABLE).expect("set");
        assert_eq!(available.reason, "ConsulUnreachable");
        assert_eq!(available.message, "connection refused");
    }
}
