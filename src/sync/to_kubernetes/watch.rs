//! The Consul side of Consul → Kubernetes: which services exist, from one blocking query
//! for the whole catalog, and each mirrored service's instances, read only where
//! something changed. How a change is noticed depends on what Consul serves:
//!
//! - `/v1/catalog/services` (filtered to services with an instance not from Kubernetes),
//!   blocking: which services exist, in both modes.
//!
//! **HTTP/2 (Consul over HTTPS).** One blocking query per mirrored service,
//! `/v1/health/service/<name>?index=…&stale`: Consul wakes it on any change to that
//! service's instances, their checks or their nodes, address- and port-only ones
//! included, so what is read is exactly what changed. The queries are streams
//! multiplexed over HTTP/2, spread over one connection per [`SERVICES_PER_CONNECTION`]
//! services: a Go server serves at most 250 streams at once on one connection, and Consul
//! refuses a client more than `limits.http_max_conns_per_client` (200) connections, so
//! 10,000 services take 50 connections. `?stale` lets whichever server holds the
//! connection answer from its own copy of the catalog instead of forwarding every query
//! to the leader: a follower applies the same Raft log in order, so its answer is a state
//! the leader committed, at most its replication lag behind (milliseconds on a healthy
//! cluster), and a mirror is eventually consistent anyway; the service list and the
//! anti-entropy re-reads stay default-mode (leader) reads, so a follower cut off from the
//! leader cannot hold a wrong answer past the next pass.
//!
//! **HTTP/1.1 (plain HTTP, or a proxy that does not speak HTTP/2).** One connection per
//! blocking query would hit that connection limit past ~200 services (an earlier
//! version did, and the sync never converged), so two queries follow the whole catalog:
//! - `/v1/health/state/any` (filtered to skip the sync nodes `k8s-sync-*`, whose
//!   instances all came from Kubernetes): every check with its status. A service is
//!   re-read when its own checks changed (an instance added or removed with its check,
//!   a status flip) or when a node-level check changed on a node it has an instance on.
//! - `/v1/health/service/<name>` (not blocking), at most [`PARALLEL_READS`] at once: the
//!   instances of a changed service, turned into [`MirrorInstance`]s and sent on when
//!   they differ from what was sent before.
//!
//! What the check view cannot see (an instance without checks of its own, an address or
//! port change that leaves the checks alone) is re-read on every change of the catalog
//! index (services with an unchecked instance), and every mirrored service is re-read
//! after a catalog change that neither watch explains (same names, same checks), at most
//! once per [`rescan_interval`].
//!
//! In both modes every mirrored service is re-read on every anti-entropy pass.
use super::desired::{self, MirrorInstance};
use crate::consul::{self, CheckStatus, Consistency, ConsulIndex, HealthCheck, QueryOptions, ServiceEntry};
use crate::sync::ToKubernetesConfig;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Instance reads in flight at once.
pub const PARALLEL_READS: usize = 8;
/// Per-service blocking queries on one HTTP/2 connection: below Go's default of 250
/// concurrent streams per connection, with room for the odd re-read.
pub const SERVICES_PER_CONNECTION: usize = 200;
/// Non-blocking reads in flight at once across the per-service watches (their first
/// answers, and the first after a failure).
pub const PARALLEL_FIRST_READS: usize = 32;
/// How long one blocking query waits at most before it is re-sent.
const BLOCKING_WAIT: Duration = Duration::from_secs(300);
/// The least time between the starts of two queries of one watch. Consul answers a
/// blocking query on every commit to the table, and each answer costs the leader a scan of
/// every check (or service instance) through the filter: during a 10,000-instance initial
/// sync in the other direction (~17 commits/s) that scan was most of the leader's CPU. A
/// change after a quiet period is still seen at once (the query is already waiting); only
/// changes closer together than this are coalesced into one answer.
const MIN_QUERY_INTERVAL: Duration = Duration::from_millis(200);
/// Only services with at least one instance not registered from Kubernetes.
const CATALOG_FILTER: &str = r#"ServiceMeta["external-source"] != "kubernetes""#;
/// The least time between two re-reads of every mirrored service after unexplained
/// catalog changes: 15 s, or 15 ms per service beyond 1,000, so those re-reads never cost
/// Consul more than ~67 reads a second however busy the catalog is.
pub fn rescan_interval(services: usize) -> Duration {
    Duration::from_secs(15).max(Duration::from_millis(15) * u32::try_from(services).unwrap_or(u32::MAX))
}

