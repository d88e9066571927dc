//! KVConfig against a real kube-apiserver and real three-server Consul clusters: the
//! controller runs in-process, watching one namespace per test; Consul is checked with
//! concord's own client. Keys live under a per-test prefix on the shared cluster.
mod support;

use bytes::Bytes;
use concord::consul::{Client, ClientConfig, ConsulIndex, KvWriteOptions, QueryOptions};
use concord::controllers::kv_config::plan::owner_flags;
use concord::resources::{KVConfig, find_condition, types};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{RunningController, eventually};
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(30);

struct Env {
    kube: kube::Client,
    ns: String,
    consul: Client,
    controller: RunningController,
}

/// A namespace with a DiscoveryCluster pointing at `cluster` and a controller watching it.
async fn setup(cluster: &ConsulCluster) -> Env {
    support::sweep::capture_logs();
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace("kv").await;
    support::external_cluster(&kube, &ns, &cluster.http_addrs(), None).await;
    let controller = support::start_controller(kube.clone(), &ns, &[]).await;
    let consul = Client::new(ClientConfig::new(cluster.http_addrs())).expect("consul client");
    Env { kube, ns, consul, controller }
}

impl Env {
    fn api(&self) -> Api<KVConfig> {
        Api::namespaced(self.kube.clone(), &self.ns)
    }

    /// Unique per test: the namespace name.
    fn prefix(&self, rest: &str) -> String {
        format!("{}/{rest}", self.ns)
    }

    async fn apply(&self, name: &str, spec: Value) {
        let obj = json!({
            "apiVersion": "concord.io/v1alpha1", "kind": "KVConfig",
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        self.api()
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj))
            .await
            .expect("KVConfig applied");
    }

    /// Waits for `Synced` with `status` and `reason` on the object's current generation.
    async fn synced(&self, name: &str, status: &str, reason: &str) -> KVConfig {
        let api = self.api();
        eventually(&format!("{name} Synced={status} ({reason})"), WAIT, || async {
            let obj = api.get(name).await.ok()?;
            let c = find_condition(&obj.status.as_ref()?.conditions, types::SYNCED)?;
            (c.status == status && c.reason == reason && c.observed_generation == obj.metadata.generation)
                .then_some(obj.clone())
        })
        .await
    }

    async fn get(&self, key: &str) -> Option<(Bytes, u64, ConsulIndex)> {
        let pair = self.consul.kv_get(key, &QueryOptions::default()).await.expect("kv get").value?;
        Some((pair.value, pair.flags, pair.modify_index))
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        self.consul.kv_keys(prefix, None, &QueryOptions::default()).await.expect("kv keys").value
    }

    async fn hand_edit(&self, key: &str, value: &str) {
        self.consul.kv_put(key, value.to_string(), &KvWriteOptions::default()).await.expect("hand edit");
    }

    async fn events_with_reason(&self, reason: &str) -> usize {
        let events: Api<Event> = Api::namespaced(self.kube.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.expect("events");
        list.items.iter().filter(|e| e.reason.as_deref() == Some(reason)).count()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.controller.addr))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}

