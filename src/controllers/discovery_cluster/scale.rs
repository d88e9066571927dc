//! The safety rules of a managed cluster, as pure functions: which servers leave Raft
//! on a scale-down and whether that keeps quorum, and how far the partition of a rolling
//! update may advance. The reconcile feeds them what it observed and carries them out.
use super::build::server_node_name;

/// Votes needed for a Raft configuration of `voters` servers to commit anything.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// One Raft server as observed (Raft configuration + autopilot health).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerView {
    pub id: String,
    /// Node name: `<cluster>-server-<i>` for the servers concord runs.
    pub node: String,
    /// Raft address.
    pub address: String,
    pub voter: bool,
    pub healthy: bool,
}

/// What Consul says about its servers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConsulView {
    /// Raft address of the leader, `None` during an election.
    pub leader: Option<String>,
    pub servers: Vec<ServerView>,
    pub version: Option<String>,
}

impl ConsulView {
    pub fn voters(&self) -> impl Iterator<Item = &ServerView> {
        self.servers.iter().filter(|s| s.voter)
    }

    /// A leader, every Raft server a healthy voter, and each of the cluster's `replicas`
    /// servers among them: safe to take the next server away. (Autopilot may have pruned
    /// a dead server, so "every peer healthy" alone is not enough.)
    pub fn healthy(&self, cluster: &str, replicas: i32) -> Result<(), String> {
        if self.leader.is_none() {
            return Err("Consul has no Raft leader".to_string());
        }
        let mut problems: Vec<String> = self
            .servers
            .iter()
            .filter(|s| !(s.voter && s.healthy))
            .map(|s| format!("{} is not a healthy voter", s.node))
            .collect();
        for i in 0..replicas {
            let node = server_node_name(cluster, i);
            if !self.servers.iter().any(|s| s.node == node) {
                problems.push(format!("{node} is not in Raft"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join(", ")) }
    }
}

/// Ordinal of a server from its node name, if it is one of `cluster`'s.
pub fn ordinal_of(cluster: &str, node: &str) -> Option<i32> {
    node.strip_prefix(&format!("{cluster}-server-"))?.parse().ok().filter(|i| *i >= 0)
}

/// Why a scale-down is refused. Nothing has been removed when this is returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Consul cannot be asked, so the departing servers cannot leave Raft first.
    ConsulUnavailable(String),
    NoLeader,
    /// Some step (a Raft configuration of `size` voters) would have fewer healthy voters
    /// than Raft needs.
    QuorumLoss {
        from: i32,
        to: i32,
        size: usize,
        healthy: usize,
        needed: usize,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ConsulUnavailable(e) => {
                write!(f, "cannot remove departing servers from Raft first: Consul is unavailable ({e})")
            }
            Refusal::NoLeader => write!(f, "cannot remove departing servers from Raft: Consul has no leader"),
            Refusal::QuorumLoss { from, to, size, healthy, needed } => write!(
                f,
                "scaling {from} → {to} would lose quorum: a Raft configuration of {size} voters would have \
                 {healthy} healthy, and Raft needs {needed}; nothing was removed"
            ),
        }
    }
}

/// The replica decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleDecision {
    /// No StatefulSet yet: create it with the spec's replicas.
    Create(i32),
    Unchanged(i32),
    /// More servers: they join through `retry_join`; nothing to do in Raft.
    Up {
        from: i32,
        to: i32,
    },
    /// Fewer servers: remove `remove` from Raft (in this order), then lower replicas.
    Down {
        from: i32,
        to: i32,
        remove: Vec<ServerView>,
    },
    /// Keep `from` replicas.
    Refused {
        from: i32,
        to: i32,
        why: Refusal,
    },
}

impl ScaleDecision {
    /// The replicas to apply once this decision has been carried out.
    pub fn replicas(&self) -> i32 {
        match self {
            ScaleDecision::Create(n) | ScaleDecision::Unchanged(n) => *n,
            ScaleDecision::Up { to, .. } | ScaleDecision::Down { to, .. } => *to,
            ScaleDecision::Refused { from, .. } => *from,
        }
    }
}