/// Checks not on a sync node (every instance there came from Kubernetes).
const CHECKS_FILTER: &str = r#"Node not matches "^k8s-sync-""#;

/// What the watch tells the writer.
pub enum Msg {
    /// The mirrored service names (deny list applied), whenever they change.
    Catalog(BTreeSet<String>),
    /// One service's instances, whenever they change (after its name was sent).
    Health(String, Vec<MirrorInstance>),
}

/// The checks of the catalog, in the shape change detection needs (pure).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckView {
    /// Consul service name → (node, service ID, check ID, status), sorted.
    pub services: BTreeMap<String, Vec<(String, String, String, CheckStatus)>>,
    /// Node → (check ID, status) of its node-level checks, sorted.
    pub nodes: BTreeMap<String, Vec<(String, CheckStatus)>>,
}

impl CheckView {
    pub fn from_checks(checks: &[HealthCheck]) -> Self {
        let mut view = CheckView::default();
        for c in checks {
            if c.service_id.is_empty() {
                view.nodes.entry(c.node.clone()).or_default().push((c.check_id.clone(), c.status));
            } else {
                view.services.entry(c.service_name.clone()).or_default().push((
                    c.node.clone(),
                    c.service_id.clone(),
                    c.check_id.clone(),
                    c.status,
                ));
            }
        }
        for v in view.services.values_mut() {
            v.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        }
        for v in view.nodes.values_mut() {
            v.sort_by(|a, b| a.0.cmp(&b.0));
        }
        view
    }
}

/// Services to re-read after the checks moved from `old` to `new`: those whose own checks
/// changed, and those with an instance (per `nodes_of`, service → nodes) on a node whose
/// node-level checks changed.
pub fn changed_services(
    old: &CheckView,
    new: &CheckView,
    nodes_of: &HashMap<String, BTreeSet<String>>,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for name in old.services.keys().chain(new.services.keys()) {
        if old.services.get(name) != new.services.get(name) {
            out.insert(name.clone());
        }
    }
    let nodes: BTreeSet<&String> =
        old.nodes.keys().chain(new.nodes.keys()).filter(|n| old.nodes.get(*n) != new.nodes.get(*n)).collect();
    if !nodes.is_empty() {
        for (service, on) in nodes_of {
            if on.iter().any(|n| nodes.contains(n)) {
                out.insert(service.clone());
            }
        }
    }
    out
}

/// Whether an instance has no check of its own, so that the check view cannot see it
/// come, go or change (pure).
pub fn has_unchecked_instance(entries: &[ServiceEntry]) -> bool {
    entries.iter().any(|e| {
        let id = if e.service.id.is_empty() { &e.service.service } else { &e.service.id };
        !e.checks.iter().any(|c| &c.service_id == id)
    })
}

/// What the last read of one service found.
struct Known {
    unchecked: bool,
    sent: Vec<MirrorInstance>,
}

enum Seen {
    Names(BTreeSet<String>),
    Checks(CheckView),
    /// One service's instances, from its own blocking query (HTTP/2 mode).
    Service(String, Vec<ServiceEntry>),
}

/// One blocking-query loop of this module: `query` runs with the filter and the index to
/// block on, at most one start per [`MIN_QUERY_INTERVAL`]; a failure backs off and starts
/// over from index zero. `answer` gets each answer's value and whether its index moved, and
/// returns what to send, if anything. Returns when the receiver is gone.
async fn blocking_loop<T, Q, Fut>(
    what: &str,
    filter: Option<&str>,
    consistency: Consistency,
    mut query: Q,
    mut answer: impl FnMut(bool, T) -> Option<Seen>,
    tx: mpsc::Sender<Seen>,
) where
    Q: FnMut(QueryOptions) -> Fut,
    Fut: Future<Output = Result<consul::QueryResponse<T>, consul::Error>>,
{
    let mut index = ConsulIndex::ZERO;
    let mut failures = 0u32;
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        next = Instant::now() + MIN_QUERY_INTERVAL;
        let opts = QueryOptions {
            filter: filter.map(str::to_string),
            ..QueryOptions::blocking(index, BLOCKING_WAIT).with_consistency(consistency)
        };
        match query(opts).await {
            Ok(r) => {
                failures = 0;
                let moved = r.index != index;
                index = index.advance(r.index);
                if let Some(seen) = answer(moved, r.value)
                    && tx.send(seen).await.is_err()
                {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "{what} watch failed; retrying");
                index = ConsulIndex::ZERO;
                tokio::time::sleep(crate::context::backoff_delay(failures.min(5), rand::random())).await;
            }
        }
    }
}

