//! Flags of `concord controller`, parsed once at start and shared through [`super::Context`].
use super::telemetry;
use std::net::SocketAddr;

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
    /// Lockdown: act as this ServiceAccount of the object's namespace when a
    /// ConfigTemplate, KVConfig or ACLToken names none in `spec.serviceAccountName`, so
    /// the API server's RBAC decides which Secrets and ConfigMaps it may read or write.
    /// Unset: such objects act with the controller's own rights (see docs/security.md).
    #[arg(long, env = "CONCORD_DEFAULT_SERVICE_ACCOUNT")]
    pub default_service_account: Option<String>,
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
    /// API server URL that ACLAuthMethods give Consul for TokenReview (default: the one
    /// concord's own kube client uses; a DiscoveryCluster's `spec.kubernetesAuth.host`
    /// overrides both).
    #[arg(long, env = "CONCORD_KUBERNETES_API_HOST")]
    pub kubernetes_api_host: Option<String>,
    /// PEM CA file for that URL (default: the CA concord's kube client trusts).
    #[arg(long, env = "CONCORD_KUBERNETES_API_CA_FILE")]
    pub kubernetes_api_ca_file: Option<std::path::PathBuf>,
    /// The CA concord's kube client trusts (PEM), filled at start from its config.
    #[arg(skip)]
    pub kubernetes_api_ca_pem: Option<String>,
    /// ServiceAccount (`NAMESPACE/NAME`) whose short-lived token (TokenRequest) ACLAuthMethods
    /// give Consul to call TokenReview. It needs `system:auth-delegator` and `get` on
    /// `serviceaccounts`; concord needs `create` on its `serviceaccounts/token`.
    #[arg(long, env = "CONCORD_AUTH_REVIEWER_SERVICE_ACCOUNT")]
    pub auth_reviewer_service_account: Option<String>,
    /// How often ACLRoles, ACLAuthMethods and ACLBindingRules are compared with Consul
    /// (drift is reverted within this period; Go duration).
    #[arg(long, env = "CONCORD_ACL_DRIFT_INTERVAL", default_value = "30s", value_parser = parse_sync_interval)]
    pub acl_drift_interval: std::time::Duration,
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
