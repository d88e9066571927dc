//! Test hosts with addresses of their own: network namespaces on this machine, joined by
//! a bridge, so that a test can cut the network between chosen processes (a partition)
//! instead of killing them.
//!
//! Layout of one [`NetHosts`] (`k` picks a free `10.213.k.0/24`):
//!
//! ```text
//!  root namespace (the test process)        namespace concord-<pid>-<n>-br
//!   ccr<k>  10.213.k.1/24  <--- veth --->   bridge br0
//!                                             |-- p0 <--- veth ---> eth0 10.213.k.10  concord-<pid>-<n>-h0
//!                                             |-- p1 <--- veth ---> eth0 10.213.k.11  concord-<pid>-<n>-h1
//!                                             ...
//! ```
//!
//! The bridge lives in a namespace of its own, so deleting the namespaces removes every
//! interface and route this made (a veth dies with either end's namespace): nothing is
//! left in the root namespace but for a moment the route of `ccr<k>`.
//!
//! Faults:
//! - [`NetHosts::partition`]: iptables DROP rules in the hosts' namespaces between two
//!   groups of hosts, both ways; packets vanish silently, as on a real partition (no RST,
//!   no ICMP, so senders wait for their timeouts);
//! - [`NetHosts::cut_from_root`]: a host loses the test process (and the controller in it)
//!   while still reaching the other hosts;
//! - [`NetHosts::isolate`]: the host's bridge port goes down: it reaches nobody;
//! - [`NetHosts::heal`]: all of the above undone.
//!
//! Bounded and removed: [`NetHosts`] is deleted (processes in its namespaces killed, the
//! namespaces removed) when dropped, which happens when a test panics too; after the
//! `lifetime` given to [`NetHosts::create`] a watchdog thread deletes it even if it was
//! leaked; and the first [`NetHosts::create`] of a process sweeps `concord-<pid>-*`
//! namespaces whose process is gone (a test process that was SIGKILLed).
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2's `ip` and `iptables`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::Duration;

use crate::error::Error;

/// Namespaces this module makes are named `concord-<pid>-<n>-<role>`.
pub const NETNS_PREFIX: &str = "concord-";

static NEXT: AtomicU64 = AtomicU64::new(0);
static SWEEP: Once = Once::new();
/// One creation at a time in this process: picking a free subnet and taking it is not
/// atomic.
static CREATING: Mutex<()> = Mutex::new(());

/// One test host: a network namespace with one address.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// The namespace's name, as `ip netns` knows it.
    pub netns: String,
    pub addr: Ipv4Addr,
}

struct Inner {
    id: String,
    router: String,
    hosts: Vec<Host>,
    gateway: Ipv4Addr,
    deleted: Mutex<bool>,
}

impl Inner {
    /// Kills what runs in the namespaces and deletes them; idempotent.
    fn delete(&self) {
        let mut deleted = self.deleted.lock().unwrap_or_else(PoisonError::into_inner);
        if *deleted {
            return;
        }
        *deleted = true;
        for ns in self.hosts.iter().map(|h| h.netns.as_str()).chain([self.router.as_str()]) {
            delete_netns(ns);
        }
        tracing::info!(id = %self.id, "test hosts deleted");
    }
}

/// A set of test hosts on one bridge; deleted when dropped.
pub struct NetHosts {
    inner: Arc<Inner>,
    watchdog: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl std::fmt::Debug for NetHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHosts").field("id", &self.inner.id).field("hosts", &self.inner.hosts).finish()
    }
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running ip {}", args.join(" ")), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::InvalidOptions(format!(
            "ip {} failed: {}",
            args.join(" "),
            crate::error::one_line(&String::from_utf8_lossy(&out.stderr))
        )))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Kills every process in namespace `ns` and deletes it.