/// Watches the catalog's service names, sending the set on every index change.
async fn watch_catalog(consul: consul::Client, cfg: ToKubernetesConfig, tx: mpsc::Sender<Seen>) {
    let consul = &consul;
    let query = move |opts: QueryOptions| async move { consul.catalog_services(&opts).await };
    let answer = |moved: bool, services: BTreeMap<String, Vec<String>>| {
        moved.then(|| Seen::Names(services.into_keys().filter(|n| desired::is_candidate(&cfg, n)).collect()))
    };
    blocking_loop("catalog", Some(CATALOG_FILTER), Consistency::Default, query, answer, tx).await;
}

/// Watches every check outside the sync nodes, sending the view when it changes.
async fn watch_checks(consul: consul::Client, tx: mpsc::Sender<Seen>) {
    let consul = &consul;
    let query = move |opts: QueryOptions| async move { consul.health_state("any", &opts).await };
    let mut last: Option<CheckView> = None;
    let answer = |_moved: bool, checks: Vec<HealthCheck>| {
        let view = CheckView::from_checks(&checks);
        (last.as_ref() != Some(&view)).then(|| {
            last = Some(view.clone());
            Seen::Checks(view)
        })
    };
    blocking_loop("health", Some(CHECKS_FILTER), Consistency::Default, query, answer, tx).await;
}

/// Watches one service's instances with a blocking query of its own (`?stale`: see the
/// module doc), sending them whenever the query's index moves. Its non-blocking queries
/// (the first, and the first after a failure) wait for one of `reads`, so that starting
/// 10,000 watches, or all of them after Consul came back, is not 10,000 reads at once.
async fn watch_service(consul: consul::Client, name: String, reads: Arc<Semaphore>, tx: mpsc::Sender<Seen>) {
    let (consul, service, reads) = (&consul, name.as_str(), &reads);
    let query = move |opts: QueryOptions| async move {
        let _permit = match opts.is_blocking() {
            true => None,
            false => reads.acquire().await.ok(),
        };
        consul.health_service(service, &[], false, &opts).await
    };
    let answer = |moved: bool, entries: Vec<ServiceEntry>| moved.then(|| Seen::Service(name.clone(), entries));
    blocking_loop("service", None, Consistency::Stale, query, answer, tx).await;
}

/// The per-service watches of HTTP/2 mode, spread over connection pools of at most
/// [`SERVICES_PER_CONNECTION`] watches each.
struct ServiceWatches {
    consul: consul::Client,
    /// Each pool's client and how many watches it carries.
    pools: Vec<(consul::Client, usize)>,
    /// Service → (its pool, its task).
    watching: HashMap<String, (usize, tokio::task::AbortHandle)>,
    tasks: JoinSet<()>,
    /// Non-blocking queries in flight across the watches, at most [`PARALLEL_FIRST_READS`].
    reads: Arc<Semaphore>,
}

impl ServiceWatches {
    fn new(consul: consul::Client) -> Self {
        let reads = Arc::new(Semaphore::new(PARALLEL_FIRST_READS));
        Self { consul, pools: Vec::new(), watching: HashMap::new(), tasks: JoinSet::new(), reads }
    }

