//! ServiceIntention against a real kube-apiserver and the shared three-server Consul:
//! the controller runs in-process watching one namespace per test; each test uses its
//! own destination names (the namespace is part of them), so tests never share entries.
mod support;

use concord::consul::{
    ConfigEntry, IntentionAction, QueryOptions, SERVICE_INTENTIONS, ServiceIntentionsEntry, SourceIntention,
};
use concord::controllers::service_intention::entry::OWNER_META;
use concord::resources::{ServiceIntention, find_condition, types};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;
use support::eventually;
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(30);

use support::ExternalEnv as Env;

async fn setup(cluster: &ConsulCluster, sync: Option<Value>) -> Env {
    support::external_env(cluster, sync, "si").await
}

/// `service-defaults` with protocol http: Consul accepts L7 permissions only then.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceDefaults {
    kind: &'static str,
    name: String,
    protocol: &'static str,
}

impl ConfigEntry for ServiceDefaults {
    fn kind(&self) -> &str {
        self.kind
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl Env {
    fn api(&self) -> Api<ServiceIntention> {
        Api::namespaced(self.kube.clone(), &self.ns)
    }

    /// A destination name only this test uses.
    fn svc(&self, name: &str) -> String {
        format!("{}-{name}", self.ns)
    }

    async fn apply(&self, name: &str, spec: Value) {
        let obj = json!({
            "apiVersion": "concord.io/v1alpha1", "kind": "ServiceIntention",
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        self.api().patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.expect("applied");
    }

    async fn synced(&self, name: &str, status: &str, reason: &str) -> ServiceIntention {
        let api = self.api();
        eventually(&format!("{name} Synced={status} ({reason})"), WAIT, || async {
            let obj = api.get(name).await.ok()?;
            let c = find_condition(&obj.status.as_ref()?.conditions, types::SYNCED)?;
            (c.status == status && c.reason == reason && c.observed_generation == obj.metadata.generation)
                .then_some(obj.clone())
        })
        .await
    }

    async fn entry(&self, destination: &str) -> Option<ServiceIntentionsEntry> {
        self.consul.service_intentions_get(destination, &QueryOptions::default()).await.expect("read entry").value
    }

    async fn gone(&self, name: &str) {
        let api = self.api();
        eventually(&format!("{name} deleted"), WAIT, || async {
            api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
}

fn sources(entry: &ServiceIntentionsEntry) -> Vec<(String, Option<IntentionAction>, Option<String>)> {
    let mut out: Vec<_> = entry.sources.iter().map(|s| (s.name.clone(), s.action, s.description.clone())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intentions_allow_and_deny_read_back_exactly_and_delete_removes_them() {
    let env = setup(testenv::shared_consul().await, None).await;
    let (web, api, database) = (env.svc("web"), env.svc("api"), env.svc("database"));
    env.apply("api", json!({ "destination": api, "sources": [{ "name": web, "action": "allow" }] })).await;
    env.apply(
        "database",
        json!({ "destination": database, "sources": [
            { "name": web, "action": "deny", "description": "the web tier goes through the api" },
        ]}),
    )
    .await;
    let obj = env.synced("api", "True", "Synced").await;
    env.synced("database", "True", "Synced").await;

    let api_entry = env.entry(&api).await.expect("api entry");
    assert_eq!(sources(&api_entry), vec![(web.clone(), Some(IntentionAction::Allow), None)]);
    assert_eq!(api_entry.meta.get(OWNER_META), Some(&format!("{}/api", env.ns)));
    assert_eq!(obj.status.and_then(|s| s.consul_modify_index), Some(api_entry.modify_index.0));
    let db_entry = env.entry(&database).await.expect("database entry");
    assert_eq!(
        sources(&db_entry),
        vec![(web.clone(), Some(IntentionAction::Deny), Some("the web tier goes through the api".into()))]
    );

    env.api().delete("api", &DeleteParams::default()).await.expect("delete");
    env.api().delete("database", &DeleteParams::default()).await.expect("delete");
    env.gone("api").await;
    env.gone("database").await;
    assert!(env.entry(&api).await.is_none());
    assert!(env.entry(&database).await.is_none());
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intentions_l7_rule_round_trips_and_consul_refusal_is_quoted() {
    let env = setup(testenv::shared_consul().await, None).await;
    let (web, api) = (env.svc("web"), env.svc("api"));
    let spec = json!({ "destination": api, "sources": [
        { "name": web, "permissions": [
            { "action": "allow", "http": { "pathPrefix": "/v1/", "methods": ["GET", "POST"],
                "header": [{ "name": "x-env", "exact": "prod" }] } },
            { "action": "deny", "http": { "pathExact": "/admin" } },
        ]},
    ]});
    // Without protocol http Consul refuses L7 permissions (a reason of its own); nothing
    // is written.
    env.apply("api", spec.clone()).await;
    let refused = env.synced("api", "False", "ProtocolMismatch").await;
    let message =
        find_condition(&refused.status.expect("status").conditions, types::SYNCED).expect("c").message.clone();
    assert!(message.contains("protocol") && message.contains("L7"), "Consul's own words: {message}");
    assert!(env.entry(&api).await.is_none(), "nothing partially written");

    let defaults = ServiceDefaults { kind: "service-defaults", name: api.clone(), protocol: "http" };
    env.consul.config_entry_set(&defaults, None).await.expect("service-defaults");
    // A spec touch re-queues at once instead of waiting out the backoff.
    let mut touched = spec.clone();
    touched["sources"][0]["description"] = json!("L7");
    env.apply("api", touched).await;
    env.synced("api", "True", "Synced").await;

    let entry = env.entry(&api).await.expect("entry");
    let got = serde_json::to_value(&entry.sources[0].permissions).expect("encode");
    assert_eq!(
        got,
        json!([
            { "Action": "allow", "HTTP": { "PathPrefix": "/v1/", "Methods": ["GET", "POST"],
                "Header": [{ "Name": "x-env", "Exact": "prod" }] } },
            { "Action": "deny", "HTTP": { "PathExact": "/admin" } },
        ])
    );
    env.api().delete("api", &DeleteParams::default()).await.expect("delete");
    env.gone("api").await;
    // Best effort: the entry only names this test's service.
    let _ = env.consul.config_entry_delete("service-defaults", &api, None).await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intentions_hand_edit_is_reverted_with_an_event() {
    let env = setup(testenv::shared_consul().await, None).await;
    let (web, api) = (env.svc("web"), env.svc("api"));
    env.apply("api", json!({ "destination": api, "sources": [{ "name": web, "action": "deny" }] })).await;
    env.synced("api", "True", "Synced").await;
    let before = env.entry(&api).await.expect("entry");

    // Someone flips it to allow in Consul (and drops concord's Meta, as `consul config write` would).
    let edit = ServiceIntentionsEntry::new(
        api.clone(),
        vec![SourceIntention { name: web.clone(), action: Some(IntentionAction::Allow), ..Default::default() }],
    );
    env.consul.config_entry_set(&edit, Some(before.modify_index)).await.expect("hand edit");
    eventually("the hand edit reverted", WAIT, || async {
        let e = env.entry(&api).await?;
        (e.modify_index != before.modify_index
            && sources(&e) == vec![(web.clone(), Some(IntentionAction::Deny), None)]
            && e.meta.contains_key(OWNER_META))
        .then_some(())
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.kube.clone(), &env.ns);
    eventually("a DriftCorrected event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("DriftCorrected")).then_some(())
    })
    .await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intentions_duplicate_destination_is_reported_on_the_second_object_only() {
    let env = setup(testenv::shared_consul().await, None).await;
    let (web, api) = (env.svc("web"), env.svc("api"));
    env.apply("first", json!({ "destination": api, "sources": [{ "name": web, "action": "allow" }] })).await;
    env.synced("first", "True", "Synced").await;
    env.apply("second", json!({ "destination": api, "sources": [{ "name": web, "action": "deny" }] })).await;
    let second = env.synced("second", "False", "DuplicateDestination").await;
    let msg = find_condition(&second.status.expect("s").conditions, types::SYNCED).expect("c").message.clone();
    assert!(msg.contains(&format!("{}/first", env.ns)), "{msg}");
    env.synced("first", "True", "Synced").await;
    let entry = env.entry(&api).await.expect("entry");
    assert_eq!(sources(&entry), vec![(web.clone(), Some(IntentionAction::Allow), None)]);
    // Neither flaps: the entry stays at its index for a blocking-query wait.
    let later = env
        .consul
        .service_intentions_get(&api, &QueryOptions::blocking(entry.modify_index, Duration::from_secs(2)))
        .await
        .expect("get");
    assert_eq!(later.value.map(|e| e.modify_index), Some(entry.modify_index));

    // The first goes: the second takes the destination over.
    env.api().delete("first", &DeleteParams::default()).await.expect("delete");
    env.synced("second", "True", "Synced").await;
    let entry = env.entry(&api).await.expect("entry");
    assert_eq!(sources(&entry), vec![(web.clone(), Some(IntentionAction::Deny), None)]);
    env.api().delete("second", &DeleteParams::default()).await.expect("delete");
    env.gone("second").await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intentions_import_creates_objects_for_unmanaged_entries() {
    // Its own cluster: importing adopts every unmanaged entry, and the shared cluster
    // holds other tests' entries.
    let cluster = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    let env = setup(&cluster, Some(json!({ "importIntentions": true }))).await;
    let (web, legacy) = (env.svc("web"), env.svc("legacy"));
    let entry = ServiceIntentionsEntry::new(
        legacy.clone(),
        vec![SourceIntention { name: web.clone(), action: Some(IntentionAction::Allow), ..Default::default() }],
    );
    env.consul.config_entry_set(&entry, None).await.expect("entry written by hand");
    let name = concord::controllers::service_intention::imported_name(&legacy);
    let obj = env.synced(&name, "True", "Synced").await;
    assert_eq!(obj.labels().get("concord.io/imported").map(String::as_str), Some("true"));
    assert_eq!(obj.spec.destination, legacy);
    let adopted = env.entry(&legacy).await.expect("entry");
    assert_eq!(adopted.meta.get(OWNER_META), Some(&format!("{}/{name}", env.ns)));
    assert_eq!(sources(&adopted), vec![(web, Some(IntentionAction::Allow), None)]);
    env.api().delete(&name, &DeleteParams::default()).await.expect("delete");
    env.gone(&name).await;
    let _ = env.consul.config_entry_delete(SERVICE_INTENTIONS, &legacy, None).await;
    env.controller.stop().await;
}
