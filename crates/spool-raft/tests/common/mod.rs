//! What the replication tests share: the store settings of a replica,
//! client batches that name what they carry, the record of an
//! acknowledged write, and the committed log of a replica read back.

#[allow(dead_code)]
pub mod cluster;

use anyhow::{Result, ensure};
use bytes::Bytes;
use spool_format::batch::{self, Batch, BatchLimits, Record};
use spool_log::{Partition, StoreConfig};
use spool_raft::Appended;

pub fn store_config() -> StoreConfig {
    StoreConfig {
        preallocate_bytes: 16 * 1024,
        index_interval_bytes: 256,
        checkpoint_interval_ms: 0,
        retention_check_interval_ms: 0,
        ..StoreConfig::default()
    }
}

pub fn limits() -> BatchLimits {
    let config = store_config();
    BatchLimits {
        record_bytes_max: config.record_bytes_max,
        batch_bytes_max: config.batch_bytes_max,
    }
}

/// A client's batch of `count` records whose values name `tag`.
pub fn encoded_batch(tag: &str, count: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..count).map(|i| format!("{tag}/{i}").into_bytes()).collect();
    let records: Vec<Record<'_>> = values.iter().map(|v| Record::value(v)).collect();
    Bytes::from(batch::encode_to_vec(&records, 1_700_000_000_000, limits()).unwrap())
}

/// A write a client saw acknowledged: what it wrote and where it landed.
#[derive(Debug, Clone)]
pub struct Ack {
    pub tag: String,
    pub count: usize,
    pub appended: Appended,
}

/// Every committed batch of `partition` from its log start to `end`.
pub fn committed_batches(partition: &Partition, end: u64) -> Result<Vec<Batch>> {
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset();
    while offset < end {
        let read = partition.read_committed(offset, 1 << 20)?;
        ensure!(read.next_offset > offset, "no progress reading at {offset}");
        out.extend(read.batches);
        offset = read.next_offset;
    }
    Ok(out)
}
