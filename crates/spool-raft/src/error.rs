//! The errors of a replicated partition, one enum with structured fields.
//!
//! Consensus failures keep openraft's own error as their source, boxed, so
//! that no openraft type appears in this crate's public signatures outside
//! the `engine` module.

use spool_format::FormatError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong opening, writing to or running a replica.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage engine refused or failed an operation.
    #[error("spool-log failed to {op}")]
    Log {
        op: &'static str,
        #[source]
        source: spool_log::Error,
    },
    /// A batch offered for replication is not a valid stored batch.
    #[error("invalid batch")]
    InvalidBatch {
        #[source]
        source: FormatError,
    },
    /// The entry at `offset` is missing or does not match what the log
    /// says of it.
    #[error("the Raft entry stored at offset {offset} is damaged: {reason}")]
    BadEntry { offset: u64, reason: &'static str },
    /// A file of the replica beside the segments failed an I/O operation.
    #[error("failed to {op} {path}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The `raft-entries` file (Raft's own entries) is damaged before its
    /// last record, where no crash can have left it so.
    #[error("{path} is damaged at byte {position}: {reason}")]
    BadOwnEntries {
        path: std::path::PathBuf,
        position: u64,
        reason: String,
    },
    /// A membership entry too large for the `raft-entries` file.
    #[error("Raft entry {index} carries {value_bytes} bytes, more than {value_bytes_max}")]
    OwnEntryTooLarge {
        index: u64,
        value_bytes: usize,
        value_bytes_max: usize,
    },
    /// Raft asked to append entry `actual` where the log's next index is
    /// `expected`; appending it would leave a gap or overwrite an entry
    /// without a truncation.
    #[error("Raft entry {actual} offered where the next index is {expected}")]
    IndexGap { expected: u64, actual: u64 },
    /// A membership configuration did not serialize or deserialize.
    #[error("membership entry at offset {offset} does not (de)serialize")]
    Membership {
        offset: u64,
        #[source]
        source: serde_json::Error,
    },
    /// The partition's segments do not hold the log from where it was
    /// recorded to start (`raft-start`, or offset 0 without one): segments
    /// below the recorded start were deleted by something other than a
    /// purge (a retention the replica did not order), or the recorded
    /// start lies past the end of the log. The Raft index of the first
    /// batch left is then unknown.
    #[error(
        "the partition's log holds offsets from {log_start_offset}, but its Raft log is recorded to start at offset {recorded_offset}"
    )]
    LogStartUnknown {
        log_start_offset: u64,
        recorded_offset: u64,
    },
    /// The `raft-start` file (where the log starts, the last purged entry
    /// and the last snapshot) does not decode. It is written atomically, so
    /// no crash leaves it so; without it the index of every entry is
    /// unknown.
    #[error("{path} does not decode: {reason}")]
    BadLogStart {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The group's owner could not store the state a snapshot carried
    /// (`AppState::install`).
    #[error("the group's owner could not store the snapshot's state: {reason}")]
    AppState { reason: String },
    /// A snapshot sent by a leader whose data does not decode.
    #[error("a snapshot's data does not decode")]
    BadSnapshot {
        #[source]
        source: serde_json::Error,
    },
    /// A peer message's JSON part did not (de)serialize.
    #[error("{what} in a peer message does not (de)serialize")]
    Wire {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A peer message lacks a field it must have.
    #[error("a peer message lacks {field}")]
    MissingField { field: &'static str },
    /// A peer address (from the peer map) is not a valid URI.
    #[error("peer address {address:?} of node {node_id} is not valid")]
    PeerAddress {
        node_id: u64,
        address: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An idempotent producer's batch the partition's producer table
    /// refuses (`spool_log::Error::OutOfOrderSequence`, `UnknownProducer`,
    /// `ProducerFenced`). Nothing was proposed.
    #[error("{source}")]
    ProducerRefused {
        #[source]
        source: spool_log::Error,
    },
    /// A retried batch whose original is in the leader's log but was not
    /// committed within the time allowed: its outcome is still unknown.
    #[error(
        "the original of this retried batch (offset {base_offset}) was not committed within {timeout_ms} ms"
    )]
    DuplicateNotCommitted { base_offset: u64, timeout_ms: u64 },
    /// This replica is not the leader; `leader_id` is the one it knows of.
    #[error("not the leader (leader: {leader_id:?})")]
    NotLeader { leader_id: Option<u64> },
    /// A leadership transfer named a node that is not a voter of the
    /// group.
    #[error("node {node_id} is not a voting member of the group (voters: {voters:?})")]
    NotAVoter { node_id: u64, voters: Vec<u64> },
    /// A leadership transfer to node `to` did not complete in time;
    /// `leader_id` is the leader known when it gave up.
    #[error("node {to} did not take over the leadership within {timeout_ms} ms (leader now: {leader_id:?})")]
    TransferTimedOut {
        to: u64,
        timeout_ms: u64,
        leader_id: Option<u64>,
    },
    /// A change of voters that leaves out the leader making it: the
    /// leadership must move to one of the new voters first.
    #[error(
        "node {leader_id} leads the group and is not among the new voters {voters:?}: move its leadership first"
    )]
    LeaderNotInVoters { leader_id: u64, voters: Vec<u64> },
    /// A change of voters with none.
    #[error("a group needs at least one voter")]
    NoVoters,
    /// A node being added to a group did not catch up with the leader's
    /// log in time; it stays a learner (receiving the log) and a retry
    /// goes on from there.
    #[error(
        "node {node_id} did not catch up with the leader's log within {timeout_ms} ms; it stays a learner"
    )]
    CatchUpTimedOut { node_id: u64, timeout_ms: u64 },
    /// A peer answered a request with the answer to another kind of
    /// request: a transport bug.
    #[error("a peer answered a {request} request with another kind of answer")]
    UnexpectedAnswer { request: &'static str },
    /// A compaction's snapshot or purge did not happen within the time
    /// allowed (a leader purges only once no replication still reads the
    /// entries); calling again goes on from where it is.
    #[error("the log was not {step} up to entry {index} within {timeout_ms} ms")]
    CompactionTimedOut {
        step: &'static str,
        index: u64,
        timeout_ms: u64,
    },
    /// No leader was elected within the time allowed.
    #[error("no leader within {timeout_ms} ms")]
    NoLeader { timeout_ms: u64 },
    /// The replica's Raft engine stopped (shut down, or after a storage
    /// error, which openraft treats as fatal).
    #[error("the Raft engine stopped")]
    Stopped {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Raft engine refused an operation for a reason of its own.
    #[error("the Raft engine refused to {op}")]
    Raft {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
