//! Kubernetes is the boundary for Kubernetes objects: a tenant's KVConfig sources,
//! ConfigTemplate outputs and ACLToken Secrets are read and written as a ServiceAccount
//! of the tenant's namespace (`spec.serviceAccountName`, or the controller's
//! `--default-service-account` lockdown), so the real API server's RBAC decides. Each
//! test first shows the attack refused with a `Forbidden` condition and Event and
//! nothing written, then that a RoleBinding the namespace's owner grants makes it work.
mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::{RunningController, eventually};

const WAIT: Duration = Duration::from_secs(40);
const SA: &str = "app";

struct Tenant {
    kube: kube::Client,
    ns: String,
    consul: concord::consul::Client,
    _controller: RunningController,
}

/// A namespace with an external DiscoveryCluster on the shared Consul, the ServiceAccount
/// `app` (bound to nothing yet) and a controller started with `controller_args`.
async fn tenant(prefix: &str, controller_args: &[&str]) -> Tenant {
    let consul = testenv::shared_consul().await;
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace(prefix).await;
    support::external_cluster(&kube, &ns, &consul.http_addrs(), None).await;
    let t = Tenant {
        consul: concord::consul::Client::new(concord::consul::ClientConfig::new(consul.http_addrs()))
            .expect("consul client"),
        _controller: support::start_controller(kube.clone(), &ns, controller_args).await,
        kube,
        ns,
    };
    t.owner_applies::<ServiceAccount>(SA, json!({})).await;
    t
}

impl Tenant {
    /// The namespace owner (admin) applies a core or RBAC object.
    async fn owner_applies<K>(&self, name: &str, body: Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let mut obj = body;
        obj["apiVersion"] = K::api_version(&()).into();
        obj["kind"] = K::kind(&()).into();
        obj["metadata"]["name"] = name.into();
        obj["metadata"]["namespace"] = self.ns.clone().into();
        Api::<K>::namespaced(self.kube.clone(), &self.ns)
            .patch(name, &PatchParams::apply("owner").force(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("{} {name}: {e}", K::kind(&())));
    }

    /// Grants the ServiceAccount `verbs` on core `resources` in the namespace.
    async fn grant(&self, role: &str, resources: &[&str], verbs: &[&str]) {
        let rules = json!([{ "apiGroups": [""], "resources": resources, "verbs": verbs }]);
        self.owner_applies::<Role>(role, json!({ "rules": rules })).await;
        let binding = json!({
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role },
            "subjects": [{ "kind": "ServiceAccount", "name": SA, "namespace": self.ns }],
        });
        self.owner_applies::<RoleBinding>(role, binding).await;
    }

    fn concord_api(&self, kind: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("concord.io", "v1alpha1", kind);
        let plural = format!("{}s", kind.to_lowercase());
        Api::namespaced_with(self.kube.clone(), &self.ns, &ApiResource::from_gvk_with_plural(&gvk, &plural))
    }

