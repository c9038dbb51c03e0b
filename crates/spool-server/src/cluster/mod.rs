//! Cluster mode (`docs/cluster.md`): what `spoold --node-id N --peers ...`
//! runs besides the single-node server. [`Cluster`] owns this node's side
//! of every Raft group: the peer listener (`spool.v1.Peer`, through
//! `spool-raft`'s [`PeerService`] and [`PeerTransport`]), the metadata
//! group over all nodes (its log is the internal topic `__cluster`), the
//! task that applies committed metadata (`applier.rs`: opens and closes
//! this node's partition replicas), and the answers clients get when they
//! reach a node that does not lead a partition. [`ClusterLogService`] is
//! the `spool.v1.Log` service of a cluster node; `operations.rs` builds
//! the cluster's status and runs leadership transfers
//! (`spool.v1.Cluster`, served by `crate::cluster_service`).
//!
//! What it is not: single-node mode never builds a [`Cluster`], so none of
//! this runs there.

mod applier;
mod jobs;
pub mod metadata;
mod metadata_snapshot;
mod operations;
mod retention;
mod service;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use spool_format::batch::{self, Record};
use spool_log::Store;
use spool_raft::{GroupConfig, GroupId, PeerService, PeerTransport, Replica, TransportConfig};
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::ClientTlsConfig;

use crate::tls::Certificates;

pub use self::metadata::{MetadataCommand, MetadataState, TopicEntry, TopicSpec};
pub use self::service::ClusterLogService;

/// How long a stopping node tries to hand over the leadership of each
/// group it leads ([`Cluster::shutdown`]).
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(2);

/// How a node keeps replicated data by default.
#[derive(Debug, Clone, Copy)]
pub struct DataSettings {
    /// Segment size of a topic created without one.
    pub segment_bytes_max: u64,
    /// How much of `__jobs` the node keeps (`job_history_retention_*`).
    pub job_history_retention: spool_log::Retention,
}

/// The directory of the job table's snapshot in a data directory.
pub const JOBS_SNAPSHOT_DIR: &str = "jobs";

/// How long a metadata change may wait for the metadata group's leader
/// and for its own application on this node.
const METADATA_WAIT: Duration = Duration::from_secs(10);

/// What can stop cluster mode from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("the peer address {address:?} of this node is not host:port")]
    PeerAddress { address: String },
    #[error("cannot listen for peers on {address}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the internal log {topic}")]
    InternalLog {
        topic: String,
        #[source]
        source: spool_log::Error,
    },
    #[error("cannot start the metadata group")]
    Raft {
        #[source]
        source: spool_raft::Error,
    },
}

/// Mutual TLS between the nodes (`peer_tls_ca`): what the peer listener
/// serves and requires, and what this node presents when it calls a peer.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// The node's certificate with the nodes' CA as the client CA;
    /// reloaded with the other listeners' certificates.
    pub listener: Arc<Certificates>,
    pub client: ClientTlsConfig,
}

/// The nodes a cluster node starts with: the `--peers` map (this node
/// included) and whether this node joins a running cluster (`--join`)
/// rather than starting one with the others.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    pub peers: BTreeMap<u64, String>,
    /// Set, this node never makes a group's first membership: it waits to
    /// be added (`spool cluster add-node`), and learns the groups from
    /// their leaders.
    pub join: bool,
}

