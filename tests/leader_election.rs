//! Two real `concord controller` processes (the built binary, with a kubeconfig) against
//! the real test API server and a real 3-server Consul, competing for one Lease: only
//! the leader reconciles; SIGKILLing it hands the Lease to the standby within the Lease
//! time, and the catalog in Consul ends exactly as declared (nothing lost, nothing
//! registered twice); a SIGTERMed leader releases the Lease so the standby takes over
//! at once.
//!
//! The fence: a leader whose renewals hang (everything between it and the API server
//! stalls, behind a fault proxy) stops writing before the standby takes over, so no
//! write of the old leader lands after the new leader's first.
mod support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{eventually, external_cluster, install_crds};

const WAIT: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(3);
/// A standby looks at the Lease every LEASE/5 and takes it once it has not changed for
/// LEASE; so after the leader dies, the handover takes at most LEASE + LEASE/5 (plus
/// scheduling on a busy 2-core machine).
const HANDOVER_BOUND: Duration = Duration::from_millis(3000 + 600 + 1400);
/// The fence test's Lease: long enough that renewals on this busy machine never miss the
/// 2 s call timeout by accident (renew deadline 4 s, retry period 1.2 s).
const FENCE_LEASE: Duration = Duration::from_secs(6);

/// A controller child process; SIGKILLed when dropped.
struct Replica {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Replica {
    fn start(name: &'static str, kubeconfig: &std::path::Path, ns: &str, log_dir: &std::path::Path) -> Replica {
        Replica::start_with(name, kubeconfig, ns, log_dir, LEASE)
    }

    fn start_with(
        name: &'static str,
        kubeconfig: &std::path::Path,
        ns: &str,
        log_dir: &std::path::Path,
        lease: Duration,
    ) -> Replica {
        let addr = free_addr();
        let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(["controller", "--listen", &addr.to_string(), "--namespace", ns])
            .args(["--leader-election", "--lease-namespace", ns, "--lease-name", "concord-test"])
            .args(["--lease-duration", &format!("{}s", lease.as_secs())])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("concord binary starts");
        Replica { name, child, addr }
    }

    async fn metrics(&self) -> Option<String> {
        reqwest::get(format!("http://{}/metrics", self.addr)).await.ok()?.text().await.ok()
    }

    async fn ready(&self) -> bool {
        matches!(reqwest::get(format!("http://{}/readyz", self.addr)).await, Ok(r) if r.status().is_success())
    }

    /// `concord_leader` as this process reports it.
    async fn leads(&self) -> Option<bool> {
        let text = self.metrics().await?;
        let line = text.lines().find(|l| l.starts_with("concord_leader "))?;
        Some(line.ends_with(" 1"))
    }

    /// Reconciliations this process has run, all controllers together.
    async fn reconciliations(&self) -> u64 {
        let text = self.metrics().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("concord_reconciliations_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success());
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(start.elapsed() < timeout, "{} did not exit within {timeout:?}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// From testenv, not `bind(0)`: a parallel test's `bind(0)` may get the same port.
fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], testenv::free_port().expect("free port")))
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("concord-test").await.ok()??.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Declares Service `name` (synced to Consul as `name`) with ready endpoints `addrs`.
async fn declare(client: &kube::Client, ns: &str, name: &str, addrs: &[&str]) {
    let pp = PatchParams::apply("test").force();
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "annotations": {"concord.io/sync": "true"}},
        "spec": {"ports": [{"name": "http", "port": 80}]}});
    Api::<Service>::namespaced(client.clone(), ns).patch(name, &pp, &Patch::Apply(&svc)).await.expect("Service");
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": addrs.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()});
    Api::<EndpointSlice>::namespaced(client.clone(), ns).patch(name, &pp, &Patch::Apply(&slice)).await.expect("slice");
}

async fn undeclare(client: &kube::Client, ns: &str, name: &str) {
    let dp = DeleteParams::default();
    Api::<Service>::namespaced(client.clone(), ns).delete(name, &dp).await.expect("delete Service");
    Api::<EndpointSlice>::namespaced(client.clone(), ns).delete(name, &dp).await.expect("delete slice");
}

/// Consul's view of the services synced from `ns`: name → instance IDs → address.
async fn catalog(consul: &concord::consul::Client, ns: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Ok(services) = consul.catalog_services(&Default::default()).await else { return out };
    for name in services.value.keys().filter(|n| n.starts_with("le-")) {
        let Ok(entries) = consul.health_service(name, &[], false, &Default::default()).await else { continue };
        for e in entries.value.into_iter().filter(|e| e.service.meta.get("k8s-namespace") == Some(&ns.to_string())) {
            out.entry(name.clone()).or_insert_with(BTreeMap::new).insert(e.service.id.clone(), e.service.address);
        }
    }
    out
}

