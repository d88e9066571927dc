//! The config-entry kinds on the generic controller, against a real kube-apiserver and
//! the shared three-server Consul: per kind create, update, drift revert and delete
//! (one table of cases), then refusals with their own reasons and the retry once the
//! dependency arrives, import of unmanaged entries (own cluster), and what Consul's
//! discovery chain compiles the resilience examples to. Each test uses its own service
//! names (the namespace is part of them), so tests never share entries.
mod support;

use concord::consul::QueryOptions;
use concord::controllers::config_entry::entry::OWNER_META;
use concord::resources::{find_condition, types};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::eventually;
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(30);

use support::ExternalEnv as Env;

async fn setup(cluster: &ConsulCluster, sync: Option<Value>) -> Env {
    support::external_env(cluster, sync, "ce").await
}

/// `(kind, plural, consul kind)` of each config-entry resource.
const KINDS: &[(&str, &str, &str)] = &[
    ("ServiceDefaults", "servicedefaults", "service-defaults"),
    ("ServiceResolver", "serviceresolvers", "service-resolver"),
    ("ServiceRouter", "servicerouters", "service-router"),
    ("ServiceSplitter", "servicesplitters", "service-splitter"),
    ("ProxyDefaults", "proxydefaults", "proxy-defaults"),
    ("Mesh", "meshes", "mesh"),
    ("ExportedServices", "exportedservices", "exported-services"),
];

/// The kinds named like their service (the others have one entry per cluster).
const PER_SERVICE: usize = 4;

fn consul_kind(kind: &str) -> &'static str {
    KINDS.iter().find(|k| k.0 == kind).map(|k| k.2).expect("known kind")
}

impl Env {
    fn api(&self, kind: &str) -> Api<DynamicObject> {
        let (_, plural, _) = KINDS.iter().find(|k| k.0 == kind).expect("known kind");
        let ar = ApiResource {
            group: "concord.io".into(),
            version: "v1alpha1".into(),
            api_version: "concord.io/v1alpha1".into(),
            kind: kind.into(),
            plural: (*plural).into(),
        };
        Api::namespaced_with(self.kube.clone(), &self.ns, &ar)
    }

    /// A service name only this test uses.
    fn svc(&self, name: &str) -> String {
        format!("{}-{name}", self.ns)
    }

