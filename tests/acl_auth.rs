//! ACLRole, ACLAuthMethod and ACLBindingRule against a real kube-apiserver and a real
//! ACL-enabled three-server Consul. The pod-login test plays a pod: a real ServiceAccount
//! token from the API server's TokenRequest, Consul's `/v1/acl/login` (Consul calls the
//! API server's TokenReview over TLS with the reviewer token concord wrote only into
//! Consul), and real calls with the token it got.
mod support;

use concord::consul::{AclBindingRule, AclRole, Client, ClientConfig, Token};
use concord::resources::{ACLAuthMethod, ACLBindingRule, ACLRole, DiscoveryCluster};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use support::eventually;
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(40);

struct Env {
    kube: kube::Client,
    ns: String,
    addr: String,
    management: String,
    admin: Client,
    _controller: support::RunningController,
}

/// What an HTTP call with a token got: status code and body.
async fn call(addr: &str, token: &str, method: Method, path: &str, body: &str) -> (u16, String) {
    match reqwest::Client::new()
        .request(method, format!("{addr}{path}"))
        .header("X-Consul-Token", token)
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The ServiceAccount `reviewer` of `ns`, allowed what Consul's TokenReview calls need.
async fn reviewer(kube: &kube::Client, ns: &str) -> String {
    let sa: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "reviewer", "namespace": ns } })).expect("sa");
    Api::<ServiceAccount>::namespaced(kube.clone(), ns).create(&PostParams::default(), &sa).await.expect("reviewer");
    let apply = PatchParams::apply("concord-test").force();
    let reader = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": { "name": format!("{ns}-sa-reader") },
        "rules": [{ "apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"] }],
    });
    Api::<ClusterRole>::all(kube.clone())
        .patch(&format!("{ns}-sa-reader"), &apply, &Patch::Apply(&reader))
        .await
        .expect("role");
    for (binding, role) in [
        (format!("{ns}-delegator"), "system:auth-delegator".to_string()),
        (format!("{ns}-sa-reader"), format!("{ns}-sa-reader")),
    ] {
        let crb = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": binding },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "kind": "ServiceAccount", "name": "reviewer", "namespace": ns }],
        });
        Api::<ClusterRoleBinding>::all(kube.clone())
            .patch(&binding, &apply, &Patch::Apply(&crb))
            .await
            .expect("binding");
    }
    format!("{ns}/reviewer")
}

/// A DiscoveryCluster `consul` in `ns` on the given Consul with the management token.
async fn cluster(kube: &kube::Client, ns: &str, addrs: &[String], management: &str, tenancy: Value, k8s_auth: Value) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "consul-token", "namespace": ns }, "stringData": { "token": management },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(kube.clone(), ns).create(&PostParams::default(), &secret).await.expect("token Secret");
    let mut spec = json!({ "external": { "address": addrs.join(","),
                                         "tokenSecretRef": { "name": "consul-token", "key": "token" } } });
    if !tenancy.is_null() {
        spec["tenancy"] = tenancy;
    }
    if !k8s_auth.is_null() {
        spec["kubernetesAuth"] = k8s_auth;
    }
    let dc = json!({ "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
                     "metadata": { "name": "consul", "namespace": ns }, "spec": spec });
    Api::<DiscoveryCluster>::namespaced(kube.clone(), ns)
        .patch("consul", &PatchParams::apply("owner").force(), &Patch::Apply(&dc))
        .await
        .expect("dc");
}

async fn env(consul: &ConsulCluster, prefix: &str, tenancy: Value, k8s_auth: Value, host_flag: &str) -> Env {
    support::sweep::capture_logs();
    let management = consul.management_token().expect("management token");
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace(prefix).await;
    cluster(&kube, &ns, &consul.http_addrs(), &management, tenancy, k8s_auth).await;
    let reviewer = reviewer(&kube, &ns).await;
    let ca = kube_env.work_dir().join("ca.crt");
    assert!(ca.exists(), "the harness CA is at {}", ca.display());
    let ca = ca.display().to_string();
    let controller = support::start_controller(
        kube.clone(),
        &ns,
        &[
            "--auth-reviewer-service-account",
            &reviewer,
            "--kubernetes-api-host",
            host_flag,
            "--kubernetes-api-ca-file",
            &ca,
            "--acl-drift-interval",
            "1s",
        ],
    )
    .await;
    let admin = Client::new(ClientConfig::new(consul.http_addrs()).token(Token::new(&management))).expect("client");
    Env { kube, ns, addr: consul.http_addr(), management, admin, _controller: controller }
}

async fn apply(env: &Env, kind: &str, name: &str, spec: Value) {
    let obj = json!({ "apiVersion": "concord.io/v1alpha1", "kind": kind,
                      "metadata": { "name": name, "namespace": env.ns }, "spec": spec });
    let pp = PatchParams::apply("tenant").force();
    let r = match kind {
        "ACLRole" => Api::<ACLRole>::namespaced(env.kube.clone(), &env.ns)
            .patch(name, &pp, &Patch::Apply(&obj))
            .await
            .map(|_| ()),
        "ACLAuthMethod" => Api::<ACLAuthMethod>::namespaced(env.kube.clone(), &env.ns)
            .patch(name, &pp, &Patch::Apply(&obj))
            .await
            .map(|_| ()),
        "ACLBindingRule" => Api::<ACLBindingRule>::namespaced(env.kube.clone(), &env.ns)
            .patch(name, &pp, &Patch::Apply(&obj))
            .await
            .map(|_| ()),
        "ACLPolicy" => Api::<concord::resources::ACLPolicy>::namespaced(env.kube.clone(), &env.ns)
            .patch(name, &pp, &Patch::Apply(&obj))
            .await
            .map(|_| ()),
        other => panic!("kind {other}"),
    };
    r.unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
}

/// The object as JSON (any of the kinds), if it exists.
async fn get(env: &Env, kind: &str, name: &str) -> Option<Value> {
    let v = match kind {
        "ACLRole" => {
            serde_json::to_value(Api::<ACLRole>::namespaced(env.kube.clone(), &env.ns).get_opt(name).await.ok()??)
        }
        "ACLAuthMethod" => {
            serde_json::to_value(Api::<ACLAuthMethod>::namespaced(env.kube.clone(), &env.ns).get_opt(name).await.ok()??)
        }
        "ACLBindingRule" => serde_json::to_value(
            Api::<ACLBindingRule>::namespaced(env.kube.clone(), &env.ns).get_opt(name).await.ok()??,
        ),
        other => panic!("kind {other}"),
    };
    v.ok()
}

