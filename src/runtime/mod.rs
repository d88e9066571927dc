//! The `concord controller` process: parses its flags, connects to Kubernetes, serves
//! `/healthz`, `/readyz` and `/metrics`, runs every controller, and stops cleanly on
//! SIGTERM or Ctrl-C (in-flight reconciles finish, then the process exits).
pub mod context;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod readiness;
pub mod telemetry;

pub use context::Context;
pub use metrics::Metrics;
pub use readiness::Readiness;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Flags of `concord controller`; each also reads an environment variable.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "concord controller")]
pub struct ControllerArgs {
    /// Address of the /healthz, /readyz and /metrics endpoint.
    #[arg(long, env = "CONCORD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Log format: text or json.
    #[arg(long, env = "CONCORD_LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    pub log_format: telemetry::LogFormat,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CONCORD_NAMESPACE")]
    pub namespace: Option<String>,
    /// How long to wait for the CRDs to be Established before giving up.
    #[arg(long, env = "CONCORD_CRD_WAIT_SECONDS", default_value_t = 120)]
    pub crd_wait_seconds: u64,
    /// Where ConsulSnapshot objects may be stored (S3-compatible endpoint and credentials).
    #[command(flatten)]
    pub snapshot_store: crate::snapshot::StoreArgs,
    /// Reach a managed DiscoveryCluster's Consul at these URLs instead of its client
    /// Service (`http://<name>-client.<ns>.svc:8500`): `NAMESPACE/NAME=URL[,URL]`,
    /// repeatable (space-separated in the variable). This is how a controller running
    /// outside the cluster reaches Consul through `kubectl port-forward svc/<name>-client`.
    #[arg(long = "consul-address", env = "CONCORD_CONSUL_ADDRESS", value_delimiter = ' ')]
    pub consul_address: Vec<crate::cluster::AddressOverride>,
    /// Catalog sync defaults for an external DiscoveryCluster without `spec.sync`:
    /// sync Kubernetes Services to Consul.
    #[arg(long, env = "CONCORD_SYNC_TO_CONSUL")]
    pub sync_to_consul: bool,
    /// ... and sync Services that have no `concord.io/sync` annotation (else opt-in).
    #[arg(long, env = "CONCORD_SYNC_DEFAULT")]
    pub sync_default: bool,
    /// ... and mirror Consul services into Kubernetes.
    #[arg(long, env = "CONCORD_SYNC_TO_KUBERNETES")]
    pub sync_to_kubernetes: bool,
    /// ... into this namespace (default: the DiscoveryCluster's).
    #[arg(long, env = "CONCORD_SYNC_TARGET_NAMESPACE")]
    pub sync_target_namespace: Option<String>,
    /// Period of the catalog sync's full anti-entropy comparison when `spec.sync` does
    /// not set one (Go duration).
    #[arg(long, env = "CONCORD_SYNC_ANTI_ENTROPY", value_parser = parse_sync_interval)]
    pub sync_anti_entropy: Option<std::time::Duration>,
    /// Run the controllers only while this process holds a coordination.k8s.io Lease, so
    /// that of 2+ replicas exactly one writes (the others stand by, ready to take over).
    #[arg(long, env = "CONCORD_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the leader election Lease.
    #[arg(long, env = "CONCORD_LEASE_NAME", default_value = "concord-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the `--namespace` watched, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a Lease holds without renewal before a standby takes over (Go duration,
    /// whole seconds). The leader gives up after 2/3 of it without a renewal.
    #[arg(long, env = "CONCORD_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: std::time::Duration,
}

impl ControllerArgs {
    /// The leader election settings; the identity is `$POD_NAME` (or the host name) plus
    /// a random suffix, unique to this process.
    pub fn lease_config(&self) -> leader::LeaseConfig {
        leader::LeaseConfig {
            name: self.lease_name.clone(),
            namespace: self
                .lease_namespace
                .clone()
                .or_else(|| self.namespace.clone())
                .unwrap_or_else(|| "default".to_string()),
            identity: leader::identity(std::env::var("POD_NAME").ok()),
            duration: self.lease_duration,
        }
    }
}

fn parse_lease_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::resources::parse_duration(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(1) || d.subsec_nanos() != 0 {
        return Err(format!("{s}: a Lease duration is a whole number of seconds, at least 1s"));
    }
    Ok(d)
}

fn parse_sync_interval(s: &str) -> Result<std::time::Duration, String> {
    crate::resources::parse_duration(s).map_err(|e| e.to_string())
}

/// Why the controller process stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot load a Kubernetes config (kubeconfig or in-cluster): {0}")]
    KubeConfig(#[source] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the concord CRDs are not installed or not Established: {0}")]
    Crds(String),
    #[error("lost the leader Lease {0}; exiting so that this replica restarts as a standby")]
    LostLease(String),
}

/// Entry point of `concord controller`.
pub fn main(args: ControllerArgs) -> Result<(), String> {
    telemetry::init(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Runtime(e).to_string())?;
    let result = runtime.block_on(run(args, shutdown_signal()));
    // A leader that lost its Lease may leave a call hanging on an unreachable server:
    // drop it instead of waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map_err(|e| e.to_string())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still stops the controller");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs the controller until `shutdown` resolves, with the kubeconfig or in-cluster config.
pub async fn run(args: ControllerArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
    let client = kube::Client::try_default().await.map_err(RunError::KubeConfig)?;
    run_with_client(client, args, shutdown, None).await
}

/// Runs the controller with a given client until `shutdown` resolves. When `bound` is
/// given, the address the health/metrics server listens on is sent there (tests listen
/// on port 0).
pub async fn run_with_client(
    client: kube::Client,
    args: ControllerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| RunError::Listen { addr: args.listen, source })?;
    let local = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(addr = %local, "serving /healthz, /readyz and /metrics");
    if let Some(tx) = bound {
        let _ = tx.send(local);
    }

    // One shutdown signal fans out to the HTTP server and every controller.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested; finishing in-flight work");
        let _ = stop_tx.send(true);
    });
    let stopped = {
        let rx = stop_rx.clone();
        move || wait_stopped(rx.clone())
    };

    let server = tokio::spawn(http::serve(listener, metrics.clone(), readiness.clone(), stopped()));

    crate::crdgen::wait_established(&client, std::time::Duration::from_secs(args.crd_wait_seconds))
        .await
        .map_err(RunError::Crds)?;
    readiness.set("crds", true);

    if !args.leader_election {
        metrics.leader.set(1);
        let ctx = Arc::new(Context::new(client, metrics, readiness, args.clone()));
        crate::controllers::run_all(ctx, stopped).await;
        let _ = server.await;
        tracing::info!("stopped");
        return Ok(());
    }

    // Only the holder of the Lease runs controllers; their stop signal fires on shutdown
    // or when the Lease is lost.
    let lease = args.lease_config();
    let elector = leader::Elector::new(client.clone(), lease.clone());
    let ctx = Arc::new(Context::new(client, metrics.clone(), readiness.clone(), args.clone()));
    let outcome = leader::run_when_leader(elector, &metrics, &readiness, stop_rx.clone(), |ctl_rx| {
        crate::controllers::run_all(ctx, move || wait_stopped(ctl_rx.clone()))
    })
    .await;
    if outcome == leader::Outcome::Lost {
        server.abort();
        return Err(RunError::LostLease(format!("{}/{}", lease.namespace, lease.name)));
    }
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopped| *stopped).await;
}
