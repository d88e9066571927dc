//! A real Consul server cluster on loopback: N `consul agent -server` processes with their
//! own ports and data dirs, joined over Serf, started and checked until Raft has a leader,
//! every server is a healthy voter and a KV write goes through.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::Error;
use crate::ports::free_port;
use crate::process::{ServerProcess, ServerSpec};
use crate::wait::{Probe, http_client, until, with_port_retries};
use crate::workdir::WorkDir;

/// How long a cluster may take to elect a leader and settle.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What kind of Consul cluster to start. Build it with `..Default::default()`: fields may
/// be added.
///
/// ACL modes:
/// - `acl: false`: no ACLs (the default).
/// - `acl: true, bootstrap_acl: true`: ACLs on with `default_policy = "deny"` and a random
///   `initial_management` token, so Consul bootstraps itself; `management_token()`
///   returns it.
/// - `acl: true, bootstrap_acl: false`: ACLs on, deny by default, and *not* bootstrapped:
///   `management_token()` is `None` and `PUT /v1/acl/bootstrap` is left to the test (this
///   is what concord's own ACL bootstrap meets on a fresh cluster).
#[derive(Clone, Debug)]
pub struct ConsulOptions {
    /// Number of servers (`bootstrap_expect`); 3 by default.
    pub servers: usize,
    /// Enable ACLs with `default_policy = "deny"`.
    pub acl: bool,
    /// With `acl`, configure an initial management token (default true); see above.
    pub bootstrap_acl: bool,
    /// Where the `consul` binary is; `None` means [`crate::bin_dir`]. Tests use this
    /// instead of the process environment, which all tests in a process share.
    pub bin_dir: Option<PathBuf>,
    /// TLS on: HTTPS only (no plain HTTP) on each server's API port and verified
    /// internal RPC, with a fresh CA; see [`ConsulCluster::ca_pem`].
    pub tls: bool,
    /// Serve Consul's external gRPC API (plaintext) on a port of its own per server; see
    /// [`ConsulCluster::grpc_port`]. Off by default (`ports.grpc = -1`).
    pub grpc: bool,
}

impl Default for ConsulOptions {
    fn default() -> Self {
        ConsulOptions { servers: 3, acl: false, bootstrap_acl: true, bin_dir: None, tls: false, grpc: false }
    }
}

#[derive(Clone, Copy, Debug)]
struct Ports {
    http: u16,
    dns: u16,
    server: u16,
    serf_lan: u16,
    serf_wan: u16,
    /// Plaintext external gRPC, when [`ConsulOptions::grpc`] is on.
    grpc: Option<u16>,
}

impl Ports {
    fn pick() -> Result<Ports, Error> {
        Ok(Ports {
            http: free_port()?,
            dns: free_port()?,
            server: free_port()?,
            serf_lan: free_port()?,
            serf_wan: free_port()?,
            grpc: None,
        })
    }

    fn pick_with_grpc(grpc: bool) -> Result<Ports, Error> {
        let mut ports = Ports::pick()?;
        if grpc {
            ports.grpc = Some(free_port()?);
        }
        Ok(ports)
    }
}

#[derive(Debug)]
struct Server {
    spec: ServerSpec,
    ports: Ports,
    /// `https` with TLS, else `http`.
    scheme: &'static str,
    /// `None` while killed. A std mutex: never held across an await.
    process: Mutex<Option<ServerProcess>>,
}

impl Server {
    /// Server `i`: writes its config to `<dir>/server.json` and describes how to run it.
    fn with_config(i: usize, binary: &Path, dir: PathBuf, ports: Ports, config: &Value) -> Result<Server, Error> {
        let scheme = if config["ports"]["https"].as_i64().is_some_and(|p| p == i64::from(ports.http)) {
            "https"
        } else {
            "http"
        };
        let config_path = dir.join("server.json");
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| Error::io(format!("writing {}", config_path.display()), e))?;
        Ok(Server {
            spec: ServerSpec {
                what: format!("consul server s{i} ({scheme}://127.0.0.1:{})", ports.http),
                binary: binary.to_path_buf(),
                args: vec!["agent".into(), format!("-config-file={}", config_path.display())],
                log: dir.join("consul.log"),
                workdir: dir,
            },
            ports,
            scheme,
            process: Mutex::new(None),
        })
    }

    fn process(&self) -> MutexGuard<'_, Option<ServerProcess>> {
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn http(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.ports.http)
    }

    /// The address Raft knows this server by, as `/v1/status/*` reports it.
    fn raft_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.server)
    }
}

