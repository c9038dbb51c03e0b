//! What a replica knows of its group, from openraft's metrics, in Spool's
//! own types: its role, term, leader, log and applied indexes, the group's
//! voters, and (on the leader) how far each replica's log matches its own.
//! `spool cluster status` is built from these (`docs/cluster.md`).

use std::collections::BTreeMap;

use openraft::ServerState;

use super::Replica;

/// A replica's part in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Leader,
    Follower,
    /// Running an election.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// Its engine stopped (shut down, or after a storage error).
    Shutdown,
}

impl Role {
    /// The lowercase name used in the API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// One replica's view of its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub node_id: u64,
    pub role: Role,
    pub term: u64,
    /// The leader this replica knows of.
    pub leader_id: Option<u64>,
    /// The Raft index of the last entry in this replica's log.
    pub last_log_index: Option<u64>,
    /// The Raft index of the last entry applied here, which is committed
    /// (an entry is applied only once committed).
    pub applied_index: Option<u64>,
    /// The Raft index of the last entry purged from this replica's log
    /// (`Replica::compact_to`, or an installed snapshot).
    pub purged_index: Option<u64>,
    /// The Raft index of the last entry the replica's latest snapshot
    /// covers.
    pub snapshot_index: Option<u64>,
    /// The group's voting members, in the membership this replica uses.
    pub voters: Vec<u64>,
    /// Members that receive the log without voting.
    pub learners: Vec<u64>,
    /// On the leader: for every other member, the index of the last entry
    /// known to match the leader's log (`None` until it answered once).
    /// Empty on other replicas.
    pub matched: BTreeMap<u64, Option<u64>>,
}

impl Replica {
    /// What this replica knows of its group now.
    pub fn status(&self) -> ReplicaStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let role = match metrics.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let membership = metrics.membership_config.membership();
        let matched = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .map(|(node, log_id)| (*node, log_id.map(|id| id.index)))
                    .collect()
            })
            .unwrap_or_default();
        ReplicaStatus {
            node_id: self.node_id,
            role,
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|id| id.index),
            purged_index: metrics.purged.map(|id| id.index),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            matched,
        }
    }
}

impl ReplicaStatus {
    /// On the leader: the voter, other than this replica and among those
    /// `accept` takes, whose log matches the leader's furthest (the lowest
    /// id among equals): where a leadership handed over loses the least
    /// time. `None` when there is none.
    pub fn most_caught_up_voter(&self, accept: impl Fn(u64) -> bool) -> Option<u64> {
        self.voters
            .iter()
            .copied()
            .filter(|id| *id != self.node_id && accept(*id))
            .max_by_key(|id| (self.matched.get(id).copied().flatten(), std::cmp::Reverse(*id)))
    }
}
