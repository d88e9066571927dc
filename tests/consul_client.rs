//! The Consul client against real Consul servers started by `testenv`: a shared
//! three-server cluster for tests that only touch their own keys and services, and
//! clusters of their own for tests that restore snapshots, bootstrap ACLs or kill servers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use concord::consul::{
    AclLink, AclPolicy, AclToken, CatalogDeregistration, CatalogRegistration, CheckStatus, Client, ClientConfig,
    Consistency, ConsulIndex, Error, HealthCheck, IntentionAction, KvWriteOptions, MAX_TXN_OPS, Node, NodeService,
    QueryOptions, RaftPeer, SERVICE_INTENTIONS, ServiceIntentionsEntry, SourceIntention, TxnOp, TxnOutcome,
};
use testenv::{ConsulCluster, ConsulOptions};

/// A name no other test (or earlier run against the same cluster) uses.
fn unique(what: &str) -> String {
    format!("{what}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// A client that knows every server, as the controller's is configured.
fn client_for(cluster: &ConsulCluster) -> Client {
    Client::new(ClientConfig::new(cluster.http_addrs())).expect("client")
}

fn kv_set(key: &str, value: &str) -> TxnOp {
    TxnOp::KvSet { key: key.to_owned(), value: Bytes::from(value.to_owned()), flags: 0 }
}

/// One instance of `service` on `node` with an external check in `status`.
fn instance(node: &str, service: &str, id: &str, tags: &[&str], status: CheckStatus) -> CatalogRegistration {
    CatalogRegistration {
        node: node.to_owned(),
        address: "127.0.0.1".to_owned(),
        node_meta: [("external-source".to_owned(), "kubernetes".to_owned())].into(),
        service: Some(NodeService {
            id: id.to_owned(),
            service: service.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            address: "10.0.0.1".to_owned(),
            port: 8080,
            ..Default::default()
        }),
        checks: vec![HealthCheck {
            check_id: format!("{id}/ready"),
            name: "Kubernetes readiness".to_owned(),
            status,
            service_id: id.to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn catalog_register_then_deregister() {
    let cluster = testenv::shared_consul().await;
    let consul = client_for(cluster);
    let node = unique("k8s-sync");
    let service = unique("web");
    let id = format!("{service}-1");

    consul.catalog_register(&instance(&node, &service, &id, &["v1"], CheckStatus::Passing)).await.expect("register");

    let services = consul.catalog_services(&QueryOptions::default()).await.expect("services");
    assert_eq!(services.value.get(&service), Some(&vec!["v1".to_owned()]));
    assert!(services.index > ConsulIndex::ZERO);
    let instances = consul.catalog_service(&service, &[], &QueryOptions::default()).await.expect("service");
    assert_eq!(instances.value.len(), 1);
    assert_eq!(instances.value[0].service_id, id);
    assert_eq!(instances.value[0].service_port, 8080);
    assert_eq!(instances.value[0].node_meta.get("external-source").map(String::as_str), Some("kubernetes"));
    let on_node = consul.catalog_node_services(&node, &QueryOptions::default()).await.expect("node services");
    assert_eq!(on_node.value.expect("node exists").services.len(), 1);

    consul
        .catalog_deregister(&CatalogDeregistration { node: node.clone(), service_id: id.clone(), ..Default::default() })
        .await
        .expect("deregister service");
    let instances = consul.catalog_service(&service, &[], &QueryOptions::default()).await.expect("service");
    assert!(instances.value.is_empty());
    let services = consul.catalog_services(&QueryOptions::default()).await.expect("services");
    assert!(!services.value.contains_key(&service));

    consul
        .catalog_deregister(&CatalogDeregistration { node: node.clone(), ..Default::default() })
        .await
        .expect("deregister node");
    let gone = consul.catalog_node_services(&node, &QueryOptions::default()).await.expect("node services");
    assert_eq!(gone.value, None);
}

#[tokio::test]
async fn health_service_filters_by_passing_and_tag() {
    let cluster = testenv::shared_consul().await;
    let consul = client_for(cluster);
    let node = unique("k8s-sync");
    let service = unique("api");
    for (id, tags, status) in [
        ("a", ["v1", "canary"].as_slice(), CheckStatus::Passing),
        ("b", ["v1"].as_slice(), CheckStatus::Critical),
        ("c", ["v2"].as_slice(), CheckStatus::Passing),
    ] {
        consul.catalog_register(&instance(&node, &service, id, tags, status)).await.expect("register");
    }
    let ids = |entries: Vec<concord::consul::ServiceEntry>| {
        let mut ids: Vec<String> = entries.into_iter().map(|e| e.service.id).collect();
        ids.sort();
        ids
    };
    let all = QueryOptions::default();

    let every = consul.health_service(&service, &[], false, &all).await.expect("health");
    assert_eq!(ids(every.value), ["a", "b", "c"]);
    let passing = consul.health_service(&service, &[], true, &all).await.expect("health");
    assert_eq!(ids(passing.value), ["a", "c"]);
    let v1 = consul.health_service(&service, &["v1"], false, &all).await.expect("health");
    assert_eq!(ids(v1.value), ["a", "b"]);
    let v1_passing = consul.health_service(&service, &["v1"], true, &all).await.expect("health");
    assert_eq!(ids(v1_passing.value), ["a"]);
    let both_tags = consul.health_service(&service, &["v1", "canary"], false, &all).await.expect("health");
    assert_eq!(ids(both_tags.value), ["a"]);

    // The check's status follows the registration, as catalog sync mirrors readiness.
    consul.catalog_register(&instance(&node, &service, "b", &["v1"], CheckStatus::Passing)).await.expect("update");
    let passing = consul.health_service(&service, &[], true, &all).await.expect("health");
    assert_eq!(ids(passing.value), ["a", "b", "c"]);

    consul.catalog_deregister(&CatalogDeregistration { node, ..Default::default() }).await.expect("cleanup");
}

#[tokio::test]
async fn kv_put_get_list_and_cas_conflict() {
    let cluster = testenv::shared_consul().await;
    let consul = client_for(cluster);
    let prefix = unique("kv");
    let key = format!("{prefix}/config/a key?#");
    let none = QueryOptions::default();

    assert_eq!(consul.kv_get(&key, &none).await.expect("get").value, None);
    consul.kv_put(&key, "one", &KvWriteOptions { flags: 42, cas: Some(ConsulIndex::ZERO) }).await.expect("create");
    let first = consul.kv_get(&key, &none).await.expect("get").value.expect("exists");
    assert_eq!(first.key, key);
    assert_eq!(first.value_str(), Some("one"));
    assert_eq!(first.flags, 42);

    // cas=0 means "only if absent": the key exists now.
    let exists = consul.kv_put(&key, "again", &KvWriteOptions { flags: 0, cas: Some(ConsulIndex::ZERO) }).await;
    assert!(matches!(exists, Err(Error::CasConflict { .. })), "{exists:?}");

    consul
        .kv_put(&key, "two", &KvWriteOptions { flags: 42, cas: Some(first.modify_index) })
        .await
        .expect("cas with the current index");
    let stale = consul.kv_put(&key, "three", &KvWriteOptions { flags: 42, cas: Some(first.modify_index) }).await;
    let err = stale.expect_err("cas with a stale index");
    assert!(err.is_cas_conflict(), "{err:?}");
    assert_eq!(err.category(), "cas_conflict");
    let current = consul.kv_get(&key, &none).await.expect("get").value.expect("exists");
    assert_eq!(current.value_str(), Some("two"));
    for mode in [Consistency::Consistent, Consistency::Stale] {
        let read = consul.kv_get(&key, &QueryOptions::default().with_consistency(mode)).await.expect("get");
        assert_eq!(read.value.as_ref(), Some(&current), "{mode:?}");
    }

    // Binary values survive the base64 round trip.
    let binary_key = format!("{prefix}/binary");
    consul.kv_put(&binary_key, vec![0u8, 255, 10, 13], &KvWriteOptions::default()).await.expect("put");
    consul.kv_put(&format!("{prefix}/config/b"), "", &KvWriteOptions::default()).await.expect("put empty");
    let listed = consul.kv_list(&format!("{prefix}/"), &none).await.expect("list").value;
    let keys: Vec<&str> = listed.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, [binary_key.as_str(), key.as_str(), &format!("{prefix}/config/b")]);
    assert_eq!(listed[0].value.as_ref(), [0u8, 255, 10, 13]);
    assert!(listed[2].value.is_empty());
    let folders = consul.kv_keys(&format!("{prefix}/"), Some("/"), &none).await.expect("keys").value;
    assert_eq!(folders, [binary_key.clone(), format!("{prefix}/config/")]);

    let delete_stale = consul.kv_delete(&key, Some(first.modify_index)).await;
    assert!(matches!(delete_stale, Err(Error::CasConflict { .. })), "{delete_stale:?}");
    consul.kv_delete(&key, Some(current.modify_index)).await.expect("delete with cas");
    consul.kv_delete(&key, None).await.expect("deleting a missing key succeeds");
    consul.kv_delete_tree(&format!("{prefix}/")).await.expect("delete tree");
    assert!(consul.kv_list(&format!("{prefix}/"), &none).await.expect("list").value.is_empty());
}

#[tokio::test]
async fn txn_of_150_operations_is_split_and_applied_in_order() {
    let cluster = testenv::shared_consul().await;
    let consul = client_for(cluster);
    let prefix = unique("txn");
    let ops: Vec<TxnOp> = (0..150).map(|i| kv_set(&format!("{prefix}/{i:03}"), &format!("value-{i}"))).collect();

    let too_many = consul.txn(&ops).await;
    assert!(matches!(too_many, Err(Error::InvalidRequest(_))), "{too_many:?}");

    let outcome = consul.txn_chunked(&ops).await.expect("txn");
    match outcome {
        TxnOutcome::Committed(results) => assert_eq!(results.len(), 150),
        other => panic!("rolled back: {other:?}"),
    }
    let pairs = consul.kv_list(&format!("{prefix}/"), &QueryOptions::default()).await.expect("list").value;
    assert_eq!(pairs.len(), 150);
    for (i, pair) in pairs.iter().enumerate() {
        assert_eq!(pair.key, format!("{prefix}/{i:03}"));
        assert_eq!(pair.value_str(), Some(format!("value-{i}").as_str()));
    }

    // A later key set in a later chunk wins: chunks are applied in order.
    let ordered = vec![kv_set(&format!("{prefix}/000"), "first"); MAX_TXN_OPS]
        .into_iter()
        .chain([kv_set(&format!("{prefix}/000"), "last")])
        .collect::<Vec<_>>();
    assert!(consul.txn_chunked(&ordered).await.expect("txn").is_committed());
    let value = consul.kv_get(&format!("{prefix}/000"), &QueryOptions::default()).await.expect("get").value;
    assert_eq!(value.expect("exists").value_str(), Some("last"));

    consul.kv_delete_tree(&format!("{prefix}/")).await.expect("cleanup");
}

#[tokio::test]
async fn txn_rollback_reports_the_failed_operation_and_what_was_committed() {
    let cluster = testenv::shared_consul().await;
    let consul = client_for(cluster);
    let prefix = unique("txn-rollback");
    // Chunk 1 (64 sets) commits; chunk 2 fails at its 11th operation (global index 74).
    let mut ops: Vec<TxnOp> = (0..100).map(|i| kv_set(&format!("{prefix}/{i:03}"), "v")).collect();
    ops[74] = TxnOp::KvCheckIndex { key: format!("{prefix}/000"), index: ConsulIndex(1) };

    match consul.txn_chunked(&ops).await.expect("txn") {
        TxnOutcome::RolledBack { errors, committed_ops } => {
            assert_eq!(committed_ops, MAX_TXN_OPS);
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].op_index, 74);
            assert!(!errors[0].what.is_empty());
        }
        other => panic!("expected a rollback: {other:?}"),
    }
    let keys = consul.kv_keys(&format!("{prefix}/"), None, &QueryOptions::default()).await.expect("keys").value;
    assert_eq!(keys.len(), MAX_TXN_OPS, "only the first chunk is applied");

    consul.kv_delete_tree(&format!("{prefix}/")).await.expect("cleanup");
}

#[tokio::test]
async fn txn_registers_and_removes_catalog_entries() {
    let cluster = testenv::shared_consul().await;
    let consul = client_for(cluster);
    let node = unique("k8s-sync");
    let service = unique("txn-svc");
    let check = |status| HealthCheck {
        node: node.clone(),
        check_id: "i1/ready".to_owned(),
        name: "ready".to_owned(),
        status,
        service_id: "i1".to_owned(),
        service_name: service.clone(),
        ..Default::default()
    };
    let register = [
        TxnOp::NodeSet(Node { node: node.clone(), address: "127.0.0.1".to_owned(), ..Default::default() }),
        TxnOp::ServiceSet {
            node: node.clone(),
            service: NodeService { id: "i1".to_owned(), service: service.clone(), port: 80, ..Default::default() },
        },
        TxnOp::CheckSet(check(CheckStatus::Critical)),
    ];
    assert!(consul.txn(&register).await.expect("txn").is_committed());
    let all = QueryOptions::default();
    let entries = consul.health_service(&service, &[], false, &all).await.expect("health").value;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].service.weights.passing, 1, "weights are always sent");
    assert!(consul.health_service(&service, &[], true, &all).await.expect("health").value.is_empty());

    assert!(consul.txn(&[TxnOp::CheckSet(check(CheckStatus::Passing))]).await.expect("txn").is_committed());
    assert_eq!(consul.health_service(&service, &[], true, &all).await.expect("health").value.len(), 1);

    let remove = [
        TxnOp::CheckDelete { node: node.clone(), check_id: "i1/ready".to_owned() },
        TxnOp::ServiceDelete { node: node.clone(), service_id: "i1".to_owned(), service_name: service.clone() },
        TxnOp::NodeDelete { node: node.clone() },
    ];
    assert!(consul.txn(&remove).await.expect("txn").is_committed());
    assert!(consul.health_service(&service, &[], false, &all).await.expect("health").value.is_empty());
}

#[tokio::test]
async fn blocking_kv_get_wakes_up_on_change_with_the_new_value() {
    let cluster = testenv::shared_consul().await;
    let consul = client_for(cluster);
    let key = format!("{}/watched", unique("blocking"));
    let wait = Duration::from_secs(30);

    // Waiting for a key that does not exist yet: the 404 still carries an index.
    let missing = consul.kv_get(&key, &QueryOptions::default()).await.expect("get");
    assert_eq!(missing.value, None);
    let writer = consul.clone();
    let write_key = key.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.kv_put(&write_key, "v1", &KvWriteOptions::default()).await.expect("put v1");
    });
    let started = Instant::now();
    let created = consul.kv_get(&key, &QueryOptions::blocking(missing.index, wait)).await.expect("blocking get");
    assert!(started.elapsed() < Duration::from_secs(10), "woke after {:?}", started.elapsed());
    assert_eq!(created.value.as_ref().and_then(|p| p.value_str()), Some("v1"));
    assert!(created.index > missing.index);
    assert!(created.known_leader);

    let index = missing.index.advance(created.index);
    let writer = consul.clone();
    let write_key = key.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.kv_put(&write_key, "v2", &KvWriteOptions::default()).await.expect("put v2");
    });
    let started = Instant::now();
    let changed = consul.kv_get(&key, &QueryOptions::blocking(index, wait)).await.expect("blocking get");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "did not block: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "woke after {elapsed:?}");
    assert_eq!(changed.value.expect("exists").value_str(), Some("v2"));

    // Nothing changes: the query returns at the end of the wait with the same index.
    let idle_wait = Duration::from_millis(500);
    let started = Instant::now();
    let idle = consul.kv_get(&key, &QueryOptions::blocking(changed.index, idle_wait)).await.expect("blocking get");
    assert!(started.elapsed() >= Duration::from_millis(450), "returned after {:?}", started.elapsed());
    assert_eq!(idle.index, changed.index);

    consul.kv_delete(&key, None).await.expect("cleanup");
}

