//! `concord controller` as a real process against the real test servers: it serves
//! /healthz, /readyz and /metrics, reports an external Consul's leader and peers in the
//! DiscoveryCluster status, reports problems as conditions and Events, and exits cleanly
//! on SIGTERM.
mod support;

use concord::resources::{DiscoveryCluster, find_condition, types};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{eventually, external_cluster, install_crds};

struct ControllerProcess {
    child: Child,
    base: String,
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// From testenv (below the ephemeral range, never handed out twice in this process), not
/// `bind(0)`: a parallel test's `bind(0)` may get the same ephemeral port.
fn free_port() -> u16 {
    testenv::free_port().expect("free port")
}

fn spawn_controller(kubeconfig: &std::path::Path, namespace: &str) -> ControllerProcess {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["controller", "--listen", &format!("127.0.0.1:{port}"), "--namespace", namespace])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("concord binary starts");
    ControllerProcess { child, base: format!("http://127.0.0.1:{port}") }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_serves_health_reports_an_external_cluster_and_stops_on_sigterm() {
    let env = testenv::shared_kube().await;
    let consul = testenv::shared_consul().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("controller").await;
    external_cluster(&client, &ns, &consul.http_addrs(), None).await;

    let mut proc = spawn_controller(env.kubeconfig_path(), &ns);
    let base = proc.base.clone();
    eventually("/healthz answers ok", Duration::from_secs(30), || async {
        get(&format!("{base}/healthz")).await.filter(|(s, body)| *s == 200 && body.trim() == "ok")
    })
    .await;
    eventually("/readyz answers ok", Duration::from_secs(30), || async {
        get(&format!("{base}/readyz")).await.filter(|(s, _)| *s == 200)
    })
    .await;

    let api: Api<DiscoveryCluster> = Api::namespaced(client.clone(), &ns);
    let status = eventually("DiscoveryCluster Available", Duration::from_secs(30), || async {
        let dc = api.get("consul").await.ok()?;
        let status = dc.status?;
        find_condition(&status.conditions, types::AVAILABLE).filter(|c| c.status == "True")?;
        Some(status)
    })
    .await;
    assert_eq!(status.peers.len(), 3, "three Raft peers: {:?}", status.peers);
    assert!(status.leader.as_deref().is_some_and(|l| status.peers.iter().any(|p| p == l)), "leader is a peer");
    assert_eq!(status.version.as_deref(), Some("1.22.7"));
    assert_eq!(status.observed_generation, Some(1));

    let (code, metrics) = get(&format!("{base}/metrics")).await.expect("metrics answer");
    assert_eq!(code, 200);
    assert!(metrics.contains("concord_reconciliations_total{controller=\"discoverycluster\"}"), "{metrics}");

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually("a LeaderElected event", Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("LeaderElected"))
    })
    .await;

    let pid = proc.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(status) = proc.child.try_wait().expect("wait") {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "controller did not stop within 30s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "controller exits 0 on SIGTERM, got {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_managed_clusters_are_reported_not_skipped() {
    let env = testenv::shared_kube().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("unreachable").await;
    // Nothing listens on this port: the cluster must be reported unreachable.
    let dead = format!("http://127.0.0.1:{}", free_port());
    external_cluster(&client, &ns, &[dead], None).await;
    let managed_ns = env.create_namespace("managed").await;
    let api_managed: Api<DiscoveryCluster> = Api::namespaced(client.clone(), &managed_ns);
    let managed = serde_json::json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": {"name": "consul"}, "spec": {"replicas": 3},
    });
    api_managed.patch("consul", &PatchParams::apply("concord-test"), &Patch::Apply(&managed)).await.expect("applied");

    let _a = support::start_controller(client.clone(), &ns, &[]).await;
    let _b = support::start_controller(client.clone(), &managed_ns, &[]).await;

    let api: Api<DiscoveryCluster> = Api::namespaced(client.clone(), &ns);
    let condition = eventually("Available=False for an unreachable Consul", Duration::from_secs(30), || async {
        let status = api.get("consul").await.ok()?.status?;
        find_condition(&status.conditions, types::AVAILABLE).filter(|c| c.status == "False").cloned()
    })
    .await;
    assert_eq!(condition.reason, "ConsulUnreachable");
    assert!(condition.message.contains("127.0.0.1"), "message names the address: {}", condition.message);

    // A managed cluster gets its StatefulSet; its client Service does not resolve from
    // this test process (no cluster DNS), so Consul is reported unreachable, not skipped.
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), &managed_ns);
    eventually("the managed cluster's StatefulSet", Duration::from_secs(30), || async {
        sts.get_opt("consul-server").await.ok().flatten()
    })
    .await;
    let condition = eventually("managed cluster reported unreachable", Duration::from_secs(30), || async {
        let status = api_managed.get("consul").await.ok()?.status?;
        find_condition(&status.conditions, types::AVAILABLE).filter(|c| c.status == "False").cloned()
    })
    .await;
    assert_eq!(condition.reason, "ConsulUnreachable");
    assert!(condition.message.contains("consul-client"), "message names the address: {}", condition.message);
}
