//! ACL bootstrap, ACLPolicy and ACLToken against a real kube-apiserver and real
//! ACL-enabled three-server Consul clusters. Every permission claim is checked with real
//! Consul HTTP calls made with the token concord wrote into a Secret.
mod support;

use clap::Parser;
use concord::consul::{Client, ClientConfig, Token};
use concord::context::{Context, ControllerArgs, Metrics, Readiness};
use concord::controllers::acl_bootstrap::{self, BootstrapOutcome};
use concord::resources::{ACLPolicy, ACLToken, DiscoveryCluster, find_condition, types};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::eventually;
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(40);

/// What an HTTP call with a token got: the status code.
async fn call(addr: &str, token: &str, method: reqwest::Method, path: &str, body: &str) -> u16 {
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

fn test_context(kube: kube::Client, ns: &str) -> Context {
    let args = ControllerArgs::try_parse_from(["controller", "--namespace", ns]).expect("args");
    Context::new(kube, Arc::new(Metrics::default()), Readiness::default(), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_once_then_controller_token_holds_only_what_concord_uses_and_a_lost_secret_is_reported() {
    support::sweep::capture_logs();
    let consul = ConsulCluster::start(ConsulOptions { acl: true, bootstrap_acl: false, ..Default::default() })
        .await
        .expect("un-bootstrapped ACL Consul");
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace("acl-boot").await;
    let dcs: Api<DiscoveryCluster> = Api::namespaced(kube.clone(), &ns);
    let dc: DiscoveryCluster = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": { "name": "consul", "namespace": ns },
        "spec": { "external": { "address": consul.http_addrs().join(",") }, "acl": { "enabled": true } },
    }))
    .expect("dc");
    let dc = dcs.create(&PostParams::default(), &dc).await.expect("dc created");
    let ctx = test_context(kube.clone(), &ns);
    let anonymous = Client::new(ClientConfig::new(consul.http_addrs())).expect("client");

    let outcome = acl_bootstrap::ensure_bootstrapped(&ctx, &dc, &anonymous).await.expect("bootstrap");
    let BootstrapOutcome::Bootstrapped { controller_accessor, admin_accessor } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(outcome.condition().status);

    let addr = consul.http_addr();
    let management = secret_value(&kube, &ns, "consul-acl-bootstrap", "token").await.expect("bootstrap Secret");
    let controller = secret_value(&kube, &ns, "consul-acl-controller", "token").await.expect("controller Secret");
    let admin = secret_value(&kube, &ns, "consul-acl-admin", "token").await.expect("ACL-admin Secret");
    assert!(management != controller && management != admin && controller != admin);
    // The bootstrap Secret outlives the cluster object; the controller's are owned by it.
    let boot = Api::<Secret>::namespaced(kube.clone(), &ns).get("consul-acl-bootstrap").await.expect("get");
    assert!(boot.metadata.owner_references.unwrap_or_default().is_empty());
    for name in ["consul-acl-controller", "consul-acl-admin"] {
        let own = Api::<Secret>::namespaced(kube.clone(), &ns).get(name).await.expect("get");
        assert_eq!(own.metadata.owner_references.unwrap_or_default()[0].name, "consul", "{name}");
    }
    assert_eq!(
        secret_value(&kube, &ns, "consul-acl-controller", "accessorId").await.as_ref(),
        Some(controller_accessor)
    );
    assert_eq!(secret_value(&kube, &ns, "consul-acl-admin", "accessorId").await.as_ref(), Some(admin_accessor));

    // The controller (sync) token: what the sync and the DiscoveryCluster do, nothing else
    // (every call, for both tokens: tests/least_privilege.rs).
    use reqwest::Method;
    let reg = r#"{"Node":"k8s-sync","Address":"127.0.0.1","Service":{"Service":"web","Port":80}}"#;
    assert_eq!(call(&addr, &controller, Method::PUT, "/v1/catalog/register", reg).await, 200, "catalog register");
    assert_eq!(call(&addr, &controller, Method::GET, "/v1/operator/raft/configuration", "").await, 200, "operator");
    assert_eq!(call(&addr, &controller, Method::PUT, "/v1/kv/concord-test/x", "1").await, 403, "KV write");
    let intention = r#"{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"api","Action":"allow"}]}"#;
    assert_eq!(call(&addr, &controller, Method::PUT, "/v1/config", intention).await, 403, "intentions write");
    let policy = r#"{"Name":"made-by-controller","Rules":"key_prefix \"a/\" { policy = \"read\" }"}"#;
    assert_eq!(call(&addr, &controller, Method::PUT, "/v1/acl/policy", policy).await, 403, "acl write");
    assert_eq!(call(&addr, &controller, Method::PUT, "/v1/event/fire/deploy", "").await, 403, "user events");
    assert_eq!(call(&addr, &controller, Method::GET, "/v1/operator/keyring", "").await, 403, "gossip keyring");
    assert_eq!(call(&addr, &controller, Method::PUT, "/v1/agent/reload", "").await, 403, "agent write");
    // The ACL-admin token: ACLs, and nothing of the catalog or KV.
    assert_eq!(call(&addr, &admin, Method::PUT, "/v1/acl/policy", policy).await, 200, "acl write");
    assert_eq!(call(&addr, &admin, Method::PUT, "/v1/kv/concord-test/x", "1").await, 403, "KV write");
    assert_eq!(call(&addr, &admin, Method::PUT, "/v1/catalog/register", reg).await, 403, "catalog register");
    assert_eq!(call(&addr, "", Method::PUT, "/v1/kv/concord-test/y", "1").await, 403, "anonymous is denied");

    // Again: nothing new, the same controller token.
    let again = acl_bootstrap::ensure_bootstrapped(&ctx, &dc, &anonymous).await.expect("again");
    assert_eq!(
        again,
        BootstrapOutcome::Ready {
            controller_accessor: controller_accessor.clone(),
            admin_accessor: admin_accessor.clone(),
            bootstrap_secret_present: true
        }
    );

    // Only the sync token's Secret lost: the ACL-admin token makes a new one.
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &ns);
    secrets.delete("consul-acl-controller", &DeleteParams::default()).await.expect("delete");
    let remade = acl_bootstrap::ensure_bootstrapped(&ctx, &dc, &anonymous).await.expect("remade");
    let BootstrapOutcome::Ready { controller_accessor: new_accessor, .. } = &remade else { panic!("{remade:?}") };
    assert_ne!(new_accessor, controller_accessor, "a new controller token");
    let controller_2 = secret_value(&kube, &ns, "consul-acl-controller", "token").await.expect("controller Secret");
    assert_eq!(call(&addr, &controller, Method::GET, "/v1/acl/token/self", "").await, 403, "the old one revoked");
    assert_eq!(call(&addr, &controller_2, Method::GET, "/v1/acl/token/self", "").await, 200);

    // All three Secrets lost: Consul refuses a second bootstrap; reported, not retried blindly.
    for name in ["consul-acl-bootstrap", "consul-acl-controller", "consul-acl-admin"] {
        secrets.delete(name, &DeleteParams::default()).await.expect("delete");
    }
    let lost = acl_bootstrap::ensure_bootstrapped(&ctx, &dc, &anonymous).await.expect("reported, not an error");
    let BootstrapOutcome::BootstrapSecretLost { detail } = &lost else { panic!("{lost:?}") };
    assert!(detail.contains("already bootstrapped") && detail.contains("consul-acl-bootstrap"), "{detail}");
    let condition = lost.condition();
    assert!(!condition.status);
    assert_eq!(condition.reason, "BootstrapSecretLost");
    let events: Api<Event> = Api::namespaced(kube.clone(), &ns);
    let event = eventually("ACLBootstrapSecretLost event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("ACLBootstrapSecretLost"))
    })
    .await;
    // No Secret was recreated and no Event carries a secret.
    assert!(secrets.get_opt("consul-acl-bootstrap").await.expect("get").is_none());
    for e in events.list(&ListParams::default()).await.expect("events").items {
        let note = e.note.unwrap_or_default();
        for token in [&management, &controller, &controller_2, &admin] {
            assert!(!note.contains(token.as_str()), "secret in event {note}");
        }
    }
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    // The old tokens still work: nothing was reset.
    assert_eq!(call(&addr, &management, Method::GET, "/v1/acl/token/self", "").await, 200);
    // The sweep: neither token is in any log line, Event or status.
    let known = [
        support::sweep::Known { what: "the management token".into(), value: management.clone() },
        support::sweep::Known { what: "the controller token".into(), value: controller.clone() },
        support::sweep::Known { what: "the second controller token".into(), value: controller_2.clone() },
        support::sweep::Known { what: "the ACL-admin token".into(), value: admin.clone() },
    ];
    support::sweep::assert_no_leaks(&kube, &ns, &known).await;
}

