//! The `concord controller` process: parses its flags, connects to Kubernetes, serves
//! `/healthz`, `/readyz` and `/metrics`, runs the controllers it is handed, and stops cleanly on
//! SIGTERM or Ctrl-C (in-flight reconciles finish, then the process exits).
pub mod http;
pub mod leader;

use crate::context::{Context, ControllerArgs, Metrics, Readiness, Runner, telemetry};

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

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
pub fn main(args: ControllerArgs, controllers: Vec<Runner>) -> Result<(), String> {
    telemetry::init(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Runtime(e).to_string())?;
    let result = runtime.block_on(run(args, controllers, shutdown_signal()));
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
pub async fn run(
    args: ControllerArgs,
    controllers: Vec<Runner>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let config = kube::Config::infer().await.map_err(|e| RunError::KubeConfig(kube::Error::InferConfig(e)))?;
    let mut args = args;
    // ACLAuthMethods default to the API server as concord itself reaches it.
    if args.kubernetes_api_host.is_none() {
        args.kubernetes_api_host = Some(config.cluster_url.to_string().trim_end_matches('/').to_string());
    }
    args.kubernetes_api_ca_pem = config.root_cert.as_deref().map(pem_bundle);
    let client = kube::Client::try_from(config).map_err(RunError::KubeConfig)?;
    run_with_client(client, args, controllers, shutdown, None).await
}

/// DER certificates as one PEM bundle (what Consul's `CACert` takes).
fn pem_bundle(certs: &[Vec<u8>]) -> String {
    use base64::Engine;
    let mut pem = String::new();
    for der in certs {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// Runs the controller with a given client until `shutdown` resolves. When `bound` is
/// given, the address the health/metrics server listens on is sent there (tests listen
/// on port 0).
pub async fn run_with_client(
    client: kube::Client,
    args: ControllerArgs,
    controllers: Vec<Runner>,
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
        run_all(ctx, &controllers, stopped).await;
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
        run_all(ctx, &controllers, move || wait_stopped(ctl_rx.clone()))
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

/// Runs every controller handed in until `stopped()` resolves; returns when all have stopped.
async fn run_all<F>(ctx: Arc<Context>, controllers: &[Runner], stopped: impl Fn() -> F)
where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    futures::future::join_all(controllers.iter().map(|c| {
        tracing::debug!(controller = c.name, "starting");
        tokio::spawn((c.run)(ctx.clone(), Box::pin(stopped())))
    }))
    .await;
}

async fn wait_stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_certificates_become_a_pem_bundle_consul_can_parse() {
        let der: Vec<u8> = (0u8..100).collect();
        let pem = pem_bundle(&[der.clone(), vec![1, 2, 3]]);
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----\n").count(), 2);
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"), "every line ends with a newline");
        let first: String = pem.lines().skip(1).take_while(|l| !l.starts_with("-----")).collect();
        use base64::Engine;
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(first).expect("base64"), der);
        assert!(pem.lines().all(|l| l.len() <= 64), "lines of at most 64 characters");
    }
}
