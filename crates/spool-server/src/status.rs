//! The one place where engine errors become gRPC statuses.

use spool_log::Error;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::metrics::refusals::{self, Reason};

/// Trailing metadata carrying the valid offset range with OUT_OF_RANGE.
pub const LOG_START_OFFSET_KEY: &str = "spool-log-start-offset";
pub const HIGH_WATERMARK_KEY: &str = "spool-high-watermark";
/// Trailing metadata naming why an idempotent producer's batch was refused
/// (FAILED_PRECONDITION): `out-of-order-sequence`, `unknown-producer` or
/// `producer-fenced`.
pub const PRODUCER_ERROR_KEY: &str = "spool-producer-error";

/// Maps an engine error to the status code a client can act on.
pub fn status(error: Error) -> Status {
    let message = error.to_string();
    // The client sees the status; the operator needs the log line.
    match &error {
        Error::Corrupt {
            topic,
            partition,
            segment,
            position,
            first_offset,
            last_offset,
            ..
        } => tracing::error!(
            topic, partition, segment = %segment.display(), position, first_offset, last_offset,
            %error, "request failed on corrupt data"
        ),
        Error::Io { .. } | Error::Poisoned { .. } | Error::BadFile { .. } => {
            tracing::error!(%error, "request failed on a storage fault");
        }
        _ => {}
    }
    match &error {
        Error::DiskFull { .. } => refusals::count(Reason::DiskFull),
        Error::Poisoned { .. } => refusals::count(Reason::StoragePoisoned),
        Error::LimitExceeded {
            limit: "open_segments_max",
            ..
        } => refusals::count(Reason::OpenSegments),
        _ => {}
    }
    match error {
        Error::InvalidTopicName { .. } | Error::InvalidConfig { .. } | Error::InvalidBatch { .. } => {
            Status::invalid_argument(message)
        }
        Error::LimitExceeded { limit, .. } => match limit {
            "open_segments_max" => Status::resource_exhausted(message),
            _ => Status::invalid_argument(message),
        },
        Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => Status::not_found(message),
        Error::TopicExists { .. } => Status::already_exists(message),
        Error::OffsetOutOfRange { earliest, latest, .. } => out_of_range(message, earliest, latest),
        Error::DiskFull { .. } => Status::resource_exhausted(message),
        Error::Corrupt { .. } => Status::data_loss(message),
        Error::Closed => Status::unavailable(message),
        Error::Poisoned { .. } => Status::internal(message),
        Error::Locked { .. } | Error::Io { .. } | Error::BadFile { .. } => Status::internal(message),
        Error::OutOfOrderSequence { .. } => producer_refusal("out-of-order-sequence", message),
        Error::UnknownProducer { .. } => producer_refusal("unknown-producer", message),
        Error::ProducerFenced { .. } => producer_refusal("producer-fenced", message),
        _ => Status::internal(message),
    }
}

/// OUT_OF_RANGE with the valid range in the message and in trailing
/// metadata, so clients can tell it from tonic's own size errors.
pub fn out_of_range(message: String, earliest: u64, latest: u64) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        LOG_START_OFFSET_KEY,
        earliest.to_string().parse().expect("ascii digits"),
    );
    metadata.insert(
        HIGH_WATERMARK_KEY,
        latest.to_string().parse().expect("ascii digits"),
    );
    Status::with_metadata(Code::OutOfRange, message, metadata)
}

/// FAILED_PRECONDITION for an idempotent producer's refused batch, with
/// the reason in trailing metadata for clients to act on.
fn producer_refusal(reason: &'static str, message: String) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        PRODUCER_ERROR_KEY,
        tonic::metadata::MetadataValue::from_static(reason),
    );
    Status::with_metadata(Code::FailedPrecondition, message, metadata)
}

/// Maps a job-layer error to its status code.
pub fn job_status(error: spool_jobs::JobError) -> Status {
    use spool_jobs::JobError;
    let message = error.to_string();
    match error {
        JobError::UnknownJob { .. } | JobError::UnknownQueue { .. } => Status::not_found(message),
        JobError::StaleLease { .. }
        | JobError::NotDead { .. }
        | JobError::Finished { .. }
        | JobError::QueueBusy { .. } => Status::failed_precondition(message),
        JobError::Invalid { .. } => Status::invalid_argument(message),
        JobError::LimitExceeded { limit, .. } => match limit {
            "jobs_in_memory_max" => {
                refusals::count(Reason::JobsInMemory);
                Status::resource_exhausted(message)
            }
            _ => Status::invalid_argument(message),
        },
        JobError::Unavailable { .. } => Status::unavailable(message),
        JobError::NotLeader {
            leader_id,
            leader_address,
        } => spool_raft::not_leader(leader_id, leader_address),
        _ => Status::internal(message),
    }
}

/// UNAVAILABLE for a request that arrives while the server shuts down.
pub fn shutting_down() -> Status {
    refusals::count(Reason::ShuttingDown);
    Status::unavailable("the server is shutting down")
}

/// A blocking task that panicked or was cancelled.
pub fn join_error(error: tokio::task::JoinError) -> Status {
    Status::internal(format!("internal task failed: {error}"))
}

/// PERMISSION_DENIED naming the permission that is missing (or the
/// internal name no grant reaches).
pub fn denied(refusal: spool_auth::Denied) -> Status {
    Status::permission_denied(refusal.to_string())
}

/// UNAUTHENTICATED: no credentials, or credentials that name no principal.
pub fn unauthenticated(refusal: spool_auth::Unauthenticated) -> Status {
    Status::unauthenticated(refusal.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_carries_the_range() {
        let status = status(Error::OffsetOutOfRange {
            requested: 9,
            earliest: 2,
            latest: 5,
        });
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.metadata().get(LOG_START_OFFSET_KEY).unwrap(), "2");
        assert_eq!(status.metadata().get(HIGH_WATERMARK_KEY).unwrap(), "5");
        assert!(status.message().contains("[2, 5)"));
    }

    #[test]
    fn data_loss_names_the_partition_the_segment_and_the_offsets() {
        let status = status(Error::Corrupt {
            topic: "orders".into(),
            partition: 3,
            segment: "/data/topics/orders/3/00000000000000000100.log".into(),
            position: 4096,
            first_offset: 140,
            last_offset: 149,
            reason: "checksum 0x00000001 does not match stored 0x00000002".into(),
        });
        assert_eq!(status.code(), Code::DataLoss);
        for part in [
            "orders/3",
            "/data/topics/orders/3/00000000000000000100.log",
            "byte 4096",
            "offsets 140 to 149",
            "checksum",
        ] {
            assert!(
                status.message().contains(part),
                "{part:?} missing: {}",
                status.message()
            );
        }
    }
}
