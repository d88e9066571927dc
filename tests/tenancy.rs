//! A hostile tenant against a real kube-apiserver and real Consul: someone who may create
//! concord objects in a namespace, but may not read its Secrets or edit its
//! DiscoveryCluster, tries to gain through concord what Kubernetes RBAC or the cluster
//! owner denies them. Every attempt is refused with a condition (and an Event) and leaves
//! nothing behind; the legitimate way to do the same thing is shown to still work.
mod support;

use concord::consul::{AclPolicy, Client, QueryOptions};
use concord::resources::DiscoveryCluster;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;
use std::time::Duration;
use support::{RunningController, eventually};
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(40);

struct Env {
    kube: kube::Client,
    ns: String,
    consul: Client,
    _controller: RunningController,
}

/// A namespace whose DiscoveryCluster `consul` points at `cluster` (with `extra` merged
/// into its spec, and its CA when TLS is on), with a controller watching it.
async fn setup(prefix: &str, cluster: &ConsulCluster, extra: Value, token: Option<&str>) -> Env {
    support::sweep::capture_logs();
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace(prefix).await;
    let addrs = cluster.http_addrs();
    let mut spec = json!({ "external": { "address": addrs.join(",") } });
    if let Some(ca) = support::ca_secret_ref(&kube, &ns, cluster).await {
        spec["external"]["caSecretRef"] = ca;
    }
    if let Some(token) = token {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": "consul-token", "namespace": ns }, "stringData": { "token": token },
        }))
        .expect("secret");
        Api::<Secret>::namespaced(kube.clone(), &ns).create(&PostParams::default(), &secret).await.expect("token");
        spec["external"]["tokenSecretRef"] = json!({ "name": "consul-token", "key": "token" });
    }
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let dc = json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster",
        "metadata": { "name": "consul", "namespace": ns }, "spec": spec,
    });
    Api::<DiscoveryCluster>::namespaced(kube.clone(), &ns)
        .patch("consul", &PatchParams::apply("owner").force(), &Patch::Apply(&dc))
        .await
        .expect("DiscoveryCluster");
    let controller = support::start_controller(kube.clone(), &ns, &[]).await;
    let mut config = support::consul_config(cluster);
    if let Some(token) = token {
        config = config.token(concord::consul::Token::new(token));
    }
    let consul = Client::new(config).expect("consul client");
    Env { kube, ns, consul, _controller: controller }
}

