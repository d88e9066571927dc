//! The `Client`: configuration, server failover, retries and the request plumbing every
//! endpoint module builds on.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Error, Result};
use super::query::{QueryOptions, QueryResponse};
use super::retry::{Failure, Idempotency, RetryPolicy, is_retryable, status_failure};
use super::{ConsulIndex, Token};

const TOKEN_HEADER: &str = "X-Consul-Token";

/// How to reach one Consul cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Server HTTP addresses (`127.0.0.1:8500`, `http://consul:8500`, `https://…`),
    /// tried in order: a connection failure moves every later request to the next one.
    pub addresses: Vec<String>,
    /// Sent as `X-Consul-Token` on every request.
    pub token: Option<Token>,
    /// Sent as `?dc=` unless a read overrides it; `None` means the server's own.
    pub datacenter: Option<String>,
    /// PEM certificate(s) of the CA that signed the servers' HTTPS certificates. When
    /// set, `https://` servers are verified against these alone (not the system's
    /// roots); when unset, against the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The name the servers' certificates are checked against instead of the address's
    /// host (e.g. `server.dc1.consul` for servers reached by IP). IP addresses only: the
    /// request goes to the name, pinned to the address's IP.
    pub tls_server_name: Option<String>,
    /// Short, so a dead server is skipped quickly in favour of the next address.
    pub connect_timeout: Duration,
    /// Bound on a non-blocking request; blocking reads get their wait on top of it.
    pub request_timeout: Duration,
    /// Bound on a whole snapshot save or restore (large, slow, streamed bodies).
    pub snapshot_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            addresses: vec!["127.0.0.1:8500".to_owned()],
            token: None,
            datacenter: None,
            ca_pem: None,
            tls_server_name: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            snapshot_timeout: Duration::from_secs(3600),
            retry: RetryPolicy::default(),
        }
    }
}

