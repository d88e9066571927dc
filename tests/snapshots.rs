//! ConsulSnapshot and scheduled snapshots against a real kube-apiserver and a real
//! three-server Consul (the controller in-process, one namespace per test). Saves go to
//! a temporary directory (the "controller's volume"); S3 runs against a local
//! S3-compatible server (`moto_server`, installed by scripts/testenv.sh).
mod support;

use concord::consul::{Client, ClientConfig, KvWriteOptions, QueryOptions};
use concord::resources::{ConsulSnapshot, DiscoveryCluster, find_condition, types};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use support::{RunningController, eventually};

const WAIT: Duration = Duration::from_secs(40);

/// One test at a time on the shared Consul: two of these tests restore it (a restore
/// replaces the whole state and holds up other snapshot requests), and the others' saves
/// and outcomes must not depend on when that happens. A full-suite run once saw the
/// `s3-down` save still running after 40 s beside a restore; alone it takes a second.
static SHARED_CONSUL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Env {
    kube: kube::Client,
    ns: String,
    consul: Client,
    /// The snapshot root; this namespace's own snapshots go under `<root>/<ns>/`.
    root: PathBuf,
    /// `<root>/<ns>/manual`: where this namespace's ConsulSnapshots may save and restore.
    dir: PathBuf,
    _controller: RunningController,
    /// Declared last: released after the controller stopped.
    _exclusive: tokio::sync::MutexGuard<'static, ()>,
}

async fn setup(prefix: &str, extra_flags: &[&str]) -> Env {
    let exclusive = SHARED_CONSUL.lock().await;
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let consul_cluster = testenv::shared_consul().await;
    let ns = kube_env.create_namespace(prefix).await;
    support::external_cluster(&kube, &ns, &consul_cluster.http_addrs(), None).await;
    let controller = support::start_controller(kube.clone(), &ns, extra_flags).await;
    let consul = Client::new(ClientConfig::new(consul_cluster.http_addrs())).expect("consul client");
    let root = std::env::temp_dir().join(format!("concord-snapshots-{}-{ns}", std::process::id()));
    let dir = root.join(&ns).join("manual");
    std::fs::create_dir_all(&dir).expect("snapshot dir");
    Env { kube, ns, consul, root, dir, _controller: controller, _exclusive: exclusive }
}

impl Env {
    fn api(&self) -> Api<ConsulSnapshot> {
        Api::namespaced(self.kube.clone(), &self.ns)
    }

    async fn create(&self, name: &str, spec: serde_json::Value) {
        let obj: ConsulSnapshot = serde_json::from_value(json!({
            "apiVersion": "concord.io/v1alpha1", "kind": "ConsulSnapshot",
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        }))
        .expect("snapshot object");
        self.api().create(&PostParams::default(), &obj).await.expect("created");
    }

