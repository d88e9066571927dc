//! Shared by the integration tests: install the CRDs, run the controller in-process
//! against the real test servers (scoped to one namespace), point a DiscoveryCluster at
//! a real Consul, and wait for conditions without fixed sleeps.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod sweep;

use clap::Parser;
use concord::context::ControllerArgs;
use concord::crdgen;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// User + system CPU time of `pid` so far (USER_HZ is 100 on Linux), for the
/// measurements and the benchmark.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The machine's 1, 5 and 15 minute load averages, printed beside a measurement.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Applies every concord CRD and waits until they are Established.
pub async fn install_crds(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crdgen::all() {
        let name = crd.metadata.name.clone().expect("named");
        api.patch(&name, &PatchParams::apply("concord-test").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("CRD {name} refused: {e}"));
    }
    crdgen::wait_established(client, Duration::from_secs(60)).await.expect("CRDs Established");
}

/// A controller running in this test process; stops when dropped. Whichever way it
/// stops, the leak sweep ([`sweep`]) then searches everything this test process logged so
/// far, and the Events and concord statuses of the controller's namespace, for every
/// token- or key-like value of that namespace's Secrets: every test that runs a
/// controller is swept, and a leak fails it.
pub struct RunningController {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    kube: kube::Client,
    namespace: String,
    swept: bool,
}

impl RunningController {
    /// Stops the controller, waits until it has stopped, and sweeps for leaks.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        self.swept = true;
        sweep::assert_no_leaks(&self.kube, &self.namespace, &[]).await;
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        // Not after a failure (a second panic would abort), and only where blocking on
        // the sweep cannot stall the runtime (every integration test runs multi-threaded).
        if self.swept || std::thread::panicking() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        let (kube, namespace) = (self.kube.clone(), self.namespace.clone());
        tokio::task::block_in_place(|| {
            runtime.block_on(async move { sweep::assert_no_leaks(&kube, &namespace, &[]).await })
        });
    }
}

/// Starts `concord controller` in-process, watching only `namespace`, with extra flags.
pub async fn start_controller(client: kube::Client, namespace: &str, extra_args: &[&str]) -> RunningController {
    let admin = client.clone();
    start_controller_swept_by(client, admin, namespace, extra_args).await
}

/// Like [`start_controller`], for a controller whose client has less than an admin's
/// rights (the chart's RBAC) or goes through a fault proxy: the leak sweep at its stop
/// reads the namespace with `admin`.
pub async fn start_controller_swept_by(
    client: kube::Client,
    admin: kube::Client,
    namespace: &str,
    extra_args: &[&str],
) -> RunningController {
    sweep::capture_logs();
    let kube = admin;
    let mut argv = vec!["controller", "--listen", "127.0.0.1:0", "--namespace", namespace];
    argv.extend_from_slice(extra_args);
    let args = ControllerArgs::try_parse_from(argv).expect("controller flags");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        if let Err(e) =
            concord::runtime::run_with_client(client, args, concord::controllers::all(), shutdown, Some(bound_tx)).await
        {
            panic!("controller failed: {e}");
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), bound_rx)
        .await
        .expect("controller listens within 30s")
        .expect("controller started");
    RunningController {
        addr,
        stop: Some(stop_tx),
        task: Some(task),
        kube,
        namespace: namespace.to_string(),
        swept: false,
    }
}

