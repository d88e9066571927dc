//! The grants enforced twice: concord refuses what `spec.tenancy` denies before it calls
//! Consul, and the namespace's objects are written with a Consul token derived from
//! those grants, so Consul's own ACLs refuse it too. Against a real ACL-enabled Consul.
mod support;

use concord::cluster::tenant_token;
use concord::consul::{AclPolicy, AclToken, Client, ClientConfig, KvWriteOptions, Token};
use concord::resources::{DiscoveryCluster, KVConfig};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;
use support::eventually;
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(40);

async fn condition(api: &Api<KVConfig>, name: &str, status: &str, reason: &str) -> String {
    eventually(&format!("KVConfig {name} Synced={status} ({reason})"), WAIT, || async {
        let obj = serde_json::to_value(api.get(name).await.ok()?).ok()?;
        let conditions = obj.pointer("/status/conditions")?.as_array()?.clone();
        let c = conditions.into_iter().find(|c| c["type"] == "Synced")?;
        (c["status"] == status && c["reason"] == reason).then(|| c["message"].as_str().unwrap_or("").to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaces_objects_are_written_with_a_token_bounded_by_its_grants() {
    let consul = ConsulCluster::start(ConsulOptions { acl: true, ..Default::default() }).await.expect("ACL Consul");
    let management = consul.management_token().expect("management token");
    let admin = Client::new(ClientConfig::new(consul.http_addrs()).token(Token::new(&management))).expect("client");
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace("grants-twice").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "consul-token", "namespace": ns }, "stringData": { "token": management },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(kube.clone(), &ns).create(&PostParams::default(), &secret).await.expect("token");
    let dc = json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": { "name": "consul", "namespace": ns },
        "spec": { "external": { "address": consul.http_addrs().join(","),
                                "tokenSecretRef": { "name": "consul-token", "key": "token" } },
                  "tenancy": { "kvPrefixes": ["team/"], "intentionDestinations": ["web"] } },
    });
    Api::<DiscoveryCluster>::namespaced(kube.clone(), &ns)
        .patch("consul", &PatchParams::apply("owner").force(), &Patch::Apply(&dc))
        .await
        .expect("DiscoveryCluster");
    let _controller = support::start_controller(kube.clone(), &ns, &[]).await;

    // A granted KVConfig syncs (with the derived token).
    let kvs: Api<KVConfig> = Api::namespaced(kube.clone(), &ns);
    let apply = |keys: serde_json::Value| {
        let obj = json!({ "apiVersion": "concord.io/v1alpha1", "kind": "KVConfig",
                          "metadata": { "name": "app", "namespace": ns },
                          "spec": { "prefix": "team/app/", "keys": keys } });
        let kvs = kvs.clone();
        async move { kvs.patch("app", &PatchParams::apply("tenant").force(), &Patch::Apply(&obj)).await.expect("KVConfig") }
    };
    apply(json!([{ "key": "a", "value": "1" }])).await;
    condition(&kvs, "app", "True", "Synced").await;

    // The derived token exists in Consul, holds the namespace's policy and nothing else.
    let accessor = tenant_token::accessor_id(&ns, "consul");
    let token: AclToken = admin.acl_token_read(&accessor).await.expect("read").expect("the derived token exists");
    let names: Vec<_> = token.policies.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, vec![tenant_token::policy_name(&ns, "consul")]);
    let as_tenant = admin.with_token(token.secret_id.expect("secret")).expect("client");

    // Consul itself holds the line: inside the grants allowed, outside refused.
    let put = KvWriteOptions::default();
    as_tenant.kv_put("team/probe", "ok", &put).await.expect("a granted prefix is writable");
    let outside = as_tenant.kv_put("ops/probe", "no", &put).await;
    assert!(matches!(outside, Err(concord::consul::Error::PermissionDenied { .. })), "{outside:?}");
    let mint = as_tenant
        .acl_policy_create(&AclPolicy {
            name: "escalate".into(),
            rules: "acl = \"write\"".into(),
            ..Default::default()
        })
        .await;
    assert!(matches!(mint, Err(concord::consul::Error::PermissionDenied { .. })), "no ACL rights: {mint:?}");

    // Should concord's own check ever let something through, Consul refuses it: take
    // `team/` out of the derived policy by hand, and the object's next write is refused
    // by Consul (not by concord, whose grants still allow it).
    let mut policy =
        admin.acl_policy_read_by_name(&tenant_token::policy_name(&ns, "consul")).await.expect("read").expect("policy");
    policy.rules = policy.rules.replace("key_prefix \"team/\"", "key_prefix \"elsewhere/\"");
    admin.acl_policy_update(&policy).await.expect("narrowed by hand");
    apply(json!([{ "key": "a", "value": "1" }, { "key": "b", "value": "2" }])).await;
    let message = condition(&kvs, "app", "False", "ConsulError").await;
    assert!(message.to_lowercase().contains("permission denied"), "Consul's words: {message}");
    let b = admin.kv_get("team/app/b", &Default::default()).await.expect("get").value;
    assert!(b.is_none(), "the write did not land");
}

