//! The client's error type and the mapping from gRPC statuses into it.

use std::sync::Arc;

use tonic::{Code, Status};

/// Trailing metadata key the server sets on `OUT_OF_RANGE`: the partition's
/// log start offset, as a decimal string.
pub const LOG_START_OFFSET_METADATA: &str = "spool-log-start-offset";
/// Trailing metadata of an idempotent producer's refused batch.
pub const PRODUCER_ERROR_METADATA: &str = "spool-producer-error";

/// Trailing metadata key the server sets on `OUT_OF_RANGE`: the partition's
/// high watermark, as a decimal string.
pub const HIGH_WATERMARK_METADATA: &str = "spool-high-watermark";

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a call to the server, the producer or the consumer can fail
/// with.
///
/// Variants built from a gRPC answer keep the [`Status`] (code, message,
/// metadata): [`Error::status`] returns it. The error is `Clone` so that one
/// failed batch can fail each of its records' acknowledgements.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server address could not be parsed.
    #[error("invalid server address {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A TLS file of [`ClientOptions`](crate::ClientOptions) could not be
    /// used, or a token is not valid header text.
    #[error("{what} {path}: {reason}")]
    Credentials {
        what: &'static str,
        path: String,
        reason: String,
    },

    /// No connection could be made to the server.
    #[error("could not connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: Arc<tonic::transport::Error>,
    },

    /// `NOT_FOUND`: unknown topic or partition.
    #[error("not found: {}", .status.message())]
    NotFound { status: Status },

    /// `INVALID_ARGUMENT`: a bad name, size, record or request.
    #[error("invalid argument: {}", .status.message())]
    InvalidArgument { status: Status },

    /// `OUT_OF_RANGE`: an offset outside `[earliest, latest]`.
    ///
    /// `earliest` (log start offset) and `latest` (high watermark) come from
    /// the trailing metadata; both are `None` when it is missing, which is how
    /// tonic reports a message over the size limit.
    #[error("out of range: {}", .status.message())]
    OutOfRange {
        earliest: Option<u64>,
        latest: Option<u64>,
        status: Status,
    },

    /// `ALREADY_EXISTS`: a topic with that name exists.
    #[error("already exists: {}", .status.message())]
    AlreadyExists { status: Status },

    /// `RESOURCE_EXHAUSTED`: the server pushes back (in-flight limit, too many
    /// waiting fetches, disk full). Nothing was appended; retry after a pause.
    #[error("server busy: {}", .status.message())]
    ResourceExhausted { status: Status },

    /// `UNAVAILABLE`: the server is shutting down, not ready, or the
    /// connection broke. Retry with backoff.
    #[error("server unavailable: {}", .status.message())]
    Unavailable { status: Status },

    /// `DATA_LOSS`: a stored batch failed its checksum on the server.
    #[error("data loss on the server: {}", .status.message())]
    DataLoss { status: Status },

    /// `DEADLINE_EXCEEDED`: the call outlived its deadline.
    #[error("deadline exceeded: {}", .status.message())]
    DeadlineExceeded { status: Status },

    /// Any other status (`INTERNAL`, `UNIMPLEMENTED`, `CANCELLED`, ...).
    #[error("{}: {}", .0.code(), .0.message())]
    Other(Status),

    /// A batch received from the server did not decode (bad checksum or
    /// malformed record). The server verifies batches before sending them, so
    /// this points at a transport or version problem.
    #[error("corrupt batch from partition {partition} at offset {offset}: {reason}")]
    Corrupt {
        partition: u32,
        offset: u64,
        reason: String,
    },

    /// Records could not be encoded into a batch (a field over 2 GiB).
    #[error("cannot encode records: {reason}")]
    Encode { reason: String },

    /// A record is larger than a size limit of the server, of its topic or
    /// of this client, found before it was sent: nothing was sent. The
    /// server's limits are the ones it reported when the producer was
    /// created (`GetServerInfo`).
    ///
    /// The check sizes a record as the first of its batch. A record within
    /// a few bytes of `record_bytes_max` that lands behind others in a batch
    /// can still be refused by the server (`INVALID_ARGUMENT`).
    #[error("{}", describe_exceeded(.exceeded))]
    RecordTooLarge {
        /// Every limit the record exceeds, tightest first.
        exceeded: Vec<ExceededLimit>,
    },

    /// A partition outside the topic's range was given to the producer or
    /// the consumer.
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    /// A consumer was asked to start at an offset outside a partition's log,
    /// `[earliest, latest]` (found before subscribing).
    #[error(
        "offset {offset} is out of range in partition {partition} of {topic:?}: it holds offsets {earliest} \
         to {latest} (the next to be written)"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        earliest: u64,
        latest: u64,
    },

    /// A checkpoint operation on a consumer built without a consumer name.
    #[error("this consumer has no name: set one with ConsumerBuilder::name to commit checkpoints")]
    NoConsumerName,

    /// The producer was closed (or dropped) before the record was sent.
    #[error("the producer was closed before the record was sent")]
    ProducerClosed,

    /// The server answered something the API does not allow (a missing
    /// field, a count that does not add up).
    #[error("unexpected response from the server: {reason}")]
    Protocol { reason: String },
}

