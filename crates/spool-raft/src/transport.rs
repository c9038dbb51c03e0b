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
    /// Every other node's peer address, to connect again with a new TLS
    /// configuration ([`set_tls`](Self::set_tls)).
    addresses: BTreeMap<u64, String>,
    config: TransportConfig,
    peers: RwLock<BTreeMap<u64, PeerClient<Channel>>>,
    /// Per peer, what its last answer said (`REACHABILITY_*`), so that a
    /// change is logged once rather than per call and group.
    reachability: BTreeMap<u64, AtomicU8>,
    request_timeout: Duration,
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

/// A lazily connected client per peer of `addresses`, over TLS with
/// `tls` when given.
fn connect(
    addresses: &BTreeMap<u64, String>,
    config: &TransportConfig,
    tls: Option<&ClientTlsConfig>,
) -> Result<BTreeMap<u64, PeerClient<Channel>>> {
    let mut clients = BTreeMap::new();
    for (&id, address) in addresses {
        let address_error = |source: tonic::transport::Error| Error::PeerAddress {
            node_id: id,
            address: address.clone(),
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
        let client = PeerClient::new(channel)
            .max_decoding_message_size(config.message_bytes_max)
            .max_encoding_message_size(config.message_bytes_max);
        clients.insert(id, client);
    }
    Ok(clients)
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
        let addresses: BTreeMap<u64, String> = peers
            .iter()
            .filter(|(id, _)| **id != node_id)
            .map(|(id, address)| (*id, address.clone()))
            .collect();
        let clients = connect(&addresses, &config, tls.as_ref())?;
        Ok(PeerTransport {
            node_id,
            reachability: clients
                .keys()
                .map(|id| (*id, AtomicU8::new(REACHABILITY_UNKNOWN)))
                .collect(),
            peers: RwLock::new(clients),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            addresses,
            config,
        })
    }

    /// Connects to the peers again with `tls` (a rotated certificate or
    /// CA bundle): calls from now on go over new connections presenting
    /// it; calls in flight finish on the old ones. Transports made without
    /// TLS stay in the clear.
    pub fn set_tls(&self, tls: ClientTlsConfig) -> Result<()> {
        let clients = connect(&self.addresses, &self.config, Some(&tls))?;
        *self.peers.write().expect("peers lock") = clients;
        Ok(())
    }

    fn client(&self, node_id: u64) -> Option<PeerClient<Channel>> {
        self.peers.read().expect("peers lock").get(&node_id).cloned()
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
        let Some(state) = self.reachability.get(&to) else {
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
}
