//! The one error type of the Consul client layer.

use reqwest::{Method, StatusCode};

use super::ConsulIndex;

/// How long an HTTP body excerpt in an error may be: enough for Consul's one-line
/// messages ("rpc error making call: ..."), short enough for an Event message.
const MESSAGE_LIMIT: usize = 512;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to Consul.
///
/// Answers Consul gives on purpose (a failed check-and-set, a missing object, a denied
/// ACL, an already bootstrapped ACL system) have their own variants so callers can match
/// on them; any other unexpected answer is [`Error::Http`] with the status and the first
/// line of the body. [`Error::category`] is a bounded label for metrics and Event reasons.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid Consul client configuration: {0}")]
    Config(String),

    #[error("invalid Consul request: {0}")]
    InvalidRequest(String),

    /// The message carries the whole cause chain (reqwest's own text stops at "error
    /// sending request"; why, e.g. "Connection refused", is further down).
    #[error("cannot talk to Consul at {url}: {}", chain(source))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("Consul answered {status} to {method} {path}: {message}")]
    Http { method: Method, path: String, status: StatusCode, message: String },

    #[error("not found: {method} {path}: {message}")]
    NotFound { method: Method, path: String, message: String },

    #[error("permission denied: {method} {path}: {message}")]
    PermissionDenied { method: Method, path: String, message: String },

    /// A write names an ACL policy, role or auth method that Consul does not have (yet).
    /// Consul answers these with a 500, but retrying is useless until someone creates it.
    #[error("{message}")]
    MissingReference { method: Method, path: String, message: String },

    /// A write with `cas` lost the race: the object changed (or appeared, for `cas=0`)
    /// since the index the caller read. Re-read and decide again.
    #[error("check-and-set failed for {what}: it changed since index {index}")]
    CasConflict { what: String, index: ConsulIndex },

    /// `PUT /v1/acl/bootstrap` after the cluster was already bootstrapped.
    #[error("ACL bootstrap no longer allowed (reset index: {reset_index:?})")]
    AclAlreadyBootstrapped { reset_index: Option<u64> },

    #[error("cannot decode Consul's answer to {method} {path}: {source}")]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// Writing a snapshot to the caller's writer failed (not a Consul problem).
    #[error("snapshot I/O failed: {0}")]
    Io(#[source] std::io::Error),
}

impl Error {
    /// Bounded label for metrics and Event reasons; never contains object names or text.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::InvalidRequest(_) => "invalid_request",
            Error::Transport { .. } if self.is_tls_verify_failure() => "tls_verify",
            Error::Transport { .. } => "transport",
            Error::Http { status, .. } if status.is_server_error() => "http_5xx",
            Error::Http { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            Error::Http { .. } => "http_4xx",
            Error::NotFound { .. } => "not_found",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::MissingReference { .. } => "missing_reference",
            Error::CasConflict { .. } => "cas_conflict",
            Error::AclAlreadyBootstrapped { .. } => "acl_already_bootstrapped",
            Error::Decode { .. } => "decode",
            Error::Io(_) => "io",
        }
    }

    /// Whether trying again later may succeed without anyone changing anything:
    /// an unreachable or leaderless cluster, throttling, or a lost CAS race.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => !self.is_tls_verify_failure(),
            Error::CasConflict { .. } => true,
            Error::Http { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            _ => false,
        }
    }

    /// Whether the server's TLS certificate was refused: not signed by the configured
    /// CA, expired, or not valid for the address. rustls reports these (and only these)
    /// as "invalid peer certificate", deep in the cause chain.
    pub fn is_tls_verify_failure(&self) -> bool {
        match self {
            Error::Transport { source, .. } => chain(source).contains("invalid peer certificate"),
            _ => false,
        }
    }

    /// Whether a write named an ACL policy, role or auth method Consul does not have.
    pub fn is_missing_reference(&self) -> bool {
        matches!(self, Error::MissingReference { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub fn is_cas_conflict(&self) -> bool {
        matches!(self, Error::CasConflict { .. })
    }

    /// The HTTP status of an unexpected answer, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Http { status, .. } => Some(*status),
            Error::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            Error::MissingReference { .. } => Some(StatusCode::INTERNAL_SERVER_ERROR),
            Error::PermissionDenied { .. } | Error::AclAlreadyBootstrapped { .. } => Some(StatusCode::FORBIDDEN),
            _ => None,
        }
    }

    /// Builds the error for a non-success answer from its status and raw body.
    pub(crate) fn from_status(method: Method, path: &str, status: StatusCode, body: &[u8]) -> Self {
        let message = first_line(body);
        let path = path.to_owned();
        match status {
            StatusCode::NOT_FOUND => Error::NotFound { method, path, message },
            // Consul answers a read of a missing ACL token with 403 "token does not exist:
            // ACL not found". A missing *caller* token is a bare "ACL not found" and stays
            // a permission error.
            StatusCode::FORBIDDEN if message.contains("does not exist") => Error::NotFound { method, path, message },
            StatusCode::FORBIDDEN if message.contains("ACL bootstrap no longer allowed") => {
                Error::AclAlreadyBootstrapped { reset_index: parse_reset_index(&message) }
            }
            StatusCode::FORBIDDEN => Error::PermissionDenied { method, path, message },
            StatusCode::INTERNAL_SERVER_ERROR if names_missing_acl_object(&message) => {
                Error::MissingReference { method, path, message }
            }
            _ => Error::Http { method, path, status, message },
        }
    }
}

