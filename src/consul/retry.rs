//! When a failed request is tried again, and how long to wait before it.
//!
//! Hand-written rather than `backon`: the decision depends on two things backon's
//! combinators do not model (whether the request may have reached Consul, and whether
//! the operation is safe to repeat) and interleaves with failing over to the next server
//! address; the backoff arithmetic itself is a few lines, tested below.
//!
//! What is retried:
//! - a connection that could not be made: always, whatever the operation, because the
//!   request never reached Consul; the next attempt goes to the next server address;
//! - any other transport failure (reset mid-request, timeout) and any 5xx ("No cluster
//!   leader", "leadership lost while committing log"): only for operations marked
//!   [`Idempotency::Idempotent`]. KV and catalog writes are (setting the same value or
//!   registration twice is the same state); a check-and-set write or transaction is
//!   marked idempotent too: if the first attempt was applied, the repeat fails its CAS
//!   and the caller sees a conflict, re-reads, and finds its own write — never a double
//!   apply. ACL bootstrap, token and policy creation and snapshot restore are not
//!   repeated after an ambiguous failure (a second token, a lost bootstrap secret);
//! - never a 4xx: the request itself is wrong or not allowed, and repeating it will not
//!   change that (429 included: it surfaces as `rate_limited` for the caller's backoff).

use std::time::Duration;

use rand::Rng;

/// Whether repeating an operation after an ambiguous failure is harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotency {
    Idempotent,
    /// Retried only when the request certainly did not reach Consul.
    NotIdempotent,
}

/// What went wrong with one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection was made: the request never left.
    Connect,
    /// The request may or may not have been processed.
    Transport,
    ServerError,
    ClientError,
}

/// The failure a status stands for, if it is one.
pub(crate) fn status_failure(status: reqwest::StatusCode) -> Option<Failure> {
    if status.is_server_error() {
        Some(Failure::ServerError)
    } else if status.is_client_error() {
        Some(Failure::ClientError)
    } else {
        None
    }
}

pub(crate) fn is_retryable(failure: Failure, idempotency: Idempotency) -> bool {
    match failure {
        Failure::Connect => true,
        Failure::Transport | Failure::ServerError => idempotency == Idempotency::Idempotent,
        Failure::ClientError => false,
    }
}

/// Bounds on retrying one request: exponential backoff with jitter, capped both in
/// attempts and in total time.
///
/// The defaults ride through a Consul leader election (a few seconds with the default
/// Raft timing) while keeping a reconcile from hanging on a dead cluster for long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 1 disables retries.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// No new attempt starts after this much time since the first one.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// The ceiling of the delay before attempt `retry + 1` (`retry` starts at 1).
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(31));
        self.initial_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// "Equal jitter": half the ceiling fixed, half random, so retries from many
    /// controllers spread out but never collapse to zero delay.
    pub(crate) fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let half = ceiling / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.random_range(0..=jitter_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn connect_failures_are_always_retried() {
        assert!(is_retryable(Failure::Connect, Idempotency::Idempotent));
        assert!(is_retryable(Failure::Connect, Idempotency::NotIdempotent));
    }

    #[test]
    fn ambiguous_failures_are_retried_only_when_idempotent() {
        for failure in [Failure::Transport, Failure::ServerError] {
            assert!(is_retryable(failure, Idempotency::Idempotent));
            assert!(!is_retryable(failure, Idempotency::NotIdempotent));
        }
    }

    #[test]
    fn statuses_classify_as_server_or_client_errors() {
        use reqwest::StatusCode;
        assert_eq!(status_failure(StatusCode::OK), None);
        assert_eq!(status_failure(StatusCode::NOT_FOUND), Some(Failure::ClientError));
        assert_eq!(status_failure(StatusCode::CONFLICT), Some(Failure::ClientError));
        assert_eq!(status_failure(StatusCode::TOO_MANY_REQUESTS), Some(Failure::ClientError));
        assert_eq!(status_failure(StatusCode::INTERNAL_SERVER_ERROR), Some(Failure::ServerError));
        assert_eq!(status_failure(StatusCode::SERVICE_UNAVAILABLE), Some(Failure::ServerError));
    }

    #[test]
    fn client_errors_are_never_retried() {
        assert!(!is_retryable(Failure::ClientError, Idempotency::Idempotent));
        assert!(!is_retryable(Failure::ClientError, Idempotency::NotIdempotent));
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(2), Duration::from_millis(200));
        assert_eq!(policy.ceiling(4), Duration::from_millis(800));
        assert_eq!(policy.ceiling(6), Duration::from_secs(2));
        assert_eq!(policy.ceiling(1000), Duration::from_secs(2));
    }

    #[test]
    fn jittered_delay_stays_between_half_and_full_ceiling() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 1..20 {
            let ceiling = policy.ceiling(retry);
            for _ in 0..50 {
                let d = policy.delay(retry, &mut rng);
                assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
            }
        }
    }
}
