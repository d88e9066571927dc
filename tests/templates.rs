//! ConfigTemplate against a real kube-apiserver and the real three-server Consul: the
//! controller runs in-process watching one namespace per test; KV keys and services are
//! per-test (named after the namespace) on the shared Consul.
mod support;

use concord::consul::{
    CatalogRegistration, CheckStatus, Client, ClientConfig, HealthCheck, KvWriteOptions, NodeService,
};
use concord::controllers::config_template::rollout_annotation;
use concord::resources::{ConfigTemplate, find_condition, types};
use concord::template::output_hash;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::{RunningController, eventually};

const WAIT: Duration = Duration::from_secs(30);

struct Env {
    kube: kube::Client,
    ns: String,
    consul: Client,
    _controller: RunningController,
}

async fn setup(prefix: &str) -> Env {
    let kube_env = testenv::shared_kube().await;
    let kube = kube_env.client().await;
    support::install_crds(&kube).await;
    let ns = kube_env.create_namespace(prefix).await;
    let cluster = testenv::shared_consul().await;
    support::external_cluster(&kube, &ns, &cluster.http_addrs(), None).await;
    let controller = support::start_controller(kube.clone(), &ns, &[]).await;
    let consul = Client::new(ClientConfig::new(cluster.http_addrs())).expect("consul client");
    Env { kube, ns, consul, _controller: controller }
}

impl Env {
    async fn put(&self, key: &str, value: &str) {
        self.consul.kv_put(key, value.to_string(), &KvWriteOptions::default()).await.expect("kv put");
    }

    async fn apply_template(&self, name: &str, spec: Value) {
        let obj = json!({
            "apiVersion": "concord.io/v1alpha1", "kind": "ConfigTemplate",
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        let api: Api<ConfigTemplate> = Api::namespaced(self.kube.clone(), &self.ns);
        api.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj))
            .await
            .expect("ConfigTemplate applied");
    }

    /// Waits for `Rendered` with `status`/`reason` and a message containing `needle`.
    async fn rendered(&self, name: &str, status: &str, reason: &str, needle: &str) -> ConfigTemplate {
        let api: Api<ConfigTemplate> = Api::namespaced(self.kube.clone(), &self.ns);
        eventually(&format!("{name} Rendered={status} ({reason}, {needle:?})"), WAIT, || async {
            let obj = api.get(name).await.ok()?;
            let c = find_condition(&obj.status.as_ref()?.conditions, types::RENDERED)?;
            (c.status == status && c.reason == reason && c.message.contains(needle)).then_some(obj.clone())
        })
        .await
    }

    async fn config_map_value(&self, name: &str, key: &str, expected: &str) -> ConfigMap {
        let api: Api<ConfigMap> = Api::namespaced(self.kube.clone(), &self.ns);
        eventually(&format!("ConfigMap {name} key {key} = {expected:?}"), WAIT, || async {
            let cm = api.get_opt(name).await.ok()??;
            (cm.data.as_ref()?.get(key)? == expected).then_some(cm.clone())
        })
        .await
    }

    async fn pod_template_annotation(&self, deployment: &str, key: &str, expected: &str) {
        let api: Api<Deployment> = Api::namespaced(self.kube.clone(), &self.ns);
        eventually(&format!("Deployment {deployment} annotated {key}={expected}"), WAIT, || async {
            let d = api.get(deployment).await.ok()?;
            let annotations = d.spec?.template.metadata?.annotations?;
            (annotations.get(key)? == expected).then_some(())
        })
        .await
    }
}