#[tokio::test]
async fn service_intentions_set_get_list_and_delete_with_cas() {
    let cluster = testenv::shared_consul().await;
    let consul = client_for(cluster);
    let destination = unique("dest");
    let none = QueryOptions::default();
    let mut entry = ServiceIntentionsEntry::new(
        &destination,
        vec![SourceIntention { name: "web".to_owned(), action: Some(IntentionAction::Allow), ..Default::default() }],
    );

    consul.config_entry_set(&entry, Some(ConsulIndex::ZERO)).await.expect("create if absent");
    let stored = consul.service_intentions_get(&destination, &none).await.expect("get").value.expect("exists");
    assert_eq!(stored.sources[0].action, Some(IntentionAction::Allow));
    assert!(stored.modify_index > ConsulIndex::ZERO);

    entry.sources[0].action = Some(IntentionAction::Deny);
    consul.config_entry_set(&entry, Some(stored.modify_index)).await.expect("update at the read index");
    // (A stale CAS write of identical content succeeds: Consul skips no-op writes.)
    entry.sources[0].description = Some("changed".to_owned());
    let stale = consul.config_entry_set(&entry, Some(stored.modify_index)).await;
    assert!(matches!(stale, Err(Error::CasConflict { .. })), "{stale:?}");

    let all = consul.service_intentions_list(&none).await.expect("list");
    assert!(all.value.iter().any(|e| e.name == destination && e.sources[0].action == Some(IntentionAction::Deny)));
    let raw = consul.config_entries_list::<serde_json::Value>(SERVICE_INTENTIONS, &none).await.expect("list raw");
    assert!(raw.value.iter().any(|e| e["Name"] == destination.as_str()));

    let current = consul.service_intentions_get(&destination, &none).await.expect("get").value.expect("exists");
    let stale_delete = consul.config_entry_delete(SERVICE_INTENTIONS, &destination, Some(stored.modify_index)).await;
    assert!(matches!(stale_delete, Err(Error::CasConflict { .. })), "{stale_delete:?}");
    consul
        .config_entry_delete(SERVICE_INTENTIONS, &destination, Some(current.modify_index))
        .await
        .expect("delete at the read index");
    assert_eq!(consul.service_intentions_get(&destination, &none).await.expect("get").value, None);
    consul.config_entry_delete(SERVICE_INTENTIONS, &destination, None).await.expect("deleting again succeeds");
}

