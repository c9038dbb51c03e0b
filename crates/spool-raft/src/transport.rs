//! The gRPC side of a node's Raft traffic that sends: [`PeerTransport`]
//! holds one channel per peer (HTTP/2, so every group of the node shares
//! that peer's connection, and a dropped connection is re-established on
//! the next call) and hands each group a [`Network`] that tags its
//! requests with the group's id. Every call has a deadline; a call that
//! fails or times out is [`Unreachable`], and Raft retries on its own
//! schedule. A peer that stops answering is logged once, at warn, and
//! once more when it answers again (openraft's own lines about it are
//! filtered out by default: `docs/operations.md`, "Logs").
//!
//! With a TLS configuration every peer is called over `https://`: the node
//! presents its certificate and checks the peer's (mutual TLS, the peer
//! listener's side being `spool-server`'s).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use spool_proto::v1;
use spool_proto::v1::peer_client::PeerClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::engine::wire::{self, PeerCallKind, WireRequest};
use crate::error::{Error, Result};
use crate::network::{GroupId, Network, PeerCall, PeerRequest, Unreachable};

/// How a node reaches its peers.
#[derive(Debug, Clone, Copy)]
pub struct TransportConfig {
    /// Time allowed to open a connection to a peer.
    pub connect_timeout_ms: u64,
    /// Time allowed for one request and its answer.
    pub request_timeout_ms: u64,
    /// An HTTP/2 ping goes to each peer this often, and a connection whose
    /// ping is not answered within `keepalive_timeout_ms` is dropped:
    /// calls on a connection that a network cut or a dead machine left
    /// open then fail at once, and the next call connects anew, instead of
    /// each waiting out its deadline on TCP's retransmission back-off.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// The largest peer message sent or received (an append-entries
    /// request carries up to openraft's `max_payload_entries` batches).
    pub message_bytes_max: usize,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            connect_timeout_ms: 1_000,
            request_timeout_ms: 5_000,
            keepalive_interval_ms: 1_000,
            keepalive_timeout_ms: 1_000,
            message_bytes_max: 256 << 20,
        }
    }
}

/// One node's connections to its peers.
#[derive(Debug)]
pub struct PeerTransport {
    node_id: u64,
    config: TransportConfig,
    /// Every other node this node knows of: the `--peers` map, and nodes
    /// added since ([`add_peer`](Self::add_peer)).
    peers: RwLock<BTreeMap<u64, Peer>>,
    /// The TLS configuration connections are made with, to connect a
    /// node added later, or again after a rotation.
    tls: RwLock<Option<ClientTlsConfig>>,
    request_timeout: Duration,
}

/// One peer: its address, the (lazily connected) client, and what its
/// last answer said (`REACHABILITY_*`), so that a change is logged once
/// rather than per call and group.
#[derive(Debug)]
struct Peer {
    address: String,
    client: PeerClient<Channel>,
    reachability: Arc<AtomicU8>,
}

/// The peer has not answered yet (it may still be starting).
const REACHABILITY_UNKNOWN: u8 = 0;
const REACHABILITY_UP: u8 = 1;
const REACHABILITY_DOWN: u8 = 2;

/// `host:port` or a full URI; the former means HTTP/2 over TLS when the
/// node has a TLS configuration for its peers, plaintext otherwise.
fn peer_uri(address: &str, tls: bool) -> String {
    match (address.contains("://"), tls) {
        (true, _) => address.to_owned(),
        (false, true) => format!("https://{address}"),
        (false, false) => format!("http://{address}"),
    }
}

/// A lazily connected client of node `id` at `address`, over TLS with
/// `tls` when given.
fn connect(
    id: u64,
    address: &str,
    config: &TransportConfig,
    tls: Option<&ClientTlsConfig>,
) -> Result<PeerClient<Channel>> {
    let address_error = |source: tonic::transport::Error| Error::PeerAddress {
        node_id: id,
        address: address.to_owned(),
        source: Box::new(source),
    };
    let mut endpoint = Endpoint::from_shared(peer_uri(address, tls.is_some())).map_err(address_error)?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone()).map_err(address_error)?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_millis(config.keepalive_interval_ms))
        .keep_alive_timeout(Duration::from_millis(config.keepalive_timeout_ms))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(PeerClient::new(channel)
        .max_decoding_message_size(config.message_bytes_max)
        .max_encoding_message_size(config.message_bytes_max))
}

