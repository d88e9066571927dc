//! `make demo`: concord's main job on one machine, without Docker. Starts etcd,
//! kube-apiserver and kube-controller-manager, a three-server Consul, installs the CRDs,
//! runs `concord controller` against them, applies `examples/` (the external
//! DiscoveryCluster is pointed at the local Consul), prints what happened, and stays up
//! until Ctrl-C. Every server dies with this process, so nothing is left running.
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope, pinned_kind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use testenv::{ConsulCluster, ConsulOptions, KubeEnv, KubeOptions};

const NAMESPACE: &str = "demo";
const MANAGER: &str = "concord-demo";

struct Args {
    concord: PathBuf,
    examples: PathBuf,
    /// Exit after printing the report instead of waiting for Ctrl-C (used by the tests).
    once: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut concord = None;
    let mut examples = PathBuf::from("examples");
    let mut once = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--concord" => concord = it.next().map(PathBuf::from),
            "--examples" => examples = it.next().map(PathBuf::from).ok_or("--examples needs a directory")?,
            "--once" => once = true,
            other => {
                return Err(format!("unknown argument {other:?} (expected --concord PATH [--examples DIR] [--once])"));
            }
        }
    }
    let concord = concord.ok_or("--concord PATH (the concord binary) is required")?;
    if !concord.is_file() {
        return Err(format!("concord binary not found at {} (run `cargo build --bin concord`)", concord.display()));
    }
    Ok(Args { concord, examples, once })
}

/// The controller child process; killed when dropped.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn step(what: &str) -> Instant {
    eprint!("» {what} ... ");
    Instant::now()
}