impl ClientConfig {
    pub fn new<S: Into<String>>(addresses: impl IntoIterator<Item = S>) -> Self {
        Self { addresses: addresses.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    pub fn token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// Verify `https://` servers against this CA (PEM) instead of the built-in roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Check the servers' certificates against `name` instead of the addresses' hosts.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }

    pub fn datacenter(mut self, datacenter: impl Into<String>) -> Self {
        self.datacenter = Some(datacenter.into());
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// A typed client for one Consul cluster. Cheap to clone: clones share the connection
/// pool and the choice of which server address currently works.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// What a connection pool of its own is built from ([`Client::with_own_connections`]).
    connections: Arc<Connections>,
    addresses: Vec<Url>,
    /// Index into `addresses` of the server that answered last; shared by all clones so
    /// that one request's discovery of a dead server spares the others the timeout.
    preferred: Arc<AtomicUsize>,
    token: Option<HeaderValue>,
    datacenter: Option<String>,
    request_timeout: Duration,
    snapshot_timeout: Duration,
    retry: RetryPolicy,
}

struct Connections {
    config: ClientConfig,
    /// The IPs the TLS server name resolves to, when there is one.
    pinned: Vec<std::net::SocketAddr>,
}

/// The HTTP client (one connection pool) for `config`. With TLS, HTTP/2 is offered by
/// ALPN and used when the server takes it (Consul's HTTPS listener does): every request
/// of the pool is then a stream on one connection.
fn http_client(config: &ClientConfig, pinned: &[std::net::SocketAddr]) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        // No client-wide timeout: each request sets its own (blocking reads and
        // snapshots need far longer than ordinary calls).
        // A redirect would silently turn a PUT into a GET; Consul never sends one.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = &config.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::Config(format!("the CA is not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config("the CA holds no PEM certificate".into()));
        }
        // Only this CA: a server with a certificate from any public CA is refused.
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(name) = &config.tls_server_name {
        builder = builder.resolve_to_addrs(name, pinned);
    }
    builder.build().map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addresses: Vec<&str> = self.inner.addresses.iter().map(Url::as_str).collect();
        f.debug_struct("Client")
            .field("addresses", &addresses)
            .field("datacenter", &self.inner.datacenter)
            .field("token", &self.inner.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self> {
        if config.addresses.is_empty() {
            return Err(Error::Config("no Consul server address".into()));
        }
        let mut addresses = config.addresses.iter().map(|a| parse_address(a)).collect::<Result<Vec<_>>>()?;
        let pinned = match &config.tls_server_name {
            Some(name) => pin_to_server_name(&mut addresses, name)?,
            None => Vec::new(),
        };
        let http = http_client(&config, &pinned)?;
        let connections = Arc::new(Connections { config: ClientConfig { token: None, ..config.clone() }, pinned });
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                connections,
                addresses,
                preferred: Arc::new(AtomicUsize::new(0)),
                token: config.token.as_ref().map(token_header).transpose()?,
                datacenter: config.datacenter,
                request_timeout: config.request_timeout,
                snapshot_timeout: config.snapshot_timeout,
                retry: config.retry,
            }),
        })
    }

    /// The same cluster, connection pool and failover state, with another ACL token
    /// (e.g. the management token right after bootstrapping ACLs).
    pub fn with_token(&self, token: Token) -> Result<Self> {
        let inner = &self.inner;
        Ok(Self {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                connections: inner.connections.clone(),
                addresses: inner.addresses.clone(),
                preferred: inner.preferred.clone(),
                token: Some(token_header(&token)?),
                datacenter: inner.datacenter.clone(),
                request_timeout: inner.request_timeout,
                snapshot_timeout: inner.snapshot_timeout,
                retry: inner.retry.clone(),
            }),
        })
    }

    /// The same cluster, token and failover state, with another retry policy (e.g. a
    /// status probe that should report an unreachable cluster now, not in 30 s).
    pub fn with_retry(&self, retry: RetryPolicy) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                connections: inner.connections.clone(),
                addresses: inner.addresses.clone(),
                preferred: inner.preferred.clone(),
                token: inner.token.clone(),
                datacenter: inner.datacenter.clone(),
                request_timeout: inner.request_timeout,
                snapshot_timeout: inner.snapshot_timeout,
                retry,
            }),
        }
    }

    /// The same cluster, token, retry policy and failover state over a connection pool of
    /// its own. Over HTTP/2 every request of a pool is a stream on one connection, and a
    /// Go server (Consul) serves at most 250 streams at once on a connection by default:
    /// more long-held blocking queries than that need more pools.
    pub fn with_own_connections(&self) -> Result<Self> {
        let inner = &self.inner;
        Ok(Self {
            inner: Arc::new(Inner {
                http: http_client(&inner.connections.config, &inner.connections.pinned)?,
                connections: inner.connections.clone(),
                addresses: inner.addresses.clone(),
                preferred: inner.preferred.clone(),
                token: inner.token.clone(),
                datacenter: inner.datacenter.clone(),
                request_timeout: inner.request_timeout,
                snapshot_timeout: inner.snapshot_timeout,
                retry: inner.retry.clone(),
            }),
        })
    }

    /// The HTTP version the server answers this client with (`GET /v1/status/leader`):
    /// HTTP/2 when it serves HTTPS and took HTTP/2 by ALPN, HTTP/1.1 otherwise.
    pub async fn http_version(&self) -> Result<reqwest::Version> {
        let req = self.request(Method::GET, ["v1", "status", "leader"]);
        let resp = self.send(&req).await?;
        Ok(resp.version())
    }

    /// Whether requests carry an ACL token.
    pub fn has_token(&self) -> bool {
        self.inner.token.is_some()
    }

    pub fn addresses(&self) -> &[Url] {
        &self.inner.addresses
    }

    pub fn datacenter(&self) -> Option<&str> {
        self.inner.datacenter.as_deref()
    }

    pub(crate) fn snapshot_timeout(&self) -> Duration {
        self.inner.snapshot_timeout
    }

    /// A request with the client's datacenter; endpoint modules add the rest.
    pub(crate) fn request<S: Into<String>>(&self, method: Method, segments: impl IntoIterator<Item = S>) -> Request {
        let mut req = Request {
            method,
            segments: segments.into_iter().map(Into::into).collect(),
            params: Vec::new(),
            body: None,
            idempotency: Idempotency::Idempotent,
            hold: None,
            timeout: None,
        };
        if let Some(dc) = &self.inner.datacenter {
            req.params.push(("dc", Some(dc.clone())));
        }
        req
    }

    /// A read with `opts` (blocking index and wait, consistency, datacenter, filter).
    pub(crate) fn read<S: Into<String>>(&self, segments: impl IntoIterator<Item = S>, opts: &QueryOptions) -> Request {
        let mut req = self.request(Method::GET, segments);
        req.params = opts.params(self.inner.datacenter.as_deref());
        req.hold = opts.server_hold();
        req
    }

    /// Sends `req`, retrying and failing over per [`super::retry`], and reads the whole
    /// answer, whatever its status: a 5xx that was retried is an error once retries
    /// are spent, any other status is the caller's to interpret.
    pub(crate) async fn execute(&self, req: &Request) -> Result<Answer> {
        let resp = self.send(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let url = resp.url().to_string();
        let body = resp.bytes().await.map_err(|source| Error::Transport { url, source })?;
        Ok(Answer { status, headers, body })
    }

    /// Like [`Client::execute`] but leaves the body unread, for streamed answers.
    /// Failures while the caller reads the body are not retried.
    pub(crate) async fn send(&self, req: &Request) -> Result<reqwest::Response> {
        let inner = &self.inner;
        let policy = &inner.retry;
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut backoffs = 0u32;
        // Connection failures in a row: while some address is untried, fail over at once.
        let mut connect_failures = 0usize;
        loop {
            attempts += 1;
            let slot = inner.preferred.load(Ordering::Relaxed) % inner.addresses.len();
            let url = req.url(&inner.addresses[slot]);
            let (failure, error) = match self.attempt(req, url.clone()).await {
                Ok(resp) => match status_failure(resp.status()) {
                    Some(failure) if is_retryable(failure, req.idempotency) => {
                        let status = resp.status();
                        let body = resp.bytes().await.unwrap_or_default();
                        let error = Error::from_status(req.method.clone(), &req.path(), status, &body);
                        (failure, error)
                    }
                    // Success, or a failure that is the caller's to interpret.
                    _ => return Ok(resp),
                },
                Err(source) => {
                    let failure = if source.is_connect() { Failure::Connect } else { Failure::Transport };
                    let error = Error::Transport { url: url.to_string(), source };
                    // A certificate the CA does not vouch for stays refused on every
                    // retry; say so now instead of after the retry budget.
                    if error.is_tls_verify_failure() {
                        return Err(error);
                    }
                    (failure, error)
                }
            };
            if matches!(failure, Failure::Connect | Failure::Transport) {
                // Whatever comes next goes to the next server; compare_exchange so that
                // concurrent requests failing on the same server skip it only once.
                let next = (slot + 1) % inner.addresses.len();
                let _ = inner.preferred.compare_exchange(slot, next, Ordering::Relaxed, Ordering::Relaxed);
            }
            connect_failures = if failure == Failure::Connect { connect_failures + 1 } else { 0 };
            if !is_retryable(failure, req.idempotency) || attempts >= policy.max_attempts {
                return Err(error);
            }
            let delay = if failure == Failure::Connect && connect_failures < inner.addresses.len() {
                Duration::ZERO
            } else {
                backoffs += 1;
                policy.delay(backoffs, &mut rand::rng())
            };
            if started.elapsed() + delay > policy.max_elapsed {
                return Err(error);
            }
            tracing::debug!(
                method = %req.method,
                path = %req.path(),
                attempt = attempts,
                delay_ms = delay.as_millis() as u64,
                category = error.category(),
                error = %error,
                "retrying Consul request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Sends `req` with a body that cannot be replayed (a stream) once, to the server
    /// that answered last: no retry, no failover.
    pub(crate) async fn send_once_with_body(&self, req: &Request, body: reqwest::Body) -> Result<Answer> {
        let inner = &self.inner;
        let slot = inner.preferred.load(Ordering::Relaxed) % inner.addresses.len();
        let url = req.url(&inner.addresses[slot]);
        let transport = |source| Error::Transport { url: url.to_string(), source };
        let mut builder = inner
            .http
            .request(req.method.clone(), url.clone())
            .timeout(req.timeout.unwrap_or(inner.request_timeout))
            .body(body);
        if let Some(token) = &inner.token {
            builder = builder.header(TOKEN_HEADER, token.clone());
        }
        let resp = builder.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?;
        Ok(Answer { status, headers, body })
    }

    async fn attempt(&self, req: &Request, url: Url) -> reqwest::Result<reqwest::Response> {
        let inner = &self.inner;
        let timeout = req.timeout.unwrap_or_else(|| {
            // Blocking reads: the server holds the request for up to wait + wait/16.
            req.hold.unwrap_or_default() + inner.request_timeout
        });
        let mut builder = inner.http.request(req.method.clone(), url).timeout(timeout);
        if let Some(token) = &inner.token {
            builder = builder.header(TOKEN_HEADER, token.clone());
        }
        builder = match &req.body {
            Some(RequestBody::Json(bytes)) => builder.header(CONTENT_TYPE, "application/json").body(bytes.clone()),
            Some(RequestBody::Raw(bytes)) => builder.body(bytes.clone()),
            None => builder,
        };
        builder.send().await
    }

    /// A read whose answer is JSON; 404 is an error.
    pub(crate) async fn query<T: DeserializeOwned>(&self, req: &Request) -> Result<QueryResponse<T>> {
        let answer = self.execute(req).await?.success(req)?;
        let value = answer.json(req)?;
        Ok(QueryResponse::from_headers(&answer.headers, value))
    }

    /// A read whose answer is JSON, where 404 means "absent" (and still carries the
    /// index, so a blocking query can wait for the object to appear).
    pub(crate) async fn query_optional<T: DeserializeOwned>(&self, req: &Request) -> Result<QueryResponse<Option<T>>> {
        let answer = self.execute(req).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(QueryResponse::from_headers(&answer.headers, None));
        }
        let answer = answer.success(req)?;
        let value = answer.json(req)?;
        Ok(QueryResponse::from_headers(&answer.headers, value))
    }

    /// A write whose JSON answer is decoded.
    pub(crate) async fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<T> {
        self.execute(req).await?.success(req)?.json(req)
    }

    /// A write whose answer does not matter beyond success.
    pub(crate) async fn call_unit(&self, req: &Request) -> Result<()> {
        self.execute(req).await?.success(req).map(drop)
    }

    /// A write that answers `true` or `false` (KV and config-entry writes, deletes with
    /// `cas`). `false` with a CAS index is a [`Error::CasConflict`] on `what`.
    pub(crate) async fn call_bool(&self, req: &Request, what: &str, cas: Option<ConsulIndex>) -> Result<()> {
        let answer = self.execute(req).await?.success(req)?;
        // Some endpoints answer a bare `true`, others `{"Deleted":true}`; Consul's own Go
        // client looks for the word, and so do we.
        let text = String::from_utf8_lossy(&answer.body);
        if text.contains("true") {
            return Ok(());
        }
        match cas {
            Some(index) => Err(Error::CasConflict { what: what.to_owned(), index }),
            None => Err(Error::Http {
                method: req.method.clone(),
                path: req.path(),
                status: answer.status,
                message: format!("Consul refused the write: {}", super::error::first_line(&answer.body)),
            }),
        }
    }
}

fn token_header(token: &Token) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(token.expose_secret())
        .map_err(|_| Error::Config("the ACL token is not a valid header value".into()))?;
    // Keeps it out of hyper's and reqwest's Debug output (and so out of their logs).
    value.set_sensitive(true);
    Ok(value)
}

/// Rewrites each address `https://<ip>:<port>` to `https://<name>:<port>` and returns the
/// IPs the name must resolve to (the port always comes from the URL).
fn pin_to_server_name(addresses: &mut [Url], name: &str) -> Result<Vec<std::net::SocketAddr>> {
    let mut pinned = Vec::new();
    for url in addresses.iter_mut() {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip),
            _ => {
                return Err(Error::Config(format!(
                    "a TLS server name needs IP addresses, not {url} (give the name itself as the address instead)"
                )));
            }
        };
        let port = url.port_or_known_default().unwrap_or(443);
        url.set_host(Some(name)).map_err(|e| Error::Config(format!("invalid TLS server name {name:?}: {e}")))?;
        pinned.push(std::net::SocketAddr::new(ip, port));
    }
    Ok(pinned)
}

