//! The one module that names openraft: the type configuration, the
//! storage traits over a spool-log [`Partition`], the adaptor from
//! openraft's network traits to [`Network`], and [`Replica`], the handle
//! the rest of Spool uses. Moving to another openraft version touches this
//! module and nothing else (`docs/cluster.md`, "Design and status").
//!
//! openraft runs with `single-term-leader` (standard Raft: one leader per
//! term), so a log id is (term, index): the term comes from the
//! partition's term list, the index from [`EntryIndex`](crate::index::EntryIndex).

mod app_state;
mod compaction;
mod elections;
mod idempotence;
mod log_store;
mod membership;
mod peer;
mod state_machine;
mod status;
mod transfer;
pub(crate) mod wire;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use spool_format::batch::BatchLimits;
use spool_log::Partition;

use crate::entry;
use crate::error::{Error, Result};
use crate::index::EntryIndex;
use crate::network::Network;

pub use self::app_state::{AppSnapshot, AppState};
use self::elections::Elections;
use self::idempotence::InFlight;
use self::log_store::PartitionLog;
use self::peer::PeerFactory;
use self::state_machine::PartitionStateMachine;
pub use self::status::{ReplicaStatus, Role};

// `Cursor` is named by the macro's default snapshot type.
openraft::declare_raft_types!(
    /// Spool's openraft types: a client entry is an encoded batch, node ids
    /// are `u64`, a node is known by its address.
    pub TypeConfig:
        D = Bytes,
        R = Appended,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Where a committed entry landed in the partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// The entry's Raft log index.
    pub index: u64,
    pub base_offset: u64,
    /// The offset after the entry's last record.
    pub next_offset: u64,
    /// The batch was an idempotent producer's retry of a committed batch:
    /// nothing was proposed, and the offsets are the original's.
    #[serde(default)]
    pub duplicate: bool,
}

/// A message from one replica of a group to another.
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Start an election now: the last step of a leadership transfer
    /// (`transfer.rs`), sent by the leader to the replica taking over.
    Elect,
}

/// The answer to a [`PeerRequest`], of the same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Elect(Result<(), Fatal<u64>>),
}

/// How one replica of a group runs.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub node_id: u64,
    pub heartbeat_interval_ms: u64,
    /// An election starts after a random time in this range without a
    /// heartbeat.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl GroupConfig {
    /// openraft's default timing.
    pub fn new(node_id: u64) -> GroupConfig {
        GroupConfig {
            node_id,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
        }
    }
}

/// What openraft's answer to a proposed batch (`client_write_ff`'s
/// receiver) means for its writer: where it was committed, the leader to
/// ask instead, or why its outcome is unknown.
fn write_outcome<E: std::error::Error + Send + Sync + 'static>(
    answer: std::result::Result<
        std::result::Result<
            openraft::raft::ClientWriteResponse<TypeConfig>,
            ClientWriteError<u64, BasicNode>,
        >,
        E,
    >,
) -> Result<Appended> {
    match answer {
        Ok(Ok(response)) => Ok(response.data),
        Ok(Err(refusal)) => Err(client_write_error("append a batch", refusal)),
        Err(dropped) => Err(Error::Raft {
            op: "hear whether a batch was committed",
            source: Box::new(dropped),
        }),
    }
}

/// openraft's refusal of a write (a batch, a membership change) in
/// Spool's terms: the leader to ask instead, or why it was refused.
fn client_write_error(op: &'static str, refusal: ClientWriteError<u64, BasicNode>) -> Error {
    match refusal {
        ClientWriteError::ForwardToLeader(forward) => Error::NotLeader {
            leader_id: forward.leader_id,
        },
        other => Error::Raft {
            op,
            source: Box::new(other),
        },
    }
}