fn done(start: Instant, detail: &str) {
    eprintln!(
        "ok ({:.1}s){}",
        start.elapsed().as_secs_f64(),
        if detail.is_empty() { String::new() } else { format!(": {detail}") }
    );
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nconcord-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;

    let t = step("starting etcd, kube-apiserver and kube-controller-manager on 127.0.0.1");
    let kube = KubeEnv::start(KubeOptions { controller_manager: true, ..KubeOptions::default() })
        .await
        .map_err(|e| e.to_string())?;
    done(t, &kube.server_url());

    let t = step("starting a three-server Consul cluster on 127.0.0.1");
    let consul = ConsulCluster::start(ConsulOptions::default()).await.map_err(|e| e.to_string())?;
    done(t, &consul.http_addr());

    let client = kube.client().await;
    let t = step("installing the concord CRDs (concord crds)");
    let crds = Command::new(&args.concord).arg("crds").output().map_err(|e| format!("cannot run concord crds: {e}"))?;
    if !crds.status.success() {
        return Err(format!("concord crds failed: {}", String::from_utf8_lossy(&crds.stderr).trim()));
    }
    let applied = apply_yaml(&client, None, &String::from_utf8_lossy(&crds.stdout), |_| {}).await?;
    done(t, &format!("{} CRDs", applied.len()));

    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns_obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    ns.patch(NAMESPACE, &PatchParams::apply(MANAGER), &Patch::Apply(&ns_obj)).await.map_err(|e| e.to_string())?;

    let t = step("starting concord controller");
    let kubeconfig = kube.kubeconfig_path().to_path_buf();
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let log = kube.work_dir().join("concord-controller.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let child = Command::new(&args.concord)
        .args(["controller", "--listen", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start concord controller: {e}"))?;
    let controller = Controller(child);
    wait_ready(port).await?;
    done(t, &format!("http://127.0.0.1:{port}/metrics, log {}", log.display()));

    let t = step(&format!("applying {} into namespace {NAMESPACE}", args.examples.display()));
    let consul_addrs = consul.http_addrs().join(",");
    let mut objects = Vec::new();
    for path in yaml_files(&args.examples)? {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let point_at_local_consul = |doc: &mut serde_json::Value| {
            if doc["kind"] == "DiscoveryCluster" && doc["spec"]["external"].is_object() {
                doc["spec"]["external"]["address"] = consul_addrs.clone().into();
            }
        };
        objects.extend(apply_yaml(&client, Some(NAMESPACE), &text, point_at_local_consul).await?);
    }
    done(t, &format!("{} objects", objects.len()));

    let t = step("waiting for the controller to report on every object");
    let reports = wait_for_status(&client, &objects, Duration::from_secs(30)).await;
    done(t, "");
    print_report(&reports, &consul).await;

    if args.once {
        drop(controller);
        return Ok(());
    }
    eprintln!(
        "\nkubeconfig: {}\nConsul UI/API: {}\nPress Ctrl-C to stop everything.",
        kubeconfig.display(),
        consul.http_addr()
    );
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping ...");
    drop(controller);
    Ok(())
}

async fn wait_ready(port: u16) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let start = Instant::now();
    let mut last = String::from("no answer");
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(resp) = reqwest::get(&url).await {
            if resp.status().is_success() {
                return Ok(());
            }
            last = resp.text().await.unwrap_or_default().trim().to_string();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("concord controller not ready after 60s ({last})"))
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// One applied object.
struct Applied {
    resource: ApiResource,
    namespaced: bool,
    name: String,
}

/// Server-side applies every document of a YAML stream, resolving each kind through discovery.
async fn apply_yaml(
    client: &kube::Client,
    namespace: Option<&str>,
    text: &str,
    mut edit: impl FnMut(&mut serde_json::Value),
) -> Result<Vec<Applied>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let mut value: serde_json::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| format!("invalid YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        edit(&mut value);
        let obj: DynamicObject = serde_json::from_value(value).map_err(|e| format!("not a Kubernetes object: {e}"))?;
        let types = obj.types.clone().ok_or("object without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
        let (resource, caps) =
            pinned_kind(client, &gvk).await.map_err(|e| format!("unknown kind {}: {e}", types.kind))?;
        let name = obj.metadata.name.clone().ok_or("object without a name")?;
        let namespaced = caps.scope == Scope::Namespaced;
        let api: Api<DynamicObject> = match (namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (true, None) => Api::default_namespaced_with(client.clone(), &resource),
            (false, _) => Api::all_with(client.clone(), &resource),
        };
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&obj))
            .await
            .map_err(|e| format!("{} {name} refused: {e}", types.kind))?;
        out.push(Applied { resource, namespaced, name });
    }
    Ok(out)
}

/// What the controller said about one object.
struct Report {
    kind: String,
    name: String,
    conditions: Vec<(String, String, String, String)>,
}

async fn wait_for_status(client: &kube::Client, objects: &[Applied], timeout: Duration) -> Vec<Report> {
    let start = Instant::now();
    loop {
        let mut reports = Vec::new();
        let mut pending = 0;
        for o in objects.iter().filter(|o| o.resource.group == "concord.io") {
            let api: Api<DynamicObject> = if o.namespaced {
                Api::namespaced_with(client.clone(), NAMESPACE, &o.resource)
            } else {
                Api::all_with(client.clone(), &o.resource)
            };
            let conditions: Vec<(String, String, String, String)> = match api.get(&o.name).await {
                Ok(obj) => obj.data["status"]["conditions"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .map(|c| {
                                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                                (s("type"), s("status"), s("reason"), s("message"))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            if conditions.is_empty() {
                pending += 1;
            }
            reports.push(Report { kind: o.resource.kind.clone(), name: o.name.clone(), conditions });
        }
        if pending == 0 || start.elapsed() > timeout {
            return reports;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn print_report(reports: &[Report], consul: &ConsulCluster) {
    println!("\n{:<18} {:<20} {:<12} {:<8} {:<26} MESSAGE", "KIND", "NAME", "CONDITION", "STATUS", "REASON");
    for r in reports {
        if r.conditions.is_empty() {
            println!(
                "{:<18} {:<20} {:<12} {:<8} {:<26} no controller has reported on it",
                r.kind, r.name, "-", "-", "-"
            );
        }
        for (t, s, reason, msg) in &r.conditions {
            let msg: String = msg.chars().take(70).collect();
            println!("{:<18} {:<20} {:<12} {:<8} {:<26} {msg}", r.kind, r.name, t, s, reason);
        }
    }
    let http = reqwest::Client::new();
    if let Ok(resp) = http.get(format!("{}/v1/catalog/services", consul.http_addr())).send().await
        && let Ok(services) = resp.json::<serde_json::Map<String, serde_json::Value>>().await
    {
        let names: Vec<&String> = services.keys().collect();
        println!("\nConsul catalog services: {}", names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
    }
    if let Ok(resp) = http.get(format!("{}/v1/kv/?keys", consul.http_addr())).send().await
        && let Ok(keys) = resp.json::<Vec<String>>().await
    {
        println!("Consul KV keys: {}", if keys.is_empty() { "(none)".to_string() } else { keys.join(", ") });
    }
}
