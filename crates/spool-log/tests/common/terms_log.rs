//! What the kill -9 tests of a log in Raft terms share
//! (`truncate_crash.rs`, `restart_crash.rs`): the store's settings, the
//! partition, the records' values, and the log read back with each
//! record's term.

use std::collections::BTreeMap;

use spool_log::{Partition, Store, StoreConfig, TopicConfig};

pub fn store_config() -> StoreConfig {
    StoreConfig {
        preallocate_bytes: 64 * 1024,
        index_interval_bytes: 256,
        checkpoint_interval_ms: 40,
        ..StoreConfig::default()
    }
}

/// The value of record `seq` appended in `round`: its names, then up to
/// 400 bytes of one letter.
pub fn value(round: u64, seq: u64) -> Vec<u8> {
    let mut v = format!("r{round}-s{seq}-").into_bytes();
    v.extend(std::iter::repeat_n(
        b'a' + (seq % 26) as u8,
        ((seq * 53) % 400) as usize,
    ));
    v
}

/// Partition 0 of `topic`, created the first time with 16 KiB segments.
pub fn open_partition(store: &Store, topic: &str) -> Partition {
    match store.partition(topic, 0) {
        Ok(partition) => partition,
        Err(_) => store
            .create_topic(
                topic,
                TopicConfig {
                    partitions: 1,
                    segment_bytes_max: 16 * 1024,
                    retention_ms: None,
                    ..TopicConfig::default()
                },
            )
            .unwrap()
            .partitions()[0]
            .clone(),
    }
}

/// Records by offset, each with its value and term.
pub type Log = BTreeMap<u64, (Vec<u8>, u64)>;

/// Every record of the log, and the batches' base offsets.
pub fn contents(partition: &Partition) -> (Log, Vec<u64>) {
    let mut records = BTreeMap::new();
    let mut bases = Vec::new();
    let mut offset = partition.log_start_offset();
    while offset < partition.high_watermark() {
        let read = partition.read(offset, 1 << 20).unwrap();
        for batch in &read.batches {
            if batch.base_offset() < offset {
                continue;
            }
            bases.push(batch.base_offset());
            for record in batch.records() {
                let record = record.unwrap();
                let term = partition.term_at(record.offset).unwrap();
                records.insert(record.offset, (record.value.unwrap().to_vec(), term));
            }
        }
        assert!(read.next_offset > offset, "no progress reading at {offset}");
        offset = read.next_offset;
    }
    (records, bases)
}
