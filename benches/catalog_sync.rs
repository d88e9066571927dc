//! Catalog sync benchmark against the real test servers (etcd + kube-apiserver and a
//! three-server Consul on loopback) with the real `concord` binary as a child process.
//! Run with `cargo bench --bench catalog_sync`; `cargo test` never runs it (without
//! `--bench` it exits at once). Results go to BENCHMARKS.md, "Catalog sync".
//!
//! Measures: initial sync of SERVICES x ENDPOINTS; p50/p99 from an EndpointSlice change
//! to its visibility in Consul (a blocking query on the sync nodes' checks) at 1 change/s
//! and in a burst; the same for Consul → Kubernetes (a Consul check flip to the
//! EndpointSlice watch event); the controller's peak RSS (VmHWM).
#[path = "../tests/support/mod.rs"]
mod support;

use concord::consul::{self, CatalogRegistration, CheckStatus, ConsulIndex, HealthCheck, NodeService, QueryOptions};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{what}: n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        v.len(),
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

fn slice_json(ns: &str, i: usize, endpoints: usize, not_ready: Option<usize>) -> serde_json::Value {
    let name = format!("b-{i}");
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-manual"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
        "endpoints": (0..endpoints).map(|e| json!({
            "addresses": [format!("10.{}.{}.{}", 50 + i / 250, i % 250, e + 1)],
            "conditions": {"ready": not_ready != Some(e)}})).collect::<Vec<_>>()})
}

/// The controller child process, killed when dropped (also when the benchmark panics).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The controller's memory after a phase: current RSS and the peak so far (VmHWM).
fn memory(pid: u32, phase: &str) {
    let mib = |f| status_kib(pid, f).map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or("?".into());
    println!("  memory after {phase}: RSS {}, peak {}", mib("VmRSS:"), mib("VmHWM:"));
}

/// Check ID → (status, first time seen in that status), kept current by a blocking query.
type Seen = Arc<Mutex<HashMap<String, (CheckStatus, Instant)>>>;

/// Only critical checks on the sync's nodes are asked for (`/v1/health/state/critical`
/// with a server-side filter), so that the observer's own answers stay small: unfiltered,
/// every wake-up would ship all 10,000 checks.
fn watch_checks(c: consul::Client, node_prefix: String) -> Seen {
    let seen: Seen = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        let mut index = ConsulIndex::ZERO;
        loop {
            let opts = QueryOptions {
                filter: Some(format!(r#"Node matches "^{node_prefix}""#)),
                ..QueryOptions::blocking(index, Duration::from_secs(60))
            };
            let Ok(r) = c.health_state("critical", &opts).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let now = Instant::now();
            index = index.advance(r.index);
            let mut map = out.lock().expect("lock");
            for ch in r.value {
                match map.get(&ch.service_id) {
                    Some((s, _)) if *s == ch.status => {}
                    _ => {
                        map.insert(ch.service_id.clone(), (ch.status, now));
                    }
                }
            }
        }
    });
    seen
}

