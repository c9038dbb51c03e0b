//! The gRPC side of a node's Raft traffic that answers: [`PeerService`]
//! implements `spool.v1.Peer`, routing each request by its group id to
//! the replica this node holds of that group. A group the node holds no
//! replica of (not created here yet, or deleted) is NOT_FOUND, which the
//! sender treats as unreachable. Besides Raft's messages it answers what
//! operations need: who the node is, what its replicas know
//! (`DescribeReplicas`), proposals and leadership transfers to the groups
//! it leads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use spool_proto::v1;
use spool_proto::v1::peer_server::{Peer, PeerServer};
use tonic::{Request, Response, Status};

use crate::engine::wire;
use crate::engine::{Replica, ReplicaStatus};
use crate::error::Error;
use crate::network::{GroupId, PeerRequest};

/// How long a leadership transfer may take on the leader: below the
/// transport's deadline for one request (5 s), so that a node forwarding
/// a transfer hears how it ended.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(4);

/// The replicas a node holds, by group, and what it says about itself.
#[derive(Debug, Clone)]
pub struct PeerService {
    node_id: u64,
    client_address: Arc<RwLock<String>>,
    replicas: Arc<RwLock<HashMap<GroupId, Registered>>>,
    message_bytes_max: usize,
    /// Set when peers are authenticated: tells which node a request's
    /// connection proved it is ([`PeerService::with_sender_identity`]).
    identity: Option<SenderIdentity>,
}

/// Which node a request's connection proved it is (from its TLS client
/// certificate), or `None` when it proved none.
#[derive(Clone)]
struct SenderIdentity(Arc<Identify>);

type Identify = dyn Fn(&tonic::Extensions) -> Option<u64> + Send + Sync;

impl std::fmt::Debug for SenderIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SenderIdentity")
    }
}

/// A replica this node serves, and which creation of its topic it
/// belongs to (`RaftGroup.incarnation` in `peer.proto`).
#[derive(Debug, Clone)]
struct Registered {
    incarnation: u64,
    replica: Replica,
}

impl PeerService {
    /// `client_address` is where clients reach this node (host:port),
    /// named in leader hints; `message_bytes_max` bounds a received
    /// message.
    pub fn new(node_id: u64, client_address: String, message_bytes_max: usize) -> PeerService {
        PeerService {
            node_id,
            client_address: Arc::new(RwLock::new(client_address)),
            replicas: Arc::default(),
            message_bytes_max,
            identity: None,
        }
    }

    /// This service, checking that each Raft message (append-entries,
    /// vote, install-snapshot, elect) comes from the node it names:
    /// `identify` tells which node a request's connection proved it is
    /// (from the peer's certificate), and a message whose sender (the
    /// leader or candidate its vote names, or the node an elect request
    /// names) is another node, or a connection that proved none, is
    /// PERMISSION_DENIED. Without it any peer that may connect could speak
    /// for any node.
    pub fn with_sender_identity(
        mut self,
        identify: impl Fn(&tonic::Extensions) -> Option<u64> + Send + Sync + 'static,
    ) -> PeerService {
        self.identity = Some(SenderIdentity(Arc::new(identify)));
        self
    }

    fn check_sender(&self, extensions: &tonic::Extensions, sender: Option<u64>) -> Result<(), Status> {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        match (identity.0(extensions), sender) {
            (Some(proven), Some(sender)) if proven == sender => Ok(()),
            (Some(proven), Some(sender)) => Err(Status::permission_denied(format!(
                "the peer's certificate names node {proven}; the message is from node {sender}"
            ))),
            (Some(_), None) => Err(Status::invalid_argument("the message names no sender")),
            (None, _) => Err(Status::permission_denied(
                "the peer's certificate names no node (its common name must be spool-node-ID)",
            )),
        }
    }

    /// Sets the client address once it is known (after the client
    /// listener is bound to its port).
    pub fn set_client_address(&self, address: String) {
        *self.client_address.write().expect("address lock") = address;
    }