/// True when Consul holds exactly `want` (service → addresses), each address once.
fn matches(got: &BTreeMap<String, BTreeMap<String, String>>, want: &BTreeMap<String, Vec<&str>>) -> bool {
    got.len() == want.len()
        && want.iter().all(|(name, addrs)| {
            let Some(instances) = got.get(name) else { return false };
            let mut seen: Vec<&str> = instances.values().map(String::as_str).collect();
            seen.sort_unstable();
            let mut expected = addrs.clone();
            expected.sort_unstable();
            seen == expected
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_killed_leader_hands_over_within_the_lease_without_loss_or_duplicates() {
    let env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("leader").await;
    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(json!({"toConsul": {"enabled": true}}))).await;
    let consul = concord::consul::Client::new(concord::consul::ClientConfig::new(consul_env.http_addrs()))
        .expect("consul client");
    let svc = |i: usize| format!("le-{ns}-{i}");

    let mut want: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for i in 0..5 {
        declare(&client, &ns, &svc(i), &["10.40.0.1", "10.40.0.2"]).await;
        want.insert(svc(i), vec!["10.40.0.1", "10.40.0.2"]);
    }

    let dir = tempdir(&ns);
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, env.kubeconfig_yaml()).expect("kubeconfig");
    let a = Replica::start("concord-a", &kubeconfig, &ns, &dir);
    let b = Replica::start("concord-b", &kubeconfig, &ns, &dir);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);

    // One leads, the other stands by; both are ready.
    let first = eventually("a Lease holder", WAIT, || holder(&leases)).await;
    let (mut leader, standby) = if first.starts_with("concord-a_") { (a, b) } else { (b, a) };
    assert!(first.starts_with(&format!("{}_", leader.name)), "holder {first}");
    eventually("both replicas ready (the standby too)", WAIT, || async {
        (leader.ready().await && standby.ready().await).then_some(())
    })
    .await;
    eventually("the first catalog synced", WAIT, || async {
        matches(&catalog(&consul, &ns).await, &want).then_some(())
    })
    .await;
    assert_eq!(leader.leads().await, Some(true));
    assert_eq!(standby.leads().await, Some(false));
    assert!(leader.reconciliations().await > 0, "the leader reconciles");
    assert_eq!(standby.reconciliations().await, 0, "the standby never reconciles");
    let before = catalog(&consul, &ns).await;

    // SIGKILL the leader, and change what is declared while nobody leads.
    let killed = Instant::now();
    leader.child.kill().expect("SIGKILL");
    let _ = leader.child.wait();
    undeclare(&client, &ns, &svc(0)).await;
    want.remove(&svc(0));
    declare(&client, &ns, &svc(1), &["10.40.0.1", "10.40.0.2", "10.40.0.3"]).await;
    want.insert(svc(1), vec!["10.40.0.1", "10.40.0.2", "10.40.0.3"]);
    for i in 5..8 {
        declare(&client, &ns, &svc(i), &["10.40.1.1"]).await;
        want.insert(svc(i), vec!["10.40.1.1"]);
    }

    let new_holder = eventually("the standby takes the Lease", WAIT, || async {
        holder(&leases).await.filter(|h| h.starts_with(&format!("{}_", standby.name)))
    })
    .await;
    let handover = killed.elapsed();
    assert!(handover <= HANDOVER_BOUND, "handover took {handover:?} (Lease {LEASE:?}), to {new_holder}");
    eventually("the new leader reports it", WAIT, || async { standby.leads().await.filter(|l| *l) }).await;
    eventually("the catalog matches what is declared", WAIT, || async {
        matches(&catalog(&consul, &ns).await, &want).then_some(())
    })
    .await;
    // Untouched services kept their instances: nothing was registered a second time.
    let after = catalog(&consul, &ns).await;
    for i in 2..5 {
        assert_eq!(after.get(&svc(i)), before.get(&svc(i)), "{} re-registered", svc(i));
    }
    let ids: BTreeSet<&String> = after.values().flat_map(|m| m.keys()).collect();
    assert_eq!(ids.len(), after.values().map(BTreeMap::len).sum::<usize>(), "no instance ID twice");

    // A restarted replica stands by; a SIGTERMed leader releases the Lease, so the
    // handover does not wait for it to expire.
    let restarted = Replica::start("concord-c", &kubeconfig, &ns, &dir);
    eventually("the restarted replica is a ready standby", WAIT, || async {
        (restarted.ready().await && restarted.leads().await == Some(false)).then_some(())
    })
    .await;
    let mut leader = standby;
    let terminated = Instant::now();
    leader.sigterm();
    eventually("the restarted replica takes the released Lease", WAIT, || async {
        holder(&leases).await.filter(|h| h.starts_with("concord-c_"))
    })
    .await;
    let released_handover = terminated.elapsed();
    assert!(released_handover < LEASE, "a released Lease was taken after {released_handover:?}");
    assert!(leader.wait_exit(WAIT).success(), "a SIGTERMed leader exits 0");
    declare(&client, &ns, &svc(8), &["10.40.2.1"]).await;
    want.insert(svc(8), vec!["10.40.2.1"]);
    eventually("the third leader syncs too", WAIT, || async {
        matches(&catalog(&consul, &ns).await, &want).then_some(())
    })
    .await;
    eprintln!("handover after SIGKILL: {handover:?}; after SIGTERM (released): {released_handover:?}");
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The addresses Consul holds for service `name`.
async fn addresses(consul: &concord::consul::Client, name: &str) -> Option<BTreeSet<String>> {
    let entries = consul.health_service(name, &[], false, &Default::default()).await.ok()?;
    Some(entries.value.into_iter().map(|e| e.service.address).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_renewals_hang_stops_writing_before_the_standby_takes_over() {
    let env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("fence").await;
    // Anti-entropy every second: a leader that keeps running keeps writing what it
    // believes, even when it sees no change in Kubernetes.
    let sync = json!({"toConsul": {"enabled": true}, "antiEntropyInterval": "1s"});
    external_cluster(&client, &ns, &consul_env.http_addrs(), Some(sync)).await;
    let consul = concord::consul::Client::new(concord::consul::ClientConfig::new(consul_env.http_addrs()))
        .expect("consul client");
    let name = format!("fence-{ns}");
    let (old, new) = ("10.41.0.1", "10.41.0.2");
    declare(&client, &ns, &name, &[old]).await;

    // Replica a reaches the API server through the proxy, b directly.
    let upstream: SocketAddr = env.server_url().trim_start_matches("https://").parse().expect("server address");
    let proxy = testenv::FaultProxy::start(upstream, Duration::from_secs(300)).expect("fault proxy");
    let dir = tempdir(&ns);
    let direct = dir.join("kubeconfig");
    std::fs::write(&direct, env.kubeconfig_yaml()).expect("kubeconfig");
    let proxied = dir.join("kubeconfig-proxied");
    let yaml = env.kubeconfig_yaml().replace(&env.server_url(), &format!("https://{}", proxy.addr()));
    std::fs::write(&proxied, yaml).expect("kubeconfig");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let mut a = Replica::start_with("concord-a", &proxied, &ns, &dir, FENCE_LEASE);
    eventually("a takes the Lease", WAIT, || async { holder(&leases).await.filter(|h| h.starts_with("concord-a_")) })
        .await;
    eventually("a syncs the first address", WAIT, || async {
        (addresses(&consul, &name).await? == BTreeSet::from([old.to_string()])).then_some(())
    })
    .await;
    let b = Replica::start_with("concord-b", &direct, &ns, &dir, FENCE_LEASE);
    eventually("b is a ready standby", WAIT, || async {
        (b.ready().await && b.leads().await == Some(false)).then_some(())
    })
    .await;
    assert!(proxy.forwarded(testenv::Direction::ToServer) > 0, "a talks to the API server through the proxy");

    // The fault: a's renewals (and its watches) hang. Then a change only b can see: from
    // now on only a (stale) would write `old`, only b writes `new`.
    proxy.set_both(testenv::Fault::Hang);
    let fault = Instant::now();
    declare(&client, &ns, &name, &[new]).await;

    let (mut a_exited, mut b_leads, mut first_new) = (None, None, None);
    let mut violations = Vec::new();
    let mut samples = 0u32;
    loop {
        let now = Instant::now();
        assert!(
            now - fault < WAIT,
            "no outcome {WAIT:?} after the fault: a exited {a_exited:?}, b leads {b_leads:?}, new in Consul \
             {first_new:?}; the old address back after that {} times, first {:?}",
            violations.len(),
            violations.first()
        );
        if a_exited.is_none()
            && let Some(status) = a.child.try_wait().expect("wait")
        {
            a_exited = Some((now - fault, status));
        }
        if b_leads.is_none() && holder(&leases).await.is_some_and(|h| h.starts_with("concord-b_")) {
            b_leads = Some(now - fault);
        }
        if let Some(seen) = addresses(&consul, &name).await {
            samples += 1;
            if first_new.is_none() && seen.contains(new) {
                first_new = Some(now - fault);
            }
            if first_new.is_some() && seen.contains(old) {
                violations.push((now - fault, seen));
            }
        }
        // Watch on for three anti-entropy periods after b's first write and a's exit.
        if let (Some(first), Some(_)) = (first_new, a_exited)
            && now - fault > first + Duration::from_secs(3)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (a_stopped, status) = a_exited.expect("a exited");
    let first_new = first_new.expect("b wrote");
    assert!(
        violations.is_empty(),
        "the old leader wrote after the new leader's first write (at {first_new:?}): {violations:?}"
    );
    assert!(!status.success(), "a leader that lost its Lease exits with an error: {status}");
    let log = std::fs::read_to_string(dir.join("concord-a.log")).expect("a's log");
    assert!(log.contains("within the renew deadline"), "a says why it stopped:\n{log}");
    let b_leads = b_leads.expect("b leads");
    assert!(a_stopped < first_new, "a exited at {a_stopped:?}, after b's first write at {first_new:?}");
    eventually("b keeps the new address alone", WAIT, || async {
        (addresses(&consul, &name).await? == BTreeSet::from([new.to_string()])).then_some(())
    })
    .await;
    eprintln!(
        "fence (Lease {FENCE_LEASE:?}): a exited {a_stopped:?} after the hang, b took the Lease at {b_leads:?}, \
         first write of b visible at {first_new:?}; {samples} catalog samples, no write of a after it"
    );
    drop(b);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(ns: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("concord-leader-{}-{ns}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