/// Creates a DiscoveryCluster named `consul` in `namespace` pointing at a real Consul
/// (`external.address` = all its servers), with an optional `spec.sync` block.
pub async fn external_cluster(
    client: &kube::Client,
    namespace: &str,
    consul_addrs: &[String],
    sync: Option<serde_json::Value>,
) {
    let mut spec = serde_json::json!({ "external": { "address": consul_addrs.join(",") } });
    if let Some(sync) = sync {
        spec["sync"] = sync;
    }
    let obj = serde_json::json!({
        "apiVersion": "concord.io/v1alpha1",
        "kind": "DiscoveryCluster",
        "metadata": { "name": "consul", "namespace": namespace },
        "spec": spec,
    });
    let api: Api<concord::resources::DiscoveryCluster> = Api::namespaced(client.clone(), namespace);
    api.patch("consul", &PatchParams::apply("concord-test").force(), &Patch::Apply(&obj))
        .await
        .expect("DiscoveryCluster applied");
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what` after
/// `timeout`. Tests wait for outcomes, never for fixed times.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Consul nodes of the catalog sync of the DiscoveryCluster `consul` in `ns`, found
/// the way the sync finds them: by its identity (`<ns>-consul`) in the node meta.
pub async fn sync_nodes(c: &concord::consul::Client, ns: &str) -> Vec<String> {
    let identity = concord::sync::SyncIdentity::new(&format!("{ns}-consul"));
    let opts = concord::consul::QueryOptions { filter: Some(identity.nodes_filter()), ..Default::default() };
    c.catalog_nodes(&opts).await.map(|r| r.value.into_iter().map(|n| n.node).collect()).unwrap_or_default()
}

/// Service ID → (node, check status) of every instance on those nodes that carries the
/// sync's identity; `None` for an instance without its check.
pub async fn sync_owned(
    c: &concord::consul::Client,
    ns: &str,
) -> std::collections::BTreeMap<String, (String, Option<concord::consul::CheckStatus>)> {
    use concord::consul::QueryOptions;
    let identity = format!("{ns}-consul");
    let mut out = std::collections::BTreeMap::new();
    for node in sync_nodes(c, ns).await {
        let Ok(services) = c.catalog_node_services(&node, &QueryOptions::default()).await else { continue };
        let Ok(checks) = c.health_node(&node, &QueryOptions::default()).await else { continue };
        let status: std::collections::BTreeMap<String, concord::consul::CheckStatus> =
            checks.value.into_iter().map(|ch| (ch.service_id.clone(), ch.status)).collect();
        for s in services.value.map(|s| s.services).unwrap_or_default() {
            if s.meta.get("concord-sync") == Some(&identity) {
                let st = status.get(&s.id).copied();
                out.insert(s.id, (node.clone(), st));
            }
        }
    }
    out
}

/// A DNS client that asks one server (Consul's DNS port) over UDP, without a cache.
pub fn resolver(
    addr: SocketAddr,
) -> hickory_resolver::Resolver<hickory_resolver::name_server::TokioConnectionProvider> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(addr, hickory_resolver::proto::xfer::Protocol::Udp));
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    hickory_resolver::Resolver::builder_with_config(
        config,
        hickory_resolver::name_server::TokioConnectionProvider::default(),
    )
    .with_options(opts)
    .build()
}

/// A selector-less Service with the given annotations and one port.
pub async fn service(client: &kube::Client, ns: &str, name: &str, port: i32, annotations: serde_json::Value) {
    let obj = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"ports": [{"name": "http", "port": port}]}
    });
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .patch(name, &kube::api::PatchParams::apply("test").force(), &kube::api::Patch::Apply(&obj))
        .await
        .expect("Service applied");
}

/// A hand-made EndpointSlice for Service `svc`: (address, ready) endpoints on `port`.
pub async fn slice(client: &kube::Client, ns: &str, svc: &str, port: i32, endpoints: &[(&str, bool)]) {
    let name = format!("{svc}-manual");
    let obj = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|(a, r)| serde_json::json!({"addresses": [a], "conditions": {"ready": r}})).collect::<Vec<_>>()
    });
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(client.clone(), ns)
        .patch(&name, &kube::api::PatchParams::apply("test").force(), &kube::api::Patch::Apply(&obj))
        .await
        .expect("EndpointSlice applied");
}

/// A namespace of its own on the shared API server, a DiscoveryCluster pointing at
/// `cluster` (with `sync` settings), the controller scoped to that namespace, and a
/// Consul client without a token.
pub struct ExternalEnv {
    pub kube: kube::Client,
    pub ns: String,
    pub consul: concord::consul::Client,
    pub controller: RunningController,
}

pub async fn external_env(
    cluster: &testenv::ConsulCluster,
    sync: Option<serde_json::Value>,
    namespace_prefix: &str,
) -> ExternalEnv {
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    install_crds(&kube).await;
    let ns = kube_env.create_namespace(namespace_prefix).await;
    external_cluster(&kube, &ns, &cluster.http_addrs(), sync).await;
    let controller = start_controller(kube.clone(), &ns, &[]).await;
    let consul =
        concord::consul::Client::new(concord::consul::ClientConfig::new(cluster.http_addrs())).expect("consul client");
    ExternalEnv { kube, ns, consul, controller }
}

/// A Consul client config for `cluster`: its addresses, and its CA when TLS is on.
pub fn consul_config(cluster: &testenv::ConsulCluster) -> concord::consul::ClientConfig {
    let config = concord::consul::ClientConfig::new(cluster.http_addrs());
    match cluster.ca_pem() {
        Some(pem) => config.ca_pem(pem.as_bytes().to_vec()),
        None => config,
    }
}

/// When `cluster` has TLS on: writes its CA into the Secret `consul-ca` (key `ca.crt`) of
/// `ns` and returns the `external.caSecretRef` pointing at it.
pub async fn ca_secret_ref(
    kube: &kube::Client,
    ns: &str,
    cluster: &testenv::ConsulCluster,
) -> Option<serde_json::Value> {
    let pem = cluster.ca_pem()?;
    put_ca_secret(kube, ns, "consul-ca", pem).await;
    Some(serde_json::json!({ "name": "consul-ca", "key": "ca.crt" }))
}

/// Writes `pem` into Secret `name` key `ca.crt` of `ns`.
pub async fn put_ca_secret(kube: &kube::Client, ns: &str, name: &str, pem: &str) {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name, "namespace": ns }, "stringData": { "ca.crt": pem },
    });
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.clone(), ns)
        .patch(name, &PatchParams::apply("concord-test").force(), &Patch::Apply(&secret))
        .await
        .expect("CA Secret applied");
}

/// Waits up to 40 s for an Event with `reason` regarding the object `object` in `ns`
/// (of type Warning when `warning`, of any type otherwise).
pub async fn event(client: &kube::Client, ns: &str, object: &str, reason: &str, warning: bool) {
    use k8s_openapi::api::events::v1::Event;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let kind = if warning { "Warning" } else { "an" };
    eventually(&format!("{kind} {reason} event on {object}"), Duration::from_secs(40), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some(reason)
                    && (!warning || e.type_.as_deref() == Some("Warning"))
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
            })
            .then_some(())
    })
    .await
}

/// Established TCP connections (client side) to any of `addrs` (`host:port` or URLs), from
/// `/proc/net/tcp{,6}`.
pub fn consul_connections(addrs: &[String]) -> usize {
    let ports: std::collections::BTreeSet<u16> =
        addrs.iter().filter_map(|a| a.trim_end_matches('/').rsplit(':').next()?.parse().ok()).collect();
    assert!(!ports.is_empty(), "ports of {addrs:?}");
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state)) = (cols.get(2), cols.get(3)) else { continue };
            let port = remote.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "01" && port.is_some_and(|p| ports.contains(&p)) {
                n += 1;
            }
        }
    }
    n
}