/// Decides how to go from `current` StatefulSet replicas (`None`: no StatefulSet) to
/// `desired`. Departing servers are those with ordinal ≥ `desired`; they leave Raft
/// highest ordinal first, and every Raft configuration on the way (including the final
/// one) must keep a quorum of healthy voters, else the change is refused. Servers that
/// are not in Raft need no removal; Raft servers that are not concord's pods are left alone.
pub fn plan_scale(
    cluster: &str,
    current: Option<i32>,
    desired: i32,
    consul: Result<&ConsulView, &str>,
) -> ScaleDecision {
    let from = match current {
        None => return ScaleDecision::Create(desired),
        Some(n) if n == desired => return ScaleDecision::Unchanged(n),
        Some(n) if n < desired => return ScaleDecision::Up { from: n, to: desired },
        Some(n) => n,
    };
    let refused = |why| ScaleDecision::Refused { from, to: desired, why };
    let consul = match consul {
        Ok(c) => c,
        Err(e) => return refused(Refusal::ConsulUnavailable(e.to_string())),
    };
    let mut remove: Vec<(i32, &ServerView)> = consul
        .servers
        .iter()
        .filter_map(|s| ordinal_of(cluster, &s.node).filter(|i| *i >= desired).map(|i| (i, s)))
        .collect();
    remove.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
    if remove.is_empty() {
        // The departing servers are not in Raft (never joined, or already removed).
        return ScaleDecision::Down { from, to: desired, remove: Vec::new() };
    }
    if consul.leader.is_none() {
        return refused(Refusal::NoLeader);
    }
    // After the change only servers 0..desired remain: enough of them must be healthy
    // voters now, or the cluster that is left cannot elect a leader.
    let survivors =
        consul.voters().filter(|s| s.healthy && ordinal_of(cluster, &s.node).is_some_and(|i| i < desired)).count();
    let needed = quorum(desired.max(1) as usize);
    if survivors < needed {
        return refused(Refusal::QuorumLoss { from, to: desired, size: desired as usize, healthy: survivors, needed });
    }
    let mut config: Vec<&ServerView> = consul.voters().collect();
    loop {
        let healthy = config.iter().filter(|s| s.healthy).count();
        let needed = quorum(config.len());
        if healthy < needed {
            return refused(Refusal::QuorumLoss { from, to: desired, size: config.len(), healthy, needed });
        }
        let Some(next) = remove.iter().map(|(_, s)| *s).find(|s| config.iter().any(|c| c.id == s.id)) else {
            break;
        };
        config.retain(|c| c.id != next.id);
    }
    ScaleDecision::Down { from, to: desired, remove: remove.into_iter().map(|(_, s)| s.clone()).collect() }
}

/// Node names of the servers a scale-down from `from` to `to` takes away.
pub fn departing_nodes(cluster: &str, from: i32, to: i32) -> Vec<String> {
    (to..from).rev().map(|i| server_node_name(cluster, i)).collect()
}

/// The StatefulSet as observed, for the rollout decision.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StatefulSetView {
    pub replicas: i32,
    pub partition: i32,
    /// The StatefulSet controller has seen the latest spec.
    pub observed: bool,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    /// Hash of the pod template concord applied last.
    pub template_hash: Option<String>,
}

/// One step of a partitioned rolling update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// No StatefulSet yet, or nothing to roll.
    Steady,
    /// The template changed: update only the highest ordinal first.
    Start { partition: i32 },
    /// Rolling; the partition stays until `reason` clears.
    Waiting { partition: i32, reason: String },
    /// The servers at and above `from` are updated, ready and the cluster healthy.
    Advance { from: i32, to: i32 },
}

impl Rollout {
    pub fn partition(&self) -> i32 {
        match self {
            Rollout::Steady => 0,
            Rollout::Start { partition } | Rollout::Waiting { partition, .. } => *partition,
            Rollout::Advance { to, .. } => *to,
        }
    }
}