/// Where one server of [`ConsulCluster::start_with_configs`] lives on loopback: the
/// ports and data dir the harness picked for it, and every server's Serf LAN address.
#[derive(Clone, Debug)]
pub struct LoopbackServer {
    pub index: usize,
    pub http: u16,
    pub dns: u16,
    pub server: u16,
    pub serf_lan: u16,
    pub serf_wan: u16,
    pub data_dir: PathBuf,
    /// `127.0.0.1:<serf_lan>` of every server (this one included), in server order.
    pub serf_lan_addrs: Vec<String>,
}

/// A running Consul cluster. Dropping it SIGKILLs every server and removes its files.
pub struct ConsulCluster {
    servers: Vec<Server>,
    token: Option<String>,
    /// Whether the harness itself can write KV and read autopilot state (no ACLs, or a
    /// management token); an un-bootstrapped ACL cluster only answers `/v1/status`.
    privileged: bool,
    /// The CA (PEM) the servers' HTTPS certificates chain to, with TLS.
    ca_pem: Option<String>,
    dir: WorkDir,
}

impl std::fmt::Debug for ConsulCluster {
    // Hand-written so the management token never reaches test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulCluster")
            .field("http_addrs", &self.http_addrs())
            .field("management_token", &self.token.as_ref().map(|_| "***"))
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl ConsulCluster {
    /// Starts `opts.servers` servers and returns once every server sees the same leader,
    /// every server is a healthy Raft voter, and a KV write succeeds (the last two only
    /// when ACLs are off or bootstrapped). Fails within about 30 s per attempt.
    pub async fn start(opts: ConsulOptions) -> Result<ConsulCluster, Error> {
        if opts.servers == 0 {
            return Err(Error::InvalidOptions("a Consul cluster needs at least one server".into()));
        }
        let bin_dir = opts.bin_dir.clone().unwrap_or_else(crate::bin_dir);
        let binary = crate::binary_in(&bin_dir, "consul")?;
        let token = (opts.acl && opts.bootstrap_acl).then(random_uuid);
        let mut cluster = ConsulCluster {
            servers: Vec::new(),
            privileged: !opts.acl || token.is_some(),
            token,
            ca_pem: None,
            dir: WorkDir::create("consul")?,
        };
        let tls = match opts.tls {
            true => Some(crate::consul_tls::write_files(&cluster.dir, "dc1")?),
            false => None,
        };
        cluster.ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let started = Instant::now();
        let result = with_port_retries(async || {
            // Kill the previous attempt's servers before their data dirs are wiped.
            cluster.servers.clear();
            cluster.servers = cluster.configure(&binary, &opts, tls.as_ref())?;
            for server in &cluster.servers {
                *server.process() = Some(ServerProcess::spawn(&server.spec)?);
            }
            cluster.wait_converged(READY_TIMEOUT).await
        })
        .await;
        match result {
            Ok(()) => {
                tracing::info!(
                    servers = opts.servers,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    dir = %cluster.dir.path().display(),
                    "consul cluster ready"
                );
                Ok(cluster)
            }
            Err(error) => {
                // The error names a log file in the work dir; leave it there.
                cluster.dir.keep();
                Err(error)
            }
        }
    }

    /// Starts `servers` servers whose config files are whatever `config` returns for each
    /// (e.g. a config generated by the code under test, adapted to loopback), then waits
    /// as [`ConsulCluster::start`] does. The config must bind and advertise 127.0.0.1 and
    /// use the given ports and data dir: the readiness checks find servers by
    /// `127.0.0.1:<server>` and `http://127.0.0.1:<http>`. The harness writes KV and reads
    /// autopilot state only when the config does not enable ACLs.
    pub async fn start_with_configs(
        servers: usize,
        config: impl Fn(&LoopbackServer) -> Value,
    ) -> Result<ConsulCluster, Error> {
        Self::start_with_configs_and_ca(servers, None, config).await
    }

    /// Like [`ConsulCluster::start_with_configs`] for configs that serve HTTPS, with no
    /// plain HTTP, on each server's `http` port (`ports.https = http`, `ports.http = -1`):
    /// the harness checks readiness over HTTPS, trusting `ca_pem`.
    pub async fn start_with_tls_configs(
        servers: usize,
        ca_pem: String,
        config: impl Fn(&LoopbackServer) -> Value,
    ) -> Result<ConsulCluster, Error> {
        Self::start_with_configs_and_ca(servers, Some(ca_pem), config).await
    }

    async fn start_with_configs_and_ca(
        servers: usize,
        ca_pem: Option<String>,
        config: impl Fn(&LoopbackServer) -> Value,
    ) -> Result<ConsulCluster, Error> {
        if servers == 0 {
            return Err(Error::InvalidOptions("a Consul cluster needs at least one server".into()));
        }
        let binary = crate::binary_in(&crate::bin_dir(), "consul")?;
        let mut cluster = ConsulCluster {
            servers: Vec::new(),
            privileged: true,
            token: None,
            ca_pem,
            dir: WorkDir::create("consul")?,
        };
        let result = with_port_retries(async || {
            cluster.servers.clear();
            cluster.servers = cluster.configure_with(&binary, servers, &config)?;
            for server in &cluster.servers {
                *server.process() = Some(ServerProcess::spawn(&server.spec)?);
            }
            cluster.wait_converged(READY_TIMEOUT).await
        })
        .await;
        match result {
            Ok(()) => Ok(cluster),
            Err(error) => {
                cluster.dir.keep();
                Err(error)
            }
        }
    }

    fn configure_with(
        &mut self,
        binary: &Path,
        servers: usize,
        config: &impl Fn(&LoopbackServer) -> Value,
    ) -> Result<Vec<Server>, Error> {
        let ports = (0..servers).map(|_| Ports::pick()).collect::<Result<Vec<_>, _>>()?;
        let serf_lan_addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{}", p.serf_lan)).collect();
        let mut out = Vec::with_capacity(servers);
        for (i, own) in ports.iter().enumerate() {
            let dir = self.dir.fresh_subdir(&format!("s{i}"))?;
            let data_dir = self.dir.fresh_subdir(&format!("s{i}/data"))?;
            let layout = LoopbackServer {
                index: i,
                http: own.http,
                dns: own.dns,
                server: own.server,
                serf_lan: own.serf_lan,
                serf_wan: own.serf_wan,
                data_dir,
                serf_lan_addrs: serf_lan_addrs.clone(),
            };
            let config = config(&layout);
            if config["acl"]["enabled"] == true {
                self.privileged = false;
            }
            out.push(Server::with_config(i, binary, dir, *own, &config)?);
        }
        Ok(out)
    }

    /// Picks ports, writes each server's config file and empties its data dir.
    fn configure(
        &self,
        binary: &Path,
        opts: &ConsulOptions,
        tls: Option<&crate::consul_tls::TlsFiles>,
    ) -> Result<Vec<Server>, Error> {
        let ports = (0..opts.servers).map(|_| Ports::pick_with_grpc(opts.grpc)).collect::<Result<Vec<_>, _>>()?;
        let unique = self.dir.path().file_name().and_then(|n| n.to_str()).unwrap_or("consul").to_string();
        let mut servers = Vec::with_capacity(opts.servers);
        for (i, own) in ports.iter().enumerate() {
            let dir = self.dir.fresh_subdir(&format!("s{i}"))?;
            let data_dir = self.dir.fresh_subdir(&format!("s{i}/data"))?;
            let retry_join: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("127.0.0.1:{}", p.serf_lan))
                .collect();
            let mut config = json!({
                "server": true,
                "bootstrap_expect": opts.servers,
                // Unique across clusters, so logs and catalogs never mix servers up.
                "node_name": format!("s{i}-{unique}"),
                "datacenter": "dc1",
                "data_dir": data_dir,
                "bind_addr": "127.0.0.1",
                "advertise_addr": "127.0.0.1",
                "client_addr": "127.0.0.1",
                "retry_join": retry_join,
                // The default 30 s retry would stall start-up when a peer is slow to bind.
                "retry_interval": "500ms",
                "ports": {
                    "http": own.http,
                    "https": -1,
                    "dns": own.dns,
                    "server": own.server,
                    "serf_lan": own.serf_lan,
                    "serf_wan": own.serf_wan,
                    "grpc": own.grpc.map_or(-1, i32::from),
                    "grpc_tls": -1,
                },
                // Production-speed Raft timings instead of the conservative default of 5.
                "performance": { "raft_multiplier": 1 },
                // A restarted server is promoted back to voter after this, not the default 10 s.
                "autopilot": { "server_stabilization_time": "1s" },
                "ui_config": { "enabled": true },
                // Tests must not phone home.
                "disable_update_check": true,
                "log_level": "warn",
            });
            if opts.acl {
                let mut acl = json!({
                    "enabled": true,
                    "default_policy": "deny",
                    "enable_token_persistence": true,
                });
                if let Some(token) = &self.token {
                    // The agent token too, so servers can update their own catalog entries
                    // instead of logging "blocked by ACLs" every few seconds.
                    acl["tokens"] = json!({ "initial_management": token, "agent": token });
                }
                config["acl"] = acl;
            }
            if let Some(tls) = tls {
                crate::consul_tls::apply(&mut config, tls, own.http);
            }
            servers.push(Server::with_config(i, binary, dir, *own, &config)?);
        }
        Ok(servers)
    }

