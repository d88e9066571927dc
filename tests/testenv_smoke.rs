//! Proves the test harness itself (the `testenv` crate): real Consul and Kubernetes
//! servers start on loopback, behave like clusters, fail with one-line errors, and never
//! outlive their owner, not even a SIGKILLed test process.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use testenv::{ConsulCluster, ConsulOptions, Error, KubeOptions};

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().expect("http client")
}

async fn consul_put(base: &str, key: &str, value: &str, token: Option<&str>) -> reqwest::StatusCode {
    let mut request = http().put(format!("{base}/v1/kv/{key}")).body(value.to_string());
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    request.send().await.expect("PUT").status()
}

async fn consul_get_raw(base: &str, key: &str) -> String {
    let response = http().get(format!("{base}/v1/kv/{key}?raw")).send().await.expect("GET");
    assert!(response.status().is_success(), "GET {key} from {base}: {}", response.status());
    response.text().await.expect("body")
}

async fn consul_peers(base: &str) -> Vec<String> {
    http().get(format!("{base}/v1/status/peers")).send().await.expect("peers").json().await.expect("peers json")
}

fn is_alive(pid: u32) -> bool {
    // Gone, or a zombie: an orphan waits for its new parent to reap it, and not every
    // container's pid 1 does that promptly.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// An empty directory, or one holding the named entries as symlinks to `target`.
fn fake_bin_dir(label: &str, entries: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("concord-testenv-smoke-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, target) in entries {
        std::os::unix::fs::symlink(target, dir.join(name)).expect("symlink");
    }
    dir
}

#[tokio::test]
async fn consul_cluster_has_three_voters_and_kv_works_on_every_server() {
    let consul = testenv::shared_consul().await;
    let addrs = consul.http_addrs();
    assert_eq!(addrs.len(), 3);
    assert_eq!(consul.http_addr(), addrs[0]);
    for addr in &addrs {
        assert_eq!(consul_peers(addr).await.len(), 3, "peers seen by {addr}");
    }
    assert!(consul.leader_index().await.is_some());
    for (i, writer) in addrs.iter().enumerate() {
        let key = format!("testenv-smoke/kv-{i}");
        assert!(consul_put(writer, &key, &format!("from-{i}"), None).await.is_success());
        for reader in &addrs {
            assert_eq!(consul_get_raw(reader, &key).await, format!("from-{i}"));
        }
    }
    assert_ne!(consul.dns_addr(0), consul.dns_addr(1));
}

#[tokio::test]
async fn killing_the_consul_leader_elects_another_and_restart_restores_three_peers() {
    let started = Instant::now();
    let consul = ConsulCluster::start(ConsulOptions::default()).await.expect("consul cluster");
    eprintln!("3-server consul cluster ready in {:?}", started.elapsed());

    let old = consul.leader_index().await.expect("a leader");
    consul.kill(old);
    let killed = Instant::now();
    consul.wait_for_leader(Duration::from_secs(30)).await.expect("a new leader");
    eprintln!("new leader after {:?}", killed.elapsed());
    let new = consul.leader_index().await.expect("a leader");
    assert_ne!(new, old);
    let survivor = &consul.http_addrs()[new];
    assert!(consul_put(survivor, "testenv-smoke/after-failover", "yes", None).await.is_success());

    let restarted = Instant::now();
    consul.restart(old).await.expect("restart");
    eprintln!("killed server back as voter in {:?}", restarted.elapsed());
    for addr in consul.http_addrs() {
        assert_eq!(consul_peers(&addr).await.len(), 3, "peers seen by {addr}");
    }
    assert_eq!(consul_get_raw(&consul.http_addrs()[old], "testenv-smoke/after-failover").await, "yes");
}

#[tokio::test]
async fn dropping_a_consul_cluster_kills_its_servers_and_removes_its_files() {
    let consul = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    let pids = consul.pids();
    let dir = consul.work_dir().to_path_buf();
    assert_eq!(pids.len(), 1);
    assert!(pids.iter().all(|&pid| is_alive(pid)));
    assert!(dir.is_dir());
    drop(consul);
    for pid in pids {
        assert!(!is_alive(pid), "consul pid {pid} survived the drop");
    }
    assert!(!dir.exists(), "{} survived the drop", dir.display());
}

/// What `/v1/agent/self` says the server's plaintext gRPC port is (-1 when off).
async fn consul_grpc_port_in_config(base: &str) -> i64 {
    let body: serde_json::Value =
        http().get(format!("{base}/v1/agent/self")).send().await.expect("agent/self").json().await.expect("json");
    body["DebugConfig"]["GRPCPort"].as_i64().expect("DebugConfig.GRPCPort")
}

#[tokio::test]
async fn consul_grpc_port_is_served_only_when_asked_for() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let off = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    assert_eq!(off.grpc_port(0), None);
    assert!(consul_grpc_port_in_config(&off.http_addr()).await <= 0, "gRPC is off by default");
    drop(off);

    let on = ConsulCluster::start(ConsulOptions { servers: 1, grpc: true, ..Default::default() })
        .await
        .expect("consul with gRPC");
    let port = on.grpc_port(0).expect("a gRPC port");
    assert_eq!(consul_grpc_port_in_config(&on.http_addr()).await, i64::from(port));
    // Plaintext gRPC is HTTP/2 with prior knowledge: after the client preface the server's
    // first frame is a SETTINGS frame (type 4).
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to gRPC");
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.expect("preface");
    let mut header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut header))
        .await
        .expect("a frame within 5 s")
        .expect("read frame");
    assert_eq!(header[3], 4, "first frame from the gRPC port is SETTINGS: {header:?}");
}

