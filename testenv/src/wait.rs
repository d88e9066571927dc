//! Polling with a deadline, the one way the harness waits for servers: each probe either
//! succeeds, fails for good (a server exited), or explains what is still missing, and that
//! explanation becomes the error when the deadline passes.

use std::time::{Duration, Instant};

use crate::error::Error;

/// What one probe found.
pub(crate) enum Probe<T> {
    Ready(T),
    /// Not yet; the error describes the current state and is returned on timeout.
    Waiting(Error),
    /// Waiting longer cannot help (e.g. the server exited).
    Failed(Error),
}

/// How often probes run: short, because start-up time is test time.
const INTERVAL: Duration = Duration::from_millis(100);

/// Runs `probe` (given the time elapsed so far) until it is ready, fails, or `timeout`
/// passes. Probes must bound their own I/O (HTTP timeouts) so the deadline holds.
pub(crate) async fn until<T>(timeout: Duration, mut probe: impl AsyncFnMut(Duration) -> Probe<T>) -> Result<T, Error> {
    let started = Instant::now();
    loop {
        match probe(started.elapsed()).await {
            Probe::Ready(value) => return Ok(value),
            Probe::Failed(error) => return Err(error),
            Probe::Waiting(error) if started.elapsed() >= timeout => return Err(error),
            Probe::Waiting(_) => tokio::time::sleep(INTERVAL).await,
        }
    }
}

/// A fresh HTTP client. Never stored: each test has its own tokio runtime, and a client
/// (its connection pool) is bound to the runtime it was first used on.
pub(crate) fn http_client(ca_pem: Option<&str>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        // A developer's HTTP_PROXY must not capture loopback traffic.
        .no_proxy();
    if let Some(pem) = ca_pem {
        let ca = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        builder = builder.add_root_certificate(ca);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Start attempts with fresh ports when a server finds one taken.
const PORT_ATTEMPTS: u32 = 3;

/// Runs `start` (which picks fresh ports each time) again when it fails with
/// `PortInUse`: another process can grab a port between our probe and the server's bind.
pub(crate) async fn with_port_retries<T>(mut start: impl AsyncFnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut attempt = 1;
    loop {
        match start().await {
            Err(Error::PortInUse { what, last_log_line, log, .. }) => {
                if attempt >= PORT_ATTEMPTS {
                    return Err(Error::PortInUse { what, attempts: attempt, last_log_line, log });
                }
                tracing::warn!(server = %what, attempt, "port taken, retrying with fresh ports");
                attempt += 1;
            }
            other => return other,
        }
    }
}