    /// Routes requests for `group` to `replica`, replacing a previous one.
    /// Raft messages reach it only when they name the same `incarnation`
    /// (which creation of the topic; 0 for the metadata group), as those
    /// its own network sends do ([`PeerTransport::group`](crate::PeerTransport::group)).
    pub fn register(&self, group: GroupId, incarnation: u64, replica: Replica) {
        self.replicas
            .write()
            .expect("replicas lock")
            .insert(group, Registered { incarnation, replica });
    }

    /// Stops routing requests for `group`; returns the replica it held.
    pub fn unregister(&self, group: &GroupId) -> Option<Replica> {
        self.replicas
            .write()
            .expect("replicas lock")
            .remove(group)
            .map(|registered| registered.replica)
    }

    /// The replica of `group` on this node.
    pub fn replica(&self, group: &GroupId) -> Option<Replica> {
        self.registered(group).map(|registered| registered.replica)
    }

    fn registered(&self, group: &GroupId) -> Option<Registered> {
        self.replicas.read().expect("replicas lock").get(group).cloned()
    }

    /// Every replica this node holds.
    pub fn replicas(&self) -> Vec<(GroupId, Replica)> {
        let replicas = self.replicas.read().expect("replicas lock");
        replicas
            .iter()
            .map(|(group, registered)| (group.clone(), registered.replica.clone()))
            .collect()
    }

    /// What every replica of this node knows of its group, sorted by
    /// group: the answer to `DescribeReplicas`.
    pub fn describe_replicas(&self) -> v1::DescribeReplicasResponse {
        let mut replicas = self.replicas();
        replicas.sort_by(|a, b| a.0.cmp(&b.0));
        v1::DescribeReplicasResponse {
            node_id: self.node_id,
            client_address: self.client_address.read().expect("address lock").clone(),
            replicas: replicas
                .into_iter()
                .map(|(group, replica)| report(&group, replica.status()))
                .collect(),
        }
    }

