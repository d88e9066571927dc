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
// The peer comparison (`BENCH_PEER_BIN`), in a directory of its own so that Cargo does not
// take it for a benchmark target.
#[path = "catalog_sync_peer/mod.rs"]
mod peer;

use concord::consul::{
    self, CatalogRegistration, CheckStatus, ConsulIndex, HealthCheck, MAX_TXN_OPS, NodeService, QueryOptions, TxnOp,
    TxnOutcome,
};
use concord::sync::to_consul::batch::{Batch, batches, nodes_to_register};
use concord::sync::to_consul::desired::{SliceEndpoints, service_instances};
use concord::sync::to_consul::diff::Change;
use concord::sync::to_consul::{PARALLEL_TXNS, sync_node};
use concord::sync::{SyncIdentity, ToConsulConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{cpu_time, load};

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

fn service_json(ns: &str, i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("b-{i}"), "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80}]}})
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
    println!(
        "  memory after {phase}: RSS {}, peak {} (anonymous {}, file-backed {}; {} threads)",
        mib("VmRSS:"),
        mib("VmHWM:"),
        mib("RssAnon:"),
        mib("RssFile:"),
        status_kib(pid, "Threads:").map(|n| n.to_string()).unwrap_or("?".into())
    );
}

/// The instance (and check) ID of endpoint `e` of Service `b-i` in `ns`, as the sync and
/// the floor both name it.
fn instance_id(ns: &str, i: usize, e: usize) -> String {
    format!("{ns}-b-{i}-10.{}.{}.{}-80", 50 + i / 250, i % 250, e + 1)
}

/// Check ID → (status, first time seen in that status), kept current by a blocking query.
type Seen = Arc<Mutex<HashMap<String, (CheckStatus, Instant)>>>;

/// Only critical checks on the sync's nodes are asked for (`/v1/health/state/critical`
/// with a server-side filter), so that the observer's own answers stay small: unfiltered,
/// every wake-up would ship all 10,000 checks.
fn watch_checks(c: consul::Client, node_prefix: String) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let out = seen.clone();
    let task = tokio::spawn(async move {
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
    (seen, task)
}

/// How long after `since` the observer had seen the held burst's changes (endpoint 2 of
/// Services `b-0` .. `b-{burst}` critical), and how many of them it never saw in 60 s each.
async fn held_burst_visible(seen: &Seen, ns: &str, burst: usize, since: Instant) -> (Duration, usize) {
    let mut last = since;
    let mut missing = 0;
    for i in 0..burst {
        match wait_seen(seen, &instance_id(ns, i, 2), CheckStatus::Critical, Duration::from_secs(60)).await {
            Some(t) => last = last.max(t),
            None => missing += 1,
        }
    }
    (last.saturating_duration_since(since), missing)
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

/// What the floor measured: Consul alone doing this sync's writes.
struct Floor {
    initial: Duration,
    txns: usize,
    ops: usize,
    burst: Duration,
    burst_txns: usize,
    burst_ops: usize,
    /// The held burst's writes (endpoint 1 ready again, endpoint 2 not ready): until the
    /// last commit returned, and until the observer saw the last change.
    held: Duration,
    held_visible: Duration,
    held_txns: usize,
    held_ops: usize,
}

/// Commits `batches`, [`PARALLEL_TXNS`] in flight, as the sync does; panics on a rollback.
async fn commit_all(c: &consul::Client, batches: Vec<Batch>) {
    futures::stream::iter(batches)
        .for_each_concurrent(PARALLEL_TXNS, |b| async move {
            match c.txn(&b.ops).await.expect("floor txn") {
                TxnOutcome::Committed(_) => {}
                TxnOutcome::RolledBack { errors, .. } => panic!("floor txn rolled back: {errors:?}"),
            }
        })
        .await;
}

/// The floor: the same registrations and the same transactions as the sync, written
/// straight to `/v1/txn`, with no Kubernetes, no watches and no process start in the
/// path. The instances come from concord's own pure functions (`service_instances` on
/// the same Service and EndpointSlice objects), packed by its own batcher (64 operations,
/// a Service never split) onto the same number of synthetic nodes, [`PARALLEL_TXNS`]
/// transactions in flight, after the nodes are registered in a transaction of their own.
/// Then the burst: endpoint 1 of the first `burst` Services goes not ready (one check
/// operation each), packed the same way. The nodes belong to another identity and are
/// deleted afterwards, so the sync meets the catalog as it was.
async fn floor(c: &consul::Client, ns: &str, services: usize, endpoints: usize, burst: usize, steady: usize) -> Floor {
    let identity = SyncIdentity::new(&format!("{ns}-floor"));
    let cfg = ToConsulConfig {
        identity: identity.clone(),
        default_sync: true,
        allow_namespaces: Default::default(),
        deny_namespaces: Default::default(),
        anti_entropy: Duration::from_secs(300),
        actor: concord::context::Actor::Controller,
    };
    let instances = |i: usize, not_ready: Option<usize>| {
        let svc: Service = serde_json::from_value(service_json(ns, i)).expect("service");
        let slice: EndpointSlice = serde_json::from_value(slice_json(ns, i, endpoints, not_ready)).expect("slice");
        service_instances(&cfg, &svc, &[&SliceEndpoints::from(slice)], true).instances
    };
    let key = |c: &Change| match c {
        Change::Upsert { instance, .. } | Change::Move { instance, .. } => instance.name.clone(),
        Change::Delete { name, .. } => name.clone(),
    };
    // Built before the clock starts (the sync builds its own lazily, while writing).
    let changes: Vec<Change> = (0..services)
        .flat_map(|i| instances(i, None))
        .map(|instance| Change::Upsert { check: instance.needs_check(), instance, service: true })
        .collect();
    let nodes = nodes_to_register(&identity, &Default::default(), &changes);
    let initial: Vec<Batch> = batches(identity.clone(), changes, MAX_TXN_OPS, key).collect();
    let (txns, ops) = (initial.len(), initial.iter().map(|b| b.ops.len()).sum());
    // What the sync writes in a burst: the checks that differ from before it, each as
    // the sync writes it (a critical check set, or a check deleted for a ready instance).
    let burst_writes = |before: &dyn Fn(usize) -> Option<usize>, after: &dyn Fn(usize) -> Option<usize>| {
        let changes: Vec<Change> = (0..burst)
            .flat_map(|i| {
                let old = instances(i, before(i));
                instances(i, after(i)).into_iter().zip(old).filter(|(a, b)| a.status != b.status).map(|(a, _)| a)
            })
            .map(|instance| Change::Upsert { instance, service: false, check: true })
            .collect();
        let ops = changes.len();
        let batches: Vec<Batch> = batches(identity.clone(), changes, MAX_TXN_OPS, key).collect();
        (ops, batches)
    };
    // The burst: endpoint 1 goes not ready (the steady phase left endpoint 0 of the first
    // `steady` Services not ready; that one comes back). The held burst after it:
    // endpoint 1 ready again and endpoint 2 not ready.
    let (flip_ops, flips) = burst_writes(&|i| (i < steady).then_some(0), &|_| Some(1));
    let burst_txns = flips.len();
    let (held_ops, held) = burst_writes(&|_| Some(1), &|_| Some(2));
    let held_txns = held.len();

    let start = Instant::now();
    let node_ops: Vec<TxnOp> = nodes.iter().map(|n| TxnOp::NodeSet(sync_node(&identity, n))).collect();
    commit_all(c, vec![Batch { changes: vec![], ops: node_ops }]).await;
    commit_all(c, initial).await;
    let initial = start.elapsed();
    let start = Instant::now();
    commit_all(c, flips).await;
    let burst_took = start.elapsed();
    // Timed to the same point as the sync's held burst: every change seen by an observer
    // like the one that times the sync (started first, its first answer already in).
    let (seen, observer) = watch_checks(c.clone(), format!("k8s-sync-{}-", identity.as_str()));
    let ready = Instant::now();
    // The burst left endpoint 1 of each of its Services critical: the first answer has them.
    while burst > 0 && seen.lock().expect("lock").is_empty() {
        assert!(ready.elapsed() < Duration::from_secs(60), "the floor's observer never answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    commit_all(c, held).await;
    let held = start.elapsed();
    let (held_visible, missing) = held_burst_visible(&seen, ns, burst, start).await;
    assert_eq!(missing, 0, "floor's held burst: {missing} of {burst} changes never became visible");
    observer.abort();
    // One node per transaction: removing a node removes all of its services in one Raft
    // entry (about 0.3 ms each; 2 s for a node of 6,250 at 100,000 instances).
    let delete = nodes.into_iter().map(|node| Batch { changes: vec![], ops: vec![TxnOp::NodeDelete { node }] });
    commit_all(c, delete.collect()).await;
    Floor {
        initial,
        txns,
        ops,
        burst: burst_took,
        burst_txns,
        burst_ops: flip_ops,
        held,
        held_visible,
        held_txns,
        held_ops,
    }
}

/// CPU time of groups of processes over a phase: Consul's servers (the leader apart),
/// the API server side (kube-apiserver + etcd) and the controller.
struct CpuMeter {
    consul: Vec<u32>,
    leader: Option<u32>,
    kube: Vec<u32>,
    controller: Option<u32>,
    at: Vec<Duration>,
    started: Instant,
}

impl CpuMeter {
    fn pids(&self) -> Vec<Option<u32>> {
        let mut all: Vec<Option<u32>> = vec![self.leader, self.controller];
        all.push(None);
        all.extend(self.consul.iter().map(|p| Some(*p)));
        all.push(None);
        all.extend(self.kube.iter().map(|p| Some(*p)));
        all
    }

    fn sample(&self) -> Vec<Duration> {
        self.pids().into_iter().map(|p| p.and_then(cpu_time).unwrap_or_default()).collect()
    }

    fn start(consul: Vec<u32>, leader: Option<u32>, kube: Vec<u32>, controller: Option<u32>) -> Self {
        let mut m = CpuMeter { consul, leader, kube, controller, at: Vec::new(), started: Instant::now() };
        m.at = m.sample();
        m
    }

    /// One line: wall time and CPU seconds of each group since `start`.
    fn line(&self, phase: &str) -> String {
        let now = self.sample();
        let d: Vec<f64> = now.iter().zip(&self.at).map(|(b, a)| b.saturating_sub(*a).as_secs_f64()).collect();
        let n = self.consul.len();
        let consul: f64 = d[3..3 + n].iter().sum();
        let kube: f64 = d[4 + n..].iter().sum();
        format!(
            "cpu {phase}: wall {:.2}s; Consul servers {consul:.2}s (leader {:.2}s); kube-apiserver+etcd {kube:.2}s; controller {:.2}s; load {}",
            self.started.elapsed().as_secs_f64(),
            d[0],
            d[1],
            load()
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("catalog_sync benchmark: run with `cargo bench --bench catalog_sync`");
        return;
    }
    let services = env_usize("BENCH_SERVICES", 1000);
    let endpoints = env_usize("BENCH_ENDPOINTS", 10);
    let steady = env_usize("BENCH_STEADY_CHANGES", 100);
    let rate = env_usize("BENCH_STEADY_RATE", 10).max(1);
    let burst = env_usize("BENCH_BURST", 1000).min(services);
    let external = env_usize("BENCH_EXTERNAL", 1000);
    let mirror_changes = env_usize("BENCH_MIRROR_CHANGES", 30);

    // BENCH_PEER_BIN: a consul-k8s control-plane binary to compare with (see peer.rs);
    // its sync-catalog needs Consul's gRPC port. BENCH_PEER_ONLY=1 runs only that.
    let peer_bin = std::env::var_os("BENCH_PEER_BIN").map(std::path::PathBuf::from);
    let peer_only = peer_bin.is_some() && std::env::var("BENCH_PEER_ONLY").is_ok_and(|v| v == "1");

    let kube_env = testenv::shared_kube().await;
    let consul_opts = testenv::ConsulOptions { grpc: peer_bin.is_some(), ..Default::default() };
    let consul_env = testenv::ConsulCluster::start(consul_opts).await.expect("consul");
    let client = kube_env.client().await;
    support::install_crds(&client).await;
    if let (Some(bin), true) = (&peer_bin, peer_only) {
        let ctx = peer::Ctx { kube: kube_env, consul: &consul_env, client: client.clone() };
        peer::compare(&ctx, bin).await;
        return;
    }
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
                svc_api.patch(&name, &pp, &Patch::Apply(&service_json(&ns, i))).await.expect("Service");
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
    // The floor runs on the same servers before the controller starts.
    let leader_pid = |i: Option<usize>| i.and_then(|i| consul_env.pids().get(i).copied());
    let leader = leader_pid(consul_env.leader_index().await);
    let meter = CpuMeter::start(consul_env.pids(), leader, kube_env.pids(), None);
    let floor = floor(&c, &ns, services, endpoints, burst, steady.min(services)).await;
    println!("{}", meter.line("floor (initial + burst + cleanup)"));
    println!(
        "floor: {} instances in {:.2}s ({} txns, {} ops, {PARALLEL_TXNS} in flight); burst of {burst} Services ({} check writes) {:.2}s ({} txns); load {}",
        services * endpoints,
        floor.initial.as_secs_f64(),
        floor.txns,
        floor.ops,
        floor.burst_ops,
        floor.burst.as_secs_f64(),
        floor.burst_txns,
        load()
    );
    println!(
        "floor: held burst of {burst} Services ({} check writes) {:.2}s ({} txns), all visible to the observer after {:.2}s",
        floor.held_ops,
        floor.held.as_secs_f64(),
        floor.held_txns,
        floor.held_visible.as_secs_f64()
    );
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
    // controller; the RSS figures then include the wrapper. BENCH_CONCORD=<path> runs
    // another build of concord (a saved copy of an earlier one, to compare two builds in
    // the same conditions).
    let binary = std::env::var("BENCH_CONCORD").unwrap_or_else(|_| env!("CARGO_BIN_EXE_concord").to_string());
    let mut command = match std::env::var("BENCH_WRAP") {
        Ok(wrapper) => {
            let mut c = std::process::Command::new(wrapper);
            c.arg(&binary);
            c
        }
        Err(_) => std::process::Command::new(&binary),
    };
    let child = command
        .args(["controller", "--listen", "127.0.0.1:0", "--namespace", &ns])
        .env("KUBECONFIG", kube_env.kubeconfig_path())
        .env("RUST_LOG", std::env::var("BENCH_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("concord");
    let pid = child.id();
    let controller = Child(child);
    let meter = CpuMeter::start(consul_env.pids(), leader, kube_env.pids(), Some(pid));
    let total = services * endpoints;
    // A bound for the initial phases: 300 s, or 3 ms per instance beyond 100,000.
    let limit = Duration::from_secs(300).max(Duration::from_millis(3) * total as u32);
    // Initial sync: the sync reports its instance count in the DiscoveryCluster status
    // (at most once a second); one catalog read then confirms it.
    let dcs = Api::<concord::resources::DiscoveryCluster>::namespaced(client.clone(), &ns);
    loop {
        let reported = dcs.get("consul").await.ok().and_then(|d| d.status?.sync).map(|s| s.to_consul_instances);
        if reported.unwrap_or(0) as usize >= total {
            break;
        }
        if started.elapsed() > limit {
            panic!("initial sync did not finish in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let initial = started.elapsed();
    let in_catalog = support::sync_owned(&c, &ns).await.len();
    assert_eq!(in_catalog, total, "the catalog holds what the status reports");
    println!("initial sync to Consul: {total} instances in {:.2}s (from process start)", initial.as_secs_f64());
    println!("{}", meter.line("initial sync"));
    memory(pid, "the initial sync to Consul");
    loop {
        let n = mirror_seen.lock().expect("lock").values().filter(|(n, _)| *n == 2).count();
        if n >= external {
            break;
        }
        if started.elapsed() > limit {
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
    let (seen, _observer) = watch_checks(c.clone(), format!("k8s-sync-{ns}-consul-"));

    // Kubernetes → Consul, `rate` changes/s: endpoint 0 of b-i goes not ready.
    let id = |i: usize, e: usize| instance_id(&ns, i, e);
    let steady_start = Instant::now();
    let waits: Vec<_> = (0..steady.min(services))
        .map(|i| {
            let (slice_api, ns, pp, seen, id) = (slice_api.clone(), ns.clone(), pp.clone(), seen.clone(), id(i, 0));
            async move {
                tokio::time::sleep_until((steady_start + Duration::from_secs(1) * i as u32 / rate as u32).into()).await;
                let sent = Instant::now();
                slice_api
                    .patch(&format!("b-{i}-manual"), &pp, &Patch::Apply(&slice_json(&ns, i, endpoints, Some(0))))
                    .await
                    .expect("patch");
                wait_seen(&seen, &id, CheckStatus::Critical, Duration::from_secs(10))
                    .await
                    .map(|t| t.saturating_duration_since(sent))
            }
        })
        .collect();
    let lat: Vec<Duration> = futures::future::join_all(waits).await.into_iter().flatten().collect();
    let steady_p99 = {
        let mut l = lat.clone();
        l.sort();
        percentile(&l, 0.99)
    };
    report(&format!("k8s->consul at {rate} changes/s"), lat);

    // Kubernetes → Consul, burst: endpoint 1 of every b-i goes not ready, 16 writers.
    let sent_at: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let burst_meter = CpuMeter::start(consul_env.pids(), leader, kube_env.pids(), Some(pid));
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
    let submitted = burst_start.elapsed();
    let mut lat = Vec::new();
    let mut last = burst_start;
    for i in 0..burst {
        if let Some(t) = wait_seen(&seen, &id(i, 1), CheckStatus::Critical, Duration::from_secs(60)).await {
            let s = sent_at.lock().expect("lock")[&i];
            lat.push(t.saturating_duration_since(s));
            last = last.max(t);
        }
    }
    let burst_all = last.saturating_duration_since(burst_start);
    println!(
        "k8s->consul burst of {burst}: all visible {:.2}s after the first write (the {burst} patches took {:.2}s to submit)",
        burst_all.as_secs_f64(),
        submitted.as_secs_f64()
    );
    println!("{}", burst_meter.line("k8s->consul burst"));
    report("k8s->consul burst", lat);

    // Kubernetes → Consul, held burst: the controller is stopped (SIGSTOP) while the
    // `burst` patches land (endpoint 1 ready again, endpoint 2 not ready), then continued
    // and timed from then to all visible: the sync's own time for that many changes,
    // without the API server's submission rate in it. A stop this long may make the API
    // server close the controller's watches; it then relists, as after any stall.
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let held_start = Instant::now();
    futures::stream::iter(0..burst)
        .for_each_concurrent(16, |i| {
            let (slice_api, ns, pp) = (slice_api.clone(), ns.clone(), pp.clone());
            async move {
                slice_api
                    .patch(&format!("b-{i}-manual"), &pp, &Patch::Apply(&slice_json(&ns, i, endpoints, Some(2))))
                    .await
                    .expect("patch");
            }
        })
        .await;
    let held_submitted = held_start.elapsed();
    let held_meter = CpuMeter::start(consul_env.pids(), leader, kube_env.pids(), Some(pid));
    let resumed = Instant::now();
    signal("-CONT");
    let (held_all, held_missing) = held_burst_visible(&seen, &ns, burst, resumed).await;
    assert_eq!(held_missing, 0, "held burst: {held_missing} of {burst} changes never became visible");
    println!(
        "k8s->consul held burst of {burst}: all visible {:.2}s after the controller was continued (the patches took {:.2}s to submit while it was stopped)",
        held_all.as_secs_f64(),
        held_submitted.as_secs_f64()
    );
    println!("{}", held_meter.line("k8s->consul held burst"));
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
    for i in 0..mirror_changes.min(external) {
        let tick = Instant::now();
        let sent = Instant::now();
        register_external(&c, i, true, CheckStatus::Critical).await;
        if let Some(t) = wait_mirror(format!("ext-{i}"), 1).await {
            lat.push(t.saturating_duration_since(sent));
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    report("consul->k8s at 1 change/s", lat);

    let from = mirror_changes.min(external);
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

    // Idle: nothing changes for 10 s; the controller's CPU time over that window.
    let idle_from = cpu_time(pid);
    let idle_meter = CpuMeter::start(consul_env.pids(), leader, kube_env.pids(), Some(pid));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = cpu_time(pid).zip(idle_from).map(|(b, a)| b.saturating_sub(a));
    println!("{}", idle_meter.line("10 s idle"));
    let peak = status_kib(pid, "VmHWM:").map(|k| k as f64 / 1024.0);

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!();
    println!("| what | floor (raw /v1/txn) | concord | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| initial sync, {total} instances | {:.2} s | {:.2} s | {:.2}x |",
        floor.initial.as_secs_f64(),
        initial.as_secs_f64(),
        ratio(initial, floor.initial)
    );
    println!(
        "| burst of {burst} changes, all visible | {:.2} s | {:.2} s | {:.2}x |",
        floor.burst.as_secs_f64(),
        burst_all.as_secs_f64(),
        ratio(burst_all, floor.burst)
    );
    println!(
        "| held burst of {burst} changes (controller stopped while they land), all visible after it continues | {:.2} s | {:.2} s | {:.2}x |",
        floor.held_visible.as_secs_f64(),
        held_all.as_secs_f64(),
        ratio(held_all, floor.held_visible)
    );
    println!("| change p99 at {rate}/s | | {:.1} ms | |", steady_p99.as_secs_f64() * 1e3);
    match peak {
        Some(mib) => println!(
            "| controller peak RSS (VmHWM), whole run | | {mib:.1} MiB ({:.2} KiB per instance, all included) | |",
            mib * 1024.0 / total.max(1) as f64
        ),
        None => println!("| controller peak RSS | | unavailable | |"),
    }
    match idle_cpu {
        Some(t) => println!("| controller CPU over 10 s idle | | {:.2} s | |", t.as_secs_f64()),
        None => println!("| controller CPU over 10 s idle | | unavailable | |"),
    }
    println!("load average at the end: {}", load());

    if let Some(bin) = &peer_bin {
        drop(controller);
        let ctx = peer::Ctx { kube: kube_env, consul: &consul_env, client: client.clone() };
        peer::clear(&ctx, &[&ns, &target]).await;
        peer::compare(&ctx, bin).await;
    }
}