impl Env {
    /// Applies a concord object of `kind` named `name` with `spec`, as the tenant.
    async fn apply<K>(&self, name: &str, kind: &str, spec: Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let obj = json!({
            "apiVersion": "concord.io/v1alpha1", "kind": kind,
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        Api::<K>::namespaced(self.kube.clone(), &self.ns)
            .patch(name, &PatchParams::apply("tenant").force(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("{kind} {name} applied: {e}"));
    }

    /// Waits until the object's condition `type_` has `status` and `reason`; returns its message.
    async fn condition<K>(&self, name: &str, type_: &str, status: &str, reason: &str) -> String
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug
            + serde::Serialize,
    {
        let api: Api<K> = Api::namespaced(self.kube.clone(), &self.ns);
        eventually(&format!("{name} {type_}={status} ({reason})"), WAIT, || async {
            let obj = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            let conditions = obj.pointer("/status/conditions")?.as_array()?.clone();
            let c = conditions.iter().find(|c| c["type"] == type_)?;
            (c["status"] == status && c["reason"] == reason).then(|| c["message"].as_str().unwrap_or("").to_string())
        })
        .await
    }

    /// Waits for a Warning Event with `reason` on the object `name`.
    async fn warning(&self, name: &str, reason: &str) {
        support::event(&self.kube, &self.ns, name, reason, true).await
    }

    async fn kv_keys(&self, prefix: &str) -> Vec<String> {
        self.consul.kv_keys(prefix, None, &QueryOptions::default()).await.expect("kv keys").value
    }

    /// The leak sweep over this namespace (its Secrets' tokens and keys, and `extra`).
    async fn sweep(&self, extra: &[(&str, &str)]) -> usize {
        let extra: Vec<support::sweep::Known> = extra
            .iter()
            .map(|(what, value)| support::sweep::Known { what: what.to_string(), value: value.to_string() })
            .collect();
        support::sweep::assert_no_leaks(&self.kube, &self.ns, &extra).await
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.kube.clone(), &self.ns).get_opt(name).await.expect("get Secret")
    }
}

/// The suite runs against Consul with TLS on (HTTPS, verified RPC): what a tenant can or
/// cannot do must not depend on the transport.
async fn shared_env(prefix: &str, extra: Value) -> Env {
    let consul = testenv::shared_consul_tls().await;
    setup(prefix, consul, extra, None).await
}

/// Attack: a ConfigTemplate whose output names the ACL bootstrap Secret (or any object it
/// did not create) would overwrite it and, through its owner reference, let garbage
/// collection delete it with the template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_cannot_take_over_a_secret_or_configmap_it_did_not_create() {
    use concord::resources::ConfigTemplate;
    let env = shared_env("ten-ctpl", json!({})).await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &env.ns);
    let bootstrap: Secret = serde_json::from_value(json!({
        "metadata": { "name": "consul-acl-bootstrap", "namespace": env.ns },
        "stringData": { "token": "the-bootstrap-token" },
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &bootstrap).await.expect("bootstrap Secret");
    let before = env.secret("consul-acl-bootstrap").await.expect("exists");

    env.apply::<ConfigTemplate>(
        "steal",
        "ConfigTemplate",
        json!({ "template": { "inline": "mine now" },
                "output": { "secret": { "name": "consul-acl-bootstrap", "key": "token" } } }),
    )
    .await;
    let message = env.condition::<ConfigTemplate>("steal", "Rendered", "False", "OutputNotOwned").await;
    assert!(message.contains("consul-acl-bootstrap"), "{message}");
    env.warning("steal", "OutputNotOwned").await;
    let after = env.secret("consul-acl-bootstrap").await.expect("still there");
    assert_eq!(after.data, before.data, "the bootstrap Secret's data is untouched");
    assert!(after.metadata.owner_references.unwrap_or_default().is_empty(), "no owner reference was added");
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "nothing was written at all");
    let status = serde_json::to_string(
        &Api::<ConfigTemplate>::namespaced(env.kube.clone(), &env.ns).get("steal").await.expect("template").status,
    )
    .expect("json");
    assert!(!status.contains("outputHash"), "no hash of the Secret's value is reported: {status}");

    // The same for a ConfigMap an app made; labelling it (as someone who may edit it)
    // lets the template write into it.
    let cms: Api<ConfigMap> = Api::namespaced(env.kube.clone(), &env.ns);
    let app: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "app", "namespace": env.ns }, "data": { "conf": "original" },
    }))
    .expect("cm");
    cms.create(&PostParams::default(), &app).await.expect("app ConfigMap");
    env.apply::<ConfigTemplate>(
        "into-app",
        "ConfigTemplate",
        json!({ "template": { "inline": "rendered" },
                "output": { "configMap": { "name": "app", "key": "conf" } } }),
    )
    .await;
    env.condition::<ConfigTemplate>("into-app", "Rendered", "False", "OutputNotOwned").await;
    assert_eq!(cms.get("app").await.expect("cm").data.expect("data")["conf"], "original");
    let label = json!({ "metadata": { "labels": { "concord.io/template-output": "true" } } });
    cms.patch("app", &PatchParams::default(), &Patch::Merge(&label)).await.expect("labelled");
    env.apply::<ConfigTemplate>(
        "into-app",
        "ConfigTemplate",
        json!({ "template": { "inline": "rendered again" },
                "output": { "configMap": { "name": "app", "key": "conf" } } }),
    )
    .await;
    env.condition::<ConfigTemplate>("into-app", "Rendered", "True", "Rendered").await;
    eventually("the labelled ConfigMap gets the new output", WAIT, || async {
        (cms.get("app").await.ok()?.data?.get("conf")? == "rendered again").then_some(())
    })
    .await;
    env.sweep(&[]).await;
}