struct TokenEnv {
    kube: kube::Client,
    ns: String,
    addr: String,
    management: String,
    _controller: support::RunningController,
    _consul: ConsulCluster,
}

async fn token_env(prefix: &str) -> TokenEnv {
    token_env_with(prefix, &[]).await
}

async fn token_env_with(prefix: &str, args: &[&str]) -> TokenEnv {
    support::sweep::capture_logs();
    let consul = ConsulCluster::start(ConsulOptions { acl: true, ..Default::default() }).await.expect("ACL Consul");
    let management = consul.management_token().expect("management token");
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace(prefix).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "consul-token", "namespace": ns }, "stringData": { "token": management },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(kube.clone(), &ns).create(&PostParams::default(), &secret).await.expect("token Secret");
    let dc = json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": { "name": "consul", "namespace": ns },
        "spec": { "external": { "address": consul.http_addrs().join(","),
                                "tokenSecretRef": { "name": "consul-token", "key": "token" } } },
    });
    Api::<DiscoveryCluster>::namespaced(kube.clone(), &ns)
        .patch("consul", &PatchParams::apply("acl-test").force(), &Patch::Apply(&dc))
        .await
        .expect("dc");
    let controller = support::start_controller(kube.clone(), &ns, args).await;
    TokenEnv { kube, ns, addr: consul.http_addr(), management, _controller: controller, _consul: consul }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acltoken_allows_what_its_policy_allows_rotates_and_is_revoked_on_delete() {
    use reqwest::Method;
    let env = token_env("acl-token").await;
    let policies: Api<ACLPolicy> = Api::namespaced(env.kube.clone(), &env.ns);
    let tokens: Api<ACLToken> = Api::namespaced(env.kube.clone(), &env.ns);
    let policy: ACLPolicy = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ACLPolicy",
        "metadata": { "name": "app-kv", "namespace": env.ns },
        "spec": { "rules": "key_prefix \"app/\" { policy = \"write\" }", "description": "app keys" },
    }))
    .expect("policy");
    policies.create(&PostParams::default(), &policy).await.expect("policy created");
    let token: ACLToken = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ACLToken",
        "metadata": { "name": "app", "namespace": env.ns },
        "spec": { "policies": ["app-kv"], "secretName": "app-token", "rotation": "1" },
    }))
    .expect("token");
    tokens.create(&PostParams::default(), &token).await.expect("token created");

    let policy_id = eventually("ACLPolicy Synced with an id", WAIT, || async {
        let p = policies.get("app-kv").await.ok()?;
        let s = p.status?;
        find_condition(&s.conditions, types::SYNCED).filter(|c| c.status == "True")?;
        s.policy_id
    })
    .await;
    assert_eq!(call(&env.addr, &env.management, Method::GET, &format!("/v1/acl/policy/{policy_id}"), "").await, 200);

    let (accessor, secret) = eventually("ACLToken Synced and its Secret written", WAIT, || async {
        let t = tokens.get("app").await.ok()?;
        let s = t.status?;
        find_condition(&s.conditions, types::SYNCED).filter(|c| c.status == "True")?;
        let secret = secret_value(&env.kube, &env.ns, "app-token", "token").await?;
        Some((s.accessor_id?, secret))
    })
    .await;
    assert_eq!(secret_value(&env.kube, &env.ns, "app-token", "accessorId").await.as_ref(), Some(&accessor));
    // The SecretID is nowhere in the object (status included).
    let obj = serde_json::to_string(&tokens.get("app").await.expect("get")).expect("json");
    assert!(!obj.contains(&secret), "secret leaked into the ACLToken");
    // Real calls with the Secret's token: allowed under app/, refused elsewhere.
    assert_eq!(call(&env.addr, &secret, Method::PUT, "/v1/kv/app/config", "x").await, 200);
    assert_eq!(call(&env.addr, &secret, Method::PUT, "/v1/kv/other/config", "x").await, 403);
    assert_eq!(call(&env.addr, &secret, Method::GET, "/v1/acl/tokens", "").await, 403);

    // Rotation: a new token in the Secret, the old one stops working.
    tokens
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "rotation": "2" } })))
        .await
        .expect("rotate");
    let rotated = eventually("rotated Secret", WAIT, || async {
        let t = tokens.get("app").await.ok()?;
        let s = t.status?;
        (s.rotation.as_deref() == Some("2")).then_some(())?;
        let new = secret_value(&env.kube, &env.ns, "app-token", "token").await?;
        (new != secret).then_some(new)
    })
    .await;
    assert_eq!(call(&env.addr, &rotated, Method::PUT, "/v1/kv/app/config", "y").await, 200);
    eventually("old token revoked", WAIT, || async {
        (call(&env.addr, &secret, Method::PUT, "/v1/kv/app/config", "z").await == 403).then_some(())
    })
    .await;
    let secret_obj = Api::<Secret>::namespaced(env.kube.clone(), &env.ns).get("app-token").await.expect("secret");
    assert!(!secret_obj.annotations().contains_key("concord.io/revoke-accessors"));
    assert_eq!(secret_obj.metadata.owner_references.unwrap_or_default()[0].kind, "ACLToken");

    // Events never carry the secret.
    let events: Api<Event> = Api::namespaced(env.kube.clone(), &env.ns);
    for e in events.list(&ListParams::default()).await.expect("events").items {
        let note = e.note.unwrap_or_default();
        assert!(!note.contains(&secret) && !note.contains(&rotated), "{note}");
    }

    // Delete revokes.
    tokens.delete("app", &DeleteParams::default()).await.expect("delete token");
    eventually("ACLToken gone", WAIT, || async { tokens.get_opt("app").await.ok()?.is_none().then_some(()) }).await;
    assert_eq!(call(&env.addr, &rotated, Method::PUT, "/v1/kv/app/config", "w").await, 403, "revoked on delete");
    let admin =
        Client::new(ClientConfig::new([env.addr.clone()]).token(Token::new(env.management.clone()))).expect("c");
    let new_accessor = tokens_status_accessor_gone(&admin, &accessor).await;
    assert!(new_accessor);

    // Deleting the ACLPolicy deletes the Consul policy.
    policies.delete("app-kv", &DeleteParams::default()).await.expect("delete policy");
    eventually("policy gone from Consul", WAIT, || async {
        admin.acl_policy_read_by_name("app-kv").await.ok()?.is_none().then_some(())
    })
    .await;
    // The sweep: no token this test saw is in any log line, Event or status.
    let known = [
        support::sweep::Known { what: "the management token".into(), value: env.management.clone() },
        support::sweep::Known { what: "the first ACLToken secret".into(), value: secret },
        support::sweep::Known { what: "the rotated ACLToken secret".into(), value: rotated },
    ];
    support::sweep::assert_no_leaks(&env.kube, &env.ns, &known).await;
}

