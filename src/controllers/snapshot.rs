//! ConsulSnapshot controller: one Save (stream `/v1/snapshot` into a file or object,
//! recording size and sha256 plus a `<file>.sha256` sidecar) or one Restore (verify the
//! checksum in a full streamed pass first, then stream the same bytes to Consul).
//!
//! Objects are one-shot: once `Complete` is True, or False for a reason that retrying
//! cannot fix (a missing or corrupt file, a refused restore), the object is never
//! redone. While an operation runs, `Complete=False, reason=Running` is recorded; a
//! restore found in that state after a controller restart is reported `Interrupted`
//! rather than repeated, since replacing Consul's state twice on a guess is worse than
//! asking a person. Deleting a ConsulSnapshot object never deletes its file: only a
//! schedule's pruning does (`snapshot_schedule`).
//!
//! Scope: a namespace saves and restores only under `<root>/<namespace>/<folder>/<file>`
//! ([`location_granted`]), so no namespace overwrites or restores another's snapshots;
//! the DiscoveryCluster owner may allow restores from more (`spec.tenancy.restoreFrom`).
use super::{apply_status, drive, object_key, requeue_after_failure, watched_api};
use crate::cluster::ClusterError;
use crate::consul::{self, QueryOptions};
use crate::context::Context;
use crate::resources::{
    ConditionUpdate, ConsulSnapshot, ConsulSnapshotStatus, SnapshotAction, find_condition, set_condition, types,
};
use crate::snapshot::{Location, SnapshotFile, StoreError};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Resource, ResourceExt};
use std::sync::Arc;

pub(crate) const CONTROLLER: &str = "consulsnapshot";

/// `Complete=False` reasons after which the object is finished for good.
const TERMINAL_REASONS: &[&str] = &[
    "InvalidLocation",
    "LocationNotGranted",
    "SnapshotNotFound",
    "ChecksumMismatch",
    "ChecksumUnknown",
    "RestoreFailed",
    "Interrupted",
];
const RUNNING: &str = "Running";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write status: {0}")]
    Status(#[source] kube::Error),
}

impl Error {
    fn category(&self) -> &'static str {
        match self {
            Error::Status(_) => "kube",
        }
    }
}

/// Why one operation did not complete.
#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("Consul is not reachable: {0}")]
    ConsulUnreachable(#[source] consul::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Consul refused the restore: {0}")]
    Restore(#[source] consul::Error),
    #[error("{0}")]
    NotGranted(String),
}

impl OpError {
    fn reason(&self) -> &'static str {
        match self {
            OpError::Cluster(_) => "ClusterUnavailable",
            OpError::ConsulUnreachable(_) => "ConsulUnreachable",
            OpError::Store(e) => e.reason(),
            OpError::Restore(_) => "RestoreFailed",
            OpError::NotGranted(_) => "LocationNotGranted",
        }
    }

    fn category(&self) -> &'static str {
        match self {
            OpError::Cluster(e) => e.category(),
            OpError::ConsulUnreachable(e) | OpError::Restore(e) => e.category(),
            OpError::Store(e) => e.category(),
            OpError::NotGranted(_) => "tenancy",
        }
    }

    /// Retried with backoff; everything else waits for a person (a new object).
    fn is_transient(&self) -> bool {
        match self {
            OpError::Cluster(_) | OpError::ConsulUnreachable(_) => true,
            OpError::Store(e) => e.is_transient(),
            OpError::Restore(_) | OpError::NotGranted(_) => false,
        }
    }
}

/// What a finished operation produced.
struct Done {
    size: u64,
    sha256: String,
}

/// Where an object stands before this reconcile does anything (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing more to do, ever.
    Finished,
    /// A restore that a previous controller process started and never reported.
    InterruptedRestore,
    /// Do (or retry) the operation.
    Run,
}

pub fn phase(action: SnapshotAction, status: &ConsulSnapshotStatus) -> Phase {
    match find_condition(&status.conditions, types::COMPLETE) {
        Some(c) if c.status == "True" => Phase::Finished,
        Some(c) if TERMINAL_REASONS.contains(&c.reason.as_str()) => Phase::Finished,
        Some(c) if c.reason == RUNNING && action == SnapshotAction::Restore => Phase::InterruptedRestore,
        _ => Phase::Run,
    }
}

/// Whether a namespace may use a snapshot location (pure): its own,
/// `<root>/<namespace>/<folder>/<file>`, for Save and Restore; and for a Restore also
/// what the DiscoveryCluster's `spec.tenancy.restoreFrom` lists.
pub fn location_granted(
    action: SnapshotAction,
    namespace: &str,
    location: &Location,
    raw: &str,
    grants: &crate::cluster::Grants,
) -> Result<(), String> {
    if location.namespace_segment().as_deref() == Some(namespace) {
        return Ok(());
    }
    if action == SnapshotAction::Restore && grants.restore_from(raw) {
        return Ok(());
    }
    Err(format!(
        "{raw} is not this namespace's: snapshots of namespace {namespace} live at <root>/{namespace}/<folder>/<file>{}",
        if action == SnapshotAction::Restore {
            " (or where the DiscoveryCluster's spec.tenancy.restoreFrom allows)"
        } else {
            ""
        }
    ))
}