    /// Watches exactly `names`: starts the new ones on the first pool with room (a new
    /// pool when none has), stops the gone ones.
    fn follow(&mut self, names: &BTreeSet<String>, tx: &mpsc::Sender<Seen>) {
        let gone: Vec<String> = self.watching.keys().filter(|n| !names.contains(*n)).cloned().collect();
        for name in gone {
            if let Some((pool, task)) = self.watching.remove(&name) {
                task.abort();
                self.pools[pool].1 -= 1;
            }
        }
        for name in names {
            if self.watching.contains_key(name) {
                continue;
            }
            let pool = match pick_pool(self.pools.iter().map(|p| p.1)) {
                Some(pool) => pool,
                None => match self.consul.with_own_connections() {
                    Ok(client) => {
                        self.pools.push((client, 0));
                        self.pools.len() - 1
                    }
                    Err(e) => {
                        // Building a client only fails on configuration the first one
                        // was built from; kept as a warning rather than a panic.
                        tracing::warn!(error = %e, "cannot open another connection pool to Consul");
                        return;
                    }
                },
            };
            self.pools[pool].1 += 1;
            let watch = watch_service(self.pools[pool].0.clone(), name.clone(), self.reads.clone(), tx.clone());
            let task = self.tasks.spawn(watch);
            self.watching.insert(name.clone(), (pool, task));
        }
    }

    /// Reaps finished tasks (aborted ones), so the set does not grow.
    fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }
}

/// The first pool (by its watch count) with room for one more watch, if any (pure).
pub fn pick_pool(counts: impl Iterator<Item = usize>) -> Option<usize> {
    counts.enumerate().find(|(_, n)| *n < SERVICES_PER_CONNECTION).map(|(i, _)| i)
}

/// Whether Consul answers `consul` over HTTP/2, asked until it answers.
async fn speaks_http2(consul: &consul::Client) -> bool {
    let mut failures = 0u32;
    loop {
        match consul.http_version().await {
            Ok(version) => return version == reqwest::Version::HTTP_2,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "cannot reach Consul to start the catalog watch; retrying");
                tokio::time::sleep(crate::context::backoff_delay(failures.min(5), rand::random())).await;
            }
        }
    }
}

/// What the sync knows of the mirrored services' instances, and what it sent.
#[derive(Default)]
struct State {
    known: HashMap<String, Known>,
    nodes_of: HashMap<String, BTreeSet<String>>,
}

impl State {
    /// Takes a read (or a watch's answer) of `name`; returns what to send, if anything.
    fn take(&mut self, names: Option<&BTreeSet<String>>, name: String, entries: &[ServiceEntry]) -> Option<Msg> {
        if !names.is_some_and(|n| n.contains(&name)) {
            return None;
        }
        let instances = desired::mirrored_instances(entries);
        let nodes: BTreeSet<String> = entries.iter().map(|e| e.node.node.clone()).collect();
        let unchanged = self.known.get(&name).is_some_and(|k| k.sent == instances);
        self.nodes_of.insert(name.clone(), nodes);
        let unchecked = has_unchecked_instance(entries);
        self.known.insert(name.clone(), Known { unchecked, sent: instances.clone() });
        (!unchanged).then_some(Msg::Health(name, instances))
    }
}