impl PeerTransport {
    /// Connections (opened lazily, on first use) from node `node_id` to
    /// every other node of `peers` (node id to peer address), over TLS
    /// with `tls` (the node's certificate and the nodes' CA).
    pub fn new(
        node_id: u64,
        peers: &BTreeMap<u64, String>,
        config: TransportConfig,
        tls: Option<ClientTlsConfig>,
    ) -> Result<PeerTransport> {
        let transport = PeerTransport {
            node_id,
            config,
            peers: RwLock::default(),
            tls: RwLock::new(tls),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        };
        for (&id, address) in peers {
            transport.add_peer(id, address)?;
        }
        Ok(transport)
    }

    /// Makes node `id` reachable at `address` (a node added to the
    /// cluster, or one whose address changed); calls in flight to an
    /// earlier address finish on its connection. This node itself is
    /// never a peer.
    pub fn add_peer(&self, id: u64, address: &str) -> Result<()> {
        if id == self.node_id {
            return Ok(());
        }
        let mut peers = self.peers.write().expect("peers lock");
        if peers.get(&id).is_some_and(|peer| peer.address == address) {
            return Ok(());
        }
        let tls = self.tls.read().expect("tls lock").clone();
        let client = connect(id, address, &self.config, tls.as_ref())?;
        let reachability = peers
            .get(&id)
            .map(|peer| Arc::clone(&peer.reachability))
            .unwrap_or_else(|| Arc::new(AtomicU8::new(REACHABILITY_UNKNOWN)));
        peers.insert(
            id,
            Peer {
                address: address.to_owned(),
                client,
                reachability,
            },
        );
        Ok(())
    }

    /// Forgets node `id` (removed from the cluster): calls to it fail
    /// as unreachable from now on.
    pub fn remove_peer(&self, id: u64) {
        self.peers.write().expect("peers lock").remove(&id);
    }

    /// Every peer this node knows of, with its address.
    pub fn peer_addresses(&self) -> BTreeMap<u64, String> {
        self.peers
            .read()
            .expect("peers lock")
            .iter()
            .map(|(id, peer)| (*id, peer.address.clone()))
            .collect()
    }

    /// Connects to the peers again with `tls` (a rotated certificate or
    /// CA bundle): calls from now on go over new connections presenting
    /// it; calls in flight finish on the old ones. Transports made without
    /// TLS stay in the clear.
    pub fn set_tls(&self, tls: ClientTlsConfig) -> Result<()> {
        let mut peers = self.peers.write().expect("peers lock");
        let mut clients = BTreeMap::new();
        for (&id, peer) in peers.iter() {
            clients.insert(id, connect(id, &peer.address, &self.config, Some(&tls))?);
        }
        for (id, client) in clients {
            if let Some(peer) = peers.get_mut(&id) {
                peer.client = client;
            }
        }
        *self.tls.write().expect("tls lock") = Some(tls);
        Ok(())
    }

    fn client(&self, node_id: u64) -> Option<PeerClient<Channel>> {
        self.peers
            .read()
            .expect("peers lock")
            .get(&node_id)
            .map(|peer| peer.client.clone())
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The connection to node `node_id`, for the calls that answer with a
    /// status of their own.
    fn client_of(&self, node_id: u64) -> Result<PeerClient<Channel>, tonic::Status> {
        self.client(node_id)
            .ok_or_else(|| tonic::Status::unavailable(format!("node {node_id} is not a peer")))
    }

    /// The [`Network`] of this node's replica of `group`, which belongs to
    /// creation `incarnation` of its topic (0 for the metadata group): its
    /// Raft messages name it, and peers refuse them unless their replica
    /// belongs to the same ([`PeerService::register`](crate::PeerService::register)).
    pub fn group(self: &Arc<Self>, group: GroupId, incarnation: u64) -> Arc<dyn Network> {
        Arc::new(GroupNetwork {
            group: spool_proto::v1::RaftGroup {
                incarnation,
                ..group.to_proto()
            },
            transport: Arc::clone(self),
        })
    }

    /// Asks node `node_id` who it is: its id and its client address.
    pub async fn describe_node(&self, node_id: u64) -> Result<v1::DescribeNodeResponse, Unreachable> {
        let unreachable = Unreachable {
            from: self.node_id,
            to: node_id,
        };
        let mut client = self.client(node_id).ok_or(unreachable)?;
        let call = client.describe_node(v1::DescribeNodeRequest {});
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            _ => Err(unreachable),
        }
    }