async fn save(ctx: &Context, snap: &ConsulSnapshot, location: &Location) -> Result<Done, OpError> {
    let ns = snap.namespace().unwrap_or_default();
    let cluster = ctx.clusters.resolve_acl_admin(&ctx.client, &ns, snap.spec.cluster_ref.as_deref()).await?;
    location_granted(SnapshotAction::Save, &ns, location, &snap.spec.location, &cluster.grants)
        .map_err(OpError::NotGranted)?;
    let file = SnapshotFile::open(location, &ctx.args.snapshot_store)?;
    let resp = cluster.consul.snapshot_save(&QueryOptions::default()).await.map_err(OpError::ConsulUnreachable)?;
    let written = file.save(resp.value).await?;
    Ok(Done { size: written.size, sha256: written.sha256 })
}

async fn restore(ctx: &Context, snap: &ConsulSnapshot, location: &Location) -> Result<Done, OpError> {
    let ns = snap.namespace().unwrap_or_default();
    let cluster = ctx.clusters.resolve_acl_admin(&ctx.client, &ns, snap.spec.cluster_ref.as_deref()).await?;
    location_granted(SnapshotAction::Restore, &ns, location, &snap.spec.location, &cluster.grants)
        .map_err(OpError::NotGranted)?;
    // Reachability first: a failure here sent nothing, so it is safe to retry.
    cluster.consul.status_leader().await.map_err(OpError::ConsulUnreachable)?;
    let file = SnapshotFile::open(location, &ctx.args.snapshot_store)?;
    let verified = file.verify(snap.spec.sha256.as_deref()).await?;
    let body = file.read_verified(&verified).await?;
    cluster.consul.snapshot_restore(body).await.map_err(OpError::Restore)?;
    Ok(Done { size: verified.size, sha256: verified.sha256 })
}

