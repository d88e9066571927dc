//! The typed Consul HTTP client: every Consul call concord makes goes through here.
//! It owns the wire details (JSON shapes, blocking queries, ACL token header, retries,
//! server failover) so that controllers deal in typed values and one typed [`Error`].
//!
//! One file per API area; each adds its methods to [`Client`]:
//! [`kv`], [`catalog`] (with health), [`txn`], [`config_entry`], [`prepared_query`], [`acl`],
//! [`snapshot`], [`status`] (leader, peers, Raft operator, agent). Retry rules are
//! written down in [`retry`].

mod client;
mod error;
mod query;
mod token;

pub mod acl;
pub mod catalog;
pub mod config_entry;
pub mod kv;
pub mod prepared_query;
pub mod retry;
pub mod snapshot;
pub mod status;
pub mod txn;

pub use acl::{
    AclAuthMethod, AclBindingRule, AclLink, AclNodeIdentity, AclPolicy, AclRole, AclServiceIdentity, AclToken,
    KubernetesAuthConfig,
};
pub use catalog::{
    CatalogDeregistration, CatalogRegistration, CatalogService, CheckStatus, HealthCheck, Node, NodeService,
    NodeServices, ServiceEntry, Weights,
};
pub use client::{Client, ClientConfig};
pub use config_entry::{
    ConfigEntry, IntentionAction, IntentionHttpHeaderPermission, IntentionHttpPermission, IntentionPermission, MESH,
    SERVICE_INTENTIONS, ServiceIntentionsEntry, SourceIntention,
};
pub use error::{Error, Result};
pub use kv::{KvPair, KvWriteOptions};
pub use prepared_query::{PreparedQuery, QueryDns, QueryFailover, QueryService, QueryTemplate, is_query_refusal};
pub use query::{Consistency, ConsulIndex, QueryOptions, QueryResponse};
pub use retry::RetryPolicy;
pub use snapshot::{ByteStream, SnapshotInfo};
pub use status::{AgentConfig, AgentSelf, AutopilotServer, AutopilotState, RaftConfiguration, RaftPeer, RaftServer};
pub use token::Token;
pub use txn::{MAX_TXN_OPS, TxnError, TxnOp, TxnOpResult, TxnOutcome};

use serde::{Deserialize, Deserializer};

/// Consul writes `null` for empty lists and maps; these fields want the empty value.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The PEM CA file of `--ca-file`, checked to hold a certificate.
pub fn read_ca_file(path: &std::path::Path) -> std::result::Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("CA file {} holds no PEM certificate", path.display()));
    }
    Ok(pem)
}

/// A hint to append to a CLI error when the servers' certificate was refused.
pub fn tls_hint(error: &Error) -> &'static str {
    if error.is_tls_verify_failure() {
        " (the servers' certificate is not trusted: pass their CA with --ca-file or CONSUL_CACERT)"
    } else {
        ""
    }
}
