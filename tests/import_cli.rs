//! `concord import` against a real Consul and API server: the round trip. Entries made by
//! hand (one of every kind family, a prepared query, one owned by another object, one a
//! kind cannot declare) are printed as objects; the API server accepts every document as
//! printed; the controller adopts each entry without changing a field of it (its one
//! write adds the owner mark, and nothing is written after). Bad input: one line, non-zero exit.
mod support;

use concord::consul::{self, QueryOptions};
use concord::controllers::config_entry::entry::OWNER_META;
use concord::crdgen;
use concord::resources::{find_condition, types};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use support::eventually;
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(30);

fn resource_for(kind: &str) -> ApiResource {
    let crd = crdgen::all().into_iter().find(|c| c.spec.names.kind == kind).expect("known kind");
    let gvk = GroupVersionKind::gvk(&crd.spec.group, &crd.spec.versions[0].name, kind);
    ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural)
}

fn import(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_concord"))
        .arg("import")
        .args(args)
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_CACERT")
        .output()
        .expect("concord import runs")
}

/// Consul's entry without what Consul computes and without Meta.
fn content(entry: &Value) -> Value {
    let mut e = entry.clone();
    if let Some(fields) = e.as_object_mut() {
        for k in ["Meta", "ModifyIndex", "CreateIndex", "Hash"] {
            fields.remove(k);
        }
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_objects_apply_as_printed_and_adopt_their_entries_unchanged() {
    // Its own cluster: the command prints every entry it finds.
    let cluster = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    let consul = consul::Client::new(consul::ClientConfig::new(cluster.http_addrs())).expect("client");
    let raw = [
        json!({ "Kind": "service-defaults", "Name": "api", "Protocol": "http" }),
        json!({ "Kind": "service-resolver", "Name": "api", "DefaultSubset": "v1",
            "Subsets": { "v1": { "Filter": "\"v1\" in Service.Tags" } } }),
        json!({ "Kind": "service-router", "Name": "api", "Routes": [
            { "Match": { "HTTP": { "PathPrefix": "/admin" } }, "Destination": { "NumRetries": 2 } }] }),
        json!({ "Kind": "proxy-defaults", "Name": "global", "Config": { "local_connect_timeout_ms": 4000 } }),
        json!({ "Kind": "ingress-gateway", "Name": "ingress", "Listeners": [
            { "Port": 8080, "Protocol": "http", "Services": [{ "Name": "api", "Hosts": ["api.example.com"] }] }] }),
        json!({ "Kind": "terminating-gateway", "Name": "egress", "Services": [{ "Name": "billing", "CAFile": "/etc/ca.pem" }] }),
        json!({ "Kind": "jwt-provider", "Name": "okta", "Issuer": "https://issuer.example.com",
            "JSONWebKeySet": { "Local": { "Filename": "/etc/jwks.json" } } }),
        // Owned by another object: left out unless asked.
        json!({ "Kind": "service-defaults", "Name": "owned", "Protocol": "grpc", "Meta": { OWNER_META: "other/owned" } }),
        // Transparent mode is not in ServiceDefaults' schema: left out, named on stderr.
        json!({ "Kind": "service-defaults", "Name": "legacy", "Mode": "transparent" }),
    ];
    for entry in &raw {
        consul.config_entry_set(entry, None).await.expect("raw entry");
    }
    let query = consul::PreparedQuery {
        name: "orders".into(),
        service: consul::QueryService { service: "orders".into(), tags: vec!["!canary".into()], ..Default::default() },
        ..Default::default()
    };
    let query_id = consul.prepared_query_create(&query).await.expect("query");

    let kube_env = testenv::shared_kube().await;
    let env = support::external_env(&cluster, None, "import-cli").await;
    let out = import(&["--address", &cluster.http_addr(), "--namespace", &env.ns, "--cluster-ref", "consul"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped service-defaults owned: owned by other/owned"), "{stderr}");
    assert!(stderr.contains("skipped service-defaults legacy"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .collect();
    let mut printed: Vec<(String, String)> = docs
        .iter()
        .map(|d| (d["kind"].as_str().expect("kind").to_string(), d["metadata"]["name"].as_str().expect("name").into()))
        .collect();
    printed.sort();
    let mut want: Vec<(String, String)> = [
        ("IngressGateway", "ingress"),
        ("JWTProvider", "okta"),
        ("PreparedQuery", "orders"),
        ("ProxyDefaults", "global"),
        ("ServiceDefaults", "api"),
        ("ServiceResolver", "api"),
        ("ServiceRouter", "api"),
        ("TerminatingGateway", "egress"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    want.sort();
    assert_eq!(printed, want, "{stdout}");
    for d in &docs {
        assert_eq!(d["metadata"]["namespace"], json!(env.ns));
        assert_eq!(d["spec"]["clusterRef"], json!("consul"));
        assert!(d.get("status").is_none());
    }

    // Before: each entry as Consul holds it.
    let mut before = Vec::new();
    for entry in &raw[..7] {
        let (kind, name) = (entry["Kind"].as_str().expect("kind"), entry["Name"].as_str().expect("name"));
        let held = consul.config_entry_get::<Value>(kind, name, &QueryOptions::default()).await.expect("get").value;
        before.push((kind, name, held.expect("entry")));
    }
    let query_before = consul.prepared_query_get(&query_id).await.expect("get").expect("query");

    // Apply every document as printed.
    let kube = kube_env.client().await;
    for d in &docs {
        let kind = d["kind"].as_str().expect("kind");
        let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &env.ns, &resource_for(kind));
        let object: DynamicObject = serde_json::from_value(d.clone()).expect("object");
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("the API server refused the printed {kind}: {e}"));
    }
    for d in &docs {
        let kind = d["kind"].as_str().expect("kind");
        let name = d["metadata"]["name"].as_str().expect("name");
        let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &env.ns, &resource_for(kind));
        eventually(&format!("{kind} {name} Synced"), WAIT, || async {
            let obj = api.get(name).await.ok()?;
            let conditions: Vec<concord::resources::Condition> =
                serde_json::from_value(obj.data.get("status")?.get("conditions")?.clone()).ok()?;
            let c = find_condition(&conditions, types::SYNCED)?;
            (c.status == "True").then_some(())
        })
        .await;
    }

    // Adopted: every field as it was; the owner mark added; then no further write.
    let mut after = Vec::new();
    for (kind, name, held) in &before {
        let now = consul.config_entry_get::<Value>(kind, name, &QueryOptions::default()).await.expect("get").value;
        let now = now.expect("entry");
        assert_eq!(content(&now), content(held), "{kind} {name}: a field changed on adoption");
        assert_eq!(now["Meta"][OWNER_META], json!(format!("{}/{name}", env.ns)), "{kind} {name}: owner mark");
        after.push(now["ModifyIndex"].clone());
    }
    let query_after = consul.prepared_query_get(&query_id).await.expect("get").expect("query");
    assert_eq!(query_after.service.tags, query_before.service.tags);
    assert!(query_after.service.ignore_check_ids.iter().any(|c| c.starts_with("concord.io/owner=")), "query marked");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for ((kind, name, _), index) in before.iter().zip(&after) {
        let now = consul.config_entry_get::<Value>(kind, name, &QueryOptions::default()).await.expect("get").value;
        assert_eq!(&now.expect("entry")["ModifyIndex"], index, "{kind} {name}: written again after adoption");
    }

    // Asked for: owned entries too; one kind only.
    let out = import(&["ServiceDefaults", "--address", &cluster.http_addr(), "--include-owned"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("name: owned") && stdout.contains("name: api"), "{stdout}");
    assert!(!stdout.contains("kind: IngressGateway"), "{stdout}");
    env.controller.stop().await;
}

#[tokio::test]
async fn bad_input_is_one_line_and_a_failure() {
    let consul = testenv::shared_consul().await;
    let unknown = import(&["Gateway", "--address", &consul.http_addr()]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("unknown kind \"Gateway\""), "{stderr}");

    // Nothing listens on port 1 of loopback.
    let start = std::time::Instant::now();
    let unreachable = import(&["ServiceDefaults", "--address", "http://127.0.0.1:1"]);
    assert!(!unreachable.status.success());
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("cannot list service-defaults entries from http://127.0.0.1:1"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(15), "gave up after {:?}", start.elapsed());
}
