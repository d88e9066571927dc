//! Mirrored Service names are stable across releases, and Services named under the old
//! scheme (a `DefaultHasher` suffix on long names) move to the new name without a gap:
//! against a real kube-apiserver and a real Consul, a watch on the namespace sees the
//! new Service and its EndpointSlice created before the old ones are deleted.
mod support;

use concord::consul::{self, CatalogRegistration, CheckStatus, HealthCheck, NodeService};
use concord::resources::DiscoveryCluster;
use concord::sync::to_kubernetes::desired::{self, MirrorInstance};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{eventually, external_cluster, install_crds, start_controller};

const WAIT: Duration = Duration::from_secs(30);

/// The name the sync gave a long Consul name before: cut, and suffixed with
/// `DefaultHasher` of (prefix, name), as the previous release computed it.
fn old_scheme_name(prefix: &str, consul_name: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (prefix, consul_name).hash(&mut h);
    let suffix = format!("-{:08x}", h.finish() as u32);
    let mut out = format!("{prefix}{consul_name}");
    out.truncate(63 - suffix.len());
    out.push_str(&suffix);
    out
}

/// Records, in order, `added:<name>` and `deleted:<name>` of the objects a watch sees.
fn record<K>(api: Api<K>) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let line = match ev {
                Ok(Event::Apply(o) | Event::InitApply(o)) => format!("added:{}", o.name_any()),
                Ok(Event::Delete(o)) => format!("deleted:{}", o.name_any()),
                _ => continue,
            };
            let mut log = log.lock().expect("log");
            if log.last() != Some(&line) {
                log.push(line);
            }
        }
    });
    (seen, task)
}

fn position(log: &Arc<Mutex<Vec<String>>>, line: &str) -> Option<usize> {
    log.lock().expect("log").iter().position(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_named_under_the_old_hash_move_to_the_stable_name_without_a_gap() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("names").await;
    let c = consul::Client::new(consul::ClientConfig::new(consul_env.http_addrs())).expect("consul client");

    // A Consul service whose name is too long for a Service name, so it gets a hash.
    let consul_name = format!("{}-{ns}", "long".repeat(17));
    c.catalog_register(&CatalogRegistration {
        node: format!("vm-{ns}"),
        address: "10.70.0.1".into(),
        service: Some(NodeService {
            id: format!("{consul_name}-1"),
            service: consul_name.clone(),
            address: "10.70.0.1".into(),
            port: 8080,
            ..Default::default()
        }),
        checks: vec![HealthCheck {
            check_id: format!("{consul_name}-1-alive"),
            name: "alive".into(),
            status: CheckStatus::Passing,
            service_id: format!("{consul_name}-1"),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("register");

    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(json!({"toKubernetes": {"enabled": true}}))).await;
    let dc = Api::<DiscoveryCluster>::namespaced(client.clone(), &ns).get("consul").await.expect("DiscoveryCluster");
    let cfg = concord::sync::effective_config(&dc, &Default::default())
        .expect("sync config")
        .to_kubernetes
        .expect("toKubernetes on");
    let new_name = concord::sync::names::dns1035(&cfg.prefix, &consul_name).expect("a name");
    let old_name = old_scheme_name(&cfg.prefix, &consul_name);
    assert_ne!(new_name, old_name);

    // What the previous release left: the Service and its slice under the old name,
    // exactly as the sync writes them.
    let instances = [MirrorInstance { address: "10.70.0.1".into(), port: 8080, passing: true }];
    let old = desired::objects(&cfg, &consul_name, &old_name, &instances);
    let pp = PatchParams::apply("concord-previous-release").force();
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns);
    let mut svc = serde_json::to_value(&old.service).expect("json");
    svc["apiVersion"] = "v1".into();
    svc["kind"] = "Service".into();
    services.patch(&old_name, &pp, &Patch::Apply(&svc)).await.expect("old Service");
    let old_slices: Vec<String> = old.slices.iter().map(|s| s.name_any()).collect();
    for s in &old.slices {
        let mut v = serde_json::to_value(s).expect("json");
        v["apiVersion"] = "discovery.k8s.io/v1".into();
        v["kind"] = "EndpointSlice".into();
        slices.patch(&s.name_any(), &pp, &Patch::Apply(&v)).await.expect("old slice");
    }
    assert!(!old_slices.is_empty());

    let (service_log, service_watch) = record(services.clone());
    let (slice_log, slice_watch) = record(slices.clone());
    eventually("the watches list the old objects", WAIT, || async {
        (position(&service_log, &format!("added:{old_name}")).is_some()
            && old_slices.iter().all(|s| position(&slice_log, &format!("added:{s}")).is_some()))
        .then_some(())
    })
    .await;

    let _controller = start_controller(client.clone(), &ns, &[]).await;
    eventually("the old Service and its slices are gone", WAIT, || async {
        (position(&service_log, &format!("deleted:{old_name}")).is_some()
            && old_slices.iter().all(|s| position(&slice_log, &format!("deleted:{s}")).is_some()))
        .then_some(())
    })
    .await;
    let new_svc = services.get(&new_name).await.expect("the new Service");
    assert_eq!(new_svc.annotations()["concord.io/consul-service"], consul_name);

    // No gap: the new Service, and a slice of it, existed before the old ones went.
    let added = position(&service_log, &format!("added:{new_name}")).expect("the new Service was added");
    let deleted = position(&service_log, &format!("deleted:{old_name}")).expect("deleted");
    assert!(added < deleted, "the old Service went first: {:?}", service_log.lock().expect("log"));
    let new_slices: Vec<String> = slices
        .list(&kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={new_name}")))
        .await
        .expect("slices")
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert!(!new_slices.is_empty(), "the new Service has its slice");
    let first_new_slice =
        new_slices.iter().filter_map(|s| position(&slice_log, &format!("added:{s}"))).min().expect("seen");
    for s in &old_slices {
        let gone = position(&slice_log, &format!("deleted:{s}")).expect("deleted");
        assert!(first_new_slice < gone, "an old slice went first: {:?}", slice_log.lock().expect("log"));
    }
    service_watch.abort();
    slice_watch.abort();
}
