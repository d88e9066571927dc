//! The controller's own Consul tokens carry only what the controller itself needs
//! (issue #14, item 3). A managed DiscoveryCluster with ACLs on a real ACL-enabled
//! three-server Consul (reached through `--consul-address`), the controller in-process:
//! each of its tokens is read back from the Secret concord keeps it in, then every call
//! outside the token's purpose is attempted against Consul and must be refused (403),
//! and the calls the purpose needs must succeed. Also: a cluster still on the single
//! controller token of earlier versions is upgraded in place without stopping the sync.
mod support;

use concord::consul::{AclLink, AclPolicy, AclToken, Client, ClientConfig, KvWriteOptions, QueryOptions, Token};
use concord::controllers::acl_bootstrap;
use concord::resources::{ACLPolicy, ConsulSnapshot, DiscoveryCluster, KVConfig, find_condition, types};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::eventually;
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(60);

/// The status code Consul answers a call with `token` with (0: no answer).
async fn call(addr: &str, token: &str, method: Method, path: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .request(method, format!("{addr}{path}"))
        .header("X-Consul-Token", token)
        .body(body.to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn secret_value(kube: &kube::Client, ns: &str, name: &str, key: &str) -> Option<String> {
    let s = Api::<Secret>::namespaced(kube.clone(), ns).get_opt(name).await.ok()??;
    String::from_utf8(s.data?.get(key)?.0.clone()).ok()
}

/// A managed cluster `consul` with ACLs, TLS off (the test Consul serves plain HTTP), and
/// the catalog sync to Consul on.
async fn apply_managed_cluster(kube: &kube::Client, ns: &str) {
    let dc = json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": { "name": "consul", "namespace": ns },
        "spec": { "replicas": 3, "acl": { "enabled": true }, "tls": { "enabled": false },
                  "sync": { "toConsul": { "enabled": true } } },
    });
    Api::<DiscoveryCluster>::namespaced(kube.clone(), ns)
        .patch("consul", &PatchParams::apply("owner").force(), &Patch::Apply(&dc))
        .await
        .expect("DiscoveryCluster");
}

async fn acl_bootstrapped(kube: &kube::Client, ns: &str) -> concord::resources::Condition {
    let dcs: Api<DiscoveryCluster> = Api::namespaced(kube.clone(), ns);
    eventually("ACLBootstrapped=True", WAIT, || async {
        let status = dcs.get("consul").await.ok()?.status?;
        find_condition(&status.conditions, "ACLBootstrapped").filter(|c| c.status == "True").cloned()
    })
    .await
}

/// One attempted call and the status Consul must answer it with.
struct Probe {
    what: &'static str,
    method: Method,
    path: &'static str,
    body: &'static str,
}

fn probe(what: &'static str, method: Method, path: &'static str, body: &'static str) -> Probe {
    Probe { what, method, path, body }
}

/// Runs each probe with `token`; returns the ones whose status was not `want`.
async fn expect_all(addr: &str, token: &str, want: u16, probes: &[Probe]) -> Vec<String> {
    let mut wrong = Vec::new();
    for p in probes {
        let got = call(addr, token, p.method.clone(), p.path, p.body).await;
        if got != want {
            wrong.push(format!("{} ({} {}): {got}, want {want}", p.what, p.method, p.path));
        }
    }
    wrong
}

