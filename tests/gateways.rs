//! IngressGateway, TerminatingGateway and JWTProvider on the generic config-entry
//! controller, against a real kube-apiserver and Consul: per kind create, update, drift
//! revert and delete; refusals (Consul's words in the condition, the last good entry
//! kept, the retry once the dependency is there); import of unmanaged entries; tenancy
//! (the three kinds need every service granted). Names carry the namespace, so tests on
//! the shared Consul never share entries.
mod support;

use base64::Engine;
use concord::consul::QueryOptions;
use concord::controllers::config_entry::entry::OWNER_META;
use concord::resources::{find_condition, types};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::eventually;
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(30);

use support::ExternalEnv as Env;

/// `(kind, plural, consul kind)`.
const KINDS: &[(&str, &str, &str)] = &[
    ("IngressGateway", "ingressgateways", "ingress-gateway"),
    ("TerminatingGateway", "terminatinggateways", "terminating-gateway"),
    ("JWTProvider", "jwtproviders", "jwt-provider"),
    ("ServiceDefaults", "servicedefaults", "service-defaults"),
];

fn consul_kind(kind: &str) -> &'static str {
    KINDS.iter().find(|k| k.0 == kind).map(|k| k.2).expect("known kind")
}

/// A base64 JWKS with one RSA public key (public: not a secret).
fn jwks() -> String {
    let set = json!({ "keys": [{ "kty": "RSA", "kid": "test", "use": "sig", "alg": "RS256", "e": "AQAB",
        "n": "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw" }] });
    base64::engine::general_purpose::STANDARD.encode(set.to_string())
}

impl Env {
    fn api(&self, kind: &str) -> Api<DynamicObject> {
        let (_, plural, _) = KINDS.iter().find(|k| k.0 == kind).expect("known kind");
        let ar = ApiResource {
            group: "concord.io".into(),
            version: "v1alpha1".into(),
            api_version: "concord.io/v1alpha1".into(),
            kind: kind.into(),
            plural: (*plural).into(),
        };
        Api::namespaced_with(self.kube.clone(), &self.ns, &ar)
    }

    fn svc(&self, name: &str) -> String {
        format!("{}-{name}", self.ns)
    }

