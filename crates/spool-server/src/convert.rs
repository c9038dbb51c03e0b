//! Conversions between the engine's types and the protobuf messages.

use bytes::Bytes;
use spool_log::{Batch, Durability, Partition, ReadResult};
use spool_proto::v1;
use tonic::Status;

use crate::status::status;

/// Records (or stored batches) of a read, from `offset` on.
pub struct Chunk {
    pub records: Vec<v1::FetchedRecord>,
    pub encoded_batches: Vec<Bytes>,
    pub next_offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Records from `offset` on, in either form.
    pub record_count: u64,
    /// Stored bytes of the batches they came from.
    pub batch_bytes: u64,
}

impl Chunk {
    /// The Fetch answer for `partition` holding this chunk.
    pub fn into_fetch_response(self, partition: u32) -> v1::FetchResponse {
        v1::FetchResponse {
            partition,
            records: self.records,
            encoded_batches: self.encoded_batches,
            next_offset: self.next_offset,
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
        }
    }

    /// One message of a subscription to `partition`, holding this chunk.
    pub fn into_subscribe_response(self, partition: u32) -> v1::SubscribeResponse {
        v1::SubscribeResponse {
            partition,
            records: self.records,
            encoded_batches: self.encoded_batches,
            next_offset: self.next_offset,
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
        }
    }
}

/// Turns a read of `partition` into response parts. Decoded records are
/// zero-copy slices of the segment mapping; encoded batches are the stored
/// bytes as they are.
pub fn chunk(partition: &Partition, read: ReadResult, offset: u64, encoded: bool) -> Result<Chunk, Status> {
    let mut records = Vec::new();
    let mut encoded_batches = Vec::new();
    let mut record_count = 0;
    let mut batch_bytes = 0;
    for batch in &read.batches {
        record_count += (batch.last_offset() + 1).saturating_sub(batch.base_offset().max(offset));
        batch_bytes += batch.bytes().len() as u64;
        if encoded {
            encoded_batches.push(batch.bytes().clone());
        } else {
            decode_into(partition, batch, offset, &mut records)?;
        }
    }
    Ok(Chunk {
        records,
        encoded_batches,
        next_offset: read.next_offset,
        high_watermark: read.high_watermark,
        log_start_offset: read.log_start_offset,
        record_count,
        batch_bytes,
    })
}

fn decode_into(
    partition: &Partition,
    batch: &Batch,
    offset: u64,
    out: &mut Vec<v1::FetchedRecord>,
) -> Result<(), Status> {
    out.reserve(batch.record_count() as usize);
    for record in partition.records(batch) {
        let record = record.map_err(status)?;
        if record.offset < offset {
            continue;
        }
        let headers = record
            .headers()
            .map(|(key, value)| v1::Header {
                key: key.to_owned(),
                value: value.map(|v| batch.slice_ref(v)),
            })
            .collect();
        out.push(v1::FetchedRecord {
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key.map(|k| batch.slice_ref(k)),
            value: record.value.map(|v| batch.slice_ref(v)),
            headers,
        });
    }
    Ok(())
}

pub fn durability_to_proto(durability: Durability) -> i32 {
    match durability {
        Durability::None => v1::Durability::None as i32,
        Durability::Fsync => v1::Durability::Fsync as i32,
    }
}

/// The durability a request asks for; unspecified takes the default.
pub fn durability_from_proto(value: i32, default: Durability) -> Result<Durability, Status> {
    match v1::Durability::try_from(value) {
        Ok(v1::Durability::Unspecified) => Ok(default),
        Ok(v1::Durability::None) => Ok(Durability::None),
        Ok(v1::Durability::Fsync) => Ok(Durability::Fsync),
        Ok(v1::Durability::Quorum) => Err(Status::invalid_argument(
            "durability QUORUM needs cluster mode; this server runs as a single node (use FSYNC or NONE)",
        )),
        Err(_) => Err(Status::invalid_argument(format!("unknown durability {value}"))),
    }
}

/// Retention fields: 0 means the server default, -1 means no limit.
pub fn retention(value: i64, default: Option<u64>, field: &str) -> Result<Option<u64>, Status> {
    match value {
        0 => Ok(default),
        -1 => Ok(None),
        v if v > 0 => Ok(Some(v as u64)),
        v => Err(Status::invalid_argument(format!(
            "{field} {v} is invalid: use a positive value, 0 for the server default or -1 for no limit"
        ))),
    }
}

pub fn topic_config(name: &str, config: &spool_log::TopicConfig) -> v1::TopicConfig {
    let limit = |value: Option<u64>| value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    v1::TopicConfig {
        name: name.to_owned(),
        partitions: config.partitions,
        retention_ms: limit(config.retention_ms),
        retention_bytes: limit(config.retention_bytes),
        segment_bytes: config.segment_bytes_max,
        internal: spool_log::is_internal_topic(name),
    }
}

/// Stored checkpoint positions as GetCheckpoint answers them, by partition.
pub fn checkpoints(
    positions: std::collections::BTreeMap<u32, crate::checkpoints::Position>,
) -> Vec<v1::PartitionCheckpoint> {
    positions
        .into_iter()
        .map(|(partition, position)| v1::PartitionCheckpoint {
            partition,
            offset: position.offset,
            commit_time_ms: position.commit_time_ms,
        })
        .collect()
}
