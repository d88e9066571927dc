//! Leader election through a `coordination.k8s.io/v1` Lease, so that of 2+ replicas only
//! one runs the controllers (and so writes to Kubernetes and Consul); the others are hot
//! standbys: they serve `/healthz`, `/readyz` (ready) and `/metrics`, and take over when
//! the leader stops renewing.
//!
//! The protocol is client-go's: every write is a replace with the Lease's resourceVersion
//! (optimistic concurrency, so two candidates can never both win the same round); a
//! standby measures expiry on its own clock from when it last saw the Lease change, not
//! from the holder's `renewTime`, so clock skew between nodes does not matter; a leader
//! that cannot renew within the renew deadline (2/3 of the Lease) stops its controllers
//! before any standby may take over. A leader that loses the Lease exits the process
//! with an error (Kubernetes restarts it as a standby); one that is shut down releases
//! the Lease so a standby takes over at once instead of after the Lease duration.
//!
//! The fence holds against a hung API server too: every call on the Lease has a timeout,
//! the renew deadline is counted from the start of the last successful round (a standby
//! can only have seen that write after it began) and it is enforced while a renewal
//! hangs, not only when the call returns. The controllers are told to stop at the
//! deadline and given one retry period; deadline + retry period (2/3 + 1/5 of the Lease)
//! ends before the Lease can expire for any standby.
//!
//! Hand-written on kube's `Api<Lease>` rather than a crate: `kube-leader-election` is
//! still on kube 4, and the whole protocol is the pure [`decide`] below plus two calls.
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use std::time::{Duration, Instant};

/// Who competes for which Lease, and for how long a won Lease holds.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per process (`$POD_NAME` or the host name, plus a random suffix), so a
    /// restarted pod never mistakes its predecessor's Lease for its own.
    pub identity: String,
    /// How long a Lease holds without renewal before a standby may take it.
    pub duration: Duration,
}

impl LeaseConfig {
    /// The leader gives up when it has not renewed for this long (before any standby may
    /// take over: 2/3 of the duration, as client-go's 10 s of 15 s).
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often the leader renews and a standby looks again (1/5 of the duration, at
    /// least 100 ms; client-go's 2 s of 15 s is close).
    pub fn retry_period(&self) -> Duration {
        (self.duration / 5).max(Duration::from_millis(100))
    }

    /// The longest one round on the Lease (a read and a write) may take: half the renew
    /// deadline, so a leader whose call hangs still gets a second try before it gives up.
    pub fn call_timeout(&self) -> Duration {
        self.renew_deadline() / 2
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// A process-unique identity: `<base>_<random hex>`.
pub fn identity(base: Option<String>) -> String {
    let base = base
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "concord".to_string());
    format!("{base}_{:08x}", rand::random::<u32>())
}

/// What a candidate should do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it (a transition).
    Acquire,
    /// Someone else holds it: look again later.
    Wait { holder: String },
}

/// The pure core of the protocol. `unchanged_for` is how long (on our clock) the Lease
/// has looked exactly like this; `default_duration` applies when the Lease names none.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, unchanged_for: Duration, default_duration: Duration) -> Decision {
    let Some(spec) = lease else { return Decision::Create };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = spec
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.unsigned_abs().into()))
        .unwrap_or(default_duration);
    if unchanged_for >= duration { Decision::Acquire } else { Decision::Wait { holder: holder.to_string() } }
}

/// The Lease spec to write for `decision` (`Create`, `Renew` or `Acquire`).
pub fn desired_spec(
    previous: Option<&LeaseSpec>,
    decision: &Decision,
    cfg: &LeaseConfig,
    now: k8s_openapi::jiff::Timestamp,
) -> LeaseSpec {
    let previous = previous.cloned().unwrap_or_default();
    let transitions = previous.lease_transitions.unwrap_or(0);
    let (acquire_time, lease_transitions) = match decision {
        Decision::Renew => (previous.acquire_time.clone().or(Some(MicroTime(now))), transitions),
        Decision::Create => (Some(MicroTime(now)), 0),
        // Taking over from a holder (or an empty one after a release) is a transition.
        Decision::Acquire | Decision::Wait { .. } => (Some(MicroTime(now)), transitions.saturating_add(1)),
    };
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration_seconds()),
        acquire_time,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(lease_transitions),
        ..LeaseSpec::default()
    }
}

/// Why one round of the protocol did not end with us holding the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("another candidate holds the Lease ({0})")]
    HeldBy(String),
    #[error("the Lease changed under us (another candidate wrote first)")]
    Conflict,
    #[error("Kubernetes API error on the Lease: {0}")]
    Kube(#[source] kube::Error),
    #[error("no answer from the Kubernetes API on the Lease within {0:?}")]
    Timeout(Duration),
}

