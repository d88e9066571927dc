//! Catalog sync against a real kube-apiserver and a real three-server Consul: the seed
//! scenario (api-v1 + api-v2 as one Consul service), DNS through Consul's DNS port,
//! Consul → Kubernetes, and the loop and ownership rules. The test cluster has no
//! kubelet, so Services are selector-less with hand-made EndpointSlices.
mod support;

use concord::consul::{
    self, CatalogDeregistration, CatalogRegistration, CheckStatus, HealthCheck, NodeService, QueryOptions,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use support::{eventually, external_cluster, install_crds, service, slice, start_controller};

const WAIT: Duration = Duration::from_secs(20);

fn consul_client(c: &testenv::ConsulCluster) -> consul::Client {
    consul::Client::new(consul::ClientConfig::new(c.http_addrs())).expect("consul client")
}

async fn health(c: &consul::Client, name: &str, tags: &[&str], passing: bool) -> Vec<consul::ServiceEntry> {
    c.health_service(name, tags, passing, &QueryOptions::default()).await.map(|r| r.value).unwrap_or_default()
}

/// Instances of `name` that came from Kubernetes namespace `ns`.
async fn synced(c: &consul::Client, name: &str, ns: &str) -> Vec<consul::ServiceEntry> {
    health(c, name, &[], false)
        .await
        .into_iter()
        .filter(|e| e.service.meta.get("k8s-namespace").map(String::as_str) == Some(ns))
        .collect()
}

async fn register_external(c: &consul::Client, node: &str, addr: &str, name: &str, port: u16, status: CheckStatus) {
    c.catalog_register(&CatalogRegistration {
        node: node.into(),
        address: addr.into(),
        service: Some(NodeService {
            id: format!("{name}-{node}"),
            service: name.into(),
            address: addr.into(),
            port,
            ..Default::default()
        }),
        checks: vec![HealthCheck {
            check_id: format!("{name}-{node}-alive"),
            name: "alive".into(),
            status,
            service_id: format!("{name}-{node}"),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("register");
}

async fn deregister_external(c: &consul::Client, node: &str, name: &str) {
    c.catalog_deregister(&CatalogDeregistration {
        node: node.into(),
        service_id: format!("{name}-{node}"),
        ..Default::default()
    })
    .await
    .expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_api_v1_and_v2_are_one_consul_service_that_follows_readiness_and_answers_dns() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("sync-seed").await;
    let c = consul_client(consul_env);
    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(json!({"toConsul": {"enabled": true}}))).await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;

    let sync = |name: &str, tags: &str| json!({"concord.io/sync": "true", "concord.io/service-name": name, "concord.io/tags": tags});
    service(&client, &ns, "api-v1", 80, sync("api", "v1,production")).await;
    service(&client, &ns, "api-v2", 80, sync("api", "v2,canary")).await;
    service(&client, &ns, "database", 5432, json!({"concord.io/sync": "true"})).await;
    service(&client, &ns, "cache", 6379, json!({"concord.io/sync": "true"})).await;
    service(&client, &ns, "not-synced", 80, json!({})).await;
    slice(&client, &ns, "api-v1", 3001, &[("10.10.0.1", true)]).await;
    slice(&client, &ns, "api-v2", 3002, &[("10.10.0.2", true)]).await;
    slice(&client, &ns, "database", 5432, &[("10.10.0.3", true)]).await;
    slice(&client, &ns, "cache", 6379, &[("10.10.0.4", true)]).await;
    slice(&client, &ns, "not-synced", 80, &[("10.10.0.5", true)]).await;

    eventually("api has 2 instances", WAIT, || async {
        (health(&c, "api", &[], false).await.len() == 2).then_some(())
    })
    .await;
    let v2 = health(&c, "api", &["v2"], false).await;
    assert_eq!(v2.len(), 1);
    assert_eq!(v2[0].service.port, 3002);
    assert_eq!(v2[0].service.tags, ["v2", "canary"]);
    assert_eq!(v2[0].service.meta["external-source"], "kubernetes");
    assert_eq!(v2[0].service.meta["k8s-service"], "api-v2");
    eventually("database and cache registered", WAIT, || async {
        (health(&c, "database", &[], true).await.len() == 1 && health(&c, "cache", &[], true).await.len() == 1)
            .then_some(())
    })
    .await;
    assert!(health(&c, "not-synced", &[], false).await.is_empty(), "opt-in: no annotation, no sync");

    // DNS, through Consul's own DNS port, with a real DNS client.
    // Consul DNS reads are stale-allowed (served by any server), so they may trail the
    // HTTP read above by a moment.
    let dns = support::resolver(consul_env.dns_addr(0));
    let a_records = |name: &'static str| {
        let dns = &dns;
        async move {
            let found = dns.ipv4_lookup(name).await.ok()?;
            Some(found.iter().map(|a| a.to_string()).collect::<BTreeSet<String>>())
        }
    };
    let two = BTreeSet::from(["10.10.0.1".to_string(), "10.10.0.2".to_string()]);
    eventually("A api.service.consul → both", WAIT, || async {
        a_records("api.service.consul.").await.filter(|a| *a == two)
    })
    .await;
    let srv: BTreeSet<u16> =
        dns.srv_lookup("api.service.consul.").await.expect("SRV api").iter().map(|s| s.port()).collect();
    assert_eq!(srv, BTreeSet::from([3001, 3002]));
    let v2a = a_records("v2.api.service.consul.").await.expect("A v2.api");
    assert_eq!(v2a, BTreeSet::from(["10.10.0.2".to_string()]));

    // Readiness flips: not ready → critical, out of ?passing; ready again → back.
    slice(&client, &ns, "api-v1", 3001, &[("10.10.0.1", false)]).await;
    eventually("api-v1 out of ?passing", WAIT, || async {
        (health(&c, "api", &[], true).await.len() == 1).then_some(())
    })
    .await;
    let all = health(&c, "api", &[], false).await;
    let v1 = all.iter().find(|e| e.service.port == 3001).expect("api-v1 still registered");
    assert_eq!(
        v1.checks.iter().find(|ch| ch.check_id.ends_with("/ready")).map(|ch| ch.status),
        Some(CheckStatus::Critical)
    );
    let one = BTreeSet::from(["10.10.0.2".to_string()]);
    eventually("DNS stops answering with the not-ready endpoint", WAIT, || async {
        a_records("api.service.consul.").await.filter(|a| *a == one)
    })
    .await;
    slice(&client, &ns, "api-v1", 3001, &[("10.10.0.1", true)]).await;
    eventually("api-v1 passing again", WAIT, || async {
        (health(&c, "api", &[], true).await.len() == 2).then_some(())
    })
    .await;
    // Ready again: the critical check is deleted, not set to passing (a ready instance
    // carries no check; Consul counts it as passing).
    let all = health(&c, "api", &[], false).await;
    let v1 = all.iter().find(|e| e.service.port == 3001).expect("api-v1 still registered");
    assert!(!v1.checks.iter().any(|ch| ch.check_id.ends_with("/ready")), "{:?}", v1.checks);

    // Endpoint added and removed.
    slice(&client, &ns, "database", 5432, &[("10.10.0.3", true), ("10.10.0.6", true)]).await;
    eventually("second database endpoint", WAIT, || async {
        (synced(&c, "database", &ns).await.len() == 2).then_some(())
    })
    .await;
    slice(&client, &ns, "database", 5432, &[("10.10.0.6", true)]).await;
    eventually("first database endpoint gone", WAIT, || async {
        let s = synced(&c, "database", &ns).await;
        (s.len() == 1 && s[0].service.address == "10.10.0.6").then_some(())
    })
    .await;

    // Annotation change: new tags reach Consul.
    service(&client, &ns, "cache", 6379, json!({"concord.io/sync": "true", "concord.io/tags": "hot"})).await;
    eventually("cache tagged hot", WAIT, || async {
        (health(&c, "cache", &["hot"], false).await.len() == 1).then_some(())
    })
    .await;

    // Services deleted: nothing they registered is left.
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    for name in ["api-v1", "api-v2", "database", "cache"] {
        services.delete(name, &DeleteParams::default()).await.expect("delete");
    }
    eventually("catalog emptied", WAIT, || async {
        let mut left = 0;
        for name in ["api", "database", "cache"] {
            left += synced(&c, name, &ns).await.len();
        }
        (left == 0).then_some(())
    })
    .await;
    assert!(support::sync_owned(&c, &ns).await.is_empty(), "nothing of ours left on any node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_service_becomes_a_kubernetes_service_of_its_passing_instances_and_goes_away_with_it() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("sync-tok8s").await;
    let c = consul_client(consul_env);
    let name = "billing";
    register_external(&c, "vm-b1", "10.20.0.1", name, 8080, CheckStatus::Passing).await;
    register_external(&c, "vm-b2", "10.20.0.2", name, 8080, CheckStatus::Passing).await;
    register_external(&c, "vm-b3", "10.20.0.3", name, 8080, CheckStatus::Critical).await;
    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(json!({"toKubernetes": {"enabled": true}}))).await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;

    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns);
    let ready_addresses = || slice_addresses(&slices, "billing", true);
    let svc = eventually("Service billing", WAIT, || async { services.get_opt(name).await.ok().flatten() }).await;
    assert_eq!(svc.metadata.labels.as_ref().expect("labels")["app.kubernetes.io/managed-by"], "concord");
    assert_eq!(svc.metadata.annotations.as_ref().expect("annotations")["concord.io/consul-service"], "billing");
    assert!(svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_none(), "selector-less");
    eventually("2 ready addresses", WAIT, || async {
        ready_addresses().await.filter(|a| *a == ["10.20.0.1", "10.20.0.2"])
    })
    .await;

    register_external(&c, "vm-b3", "10.20.0.3", name, 8080, CheckStatus::Passing).await;
    eventually("3 ready addresses", WAIT, || async { ready_addresses().await.filter(|a| a.len() == 3) }).await;
    register_external(&c, "vm-b1", "10.20.0.1", name, 8080, CheckStatus::Critical).await;
    eventually("critical instance leaves the slice", WAIT, || async {
        ready_addresses().await.filter(|a| *a == ["10.20.0.2", "10.20.0.3"])
    })
    .await;

    for node in ["vm-b1", "vm-b2", "vm-b3"] {
        deregister_external(&c, node, name).await;
    }
    eventually("Service billing gone", WAIT, || async {
        services.get_opt(name).await.ok().flatten().is_none().then_some(())
    })
    .await;
    eventually("its slices gone", WAIT, || async { ready_addresses().await.filter(|a| a.is_empty()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_loops_back_and_nothing_owned_by_others_is_touched() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("sync-loops").await;
    let c = consul_client(consul_env);
    let services = Api::<Service>::namespaced(client.clone(), &ns);

    // Someone else's "orders" instance (another node) and a Service concord does not own
    // under the name a Consul service wants.
    register_external(&c, "vm-orders", "10.30.0.9", "orders", 9000, CheckStatus::Passing).await;
    let foreign_before = health(&c, "orders", &[], false).await;
    assert_eq!(foreign_before.len(), 1);
    service(&client, &ns, "inventory-clash", 80, json!({"owner": "someone-else"})).await;
    register_external(&c, "vm-inv", "10.30.0.2", "inventory-clash", 7000, CheckStatus::Passing).await;
    register_external(&c, "vm-inv", "10.30.0.1", "inventory", 7000, CheckStatus::Passing).await;

    // A Kubernetes Service synced to Consul under the same name "orders".
    service(&client, &ns, "orders", 80, json!({})).await;
    slice(&client, &ns, "orders", 9000, &[("10.30.0.10", true)]).await;

    external_cluster(
        &client,
        &ns,
        &consul_env.http_addrs(),
        Some(json!({"toConsul": {"enabled": true, "defaultSync": true}, "toKubernetes": {"enabled": true},
                    "antiEntropyInterval": "2s"})),
    )
    .await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;

    eventually("orders synced next to the foreign one", WAIT, || async {
        (synced(&c, "orders", &ns).await.len() == 1).then_some(())
    })
    .await;
    let mirrored =
        eventually("inventory mirrored", WAIT, || async { services.get_opt("inventory").await.ok().flatten() }).await;
    assert_eq!(mirrored.metadata.labels.as_ref().expect("labels")["concord.io/sync-identity"], format!("{ns}-consul"));

    // A marker that passes through both directions after everything above: once it is
    // through, the sync has seen (and decided on) the earlier state.
    register_external(&c, "vm-mark", "10.30.0.99", "loops-marker", 1, CheckStatus::Passing).await;
    service(&client, &ns, "k8s-marker", 80, json!({})).await;
    slice(&client, &ns, "k8s-marker", 1, &[("10.30.0.98", true)]).await;
    eventually("markers through", WAIT, || async {
        let k8s = services.get_opt("loops-marker").await.ok().flatten().is_some();
        let consul = synced(&c, "k8s-marker", &ns).await.len() == 1;
        (k8s && consul).then_some(())
    })
    .await;
    // Let a few anti-entropy passes (every 2 s) run over the foreign instance: wait for
    // the status the sync writes to report the clash, which needs a full catalog round.
    let dcs = Api::<concord::resources::DiscoveryCluster>::namespaced(client.clone(), &ns);
    eventually("clash reported in status", WAIT, || async {
        let dc = dcs.get("consul").await.ok()?;
        let clashes = dc.status?.sync?.name_clashes;
        clashes.iter().any(|l| l.starts_with("inventory-clash:")).then_some(())
    })
    .await;

    // Synced "orders" never came back as a mirrored Service; the only "orders" is ours.
    let orders = services.get("orders").await.expect("orders");
    assert!(orders.metadata.labels.as_ref().is_none_or(|l| !l.contains_key("concord.io/sync-identity")));
    let mirrored_names: Vec<String> = services
        .list(&ListParams::default().labels("concord.io/sync-identity"))
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|s| s.metadata.annotations.as_ref()?.get("concord.io/consul-service").cloned())
        .collect();
    assert!(!mirrored_names.iter().any(|n| n == "orders" || n == "k8s-marker"), "{mirrored_names:?}");
    // The external "inventory" was never registered back from its mirror.
    let inv = health(&c, "inventory", &[], false).await;
    assert_eq!(inv.len(), 1);
    assert!(!inv[0].service.meta.contains_key("external-source"));
    // The clashing Service was left alone, and an Event says why.
    let clash = services.get("inventory-clash").await.expect("clash svc");
    assert_eq!(clash.metadata.annotations.as_ref().expect("ann")["owner"], "someone-else");
    assert!(clash.metadata.labels.as_ref().is_none_or(|l| !l.contains_key("concord.io/sync-identity")));
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns);
    eventually("ServiceNameClash event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("ServiceNameClash")).then_some(())
    })
    .await;

    // Someone else's registration on one of our own nodes, without our identity: left alone
    // too (and that node is not removed when the sync is turned off).
    let node = support::sync_nodes(&c, &ns).await.into_iter().next().expect("the sync has a node");
    c.catalog_register(&CatalogRegistration {
        node: node.clone(),
        address: "127.0.0.1".into(),
        service: Some(NodeService { id: "squatter".into(), service: "squatter".into(), port: 1, ..Default::default() }),
        skip_node_update: true,
        ..Default::default()
    })
    .await
    .expect("register on sync node");

    // Deleting our "orders" removes ours only; the foreign one is unchanged.
    services.delete("orders", &DeleteParams::default()).await.expect("delete orders");
    eventually("our orders instance gone", WAIT, || async { synced(&c, "orders", &ns).await.is_empty().then_some(()) })
        .await;
    let foreign_after = health(&c, "orders", &[], false).await;
    assert_eq!(foreign_after.len(), 1);
    assert_eq!(foreign_after[0].service.modify_index, foreign_before[0].service.modify_index);

    // Turning the direction off removes what it registered, and only that.
    let patch = json!({"spec": {"sync": {"toConsul": {"enabled": false, "defaultSync": true},
                                         "toKubernetes": {"enabled": true}, "antiEntropyInterval": "2s"}}});
    dcs.patch("consul", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("turn off");
    eventually("k8s-marker removed when sync is off", WAIT, || async {
        synced(&c, "k8s-marker", &ns).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(health(&c, "squatter", &[], false).await.len(), 1, "foreign instance on our node survives");
    assert_eq!(health(&c, "orders", &[], false).await.len(), 1);

    for (node, name) in
        [("vm-orders", "orders"), ("vm-inv", "inventory"), ("vm-inv", "inventory-clash"), ("vm-mark", "loops-marker")]
    {
        deregister_external(&c, node, name).await;
    }
    let _ = c
        .catalog_deregister(&CatalogDeregistration { node, service_id: "squatter".into(), ..Default::default() })
        .await;
}

/// More mirrored services than Consul's default per-client connection limit (200): the
/// sync must watch the catalog with a fixed number of connections, not one per service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_consul_services_are_mirrored_over_a_fixed_number_of_watches() {
    const SERVICES: usize = 300;
    const NODES: usize = 10;
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::ConsulCluster::start(Default::default()).await.expect("own Consul");
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("sync-many").await;
    let c = consul_client(&consul_env);

    // 300 services with one checked instance each over 10 nodes, plus a second instance
    // of scale-0, registered through /v1/txn (chunked at 64 operations).
    let instance = |i: usize, n: usize, status: CheckStatus| {
        let id = format!("scale-{i}-{n}");
        let node = format!("vm-scale-{n}");
        let service = NodeService {
            id: id.clone(),
            service: format!("scale-{i}"),
            address: format!("10.40.{}.{}", i / 200, i % 200 + n + 1),
            port: 8000,
            ..Default::default()
        };
        let check = HealthCheck {
            node: node.clone(),
            check_id: format!("{id}-alive"),
            name: "alive".into(),
            status,
            service_id: id,
            ..Default::default()
        };
        [consul::TxnOp::ServiceSet { node, service }, consul::TxnOp::CheckSet(check)]
    };
    let mut ops: Vec<consul::TxnOp> = (0..NODES)
        .map(|n| {
            consul::TxnOp::NodeSet(consul::Node {
                node: format!("vm-scale-{n}"),
                address: format!("10.41.0.{n}"),
                ..Default::default()
            })
        })
        .collect();
    for i in 0..SERVICES {
        ops.extend(instance(i, i % NODES, CheckStatus::Passing));
    }
    ops.extend(instance(0, 1, CheckStatus::Passing));
    let outcome = c.txn_chunked(&ops).await.expect("txn");
    assert!(matches!(outcome, consul::TxnOutcome::Committed(_)), "{outcome:?}");

    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(json!({"toKubernetes": {"enabled": true}}))).await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;

    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns);
    let mirrored = ListParams::default().labels(&format!("concord.io/sync-identity={ns}-consul"));
    let all_slow = Duration::from_secs(30);
    eventually("all 300 Services mirrored", all_slow, || async {
        let n = services.list_metadata(&mirrored).await.ok()?.items.len();
        (n == SERVICES).then_some(())
    })
    .await;
    eventually("all 300 services have a slice with their ready address", all_slow, || async {
        (ready_total(&slices, &mirrored).await? == SERVICES + 1).then_some(())
    })
    .await;

    // The point: a fixed number of connections to Consul, not one per service (Consul
    // answers 429 beyond 200 per client IP by default). Only this process talks to this
    // Consul's HTTP ports: the controller, plus this test's own client.
    let open = support::consul_connections(&consul_env.http_addrs());
    assert!(open < 64, "{open} connections to Consul for {SERVICES} mirrored services");

    // One of scale-0's two instances goes critical: it leaves the slice, the other stays.
    let ready_of = |name: &'static str| slice_addresses(&slices, name, true);
    assert_eq!(ready_of("scale-0").await.expect("slices"), ["10.40.0.1", "10.40.0.2"]);
    let [_, critical] = instance(0, 1, CheckStatus::Critical);
    let outcome = c.txn(&[critical]).await.expect("txn");
    assert!(matches!(outcome, consul::TxnOutcome::Committed(_)), "{outcome:?}");
    eventually("critical instance leaves scale-0's slice", WAIT, || async {
        ready_of("scale-0").await.filter(|a| *a == ["10.40.0.1"])
    })
    .await;

    // Every service's first instance goes critical at once (one check write each): every
    // slice empties but for scale-0's second instance, now the only ready one... and back.
    let flip = |status: CheckStatus| -> Vec<consul::TxnOp> {
        (0..SERVICES).map(|i| instance(i, i % NODES, status)).map(|[_, check]| check).collect()
    };
    c.txn_chunked(&flip(CheckStatus::Critical)).await.expect("txn");
    eventually("all 300 first instances out of their slices", all_slow, || async {
        (ready_total(&slices, &mirrored).await? == 0).then_some(())
    })
    .await;
    c.txn_chunked(&flip(CheckStatus::Passing)).await.expect("txn");
    eventually("all 300 first instances back", all_slow, || async {
        (ready_total(&slices, &mirrored).await? == SERVICES).then_some(())
    })
    .await;

    // A service deregistered in Consul goes away in Kubernetes, the others stay.
    c.catalog_deregister(&CatalogDeregistration {
        node: "vm-scale-7".into(),
        service_id: "scale-7-7".into(),
        ..Default::default()
    })
    .await
    .expect("deregister");
    eventually("scale-7 gone", WAIT, || async {
        services.get_opt("scale-7").await.ok().flatten().is_none().then_some(())
    })
    .await;
    assert_eq!(services.list_metadata(&mirrored).await.expect("list").items.len(), SERVICES - 1);
}

/// The endpoint addresses, sorted, of Service `service`'s EndpointSlices: only the ready
/// ones with `ready_only`.
async fn slice_addresses(slices: &Api<EndpointSlice>, service: &str, ready_only: bool) -> Option<Vec<String>> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let list = slices.list(&lp).await.ok()?;
    let mut addrs: Vec<String> = list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| !ready_only || e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.clone())
        .collect();
    addrs.sort();
    Some(addrs)
}