/// The partition for the next apply: ordinals ≥ partition run the new template. A new
/// template starts at the highest ordinal; the partition drops by one only when the
/// StatefulSet controller has seen the spec, every server from the partition up is
/// updated, every pod is ready, and Consul has a leader with every peer a healthy voter.
pub fn plan_rollout(
    current: Option<&StatefulSetView>,
    desired_hash: &str,
    replicas: i32,
    cluster_health: Result<(), String>,
) -> Rollout {
    let Some(sts) = current else {
        return Rollout::Steady;
    };
    if sts.template_hash.as_deref() != Some(desired_hash) {
        return Rollout::Start { partition: (replicas - 1).max(0) };
    }
    let partition = sts.partition.min((replicas - 1).max(0));
    if partition <= 0 {
        return Rollout::Steady;
    }
    let waiting = |reason: String| Rollout::Waiting { partition, reason };
    if !sts.observed {
        return waiting("the StatefulSet controller has not seen the latest spec".to_string());
    }
    let must_be_updated = replicas - partition;
    if sts.updated_replicas < must_be_updated {
        return waiting(format!(
            "{} of {must_be_updated} servers from ordinal {partition} up run the new template",
            sts.updated_replicas
        ));
    }
    if sts.ready_replicas < replicas {
        return waiting(format!("{} of {replicas} server pods ready", sts.ready_replicas));
    }
    if let Err(reason) = cluster_health {
        return waiting(reason);
    }
    Rollout::Advance { from: partition, to: partition - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(i: i32, healthy: bool) -> ServerView {
        ServerView {
            id: format!("id-{i}"),
            node: server_node_name("consul", i),
            address: format!("10.0.0.{i}:8300"),
            voter: true,
            healthy,
        }
    }

    fn view(health: &[bool]) -> ConsulView {
        ConsulView {
            leader: Some("10.0.0.0:8300".into()),
            servers: health.iter().enumerate().map(|(i, h)| server(i as i32, *h)).collect(),
            version: None,
        }
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!([1, 2, 3, 4, 5].map(quorum), [1, 2, 2, 3, 3]);
    }

    #[test]
    fn ordinals_come_from_node_names_of_this_cluster_only() {
        assert_eq!(ordinal_of("consul", "consul-server-4"), Some(4));
        assert_eq!(ordinal_of("consul", "other-server-4"), None);
        assert_eq!(ordinal_of("consul", "consul-server-x"), None);
        assert_eq!(departing_nodes("consul", 5, 3), vec!["consul-server-4", "consul-server-3"]);
    }

    #[test]
    fn scale_down_removes_departing_servers_highest_first() {
        let v = view(&[true; 5]);
        match plan_scale("consul", Some(5), 3, Ok(&v)) {
            ScaleDecision::Down { from: 5, to: 3, remove } => {
                let nodes: Vec<&str> = remove.iter().map(|s| s.node.as_str()).collect();
                assert_eq!(nodes, vec!["consul-server-4", "consul-server-3"]);
            }
            other => panic!("expected a scale-down, got {other:?}"),
        }
    }

    #[test]
    fn scale_down_to_one_with_the_survivor_unhealthy_is_refused() {
        let v = view(&[false, true, true, true, true]);
        let decision = plan_scale("consul", Some(5), 1, Ok(&v));
        assert_eq!(decision.replicas(), 5, "keeps the current replicas");
        match decision {
            ScaleDecision::Refused { why: Refusal::QuorumLoss { size, healthy, needed, .. }, .. } => {
                // The cluster left behind: server 0 alone, and it is unhealthy.
                assert_eq!((size, healthy, needed), (1, 0, 1));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn every_intermediate_raft_configuration_must_keep_quorum() {
        // 5 → 3 with 2 and 3 dead: {0,1,2} would keep quorum at the end (2 of 3), the
        // 5-voter configuration has the 3 healthy it needs, but once 4 is removed the
        // 4-voter {0,1,2,3} has 2 healthy of the 3 it needs: removing 3 could not commit.
        let v = view(&[true, true, false, false, true]);
        assert!(matches!(
            plan_scale("consul", Some(5), 3, Ok(&v)),
            ScaleDecision::Refused { why: Refusal::QuorumLoss { size: 4, healthy: 2, needed: 3, .. }, .. }
        ));
    }

    #[test]
    fn removing_dead_servers_is_allowed_while_the_rest_keep_quorum() {
        // 5 → 3 with servers 3 and 4 dead: every step keeps 3 healthy of ≤ 5.
        let v = view(&[true, true, true, false, false]);
        assert!(matches!(plan_scale("consul", Some(5), 3, Ok(&v)), ScaleDecision::Down { .. }));
        // 5 → 3 with 0 dead too: the 5-voter config has 2 healthy of the 3 it needs.
        let v = view(&[false, true, true, false, false]);
        assert!(matches!(
            plan_scale("consul", Some(5), 3, Ok(&v)),
            ScaleDecision::Refused { why: Refusal::QuorumLoss { size: 5, healthy: 2, needed: 3, .. }, .. }
        ));
    }

    #[test]
    fn scale_down_needs_consul_and_a_leader() {
        let mut v = view(&[true; 3]);
        v.leader = None;
        assert!(matches!(
            plan_scale("consul", Some(3), 1, Ok(&v)),
            ScaleDecision::Refused { why: Refusal::NoLeader, .. }
        ));
        assert!(matches!(
            plan_scale("consul", Some(3), 1, Err("connection refused")),
            ScaleDecision::Refused { why: Refusal::ConsulUnavailable(_), .. }
        ));
    }

    #[test]
    fn departing_servers_already_gone_from_raft_need_no_removal() {
        let v = view(&[true; 3]);
        assert_eq!(
            plan_scale("consul", Some(5), 3, Ok(&v)),
            ScaleDecision::Down { from: 5, to: 3, remove: Vec::new() }
        );
    }

    #[test]
    fn create_up_and_unchanged_touch_nothing_in_raft() {
        let v = view(&[true; 3]);
        assert_eq!(plan_scale("consul", None, 3, Ok(&v)), ScaleDecision::Create(3));
        assert_eq!(plan_scale("consul", Some(3), 3, Err("down")), ScaleDecision::Unchanged(3));
        assert_eq!(plan_scale("consul", Some(3), 5, Err("down")), ScaleDecision::Up { from: 3, to: 5 });
    }

    fn sts(partition: i32, updated: i32, ready: i32) -> StatefulSetView {
        StatefulSetView {
            replicas: 3,
            partition,
            observed: true,
            ready_replicas: ready,
            updated_replicas: updated,
            template_hash: Some("new".into()),
        }
    }

    #[test]
    fn a_new_template_starts_at_the_highest_ordinal() {
        let mut current = sts(0, 3, 3);
        current.template_hash = Some("old".into());
        assert_eq!(plan_rollout(Some(&current), "new", 3, Ok(())), Rollout::Start { partition: 2 });
        assert_eq!(plan_rollout(Some(&current), "new", 1, Ok(())), Rollout::Start { partition: 0 });
        assert_eq!(plan_rollout(None, "new", 3, Ok(())), Rollout::Steady);
    }

    #[test]
    fn the_partition_advances_one_step_only_when_everything_is_healthy() {
        assert_eq!(plan_rollout(Some(&sts(2, 1, 3)), "new", 3, Ok(())), Rollout::Advance { from: 2, to: 1 });
        assert_eq!(plan_rollout(Some(&sts(1, 2, 3)), "new", 3, Ok(())), Rollout::Advance { from: 1, to: 0 });
        assert_eq!(plan_rollout(Some(&sts(0, 3, 3)), "new", 3, Ok(())), Rollout::Steady);
        // Not yet: the updated pod is not there, a pod is not ready, Consul is unhealthy.
        assert!(matches!(plan_rollout(Some(&sts(2, 0, 3)), "new", 3, Ok(())), Rollout::Waiting { partition: 2, .. }));
        assert!(matches!(plan_rollout(Some(&sts(2, 1, 2)), "new", 3, Ok(())), Rollout::Waiting { partition: 2, .. }));
        let unhealthy = plan_rollout(Some(&sts(2, 1, 3)), "new", 3, Err("no leader".into()));
        assert_eq!(unhealthy, Rollout::Waiting { partition: 2, reason: "no leader".into() });
        let mut unobserved = sts(2, 1, 3);
        unobserved.observed = false;
        assert!(matches!(plan_rollout(Some(&unobserved), "new", 3, Ok(())), Rollout::Waiting { .. }));
    }

    #[test]
    fn cluster_health_needs_a_leader_and_every_server_a_healthy_voter() {
        assert_eq!(view(&[true; 3]).healthy("consul", 3), Ok(()));
        assert!(view(&[true, false, true]).healthy("consul", 3).expect_err("unhealthy").contains("consul-server-1"));
        let mut v = view(&[true; 3]);
        v.leader = None;
        assert!(v.healthy("consul", 3).is_err());
        // Autopilot pruned dead server 2: the peers left are healthy, the cluster is not.
        let mut pruned = view(&[true; 3]);
        pruned.servers.pop();
        assert!(pruned.healthy("consul", 3).expect_err("unhealthy").contains("consul-server-2 is not in Raft"));
    }

    #[test]
    fn scale_down_is_refused_when_the_survivors_are_not_in_raft() {
        // Server 0 died and autopilot pruned it: 1..4 are healthy, but 5 → 1 would
        // leave only server 0.
        let mut v = view(&[true; 5]);
        v.servers.remove(0);
        assert!(matches!(
            plan_scale("consul", Some(5), 1, Ok(&v)),
            ScaleDecision::Refused { why: Refusal::QuorumLoss { size: 1, healthy: 0, needed: 1, .. }, .. }
        ));
    }
}
