//! Crash convergence: the real `concord` binary syncs 500 Services and is SIGKILLed
//! mid-sync; 50 Services change while it is down; after a restart the catalog holds
//! exactly the desired instances (no orphan, no gap, every check right).
mod support;

use concord::consul::{self, CheckStatus};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{eventually, external_cluster, install_crds};

const SERVICES: usize = 500;
const CHANGED: usize = 50;

/// The controller as a child process; killed (SIGKILL) when dropped.
struct Controller(Child);

impl Controller {
    fn start(kubeconfig: &std::path::Path, ns: &str) -> Self {
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("concord-crash-{ns}.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(["controller", "--listen", "127.0.0.1:0", "--namespace", ns])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("concord starts");
        Controller(child)
    }

    fn sigkill(&mut self) {
        // Child::kill is SIGKILL on Unix: no shutdown path runs.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn address(i: usize, generation: u8) -> String {
    format!("10.{}.{}.{}", 40 + generation, i / 250, i % 250 + 1)
}

async fn apply_service(client: &kube::Client, ns: &str, i: usize, addr: &str, ready: bool) {
    let name = format!("svc-{i}");
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80}]}});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-manual"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
        "endpoints": [{"addresses": [addr], "conditions": {"ready": ready}}]});
    let pp = PatchParams::apply("test").force();
    Api::<Service>::namespaced(client.clone(), ns).patch(&name, &pp, &Patch::Apply(&svc)).await.expect("Service");
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .patch(&format!("{name}-manual"), &pp, &Patch::Apply(&slice))
        .await
        .expect("EndpointSlice");
}

/// Service ID → check status of every instance the sync owns, on whichever of its nodes
/// (no check: a ready instance, which Consul counts as passing).
async fn owned(c: &consul::Client, ns: &str) -> BTreeMap<String, CheckStatus> {
    support::sync_owned(c, ns)
        .await
        .into_iter()
        .map(|(id, (_, status))| (id, status.unwrap_or(CheckStatus::Passing)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_mid_sync_converges_exactly_after_restart() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("sync-crash").await;
    let c = consul::Client::new(consul::ClientConfig::new(consul_env.http_addrs())).expect("consul client");
    external_cluster(
        &client,
        &ns,
        &consul_env.http_addrs(),
        Some(json!({"toConsul": {"enabled": true, "defaultSync": true}})),
    )
    .await;
    futures::stream::iter(0..SERVICES)
        .for_each_concurrent(16, |i| {
            let (client, ns) = (client.clone(), ns.clone());
            async move { apply_service(&client, &ns, i, &address(i, 0), true).await }
        })
        .await;

    let mut controller = Controller::start(kube_env.kubeconfig_path(), &ns);
    let partial = eventually("the first instances written", Duration::from_secs(60), || async {
        let n = owned(&c, &ns).await.len();
        (n > 0).then_some(n)
    })
    .await;
    controller.sigkill();
    let at_kill = owned(&c, &ns).await.len();
    eprintln!("killed with {partial}..{at_kill} of {SERVICES} instances written");

    // While it is down: 40 endpoints move (orphan + gap each), 10 go not ready.
    futures::stream::iter(0..CHANGED)
        .for_each_concurrent(16, |i| {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                if i < 40 {
                    apply_service(&client, &ns, i, &address(i, 1), true).await
                } else {
                    apply_service(&client, &ns, i, &address(i, 0), false).await
                }
            }
        })
        .await;
    let desired: BTreeMap<String, CheckStatus> = (0..SERVICES)
        .map(|i| {
            let (addr, status) = match i {
                i if i < 40 => (address(i, 1), CheckStatus::Passing),
                i if i < CHANGED => (address(i, 0), CheckStatus::Critical),
                i => (address(i, 0), CheckStatus::Passing),
            };
            (format!("{ns}-svc-{i}-{addr}-80"), status)
        })
        .collect();

    let _restarted = Controller::start(kube_env.kubeconfig_path(), &ns);
    let mut last = BTreeMap::new();
    let converged = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            last = owned(&c, &ns).await;
            if last == desired {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if converged.is_err() {
        let orphans: Vec<_> = last.keys().filter(|k| !desired.contains_key(*k)).take(5).collect();
        let gaps: Vec<_> = desired.keys().filter(|k| !last.contains_key(*k)).take(5).collect();
        let wrong: Vec<_> = desired.iter().filter(|(k, v)| last.get(*k).is_some_and(|s| s != *v)).take(5).collect();
        panic!("catalog did not converge: orphans {orphans:?}, gaps {gaps:?}, wrong status {wrong:?}");
    }
}
