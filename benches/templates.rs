//! Templates benchmark (`cargo bench --bench templates`; report in BENCHMARKS.md):
//! latency from a Consul KV write to (a) the rendered file on disk, for `concord render`
//! and consul-template side by side on the same Consul, the same template and the same
//! writes, and (b) the ConfigMap updated by the ConfigTemplate controller; plus the RSS of
//! both renderers. consul-template comes from `scripts/bench-tools.sh`; without it the
//! side-by-side part is skipped and says so.
#[path = "../tests/support/mod.rs"]
mod support;

use concord::consul::{Client, ClientConfig, KvWriteOptions};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 200;
const TIMEOUT: Duration = Duration::from_secs(10);

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<32} n={:<4} p50={:>8.2?} p99={:>8.2?} max={:>8.2?}",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples.last().copied().unwrap_or_default()
    );
}

fn holds(path: &Path, expected: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s == expected)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let consul_cluster = testenv::shared_consul().await;
    let addrs = consul_cluster.http_addrs();
    let consul = Client::new(ClientConfig::new(addrs.clone())).expect("consul client");
    let key = format!("bench/templates/{}/value", std::process::id());
    consul.kv_put(&key, "init".to_string(), &KvWriteOptions::default()).await.expect("put");

    let dir = std::env::temp_dir().join(format!("concord-bench-templates-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    // The same text is a valid Handlebars and Go template.
    let src = dir.join("value.tpl");
    std::fs::write(&src, format!("value={{{{key \"{key}\"}}}}\n")).expect("template");
    let ours = dir.join("concord.out");
    let theirs = dir.join("consul-template.out");

    let concord = Proc(
        Command::new(env!("CARGO_BIN_EXE_concord"))
            .args([
                "render",
                "--consul-addr",
                &addrs[0],
                "--template",
                &format!("{}:{}", src.display(), ours.display()),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("concord render"),
    );
    let bench_dir = std::env::var_os("CONCORD_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/concord-testenv/bench")
    });
    let ct_bin = bench_dir.join("consul-template");
    let consul_template = if ct_bin.exists() {
        let addr = addrs[0].trim_start_matches("http://").to_string();
        Some(Proc(
            Command::new(&ct_bin)
                .args([
                    "-consul-addr",
                    &addr,
                    "-log-level",
                    "err",
                    "-template",
                    &format!("{}:{}", src.display(), theirs.display()),
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("consul-template"),
        ))
    } else {
        println!("SKIPPED consul-template: {} not found (run scripts/bench-tools.sh)", ct_bin.display());
        None
    };

    // The controller, in this process, against the shared API server.
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace("bench-ctpl").await;
    support::external_cluster(&kube, &ns, &addrs, None).await;
    let _controller = support::start_controller(kube.clone(), &ns, &[]).await;
    let ct = serde_json::json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ConfigTemplate",
        "metadata": { "name": "bench", "namespace": ns },
        "spec": {
            "template": { "inline": format!("value={{{{key \"{key}\"}}}}\n") },
            "output": { "configMap": { "name": "bench-out", "key": "v" } },
        },
    });
    let cts: Api<concord::resources::ConfigTemplate> = Api::namespaced(kube.clone(), &ns);
    cts.patch("bench", &PatchParams::apply("bench").force(), &Patch::Apply(&ct)).await.expect("ConfigTemplate");
    let cms: Api<ConfigMap> = Api::namespaced(kube.clone(), &ns);
    let (cm_tx, mut cm_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let cm_watch = tokio::spawn(async move {
        let mut stream = watcher(cms, watcher::Config::default().fields("metadata.name=bench-out")).boxed();
        while let Some(Ok(event)) = stream.next().await {
            if let watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) = event
                && let Some(v) = cm.data.and_then(|mut d| d.remove("v"))
            {
                let _ = cm_tx.send((v, Instant::now()));
            }
        }
    });

    // Wait until all three show the initial value.
    let initial = "value=init\n";
    let start = Instant::now();
    while !(holds(&ours, initial) && (consul_template.is_none() || holds(&theirs, initial))) {
        assert!(start.elapsed() < Duration::from_secs(30), "renderers did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let (v, _) =
            tokio::time::timeout(Duration::from_secs(30), cm_rx.recv()).await.expect("ConfigMap").expect("watch");
        if v == initial {
            break;
        }
    }

    let (mut ours_lat, mut theirs_lat, mut cm_lat) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let value = format!("v{i}");
        let expected = format!("value={value}\n");
        let t0 = Instant::now();
        consul.kv_put(&key, value, &KvWriteOptions::default()).await.expect("put");
        let (mut ours_done, mut theirs_done, mut cm_done) =
            (None, consul_template.is_none().then_some(()).map(|_| t0), None);
        // Poll the files every 0.5 ms (the resolution of the file numbers).
        while ours_done.is_none() || theirs_done.is_none() || cm_done.is_none() {
            assert!(t0.elapsed() < TIMEOUT, "round {i} timed out");
            if ours_done.is_none() && holds(&ours, &expected) {
                ours_done = Some(Instant::now());
            }
            if theirs_done.is_none() && holds(&theirs, &expected) {
                theirs_done = Some(Instant::now());
            }
            while let Ok((v, at)) = cm_rx.try_recv() {
                if v == expected {
                    cm_done = Some(at);
                }
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        ours_lat.push(ours_done.expect("set") - t0);
        if consul_template.is_some() {
            theirs_lat.push(theirs_done.expect("set") - t0);
        }
        cm_lat.push(cm_done.expect("set") - t0);
    }

    println!("templates benchmark: {ROUNDS} KV writes, one key, 3-server Consul on loopback");
    report("KV -> file (concord render)", ours_lat);
    if consul_template.is_some() {
        report("KV -> file (consul-template)", theirs_lat);
    }
    report("KV -> ConfigMap (controller)", cm_lat);
    let (rss, hwm) = rss_kib(concord.0.id());
    println!("RSS concord render:    {rss} KiB now, {hwm} KiB peak");
    if let Some(ct) = &consul_template {
        let (rss, hwm) = rss_kib(ct.0.id());
        println!("RSS consul-template:   {rss} KiB now, {hwm} KiB peak");
    }
    cm_watch.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