    /// The tenant applies a concord object; `Err` carries the API server's refusal.
    async fn tenant_applies(&self, kind: &str, name: &str, spec: Value) -> Result<(), kube::Error> {
        let obj = json!({
            "apiVersion": "concord.io/v1alpha1", "kind": kind,
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        self.concord_api(kind).patch(name, &PatchParams::apply("tenant").force(), &Patch::Apply(&obj)).await.map(|_| ())
    }

    /// Makes the controller look at the object again (a new annotation is a watch event).
    async fn nudge(&self, kind: &str, name: &str, n: u32) {
        let patch = json!({ "metadata": { "annotations": { "test/nudge": n.to_string() } } });
        self.concord_api(kind).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("nudge");
    }

    /// Waits for condition `type_` with `status` and `reason`; returns its message.
    async fn condition(&self, kind: &str, name: &str, type_: &str, status: &str, reason: &str) -> String {
        let api = self.concord_api(kind);
        eventually(&format!("{kind} {name}: {type_}={status} ({reason})"), WAIT, || async {
            let obj = api.get(name).await.ok()?;
            let conditions = obj.data.pointer("/status/conditions")?.as_array()?.clone();
            let c = conditions.into_iter().find(|c| c["type"] == type_)?;
            (c["status"] == status && c["reason"] == reason).then(|| c["message"].as_str().unwrap_or("").to_string())
        })
        .await
    }

    /// Waits for a Warning Event `reason` regarding `name`.
    async fn warned(&self, name: &str, reason: &str) {
        support::event(&self.kube, &self.ns, name, reason, true).await
    }

    async fn kv_keys(&self, prefix: &str) -> Vec<String> {
        let opts = concord::consul::QueryOptions::default();
        self.consul.kv_keys(prefix, None, &opts).await.expect("kv keys").value
    }
}

/// Attack: a tenant who may create KVConfigs but not read the namespace's Secrets copies
/// one into Consul (from where a ConfigTemplate could render it back). The Secret is even
/// labelled as a KV source by its owner for some other KVConfig.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kvconfig_reads_its_sources_with_its_service_accounts_rights_only() {
    let t = tenant("imp-kv", &[]).await;
    let labelled = json!({ "metadata": { "labels": { "concord.io/kv-source": "true" } },
                           "stringData": { "password": "hunter2" } });
    t.owner_applies::<Secret>("db", labelled).await;
    t.owner_applies::<ConfigMap>("settings", json!({ "data": { "mode": "fast" } })).await;
    t.grant("read-configmaps", &["configmaps"], &["get"]).await;
    let prefix = format!("imp/{}/", t.ns);
    let spec = json!({ "prefix": prefix, "serviceAccountName": SA,
                       "fromConfigMap": [{ "name": "settings" }], "fromSecret": [{ "name": "db" }] });
    t.tenant_applies("KVConfig", "copy", spec).await.expect("KVConfig");

    let message = t.condition("KVConfig", "copy", "Synced", "False", "Forbidden").await;
    assert!(message.contains(&format!("ServiceAccount {}/{SA}", t.ns)), "names whose rights were used: {message}");
    assert!(message.contains("Secret db"), "names what was refused: {message}");
    assert!(!message.contains("hunter2"), "never the data: {message}");
    t.warned("copy", "Forbidden").await;
    assert!(t.kv_keys(&prefix).await.is_empty(), "nothing reached Consul");

    // The owner lets the ServiceAccount read Secrets: the same object now syncs.
    t.grant("read-secrets", &["secrets"], &["get"]).await;
    t.nudge("KVConfig", "copy", 1).await;
    t.condition("KVConfig", "copy", "Synced", "True", "Synced").await;
    let keys = t.kv_keys(&prefix).await;
    assert!(keys.contains(&format!("{prefix}password")) && keys.contains(&format!("{prefix}mode")), "{keys:?}");
}

/// Attack: a tenant who may create ConfigTemplates but not ConfigMaps creates one
/// through the template (and through its rollout, stamps Deployments it may not patch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_writes_its_output_with_its_service_accounts_rights_only() {
    let t = tenant("imp-ctpl", &[]).await;
    let spec = json!({ "serviceAccountName": SA, "template": { "inline": "mode = fast\n" },
                       "output": { "configMap": { "name": "rendered", "key": "app.conf" } } });
    t.tenant_applies("ConfigTemplate", "render", spec).await.expect("ConfigTemplate");

    let message = t.condition("ConfigTemplate", "render", "Rendered", "False", "Forbidden").await;
    assert!(message.contains(&format!("system:serviceaccount:{}:{SA}", t.ns)), "the API server's words: {message}");
    t.warned("render", "Forbidden").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(t.kube.clone(), &t.ns);
    assert!(configmaps.get_opt("rendered").await.expect("get").is_none(), "no ConfigMap was created");

    t.grant("write-configmaps", &["configmaps"], &["get", "create", "patch"]).await;
    t.nudge("ConfigTemplate", "render", 1).await;
    t.condition("ConfigTemplate", "render", "Rendered", "True", "Rendered").await;
    let cm = configmaps.get("rendered").await.expect("the output exists now");
    assert_eq!(cm.data.unwrap_or_default().get("app.conf").map(String::as_str), Some("mode = fast\n"));
}

