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