/// `127.0.0.1:8500` → `http://127.0.0.1:8500/`; an explicit `http(s)://` is kept.
pub(crate) fn parse_address(address: &str) -> Result<Url> {
    let with_scheme = if address.contains("://") { address.to_owned() } else { format!("http://{address}") };
    let url =
        Url::parse(&with_scheme).map_err(|e| Error::Config(format!("invalid Consul address {address:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::Config(format!("invalid Consul address {address:?}: want http(s)://host:port")));
    }
    Ok(url)
}

/// One HTTP call to make, kept whole so that a retry can send it again.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub method: Method,
    /// Path segments after the server's base URL, unencoded (`["v1", "kv", "a b"]`).
    pub segments: Vec<String>,
    /// Query parameters; `None` is a bare flag like `?recurse`.
    pub params: Vec<(&'static str, Option<String>)>,
    pub body: Option<RequestBody>,
    pub idempotency: Idempotency,
    /// How long the server may hold a blocking read.
    pub hold: Option<Duration>,
    /// Overrides the computed timeout (snapshots).
    pub timeout: Option<Duration>,
}

/// A request body. Its `Debug` shows the kind and size only: bodies carry KV values
/// (copied from Secrets) and token SecretIDs.
#[derive(Clone)]
pub(crate) enum RequestBody {
    Json(Bytes),
    Raw(Bytes),
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestBody::Json(b) => write!(f, "Json({} bytes)", b.len()),
            RequestBody::Raw(b) => write!(f, "Raw({} bytes)", b.len()),
        }
    }
}

