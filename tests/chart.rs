//! The Helm chart against real tools and a real API server: `helm lint` and
//! `helm template` (helm built by scripts/helm.sh), every rendered manifest accepted by
//! kube-apiserver's server-side dry-run, and the RBAC proof: the controller runs as the
//! chart's ServiceAccount (impersonated, RBAC authorization on) and every controller
//! does its job with exactly the chart's permissions, while anything else is refused.
mod support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{eventually, external_cluster, install_crds};

const WAIT: Duration = Duration::from_secs(30);

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/concord")
}

fn helm() -> PathBuf {
    testenv::binary("helm").unwrap_or_else(|e| panic!("{e} (scripts/helm.sh builds it; `make test` runs it)"))
}

/// Runs helm; Ok(stdout) on success, Err(stderr) on failure.
fn run_helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm())
        .args(args)
        // No repositories, no cache in $HOME: helm needs neither for lint and template.
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("concord-helm-cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("concord-helm-config"))
        .env("HELM_DATA_HOME", std::env::temp_dir().join("concord-helm-data"))
        .output()
        .expect("helm runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() { Ok(stdout) } else { Err(format!("{stderr}{stdout}")) }
}

/// `helm template` with `--set` pairs, parsed into one JSON value per document.
fn render(release: &str, namespace: &str, sets: &[&str], extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec!["template", release, chart.to_str().expect("utf-8 path"), "--namespace", namespace];
    args.extend_from_slice(extra);
    for s in sets {
        args.extend_from_slice(&["--set", s]);
    }
    let yaml = run_helm(&args).unwrap_or_else(|e| panic!("helm template {sets:?} failed: {e}"));
    serde_yaml::Deserializer::from_str(&yaml)
        .filter_map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc).expect("rendered YAML parses");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn kind_of(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| kind_of(d) == kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn chart_lints_clean_and_its_schema_refuses_bad_values() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    for sets in [
        vec![],
        vec!["--set", "discoveryCluster.create=false,replicaCount=1,leaderElection.enabled=false"],
        vec![
            "--set",
            "watchNamespace=apps,rbac.create=false,serviceAccount.create=false,metrics.service.enabled=false",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend_from_slice(&sets);
        let out = run_helm(&args).unwrap_or_else(|e| panic!("helm lint {sets:?}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
    for (set, complaint) in [
        ("discoveryCluster.replicas=4", "/discoveryCluster/replicas"),
        ("replicaCount=2,leaderElection.enabled=false", "allOf"),
        ("leaderElection.leaseDuration=1500ms", "/leaderElection/leaseDuration"),
        ("logFormat=xml", "/logFormat"),
        ("discoveryCluster.snapshots.location=ftp://x", "/discoveryCluster/snapshots/location"),
        ("unknownKey=1", "unknownKey"),
    ] {
        let err = run_helm(&["template", "x", chart, "--set", set]).expect_err(set);
        assert!(err.contains(complaint), "--set {set}: expected a complaint about {complaint}, got {err}");
    }
}

#[test]
fn rendered_defaults_are_ha_and_locked_down() {
    let docs = render("concord", "concord", &[], &[]);
    let deploy = find(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert!(args.contains(&"--leader-election"), "{args:?}");
    assert!(args.contains(&"--lease-name=concord-controller"), "{args:?}");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let dc = find(&docs, "DiscoveryCluster");
    assert_eq!(dc["spec"]["replicas"], 3);
    assert_eq!(dc["metadata"]["namespace"], "concord");
    let hook = find(&docs, "Pod");
    assert_eq!(hook["metadata"]["annotations"]["helm.sh/hook"], "test");
    // Leader election off: no Role for the Lease, no flag.
    let single = render("concord", "concord", &["replicaCount=1", "leaderElection.enabled=false"], &[]);
    assert!(single.iter().all(|d| kind_of(d) != "Role"));
    let args = find(&single, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(!args.contains("--leader-election"), "{args}");
    // A cluster-wide install grants the namespaced rules in a ClusterRole; with
    // watchNamespace they are a Role in that namespace, and no ClusterRole mentions
    // Secrets or ConfigMaps.
    assert!(docs.iter().any(|d| kind_of(d) == "ClusterRole" && d["rules"].to_string().contains("secrets")));
    let scoped = render("concord", "concord", &["watchNamespace=team-a"], &[]);
    let role = scoped
        .iter()
        .find(|d| kind_of(d) == "Role" && d["rules"].to_string().contains("secrets"))
        .expect("a Role with the namespaced rules");
    assert_eq!(role["metadata"]["namespace"], "team-a");
    let binding = scoped
        .iter()
        .find(|d| kind_of(d) == "RoleBinding" && d["metadata"]["name"] == role["metadata"]["name"])
        .expect("its RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "team-a");
    for cluster_role in scoped.iter().filter(|d| kind_of(d) == "ClusterRole") {
        let rules = cluster_role["rules"].to_string();
        assert!(!rules.contains("secrets") && !rules.contains("configmaps"), "{rules}");
    }
    // Every kind an import makes (`sync.importConfigEntries`) may be created.
    let creatable: Vec<String> = docs
        .iter()
        .filter(|d| kind_of(d) == "ClusterRole")
        .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["verbs"].as_array().is_some_and(|v| v.iter().any(|v| v == "create")))
        .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    for kind in ["aclroles", "aclauthmethods", "aclbindingrules", "preparedqueries", "servicedefaults"] {
        assert!(creatable.iter().any(|c| c == kind), "{kind} not creatable: {creatable:?}");
    }
    // The default DiscoveryCluster is a toggle.
    let without = render("concord", "concord", &["discoveryCluster.create=false"], &[]);
    assert!(without.iter().all(|d| kind_of(d) != "DiscoveryCluster"));
}

/// Server-side apply, dry-run: the API server validates (schema, CEL, admission) and
/// stores nothing.
async fn dry_run_apply(client: &kube::Client, discovery: &Discovery, doc: &Value) -> Result<(), String> {
    let (group, version) = match doc["apiVersion"].as_str().unwrap_or_default().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), doc["apiVersion"].as_str().unwrap_or_default().to_string()),
    };
    let gvk = kube::api::GroupVersionKind::gvk(&group, &version, kind_of(doc));
    let (resource, caps) =
        discovery.resolve_gvk(&gvk).ok_or_else(|| format!("the API server does not serve {gvk:?}"))?;
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let ns = doc["metadata"]["namespace"].as_str().ok_or_else(|| format!("{name} has no namespace"))?;
            Api::namespaced_with(client.clone(), ns, &resource)
        }
    };
    api.patch(name, &PatchParams::apply("concord-chart-test").dry_run().force(), &Patch::Apply(doc))
        .await
        .map(|_| ())
        .map_err(|e| format!("{} {name}: {e}", kind_of(doc)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_manifest_is_accepted_by_the_api_server_dry_run() {
    let env = testenv::shared_kube().await;
    let client = env.client().await;
    install_crds(&client).await;
    let ns = env.create_namespace("chart-dry").await;
    let discovery = Discovery::new(client.clone()).run().await.expect("API discovery");
    // watchNamespace makes the rules a Role there: the namespace must exist.
    let watch = format!("watchNamespace={ns}");
    let value_sets: [&[&str]; 3] = [
        &[],
        &["replicaCount=1", "leaderElection.enabled=false", "discoveryCluster.create=false", &watch, "logLevel=debug"],
        &[
            "discoveryCluster.replicas=5",
            "discoveryCluster.acl.enabled=false",
            "discoveryCluster.storage.storageClassName=fast",
            "discoveryCluster.storage.retainOnDelete=false",
            "discoveryCluster.sync.toKubernetes.prefix=consul-",
            "discoveryCluster.snapshots.every=",
            "snapshots.s3.endpoint=http://minio:9000",
            "snapshots.s3.credentialsSecret=s3",
            "snapshots.volume.emptyDir=null",
            "snapshots.volume.persistentVolumeClaim.claimName=snapshots",
            "syncDefaults.toConsul=true",
            "syncDefaults.antiEntropyInterval=1m",
            "extraArgs={--crd-wait-seconds=30}",
        ],
    ];
    let mut kinds = std::collections::BTreeSet::new();
    for sets in value_sets {
        let docs = render("concord", &ns, sets, &["--include-crds"]);
        assert!(docs.len() >= 9, "{sets:?} rendered only {} documents", docs.len());
        for doc in &docs {
            kinds.insert(kind_of(doc).to_string());
            if let Err(e) = dry_run_apply(&client, &discovery, doc).await {
                panic!("with --set {sets:?}, the API server refused {e}");
            }
        }
    }
    // helm's own server-side dry-run install against the same API server renders NOTES.txt.
    let chart = chart_dir();
    let kubeconfig = env.kubeconfig_path().to_str().expect("utf-8 path").to_string();
    let out = run_helm(&[
        "install",
        "concord",
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
        "--dry-run=server",
    ])
    .unwrap_or_else(|e| panic!("helm install --dry-run=server: {e}"));
    let notes = out.split("NOTES:").nth(1).unwrap_or_else(|| panic!("no NOTES in:\n{out}"));
    assert!(notes.contains(&format!("helm test concord -n {ns}")), "{notes}");
    assert!(notes.contains("get lease concord-controller"), "{notes}");
    assert!(notes.contains("-acl-admin (acl = \"write\", management-equivalent)"), "{notes}");
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "DiscoveryCluster",
        "Pod",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds.iter().map(String::as_str).collect::<Vec<_>>(), expected);
}

/// Creates (for real) the rendered objects of these kinds.
async fn apply_kinds(client: &kube::Client, docs: &[Value], kinds: &[&str]) {
    let discovery = Discovery::new(client.clone()).run().await.expect("API discovery");
    for doc in docs.iter().filter(|d| kinds.contains(&kind_of(d))) {
        let gvk = kube::api::GroupVersionKind::gvk(
            doc["apiVersion"].as_str().and_then(|v| v.split_once('/')).map(|(g, _)| g).unwrap_or(""),
            doc["apiVersion"].as_str().map(|v| v.rsplit('/').next().unwrap_or(v)).unwrap_or_default(),
            kind_of(doc),
        );
        let (resource, caps) = discovery.resolve_gvk(&gvk).expect("served");
        let name = doc["metadata"]["name"].as_str().expect("named");
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => {
                Api::namespaced_with(client.clone(), doc["metadata"]["namespace"].as_str().expect("ns"), &resource)
            }
        };
        api.patch(name, &PatchParams::apply("concord-chart-test").force(), &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("{} {name}: {e}", kind_of(doc)));
    }
}

fn is_forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(ref s)) if s.code == 403)
}