/// The `Synced` condition of an ACL object (any kind), once it has `reason`.
async fn synced_reason<K>(api: &Api<K>, name: &str, reason: &str) -> concord::resources::Condition
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    eventually(&format!("{name} Synced ({reason})"), WAIT, || async {
        let obj = serde_json::to_value(api.get(name).await.ok()?).ok()?;
        let conditions: Vec<concord::resources::Condition> =
            serde_json::from_value(obj.pointer("/status/conditions")?.clone()).ok()?;
        find_condition(&conditions, types::SYNCED).filter(|c| c.reason == reason).cloned()
    })
    .await
}

/// A role and a token applied before the policy they name: Consul refuses both, and they
/// say so (`DependencyMissing`, not an outage), then sync as soon as the ACLPolicy does.
/// The drift interval is 10 minutes, so only the watch on ACLPolicy can explain that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_and_a_token_applied_before_their_policy_wait_for_it_and_sync_when_it_appears() {
    use concord::resources::ACLRole;
    let env = token_env_with("acl-order", &["--acl-drift-interval", "10m"]).await;
    let roles: Api<ACLRole> = Api::namespaced(env.kube.clone(), &env.ns);
    let tokens: Api<ACLToken> = Api::namespaced(env.kube.clone(), &env.ns);
    let policies: Api<ACLPolicy> = Api::namespaced(env.kube.clone(), &env.ns);
    let pp = PatchParams::apply("acl-test").force();
    let object = |kind: &str, name: &str, spec: serde_json::Value| {
        json!({ "apiVersion": "concord.io/v1alpha1", "kind": kind,
                "metadata": { "name": name, "namespace": env.ns }, "spec": spec })
    };
    roles
        .patch("reader", &pp, &Patch::Apply(&object("ACLRole", "reader", json!({ "policies": ["late"] }))))
        .await
        .expect("role");
    let token = object("ACLToken", "app", json!({ "policies": ["late"], "secretName": "app-token" }));
    tokens.patch("app", &pp, &Patch::Apply(&token)).await.expect("token");

    for (what, c) in [
        ("role", synced_reason(&roles, "reader", "DependencyMissing").await),
        ("token", synced_reason(&tokens, "app", "DependencyMissing").await),
    ] {
        assert_eq!(c.status, "False", "{what}");
        assert!(c.message.contains(r#"No such ACL policy with name "late""#), "{what}: {}", c.message);
        assert!(c.message.contains("retried as soon as one syncs"), "{what}: {}", c.message);
    }
    let events: Api<Event> = Api::namespaced(env.kube.clone(), &env.ns);
    eventually("a DependencyMissing Event on the role", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("DependencyMissing")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("reader")
            })
            .then_some(())
    })
    .await;

    let policy = object("ACLPolicy", "late", json!({ "rules": "key_prefix \"app/\" { policy = \"read\" }" }));
    policies.patch("late", &pp, &Patch::Apply(&policy)).await.expect("policy");
    let role = synced_reason(&roles, "reader", "Synced").await;
    assert_eq!(role.status, "True", "{}", role.message);
    let token = synced_reason(&tokens, "app", "Synced").await;
    assert_eq!(token.status, "True", "{}", token.message);
    let secret = secret_value(&env.kube, &env.ns, "app-token", "token").await.expect("token Secret");
    assert_eq!(call(&env.addr, &secret, reqwest::Method::GET, "/v1/kv/app/x", "").await, 404, "read allowed");
    assert_eq!(call(&env.addr, &secret, reqwest::Method::GET, "/v1/kv/other/x", "").await, 403);
    let known = [
        support::sweep::Known { what: "the management token".into(), value: env.management.clone() },
        support::sweep::Known { what: "the ACLToken secret".into(), value: secret },
    ];
    support::sweep::assert_no_leaks(&env.kube, &env.ns, &known).await;
}