    async fn apply(&self, kind: &str, name: &str, spec: Value) {
        let obj = json!({
            "apiVersion": "concord.io/v1alpha1", "kind": kind,
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        self.api(kind).patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.expect("applied");
    }

    /// Waits for `Synced=<status>` with `reason` at the object's generation; returns the
    /// message. A timeout names the condition last seen.
    async fn synced(&self, kind: &str, name: &str, status: &str, reason: &str) -> String {
        let api = self.api(kind);
        let start = std::time::Instant::now();
        let mut last = None;
        loop {
            if let Ok(obj) = api.get(name).await {
                let conditions: Vec<concord::resources::Condition> = obj
                    .data
                    .get("status")
                    .and_then(|s| s.get("conditions"))
                    .and_then(|c| serde_json::from_value(c.clone()).ok())
                    .unwrap_or_default();
                if let Some(c) = find_condition(&conditions, types::SYNCED) {
                    if c.status == status && c.reason == reason && c.observed_generation == obj.metadata.generation {
                        return c.message.clone();
                    }
                    last = Some(format!("{}/{}: {}", c.status, c.reason, c.message));
                }
            }
            assert!(
                start.elapsed() < WAIT,
                "{kind} {name}: no Synced={status} ({reason}) after {WAIT:?}; last seen {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn entry(&self, kind: &str, name: &str) -> Option<Value> {
        self.consul
            .config_entry_get::<Value>(consul_kind(kind), name, &QueryOptions::default())
            .await
            .expect("read")
            .value
    }

    async fn delete(&self, kind: &str, name: &str) {
        let api = self.api(kind);
        api.delete(name, &DeleteParams::default()).await.expect("delete");
        eventually(&format!("{kind} {name} deleted"), WAIT, || async {
            api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }

    async fn event(&self, reason: &str, object: &str) {
        support::event(&self.kube, &self.ns, object, reason, false).await
    }

    /// Writes a raw entry (as `consul config write` would), without concord's Meta.
    async fn write_raw(&self, entry: Value) {
        self.consul.config_entry_set(&entry, None).await.expect("raw entry written");
    }
}

/// Each JSON pointer of `expected` holds its value in `entry`.
fn assert_fields(entry: &Value, expected: &[(&str, Value)]) {
    for (pointer, want) in expected {
        let got = entry.pointer(pointer).unwrap_or(&Value::Null);
        let same = match (got.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => got == want,
        };
        assert!(same, "{pointer}: got {got}, want {want} in {entry}");
    }
}

/// One kind's lifecycle: create, update, a hand edit in Consul reverted, delete.
struct Case {
    kind: &'static str,
    create: Value,
    created: Vec<(&'static str, Value)>,
    update: Value,
    updated: Vec<(&'static str, Value)>,
    /// (pointer, value) a hand edit sets in Consul.
    hand_edit: (&'static str, Value),
}

async fn run_case(env: &Env, name: &str, case: Case) {
    let kind = case.kind;
    env.apply(kind, name, case.create).await;
    env.synced(kind, name, "True", "Synced").await;
    let entry = env.entry(kind, name).await.expect("entry created");
    assert_fields(&entry, &case.created);
    assert_eq!(entry["Meta"][OWNER_META], json!(format!("{}/{name}", env.ns)), "{kind}: owner mark");

    env.apply(kind, name, case.update).await;
    env.synced(kind, name, "True", "Synced").await;
    let entry = env.entry(kind, name).await.expect("entry updated");
    assert_fields(&entry, &case.updated);

    // A hand edit that also drops concord's Meta, as `consul config write` would.
    let mut edit = entry.clone();
    let (pointer, value) = case.hand_edit;
    *edit.pointer_mut(pointer).unwrap_or_else(|| panic!("{kind}: {pointer} in {entry}")) = value;
    edit.as_object_mut().expect("object").remove("Meta");
    let index = entry["ModifyIndex"].as_u64().expect("index");
    env.write_raw(edit).await;
    eventually(&format!("{kind}: the hand edit reverted"), WAIT, || async {
        let e = env.entry(kind, name).await?;
        (e["ModifyIndex"].as_u64()? > index + 1 && e["Meta"][OWNER_META].is_string()).then_some(e)
    })
    .await;
    let reverted = env.entry(kind, name).await.expect("entry");
    assert_fields(&reverted, &case.updated);
    env.event("DriftCorrected", name).await;

    env.delete(kind, name).await;
    assert!(env.entry(kind, name).await.is_none(), "{kind}: entry deleted with its object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_entries_create_update_revert_drift_and_delete_for_every_kind() {
    let env = setup(testenv::shared_consul().await, None).await;
    let api = env.svc("api");
    // Routers and splitters need protocol http: the service-defaults comes first here,
    // outside the table (its own case uses another service).
    env.apply("ServiceDefaults", &api, json!({ "protocol": "http" })).await;
    env.synced("ServiceDefaults", &api, "True", "Synced").await;

    let cases = vec![
        (
            env.svc("db"),
            Case {
                kind: "ServiceDefaults",
                create: json!({ "protocol": "http", "upstreamConfig": { "defaults": {
                    "limits": { "maxConnections": 10, "maxPendingRequests": 5 },
                    "passiveHealthCheck": { "interval": "10s", "maxFailures": 3 } } } }),
                created: vec![
                    ("/Protocol", json!("http")),
                    ("/UpstreamConfig/Defaults/Limits/MaxConnections", json!(10)),
                    ("/UpstreamConfig/Defaults/PassiveHealthCheck/MaxFailures", json!(3)),
                ],
                update: json!({ "protocol": "grpc", "upstreamConfig": { "defaults": {
                    "limits": { "maxConnections": 20 } } } }),
                updated: vec![
                    ("/Protocol", json!("grpc")),
                    ("/UpstreamConfig/Defaults/Limits/MaxConnections", json!(20)),
                    ("/UpstreamConfig/Defaults/PassiveHealthCheck", Value::Null),
                ],
                hand_edit: ("/Protocol", json!("tcp")),
            },
        ),
        (
            api.clone(),
            Case {
                kind: "ServiceResolver",
                create: json!({ "defaultSubset": "v1", "connectTimeout": "5s", "subsets": {
                    "v1": { "filter": "\"v1\" in Service.Tags" }, "v2": { "filter": "\"v2\" in Service.Tags" } } }),
                created: vec![
                    ("/DefaultSubset", json!("v1")),
                    ("/ConnectTimeout", json!("5s")),
                    ("/Subsets/v2/Filter", json!("\"v2\" in Service.Tags")),
                ],
                update: json!({ "defaultSubset": "v2", "connectTimeout": "1m", "subsets": {
                    "v1": { "filter": "\"v1\" in Service.Tags" }, "v2": { "filter": "\"v2\" in Service.Tags", "onlyPassing": true } },
                    "failover": { "v2": { "serviceSubset": "v1" } } }),
                updated: vec![
                    ("/DefaultSubset", json!("v2")),
                    ("/ConnectTimeout", json!("1m0s")),
                    ("/Subsets/v2/OnlyPassing", json!(true)),
                    ("/Failover/v2/ServiceSubset", json!("v1")),
                ],
                hand_edit: ("/DefaultSubset", json!("v1")),
            },
        ),
        (
            api.clone(),
            Case {
                kind: "ServiceRouter",
                create: json!({ "routes": [{ "match": { "http": { "pathPrefix": "/admin" } },
                    "destination": { "numRetries": 3, "retryOnConnectFailure": true } }] }),
                created: vec![
                    ("/Routes/0/Match/HTTP/PathPrefix", json!("/admin")),
                    ("/Routes/0/Destination/NumRetries", json!(3)),
                ],
                update: json!({ "routes": [{ "match": { "http": { "pathPrefix": "/admin", "methods": ["GET"] } },
                    "destination": { "numRetries": 5, "requestTimeout": "2s", "retryOnStatusCodes": [503] } }] }),
                updated: vec![
                    ("/Routes/0/Match/HTTP/Methods", json!(["GET"])),
                    ("/Routes/0/Destination/NumRetries", json!(5)),
                    ("/Routes/0/Destination/RequestTimeout", json!("2s")),
                    ("/Routes/0/Destination/RetryOnStatusCodes", json!([503])),
                ],
                hand_edit: ("/Routes/0/Destination/NumRetries", json!(1)),
            },
        ),
        (
            api.clone(),
            Case {
                kind: "ServiceSplitter",
                create: json!({ "splits": [{ "weight": 100 }] }),
                created: vec![("/Splits/0/Weight", json!(100))],
                update: json!({ "splits": [{ "weight": 90, "serviceSubset": "v1" }, { "weight": 10, "serviceSubset": "v2" }] }),
                updated: vec![("/Splits/0/Weight", json!(90)), ("/Splits/1/ServiceSubset", json!("v2"))],
                hand_edit: ("/Splits", json!([{ "Weight": 100, "ServiceSubset": "v1" }])),
            },
        ),
    ];
    // The resolver stays while the splitter uses its subsets; the order above keeps it
    // until the splitter case, so delete order is splitter, router, resolver.
    let mut done = Vec::new();
    for (name, case) in cases {
        let kind = case.kind;
        if kind == "ServiceResolver" {
            // Keep the resolver for the splitter: run its case on a twin service.
            run_case(&env, &env.svc("twin"), case).await;
            env.apply(
                kind,
                &name,
                json!({ "subsets": {
                "v1": { "filter": "\"v1\" in Service.Tags" }, "v2": { "filter": "\"v2\" in Service.Tags" } } }),
            )
            .await;
            env.synced(kind, &name, "True", "Synced").await;
        } else {
            run_case(&env, &name, case).await;
        }
        done.push(kind);
    }
    assert_eq!(done.len(), PER_SERVICE, "every per-service kind has a case");
    env.delete("ServiceResolver", &api).await;
    env.delete("ServiceDefaults", &api).await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_entries_create_update_revert_drift_and_delete() {
    // Its own cluster: proxy-defaults, mesh and exported-services are one per cluster,
    // and a global default protocol would change what other tests' entries mean.
    let cluster = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    let env = setup(&cluster, None).await;
    let api = env.svc("api");
    let cases = [
        (
            "global",
            Case {
                kind: "ProxyDefaults",
                create: json!({ "config": { "local_connect_timeout_ms": 5000 } }),
                created: vec![("/Config/local_connect_timeout_ms", json!(5000))],
                update: json!({ "config": { "local_connect_timeout_ms": 3000, "protocol": "http" },
                    "accessLogs": { "enabled": true, "type": "stderr" } }),
                updated: vec![
                    ("/Config/protocol", json!("http")),
                    ("/AccessLogs/Enabled", json!(true)),
                    ("/AccessLogs/Type", json!("stderr")),
                ],
                hand_edit: ("/Config/protocol", json!("tcp")),
            },
        ),
        (
            "mesh",
            Case {
                kind: "Mesh",
                create: json!({ "transparentProxy": { "meshDestinationsOnly": true } }),
                created: vec![("/TransparentProxy/MeshDestinationsOnly", json!(true))],
                update: json!({ "tls": { "incoming": { "tlsMinVersion": "TLSv1_2" } },
                    "http": { "sanitizeXForwardedClientCert": true } }),
                updated: vec![
                    ("/TLS/Incoming/TLSMinVersion", json!("TLSv1_2")),
                    ("/HTTP/SanitizeXForwardedClientCert", json!(true)),
                    ("/TransparentProxy/MeshDestinationsOnly", json!(false)),
                ],
                hand_edit: ("/TLS/Incoming/TLSMinVersion", json!("TLSv1_3")),
            },
        ),
        (
            "default",
            Case {
                kind: "ExportedServices",
                create: json!({ "services": [{ "name": api, "consumers": [{ "peer": "east" }] }] }),
                created: vec![("/Services/0/Name", json!(api)), ("/Services/0/Consumers/0/Peer", json!("east"))],
                update: json!({ "services": [{ "name": api, "consumers": [{ "peer": "east" }, { "peer": "west" }] }] }),
                updated: vec![("/Services/0/Consumers/1/Peer", json!("west"))],
                hand_edit: ("/Services/0/Consumers", json!([{ "Peer": "south" }])),
            },
        ),
    ];
    for (name, case) in cases {
        run_case(&env, name, case).await;
    }
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_router_reports_protocol_mismatch_and_syncs_once_defaults_say_http() {
    let env = setup(testenv::shared_consul().await, None).await;
    let web = env.svc("web");
    env.apply(
        "ServiceRouter",
        &web,
        json!({ "routes": [{ "match": { "http": { "pathPrefix": "/v2" } },
        "destination": { "requestTimeout": "3s" } }] }),
    )
    .await;
    let message = env.synced("ServiceRouter", &web, "False", "ProtocolMismatch").await;
    assert!(message.contains("protocol"), "Consul's words: {message}");
    env.event("ProtocolMismatch", &web).await;
    assert!(env.entry("ServiceRouter", &web).await.is_none(), "nothing written");

    // The dependency arrives: the router is retried at once, not after its backoff.
    env.apply("ServiceDefaults", &web, json!({ "protocol": "http" })).await;
    env.synced("ServiceRouter", &web, "True", "Synced").await;

    // Consul refuses tcp while a router needs http: the last good entry stays.
    env.apply("ServiceDefaults", &web, json!({ "protocol": "tcp" })).await;
    let message = env.synced("ServiceDefaults", &web, "False", "ProtocolMismatch").await;
    assert!(message.contains("Consul refused"), "{message}");
    let kept = env.entry("ServiceDefaults", &web).await.expect("entry");
    assert_eq!(kept["Protocol"], json!("http"), "the last good entry stays in Consul");

    env.delete("ServiceRouter", &web).await;
    // With the router gone, tcp is accepted (the retry comes from the router's deletion).
    env.synced("ServiceDefaults", &web, "True", "Synced").await;
    env.delete("ServiceDefaults", &web).await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitter_naming_a_missing_subset_is_refused_until_the_resolver_defines_it() {
    let env = setup(testenv::shared_consul().await, None).await;
    let api = env.svc("api");
    env.apply("ServiceDefaults", &api, json!({ "protocol": "http" })).await;
    env.synced("ServiceDefaults", &api, "True", "Synced").await;
    env.apply(
        "ServiceSplitter",
        &api,
        json!({ "splits": [
        { "weight": 90, "serviceSubset": "v1" }, { "weight": 10, "serviceSubset": "v2" }] }),
    )
    .await;
    let message = env.synced("ServiceSplitter", &api, "False", "UnknownSubset").await;
    assert!(message.contains("subset"), "Consul's words: {message}");
    env.apply(
        "ServiceResolver",
        &api,
        json!({ "subsets": {
        "v1": { "filter": "\"v1\" in Service.Tags" }, "v2": { "filter": "\"v2\" in Service.Tags" } } }),
    )
    .await;
    env.synced("ServiceSplitter", &api, "True", "Synced").await;
    for kind in ["ServiceSplitter", "ServiceResolver", "ServiceDefaults"] {
        env.delete(kind, &api).await;
    }
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_object_for_one_entry_is_reported_and_hand_owned_entries_are_left_alone() {
    let env = setup(testenv::shared_consul().await, None).await;
    let (a, b) = (env.svc("a"), env.svc("b"));
    env.apply("ServiceDefaults", &a, json!({ "protocol": "http" })).await;
    env.synced("ServiceDefaults", &a, "True", "Synced").await;
    // An entry someone else's concord (another owner) stamped: never overwritten.
    env.write_raw(json!({ "Kind": "service-defaults", "Name": b, "Protocol": "grpc",
        "Meta": { OWNER_META: "elsewhere/b" } }))
        .await;
    env.apply("ServiceDefaults", &b, json!({ "protocol": "http" })).await;
    let message = env.synced("ServiceDefaults", &b, "False", "OwnedElsewhere").await;
    assert!(message.contains("elsewhere/b"), "{message}");
    assert_eq!(env.entry("ServiceDefaults", &b).await.expect("entry")["Protocol"], json!("grpc"));
    env.delete("ServiceDefaults", &b).await;
    assert!(env.entry("ServiceDefaults", &b).await.is_some(), "not ours to delete");
    let _ = env.consul.config_entry_delete("service-defaults", &b, None).await;
    env.delete("ServiceDefaults", &a).await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_adopts_unmanaged_entries_of_the_kinds_asked_for() {
    // Its own cluster: importing adopts every unmanaged entry.
    let cluster = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    let kinds: Vec<&str> = KINDS.iter().map(|k| k.0).collect();
    let singletons = [("ProxyDefaults", "global"), ("Mesh", "mesh"), ("ExportedServices", "default")];
    let env = setup(&cluster, Some(json!({ "importConfigEntries": kinds }))).await;
    let api = env.svc("api");
    let raw = [
        json!({ "Kind": "service-defaults", "Name": api, "Protocol": "http",
            "UpstreamConfig": { "Defaults": { "Limits": { "MaxConnections": 7 } } } }),
        json!({ "Kind": "service-resolver", "Name": api, "DefaultSubset": "v1",
            "Subsets": { "v1": { "Filter": "\"v1\" in Service.Tags" }, "v2": { "Filter": "\"v2\" in Service.Tags" } } }),
        json!({ "Kind": "service-splitter", "Name": api, "Splits": [
            { "Weight": 50, "ServiceSubset": "v1" }, { "Weight": 50, "ServiceSubset": "v2" }] }),
        json!({ "Kind": "service-router", "Name": api, "Routes": [
            { "Match": { "HTTP": { "PathPrefix": "/v2" } }, "Destination": { "ServiceSubset": "v2", "NumRetries": 2 } }] }),
    ];
    let cluster_wide = [
        json!({ "Kind": "proxy-defaults", "Name": "global", "Config": { "local_connect_timeout_ms": 4000 } }),
        json!({ "Kind": "mesh", "TransparentProxy": { "MeshDestinationsOnly": true } }),
        json!({ "Kind": "exported-services", "Name": "default", "Services": [{ "Name": api, "Consumers": [{ "Peer": "east" }] }] }),
    ];
    // One a ServiceDefaults cannot say (transparent mode is not in its schema): left alone.
    let unmodelled = env.svc("legacy");
    let legacy = json!({ "Kind": "service-defaults", "Name": unmodelled, "Protocol": "http", "Mode": "transparent" });
    for entry in raw.into_iter().chain(cluster_wide).chain([legacy]) {
        env.write_raw(entry).await;
    }
    for (kind, name) in singletons {
        env.synced(kind, name, "True", "Synced").await;
        let entry = env.entry(kind, name).await.expect("entry");
        assert_eq!(entry["Meta"][OWNER_META], json!(format!("{}/{name}", env.ns)), "{kind} adopted");
    }
    let global = env.api("ProxyDefaults").get("global").await.expect("object");
    assert_eq!(
        global.data["spec"]["config"],
        json!({ "local_connect_timeout_ms": 4000 }),
        "opaque config kept as written"
    );
    for (kind, _, _) in &KINDS[..PER_SERVICE] {
        env.synced(kind, &api, "True", "Synced").await;
        let obj = env.api(kind).get(&api).await.expect("imported object");
        assert_eq!(
            obj.metadata.labels.as_ref().and_then(|l| l.get("concord.io/imported")).map(String::as_str),
            Some("true")
        );
        let entry = env.entry(kind, &api).await.expect("entry");
        assert_eq!(entry["Meta"][OWNER_META], json!(format!("{}/{api}", env.ns)), "{kind} adopted");
    }
    let defaults = env.api("ServiceDefaults").get(&api).await.expect("object");
    assert_eq!(defaults.data["spec"]["upstreamConfig"]["defaults"]["limits"]["maxConnections"], json!(7));
    let entry = env.entry("ServiceRouter", &api).await.expect("entry");
    assert_fields(&entry, &[("/Routes/0/Destination/NumRetries", json!(2))]);
    assert!(env.api("ServiceDefaults").get_opt(&unmodelled).await.expect("get").is_none(), "not imported");
    let untouched = env.entry("ServiceDefaults", &unmodelled).await.expect("entry");
    assert_eq!(untouched["Mode"], json!("transparent"));
    assert!(untouched["Meta"].get(OWNER_META).is_none());
    env.controller.stop().await;
}

/// The documents of `examples/<file>`.
fn example(file: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(file);
    let text = std::fs::read_to_string(&path).expect("example");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `value[key]` with the key compared without case and underscores (`max_connections`
/// = `MaxConnections`): the merged proxy config mixes both spellings.
fn get_ci<'a>(value: &'a Value, key: &str) -> &'a Value {
    let norm = |k: &str| k.replace('_', "").to_ascii_lowercase();
    value.as_object().and_then(|o| o.iter().find(|(k, _)| norm(k) == norm(key)).map(|(_, v)| v)).unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resilience_examples_compile_to_the_expected_discovery_chains() {
    // Its own cluster: the examples use plain service names (api, web, payments).
    let cluster = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    let env = setup(&cluster, None).await;
    let mut objects = Vec::new();
    for file in ["canary-split.yaml", "router-retries-timeouts.yaml", "circuit-breaking.yaml", "failover.yaml"] {
        for doc in example(file) {
            let kind = doc["kind"].as_str().expect("kind").to_string();
            let name = doc["metadata"]["name"].as_str().expect("name").to_string();
            env.apply(&kind, &name, doc["spec"].clone()).await;
            objects.push((kind, name));
        }
    }
    for (kind, name) in &objects {
        env.synced(kind, name, "True", "Synced").await;
    }
    let chain = |service: &'static str| {
        let consul = env.consul.clone();
        async move { consul.discovery_chain(service, &QueryOptions::default()).await.expect("chain").value }
    };
    let node = |chain: &Value, id: &str| chain["Nodes"][id].clone();
    let target_of = |chain: &Value, resolver_node: &str| {
        let target = node(chain, resolver_node)["Resolver"]["Target"].as_str().expect("target").to_string();
        chain["Targets"][&target].clone()
    };

    // Canary and router: api starts at the router; its routes lead to the 90/10 split.
    let api = chain("api").await;
    assert_eq!(api["Protocol"], json!("http"));
    let start = node(&api, api["StartNode"].as_str().expect("start"));
    assert_eq!(start["Type"], json!("router"), "{api}");
    let routes = start["Routes"].as_array().expect("routes");
    let reports = &routes[0]["Definition"];
    assert_eq!(reports["Match"]["HTTP"]["PathPrefix"], json!("/reports"));
    assert_eq!(reports["Destination"]["RequestTimeout"], json!("30s"));
    let gets = &routes[1]["Definition"];
    assert_eq!(gets["Match"]["HTTP"]["Methods"], json!(["GET"]));
    assert_eq!(gets["Destination"]["NumRetries"], json!(3));
    assert_eq!(gets["Destination"]["RetryOn"], json!(["5xx", "reset"]));
    assert_eq!(gets["Destination"]["RetryOnStatusCodes"], json!([503]));
    assert_eq!(gets["Destination"]["RetryOnConnectFailure"], json!(true));
    let split = node(&api, routes[1]["NextNode"].as_str().expect("next"));
    assert_eq!(split["Type"], json!("splitter"), "{api}");
    let splits = split["Splits"].as_array().expect("splits");
    assert_eq!(splits.len(), 2);
    let shares: Vec<(f64, Value)> = splits
        .iter()
        .map(|s| {
            let target = target_of(&api, s["NextNode"].as_str().expect("resolver"));
            (s["Weight"].as_f64().expect("weight"), target)
        })
        .collect();
    assert_eq!(shares[0].0, 90.0);
    assert_eq!(shares[0].1["ServiceSubset"], json!("v1"));
    assert_eq!(shares[0].1["Subset"]["Filter"], json!("\"v1\" in Service.Tags"));
    assert_eq!(shares[1].0, 10.0);
    assert_eq!(shares[1].1["ServiceSubset"], json!("v2"));
    assert_eq!(shares[1].1["Subset"]["OnlyPassing"], json!(true));

    // Failover: primary, then secondary, then primary in dc2.
    let payments = chain("payments").await;
    let start_id = payments["StartNode"].as_str().expect("start").to_string();
    let resolver = node(&payments, &start_id);
    assert_eq!(resolver["Type"], json!("resolver"), "{payments}");
    assert_eq!(resolver["Resolver"]["ConnectTimeout"], json!("3s"));
    assert_eq!(target_of(&payments, &start_id)["ServiceSubset"], json!("primary"));
    let failover: Vec<Value> = resolver["Resolver"]["Failover"]["Targets"]
        .as_array()
        .expect("failover targets")
        .iter()
        .map(|t| payments["Targets"][t.as_str().expect("id")].clone())
        .collect();
    assert_eq!(failover.len(), 2, "{payments}");
    assert_eq!(failover[0]["ServiceSubset"], json!("secondary"));
    assert_eq!(failover[1]["Datacenter"], json!("dc2"));

    // Circuit breaking lives in web's proxy config for its upstream api (not in the
    // chain): a sidecar registered for web gets the limits and outlier detection.
    let http = reqwest::Client::new();
    let agent = &cluster.http_addrs()[0];
    let proxy = json!({ "Name": "web-sidecar-proxy", "ID": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000,
        "Proxy": { "DestinationServiceName": "web", "Upstreams": [{ "DestinationName": "api", "LocalBindPort": 9191 }] } });
    let put = http.put(format!("{agent}/v1/agent/service/register")).json(&proxy).send().await.expect("register");
    assert!(put.status().is_success(), "register: {}", put.status());
    let registered: Value = http
        .get(format!("{agent}/v1/agent/service/web-sidecar-proxy"))
        .send()
        .await
        .expect("agent service")
        .json()
        .await
        .expect("json");
    let upstream = &registered["Proxy"]["Upstreams"][0]["Config"];
    assert_eq!(get_ci(upstream, "connect_timeout_ms"), &json!(2000), "{registered}");
    let limits = get_ci(upstream, "limits");
    assert_eq!(get_ci(limits, "max_connections"), &json!(100), "{upstream}");
    assert_eq!(get_ci(limits, "max_pending_requests"), &json!(50));
    let outlier = get_ci(upstream, "passive_health_check");
    assert_eq!(get_ci(outlier, "max_failures"), &json!(5), "{upstream}");
    assert_eq!(get_ci(outlier, "max_ejection_percent"), &json!(50));
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenancy_grants_bound_which_services_and_cluster_wide_entries_a_namespace_configures() {
    let env = setup(testenv::shared_consul().await, None).await;
    let (mine, theirs) = (env.svc("mine"), env.svc("theirs"));
    let clusters: Api<concord::resources::DiscoveryCluster> = Api::namespaced(env.kube.clone(), &env.ns);
    let grant = json!({ "spec": { "tenancy": { "intentionDestinations": [mine] } } });
    clusters.patch("consul", &PatchParams::default(), &Patch::Merge(&grant)).await.expect("grant");
    env.apply("ServiceDefaults", &mine, json!({ "protocol": "http" })).await;
    env.synced("ServiceDefaults", &mine, "True", "Synced").await;
    env.apply("ServiceDefaults", &theirs, json!({ "protocol": "grpc" })).await;
    let message = env.synced("ServiceDefaults", &theirs, "False", "NotGranted").await;
    assert!(message.contains("intentionDestinations"), "{message}");
    assert!(env.entry("ServiceDefaults", &theirs).await.is_none(), "nothing written for an ungranted service");
    // A cluster-wide entry needs every service granted.
    env.apply("ProxyDefaults", "global", json!({ "config": { "protocol": "http" } })).await;
    env.synced("ProxyDefaults", "global", "False", "NotGranted").await;
    for (kind, name) in
        [("ServiceDefaults", mine.as_str()), ("ServiceDefaults", theirs.as_str()), ("ProxyDefaults", "global")]
    {
        env.delete(kind, name).await;
    }
    env.controller.stop().await;
}