/// A size limit a record can exceed. [`SizeLimit::server_key`] names the
/// server's configuration key for the limits that are the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SizeLimit {
    /// The server's `record_bytes_max`: the largest record as stored.
    RecordBytesMax,
    /// The server's `batch_bytes_max`: a record travels in a batch, whose
    /// header it adds to.
    BatchBytesMax,
    /// The server's `request_bytes_max`: the largest request message.
    RequestBytesMax,
    /// The topic's `segment_bytes`, chosen when the topic was created: no
    /// batch may be larger than a segment.
    SegmentBytes,
    /// This client's [`ClientOptions::message_bytes_max`](crate::ClientOptions).
    ClientMessageBytesMax,
}

impl SizeLimit {
    /// The limit's name: its server configuration key, the topic setting
    /// or the client option.
    pub fn name(self) -> &'static str {
        match self {
            SizeLimit::RecordBytesMax => "record_bytes_max",
            SizeLimit::BatchBytesMax => "batch_bytes_max",
            SizeLimit::RequestBytesMax => "request_bytes_max",
            SizeLimit::SegmentBytes => "segment_bytes",
            SizeLimit::ClientMessageBytesMax => "message_bytes_max",
        }
    }

    /// The `spoold` configuration key that sets this limit, for the
    /// server's limits (`spoold --set KEY=SIZE`, `SPOOL_KEY`).
    pub fn server_key(self) -> Option<&'static str> {
        match self {
            SizeLimit::RecordBytesMax | SizeLimit::BatchBytesMax | SizeLimit::RequestBytesMax => {
                Some(self.name())
            }
            SizeLimit::SegmentBytes | SizeLimit::ClientMessageBytesMax => None,
        }
    }
}

impl std::fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeLimit::SegmentBytes => write!(f, "the topic's segment_bytes"),
            SizeLimit::ClientMessageBytesMax => write!(f, "the client's message_bytes_max"),
            server => write!(f, "the server's {}", server.name()),
        }
    }
}

/// One limit a record exceeds, and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExceededLimit {
    pub limit: SizeLimit,
    /// What the limit measures for this record: the record as stored, its
    /// batch, or the request carrying it.
    pub actual_bytes: u64,
    pub max_bytes: u64,
}

fn describe_exceeded(exceeded: &[ExceededLimit]) -> String {
    let parts: Vec<String> = exceeded
        .iter()
        .map(|e| format!("{} ({} > {} bytes)", e.limit, e.actual_bytes, e.max_bytes))
        .collect();
    format!("a record is too large for {}", parts.join(", "))
}

impl Error {
    /// The gRPC status this error was built from, if any.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::NotFound { status }
            | Error::InvalidArgument { status }
            | Error::OutOfRange { status, .. }
            | Error::AlreadyExists { status }
            | Error::ResourceExhausted { status }
            | Error::Unavailable { status }
            | Error::DataLoss { status }
            | Error::DeadlineExceeded { status }
            | Error::Other(status) => Some(status),
            _ => None,
        }
    }

    /// The gRPC code of [`Error::status`], if any.
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// True for errors worth retrying after a pause: the server was
    /// unavailable or pushed back. A retried produce may append its records
    /// twice if the first attempt reached the server before the failure.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::ResourceExhausted { .. })
    }

    /// True for errors an idempotent producer retries: those of
    /// [`is_retryable`](Self::is_retryable), a deadline that passed, a
    /// connection that could not be made, and a node that named another
    /// as the partition's leader. A retried batch
    /// carries the same producer id and sequence, so the server stores it
    /// once whatever became of the first attempt.
    pub fn is_retryable_when_idempotent(&self) -> bool {
        self.is_retryable()
            || matches!(self, Error::DeadlineExceeded { .. } | Error::Connect { .. })
            || self.leader_hint().is_some()
    }

    /// Why the server refused an idempotent producer's batch
    /// (FAILED_PRECONDITION with `spool-producer-error` metadata):
    /// `out-of-order-sequence`, `unknown-producer` or `producer-fenced`.
    pub fn producer_error(&self) -> Option<&str> {
        let status = self.status()?;
        if status.code() != Code::FailedPrecondition {
            return None;
        }
        status.metadata().get(PRODUCER_ERROR_METADATA)?.to_str().ok()
    }

    /// Cluster mode: the leader a node named when it refused a request
    /// for a partition it does not lead (FAILED_PRECONDITION, or
    /// UNAVAILABLE when it knows of no leader), with a
    /// `spool.v1.LeaderHint` in the status details.
    pub fn leader_hint(&self) -> Option<spool_proto::v1::LeaderHint> {
        let status = self.status()?;
        if !matches!(status.code(), Code::FailedPrecondition | Code::Unavailable)
            || status.details().is_empty()
        {
            return None;
        }
        spool_proto::leader_hint::decode(status.details())
    }

    /// The client address (host:port) of the leader named by
    /// [`leader_hint`](Self::leader_hint), when it names one.
    pub fn leader_address(&self) -> Option<String> {
        self.leader_hint()
            .map(|hint| hint.leader_address)
            .filter(|address| !address.is_empty())
    }

    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        Error::Protocol {
            reason: reason.into(),
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        match status.code() {
            Code::NotFound => Error::NotFound { status },
            Code::InvalidArgument => Error::InvalidArgument { status },
            Code::OutOfRange => Error::OutOfRange {
                earliest: metadata_u64(&status, LOG_START_OFFSET_METADATA),
                latest: metadata_u64(&status, HIGH_WATERMARK_METADATA),
                status,
            },
            Code::AlreadyExists => Error::AlreadyExists { status },
            Code::ResourceExhausted => Error::ResourceExhausted { status },
            Code::Unavailable => Error::Unavailable { status },
            // A connection that broke under the request (the server died
            // or a network cut it): tonic reports UNKNOWN "transport
            // error". The server may have processed it or not, as with
            // UNAVAILABLE, and another attempt (or another node) may work.
            Code::Unknown if status.message() == "transport error" => Error::Unavailable { status },
            Code::DataLoss => Error::DataLoss { status },
            Code::DeadlineExceeded => Error::DeadlineExceeded { status },
            _ => Error::Other(status),
        }
    }
}

