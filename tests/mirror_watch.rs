//! Consul → Kubernetes over HTTP/2, against a real TLS Consul (3 servers, HTTPS only) and
//! a real API server: each mirrored service has a blocking query of its own, so a change
//! the checks do not show (an address or a port, nothing else) reaches the EndpointSlice
//! by itself, with anti-entropy 10 minutes away and no catalog rescan in this mode; and
//! 400 services (more than Go's 250 streams on one connection, more than Consul's 200
//! connections per client) are watched over a few connections with no `429`.
mod support;

use concord::consul::{self, CheckStatus, HealthCheck, NodeService, QueryOptions};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use support::{cpu_time, eventually, install_crds, load, start_controller};

/// Generous: the change comes from a blocking query that Consul wakes at once. What
/// it rules out is the anti-entropy pass (10 minutes); the rescan of HTTP/1.1 mode does
/// not run over HTTP/2 (the log line checked below says which mode ran).
const CHANGE: Duration = Duration::from_secs(30);
const MODE_LINE: &str = "one blocking query per mirrored service";

/// A DiscoveryCluster `consul` in `ns` for `cluster` (its CA from a Secret), mirroring
/// Consul into Kubernetes with anti-entropy every 10 minutes.
async fn mirror(kube: &kube::Client, ns: &str, cluster: &testenv::ConsulCluster) {
    let mut spec = json!({
        "external": { "address": cluster.http_addrs().join(",") },
        "sync": { "toKubernetes": { "enabled": true }, "antiEntropyInterval": "10m" },
    });
    spec["external"]["caSecretRef"] = support::ca_secret_ref(kube, ns, cluster).await.expect("a TLS cluster");
    let dc = json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": { "name": "consul", "namespace": ns }, "spec": spec,
    });
    Api::<concord::resources::DiscoveryCluster>::namespaced(kube.clone(), ns)
        .patch("consul", &PatchParams::apply("concord-test").force(), &Patch::Apply(&dc))
        .await
        .expect("DiscoveryCluster");
}

/// One instance of `service` on `node`, with a passing check of its own.
fn instance(node: &str, service: &str, addr: &str, port: u16) -> [consul::TxnOp; 2] {
    let id = format!("{service}-{node}");
    let check = HealthCheck {
        node: node.into(),
        check_id: format!("{id}-alive"),
        name: "alive".into(),
        status: CheckStatus::Passing,
        service_id: id.clone(),
        ..Default::default()
    };
    let service = NodeService { id, service: service.into(), address: addr.into(), port, ..Default::default() };
    [consul::TxnOp::ServiceSet { node: node.into(), service }, consul::TxnOp::CheckSet(check)]
}

fn node(name: &str, addr: &str) -> consul::TxnOp {
    consul::TxnOp::NodeSet(consul::Node { node: name.into(), address: addr.into(), ..Default::default() })
}

async fn commit(c: &consul::Client, ops: &[consul::TxnOp]) {
    let outcome = c.txn_chunked(ops).await.expect("txn");
    assert!(matches!(outcome, consul::TxnOutcome::Committed(_)), "{outcome:?}");
}

/// (address, port) of every endpoint of Service `service`'s EndpointSlices, sorted.
async fn endpoints(slices: &Api<EndpointSlice>, service: &str) -> Option<Vec<(String, i32)>> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let mut out: Vec<(String, i32)> = Vec::new();
    for s in slices.list(&lp).await.ok()?.items {
        let port = s.ports.iter().flatten().find_map(|p| p.port).unwrap_or_default();
        out.extend(s.endpoints.iter().flat_map(|e| e.addresses.clone()).map(|a| (a, port)));
    }
    out.sort();
    Some(out)
}

/// The check's index of `service`'s first instance: unchanged means the check watch of
/// HTTP/1.1 mode could not have seen the change.
async fn check_index(c: &consul::Client, service: &str) -> Option<u64> {
    let entries = c.health_service(service, &[], false, &QueryOptions::default()).await.ok()?.value;
    entries.first().and_then(|e| e.checks.iter().find(|c| !c.service_id.is_empty())).map(|c| c.modify_index.0)
}