/// Lockdown: with `--default-service-account`, an object that names no ServiceAccount
/// acts as that one of its namespace; an ACLToken then cannot write its Secret, and no
/// token is made in Consul (the Secret is written first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdown_applies_the_default_service_account_to_objects_that_name_none() {
    let t = tenant("imp-lock", &["--default-service-account", SA]).await;
    let spec = json!({ "secretName": "web-token", "serviceIdentities": [{ "serviceName": "web" }] });
    t.tenant_applies("ACLToken", "web", spec).await.expect("ACLToken");
    let message = t.condition("ACLToken", "web", "Synced", "False", "Forbidden").await;
    assert!(message.contains(&format!("ServiceAccount {}/{SA}", t.ns)), "{message}");
    t.warned("web", "Forbidden").await;
    let secrets: Api<Secret> = Api::namespaced(t.kube.clone(), &t.ns);
    assert!(secrets.get_opt("web-token").await.expect("get").is_none(), "no Secret was written");

    let prefix = format!("lock/{}/", t.ns);
    t.owner_applies::<ConfigMap>("settings", json!({ "data": { "mode": "fast" } })).await;
    let spec = json!({ "prefix": prefix, "fromConfigMap": [{ "name": "settings" }] });
    t.tenant_applies("KVConfig", "settings", spec).await.expect("KVConfig");
    t.condition("KVConfig", "settings", "Synced", "False", "Forbidden").await;
    assert!(t.kv_keys(&prefix).await.is_empty(), "nothing reached Consul");
}

/// Attack: naming a ServiceAccount of another namespace, or a user, to borrow its rights.
/// The name is a plain DNS subdomain (the namespace is always the object's own), so the
/// API server refuses such a spec at admission, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_of_another_namespace_cannot_be_named() {
    let t = tenant("imp-name", &[]).await;
    for borrowed in ["system:serviceaccount:kube-system:default", "kube-system/default", "Admin"] {
        let spec = json!({ "prefix": "x/", "serviceAccountName": borrowed });
        let err = t.tenant_applies("KVConfig", "borrow", spec).await.expect_err("refused at admission");
        assert!(err.to_string().contains("serviceAccountName"), "names the field for {borrowed}: {err}");
    }
}

/// The DiscoveryCluster's sync status, as the controller last wrote it.
async fn sync_forbidden(t: &Tenant) -> Option<Vec<String>> {
    let dc = t.concord_api("DiscoveryCluster").get("consul").await.ok()?;
    let lines = dc.data.pointer("/status/sync/forbidden")?.as_array()?.clone();
    Some(lines.into_iter().filter_map(|l| l.as_str().map(str::to_string)).collect())
}

/// Grants the ServiceAccount `verbs` on Services and EndpointSlices in `namespace`
/// (that namespace's owner does it; the subject is the tenant's ServiceAccount).
async fn grant_services(t: &Tenant, namespace: &str, verbs: &[&str]) {
    let rules = json!([{ "apiGroups": [""], "resources": ["services"], "verbs": verbs },
                       { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": verbs }]);
    let role = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                       "metadata": { "name": "sync-services", "namespace": namespace }, "rules": rules });
    let binding = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "sync-services", "namespace": namespace },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sync-services" },
        "subjects": [{ "kind": "ServiceAccount", "name": SA, "namespace": t.ns }] });
    let pp = PatchParams::apply("owner").force();
    Api::<Role>::namespaced(t.kube.clone(), namespace)
        .patch("sync-services", &pp, &Patch::Apply(&role))
        .await
        .expect("Role");
    Api::<RoleBinding>::namespaced(t.kube.clone(), namespace)
        .patch("sync-services", &pp, &Patch::Apply(&binding))
        .await
        .expect("RoleBinding");
}