/// Waits for `Synced` with `status` and `reason`; returns the object.
async fn synced(env: &Env, kind: &str, name: &str, status: &str, reason: &str) -> Value {
    eventually(&format!("{kind} {name} Synced={status} ({reason})"), WAIT, || async {
        let obj = get(env, kind, name).await?;
        let c = obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == "Synced")?.clone();
        let current = obj["metadata"]["generation"] == obj["status"]["observedGeneration"];
        (current && c["status"] == status && c["reason"] == reason).then_some(obj)
    })
    .await
}

async fn delete(env: &Env, kind: &str, name: &str) {
    let dp = DeleteParams::default();
    let _ = match kind {
        "ACLRole" => Api::<ACLRole>::namespaced(env.kube.clone(), &env.ns).delete(name, &dp).await.map(|_| ()),
        "ACLAuthMethod" => {
            Api::<ACLAuthMethod>::namespaced(env.kube.clone(), &env.ns).delete(name, &dp).await.map(|_| ())
        }
        "ACLBindingRule" => {
            Api::<ACLBindingRule>::namespaced(env.kube.clone(), &env.ns).delete(name, &dp).await.map(|_| ())
        }
        other => panic!("kind {other}"),
    };
    eventually(&format!("{kind} {name} gone"), WAIT, || async { get(env, kind, name).await.is_none().then_some(()) })
        .await;
}

/// A real token for ServiceAccount `name` of `ns` (created if missing), by TokenRequest.
async fn pod_token(kube: &kube::Client, ns: &str, name: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(kube.clone(), ns);
    if api.get_opt(name).await.expect("get sa").is_none() {
        let sa: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": name, "namespace": ns } })).expect("sa");
        api.create(&PostParams::default(), &sa).await.expect("sa created");
    }
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(600), ..Default::default() },
        ..Default::default()
    };
    api.create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("status")
        .token
}