fn seed_production() -> Value {
    json!({
        "database": { "host": "database.service.consul", "port": 5432, "pool": { "min": 2, "max": 20 } },
        "features": { "newCheckout": true, "recommendations": false },
        "upstreams": ["api", "cache"]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_seed_json_round_trips_and_a_change_wakes_a_blocking_query_once() {
    let env = setup(testenv::shared_consul().await).await;
    let prefix = env.prefix("config/app/");
    let spec = |doc: Value| {
        json!({ "prefix": prefix, "prune": true, "keys": [
            { "key": "log-level", "value": "info" },
            { "key": "production", "json": doc },
        ]})
    };
    env.apply("app-config", spec(seed_production())).await;
    let obj = env.synced("app-config", "True", "Synced").await;
    assert_eq!(obj.status.as_ref().and_then(|s| s.keys_in_sync), Some(2));

    let key = format!("{prefix}production");
    let (value, flags, index) = env.get(&key).await.expect("production key written");
    let stored: Value = serde_json::from_slice(&value).expect("stored value is JSON");
    assert_eq!(stored, seed_production());
    assert!(!value.contains(&b' '), "canonical JSON has no whitespace");
    assert_eq!(flags, owner_flags(&env.ns, "app-config"));

    // The object changes: a blocking query on the key wakes once, with the new value.
    let mut changed = seed_production();
    changed["database"]["pool"]["max"] = json!(50);
    let watcher = {
        let consul = env.consul.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut at = index;
            for _ in 0..20 {
                let resp = consul
                    .kv_get(&key, &QueryOptions::blocking(at, Duration::from_secs(20)))
                    .await
                    .expect("blocking get");
                if resp.index != at {
                    return resp;
                }
                at = resp.index;
            }
            panic!("key never changed");
        })
    };
    env.apply("app-config", spec(changed.clone())).await;
    let woke = tokio::time::timeout(WAIT, watcher).await.expect("woke in time").expect("watch task");
    let pair = woke.value.expect("key still there");
    assert_eq!(serde_json::from_slice::<Value>(&pair.value).expect("JSON"), changed);
    env.synced("app-config", "True", "Synced").await;
    // Exactly once: nothing writes the key again (a second blocking query times out).
    let again =
        env.consul.kv_get(&key, &QueryOptions::blocking(woke.index, Duration::from_secs(2))).await.expect("get");
    assert_eq!(again.value.map(|p| p.modify_index), Some(pair.modify_index));
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_enforce_reverts_a_hand_edit_with_an_event_and_a_metric() {
    let env = setup(testenv::shared_consul().await).await;
    let prefix = env.prefix("enforce/");
    env.apply("enforced", json!({ "prefix": prefix, "keys": [{ "key": "mode", "value": "strict" }] })).await;
    env.synced("enforced", "True", "Synced").await;
    let key = format!("{prefix}mode");

    env.hand_edit(&key, "loose").await;
    let edited_at = Instant::now();
    eventually("the hand edit reverted", WAIT, || async {
        let (value, flags, _) = env.get(&key).await?;
        (value == "strict" && flags == owner_flags(&env.ns, "enforced")).then_some(())
    })
    .await;
    eprintln!("reverted after {:?}", edited_at.elapsed());
    eventually("a DriftCorrected event", WAIT, || async {
        (env.events_with_reason("DriftCorrected").await > 0).then_some(())
    })
    .await;
    let metrics = env.metrics().await;
    assert!(metrics.contains(r#"concord_drift_corrections_total{controller="kvconfig"} 1"#), "{metrics}");
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_report_lists_drifted_keys_and_leaves_consul_alone() {
    let env = setup(testenv::shared_consul().await).await;
    let prefix = env.prefix("report/");
    let spec = json!({ "prefix": prefix, "driftPolicy": "Report", "keys": [
        { "key": "a", "value": "1" }, { "key": "b", "value": "2" },
    ]});
    env.apply("reported", spec).await;
    env.synced("reported", "True", "Synced").await;
    env.hand_edit(&format!("{prefix}b"), "by hand").await;
    let api = env.api();
    let obj = eventually("Drifted=True", WAIT, || async {
        let obj = api.get("reported").await.ok()?;
        let status = obj.status.clone()?;
        find_condition(&status.conditions, types::DRIFTED).filter(|c| c.status == "True").map(|_| obj)
    })
    .await;
    let status = obj.status.expect("status");
    assert_eq!(status.drifted_keys, vec![format!("{prefix}b")]);
    assert_eq!(status.keys_in_sync, Some(1));
    assert_eq!(env.get(&format!("{prefix}b")).await.expect("kept").0, "by hand");
    assert!(env.events_with_reason("DriftDetected").await > 0);
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_prune_removes_only_owned_keys_and_delete_removes_the_rest() {
    let env = setup(testenv::shared_consul().await).await;
    let prefix = env.prefix("prune/");
    let keys = |names: &[&str]| names.iter().map(|k| json!({ "key": k, "value": "v" })).collect::<Vec<_>>();
    env.apply("pruned", json!({ "prefix": prefix, "prune": true, "keys": keys(&["a", "b", "c"]) })).await;
    env.synced("pruned", "True", "Synced").await;
    env.hand_edit(&format!("{prefix}by-hand"), "not concord's").await;

    env.apply("pruned", json!({ "prefix": prefix, "prune": true, "keys": keys(&["a"]) })).await;
    env.synced("pruned", "True", "Synced").await;
    let expected = vec![format!("{prefix}a"), format!("{prefix}by-hand")];
    eventually("b and c pruned", WAIT, || async { (env.keys(&prefix).await == expected).then_some(()) }).await;

    env.api().delete("pruned", &DeleteParams::default()).await.expect("delete");
    eventually("object gone", WAIT, || async { env.api().get_opt("pruned").await.ok()?.is_none().then_some(()) }).await;
    assert_eq!(env.keys(&prefix).await, vec![format!("{prefix}by-hand")], "only the owned key was deleted");
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_keys_from_a_config_map_and_a_secret_follow_their_changes() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let env = setup(testenv::shared_consul().await).await;
    let prefix = env.prefix("sources/");
    let cms: Api<ConfigMap> = Api::namespaced(env.kube.clone(), &env.ns);
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &env.ns);
    let apply_cm = |data: Value| {
        let cms = cms.clone();
        let ns = env.ns.clone();
        async move {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns}, "data": data});
            cms.patch("settings", &PatchParams::apply("test").force(), &Patch::Apply(&cm)).await.expect("ConfigMap");
        }
    };
    apply_cm(json!({"timeout": "5s", "retries": "3"})).await;
    // The Secret opts in to being copied (concord.io/kv-source), as its owner would.
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": env.ns, "labels": {"concord.io/kv-source": "true"}},
        "stringData": {"db-password": "hunter2"}});
    secrets.patch("creds", &PatchParams::apply("test").force(), &Patch::Apply(&secret)).await.expect("Secret");

    env.apply(
        "from-sources",
        json!({ "prefix": prefix, "prune": true,
            "fromConfigMap": [{ "name": "settings", "keyPrefix": "http" }],
            "fromSecret": [{ "name": "creds" }] }),
    )
    .await;
    env.synced("from-sources", "True", "Synced").await;
    let value = |k: &str| {
        let key = format!("{prefix}{k}");
        let env = &env;
        async move { env.get(&key).await.map(|(v, _, _)| String::from_utf8_lossy(&v).into_owned()) }
    };
    assert_eq!(value("http/timeout").await.as_deref(), Some("5s"));
    assert_eq!(value("http/retries").await.as_deref(), Some("3"));
    assert_eq!(value("db-password").await.as_deref(), Some("hunter2"));

    // A change of the ConfigMap reaches Consul without touching the KVConfig; a key the
    // ConfigMap no longer has is pruned.
    apply_cm(json!({"timeout": "9s"})).await;
    eventually("ConfigMap change reaches Consul", WAIT, || async {
        (value("http/timeout").await.as_deref() == Some("9s") && value("http/retries").await.is_none()).then_some(())
    })
    .await;

    // The Secret's value never shows in the object's status or Events.
    let obj = env.api().get("from-sources").await.expect("object");
    assert!(!serde_json::to_string(&obj).expect("json").contains("hunter2"), "secret value leaked into the object");
    let events: Api<Event> = Api::namespaced(env.kube.clone(), &env.ns);
    let list = events.list(&ListParams::default()).await.expect("events");
    assert!(
        !serde_json::to_string(&list.items).expect("json").contains("hunter2"),
        "secret value leaked into an Event"
    );

    // A missing source is reported, and nothing under the prefix is removed for it.
    env.apply(
        "from-sources",
        json!({ "prefix": prefix, "prune": true,
            "fromConfigMap": [{ "name": "settings", "keyPrefix": "http" }, { "name": "absent" }],
            "fromSecret": [{ "name": "creds" }] }),
    )
    .await;
    let obj = env.synced("from-sources", "False", "SourceNotFound").await;
    let c = find_condition(&obj.status.as_ref().expect("status").conditions, types::SYNCED).expect("Synced");
    assert!(c.message.contains("absent"), "{}", c.message);
    assert_eq!(value("http/timeout").await.as_deref(), Some("9s"), "nothing removed while a source is missing");
    // The sweep: the Secret's value is in no log line, Event or status.
    let planted = support::sweep::Known { what: "the Secret value copied to KV".into(), value: "hunter2".into() };
    support::sweep::assert_no_leaks(&env.kube, &env.ns, &[planted]).await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_retain_keeps_keys_and_releases_ownership() {
    let env = setup(testenv::shared_consul().await).await;
    let prefix = env.prefix("retain/");
    env.apply("kept", json!({ "prefix": prefix, "deletionPolicy": "Retain", "keys": [{ "key": "a", "value": "1" }] }))
        .await;
    env.synced("kept", "True", "Synced").await;
    env.api().delete("kept", &DeleteParams::default()).await.expect("delete");
    eventually("object gone", WAIT, || async { env.api().get_opt("kept").await.ok()?.is_none().then_some(()) }).await;
    let (value, flags, _) = env.get(&format!("{prefix}a")).await.expect("retained");
    assert_eq!((value, flags), (Bytes::from_static(b"1"), 0));
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_second_object_claiming_a_key_reports_the_conflict_and_neither_flaps() {
    let env = setup(testenv::shared_consul().await).await;
    let prefix = env.prefix("shared/");
    env.apply("first", json!({ "prefix": prefix, "keys": [{ "key": "x", "value": "first" }] })).await;
    env.synced("first", "True", "Synced").await;
    env.apply(
        "second",
        json!({ "prefix": prefix, "keys": [
            { "key": "x", "value": "second" }, { "key": "y", "value": "second" },
        ]}),
    )
    .await;
    let second = env.synced("second", "False", "KeyConflict").await;
    let message = find_condition(&second.status.expect("status").conditions, types::SYNCED).expect("c").message.clone();
    assert!(message.contains(&format!("{prefix}x")), "{message}");
    env.synced("first", "True", "Synced").await;
    let (value, _, index) = env.get(&format!("{prefix}x")).await.expect("x");
    assert_eq!(value, "first");
    assert_eq!(env.get(&format!("{prefix}y")).await.expect("y written").0, "second");
    // Neither flaps: x stays untouched for a blocking-query wait.
    let later = env.consul.kv_get(&format!("{prefix}x"), &QueryOptions::blocking(index, Duration::from_secs(2))).await;
    assert_eq!(later.expect("get").value.map(|p| p.modify_index), Some(index));
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_oversized_value_is_refused_with_nothing_written() {
    let env = setup(testenv::shared_consul().await).await;
    let prefix = env.prefix("big/");
    let big = "x".repeat(512 * 1024 + 1);
    env.apply(
        "big",
        json!({ "prefix": prefix, "keys": [
            { "key": "small", "value": "fine" }, { "key": "huge", "value": big },
        ]}),
    )
    .await;
    let obj = env.synced("big", "False", "ValueTooLarge").await;
    let message = find_condition(&obj.status.expect("status").conditions, types::SYNCED).expect("c").message.clone();
    assert!(message.contains(&format!("{prefix}huge")) && message.contains("524289"), "{message}");
    assert!(env.keys(&prefix).await.is_empty(), "nothing partially written");
    // Exactly at the limit is fine (a single check-and-set PUT, too big for a transaction).
    let limit = "y".repeat(512 * 1024);
    env.apply(
        "big",
        json!({ "prefix": prefix, "keys": [
            { "key": "small", "value": "fine" }, { "key": "huge", "value": limit },
        ]}),
    )
    .await;
    env.synced("big", "True", "Synced").await;
    assert_eq!(env.get(&format!("{prefix}huge")).await.expect("written").0.len(), 512 * 1024);
    env.controller.stop().await;
}

fn many_keys(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({ "key": format!("k/{i:05}"), "value": format!("value-{i}") })).collect()
}

async fn assert_all_keys(env: &Env, prefix: &str, n: usize) {
    let pairs = env.consul.kv_list(prefix, &QueryOptions::default()).await.expect("list").value;
    assert_eq!(pairs.len(), n);
    for p in pairs {
        let i: usize = p.key.rsplit('/').next().and_then(|s| s.parse().ok()).expect("numbered key");
        assert_eq!(p.value_str(), Some(format!("value-{i}").as_str()), "{}", p.key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_applies_5000_keys() {
    let env = setup(testenv::shared_consul().await).await;
    let prefix = env.prefix("many/");
    let started = Instant::now();
    env.apply("many", json!({ "prefix": prefix, "keys": many_keys(5000) })).await;
    let obj = env.synced("many", "True", "Synced").await;
    eprintln!("5000 keys in sync after {:?}", started.elapsed());
    assert_eq!(obj.status.and_then(|s| s.keys_in_sync), Some(5000));
    assert_all_keys(&env, &prefix, 5000).await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvconfig_leader_sigkill_during_apply_loses_nothing() {
    let cluster = ConsulCluster::start(ConsulOptions::default()).await.expect("own Consul cluster");
    let env = setup(&cluster).await;
    let prefix = env.prefix("crash/");
    let n = 3000;
    env.apply("crash", json!({ "prefix": prefix, "keys": many_keys(n) })).await;
    // Kill the leader once the apply has started writing.
    eventually("the apply started", WAIT, || async {
        let keys = env.consul.kv_keys(&prefix, None, &QueryOptions::default()).await.ok()?.value;
        (!keys.is_empty()).then_some(())
    })
    .await;
    let leader = cluster.leader_index().await.expect("a leader");
    cluster.kill(leader);
    let obj = env.synced("crash", "True", "Synced").await;
    assert_eq!(obj.status.and_then(|s| s.keys_in_sync), Some(n as i64));
    assert_all_keys(&env, &prefix, n).await;
    env.controller.stop().await;
}

/// Benchmark, not a test: `cargo test --release --test kvconfig -- --ignored --nocapture`.
/// Prints the apply time of 5,000 keys (3 runs) and the edit→revert latency
/// distribution of 200 hand edits under Enforce; BENCHMARKS.md records the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn bench_kvconfig_apply_5000_keys_and_edit_to_revert() {
    let env = setup(testenv::shared_consul().await).await;
    for run in 0..3 {
        let prefix = env.prefix(&format!("bench-{run}/"));
        let name = format!("bench-{run}");
        let started = Instant::now();
        env.apply(&name, json!({ "prefix": prefix, "keys": many_keys(5000) })).await;
        env.synced(&name, "True", "Synced").await;
        eprintln!("BENCH apply 5000 keys run {run}: {:?}", started.elapsed());
        assert_all_keys(&env, &prefix, 5000).await;
    }
    let prefix = env.prefix("bench-drift/");
    env.apply("drift", json!({ "prefix": prefix, "keys": [{ "key": "k", "value": "declared" }] })).await;
    env.synced("drift", "True", "Synced").await;
    let key = format!("{prefix}k");
    let mut latencies = Vec::new();
    for i in 0..200 {
        env.hand_edit(&key, &format!("edit-{i}")).await;
        let edited = Instant::now();
        let mut index = env.get(&key).await.expect("key").2;
        for _ in 0..100 {
            let resp = env.consul.kv_get(&key, &QueryOptions::blocking(index, WAIT)).await.expect("get");
            let pair = resp.value.expect("key");
            if pair.value == "declared" {
                break;
            }
            index = resp.index;
        }
        latencies.push(edited.elapsed());
    }
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    eprintln!(
        "BENCH edit->revert n=200 p50 {:?} p90 {:?} p99 {:?} max {:?}",
        pct(50),
        pct(90),
        pct(99),
        latencies[199]
    );
    env.controller.stop().await;
}