/// One candidate's view of the Lease across rounds.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The Lease spec we last saw and when we first saw it look like that.
    observed: Option<(LeaseSpec, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &cfg.namespace), cfg, observed: None }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// [`Self::try_acquire_or_renew`], given up after `limit` (the call is dropped, with
    /// its connection).
    pub async fn try_within(&mut self, limit: Duration) -> Result<(), LeaseError> {
        match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
            Ok(result) => result,
            Err(_) => Err(LeaseError::Timeout(limit)),
        }
    }

    /// One round: read the Lease, decide, and write if we may. Ok means we hold it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<(), LeaseError> {
        let current = self.api.get_opt(&self.cfg.name).await.map_err(LeaseError::Kube)?;
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let unchanged_for = match (&self.observed, &spec) {
            (Some((seen, since)), Some(now)) if seen == now => since.elapsed(),
            _ => Duration::ZERO,
        };
        if spec.as_ref() != self.observed.as_ref().map(|(s, _)| s) {
            self.observed = spec.clone().map(|s| (s, Instant::now()));
        }
        let decision = decide(spec.as_ref(), &self.cfg.identity, unchanged_for, self.cfg.duration);
        if let Decision::Wait { holder } = decision {
            return Err(LeaseError::HeldBy(holder));
        }
        let desired = desired_spec(spec.as_ref(), &decision, &self.cfg, k8s_openapi::jiff::Timestamp::now());
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(desired),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // Carries the resourceVersion we read: a concurrent writer makes this a 409.
                lease.spec = Some(desired);
                self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(lease) => {
                self.observed = lease.spec.map(|s| (s, Instant::now()));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Err(LeaseError::Conflict),
            Err(e) => Err(LeaseError::Kube(e)),
        }
    }

    /// Gives the Lease up (holder cleared) if we still hold it, so a standby takes over
    /// at once. Best effort: a failure only means the standby waits for expiry.
    pub async fn release(&mut self) {
        let current = match self.api.get_opt(&self.cfg.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Lease to release it");
                return;
            }
        };
        let mut lease = current;
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.cfg.name, "released the leader Lease"),
            Err(e) => tracing::warn!(error = %e, "cannot release the Lease; a standby takes over when it expires"),
        }
    }
}

/// How leading ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Shutdown was requested (before or after winning); the Lease was released.
    Stopped,
    /// The Lease was lost (another holder, or no renewal within the renew deadline); the
    /// controllers were told to stop. The process should exit so it restarts as a standby.
    Lost,
}