/// Attack: the owner of a DiscoveryCluster mirrors Consul services into a namespace they
/// may not write (`toKubernetes.targetNamespace`), through the controller's rights. With
/// `spec.sync.serviceAccountName` the Services are written as that ServiceAccount: the
/// target namespace refuses, the cluster reports it (`status.sync.forbidden`, a
/// `Forbidden` Event) and nothing is created there, until the target's owner grants it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_services_are_written_with_the_syncs_service_account_rights_only() {
    let t = tenant("imp-mirror", &[]).await;
    let kube_env = testenv::shared_kube().await;
    let target = kube_env.create_namespace("imp-mirror-to").await;
    let consul = testenv::shared_consul().await;
    let name = format!("vm-{}", t.ns);
    t.consul
        .catalog_register(&concord::consul::CatalogRegistration {
            node: format!("node-{name}"),
            address: "10.77.0.1".into(),
            service: Some(concord::consul::NodeService {
                id: name.clone(),
                service: name.clone(),
                address: "10.77.0.1".into(),
                port: 8080,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("register");
    let sync = json!({ "serviceAccountName": SA, "antiEntropyInterval": "2s",
                       "toKubernetes": { "enabled": true, "targetNamespace": target } });
    support::external_cluster(&t.kube, &t.ns, &consul.http_addrs(), Some(sync)).await;

    let lines = eventually("status.sync.forbidden names the target namespace", WAIT, || async {
        sync_forbidden(&t).await.filter(|l| l.iter().any(|l| l.starts_with(&format!("toKubernetes {target}:"))))
    })
    .await;
    let line = lines.join("\n");
    assert!(line.contains(&format!("ServiceAccount {}/{SA}", t.ns)), "names whose rights were used: {line}");
    assert!(line.contains(&format!("system:serviceaccount:{}:{SA}", t.ns)), "the API server's words: {line}");
    t.warned("consul", "Forbidden").await;
    let mirrored: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(t.kube.clone(), &target);
    let identity = format!("concord.io/sync-identity={}-consul", t.ns);
    let listed = mirrored.list_metadata(&kube::api::ListParams::default().labels(&identity)).await.expect("list");
    assert!(listed.items.is_empty(), "nothing was written into {target}");

    grant_services(&t, &target, &["get", "list", "watch", "create", "update", "patch", "delete"]).await;
    eventually(&format!("Service {name} mirrored into {target}"), Duration::from_secs(60), || async {
        mirrored.get_opt(&name).await.ok().flatten()
    })
    .await;
    eventually("status.sync.forbidden cleared", WAIT, || async {
        sync_forbidden(&t).await.filter(|l| l.iter().all(|l| !l.starts_with("toKubernetes ")))
    })
    .await;
    t.consul
        .catalog_deregister(&concord::consul::CatalogDeregistration {
            node: format!("node-{name}"),
            ..Default::default()
        })
        .await
        .expect("deregister");
}

/// Attack: the owner of a DiscoveryCluster publishes into Consul the Services and
/// endpoint addresses of a namespace whose Services they may not list. With
/// `spec.sync.serviceAccountName`, `toConsul` publishes a namespace only while that
/// ServiceAccount may list its Services and EndpointSlices (a request made as it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_consul_publishes_only_namespaces_the_syncs_service_account_may_list() {
    let t = tenant("imp-pub", &[]).await;
    let consul = testenv::shared_consul().await;
    let name = format!("pub-{}", t.ns);
    support::service(&t.kube, &t.ns, &name, 80, json!({})).await;
    support::slice(&t.kube, &t.ns, &name, 80, &[("10.78.0.1", true)]).await;
    let sync = json!({ "serviceAccountName": SA, "antiEntropyInterval": "2s",
                       "toConsul": { "enabled": true, "defaultSync": true } });
    support::external_cluster(&t.kube, &t.ns, &consul.http_addrs(), Some(sync)).await;

    let lines = eventually("status.sync.forbidden names the namespace", WAIT, || async {
        sync_forbidden(&t).await.filter(|l| l.iter().any(|l| l.starts_with(&format!("toConsul {}:", t.ns))))
    })
    .await;
    let line = lines.join("\n");
    assert!(line.contains(&format!("ServiceAccount {}/{SA}", t.ns)), "{line}");
    t.warned("consul", "Forbidden").await;
    let opts = concord::consul::QueryOptions::default();
    let published = t.consul.health_service(&name, &[], false, &opts).await.expect("health").value;
    assert!(published.is_empty(), "nothing was published: {published:?}");

    // The namespace's owner lets the ServiceAccount list Services and EndpointSlices.
    grant_services(&t, &t.ns, &["list"]).await;
    eventually(&format!("{name} published"), Duration::from_secs(60), || async {
        let found = t.consul.health_service(&name, &[], false, &opts).await.ok()?.value;
        (!found.is_empty()).then_some(())
    })
    .await;
    eventually("status.sync.forbidden cleared", WAIT, || async {
        sync_forbidden(&t).await.filter(|l| l.iter().all(|l| !l.starts_with("toConsul ")))
    })
    .await;
}