    /// HTTP base URL of server 0, e.g. `http://127.0.0.1:41234`.
    pub fn http_addr(&self) -> String {
        self.servers[0].http()
    }

    /// HTTP base URLs of all servers, in server order.
    pub fn http_addrs(&self) -> Vec<String> {
        self.servers.iter().map(Server::http).collect()
    }

    /// Plaintext gRPC port of server `i` (on 127.0.0.1) when started with
    /// [`ConsulOptions::grpc`], else `None`. Panics if `i` is out of range.
    pub fn grpc_port(&self, i: usize) -> Option<u16> {
        self.servers[i].ports.grpc
    }

    /// DNS address (UDP and TCP) of server `i`. Panics if `i` is out of range.
    pub fn dns_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.servers[i].ports.dns))
    }

    /// The CA (PEM) that signed the servers' HTTPS certificates, when TLS is on.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The initial management token when started with `acl` and `bootstrap_acl`.
    pub fn management_token(&self) -> Option<String> {
        self.token.clone()
    }

    /// Pids of the servers currently running (killed ones are absent).
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().filter_map(|s| s.process().as_ref().map(ServerProcess::pid)).collect()
    }

    /// The cluster's temporary directory: each server's config, data and `consul.log`
    /// live in `s<i>/`.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Index of the server that is Raft leader now, as reported by a running server;
    /// `None` while there is no leader or only a killed server is still reported.
    pub async fn leader_index(&self) -> Option<usize> {
        let client = http_client(self.ca_pem.as_deref()).ok()?;
        for server in self.servers.iter().filter(|s| s.process().is_some()) {
            if let Ok(addr) = self.get_json(&client, server, "/v1/status/leader").await
                && let Some(i) = self.running_index_of(addr.as_str().unwrap_or(""))
            {
                return Some(i);
            }
        }
        None
    }

    /// SIGKILLs server `i` (no graceful leave, as in a crash). Panics if `i` is out of range.
    pub fn kill(&self, i: usize) {
        let process = self.servers[i].process().take();
        if let Some(mut process) = process {
            tracing::info!(server = %self.servers[i].spec.what, "killing");
            process.kill();
        }
    }

    /// Starts server `i` again with its data dir and ports (killing it first if it is
    /// running), and waits until it is back as a healthy voter under a common leader.
    pub async fn restart(&self, i: usize) -> Result<(), Error> {
        self.kill(i);
        let process = ServerProcess::spawn(&self.servers[i].spec)?;
        *self.servers[i].process() = Some(process);
        self.wait_converged(READY_TIMEOUT).await
    }

    /// Waits until every running server reports the same leader, and that leader is a
    /// running server (followers keep naming a killed leader for a moment).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<(), Error> {
        let client = http_client(self.ca_pem.as_deref()).map_err(Error::HttpClient)?;
        until(timeout, async |after| match self.exited_error(after) {
            Some(error) => Probe::Failed(error),
            None => match self.common_leader(&client, after).await {
                Ok(_) => Probe::Ready(()),
                Err(error) => Probe::Waiting(error),
            },
        })
        .await
    }

    /// The running servers, with their indexes.
    fn running(&self) -> impl Iterator<Item = (usize, &Server)> {
        self.servers.iter().enumerate().filter(|(_, s)| s.process().is_some())
    }

    fn running_index_of(&self, raft_addr: &str) -> Option<usize> {
        self.running().find(|(_, s)| s.raft_addr() == raft_addr).map(|(i, _)| i)
    }

    /// An error if a server that should be running has exited.
    fn exited_error(&self, after: Duration) -> Option<Error> {
        self.servers.iter().find_map(|server| {
            let mut process = server.process();
            let process = process.as_mut()?;
            let status = process.exited()?;
            Some(process.exit_error(status, after))
        })
    }

    async fn get_json(&self, client: &reqwest::Client, server: &Server, path: &str) -> Result<Value, String> {
        let mut request = client.get(format!("{}{path}", server.http()));
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        let response = request.send().await.map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {path}: HTTP {status}"));
        }
        response.json().await.map_err(|e| format!("GET {path}: {e}"))
    }

    /// The leader every running server agrees on, if it is itself running.
    async fn common_leader(&self, client: &reqwest::Client, after: Duration) -> Result<usize, Error> {
        let mut agreed = None;
        for (_, server) in self.running() {
            let leader = self
                .get_json(client, server, "/v1/status/leader")
                .await
                .map_err(|e| server.spec_not_ready(after, &e))?;
            let leader = leader.as_str().unwrap_or("");
            let Some(index) = self.running_index_of(leader) else {
                let reason = if leader.is_empty() {
                    "no Raft leader yet".to_string()
                } else {
                    format!("reports leader {leader}, which is not a running server")
                };
                return Err(server.spec_not_ready(after, &reason));
            };
            match agreed {
                Some(other) if other != index => {
                    return Err(server.spec_not_ready(after, "servers disagree on the leader"));
                }
                _ => agreed = Some(index),
            }
        }
        agreed.ok_or_else(|| Error::InvalidOptions("no Consul server is running".into()))
    }

    /// The readiness check used by `start` and `restart`: a common running leader, every
    /// running server in every running server's Raft peer set, and (when the harness
    /// holds the rights) every running server a healthy voter and a KV write accepted.
    async fn wait_converged(&self, timeout: Duration) -> Result<(), Error> {
        let client = http_client(self.ca_pem.as_deref()).map_err(Error::HttpClient)?;
        until(timeout, async |after| {
            if let Some(error) = self.exited_error(after) {
                return Probe::Failed(error);
            }
            match self.converged(&client, after).await {
                Ok(()) => Probe::Ready(()),
                Err(error) => Probe::Waiting(error),
            }
        })
        .await
    }

    async fn converged(&self, client: &reqwest::Client, after: Duration) -> Result<(), Error> {
        let leader = self.common_leader(client, after).await?;
        let expected: Vec<String> = self.running().map(|(_, s)| s.raft_addr()).collect();
        for (_, server) in self.running() {
            let peers = self
                .get_json(client, server, "/v1/status/peers")
                .await
                .map_err(|e| server.spec_not_ready(after, &e))?;
            let peers: Vec<&str> =
                peers.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            if let Some(missing) = expected.iter().find(|addr| !peers.contains(&addr.as_str())) {
                return Err(server.spec_not_ready(
                    after,
                    &format!(
                        "Raft peers {peers:?} lack {missing} ({} of {} running servers)",
                        peers.len(),
                        expected.len()
                    ),
                ));
            }
        }
        if !self.privileged {
            return Ok(());
        }
        let leader = &self.servers[leader];
        let health = self
            .get_json(client, leader, "/v1/operator/autopilot/health")
            .await
            .map_err(|e| leader.spec_not_ready(after, &e))?;
        let healthy_voters: Vec<&str> = health["Servers"]
            .as_array()
            .map(|servers| {
                servers
                    .iter()
                    .filter(|s| s["Voter"] == true && s["Healthy"] == true)
                    .filter_map(|s| s["Address"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(missing) = expected.iter().find(|addr| !healthy_voters.contains(&addr.as_str())) {
            return Err(leader.spec_not_ready(after, &format!("autopilot: {missing} is not a healthy voter yet")));
        }
        self.probe_kv(client, leader).await.map_err(|e| leader.spec_not_ready(after, &e))
    }

    /// Writes and deletes a key: the cluster is only useful once writes commit.
    async fn probe_kv(&self, client: &reqwest::Client, server: &Server) -> Result<(), String> {
        let url = format!("{}/v1/kv/concord-testenv/ready-probe", server.http());
        for request in [client.put(&url).body("ok"), client.delete(&url)] {
            let request = match &self.token {
                Some(token) => request.header("X-Consul-Token", token),
                None => request,
            };
            let response = request.send().await.map_err(|e| format!("KV probe: {e}"))?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if !status.is_success() || body.trim() != "true" {
                return Err(format!("KV probe: HTTP {status} {body}"));
            }
        }
        Ok(())
    }
}

impl Server {
    fn spec_not_ready(&self, after: Duration, reason: &str) -> Error {
        crate::process::not_ready(&self.spec, after, reason)
    }
}

impl Drop for ConsulCluster {
    fn drop(&mut self) {
        // Kill before `dir` is removed (fields drop after this), so no server writes
        // into a directory being deleted.
        for server in &self.servers {
            if let Some(mut process) = server.process().take() {
                process.kill();
            }
        }
    }
}

/// A random UUIDv4: Consul wants token secrets in UUID form.
fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuid_is_a_v4_uuid() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, random_uuid());
    }
}
