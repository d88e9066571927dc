//! TLS to Consul against a real 3-server Consul with TLS on (HTTPS only, verified
//! internal RPC): an external DiscoveryCluster verifies the servers against the CA from
//! its Secret and syncs; a CA that did not sign them is refused with `TLSVerifyFailed`
//! (condition and Event, with the cause); the CLI takes `--ca-file`, and without it says
//! why in one line.
mod support;

use concord::consul::{Client, KvWriteOptions, QueryOptions};
use concord::resources::{DiscoveryCluster, find_condition, types};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::eventually;

const WAIT: Duration = Duration::from_secs(60);

/// A namespace whose DiscoveryCluster `consul` points at the TLS cluster's HTTPS
/// addresses, trusting the CA in Secret `ca`; and a controller watching it.
async fn setup(prefix: &str, ca_pem: &str) -> (kube::Client, String, support::RunningController) {
    setup_named(prefix, ca_pem, None).await
}

/// [`setup`] with `external.tlsServerName`.
async fn setup_named(
    prefix: &str,
    ca_pem: &str,
    server_name: Option<&str>,
) -> (kube::Client, String, support::RunningController) {
    let consul = testenv::shared_consul_tls().await;
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace(prefix).await;
    support::put_ca_secret(&kube, &ns, "ca", ca_pem).await;
    let mut dc = json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": { "name": "consul", "namespace": ns },
        "spec": { "external": {
            "address": consul.http_addrs().join(","),
            "caSecretRef": { "name": "ca", "key": "ca.crt" },
        }},
    });
    if let Some(name) = server_name {
        dc["spec"]["external"]["tlsServerName"] = json!(name);
    }
    Api::<DiscoveryCluster>::namespaced(kube.clone(), &ns)
        .patch("consul", &PatchParams::apply("owner").force(), &Patch::Apply(&dc))
        .await
        .expect("DiscoveryCluster");
    let controller = support::start_controller(kube.clone(), &ns, &[]).await;
    (kube, ns, controller)
}

async fn available(kube: &kube::Client, ns: &str) -> Option<concord::resources::Condition> {
    let dc = Api::<DiscoveryCluster>::namespaced(kube.clone(), ns).get("consul").await.ok()?;
    find_condition(&dc.status?.conditions, types::AVAILABLE).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_cluster_over_tls_is_verified_and_syncs() {
    let consul = testenv::shared_consul_tls().await;
    assert!(consul.http_addr().starts_with("https://"), "the harness serves HTTPS only");
    let ca = consul.ca_pem().expect("CA").to_string();
    let (kube, ns, _controller) = setup("tls-ok", &ca).await;
    let leader = eventually("Available=True over HTTPS", WAIT, || async {
        available(&kube, &ns).await.filter(|c| c.status == "True")
    })
    .await;
    assert_eq!(leader.reason, "LeaderElected", "{leader:?}");

    // A KVConfig reaches Consul over the same verified connection.
    let prefix = format!("{ns}/app/");
    let obj = json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "KVConfig",
        "metadata": { "name": "app", "namespace": ns },
        "spec": { "prefix": prefix, "keys": [{ "key": "greeting", "value": "hello over tls" }] },
    });
    Api::<concord::resources::KVConfig>::namespaced(kube.clone(), &ns)
        .patch("app", &PatchParams::apply("tenant").force(), &Patch::Apply(&obj))
        .await
        .expect("KVConfig");
    let client = Client::new(support::consul_config(consul)).expect("client");
    let key = format!("{prefix}greeting");
    let value = eventually("the key written through HTTPS", WAIT, || async {
        client.kv_get(&key, &QueryOptions::default()).await.ok()?.value
    })
    .await;
    assert_eq!(&value.value[..], b"hello over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_servers_is_refused_with_tls_verify_failed() {
    let other = concord::cluster::tls::new_ca("elsewhere", "other", k8s_openapi::jiff::Timestamp::now()).expect("CA");
    let (kube, ns, _controller) = setup("tls-bad", &other.cert_pem).await;
    let condition = eventually("Available=False, TLSVerifyFailed", WAIT, || async {
        available(&kube, &ns).await.filter(|c| c.status == "False" && c.reason == "TLSVerifyFailed")
    })
    .await;
    // The cause chain, down to rustls' verdict, is in the message.
    assert!(condition.message.contains("not trusted"), "{}", condition.message);
    assert!(condition.message.contains("invalid peer certificate"), "{}", condition.message);
    let events: Api<Event> = Api::namespaced(kube.clone(), &ns);
    let event = eventually("a Warning TLSVerifyFailed Event", WAIT, || async {
        events.list(&ListParams::default()).await.ok()?.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("TLSVerifyFailed")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("consul")
        })
    })
    .await;
    assert!(event.note.unwrap_or_default().contains("invalid peer certificate"));
    let dc = Api::<DiscoveryCluster>::namespaced(kube.clone(), &ns).get("consul").await.expect("dc");
    assert_eq!(dc.status.and_then(|s| s.leader), None, "nothing learned from an unverified server");
}

