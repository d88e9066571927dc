//! Scheduled snapshots of a DiscoveryCluster (`spec.snapshots {every, retain, location}`):
//! creates one `Save` ConsulSnapshot per time slot and prunes the oldest beyond `retain`,
//! deleting each pruned object's file (and sidecar) before the object itself.
//!
//! Slots are aligned to the Unix epoch (`now - now % every`) and name the object, so a
//! repeated reconcile (or two controller replicas in a handover) cannot create two
//! snapshots for one slot. A save still running blocks the next one: slow stores skip
//! slots rather than pile up saves. Retention counts successful saves only; failed ones
//! are kept while they are among the newest `retain` objects, so a current failure stays
//! visible. Removing `spec.snapshots` stops the schedule and prunes nothing. The objects
//! are owned by the cluster (garbage-collected with it); their files are not deleted then.
//!
//! Files go to `<location>/<namespace>/<cluster>-<uid>/<cluster>-<slot>.snap`
//! ([`scoped_dir`]), and pruning deletes files only inside that folder, of objects this
//! cluster owns: retention never deletes another cluster's files.
use super::{drive, object_key, requeue_after_failure, watched_api};
use crate::context::Context;
use crate::context::FIELD_MANAGER;
use crate::resources::{
    ConsulSnapshot, ConsulSnapshotSpec, DiscoveryCluster, SnapshotAction, find_condition, parse_duration, types,
};
use crate::snapshot::{Location, SnapshotFile};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const CONTROLLER: &str = "snapshotschedule";
/// Label naming the DiscoveryCluster whose schedule made a ConsulSnapshot.
pub const SCHEDULE_LABEL: &str = "concord.io/snapshot-schedule";
/// Label holding the slot's start (Unix seconds), the order of scheduled snapshots.
pub const SLOT_LABEL: &str = "concord.io/snapshot-slot";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read or write ConsulSnapshots: {0}")]
    Kube(#[source] kube::Error),
}

impl Error {
    fn category(&self) -> &'static str {
        "kube"
    }
}

/// State of one scheduled snapshot, as far as retention cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Succeeded,
    Failed,
}

/// One existing scheduled snapshot (plain data for [`plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    pub name: String,
    pub slot: i64,
    pub state: State,
}

/// What a reconcile should do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Start (Unix seconds) of the slot to create a snapshot for.
    pub create: Option<i64>,
    /// Objects to prune, oldest first.
    pub prune: Vec<String>,
}

/// The schedule's decision from the existing objects and the time (pure).
pub fn plan(existing: &[Existing], now: i64, every: i64, retain: usize) -> Plan {
    let every = every.max(1);
    let slot = now - now.rem_euclid(every);
    let mut sorted: Vec<&Existing> = existing.iter().collect();
    sorted.sort_by(|a, b| b.slot.cmp(&a.slot).then_with(|| b.name.cmp(&a.name)));
    let busy = sorted.iter().any(|e| e.state == State::Pending);
    let has_slot = sorted.iter().any(|e| e.slot >= slot);
    let create = (!busy && !has_slot).then_some(slot);
    let mut kept_ok = 0usize;
    let mut prune = Vec::new();
    for (position, e) in sorted.iter().enumerate() {
        let keep = match e.state {
            State::Pending => true,
            State::Succeeded => {
                kept_ok += 1;
                kept_ok <= retain
            }
            State::Failed => position < retain,
        };
        if !keep {
            prune.push(e.name.clone());
        }
    }
    prune.reverse();
    Plan { create, prune }
}

/// Time until the next slot starts (at least one second).
pub fn until_next_slot(now_millis: i64, every: i64) -> Duration {
    let every_ms = every.max(1) * 1000;
    let left = every_ms - now_millis.rem_euclid(every_ms);
    Duration::from_millis(u64::try_from(left.max(1000)).unwrap_or(1000))
}

