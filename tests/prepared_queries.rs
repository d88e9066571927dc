//! PreparedQuery against a real kube-apiserver and a real Consul: create, update, drift
//! revert, refusal (last good query kept, Consul quoted) and delete, each checked both in
//! Consul's `/v1/query` and through a real DNS client asking `<name>.query.consul` on
//! Consul's DNS port; templates answered through DNS; a name another object holds; the
//! tenancy grants (a hostile tenant's queries refused); import of unmanaged queries.
mod support;

use concord::consul::{self, CatalogRegistration, CheckStatus, HealthCheck, NodeService, QueryOptions};
use concord::controllers::prepared_query::OWNER_MARK_PREFIX;
use concord::resources::{PreparedQuery, find_condition, types};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;
use support::{ExternalEnv as Env, eventually};
use testenv::{ConsulCluster, ConsulOptions};

const WAIT: Duration = Duration::from_secs(30);

impl Env {
    fn queries(&self) -> Api<PreparedQuery> {
        Api::namespaced(self.kube.clone(), &self.ns)
    }

    /// A name only this test uses (the namespace is part of it).
    fn svc(&self, name: &str) -> String {
        format!("{}-{name}", self.ns)
    }

    async fn apply(&self, name: &str, spec: Value) {
        let obj = json!({
            "apiVersion": "concord.io/v1alpha1", "kind": "PreparedQuery",
            "metadata": { "name": name, "namespace": self.ns }, "spec": spec,
        });
        self.queries().patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.expect("applied");
    }