/// Ready endpoints over every slice matching `lp`.
async fn ready_total(slices: &Api<EndpointSlice>, lp: &ListParams) -> Option<usize> {
    let list = slices.list(lp).await.ok()?;
    Some(
        list.items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count(),
    )
}

/// Instances left by the one-node layout of earlier versions (every instance on
/// `k8s-sync-<identity>`) move to their own nodes at start, atomically (a reader never
/// sees the instance missing or twice); an orphan there is removed, and so is the old node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_an_old_layout_node_move_to_their_nodes_without_a_gap() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("sync-move").await;
    let c = consul_client(consul_env);
    let identity = concord::sync::SyncIdentity::new(&format!("{ns}-consul"));
    service(&client, &ns, "moving", 80, json!({"concord.io/sync": "true"})).await;
    slice(&client, &ns, "moving", 80, &[("10.20.0.1", true)]).await;

    // What an earlier version left: our node meta, our instance meta, a passing check.
    let legacy = format!("k8s-sync-{ns}-consul");
    let instance = |svc: &str, addr: &str| {
        let id = format!("{ns}-{svc}-{addr}-80");
        let service = NodeService {
            id: id.clone(),
            service: svc.into(),
            address: addr.into(),
            port: 80,
            meta: [
                ("external-source", "kubernetes"),
                ("k8s-namespace", ns.as_str()),
                ("k8s-service", svc),
                ("concord-sync", identity.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        };
        let check = HealthCheck {
            node: legacy.clone(),
            check_id: format!("{id}/ready"),
            name: "Kubernetes readiness".into(),
            status: CheckStatus::Passing,
            service_id: id,
            ..Default::default()
        };
        [consul::TxnOp::ServiceSet { node: legacy.clone(), service }, consul::TxnOp::CheckSet(check)]
    };
    let mut ops = vec![consul::TxnOp::NodeSet(concord::sync::to_consul::sync_node(&identity, &legacy))];
    ops.extend(instance("moving", "10.20.0.1"));
    ops.extend(instance("gone", "10.20.0.9"));
    assert!(matches!(c.txn(&ops).await.expect("txn"), consul::TxnOutcome::Committed(_)));
    let moving_id = format!("{ns}-moving-10.20.0.1-80");
    assert_ne!(identity.node_of(&moving_id), legacy);

    // A reader polling the passing instances for the whole move.
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut reads = 0;
            while !stop.is_cancelled() {
                seen.insert(health(&c, "moving", &[], true).await.len());
                reads += 1;
            }
            (seen, reads)
        })
    };
    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(json!({"toConsul": {"enabled": true}}))).await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;
    eventually("instance on its node, orphan and old node gone", WAIT, || async {
        let owned = support::sync_owned(&c, &ns).await;
        let legacy_left = c.catalog_node_services(&legacy, &QueryOptions::default()).await.ok()?.value.is_some();
        // Ready: registered without a check (the legacy passing check is gone with it).
        let placed = owned
            .get(&moving_id)
            .is_some_and(|(node, status)| *node == identity.node_of(&moving_id) && status.is_none());
        (placed && owned.len() == 1 && !legacy_left).then_some(())
    })
    .await;
    assert!(health(&c, "gone", &[], false).await.is_empty(), "the orphan is removed");
    stop.cancel();
    let (seen, reads) = reader.await.expect("reader");
    assert!(reads > 0);
    assert_eq!(seen, BTreeSet::from([1]), "passing instances seen during the move ({reads} reads)");
}

