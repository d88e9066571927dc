//! Bad input keeps the last good state, against a real kube-apiserver and a real
//! three-server Consul: a typo in `concord.io/port`, `concord.io/meta` or
//! `concord.io/tags` never deregisters a Service or strips its meta (the registration
//! keeps following its endpoints with the last good annotations, across anti-entropy
//! passes and a controller restart), an out-of-range port on an ExternalName Service is
//! never registered as port 0, and an operation Consul refuses is taken out of its
//! transaction so the other Services in it are still written. Each is reported on its
//! own Service (Warning Event) and in `status.sync.rejectedServices`.
mod support;

use concord::consul::{self, QueryOptions};
use concord::resources::DiscoveryCluster;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::{eventually, external_cluster, install_crds, start_controller};

const WAIT: Duration = Duration::from_secs(30);

fn consul_client(c: &testenv::ConsulCluster) -> consul::Client {
    consul::Client::new(consul::ClientConfig::new(c.http_addrs())).expect("consul client")
}

/// A Service `name` (Consul name `name` too) with the given sync annotations.
async fn service(client: &kube::Client, ns: &str, name: &str, spec: serde_json::Value, annotations: serde_json::Value) {
    let mut ann = json!({"concord.io/sync": "true"});
    for (k, v) in annotations.as_object().expect("object") {
        ann[k] = v.clone();
    }
    let obj = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "annotations": ann}, "spec": spec});
    Api::<Service>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj))
        .await
        .expect("Service applied");
}

fn http_spec() -> serde_json::Value {
    json!({"ports": [{"name": "http", "port": 80}]})
}

/// A ready endpoint per address, port `http` 8080.
async fn slice(client: &kube::Client, ns: &str, svc: &str, addrs: &[&str]) {
    let name = format!("{svc}-manual");
    let obj = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": addrs.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()});
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&obj))
        .await
        .expect("EndpointSlice applied");
}

/// What Consul holds for service `name`: address → (port, tags, meta).
type Registration = BTreeMap<String, (u16, Vec<String>, BTreeMap<String, String>)>;

async fn registration(c: &consul::Client, name: &str) -> Registration {
    let entries =
        c.health_service(name, &[], false, &QueryOptions::default()).await.map(|r| r.value).unwrap_or_default();
    entries.into_iter().map(|e| (e.service.address, (e.service.port, e.service.tags, e.service.meta))).collect()
}

/// True when every instance of `reg` is on `addrs`, port `port`, with `tags` and `team`.
fn looks_like(reg: &Registration, addrs: &[&str], port: u16, tags: &[&str], team: &str) -> bool {
    reg.keys().map(String::as_str).collect::<BTreeSet<_>>() == addrs.iter().copied().collect()
        && reg.values().all(|(p, t, m)| *p == port && t == tags && m.get("team").map(String::as_str) == Some(team))
}

async fn events(client: &kube::Client, ns: &str, object: &str, reason: &str) -> Vec<String> {
    let api = Api::<Event>::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason) && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
        })
        .filter_map(|e| e.note)
        .collect()
}

async fn rejected(client: &kube::Client, ns: &str) -> Vec<String> {
    let api = Api::<DiscoveryCluster>::namespaced(client.clone(), ns);
    let dc = api.get("consul").await.ok();
    dc.and_then(|d| d.status).and_then(|s| s.sync).map(|s| s.rejected_services).unwrap_or_default()
}

