//! The peer comparison of the catalog benchmark (issue #15 item 4): with `BENCH_PEER_BIN`
//! set to a consul-k8s control-plane binary, the benchmark runs concord and that binary's
//! `sync-catalog` one after the other on the same kube-apiserver, the same three Consul
//! servers and the same workload, measured the same way, and prints one table with the
//! peer's figures as ratios to concord's. The peer runs twice: at its defaults and at its
//! fastest write interval (`-consul-write-interval=1s`).
//!
//! The peer is not built here (its source may not enter this repository); BENCHMARKS.md
//! says how the binary used for the published numbers was built.
//!
//! Every figure comes from Consul as a client sees it, identical for all three syncers:
//! - an observer holds one blocking query per Service on `/v1/health/service/<name>?passing`
//!   (what DNS and clients get) and timestamps every change of the passing addresses;
//! - initial sync: process start → every endpoint of every Service passing;
//! - change: endpoint 0 of one Service goes not ready (one EndpointSlice apply a second)
//!   → its address gone from `?passing`;
//! - peak RSS: VmHWM of the syncer process (the larger of the run before the restart and
//!   the restarted one);
//! - steady requests/s: HTTP requests served by the three Consul servers while nothing
//!   changes, from their own in-memory metrics (`consul.api.http` in `/v1/agent/metrics`,
//!   whole 10-second intervals), minus the observer's and the benchmark's own paths;
//! - restart: SIGTERM, start again at once, and watch `?passing` for the restart window:
//!   the fewest passing instances seen and for how long any was missing.
//!
//! Every process started here is stopped here (SIGTERM, then SIGKILL after 10 s; and on
//! drop), and runs under `setpriv --pdeathsig KILL` when `setpriv` exists, so it dies with
//! the benchmark even when that is SIGKILLed.

use concord::consul::{self, CatalogDeregistration, ConsulIndex, QueryOptions};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The comparison's workload and bounds (`BENCH_PEER_*`).
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    services: usize,
    endpoints: usize,
    changes: usize,
    /// Whole 10-second metric intervals in the steady window.
    idle_intervals: usize,
    /// The restart window: this, plus the syncer's own initial sync time.
    restart_extra: Duration,
}

impl Workload {
    pub fn from_env() -> Self {
        Workload {
            services: env_usize("BENCH_PEER_SERVICES", 100).max(1),
            endpoints: env_usize("BENCH_PEER_ENDPOINTS", 10).clamp(2, 250),
            changes: env_usize("BENCH_PEER_CHANGES", 30),
            idle_intervals: env_usize("BENCH_PEER_IDLE_INTERVALS", 3).max(1),
            restart_extra: Duration::from_secs(env_usize("BENCH_PEER_RESTART_SECS", 30) as u64),
        }
    }
}

fn svc_name(i: usize) -> String {
    format!("p-{i}")
}

fn address(i: usize, e: usize) -> String {
    format!("10.{}.{}.{}", 70 + i / 250, i % 250, e + 1)
}

fn service_json(ns: &str, i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc_name(i), "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80}]}})
}

fn slice_json(ns: &str, i: usize, endpoints: usize, not_ready: Option<usize>) -> serde_json::Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{}-manual", svc_name(i)), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc_name(i)}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
        "endpoints": (0..endpoints).map(|e| json!({
            "addresses": [address(i, e)],
            "conditions": {"ready": not_ready != Some(e)}})).collect::<Vec<_>>()})
}

// ---------------------------------------------------------------------------------------
// Processes

/// A syncer process, stopped when dropped (also when the benchmark panics).
struct Proc {
    child: std::process::Child,
    what: String,
    log: PathBuf,
}

fn setpriv() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join("setpriv")).find(|p| p.is_file())
}

impl Proc {
    /// Starts `bin args` with its stdout and stderr appended to `log`. Called from the
    /// benchmark's main thread, whose death is what `--pdeathsig` watches.
    fn spawn(what: &str, bin: &Path, args: &[String], kubeconfig: &Path, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("syncer log");
        let err = out.try_clone().expect("syncer log");
        let mut command = match setpriv() {
            Some(setpriv) => {
                let mut c = std::process::Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(bin);
                c
            }
            None => std::process::Command::new(bin),
        };
        let child = command
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what} ({}): {e}", bin.display()));
        Proc { child, what: what.to_string(), log: log.to_path_buf() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmHWM of the process so far, in MiB.
    fn peak_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// Panics (naming the log) if the process has exited: a syncer must run until stopped.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}); its log: {}", self.what, self.log.display());
        }
    }

    /// SIGTERM, as a rolling restart does; SIGKILL if still running after 10 s.
    async fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("  {} ignored SIGTERM for 10 s; killed", self.what);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The observer: `?passing` of every Service, one blocking query each

