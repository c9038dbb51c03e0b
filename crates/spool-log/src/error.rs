//! The engine's one error type.

use std::io;
use std::path::PathBuf;

use spool_format::FormatError;

/// Everything that can go wrong in the storage engine.
///
/// Variants carry the values a caller needs to act on them (which limit,
/// which offsets are valid) rather than a prose message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The disk has no room for a new segment or for growing the active one.
    /// Nothing was written; appends work again once space is freed.
    #[error("disk full while {op} {}: {source}", path.display())]
    DiskFull {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A topic name that could not be used as a directory name.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },

    /// A configuration value outside its allowed range.
    #[error("invalid configuration {key} = {value}: {reason}")]
    InvalidConfig {
        key: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("topic {topic:?} does not exist")]
    UnknownTopic { topic: String },

    #[error("topic {topic:?} already exists")]
    TopicExists { topic: String },

    #[error("topic {topic:?} has no partition {partition} (it has {partition_count})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partition_count: u32,
    },

    /// A named limit was exceeded by a request.
    #[error("{limit} exceeded: {actual} > {max}")]
    LimitExceeded {
        limit: &'static str,
        actual: u64,
        max: u64,
    },

    /// A read asked for an offset the log does not hold.
    #[error("offset {requested} is out of range: the log holds [{earliest}, {latest})")]
    OffsetOutOfRange {
        requested: u64,
        earliest: u64,
        latest: u64,
    },

    /// A batch handed to the engine that is not well formed, or records
    /// that cannot be encoded into one.
    #[error("invalid batch: {source}")]
    InvalidBatch {
        #[source]
        source: FormatError,
    },

    /// Bytes on disk that fail their checks. Never served to a reader.
    ///
    /// Names everything an operator needs to find the damage and judge what
    /// was lost: the partition, the segment file, the byte position in it,
    /// and the offsets affected.
    #[error(
        "corrupt data in {topic}/{partition}, segment {} at byte {position}: offsets {first_offset} to {last_offset} cannot be read: {reason}",
        segment.display()
    )]
    Corrupt {
        topic: String,
        partition: u32,
        /// The segment's log file.
        segment: PathBuf,
        /// Byte position in that file of the damaged batch (or of the
        /// record that does not decode).
        position: u64,
        /// The offset the damaged batch should start at.
        first_offset: u64,
        /// The last offset the damage can make unreadable: the damaged
        /// batch's own last offset when its header checks out, else the
        /// segment's last offset, since a reader cannot walk past a header
        /// it cannot trust (offsets past the next offset-index entry may
        /// still be readable).
        last_offset: u64,
        reason: String,
    },

    /// A previous write or fsync failed; the partition refuses appends until
    /// it is reopened and recovered, because the state of the page cache
    /// after a failed fsync is unknown.
    #[error(
        "partition {topic}/{partition} refuses appends after an earlier I/O failure; reopen the store to recover"
    )]
    Poisoned { topic: String, partition: u32 },

    /// Another process holds the data directory.
    #[error("data directory {} is locked by another process", path.display())]
    Locked { path: PathBuf },

    /// The store or partition is closed.
    #[error("the log is closed")]
    Closed,

    /// An append in a term older than the term of the log's last batch:
    /// terms never decrease along a log.
    #[error("term {term} is older than the log's last term {last_term}")]
    TermRegression { term: u64, last_term: u64 },

    /// A replicated batch whose header's leader epoch is not the term it
    /// was handed in with: the leader stamps the term into every batch it
    /// appends, so the two can only differ through a bug or damage.
    #[error("batch at offset {base_offset} carries leader epoch {header_epoch}, not term {term}")]
    BatchTermMismatch {
        base_offset: u64,
        header_epoch: i32,
        term: u64,
    },

    /// A replicated batch that does not start where the log (or the batch
    /// before it) ends. Nothing was written.
    #[error("batch starts at offset {found}, not at the expected {expected}")]
    UnexpectedBaseOffset { expected: u64, found: u64 },

    /// A truncation point inside a batch: batches are removed whole, and
    /// removing the batch would also remove offsets before the point.
    #[error("offset {offset} lies inside the batch that starts at {batch_base_offset}")]
    NotBatchBoundary { offset: u64, batch_base_offset: u64 },

    /// A truncation below the log start offset. Nothing was changed.
    #[error("cannot truncate at {requested}: the log starts at {log_start}")]
    TruncateBelowLogStart { requested: u64, log_start: u64 },

    /// A truncation below the committed offset, which would remove records
    /// that consensus already committed. Nothing was changed.
    #[error("cannot truncate at {requested}: offsets below {committed} are committed")]
    TruncateBelowCommitted { requested: u64, committed: u64 },

    /// A producer table handed to
    /// [`crate::Partition::restart_at_with_producers`] that does not
    /// decode. Nothing was changed.
    #[error("the producer table for a restarted log does not decode: {reason}")]
    BadProducerTable { reason: String },

    /// A restart of the log ([`crate::Partition::restart_at`]) below the
    /// committed offset, which would remove records that consensus already
    /// committed. Nothing was changed.
    #[error("cannot restart the log at {requested}: offsets below {committed} are committed")]
    RestartBelowCommitted { requested: u64, committed: u64 },

    /// A committed offset beyond what is on disk in this partition.
    #[error("cannot commit up to {requested}: only offsets below {durable} are durable")]
    CommitBeyondDurable { requested: u64, durable: u64 },

    /// A vote that would go back: to an older term, or to another node in
    /// the term already voted in. Nothing was written.
    #[error(
        "vote for {voted_for:?} in term {term} would replace the vote for {current_voted_for:?} in term {current_term}"
    )]
    VoteRegression {
        term: u64,
        voted_for: Option<u64>,
        current_term: u64,
        current_voted_for: Option<u64>,
    },

    /// An idempotent producer's batch whose base sequence does not follow
    /// the producer's last batch in this partition (and is not one of its
    /// last five, which would be a duplicate). Nothing was appended.
    #[error(
        "out of order sequence: producer {producer_id} must send base sequence {expected} next, got {got}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },

    /// A batch of a producer id the partition does not remember, whose
    /// base sequence is not 0: the producer's state expired
    /// (`producer_state_retention_ms`) or was never there. Nothing was
    /// appended; the producer must get a new id.
    #[error(
        "unknown producer: partition has no state for producer {producer_id} (a new producer starts at base sequence 0, got {base_sequence})"
    )]
    UnknownProducer { producer_id: i64, base_sequence: i32 },

    /// A batch whose producer epoch is older than the partition's for the
    /// same producer id: another instance took the id over.
    #[error("producer {producer_id} is fenced: epoch {epoch} is older than the current {current_epoch}")]
    ProducerFenced {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },

    /// A file we wrote cannot be parsed back.
    #[error("bad file {}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_disk_full(&source) {
            Error::DiskFull { op, path, source }
        } else {
            Error::Io { op, path, source }
        }
    }
}

/// A batch the codec refused. A limit keeps its own variant, so that every
/// limit the engine enforces is reported the same way; everything else
/// is an invalid batch.
impl From<FormatError> for Error {
    fn from(error: FormatError) -> Self {
        match error {
            FormatError::LimitExceeded { limit, actual, max } => Error::LimitExceeded { limit, actual, max },
            source => Error::InvalidBatch { source },
        }
    }
}

fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || error.raw_os_error() == Some(libc::ENOSPC)
        || error.raw_os_error() == Some(libc::EDQUOT)
}

/// Extension to attach an operation and a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::io(op, path, source))
    }
}