/// Asserts `check` holds on every look for `how_long` (several anti-entropy periods).
async fn stays<F, Fut>(what: &str, how_long: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < how_long {
        assert!(check().await, "{what} did not hold after {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_port_meta_or_tags_annotation_keeps_the_last_good_registration() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("badann").await;
    let c = consul_client(consul_env);
    let name = format!("keep-{ns}");
    let good =
        json!({"concord.io/port": "http", "concord.io/tags": "v1,prod", "concord.io/meta": "{\"team\":\"pay\"}"});
    service(&client, &ns, &name, http_spec(), good.clone()).await;
    slice(&client, &ns, &name, &["10.60.0.1", "10.60.0.2"]).await;
    let sync = json!({"toConsul": {"enabled": true}, "antiEntropyInterval": "1s"});
    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(sync)).await;
    let controller = start_controller(client.clone(), &ns, &[]).await;
    eventually("the good registration", WAIT, || async {
        looks_like(&registration(&c, &name).await, &["10.60.0.1", "10.60.0.2"], 8080, &["v1", "prod"], "pay")
            .then_some(())
    })
    .await;

    let mut addrs = vec!["10.60.0.1", "10.60.0.2"];
    let bad = [("concord.io/port", "htp"), ("concord.io/meta", "{\"team\": pay}"), ("concord.io/tags", "v1, prod env")];
    for (i, (key, value)) in bad.iter().enumerate() {
        let mut ann = good.clone();
        ann[*key] = json!(value);
        service(&client, &ns, &name, http_spec(), ann).await;
        // The endpoints change while the annotation is bad: the registration follows
        // them with the last good port, tags and meta.
        let added = ["10.60.1.1", "10.60.1.2", "10.60.1.3"][i];
        addrs.push(added);
        slice(&client, &ns, &name, &addrs).await;
        eventually(&format!("{key}={value}: the new endpoint registered the last good way"), WAIT, || async {
            looks_like(&registration(&c, &name).await, &addrs, 8080, &["v1", "prod"], "pay").then_some(())
        })
        .await;
        // Events of one reason on one object are folded into one series (kube's
        // recorder keeps the first note), so the note names the first bad annotation;
        // the status entry below names the current one.
        let first = bad[0].0;
        let notes = eventually(&format!("{key}: a Warning Event on the Service"), WAIT, || async {
            let notes = events(&client, &ns, &name, "InvalidSyncAnnotation").await;
            notes.iter().any(|n| n.contains(first)).then_some(notes)
        })
        .await;
        assert!(notes.iter().any(|n| n.contains("last good registration stays")), "{notes:?}");
        eventually(&format!("{key}: a status entry"), WAIT, || async {
            let lines = rejected(&client, &ns).await;
            lines.iter().any(|l| l.starts_with(&format!("{ns}/{name}: ")) && l.contains(key)).then_some(())
        })
        .await;
        // Anti-entropy passes (every second) keep it too.
        stays(&format!("{key}: the registration"), Duration::from_millis(2500), || async {
            looks_like(&registration(&c, &name).await, &addrs, 8080, &["v1", "prod"], "pay")
        })
        .await;
    }

    // A controller that starts while the annotation is bad never saw it good: it leaves
    // the registration as Consul holds it.
    controller.stop().await;
    let controller = start_controller(client.clone(), &ns, &[]).await;
    eventually("the restarted controller reports the bad tags", WAIT, || async {
        let lines = rejected(&client, &ns).await;
        lines.iter().any(|l| l.contains("concord.io/tags")).then_some(())
    })
    .await;
    stays("the registration across a restart", Duration::from_millis(2500), || async {
        looks_like(&registration(&c, &name).await, &addrs, 8080, &["v1", "prod"], "pay")
    })
    .await;

    // Fixed: the new good annotations apply and the status entry goes away.
    let fixed = json!({"concord.io/port": "http", "concord.io/tags": "v2", "concord.io/meta": "{\"team\":\"core\"}"});
    service(&client, &ns, &name, http_spec(), fixed).await;
    eventually("the fixed annotations apply", WAIT, || async {
        looks_like(&registration(&c, &name).await, &addrs, 8080, &["v2"], "core").then_some(())
    })
    .await;
    eventually("the status entry is gone", WAIT, || async { rejected(&client, &ns).await.is_empty().then_some(()) })
        .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_port_on_an_external_name_service_is_never_registered_as_port_0() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("badport").await;
    let c = consul_client(consul_env);
    let (ext, marker) = (format!("ext-{ns}"), format!("mark-{ns}"));
    let spec = json!({"type": "ExternalName", "externalName": "db.example.com"});
    service(&client, &ns, &ext, spec.clone(), json!({"concord.io/port": "70000"})).await;
    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(json!({"toConsul": {"enabled": true}}))).await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;
    eventually("a Warning Event on the Service", WAIT, || async {
        let notes = events(&client, &ns, &ext, "InvalidSyncAnnotation").await;
        notes.iter().any(|n| n.contains("70000")).then_some(())
    })
    .await;
    // A marker Service written after it: once it is in Consul, the sync has decided on
    // the bad one, which is not registered at all (no port 0).
    service(&client, &ns, &marker, http_spec(), json!({})).await;
    slice(&client, &ns, &marker, &["10.61.0.1"]).await;
    eventually("the marker", WAIT, || async { (!registration(&c, &marker).await.is_empty()).then_some(()) }).await;
    assert!(registration(&c, &ext).await.is_empty(), "registered with a bad port: {:?}", registration(&c, &ext).await);

    service(&client, &ns, &ext, spec.clone(), json!({"concord.io/port": "5432"})).await;
    let want: Registration = [("db.example.com".to_string(), (5432, vec![], BTreeMap::new()))].into();
    let port_of = |r: &Registration| r.values().map(|(p, _, _)| *p).collect::<Vec<_>>();
    eventually("a good port registers", WAIT, || async {
        (port_of(&registration(&c, &ext).await) == port_of(&want)).then_some(())
    })
    .await;
    service(&client, &ns, &ext, spec, json!({"concord.io/port": "99999"})).await;
    eventually("the second bad port is reported", WAIT, || async {
        let lines = rejected(&client, &ns).await;
        lines.iter().any(|l| l.contains("99999")).then_some(())
    })
    .await;
    stays("the last good port", Duration::from_secs(2), || async { port_of(&registration(&c, &ext).await) == [5432] })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_consul_refuses_is_isolated_from_its_transaction_and_reported_on_its_service() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("refused").await;
    let c = consul_client(consul_env);
    let names: Vec<String> = (0..8).map(|i| format!("iso{i}-{ns}")).collect();
    for n in &names {
        service(&client, &ns, n, http_spec(), json!({"concord.io/meta": "{\"team\":\"pay\"}"})).await;
        slice(&client, &ns, n, &["10.62.0.1"]).await;
    }
    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(json!({"toConsul": {"enabled": true}}))).await;
    let controller = start_controller(client.clone(), &ns, &[]).await;
    for n in &names {
        eventually("the first registrations", WAIT, || async {
            looks_like(&registration(&c, n).await, &["10.62.0.1"], 8080, &[], "pay").then_some(())
        })
        .await;
    }
    controller.stop().await;

    // While no controller runs: every Service moves to a new address, and one gets a meta
    // value Consul refuses (longer than its 512 characters). The restarted controller
    // writes all of it in its first pass, in one transaction.
    let victim = &names[3];
    let long = "x".repeat(600);
    for n in &names {
        let meta = if n == victim { json!({"team": "pay", "notes": long}) } else { json!({"team": "pay"}) };
        service(&client, &ns, n, http_spec(), json!({"concord.io/meta": meta.to_string()})).await;
        slice(&client, &ns, n, &["10.62.0.2"]).await;
    }
    let _controller = start_controller(client.clone(), &ns, &[]).await;
    for n in names.iter().filter(|n| *n != victim) {
        eventually(&format!("{n} written despite the refused operation"), WAIT, || async {
            looks_like(&registration(&c, n).await, &["10.62.0.2"], 8080, &[], "pay").then_some(())
        })
        .await;
    }
    let notes = eventually("a ConsulRefused Event on the refused Service", WAIT, || async {
        let notes = events(&client, &ns, victim, "ConsulRefused").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    assert!(notes.iter().any(|n| n.contains(&format!("{ns}-{victim}-10.62.0.2"))), "{notes:?}");
    for n in names.iter().filter(|n| *n != victim) {
        assert!(events(&client, &ns, n, "ConsulRefused").await.is_empty(), "{n} reported refused");
    }
    let lines = eventually("a status entry", WAIT, || async {
        let lines = rejected(&client, &ns).await;
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with(&format!("{ns}/{victim}: Consul refused")), "{lines:?}");
    // Its last good registration stays.
    let reg = registration(&c, victim).await;
    assert!(looks_like(&reg, &["10.62.0.1"], 8080, &[], "pay"), "{reg:?}");
    assert!(reg.values().all(|(_, _, m)| !m.contains_key("notes")));

    // Deleted, the Service leaves the catalog and the status.
    Api::<Service>::namespaced(client.clone(), &ns).delete(victim, &Default::default()).await.expect("delete");
    eventually("the deleted Service's status entry goes", WAIT, || async {
        rejected(&client, &ns).await.is_empty().then_some(())
    })
    .await;
    eventually("and its instance", WAIT, || async { registration(&c, victim).await.is_empty().then_some(()) }).await;
}