async fn wait_seen(seen: &Seen, id: &str, status: CheckStatus, timeout: Duration) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some((s, t)) = seen.lock().expect("lock").get(id)
            && *s == status
        {
            return Some(*t);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

async fn register_external(c: &consul::Client, i: usize, second: bool, status: CheckStatus) {
    let (node, addr) = if second {
        ("vm-bench-b", format!("10.90.{}.{}", i / 250, i % 250 + 1))
    } else {
        ("vm-bench-a", format!("10.91.{}.{}", i / 250, i % 250 + 1))
    };
    let id = format!("ext-{i}-{node}");
    let _ = c
        .catalog_register(&CatalogRegistration {
            node: node.into(),
            address: "192.0.2.1".into(),
            service: Some(NodeService {
                id: id.clone(),
                service: format!("ext-{i}"),
                address: addr,
                port: 80,
                ..Default::default()
            }),
            checks: vec![HealthCheck {
                check_id: format!("{id}-alive"),
                name: "alive".into(),
                status,
                service_id: id,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("catalog_sync benchmark: run with `cargo bench --bench catalog_sync`");
        return;
    }
    let services = env_usize("BENCH_SERVICES", 1000);
    let endpoints = env_usize("BENCH_ENDPOINTS", 10);
    let steady = env_usize("BENCH_STEADY_CHANGES", 30);
    let burst = env_usize("BENCH_BURST", 1000).min(services);
    let external = env_usize("BENCH_EXTERNAL", 1000);

    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::ConsulCluster::start(testenv::ConsulOptions::default()).await.expect("consul");
    let client = kube_env.client().await;
    support::install_crds(&client).await;
    let ns = kube_env.create_namespace("bench").await;
    let c = consul::Client::new(consul::ClientConfig::new(consul_env.http_addrs())).expect("consul client");
    let pp = PatchParams::apply("bench").force();

    println!("creating {services} Services x {endpoints} endpoints and {external} external Consul services ...");
    let svc_api = Api::<Service>::namespaced(client.clone(), &ns);
    let slice_api = Api::<EndpointSlice>::namespaced(client.clone(), &ns);
    futures::stream::iter(0..services)
        .for_each_concurrent(16, |i| {
            let (svc_api, slice_api, ns, pp) = (svc_api.clone(), slice_api.clone(), ns.clone(), pp.clone());
            async move {
                let name = format!("b-{i}");
                let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                    "spec": {"ports": [{"name": "http", "port": 80}]}});
                svc_api.patch(&name, &pp, &Patch::Apply(&svc)).await.expect("Service");
                slice_api
                    .patch(&format!("{name}-manual"), &pp, &Patch::Apply(&slice_json(&ns, i, endpoints, None)))
                    .await
                    .expect("slice");
            }
        })
        .await;
    futures::stream::iter(0..external)
        .for_each_concurrent(16, |i| {
            let c = c.clone();
            async move {
                register_external(&c, i, false, CheckStatus::Passing).await;
                register_external(&c, i, true, CheckStatus::Passing).await;
            }
        })
        .await;
    let target = format!("{ns}-mirror");
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&Default::default(), &serde_json::from_value(json!({"metadata": {"name": target}})).expect("ns"))
        .await
        .expect("target namespace");

    // Slice events in the mirror namespace: service name → (ready endpoints, time).
    let mirror_seen: Arc<Mutex<HashMap<String, (usize, Instant)>>> = Arc::default();
    {
        let out = mirror_seen.clone();
        let api = Api::<EndpointSlice>::namespaced(client.clone(), &target);
        tokio::spawn(async move {
            let mut s = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                let now = Instant::now();
                let (slice, deleted) = match ev {
                    Ok(watcher::Event::Apply(s)) | Ok(watcher::Event::InitApply(s)) => (s, false),
                    Ok(watcher::Event::Delete(s)) => (s, true),
                    _ => continue,
                };
                let Some(svc) =
                    slice.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).cloned()
                else {
                    continue;
                };
                let n = if deleted { 0 } else { slice.endpoints.len() };
                out.lock().expect("lock").insert(svc, (n, now));
            }
        });
    }

    support::external_cluster(
        &client,
        &ns,
        &consul_env.http_addrs(),
        Some(json!({"toConsul": {"enabled": true, "defaultSync": true},
                    "toKubernetes": {"enabled": true, "targetNamespace": target}})),
    )
    .await;
    let started = Instant::now();
    // BENCH_WRAP=heaptrack (or another wrapper that execs its argument) profiles the
    // controller; the RSS figures then include the wrapper.
    let mut command = match std::env::var("BENCH_WRAP") {
        Ok(wrapper) => {
            let mut c = std::process::Command::new(wrapper);
            c.arg(env!("CARGO_BIN_EXE_concord"));
            c
        }
        Err(_) => std::process::Command::new(env!("CARGO_BIN_EXE_concord")),
    };
    let child = command
        .args(["controller", "--listen", "127.0.0.1:0", "--namespace", &ns])
        .env("KUBECONFIG", kube_env.kubeconfig_path())
        .env("RUST_LOG", std::env::var("BENCH_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("concord");
    let pid = child.id();
    let _child = Child(child);
    let total = services * endpoints;
    // Initial sync: the sync reports its instance count in the DiscoveryCluster status
    // (at most once a second); one catalog read then confirms it.
    let dcs = Api::<concord::resources::DiscoveryCluster>::namespaced(client.clone(), &ns);
    loop {
        let reported = dcs.get("consul").await.ok().and_then(|d| d.status?.sync).map(|s| s.to_consul_instances);
        if reported.unwrap_or(0) as usize >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            panic!("initial sync did not finish in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let initial = started.elapsed();
    let in_catalog = support::sync_owned(&c, &ns).await.len();
    assert_eq!(in_catalog, total, "the catalog holds what the status reports");
    println!("initial sync to Consul: {total} instances in {:.2}s (from process start)", initial.as_secs_f64());
    memory(pid, "the initial sync to Consul");
    loop {
        let n = mirror_seen.lock().expect("lock").values().filter(|(n, _)| *n == 2).count();
        if n >= external {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            panic!("initial mirror did not finish ({n}/{external})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "initial sync to Kubernetes: {external} services in {:.2}s (from process start)",
        started.elapsed().as_secs_f64()
    );
    memory(pid, "both initial syncs");

    // The observer starts only now: its blocking query costs Consul's leader a scan of
    // every check per commit, which would slow the initial sync it is not measuring.
    let seen = watch_checks(c.clone(), format!("k8s-sync-{ns}-consul-"));

    // Kubernetes → Consul, 1 change/s: endpoint 0 of b-i goes not ready.
    let id = |i: usize, e: usize| format!("{ns}-b-{i}-10.{}.{}.{}-80", 50 + i / 250, i % 250, e + 1);
    let mut lat = Vec::new();
    for i in 0..steady {
        let tick = Instant::now();
        let sent = Instant::now();
        slice_api
            .patch(&format!("b-{i}-manual"), &pp, &Patch::Apply(&slice_json(&ns, i, endpoints, Some(0))))
            .await
            .expect("patch");
        if let Some(t) = wait_seen(&seen, &id(i, 0), CheckStatus::Critical, Duration::from_secs(10)).await {
            lat.push(t.saturating_duration_since(sent));
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    report("k8s->consul at 1 change/s", lat);

    // Kubernetes → Consul, burst: endpoint 1 of every b-i goes not ready, 16 writers.
    let sent_at: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let burst_start = Instant::now();
    futures::stream::iter(0..burst)
        .for_each_concurrent(16, |i| {
            let (slice_api, ns, pp, sent_at) = (slice_api.clone(), ns.clone(), pp.clone(), sent_at.clone());
            async move {
                let t = Instant::now();
                slice_api
                    .patch(&format!("b-{i}-manual"), &pp, &Patch::Apply(&slice_json(&ns, i, endpoints, Some(1))))
                    .await
                    .expect("patch");
                sent_at.lock().expect("lock").insert(i, t);
            }
        })
        .await;
    let mut lat = Vec::new();
    for i in 0..burst {
        if let Some(t) = wait_seen(&seen, &id(i, 1), CheckStatus::Critical, Duration::from_secs(60)).await {
            let s = sent_at.lock().expect("lock")[&i];
            lat.push(t.saturating_duration_since(s));
        }
    }
    println!(
        "k8s->consul burst of {burst}: all visible {:.2}s after the first write",
        burst_start.elapsed().as_secs_f64()
    );
    report("k8s->consul burst", lat);
    memory(pid, "the Kubernetes → Consul phases");

    // Consul → Kubernetes, 1 change/s: the second instance of ext-i goes critical.
    let wait_mirror = |svc: String, n: usize| {
        let m = mirror_seen.clone();
        async move {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Some((k, t)) = m.lock().expect("lock").get(&svc)
                    && *k == n
                {
                    return Some(*t);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            None
        }
    };
    let mut lat = Vec::new();
    for i in 0..steady.min(external) {
        let tick = Instant::now();
        let sent = Instant::now();
        register_external(&c, i, true, CheckStatus::Critical).await;
        if let Some(t) = wait_mirror(format!("ext-{i}"), 1).await {
            lat.push(t.saturating_duration_since(sent));
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    report("consul->k8s at 1 change/s", lat);

    let from = steady.min(external);
    let sent_at: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let burst_start = Instant::now();
    futures::stream::iter(from..external.min(from + burst))
        .for_each_concurrent(16, |i| {
            let (c, sent_at) = (c.clone(), sent_at.clone());
            async move {
                let t = Instant::now();
                register_external(&c, i, true, CheckStatus::Critical).await;
                sent_at.lock().expect("lock").insert(i, t);
            }
        })
        .await;
    let mut lat = Vec::new();
    for i in from..external.min(from + burst) {
        if let Some(t) = wait_mirror(format!("ext-{i}"), 1).await {
            lat.push(t.saturating_duration_since(sent_at.lock().expect("lock")[&i]));
        }
    }
    println!(
        "consul->k8s burst of {}: all visible {:.2}s after the first write",
        external.min(from + burst) - from,
        burst_start.elapsed().as_secs_f64()
    );
    report("consul->k8s burst", lat);

    match status_kib(pid, "VmHWM:") {
        Some(kib) => println!("controller peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("controller peak RSS: unavailable"),
    }
}