/// Servers addressed by IP are checked against `tlsServerName` instead: the name their
/// certificate carries is accepted, another name is refused with `TLSVerifyFailed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_name_is_what_the_servers_certificate_is_checked_against() {
    let consul = testenv::shared_consul_tls().await;
    let ca = consul.ca_pem().expect("CA").to_string();
    let (kube, ns, _controller) = setup_named("tls-name", &ca, Some("server.dc1.consul")).await;
    eventually("Available=True checked against server.dc1.consul", WAIT, || async {
        available(&kube, &ns).await.filter(|c| c.status == "True")
    })
    .await;
    let (kube, ns, _other) = setup_named("tls-badname", &ca, Some("server.elsewhere.consul")).await;
    let refused = eventually("TLSVerifyFailed for a name the certificate lacks", WAIT, || async {
        available(&kube, &ns).await.filter(|c| c.reason == "TLSVerifyFailed")
    })
    .await;
    assert!(refused.message.contains("not valid for name \"server.elsewhere.consul\""), "{}", refused.message);
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("concord-tls-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write temp file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_verifies_with_ca_file_and_without_it_fails_with_one_line() {
    let consul = testenv::shared_consul_tls().await;
    let client = Client::new(support::consul_config(consul)).expect("client");
    let prefix = format!("tls-cli-{}/", std::process::id());
    client.kv_put(&format!("{prefix}greeting"), "hello", &KvWriteOptions::default()).await.expect("put");
    let ca_file = temp_file("ca.crt", consul.ca_pem().expect("CA"));
    let export = |ca: Option<&PathBuf>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
        cmd.args(["kv", "export", &prefix, "--address", &consul.http_addr()])
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("CONSUL_CACERT");
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().expect("concord kv export runs")
    };

    let out = export(Some(&ca_file));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("value: hello"));

    let out = export(None);
    assert!(!out.status.success(), "an unverified server is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("--ca-file"), "says what to do: {stderr}");

    // `concord render --once`, the same both ways.
    let template = temp_file("in.tpl", &format!("greeting={{{{key \"{prefix}greeting\"}}}}\n"));
    let dest = std::env::temp_dir().join(format!("concord-tls-{}-out", std::process::id()));
    let _ = std::fs::remove_file(&dest);
    let render = |ca: Option<&PathBuf>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
        cmd.args(["render", "--once", "--consul-addr", &consul.http_addr(), "--template"])
            .arg(format!("{}:{}", template.display(), dest.display()))
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("CONSUL_CACERT")
            .env("RUST_LOG", "warn");
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().expect("concord render runs")
    };
    let out = render(Some(&ca_file));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&dest).expect("rendered"), "greeting=hello\n");
    std::fs::remove_file(&dest).expect("rm");
    let out = render(None);
    assert!(!out.status.success(), "an unverified server is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(!dest.exists(), "nothing written");

    let bad = temp_file("not-a-ca", "hello");
    let out = export(Some(&bad));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");

    // `concord import`, the same both ways.
    let import = |ca: Option<&PathBuf>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
        cmd.args(["import", "ServiceDefaults", "--address", &consul.http_addr()])
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("CONSUL_CACERT");
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().expect("concord import runs")
    };
    let out = import(Some(&ca_file));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = import(None);
    assert!(!out.status.success(), "an unverified server is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("--ca-file"), "says what to do: {stderr}");
    for f in [ca_file, template, bad] {
        let _ = std::fs::remove_file(f);
    }
}
