//! Real servers on loopback for concord's integration tests and local demo: a Consul
//! server cluster ([`ConsulCluster`]) and a Kubernetes control plane ([`KubeEnv`]: etcd,
//! kube-apiserver, optionally kube-controller-manager). No mocks stand in for either.
//!
//! Binaries come from `scripts/testenv.sh` (see [`bin_dir`]). Every server listens on
//! 127.0.0.1 on free ports, keeps its data and log under
//! `$TMPDIR/concord-testenv/<pid>-<n>-<label>/`, and dies with the test process even
//! when that process is SIGKILLed (each runs under `setpriv --pdeathsig KILL`).
//!
//! Tests use `#[tokio::test]`, one runtime per test, while [`shared_kube`] and
//! [`shared_consul`] live for the whole process; so nothing here stores runtime-bound
//! state (clients are made per call, processes are `std::process::Child`).

mod certs;
mod consul;
mod consul_tls;
mod error;
mod fault;
mod kubernetes;
mod netns;
mod netns_consul;
mod ports;
mod process;
mod wait;
mod workdir;

use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

pub use consul::{ConsulCluster, ConsulOptions, LoopbackServer};
pub use error::Error;
pub use fault::{Direction, Fault, FaultProxy};
pub use kubernetes::{KubeEnv, KubeOptions};
pub use netns::{Host, NETNS_PREFIX, NetHosts, list_netns, sweep_leftovers};
pub use netns_consul::NetConsul;
pub use ports::free_port;

/// Where the server binaries are: `$CONCORD_TESTENV_BIN`, else
/// `$CONCORD_TESTENV_DIR/bin`, else `$HOME/.cache/concord-testenv/bin` (the defaults of
/// `scripts/testenv.sh`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONCORD_TESTENV_BIN") {
        return PathBuf::from(dir);
    }
    let cache = match std::env::var_os("CONCORD_TESTENV_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache/concord-testenv"),
    };
    cache.join("bin")
}

/// The path of server binary `name` in [`bin_dir`], or [`Error::MissingBinary`].
pub fn binary(name: &str) -> Result<PathBuf, Error> {
    binary_in(&bin_dir(), name)
}

pub(crate) fn binary_in(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    // is_file follows the symlinks scripts/testenv.sh installs, so a dangling one counts
    // as missing.
    if path.is_file() { Ok(path) } else { Err(Error::MissingBinary { name: name.to_string(), dir: dir.to_path_buf() }) }
}

// Shared environments keep the start error (as text, since `Error` is not `Clone`) so that
// after one failed start every later test fails at once instead of retrying for a minute.
static SHARED_KUBE: OnceCell<Result<KubeEnv, String>> = OnceCell::const_new();
static SHARED_KUBE_WITH_CONTROLLERS: OnceCell<Result<KubeEnv, String>> = OnceCell::const_new();
static SHARED_CONSUL: OnceCell<Result<ConsulCluster, String>> = OnceCell::const_new();

fn or_panic<T>(shared: &'static Result<T, String>, what: &str) -> &'static T {
    match shared {
        Ok(value) => value,
        Err(error) => panic!("shared {what} did not start: {error}"),
    }
}

/// etcd + kube-apiserver started once per test process, on first use, and never stopped
/// (the servers die with the process). Use [`KubeEnv::create_namespace`] for isolation.
///
/// Panics if it cannot start; every later caller panics with the same message.
pub async fn shared_kube() -> &'static KubeEnv {
    let shared = SHARED_KUBE
        .get_or_init(|| async { KubeEnv::start(KubeOptions::default()).await.map_err(|e| e.to_string()) })
        .await;
    or_panic(shared, "Kubernetes control plane")
}

/// Like [`shared_kube`] but a separate control plane that also runs
/// kube-controller-manager (StatefulSets, EndpointSlices, garbage collection).
pub async fn shared_kube_with_controllers() -> &'static KubeEnv {
    let shared = SHARED_KUBE_WITH_CONTROLLERS
        .get_or_init(|| async {
            let opts = KubeOptions { controller_manager: true, ..KubeOptions::default() };
            KubeEnv::start(opts).await.map_err(|e| e.to_string())
        })
        .await;
    or_panic(shared, "Kubernetes control plane with controllers")
}

/// A 3-server Consul cluster without ACLs, started once per test process on first use
/// and never stopped. Tests that kill servers or need ACLs start their own.
pub async fn shared_consul() -> &'static ConsulCluster {
    let shared = SHARED_CONSUL
        .get_or_init(|| async { ConsulCluster::start(ConsulOptions::default()).await.map_err(|e| e.to_string()) })
        .await;
    or_panic(shared, "Consul cluster")
}

static SHARED_CONSUL_TLS: OnceCell<Result<ConsulCluster, String>> = OnceCell::const_new();

/// Like [`shared_consul`] but with TLS on (HTTPS only, verified internal RPC); its CA is
/// [`ConsulCluster::ca_pem`].
pub async fn shared_consul_tls() -> &'static ConsulCluster {
    let shared = SHARED_CONSUL_TLS
        .get_or_init(|| async {
            let opts = ConsulOptions { tls: true, ..ConsulOptions::default() };
            ConsulCluster::start(opts).await.map_err(|e| e.to_string())
        })
        .await;
    or_panic(shared, "Consul cluster with TLS")
}
