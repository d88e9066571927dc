//! The harness's one error type. Every variant renders as a single line that names the
//! server and says why, so a failing test's output points straight at the cause (and at
//! the server's log file) without anyone re-running with more logging.

use std::path::PathBuf;
use std::time::Duration;

/// Why a test environment could not be started or changed.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// A server binary is not where the harness looks for it.
    #[error(
        "{name} binary not found in {} (run scripts/testenv.sh, or set CONCORD_TESTENV_BIN to a directory holding it)",
        dir.display()
    )]
    MissingBinary { name: String, dir: PathBuf },

    /// A server kept failing to bind its ports, even with freshly picked ones.
    #[error(
        "{what}: address already in use on {attempts} attempt(s) with fresh ports; last log line: {last_log_line} (log: {})",
        log.display()
    )]
    PortInUse { what: String, attempts: u32, last_log_line: String, log: PathBuf },

    /// A server exited or did not become ready within its time bound.
    #[error(
        "{what} not ready after {:.1}s: {reason}; last log line: {last_log_line} (log: {})",
        after.as_secs_f64(),
        log.display()
    )]
    NotReady { what: String, after: Duration, reason: String, last_log_line: String, log: PathBuf },

    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// Generating the CA, serving certificate or service-account key failed.
    #[error("generating kube-apiserver TLS material: {0}")]
    Certificates(#[from] rcgen::Error),

    /// An HTTP client for readiness probes could not be built.
    #[error("building an HTTP client: {0}")]
    HttpClient(String),

    /// The options asked for something the harness cannot start.
    #[error("invalid test environment options: {0}")]
    InvalidOptions(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

/// Collapses text from logs and HTTP errors onto one line: the harness promises one-line
/// errors, and a multi-line Go panic would otherwise break that.
pub(crate) fn one_line(text: &str) -> String {
    const MAX: usize = 400;
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(MAX).collect();
    if flat.is_empty() { "(empty)".to_string() } else { flat }
}