/// One replica of a partition's Raft group. Cheap to clone; every clone
/// drives the same engine.
#[derive(Clone)]
pub struct Replica {
    node_id: u64,
    raft: Raft<TypeConfig>,
    partition: Partition,
    limits: BatchLimits,
    /// How this replica reaches its peers outside Raft's own messages
    /// (the election request of a leadership transfer).
    network: Arc<dyn Network>,
    /// Why elections are off on this replica, if they are
    /// (`elections.rs`).
    elections: Arc<Elections>,
    /// Appends hold it shared; a leadership transfer holds it exclusively,
    /// so that the leader's log stops growing while the target catches up
    /// and takes over (`transfer.rs`).
    write_gate: Arc<tokio::sync::RwLock<()>>,
    /// Batches with a producer id proposed and not yet answered; the lock
    /// serializes their check and proposal (`idempotence.rs`).
    in_flight: Arc<tokio::sync::Mutex<InFlight>>,
    /// The index map, shared with the log store, to name a duplicate's
    /// entry.
    index: Arc<RwLock<EntryIndex>>,
    /// The entry the next snapshot is to end at (`compaction.rs`), shared
    /// with the state machine's snapshot builder.
    snapshot_upto: Arc<AtomicU64>,
    /// The group owner's state, for a group with one (`app_state.rs`),
    /// shared with the state machine.
    app: Option<app_state::AppHook>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("node_id", &self.node_id)
            .field("topic", &self.partition.topic())
            .field("partition", &self.partition.id())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Starts a replica over `partition`, whose log (from offset 0, or
    /// from where `raft-start` records it to start after a purge or an
    /// installed snapshot) and `raft-entries` file are the group's Raft
    /// log, reaching its peers through `network`. Reads every batch header
    /// from the start to rebuild the index map (`crate::index`). With a
    /// commit stored in `raft-commit`, or a snapshot in `raft-start`, the
    /// partition's committed offset is back where it was before this
    /// returns, and the entries up to it count as applied: a restart reads
    /// no committed entry back.
    pub async fn open(
        config: &GroupConfig,
        partition: Partition,
        network: Arc<dyn Network>,
    ) -> Result<Replica> {
        Replica::open_with_state(config, partition, network, None).await
    }

    /// [`open`](Self::open) for a group whose owner folds the committed
    /// log into a state of its own, `app` (`app_state.rs`): a compaction
    /// purges no entry that state's durable copy does not cover, a
    /// snapshot sent to another replica carries the state, and one
    /// received from the leader hands its state to `app`
    /// (`AppState::install`) before the log restarts.
    pub async fn open_with_state(
        config: &GroupConfig,
        partition: Partition,
        network: Arc<dyn Network>,
        app: Option<Arc<dyn AppState>>,
    ) -> Result<Replica> {
        let app = app.map(app_state::AppHook);
        let for_open = partition.clone();
        let (log, (last_applied, membership)) = tokio::task::spawn_blocking(move || {
            let log = PartitionLog::open(for_open)?;
            let applied = log.applied_at_open()?;
            Ok::<_, Error>((log, applied))
        })
        .await
        .map_err(|join| Error::Raft {
            op: "open the replica's files",
            source: Box::new(join),
        })??;
        // Checked before a batch is proposed: a batch the partition would
        // refuse must never become an entry, since a failed append stops
        // the Raft node.
        let limits = partition.batch_limits();
        let index = log.index();
        let snapshot_upto = Arc::new(AtomicU64::new(u64::MAX));
        let state_machine = PartitionStateMachine::new(
            log.clone(),
            last_applied,
            membership,
            Arc::clone(&snapshot_upto),
            app.clone(),
        );
        let raft_config = Config {
            cluster_name: format!("{}/{}", partition.topic(), partition.id()),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            // A snapshot of a partition is "the log starts here". It is
            // built, and the log purged, only on request
            // (`Replica::compact_to`), never by openraft's own policy: a
            // purge deletes records, which only the owner's retention may
            // decide.
            snapshot_policy: SnapshotPolicy::Never,
            // After a snapshot openraft would purge all but this many
            // entries by itself; u64::MAX keeps every one until
            // `compact_to` asks.
            max_in_snapshot_log_to_keep: u64::MAX,
            // An append-entries request carries at most this many batches,
            // so a peer message stays far below the transport's limit
            // (`TransportConfig::message_bytes_max`) even at the largest
            // batches.
            max_payload_entries: 64,
            // Elections are started by `elections::drive`, which draws a
            // fresh random wait for each (`elections.rs`).
            enable_elect: false,
            ..Config::default()
        }
        .validate()
        .map_err(|source| Error::Raft {
            op: "accept the group configuration",
            source: Box::new(source),
        })?;
        let elections = Arc::new(Elections::default());
        let factory = PeerFactory {
            from: config.node_id,
            network: Arc::clone(&network),
            elections: Arc::clone(&elections),
        };
        let raft = Raft::new(config.node_id, Arc::new(raft_config), factory, log, state_machine)
            .await
            .map_err(|source| Error::Stopped {
                source: Box::new(source),
            })?;
        tokio::spawn(elections::drive(
            raft.clone(),
            Arc::clone(&elections),
            elections::Timing {
                timeout_min: Duration::from_millis(config.election_timeout_min_ms),
                lease: Duration::from_millis(config.election_timeout_max_ms),
            },
        ));
        Ok(Replica {
            node_id: config.node_id,
            raft,
            partition,
            limits,
            network,
            elections,
            write_gate: Arc::default(),
            in_flight: Arc::default(),
            index,
            snapshot_upto,
            app,
        })
    }

    /// Makes `members` (node id to address) the group's first membership.
    /// Called on one replica of a new group; the others learn it from the
    /// leader.
    pub async fn initialize(&self, members: &BTreeMap<u64, String>) -> Result<()> {
        let nodes: BTreeMap<u64, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        self.raft.initialize(nodes).await.map_err(|source| Error::Raft {
            op: "initialize the group",
            source: Box::new(source),
        })
    }

    /// Replicates one encoded batch (the storage format, as a client sends
    /// it) and returns once it is committed: on disk on a majority of the
    /// group and applied here. Only the leader accepts it
    /// ([`Error::NotLeader`] names the leader it knows of).
    ///
    /// A batch with a producer id is first checked against the producer
    /// table of the leader's log and the batches it has in flight
    /// (`idempotence.rs`): a retry of a committed batch is answered with
    /// the original's offsets (`duplicate`), a sequence that does not
    /// follow is [`Error::ProducerRefused`].
    pub async fn append(&self, encoded: Bytes) -> Result<Appended> {
        let header = entry::check_client_batch(&encoded, self.limits)?;
        // Waits while a leadership transfer runs; once it is done this
        // replica is most likely a follower and answers NotLeader.
        let _gate = self.write_gate.read().await;
        if let Some(fields) = header.producer() {
            return self.append_idempotent(encoded, fields, header.record_count).await;
        }
        self.queue_write(encoded).await?.await
    }

    /// Hands one batch to openraft, behind every batch handed to it before,
    /// and returns as soon as openraft holds it, with a future of its
    /// outcome ([`write_outcome`]).
    async fn queue_write(
        &self,
        encoded: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<Appended>> + Send + 'static> {
        let receiver = self
            .raft
            .client_write_ff(encoded)
            .await
            .map_err(|fatal| Error::Stopped {
                source: Box::new(fatal),
            })?;
        Ok(async move { write_outcome(receiver.await) })
    }

    /// Queues one encoded batch behind every batch queued before it and
    /// returns as soon as openraft holds it, with a future of its commit:
    /// for a writer that keeps many batches in flight in a fixed order (the
    /// job layer's `__jobs`), which awaiting [`append`](Self::append) one
    /// call at a time, or from separate tasks, would not give. Batches
    /// queued by one caller, one call after another, become entries in
    /// that order. The future answers as [`append`](Self::append) does; a
    /// leadership transfer waits for every queued batch's outcome. A batch
    /// with a producer id is checked as [`append`](Self::append) checks it,
    /// and is then not ordered with the others.
    pub async fn propose(
        &self,
        encoded: Bytes,
    ) -> Result<std::pin::Pin<Box<dyn std::future::Future<Output = Result<Appended>> + Send + 'static>>> {
        let header = entry::check_client_batch(&encoded, self.limits)?;
        if header.producer().is_some() {
            let replica = self.clone();
            return Ok(Box::pin(async move { replica.append(encoded).await }));
        }
        let gate = Arc::clone(&self.write_gate).read_owned().await;
        let committed = self.queue_write(encoded).await?;
        Ok(Box::pin(async move {
            let outcome = committed.await;
            drop(gate);
            outcome
        }))
    }