fn delete_netns(ns: &str) {
    for pid in ip_output(&["netns", "pids", ns]).split_whitespace() {
        if let Some(pid) = pid.parse::<i32>().ok().and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = ip(&["netns", "delete", ns]);
}

/// Names of the namespaces `ip netns list` shows.
pub fn list_netns() -> Vec<String> {
    ip_output(&["netns", "list"]).lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

/// Deletes `concord-<pid>-*` namespaces whose process no longer runs; returns their names.
pub fn sweep_leftovers() -> Vec<String> {
    let mut swept = Vec::new();
    for ns in list_netns() {
        let Some(rest) = ns.strip_prefix(NETNS_PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if PathBuf::from(format!("/proc/{pid}")).exists() {
            continue;
        }
        delete_netns(&ns);
        swept.push(ns);
    }
    if !swept.is_empty() {
        tracing::warn!(?swept, "removed test host namespaces left by dead test processes");
    }
    swept
}

/// A `/24` under 10.213.0.0/16 that no interface of the root namespace uses.
fn free_subnet() -> Result<u8, Error> {
    let used = ip_output(&["-o", "-4", "addr", "show"]);
    let routes = ip_output(&["-4", "route", "show"]);
    let start = (std::process::id() % 200) as u8;
    (0..250u16)
        .map(|i| ((start as u16 + i) % 250 + 1) as u8)
        .find(|k| {
            let net = format!("10.213.{k}.");
            !used.contains(&net) && !routes.contains(&net)
        })
        .ok_or_else(|| Error::InvalidOptions("no free 10.213.x.0/24 subnet for test hosts".into()))
}

impl NetHosts {
    /// Creates one namespace per name, each with address `10.213.k.(10+i)`, on a bridge the
    /// root namespace reaches at [`NetHosts::gateway`]. Deleted after `lifetime` at the
    /// latest.
    pub fn create(names: &[&str], lifetime: Duration) -> Result<NetHosts, Error> {
        if names.is_empty() || names.len() > 200 {
            return Err(Error::InvalidOptions(format!("{} test hosts: between 1 and 200", names.len())));
        }
        SWEEP.call_once(|| {
            sweep_leftovers();
        });
        let _creating = CREATING.lock().unwrap_or_else(PoisonError::into_inner);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let k = free_subnet()?;
        let router = format!("{NETNS_PREFIX}{id}-br");
        let gateway = Ipv4Addr::new(10, 213, k, 1);
        let hosts: Vec<Host> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Host {
                name: name.to_string(),
                netns: format!("{NETNS_PREFIX}{id}-h{i}"),
                addr: Ipv4Addr::new(10, 213, k, 10 + i as u8),
            })
            .collect();
        let inner =
            Arc::new(Inner { id: id.clone(), router: router.clone(), hosts, gateway, deleted: Mutex::new(false) });
        // From here on, a failure deletes what was made so far (the namespaces).
        let made = NetHosts { inner: inner.clone(), watchdog: None };
        let root_if = format!("ccr{k}");
        let temp = format!("ccq{k}");
        let r = router.as_str();
        ip(&["netns", "add", r])?;
        ip(&["-n", r, "link", "set", "lo", "up"])?;
        ip(&["-n", r, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", r, "link", "set", "br0", "up"])?;
        // Leftover of a crashed creation with the same subnet number.
        let _ = ip(&["link", "delete", &root_if]);
        ip(&["link", "add", &root_if, "type", "veth", "peer", "name", &temp])?;
        ip(&["link", "set", &temp, "netns", r])?;
        ip(&["-n", r, "link", "set", &temp, "name", "up0"])?;
        ip(&["-n", r, "link", "set", "up0", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &root_if])?;
        ip(&["link", "set", &root_if, "up"])?;
        for (i, host) in inner.hosts.iter().enumerate() {
            let h = host.netns.as_str();
            let port = format!("p{i}");
            ip(&["netns", "add", h])?;
            ip(&["-n", h, "link", "set", "lo", "up"])?;
            ip(&["-n", r, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", h])?;
            ip(&["-n", r, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", h, "addr", "add", &format!("{}/24", host.addr), "dev", "eth0"])?;
            ip(&["-n", h, "link", "set", "eth0", "up"])?;
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let watched = inner.clone();
        let thread = std::thread::Builder::new()
            .name(format!("netns-watchdog-{id}"))
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(lifetime) {
                    tracing::warn!(id = %watched.id, ?lifetime, "test hosts reached their lifetime; deleting them");
                    watched.delete();
                }
            })
            .map_err(|e| Error::io("starting the test hosts' watchdog", e))?;
        let mut made = made;
        made.watchdog = Some((stop, thread));
        tracing::info!(%id, subnet = %format!("10.213.{k}.0/24"), hosts = names.len(), "test hosts created");
        Ok(made)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.inner.hosts
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.inner.hosts[i]
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.inner.hosts[i].addr
    }

    /// The root namespace's address on the bridge (where the test process is seen from).
    pub fn gateway(&self) -> Ipv4Addr {
        self.inner.gateway
    }

    /// A command that runs `program` inside host `i`'s namespace (`ip netns exec`, which
    /// execs the program itself, so its pid is the program's).
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.inner.hosts[i].netns]).arg(program);
        command
    }

    /// Runs `f` on a thread that has entered host `i`'s namespace: sockets it creates
    /// belong to that namespace for their whole life (e.g. a listener bound to the host's
    /// address, or a connection made from the host).
    pub fn within<T: Send + 'static>(&self, i: usize, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let path = format!("/run/netns/{}", self.inner.hosts[i].netns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(format!("opening {path}"), e))?;
            // setns(2) changes only this (short-lived) thread's network namespace.
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| Error::io(format!("entering {path}"), e.into()))?;
            Ok(f())
        })
        .join()
        .map_err(|_| Error::InvalidOptions("a closure run inside a test host panicked".into()))?
    }

    /// A TCP listener on host `i`'s address (port 0 picks one).
    pub fn listen(&self, i: usize, port: u16) -> Result<TcpListener, Error> {
        let addr = SocketAddr::from((self.addr(i), port));
        self.within(i, move || TcpListener::bind(addr))?.map_err(|e| Error::io(format!("binding {addr}"), e))
    }

    /// Whether host `from` opens a TCP connection to `to` within `timeout`.
    pub fn can_connect(&self, from: usize, to: SocketAddr, timeout: Duration) -> bool {
        self.within(from, move || TcpStream::connect_timeout(&to, timeout).is_ok()).unwrap_or(false)
    }

    /// Drops all traffic between every host of `a` and every host of `b`, both ways, until
    /// [`NetHosts::heal`]. Traffic within each group and with the root namespace flows.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<(), Error> {
        for &x in a {
            for &y in b {
                self.drop_between(x, self.addr(y))?;
                self.drop_between(y, self.addr(x))?;
            }
        }
        Ok(())
    }

    /// Host `i` no longer reaches the root namespace (nor is reached from it), but still
    /// reaches the other hosts.
    pub fn cut_from_root(&self, i: usize) -> Result<(), Error> {
        self.drop_between(i, self.gateway())
    }

    /// Host `i` reaches nobody: its port on the bridge goes down.
    pub fn isolate(&self, i: usize) -> Result<(), Error> {
        ip(&["-n", &self.inner.router, "link", "set", &format!("p{i}"), "down"])
    }

    /// Undoes every partition, cut and isolation.
    pub fn heal(&self) -> Result<(), Error> {
        for (i, host) in self.inner.hosts.iter().enumerate() {
            ip(&["netns", "exec", &host.netns, "iptables", "-w", "-F", "INPUT"])?;
            ip(&["netns", "exec", &host.netns, "iptables", "-w", "-F", "OUTPUT"])?;
            ip(&["-n", &self.inner.router, "link", "set", &format!("p{i}"), "up"])?;
        }
        Ok(())
    }

    /// Host `host` drops every packet to and from `peer` (iptables in its namespace).
    fn drop_between(&self, host: usize, peer: Ipv4Addr) -> Result<(), Error> {
        let netns = self.inner.hosts[host].netns.as_str();
        let peer = format!("{peer}/32");
        ip(&["netns", "exec", netns, "iptables", "-w", "-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
        ip(&["netns", "exec", netns, "iptables", "-w", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"])
    }

    /// The namespaces of this set (hosts and the bridge's).
    pub fn namespaces(&self) -> Vec<String> {
        self.inner.hosts.iter().map(|h| h.netns.clone()).chain([self.inner.router.clone()]).collect()
    }
}

impl Drop for NetHosts {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.watchdog.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
        self.inner.delete();
    }
}