impl Request {
    pub fn param(mut self, name: &'static str, value: impl ToString) -> Self {
        self.params.push((name, Some(value.to_string())));
        self
    }

    pub fn flag(mut self, name: &'static str) -> Self {
        self.params.push((name, None));
        self
    }

    pub fn json_body(mut self, body: &impl Serialize) -> Result<Self> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| Error::InvalidRequest(format!("cannot encode the request body: {e}")))?;
        self.body = Some(RequestBody::Json(bytes.into()));
        Ok(self)
    }

    pub fn raw_body(mut self, body: Bytes) -> Self {
        self.body = Some(RequestBody::Raw(body));
        self
    }

    pub fn not_idempotent(mut self) -> Self {
        self.idempotency = Idempotency::NotIdempotent;
        self
    }

    /// The path for errors and logs (no query: nothing secret is ever in it anyway, but
    /// filters and keys can be long).
    pub fn path(&self) -> String {
        format!("/{}", self.segments.join("/"))
    }

    pub fn url(&self, base: &Url) -> Url {
        let mut url = base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Each segment is percent-encoded on its own, so a `?` or `#` in a KV key
            // stays in the key; "." and ".." never get here (see `kv::key_segments`).
            path.pop_if_empty().extend(&self.segments);
        }
        if !self.params.is_empty() {
            let mut query = url.query_pairs_mut();
            for (name, value) in &self.params {
                match value {
                    Some(value) => query.append_pair(name, value),
                    None => query.append_key_only(name),
                };
            }
        }
        url
    }
}