fn metadata_u64(status: &Status, key: &str) -> Option<u64> {
    status.metadata().get(key)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn a_leader_hint_is_read_from_the_status_details() {
        let hint = spool_proto::v1::LeaderHint {
            leader_id: Some(2),
            leader_address: "127.0.0.1:7072".into(),
        };
        let details =
            spool_proto::leader_hint::encode(Code::FailedPrecondition as i32, "not the leader", &hint);
        let error = Error::from(Status::with_details(
            Code::FailedPrecondition,
            "not the leader",
            details,
        ));
        assert_eq!(error.leader_hint(), Some(hint));
        assert_eq!(error.leader_address().as_deref(), Some("127.0.0.1:7072"));

        let unknown = spool_proto::v1::LeaderHint::default();
        let error = Error::from(Status::with_details(
            Code::Unavailable,
            "no leader",
            spool_proto::leader_hint::encode(Code::Unavailable as i32, "no leader", &unknown),
        ));
        assert_eq!(error.leader_address(), None);
        assert!(error.is_retryable());
        assert_eq!(Error::from(Status::not_found("x")).leader_hint(), None);
    }

    #[test]
    fn codes_map_to_variants_and_keep_the_status() {
        let cases = [
            (Code::NotFound, "NotFound"),
            (Code::InvalidArgument, "InvalidArgument"),
            (Code::AlreadyExists, "AlreadyExists"),
            (Code::ResourceExhausted, "ResourceExhausted"),
            (Code::Unavailable, "Unavailable"),
            (Code::DataLoss, "DataLoss"),
            (Code::DeadlineExceeded, "DeadlineExceeded"),
            (Code::Internal, "Other"),
            (Code::Unimplemented, "Other"),
        ];
        for (code, variant) in cases {
            let error = Error::from(Status::new(code, "topic \"x\" does not exist"));
            let debug = format!("{error:?}");
            assert!(debug.starts_with(variant), "{code:?} became {debug}");
            assert_eq!(error.code(), Some(code));
            assert_eq!(error.status().unwrap().message(), "topic \"x\" does not exist");
        }
    }

    #[test]
    fn out_of_range_reads_offsets_from_trailing_metadata() {
        let mut status = Status::out_of_range("offset 3 is below the log start 10");
        status
            .metadata_mut()
            .insert(LOG_START_OFFSET_METADATA, MetadataValue::from_static("10"));
        status
            .metadata_mut()
            .insert(HIGH_WATERMARK_METADATA, MetadataValue::from_static("42"));
        match Error::from(status) {
            Error::OutOfRange {
                earliest,
                latest,
                status,
            } => {
                assert_eq!((earliest, latest), (Some(10), Some(42)));
                assert_eq!(status.code(), Code::OutOfRange);
            }
            other => panic!("expected OutOfRange, got {other:?}"),
        }
    }

    #[test]
    fn out_of_range_without_metadata_is_a_message_size_error() {
        let mut status = Status::out_of_range("decoded message length too large");
        status.metadata_mut().insert(
            HIGH_WATERMARK_METADATA,
            MetadataValue::from_static("not a number"),
        );
        match Error::from(status) {
            Error::OutOfRange { earliest, latest, .. } => assert_eq!((earliest, latest), (None, None)),
            other => panic!("expected OutOfRange, got {other:?}"),
        }
    }

    #[test]
    fn only_unavailable_and_backpressure_are_retryable() {
        assert!(Error::from(Status::unavailable("shutting down")).is_retryable());
        assert!(Error::from(Status::unknown("transport error")).is_retryable());
        assert!(!Error::from(Status::unknown("a handler panicked")).is_retryable());
        assert!(Error::from(Status::resource_exhausted("in-flight limit")).is_retryable());
        assert!(!Error::from(Status::invalid_argument("bad")).is_retryable());
        assert!(!Error::ProducerClosed.is_retryable());
    }
}
