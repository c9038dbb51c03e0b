//! Moving a group's leadership to a chosen replica, for rolling restarts.
//!
//! openraft 0.9 has no transfer call (0.10 adds one), but it has the
//! pieces: `Raft::trigger().elect()` starts an election on a replica at
//! once. Such an election wins only if the candidate's log is at least as
//! long as a majority's, and a voter refuses any candidate while its
//! leader lease (the longest election timeout since it last heard from
//! its leader) runs. So the leader does this, on its own replica:
//!
//! 1. it takes the write gate exclusively: appends through this node wait
//!    (and those in flight finish first), so its log stops growing;
//! 2. it waits until the target's log matches its own last entry;
//! 3. it asks the target (over the network, [`PeerRequest::Elect`]) to
//!    start an election. The target's term is then the highest and its
//!    log the longest. The old leader grants its vote unless it was
//!    elected less than a lease ago (its lease runs from its own
//!    election), and with the target's own vote that is a majority of
//!    three. Refused, the target still has the highest term: the old
//!    leader sees it in the target's answers to its heartbeats and steps
//!    down, and grants the target's next round (0.5 to 1 s later), since
//!    a vote for a candidate carries no lease;
//! 4. it waits until the target leads, and opens the gate: the appends
//!    that waited now find a follower and are sent to the new leader.
//!
//! Throughout, the old leader does not campaign itself (its elections are
//! paused, on this node only, until the transfer ends): once it has
//! stepped down its log is as long as the target's, and an election of
//! its own would often win back the leadership the target is asking for.
//!
//! Nothing here can lose a committed entry: every step is ordinary Raft
//! (an election by a replica whose log is complete). The worst outcome of
//! a failed transfer is an election that another replica wins, or the old
//! leader keeping its place.

use std::time::Duration;

use tokio::time::Instant;

use super::status::Role;
use super::{PeerRequest, PeerResponse, Replica};
use crate::error::{Error, Result};

impl Replica {
    /// Makes node `to` the group's leader and returns the term it leads
    /// in. Must run on the leader ([`Error::NotLeader`] otherwise); `to`
    /// must be a voter ([`Error::NotAVoter`]). Gives up after `timeout`
    /// ([`Error::TransferTimedOut`], naming the leader then known).
    pub async fn transfer_leadership(&self, to: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let status = self.status();
        if status.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_id: status.leader_id,
            });
        }
        if to == self.node_id {
            return Ok(status.term);
        }
        if !status.voters.contains(&to) {
            return Err(Error::NotAVoter {
                node_id: to,
                voters: status.voters,
            });
        }
        let timed_out = |replica: &Replica| Error::TransferTimedOut {
            to,
            timeout_ms: timeout.as_millis() as u64,
            leader_id: replica.leader_id(),
        };
        let _gate = tokio::time::timeout_at(deadline, self.write_gate.write())
            .await
            .map_err(|_| timed_out(self))?;
        let _paused = self.elections.pause();
        tracing::info!(group = %self.raft_group_name(), from = self.node_id, to, "transferring leadership");

        // The target must hold every entry this leader has: only then does
        // the old leader (and any other voter) grant it its vote.
        let caught_up = self
            .raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .metrics(
                |m| match (&m.replication, m.last_log_index) {
                    (Some(replication), Some(last)) => {
                        replication.get(&to).copied().flatten().map(|id| id.index) == Some(last)
                    }
                    _ => m.current_leader != Some(self.node_id),
                },
                "the target's log matches the leader's",
            )
            .await
            .map_err(|_| timed_out(self))?;
        if caught_up.current_leader != Some(self.node_id) {
            return Err(Error::NotLeader {
                leader_id: caught_up.current_leader,
            });
        }

        // The target may not win the first round (a voter's lease may
        // still run); asking again costs nothing while it leads nobody.
        loop {
            match self.network.send(self.node_id, to, PeerRequest::Elect).await {
                Ok(PeerResponse::Elect(Ok(()))) => {}
                Ok(PeerResponse::Elect(Err(fatal))) => {
                    return Err(Error::Stopped {
                        source: Box::new(fatal),
                    });
                }
                Ok(_) => return Err(Error::UnexpectedAnswer { request: "elect" }),
                Err(unreachable) => {
                    tracing::debug!(%unreachable, "the transfer's election request did not arrive")
                }
            }
            let round = Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now()));
            let led = self
                .raft
                .wait(Some(round))
                .metrics(|m| m.current_leader == Some(to), "the target leads")
                .await;
            if let Ok(metrics) = led {
                tracing::info!(group = %self.raft_group_name(), leader = to, term = metrics.current_term, "leadership transferred");
                return Ok(metrics.current_term);
            }
            // Another replica won: its log may now be longer than the
            // target's, so more elections by the target would only unseat
            // it again and again.
            let leader = self.leader_id();
            if Instant::now() >= deadline || leader.is_some_and(|l| l != self.node_id && l != to) {
                return Err(timed_out(self));
            }
        }
    }
}