/// With no `spec.tenancy` (the default: everything concord always allowed), the derived
/// token can still write every config entry kind concord manages, and no ACL object.
/// (The `mesh` entry, which needs the same `mesh = "write"` as exported-services, is
/// written through concord by the kind e2e on a managed ACL cluster.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_grants_derive_a_token_that_writes_every_managed_kind_and_no_acl() {
    let consul = ConsulCluster::start(ConsulOptions { acl: true, ..Default::default() }).await.expect("ACL Consul");
    let management = consul.management_token().expect("management token");
    let admin = Client::new(ClientConfig::new(consul.http_addrs()).token(Token::new(&management))).expect("client");
    let rules = tenant_token::rules(&concord::cluster::Grants::default());
    let token = tenant_token::ensure(&admin, "team", "consul", &rules).await.expect("ensure").expect("a token");
    let again = tenant_token::ensure(&admin, "team", "consul", &rules).await.expect("ensure").expect("a token");
    assert_eq!(token.expose_secret(), again.expose_secret(), "found again, not made twice");
    let as_tenant = admin.with_token(token).expect("client");

    let entries = [
        json!({ "Kind": "service-defaults", "Name": "web", "Protocol": "http" }),
        json!({ "Kind": "service-resolver", "Name": "web", "Subsets": { "v1": { "Filter": "Service.Tags contains v1" } } }),
        json!({ "Kind": "service-router", "Name": "web", "Routes": [] }),
        json!({ "Kind": "service-splitter", "Name": "web", "Splits": [{ "Weight": 100, "ServiceSubset": "v1" }] }),
        json!({ "Kind": "service-intentions", "Name": "web", "Sources": [{ "Name": "api", "Action": "allow" }] }),
        json!({ "Kind": "proxy-defaults", "Name": "global", "Config": { "protocol": "http" } }),
        json!({ "Kind": "exported-services", "Name": "default", "Services": [] }),
        json!({ "Kind": "ingress-gateway", "Name": "ingress", "Listeners": [
            { "Port": 8080, "Protocol": "http", "Services": [{ "Name": "web" }] }] }),
        json!({ "Kind": "terminating-gateway", "Name": "egress", "Services": [{ "Name": "billing" }] }),
        json!({ "Kind": "jwt-provider", "Name": "okta", "JSONWebKeySet": { "Local": { "Filename": "/jwks.json" } } }),
    ];
    for entry in &entries {
        as_tenant.config_entry_set(entry, None).await.unwrap_or_else(|e| panic!("{}: {e}", entry["Kind"]));
    }
    as_tenant.kv_put("any/key", "v", &KvWriteOptions::default()).await.expect("KV");
    let query = concord::consul::PreparedQuery {
        name: "web-nearest".into(),
        service: concord::consul::QueryService { service: "web".into(), ..Default::default() },
        ..Default::default()
    };
    as_tenant.prepared_query_create(&query).await.expect("a prepared query");
    let mint = as_tenant.acl_token_create(&AclToken { description: "escalate".into(), ..Default::default() }).await;
    assert!(matches!(mint, Err(concord::consul::Error::PermissionDenied { .. })), "no ACL rights: {mint:?}");

    // Gateways and JWT providers need mesh write in Consul: a token for named services
    // (the gateway's and its service's included) cannot write them, hence concord's `*` rule.
    let cluster: concord::resources::DiscoveryCluster = serde_json::from_value(json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster", "metadata": { "name": "consul" },
        "spec": { "tenancy": { "intentionDestinations": ["web", "ingress", "egress", "billing"] } },
    }))
    .expect("cluster");
    let rules = tenant_token::rules(&concord::cluster::Grants::of(&cluster));
    let token = tenant_token::ensure(&admin, "named", "consul", &rules).await.expect("ensure").expect("a token");
    let named = admin.with_token(token).expect("client");
    named.config_entry_set(&entries[0], None).await.expect("service-defaults of a granted service");
    for entry in &entries[7..] {
        let refused = named.config_entry_set(entry, None).await;
        assert!(
            matches!(refused, Err(concord::consul::Error::PermissionDenied { .. })),
            "{}: {refused:?}",
            entry["Kind"]
        );
    }
}
