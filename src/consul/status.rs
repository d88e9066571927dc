//! Cluster state: leader and peers, the Raft configuration, removing a Raft peer, and
//! the agent's own description (version, datacenter).

use reqwest::Method;
use serde::Deserialize;

use super::error::Result;
use super::{Client, ConsulIndex, QueryOptions};

/// One server in the Raft configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RaftServer {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    /// Raft address, `ip:8300`.
    pub address: String,
    pub leader: bool,
    pub voter: bool,
    pub protocol_version: String,
    pub last_index: u64,
}

/// `GET /v1/operator/raft/configuration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RaftConfiguration {
    pub servers: Vec<RaftServer>,
    pub index: ConsulIndex,
}

impl RaftConfiguration {
    pub fn leader(&self) -> Option<&RaftServer> {
        self.servers.iter().find(|s| s.leader)
    }
}

/// Which Raft peer to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftPeer {
    /// Raft address (`ip:8300`).
    Address(String),
    /// Server node ID.
    Id(String),
}

/// `GET /v1/operator/autopilot/state`: autopilot's view of every server. Unlike
/// `/autopilot/health` it answers 200 when the cluster is unhealthy, which is exactly
/// when a caller needs to read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AutopilotState {
    /// The whole cluster is healthy (every voter healthy, enough of them).
    pub healthy: bool,
    /// How many voters may fail without losing quorum.
    pub failure_tolerance: i64,
    /// Server ID of the leader.
    pub leader: String,
    /// Server IDs of the voters.
    #[serde(deserialize_with = "super::null_default")]
    pub voters: Vec<String>,
    /// Per server, keyed by server ID.
    #[serde(deserialize_with = "super::null_default")]
    pub servers: std::collections::BTreeMap<String, AutopilotServer>,
}

/// One server in [`AutopilotState`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AutopilotServer {
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub name: String,
    /// Raft address, `ip:8300`.
    pub address: String,
    /// Serf status: `alive`, `failed`, `left`.
    pub node_status: String,
    pub version: String,
    pub healthy: bool,
    /// `leader`, `voter`, `non-voter` or `staging`.
    pub status: String,
}

impl AutopilotServer {
    /// Leaders vote too.
    pub fn is_voter(&self) -> bool {
        self.status == "voter" || self.status == "leader"
    }
}

/// The parts of `GET /v1/agent/self` concord reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentSelf {
    pub config: AgentConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentConfig {
    pub datacenter: String,
    pub node_name: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub version: String,
    pub revision: String,
    pub server: bool,
}

impl Client {
    /// `GET /v1/status/leader`: the leader's Raft address, `None` during an election.
    pub async fn status_leader(&self) -> Result<Option<String>> {
        let req = self.request(Method::GET, ["v1", "status", "leader"]);
        let leader: String = self.call(&req).await?;
        Ok(Some(leader).filter(|l| !l.is_empty()))
    }

    /// `GET /v1/status/peers`: the Raft addresses of the voting servers.
    pub async fn status_peers(&self) -> Result<Vec<String>> {
        let req = self.request(Method::GET, ["v1", "status", "peers"]);
        let peers: Option<Vec<String>> = self.call(&req).await?;
        Ok(peers.unwrap_or_default())
    }

    /// `GET /v1/operator/raft/configuration` (`Stale` works without a leader).
    pub async fn operator_raft_configuration(&self, opts: &QueryOptions) -> Result<RaftConfiguration> {
        let req = self.read(["v1", "operator", "raft", "configuration"], opts);
        Ok(self.query(&req).await?.value)
    }

    /// `DELETE /v1/operator/raft/peer`: drops a server from the Raft configuration
    /// (scale-down, or a server that is gone for good). Not repeated after an ambiguous
    /// failure: the repeat of a removal that happened fails; read the configuration.
    pub async fn operator_raft_remove_peer(&self, peer: &RaftPeer) -> Result<()> {
        let req = self.request(Method::DELETE, ["v1", "operator", "raft", "peer"]).not_idempotent();
        let req = match peer {
            RaftPeer::Address(address) => req.param("address", address),
            RaftPeer::Id(id) => req.param("id", id),
        };
        self.call_unit(&req).await
    }

    /// `GET /v1/operator/autopilot/state` (needs a leader; `operator:read`).
    pub async fn operator_autopilot_state(&self) -> Result<AutopilotState> {
        let req = self.request(Method::GET, ["v1", "operator", "autopilot", "state"]);
        self.call(&req).await
    }

    /// `GET /v1/agent/self` of whichever server answers.
    pub async fn agent_self(&self) -> Result<AgentSelf> {
        let req = self.request(Method::GET, ["v1", "agent", "self"]);
        self.call(&req).await
    }

    /// The Consul version of whichever server answers (for status reporting).
    pub async fn agent_version(&self) -> Result<String> {
        Ok(self.agent_self().await?.config.version)
    }
}