/// Consul's `/v1/acl/login`: the status and the token's JSON.
async fn login(addr: &str, method: &str, jwt: &str) -> (u16, Value) {
    let body = json!({ "AuthMethod": method, "BearerToken": jwt }).to_string();
    let (status, text) = call(addr, "", Method::POST, "/v1/acl/login", &body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn rules_of(admin: &Client, method: &str) -> Vec<AclBindingRule> {
    admin.acl_binding_rules(method).await.unwrap_or_default()
}

/// Waits until the server at `addr` knows a token a login just made in its own state (a
/// follower applies the login's Raft write shortly after the leader answered; a stale
/// read is answered from local state, and says 403 "ACL not found" until then).
async fn known(addr: &str, secret: &str) {
    eventually("the login token known to the server", WAIT, || async {
        (call(addr, secret, Method::GET, "/v1/catalog/services?stale", "").await.0 == 200).then_some(())
    })
    .await
}

fn register(service: &str) -> String {
    json!({ "Name": service, "Port": 80 }).to_string()
}

/// A role as someone makes it by hand in Consul: no concord mark, one service identity.
fn hand_made_role(name: &str, description: &str, service: &str) -> AclRole {
    AclRole {
        name: name.into(),
        description: description.into(),
        service_identities: vec![concord::consul::AclServiceIdentity {
            service_name: service.into(),
            datacenters: vec![],
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_logs_in_with_its_serviceaccount_token_and_gets_only_its_service_identity() {
    let consul = ConsulCluster::start(ConsulOptions { acl: true, ..Default::default() }).await.expect("ACL Consul");
    let kube_env = testenv::shared_kube().await;
    // The flag names an address nothing listens on; the DiscoveryCluster's override (the
    // address Consul dials) is the real one: login works only if the override is used.
    let env =
        env(&consul, "acl-login", Value::Null, json!({ "host": kube_env.server_url() }), "https://127.0.0.1:1").await;

    // ACLAuthMethod: created with the host, CA and a reviewer token; TTL on its tokens.
    apply(&env, "ACLAuthMethod", "pods", json!({ "maxTokenTTL": "10m", "description": "team pods" })).await;
    let method = synced(&env, "ACLAuthMethod", "pods", "True", "Synced").await;
    assert_eq!(method["status"]["host"], kube_env.server_url());
    assert!(method["status"]["reviewerTokenExpirationTime"].is_string(), "{method}");
    let held = env.admin.acl_auth_method_read("pods").await.expect("read").expect("method in Consul");
    assert_eq!(held.kind, "kubernetes");
    assert_eq!(held.config.host, kube_env.server_url());
    assert!(held.config.ca_cert.contains("BEGIN CERTIFICATE"));
    assert_eq!(held.description, "team pods [concord.io ".to_string() + &env.ns + "/pods]");
    support::event(&env.kube, &env.ns, "pods", "AuthMethodSynced", false).await;

    // ACLBindingRule: ServiceAccount `web` gets the service identity `web`.
    apply(
        &env,
        "ACLBindingRule",
        "web",
        json!({ "authMethodRef": "pods", "selector": "serviceaccount.name==\"web\"", "bindType": "service", "bindName": "web" }),
    )
    .await;
    let rule = synced(&env, "ACLBindingRule", "web", "True", "Synced").await;
    let selector = format!("serviceaccount.namespace==\"{}\" and (serviceaccount.name==\"web\")", env.ns);
    assert_eq!(rule["status"]["selector"], selector.as_str());
    let rules = rules_of(&env.admin, "pods").await;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].selector, selector);

    // THE POD LOGIN: a real ServiceAccount token from TokenRequest, Consul's login.
    let jwt = pod_token(&env.kube, &env.ns, "web").await;
    let (status, token) = login(&env.addr, "pods", &jwt).await;
    assert_eq!(status, 200, "login refused: {token}");
    let identities = token["ServiceIdentities"].as_array().cloned().unwrap_or_default();
    assert_eq!(identities.len(), 1, "{token}");
    assert_eq!(identities[0]["ServiceName"], "web");
    assert!(token["Policies"].as_array().is_none_or(|p| p.is_empty()), "no policies: {token}");
    assert!(token["Roles"].as_array().is_none_or(|r| r.is_empty()), "no roles: {token}");
    assert_eq!(token["AuthMethod"], "pods");
    let expires: k8s_openapi::jiff::Timestamp =
        token["ExpirationTime"].as_str().expect("an expiring token").parse().expect("time");
    let left = expires.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs();
    assert!((500..=600).contains(&left), "maxTokenTTL 10m: expires in {left}s");
    let secret = token["SecretID"].as_str().expect("secret").to_string();
    known(&env.addr, &secret).await;
    // It can register its own service, not another, and reads no KV.
    let own = call(&env.addr, &secret, Method::PUT, "/v1/agent/service/register", &register("web")).await;
    assert_eq!(own.0, 200, "{own:?}");
    assert_eq!(call(&env.addr, &secret, Method::PUT, "/v1/agent/service/register", &register("db")).await.0, 403);
    env.admin.kv_put("team/config", "x", &Default::default()).await.expect("kv");
    assert_eq!(call(&env.addr, &secret, Method::GET, "/v1/kv/team/config", "").await.0, 403);
    assert_eq!(call(&env.addr, &secret, Method::GET, "/v1/acl/tokens", "").await.0, 403);

    // Another ServiceAccount of the namespace matches no rule; `web` of another namespace
    // (same cluster, a valid token) does not match the namespace the rule holds.
    let db_jwt = pod_token(&env.kube, &env.ns, "db").await;
    assert_eq!(login(&env.addr, "pods", &db_jwt).await.0, 403);
    let other = kube_env.create_namespace("acl-login-other").await;
    let foreign_jwt = pod_token(&env.kube, &other, "web").await;
    let (foreign, answer) = login(&env.addr, "pods", &foreign_jwt).await;
    assert_eq!(foreign, 403, "a ServiceAccount of another namespace logged in: {answer}");

    // ACLRole: create, bind, log in with it.
    apply(&env, "ACLPolicy", "kv-read", json!({ "rules": "key_prefix \"team/\" { policy = \"read\" }" })).await;
    eventually("policy kv-read in Consul", WAIT, || async {
        env.admin.acl_policy_read_by_name("kv-read").await.ok()?.map(|_| ())
    })
    .await;
    apply(&env, "ACLRole", "api", json!({ "serviceIdentities": [{ "serviceName": "api" }] })).await;
    let role = synced(&env, "ACLRole", "api", "True", "Synced").await;
    let role_id = role["status"]["roleId"].as_str().expect("roleId").to_string();
    support::event(&env.kube, &env.ns, "api", "RoleSynced", false).await;
    apply(
        &env,
        "ACLBindingRule",
        "api",
        json!({ "authMethodRef": "pods", "selector": "serviceaccount.name==\"api\"", "bindType": "role", "bindName": "api" }),
    )
    .await;
    synced(&env, "ACLBindingRule", "api", "True", "Synced").await;
    let api_jwt = pod_token(&env.kube, &env.ns, "api").await;
    let (status, api_token) = login(&env.addr, "pods", &api_jwt).await;
    assert_eq!(status, 200, "{api_token}");
    assert_eq!(api_token["Roles"][0]["Name"], "api", "{api_token}");
    let api_secret = api_token["SecretID"].as_str().expect("secret").to_string();
    known(&env.addr, &api_secret).await;
    assert_eq!(call(&env.addr, &api_secret, Method::GET, "/v1/kv/team/config", "").await.0, 403);
    // Role update: add the policy; the logged-in token (which holds the role) reads KV.
    apply(&env, "ACLRole", "api", json!({ "serviceIdentities": [{ "serviceName": "api" }], "policies": ["kv-read"] }))
        .await;
    synced(&env, "ACLRole", "api", "True", "Synced").await;
    let held = env.admin.acl_role_read(&role_id).await.expect("read").expect("role");
    assert_eq!(held.policies.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), vec!["kv-read"]);
    eventually("the role's new policy reads KV", WAIT, || async {
        (call(&env.addr, &api_secret, Method::GET, "/v1/kv/team/config", "").await.0 == 200).then_some(())
    })
    .await;

    // Drift, reverted: the role stripped by hand, the rule's selector widened by hand,
    // the method's TTL changed by hand.
    env.admin.acl_role_update(&AclRole { policies: vec![], service_identities: vec![], ..held.clone() }).await.ok();
    let widened = AclBindingRule {
        selector: "serviceaccount.name==\"web\"".into(),
        ..rules_of(&env.admin, "pods").await.into_iter().find(|r| r.bind_type == "service").expect("rule")
    };
    env.admin.acl_binding_rule_update(&widened).await.expect("widened by hand");
    let mut longer = env.admin.acl_auth_method_read("pods").await.expect("read").expect("method");
    longer.max_token_ttl = Some("20m".into());
    // Consul shows the reviewer token to a management token, so a hand edit keeps it.
    assert!(longer.config.service_account_jwt.as_ref().is_some_and(|t| !t.is_empty()));
    env.admin.acl_auth_method_update(&longer).await.expect("method edited by hand");
    eventually("role drift reverted", WAIT, || async {
        let r = env.admin.acl_role_read(&role_id).await.ok()??;
        (r.policies.len() == 1 && r.service_identities.len() == 1).then_some(())
    })
    .await;
    eventually("selector drift reverted", WAIT, || async {
        let r = env.admin.acl_binding_rule_read(&widened.id).await.ok()??;
        (r.selector == selector).then_some(())
    })
    .await;
    eventually("method drift reverted", WAIT, || async {
        let m = env.admin.acl_auth_method_read("pods").await.ok()??;
        (m.max_token_ttl.as_deref().and_then(|t| concord::resources::parse_duration(t).ok())
            == Some(Duration::from_secs(600)))
        .then_some(())
    })
    .await;
    support::event(&env.kube, &env.ns, "pods", "DriftReverted", false).await;
    support::event(&env.kube, &env.ns, "api", "DriftReverted", false).await;
    // Login still works after the reverts (the reviewer token is in place).
    assert_eq!(login(&env.addr, "pods", &jwt).await.0, 200);

    // Update: the rule binds another service; the method's TTL changes.
    apply(
        &env,
        "ACLBindingRule",
        "web",
        json!({ "authMethodRef": "pods", "selector": "serviceaccount.name==\"web\"", "bindType": "service", "bindName": "web-v2" }),
    )
    .await;
    apply(&env, "ACLAuthMethod", "pods", json!({ "maxTokenTTL": "5m", "description": "team pods" })).await;
    synced(&env, "ACLBindingRule", "web", "True", "Synced").await;
    synced(&env, "ACLAuthMethod", "pods", "True", "Synced").await;
    let (status, v2) = login(&env.addr, "pods", &jwt).await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["ServiceIdentities"][0]["ServiceName"], "web-v2", "{v2}");
    let left = v2["ExpirationTime"]
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs())
        .expect("expiry");
    assert!((200..=300).contains(&left), "maxTokenTTL 5m: expires in {left}s");

    // The reviewer token concord wrote into Consul (shown to a management token there).
    let reviewer_jwt = env
        .admin
        .acl_auth_method_read("pods")
        .await
        .expect("read")
        .and_then(|m| m.config.service_account_jwt)
        .expect("the method holds a reviewer token");
    assert!(reviewer_jwt.expose_secret().starts_with("ey"), "a JWT");
    // Renewal: the recorded expiry says two thirds of the reviewer token's life have
    // passed (as after 40 minutes); concord writes a new token into Consul, records
    // its expiry and says so. Login keeps working.
    // The controller also writes this status every drift interval, and a reconcile that
    // began before the patch reached its cache writes the old expiry back (seen under
    // load): the test patches again until the renewal is reported.
    let methods = Api::<ACLAuthMethod>::namespaced(env.kube.clone(), &env.ns);
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.kube.clone(), &env.ns);
    eventually("a ReviewerTokenRenewed event on pods", Duration::from_secs(90), || async {
        let soon = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(60);
        let patch = json!({ "status": { "reviewerTokenExpirationTime": soon.to_string() } });
        methods.patch_status("pods", &PatchParams::default(), &Patch::Merge(patch)).await.ok()?;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let list = events.list(&Default::default()).await.ok()?;
            if list.items.iter().any(|e| {
                e.reason.as_deref() == Some("ReviewerTokenRenewed")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("pods")
            }) {
                return Some(());
            }
        }
        None
    })
    .await;
    let renewed = eventually("a new reviewer token in Consul", WAIT, || async {
        let m = env.admin.acl_auth_method_read("pods").await.ok()??;
        m.config.service_account_jwt.filter(|t| t != &reviewer_jwt)
    })
    .await;
    let status = get(&env, "ACLAuthMethod", "pods").await.expect("method");
    let expiry: k8s_openapi::jiff::Timestamp =
        status["status"]["reviewerTokenExpirationTime"].as_str().expect("expiry").parse().expect("time");
    let left = expiry.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs();
    assert!((3000..=3600).contains(&left), "a fresh hour: {left}s");
    assert_eq!(login(&env.addr, "pods", &jwt).await.0, 200, "login with the renewed reviewer");

    // Delete: each object takes its Consul object with it.
    delete(&env, "ACLBindingRule", "api").await;
    assert!(rules_of(&env.admin, "pods").await.iter().all(|r| r.bind_type != "role"));
    delete(&env, "ACLRole", "api").await;
    assert!(env.admin.acl_role_read(&role_id).await.expect("read").is_none());
    delete(&env, "ACLAuthMethod", "pods").await;
    assert!(env.admin.acl_auth_method_read("pods").await.expect("read").is_none());
    assert_eq!(login(&env.addr, "pods", &jwt).await.0 / 100, 4, "no method, no login");
    delete(&env, "ACLBindingRule", "web").await;

    // Neither the reviewer token nor a login token is in any log line, Event or status.
    let known = [
        support::sweep::Known { what: "the management token".into(), value: env.management.clone() },
        support::sweep::Known { what: "a login token".into(), value: secret },
        support::sweep::Known { what: "the pod's JWT".into(), value: jwt },
        support::sweep::Known { what: "the reviewer token".into(), value: reviewer_jwt.expose_secret().to_string() },
        support::sweep::Known { what: "the renewed reviewer token".into(), value: renewed.expose_secret().to_string() },
    ];
    support::sweep::assert_no_leaks(&env.kube, &env.ns, &known).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_gets_nothing_in_consul_from_roles_methods_and_rules_it_is_not_granted() {
    let consul = ConsulCluster::start(ConsulOptions { acl: true, ..Default::default() }).await.expect("ACL Consul");
    let kube_env = testenv::shared_kube().await;
    let host = kube_env.server_url();
    let tenancy = json!({ "serviceIdentities": ["web"], "policies": ["team-*"] });
    let a = env(&consul, "acl-tenant-a", tenancy.clone(), Value::Null, &host).await;
    let b = env(&consul, "acl-tenant-b", tenancy, Value::Null, &host).await;

    // A's method and role, as a legitimate tenant makes them.
    apply(&a, "ACLAuthMethod", "pods", json!({ "name": "team-a-pods" })).await;
    synced(&a, "ACLAuthMethod", "pods", "True", "Synced").await;
    apply(&a, "ACLRole", "web", json!({ "serviceIdentities": [{ "serviceName": "web" }] })).await;
    synced(&a, "ACLRole", "web", "True", "Synced").await;

    // ACLRole: an ungranted service identity, an ungranted policy, management.
    apply(&b, "ACLRole", "db", json!({ "serviceIdentities": [{ "serviceName": "db" }] })).await;
    let c = synced(&b, "ACLRole", "db", "False", "NotGranted").await;
    assert!(c.to_string().contains("serviceIdentities"), "{c}");
    support::event(&b.kube, &b.ns, "db", "NotGranted", true).await;
    apply(&b, "ACLRole", "admin", json!({ "policies": ["global-management"] })).await;
    synced(&b, "ACLRole", "admin", "False", "NotGranted").await;
    support::event(&b.kube, &b.ns, "admin", "NotGranted", true).await;
    apply(&b, "ACLRole", "ops", json!({ "policies": ["ops-read"] })).await;
    synced(&b, "ACLRole", "ops", "False", "NotGranted").await;
    apply(&b, "ACLRole", "edge", json!({ "nodeIdentities": [{ "nodeName": "edge-1", "datacenter": "dc1" }] })).await;
    synced(&b, "ACLRole", "edge", "False", "NotGranted").await;
    for name in ["db", "admin", "ops", "edge"] {
        assert!(b.admin.acl_role_read_by_name(name).await.expect("read").is_none(), "role {name} reached Consul");
    }
    // Squatting A's role name: reported, A's role untouched.
    apply(&b, "ACLRole", "web", json!({ "serviceIdentities": [{ "serviceName": "web" }], "description": "mine" }))
        .await;
    synced(&b, "ACLRole", "web", "False", "NameTaken").await;
    let a_role = a.admin.acl_role_read_by_name("web").await.expect("read").expect("A's role");
    assert!(a_role.description.ends_with(&format!("[concord.io {}/web]", a.ns)));

    // ACLAuthMethod: squatting A's method name.
    apply(&b, "ACLAuthMethod", "pods", json!({ "name": "team-a-pods" })).await;
    synced(&b, "ACLAuthMethod", "pods", "False", "NameTaken").await;
    support::event(&b.kube, &b.ns, "pods", "NameTaken", true).await;
    // ACLBindingRule on another namespace's method (through B's own squatting object).
    apply(&b, "ACLBindingRule", "steal", json!({ "authMethodRef": "pods", "bindType": "service", "bindName": "web" }))
        .await;
    synced(&b, "ACLBindingRule", "steal", "False", "NotGranted").await;
    support::event(&b.kube, &b.ns, "steal", "NotGranted", true).await;
    assert!(rules_of(&a.admin, "team-a-pods").await.is_empty(), "B wrote a rule on A's method");

    // B's own method, then rules it is not granted.
    apply(&b, "ACLAuthMethod", "own", json!({ "name": "team-b-pods" })).await;
    synced(&b, "ACLAuthMethod", "own", "True", "Synced").await;
    let refused = [
        ("db", json!({ "authMethodRef": "own", "bindType": "service", "bindName": "db" })),
        ("any", json!({ "authMethodRef": "own", "bindType": "service", "bindName": "${serviceaccount.name}" })),
        (
            "widen",
            json!({ "authMethodRef": "own", "bindType": "service", "bindName": "web",
                          "selector": "serviceaccount.name==\"web\") or (serviceaccount.name!=\"\"" }),
        ),
        ("a-role", json!({ "authMethodRef": "own", "bindType": "role", "bindName": "web" })),
        ("node", json!({ "authMethodRef": "own", "bindType": "node", "bindName": "edge-1" })),
    ];
    for (name, spec) in refused {
        apply(&b, "ACLBindingRule", name, spec).await;
        let obj = synced(&b, "ACLBindingRule", name, "False", "NotGranted").await;
        eprintln!("refused {name}: {}", obj["status"]["conditions"]);
        support::event(&b.kube, &b.ns, name, "NotGranted", true).await;
    }
    assert!(rules_of(&b.admin, "team-b-pods").await.is_empty(), "a refused rule reached Consul");
    // A pod of B cannot log in as A's `web` through either method.
    let jwt = pod_token(&b.kube, &b.ns, "web").await;
    assert_eq!(login(&b.addr, "team-a-pods", &jwt).await.0, 403);
    assert_eq!(login(&b.addr, "team-b-pods", &jwt).await.0, 403);
    // The granted rule works, and only for B's own namespace.
    apply(&b, "ACLBindingRule", "web", json!({ "authMethodRef": "own", "bindType": "service", "bindName": "web" }))
        .await;
    synced(&b, "ACLBindingRule", "web", "True", "Synced").await;
    assert_eq!(login(&b.addr, "team-b-pods", &jwt).await.0, 200);
    let a_jwt = pod_token(&a.kube, &a.ns, "web").await;
    assert_eq!(login(&b.addr, "team-b-pods", &a_jwt).await.0, 403, "A's pod used B's method");
}