    /// Moves the leadership of `group`, which this node's replica must
    /// lead, to node `to`: the answer to `TransferLeader`, and what a node
    /// does for a transfer it was asked for and leads itself.
    pub async fn transfer_leadership(
        &self,
        group: &GroupId,
        to: u64,
    ) -> Result<v1::TransferLeaderResponse, Status> {
        let replica = self
            .replica(group)
            .ok_or_else(|| Status::not_found(format!("node {} holds no replica of {group}", self.node_id)))?;
        match replica.transfer_leadership(to, TRANSFER_TIMEOUT).await {
            Ok(term) => Ok(v1::TransferLeaderResponse { leader_id: to, term }),
            Err(Error::NotLeader { leader_id }) => Err(not_leader(leader_id, String::new())),
            Err(error @ Error::NotAVoter { .. }) => Err(Status::invalid_argument(error.to_string())),
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }

    /// Makes `voters` the voting members of `group`, which this node's
    /// replica must lead: the answer to `ChangeVoters`, and what a node
    /// does for a change it was asked for and leads itself.
    pub async fn change_voters(
        &self,
        group: &GroupId,
        voters: &BTreeMap<u64, String>,
        timeout: Duration,
    ) -> Result<v1::ChangeVotersResponse, Status> {
        let replica = self
            .replica(group)
            .ok_or_else(|| Status::not_found(format!("node {} holds no replica of {group}", self.node_id)))?;
        match replica.change_voters(voters, timeout).await {
            Ok(term) => Ok(v1::ChangeVotersResponse { term }),
            Err(Error::NotLeader { leader_id }) => Err(not_leader(leader_id, String::new())),
            Err(error @ (Error::LeaderNotInVoters { .. } | Error::NoVoters)) => {
                Err(Status::failed_precondition(error.to_string()))
            }
            Err(error) => Err(Status::unavailable(format!("{group}: {error}"))),
        }
    }

    /// The read index of `group`, which this node's replica must lead:
    /// the answer to `ReadIndex`, and what a leading node asks itself.
    pub async fn read_index(&self, group: &GroupId) -> Result<Option<u64>, Status> {
        let replica = self
            .replica(group)
            .ok_or_else(|| Status::not_found(format!("node {} holds no replica of {group}", self.node_id)))?;
        match replica.read_index().await {
            Ok(index) => Ok(index),
            Err(Error::NotLeader { leader_id }) => Err(not_leader(leader_id, String::new())),
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }

    /// The tonic service, with this service's message size limit.
    pub fn into_server(self) -> PeerServer<PeerService> {
        let limit = self.message_bytes_max;
        PeerServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    async fn dispatch(
        &self,
        group: Option<v1::RaftGroup>,
        request: Result<PeerRequest, crate::Error>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let group = group.ok_or_else(|| Status::invalid_argument("a peer request needs its group"))?;
        let incarnation = group.incarnation;
        let group = GroupId::new(group.topic, group.partition);
        let request = request.map_err(|error| Status::invalid_argument(error.to_string()))?;
        let registered = self
            .registered(&group)
            .ok_or_else(|| Status::not_found(format!("node {} holds no replica of {group}", self.node_id)))?;
        if registered.incarnation != incarnation {
            return Err(Status::not_found(format!(
                "node {} holds a replica of another creation of {group} (incarnation {}, not {incarnation})",
                self.node_id, registered.incarnation
            )));
        }
        let response = registered.replica.handle(request).await;
        let reply =
            wire::response_to_proto(&response).map_err(|error| Status::internal(error.to_string()))?;
        Ok(Response::new(reply))
    }
}

fn report(group: &GroupId, status: ReplicaStatus) -> v1::ReplicaReport {
    v1::ReplicaReport {
        group: Some(group.to_proto()),
        role: status.role.name().to_owned(),
        term: status.term,
        leader_id: status.leader_id,
        last_log_index: status.last_log_index,
        applied_index: status.applied_index,
        voters: status.voters,
        learners: status.learners,
        matched: status
            .matched
            .into_iter()
            .map(|(node_id, index)| v1::MatchedIndex { node_id, index })
            .collect(),
    }
}

/// The status a node answers when it does not lead the group a request
/// names: FAILED_PRECONDITION naming the leader it knows of, UNAVAILABLE
/// when it knows of none, with a [`v1::LeaderHint`] in the details
/// (`docs/api.md`, "Cluster mode").
pub fn not_leader(leader_id: Option<u64>, leader_address: String) -> Status {
    let hint = v1::LeaderHint {
        leader_id,
        leader_address,
    };
    let (code, message) = match leader_id {
        Some(id) => (
            tonic::Code::FailedPrecondition,
            format!("not the leader; node {id} is"),
        ),
        None => (tonic::Code::Unavailable, "no leader is known yet".to_owned()),
    };
    let details = spool_proto::leader_hint::encode(code as i32, &message, &hint);
    Status::with_details(code, message, details)
}

/// The node a decoded Raft message speaks for: the leader or candidate
/// its vote names. `None` for a message that did not decode (refused
/// later as malformed) or names no node.
fn sender_of(request: &Result<PeerRequest, Error>) -> Option<u64> {
    match request.as_ref().ok()? {
        PeerRequest::AppendEntries(rpc) => rpc.vote.leader_id.voted_for,
        PeerRequest::Vote(rpc) => rpc.vote.leader_id.voted_for,
        PeerRequest::InstallSnapshot(rpc) => rpc.vote.leader_id.voted_for,
        PeerRequest::Elect => None,
    }
}

/// The leader hint in `status`, if it carries one.
pub fn leader_hint(status: &Status) -> Option<v1::LeaderHint> {
    if !matches!(
        status.code(),
        tonic::Code::FailedPrecondition | tonic::Code::Unavailable
    ) {
        return None;
    }
    spool_proto::leader_hint::decode(status.details())
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<v1::RaftAppendEntriesRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let (_, extensions, mut request) = request.into_parts();
        let group = request.group.take();
        let request = wire::append_entries_from_proto(request);
        self.check_sender(&extensions, sender_of(&request))?;
        self.dispatch(group, request).await
    }

    async fn vote(&self, request: Request<v1::RaftVoteRequest>) -> Result<Response<v1::RaftReply>, Status> {
        let (_, extensions, mut request) = request.into_parts();
        let group = request.group.take();
        let request = wire::vote_from_proto(request);
        self.check_sender(&extensions, sender_of(&request))?;
        self.dispatch(group, request).await
    }

    async fn install_snapshot(
        &self,
        request: Request<v1::RaftInstallSnapshotRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let (_, extensions, mut request) = request.into_parts();
        let group = request.group.take();
        let request = wire::install_snapshot_from_proto(request);
        self.check_sender(&extensions, sender_of(&request))?;
        self.dispatch(group, request).await
    }

    async fn propose(
        &self,
        request: Request<v1::ProposeRequest>,
    ) -> Result<Response<v1::ProposeResponse>, Status> {
        let request = request.into_inner();
        let group = request
            .group
            .ok_or_else(|| Status::invalid_argument("a proposal needs its group"))?;
        let group = GroupId::new(group.topic, group.partition);
        let replica = self
            .replica(&group)
            .ok_or_else(|| Status::not_found(format!("node {} holds no replica of {group}", self.node_id)))?;
        match replica.append(request.batch).await {
            Ok(appended) => Ok(Response::new(v1::ProposeResponse {
                index: appended.index,
                base_offset: appended.base_offset,
                next_offset: appended.next_offset,
            })),
            Err(Error::NotLeader { leader_id }) => Err(not_leader(leader_id, String::new())),
            Err(error @ Error::InvalidBatch { .. }) => Err(Status::invalid_argument(error.to_string())),
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }

    async fn elect(&self, request: Request<v1::RaftElectRequest>) -> Result<Response<v1::RaftReply>, Status> {
        let (_, extensions, request) = request.into_parts();
        self.check_sender(&extensions, Some(request.from))?;
        self.dispatch(request.group, Ok(PeerRequest::Elect)).await
    }

    async fn describe_replicas(
        &self,
        _request: Request<v1::DescribeReplicasRequest>,
    ) -> Result<Response<v1::DescribeReplicasResponse>, Status> {
        Ok(Response::new(self.describe_replicas()))
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::TransferLeaderResponse>, Status> {
        let request = request.into_inner();
        let group = GroupId::new(request.topic, request.partition);
        self.transfer_leadership(&group, request.to_node_id)
            .await
            .map(Response::new)
    }

    async fn read_index(
        &self,
        request: Request<v1::ReadIndexRequest>,
    ) -> Result<Response<v1::ReadIndexResponse>, Status> {
        let group = request
            .into_inner()
            .group
            .ok_or_else(|| Status::invalid_argument("a read index request names its group"))?;
        let index = self
            .read_index(&GroupId::new(group.topic, group.partition))
            .await?;
        Ok(Response::new(v1::ReadIndexResponse { index }))
    }

    async fn change_voters(
        &self,
        request: Request<v1::ChangeVotersRequest>,
    ) -> Result<Response<v1::ChangeVotersResponse>, Status> {
        let request = request.into_inner();
        let group = request
            .group
            .ok_or_else(|| Status::invalid_argument("a change of voters names its group"))?;
        let voters: BTreeMap<u64, String> = request.voters.into_iter().collect();
        self.change_voters(
            &GroupId::new(group.topic, group.partition),
            &voters,
            Duration::from_millis(request.timeout_ms),
        )
        .await
        .map(Response::new)
    }

    async fn describe_node(
        &self,
        _request: Request<v1::DescribeNodeRequest>,
    ) -> Result<Response<v1::DescribeNodeResponse>, Status> {
        Ok(Response::new(v1::DescribeNodeResponse {
            node_id: self.node_id,
            client_address: self.client_address.read().expect("address lock").clone(),
        }))
    }
}
