//! Changing a group's voters: a node added to the cluster joining the
//! metadata and job layer's groups, a partition's replica moved from one
//! node to another, a node removed. openraft does the protocol (joint
//! consensus: the old and the new voters both approve the change); this
//! is the order of its steps.
//!
//! 1. Every new voter is added as a learner, with its peer address in the
//!    membership entry (every node that replicates to it or asks it for a
//!    vote learns the address from there: `Network::learn`).
//! 2. The leader waits until every learner holds the log up to the entry
//!    that added it: a new voter that had to fetch the whole log first
//!    would leave the group, while it does, one failure from losing its
//!    majority.
//! 3. `change_membership` commits the joint configuration, then the new
//!    one. Voters left out are dropped (not kept as learners).
//!
//! The leader itself stays one of the voters: a leader that is left out
//! (it keeps leading a group it is not in until the change commits, which
//! a transfer first avoids) hands its leadership to the most caught-up
//! voter that stays, and answers "not the leader" naming it, for the
//! caller to make the change there. Each step can be run again after a failure: adding a
//! learner twice does nothing new, and a change interrupted in its joint
//! configuration is completed by the next change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError};
use tokio::time::Instant;

use super::{Replica, client_write_error};

/// How long a leader left out of the new voters tries to hand its
/// leadership to one that stays.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(4);
use super::status::Role;
use crate::error::{Error, Result};

impl Replica {
    /// Makes `voters` (node id to peer address) the group's voting
    /// members, and returns the term this replica leads in once the new
    /// membership is committed. Must run on the leader
    /// ([`Error::NotLeader`]); a leader that is not one of `voters` moves
    /// its leadership to one that is, and answers [`Error::NotLeader`]
    /// naming it. A new voter that does not catch up within `timeout` is
    /// left a learner ([`Error::CatchUpTimedOut`]).
    pub async fn change_voters(&self, voters: &BTreeMap<u64, String>, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let status = self.status();
        if status.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_id: status.leader_id,
            });
        }
        if voters.is_empty() {
            return Err(Error::NoVoters);
        }
        if !voters.contains_key(&self.node_id) {
            return Err(self.hand_over_to_a_staying_voter(voters, &status, deadline).await);
        }
        let wanted: BTreeSet<u64> = voters.keys().copied().collect();
        let current: BTreeSet<u64> = status.voters.iter().copied().collect();
        if wanted == current && status.learners.is_empty() {
            return Ok(status.term);
        }
        let joining: Vec<u64> = wanted.difference(&current).copied().collect();
        for id in &joining {
            let node = BasicNode::new(&voters[id]);
            let added = tokio::time::timeout_at(deadline, self.raft.add_learner(*id, node, false))
                .await
                .map_err(|_| Error::CatchUpTimedOut {
                    node_id: *id,
                    timeout_ms: timeout.as_millis() as u64,
                })?;
            added.map_err(|error| membership_error("add a learner", error))?;
            tracing::info!(group = %self.raft_group_name(), node_id = id, "added a learner");
        }
        if !joining.is_empty() {
            self.wait_caught_up(&joining, deadline, timeout).await?;
        }
        let changed = tokio::time::timeout_at(deadline, self.raft.change_membership(wanted.clone(), false))
            .await
            .map_err(|_| Error::Raft {
                op: "commit the new voters in time",
                source: format!("no commit within {} ms", timeout.as_millis()).into(),
            })?;
        changed.map_err(|error| membership_error("change the voters", error))?;
        tracing::info!(group = %self.raft_group_name(), voters = ?wanted, "the group's voters changed");
        Ok(self.term())
    }

    /// Keeps this replica from ever leading its group again while it runs
    /// (it starts no election; it still votes and holds the log, so it
    /// still counts for the majority), and hands the leadership over if it
    /// leads: for a node whose state machine cannot serve (the job table
    /// that cannot be rebuilt), so that a healthy replica leads instead.
    /// Returns the node the leadership went to, if it had it.
    pub async fn stand_aside(&self, timeout: Duration) -> Result<Option<u64>> {
        self.elections.retire();
        let status = self.status();
        if status.role != Role::Leader {
            return Ok(None);
        }
        let Some(target) = status.most_caught_up_voter(|_| true) else {
            return Ok(None);
        };
        self.transfer_leadership(target, timeout).await?;
        Ok(Some(target))
    }

    /// Moves the leadership to the most caught-up current voter that is
    /// one of `voters` (this leader being left out), and answers where it
    /// went: [`Error::NotLeader`] naming it, for the caller to make the
    /// change there. [`Error::LeaderNotInVoters`] when no current voter
    /// stays (every voter replaced at once: not a change this makes).
    async fn hand_over_to_a_staying_voter(
        &self,
        voters: &BTreeMap<u64, String>,
        status: &super::status::ReplicaStatus,
        deadline: Instant,
    ) -> Error {
        let Some(target) = status.most_caught_up_voter(|id| voters.contains_key(&id)) else {
            return Error::LeaderNotInVoters {
                leader_id: self.node_id,
                voters: voters.keys().copied().collect(),
            };
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match self.transfer_leadership(target, left.min(TRANSFER_TIMEOUT)).await {
            Ok(_) => Error::NotLeader {
                leader_id: Some(target),
            },
            Err(error) => error,
        }
    }

    /// Waits until every node of `joining` holds this leader's log up to
    /// its last entry as of this call.
    async fn wait_caught_up(&self, joining: &[u64], deadline: Instant, timeout: Duration) -> Result<()> {
        let target = self.status().last_log_index;
        let reached = self
            .raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .metrics(
                |m| {
                    let Some(replication) = &m.replication else {
                        // No longer the leader: the caller finds out below.
                        return true;
                    };
                    joining
                        .iter()
                        .all(|id| replication.get(id).copied().flatten().map(|log_id| log_id.index) >= target)
                },
                "the new voters hold the leader's log",
            )
            .await;
        match reached {
            Ok(metrics) if metrics.current_leader == Some(self.node_id) => Ok(()),
            Ok(metrics) => Err(Error::NotLeader {
                leader_id: metrics.current_leader,
            }),
            Err(_) => {
                let matched = self.status().matched;
                let behind = joining
                    .iter()
                    .find(|id| matched.get(id).copied().flatten() < target)
                    .copied()
                    .unwrap_or(joining[0]);
                Err(Error::CatchUpTimedOut {
                    node_id: behind,
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
        }
    }
}

/// openraft's refusal of a membership change in Spool's terms.
fn membership_error(op: &'static str, error: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> Error {
    match error {
        RaftError::APIError(refusal) => client_write_error(op, refusal),
        RaftError::Fatal(fatal) => Error::Stopped {
            source: Box::new(fatal),
        },
    }
}