#[tokio::test]
async fn status_and_raft_configuration_describe_the_cluster() {
    let cluster = testenv::shared_consul().await;
    let consul = client_for(cluster);
    let leader = consul.status_leader().await.expect("leader").expect("a leader");
    let peers = consul.status_peers().await.expect("peers");
    assert_eq!(peers.len(), 3);
    assert!(peers.contains(&leader));
    let raft = consul.operator_raft_configuration(&QueryOptions::default()).await.expect("raft");
    assert_eq!(raft.servers.len(), 3);
    assert_eq!(raft.leader().map(|s| s.address.as_str()), Some(leader.as_str()));
    assert!(raft.servers.iter().all(|s| s.voter));
    let agent = consul.agent_self().await.expect("agent self");
    assert_eq!(agent.config.datacenter, "dc1");
    assert!(agent.config.server);
    assert!(agent.config.version.starts_with("1.22"), "{}", agent.config.version);
}

#[tokio::test]
async fn snapshot_save_change_restore_brings_the_old_value_back() {
    // Its own cluster: a restore rewinds everything, which would break concurrent tests.
    let cluster = ConsulCluster::start(ConsulOptions::default()).await.expect("cluster");
    let consul = client_for(&cluster);
    let key = "snapshot/value";
    consul.kv_put(key, "before", &KvWriteOptions::default()).await.expect("put");

    let file = std::env::temp_dir().join(format!("{}.snap", unique("concord-snapshot")));
    let mut out = tokio::fs::File::create(&file).await.expect("create file");
    let info = consul.snapshot_save_to(&QueryOptions::default(), &mut out).await.expect("save");
    drop(out);
    assert!(info.size > 0);
    assert!(info.index > ConsulIndex::ZERO);
    assert_eq!(tokio::fs::metadata(&file).await.expect("stat").len(), info.size);

    consul.kv_put(key, "after", &KvWriteOptions::default()).await.expect("put");
    let reader = tokio::fs::File::open(&file).await.expect("open");
    consul.snapshot_restore_from(reader).await.expect("restore");
    let restored = consul.kv_get(key, &QueryOptions::default()).await.expect("get").value;
    assert_eq!(restored.as_ref().and_then(|p| p.value_str()), Some("before"));

    // The streaming save, consumed chunk by chunk.
    let resp = consul.snapshot_save(&QueryOptions::default()).await.expect("save");
    let mut size = 0;
    let mut stream = resp.value;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        size += chunk.expect("chunk").len();
    }
    assert!(size > 0);
    let _ = tokio::fs::remove_file(&file).await;
}

