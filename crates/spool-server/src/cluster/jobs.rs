//! The job layer's Raft group (`__jobs/0`, over every node): what the job
//! runtime's [`Replication`] asks of it, over this node's [`Replica`]
//! (`docs/cluster.md`, "The job layer").

use std::sync::{Arc, Mutex};
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
    /// The client addresses of the nodes, as learned (`DescribeNode`).
    addresses: Arc<Mutex<std::collections::HashMap<u64, String>>>,
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
    /// learns the other nodes' client addresses in the background (for the
    /// answers that name the leader).
    pub fn start(cluster: &Arc<Cluster>, replica: Replica) -> Arc<JobsGroup> {
        let (queue, batches) = mpsc::unbounded_channel();
        tokio::spawn(propose_in_order(replica.clone(), batches));
        let addresses = Arc::new(Mutex::new(std::collections::HashMap::new()));
        tokio::spawn(learn_addresses(Arc::clone(cluster), Arc::clone(&addresses)));
        Arc::new(JobsGroup {
            replica,
            queue,
            addresses,
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
            .and_then(|id| self.addresses.lock().expect("address lock").get(&id).cloned())
            .unwrap_or_default();
        (leader, address)
    }

    fn propose(&self, encoded: Vec<u8>, done: Proposed) {
        if let Err(mpsc::error::SendError((_, done))) = self.queue.send((Bytes::from(encoded), done)) {
            done(Err("the node is stopping".to_owned()));
        }
    }
}

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

/// Learns every node's client address, asking again for those that did not
/// answer (every 0.5 s at first, then less often, up to every 10 s)
/// until all are known.
async fn learn_addresses(
    cluster: Arc<Cluster>,
    addresses: Arc<Mutex<std::collections::HashMap<u64, String>>>,
) {
    let mut pause = Duration::from_millis(500);
    loop {
        let mut missing = false;
        for id in cluster.node_ids() {
            if addresses.lock().expect("address lock").contains_key(&id) {
                continue;
            }
            match cluster.client_address(id).await {
                Some(address) => {
                    addresses.lock().expect("address lock").insert(id, address);
                }
                None => missing = true,
            }
        }
        if !missing {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}