/// Name of the snapshot of `cluster` for the slot starting at `slot` (Unix seconds).
pub fn snapshot_name(cluster: &str, slot: i64) -> String {
    let stamp = k8s_openapi::jiff::Timestamp::from_second(slot)
        .map(|t| t.strftime("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_else(|_| slot.to_string());
    format!("{cluster}-{stamp}")
}

fn state_of(snap: &ConsulSnapshot) -> State {
    let conditions = snap.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match find_condition(conditions, types::COMPLETE) {
        Some(c) if c.status == "True" => State::Succeeded,
        Some(_)
            if super::snapshot::phase(snap.spec.action, snap.status.as_ref().unwrap_or(&Default::default()))
                == super::snapshot::Phase::Finished =>
        {
            State::Failed
        }
        _ => State::Pending,
    }
}

fn existing(snap: &ConsulSnapshot) -> Option<Existing> {
    let slot = snap.labels().get(SLOT_LABEL)?.parse().ok()?;
    Some(Existing { name: snap.name_any(), slot, state: state_of(snap) })
}

/// This cluster's own folder inside the schedule's `location`:
/// `<location>/<namespace>/<cluster>-<uid>/`. Two clusters of one name in two
/// namespaces, or a cluster deleted and made again, never share files.
pub fn scoped_dir(dc: &DiscoveryCluster, dir: &Location) -> Location {
    let uid = dc.uid().unwrap_or_default();
    dir.child(&dc.namespace().unwrap_or_default()).child(&format!("{}-{uid}", dc.name_any()))
}

fn new_snapshot(dc: &DiscoveryCluster, dir: &Location, slot: i64) -> ConsulSnapshot {
    let name = snapshot_name(&dc.name_any(), slot);
    let location = scoped_dir(dc, dir).child(&format!("{name}.snap"));
    let mut snap = ConsulSnapshot::new(
        &name,
        ConsulSnapshotSpec {
            cluster_ref: Some(dc.name_any()),
            action: SnapshotAction::Save,
            location: location.to_string(),
            sha256: None,
        },
    );
    snap.metadata.namespace = dc.namespace();
    snap.metadata.labels = Some(BTreeMap::from([
        (SCHEDULE_LABEL.to_string(), dc.name_any()),
        (SLOT_LABEL.to_string(), slot.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string()),
    ]));
    snap.metadata.owner_references = dc.controller_owner_ref(&()).map(|o| vec![o]);
    snap
}

async fn reconcile(dc: Arc<DiscoveryCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(schedule) = dc.spec.snapshots.as_ref() else {
        return Ok(Action::await_change());
    };
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let now = k8s_openapi::jiff::Timestamp::now();
    let every = match parse_duration(&schedule.every) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1),
        Err(e) => {
            ctx.event(&dc.object_ref(&()), true, "InvalidSchedule", "Schedule", e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let dir = match Location::parse_dir(&schedule.location) {
        Ok(d) => d,
        Err(e) => {
            ctx.event(&dc.object_ref(&()), true, "InvalidLocation", "Schedule", e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let retain = usize::try_from(schedule.retain).unwrap_or(1).max(1);
    let ns = dc.namespace().unwrap_or_default();
    let api: Api<ConsulSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{SCHEDULE_LABEL}={}", dc.name_any());
    // Only objects this cluster's schedule made (owned by it): a look-alike label on
    // someone's own ConsulSnapshot does not put its file up for pruning.
    let uid = dc.uid().unwrap_or_default();
    let objects: Vec<ConsulSnapshot> = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Kube)?
        .items
        .into_iter()
        .filter(|o| o.owner_references().iter().any(|r| r.uid == uid))
        .collect();
    let own_dir = scoped_dir(&dc, &dir);
    let found: Vec<Existing> = objects.iter().filter_map(existing).collect();
    let plan = plan(&found, now.as_second(), every, retain);

    if let Some(slot) = plan.create {
        match api.create(&PostParams::default(), &new_snapshot(&dc, &dir, slot)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    let mut retry_soon = false;
    for name in &plan.prune {
        let Some(obj) = objects.iter().find(|o| &o.name_any() == name) else { continue };
        // The file first: an object whose file could not be deleted stays, to try again.
        // Never a file outside this cluster's own folder (another cluster's, or one
        // written before locations were scoped): the object goes, the file stays.
        let deleted = match Location::parse_file(&obj.spec.location) {
            Ok(loc) if !loc.is_within(&own_dir) => {
                tracing::info!(snapshot = %name, location = %loc, "pruning keeps a file outside the cluster's own folder");
                Ok(())
            }
            Ok(loc) => match SnapshotFile::open(&loc, &ctx.args.snapshot_store) {
                Ok(file) => file.delete().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(_) => Ok(()), // nothing was ever written to an invalid location
        };
        if let Err(msg) = deleted {
            ctx.event(&dc.object_ref(&()), true, "PruneFailed", "Prune", format!("snapshot {name}: {msg}")).await;
            retry_soon = true;
            continue;
        }
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(cluster = %dc.name_any(), snapshot = %name, "pruned scheduled snapshot"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    let next = until_next_slot(now.as_millisecond(), every);
    if retry_soon {
        return Ok(Action::requeue(next.min(ctx.backoff(&format!("{CONTROLLER}:{}", object_key(dc.as_ref()))))));
    }
    ctx.reset_backoff(&format!("{CONTROLLER}:{}", object_key(dc.as_ref())));
    Ok(Action::requeue(next))
}

fn error_policy(dc: Arc<DiscoveryCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %dc.name_any(), error = %error, "snapshot schedule failed");
    requeue_after_failure(&ctx, CONTROLLER, dc.as_ref(), error.category())
}

/// Runs the schedule controller until `stop` resolves. It watches DiscoveryClusters
/// (beside their own controller) and the ConsulSnapshots they own, so a finished save
/// triggers pruning at once.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(watched_api::<DiscoveryCluster>(&ctx), watcher::Config::default())
        .owns(watched_api::<ConsulSnapshot>(&ctx), watcher::Config::default().labels(SCHEDULE_LABEL));
    drive(ctx, CONTROLLER, controller, reconcile, error_policy, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, slot: i64, state: State) -> Existing {
        Existing { name: name.into(), slot, state }
    }

    #[test]
    fn creates_one_snapshot_per_slot() {
        assert_eq!(plan(&[], 3605, 60, 3).create, Some(3600));
        assert_eq!(plan(&[e("a", 3600, State::Succeeded)], 3659, 60, 3).create, None);
        assert_eq!(plan(&[e("a", 3600, State::Succeeded)], 3660, 60, 3).create, Some(3660));
    }

    #[test]
    fn a_running_save_delays_the_next_one() {
        assert_eq!(plan(&[e("a", 3600, State::Pending)], 9000, 60, 3).create, None);
    }

    #[test]
    fn keeps_exactly_retain_successful_snapshots_and_prunes_oldest_first() {
        let existing: Vec<Existing> = (0..5).map(|i| e(&format!("s{i}"), i * 10, State::Succeeded)).collect();
        let p = plan(&existing, 45, 10, 2);
        assert_eq!(p.prune, vec!["s0", "s1", "s2"]);
    }

    #[test]
    fn pending_snapshots_are_never_pruned_and_not_counted() {
        let existing = vec![e("s0", 0, State::Succeeded), e("s1", 10, State::Succeeded), e("s2", 20, State::Pending)];
        assert_eq!(plan(&existing, 25, 10, 2).prune, Vec::<String>::new());
        assert_eq!(plan(&existing, 25, 10, 1).prune, vec!["s0"]);
    }

    #[test]
    fn recent_failures_stay_visible_old_ones_go() {
        let existing = vec![
            e("s0", 0, State::Failed),
            e("s1", 10, State::Succeeded),
            e("s2", 20, State::Succeeded),
            e("s3", 30, State::Failed),
        ];
        assert_eq!(plan(&existing, 35, 10, 2).prune, vec!["s0"]);
        assert_eq!(plan(&existing, 35, 10, 1).prune, vec!["s0", "s1"]);
    }

    #[test]
    fn next_slot_is_at_least_a_second_away() {
        assert_eq!(until_next_slot(3_600_000, 60), Duration::from_secs(60));
        assert_eq!(until_next_slot(3_659_500, 60), Duration::from_secs(1));
        assert_eq!(until_next_slot(3_630_000, 60), Duration::from_secs(30));
    }

    #[test]
    fn names_are_the_slot_time() {
        assert_eq!(snapshot_name("consul", 0), "consul-19700101-000000");
    }
}