/// Watches Consul for one sync until `tx` is closed (the task is aborted with its
/// writer), sending service names and then each service's instances as they change.
pub async fn run(consul: consul::Client, cfg: ToKubernetesConfig, tx: mpsc::Sender<Msg>) {
    let per_service = speaks_http2(&consul).await;
    if per_service {
        tracing::info!("Consul answers over HTTP/2: one blocking query per mirrored service");
    } else {
        tracing::info!("Consul answers over HTTP/1.1: two blocking queries for the whole catalog");
    }
    let (seen_tx, mut seen) = mpsc::channel::<Seen>(16);
    let mut watches: JoinSet<()> = JoinSet::new();
    let mut services = ServiceWatches::new(consul.clone());
    watches.spawn(watch_catalog(consul.clone(), cfg.clone(), seen_tx.clone()));
    // Per-service watches see every change themselves: no check view to wait for.
    let mut view: Option<CheckView> = per_service.then(CheckView::default);
    if !per_service {
        watches.spawn(watch_checks(consul.clone(), seen_tx.clone()));
    }
    let mut names: Option<BTreeSet<String>> = None;
    let mut state = State::default();
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut reading: HashSet<String> = HashSet::new();
    let mut reads: JoinSet<(String, Result<Vec<ServiceEntry>, consul::Error>)> = JoinSet::new();
    let mut failures = 0u32;
    let mut retry_due: Option<Instant> = None;
    let mut refresh_due = Instant::now() + cfg.anti_entropy;
    // When every service was last read (the first reads count), and when the next such
    // rescan is due because the catalog changed in a way the watches cannot attribute
    // (HTTP/1.1 mode only).
    let mut last_rescan = Instant::now();
    let mut rescan_due: Option<Instant> = None;
    loop {
        tokio::select! {
            s = seen.recv() => match s {
                Some(Seen::Names(new)) => {
                    let changed = names.as_ref() != Some(&new);
                    if !per_service && !changed && rescan_due.is_none() {
                        // The catalog's index moved with the same names: an address,
                        // port or meta changed somewhere, or a Kubernetes instance was
                        // written (both bump it; the watches cannot tell which).
                        rescan_due = Some(last_rescan + rescan_interval(new.len()));
                    }
                    state.known.retain(|n, _| new.contains(n));
                    state.nodes_of.retain(|n, _| new.contains(n));
                    dirty.retain(|n| new.contains(n));
                    let old = names.replace(new.clone()).unwrap_or_default();
                    if per_service {
                        // Each new service's first answer is its first read.
                        services.reap();
                        services.follow(&new, &seen_tx);
                    } else {
                        dirty.extend(new.difference(&old).cloned());
                        dirty.extend(state.known.iter().filter(|(_, k)| k.unchecked).map(|(n, _)| n.clone()));
                    }
                    if changed && tx.send(Msg::Catalog(new)).await.is_err() {
                        break;
                    }
                }
                Some(Seen::Checks(new)) => {
                    if let (Some(old), Some(names)) = (&view, &names) {
                        dirty.extend(changed_services(old, &new, &state.nodes_of).into_iter().filter(|n| names.contains(n)));
                    }
                    view = Some(new);
                }
                Some(Seen::Service(name, entries)) => {
                    if let Some(msg) = state.take(names.as_ref(), name, &entries)
                        && tx.send(msg).await.is_err()
                    {
                        break;
                    }
                }
                None => break,
            },
            Some(done) = reads.join_next(), if !reads.is_empty() => {
                let Ok((name, result)) = done else { continue };
                reading.remove(&name);
                match result {
                    Ok(entries) => {
                        failures = 0;
                        if let Some(msg) = state.take(names.as_ref(), name, &entries)
                            && tx.send(msg).await.is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, service = %name, "cannot read Consul service; retrying");
                        dirty.insert(name);
                        retry_due.get_or_insert(
                            Instant::now() + crate::context::backoff_delay(failures.min(5), rand::random()),
                        );
                    }
                }
            },
            _ = tokio::time::sleep_until(refresh_due) => {
                refresh_due = Instant::now() + cfg.anti_entropy;
                last_rescan = Instant::now();
                dirty.extend(names.iter().flatten().cloned());
            },
            _ = tokio::time::sleep_until(rescan_due.unwrap_or_else(Instant::now)), if rescan_due.is_some() => {
                rescan_due = None;
                last_rescan = Instant::now();
                dirty.extend(names.iter().flatten().cloned());
            },
            _ = tokio::time::sleep_until(retry_due.unwrap_or_else(Instant::now)), if retry_due.is_some() => {
                retry_due = None;
            },
        }
        // Reads start once both watches answered, so no change between them is missed.
        if retry_due.is_some() || view.is_none() || names.is_none() {
            continue;
        }
        let next: Vec<String> = dirty.iter().filter(|n| !reading.contains(*n)).cloned().collect();
        for name in next {
            if reads.len() >= PARALLEL_READS {
                break;
            }
            dirty.remove(&name);
            reading.insert(name.clone());
            let c = consul.clone();
            reads.spawn(async move {
                let r = c.health_service(&name, &[], false, &QueryOptions::default()).await.map(|r| r.value);
                (name, r)
            });
        }
    }
    watches.abort_all();
    services.tasks.abort_all();
    reads.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(node: &str, service: &str, id: &str, status: CheckStatus) -> HealthCheck {
        HealthCheck {
            node: node.into(),
            check_id: format!("{id}-check"),
            status,
            service_id: id.into(),
            service_name: service.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_services_whose_checks_changed_are_re_read() {
        let old = CheckView::from_checks(&[
            check("vm1", "billing", "b1", CheckStatus::Passing),
            check("vm2", "billing", "b2", CheckStatus::Passing),
            check("vm1", "orders", "o1", CheckStatus::Passing),
            check("vm3", "gone", "g1", CheckStatus::Passing),
        ]);
        // Same checks in another order: nothing to do.
        let same = CheckView::from_checks(&[
            check("vm1", "orders", "o1", CheckStatus::Passing),
            check("vm3", "gone", "g1", CheckStatus::Passing),
            check("vm2", "billing", "b2", CheckStatus::Passing),
            check("vm1", "billing", "b1", CheckStatus::Passing),
        ]);
        assert!(changed_services(&old, &same, &HashMap::new()).is_empty());
        // A flip, an instance added with its check, a service's last check gone.
        let new = CheckView::from_checks(&[
            check("vm1", "billing", "b1", CheckStatus::Critical),
            check("vm2", "billing", "b2", CheckStatus::Passing),
            check("vm1", "orders", "o1", CheckStatus::Passing),
            check("vm4", "cache", "c1", CheckStatus::Passing),
        ]);
        let got = changed_services(&old, &new, &HashMap::new());
        assert_eq!(got, BTreeSet::from(["billing".to_string(), "cache".to_string(), "gone".to_string()]));
    }

    #[test]
    fn unexplained_catalog_changes_are_rescanned_at_a_bounded_rate() {
        assert_eq!(rescan_interval(0), Duration::from_secs(15));
        assert_eq!(rescan_interval(1_000), Duration::from_secs(15));
        assert_eq!(rescan_interval(10_000), Duration::from_secs(150));
        for n in [1usize, 500, 1_000, 5_000, 100_000] {
            let per_second = n as f64 / rescan_interval(n).as_secs_f64();
            assert!(per_second <= 67.0, "{n} services: {per_second} reads/s");
        }
    }

    #[test]
    fn per_service_watches_fill_a_pool_before_opening_the_next() {
        assert_eq!(pick_pool(std::iter::empty()), None, "no pool yet: open one");
        assert_eq!(pick_pool([0].into_iter()), Some(0));
        assert_eq!(pick_pool([SERVICES_PER_CONNECTION - 1].into_iter()), Some(0));
        assert_eq!(pick_pool([SERVICES_PER_CONNECTION].into_iter()), None, "full: open another");
        // A watch stopped in the first pool frees room there, before the second.
        assert_eq!(pick_pool([SERVICES_PER_CONNECTION - 1, 3].into_iter()), Some(0));
        assert_eq!(pick_pool([SERVICES_PER_CONNECTION, 3].into_iter()), Some(1));
        // Below Go's default of 250 concurrent HTTP/2 streams per connection.
        const { assert!(SERVICES_PER_CONNECTION < 250) };
    }

    #[test]
    fn a_node_check_change_re_reads_the_services_on_that_node() {
        let base =
            [check("vm1", "billing", "b1", CheckStatus::Passing), check("vm2", "orders", "o1", CheckStatus::Passing)];
        let old = CheckView::from_checks(&base);
        let mut with_node_check = base.to_vec();
        with_node_check.push(HealthCheck {
            node: "vm2".into(),
            check_id: "serfHealth".into(),
            status: CheckStatus::Critical,
            ..Default::default()
        });
        let new = CheckView::from_checks(&with_node_check);
        let nodes_of: HashMap<String, BTreeSet<String>> = [
            ("billing".to_string(), BTreeSet::from(["vm1".to_string()])),
            ("orders".to_string(), BTreeSet::from(["vm2".to_string(), "vm3".to_string()])),
        ]
        .into();
        assert_eq!(changed_services(&old, &new, &nodes_of), BTreeSet::from(["orders".to_string()]));
    }

    #[test]
    fn instances_without_a_check_of_their_own_are_noticed() {
        let entry = |id: &str, checks: serde_json::Value| -> ServiceEntry {
            serde_json::from_value(json!({
                "Node": {"Node": "vm1", "Address": "10.0.0.1"},
                "Service": {"ID": id, "Service": "billing", "Port": 80},
                "Checks": checks
            }))
            .expect("entry")
        };
        let checked = entry("b1", json!([{"CheckID": "c", "Status": "passing", "ServiceID": "b1"}]));
        let node_check_only = entry("b2", json!([{"CheckID": "serfHealth", "Status": "passing"}]));
        let none = entry("b3", json!(null));
        assert!(!has_unchecked_instance(std::slice::from_ref(&checked)));
        assert!(has_unchecked_instance(&[checked.clone(), node_check_only]));
        assert!(has_unchecked_instance(&[checked, none]));
    }
}