/// Attack: `fromSecret` copied any Secret of the namespace into Consul KV (where a
/// template could render it into a ConfigMap): "may create KVConfig" became "may read
/// every Secret".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kvconfig_cannot_copy_a_secret_that_did_not_opt_in() {
    use concord::resources::KVConfig;
    let env = shared_env("ten-kvsrc", json!({})).await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &env.ns);
    let db: Secret = serde_json::from_value(json!({
        "metadata": { "name": "db", "namespace": env.ns }, "stringData": { "password": "s3cr3t-db" },
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &db).await.expect("db Secret");
    let prefix = format!("{}/stolen/", env.ns);
    env.apply::<KVConfig>("copy", "KVConfig", json!({ "prefix": prefix, "fromSecret": [{ "name": "db" }] })).await;
    let message = env.condition::<KVConfig>("copy", "Synced", "False", "SourceNotLabelled").await;
    assert!(message.contains("concord.io/kv-source"), "{message}");
    env.warning("copy", "SourceNotLabelled").await;
    assert!(env.kv_keys(&prefix).await.is_empty(), "nothing reached Consul");

    // The Secret's owner opts in: the label-selected watch notices, the keys are written.
    let label = json!({ "metadata": { "labels": { "concord.io/kv-source": "true" } } });
    secrets.patch("db", &PatchParams::default(), &Patch::Merge(&label)).await.expect("labelled");
    env.condition::<KVConfig>("copy", "Synced", "True", "Synced").await;
    assert_eq!(env.kv_keys(&prefix).await, vec![format!("{prefix}password")]);
    env.sweep(&[("the db password", "s3cr3t-db")]).await;
}

/// Attack: with the owner's grants declared (`spec.tenancy`), a tenant writes KV outside
/// its prefixes, intentions for a service it does not own, and renders keys of others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_intentions_and_template_reads_stay_inside_the_granted_tenancy() {
    use concord::resources::{ConfigTemplate, KVConfig, ServiceIntention};
    let consul = testenv::shared_consul_tls().await;
    // The namespace name is only known once created; grant by a unique marker instead.
    let marker = format!("ten{}", std::process::id());
    let tenancy = json!({ "tenancy": {
        "kvPrefixes": [format!("{marker}-mine/")],
        "intentionDestinations": [format!("{marker}-web")],
    } });
    let env = setup("ten-grants", consul, tenancy, None).await;

    let theirs = format!("{marker}-theirs/");
    let admin = Client::new(support::consul_config(consul)).expect("admin");
    admin
        .kv_put(&format!("{theirs}password"), "their-secret".to_string(), &Default::default())
        .await
        .expect("someone else's key");

    env.apply::<KVConfig>(
        "outside",
        "KVConfig",
        json!({ "prefix": format!("{marker}-other/"),
        "keys": [{ "key": "x", "value": "1" }] }),
    )
    .await;
    let message = env.condition::<KVConfig>("outside", "Synced", "False", "NotGranted").await;
    assert!(message.contains(&format!("{marker}-mine/")), "names the grant: {message}");
    env.warning("outside", "NotGranted").await;
    assert!(env.kv_keys(&format!("{marker}-other/")).await.is_empty(), "nothing written outside the grant");

    env.apply::<KVConfig>(
        "inside",
        "KVConfig",
        json!({ "prefix": format!("{marker}-mine/app/"),
        "keys": [{ "key": "x", "value": "1" }] }),
    )
    .await;
    env.condition::<KVConfig>("inside", "Synced", "True", "Synced").await;

    env.apply::<ServiceIntention>(
        "db",
        "ServiceIntention",
        json!({ "destination": format!("{marker}-db"),
        "sources": [{ "name": "web", "action": "allow" }] }),
    )
    .await;
    env.condition::<ServiceIntention>("db", "Synced", "False", "NotGranted").await;
    env.warning("db", "NotGranted").await;
    let entry = env
        .consul
        .service_intentions_get(&format!("{marker}-db"), &QueryOptions::default())
        .await
        .expect("read intentions");
    assert!(entry.value.is_none(), "no intentions written for an ungranted destination");
    env.apply::<ServiceIntention>(
        "web",
        "ServiceIntention",
        json!({ "destination": format!("{marker}-web"),
        "sources": [{ "name": "api", "action": "allow" }] }),
    )
    .await;
    env.condition::<ServiceIntention>("web", "Synced", "True", "Synced").await;

    env.apply::<ConfigTemplate>(
        "peek",
        "ConfigTemplate",
        json!({ "template": { "inline": format!("{{{{key \"{theirs}password\"}}}}") },
                "output": { "configMap": { "name": "peek", "key": "out" } } }),
    )
    .await;
    let message = env.condition::<ConfigTemplate>("peek", "Rendered", "False", "PermissionDenied").await;
    assert!(!message.contains("their-secret"), "{message}");
    let cms: Api<ConfigMap> = Api::namespaced(env.kube.clone(), &env.ns);
    assert!(cms.get_opt("peek").await.expect("get").is_none(), "no output with someone else's key");
}