/// This node's part in a cluster.
#[derive(Debug)]
pub struct Cluster {
    node_id: u64,
    /// This node's id and the Raft timing of every group
    /// (`raft_heartbeat_interval_ms`, `raft_election_timeout_ms`).
    group_config: GroupConfig,
    /// The `--peers` map this node started with; the cluster's nodes now
    /// are these and those added since, less those removed
    /// ([`peers`](Self::peers)).
    bootstrap: BTreeMap<u64, String>,
    client_address: String,
    store: Arc<Store>,
    service: PeerService,
    transport: Arc<PeerTransport>,
    metadata: Replica,
    /// This node's replica of the job layer's group (`__jobs`).
    jobs: Replica,
    state: Arc<RwLock<MetadataState>>,
    /// The metadata group's snapshots of `state` (`metadata_snapshot.rs`).
    metadata_snapshots: Arc<metadata_snapshot::MetadataSnapshots>,
    /// The metadata offset applied through on this node.
    applied: watch::Sender<u64>,
    /// Other nodes' client addresses, learned with `DescribeNode`.
    client_addresses: Mutex<HashMap<u64, String>>,
    /// Segment size of a topic created without one.
    segment_bytes_max: u64,
    /// How much of `__jobs` this node keeps (`job_history_retention_*`):
    /// its replica is compacted below it (`retention.rs`).
    job_history_retention: spool_log::Retention,
    /// Turns true once this node has confirmed its metadata with the
    /// metadata leader since it started ([`wait_for_start_sync`](Self::wait_for_start_sync)).
    synced_since_start: watch::Sender<bool>,
    started_at: tokio::time::Instant,
    /// Stops the peer listener ([`shutdown`](Self::shutdown)).
    peers_stop: watch::Sender<bool>,
}

impl Cluster {
    /// Starts this node's part: serves `spool.v1.Peer` on its peer address,
    /// opens the metadata group (making its first membership, all nodes,
    /// when the log is empty) and starts applying committed metadata.
    /// `client_address` is where clients reach this node, named in leader
    /// hints; `group_config` names this node and times every group it
    /// runs; `data` says how new topics and `__jobs` are kept; with
    /// `tls` peer traffic both ways is mutual TLS. Everything
    /// stops when `shutdown` turns true.
    pub async fn start(
        store: Arc<Store>,
        group_config: GroupConfig,
        bootstrap: Bootstrap,
        client_address: String,
        data: DataSettings,
        tls: Option<PeerTls>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let node_id = group_config.node_id;
        let Bootstrap { peers, join } = bootstrap;
        let DataSettings {
            segment_bytes_max,
            job_history_retention,
        } = data;
        let own = peers.get(&node_id).cloned().unwrap_or_default();
        let address: SocketAddr = own
            .parse()
            .map_err(|_| ClusterError::PeerAddress { address: own.clone() })?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ClusterError::Listen { address, source })?;
        let transport_config = TransportConfig::default();
        let service = PeerService::new(
            node_id,
            client_address.clone(),
            transport_config.message_bytes_max,
        );
        let transport = Arc::new(
            PeerTransport::new(
                node_id,
                &peers,
                transport_config,
                tls.as_ref().map(|tls| tls.client.clone()),
            )
            .map_err(|source| ClusterError::Raft { source })?,
        );
        // The peer listener outlives the client listener: it stops at the
        // end of `Cluster::shutdown`, after this node has handed its
        // leaderships over (which needs its peers' votes and answers).
        let peers_stop = watch::Sender::new(false);
        serve_peers(listener, &service, tls.as_ref(), peers_stop.subscribe());
        if let Some(tls) = &tls {
            tokio::spawn(follow_certificate_reloads(
                Arc::clone(&tls.listener),
                Arc::clone(&transport),
                shutdown.clone(),
            ));
        }