/// Log lines of this process that say a watch or a read of Consul failed, a `429` among
/// them (over TLS Consul's connection limit may also surface as a broken handshake).
fn watch_failures() -> Vec<String> {
    support::sweep::captured_logs()
        .lines()
        .filter(|l| {
            l.contains("Too Many Requests") || l.contains("watch failed") || l.contains("cannot read Consul service")
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_or_port_change_alone_reaches_the_slice_over_http2() {
    support::sweep::capture_logs();
    let consul_env = testenv::shared_consul_tls().await;
    let c = consul::Client::new(support::consul_config(consul_env)).expect("client");
    // The client takes HTTP/2 from Consul's HTTPS listener (ALPN).
    assert_eq!(c.http_version().await.expect("version"), reqwest::Version::HTTP_2);
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    install_crds(&kube).await;
    let ns = kube_env.create_namespace("mirror-h2").await;
    let name = format!("moving-{ns}");
    let vm = format!("vm-{ns}");
    let mut ops = vec![node(&vm, "10.23.0.100")];
    ops.extend(instance(&vm, &name, "10.23.0.1", 8080));
    commit(&c, &ops).await;
    mirror(&kube, &ns, consul_env).await;
    let _controller = start_controller(kube.clone(), &ns, &[]).await;
    let slices = Api::<EndpointSlice>::namespaced(kube.clone(), &ns);
    let at = |addr: &str, port: i32| vec![(addr.to_string(), port)];
    eventually("mirrored at its first address", Duration::from_secs(60), || async {
        endpoints(&slices, &name).await.filter(|e| *e == at("10.23.0.1", 8080))
    })
    .await;
    assert!(support::sweep::captured_logs().contains(MODE_LINE), "the sync watches per service over HTTP/2");

    // Address only: the instance re-registered elsewhere, its check untouched.
    let before = check_index(&c, &name).await;
    assert!(before.is_some());
    commit(&c, &instance(&vm, &name, "10.23.0.2", 8080)[..1]).await;
    assert_eq!(check_index(&c, &name).await, before, "the check did not change");
    eventually("the new address in the slice", CHANGE, || async {
        endpoints(&slices, &name).await.filter(|e| *e == at("10.23.0.2", 8080))
    })
    .await;

    // Port only.
    commit(&c, &instance(&vm, &name, "10.23.0.2", 9090)[..1]).await;
    assert_eq!(check_index(&c, &name).await, before, "the check did not change");
    eventually("the new port in the slice", CHANGE, || async {
        endpoints(&slices, &name).await.filter(|e| *e == at("10.23.0.2", 9090))
    })
    .await;
    assert_eq!(watch_failures(), Vec::<String>::new());
    c.catalog_deregister(&consul::CatalogDeregistration { node: vm, ..Default::default() }).await.expect("cleanup");
}

/// 400 services: 400 blocking queries would be 400 connections over HTTP/1.1 (Consul
/// refuses a client more than 200) and more streams than one HTTP/2 connection carries
/// (250). Spread over pools of 200, every one of them is live: an address-only change
/// to all 400 reaches all 400 slices, with no `429` on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hundred_services_are_watched_one_query_each_over_a_few_connections() {
    const SERVICES: usize = 400;
    const NODES: usize = 10;
    support::sweep::capture_logs();
    // A cluster of its own: only this process talks to it, so its connections count.
    let opts = testenv::ConsulOptions { tls: true, ..Default::default() };
    let consul_env = testenv::ConsulCluster::start(opts).await.expect("TLS Consul");
    let c = consul::Client::new(support::consul_config(&consul_env)).expect("client");
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    install_crds(&kube).await;
    let ns = kube_env.create_namespace("mirror-h2-many").await;

    let addr = |i: usize, round: usize| format!("10.{}.{}.{}", 50 + round, i / 200, i % 200 + 1);
    let vm = |i: usize| format!("vm-many-{}", i % NODES);
    let register = |round: usize, with_checks: bool| -> Vec<consul::TxnOp> {
        let mut ops: Vec<consul::TxnOp> = Vec::new();
        for i in 0..SERVICES {
            let [service, check] = instance(&vm(i), &format!("many-{i}"), &addr(i, round), 8000);
            ops.push(service);
            if with_checks {
                ops.push(check);
            }
        }
        ops
    };
    let mut ops: Vec<consul::TxnOp> = (0..NODES).map(|n| node(&vm(n), &format!("10.49.0.{n}"))).collect();
    ops.extend(register(0, true));
    commit(&c, &ops).await;
    mirror(&kube, &ns, &consul_env).await;
    let _controller = start_controller(kube.clone(), &ns, &[]).await;

    let services = Api::<Service>::namespaced(kube.clone(), &ns);
    let slices = Api::<EndpointSlice>::namespaced(kube.clone(), &ns);
    let mirrored = ListParams::default().labels(&format!("concord.io/sync-identity={ns}-consul"));
    let addresses = || async {
        let list = slices.list(&mirrored).await.ok()?;
        Some(
            list.items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .flat_map(|e| e.addresses.clone())
                .collect::<BTreeSet<_>>(),
        )
    };
    let round = |r: usize| (0..SERVICES).map(|i| addr(i, r)).collect::<BTreeSet<_>>();
    eventually("all 400 mirrored", Duration::from_secs(120), || async {
        let n = services.list_metadata(&mirrored).await.ok()?.items.len();
        (n == SERVICES && addresses().await? == round(0)).then_some(())
    })
    .await;

    // Every service moves, checks untouched: only its own blocking query can tell.
    let before = check_index(&c, "many-399").await;
    commit(&c, &register(1, false)).await;
    assert_eq!(check_index(&c, "many-399").await, before, "the checks did not change");
    eventually("all 400 at their new addresses", Duration::from_secs(60), || async {
        (addresses().await? == round(1)).then_some(())
    })
    .await;
    assert!(support::sweep::captured_logs().contains(MODE_LINE), "the sync watches per service over HTTP/2");
    assert_eq!(watch_failures(), Vec::<String>::new());

    // Two pools of 200 watches (each one connection), the catalog watch's connection,
    // this test's own: a handful, nowhere near one per service.
    let open = support::consul_connections(&consul_env.http_addrs());
    assert!((3..=12).contains(&open), "{open} connections to Consul for {SERVICES} watched services");
}

/// What the measurement reads from its environment: a number, else `default`.
fn measure_env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Every EndpointSlice of `ns`, followed by a watch: service → (its endpoints, when the
/// watch delivered them). Delivery times, not polls, so a change is timed to the event.
type Seen =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (Vec<(String, i32)>, std::time::Instant)>>>;

fn follow_slices(kube: &kube::Client, ns: &str) -> (Seen, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let seen: Seen = Default::default();
    let api = Api::<EndpointSlice>::namespaced(kube.clone(), ns);
    let into = seen.clone();
    let task = tokio::spawn(async move {
        let of = |s: &EndpointSlice| {
            let service = s.metadata.labels.as_ref()?.get("kubernetes.io/service-name")?.clone();
            let port = s.ports.iter().flatten().find_map(|p| p.port).unwrap_or_default();
            let mut eps: Vec<(String, i32)> =
                s.endpoints.iter().flat_map(|e| e.addresses.clone()).map(|a| (a, port)).collect();
            eps.sort();
            Some((service, eps))
        };
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = events.next().await {
            let now = std::time::Instant::now();
            let Ok(mut map) = into.lock() else { return };
            match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    if let Some((service, eps)) = of(&s) {
                        map.insert(service, (eps, now));
                    }
                }
                Ok(watcher::Event::Delete(s)) => {
                    if let Some((service, _)) = of(&s) {
                        map.insert(service, (Vec::new(), now));
                    }
                }
                _ => {}
            }
        }
    });
    (seen, task)
}

/// Waits until `service`'s endpoints satisfy `done`; how long after `since` the watch
/// delivered them.
async fn delivered(
    seen: &Seen,
    service: &str,
    since: std::time::Instant,
    done: impl Fn(&[(String, i32)]) -> bool,
) -> Duration {
    let deadline = since + Duration::from_secs(120);
    loop {
        if let Some((eps, at)) = seen.lock().ok().and_then(|m| m.get(service).cloned())
            && at >= since
            && done(&eps)
        {
            return at.duration_since(since);
        }
        assert!(std::time::Instant::now() < deadline, "{service}: change not delivered within 120 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// p50 / p99 / max of `took`, in ms.
fn percentiles(took: &mut [Duration]) -> String {
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1].as_millis();
    format!("p50 {} / p99 {} / max {} ms ({} changes)", at(0.50), at(0.99), at(1.0), took.len())
}

/// The kinds of change the measurement makes to a mirrored service.
#[derive(Clone, Copy)]
enum Change {
    Address,
    Port,
    Critical,
    SecondInstance,
    NewService,
}

impl Change {
    const ALL: [Change; 5] =
        [Change::Address, Change::Port, Change::Critical, Change::SecondInstance, Change::NewService];

    fn label(self) -> &'static str {
        match self {
            Change::Address => "address only",
            Change::Port => "port only",
            Change::Critical => "turns critical",
            Change::SecondInstance => "second instance",
            Change::NewService => "new service",
        }
    }
}

/// A bounded measurement, run by hand (`--ignored`), alone: `MIRROR_MEASURE_SERVICES`
/// mirrored services (default 1,000), over HTTP/2 (TLS Consul, one query per service) and
/// over HTTP/1.1 (plain Consul, the two catalog-wide queries and the rescan), as
/// `MIRROR_MEASURE_MODES` says (`h2,h1` by default). Each Consul server's CPU over the
/// start, over 20 s with the watches idle and over the changes:
/// `MIRROR_MEASURE_CHANGES` changes of each kind (address only, port only, the instance
/// turning critical, a second instance added, a new service), one at a time on
/// different services, each timed from the commit to the watch event that delivered it
/// to the EndpointSlice; then the same writes again with nothing watching, for what the
/// writes alone cost the servers. Prints the figures (BENCHMARKS.md has them); asserts
/// only that every change arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of minutes: run by hand, alone"]
async fn measure_changes_and_consul_cpu_at_scale() {
    let services = measure_env("MIRROR_MEASURE_SERVICES", 1_000);
    let per_kind = measure_env("MIRROR_MEASURE_CHANGES", 10);
    let modes = std::env::var("MIRROR_MEASURE_MODES").unwrap_or_else(|_| "h2,h1".into());
    let nodes = (services / 50).max(1);
    support::sweep::capture_logs();
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    install_crds(&kube).await;
    for tls in [true, false] {
        if !modes.split(',').any(|m| m.trim() == if tls { "h2" } else { "h1" }) {
            continue;
        }
        let opts = testenv::ConsulOptions { tls, ..Default::default() };
        let consul_env = testenv::ConsulCluster::start(opts).await.expect("Consul");
        let c = consul::Client::new(support::consul_config(&consul_env)).expect("client");
        let mode = if tls { "HTTP/2, one query per service" } else { "HTTP/1.1, two catalog-wide queries" };
        let ns = kube_env.create_namespace(if tls { "measure-h2" } else { "measure-h1" }).await;
        let vm = |i: usize| format!("vm-m-{}", i % nodes);
        let addr = |i: usize, round: usize| format!("10.{}.{}.{}", 60 + round, i / 200, i % 200 + 1);
        let mut ops: Vec<consul::TxnOp> =
            (0..nodes).map(|n| node(&vm(n), &format!("10.59.{}.{}", n / 200, n % 200))).collect();
        ops.push(node("vm-extra", "10.58.0.1"));
        for i in 0..services {
            ops.extend(instance(&vm(i), &format!("m-{i}"), &addr(i, 0), 8000));
        }
        commit(&c, &ops).await;
        let mut spec = json!({
            "external": { "address": consul_env.http_addrs().join(",") },
            "sync": { "toKubernetes": { "enabled": true }, "antiEntropyInterval": "10m" },
        });
        if let Some(ca) = support::ca_secret_ref(&kube, &ns, &consul_env).await {
            spec["external"]["caSecretRef"] = ca;
        }
        let dc = json!({
            "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
            "metadata": { "name": "consul", "namespace": ns }, "spec": spec,
        });
        Api::<concord::resources::DiscoveryCluster>::namespaced(kube.clone(), &ns)
            .patch("consul", &PatchParams::apply("concord-test").force(), &Patch::Apply(&dc))
            .await
            .expect("DiscoveryCluster");
        let (seen, follower) = follow_slices(&kube, &ns);
        let pids = consul_env.pids();
        let leader = consul_env.leader_index().await;
        let servers_cpu = |since: &[Duration]| -> String {
            pids.iter()
                .zip(since)
                .enumerate()
                .map(|(i, (p, b))| {
                    let role = if Some(i) == leader { "leader" } else { "follower" };
                    let first = if i == 0 { ", holds the connections" } else { "" };
                    let used = cpu_time(*p).unwrap_or_default().saturating_sub(*b);
                    format!("s{i} ({role}{first}) {:.2} s", used.as_secs_f64())
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let cpu_now = || -> Vec<Duration> { pids.iter().map(|p| cpu_time(*p).unwrap_or_default()).collect() };
        let at_start = cpu_now();
        let started = std::time::Instant::now();
        let controller = start_controller(kube.clone(), &ns, &[]).await;
        let limit = Duration::from_secs((services as u64 / 5).max(300));
        loop {
            let have = seen.lock().map(|m| m.values().filter(|(e, _)| !e.is_empty()).count()).unwrap_or(0);
            if have >= services {
                break;
            }
            assert!(started.elapsed() < limit, "{have} of {services} mirrored after {limit:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!(
            "[{mode}] {services} services mirrored (slices seen) after {:.1} s; Consul CPU meanwhile: {} (load {})",
            started.elapsed().as_secs_f64(),
            servers_cpu(&at_start),
            load()
        );
        tokio::time::sleep(Duration::from_secs(10)).await;

        let before = cpu_now();
        let idle = Duration::from_secs(20);
        tokio::time::sleep(idle).await;
        println!("[{mode}] Consul CPU over {idle:?} idle: {} (load {})", servers_cpu(&before), load());

        let changes = if tls { per_kind } else { per_kind.min(4) };
        // What each kind of change writes to service `i`, and how its slice shows it.
        let change = |kind: Change, i: usize| -> Vec<consul::TxnOp> {
            let name = format!("m-{i}");
            match kind {
                Change::Address => instance(&vm(i), &name, &addr(i, 1), 8000)[..1].to_vec(),
                Change::Port => instance(&vm(i), &name, &addr(i, 0), 9000)[..1].to_vec(),
                Change::Critical => {
                    let [_, consul::TxnOp::CheckSet(mut check)] = instance(&vm(i), &name, &addr(i, 0), 8000) else {
                        unreachable!("instance() is a service and its check")
                    };
                    check.status = CheckStatus::Critical;
                    vec![consul::TxnOp::CheckSet(check)]
                }
                Change::SecondInstance => instance("vm-extra", &name, &addr(i, 2), 8000).to_vec(),
                Change::NewService => instance("vm-extra", &format!("n-{i}"), &addr(i, 3), 8000).to_vec(),
            }
        };
        let arrived = |kind: Change, i: usize, e: &[(String, i32)]| match kind {
            Change::Address => e.iter().any(|(a, _)| *a == addr(i, 1)),
            Change::Port => e.iter().any(|(_, p)| *p == 9000),
            Change::Critical => e.is_empty(),
            Change::SecondInstance => e.iter().any(|(a, _)| *a == addr(i, 2)),
            Change::NewService => e.iter().any(|(a, _)| *a == addr(i, 3)),
        };
        // The Service whose slice shows a change to service `i`.
        let shown_by = |kind: Change, i: usize| match kind {
            Change::NewService => format!("n-{i}"),
            _ => format!("m-{i}"),
        };
        let pick = |n: usize| (n * 97 + 13) % services;
        let mut all = Vec::new();
        let mut next = 0usize;
        let (before, changing) = (cpu_now(), std::time::Instant::now());
        for kind in Change::ALL {
            let mut took = Vec::new();
            for _ in 0..changes {
                let i = pick(next);
                next += 1;
                let at = std::time::Instant::now();
                commit(&c, &change(kind, i)).await;
                took.push(delivered(&seen, &shown_by(kind, i), at, |e| arrived(kind, i, e)).await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            all.extend(took.iter().copied());
            println!("[{mode}] {} → EndpointSlice: {} (load {})", kind.label(), percentiles(&mut took), load());
        }
        let paced = changing.elapsed();
        println!(
            "[{mode}] Consul CPU over the {} changes ({:.1} s, 200 ms apart): {}",
            all.len(),
            paced.as_secs_f64(),
            servers_cpu(&before)
        );
        println!("[{mode}] every kind → EndpointSlice: {}", percentiles(&mut all));
        controller.stop().await;
        follower.abort();

        // The same number of changes of the same kinds, to other services, at the same
        // pace, with nothing watching: what the writes alone cost the servers.
        let (before, replay) = (cpu_now(), std::time::Instant::now());
        let total = all.len();
        for (k, kind) in Change::ALL.into_iter().flat_map(|k| std::iter::repeat_n(k, changes)).enumerate() {
            commit(&c, &change(kind, pick(next))).await;
            next += 1;
            tokio::time::sleep_until((replay + paced * (k as u32 + 1) / total as u32).into()).await;
        }
        println!(
            "[{mode}] Consul CPU over the same {total} changes with no watcher ({:.1} s): {}",
            replay.elapsed().as_secs_f64(),
            servers_cpu(&before)
        );
    }
}

/// A connection pool of its own (what each 200 watches get) keeps what the first was
/// built with: the CA and the TLS server name (servers reached by IP, checked against
/// `server.dc1.consul`); a CA that did not sign the servers stays refused there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_its_own_keeps_the_ca_and_the_tls_server_name() {
    let consul_env = testenv::shared_consul_tls().await;
    let named = support::consul_config(consul_env).tls_server_name("server.dc1.consul");
    let own = consul::Client::new(named).expect("client").with_own_connections().expect("own pool");
    assert_eq!(own.http_version().await.expect("version"), reqwest::Version::HTTP_2);
    let wrong = support::consul_config(consul_env).tls_server_name("server.dc2.consul");
    let own = consul::Client::new(wrong).expect("client").with_own_connections().expect("own pool");
    let err = own.http_version().await.expect_err("a name the certificate does not carry");
    assert!(err.is_tls_verify_failure(), "{err}");
    let other = concord::cluster::tls::new_ca("elsewhere", "other", k8s_openapi::jiff::Timestamp::now()).expect("CA");
    let untrusted = consul::ClientConfig::new(consul_env.http_addrs()).ca_pem(other.cert_pem.as_bytes().to_vec());
    let own = consul::Client::new(untrusted).expect("client").with_own_connections().expect("own pool");
    let err = own.http_version().await.expect_err("a CA that did not sign the servers");
    assert!(err.is_tls_verify_failure(), "{err}");
}