/// An address change in Consul that leaves the checks alone (an agent re-registering its
/// service elsewhere), over plain HTTP (HTTP/1.1; over HTTPS see tests/mirror_watch.rs):
/// neither watch says which service changed, so after such a change
/// the sync re-reads every mirrored service, at most every 15 s — long before the
/// anti-entropy pass (10 minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_address_change_without_a_check_change_reaches_kubernetes_before_anti_entropy() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("sync-readdr").await;
    let c = consul_client(consul_env);
    let name = "relocating";
    register_external(&c, "vm-r1", "10.21.0.1", name, 8080, CheckStatus::Passing).await;
    external_cluster(
        &client,
        &ns,
        &consul_env.http_addrs(),
        Some(json!({"toKubernetes": {"enabled": true}, "antiEntropyInterval": "10m"})),
    )
    .await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns);
    let addresses = || slice_addresses(&slices, "relocating", false);
    eventually("mirrored at its first address", WAIT, || async {
        addresses().await.filter(|a| *a == ["10.21.0.1"]).map(|_| ())
    })
    .await;

    let check_index = || async { health(&c, name, &[], false).await.first().map(|e| e.checks[0].modify_index) };
    let before = check_index().await;
    register_external(&c, "vm-r1", "10.21.0.2", name, 8080, CheckStatus::Passing).await;
    assert_eq!(check_index().await, before, "the check did not change: the check watch cannot see this");
    eventually("mirrored at its new address", Duration::from_secs(60), || async {
        addresses().await.filter(|a| *a == ["10.21.0.2"]).map(|_| ())
    })
    .await;
    deregister_external(&c, "vm-r1", name).await;
}

