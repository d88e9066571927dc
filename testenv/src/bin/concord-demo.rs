//! `make demo`: concord's main job on one machine, without Docker. Starts etcd,
//! kube-apiserver and kube-controller-manager, a three-server Consul, installs the CRDs,
//! runs `concord controller` against them, applies `examples/` (the external
//! DiscoveryCluster is pointed at the local Consul), publishes a few services on each
//! side (Kubernetes Services with EndpointSlices, Consul services on "VM" nodes), prints
//! what the controller reported and a table of what got synced in each direction, and
//! stays up until Ctrl-C. Every server dies with this process, so nothing is left running.
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope, pinned_kind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use testenv::{ConsulCluster, ConsulOptions, KubeEnv, KubeOptions};

const NAMESPACE: &str = "demo";
/// The ServiceAccount Consul reviews pod logins with (`--auth-reviewer-service-account`).
const REVIEWER: &str = "auth-reviewer";
const MANAGER: &str = "concord-demo";
/// Secret (in the demo namespace) with the Consul management token concord uses.
const TOKEN_SECRET: &str = "consul-token";

/// An HTTP client for the demo's own reads and writes in Consul (ACLs are on).
fn consul_http(token: &str) -> Result<reqwest::Client, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(token).map_err(|e| format!("invalid Consul token: {e}"))?;
    headers.insert("X-Consul-Token", value);
    reqwest::Client::builder().default_headers(headers).build().map_err(|e| e.to_string())
}

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

    let t = step("starting a three-server Consul cluster on 127.0.0.1 (ACLs on, default deny)");
    let opts = ConsulOptions { acl: true, bootstrap_acl: true, ..ConsulOptions::default() };
    let consul = ConsulCluster::start(opts).await.map_err(|e| e.to_string())?;
    let token = consul.management_token().ok_or("Consul started without a management token")?;
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
    // The token concord uses for the local Consul (the external DiscoveryCluster's
    // tokenSecretRef points here).
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": TOKEN_SECRET, "namespace": NAMESPACE}, "stringData": {"token": token}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NAMESPACE)
        .patch(TOKEN_SECRET, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret))
        .await
        .map_err(|e| format!("Secret {TOKEN_SECRET}: {e}"))?;
    let consul_http = consul_http(&token)?;
    // L7 intentions (examples/serviceintention-api.yaml: paths and methods) need the
    // destination's protocol to be http; an operator declares that once in Consul.
    let defaults = serde_json::json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"});
    let resp = consul_http
        .put(format!("{}/v1/config", consul.http_addr()))
        .json(&defaults)
        .send()
        .await
        .map_err(|e| format!("writing service-defaults for api: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("writing service-defaults for api: HTTP {}", resp.status()));
    }

    // The ServiceAccount whose short-lived token Consul's kubernetes auth method reviews
    // logins with (examples/aclauthmethod-pod-login.yaml; the chart makes the same one).
    let reviewer = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {REVIEWER}, namespace: {NAMESPACE}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: concord-demo-auth-reviewer}}\n\
         rules: [{{apiGroups: [\"\"], resources: [serviceaccounts], verbs: [get]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: concord-demo-auth-reviewer}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: concord-demo-auth-reviewer}}\n\
         subjects: [{{kind: ServiceAccount, name: {REVIEWER}, namespace: {NAMESPACE}}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: concord-demo-auth-delegator}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}}\n\
         subjects: [{{kind: ServiceAccount, name: {REVIEWER}, namespace: {NAMESPACE}}}]\n"
    );
    apply_yaml(&client, Some(NAMESPACE), &reviewer, |_| {}).await?;

    let t = step("starting concord controller");
    let kubeconfig = kube.kubeconfig_path().to_path_buf();
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let log = kube.work_dir().join("concord-controller.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let child = Command::new(&args.concord)
        .args(["controller", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--auth-reviewer-service-account", &format!("{NAMESPACE}/{REVIEWER}")])
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
    // Snapshots go to the demo's own temporary directory, not the host's /var/lib.
    let snapshot_dir = kube.work_dir().join("snapshots");
    let mut objects = Vec::new();
    for path in yaml_files(&args.examples)? {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let localize = |doc: &mut serde_json::Value| {
            if doc["kind"] == "DiscoveryCluster" && doc["spec"]["external"].is_object() {
                doc["spec"]["external"]["address"] = consul_addrs.clone().into();
                doc["spec"]["external"]["tokenSecretRef"] = serde_json::json!({"name": TOKEN_SECRET, "key": "token"});
            }
            // Files are scoped as <root>/<namespace>/<folder>/<file>: keep the folder and
            // the file, in the demo's namespace.
            if doc["kind"] == "ConsulSnapshot"
                && let Some(location) = doc["spec"]["location"].as_str()
            {
                let mut segments = location.rsplit('/');
                let file = segments.next().unwrap_or("snapshot.snap").to_string();
                let folder = segments.next().unwrap_or("manual").to_string();
                let path = snapshot_dir.join(NAMESPACE).join(folder).join(file);
                doc["spec"]["location"] = format!("file://{}", path.display()).into();
            }
        };
        objects.extend(apply_yaml(&client, Some(NAMESPACE), &text, localize).await?);
    }
    done(t, &format!("{} objects", objects.len()));

    let t = step("publishing services on both sides (Kubernetes Services, Consul services on VM nodes)");
    publish_demo_services(&client, &consul, &consul_http).await?;
    done(t, &format!("{} in Kubernetes, {} in Consul", K8S_SERVICES.len(), CONSUL_SERVICES.len()));

    let t = step("waiting for the controller to report on every object");
    let reports = wait_for_status(&client, &objects, Duration::from_secs(60)).await;
    done(t, "");
    print_report(&reports, &consul, &consul_http).await;
    let t = step("waiting for the catalog sync in both directions");
    let rows = wait_for_sync(&client, &consul, &consul_http, Duration::from_secs(30)).await;
    done(t, &format!("{}/{} synced", rows.iter().filter(|r| r.synced).count(), rows.len()));
    print_sync_table(&rows);

    if args.once {
        drop(controller);
        return Ok(());
    }
    eprintln!(
        "\nkubeconfig: {}\nConsul UI/API: {} (token in Secret {NAMESPACE}/{TOKEN_SECRET})\nPress Ctrl-C to stop everything.",
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
    // The DiscoveryCluster first, then the objects that use it (the order a GitOps tool
    // gives dependencies): an object applied before its cluster exists waits for its
    // next retry (exponential backoff) instead of starting at once.
    files.sort_by_key(|p| {
        (!p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("discoverycluster")), p.clone())
    });
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

/// The condition that says an object did its job, per kind: the report's success column.
const PRIMARY: [&str; 4] = ["Synced", "Rendered", "Complete", "Available"];

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
            // Settled when the object's main condition is True. One that waits on another
            // (a role on its policy) or on Consul is retried by the controller, so keep
            // polling until the timeout, then report whatever it says.
            let main: Vec<&String> =
                conditions.iter().filter(|(t, ..)| PRIMARY.contains(&t.as_str())).map(|(_, s, ..)| s).collect();
            if conditions.is_empty() || (!main.is_empty() && !main.iter().any(|s| *s == "True")) {
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

async fn print_report(reports: &[Report], consul: &ConsulCluster, http: &reqwest::Client) {
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

/// Kubernetes Services the demo publishes (annotated `concord.io/sync: "true"`): name,
/// port, ready endpoint addresses. The cluster has no kubelet, so they are selector-less
/// with hand-made EndpointSlices. `api` is the upstream the nginx ConfigTemplate renders.
const K8S_SERVICES: &[(&str, i32, &[&str])] =
    &[("api", 8080, &["10.0.1.1", "10.0.1.2"]), ("web", 80, &["10.0.2.1", "10.0.2.2", "10.0.2.3"])];

/// Consul services on VM nodes (outside Kubernetes): name, node, address, port.
const CONSUL_SERVICES: &[(&str, &str, &str, u16)] =
    &[("billing", "vm-billing-1", "192.168.50.10", 9090), ("legacy-db", "vm-db-1", "192.168.50.20", 5432)];

async fn publish_demo_services(
    client: &kube::Client,
    consul: &ConsulCluster,
    http: &reqwest::Client,
) -> Result<(), String> {
    let pp = PatchParams::apply(MANAGER).force();
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    for (name, port, addrs) in K8S_SERVICES {
        let svc = serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE, "annotations": {"concord.io/sync": "true"}},
            "spec": {"ports": [{"name": "http", "port": port}]}});
        services.patch(name, &pp, &Patch::Apply(&svc)).await.map_err(|e| format!("Service {name}: {e}"))?;
        let slice = serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-demo"), "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": addrs.iter().map(|a| serde_json::json!({"addresses": [a], "conditions": {"ready": true}}))
                .collect::<Vec<_>>()});
        slices
            .patch(&format!("{name}-demo"), &pp, &Patch::Apply(&slice))
            .await
            .map_err(|e| format!("EndpointSlice {name}: {e}"))?;
    }
    for (name, node, addr, port) in CONSUL_SERVICES {
        let body = serde_json::json!({
            "Node": node, "Address": addr,
            "Service": {"ID": format!("{name}-1"), "Service": name, "Address": addr, "Port": port},
            "Check": {"CheckID": format!("{name}-alive"), "Name": "alive", "Status": "passing",
                "ServiceID": format!("{name}-1")},
        });
        let resp = http
            .put(format!("{}/v1/catalog/register", consul.http_addr()))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("registering {name} in Consul: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("registering {name} in Consul: HTTP {}", resp.status()));
        }
    }
    Ok(())
}

/// One line of the sync table.
struct SyncRow {
    direction: &'static str,
    source: String,
    target: String,
    detail: String,
    synced: bool,
}

/// Polls both sides until every published service arrived on the other (or `timeout`).
async fn wait_for_sync(
    client: &kube::Client,
    consul: &ConsulCluster,
    http: &reqwest::Client,
    timeout: Duration,
) -> Vec<SyncRow> {
    let start = Instant::now();
    loop {
        let rows = sync_rows(client, consul, http).await;
        if rows.iter().all(|r| r.synced) || start.elapsed() > timeout {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn sync_rows(client: &kube::Client, consul: &ConsulCluster, http: &reqwest::Client) -> Vec<SyncRow> {
    let mut rows = Vec::new();
    for (name, _, addrs) in K8S_SERVICES {
        let url = format!("{}/v1/health/service/{name}", consul.http_addr());
        let entries: Vec<serde_json::Value> = match http.get(&url).send().await {
            Ok(resp) => resp.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let passing = entries
            .iter()
            .filter(|e| e["Checks"].as_array().is_some_and(|cs| cs.iter().all(|c| c["Status"] == "passing")))
            .count();
        rows.push(SyncRow {
            direction: "Kubernetes → Consul",
            source: format!("Service {NAMESPACE}/{name}"),
            target: format!("{name}.service.consul"),
            detail: format!("{} of {} endpoints, {passing} passing", entries.len(), addrs.len()),
            synced: entries.len() == addrs.len() && passing == addrs.len(),
        });
    }
    // The example DiscoveryCluster mirrors Consul services with the prefix `consul-`.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    for (name, node, addr, port) in CONSUL_SERVICES {
        let k8s_name = format!("consul-{name}");
        let exists = matches!(services.get_opt(&k8s_name).await, Ok(Some(_)));
        let selector = kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={k8s_name}"));
        let addresses: Vec<String> = match slices.list(&selector).await {
            Ok(list) => list.items.into_iter().flat_map(|s| s.endpoints).flat_map(|e| e.addresses).collect(),
            Err(_) => Vec::new(),
        };
        rows.push(SyncRow {
            direction: "Consul → Kubernetes",
            source: format!("{name} on {node} ({addr}:{port})"),
            target: format!("Service {NAMESPACE}/{k8s_name}"),
            detail: if exists {
                format!("{} endpoint(s): {}", addresses.len(), addresses.join(", "))
            } else {
                "-".into()
            },
            synced: exists && addresses.iter().any(|a| a == addr),
        });
    }
    rows
}

fn print_sync_table(rows: &[SyncRow]) {
    println!("\nCatalog sync");
    println!("{:<21} {:<44} {:<28} {:<8} DETAIL", "DIRECTION", "FROM", "TO", "SYNCED");
    for r in rows {
        let synced = if r.synced { "yes" } else { "NO" };
        println!("{:<21} {:<44} {:<28} {:<8} {}", r.direction, r.source, r.target, synced, r.detail);
    }
}