async fn create_deployment(kube: &kube::Client, ns: &str, name: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "nginx:1.27" }] }
            }
        }
    }))
    .expect("deployment");
    let api: Api<Deployment> = Api::namespaced(kube.clone(), ns);
    api.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&d)).await.expect("deployment applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_change_reaches_the_configmap_and_rolls_the_deployment() {
    let env = setup("ctpl-kv").await;
    create_deployment(&env.kube, &env.ns, "web").await;
    let key = format!("{}/greeting", env.ns);
    env.put(&key, "hello").await;
    env.apply_template(
        "app",
        json!({
            "template": { "inline": format!("# app\ngreeting={{{{key \"{key}\"}}}}\n") },
            "output": { "configMap": { "name": "app-config", "key": "app.conf" } },
            "rollout": [{ "kind": "Deployment", "name": "web" }],
        }),
    )
    .await;

    let first = "# app\ngreeting=hello\n";
    let cm = env.config_map_value("app-config", "app.conf", first).await;
    let ct = env.rendered("app", "True", "Rendered", "ConfigMap app-config").await;
    let owner = cm.metadata.owner_references.unwrap_or_default();
    assert!(owner.iter().any(|o| o.kind == "ConfigTemplate" && Some(&o.uid) == ct.metadata.uid.as_ref()), "{owner:?}");
    let hash = output_hash(first.as_bytes());
    env.pod_template_annotation("web", &rollout_annotation("app"), &hash).await;
    let status = env.rendered("app", "True", "Rendered", "").await.status.expect("status");
    assert_eq!(status.output_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(status.dependencies.expect("dependencies").keys, std::slice::from_ref(&key));

    env.put(&key, "bonjour").await;
    let second = "# app\ngreeting=bonjour\n";
    env.config_map_value("app-config", "app.conf", second).await;
    env.pod_template_annotation("web", &rollout_annotation("app"), &output_hash(second.as_bytes())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_error_keeps_the_last_output_and_reports_the_line() {
    let env = setup("ctpl-err").await;
    let key = format!("{}/value", env.ns);
    env.put(&key, "1").await;
    env.apply_template(
        "strict",
        json!({
            "template": { "inline": format!("# strict\nvalue={{{{key \"{key}\"}}}}\n") },
            "output": { "configMap": { "name": "strict-out", "key": "v" } },
        }),
    )
    .await;
    env.config_map_value("strict-out", "v", "# strict\nvalue=1\n").await;
    let good_hash = output_hash(b"# strict\nvalue=1\n");

    env.consul.kv_delete(&key, None).await.expect("delete");
    let ct = env.rendered("strict", "False", "RenderFailed", "line 2").await;
    let message = find_condition(&ct.status.as_ref().expect("status").conditions, types::RENDERED)
        .expect("condition")
        .message
        .clone();
    assert!(message.contains(&key), "{message}");
    assert_eq!(ct.status.expect("status").output_hash.as_deref(), Some(good_hash.as_str()), "last good hash kept");
    let cm: Api<ConfigMap> = Api::namespaced(env.kube.clone(), &env.ns);
    let data = cm.get("strict-out").await.expect("still there").data.expect("data");
    assert_eq!(data.get("v").map(String::as_str), Some("# strict\nvalue=1\n"), "last good output kept");

    // The failed render still watches the key: putting it back renders again.
    env.put(&key, "2").await;
    env.config_map_value("strict-out", "v", "# strict\nvalue=2\n").await;
    env.rendered("strict", "True", "Rendered", "").await;

    env.apply_template(
        "broken",
        json!({
            "template": { "inline": "ok\n{{#each (service \"x\")}}\n{{/if}}\n" },
            "output": { "configMap": { "name": "broken-out", "key": "v" } },
        }),
    )
    .await;
    env.rendered("broken", "False", "TemplateInvalid", "line 3").await;
}

fn registration(node: &str, service: &str, id: &str, addr: &str, status: CheckStatus) -> CatalogRegistration {
    CatalogRegistration {
        node: node.into(),
        address: "10.8.0.100".into(),
        service: Some(NodeService {
            id: id.into(),
            service: service.into(),
            address: addr.into(),
            port: 9090,
            ..Default::default()
        }),
        checks: vec![HealthCheck {
            check_id: format!("{id}-check"),
            name: "tcp".into(),
            status,
            service_id: id.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_going_critical_drops_out_of_the_secret_output() {
    let env = setup("ctpl-svc").await;
    let service = format!("svc-{}", env.ns);
    let node = format!("node-{}", env.ns);
    for (id, ip) in [("one", "10.8.0.1"), ("two", "10.8.0.2")] {
        env.consul
            .catalog_register(&registration(&node, &service, id, ip, CheckStatus::Passing))
            .await
            .expect("register");
    }
    env.apply_template(
        "upstream",
        json!({
            "template": { "inline": format!("{{{{#each (service \"{service}\")}}}}server {{{{this.address}}}}:{{{{this.port}}}};\n{{{{/each}}}}") },
            "output": { "secret": { "name": "upstream", "key": "upstream.conf" } },
            "wait": { "min": "100ms", "max": "1s" },
        }),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &env.ns);
    let secret_is = |expected: &'static str| {
        let secrets = secrets.clone();
        async move {
            eventually(&format!("Secret upstream = {expected:?}"), WAIT, || async {
                let s = secrets.get_opt("upstream").await.ok()??;
                (s.data?.get("upstream.conf")?.0 == expected.as_bytes()).then_some(())
            })
            .await
        }
    };
    secret_is("server 10.8.0.1:9090;\nserver 10.8.0.2:9090;\n").await;
    env.consul
        .catalog_register(&registration(&node, &service, "one", "10.8.0.1", CheckStatus::Critical))
        .await
        .expect("critical");
    secret_is("server 10.8.0.2:9090;\n").await;
    let ct = env.rendered("upstream", "True", "Rendered", "Secret upstream").await;
    assert_eq!(ct.status.expect("status").dependencies.expect("deps").services, std::slice::from_ref(&service));
}
