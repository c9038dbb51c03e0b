//! How replicas of a group reach each other: one trait, [`Network`], that
//! carries a [`PeerRequest`] from one node to another and brings back the
//! [`PeerResponse`]. The engine turns openraft's calls into these messages;
//! a transport only moves them. [`InProcessNetwork`](crate::InProcessNetwork)
//! is the one transport so far (channels, for tests); a gRPC transport
//! implements the same trait.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

pub use crate::engine::{PeerRequest, PeerResponse};

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
}
