//! The CRDs against a real kube-apiserver: every CRD installs and becomes Established,
//! every example in `examples/` is accepted, and invalid objects are refused at
//! admission with a message that names the field.
use concord::crdgen;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use std::path::Path;
use std::time::Duration;

async fn install_crds(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crdgen::all() {
        let name = crd.metadata.name.clone().expect("named");
        api.patch(&name, &PatchParams::apply("concord-test").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("CRD {name} refused: {e}"));
    }
    crdgen::wait_established(client, Duration::from_secs(60)).await.expect("CRDs Established");
}

fn resource_for(kind: &str) -> ApiResource {
    let crd = crdgen::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let gvk = GroupVersionKind::gvk(&crd.spec.group, &crd.spec.versions[0].name, kind);
    ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural)
}

async fn create(client: &kube::Client, ns: &str, doc: serde_json::Value) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(doc).expect("object");
    let kind = obj.types.as_ref().expect("typed").kind.clone();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource_for(&kind));
    api.create(&PostParams::default(), &obj).await
}

fn example_documents() -> Vec<(String, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut out = Vec::new();
    let mut paths: Vec<_> =
        std::fs::read_dir(&dir).expect("examples/").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.extend(
        std::fs::read_dir(dir.join("managed")).expect("examples/managed").filter_map(|e| e.ok()).map(|e| e.path()),
    );
    paths.sort();
    for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&path).expect("readable");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            if !value.is_null() {
                out.push((path.display().to_string(), value));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_crd_is_established_and_every_example_is_accepted() {
    let env = testenv::shared_kube().await;
    let client = env.client().await;
    install_crds(&client).await;
    let kinds: std::collections::BTreeSet<String> = crdgen::all().iter().map(|c| c.spec.names.kind.clone()).collect();
    let mut seen = std::collections::BTreeSet::new();
    for (path, doc) in example_documents() {
        let kind = doc["kind"].as_str().expect("kind").to_string();
        if !kinds.contains(&kind) {
            continue;
        }
        // Each example gets its own namespace: the managed and external clusters share a name.
        let ns = env.create_namespace("example").await;
        let created = create(&client, &ns, doc).await.unwrap_or_else(|e| panic!("{path} was refused: {e}"));
        assert_eq!(created.types.expect("typed").kind, kind);
        seen.insert(kind);
    }
    assert_eq!(seen, kinds, "examples/ must hold a valid example of every kind");
}

/// One invalid object and the words its refusal must contain.
struct Invalid {
    what: &'static str,
    doc: serde_json::Value,
    expect: &'static [&'static str],
}

