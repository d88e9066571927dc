//! The sync's report in `DiscoveryCluster.status.sync`: counters and name clashes, written
//! by server-side apply with the sync's own field manager, at most once a second.
use crate::resources::{DiscoveryCluster, SyncStatus};
use crate::sync::FIELD_MANAGER;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Shared by both directions; each sets its part, a writer task publishes it.
#[derive(Default)]
pub struct StatusBoard {
    state: Mutex<SyncStatus>,
    changed: Notify,
}

impl StatusBoard {
    pub fn update(&self, f: impl FnOnce(&mut SyncStatus)) {
        if let Ok(mut s) = self.state.lock() {
            let before = s.clone();
            f(&mut s);
            if *s != before {
                self.changed.notify_one();
            }
        }
    }

    pub fn snapshot(&self) -> SyncStatus {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Publishes changes to the DiscoveryCluster's status until `stop`.
    pub async fn run_writer(
        self: Arc<Self>,
        client: kube::Client,
        namespace: String,
        name: String,
        stop: CancellationToken,
    ) {
        let api: Api<DiscoveryCluster> = Api::namespaced(client, &namespace);
        let mut last: Option<SyncStatus> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.changed.notified() => {}
            }
            let current = self.snapshot();
            if last.as_ref() == Some(&current) {
                continue;
            }
            let patch = serde_json::json!({
                "apiVersion": DiscoveryCluster::api_version(&()),
                "kind": DiscoveryCluster::kind(&()),
                "status": { "sync": current },
            });
            match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch)).await {
                Ok(_) => last = Some(current),
                Err(e) => {
                    tracing::warn!(error = %e, cluster = %name, "cannot write sync status");
                    self.changed.notify_one();
                }
            }
            // At most one status write a second, whatever the churn.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