#[tokio::test]
async fn acl_bootstrap_then_policy_and_token_lifecycle() {
    let cluster =
        ConsulCluster::start(ConsulOptions { servers: 1, acl: true, bootstrap_acl: false, ..Default::default() })
            .await
            .expect("cluster");
    let anonymous = client_for(&cluster);

    let bootstrap = anonymous.acl_bootstrap().await.expect("bootstrap");
    let secret = bootstrap.secret_id.clone().expect("bootstrap secret");
    assert!(!format!("{bootstrap:?}").contains(secret.expose_secret()));
    let again = anonymous.acl_bootstrap().await;
    assert!(matches!(again, Err(Error::AclAlreadyBootstrapped { .. })), "{again:?}");

    // Deny by default: without a token, reads are refused with a typed error.
    let denied = anonymous.kv_get("anything", &QueryOptions::default()).await;
    assert_eq!(denied.as_ref().map_err(Error::category).err(), Some("permission_denied"), "{denied:?}");

    let admin = anonymous.with_token(secret).expect("admin client");
    let name = unique("kv-read");
    let policy = admin
        .acl_policy_create(&AclPolicy {
            name: name.clone(),
            description: "read app config".to_owned(),
            rules: r#"key_prefix "app/" { policy = "read" }"#.to_owned(),
            ..Default::default()
        })
        .await
        .expect("create policy");
    assert!(!policy.id.is_empty());
    let read = admin.acl_policy_read(&policy.id).await.expect("read policy").expect("exists");
    assert_eq!(read.rules, policy.rules);
    let by_name = admin.acl_policy_read_by_name(&name).await.expect("read by name").expect("exists");
    assert_eq!(by_name.id, policy.id);
    let updated = admin
        .acl_policy_update(&AclPolicy { description: "updated".to_owned(), ..read.clone() })
        .await
        .expect("update policy");
    assert_eq!(updated.description, "updated");
    assert!(admin.acl_policies().await.expect("list").iter().any(|p| p.id == policy.id));

    let token = admin
        .acl_token_create(&AclToken {
            description: "app reader".to_owned(),
            policies: vec![AclLink::by_name(&name)],
            ..Default::default()
        })
        .await
        .expect("create token");
    let app_secret = token.secret_id.clone().expect("token secret");
    let fetched = admin.acl_token_read(&token.accessor_id).await.expect("read token").expect("exists");
    assert_eq!(fetched.policies[0].id, policy.id);
    assert!(admin.acl_tokens().await.expect("list").iter().any(|t| t.accessor_id == token.accessor_id));

    // The new token works, within its policy.
    let app = anonymous.with_token(app_secret.clone()).expect("app client");
    assert_eq!(app.acl_token_read_self().await.expect("self").accessor_id, token.accessor_id);
    app.kv_get("app/x", &QueryOptions::default()).await.expect("allowed read");
    let write = app.kv_put("app/x", "no", &KvWriteOptions::default()).await;
    assert!(matches!(write, Err(Error::PermissionDenied { .. })), "{write:?}");

    admin.acl_token_delete(&token.accessor_id).await.expect("delete token");
    assert_eq!(admin.acl_token_read(&token.accessor_id).await.expect("read deleted"), None);
    admin.acl_policy_delete(&policy.id).await.expect("delete policy");
    assert_eq!(admin.acl_policy_read(&policy.id).await.expect("read deleted"), None);
}

