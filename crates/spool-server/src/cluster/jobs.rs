//! The job layer's Raft group (`__jobs/0`, over every node): what the job
//! runtime's [`Replication`] asks of it, over this node's [`Replica`]
//! (`docs/cluster.md`, "The job layer").

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spool_jobs::{Proposed, Replication};
use spool_raft::Replica;
use tokio::sync::mpsc;

use super::Cluster;

/// The replicated `__jobs` as the job runtime sees it.
pub struct JobsGroup {
    replica: Replica,
    /// Batches to propose, in the order the job thread made them.
    queue: mpsc::UnboundedSender<(Bytes, Proposed)>,
    /// Where the leader's client address is looked up.
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for JobsGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsGroup")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl JobsGroup {
    /// Starts proposing for `replica`, this node's replica of `__jobs`, and
    /// has the cluster learn the other nodes' client addresses in the
    /// background (for the answers that name the leader, which must not
    /// wait for a peer call).
    pub fn start(cluster: &Arc<Cluster>, replica: Replica) -> Arc<JobsGroup> {
        let (queue, batches) = mpsc::unbounded_channel();
        tokio::spawn(propose_in_order(replica.clone(), batches));
        tokio::spawn(learn_addresses(Arc::clone(cluster)));
        Arc::new(JobsGroup {
            replica,
            queue,
            cluster: Arc::clone(cluster),
        })
    }
}

impl Replication for JobsGroup {
    fn serving_term(&self) -> Option<u64> {
        self.replica.serving_term()
    }

    fn leader(&self) -> (Option<u64>, String) {
        let leader = self.replica.leader_id();
        let address = leader
            .and_then(|id| self.cluster.known_client_address(id))
            .unwrap_or_default();
        (leader, address)
    }

    fn propose(&self, encoded: Vec<u8>, done: Proposed) {
        if let Err(mpsc::error::SendError((_, done))) = self.queue.send((Bytes::from(encoded), done)) {
            done(Err("the node is stopping".to_owned()));
        }
    }

    fn step_aside(&self) {
        let replica = self.replica.clone();
        tokio::spawn(async move {
            match replica.stand_aside(STAND_ASIDE_TIMEOUT).await {
                Ok(handed_to) => tracing::warn!(
                    ?handed_to,
                    "this node's job table cannot serve: it no longer runs for leader of __jobs until restarted"
                ),
                Err(error) => tracing::error!(
                    %error,
                    "this node's job table cannot serve and its leadership of __jobs could not be handed over; move it (spool cluster transfer-leader --jobs)"
                ),
            }
        });
    }
}

/// How long a node whose job table cannot serve tries to hand the
/// leadership of `__jobs` over.
const STAND_ASIDE_TIMEOUT: Duration = Duration::from_secs(4);

/// Hands each batch to openraft in the order it was queued (each call
/// returns once openraft holds the batch), then waits for its commit on a
/// task of its own, so many batches are in flight at once.
async fn propose_in_order(replica: Replica, mut batches: mpsc::UnboundedReceiver<(Bytes, Proposed)>) {
    while let Some((encoded, done)) = batches.recv().await {
        match replica.propose(encoded).await {
            Ok(commit) => {
                tokio::spawn(async move {
                    let outcome = commit.await.map(|appended| appended.next_offset);
                    done(outcome.map_err(|error| error.to_string()));
                });
            }
            Err(error) => done(Err(error.to_string())),
        }
    }
}

/// Has the cluster learn every node's client address (its cache,
/// `Cluster::client_address`), asking again for those that did not answer
/// (every 0.5 s at first, then less often, up to every 10 s), and for
/// nodes added since, every 10 s.
async fn learn_addresses(cluster: Arc<Cluster>) {
    let mut pause = Duration::from_millis(500);
    loop {
        let mut missing = false;
        for id in cluster.node_ids() {
            if cluster.client_address(id).await.is_none() {
                missing = true;
            }
        }
        // Once all are known, nodes added later are looked for every 10 s.
        if missing {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        } else {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
}

/// The job table's snapshots as the owner's state of `__jobs`' group
/// (`spool_raft::AppState`): the snapshot the job runtime stores in
/// `<data>/jobs` (`spool_jobs::snapshot`). The group compacts no further
/// than it covers, a snapshot sent to a replica carries it, and a replica
/// whose log restarts from the leader's snapshot stores the leader's table
/// there first; its job thread then restarts from it.
#[derive(Debug)]
pub(super) struct JobsSnapshots {
    pub(super) dir: std::path::PathBuf,
}

impl spool_raft::AppState for JobsSnapshots {
    fn durable_offset(&self) -> u64 {
        spool_jobs::snapshot::stored_offset(&self.dir)
    }

    fn snapshot(&self) -> Option<spool_raft::AppSnapshot> {
        spool_jobs::snapshot::stored(&self.dir)
            .map(|(next_offset, data)| spool_raft::AppSnapshot { next_offset, data })
    }

    fn install(&self, snapshot: spool_raft::AppSnapshot) -> Result<(), String> {
        spool_jobs::snapshot::install(&self.dir, &snapshot.data, snapshot.next_offset).map(|_| ())
    }
}
