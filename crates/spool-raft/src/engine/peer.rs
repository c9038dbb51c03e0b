//! openraft's network traits over a [`Network`]: each RPC becomes a
//! [`PeerRequest`] sent to the target node, and the answer's variant is
//! checked against the request's.

use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::elections::Elections;
use super::{PeerRequest, PeerResponse, TypeConfig};
use crate::network::Network;

type RpcError<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

/// An answer whose variant does not match its request: a transport bug.
#[derive(Debug, thiserror::Error)]
#[error("node {target} answered a {request} request with another kind of response")]
struct MismatchedResponse {
    target: u64,
    request: &'static str,
}

/// Makes a [`PeerClient`] per target node.
#[derive(Debug, Clone)]
pub(super) struct PeerFactory {
    pub(super) from: u64,
    pub(super) network: Arc<dyn Network>,
    /// Told of vote refusals (`elections.rs`).
    pub(super) elections: Arc<Elections>,
}

impl RaftNetworkFactory<TypeConfig> for PeerFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        self.network.learn(target, &node.addr);
        PeerClient {
            from: self.from,
            target,
            network: self.network.clone(),
            elections: Arc::clone(&self.elections),
        }
    }
}

/// openraft's connection to one peer.
#[derive(Debug)]
pub(super) struct PeerClient {
    from: u64,
    target: u64,
    network: Arc<dyn Network>,
    elections: Arc<Elections>,
}

impl PeerClient {
    async fn call<E: std::error::Error>(&self, request: PeerRequest) -> Result<PeerResponse, RpcError<E>> {
        self.network
            .send(self.from, self.target, request)
            .await
            .map_err(|error| RPCError::Unreachable(Unreachable::new(&error)))
    }

    fn mismatched<E: std::error::Error>(&self, request: &'static str) -> RpcError<E> {
        RPCError::Network(NetworkError::new(&MismatchedResponse {
            target: self.target,
            request,
        }))
    }

    fn remote<E: std::error::Error>(&self, error: RaftError<u64, E>) -> RpcError<E> {
        RPCError::RemoteError(RemoteError::new(self.target, error))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcError> {
        match self.call(PeerRequest::AppendEntries(rpc)).await? {
            PeerResponse::AppendEntries(answer) => answer.map_err(|e| self.remote(e)),
            _ => Err(self.mismatched("append-entries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcError<InstallSnapshotError>> {
        match self.call(PeerRequest::InstallSnapshot(rpc)).await? {
            PeerResponse::InstallSnapshot(answer) => answer.map_err(|e| self.remote(e)),
            _ => Err(self.mismatched("install-snapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcError> {
        let last_log_id = rpc.last_log_id;
        match self.call(PeerRequest::Vote(rpc)).await? {
            PeerResponse::Vote(answer) => {
                let answer = answer.map_err(|e| self.remote(e))?;
                self.elections
                    .answered(!answer.vote_granted && answer.last_log_id > last_log_id);
                Ok(answer)
            }
            _ => Err(self.mismatched("vote")),
        }
    }
}