#[tokio::test]
async fn consul_acl_with_management_token_denies_anonymous_writes() {
    let opts = ConsulOptions { servers: 1, acl: true, ..Default::default() };
    let consul = ConsulCluster::start(opts).await.expect("consul with ACLs");
    let token = consul.management_token().expect("a management token");
    assert_eq!(consul_put(&consul.http_addr(), "testenv-smoke/acl", "x", None).await, 403);
    assert!(consul_put(&consul.http_addr(), "testenv-smoke/acl", "x", Some(&token)).await.is_success());
    assert!(!format!("{consul:?}").contains(&token), "Debug must not print the token");
}

#[tokio::test]
async fn consul_acl_without_token_is_left_for_the_test_to_bootstrap() {
    let opts = ConsulOptions { servers: 1, acl: true, bootstrap_acl: false, ..Default::default() };
    let consul = ConsulCluster::start(opts).await.expect("consul with ACLs, not bootstrapped");
    assert_eq!(consul.management_token(), None);
    let response =
        http().put(format!("{}/v1/acl/bootstrap", consul.http_addr())).send().await.expect("bootstrap request");
    assert!(response.status().is_success(), "bootstrap: {}", response.status());
    let body: serde_json::Value = response.json().await.expect("token json");
    assert!(body["SecretID"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn missing_binaries_are_one_line_errors_naming_the_binary() {
    let empty = fake_bin_dir("empty", &[]);
    let opts = ConsulOptions { bin_dir: Some(empty.clone()), ..Default::default() };
    let error = ConsulCluster::start(opts).await.expect_err("no consul binary");
    assert!(matches!(&error, Error::MissingBinary { name, dir } if name == "consul" && *dir == empty), "{error:?}");
    let message = error.to_string();
    assert!(!message.contains('\n'));
    assert!(message.starts_with("consul binary not found in"), "{message}");

    // Every binary is checked before anything starts: etcd and kube-apiserver "exist"
    // here, but the missing controller manager is reported without starting them.
    let partial = fake_bin_dir("partial", &[("etcd", "/bin/false"), ("kube-apiserver", "/bin/false")]);
    let opts = KubeOptions { controller_manager: true, bin_dir: Some(partial.clone()) };
    let error = testenv::KubeEnv::start(opts).await.expect_err("no kube-controller-manager");
    assert!(matches!(&error, Error::MissingBinary { name, .. } if name == "kube-controller-manager"), "{error:?}");
    let _ = std::fs::remove_dir_all(empty);
    let _ = std::fs::remove_dir_all(partial);
}

#[tokio::test]
async fn a_server_that_exits_at_start_is_a_one_line_error_with_its_last_log_line() {
    // "consul" is /bin/sh here, which fails at once: `sh agent ...` cannot open "agent".
    let bin = fake_bin_dir("exits", &[("consul", "/bin/sh")]);
    let started = Instant::now();
    let opts = ConsulOptions { servers: 1, bin_dir: Some(bin.clone()), ..Default::default() };
    let error = ConsulCluster::start(opts).await.expect_err("a shell is not consul");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let message = error.to_string();
    assert!(matches!(error, Error::NotReady { .. }), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert!(message.starts_with("consul server s0 "), "{message}");
    assert!(message.contains("exited with") && message.contains("agent"), "{message}");
    let _ = std::fs::remove_dir_all(bin);
}

const CHILD_ENV: &str = "CONCORD_TESTENV_SMOKE_CHILD";

/// Not a test on its own: `servers_die_with_a_sigkilled_test_process` runs this in a
/// child process, which prints its servers' pids and waits to be killed.
#[tokio::test]
#[ignore = "helper, run by servers_die_with_a_sigkilled_test_process"]
async fn helper_start_consul_and_wait_to_be_killed() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let consul = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    let pids: Vec<String> = consul.pids().iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test]
async fn servers_die_with_a_sigkilled_test_process() {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "helper_start_consul_and_wait_to_be_killed", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-run this test binary");
    // libtest prints "test <name> ... " and, with --nocapture, the test's output after it
    // on the same line, hence split_once rather than strip_prefix.
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let pids: Vec<u32> = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.split_once("PIDS ").map(|(_, p)| p.split(' ').map(|n| n.parse().expect("pid")).collect()))
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("the helper printed no pids: {:?}", child.wait())
        });
    assert!(!pids.is_empty() && pids.iter().all(|&pid| is_alive(pid)));

    child.kill().expect("SIGKILL the helper");
    child.wait().expect("reap the helper");
    // The orphans are SIGKILLed by the kernel (pdeathsig) and reaped by init.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in pids {
        assert!(!is_alive(pid), "consul pid {pid} outlived its SIGKILLed test process");
    }
}