        let state = Arc::new(RwLock::new(MetadataState::default()));
        let metadata_snapshots = Arc::new(metadata_snapshot::MetadataSnapshots::open(
            Arc::clone(&state),
            store.dir(),
        ));
        let metadata = open_internal_group(
            &store,
            GroupId::metadata(),
            &group_config,
            &transport,
            &service,
            (!join).then_some(&peers),
            Some(Arc::clone(&metadata_snapshots) as Arc<dyn spool_raft::AppState>),
        )
        .await?;
        let jobs = open_internal_group(
            &store,
            GroupId::jobs(),
            &group_config,
            &transport,
            &service,
            (!join).then_some(&peers),
            Some(Arc::new(jobs::JobsSnapshots {
                dir: store.dir().join(JOBS_SNAPSHOT_DIR),
            }) as Arc<dyn spool_raft::AppState>),
        )
        .await?;
        let cluster = Arc::new(Cluster {
            node_id,
            group_config,
            bootstrap: peers,
            client_address,
            store,
            service,
            transport,
            metadata,
            jobs,
            state,
            metadata_snapshots,
            applied: watch::Sender::new(0),
            client_addresses: Mutex::default(),
            segment_bytes_max,
            job_history_retention,
            synced_since_start: watch::Sender::new(false),
            started_at: tokio::time::Instant::now(),
            peers_stop,
        });
        tokio::spawn(applier::run(Arc::clone(&cluster), shutdown.clone()));
        tokio::spawn(retention::run(Arc::clone(&cluster), shutdown.clone()));
        tokio::spawn(confirm_metadata_at_start(Arc::clone(&cluster), shutdown));
        tracing::info!(node_id, peer_address = %address, nodes = cluster.bootstrap.len(), join, peer_tls = tls.is_some(), "cluster mode: peer listener up");
        Ok(cluster)
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// A copy of the committed metadata as applied on this node.
    pub fn state(&self) -> MetadataState {
        self.state.read().expect("metadata lock").clone()
    }

    pub fn topic(&self, name: &str) -> Option<TopicEntry> {
        self.state.read().expect("metadata lock").topic(name).cloned()
    }

    /// Brings this node's metadata up to what the metadata leader had
    /// applied when asked: for answers a node that missed metadata would
    /// get wrong ("this topic does not exist" from a node that was down
    /// when it was created, or that has just restarted). Asks the leader
    /// for its read index (`ReadIndex`: it confirms with a majority that
    /// it still leads, so a deposed leader that does not know it yet
    /// cannot answer), waits until this node's metadata replica has
    /// applied that far and the applier has caught up with it. UNAVAILABLE
    /// when there is no leader, it does not confirm, or this node is not
    /// there within `wait`.
    pub async fn sync_metadata(&self, wait: Duration) -> Result<(), Status> {
        let unavailable = |why: &str| Status::unavailable(format!("this node cannot tell yet: {why}; retry"));
        let deadline = tokio::time::Instant::now() + wait;
        let leader = self
            .metadata
            .leader_id()
            .ok_or_else(|| unavailable("the metadata group has no leader it knows of"))?;
        let group = GroupId::metadata();
        let read = if leader == self.node_id {
            self.service.read_index(&group).await
        } else {
            self.transport.read_index(leader, &group).await
        };
        let target = read.map_err(|status| {
            tracing::debug!(leader, %status, "no metadata read index");
            unavailable("the metadata leader did not confirm its leadership")
        })?;
        let Some(target) = target else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !self.metadata.wait_applied(target, left).await {
            return Err(unavailable(
                "this node is still catching up on the cluster's metadata",
            ));
        }
        let committed = self.metadata.partition().committed_offset();
        let mut applied = self.applied.subscribe();
        tokio::time::timeout_at(deadline, applied.wait_for(|offset| *offset >= committed))
            .await
            .map_err(|_| unavailable("this node is still applying the cluster's metadata"))?
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        Ok(())
    }

    /// Waits, for at most four of the longest election timeouts after this
    /// node started, until it has confirmed its metadata with the metadata
    /// leader. Reads wait for it: until then this node runs its replicas
    /// from the metadata it stored, and one may belong to a topic deleted
    /// and created again while the node was down (its records are not the
    /// new topic's). After that time reads go on without it, so that a
    /// node left without a metadata majority still serves what its
    /// replicas committed.
    pub async fn wait_for_start_sync(&self) {
        // Every read asks: once confirmed, a look at the flag is all.
        if *self.synced_since_start.borrow() {
            return;
        }
        let limit = self.started_at + 4 * Duration::from_millis(self.group_config.election_timeout_max_ms);
        let mut synced = self.synced_since_start.subscribe();
        let _ = tokio::time::timeout_at(limit, synced.wait_for(|synced| *synced)).await;
    }

    /// The cluster's nodes now, with their peer addresses: those it
    /// started with and those added since, less those removed.
    pub fn peers(&self) -> BTreeMap<u64, String> {
        self.state.read().expect("metadata lock").nodes(&self.bootstrap)
    }

