//! How replicas of a group reach each other: one trait, [`Network`], that
//! carries a [`PeerRequest`] from one node to another and brings back the
//! [`PeerResponse`]. The engine turns openraft's calls into these messages;
//! a transport only moves them. [`InProcessNetwork`](crate::InProcessNetwork)
//! carries them over channels in one process (tests);
//! [`PeerTransport`](crate::PeerTransport) over gRPC between processes,
//! where a [`GroupId`] routes each request to its replica.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

pub use crate::engine::{PeerRequest, PeerResponse};

/// A Raft group of a cluster, named by the partition whose log is its
/// Raft log. The metadata group is [`GroupId::metadata`], the job
/// layer's [`GroupId::jobs`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId {
    pub topic: String,
    pub partition: u32,
}

impl GroupId {
    /// The internal topic whose partition 0 is the metadata group's log.
    pub const METADATA_TOPIC: &'static str = "__cluster";

    pub fn new(topic: impl Into<String>, partition: u32) -> GroupId {
        GroupId {
            topic: topic.into(),
            partition,
        }
    }

    /// The group as peer requests other than Raft's own messages name it
    /// (no incarnation).
    pub fn to_proto(&self) -> spool_proto::v1::RaftGroup {
        spool_proto::v1::RaftGroup {
            topic: self.topic.clone(),
            partition: self.partition,
            incarnation: 0,
        }
    }

    /// The internal topic whose partition 0 holds the job layer's events.
    pub const JOBS_TOPIC: &'static str = "__jobs";

    /// The cluster's metadata group.
    pub fn metadata() -> GroupId {
        GroupId::new(GroupId::METADATA_TOPIC, 0)
    }

    /// The job layer's group (`__jobs`), over every node like the
    /// metadata group.
    pub fn jobs() -> GroupId {
        GroupId::new(GroupId::JOBS_TOPIC, 0)
    }

    /// Whether this is a group of every node (the metadata or the job
    /// layer's), not a topic's partition.
    pub fn is_internal(&self) -> bool {
        *self == GroupId::metadata() || *self == GroupId::jobs()
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A request that did not reach its target, or whose answer did not come
/// back. Raft retries on its own schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node {to} is unreachable from node {from}")]
pub struct Unreachable {
    pub from: u64,
    pub to: u64,
}

/// The future a [`Network`] returns for one request.
pub type PeerCall = Pin<Box<dyn Future<Output = Result<PeerResponse, Unreachable>> + Send + 'static>>;

/// Moves requests between the replicas of one group.
pub trait Network: Debug + Send + Sync + 'static {
    /// Delivers `request` from node `from` to node `to` and returns its
    /// answer.
    fn send(&self, from: u64, to: u64, request: PeerRequest) -> PeerCall;

    /// Tells the transport where node `node_id` listens, as a group's
    /// membership names it: a node added to the cluster
    /// ([`Replica::change_voters`](crate::Replica::change_voters)) is
    /// reached through the address its membership entry carries, on every
    /// node that replicates to it or asks it for a vote. A transport that
    /// already knows the node keeps what it knows.
    fn learn(&self, _node_id: u64, _address: &str) {}
}