#[tokio::test]
async fn kube_apiserver_serves_a_fresh_client_and_a_kubeconfig() {
    let started = Instant::now();
    let kube = testenv::shared_kube().await;
    eprintln!("shared kube (first caller waits for start) ready after {:?}", started.elapsed());
    assert!(kube.server_url().starts_with("https://127.0.0.1:"));
    let on_disk = std::fs::read_to_string(kube.kubeconfig_path()).expect("kubeconfig file");
    assert_eq!(on_disk, kube.kubeconfig_yaml());
    let namespaces = Api::<Namespace>::all(kube.client().await).list(&ListParams::default()).await.expect("list");
    let names: Vec<String> = namespaces.iter().map(|ns| ns.name_any()).collect();
    assert!(names.iter().any(|n| n == "default"), "{names:?}");
    let yaml = kube.kubeconfig_yaml();
    let token = yaml.lines().find_map(|l| l.trim().strip_prefix("token: ")).expect("a token in the kubeconfig");
    assert!(!format!("{kube:?}").contains(token), "Debug must not print the token");
}

#[tokio::test]
async fn create_namespace_returns_unique_existing_namespaces() {
    let kube = testenv::shared_kube().await;
    let first = kube.create_namespace("smoke").await;
    let second = kube.create_namespace("smoke").await;
    assert_ne!(first, second);
    assert!(first.starts_with("smoke-"));
    let api = Api::<Namespace>::all(kube.client().await);
    for name in [first, second] {
        api.get(&name).await.expect("namespace exists");
    }
}

#[tokio::test]
async fn impersonated_service_account_is_bound_by_rbac() {
    let kube = testenv::shared_kube().await;
    let ns = kube.create_namespace("rbac").await;
    let as_reader = Api::<Pod>::namespaced(kube.client_impersonating("reader", &ns).await, &ns);
    let denied = as_reader.list(&ListParams::default()).await.expect_err("no RBAC rule yet");
    assert!(matches!(denied, kube::Error::Api(ref s) if s.code == 403), "{denied:?}");

    let admin = kube.client().await;
    let meta = |name: &str| ObjectMeta { name: Some(name.into()), namespace: Some(ns.clone()), ..Default::default() };
    let role = Role {
        metadata: meta("pod-reader"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns).create(&PostParams::default(), &role).await.expect("role");
    let binding = RoleBinding {
        metadata: meta("reader-reads-pods"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "pod-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, &ns).create(&PostParams::default(), &binding).await.expect("binding");
    // RBAC reads bindings through an informer: allow it a moment to see the new ones.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match as_reader.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still denied after the binding: {e}"),
        }
    }
}

#[tokio::test]
async fn controller_manager_runs_controllers() {
    let started = Instant::now();
    let kube = testenv::shared_kube_with_controllers().await;
    eprintln!("kube with controller manager ready after {:?}", started.elapsed());
    let ns = kube.create_namespace("kcm").await;
    // The ServiceAccount controller gives every new namespace a `default` account.
    let accounts = Api::<ServiceAccount>::namespaced(kube.client().await, &ns);
    let deadline = Instant::now() + Duration::from_secs(20);
    while accounts.get_opt("default").await.expect("get").is_none() {
        assert!(Instant::now() < deadline, "no default ServiceAccount in {ns}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