fn invalid(what: &'static str, kind: &str, spec: serde_json::Value, expect: &'static [&'static str]) -> Invalid {
    let name = what.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let name = name.trim_matches('-').chars().take(50).collect::<String>();
    Invalid {
        what,
        doc: serde_json::json!({
            "apiVersion": "concord.io/v1alpha1",
            "kind": kind,
            "metadata": { "name": name },
            "spec": spec,
        }),
        expect,
    }
}

fn invalid_objects() -> Vec<Invalid> {
    use serde_json::json;
    let source =
        |action: serde_json::Value| json!({"destination": "api", "sources": [{"name": "web", "action": action}]});
    let kv = |key: &str| json!({"prefix": "config/app/", "keys": [{"key": key, "value": "x"}]});
    vec![
        invalid("replicas 2", "DiscoveryCluster", json!({"replicas": 2}), &["spec.replicas", "must be 1, 3 or 5"]),
        invalid("replicas 4", "DiscoveryCluster", json!({"replicas": 4}), &["spec.replicas", "must be 1, 3 or 5"]),
        invalid(
            "negative retain",
            "DiscoveryCluster",
            json!({"snapshots": {"every": "1h", "retain": -1, "location": "/snap"}}),
            &["spec.snapshots.retain"],
        ),
        invalid(
            "bad external address",
            "DiscoveryCluster",
            json!({"external": {"address": "consul:8500"}}),
            &["spec.external.address", "http://"],
        ),
        invalid(
            "unknown action",
            "ServiceIntention",
            source(json!("maybe")),
            &["spec.sources[0].action", "Unsupported value"],
        ),
        invalid(
            "action and permissions",
            "ServiceIntention",
            json!({"destination": "api", "sources": [{"name": "web", "action": "allow",
                "permissions": [{"action": "allow", "http": {"pathPrefix": "/"}}]}]}),
            &["spec.sources[0]", "either action or permissions"],
        ),
        invalid(
            "empty destination",
            "ServiceIntention",
            json!({"destination": "", "sources": [{"name": "web", "action": "allow"}]}),
            &["spec.destination", "must not be empty"],
        ),
        invalid(
            "duplicate sources",
            "ServiceIntention",
            json!({"destination": "api", "sources": [{"name": "web", "action": "allow"}, {"name": "web", "action": "deny"}]}),
            &["spec.sources", "unique"],
        ),
        invalid("leading slash key", "KVConfig", kv("/etc/passwd"), &["spec.keys[0].key", "must not start with /"]),
        invalid("dotdot key", "KVConfig", kv("a/../b"), &["spec.keys[0].key", "must not contain .."]),
        invalid(
            "value and json",
            "KVConfig",
            json!({"prefix": "config/", "keys": [{"key": "a", "value": "x", "json": {"a": 1}}]}),
            &["spec.keys[0]", "either value or json"],
        ),
        invalid(
            "leading slash prefix",
            "KVConfig",
            json!({"prefix": "/config"}),
            &["spec.prefix", "must not start with /"],
        ),
        invalid(
            "two outputs",
            "ConfigTemplate",
            json!({"template": {"inline": "x"}, "output": {"configMap": {"name": "a", "key": "b"}, "secret": {"name": "a", "key": "b"}}}),
            &["spec.output", "exactly one of configMap or secret"],
        ),
        invalid(
            "no template",
            "ConfigTemplate",
            json!({"template": {}, "output": {"configMap": {"name": "a", "key": "b"}}}),
            &["spec.template", "exactly one of inline or configMapRef"],
        ),
        invalid(
            "bad wait",
            "ConfigTemplate",
            json!({"template": {"inline": "x"}, "output": {"configMap": {"name": "a", "key": "b"}}, "wait": {"min": "2 seconds"}}),
            &["spec.wait.min"],
        ),
        invalid("empty rules", "ACLPolicy", json!({"rules": ""}), &["spec.rules", "must not be empty"]),
        invalid("bad policy name", "ACLPolicy", json!({"name": "has spaces", "rules": "x"}), &["spec.name"]),
        invalid(
            "no policies",
            "ACLToken",
            json!({"secretName": "tok"}),
            &["spec", "at least one policy or service identity"],
        ),
        invalid(
            "bad secret name",
            "ACLToken",
            json!({"secretName": "Bad_Name", "policies": ["p"]}),
            &["spec.secretName", "DNS subdomain"],
        ),
        invalid(
            "token ttl not a duration",
            "ACLToken",
            json!({"secretName": "tok", "policies": ["p"], "expirationTTL": "1 day"}),
            &["spec.expirationTTL"],
        ),
        invalid(
            "empty role",
            "ACLRole",
            json!({}),
            &["spec", "at least one policy, service identity or node identity"],
        ),
        invalid(
            "bad role service identity",
            "ACLRole",
            json!({"serviceIdentities": [{"serviceName": "Web_1"}]}),
            &["spec.serviceIdentities[0].serviceName"],
        ),
        invalid("method ttl not a duration", "ACLAuthMethod", json!({"maxTokenTTL": "1 hour"}), &["spec.maxTokenTTL"]),
        invalid(
            "unknown token locality",
            "ACLAuthMethod",
            json!({"tokenLocality": "everywhere"}),
            &["spec.tokenLocality"],
        ),
        invalid(
            "unknown bind type",
            "ACLBindingRule",
            json!({"authMethodRef": "pods", "bindType": "policy", "bindName": "x"}),
            &["spec.bindType"],
        ),
        invalid(
            "method in another namespace",
            "ACLBindingRule",
            json!({"authMethodRef": "other/pods", "bindType": "service", "bindName": "web"}),
            &["spec.authMethodRef"],
        ),
        invalid(
            "unknown protocol",
            "ServiceDefaults",
            json!({"protocol": "udp"}),
            &["spec.protocol", "Unsupported value"],
        ),
        invalid(
            "ejection over 100 percent",
            "ServiceDefaults",
            json!({"upstreamConfig": {"defaults": {"passiveHealthCheck": {"maxEjectionPercent": 150}}}}),
            &["spec.upstreamConfig.defaults.passiveHealthCheck.maxEjectionPercent"],
        ),
        invalid(
            "override without a name",
            "ServiceDefaults",
            json!({"upstreamConfig": {"overrides": [{"connectTimeoutMs": 5}]}}),
            &["spec.upstreamConfig", "each override names its upstream"],
        ),
        invalid(
            "default subset not defined",
            "ServiceResolver",
            json!({"defaultSubset": "v3", "subsets": {"v1": {"filter": "x"}}}),
            &["spec", "defaultSubset must name one of subsets"],
        ),
        invalid(
            "failover for an unknown subset",
            "ServiceResolver",
            json!({"subsets": {"v1": {"filter": "x"}}, "failover": {"v9": {"datacenters": ["dc2"]}}}),
            &["spec", "failover keys"],
        ),
        invalid(
            "subset name with capitals",
            "ServiceResolver",
            json!({"subsets": {"V1": {"filter": "x"}}}),
            &["spec.subsets", "lowercase DNS labels"],
        ),
        invalid(
            "two path matches",
            "ServiceRouter",
            json!({"routes": [{"match": {"http": {"pathExact": "/a", "pathPrefix": "/b"}}}]}),
            &["spec.routes[0].match.http", "at most one of pathExact, pathPrefix, pathRegex"],
        ),
        invalid(
            "prefix rewrite without a prefix match",
            "ServiceRouter",
            json!({"routes": [{"match": {"http": {"pathRegex": ".*"}}, "destination": {"prefixRewrite": "/"}}]}),
            &["spec.routes[0]", "prefixRewrite needs a pathExact or pathPrefix match"],
        ),
        invalid(
            "unknown retry condition",
            "ServiceRouter",
            json!({"routes": [{"destination": {"retryOn": ["sometimes"]}}]}),
            &["spec.routes[0].destination.retryOn[0]", "Unsupported value"],
        ),
        invalid(
            "weights below 100",
            "ServiceSplitter",
            json!({"splits": [{"weight": 90}, {"weight": 5}]}),
            &["spec.splits", "add up to 100"],
        ),
        invalid("no splits", "ServiceSplitter", json!({"splits": []}), &["spec.splits", "at least one share"]),
        invalid(
            "unknown proxy mode",
            "ProxyDefaults",
            json!({"mode": "sideways"}),
            &["spec.mode", "Unsupported value"],
        ),
        invalid(
            "access log path without file",
            "ProxyDefaults",
            json!({"accessLogs": {"enabled": true, "type": "stdout", "path": "/var/log/a"}}),
            &["spec.accessLogs", "path needs type file"],
        ),
        invalid(
            "tls min above max",
            "Mesh",
            json!({"tls": {"incoming": {"tlsMinVersion": "TLSv1_3", "tlsMaxVersion": "TLSv1_2"}}}),
            &["spec.tls.incoming", "tlsMinVersion must not be above tlsMaxVersion"],
        ),
        invalid(
            "unknown tls version",
            "Mesh",
            json!({"tls": {"outgoing": {"tlsMinVersion": "SSLv3"}}}),
            &["spec.tls.outgoing.tlsMinVersion", "Unsupported value"],
        ),
        invalid(
            "consumer with peer and partition",
            "ExportedServices",
            json!({"services": [{"name": "api", "consumers": [{"peer": "east", "partition": "p1"}]}]}),
            &["spec.services[0].consumers[0]", "exactly one of peer, partition, samenessGroup"],
        ),
        invalid(
            "service exported twice",
            "ExportedServices",
            json!({"services": [{"name": "api", "consumers": [{"peer": "east"}]}, {"name": "api", "consumers": [{"peer": "west"}]}]}),
            &["spec.services", "each service is exported once"],
        ),
        invalid(
            "tcp listener with two services",
            "IngressGateway",
            json!({"listeners": [{"port": 5432, "protocol": "tcp", "services": [{"name": "a"}, {"name": "b"}]}]}),
            &["spec.listeners[0]", "a tcp listener routes exactly one service"],
        ),
        invalid(
            "tcp listener with hosts",
            "IngressGateway",
            json!({"listeners": [{"port": 5432, "protocol": "tcp", "services": [{"name": "a", "hosts": ["a.example"]}]}]}),
            &["spec.listeners[0]", "no wildcard service, hosts or header changes"],
        ),
        invalid(
            "two listeners on one port",
            "IngressGateway",
            json!({"listeners": [{"port": 80, "protocol": "http", "services": [{"name": "a"}]},
                {"port": 80, "protocol": "http", "services": [{"name": "b"}]}]}),
            &["spec.listeners", "each listener has a port of its own"],
        ),
        invalid(
            "hosts on the wildcard service",
            "IngressGateway",
            json!({"listeners": [{"port": 80, "protocol": "http", "services": [{"name": "*", "hosts": ["x.example"]}]}]}),
            &["spec.listeners[0].services[0]", "hosts cannot be set on the wildcard service"],
        ),
        invalid(
            "listener without services",
            "IngressGateway",
            json!({"listeners": [{"port": 80, "protocol": "http", "services": []}]}),
            &["spec.listeners[0].services", "a listener routes at least one service"],
        ),
        invalid(
            "client certificate without its key",
            "TerminatingGateway",
            json!({"services": [{"name": "billing", "caFile": "/ca.pem", "certFile": "/cert.pem"}]}),
            &["spec.services[0]", "certFile and keyFile go together, with caFile"],
        ),
        invalid(
            "service linked twice",
            "TerminatingGateway",
            json!({"services": [{"name": "billing"}, {"name": "billing"}]}),
            &["spec.services", "each service is linked once"],
        ),
        invalid(
            "local and remote key sets",
            "JWTProvider",
            json!({"jsonWebKeySet": {"local": {"filename": "/jwks.json"}, "remote": {"uri": "https://idp.example/keys"}}}),
            &["spec.jsonWebKeySet", "exactly one of local or remote"],
        ),
        invalid(
            "jwks not base64",
            "JWTProvider",
            json!({"jsonWebKeySet": {"local": {"jwks": "{\"keys\": []}"}}}),
            &["spec.jsonWebKeySet.local.jwks", "should match"],
        ),
        invalid(
            "location with header and cookie",
            "JWTProvider",
            json!({"jsonWebKeySet": {"local": {"filename": "/jwks.json"}},
                "locations": [{"header": {"name": "Authorization"}, "cookie": {"name": "jwt"}}]}),
            &["spec.locations[0]", "exactly one of header, queryParam, cookie"],
        ),
        invalid(
            "backoff base above max",
            "JWTProvider",
            json!({"jsonWebKeySet": {"remote": {"uri": "https://idp.example/keys",
                "retryPolicy": {"retryPolicyBackOff": {"baseInterval": "10s", "maxInterval": "1s"}}}}}),
            &["spec.jsonWebKeySet.remote.retryPolicy.retryPolicyBackOff", "baseInterval must not be above maxInterval"],
        ),
        invalid(
            "query interpolation outside a template",
            "PreparedQuery",
            json!({"service": {"service": "${name.suffix}"}}),
            &["spec", "interpolation only in a template"],
        ),
        invalid(
            "empty query name without a template",
            "PreparedQuery",
            json!({"name": "", "service": {"service": "db"}}),
            &["spec", "only a template may have an empty name"],
        ),
        invalid(
            "query tag with a space",
            "PreparedQuery",
            json!({"service": {"service": "db", "tags": ["a b"]}}),
            &["spec.service.tags[0]", "should match"],
        ),
        invalid(
            "failover to nowhere",
            "PreparedQuery",
            json!({"service": {"service": "db", "failover": {"nearestN": 0}}}),
            &["spec.service.failover", "nearestN > 0 or at least one datacenter"],
        ),
        invalid(
            "query ttl not a duration",
            "PreparedQuery",
            json!({"service": {"service": "db"}, "dns": {"ttl": "ten seconds"}}),
            &["spec.dns.ttl"],
        ),
        invalid(
            "query forging the owner mark",
            "PreparedQuery",
            json!({"service": {"service": "db", "ignoreCheckIds": ["concord.io/owner=other/db"]}}),
            &["spec.service.ignoreCheckIds", "reserved"],
        ),
        invalid(
            "unknown snapshot action",
            "ConsulSnapshot",
            json!({"action": "Explode", "location": "/snap"}),
            &["spec.action", "Unsupported value"],
        ),
        invalid(
            "relative location",
            "ConsulSnapshot",
            json!({"action": "Save", "location": "snap.bin"}),
            &["spec.location", "absolute path"],
        ),
    ]
}

#[tokio::test]
async fn invalid_objects_are_refused_with_the_field_named() {
    let env = testenv::shared_kube().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("invalid").await;
    let cases = invalid_objects();
    let mut per_kind = std::collections::BTreeMap::<String, usize>::new();
    for case in &cases {
        *per_kind.entry(case.doc["kind"].as_str().expect("kind").to_string()).or_default() += 1;
        match create(&client, &ns, case.doc.clone()).await {
            Ok(_) => panic!("{}: the API server accepted an invalid object", case.what),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{}: {}", case.what, status.message);
                for needle in case.expect {
                    assert!(
                        status.message.contains(needle),
                        "{}: refusal should mention {needle:?}: {}",
                        case.what,
                        status.message
                    );
                }
            }
            Err(e) => panic!("{}: unexpected error {e}", case.what),
        }
    }
    for crd in crdgen::all() {
        let n = per_kind.get(&crd.spec.names.kind).copied().unwrap_or(0);
        assert!(n >= 2, "{} has {n} invalid cases; want at least 2", crd.spec.names.kind);
    }
}

#[tokio::test]
async fn a_snapshot_spec_cannot_change() {
    let env = testenv::shared_kube().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("immutable").await;
    let doc = serde_json::json!({
        "apiVersion": "concord.io/v1alpha1", "kind": "ConsulSnapshot",
        "metadata": {"name": "s1"}, "spec": {"action": "Save", "location": "/snap/a"},
    });
    create(&client, &ns, doc).await.expect("valid snapshot accepted");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource_for("ConsulSnapshot"));
    let patch = serde_json::json!({"spec": {"location": "/snap/b"}});
    let err = api.patch("s1", &PatchParams::default(), &Patch::Merge(patch)).await.expect_err("immutable");
    assert!(err.to_string().contains("spec is immutable"), "{err}");
}