    /// The term this replica leads in, once it has applied that term's
    /// first entry (so everything an earlier leader committed is applied
    /// here too): a leader whose state machine may take requests. `None`
    /// on a follower, a candidate, and a leader still committing its
    /// first entry.
    pub fn serving_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leads = metrics.current_leader == Some(self.node_id);
        let applied_term = metrics.last_applied.map(|applied| applied.leader_id.term);
        (leads && applied_term == Some(metrics.current_term)).then_some(metrics.current_term)
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// The leader this replica knows of.
    pub fn leader_id(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// The term this replica is in.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Waits until this replica knows a leader, and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|_| Error::NoLeader {
                timeout_ms: timeout.as_millis() as u64,
            })?;
        metrics.current_leader.ok_or(Error::NoLeader {
            timeout_ms: timeout.as_millis() as u64,
        })
    }

    /// The index a read must wait for to see everything committed before
    /// this call: only on the leader, which first confirms with a majority
    /// that it still leads (a leader restarted from its stored vote, or
    /// cut off, may not). [`Error::NotLeader`] names the leader otherwise.
    pub async fn read_index(&self) -> Result<Option<u64>> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map(|id| id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => Err(Error::NotLeader {
                leader_id: forward.leader_id,
            }),
            Err(RaftError::APIError(other)) => Err(Error::Raft {
                op: "confirm the leadership",
                source: Box::new(other),
            }),
            Err(RaftError::Fatal(fatal)) => Err(Error::Stopped {
                source: Box::new(fatal),
            }),
        }
    }

    /// Waits until this replica has applied the entry at `index` (and so
    /// every one before it); false if `timeout` passes first.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| m.last_applied.is_some_and(|applied| applied.index >= index),
                "the entry is applied",
            )
            .await
            .is_ok()
    }

    /// `topic/partition`, for logs.
    fn raft_group_name(&self) -> String {
        format!("{}/{}", self.partition.topic(), self.partition.id())
    }

    /// Stops the engine. The partition stays open; its owner closes it.
    pub async fn shutdown(&self) -> Result<()> {
        self.raft.shutdown().await.map_err(|source| Error::Stopped {
            source: Box::new(source),
        })
    }

    /// Answers a request from a peer; transports call this.
    pub async fn handle(&self, request: PeerRequest) -> PeerResponse {
        match request {
            PeerRequest::AppendEntries(rpc) => {
                let answer = self.raft.append_entries(rpc).await;
                // Any answer but "my vote is higher" accepts the sender as
                // this term's leader.
                if matches!(&answer, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                    self.elections.heard(true);
                }
                PeerResponse::AppendEntries(answer)
            }
            PeerRequest::Vote(rpc) => {
                let answer = self.raft.vote(rpc).await;
                if matches!(&answer, Ok(a) if a.vote_granted) {
                    self.elections.heard(false);
                }
                PeerResponse::Vote(answer)
            }
            PeerRequest::InstallSnapshot(rpc) => {
                let vote = rpc.vote;
                let answer = self.raft.install_snapshot(rpc).await;
                if matches!(&answer, Ok(a) if a.vote == vote) {
                    self.elections.heard(true);
                }
                PeerResponse::InstallSnapshot(answer)
            }
            PeerRequest::Elect if self.elections.retired() => {
                tracing::warn!(node_id = self.node_id, group = %self.raft_group_name(), "refusing to start an election: this replica stood aside");
                PeerResponse::Elect(Ok(()))
            }
            PeerRequest::Elect => {
                tracing::info!(node_id = self.node_id, group = %self.raft_group_name(), "starting an election on the leader's request");
                PeerResponse::Elect(self.raft.trigger().elect().await)
            }
        }
    }
}