fn apply_json<K>(client: &kube::Client, ns: &str, obj: Value) -> impl Future<Output = K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    async move {
        let name = obj["metadata"]["name"].as_str().expect("named").to_string();
        api.patch(&name, &PatchParams::apply("concord-chart-test").force(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("applying {name}: {e}"))
    }
}

/// Whether the API server's authorizer lets `user` impersonate ServiceAccount `ns/name`
/// (a SubjectAccessReview, decided by the same RBAC rules as a real request).
async fn may_impersonate(admin: &kube::Client, user: &str, ns: &str, name: &str) -> bool {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": { "user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                  "resourceAttributes": { "verb": "impersonate", "resource": "serviceaccounts",
                                          "namespace": ns, "name": name } },
    }))
    .expect("review");
    let answer = Api::<SubjectAccessReview>::all(admin.clone())
        .create(&Default::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_does_its_job_with_exactly_the_charts_rbac_and_nothing_more() {
    let env = testenv::shared_kube().await;
    let consul_env = testenv::shared_consul().await;
    let admin = env.client().await;
    install_crds(&admin).await;
    let ns = env.create_namespace("chart-rbac").await;
    let release = ns.clone();

    // The chart's ServiceAccount and RBAC, for real, in this namespace.
    // A namespaced install (watchNamespace): the rules are a Role in this namespace.
    let watch = format!("watchNamespace={ns}");
    let lockdown = "lockdown.defaultServiceAccount=concord-tenant";
    let docs = render(&release, &ns, &["discoveryCluster.create=false", &watch, lockdown], &[]);
    apply_kinds(&admin, &docs, &["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]).await;
    let names = |kind: &str| -> Vec<String> {
        docs.iter()
            .filter(|d| kind_of(d) == kind)
            .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    let sa = names("ServiceAccount").into_iter().find(|n| !n.ends_with("-auth-reviewer")).expect("sa name");
    let reviewer = names("ServiceAccount").into_iter().find(|n| n.ends_with("-auth-reviewer")).expect("reviewer");
    let as_sa = env.client_impersonating(&sa, &ns).await;

    // Outside the rules: refused. (Polled: RBAC reaches the authorizer through a cache.)
    eventually("the ServiceAccount may read Services", WAIT, || async {
        Api::<Service>::namespaced(as_sa.clone(), &ns).list(&ListParams::default()).await.ok()
    })
    .await;
    assert!(is_forbidden(Api::<Pod>::namespaced(as_sa.clone(), &ns).list(&ListParams::default()).await), "Pods");
    // What it can NOT read outside the namespace it watches: no Secret, no ConfigMap,
    // no concord object, neither listed cluster-wide nor fetched by name elsewhere.
    let elsewhere = env.create_namespace("chart-rbac-other").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "private", "namespace": elsewhere }, "stringData": { "k": "v" },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(admin.clone(), &elsewhere).create(&Default::default(), &secret).await.expect("secret");
    assert!(is_forbidden(Api::<Secret>::all(as_sa.clone()).list(&ListParams::default()).await), "all Secrets");
    assert!(
        is_forbidden(Api::<Secret>::namespaced(as_sa.clone(), &elsewhere).get("private").await),
        "a Secret elsewhere"
    );
    assert!(
        is_forbidden(Api::<ConfigMap>::namespaced(as_sa.clone(), &elsewhere).list(&ListParams::default()).await),
        "ConfigMaps elsewhere"
    );
    assert!(
        is_forbidden(
            Api::<concord::resources::KVConfig>::namespaced(as_sa.clone(), &elsewhere)
                .list(&ListParams::default())
                .await
        ),
        "concord objects elsewhere"
    );
    assert!(
        is_forbidden(Api::<Namespace>::all(as_sa.clone()).delete(&ns, &DeleteParams::default()).await),
        "deleting a Namespace"
    );
    assert!(
        is_forbidden(Api::<Lease>::namespaced(as_sa.clone(), "default").get_opt("concord-controller").await),
        "a Lease outside the release namespace"
    );
    assert!(
        is_forbidden(Api::<Lease>::namespaced(as_sa.clone(), &ns).get_opt("someone-elses-lease").await),
        "a Lease of another name"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(as_sa.clone(), &ns);
    assert!(is_forbidden(deployments.list(&ListParams::default()).await), "listing Deployments");
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(as_sa.clone());
    assert!(is_forbidden(crds.list(&ListParams::default()).await), "listing every CRD");
    assert!(is_forbidden(crds.delete("kvconfigs.concord.io", &DeleteParams::default()).await), "deleting a CRD");
    // Lockdown: it may act as the tenant ServiceAccount of its namespace, and as no
    // other ServiceAccount (another name, or the same name in another namespace).
    let user = format!("system:serviceaccount:{ns}:{sa}");
    assert!(may_impersonate(&admin, &user, &ns, "concord-tenant").await, "the lockdown ServiceAccount");
    assert!(!may_impersonate(&admin, &user, &ns, "default").await, "another ServiceAccount of its namespace");
    assert!(!may_impersonate(&admin, &user, "kube-system", "concord-tenant").await, "kube-system's");
    assert!(!may_impersonate(&admin, &user, &elsewhere, "concord-tenant").await, "another namespace's");

    // ACLAuthMethods: it may request a token for the reviewer ServiceAccount, and for no
    // other (its own, another namespace's); the reviewer may review tokens and read
    // ServiceAccounts, and nothing else.
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let sas = |c: &kube::Client, n: &str| Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(c.clone(), n);
    let reviewer_token = sas(&as_sa, &ns)
        .create_token_request(&reviewer, &Default::default(), &request)
        .await
        .expect("a token for the reviewer")
        .status
        .expect("status")
        .token;
    assert!(is_forbidden(sas(&as_sa, &ns).create_token_request(&sa, &Default::default(), &request).await), "its own");
    assert!(
        is_forbidden(sas(&as_sa, &elsewhere).create_token_request(&reviewer, &Default::default(), &request).await),
        "another namespace's"
    );
    let mut reviewer_config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&env.kubeconfig_yaml()).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    reviewer_config.auth_info = kube::config::AuthInfo { token: Some(reviewer_token.into()), ..Default::default() };
    let as_reviewer = kube::Client::try_from(reviewer_config).expect("reviewer client");
    let review = k8s_openapi::api::authentication::v1::TokenReview {
        spec: k8s_openapi::api::authentication::v1::TokenReviewSpec {
            token: Some("not-a-token".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    eventually("the reviewer may create TokenReviews", WAIT, || async {
        Api::<k8s_openapi::api::authentication::v1::TokenReview>::all(as_reviewer.clone())
            .create(&Default::default(), &review)
            .await
            .ok()
    })
    .await;
    assert!(sas(&as_reviewer, &elsewhere).get_opt("default").await.is_ok(), "the reviewer reads ServiceAccounts");
    assert!(
        is_forbidden(Api::<Secret>::namespaced(as_reviewer.clone(), &elsewhere).get("private").await),
        "the reviewer reads no Secret"
    );

    // The controller, as the ServiceAccount, with the chart's leader election flags.
    let lease_name = "concord-controller";
    let controller = support::start_controller_swept_by(
        as_sa.clone(),
        admin.clone(),
        &ns,
        &["--leader-election", "--lease-namespace", &ns, "--lease-name", lease_name, "--lease-duration", "3s"],
    )
    .await;
    let sync = json!({"toConsul": {"enabled": true}, "toKubernetes": {"enabled": true, "prefix": "ext-"}});
    external_cluster(&admin, &ns, &consul_env.http_addrs(), Some(sync)).await;
    let consul = concord::consul::Client::new(concord::consul::ClientConfig::new(consul_env.http_addrs()))
        .expect("consul client");

    // DiscoveryCluster status (watch, status subresource, Events).
    let dcs: Api<concord::resources::DiscoveryCluster> = Api::namespaced(admin.clone(), &ns);
    eventually("DiscoveryCluster Available", WAIT, || async {
        let dc = dcs.get("consul").await.ok()?;
        concord::resources::is_condition_true(&dc.status?.conditions, "Available").then_some(())
    })
    .await;
    let lease = Api::<Lease>::namespaced(admin.clone(), &ns).get(lease_name).await.expect("Lease");
    assert!(lease.spec.and_then(|s| s.holder_identity).is_some(), "the controller holds the Lease");

    // Catalog sync, Kubernetes → Consul (Services, EndpointSlices, Namespaces).
    let svc = format!("web-{ns}");
    apply_json::<Service>(
        &admin,
        &ns,
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": ns, "annotations": {"concord.io/sync": "true", "concord.io/service-name": svc}},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    apply_json::<k8s_openapi::api::discovery::v1::EndpointSlice>(
        &admin,
        &ns,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": ns, "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.20.0.1"], "conditions": {"ready": true}}]}),
    )
    .await;
    eventually("web registered in Consul", WAIT, || async {
        let found = consul.health_service(&svc, &[], true, &Default::default()).await.ok()?;
        (found.value.len() == 1).then_some(())
    })
    .await;

    // Consul → Kubernetes (creates selector-less Services and EndpointSlices).
    let ext = format!("legacy-{ns}");
    consul
        .catalog_register(&concord::consul::CatalogRegistration {
            node: format!("vm-{ns}"),
            address: "10.30.0.1".into(),
            service: Some(concord::consul::NodeService {
                id: ext.clone(),
                service: ext.clone(),
                address: "10.30.0.1".into(),
                port: 5432,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("register in Consul");
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns);
    eventually("the Consul service mirrored as a Kubernetes Service", WAIT, || async {
        services.get_opt(&format!("ext-{ext}")).await.ok().flatten()
    })
    .await;

    // KVConfig (finalizer patch, Consul KV) and ServiceIntention (config entry).
    let prefix = format!("chart-rbac/{ns}/");
    apply_json::<concord::resources::KVConfig>(
        &admin,
        &ns,
        json!({"apiVersion": "concord.io/v1alpha1", "kind": "KVConfig", "metadata": {"name": "app", "namespace": ns},
            "spec": {"clusterRef": "consul", "prefix": prefix, "keys": [{"key": "level", "value": "info"}]}}),
    )
    .await;
    eventually("KV written", WAIT, || async {
        let kv = consul.kv_get(&format!("{prefix}level"), &Default::default()).await.ok()?;
        (kv.value?.value_str()? == "info").then_some(())
    })
    .await;
    let dest = format!("db-{ns}");
    apply_json::<concord::resources::ServiceIntention>(
        &admin,
        &ns,
        json!({"apiVersion": "concord.io/v1alpha1", "kind": "ServiceIntention", "metadata": {"name": "db", "namespace": ns},
            "spec": {"clusterRef": "consul", "destination": dest, "sources": [{"name": "web", "action": "allow"}]}}),
    )
    .await;
    eventually("intentions written", WAIT, || async {
        consul.service_intentions_get(&dest, &Default::default()).await.ok()?.value.map(|_| ())
    })
    .await;

    // ConfigTemplate: reads KV, writes a ConfigMap, stamps the Deployment it rolls.
    apply_json::<k8s_openapi::api::apps::v1::Deployment>(
        &admin,
        &ns,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "app"}},
                "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": [{"name": "c", "image": "app"}]}}}}),
    )
    .await;
    apply_json::<concord::resources::ConfigTemplate>(
        &admin,
        &ns,
        json!({"apiVersion": "concord.io/v1alpha1", "kind": "ConfigTemplate", "metadata": {"name": "app", "namespace": ns},
            "spec": {"clusterRef": "consul", "template": {"inline": format!("level={{{{key \"{prefix}level\"}}}}\n")},
                "output": {"configMap": {"name": "app-config", "key": "app.conf"}},
                "rollout": [{"kind": "Deployment", "name": "app"}]}}),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    eventually("ConfigTemplate output", WAIT, || async {
        let cm = cms.get_opt("app-config").await.ok()??;
        (cm.data?.get("app.conf")? == "level=info\n").then_some(())
    })
    .await;
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(admin.clone(), &ns);
    eventually("rollout annotation on the Deployment", WAIT, || async {
        let d = deploys.get("app").await.ok()?;
        let annotations = d.spec?.template.metadata?.annotations?;
        annotations.keys().any(|k| k.starts_with("concord.io/")).then_some(())
    })
    .await;

    // ACLs: a Consul with ACLs on, reached with a token from a Secret; a policy and a
    // token whose SecretID lands in a Secret owned by the ACLToken.
    let secure = testenv::ConsulCluster::start(testenv::ConsulOptions {
        servers: 1,
        acl: true,
        bootstrap_acl: true,
        ..Default::default()
    })
    .await
    .expect("Consul with ACLs");
    let management = secure.management_token().expect("management token");
    apply_json::<k8s_openapi::api::core::v1::Secret>(
        &admin,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "secure-token", "namespace": ns},
            "stringData": {"token": management}}),
    )
    .await;
    apply_json::<concord::resources::DiscoveryCluster>(
        &admin,
        &ns,
        json!({"apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster", "metadata": {"name": "secure", "namespace": ns},
            "spec": {"external": {"address": secure.http_addrs().join(","),
                "tokenSecretRef": {"name": "secure-token", "key": "token"}}}}),
    )
    .await;
    apply_json::<concord::resources::ACLPolicy>(
        &admin,
        &ns,
        json!({"apiVersion": "concord.io/v1alpha1", "kind": "ACLPolicy", "metadata": {"name": "app", "namespace": ns},
            "spec": {"clusterRef": "secure", "rules": "key_prefix \"app/\" { policy = \"read\" }"}}),
    )
    .await;
    apply_json::<concord::resources::ACLToken>(
        &admin,
        &ns,
        json!({"apiVersion": "concord.io/v1alpha1", "kind": "ACLToken", "metadata": {"name": "app", "namespace": ns},
            "spec": {"clusterRef": "secure", "policies": ["app"], "secretName": "app-consul-token"}}),
    )
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), &ns);
    eventually("the ACLToken's Secret holds a token", WAIT, || async {
        let s = secrets.get_opt("app-consul-token").await.ok()??;
        s.data?.get("token").filter(|t| !t.0.is_empty()).map(|_| ())
    })
    .await;

    // A snapshot saved to the controller's disk, under this namespace's folder.
    let root = std::env::temp_dir().join(format!("concord-chart-{}-{ns}", std::process::id()));
    let dir = root.join(&ns).join("manual");
    apply_json::<concord::resources::ConsulSnapshot>(
        &admin,
        &ns,
        json!({"apiVersion": "concord.io/v1alpha1", "kind": "ConsulSnapshot", "metadata": {"name": "snap", "namespace": ns},
            "spec": {"clusterRef": "consul", "action": "Save", "location": format!("file://{}/snap.snap", dir.display())}}),
    )
    .await;
    let snapshots: Api<concord::resources::ConsulSnapshot> = Api::namespaced(admin.clone(), &ns);
    eventually("snapshot Complete", WAIT, || async {
        let s = snapshots.get("snap").await.ok()?;
        concord::resources::is_condition_true(&s.status?.conditions, "Complete").then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(&root);

    // A managed DiscoveryCluster: its ConfigMap, Services, PodDisruptionBudget, gossip
    // key Secret and StatefulSet are created (this control plane has no kubelet, so no
    // server ever runs; the objects are what RBAC governs).
    apply_json::<concord::resources::DiscoveryCluster>(
        &admin,
        &ns,
        json!({"apiVersion": "concord.io/v1alpha1", "kind": "DiscoveryCluster", "metadata": {"name": "managed", "namespace": ns},
            "spec": {"replicas": 1, "image": "hashicorp/consul:1.22.7", "datacenter": "dc1"}}),
    )
    .await;
    let statefulsets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(admin.clone(), &ns);
    eventually("the managed cluster's StatefulSet", WAIT, || async {
        statefulsets.get_opt("managed-server").await.ok().flatten()
    })
    .await;
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = Api::namespaced(admin.clone(), &ns);
    assert!(pdbs.list(&ListParams::default()).await.expect("PDBs").items.len() == 1, "one PodDisruptionBudget");
    assert!(services.get_opt("managed-client").await.expect("Service").is_some(), "client Service");

    // Events were published (events.k8s.io create).
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    eventually("an Event from concord", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reporting_controller.as_deref() == Some("concord")).then_some(())
    })
    .await;

    // Every watch primed as the ServiceAccount (a 403 on any watch keeps /readyz false),
    // and no reconcile failed on the Kubernetes side.
    let (code, body) =
        eventually("/readyz", WAIT, || async { http_get(controller.addr, "/readyz").await.filter(|(c, _)| *c == 200) })
            .await;
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = http_get(controller.addr, "/metrics").await.expect("metrics");
    let kube_failures: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("concord_reconcile_failures") && l.contains("error=\"kube\""))
        .collect();
    assert!(kube_failures.is_empty(), "Kubernetes API failures as the ServiceAccount: {kube_failures:?}");

    // Something the controller would need outside the chart's RBAC is still refused:
    // a ConfigTemplate rolling a DaemonSet could not patch it.
    let daemonsets: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(as_sa.clone(), &ns);
    assert!(is_forbidden(daemonsets.get_opt("anything").await), "DaemonSets are not granted");
    controller.stop().await;
}
