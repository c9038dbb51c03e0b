//! The `spool.v1.Cluster` calls: a cluster's status, leadership
//! transfers, and membership changes (nodes added and removed, replicas
//! moved). Every call needs a token with `cluster=admin`; a server that is
//! not a cluster node answers FAILED_PRECONDITION.

use std::time::Duration;

use tonic::Request;

use crate::client::Client;
use crate::error::Result;
use crate::proto;

/// The topic name of the metadata group in [`Client::transfer_leader`]
/// and [`GroupStatus::topic`] (partition 0).
pub const METADATA_GROUP_TOPIC: &str = "__cluster";

/// The topic name of the job layer's group (`__jobs`) in
/// [`Client::transfer_leader`] (partition 0).
pub const JOBS_GROUP_TOPIC: &str = "__jobs";

/// How long a membership change may take: the server gives a new replica
/// two minutes to catch up with the log, and some more to find leaders.
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(300);

/// A membership change's request, with its deadline.
fn membership_request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(MEMBERSHIP_CHANGE_TIMEOUT);
    request
}

/// A cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    pub nodes: Vec<NodeStatus>,
    /// The metadata group first, then every partition of every topic.
    pub groups: Vec<GroupStatus>,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    /// Its peer listener (Raft traffic).
    pub peer_address: String,
    /// Where clients reach it; empty when it did not answer.
    pub client_address: String,
    pub reachable: bool,
}

/// One Raft group: the metadata group or a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub topic: String,
    pub partition: u32,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// The Raft index of the leader's last committed entry.
    pub committed_index: Option<u64>,
    pub replicas: Vec<ReplicaProgress>,
}

/// One replica of a group, with its progress as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaProgress {
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown` or
    /// `unreachable`.
    pub role: String,
    pub matched_index: Option<u64>,
    /// Entries behind the leader's last entry.
    pub lag_entries: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
}

impl GroupStatus {
    /// Whether this is the metadata group.
    pub fn is_metadata(&self) -> bool {
        self.topic == METADATA_GROUP_TOPIC
    }
}

impl Client {
    /// The cluster's nodes and groups, as the node this client is
    /// connected to sees them (it asks the others).
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let response = self
            .cluster_client()
            .cluster_status(Request::new(proto::ClusterStatusRequest {}))
            .await?
            .into_inner();
        Ok(ClusterStatus {
            node_id: response.node_id,
            nodes: response
                .nodes
                .into_iter()
                .map(|n| NodeStatus {
                    node_id: n.node_id,
                    peer_address: n.peer_address,
                    client_address: n.client_address,
                    reachable: n.reachable,
                })
                .collect(),
            groups: response
                .groups
                .into_iter()
                .map(|g| GroupStatus {
                    topic: g.topic,
                    partition: g.partition,
                    leader_id: g.leader_id,
                    term: g.term,
                    committed_index: g.committed_index,
                    replicas: g
                        .replicas
                        .into_iter()
                        .map(|r| ReplicaProgress {
                            node_id: r.node_id,
                            role: r.role,
                            matched_index: r.matched_index,
                            lag_entries: r.lag_entries,
                            last_log_index: r.last_log_index,
                            applied_index: r.applied_index,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// Makes node `to` the leader of partition `partition` of `topic`
    /// ([`METADATA_GROUP_TOPIC`] and 0 for the metadata group); answers
    /// once it leads, with the term it leads in.
    pub async fn transfer_leader(&self, topic: &str, partition: u32, to: u64) -> Result<u64> {
        let request = proto::TransferLeaderRequest {
            topic: topic.to_owned(),
            partition,
            to_node_id: to,
        };
        let response = self
            .cluster_client()
            .transfer_leader(Request::new(request))
            .await?
            .into_inner();
        Ok(response.term)
    }

    /// Adds node `node_id`, started with `--join` and listening for peers
    /// on `peer_address`, to the cluster; answers once it votes in the
    /// metadata and job layer's groups, with the cluster's nodes.
    pub async fn add_node(&self, node_id: u64, peer_address: &str) -> Result<Vec<u64>> {
        let request = proto::AddNodeRequest {
            node_id,
            peer_address: peer_address.to_owned(),
        };
        let response = self
            .cluster_client()
            .add_node(membership_request(request))
            .await?
            .into_inner();
        Ok(response.node_ids)
    }

    /// Removes node `node_id` from the cluster (it must hold no
    /// partition's replica); answers with the cluster's nodes.
    pub async fn remove_node(&self, node_id: u64) -> Result<Vec<u64>> {
        let response = self
            .cluster_client()
            .remove_node(membership_request(proto::RemoveNodeRequest { node_id }))
            .await?
            .into_inner();
        Ok(response.node_ids)
    }

    /// Moves partition `partition` of `topic`'s replica from node `from` to
    /// node `to`; answers once the new replica votes and the old one has
    /// left, with the nodes holding the partition's replicas.
    pub async fn move_replica(&self, topic: &str, partition: u32, from: u64, to: u64) -> Result<Vec<u64>> {
        let request = proto::MoveReplicaRequest {
            topic: topic.to_owned(),
            partition,
            from_node_id: from,
            to_node_id: to,
        };
        let response = self
            .cluster_client()
            .move_replica(membership_request(request))
            .await?
            .into_inner();
        Ok(response.replicas)
    }
}