#[tokio::test(flavor = "multi_thread")]
async fn unmarked_roles_are_imported_and_adopted_only_when_the_namespace_is_granted_them() {
    let consul = ConsulCluster::start(ConsulOptions { acl: true, ..Default::default() }).await.expect("ACL Consul");
    let host = testenv::shared_kube().await.server_url();
    let tenancy = json!({ "serviceIdentities": ["web"], "policies": ["team-*"] });
    let env = env(&consul, "acl-import", tenancy, Value::Null, &host).await;
    // Made by hand in Consul: a role the namespace is granted, and one it is not.
    let policy = concord::consul::AclPolicy {
        name: "team-read".into(),
        rules: r#"service_prefix "" { policy = "read" }"#.into(),
        ..Default::default()
    };
    env.admin.acl_policy_create(&policy).await.expect("policy");
    let granted = AclRole {
        policies: vec![concord::consul::AclLink::by_name("team-read")],
        ..hand_made_role("ops", "made by hand", "web")
    };
    let granted = env.admin.acl_role_create(&granted).await.expect("granted role");
    let ungranted = hand_made_role("db-admin", "by hand too", "db");
    let ungranted = env.admin.acl_role_create(&ungranted).await.expect("ungranted role");

    // The CLI prints the granted role as an object (and marks nothing without --adopt).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["import", "ACLRole", "--namespace", &env.ns, "--cluster-ref", "consul", "--address", &env.addr])
        .env("CONSUL_HTTP_TOKEN", &env.management)
        .env_remove("CONSUL_HTTP_ADDR")
        .output()
        .expect("concord import runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(&env.management) && !stdout.contains(&env.management), "the token was printed");
    let docs: Vec<Value> = stdout.split("---\n").map(|d| serde_yaml::from_str(d).expect("YAML")).collect();
    let ops = docs.iter().find(|d| d["metadata"]["name"] == "ops").unwrap_or_else(|| panic!("ops in {stdout}"));
    assert_eq!(ops["kind"], "ACLRole");
    assert_eq!(ops["metadata"]["namespace"], json!(env.ns));
    assert_eq!(
        ops["spec"],
        json!({ "clusterRef": "consul", "description": "made by hand", "policies": ["team-read"],
                "serviceIdentities": [{ "serviceName": "web" }] })
    );
    assert!(stderr.contains("not adopted until marked"), "{stderr}");
    assert_eq!(env.admin.acl_role_read(&granted.id).await.expect("read").expect("ops").description, "made by hand");
    // An unknown --adopt use is one readable line.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["import", "ACLRole", "--adopt", "--address", &env.addr])
        .env_remove("CONSUL_HTTP_TOKEN")
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert_eq!(String::from_utf8_lossy(&bad.stderr).trim().lines().count(), 1, "{:?}", bad.stderr);

    // The DiscoveryCluster asks for ACLRole imports.
    let patch = json!({ "spec": { "sync": { "importConfigEntries": ["ACLRole"] } } });
    Api::<DiscoveryCluster>::namespaced(env.kube.clone(), &env.ns)
        .patch("consul", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("import on");
    let obj = synced(&env, "ACLRole", "ops", "True", "Synced").await;
    assert_eq!(obj["metadata"]["labels"]["concord.io/imported"], "true");
    assert_eq!(obj["status"]["roleId"], json!(granted.id), "the hand-made role was adopted, not recreated");
    let held = env.admin.acl_role_read(&granted.id).await.expect("read").expect("ops");
    assert_eq!(held.description, format!("made by hand [concord.io {}/ops]", env.ns));
    assert_eq!(
        AclRole { description: granted.description.clone(), modify_index: granted.modify_index, ..held },
        granted
    );

    // The ungranted role: no object, named in an Event on the DiscoveryCluster, untouched.
    support::event(&env.kube, &env.ns, "consul", "ImportRefused", true).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a few import rounds
    assert!(get(&env, "ACLRole", "db-admin").await.is_none(), "an ungranted role was imported");
    let still = env.admin.acl_role_read(&ungranted.id).await.expect("read").expect("db-admin");
    assert_eq!(still, ungranted, "the ungranted role was changed");

    // The adopted role is the object's now: an edit is synced, delete removes it.
    let edit = json!({ "spec": { "serviceIdentities": null } });
    Api::<ACLRole>::namespaced(env.kube.clone(), &env.ns)
        .patch("ops", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    eventually("the update reaches Consul", WAIT, || async {
        let r = env.admin.acl_role_read(&granted.id).await.ok()??;
        r.service_identities.is_empty().then_some(())
    })
    .await;
    delete(&env, "ACLRole", "ops").await;
    assert!(env.admin.acl_role_read(&granted.id).await.expect("read").is_none(), "the adopted role stayed");
}

#[tokio::test(flavor = "multi_thread")]
async fn unmarked_kubernetes_methods_are_imported_only_when_every_rule_holds_to_the_namespace() {
    let consul = ConsulCluster::start(ConsulOptions { acl: true, ..Default::default() }).await.expect("ACL Consul");
    let kube_env = testenv::shared_kube().await;
    let host = kube_env.server_url();
    let ca = std::fs::read_to_string(kube_env.work_dir().join("ca.crt")).expect("CA");
    let env = env(&consul, "acl-import-m", json!({ "serviceIdentities": ["web"] }), Value::Null, &host).await;
    // Made by hand: a method pointing at a wrong host, with a rule held to this namespace;
    // and one whose rule serves another namespace.
    let jwt = pod_token(&env.kube, &env.ns, "hand").await;
    let method = |name: &str| concord::consul::AclAuthMethod {
        name: name.into(),
        kind: "kubernetes".into(),
        description: "by hand".into(),
        config: concord::consul::KubernetesAuthConfig {
            host: "https://127.0.0.1:1".into(),
            ca_cert: ca.clone(),
            service_account_jwt: Some(Token::new(&jwt)),
        },
        ..Default::default()
    };
    env.admin.acl_auth_method_create(&method("hand-pods")).await.expect("method");
    env.admin.acl_auth_method_create(&method("shared-pods")).await.expect("method");
    let rule = |m: &str, ns: &str| AclBindingRule {
        auth_method: m.into(),
        selector: format!("serviceaccount.namespace==\"{ns}\""),
        bind_type: "service".into(),
        bind_name: "web".into(),
        ..Default::default()
    };
    let held = env.admin.acl_binding_rule_create(&rule("hand-pods", &env.ns)).await.expect("rule");
    env.admin.acl_binding_rule_create(&rule("shared-pods", "elsewhere")).await.expect("rule");

    // The CLI prints the first, names the second, and says adoption takes the host over.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["import", "ACLAuthMethod", "--namespace", &env.ns, "--address", &env.addr])
        .env("CONSUL_HTTP_TOKEN", &env.management)
        .env_remove("CONSUL_HTTP_ADDR")
        .output()
        .expect("concord import runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains(&jwt) && !stderr.contains(&jwt), "the reviewer JWT was printed");
    let docs: Vec<Value> = stdout.split("---\n").map(|d| serde_yaml::from_str(d).expect("YAML")).collect();
    assert_eq!(docs.len(), 1, "{stdout}");
    assert_eq!(docs[0]["kind"], "ACLAuthMethod");
    assert_eq!(docs[0]["metadata"]["name"], "hand-pods");
    assert_eq!(docs[0]["spec"], json!({ "description": "by hand" }));
    assert!(stderr.contains("shared-pods") && stderr.contains("not held to namespace"), "{stderr}");
    assert!(stderr.contains("host, CA and reviewer token"), "{stderr}");

    let patch = json!({ "spec": { "sync": { "importConfigEntries": ["ACLAuthMethod"] } } });
    Api::<DiscoveryCluster>::namespaced(env.kube.clone(), &env.ns)
        .patch("consul", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("import on");
    let obj = synced(&env, "ACLAuthMethod", "hand-pods", "True", "Synced").await;
    assert_eq!(obj["metadata"]["labels"]["concord.io/imported"], "true");
    let adopted = env.admin.acl_auth_method_read("hand-pods").await.expect("read").expect("method");
    assert_eq!(adopted.description, format!("by hand [concord.io {}/hand-pods]", env.ns));
    assert_eq!(adopted.config.host, host, "concord took the host over");
    assert_eq!(rules_of(&env.admin, "hand-pods").await, vec![held], "the rule is untouched");
    // Logins through the adopted method now reach this API server.
    let web = pod_token(&env.kube, &env.ns, "web").await;
    assert_eq!(login(&env.addr, "hand-pods", &web).await.0, 200);

    support::event(&env.kube, &env.ns, "consul", "ImportRefused", true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(get(&env, "ACLAuthMethod", "shared-pods").await.is_none(), "a shared method was imported");
    let shared = env.admin.acl_auth_method_read("shared-pods").await.expect("read").expect("method");
    assert_eq!((shared.description.as_str(), shared.config.host.as_str()), ("by hand", "https://127.0.0.1:1"));
}

/// The notes of the Warning Events `reason` on the object `object` of `ns`.
async fn warnings(kube: &kube::Client, ns: &str, object: &str, reason: &str) -> Vec<String> {
    use k8s_openapi::api::events::v1::Event;
    let events = Api::<Event>::namespaced(kube.clone(), ns).list(&Default::default()).await.expect("events");
    events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn binding_rules_are_imported_only_when_the_namespace_could_have_written_them_and_never_twice() {
    let consul = ConsulCluster::start(ConsulOptions { acl: true, ..Default::default() }).await.expect("ACL Consul");
    let kube_env = testenv::shared_kube().await;
    let host = kube_env.server_url();
    let ca = std::fs::read_to_string(kube_env.work_dir().join("ca.crt")).expect("CA");
    let env = env(&consul, "acl-import-r", json!({ "serviceIdentities": ["web", "api"] }), Value::Null, &host).await;
    let ns = env.ns.clone();
    // This namespace's method, made by concord (its Consul name is not the object's).
    apply(&env, "ACLAuthMethod", "pods", json!({ "name": "team-pods" })).await;
    synced(&env, "ACLAuthMethod", "pods", "True", "Synced").await;

    // Made by hand in Consul on that method: a rule the namespace could write itself, and
    // the attacks: selectors that reach other namespaces, an ungranted service, a role
    // that is not this namespace's.
    let held = format!("serviceaccount.namespace==\"{ns}\"");
    let rule = |method: &str, selector: String, bind_type: &str, bind_name: &str| AclBindingRule {
        auth_method: method.into(),
        description: "by hand".into(),
        selector,
        bind_type: bind_type.into(),
        bind_name: bind_name.into(),
        ..Default::default()
    };
    let create = |r: AclBindingRule| {
        let admin = env.admin.clone();
        async move {
            for attempt in 1.. {
                match admin.acl_binding_rule_create(&r).await {
                    Ok(created) => return created,
                    // A fresh cluster on a busy machine may lose its leader mid-write
                    // ("leadership lost while committing log"): the write may have landed.
                    Err(e) if attempt < 5 => {
                        tracing::warn!(error = %e, "creating a test rule; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let landed = admin.acl_binding_rules(&r.auth_method).await.unwrap_or_default();
                        let same = |x: &AclBindingRule| {
                            (&x.selector, &x.bind_type, &x.bind_name) == (&r.selector, &r.bind_type, &r.bind_name)
                        };
                        if let Some(created) = landed.into_iter().find(same) {
                            return created;
                        }
                    }
                    Err(e) => panic!("rule: {e}"),
                }
            }
            unreachable!("the loop returns or panics")
        }
    };
    let good = create(rule("team-pods", format!("{held} and (serviceaccount.name==web)"), "service", "web")).await;
    let wider =
        create(rule("team-pods", format!("{held} or serviceaccount.namespace==\"elsewhere\""), "service", "web")).await;
    let escape = create(rule(
        "team-pods",
        format!("{held} and (serviceaccount.name==web) or (serviceaccount.name!=\"\")"),
        "service",
        "web",
    ))
    .await;
    let ungranted = create(rule("team-pods", held.clone(), "service", "db")).await;
    let ops = hand_made_role("ops-admin", "by hand", "db");
    env.admin.acl_role_create(&ops).await.expect("role");
    let foreign_role = create(rule("team-pods", held.clone(), "role", "ops-admin")).await;
    let hostile = [&wider, &escape, &ungranted, &foreign_role];
    // Another namespace's method, with a rule that even names this namespace; and a
    // method made by hand, imported in the same pass as its rule.
    let jwt = pod_token(&env.kube, &ns, "hand").await;
    let method = |name: &str, description: &str| concord::consul::AclAuthMethod {
        name: name.into(),
        kind: "kubernetes".into(),
        description: description.into(),
        config: concord::consul::KubernetesAuthConfig {
            host: "https://127.0.0.1:1".into(),
            ca_cert: ca.clone(),
            service_account_jwt: Some(Token::new(&jwt)),
        },
        ..Default::default()
    };
    env.admin.acl_auth_method_create(&method("elsewhere-pods", "[concord.io elsewhere/pods]")).await.expect("method");
    env.admin.acl_auth_method_create(&method("hand-pods", "by hand")).await.expect("method");
    let foreign = create(rule("elsewhere-pods", held.clone(), "service", "web")).await;
    let hand = create(rule("hand-pods", format!("{held} and (serviceaccount.name==api)"), "service", "api")).await;
    let short = |id: &str| id[..8].to_ascii_lowercase();

    // The CLI: --namespace is needed, in one line.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["import", "ACLBindingRule", "--address", &env.addr])
        .env("CONSUL_HTTP_TOKEN", &env.management)
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    let line = String::from_utf8_lossy(&bad.stderr);
    assert!(line.trim().lines().count() == 1 && line.contains("--namespace"), "{line}");
    // Rules on a method the namespace neither owns nor imports in that run: none.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["import", "ACLBindingRule", "--namespace", &ns, "--address", &env.addr])
        .env("CONSUL_HTTP_TOKEN", &env.management)
        .output()
        .expect("concord import runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains(&hand.id[..8]) && !stdout.contains("hand-pods"), "{stdout}");
    assert!(stderr.contains("hand-pods: the method is not namespace"), "{stderr}");
    assert!(stdout.contains(&format!("pods-{}", short(&good.id))), "{stdout}");
    // It prints the rules held to the namespace on its methods (the one it owns, and the
    // one printed in this run), names the others, and marks nothing without --adopt.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["import", "ACLAuthMethod", "ACLBindingRule", "--namespace", &ns, "--address", &env.addr])
        .env("CONSUL_HTTP_TOKEN", &env.management)
        .env_remove("CONSUL_HTTP_ADDR")
        .output()
        .expect("concord import runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let docs: Vec<Value> = stdout.split("---\n").map(|d| serde_yaml::from_str(d).expect("YAML")).collect();
    let printed = |name: &str| docs.iter().find(|d| d["metadata"]["name"] == name).cloned();
    let doc = printed(&format!("pods-{}", short(&good.id))).unwrap_or_else(|| panic!("the good rule in {stdout}"));
    assert_eq!(doc["kind"], "ACLBindingRule");
    assert_eq!(
        doc["spec"],
        json!({ "authMethodRef": "pods", "description": "by hand", "selector": "serviceaccount.name==web",
                "bindType": "service", "bindName": "web" })
    );
    let doc = printed(&format!("hand-pods-{}", short(&hand.id))).unwrap_or_else(|| panic!("hand's rule in {stdout}"));
    assert_eq!(doc["spec"]["authMethodRef"], "hand-pods");
    for r in [&wider, &escape] {
        assert!(stderr.contains(&r.id) && printed(&format!("pods-{}", short(&r.id))).is_none(), "{stderr}");
    }
    assert!(stderr.contains("not held to namespace"), "{stderr}");
    assert!(!stdout.contains(&foreign.id) && !stdout.contains("elsewhere-pods"), "another's method: {stdout}");
    assert!(stderr.contains("grants"), "the CLI says who checks the grants: {stderr}");
    assert!(!stdout.contains(&jwt) && !stderr.contains(&jwt), "the reviewer JWT was printed");
    assert_eq!(env.admin.acl_binding_rule_read(&good.id).await.expect("read").expect("good"), good, "marked");

    // The DiscoveryCluster asks for methods and rules.
    let patch = json!({ "spec": { "sync": { "importConfigEntries": ["ACLAuthMethod", "ACLBindingRule"] } } });
    Api::<DiscoveryCluster>::namespaced(env.kube.clone(), &ns)
        .patch("consul", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("import on");
    let name = format!("pods-{}", short(&good.id));
    let obj = synced(&env, "ACLBindingRule", &name, "True", "Synced").await;
    assert_eq!(obj["metadata"]["labels"]["concord.io/imported"], "true");
    assert_eq!(obj["status"]["ruleId"], json!(good.id), "the hand-made rule was adopted, not recreated");
    let adopted = env.admin.acl_binding_rule_read(&good.id).await.expect("read").expect("good");
    assert_eq!(adopted.description, format!("by hand [concord.io {ns}/{name}]"));
    assert_eq!(
        AclBindingRule { description: good.description.clone(), modify_index: good.modify_index, ..adopted },
        good
    );
    let hand_name = format!("hand-pods-{}", short(&hand.id));
    synced(&env, "ACLAuthMethod", "hand-pods", "True", "Synced").await;
    let obj = synced(&env, "ACLBindingRule", &hand_name, "True", "Synced").await;
    assert_eq!(obj["status"]["ruleId"], json!(hand.id));

    // Each attack is named in an Event on the DiscoveryCluster; none gets an object, none
    // is changed, and no import or sync writes a second rule.
    eventually("an ImportRefused Event per hostile rule", WAIT, || async {
        let notes = warnings(&env.kube, &ns, "consul", "ImportRefused").await.join("\n");
        hostile.iter().all(|r| notes.contains(&r.id)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a few import and drift rounds
    let objects =
        Api::<ACLBindingRule>::namespaced(env.kube.clone(), &ns).list(&Default::default()).await.expect("list");
    let mut names: Vec<String> = objects.items.iter().map(|o| o.metadata.name.clone().unwrap_or_default()).collect();
    names.sort();
    let mut want = vec![name.clone(), hand_name.clone()];
    want.sort();
    assert_eq!(names, want, "only the two rules the namespace could write were imported");
    let mut ids: Vec<String> = rules_of(&env.admin, "team-pods").await.into_iter().map(|r| r.id).collect();
    ids.sort();
    let mut created: Vec<String> =
        [&good, &wider, &escape, &ungranted, &foreign_role].iter().map(|r| r.id.clone()).collect();
    created.sort();
    assert_eq!(ids, created, "no rule was added or removed");
    for r in hostile {
        assert_eq!(&env.admin.acl_binding_rule_read(&r.id).await.expect("read").expect("rule"), r, "changed");
    }
    assert_eq!(rules_of(&env.admin, "elsewhere-pods").await, vec![foreign], "another namespace's rule");
    assert_eq!(rules_of(&env.admin, "hand-pods").await.len(), 1, "a second rule on the imported method");

    // A pod logs in through the imported method and rule, and gets only their identity.
    let api = pod_token(&env.kube, &ns, "api").await;
    let (status, token) = login(&env.addr, "hand-pods", &api).await;
    assert_eq!(status, 200, "{token}");
    let identities = token["ServiceIdentities"].as_array().cloned().unwrap_or_default();
    assert_eq!(identities.len(), 1, "{token}");
    assert_eq!(identities[0]["ServiceName"], "api");
    if let Some(secret) = token["SecretID"].as_str() {
        let _ = call(&env.addr, secret, Method::POST, "/v1/acl/logout", "").await;
    }

    // The adopted rule is the object's now: an edit updates it in place, delete removes it.
    let edit = json!({ "spec": { "selector": "serviceaccount.name==api", "bindName": "api" } });
    Api::<ACLBindingRule>::namespaced(env.kube.clone(), &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    eventually("the update reaches Consul", WAIT, || async {
        let r = env.admin.acl_binding_rule_read(&good.id).await.ok()??;
        (r.bind_name == "api" && r.selector == format!("{held} and (serviceaccount.name==api)")).then_some(())
    })
    .await;
    assert_eq!(rules_of(&env.admin, "team-pods").await.len(), 5, "the edit wrote a second rule");
    delete(&env, "ACLBindingRule", &name).await;
    assert!(env.admin.acl_binding_rule_read(&good.id).await.expect("read").is_none(), "the adopted rule stayed");

    // `concord import --adopt`: with the DiscoveryCluster's rule import off, the CLI marks
    // a new rule for the object it prints; applied as printed, that object adopts it.
    let patch = json!({ "spec": { "sync": { "importConfigEntries": ["ACLAuthMethod"] } } });
    Api::<DiscoveryCluster>::namespaced(env.kube.clone(), &ns)
        .patch("consul", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("rule import off");
    for r in hostile {
        env.admin.acl_binding_rule_delete(&r.id).await.expect("delete");
    }
    let late = create(rule("hand-pods", format!("{held} and (serviceaccount.name==web)"), "service", "web")).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["import", "ACLBindingRule", "--adopt", "--namespace", &ns, "--cluster-ref", "consul"])
        .args(["--address", &env.addr])
        .env("CONSUL_HTTP_TOKEN", &env.management)
        .output()
        .expect("concord import --adopt runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let late_name = format!("hand-pods-{}", short(&late.id));
    let docs: Vec<Value> = stdout.split("---\n").map(|d| serde_yaml::from_str(d).expect("YAML")).collect();
    assert_eq!(docs.len(), 1, "only the new rule: {stdout}");
    assert_eq!(docs[0]["metadata"]["name"], json!(late_name));
    let marked = env.admin.acl_binding_rule_read(&late.id).await.expect("read").expect("late");
    assert_eq!(marked.description, format!("by hand [concord.io {ns}/{late_name}]"));
    let object: ACLBindingRule = serde_json::from_value(docs[0].clone()).expect("an ACLBindingRule");
    Api::<ACLBindingRule>::namespaced(env.kube.clone(), &ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("applied as printed");
    let obj = synced(&env, "ACLBindingRule", &late_name, "True", "Synced").await;
    assert_eq!(obj["status"]["ruleId"], json!(late.id));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ids: Vec<String> = rules_of(&env.admin, "hand-pods").await.into_iter().map(|r| r.id).collect();
    ids.sort();
    let mut want = vec![hand.id.clone(), late.id.clone()];
    want.sort();
    assert_eq!(ids, want, "the applied object wrote a second rule");
}