#[derive(Default)]
struct PassingState {
    /// Service index → (passing addresses, when that set last changed).
    current: BTreeMap<usize, (BTreeSet<String>, Instant)>,
    /// Every change, in order: (when, service index, passing instances now).
    log: Vec<(Instant, usize, usize)>,
}

struct Passing {
    state: Arc<Mutex<PassingState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Passing {
    fn start(c: &consul::Client, services: usize) -> Passing {
        let state: Arc<Mutex<PassingState>> = Arc::default();
        let tasks = (0..services)
            .map(|i| {
                let (c, state) = (c.clone(), state.clone());
                tokio::spawn(async move {
                    let name = svc_name(i);
                    let mut index = ConsulIndex::ZERO;
                    loop {
                        let opts = QueryOptions::blocking(index, Duration::from_secs(300));
                        let r = match c.health_service(&name, &[], true, &opts).await {
                            Ok(r) => r,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        };
                        index = index.advance(r.index);
                        let set: BTreeSet<String> = r.value.iter().map(|e| e.address().to_string()).collect();
                        let mut s = state.lock().expect("lock");
                        let now = Instant::now();
                        if s.current.get(&i).is_none_or(|(old, _)| *old != set) {
                            let n = set.len();
                            s.current.insert(i, (set, now));
                            s.log.push((now, i, n));
                        }
                    }
                })
            })
            .collect();
        Passing { state, tasks }
    }

    fn total(&self) -> usize {
        self.state.lock().expect("lock").current.values().map(|(s, _)| s.len()).sum()
    }

    /// Waits until every Service has `endpoints` passing instances; returns when the last
    /// one got there, or `None` after `timeout`.
    async fn wait_all(&self, services: usize, endpoints: usize, timeout: Duration) -> Option<Instant> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            {
                let s = self.state.lock().expect("lock");
                let full = (0..services).all(|i| s.current.get(&i).is_some_and(|(set, _)| set.len() == endpoints));
                if full {
                    return s.current.values().map(|(_, t)| *t).max();
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Waits until `address` is not among the passing instances of Service `i`.
    async fn wait_gone(&self, i: usize, address: &str, timeout: Duration) -> Option<Instant> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some((set, t)) = self.state.lock().expect("lock").current.get(&i)
                && !set.contains(address)
            {
                return Some(*t);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    async fn wait_empty(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.total() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Replays the changes from `from` to `to`, starting from `full` instances passing in
    /// every Service: the fewest passing instances in all, the fewest Services with all
    /// instances passing, and how long at least one instance was missing.
    fn dips(&self, services: usize, full: usize, from: Instant, to: Instant) -> Restart {
        let s = self.state.lock().expect("lock");
        let mut counts = vec![full; services];
        let mut total = full * services;
        let (mut min_total, mut min_services) = (total, services);
        let mut missing_since: Option<Instant> = None;
        let mut missing = Duration::ZERO;
        for &(t, i, n) in s.log.iter().filter(|(t, i, _)| *t >= from && *t <= to && *i < services) {
            total = total + n - counts[i];
            counts[i] = n;
            min_total = min_total.min(total);
            min_services = min_services.min(counts.iter().filter(|c| **c >= full).count());
            match (total < full * services, missing_since) {
                (true, None) => missing_since = Some(t),
                (false, Some(since)) => {
                    missing += t - since;
                    missing_since = None;
                }
                _ => {}
            }
        }
        if let Some(since) = missing_since {
            missing += to - since;
        }
        Restart { min_instances: min_total, min_services, missing, window: to - from }
    }
}

impl Drop for Passing {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests to Consul, from the servers' own metrics

/// Paths left out of the count: the observer's queries and these metric reads.
const NOT_COUNTED: [&str; 2] = ["v1_health_service_", "v1_agent_metrics"];

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Sleeps until 1.5 s after the next 10-second boundary of the wall clock, where Consul's
/// in-memory metrics start a new interval (intervals are aligned to the Unix epoch).
async fn next_interval() {
    let now = unix_now();
    let next = Duration::from_secs((now.as_secs() / 10 + 1) * 10) + Duration::from_millis(1500);
    tokio::time::sleep(next - now).await;
}

/// Requests per second served over `intervals` whole 10-second intervals, summed over the
/// servers, with the per-path rates. `/v1/agent/metrics` shows the last finished interval;
/// an interval is counted once per server (by its timestamp).
async fn requests_per_second(
    http: &reqwest::Client,
    servers: &[String],
    intervals: usize,
) -> (f64, BTreeMap<String, f64>) {
    let mut seen: BTreeSet<(usize, String)> = BTreeSet::new();
    let mut by_path: BTreeMap<String, f64> = BTreeMap::new();
    next_interval().await; // the interval in progress began before the window
    for _ in 0..intervals {
        next_interval().await;
        for (s, base) in servers.iter().enumerate() {
            let Ok(resp) = http.get(format!("{base}/v1/agent/metrics")).send().await else { continue };
            let Ok(m) = resp.json::<serde_json::Value>().await else { continue };
            let stamp = m["Timestamp"].as_str().unwrap_or_default().to_string();
            if !seen.insert((s, stamp)) {
                continue;
            }
            for sample in m["Samples"].as_array().into_iter().flatten() {
                if sample["Name"] != "consul.api.http" {
                    continue;
                }
                let method = sample["Labels"]["method"].as_str().unwrap_or("?");
                let path = sample["Labels"]["path"].as_str().unwrap_or("?");
                if NOT_COUNTED.contains(&path) {
                    continue;
                }
                *by_path.entry(format!("{method} {path}")).or_default() += sample["Count"].as_f64().unwrap_or(0.0);
            }
        }
    }
    let secs = 10.0 * intervals as f64;
    let by_path: BTreeMap<String, f64> = by_path.into_iter().map(|(k, v)| (k, v / secs)).collect();
    (by_path.values().sum(), by_path)
}

// ---------------------------------------------------------------------------------------
// The comparison

/// Which syncer a column is about.
#[derive(Clone, Debug)]
enum Syncer {
    Concord,
    Peer { bin: PathBuf, write_interval: Option<&'static str> },
}

impl Syncer {
    fn label(&self) -> String {
        match self {
            Syncer::Concord => "concord".into(),
            Syncer::Peer { write_interval: None, .. } => "consul-k8s, defaults".into(),
            Syncer::Peer { write_interval: Some(i), .. } => format!("consul-k8s, {i} write interval"),
        }
    }

    /// The longest it may take to publish one change: three write periods and a minute.
    fn change_bound(&self) -> Duration {
        match self {
            Syncer::Peer { write_interval: None, .. } => Duration::from_secs(150),
            _ => Duration::from_secs(63),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Restart {
    min_instances: usize,
    min_services: usize,
    missing: Duration,
    window: Duration,
}

#[derive(Debug)]
struct Column {
    label: String,
    initial: Option<Duration>,
    changes: Vec<Duration>,
    lost_changes: usize,
    peak_mib: Option<f64>,
    requests: Option<f64>,
    by_path: BTreeMap<String, f64>,
    restart: Option<Restart>,
}

/// What every run needs.
pub struct Ctx<'a> {
    pub kube: &'a testenv::KubeEnv,
    pub consul: &'a testenv::ConsulCluster,
    pub client: kube::Client,
}

/// Empties what concord's own run left, so the comparison starts on a quiet cluster: the
/// Services and EndpointSlices of `namespaces` (the syncer reads every namespace's) and the
/// Consul nodes of that run (`k8s-sync-*` and the external `vm-bench-*`). Call with the
/// controller stopped.
pub async fn clear(ctx: &Ctx<'_>, namespaces: &[&str]) {
    for ns in namespaces {
        let dp = DeleteParams::default();
        let lp = ListParams::default();
        let _ = Api::<EndpointSlice>::namespaced(ctx.client.clone(), ns).delete_collection(&dp, &lp).await;
        let _ = Api::<Service>::namespaced(ctx.client.clone(), ns).delete_collection(&dp, &lp).await;
    }
    let c = consul_client(ctx, 0);
    deregister_nodes(&c, &["k8s-sync", "vm-bench-"]).await;
}

fn consul_client(ctx: &Ctx<'_>, server: usize) -> consul::Client {
    let addrs = ctx.consul.http_addrs();
    consul::Client::new(consul::ClientConfig::new([addrs[server % addrs.len()].clone()])).expect("consul client")
}

async fn deregister_nodes(c: &consul::Client, prefixes: &[&str]) {
    let nodes = c.catalog_nodes(&QueryOptions::default()).await.map(|r| r.value).unwrap_or_default();
    for node in nodes.into_iter().filter(|n| prefixes.iter().any(|p| n.node.starts_with(p))) {
        let _ = c.catalog_deregister(&CatalogDeregistration { node: node.node, ..Default::default() }).await;
    }
}

/// Runs the comparison and prints its table. `peer` is the consul-k8s binary.
pub async fn compare(ctx: &Ctx<'_>, peer: &Path) {
    let w = Workload::from_env();
    if !peer.is_file() {
        panic!("BENCH_PEER_BIN={}: no such file", peer.display());
    }
    let version = std::process::Command::new(peer).arg("version").output().expect("peer version");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let grpc = ctx.consul.grpc_port(0).expect("the benchmark starts Consul with gRPC when BENCH_PEER_BIN is set");
    println!();
    println!(
        "peer comparison: {} Services x {} endpoints, {} changes at 1/s; peer: {} ({version}); load {}",
        w.services,
        w.endpoints,
        w.changes,
        peer.display(),
        crate::load()
    );

    let ns = ctx.kube.create_namespace("peer").await;
    let pp = PatchParams::apply("bench").force();
    let svc_api = Api::<Service>::namespaced(ctx.client.clone(), &ns);
    let slice_api = Api::<EndpointSlice>::namespaced(ctx.client.clone(), &ns);
    for i in 0..w.services {
        svc_api.patch(&svc_name(i), &pp, &Patch::Apply(&service_json(&ns, i))).await.expect("Service");
        let slice = slice_json(&ns, i, w.endpoints, None);
        slice_api.patch(&format!("{}-manual", svc_name(i)), &pp, &Patch::Apply(&slice)).await.expect("slice");
    }
    // The observer talks to server 1, the syncers to server 0 (the peer's connection
    // manager reaches only the first server: all three share 127.0.0.1).
    let observer = Passing::start(&consul_client(ctx, 1), w.services);
    let logs = std::env::temp_dir().join(format!("concord-bench-peer-{}", std::process::id()));
    std::fs::create_dir_all(&logs).expect("log dir");

    let syncers = [
        Syncer::Concord,
        Syncer::Peer { bin: peer.to_path_buf(), write_interval: None },
        Syncer::Peer { bin: peer.to_path_buf(), write_interval: Some("1s") },
    ];
    let mut columns = Vec::new();
    for (k, syncer) in syncers.iter().enumerate() {
        let log = logs.join(format!("{k}.log"));
        let column = run_one(ctx, &w, &ns, grpc, syncer, &observer, &log).await;
        println!("  {column:?}");
        columns.push(column);
    }
    drop(observer);
    let _ = std::fs::remove_dir_all(&logs);
    print_table(&w, &columns);
}

fn concord_args(ns: &str) -> Vec<String> {
    ["controller", "--listen", "127.0.0.1:0", "--namespace", ns].map(String::from).to_vec()
}

fn peer_args(ctx: &Ctx<'_>, ns: &str, grpc: u16, write_interval: Option<&str>) -> Vec<String> {
    let http = ctx.consul.http_addr().rsplit(':').next().expect("port").to_string();
    let free = || testenv::free_port().expect("free port");
    let mut args = vec![
        "sync-catalog".to_string(),
        "-addresses=127.0.0.1".into(),
        format!("-http-port={http}"),
        format!("-grpc-port={grpc}"),
        format!("-kubeconfig={}", ctx.kube.kubeconfig_path().display()),
        // Kubernetes → Consul only, as concord's DiscoveryCluster here.
        "-to-consul=true".into(),
        "-to-k8s=false".into(),
        "-k8s-default-sync=true".into(),
        format!("-allow-k8s-namespace={ns}"),
        format!("-listen=127.0.0.1:{}", free()),
        format!("-metrics-port={}", free()),
        "-log-level=warn".into(),
    ];
    if let Some(interval) = write_interval {
        args.push(format!("-consul-write-interval={interval}"));
    }
    args
}

fn start(ctx: &Ctx<'_>, ns: &str, grpc: u16, syncer: &Syncer, log: &Path) -> Proc {
    let kubeconfig = ctx.kube.kubeconfig_path();
    match syncer {
        Syncer::Concord => {
            Proc::spawn("concord", Path::new(env!("CARGO_BIN_EXE_concord")), &concord_args(ns), kubeconfig, log)
        }
        Syncer::Peer { bin, write_interval } => {
            Proc::spawn("consul-k8s sync-catalog", bin, &peer_args(ctx, ns, grpc, *write_interval), kubeconfig, log)
        }
    }
}

/// One column: start, initial sync, changes, revert, steady window, restart, stop, clean.
async fn run_one(
    ctx: &Ctx<'_>,
    w: &Workload,
    ns: &str,
    grpc: u16,
    syncer: &Syncer,
    observer: &Passing,
    log: &Path,
) -> Column {
    let label = syncer.label();
    println!("{label}: starting (log {}); load {}", log.display(), crate::load());
    if let Syncer::Concord = syncer {
        crate::support::external_cluster(
            &ctx.client,
            ns,
            &ctx.consul.http_addrs(),
            Some(json!({"toConsul": {"enabled": true, "defaultSync": true, "allowNamespaces": [ns]}})),
        )
        .await;
    }
    let pp = PatchParams::apply("bench").force();
    let slice_api = Api::<EndpointSlice>::namespaced(ctx.client.clone(), ns);
    let started = Instant::now();
    let mut proc = start(ctx, ns, grpc, syncer, log);
    let initial_bound = Duration::from_secs(300);
    let initial = observer.wait_all(w.services, w.endpoints, initial_bound).await.map(|t| t - started);
    proc.assert_running();
    let mut column = Column {
        label: label.clone(),
        initial,
        changes: Vec::new(),
        lost_changes: 0,
        peak_mib: None,
        requests: None,
        by_path: BTreeMap::new(),
        restart: None,
    };
    let Some(initial) = initial else {
        println!("{label}: initial sync not done in {initial_bound:?}; column left incomplete");
        column.peak_mib = proc.peak_mib();
        proc.stop().await;
        clean(ctx, observer).await;
        return column;
    };
    println!("{label}: initial sync {:.2}s; load {}", initial.as_secs_f64(), crate::load());

    // Changes: endpoint 0 of Service i goes not ready, one a second.
    let changes = w.changes.min(w.services);
    let t0 = Instant::now();
    let waits = (0..changes).map(|i| {
        let (slice_api, pp) = (slice_api.clone(), pp.clone());
        async move {
            tokio::time::sleep_until((t0 + Duration::from_secs(i as u64)).into()).await;
            let sent = Instant::now();
            let slice = slice_json(ns, i, w.endpoints, Some(0));
            slice_api.patch(&format!("{}-manual", svc_name(i)), &pp, &Patch::Apply(&slice)).await.expect("patch");
            observer
                .wait_gone(i, &address(i, 0), syncer.change_bound())
                .await
                .map(|t| t.saturating_duration_since(sent))
        }
    });
    let results = futures::future::join_all(waits).await;
    column.lost_changes = results.iter().filter(|r| r.is_none()).count();
    column.changes = results.into_iter().flatten().collect();
    column.changes.sort();
    proc.assert_running();

    // Back to all ready, and everything passing again before the steady window.
    for i in 0..changes {
        let slice = slice_json(ns, i, w.endpoints, None);
        slice_api.patch(&format!("{}-manual", svc_name(i)), &pp, &Patch::Apply(&slice)).await.expect("patch");
    }
    if observer.wait_all(w.services, w.endpoints, syncer.change_bound()).await.is_none() {
        println!("{label}: not every instance passing again after the changes; steady and restart phases skipped");
        column.peak_mib = proc.peak_mib();
        proc.stop().await;
        clean(ctx, observer).await;
        return column;
    }

    // Steady: nothing changes; requests the Consul servers serve.
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().expect("http");
    let (requests, by_path) = requests_per_second(&http, &ctx.consul.http_addrs(), w.idle_intervals).await;
    column.requests = Some(requests);
    column.by_path = by_path;
    proc.assert_running();

    // Restart: SIGTERM, start again at once, watch `?passing`.
    let before = proc.peak_mib();
    proc.stop().await;
    let from = Instant::now();
    let mut proc = start(ctx, ns, grpc, syncer, log);
    let window = w.restart_extra + initial;
    tokio::time::sleep(window).await;
    proc.assert_running();
    let to = Instant::now();
    column.restart = Some(observer.dips(w.services, w.endpoints, from, to));
    column.peak_mib = match (before, proc.peak_mib()) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    proc.stop().await;
    clean(ctx, observer).await;
    column
}

/// Removes what a syncer registered (its stopped process cannot) and waits until the
/// observer sees nothing passing.
async fn clean(ctx: &Ctx<'_>, observer: &Passing) {
    let c = consul_client(ctx, 0);
    deregister_nodes(&c, &["k8s-sync"]).await;
    if !observer.wait_empty(Duration::from_secs(30)).await {
        panic!("the catalog still lists synced instances 30 s after removing the sync nodes");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

fn fmt_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    }
}

fn ratio(peer: f64, ours: f64) -> String {
    if ours <= 0.0 { "(concord 0)".into() } else { format!("{:.1}x", peer / ours) }
}

fn print_table(w: &Workload, cols: &[Column]) {
    let ours = &cols[0];
    println!();
    println!(
        "peer comparison, {} Services x {} endpoints ({} instances); ratios are consul-k8s / concord; load {}",
        w.services,
        w.endpoints,
        w.services * w.endpoints,
        crate::load()
    );
    let mut header = "| metric | concord |".to_string();
    let mut rule = "|---|---|".to_string();
    for c in &cols[1..] {
        header.push_str(&format!(" {} | ratio |", c.label));
        rule.push_str("---|---|");
    }
    println!("{header}");
    println!("{rule}");
    let row = |name: &str, cell: &dyn Fn(&Column) -> (String, Option<f64>)| {
        let (text, value) = cell(ours);
        let mut line = format!("| {name} | {text} |");
        for c in &cols[1..] {
            let (t, v) = cell(c);
            let r = match (v, value) {
                (Some(v), Some(o)) => ratio(v, o),
                _ => String::new(),
            };
            line.push_str(&format!(" {t} | {r} |"));
        }
        println!("{line}");
    };
    row("initial sync (process start → all instances in `?passing`)", &|c| match c.initial {
        Some(d) => (fmt_duration(d), Some(d.as_secs_f64())),
        None => ("not done in 300 s".into(), None),
    });
    for (name, p) in [("change p50 (not ready → gone from `?passing`)", 0.5), ("change p99", 0.99)] {
        row(name, &|c| match percentile(&c.changes, p) {
            Some(d) => {
                let lost = if c.lost_changes > 0 { format!(" ({} not seen)", c.lost_changes) } else { String::new() };
                (format!("{}{lost}", fmt_duration(d)), Some(d.as_secs_f64()))
            }
            None => ("-".into(), None),
        });
    }
    row("peak RSS (VmHWM)", &|c| match c.peak_mib {
        Some(m) => (format!("{m:.1} MiB"), Some(m)),
        None => ("?".into(), None),
    });
    row("steady HTTP requests/s to Consul", &|c| match c.requests {
        Some(r) => (format!("{r:.2}"), Some(r)),
        None => ("-".into(), None),
    });
    let full = w.services * w.endpoints;
    row("restart: healthy instances missing from `?passing`", &|c| match c.restart {
        None => ("-".into(), None),
        Some(r) if r.min_instances == full => (format!("none (watched {:.0} s)", r.window.as_secs_f64()), None),
        Some(r) => (
            format!(
                "yes: down to {}/{} instances, {}/{} Services whole, missing for {:.1} s of {:.0} s",
                r.min_instances,
                full,
                r.min_services,
                w.services,
                r.missing.as_secs_f64(),
                r.window.as_secs_f64()
            ),
            None,
        ),
    });
    println!();
    for c in cols {
        let paths: Vec<String> = c.by_path.iter().map(|(p, r)| format!("{p} {r:.2}/s")).collect();
        println!("steady requests of {}: {}", c.label, if paths.is_empty() { "none".into() } else { paths.join(", ") });
    }
}