    /// The nodes' ids, sorted.
    pub fn node_ids(&self) -> Vec<u64> {
        self.peers().into_keys().collect()
    }

    pub fn segment_bytes_max(&self) -> u64 {
        self.segment_bytes_max
    }

    /// The job layer's side of the cluster: this node's replica of
    /// `__jobs` (its partition, with the committed offset restored) and
    /// what the job runtime proposes through (`jobs.rs`).
    pub fn jobs_group(self: &Arc<Self>) -> (spool_log::Partition, Arc<dyn spool_jobs::Replication>) {
        let group = self::jobs::JobsGroup::start(self, self.jobs.clone());
        (self.jobs.partition().clone(), group)
    }

    /// This node's replica of partition `partition` of `topic`.
    pub fn replica(&self, topic: &str, partition: u32) -> Option<Replica> {
        self.service.replica(&GroupId::new(topic, partition))
    }

    /// Stops this node's part (before the store closes): hands over the
    /// leadership of every group it still leads ([`hand_over`](Self::hand_over);
    /// `spoold` has done so once already, before it stopped taking client
    /// requests), stops every replica, then the peer listener.
    pub async fn shutdown(&self) {
        self.hand_over().await;
        for (group, replica) in self.service.replicas() {
            self.service.unregister(&group);
            if let Err(error) = replica.shutdown().await {
                tracing::warn!(%group, %error, "a replica did not stop cleanly");
            }
        }
        self.peers_stop.send_replace(true);
    }

    /// Moves the leadership of every group this node leads to its most
    /// caught-up other voter, all groups at once, each within
    /// [`HAND_OVER_TIMEOUT`]: a node stopped on purpose (SIGTERM, a rolling
    /// restart) then leaves leaders behind, and writes pause for a
    /// transfer (a fraction of a second) instead of an election after
    /// the lease runs out (about a second). A group whose transfer fails
    /// elects a leader as after a crash.
    pub async fn hand_over(&self) {
        let mut transfers = tokio::task::JoinSet::new();
        for (group, replica) in self.service.replicas() {
            let status = replica.status();
            if status.role != spool_raft::Role::Leader {
                continue;
            }
            let Some(target) = status.most_caught_up_voter(|_| true) else {
                continue;
            };
            transfers.spawn(async move {
                let result = replica.transfer_leadership(target, HAND_OVER_TIMEOUT).await;
                (group, target, result)
            });
        }
        while let Some(joined) = transfers.join_next().await {
            match joined {
                Ok((group, to, Ok(term))) => {
                    tracing::info!(%group, to, term, "handed the leadership over before stopping")
                }
                Ok((group, to, Err(error))) => {
                    tracing::warn!(%group, to, %error, "could not hand the leadership over; the group will elect one")
                }
                Err(join) => tracing::warn!(%join, "a leadership hand-over panicked"),
            }
        }
    }

    /// Where clients reach node `node_id`, if it can be learned.
    pub async fn client_address(&self, node_id: u64) -> Option<String> {
        if let Some(address) = self.known_client_address(node_id) {
            return Some(address);
        }
        let described = self.transport.describe_node(node_id).await.ok()?;
        self.client_addresses
            .lock()
            .expect("address lock")
            .insert(node_id, described.client_address.clone());
        Some(described.client_address)
    }

    /// Where clients reach node `node_id`, if this node has learned it
    /// already ([`client_address`](Self::client_address) asks the node).
    fn known_client_address(&self, node_id: u64) -> Option<String> {
        if node_id == self.node_id {
            return Some(self.client_address.clone());
        }
        self.client_addresses
            .lock()
            .expect("address lock")
            .get(&node_id)
            .cloned()
    }

    /// The status for a request this node cannot serve because it does
    /// not lead (or hold) the group: names `leader_id` and its address.
    pub async fn not_leader(&self, leader_id: Option<u64>) -> Status {
        let address = match leader_id {
            Some(id) => self.client_address(id).await.unwrap_or_default(),
            None => String::new(),
        };
        spool_raft::not_leader(leader_id, address)
    }