/// The calls no controller token may make, whatever its purpose: KV, keyring, events,
/// sessions, intentions, prepared queries, mesh-wide config entries, peering.
fn outside_every_purpose() -> Vec<Probe> {
    vec![
        probe("KV read", Method::GET, "/v1/kv/lp/secret", ""),
        probe("KV write", Method::PUT, "/v1/kv/lp/planted", "x"),
        probe(
            "intention write (config entry)",
            Method::PUT,
            "/v1/config",
            r#"{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"evil","Action":"allow"}]}"#,
        ),
        probe(
            "intention write (exact)",
            Method::PUT,
            "/v1/connect/intentions/exact?source=evil&destination=web",
            r#"{"Action":"allow"}"#,
        ),
        probe("proxy-defaults write", Method::PUT, "/v1/config", r#"{"Kind":"proxy-defaults","Name":"global"}"#),
        probe("mesh write", Method::PUT, "/v1/config", r#"{"Kind":"mesh","TransparentProxy":{}}"#),
        probe("exported-services write", Method::PUT, "/v1/config", r#"{"Kind":"exported-services","Name":"default"}"#),
        probe("gossip keyring", Method::GET, "/v1/operator/keyring", ""),
        probe("user event", Method::PUT, "/v1/event/fire/deploy", ""),
        probe("session create", Method::PUT, "/v1/session/create", r#"{"Node":"lp-probe"}"#),
        probe("prepared query write", Method::POST, "/v1/query", r#"{"Name":"web","Service":{"Service":"web"}}"#),
        probe("peering token", Method::POST, "/v1/peering/token", r#"{"PeerName":"evil"}"#),
    ]
}

/// Attack first: with each token read back from its Secret, every call outside its
/// purpose is refused by Consul; the calls its callers make succeed; and the controller
/// does its whole job on the split tokens (catalog sync, Raft peers, a tenant's KVConfig
/// through the derived token, an ACLPolicy, a snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_controller_token_is_refused_every_call_outside_its_purpose() {
    support::sweep::capture_logs();
    let consul = ConsulCluster::start(ConsulOptions { acl: true, bootstrap_acl: false, ..Default::default() })
        .await
        .expect("un-bootstrapped ACL Consul");
    let addr = consul.http_addr();
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace("least-priv").await;
    apply_managed_cluster(&kube, &ns).await;
    let root = std::env::temp_dir().join(format!("concord-least-priv-{}-{ns}", std::process::id()));
    let flag = format!("{ns}/consul={}", consul.http_addrs().join(","));
    let _controller = support::start_controller(kube.clone(), &ns, &["--consul-address", &flag]).await;
    let bootstrapped = acl_bootstrapped(&kube, &ns).await;
    assert_eq!(bootstrapped.reason, "Bootstrapped");

    // The tokens, from where concord keeps them.
    let management = secret_value(&kube, &ns, "consul-acl-bootstrap", "token").await.expect("bootstrap Secret");
    let sync = secret_value(&kube, &ns, "consul-acl-controller", "token").await.expect("controller Secret");
    let admin =
        eventually("the ACL-admin Secret", WAIT, || secret_value(&kube, &ns, "consul-acl-admin", "token")).await;
    assert!(sync != admin && sync != management && admin != management, "three different tokens");
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &ns);
    for name in ["consul-acl-controller", "consul-acl-admin"] {
        let owners = secrets.get(name).await.expect("get").metadata.owner_references.unwrap_or_default();
        assert_eq!(owners.first().map(|o| o.name.as_str()), Some("consul"), "{name} is owned by the cluster");
    }
    let boot = secrets.get("consul-acl-bootstrap").await.expect("get");
    assert!(boot.metadata.owner_references.unwrap_or_default().is_empty(), "the bootstrap Secret outlives the cluster");
    let as_management = Client::new(ClientConfig::new(consul.http_addrs()).token(Token::new(&management))).expect("c");
    as_management.kv_put("lp/secret", "s3cr3t", &KvWriteOptions::default()).await.expect("a key to steal");
    let node = r#"{"Node":"lp-probe","Address":"127.0.0.9","Service":{"Service":"probe","Port":80}}"#;
    assert_eq!(call(&addr, &management, Method::PUT, "/v1/catalog/register", node).await, 200);

    // The controller (sync) token: what its callers do is allowed ...
    let sync_needs = [
        probe("catalog register (sync)", Method::PUT, "/v1/catalog/register", node),
        probe(
            "transaction of catalog ops (sync)",
            Method::PUT,
            "/v1/txn",
            r#"[{"Node":{"Verb":"set","Node":{"Node":"lp-probe-2","Address":"127.0.0.10"}}}]"#,
        ),
        probe("catalog nodes (sync)", Method::GET, "/v1/catalog/nodes", ""),
        probe("node services (sync)", Method::GET, "/v1/catalog/node-services/lp-probe", ""),
        probe("node health (sync)", Method::GET, "/v1/health/node/lp-probe", ""),
        probe("catalog services (mirror)", Method::GET, "/v1/catalog/services", ""),
        probe("health state (mirror)", Method::GET, "/v1/health/state/any", ""),
        probe("service health (mirror)", Method::GET, "/v1/health/service/probe", ""),
        probe("Raft configuration (DiscoveryCluster)", Method::GET, "/v1/operator/raft/configuration", ""),
        probe("autopilot state (DiscoveryCluster)", Method::GET, "/v1/operator/autopilot/state", ""),
        probe("agent self (DiscoveryCluster)", Method::GET, "/v1/agent/self", ""),
        probe("own token (ACL bootstrap check)", Method::GET, "/v1/acl/token/self", ""),
        probe("service-defaults list (import)", Method::GET, "/v1/config/service-defaults", ""),
        probe("service-intentions list (import)", Method::GET, "/v1/config/service-intentions", ""),
        probe("exported-services list (import)", Method::GET, "/v1/config/exported-services", ""),
        probe("prepared query list (import)", Method::GET, "/v1/query", ""),
    ];
    let mut wrong = expect_all(&addr, &sync, 200, &sync_needs).await;
    // ... and everything else is refused: ACLs, snapshots, and what no token may do.
    let mut sync_denied = vec![
        probe("ACL token create", Method::PUT, "/v1/acl/token", r#"{"Description":"escalate"}"#),
        probe("ACL token list", Method::GET, "/v1/acl/tokens", ""),
        probe("ACL policy create", Method::PUT, "/v1/acl/policy", r#"{"Name":"evil","Rules":"acl = \"write\""}"#),
        probe("ACL policy list", Method::GET, "/v1/acl/policies", ""),
        probe("snapshot save", Method::GET, "/v1/snapshot", ""),
    ];
    sync_denied.extend(outside_every_purpose());
    wrong.extend(expect_all(&addr, &sync, 403, &sync_denied).await);

    // The ACL-admin token: ACLs and snapshots ...
    let admin_needs = [
        probe("ACL policy read (tenant tokens, ACLToken)", Method::GET, "/v1/acl/policies", ""),
        probe(
            "ACL policy create (ACLPolicy)",
            Method::PUT,
            "/v1/acl/policy",
            r#"{"Name":"lp-made-by-admin","Rules":"key_prefix \"a/\" { policy = \"read\" }"}"#,
        ),
        probe("ACL token list (ACLToken, bootstrap repair)", Method::GET, "/v1/acl/tokens", ""),
        probe("snapshot save", Method::GET, "/v1/snapshot", ""),
    ];
    wrong.extend(expect_all(&addr, &admin, 200, &admin_needs).await);
    // ... and nothing of the sync, the operation or the tenants' data.
    let mut admin_denied = vec![
        probe("catalog register", Method::PUT, "/v1/catalog/register", node),
        probe("Raft configuration", Method::GET, "/v1/operator/raft/configuration", ""),
        probe("agent self", Method::GET, "/v1/agent/self", ""),
        probe("agent service register", Method::PUT, "/v1/agent/service/register", r#"{"Name":"evil","Port":1}"#),
        probe("service-defaults write", Method::PUT, "/v1/config", r#"{"Kind":"service-defaults","Name":"web"}"#),
    ];
    admin_denied.extend(outside_every_purpose());
    wrong.extend(expect_all(&addr, &admin, 403, &admin_denied).await);
    assert!(wrong.is_empty(), "calls answered otherwise than the token's purpose allows:\n{}", wrong.join("\n"));

    // What remains, told as it is (docs/security.md, Known limits). Consul has no rule
    // that tells catalog registration from agent registration, or a service's instances
    // from its service-scoped config entries: the sync's service:write allows both ...
    let residual = [
        probe("agent service register", Method::PUT, "/v1/agent/service/register", r#"{"Name":"lp-agent","Port":1}"#),
        probe("service-defaults write", Method::PUT, "/v1/config", r#"{"Kind":"service-defaults","Name":"lp-sd"}"#),
    ];
    assert!(expect_all(&addr, &sync, 200, &residual).await.is_empty(), "the sync token's residual service rights");
    assert_eq!(call(&addr, &management, Method::PUT, "/v1/agent/service/deregister/lp-agent", "").await, 200);
    // ... and acl = "write" is management-equivalent: the ACL-admin token can mint a
    // token with global-management.
    let mint = AclToken {
        description: "lp: admin mints management".into(),
        policies: vec![AclLink::by_id("00000000-0000-0000-0000-000000000001")],
        ..Default::default()
    };
    let as_admin = as_management.with_token(Token::new(&admin)).expect("client");
    let minted = as_admin.acl_token_create(&mint).await.expect("acl write can mint a management token");
    as_management.acl_token_delete(&minted.accessor_id).await.expect("revoked");

    // Both policies are exactly concord's, each rule with its reason.
    let sync_policy = as_management
        .acl_policy_read_by_name(&acl_bootstrap::controller_policy_name("consul"))
        .await
        .expect("read")
        .expect("controller policy");
    assert_eq!(sync_policy.rules, acl_bootstrap::controller_policy_rules());
    let admin_policy = as_management
        .acl_policy_read_by_name(&acl_bootstrap::acl_admin_policy_name("consul"))
        .await
        .expect("read")
        .expect("ACL-admin policy");
    assert_eq!(admin_policy.rules, acl_bootstrap::acl_admin_policy_rules());

    // The controller does its whole job on these tokens.
    // Sync: a Service lands in Consul (sync token).
    support::service(&kube, &ns, "web", 80, json!({"concord.io/sync": "true"})).await;
    support::slice(&kube, &ns, "web", 8080, &[("10.20.0.1", true)]).await;
    eventually("web registered by the sync", WAIT, || async {
        let found = as_management.health_service("web", &[], true, &QueryOptions::default()).await.ok()?.value;
        (found.len() == 1 && found[0].service.address == "10.20.0.1").then_some(())
    })
    .await;
    // Operation: the Raft peers are read (sync token, operator read).
    let dcs: Api<DiscoveryCluster> = Api::namespaced(kube.clone(), &ns);
    eventually("3 Raft peers in status", WAIT, || async {
        let status = dcs.get("consul").await.ok()?.status?;
        (status.peers.len() == 3).then_some(())
    })
    .await;
    // A tenant's KVConfig: written with the namespace's token, derived with the ACL-admin token.
    let kvs: Api<KVConfig> = Api::namespaced(kube.clone(), &ns);
    let kv = json!({ "apiVersion": "concord.io/v1alpha1", "kind": "KVConfig",
                     "metadata": { "name": "app", "namespace": ns },
                     "spec": { "prefix": "team/app/", "keys": [{ "key": "color", "value": "blue" }] } });
    kvs.patch("app", &PatchParams::apply("tenant").force(), &Patch::Apply(&kv)).await.expect("KVConfig");
    eventually("the KVConfig's key in Consul", WAIT, || async {
        let got = as_management.kv_get("team/app/color", &QueryOptions::default()).await.ok()?.value?;
        (got.value_str() == Some("blue")).then_some(())
    })
    .await;
    // An ACLPolicy (ACL-admin token).
    let policies: Api<ACLPolicy> = Api::namespaced(kube.clone(), &ns);
    let policy: ACLPolicy = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ACLPolicy",
        "metadata": { "name": "app-kv", "namespace": ns },
        "spec": { "rules": "key_prefix \"team/app/\" { policy = \"read\" }" },
    }))
    .expect("policy");
    policies.create(&PostParams::default(), &policy).await.expect("ACLPolicy");
    eventually("the ACLPolicy in Consul", WAIT, || async {
        as_management.acl_policy_read_by_name("app-kv").await.ok()?.map(|_| ())
    })
    .await;
    // A snapshot (ACL-admin token: Consul's snapshot check is acl write).
    let dir = root.join(&ns).join("manual");
    std::fs::create_dir_all(&dir).expect("snapshot dir");
    let file = dir.join("s1.snap");
    let snap: ConsulSnapshot = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ConsulSnapshot",
        "metadata": { "name": "s1", "namespace": ns },
        "spec": { "action": "Save", "location": format!("file://{}", file.display()) },
    }))
    .expect("snapshot");
    let snaps: Api<ConsulSnapshot> = Api::namespaced(kube.clone(), &ns);
    snaps.create(&PostParams::default(), &snap).await.expect("ConsulSnapshot");
    let saved = eventually("ConsulSnapshot Saved", WAIT, || async {
        let s = snaps.get("s1").await.ok()?;
        let c = find_condition(&s.status?.conditions, types::COMPLETE).cloned()?;
        (c.reason == "Saved").then_some(c)
    })
    .await;
    assert_eq!(saved.status, "True");
    assert!(std::fs::metadata(&file).map(|m| m.len() > 0).unwrap_or(false), "a snapshot file");
    let _ = std::fs::remove_dir_all(&root);

    // No token is in any log line, Event or status.
    let known = [
        support::sweep::Known { what: "the management token".into(), value: management },
        support::sweep::Known { what: "the controller (sync) token".into(), value: sync },
        support::sweep::Known { what: "the ACL-admin token".into(), value: admin },
    ];
    support::sweep::assert_no_leaks(&kube, &ns, &known).await;
}

/// The single controller token's policy of earlier versions (management-equivalent,
/// with key, intention and query write).
const OLD_CONTROLLER_RULES: &str = r#"service_prefix "" {
  policy = "write"
  intentions = "write"
}
node_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
acl = "write"
query_prefix "" {
  policy = "write"
}
operator = "write"
agent_prefix "" {
  policy = "read"
}
"#;

/// Upgrade: a cluster whose controller token still has the old policy, and whose
/// bootstrap Secret was removed (so the old token itself must make the ACL-admin token
/// before giving up `acl = "write"`). The policy's rules are rewritten in place, the
/// ACL-admin token is made, the sync token stays the same token (its Secret never
/// changes, so the sync never restarts), and the catalog sync goes on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_the_single_controller_token_is_upgraded_in_place_without_stopping_the_sync() {
    let consul = ConsulCluster::start(ConsulOptions { acl: true, bootstrap_acl: false, ..Default::default() })
        .await
        .expect("un-bootstrapped ACL Consul");
    let addr = consul.http_addr();
    let anonymous = Client::new(ClientConfig::new(consul.http_addrs())).expect("client");
    let management = eventually("ACL bootstrap", WAIT, || async { anonymous.acl_bootstrap().await.ok() }).await;
    let management = management.secret_id.expect("management secret");
    let as_management = anonymous.with_token(management.clone()).expect("client");
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace("least-priv-up").await;
    apply_managed_cluster(&kube, &ns).await;

    // What an earlier concord left: the old policy, its token, the token's Secret.
    let old_policy = as_management
        .acl_policy_create(&AclPolicy {
            name: acl_bootstrap::controller_policy_name("consul"),
            description: "concord controller (earlier version)".into(),
            rules: OLD_CONTROLLER_RULES.into(),
            ..Default::default()
        })
        .await
        .expect("old policy");
    let description = format!("concord controller for DiscoveryCluster {ns}/consul");
    let old = as_management
        .acl_token_create(&AclToken {
            description: description.clone(),
            policies: vec![AclLink::by_name(acl_bootstrap::controller_policy_name("consul"))],
            ..Default::default()
        })
        .await
        .expect("old controller token");
    let old_secret = old.secret_id.clone().expect("secret").expose_secret().to_string();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "consul-acl-controller", "namespace": ns },
        "stringData": { "token": old_secret, "accessorId": old.accessor_id },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(kube.clone(), &ns).create(&PostParams::default(), &secret).await.expect("Secret");
    assert_eq!(call(&addr, &old_secret, Method::PUT, "/v1/kv/lp/before", "x").await, 200, "the old token held KV");

    // A Service to sync, and a sampler: once web is in the catalog, it never leaves, and
    // the sync token's Secret never changes.
    support::service(&kube, &ns, "web", 80, json!({"concord.io/sync": "true"})).await;
    support::slice(&kube, &ns, "web", 8080, &[("10.20.0.1", true)]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, consul, kube, ns, old_secret) =
            (stop.clone(), as_management.clone(), kube.clone(), ns.clone(), old_secret.clone());
        tokio::spawn(async move {
            let (mut seen, mut dips, mut changed) = (0u32, 0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let found = consul.health_service("web", &[], true, &QueryOptions::default()).await;
                match found.map(|r| r.value.len()) {
                    Ok(1) => seen += 1,
                    Ok(_) if seen > 0 => dips += 1,
                    _ => {}
                }
                if secret_value(&kube, &ns, "consul-acl-controller", "token").await.as_deref() != Some(&old_secret) {
                    changed += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (seen, dips, changed)
        })
    };

    let flag = format!("{ns}/consul={}", consul.http_addrs().join(","));
    let _controller = support::start_controller(kube.clone(), &ns, &["--consul-address", &flag]).await;
    let condition = acl_bootstrapped(&kube, &ns).await;
    assert_eq!(condition.reason, "BootstrapSecretMissing", "{}", condition.message);
    assert!(condition.message.contains(&old.accessor_id), "the same controller token: {}", condition.message);
    let admin =
        eventually("the ACL-admin Secret", WAIT, || secret_value(&kube, &ns, "consul-acl-admin", "token")).await;

    // The policy was rewritten in place (same ID), the token kept (same accessor, the only one).
    let policy = as_management
        .acl_policy_read_by_name(&acl_bootstrap::controller_policy_name("consul"))
        .await
        .expect("read")
        .expect("policy");
    assert_eq!(policy.id, old_policy.id, "the same policy");
    assert_eq!(policy.rules, acl_bootstrap::controller_policy_rules(), "with the new rules");
    let controllers: Vec<String> = as_management
        .acl_tokens()
        .await
        .expect("tokens")
        .into_iter()
        .filter(|t| t.description == description)
        .map(|t| t.accessor_id)
        .collect();
    assert_eq!(controllers, vec![old.accessor_id.clone()], "no second controller token");
    assert_eq!(secret_value(&kube, &ns, "consul-acl-controller", "token").await.as_deref(), Some(old_secret.as_str()));

    // The old token lost what it no longer needs; the sync's calls still work.
    let lost = [
        probe("KV write", Method::PUT, "/v1/kv/lp/after", "x"),
        probe("ACL policy create", Method::PUT, "/v1/acl/policy", r#"{"Name":"evil","Rules":"acl = \"write\""}"#),
        probe("ACL token list", Method::GET, "/v1/acl/tokens", ""),
        probe("prepared query write", Method::POST, "/v1/query", r#"{"Name":"web","Service":{"Service":"web"}}"#),
        probe("snapshot", Method::GET, "/v1/snapshot", ""),
    ];
    let wrong = expect_all(&addr, &old_secret, 403, &lost).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(call(&addr, &admin, Method::GET, "/v1/acl/tokens", "").await, 200, "the ACL-admin token manages ACLs");

    // The sync went on: web is registered, and a Service added after the upgrade lands too.
    eventually("web registered", WAIT, || async {
        let found = as_management.health_service("web", &[], true, &QueryOptions::default()).await.ok()?.value;
        (found.len() == 1).then_some(())
    })
    .await;
    support::service(&kube, &ns, "api", 80, json!({"concord.io/sync": "true"})).await;
    support::slice(&kube, &ns, "api", 8080, &[("10.20.0.2", true)]).await;
    eventually("api registered after the upgrade", WAIT, || async {
        let found = as_management.health_service("api", &[], true, &QueryOptions::default()).await.ok()?.value;
        (found.len() == 1).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (seen, dips, changed) = sampler.await.expect("sampler");
    assert!(seen > 0, "web was seen");
    assert_eq!(dips, 0, "web left the catalog {dips} times after it was first registered");
    assert_eq!(changed, 0, "the sync token's Secret changed");

    // A second reconcile changes nothing.
    let again = acl_bootstrapped(&kube, &ns).await;
    assert!(again.message.contains(&old.accessor_id), "{}", again.message);
}