/// Turning the sync off at a size where one node holds more than a transaction's worth of
/// instances (1,200 on the 16 nodes, about 75 each): a node deleted whole takes all of its
/// services with it in one Raft entry, so the larger nodes are emptied 64 services at a
/// time first. Everything of ours goes, the nodes too, and someone else's service on one
/// of our nodes stays, with its node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_the_sync_off_removes_large_nodes_whole_and_leaves_others_alone() {
    let kube_env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = kube_env.client().await;
    install_crds(&client).await;
    let ns = kube_env.create_namespace("sync-off-large").await;
    let c = consul_client(consul_env);
    let addrs: Vec<String> = (0..600).map(|i| format!("10.30.{}.{}", i / 250, i % 250 + 1)).collect();
    for name in ["bulk-a", "bulk-b"] {
        service(&client, &ns, name, 80, json!({"concord.io/sync": "true"})).await;
        let endpoints: Vec<(&str, bool)> = addrs.iter().map(|a| (a.as_str(), true)).collect();
        slice(&client, &ns, name, 80, &endpoints).await;
    }
    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(json!({"toConsul": {"enabled": true}}))).await;
    let _controller = start_controller(client.clone(), &ns, &[]).await;
    eventually("1,200 instances synced", Duration::from_secs(60), || async {
        (support::sync_owned(&c, &ns).await.len() == 1_200).then_some(())
    })
    .await;
    let nodes = support::sync_nodes(&c, &ns).await;
    assert_eq!(nodes.len(), 16);
    let mut held = Vec::new();
    for node in &nodes {
        let services = c.catalog_node_services(node, &QueryOptions::default()).await.expect("node").value;
        held.push(services.map_or(0, |s| s.services.len()));
    }
    assert!(held.iter().any(|n| *n > 64), "some node holds more than 64 instances: {held:?}");
    let squatted = nodes[0].clone();
    c.catalog_register(&CatalogRegistration {
        node: squatted.clone(),
        address: "127.0.0.1".into(),
        service: Some(NodeService {
            id: "squatter-large".into(),
            service: "squatter-large".into(),
            port: 1,
            ..Default::default()
        }),
        skip_node_update: true,
        ..Default::default()
    })
    .await
    .expect("register on sync node");

    let dcs = Api::<concord::resources::DiscoveryCluster>::namespaced(client.clone(), &ns);
    let patch = json!({"spec": {"sync": {"toConsul": {"enabled": false}}}});
    dcs.patch("consul", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("turn off");
    eventually("every instance and every emptied node removed", Duration::from_secs(60), || async {
        let owned = support::sync_owned(&c, &ns).await;
        let nodes = support::sync_nodes(&c, &ns).await;
        (owned.is_empty() && nodes == [squatted.clone()]).then_some(())
    })
    .await;
    assert_eq!(health(&c, "squatter-large", &[], false).await.len(), 1, "someone else's instance stays");
    let _ = c
        .catalog_deregister(&CatalogDeregistration {
            node: squatted,
            service_id: "squatter-large".into(),
            ..Default::default()
        })
        .await;
}