/// Consul's answers to a write that links a missing ACL object: `No such ACL policy with
/// name "api"`, `No such ACL role with ID "…"`, `cannot find auth method with name "pods"`.
fn names_missing_acl_object(message: &str) -> bool {
    message.contains("No such ACL ") || message.contains("cannot find auth method with name")
}

/// `error` and its sources, joined by ": " (a source whose text the previous one already
/// includes is left out).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut last = out.clone();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        next = e.source();
    }
    out
}

/// The first non-blank line of a body, lossily decoded and bounded in length: Consul's
/// error answers are plain text, and a proxy in between may answer with a whole HTML page.
/// A Go multierror ("1 error occurred:" then one `* ...` line per error) keeps its
/// errors, joined on one line: the first line alone says nothing.
pub(crate) fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    let joined;
    let line = if first.ends_with("occurred:") {
        joined = std::iter::once(first).chain(lines).collect::<Vec<_>>().join(" ");
        joined.as_str()
    } else {
        first
    };
    if line.len() <= MESSAGE_LIMIT {
        return line.to_owned();
    }
    let mut end = MESSAGE_LIMIT;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// "Permission denied: ACL bootstrap no longer allowed (reset index: 13)" → 13.
fn parse_reset_index(message: &str) -> Option<u64> {
    let rest = &message[message.find("reset index:")? + "reset index:".len()..];
    let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_json_body_becomes_http_error_with_its_first_line() {
        let body = b"\n  rpc error making call: No cluster leader\nsecond line\n";
        let err = Error::from_status(Method::PUT, "/v1/kv/a", StatusCode::INTERNAL_SERVER_ERROR, body);
        match &err {
            Error::Http { status, message, .. } => {
                assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
                assert_eq!(message, "rpc error making call: No cluster leader");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.category(), "http_5xx");
        assert!(err.is_transient());
        assert!(err.to_string().contains("No cluster leader"));
    }

    #[test]
    fn a_write_naming_a_missing_acl_object_is_not_transient() {
        for body in [
            &b"No such ACL policy with name \"api\""[..],
            b"No such ACL role with ID \"7a0f6a2e-0000-0000-0000-000000000000\"",
            b"cannot find auth method with name \"pods\"",
        ] {
            let e = Error::from_status(Method::PUT, "/v1/acl/role", StatusCode::INTERNAL_SERVER_ERROR, body);
            assert!(e.is_missing_reference(), "{e:?}");
            assert!(!e.is_transient(), "{e:?}");
            assert_eq!(e.category(), "missing_reference");
            assert_eq!(e.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
            assert_eq!(e.to_string(), String::from_utf8_lossy(body));
        }
        let leaderless =
            Error::from_status(Method::PUT, "/v1/acl/role", StatusCode::INTERNAL_SERVER_ERROR, b"No cluster leader");
        assert!(!leaderless.is_missing_reference() && leaderless.is_transient());
    }

    #[test]
    fn statuses_map_to_distinct_variants() {
        let nf = Error::from_status(Method::GET, "/v1/acl/policy/x", StatusCode::NOT_FOUND, b"");
        assert!(nf.is_not_found());
        assert_eq!(nf.category(), "not_found");

        let denied = Error::from_status(
            Method::GET,
            "/v1/kv/a",
            StatusCode::FORBIDDEN,
            b"Permission denied: token with AccessorID 'x' lacks permission",
        );
        assert_eq!(denied.category(), "permission_denied");

        let boot = Error::from_status(
            Method::PUT,
            "/v1/acl/bootstrap",
            StatusCode::FORBIDDEN,
            b"Permission denied: ACL bootstrap no longer allowed (reset index: 13)",
        );
        assert!(matches!(boot, Error::AclAlreadyBootstrapped { reset_index: Some(13) }));

        let missing_token = Error::from_status(
            Method::GET,
            "/v1/acl/token/x",
            StatusCode::FORBIDDEN,
            b"token does not exist: ACL not found",
        );
        assert!(missing_token.is_not_found());
        let bad_caller = Error::from_status(Method::GET, "/v1/kv/a", StatusCode::FORBIDDEN, b"ACL not found");
        assert_eq!(bad_caller.category(), "permission_denied");

        let throttled = Error::from_status(Method::GET, "/", StatusCode::TOO_MANY_REQUESTS, b"");
        assert_eq!(throttled.category(), "rate_limited");
        let bad = Error::from_status(Method::PUT, "/", StatusCode::BAD_REQUEST, b"bad");
        assert_eq!(bad.category(), "http_4xx");
        assert!(!bad.is_transient());
    }

    #[test]
    fn decode_errors_say_what_was_wrong() {
        let source = serde_json::from_slice::<Vec<String>>(b"{\"not\": \"a list\"}").expect_err("bad");
        let e = Error::Decode { method: Method::GET, path: "/v1/catalog/services".into(), source };
        let text = e.to_string();
        assert!(text.starts_with("cannot decode Consul's answer to GET /v1/catalog/services: invalid type"), "{text}");
        assert!(std::error::Error::source(&e).is_some(), "the cause stays the source too");
    }

    #[tokio::test]
    async fn transport_errors_carry_their_cause_chain() {
        // A port nobody listens on.
        let port = testenv::free_port().expect("port");
        let url = format!("http://127.0.0.1:{port}");
        let client = super::super::Client::new(super::super::ClientConfig::new(vec![url])).expect("client");
        let once = super::super::RetryPolicy { max_attempts: 1, ..Default::default() };
        let e = client.with_retry(once).status_leader().await.expect_err("nobody listens");
        assert_eq!(e.category(), "transport");
        let text = e.to_string();
        assert!(text.starts_with(&format!("cannot talk to Consul at http://127.0.0.1:{port}")), "{text}");
        assert!(text.to_lowercase().contains("connection refused"), "the cause is missing: {text}");
    }

    #[test]
    fn multierror_bodies_keep_their_errors() {
        let body = b"Request decoding failed: 1 error occurred:\n\t* invalid config key \"Name\"\n\n";
        assert_eq!(first_line(body), r#"Request decoding failed: 1 error occurred: * invalid config key "Name""#);
    }

    #[test]
    fn first_line_is_bounded_and_utf8_safe() {
        let long = "é".repeat(MESSAGE_LIMIT);
        let line = first_line(long.as_bytes());
        assert!(line.len() <= MESSAGE_LIMIT + "…".len());
        assert!(line.ends_with('…'));
        assert_eq!(first_line(b"\xff\xfeok"), "\u{fffd}\u{fffd}ok");
        assert_eq!(first_line(b""), "");
    }
}
