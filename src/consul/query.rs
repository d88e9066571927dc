//! Read options and metadata shared by every read: blocking queries, consistency modes.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// Consul's longest blocking wait; longer values are capped by the server.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The wait Consul applies when a blocking query gives an index but no wait.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// A Raft index as Consul reports it (`X-Consul-Index`, `ModifyIndex`, `cas=`).
///
/// A newtype because indexes, ports, counts and flags are all `u64`s, and passing a
/// count where a check-and-set index is expected would be a silent data race.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConsulIndex(pub u64);

impl ConsulIndex {
    pub const ZERO: ConsulIndex = ConsulIndex(0);

    /// The index to send with the next blocking query, given the index sent with the
    /// previous one (`self`) and the index Consul returned.
    ///
    /// Follows Consul's documented rules for blocking queries:
    /// - an index that went backwards (snapshot restore, state reset, a different server)
    ///   resets to 0, so the next query returns at once with fresh state instead of
    ///   blocking until the index climbs past a value that no longer means anything;
    /// - an index of 0 is treated as 1, because sending 0 means "do not block" and would
    ///   turn a watch loop into a busy loop.
    ///
    /// The third rule, rate limiting, is the watch loop's job.
    #[must_use]
    pub fn advance(self, returned: ConsulIndex) -> ConsulIndex {
        if returned < self {
            ConsulIndex::ZERO
        } else if returned == ConsulIndex::ZERO {
            ConsulIndex(1)
        } else {
            returned
        }
    }
}

impl fmt::Display for ConsulIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for ConsulIndex {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

/// Consul's read consistency modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Served by the leader, which may briefly serve stale data during a leader change.
    #[default]
    Default,
    /// The leader confirms its leadership first: never stale, one extra round trip.
    Consistent,
    /// Any server answers, even without a leader: the read that works during an election.
    Stale,
}

/// Options for every read; `Default` is a plain non-blocking read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Block until the result's index is greater than this one (`?index=`). `None` or
    /// zero does not block.
    pub index: Option<ConsulIndex>,
    /// How long to block at most (`?wait=`); Consul's default is 5 minutes, its cap 10.
    pub wait: Option<Duration>,
    pub consistency: Consistency,
    /// Overrides the client's datacenter for this read.
    pub datacenter: Option<String>,
    /// Consul's server-side filter expression (`?filter=`), where the endpoint has one.
    pub filter: Option<String>,
}

impl QueryOptions {
    /// A blocking read that returns once the index passes `index` or `wait` elapses.
    pub fn blocking(index: ConsulIndex, wait: Duration) -> Self {
        Self { index: Some(index), wait: Some(wait), ..Self::default() }
    }

    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    pub(crate) fn is_blocking(&self) -> bool {
        self.index.is_some_and(|i| i > ConsulIndex::ZERO)
    }

    /// How long the server may hold this request: the wait (capped like Consul caps it)
    /// plus the up to wait/16 of jitter Consul adds so that watchers do not stampede.
    pub(crate) fn server_hold(&self) -> Option<Duration> {
        if !self.is_blocking() {
            return None;
        }
        let wait = self.wait.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
        Some(wait + wait / 16)
    }

    /// Query parameters for these options, in a stable order (tests compare them).
    pub(crate) fn params(&self, default_dc: Option<&str>) -> Vec<(&'static str, Option<String>)> {
        let mut params = Vec::new();
        if let Some(dc) = self.datacenter.as_deref().or(default_dc) {
            params.push(("dc", Some(dc.to_owned())));
        }
        if let Some(index) = self.index.filter(|i| *i > ConsulIndex::ZERO) {
            params.push(("index", Some(index.to_string())));
            if let Some(wait) = self.wait {
                // Milliseconds keep sub-second waits; Go's ParseDuration reads "1500ms".
                params.push(("wait", Some(format!("{}ms", wait.min(MAX_WAIT).as_millis()))));
            }
        }
        match self.consistency {
            Consistency::Default => {}
            Consistency::Consistent => params.push(("consistent", None)),
            Consistency::Stale => params.push(("stale", None)),
        }
        if let Some(filter) = &self.filter {
            params.push(("filter", Some(filter.clone())));
        }
        params
    }
}