    /// Proposes `command` to the metadata group (through its leader,
    /// wherever it is) and waits until this node has applied it. Returns
    /// the metadata offset the command is stored at.
    pub async fn propose(&self, command: &MetadataCommand) -> Result<u64, Status> {
        let json = serde_json::to_vec(command).map_err(|e| Status::internal(e.to_string()))?;
        let limits = self.metadata.partition().batch_limits();
        let encoded = batch::encode_to_vec(&[Record::value(&json)], now_ms(), limits)
            .map_err(|e| Status::invalid_argument(format!("the metadata command is too large: {e}")))?;
        let encoded = Bytes::from(encoded);
        let group = GroupId::metadata();
        let deadline = tokio::time::Instant::now() + METADATA_WAIT;
        // A proposal that cannot commit (this node leads but is cut off
        // from the others) waits no longer than the deadline either; its
        // outcome is then unknown.
        let gave_up = || {
            Status::deadline_exceeded(format!(
                "the metadata change was not confirmed within {} s; it may still take effect: check before retrying",
                METADATA_WAIT.as_secs()
            ))
        };
        let (base_offset, next_offset) = loop {
            let appended = tokio::time::timeout_at(deadline, self.metadata.append(encoded.clone()))
                .await
                .map_err(|_| gave_up())?;
            let leader = match appended {
                Ok(appended) => break (appended.base_offset, appended.next_offset),
                Err(spool_raft::Error::NotLeader { leader_id }) => leader_id,
                Err(error) => {
                    return Err(Status::unavailable(format!(
                        "the metadata group refused: {error}"
                    )));
                }
            };
            if let Some(leader) = leader.filter(|l| *l != self.node_id) {
                let forwarded = tokio::time::timeout_at(
                    deadline,
                    self.transport.propose(leader, &group, encoded.clone()),
                )
                .await
                .map_err(|_| gave_up())?;
                match forwarded {
                    Ok(done) => break (done.base_offset, done.next_offset),
                    Err(status) if status.code() == tonic::Code::InvalidArgument => return Err(status),
                    Err(status) => {
                        tracing::debug!(leader, %status, "forwarding a metadata change failed; retrying")
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Status::unavailable("the metadata group has no reachable leader"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut applied = self.applied.subscribe();
        tokio::time::timeout_at(deadline, applied.wait_for(|offset| *offset >= next_offset))
            .await
            .map_err(|_| Status::unavailable("the metadata change is committed but not yet applied here"))?
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        Ok(base_offset)
    }

    /// Waits (up to `wait`) until every replica this node holds of `topic`
    /// knows a leader, so that a produce right after creation finds one.
    pub async fn wait_for_leaders(&self, topic: &str, wait: Duration) {
        let replicas: Vec<Replica> = self
            .service
            .replicas()
            .into_iter()
            .filter(|(group, _)| group.topic == topic)
            .map(|(_, replica)| replica)
            .collect();
        for replica in replicas {
            let _ = replica.wait_for_leader(wait).await;
        }
    }
}

/// Makes `members` the first membership of a new group, `replica` being
/// this node's replica of it. Every replica of the group is asked to;
/// the member with the lowest id does it at once and the others only if
/// they have heard of no leader after four election timeouts (that member
/// is down). Making it on every replica at once would make every one a
/// candidate in the same term, each voting for itself: a group of two
/// would then need a second election, or more, to get a leader. openraft
/// refuses a first membership on a replica whose log is not empty, so a
/// late one is harmless.
pub(crate) fn initialize_group(replica: &Replica, config: &GroupConfig, members: BTreeMap<u64, String>) {
    let first = members.keys().next() == Some(&config.node_id);
    let patience = Duration::from_millis(4 * config.election_timeout_min_ms);
    let replica = replica.clone();
    tokio::spawn(async move {
        if !first {
            tokio::time::sleep(patience).await;
            if replica.leader_id().is_some() {
                return;
            }
        }
        // A log that holds anything (Raft's own entries included: a
        // restarted replica of a group without records yet) has a
        // membership already.
        if replica.status().last_log_index.is_some() {
            return;
        }
        if let Err(error) = replica.initialize(&members).await {
            tracing::debug!(%error, "the group was initialized elsewhere");
        }
    });
}

/// Opens this node's replica of `group`, a group of every node over an
/// internal topic of its own (the metadata group's, the job layer's),
/// registers it with the peer
/// service and, when its log is empty, makes its first membership of
/// `peers` (none for a node that joins a running cluster: the leader
/// adds it). `app` is the state its owner folds the log into, if any
/// (`Replica::open_with_state`).
async fn open_internal_group(
    store: &Arc<Store>,
    group: GroupId,
    config: &GroupConfig,
    transport: &Arc<PeerTransport>,
    service: &PeerService,
    peers: Option<&BTreeMap<u64, String>>,
    app: Option<Arc<dyn spool_raft::AppState>>,
) -> Result<Replica, ClusterError> {
    let partition = {
        let store = Arc::clone(store);
        let topic = group.topic.clone();
        tokio::task::spawn_blocking(move || store.internal_partition(&topic))
            .await
            .expect("opening an internal log does not panic")
            .map_err(|source| ClusterError::InternalLog {
                topic: group.topic.clone(),
                source,
            })?
    };
    let replica = Replica::open_with_state(config, partition.clone(), transport.group(group.clone(), 0), app)
        .await
        .map_err(|source| ClusterError::Raft { source })?;
    service.register(group, 0, replica.clone());
    if let Some(peers) = peers
        && partition.high_watermark() == 0
    {
        initialize_group(&replica, config, peers.clone());
    }
    Ok(replica)
}

/// Serves `spool.v1.Peer` on `listener` until `shutdown`: over mutual TLS
/// with `tls` (a connection without a certificate of the nodes' CA fails
/// its handshake and never reaches the service), in the clear without.
fn serve_peers(
    listener: tokio::net::TcpListener,
    service: &PeerService,
    tls: Option<&PeerTls>,
    shutdown: watch::Receiver<bool>,
) {
    let service = match tls {
        Some(_) => service.clone().with_sender_identity(certified_node),
        None => service.clone(),
    };
    let router = tonic::transport::Server::builder().add_service(service.into_server());
    let server: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match tls {
        Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
            crate::tls::incoming(listener, Arc::clone(&tls.listener), |stream, _| Some(stream)),
            stopped(shutdown),
        )),
        None => Box::pin(router.serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stopped(shutdown),
        )),
    };
    tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the peer listener failed");
        }
    });
}