    /// Waits for `Synced=<status>` with `reason` at the object's generation; returns the
    /// message. A timeout names the condition last seen.
    async fn synced(&self, name: &str, status: &str, reason: &str) -> String {
        let mut last = None;
        let start = std::time::Instant::now();
        loop {
            if let Ok(obj) = self.queries().get(name).await
                && let Some(c) = obj.status.as_ref().and_then(|s| find_condition(&s.conditions, types::SYNCED))
            {
                if c.status == status && c.reason == reason && c.observed_generation == obj.metadata.generation {
                    return c.message.clone();
                }
                last = Some(format!("{}/{}: {}", c.status, c.reason, c.message));
            }
            assert!(start.elapsed() < WAIT, "{name}: no Synced={status} ({reason}) after {WAIT:?}; last seen {last:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The query named `name` in Consul, if any.
    async fn query(&self, name: &str) -> Option<consul::PreparedQuery> {
        let all = self.consul.prepared_queries_list(&QueryOptions::default()).await.expect("list queries");
        all.value.into_iter().find(|q| q.name == name)
    }

    async fn delete(&self, name: &str) {
        self.queries().delete(name, &DeleteParams::default()).await.expect("delete");
        eventually(&format!("{name} deleted"), WAIT, || async {
            self.queries().get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }

    async fn event(&self, reason: &str, object: &str) {
        support::event(&self.kube, &self.ns, object, reason, false).await
    }

    /// Registers an instance of `service` at `addr` with tags and a passing check, on a
    /// node of its own.
    async fn instance(&self, service: &str, addr: &str, tags: &[&str]) {
        let node = format!("{service}-{}", addr.replace('.', "-"));
        let id = format!("{service}-{addr}");
        self.consul
            .catalog_register(&CatalogRegistration {
                node: node.clone(),
                address: addr.into(),
                service: Some(NodeService {
                    id: id.clone(),
                    service: service.into(),
                    tags: tags.iter().map(|t| (*t).to_string()).collect(),
                    address: addr.into(),
                    port: 5432,
                    ..Default::default()
                }),
                checks: vec![HealthCheck {
                    check_id: format!("{id}-alive"),
                    name: "alive".into(),
                    status: CheckStatus::Passing,
                    service_id: id,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect("instance registered");
    }
}

type Resolver = hickory_resolver::Resolver<hickory_resolver::name_server::TokioConnectionProvider>;

/// The A records and their TTLs DNS answers for `<name>.query.consul`.
async fn dns_answer(dns: &Resolver, name: &str) -> Option<(BTreeSet<Ipv4Addr>, Vec<u32>)> {
    let found = dns.ipv4_lookup(format!("{name}.query.consul.")).await.ok()?;
    let addrs = found.iter().map(|a| a.0).collect();
    let ttls = found.as_lookup().records().iter().map(|r| r.ttl()).collect();
    Some((addrs, ttls))
}

/// Waits until DNS answers `name` with exactly `want`; returns the TTLs.
async fn dns_until(dns: &Resolver, name: &str, want: &[&str]) -> Vec<u32> {
    let want: BTreeSet<Ipv4Addr> = want.iter().map(|a| a.parse().expect("address")).collect();
    eventually(&format!("{name}.query.consul answering {want:?}"), WAIT, || async {
        let (addrs, ttls) = dns_answer(dns, name).await?;
        (addrs == want).then_some(ttls)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_query_create_update_dns_drift_refusal_and_delete() {
    let cluster = testenv::shared_consul().await;
    let env = support::external_env(cluster, None, "pq").await;
    let dns = support::resolver(cluster.dns_addr(0));
    let db = env.svc("db");
    env.instance(&db, "127.0.0.21", &["primary"]).await;
    env.instance(&db, "127.0.0.22", &["primary", "draining"]).await;
    env.instance(&db, "127.0.0.23", &["canary"]).await;

    // Create: tag filters (a required tag and an excluded one), failover, TTL.
    env.apply(
        &db,
        json!({ "service": { "service": db, "onlyPassing": true, "tags": ["primary", "!draining"],
            "failover": { "nearestN": 2, "datacenters": ["dc2"] } }, "dns": { "ttl": "7s" } }),
    )
    .await;
    let msg = env.synced(&db, "True", "Synced").await;
    let q = env.query(&db).await.expect("query created");
    assert!(msg.contains(&q.id), "the condition names the query ID: {msg}");
    assert_eq!(q.service.service, db);
    assert_eq!(q.service.tags, vec!["primary", "!draining"]);
    assert_eq!(q.service.failover.nearest_n, 2);
    assert_eq!(q.service.failover.datacenters, vec!["dc2"]);
    assert!(q.service.only_passing);
    assert_eq!(q.dns.ttl, "7s");
    assert_eq!(q.service.ignore_check_ids, vec![format!("{OWNER_MARK_PREFIX}{}/{db}", env.ns)], "owner mark");
    let obj = env.queries().get(&db).await.expect("object");
    assert_eq!(obj.status.and_then(|s| s.query_id), Some(q.id.clone()));
    let ttls = dns_until(&dns, &db, &["127.0.0.21"]).await;
    assert_eq!(ttls, vec![7], "the declared DNS TTL");

    // Update: another tag filter, another TTL; same query (same ID).
    env.apply(&db, json!({ "service": { "service": db, "tags": ["canary"] }, "dns": { "ttl": "3s" } })).await;
    env.synced(&db, "True", "Synced").await;
    let updated = env.query(&db).await.expect("query");
    assert_eq!(updated.id, q.id, "updated in place");
    assert!(updated.service.failover.datacenters.is_empty() && !updated.service.only_passing);
    assert_eq!(dns_until(&dns, &db, &["127.0.0.23"]).await, vec![3]);

    // Drift: a hand edit that also drops the mark is written back.
    let mut edit = updated.clone();
    edit.service.tags = vec!["primary".into()];
    edit.service.ignore_check_ids.clear();
    env.consul.prepared_query_update(&edit).await.expect("hand edit");
    eventually("the hand edit reverted", WAIT, || async {
        let q = env.query(&db).await?;
        (q.modify_index > updated.modify_index
            && q.service.tags == vec!["canary"]
            && !q.service.ignore_check_ids.is_empty())
        .then_some(())
    })
    .await;
    env.event("DriftCorrected", &db).await;
    dns_until(&dns, &db, &["127.0.0.23"]).await;

    // Refusal: a template whose regexp does not compile. Consul's words in the
    // condition, the last good query untouched and still answering.
    env.apply(
        &db,
        json!({ "service": { "service": db, "tags": ["primary"] },
            "template": { "type": "name_prefix_match", "regexp": "^(unclosed" } }),
    )
    .await;
    let refused = env.synced(&db, "False", "RejectedByConsul").await;
    assert!(refused.contains("Bad Regexp") || refused.contains("regexp"), "Consul's words: {refused}");
    env.event("RejectedByConsul", &db).await;
    let kept = env.query(&db).await.expect("query kept");
    assert_eq!((kept.id.as_str(), kept.service.tags.clone()), (q.id.as_str(), vec!["canary".to_string()]));
    dns_until(&dns, &db, &["127.0.0.23"]).await;

    // Fixed: synced again.
    env.apply(&db, json!({ "service": { "service": db, "tags": ["primary"] } })).await;
    env.synced(&db, "True", "Synced").await;
    dns_until(&dns, &db, &["127.0.0.21", "127.0.0.22"]).await;

    // Delete: the query goes, and DNS stops answering.
    env.delete(&db).await;
    assert!(env.query(&db).await.is_none(), "query deleted with its object");
    eventually("DNS no longer answers", WAIT, || async { dns_answer(&dns, &db).await.is_none().then_some(()) }).await;
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_answer_through_dns_and_a_taken_name_is_left_alone() {
    let cluster = testenv::shared_consul().await;
    let env = support::external_env(cluster, None, "pqt").await;
    let dns = support::resolver(cluster.dns_addr(0));
    let api = env.svc("api");
    env.instance(&api, "127.0.0.31", &["v1"]).await;
    env.instance(&api, "127.0.0.32", &["v2"]).await;

    // geo-<ns>-api-v2.query.consul: the service and the tag come from the name.
    let prefix = format!("geo-{}-", env.ns);
    env.apply(
        "geo",
        json!({ "name": prefix, "template": { "type": "name_prefix_match", "regexp": "^geo-(.+)-([^-]+)$" },
            "service": { "service": "${match(1)}", "tags": ["${match(2)}"] } }),
    )
    .await;
    env.synced("geo", "True", "Synced").await;
    let t = env.query(&prefix).await.expect("template created");
    assert_eq!(t.template.r#type, "name_prefix_match");
    dns_until(&dns, &format!("{prefix}api-v2"), &["127.0.0.32"]).await;
    dns_until(&dns, &format!("{prefix}api-v1"), &["127.0.0.31"]).await;

    // A second object naming the same query: reported, the first one's query untouched.
    let name = env.svc("api-q");
    env.apply("first", json!({ "name": name, "service": { "service": api, "tags": ["v1"] } })).await;
    env.synced("first", "True", "Synced").await;
    let held = env.query(&name).await.expect("query");
    env.apply("second", json!({ "name": name, "service": { "service": api, "tags": ["v2"] } })).await;
    let msg = env.synced("second", "False", "OwnedElsewhere").await;
    assert!(msg.contains(&format!("{}/first", env.ns)), "names the owner: {msg}");
    env.event("OwnedElsewhere", "second").await;
    let still = env.query(&name).await.expect("query");
    assert_eq!((still.modify_index, still.service.tags.clone()), (held.modify_index, vec!["v1".to_string()]));
    dns_until(&dns, &name, &["127.0.0.31"]).await;

    // Once the first object goes, the second one takes the name.
    env.delete("first").await;
    env.synced("second", "True", "Synced").await;
    dns_until(&dns, &name, &["127.0.0.32"]).await;

    env.delete("second").await;
    env.delete("geo").await;
    assert!(env.query(&name).await.is_none() && env.query(&prefix).await.is_none());
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_query_or_template_beyond_its_grants() {
    let cluster = testenv::shared_consul().await;
    let env = support::external_env(cluster, None, "pqg").await;
    let granted = env.svc("team");
    // The cluster owner grants this namespace the services starting with `<ns>-team`.
    let dcs: Api<concord::resources::DiscoveryCluster> = Api::namespaced(env.kube.clone(), &env.ns);
    let patch = json!({ "spec": { "tenancy": { "intentionDestinations": [format!("{granted}*")] } } });
    dcs.patch("consul", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("tenancy set");

    // A query of a service the namespace was not granted, under a granted name.
    let victim = env.svc("payments");
    let stolen = format!("{granted}-payments");
    env.apply("steal", json!({ "name": stolen, "service": { "service": victim } })).await;
    let msg = env.synced("steal", "False", "NotGranted").await;
    assert!(msg.contains("service"), "{msg}");
    // A granted service under a name outside the grant (squatting a global DNS name).
    env.apply("squat", json!({ "name": victim, "service": { "service": format!("{granted}-api") } })).await;
    env.synced("squat", "False", "NotGranted").await;
    // A template: it would answer for any name and interpolate any service.
    env.apply(
        "catch-all",
        json!({ "name": "", "template": { "type": "name_prefix_match" }, "service": { "service": "${name.full}" } }),
    )
    .await;
    env.synced("catch-all", "False", "NotGranted").await;
    env.event("NotGranted", "catch-all").await;
    for name in [stolen.as_str(), victim.as_str(), ""] {
        assert!(env.query(name).await.is_none(), "nothing written for {name:?}");
    }

    // Within the grant it works.
    env.apply("own", json!({ "name": format!("{granted}-api"), "service": { "service": format!("{granted}-api") } }))
        .await;
    env.synced("own", "True", "Synced").await;
    for name in ["steal", "squat", "catch-all", "own"] {
        env.delete(name).await;
    }
    env.controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_queries_are_imported_and_then_managed() {
    // Its own cluster: import takes every unmarked query in Consul.
    let cluster = ConsulCluster::start(ConsulOptions { servers: 1, ..Default::default() }).await.expect("consul");
    let consul = consul::Client::new(consul::ClientConfig::new(cluster.http_addrs())).expect("client");
    let by_hand = consul::PreparedQuery {
        name: "orders".into(),
        service: consul::QueryService {
            service: "orders".into(),
            tags: vec!["!canary".into()],
            failover: consul::QueryFailover { nearest_n: 1, ..Default::default() },
            ..Default::default()
        },
        dns: consul::QueryDns { ttl: "5s".into() },
        ..Default::default()
    };
    let id = consul.prepared_query_create(&by_hand).await.expect("hand-made query");
    // One the kind cannot declare (its name cannot be an object's): left alone.
    let odd = consul::PreparedQuery { name: "Orders_Legacy".into(), ..by_hand.clone() };
    let odd_id = consul.prepared_query_create(&odd).await.expect("odd query");

    let env = support::external_env(&cluster, Some(json!({ "importConfigEntries": ["PreparedQuery"] })), "pqi").await;
    let imported = eventually("orders imported", WAIT, || async { env.queries().get_opt("orders").await.ok()? }).await;
    assert_eq!(imported.labels().get("concord.io/imported").map(String::as_str), Some("true"));
    assert_eq!(imported.spec.service.tags, vec!["!canary"]);
    assert_eq!(imported.spec.dns.as_ref().and_then(|d| d.ttl.as_deref()), Some("5s"));
    env.synced("orders", "True", "Synced").await;
    let adopted = env.query("orders").await.expect("query");
    assert_eq!(adopted.id, id, "the same query, adopted");
    assert_eq!(adopted.service.ignore_check_ids, vec![format!("{OWNER_MARK_PREFIX}{}/orders", env.ns)]);

    // Managed from now on: an edit of the object reaches Consul, deletion deletes.
    env.apply("orders", json!({ "clusterRef": "consul", "service": { "service": "orders", "tags": ["v2"] } })).await;
    env.synced("orders", "True", "Synced").await;
    assert_eq!(env.query("orders").await.expect("query").service.tags, vec!["v2"]);
    env.delete("orders").await;
    assert!(env.query("orders").await.is_none());
    let odd_now = consul.prepared_query_get(&odd_id).await.expect("read").expect("odd query left alone");
    assert!(odd_now.service.ignore_check_ids.is_empty(), "not marked");
    let objects = env.queries().list(&ListParams::default()).await.expect("list");
    assert!(
        objects.items.is_empty(),
        "nothing else imported: {:?}",
        objects.items.iter().map(|o| o.name_any()).collect::<Vec<_>>()
    );
    env.controller.stop().await;
}

use kube::ResourceExt;