/// A read's value with the metadata a watch loop needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryResponse<T> {
    /// `X-Consul-Index`: pass it through [`ConsulIndex::advance`] to the next query.
    pub index: ConsulIndex,
    /// `X-Consul-KnownLeader`: false while the answering server has no leader.
    pub known_leader: bool,
    /// `X-Consul-LastContact`: how stale a `Stale` read may be.
    pub last_contact: Duration,
    pub value: T,
}

impl<T> QueryResponse<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> QueryResponse<U> {
        QueryResponse {
            index: self.index,
            known_leader: self.known_leader,
            last_contact: self.last_contact,
            value: f(self.value),
        }
    }

    pub(crate) fn from_headers(headers: &HeaderMap, value: T) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        QueryResponse {
            index: ConsulIndex(header("X-Consul-Index").and_then(|v| v.parse().ok()).unwrap_or(0)),
            known_leader: header("X-Consul-KnownLeader") == Some("true"),
            last_contact: Duration::from_millis(
                header("X-Consul-LastContact").and_then(|v| v.parse().ok()).unwrap_or(0),
            ),
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn index_that_goes_backwards_resets_to_zero() {
        assert_eq!(ConsulIndex(100).advance(ConsulIndex(42)), ConsulIndex(0));
    }

    #[test]
    fn index_zero_is_treated_as_one() {
        assert_eq!(ConsulIndex(0).advance(ConsulIndex(0)), ConsulIndex(1));
    }

    #[test]
    fn index_that_moves_forward_or_stays_is_kept() {
        assert_eq!(ConsulIndex(7).advance(ConsulIndex(9)), ConsulIndex(9));
        assert_eq!(ConsulIndex(9).advance(ConsulIndex(9)), ConsulIndex(9));
        // After a reset (0) the first answer is taken as is.
        assert_eq!(ConsulIndex(0).advance(ConsulIndex(5)), ConsulIndex(5));
    }

    #[test]
    fn blocking_params_carry_index_wait_and_mode() {
        let opts = QueryOptions {
            filter: Some("Service == web".into()),
            ..QueryOptions::blocking(ConsulIndex(12), Duration::from_secs(30)).with_consistency(Consistency::Stale)
        };
        assert_eq!(
            opts.params(Some("dc1")),
            vec![
                ("dc", Some("dc1".to_owned())),
                ("index", Some("12".to_owned())),
                ("wait", Some("30000ms".to_owned())),
                ("stale", None),
                ("filter", Some("Service == web".to_owned())),
            ]
        );
    }

    #[test]
    fn index_zero_does_not_block_and_sends_no_wait() {
        let opts = QueryOptions::blocking(ConsulIndex(0), Duration::from_secs(30));
        assert!(opts.params(None).is_empty());
        assert_eq!(opts.server_hold(), None);
    }

    #[test]
    fn server_hold_includes_consul_jitter_and_cap() {
        let opts = QueryOptions::blocking(ConsulIndex(3), Duration::from_secs(16));
        assert_eq!(opts.server_hold(), Some(Duration::from_secs(17)));
        let capped = QueryOptions::blocking(ConsulIndex(3), Duration::from_secs(3600));
        assert_eq!(capped.server_hold(), Some(MAX_WAIT + MAX_WAIT / 16));
        let default_wait = QueryOptions { index: Some(ConsulIndex(3)), ..Default::default() };
        assert_eq!(default_wait.server_hold(), Some(DEFAULT_WAIT + DEFAULT_WAIT / 16));
    }

    #[test]
    fn metadata_is_read_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Consul-Index", HeaderValue::from_static("77"));
        headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
        headers.insert("X-Consul-LastContact", HeaderValue::from_static("15"));
        let resp = QueryResponse::from_headers(&headers, ());
        assert_eq!(resp.index, ConsulIndex(77));
        assert!(resp.known_leader);
        assert_eq!(resp.last_contact, Duration::from_millis(15));
    }
}