async fn reconcile(snap: Arc<ConsulSnapshot>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let previous = snap.status.clone().unwrap_or_default();
    let generation = snap.meta().generation;
    let action = snap.spec.action;
    let verb = match action {
        SnapshotAction::Save => "Save",
        SnapshotAction::Restore => "Restore",
    };
    let write = |status: ConsulSnapshotStatus, update: ConditionUpdate| {
        let mut status = status;
        status.observed_generation = generation;
        status.conditions = set_condition(&status.conditions, update, generation, k8s_openapi::jiff::Timestamp::now());
        let ctx = ctx.clone();
        let snap = snap.clone();
        async move { apply_status(&ctx, snap.as_ref(), &status).await.map_err(Error::Status).map(|_| status) }
    };
    match phase(action, &previous) {
        Phase::Finished => return Ok(Action::await_change()),
        Phase::InterruptedRestore => {
            let msg = "a restore was started by a controller that stopped before reporting its outcome; check \
                       Consul's data and create a new ConsulSnapshot to restore again";
            write(previous, ConditionUpdate::new(types::COMPLETE, false, "Interrupted", msg)).await?;
            ctx.event(&snap.object_ref(&()), true, "Interrupted", verb, msg.to_string()).await;
            return Ok(Action::await_change());
        }
        Phase::Run => {}
    }
    let location = match Location::parse_file(&snap.spec.location) {
        Ok(l) => l,
        Err(e) => {
            write(previous, ConditionUpdate::new(types::COMPLETE, false, "InvalidLocation", e.to_string())).await?;
            ctx.event(&snap.object_ref(&()), true, "InvalidLocation", verb, e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let running = format!("{verb} {location} in progress");
    let status = write(previous.clone(), ConditionUpdate::new(types::COMPLETE, false, RUNNING, running)).await?;
    let outcome = match action {
        SnapshotAction::Save => save(&ctx, &snap, &location).await,
        SnapshotAction::Restore => restore(&ctx, &snap, &location).await,
    };
    let key = format!("{CONTROLLER}:{}", object_key(snap.as_ref()));
    match outcome {
        Ok(done) => {
            let mut status = status;
            status.size = i64::try_from(done.size).ok();
            status.sha256 = Some(done.sha256.clone());
            status.completion_time = Some(k8s_openapi::jiff::Timestamp::now().to_string());
            let (reason, msg) = match action {
                SnapshotAction::Save => ("Saved", format!("saved {} bytes to {location}", done.size)),
                SnapshotAction::Restore => ("Restored", format!("restored {} bytes from {location}", done.size)),
            };
            tracing::info!(snapshot = %snap.name_any(), %location, size = done.size, sha256 = %done.sha256, "{reason}");
            write(status, ConditionUpdate::new(types::COMPLETE, true, reason, msg.clone())).await?;
            ctx.event(
                &snap.object_ref(&()),
                false,
                if reason == "Saved" { "SnapshotSaved" } else { "SnapshotRestored" },
                verb,
                msg,
            )
            .await;
            ctx.reset_backoff(&key);
            Ok(Action::await_change())
        }
        Err(e) => {
            let reason = e.reason();
            let reported = find_condition(&previous.conditions, types::COMPLETE).is_some_and(|c| c.reason == reason);
            tracing::warn!(snapshot = %snap.name_any(), %location, error = %e, "{verb} failed");
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            write(status, ConditionUpdate::new(types::COMPLETE, false, reason, e.to_string())).await?;
            if !reported {
                ctx.event(&snap.object_ref(&()), true, reason, verb, e.to_string()).await;
            }
            if e.is_transient() { Ok(Action::requeue(ctx.backoff(&key))) } else { Ok(Action::await_change()) }
        }
    }
}

fn error_policy(snap: Arc<ConsulSnapshot>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(snapshot = %snap.name_any(), error = %error, "reconcile failed");
    requeue_after_failure(&ctx, CONTROLLER, snap.as_ref(), error.category())
}

/// Runs the controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    // Triggered by spec changes only (a new generation), never by this controller's own
    // status writes: each attempt writes `Running` and then its outcome, and with those
    // as triggers a failing Save (e.g. refused before the ACL bootstrap) ran again at
    // once, many times a second, instead of waiting out the backoff it asked for.
    let (reader, writer) = reflector::store();
    let trigger = watcher(watched_api::<ConsulSnapshot>(&ctx), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let controller = Controller::for_stream(trigger, reader);
    drive(ctx, CONTROLLER, controller, reconcile, error_policy, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_uses_only_its_own_snapshot_locations() {
        use crate::cluster::Grants;
        let loc = |s: &str| Location::parse_file(s).expect("location");
        let none = Grants::default();
        let own = "s3://bkt/team-a/consul-1/x.snap";
        assert!(location_granted(SnapshotAction::Save, "team-a", &loc(own), own, &none).is_ok());
        assert!(location_granted(SnapshotAction::Restore, "team-a", &loc(own), own, &none).is_ok());
        let theirs = "s3://bkt/team-b/consul-1/x.snap";
        assert!(location_granted(SnapshotAction::Restore, "team-a", &loc(theirs), theirs, &none).is_err());
        assert!(location_granted(SnapshotAction::Save, "team-a", &loc(theirs), theirs, &none).is_err());
        let nested = "/snap/team-b/consul-1/team-a/x.snap";
        assert!(location_granted(SnapshotAction::Save, "team-a", &loc(nested), nested, &none).is_err());
        let flat = "/snap/x.snap";
        assert!(location_granted(SnapshotAction::Save, "snap", &loc(flat), flat, &none).is_err());
        let legacy = Grants::declared(crate::resources::TenancySpec {
            restore_from: vec!["s3://bkt/legacy/".into()],
            ..Default::default()
        });
        let old = "s3://bkt/legacy/consul-x.snap";
        assert!(location_granted(SnapshotAction::Restore, "team-a", &loc(old), old, &legacy).is_ok());
        assert!(location_granted(SnapshotAction::Save, "team-a", &loc(old), old, &legacy).is_err(), "saves never");
    }

    fn with(reason: &str, ok: bool) -> ConsulSnapshotStatus {
        let now = k8s_openapi::jiff::Timestamp::from_second(1).expect("time");
        let reason: &'static str = Box::leak(reason.to_string().into_boxed_str());
        ConsulSnapshotStatus {
            conditions: set_condition(&[], ConditionUpdate::new(types::COMPLETE, ok, reason, ""), Some(1), now),
            ..Default::default()
        }
    }

    #[test]
    fn finished_objects_are_never_redone() {
        assert_eq!(phase(SnapshotAction::Save, &with("Saved", true)), Phase::Finished);
        assert_eq!(phase(SnapshotAction::Restore, &with("Restored", true)), Phase::Finished);
        for reason in TERMINAL_REASONS {
            assert_eq!(phase(SnapshotAction::Restore, &with(reason, false)), Phase::Finished, "{reason}");
        }
    }

    #[test]
    fn transient_failures_and_new_objects_run() {
        assert_eq!(phase(SnapshotAction::Save, &ConsulSnapshotStatus::default()), Phase::Run);
        assert_eq!(phase(SnapshotAction::Save, &with("StoreUnreachable", false)), Phase::Run);
        assert_eq!(phase(SnapshotAction::Restore, &with("ConsulUnreachable", false)), Phase::Run);
    }

    #[test]
    fn a_save_left_running_is_redone_but_a_restore_is_not() {
        assert_eq!(phase(SnapshotAction::Save, &with(RUNNING, false)), Phase::Run);
        assert_eq!(phase(SnapshotAction::Restore, &with(RUNNING, false)), Phase::InterruptedRestore);
    }
}
