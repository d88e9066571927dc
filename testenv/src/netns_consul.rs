//! A Consul server cluster on [`NetHosts`]: server `i` runs in host `i`'s namespace on
//! Consul's standard ports at the host's own address, so partitions between hosts are
//! partitions between Consul servers. Separate from [`crate::ConsulCluster`] (loopback,
//! many clusters side by side) on purpose: the faults here are network faults.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::Error;
use crate::netns::NetHosts;
use crate::process::{ServerProcess, ServerSpec};
use crate::wait::{Probe, http_client, until};
use crate::workdir::WorkDir;

pub const HTTP_PORT: u16 = 8500;
const SERVER_PORT: u16 = 8300;
const SERF_LAN_PORT: u16 = 8301;

/// How long a cluster may take to elect a leader and settle.
const READY_TIMEOUT: Duration = Duration::from_secs(40);

fn ip_binary() -> Result<PathBuf, Error> {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingBinary { name: "ip (iproute2)".into(), dir: PathBuf::from("/usr/sbin") })
}

/// A running Consul cluster, one server per test host; servers are SIGKILLed and files
/// removed when dropped (before the hosts, which the caller owns, are deleted).
pub struct NetConsul {
    addrs: Vec<Ipv4Addr>,
    specs: Vec<ServerSpec>,
    processes: Vec<Mutex<Option<ServerProcess>>>,
    dir: WorkDir,
}

impl std::fmt::Debug for NetConsul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConsul").field("addrs", &self.addrs).field("dir", &self.dir.path()).finish()
    }
}