async fn tokens_status_accessor_gone(admin: &Client, accessor: &str) -> bool {
    admin.acl_token_read(accessor).await.map(|t| t.is_none()).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aclpolicy_that_consul_refuses_quotes_consul_in_the_condition() {
    let env = token_env("acl-bad").await;
    let policies: Api<ACLPolicy> = Api::namespaced(env.kube.clone(), &env.ns);
    let policy: ACLPolicy = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ACLPolicy",
        "metadata": { "name": "broken", "namespace": env.ns },
        "spec": { "rules": "key_prefix \"\" { policy = \"bogus\" }" },
    }))
    .expect("policy");
    policies.create(&PostParams::default(), &policy).await.expect("created");
    let seen = std::sync::Mutex::new(String::new());
    let condition = eventually("Synced=False RejectedByConsul", WAIT, || async {
        let p = policies.get("broken").await.ok()?;
        let c = find_condition(&p.status?.conditions, types::SYNCED).cloned()?;
        if let Ok(mut s) = seen.lock() {
            *s = format!("{}: {}", c.reason, c.message);
            eprintln!("condition now {s}");
        }
        (c.reason == "RejectedByConsul").then_some(c)
    })
    .await;
    assert_eq!(condition.status, "False");
    assert!(
        condition.message.to_lowercase().contains("bogus") || condition.message.contains("policy"),
        "{}",
        condition.message
    );
    // Deleting an object whose policy never existed finishes at once.
    policies.delete("broken", &DeleteParams::default()).await.expect("delete");
    eventually("gone", WAIT, || async { policies.get_opt("broken").await.ok()?.is_none().then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_acltoken_is_renewed_before_it_expires_and_when_it_is_gone() {
    use reqwest::Method;
    let env = token_env("acl-ttl").await;
    let tokens: Api<ACLToken> = Api::namespaced(env.kube.clone(), &env.ns);
    let admin =
        Client::new(ClientConfig::new([env.addr.clone()]).token(Token::new(env.management.clone()))).expect("c");
    let token: ACLToken = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ACLToken",
        "metadata": { "name": "web", "namespace": env.ns },
        "spec": { "serviceIdentities": [{ "serviceName": "web" }], "secretName": "web-token", "expirationTTL": "1m" },
    }))
    .expect("token");
    tokens.create(&PostParams::default(), &token).await.expect("token created");
    let synced = |previous: Option<String>| {
        let tokens = tokens.clone();
        let env_kube = env.kube.clone();
        let ns = env.ns.clone();
        async move {
            let t = tokens.get("web").await.ok()?;
            let s = t.status?;
            find_condition(&s.conditions, types::SYNCED).filter(|c| c.status == "True")?;
            let accessor = s.accessor_id?;
            (Some(&accessor) != previous.as_ref()).then_some(())?;
            let secret = secret_value(&env_kube, &ns, "web-token", "token").await?;
            (secret_value(&env_kube, &ns, "web-token", "accessorId").await? == accessor).then_some((
                accessor,
                secret,
                s.expiration_time?,
            ))
        }
    };
    let created = std::time::Instant::now();
    let (accessor, secret, expires) = eventually("an expiring token", WAIT, || synced(None)).await;
    // Consul holds the same expiry, one TTL after creation.
    let held = admin.acl_token_read(&accessor).await.expect("read").expect("token");
    assert_eq!(held.expiration_time.as_deref(), Some(expires.as_str()));
    let at: k8s_openapi::jiff::Timestamp = expires.parse().expect("RFC 3339");
    let left = at.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs();
    assert!((40..=62).contains(&left), "expires in {left}s, want about 60");
    assert_eq!(
        call(&env.addr, &secret, Method::PUT, "/v1/agent/service/register", r#"{"Name":"web","Port":80}"#).await,
        200
    );

    // Gone (as after expiry and Consul's reaping): renewed at once with a new token.
    admin.acl_token_delete(&accessor).await.expect("deleted by hand");
    let (renewed, renewed_secret, _) =
        eventually("renewed after the token went", WAIT, || synced(Some(accessor.clone()))).await;
    assert_ne!(renewed_secret, secret);
    assert_eq!(call(&env.addr, &renewed_secret, Method::GET, "/v1/acl/token/self", "").await, 200);

    // Due: two thirds of its minute passed, a new token replaces it and the old one is
    // revoked, before Consul would expire it.
    let (next, next_secret, _) =
        eventually("renewed at two thirds of its life", Duration::from_secs(90), || synced(Some(renewed.clone())))
            .await;
    let renewed_after = created.elapsed();
    assert!(renewed_after >= Duration::from_secs(38), "renewed after {renewed_after:?}, before two thirds of 1m");
    assert_eq!(call(&env.addr, &next_secret, Method::GET, "/v1/acl/token/self", "").await, 200);
    assert_eq!(call(&env.addr, &renewed_secret, Method::GET, "/v1/acl/token/self", "").await, 403, "old one revoked");
    assert!(admin.acl_token_read(&renewed).await.expect("read").is_none());
    let events: Api<Event> = Api::namespaced(env.kube.clone(), &env.ns);
    let reasons: Vec<String> =
        events.list(&ListParams::default()).await.expect("events").items.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "TokenRenewed"), "{reasons:?}");

    tokens.delete("web", &DeleteParams::default()).await.expect("delete");
    eventually("ACLToken gone", WAIT, || async { tokens.get_opt("web").await.ok()?.is_none().then_some(()) }).await;
    assert!(admin.acl_token_read(&next).await.expect("read").is_none(), "revoked on delete");
}