    /// Proposes `batch` to `group` through node `node_id`, which must lead
    /// it. A refusal comes back as the node's status (with a leader hint
    /// when it is not the leader).
    pub async fn propose(
        &self,
        node_id: u64,
        group: &GroupId,
        batch: bytes::Bytes,
    ) -> Result<v1::ProposeResponse, tonic::Status> {
        let mut client = self.client_of(node_id)?;
        let request = v1::ProposeRequest {
            group: Some(group.to_proto()),
            batch,
        };
        match tokio::time::timeout(self.request_timeout, client.propose(request)).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::unavailable(format!(
                "node {node_id} did not answer in time"
            ))),
        }
    }

    /// Asks node `node_id` what its replicas know of their groups.
    pub async fn describe_replicas(
        &self,
        node_id: u64,
        timeout: Duration,
    ) -> Result<v1::DescribeReplicasResponse, Unreachable> {
        let unreachable = Unreachable {
            from: self.node_id,
            to: node_id,
        };
        let mut client = self.client(node_id).ok_or(unreachable)?;
        let call = client.describe_replicas(v1::DescribeReplicasRequest {});
        match tokio::time::timeout(timeout.min(self.request_timeout), call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            _ => Err(unreachable),
        }
    }

    /// Asks node `node_id`, which must lead `group`, to move the
    /// leadership to node `to`. A refusal comes back as the node's status
    /// (with a leader hint when it does not lead).
    pub async fn transfer_leader(
        &self,
        node_id: u64,
        group: &GroupId,
        to: u64,
    ) -> Result<v1::TransferLeaderResponse, tonic::Status> {
        let mut client = self.client_of(node_id)?;
        let request = v1::TransferLeaderRequest {
            topic: group.topic.clone(),
            partition: group.partition,
            to_node_id: to,
        };
        match tokio::time::timeout(self.request_timeout, client.transfer_leader(request)).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::unavailable(format!(
                "node {node_id} did not answer in time"
            ))),
        }
    }

    /// Asks node `node_id`, which must lead `group`, to make `voters` the
    /// group's voting members, allowing it `timeout` (the call's own
    /// deadline is a little longer). A refusal comes back as the node's
    /// status (with a leader hint when it does not lead).
    pub async fn change_voters(
        &self,
        node_id: u64,
        group: &GroupId,
        voters: &BTreeMap<u64, String>,
        timeout: Duration,
    ) -> Result<v1::ChangeVotersResponse, tonic::Status> {
        let mut client = self.client_of(node_id)?;
        let request = v1::ChangeVotersRequest {
            group: Some(group.to_proto()),
            voters: voters.clone().into_iter().collect(),
            timeout_ms: timeout.as_millis() as u64,
        };
        let deadline = timeout + self.request_timeout;
        match tokio::time::timeout(deadline, client.change_voters(request)).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::unavailable(format!(
                "node {node_id} did not answer in time"
            ))),
        }
    }

    /// Asks node `node_id`, which must lead `group`, for the group's read
    /// index (`PeerService::read_index`).
    pub async fn read_index(&self, node_id: u64, group: &GroupId) -> Result<Option<u64>, tonic::Status> {
        let mut client = self.client_of(node_id)?;
        let request = v1::ReadIndexRequest {
            group: Some(group.to_proto()),
        };
        match tokio::time::timeout(self.request_timeout, client.read_index(request)).await {
            Ok(answer) => answer.map(|response| response.into_inner().index),
            Err(_) => Err(tonic::Status::unavailable(format!(
                "node {node_id} did not answer in time"
            ))),
        }
    }

    async fn call(&self, to: u64, request: WireRequest) -> Result<v1::RaftReply, Unreachable> {
        let unreachable = Unreachable {
            from: self.node_id,
            to,
        };
        let mut client = self.client(to).ok_or(unreachable)?;
        let call = async move {
            match request {
                WireRequest::AppendEntries(request) => client.append_entries(request).await,
                WireRequest::Vote(request) => client.vote(request).await,
                WireRequest::InstallSnapshot(request) => client.install_snapshot(request).await,
                WireRequest::Elect(request) => client.elect(request).await,
            }
        };
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(reply)) => {
                self.answered(to, true, "");
                Ok(reply.into_inner())
            }
            Ok(Err(status)) => {
                let reason = reason(&status);
                tracing::debug!(from = self.node_id, to, reason, "peer call failed");
                // NOT_FOUND is an answer: the peer is up but holds no
                // replica of the group (yet).
                self.answered(to, status.code() == tonic::Code::NotFound, &reason);
                Err(unreachable)
            }
            Err(_) => {
                tracing::debug!(from = self.node_id, to, "peer call timed out");
                self.answered(to, false, "no answer in time");
                Err(unreachable)
            }
        }
    }

    /// Records whether peer `to` answered, logging a change of state with
    /// `reason`, what the failed call said.
    fn answered(&self, to: u64, up: bool, reason: &str) {
        let Some(state) = self
            .peers
            .read()
            .expect("peers lock")
            .get(&to)
            .map(|peer| Arc::clone(&peer.reachability))
        else {
            return;
        };
        let now = if up { REACHABILITY_UP } else { REACHABILITY_DOWN };
        match state.swap(now, Ordering::Relaxed) {
            before if before == now => {}
            REACHABILITY_UP => tracing::warn!(node_id = self.node_id, peer = to, reason, "peer unreachable"),
            REACHABILITY_DOWN if up => {
                tracing::info!(node_id = self.node_id, peer = to, "peer reachable again")
            }
            _ if up => tracing::debug!(node_id = self.node_id, peer = to, "peer reachable"),
            _ => tracing::info!(
                node_id = self.node_id,
                peer = to,
                reason,
                "peer not reachable yet"
            ),
        }
    }
}