impl NetConsul {
    /// Starts one server on each of the first `servers` hosts and waits until they agree
    /// on a leader, every one is in the Raft peer set and a KV write commits.
    pub async fn start(hosts: &NetHosts, servers: usize) -> Result<NetConsul, Error> {
        if servers == 0 || servers > hosts.hosts().len() {
            return Err(Error::InvalidOptions(format!("{servers} Consul servers on {} hosts", hosts.hosts().len())));
        }
        let consul = crate::binary("consul")?;
        let ip = ip_binary()?;
        let dir = WorkDir::create("netconsul")?;
        let addrs: Vec<Ipv4Addr> = (0..servers).map(|i| hosts.addr(i)).collect();
        let mut specs = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let sdir = dir.fresh_subdir(&format!("s{i}"))?;
            let data = dir.fresh_subdir(&format!("s{i}/data"))?;
            let join: Vec<String> =
                addrs.iter().filter(|a| *a != addr).map(|a| format!("{a}:{SERF_LAN_PORT}")).collect();
            let config = json!({
                "server": true,
                "bootstrap_expect": servers,
                "node_name": format!("n{i}-{}", dir.path().file_name().and_then(|n| n.to_str()).unwrap_or("netconsul")),
                "datacenter": "dc1",
                "data_dir": data,
                "bind_addr": addr.to_string(),
                "advertise_addr": addr.to_string(),
                "client_addr": addr.to_string(),
                "retry_join": join,
                "retry_interval": "500ms",
                "ports": { "http": HTTP_PORT, "https": -1, "dns": 8600, "server": SERVER_PORT,
                           "serf_lan": SERF_LAN_PORT, "serf_wan": 8302, "grpc": -1, "grpc_tls": -1 },
                "performance": { "raft_multiplier": 1 },
                "autopilot": { "server_stabilization_time": "1s" },
                "disable_update_check": true,
                "log_level": "warn",
            });
            let config_path = sdir.join("server.json");
            std::fs::write(&config_path, config.to_string())
                .map_err(|e| Error::io(format!("writing {}", config_path.display()), e))?;
            specs.push(ServerSpec {
                what: format!("consul server n{i} (http://{addr}:{HTTP_PORT} in {})", hosts.host(i).netns),
                binary: ip.clone(),
                args: vec![
                    "netns".into(),
                    "exec".into(),
                    hosts.host(i).netns.clone(),
                    consul.display().to_string(),
                    "agent".into(),
                    format!("-config-file={}", config_path.display()),
                ],
                log: sdir.join("consul.log"),
                workdir: sdir,
            });
        }
        let cluster = NetConsul { addrs, processes: specs.iter().map(|_| Mutex::new(None)).collect(), specs, dir };
        for i in 0..servers {
            cluster.spawn(i)?;
        }
        cluster.wait_converged(READY_TIMEOUT).await?;
        Ok(cluster)
    }

    fn process(&self, i: usize) -> MutexGuard<'_, Option<ServerProcess>> {
        self.processes[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self, i: usize) -> Result<(), Error> {
        let process = ServerProcess::spawn(&self.specs[i])?;
        *self.process(i) = Some(process);
        Ok(())
    }

    /// `http://<host address>:8500` of every server, in order.
    pub fn http_addrs(&self) -> Vec<String> {
        self.addrs.iter().map(|a| format!("http://{a}:{HTTP_PORT}")).collect()
    }

    pub fn servers(&self) -> usize {
        self.addrs.len()
    }

    /// The directory holding every server's config, data and `consul.log`.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs server `i` (a crash).
    pub fn kill(&self, i: usize) {
        if let Some(mut p) = self.process(i).take() {
            p.kill();
        }
    }

    /// Starts server `i` again with its data (it must be killed first), without waiting.
    pub fn start_again(&self, i: usize) -> Result<(), Error> {
        if self.process(i).is_some() {
            return Ok(());
        }
        self.spawn(i)
    }

    /// Which server `server i` says is the Raft leader, if it answers and knows one.
    pub async fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let client = http_client(None).ok()?;
        let url = format!("http://{}:{HTTP_PORT}/v1/status/leader", self.addrs[i]);
        let leader: String = client.get(url).send().await.ok()?.json().await.ok()?;
        self.addrs.iter().position(|a| leader == format!("{a}:{SERVER_PORT}"))
    }

    /// The leader every running server agrees on.
    pub async fn leader(&self) -> Option<usize> {
        let mut agreed = None;
        for i in (0..self.servers()).filter(|i| self.process(*i).is_some()) {
            let seen = self.leader_seen_by(i).await?;
            if agreed.is_some_and(|a| a != seen) {
                return None;
            }
            agreed = Some(seen);
        }
        agreed
    }

    /// Waits until every running server agrees on a running leader, sees all running
    /// servers as Raft peers, and a KV write through the leader commits.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<(), Error> {
        let client = http_client(None).map_err(Error::HttpClient)?;
        until(timeout, async |after| {
            for i in 0..self.servers() {
                let mut process = self.process(i);
                if let Some(p) = process.as_mut()
                    && let Some(status) = p.exited()
                {
                    return Probe::Failed(p.exit_error(status, after));
                }
            }
            match self.converged(&client).await {
                Ok(()) => Probe::Ready(()),
                Err(reason) => Probe::Waiting(crate::process::not_ready(&self.specs[0], after, &reason)),
            }
        })
        .await
    }

    async fn converged(&self, client: &reqwest::Client) -> Result<(), String> {
        let leader = self.leader().await.ok_or("the servers do not agree on a leader")?;
        if self.process(leader).is_none() {
            return Err(format!("the leader n{leader} is not running"));
        }
        let running: Vec<usize> = (0..self.servers()).filter(|i| self.process(*i).is_some()).collect();
        for &i in &running {
            let url = format!("http://{}:{HTTP_PORT}/v1/status/peers", self.addrs[i]);
            let peers: Vec<String> =
                client.get(url).send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
            for &j in &running {
                let want = format!("{}:{SERVER_PORT}", self.addrs[j]);
                if !peers.contains(&want) {
                    return Err(format!("n{i}'s Raft peers {peers:?} lack {want}"));
                }
            }
        }
        let url = format!("http://{}:{HTTP_PORT}/v1/kv/concord-testenv/ready-probe", self.addrs[leader]);
        let body = client.put(url).body("ok").send().await.map_err(|e| e.to_string())?;
        let body: Value = body.json().await.map_err(|e| e.to_string())?;
        if body != Value::Bool(true) {
            return Err(format!("KV probe answered {body}"));
        }
        Ok(())
    }
}

impl Drop for NetConsul {
    fn drop(&mut self) {
        for i in 0..self.servers() {
            self.kill(i);
        }
    }
}