/// Attack: an ACLToken naming `global-management` (or any management-equivalent policy)
/// minted a management token into a Secret its creator can read, though they may not
/// read the bootstrap Secret. Also an ACLPolicy with `acl = "write"` and a token naming
/// a policy the owner did not grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acltoken_cannot_mint_management_or_carry_ungranted_policies() {
    use concord::resources::{ACLPolicy, ACLToken};
    let consul =
        ConsulCluster::start(ConsulOptions { acl: true, tls: true, ..Default::default() }).await.expect("ACL Consul");
    let management = consul.management_token().expect("management token");
    let env = setup("ten-acl", &consul, json!({}), Some(&management)).await;
    // A management-equivalent policy someone made outside concord.
    let ops = AclPolicy { name: "ops-admin".into(), rules: "acl = \"write\"".into(), ..Default::default() };
    env.consul.acl_policy_create(&ops).await.expect("ops-admin");
    let tokens_before = env.consul.acl_tokens().await.expect("tokens").len();

    for (name, policy) in [("mgmt", "global-management"), ("ops", "ops-admin")] {
        env.apply::<ACLToken>(name, "ACLToken", json!({ "policies": [policy], "secretName": format!("{name}-token") }))
            .await;
        let message = env.condition::<ACLToken>(name, "Synced", "False", "NotGranted").await;
        assert!(message.contains("management-equivalent"), "{message}");
        env.warning(name, "NotGranted").await;
        assert!(env.secret(&format!("{name}-token")).await.is_none(), "no Secret written for {name}");
    }
    env.apply::<ACLPolicy>("admin", "ACLPolicy", json!({ "rules": "acl = \"write\"" })).await;
    env.condition::<ACLPolicy>("admin", "Synced", "False", "NotGranted").await;
    assert!(env.consul.acl_policy_read_by_name("admin").await.expect("read").is_none(), "policy not created");
    assert_eq!(env.consul.acl_tokens().await.expect("tokens").len(), tokens_before, "no token was minted");

    // The owner declares grants: only team-* policies and the service identity web.
    let dcs: Api<DiscoveryCluster> = Api::namespaced(env.kube.clone(), &env.ns);
    let grants = json!({ "spec": { "tenancy": { "policies": ["team-*"], "serviceIdentities": ["web"] } } });
    dcs.patch("consul", &PatchParams::default(), &Patch::Merge(&grants)).await.expect("grants");
    env.apply::<ACLPolicy>("team-kv", "ACLPolicy", json!({ "rules": "key_prefix \"team/\" { policy = \"read\" }" }))
        .await;
    env.condition::<ACLPolicy>("team-kv", "Synced", "True", "Synced").await;
    env.apply::<ACLPolicy>("other-kv", "ACLPolicy", json!({ "rules": "key_prefix \"x/\" { policy = \"read\" }" }))
        .await;
    env.condition::<ACLPolicy>("other-kv", "Synced", "False", "NotGranted").await;
    env.apply::<ACLToken>(
        "db",
        "ACLToken",
        json!({ "serviceIdentities": [{ "serviceName": "db" }],
        "secretName": "db-token" }),
    )
    .await;
    env.condition::<ACLToken>("db", "Synced", "False", "NotGranted").await;
    assert!(env.secret("db-token").await.is_none());
    env.apply::<ACLToken>(
        "team",
        "ACLToken",
        json!({ "policies": ["team-kv"],
        "serviceIdentities": [{ "serviceName": "web" }], "secretName": "team-token" }),
    )
    .await;
    env.condition::<ACLToken>("team", "Synced", "True", "Synced").await;
    assert!(env.secret("team-token").await.is_some(), "a granted token is written");
    // The sweep, with the team token's secret found in its Secret by the sweep itself.
    let looked_for = env.sweep(&[("the management token", &management)]).await;
    assert!(looked_for >= 3, "management, consul-token and team-token: {looked_for}");
}