/// Each time the peer listener's certificates reload (a rotated
/// certificate, key or peer CA bundle), connects to the peers again with
/// them, so that outgoing calls present what the listener serves.
async fn follow_certificate_reloads(
    certificates: Arc<Certificates>,
    transport: Arc<PeerTransport>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reloads = certificates.reloads();
    loop {
        tokio::select! {
            changed = reloads.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        let files = certificates.files();
        let Some(ca) = files.client_ca.as_deref() else {
            return;
        };
        let config = match crate::tls::peer_client_config(&files.cert, &files.key, ca) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "peer connections keep the certificate in force");
                continue;
            }
        };
        match transport.set_tls(config) {
            Ok(()) => tracing::info!("peer connections use the reloaded certificates"),
            Err(error) => tracing::error!(%error, "peer connections keep the certificate in force"),
        }
    }
}

/// The node a peer connection's verified client certificate names: its
/// common name is `spool-node-ID` (as `spool init-security --node` makes
/// it).
fn certified_node(extensions: &tonic::Extensions) -> Option<u64> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certificates = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?.peer_certs()?;
    let name = crate::tls::common_name(certificates.first()?.as_ref())?;
    name.strip_prefix("spool-node-")?.parse().ok()
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Confirms this node's metadata with the metadata leader once after the
/// start ([`Cluster::wait_for_start_sync`]), trying until it succeeds or
/// the node stops.
async fn confirm_metadata_at_start(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if cluster.sync_metadata(Duration::from_secs(2)).await.is_ok() {
            cluster.synced_since_start.send_replace(true);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
    }
}
