//! `concord kv export` against a real Consul: the printed KVConfig declares exactly the
//! keys under the prefix (canonical JSON objects as `json`, the rest as `value`), and the real API
//! server accepts it as it is.
mod support;

use concord::consul::{Client, ClientConfig, KvWriteOptions};
use concord::resources::KVConfig;
use kube::api::{Api, PostParams};
use std::process::Command;

#[tokio::test]
async fn export_prints_a_kvconfig_the_api_server_accepts() {
    let consul = testenv::shared_consul().await;
    let client = Client::new(ClientConfig::new(consul.http_addrs())).expect("consul client");
    let prefix = "export-test/app/";
    let opts = KvWriteOptions::default();
    client.kv_put(&format!("{prefix}log-level"), "debug", &opts).await.expect("put");
    client.kv_put(&format!("{prefix}db"), r#"{"host":"db","port":5432}"#, &opts).await.expect("put");
    client.kv_put(&format!("{prefix}hand-written"), r#"{ "b": 1, "a": 2 }"#, &opts).await.expect("put");
    client.kv_put(&format!("{prefix}upstreams"), r#"["api","cache"]"#, &opts).await.expect("put");
    client.kv_put(&format!("{prefix}nested/flag"), "on", &opts).await.expect("put");
    client.kv_put("export-test/other", "not under the prefix", &opts).await.expect("put");

    let out = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["kv", "export", prefix, "--address", &consul.http_addr(), "--name", "adopted"])
        .output()
        .expect("concord kv export runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported: KVConfig = serde_yaml::from_slice(&out.stdout).expect("a KVConfig YAML document");
    assert_eq!(exported.spec.prefix, prefix);
    let mut keys: Vec<(String, Option<String>, Option<serde_json::Value>)> =
        exported.spec.keys.iter().map(|k| (k.key.clone(), k.value.clone(), k.json.clone())).collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        keys,
        vec![
            ("db".to_string(), None, Some(serde_json::json!({"host": "db", "port": 5432}))),
            // Not canonical: kept as a string so applying the export writes the same bytes.
            ("hand-written".to_string(), Some(r#"{ "b": 1, "a": 2 }"#.to_string()), None),
            ("log-level".to_string(), Some("debug".to_string()), None),
            ("nested/flag".to_string(), Some("on".to_string()), None),
            // `json` holds objects only (the CRD says so), so an array stays a string.
            ("upstreams".to_string(), Some(r#"["api","cache"]"#.to_string()), None),
        ]
    );

    let env = testenv::shared_kube().await;
    let kube = env.client().await;
    support::install_crds(&kube).await;
    let ns = env.create_namespace("export").await;
    let api: Api<KVConfig> = Api::namespaced(kube, &ns);
    api.create(&PostParams::default(), &exported).await.expect("the API server accepts the exported KVConfig");

    let bad = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["kv", "export", "/abs", "--address", &consul.http_addr()])
        .output()
        .expect("runs");
    assert!(!bad.status.success(), "a prefix the CRD would refuse is refused");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one readable line: {stderr}");
}