/// What a failed call said, with its causes: a TLS failure (a peer
/// certificate of another CA, or not naming the address called) is only
/// "transport error" without them.
fn reason(status: &tonic::Status) -> String {
    let mut reason = format!("{:?}: {}", status.code(), status.message());
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        // Causes often repeat their source's words: each is said once.
        let text = error.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        cause = error.source();
    }
    reason
}

/// One group's view of the transport.
#[derive(Debug)]
struct GroupNetwork {
    group: v1::RaftGroup,
    transport: Arc<PeerTransport>,
}

impl Network for GroupNetwork {
    fn send(&self, from: u64, to: u64, request: PeerRequest) -> PeerCall {
        let unreachable = Unreachable { from, to };
        let kind = match &request {
            PeerRequest::AppendEntries(_) => PeerCallKind::AppendEntries,
            PeerRequest::Vote(_) => PeerCallKind::Vote,
            PeerRequest::InstallSnapshot(_) => PeerCallKind::InstallSnapshot,
            PeerRequest::Elect => PeerCallKind::Elect,
        };
        let wire_request = wire::request_to_proto(self.group.clone(), from, request);
        let transport = Arc::clone(&self.transport);
        Box::pin(async move {
            let wire_request = wire_request.map_err(|error| {
                tracing::warn!(%error, "a peer request did not encode");
                unreachable
            })?;
            let reply = transport.call(to, wire_request).await?;
            wire::response_from_proto(kind, &reply).map_err(|error| {
                tracing::warn!(%error, to, "a peer's answer did not decode");
                unreachable
            })
        })
    }

    fn learn(&self, node_id: u64, address: &str) {
        let known = self
            .transport
            .peers
            .read()
            .expect("peers lock")
            .contains_key(&node_id);
        if known || node_id == self.transport.node_id || address.is_empty() {
            return;
        }
        match self.transport.add_peer(node_id, address) {
            Ok(()) => tracing::info!(
                node_id,
                address,
                "learned a peer's address from a group's membership"
            ),
            Err(error) => {
                tracing::warn!(node_id, address, %error, "a membership names an address that cannot be used")
            }
        }
    }
}