    /// Waits until `Complete` has `want_reason`; on timeout, says what it was instead.
    async fn outcome(&self, name: &str, want_reason: &str) -> ConsulSnapshot {
        let start = std::time::Instant::now();
        let mut last = None;
        while start.elapsed() < WAIT {
            if let Ok(s) = self.api().get(name).await {
                let c = s.status.as_ref().and_then(|st| find_condition(&st.conditions, types::COMPLETE)).cloned();
                if c.as_ref().is_some_and(|c| c.reason == want_reason) {
                    return s;
                }
                last = c.map(|c| (c.reason, c.message));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name}: Complete reason {want_reason} not reached in {WAIT:?}; last {last:?}");
    }

    async fn kv(&self, key: &str) -> Option<String> {
        let got = self.consul.kv_get(key, &QueryOptions::default()).await.expect("kv get").value?;
        got.value_str().map(str::to_string)
    }

    async fn put(&self, key: &str, value: &str) {
        self.consul.kv_put(key, value.to_string(), &KvWriteOptions::default()).await.expect("kv put");
    }
}

fn complete(s: &ConsulSnapshot) -> (String, String, String) {
    let c = find_condition(&s.status.as_ref().expect("status").conditions, types::COMPLETE).expect("Complete");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_change_restore_brings_the_old_value_back_and_a_corrupt_copy_is_refused_first() {
    let env = setup("snap-roundtrip", &[]).await;
    let key = format!("snaptest/{}/color", env.ns);
    env.put(&key, "blue").await;

    let file = env.dir.join("s1.snap");
    env.create("s1", json!({ "action": "Save", "location": format!("file://{}", file.display()) })).await;
    let saved = env.outcome("s1", "Saved").await;
    let status = saved.status.clone().expect("status");
    let bytes = std::fs::read(&file).expect("snapshot file");
    let sha = format!("{:x}", Sha256::digest(&bytes));
    assert_eq!(status.size, Some(bytes.len() as i64));
    assert_eq!(status.sha256.as_deref(), Some(sha.as_str()));
    assert!(status.completion_time.is_some());
    let sidecar = std::fs::read_to_string(env.dir.join("s1.snap.sha256")).expect("sidecar");
    assert_eq!(sidecar, format!("{sha}  s1.snap\n"));

    env.put(&key, "green").await;

    // One flipped byte in a copy (sidecar copied along): refused before Consul sees a byte.
    let mut corrupt = bytes.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    std::fs::write(env.dir.join("bad.snap"), &corrupt).expect("corrupt copy");
    std::fs::write(env.dir.join("bad.snap.sha256"), &sidecar).expect("sidecar copy");
    env.create("r-bad", json!({ "action": "Restore", "location": env.dir.join("bad.snap").display().to_string() }))
        .await;
    let refused = env.outcome("r-bad", "ChecksumMismatch").await;
    let (ok, _, msg) = complete(&refused);
    assert_eq!(ok, "False");
    assert!(msg.contains(&sha), "the message names the expected checksum: {msg}");
    assert_eq!(env.kv(&key).await.as_deref(), Some("green"), "Consul's data untouched by a refused restore");

    // A wrong spec.sha256 is refused the same way, even for the intact file.
    env.create(
        "r-wrong-sum",
        json!({ "action": "Restore", "location": file.display().to_string(), "sha256": "0".repeat(64) }),
    )
    .await;
    env.outcome("r-wrong-sum", "ChecksumMismatch").await;
    assert_eq!(env.kv(&key).await.as_deref(), Some("green"));

    env.create("r1", json!({ "action": "Restore", "location": format!("file://{}", file.display()) })).await;
    let restored = env.outcome("r1", "Restored").await;
    assert_eq!(complete(&restored).0, "True");
    assert_eq!(restored.status.as_ref().and_then(|s| s.sha256.clone()).as_deref(), Some(sha.as_str()));
    eventually("the old value is back", WAIT, || async {
        (env.kv(&key).await.as_deref() == Some("blue")).then_some(())
    })
    .await;

    // One-shot: a finished object is not redone on resync (an annotation change wakes it).
    env.put(&key, "red").await;
    let patch = json!({ "metadata": { "annotations": { "poke": "1" } } });
    env.api().patch("r1", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("poke");
    let again = env.api().get("r1").await.expect("r1");
    assert_eq!(again.status, restored.status);
    // A later write still stands: give the controller a blocking round trip to act, then check.
    env.create("s2", json!({ "action": "Save", "location": env.dir.join("s2.snap").display().to_string() })).await;
    env.outcome("s2", "Saved").await;
    assert_eq!(env.kv(&key).await.as_deref(), Some("red"), "a finished restore was not redone");
    let _ = std::fs::remove_dir_all(&env.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_in_the_complete_condition() {
    // A closed port on loopback: the S3 store cannot be reached. From testenv, not bind(0):
    // the moto test running beside this one once got the same ephemeral port for its server.
    let closed = testenv::free_port().expect("free port");
    let endpoint = format!("http://127.0.0.1:{closed}");
    let env = setup(
        "snap-bad",
        &[
            "--s3-endpoint",
            &endpoint,
            "--s3-access-key-id",
            "test",
            "--s3-secret-access-key",
            "test",
            "--s3-retry-seconds",
            "2",
        ],
    )
    .await;

    env.create("missing", json!({ "action": "Restore", "location": env.dir.join("nope.snap").display().to_string() }))
        .await;
    let (ok, _, msg) = complete(&env.outcome("missing", "SnapshotNotFound").await);
    assert_eq!(ok, "False");
    assert!(msg.contains("nope.snap"), "{msg}");

    std::fs::write(env.dir.join("nosum.snap"), b"not a snapshot").expect("file");
    env.create("nosum", json!({ "action": "Restore", "location": env.dir.join("nosum.snap").display().to_string() }))
        .await;
    env.outcome("nosum", "ChecksumUnknown").await;

    let s3_down = format!("s3://backups/{}/consul/a.snap", env.ns);
    env.create("s3-down", json!({ "action": "Save", "location": s3_down })).await;
    let (ok, _, msg) = complete(&env.outcome("s3-down", "StoreUnreachable").await);
    assert_eq!(ok, "False");
    assert!(msg.contains(&s3_down), "{msg}");

    // Scope: a namespace neither restores another namespace's snapshot nor saves over
    // it; nothing is read or written (the other file stays as it was).
    let theirs = env.root.join("other-ns").join("consul").join("theirs.snap");
    std::fs::create_dir_all(theirs.parent().expect("parent")).expect("their dir");
    std::fs::write(&theirs, b"their snapshot").expect("their file");
    env.create("steal", json!({ "action": "Restore", "location": theirs.display().to_string() })).await;
    let (ok, _, msg) = complete(&env.outcome("steal", "LocationNotGranted").await);
    assert_eq!(ok, "False");
    assert!(msg.contains(&format!("<root>/{}/", env.ns)), "{msg}");
    env.create("overwrite", json!({ "action": "Save", "location": theirs.display().to_string() })).await;
    env.outcome("overwrite", "LocationNotGranted").await;
    env.create("flat", json!({ "action": "Save", "location": env.root.join("flat.snap").display().to_string() })).await;
    env.outcome("flat", "LocationNotGranted").await;
    assert_eq!(std::fs::read(&theirs).expect("still there"), b"their snapshot");
    assert!(!env.root.join("flat.snap").exists(), "nothing written outside the namespace's folder");

    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.kube.clone(), &env.ns);
    eventually("Warning events with the reasons", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let reasons: BTreeSet<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        ["SnapshotNotFound", "ChecksumUnknown", "StoreUnreachable", "LocationNotGranted"]
            .iter()
            .all(|r| reasons.contains(*r))
            .then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(&env.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_keeps_exactly_retain_snapshots_and_their_files() {
    let env = setup("snap-sched", &[]).await;
    let dcs: Api<DiscoveryCluster> = Api::namespaced(env.kube.clone(), &env.ns);
    let patch = json!({ "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "spec": { "snapshots": { "every": "1s", "retain": 2, "location": format!("file://{}", env.root.display()) } } });
    dcs.patch("consul", &PatchParams::apply("snap-test").force(), &Patch::Apply(&patch)).await.expect("schedule");

    // A look-alike: someone's own ConsulSnapshot with the schedule's labels, pointing at
    // a file that is not this cluster's. Pruning must never delete that file.
    let foreign = env.root.join("other-ns").join("consul-0000").join("keep.snap");
    std::fs::create_dir_all(foreign.parent().expect("parent")).expect("foreign dir");
    std::fs::write(&foreign, b"another cluster's snapshot").expect("foreign file");
    let decoy: ConsulSnapshot = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ConsulSnapshot",
        "metadata": { "name": "consul-19700101-000000", "namespace": env.ns,
                      "labels": { "concord.io/snapshot-schedule": "consul", "concord.io/snapshot-slot": "0" } },
        "spec": { "action": "Restore", "location": foreign.display().to_string() },
    }))
    .expect("decoy");
    env.api().create(&PostParams::default(), &decoy).await.expect("decoy created");
    let uid = dcs.get("consul").await.expect("dc").metadata.uid.expect("uid");
    let own = env.root.join(&env.ns).join(format!("consul-{uid}"));

    let api = env.api();
    let seen = std::sync::Mutex::new(BTreeSet::new());
    let decoy_name = Some("consul-19700101-000000");
    eventually("at least 4 scheduled saves, then exactly 2 kept with 2 files", Duration::from_secs(45), || async {
        let list = api.list(&ListParams::default().labels("concord.io/snapshot-schedule=consul")).await.ok()?;
        let mut seen = seen.lock().ok()?;
        seen.extend(
            list.items
                .iter()
                .filter(|s| s.metadata.name.as_deref() != decoy_name)
                .map(|s| s.metadata.name.clone().unwrap_or_default()),
        );
        let done: Vec<&ConsulSnapshot> = list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| find_condition(&st.conditions, types::COMPLETE))
                    .is_some_and(|c| c.status == "True")
            })
            .collect();
        let pending = list.items.iter().filter(|s| s.metadata.name.as_deref() != decoy_name).count() - done.len();
        let files: Vec<String> = std::fs::read_dir(&own)
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".snap"))
            .collect();
        (seen.len() >= 4 && done.len() == 2 && pending == 0 && files.len() == 2).then_some(())
    })
    .await;
    // The kept files are the kept objects' files, each with its sidecar.
    let list = api.list(&ListParams::default().labels("concord.io/snapshot-schedule=consul")).await.expect("list");
    for s in list.items.iter().filter(|s| s.metadata.name.as_deref() != decoy_name) {
        let path = PathBuf::from(s.spec.location.trim_start_matches("file://"));
        assert!(path.starts_with(&own), "{} is in the cluster's own folder {}", path.display(), own.display());
        assert!(path.exists(), "{} kept", path.display());
        assert!(PathBuf::from(format!("{}.sha256", path.display())).exists());
    }
    assert!(foreign.exists(), "retention never deletes another cluster's file");
    let _ = std::fs::remove_dir_all(&env.root);
}

/// S3 through a real S3-compatible server: `moto_server` (PyPI `moto[server]`), which
/// `scripts/testenv.sh` installs next to the other test servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_save_and_restore_through_a_local_s3_server() {
    let moto = testenv::binary("moto_server").expect("moto_server (scripts/testenv.sh installs it)");
    let port = testenv::free_port().expect("free port");
    let mut child = std::process::Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(std::env::temp_dir().join("concord-moto.log"))
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .spawn()
        .expect("moto_server starts");
    let _kill = KillOnDrop(&mut child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("moto answers", Duration::from_secs(30), || async {
        http.put(format!("{endpoint}/backups")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    let env = setup(
        "snap-s3",
        &[
            "--s3-endpoint",
            &endpoint,
            "--s3-access-key-id",
            "test",
            "--s3-secret-access-key",
            "test",
            "--s3-region",
            "us-east-1",
        ],
    )
    .await;
    let key = format!("snaptest/{}/s3", env.ns);
    env.put(&key, "before").await;
    env.create("s3-save", json!({ "action": "Save", "location": format!("s3://backups/{}/consul/s1.snap", env.ns) }))
        .await;
    let saved = env.outcome("s3-save", "Saved").await;
    let sha = saved.status.as_ref().and_then(|s| s.sha256.clone()).expect("sha256");
    // Read back with signed requests, as any S3 client would.
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("backups")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .expect("S3 client");
    let read = |key: String| {
        let s3 = &s3;
        async move {
            use object_store::ObjectStore;
            let got = s3.get(&object_store::path::Path::from(key)).await.expect("object exists");
            got.bytes().await.expect("object body")
        }
    };
    let object = read(format!("{}/consul/s1.snap", env.ns)).await;
    assert!(!object.is_empty());
    assert_eq!(format!("{:x}", Sha256::digest(&object)), sha);
    let sidecar = String::from_utf8(read(format!("{}/consul/s1.snap.sha256", env.ns)).await.to_vec()).expect("text");
    assert!(sidecar.starts_with(&sha), "{sidecar}");
    env.put(&key, "after").await;
    env.create(
        "s3-restore",
        json!({ "action": "Restore", "location": format!("s3://backups/{}/consul/s1.snap", env.ns) }),
    )
    .await;
    env.outcome("s3-restore", "Restored").await;
    eventually("old value back from S3", WAIT, || async {
        (env.kv(&key).await.as_deref() == Some("before")).then_some(())
    })
    .await;
    env.create(
        "s3-missing",
        json!({ "action": "Restore", "location": format!("s3://backups/{}/consul/none.snap", env.ns) }),
    )
    .await;
    env.outcome("s3-missing", "SnapshotNotFound").await;
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `concord_reconciliations_total` of one controller, read from the running controller.
async fn reconciliations(controller: &RunningController, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", controller.addr))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body");
    let prefix = format!("concord_reconciliations_total{{controller=\"{name}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_save_waits_out_its_backoff_instead_of_retrying_at_once() {
    // A Consul with ACLs on and not yet bootstrapped (what the chart's first scheduled
    // snapshot meets): Consul refuses the anonymous save at once, a transient failure.
    // Each attempt writes `Running` and then its outcome to the status; those writes must
    // not trigger the next attempt (before the fix they did, many times a second, as seen
    // on kind before the ACL bootstrap).
    let consul = testenv::ConsulCluster::start(testenv::ConsulOptions {
        servers: 1,
        acl: true,
        bootstrap_acl: false,
        ..Default::default()
    })
    .await
    .expect("consul with ACLs, not bootstrapped");
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace("snap-backoff").await;
    support::external_cluster(&kube, &ns, &consul.http_addrs(), None).await;
    let root = std::env::temp_dir().join(format!("concord-snapshots-{}-{ns}", std::process::id()));
    std::fs::create_dir_all(root.join(&ns).join("manual")).expect("snapshot dir");
    let controller = support::start_controller(kube.clone(), &ns, &[]).await;
    let api: Api<ConsulSnapshot> = Api::namespaced(kube.clone(), &ns);
    let location = root.join(&ns).join("manual").join("a.snap").display().to_string();
    let obj: ConsulSnapshot = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ConsulSnapshot",
        "metadata": { "name": "unreachable", "namespace": ns },
        "spec": { "action": "Save", "location": location },
    }))
    .expect("snapshot object");
    api.create(&PostParams::default(), &obj).await.expect("created");
    eventually("Complete=False ConsulUnreachable", WAIT, || async {
        let s = api.get("unreachable").await.ok()?;
        let c = find_condition(&s.status?.conditions, types::COMPLETE)?.clone();
        (c.status == "False" && c.reason == "ConsulUnreachable").then_some(())
    })
    .await;
    let first = reconciliations(&controller, "consulsnapshot").await;
    let window = Duration::from_secs(8);
    tokio::time::sleep(window).await;
    let attempts = reconciliations(&controller, "consulsnapshot").await - first;
    eprintln!("consulsnapshot: {attempts} attempts in {window:?} after the first failure");
    // Backoff 1, 2, 4 s (±20%) after the first failures: at most 4 more attempts in 8 s
    // (3 plus slack for the attempt in flight); before the fix there were hundreds.
    assert!(attempts >= 1, "it retries a transient failure");
    assert!(attempts <= 4, "{attempts} attempts in {window:?}: the backoff is not honoured");
    controller.stop().await;
    let _ = std::fs::remove_dir_all(&root);
}