/// The sweep itself can fail: a token planted in a log line and in an Event is found in
/// both places (and its value is not in the report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leak_sweep_finds_a_token_planted_in_a_log_line_and_an_event() {
    support::sweep::capture_logs();
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    let ns = kube_env.create_namespace("ten-sweep").await;
    let planted = "0f4c2a1e-9b7d-4c3e-8a2f-6d5e4c3b2a19";
    tracing::warn!(token = planted, "a careless log line");
    let event: Event = serde_json::from_value(json!({
        "metadata": { "name": "careless", "namespace": ns },
        "eventTime": "2026-12-01T00:00:00.000000Z", "reportingController": "test", "reportingInstance": "test",
        "action": "Test", "reason": "Careless", "type": "Normal", "note": format!("token {planted}"),
        "regarding": { "apiVersion": "v1", "kind": "ConfigMap", "name": "x", "namespace": ns },
    }))
    .expect("event");
    Api::<Event>::namespaced(kube.clone(), &ns).create(&PostParams::default(), &event).await.expect("event");
    let known = [support::sweep::Known { what: "the planted token".into(), value: planted.into() }];
    let found = support::sweep::leaks(&kube, &ns, &known).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|f| f.contains("logs")) && found.iter().any(|f| f.contains("Events")), "{found:?}");
    assert!(!format!("{found:?}").contains(planted));
}

/// Every test that runs a controller is swept when the controller stops or is dropped:
/// a token of the namespace's Secrets that reached the logs fails it. Here one does (a
/// log line of this process; the capture is process-wide), and dropping the controller
/// fails with the sweep's report, which names the Secret and never the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_controller_is_swept_when_it_stops_and_a_leak_fails_the_test() {
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    let ns = kube_env.create_namespace("ten-drop-sweep").await;
    let token = "7d1e0c2b-4a3f-4e5d-9c8b-1a2b3c4d5e6f";
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "app-token", "namespace": ns }, "stringData": { "token": token },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(kube.clone(), &ns).create(&PostParams::default(), &secret).await.expect("Secret");
    let controller = support::start_controller(kube.clone(), &ns, &[]).await;
    tracing::warn!(token, "a careless log line of the test process");
    let dropped = tokio::spawn(async move { drop(controller) }).await;
    let panic = dropped.expect_err("the drop-time sweep failed the test").into_panic();
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(message.contains("Secret app-token key token is in the controller's logs"), "{message}");
    assert!(!message.contains(token), "never the value: {message}");
}