#[tokio::test]
async fn writes_succeed_after_the_leader_is_sigkilled() {
    let cluster = ConsulCluster::start(ConsulOptions::default()).await.expect("cluster");
    let leader = cluster.leader_index().await.expect("a leader");
    // The dead leader first in the list: the client must fail over, not just retry.
    let mut addresses = cluster.http_addrs();
    addresses.rotate_left(leader);
    let consul = Client::new(ClientConfig::new(addresses)).expect("client");
    consul.kv_put("ha/before", "1", &KvWriteOptions::default()).await.expect("put before");
    let raft = consul.operator_raft_configuration(&QueryOptions::default()).await.expect("raft");
    let old_leader = raft.leader().expect("leader in raft config").clone();

    cluster.kill(leader);
    let started = Instant::now();
    for i in 0..5 {
        consul.kv_put(&format!("ha/after/{i}"), "2", &KvWriteOptions::default()).await.expect("put after the kill");
    }
    let elapsed = started.elapsed();
    eprintln!("five writes through the election took {elapsed:?}");
    let new_leader = consul.status_leader().await.expect("leader").expect("a new leader");
    assert_ne!(new_leader, old_leader.address);
    let keys = consul.kv_keys("ha/after/", None, &QueryOptions::default()).await.expect("keys").value;
    assert_eq!(keys.len(), 5, "all writes applied once (after {elapsed:?})");

    // The dead server can be dropped from Raft, as a scale-down does.
    consul.operator_raft_remove_peer(&RaftPeer::Id(old_leader.id.clone())).await.expect("remove peer");
    let raft = consul.operator_raft_configuration(&QueryOptions::default()).await.expect("raft");
    assert_eq!(raft.servers.len(), 2);
    assert!(raft.servers.iter().all(|s| s.id != old_leader.id));
}