/// A whole answer, any status.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// Anything but a 2xx becomes the matching [`Error`].
    pub fn success(self, req: &Request) -> Result<Self> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(Error::from_status(req.method.clone(), &req.path(), self.status, &self.body))
        }
    }

    pub fn json<T: DeserializeOwned>(&self, req: &Request) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            method: req.method.clone(),
            path: req.path(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_debug_never_shows_its_body() {
        let body = RequestBody::Json(bytes::Bytes::from_static(b"{\"SecretID\":\"b3a9c7e2-secret\"}"));
        let shown = format!("{:?}", Some(body));
        assert!(!shown.contains("b3a9"), "{shown}");
        assert!(shown.contains("bytes"), "{shown}");
        let raw = format!("{:?}", RequestBody::Raw(bytes::Bytes::from_static(b"hunter2")));
        assert_eq!(raw, "Raw(7 bytes)");
    }

    use super::*;

    fn client(addresses: &[&str]) -> Client {
        Client::new(ClientConfig::new(addresses.iter().copied())).expect("client")
    }

    #[test]
    fn addresses_get_a_scheme_and_keep_an_explicit_one() {
        assert_eq!(parse_address("127.0.0.1:8500").expect("ok").as_str(), "http://127.0.0.1:8500/");
        assert_eq!(parse_address("https://consul.example:8501").expect("ok").as_str(), "https://consul.example:8501/");
        assert!(parse_address("ftp://x").is_err());
        assert!(Client::new(ClientConfig::new(Vec::<String>::new())).is_err());
    }

    #[test]
    fn a_tls_server_name_replaces_ip_hosts_and_refuses_host_names() {
        let config = ClientConfig::new(["https://127.0.0.1:8501", "https://10.0.0.2:8502"]);
        let c = Client::new(config.clone().tls_server_name("server.dc1.consul")).expect("client");
        let urls: Vec<&str> = c.addresses().iter().map(Url::as_str).collect();
        assert_eq!(urls, vec!["https://server.dc1.consul:8501/", "https://server.dc1.consul:8502/"]);
        let named = ClientConfig::new(["https://consul.example:8501"]).tls_server_name("server.dc1.consul");
        let error = Client::new(named).expect_err("a host name cannot be pinned");
        assert!(error.to_string().contains("needs IP addresses"), "{error}");
    }

    #[test]
    fn urls_encode_segments_and_flags() {
        let c = client(&["127.0.0.1:8500"]);
        let req = c.request(Method::GET, ["v1", "kv", "app", "a b?c#d"]).flag("recurse").param("separator", "/");
        let base = &c.addresses()[0];
        assert_eq!(req.url(base).as_str(), "http://127.0.0.1:8500/v1/kv/app/a%20b%3Fc%23d?recurse&separator=%2F");
        assert_eq!(req.path(), "/v1/kv/app/a b?c#d");
    }

    #[test]
    fn a_base_path_is_kept_for_consul_behind_a_proxy() {
        let c = client(&["http://proxy:8080/consul/"]);
        let req = c.request(Method::GET, ["v1", "status", "leader"]);
        assert_eq!(req.url(&c.addresses()[0]).as_str(), "http://proxy:8080/consul/v1/status/leader");
    }

    #[test]
    fn reads_carry_the_client_datacenter_unless_overridden() {
        let c = Client::new(ClientConfig::new(["127.0.0.1:8500"]).datacenter("dc1")).expect("client");
        let base = &c.addresses()[0];
        let plain = c.read(["v1", "catalog", "services"], &QueryOptions::default());
        assert_eq!(plain.url(base).query(), Some("dc=dc1"));
        let other = c.read(
            ["v1", "catalog", "services"],
            &QueryOptions { datacenter: Some("dc2".into()), ..Default::default() },
        );
        assert_eq!(other.url(base).query(), Some("dc=dc2"));
        let write = c.request(Method::PUT, ["v1", "kv", "k"]);
        assert_eq!(write.url(base).query(), Some("dc=dc1"));
    }

    #[test]
    fn client_debug_redacts_the_token() {
        let c = Client::new(ClientConfig::new(["127.0.0.1:8500"]).token(Token::new("s3cr3t"))).expect("client");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[tokio::test]
    async fn a_dead_address_fails_over_to_the_next_one() {
        // A listener that answers like Consul's status endpoint, next to a closed port.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live = listener.local_addr().expect("addr");
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let body = "\"127.0.0.1:8300\"";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        let c = client(&[&dead.to_string(), &live.to_string()]);
        let req = c.request(Method::GET, ["v1", "status", "leader"]);
        let answer = c.execute(&req).await.expect("fails over");
        assert_eq!(answer.status, StatusCode::OK);
        // The next request goes straight to the live server.
        assert_eq!(c.inner.preferred.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn client_errors_are_returned_without_retrying() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let body = "Bad request: nope\nmore detail";
                let reply = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        let c = client(&[&addr.to_string()]);
        let req = c.request(Method::PUT, ["v1", "kv", "x"]);
        let err = c.call_unit(&req).await.expect_err("400");
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
        assert!(err.to_string().contains("Bad request: nope"), "{err}");
        assert!(!err.to_string().contains("more detail"));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}