    async fn apply(&self, kind: &str, name: &str, spec: Value) {
        let obj = json!({
            "apiVersion": "concord.io/v1alpha1", "kind": kind,
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        self.api(kind).patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.expect("applied");
    }

    /// Waits for `Synced=<status>` with `reason` at the object's generation; returns the message.
    async fn synced(&self, kind: &str, name: &str, status: &str, reason: &str) -> String {
        let api = self.api(kind);
        let start = std::time::Instant::now();
        let mut last = None;
        loop {
            if let Ok(obj) = api.get(name).await {
                let conditions: Vec<concord::resources::Condition> = obj
                    .data
                    .get("status")
                    .and_then(|s| s.get("conditions"))
                    .and_then(|c| serde_json::from_value(c.clone()).ok())
                    .unwrap_or_default();
                if let Some(c) = find_condition(&conditions, types::SYNCED) {
                    if c.status == status && c.reason == reason && c.observed_generation == obj.metadata.generation {
                        return c.message.clone();
                    }
                    last = Some(format!("{}/{}: {}", c.status, c.reason, c.message));
                }
            }
            assert!(
                start.elapsed() < WAIT,
                "{kind} {name}: no Synced={status} ({reason}) after {WAIT:?}; last seen {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn entry(&self, kind: &str, name: &str) -> Option<Value> {
        self.consul
            .config_entry_get::<Value>(consul_kind(kind), name, &QueryOptions::default())
            .await
            .expect("read")
            .value
    }

    async fn delete(&self, kind: &str, name: &str) {
        let api = self.api(kind);
        api.delete(name, &DeleteParams::default()).await.expect("delete");
        eventually(&format!("{kind} {name} deleted"), WAIT, || async {
            api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }

    async fn write_raw(&self, entry: Value) {
        self.consul.config_entry_set(&entry, None).await.expect("raw entry written");
    }
}

fn assert_fields(entry: &Value, expected: &[(&str, Value)]) {
    for (pointer, want) in expected {
        let got = entry.pointer(pointer).unwrap_or(&Value::Null);
        let same = match (got.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => got == want,
        };
        assert!(same, "{pointer}: got {got}, want {want} in {entry}");
    }
}

struct Case {
    kind: &'static str,
    create: Value,
    created: Vec<(&'static str, Value)>,
    update: Value,
    updated: Vec<(&'static str, Value)>,
    hand_edit: (&'static str, Value),
}

async fn run_case(env: &Env, name: &str, case: Case) {
    let kind = case.kind;
    env.apply(kind, name, case.create).await;
    env.synced(kind, name, "True", "Synced").await;
    let entry = env.entry(kind, name).await.expect("entry created");
    assert_fields(&entry, &case.created);
    assert_eq!(entry["Meta"][OWNER_META], json!(format!("{}/{name}", env.ns)), "{kind}: owner mark");

    env.apply(kind, name, case.update).await;
    env.synced(kind, name, "True", "Synced").await;
    let entry = env.entry(kind, name).await.expect("entry updated");
    assert_fields(&entry, &case.updated);

    // A hand edit that also drops concord's Meta, as `consul config write` would.
    let mut edit = entry.clone();
    let (pointer, value) = case.hand_edit;
    *edit.pointer_mut(pointer).unwrap_or_else(|| panic!("{kind}: {pointer} in {entry}")) = value;
    edit.as_object_mut().expect("object").remove("Meta");
    let index = entry["ModifyIndex"].as_u64().expect("index");
    env.write_raw(edit).await;
    eventually(&format!("{kind}: the hand edit reverted"), WAIT, || async {
        let e = env.entry(kind, name).await?;
        (e["ModifyIndex"].as_u64()? > index + 1 && e["Meta"][OWNER_META].is_string()).then_some(e)
    })
    .await;
    let reverted = env.entry(kind, name).await.expect("entry");
    assert_fields(&reverted, &case.updated);
    support::event(&env.kube, &env.ns, name, "DriftCorrected", false).await;

    env.delete(kind, name).await;
    assert!(env.entry(kind, name).await.is_none(), "{kind}: entry deleted with its object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_and_jwt_providers_create_update_revert_drift_and_delete() {
    let env = support::external_env(testenv::shared_consul().await, None, "gw").await;
    let (api, db) = (env.svc("api"), env.svc("db"));
    // The HTTP listener of the update needs api's protocol to be http.
    env.apply("ServiceDefaults", &api, json!({ "protocol": "http" })).await;
    env.synced("ServiceDefaults", &api, "True", "Synced").await;
    let cases = vec![
        (
            env.svc("ingress"),
            Case {
                kind: "IngressGateway",
                create: json!({ "listeners": [{ "port": 5432, "protocol": "tcp", "services": [{ "name": db }] }] }),
                created: vec![
                    ("/Listeners/0/Port", json!(5432)),
                    ("/Listeners/0/Protocol", json!("tcp")),
                    ("/Listeners/0/Services/0/Name", json!(db)),
                ],
                update: json!({ "listeners": [
                    { "port": 5432, "protocol": "tcp", "services": [{ "name": db }] },
                    { "port": 8080, "protocol": "http", "services": [{ "name": api, "hosts": ["api.example.com"],
                        "requestHeaders": { "set": { "X-Via": "ingress" } } }] }],
                    "defaults": { "maxConnections": 512 } }),
                updated: vec![
                    ("/Listeners/1/Port", json!(8080)),
                    ("/Listeners/1/Protocol", json!("http")),
                    ("/Listeners/1/Services/0/Hosts", json!(["api.example.com"])),
                    ("/Listeners/1/Services/0/RequestHeaders/Set/X-Via", json!("ingress")),
                    ("/Defaults/MaxConnections", json!(512)),
                ],
                hand_edit: ("/Listeners/0/Port", json!(6543)),
            },
        ),
        (
            env.svc("egress"),
            Case {
                kind: "TerminatingGateway",
                create: json!({ "services": [{ "name": env.svc("billing") }] }),
                created: vec![("/Services/0/Name", json!(env.svc("billing")))],
                update: json!({ "services": [
                    { "name": env.svc("billing"), "caFile": "/etc/egress/ca.pem", "certFile": "/etc/egress/client.pem",
                      "keyFile": "/etc/egress/client-key.pem", "sni": "billing.example.com" },
                    { "name": env.svc("ldap") }] }),
                updated: vec![
                    ("/Services/0/CAFile", json!("/etc/egress/ca.pem")),
                    ("/Services/0/KeyFile", json!("/etc/egress/client-key.pem")),
                    ("/Services/0/SNI", json!("billing.example.com")),
                    ("/Services/1/Name", json!(env.svc("ldap"))),
                ],
                hand_edit: ("/Services/0/SNI", json!("evil.example.com")),
            },
        ),
        (
            env.svc("okta"),
            Case {
                kind: "JWTProvider",
                create: json!({ "issuer": "https://issuer.example.com", "jsonWebKeySet": { "local": { "jwks": jwks() } } }),
                created: vec![
                    ("/Issuer", json!("https://issuer.example.com")),
                    ("/JSONWebKeySet/Local/JWKS", json!(jwks())),
                    ("/ClockSkewSeconds", json!(30)),
                ],
                update: json!({ "issuer": "https://issuer.example.com", "audiences": ["api"],
                    "jsonWebKeySet": { "remote": { "uri": "https://issuer.example.com/keys", "cacheDuration": "10m",
                        "retryPolicy": { "numRetries": 3, "retryPolicyBackOff": { "baseInterval": "1s", "maxInterval": "5s" } } } },
                    "locations": [{ "header": { "name": "Authorization", "valuePrefix": "Bearer ", "forward": true } }],
                    "forwarding": { "headerName": "X-JWT" }, "clockSkewSeconds": 10 }),
                updated: vec![
                    ("/Audiences", json!(["api"])),
                    ("/JSONWebKeySet/Remote/URI", json!("https://issuer.example.com/keys")),
                    ("/JSONWebKeySet/Remote/RetryPolicy/NumRetries", json!(3)),
                    ("/JSONWebKeySet/Local", Value::Null),
                    ("/Locations/0/Header/Name", json!("Authorization")),
                    ("/Forwarding/HeaderName", json!("X-JWT")),
                    ("/ClockSkewSeconds", json!(10)),
                ],
                hand_edit: ("/Issuer", json!("https://evil.example.com")),
            },
        ),
    ];
    for (name, case) in cases {
        run_case(&env, &name, case).await;
    }
    env.delete("ServiceDefaults", &api).await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_the_last_good_entry_and_quote_consul() {
    support::sweep::capture_logs();
    let env = support::external_env(testenv::shared_consul().await, None, "gw-refuse").await;
    let (db, web, gw) = (env.svc("db"), env.svc("web"), env.svc("gw"));

    // Ingress: an HTTP listener for a service whose protocol is still tcp.
    let tcp_only = json!({ "listeners": [{ "port": 5432, "protocol": "tcp", "services": [{ "name": db }] }] });
    env.apply("IngressGateway", &gw, tcp_only).await;
    env.synced("IngressGateway", &gw, "True", "Synced").await;
    let good = env.entry("IngressGateway", &gw).await.expect("entry");
    env.apply(
        "IngressGateway",
        &gw,
        json!({ "listeners": [
        { "port": 5432, "protocol": "tcp", "services": [{ "name": db }] },
        { "port": 8080, "protocol": "http", "services": [{ "name": web }] }] }),
    )
    .await;
    let message = env.synced("IngressGateway", &gw, "False", "ProtocolMismatch").await;
    assert!(message.contains("Consul refused") && message.contains("protocol"), "Consul's words: {message}");
    let kept = env.entry("IngressGateway", &gw).await.expect("entry");
    assert_eq!(kept["ModifyIndex"], good["ModifyIndex"], "the last good entry stays: {kept}");
    assert_eq!(kept["Listeners"].as_array().map(Vec::len), Some(1));
    support::event(&env.kube, &env.ns, &gw, "ProtocolMismatch", true).await;
    // Once web speaks http, the gateway is retried (the dependency watch) and lands.
    env.apply("ServiceDefaults", &web, json!({ "protocol": "http" })).await;
    env.synced("ServiceDefaults", &web, "True", "Synced").await;
    env.synced("IngressGateway", &gw, "True", "Synced").await;
    let entry = env.entry("IngressGateway", &gw).await.expect("entry");
    assert_eq!(entry["Listeners"][1]["Protocol"], json!("http"));

    // Terminating: the name an ingress gateway already holds.
    let message = {
        env.apply("TerminatingGateway", &gw, json!({ "services": [{ "name": env.svc("ext") }] })).await;
        env.synced("TerminatingGateway", &gw, "False", "GatewayNameTaken").await
    };
    assert!(message.contains("already exists"), "Consul's words: {message}");
    assert!(env.entry("TerminatingGateway", &gw).await.is_none(), "nothing written");
    // The ingress gateway goes: the terminating one is retried and lands.
    env.delete("IngressGateway", &gw).await;
    env.synced("TerminatingGateway", &gw, "True", "Synced").await;
    assert_eq!(
        env.entry("TerminatingGateway", &gw).await.expect("entry")["Services"][0]["Name"],
        json!(env.svc("ext"))
    );

    // JWT provider: a remote key set URL the schema lets through and Consul cannot parse.
    let okta = env.svc("okta");
    env.apply("JWTProvider", &okta, json!({ "jsonWebKeySet": { "local": { "jwks": jwks() } } })).await;
    env.synced("JWTProvider", &okta, "True", "Synced").await;
    let good = env.entry("JWTProvider", &okta).await.expect("entry");
    env.apply("JWTProvider", &okta, json!({ "jsonWebKeySet": { "remote": { "uri": "https://exa mple.com/keys" } } }))
        .await;
    let message = env.synced("JWTProvider", &okta, "False", "ConsulError").await;
    assert!(message.contains("URI"), "Consul's words: {message}");
    let kept = env.entry("JWTProvider", &okta).await.expect("entry");
    assert_eq!(kept["ModifyIndex"], good["ModifyIndex"], "the last good entry stays");
    assert_eq!(kept["JSONWebKeySet"]["Local"]["JWKS"], json!(jwks()));

    for (kind, name) in [("TerminatingGateway", &gw), ("JWTProvider", &okta), ("ServiceDefaults", &web)] {
        env.delete(kind, name).await;
    }
    // The inline key set is public, but concord has no reason to repeat it: not in logs,
    // Events or any status.
    let inline = support::sweep::Known { what: "inline JWKS".into(), value: jwks() };
    support::sweep::assert_no_leaks(&env.kube, &env.ns, &[inline]).await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_adopts_unmanaged_gateways_and_jwt_providers() {
    // Its own cluster: importing adopts every unmanaged entry.
    let cluster = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    let kinds = ["IngressGateway", "TerminatingGateway", "JWTProvider"];
    let env = support::external_env(&cluster, Some(json!({ "importConfigEntries": kinds })), "gw-import").await;
    let raw = [
        json!({ "Kind": "ingress-gateway", "Name": "ingress", "Listeners": [
            { "Port": 5432, "Protocol": "tcp", "Services": [{ "Name": "db" }] }] }),
        json!({ "Kind": "terminating-gateway", "Name": "egress", "Services": [
            { "Name": "billing", "CAFile": "/etc/ca.pem", "SNI": "billing.example.com" }] }),
        json!({ "Kind": "jwt-provider", "Name": "okta", "Issuer": "https://issuer.example.com",
            "JSONWebKeySet": { "Local": { "JWKS": jwks() } } }),
    ];
    for entry in raw {
        env.write_raw(entry).await;
    }
    for (kind, name) in [("IngressGateway", "ingress"), ("TerminatingGateway", "egress"), ("JWTProvider", "okta")] {
        env.synced(kind, name, "True", "Synced").await;
        let obj = env.api(kind).get(name).await.expect("imported object");
        assert_eq!(
            obj.metadata.labels.as_ref().and_then(|l| l.get("concord.io/imported")).map(String::as_str),
            Some("true")
        );
        let entry = env.entry(kind, name).await.expect("entry");
        assert_eq!(entry["Meta"][OWNER_META], json!(format!("{}/{name}", env.ns)), "{kind} adopted");
    }
    let egress = env.api("TerminatingGateway").get("egress").await.expect("object");
    assert_eq!(egress.data["spec"]["services"][0]["caFile"], json!("/etc/ca.pem"));
    let okta = env.api("JWTProvider").get("okta").await.expect("object");
    assert_eq!(okta.data["spec"]["jsonWebKeySet"]["local"]["jwks"], json!(jwks()));
    let entry = env.entry("IngressGateway", "ingress").await.expect("entry");
    assert_fields(&entry, &[("/Listeners/0/Services/0/Name", json!("db"))]);

    // What `kubectl get` prints: the API server's table has each object's Synced status and reason.
    for (kind, plural, name) in [
        ("IngressGateway", "ingressgateways", "ingress"),
        ("TerminatingGateway", "terminatinggateways", "egress"),
        ("JWTProvider", "jwtproviders", "okta"),
    ] {
        let request = http::Request::get(format!("/apis/concord.io/v1alpha1/namespaces/{}/{plural}/{name}", env.ns))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .expect("request");
        let table: Value = serde_json::from_str(&env.kube.request_text(request).await.expect("table")).expect("JSON");
        let columns: Vec<&str> =
            table["columnDefinitions"].as_array().expect("columns").iter().filter_map(|c| c["name"].as_str()).collect();
        let cell = |column: &str| {
            let i = columns
                .iter()
                .position(|c| *c == column)
                .unwrap_or_else(|| panic!("{kind}: no {column} in {columns:?}"));
            table["rows"][0]["cells"][i].clone()
        };
        assert_eq!(cell("Synced"), json!("True"), "{kind}: {table}");
        assert_eq!(cell("Reason"), json!("Synced"), "{kind}: {table}");
    }
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_and_jwt_providers_need_every_service_granted() {
    let env = support::external_env(testenv::shared_consul().await, None, "gw-tenancy").await;
    let (gw, mine, theirs) = (env.svc("gw"), env.svc("mine"), env.svc("theirs"));
    let clusters: Api<concord::resources::DiscoveryCluster> = Api::namespaced(env.kube.clone(), &env.ns);
    let grant = json!({ "spec": { "tenancy": { "intentionDestinations": [gw, mine] } } });
    clusters.patch("consul", &PatchParams::default(), &Patch::Merge(&grant)).await.expect("grant");
    // A service the namespace was not granted, routed by its own gateway.
    env.apply(
        "IngressGateway",
        &gw,
        json!({ "listeners": [{ "port": 5432, "protocol": "tcp", "services": [{ "name": theirs }] }] }),
    )
    .await;
    let message = env.synced("IngressGateway", &gw, "False", "NotGranted").await;
    assert!(message.contains(&theirs) && message.contains("intentionDestinations"), "{message}");
    // Every name granted, but gateway entries need Consul's mesh write: `*` only.
    env.apply("TerminatingGateway", &gw, json!({ "services": [{ "name": mine }] })).await;
    let message = env.synced("TerminatingGateway", &gw, "False", "NotGranted").await;
    assert!(message.contains("mesh write"), "{message}");
    env.apply("JWTProvider", &env.svc("okta"), json!({ "jsonWebKeySet": { "local": { "jwks": jwks() } } })).await;
    let message = env.synced("JWTProvider", &env.svc("okta"), "False", "NotGranted").await;
    assert!(message.contains("cluster-wide"), "{message}");
    for kind in ["IngressGateway", "TerminatingGateway"] {
        assert!(env.entry(kind, &gw).await.is_none(), "{kind}: nothing written");
    }
    assert!(env.entry("JWTProvider", &env.svc("okta")).await.is_none(), "nothing written");
    // With `*`, the same objects land.
    let grant = json!({ "spec": { "tenancy": { "intentionDestinations": ["*"] } } });
    clusters.patch("consul", &PatchParams::default(), &Patch::Merge(&grant)).await.expect("grant");
    // A refused object is retried after its resync (5 min); a touch retries it now.
    let touch = json!({ "metadata": { "annotations": { "test/touch": "1" } } });
    for (kind, name) in
        [("JWTProvider", env.svc("okta")), ("IngressGateway", gw.clone()), ("TerminatingGateway", gw.clone())]
    {
        env.api(kind).patch(&name, &PatchParams::default(), &Patch::Merge(&touch)).await.expect("touch");
    }
    env.synced("JWTProvider", &env.svc("okta"), "True", "Synced").await;
    env.delete("JWTProvider", &env.svc("okta")).await;
    env.delete("IngressGateway", &gw).await;
    env.synced("TerminatingGateway", &gw, "True", "Synced").await;
    env.delete("TerminatingGateway", &gw).await;
    env.controller.stop().await;
}