/// Competes for the Lease until this process holds it, then runs `run` (the
/// controllers) with a stop signal that fires on shutdown or when leadership is lost,
/// renewing the Lease all the while, and releases it after a requested shutdown.
///
/// Until it leads, `/readyz` reports the component `leader-election` ready once the
/// Lease could be read (a hot standby is ready: it can take over); an API server it
/// cannot reach makes it not ready.
pub async fn run_when_leader<F, Fut>(
    mut elector: Elector,
    metrics: &super::Metrics,
    readiness: &super::Readiness,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    run: F,
) -> Outcome
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    const COMPONENT: &str = "leader-election";
    readiness.register(COMPONENT);
    metrics.leader.set(0);
    let retry = elector.cfg.retry_period();
    let mut last_holder = String::new();
    let won_at = loop {
        if *shutdown.borrow() {
            return Outcome::Stopped;
        }
        let started = Instant::now();
        match elector.try_within(elector.cfg.call_timeout()).await {
            Ok(()) => break started,
            Err(LeaseError::HeldBy(holder)) => {
                readiness.set(COMPONENT, true);
                if holder != last_holder {
                    tracing::info!(lease = %elector.cfg.name, %holder, "standing by: another replica leads");
                    last_holder = holder;
                }
            }
            Err(LeaseError::Conflict) => readiness.set(COMPONENT, true),
            Err(e) => {
                readiness.set(COMPONENT, false);
                tracing::warn!(error = %e, "cannot take part in leader election; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => {}
        }
    };
    readiness.set(COMPONENT, true);
    metrics.leader.set(1);
    metrics.leader_transitions.inc();
    tracing::info!(lease = %elector.cfg.name, identity = %elector.cfg.identity, "acquired the leader Lease; starting controllers");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let controllers = run(stop_rx);
    tokio::pin!(controllers);
    // The round that won began before this instant, and no standby can have seen its
    // write before the round began: counting from here errs on the safe side.
    let mut last_renewal = won_at;
    let mut stopping = false;
    let outcome = loop {
        let deadline = last_renewal + elector.cfg.renew_deadline();
        tokio::select! {
            _ = &mut controllers => break Outcome::Stopped,
            _ = shutdown.changed(), if !stopping => {
                // Keep renewing while the controllers finish their in-flight work, so no
                // standby starts writing before this one has stopped.
                stopping = true;
                let _ = stop_tx.send(true);
            }
            // Failed renewals spaced a retry period apart may straddle the deadline.
            _ = tokio::time::sleep_until(deadline.into()) => {
                tracing::error!("could not renew the leader Lease within the renew deadline; stopping controllers");
                break Outcome::Lost;
            }
            _ = tokio::time::sleep(retry) => {
                let started = Instant::now();
                // A renewal that hangs is cut at the deadline, whatever the call does.
                let limit = elector.cfg.call_timeout().min(deadline.saturating_duration_since(started));
                match elector.try_within(limit).await {
                    Ok(()) => last_renewal = started,
                    Err(LeaseError::HeldBy(holder)) => {
                        tracing::error!(%holder, "lost the leader Lease to another replica; stopping controllers");
                        break Outcome::Lost;
                    }
                    Err(e) if Instant::now() >= deadline => {
                        tracing::error!(error = %e, "could not renew the leader Lease within the renew deadline; stopping controllers");
                        break Outcome::Lost;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew the leader Lease; retrying"),
                }
            }
        }
    };
    metrics.leader.set(0);
    let _ = stop_tx.send(true);
    match outcome {
        Outcome::Stopped => {
            // Bounded: a hung API server must not keep a stopping process alive.
            let limit = elector.cfg.call_timeout();
            if tokio::time::timeout(limit, elector.release()).await.is_err() {
                tracing::warn!(?limit, "no answer releasing the Lease; a standby takes over when it expires");
            }
        }
        Outcome::Lost => {
            // A standby may lead within moments: give in-flight writes one retry period,
            // then let the caller exit (dropping whatever is left).
            let _ = tokio::time::timeout(retry, &mut controllers).await;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(me: &str) -> LeaseConfig {
        LeaseConfig {
            name: "concord".into(),
            namespace: "ns".into(),
            identity: me.into(),
            duration: Duration::from_secs(15),
        }
    }

    fn held_by(holder: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(secs),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn a_missing_lease_is_created_and_our_own_is_renewed() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), Decision::Create);
        assert_eq!(decide(Some(&held_by("a", 15)), "a", Duration::from_secs(99), D), Decision::Renew);
    }

    #[test]
    fn a_held_lease_is_waited_for_until_it_has_not_changed_for_its_duration() {
        let lease = held_by("b", 3);
        assert_eq!(decide(Some(&lease), "a", Duration::from_millis(2900), D), Decision::Wait { holder: "b".into() });
        assert_eq!(decide(Some(&lease), "a", Duration::from_secs(3), D), Decision::Acquire);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut lease = held_by("b", 15);
        lease.holder_identity = None;
        assert_eq!(decide(Some(&lease), "a", Duration::ZERO, D), Decision::Acquire);
        lease.holder_identity = Some(String::new());
        assert_eq!(decide(Some(&lease), "a", Duration::ZERO, D), Decision::Acquire);
    }

    #[test]
    fn a_lease_without_a_duration_uses_ours() {
        let mut lease = held_by("b", 0);
        lease.lease_duration_seconds = None;
        assert_eq!(decide(Some(&lease), "a", Duration::from_secs(14), D), Decision::Wait { holder: "b".into() });
        assert_eq!(decide(Some(&lease), "a", D, D), Decision::Acquire);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let t0 = k8s_openapi::jiff::Timestamp::from_second(1_000).expect("time");
        let t1 = k8s_openapi::jiff::Timestamp::from_second(1_005).expect("time");
        let taken = desired_spec(Some(&held_by("b", 15)), &Decision::Acquire, &cfg("a"), t0);
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        let renewed = desired_spec(Some(&taken), &Decision::Renew, &cfg("a"), t1);
        assert_eq!(renewed.acquire_time, Some(MicroTime(t0)));
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        assert_eq!(renewed.lease_transitions, Some(3));
        let created = desired_spec(None, &Decision::Create, &cfg("a"), t0);
        assert_eq!(created.lease_transitions, Some(0));
    }

    #[test]
    fn deadlines_follow_the_duration() {
        let mut c = cfg("a");
        assert_eq!(c.renew_deadline(), Duration::from_secs(10));
        assert_eq!(c.retry_period(), Duration::from_secs(3));
        assert_eq!(c.call_timeout(), Duration::from_secs(5));
        c.duration = Duration::from_secs(3);
        assert_eq!(c.renew_deadline(), Duration::from_secs(2));
        assert_eq!(c.retry_period(), Duration::from_millis(600));
        // The fence: the deadline plus the retry period the controllers get to stop
        // ends before any standby may take the Lease.
        for secs in [1, 3, 15, 60] {
            c.duration = Duration::from_secs(secs);
            assert!(c.renew_deadline() + c.retry_period() < c.duration, "{secs}s");
        }
    }

    /// A server that accepts connections and never answers: a hung API server.
    #[tokio::test]
    async fn a_hung_lease_call_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let config = kube::Config::new(url.parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let mut elector = Elector::new(client, cfg("a"));
        let started = Instant::now();
        let result = elector.try_within(Duration::from_millis(300)).await;
        assert!(matches!(result, Err(LeaseError::Timeout(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        hold.abort();
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        let a = identity(Some("concord-0".into()));
        let b = identity(Some("concord-0".into()));
        assert!(a.starts_with("concord-0_"), "{a}");
        assert_ne!(a, b);
    }
}
