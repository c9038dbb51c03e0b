//! `read`: a sequential pass over a prefilled partition of 100-byte
//! records (appended in batches of 1000), from offset 0 to the high
//! watermark, with `Partition::read(offset, 1 MiB)`. Reported in records
//! per second. `records` decodes every record (`Batch::records`); `batches`
//! only walks the batches and adds up their record counts. Both include the
//! CRC check that every read does on every batch.
//!
//! The data is in the page cache (it was just written), as it is for a
//! consumer that keeps up with producers.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use spool::payloads;
use spool_log::{Durability, Partition};

use crate::rig::{self, GIB, MIB, ScratchLog};

const RECORD_BYTES: usize = 100;
const BATCH_RECORDS: usize = 1000;
const READ_BYTES_MAX: u64 = MIB;

fn prefill(record_count: u64) -> ScratchLog {
    let log = ScratchLog::new(rig::store_config(), GIB, u64::MAX);
    let values = payloads(BATCH_RECORDS, RECORD_BYTES);
    let records = rig::records(&values);
    for _ in 0..record_count / BATCH_RECORDS as u64 {
        log.partition()
            .append(&records, Durability::None)
            .expect("prefill append");
    }
    let info = log.partition().info();
    eprintln!(
        "read: prefilled {} records of {RECORD_BYTES} bytes, {} log bytes in {} segment(s)",
        info.high_watermark, info.size_bytes, info.segment_count
    );
    log
}

/// Reads the whole partition once; returns the records seen.
fn read_all(partition: &Partition, decode: bool) -> u64 {
    let end = partition.high_watermark();
    let mut offset = 0;
    let mut records = 0u64;
    while offset < end {
        let read = partition.read(offset, READ_BYTES_MAX).expect("read");
        for batch in &read.batches {
            if decode {
                for record in batch.records() {
                    let record = record.expect("decode a record");
                    black_box(record.value);
                    records += 1;
                }
            } else {
                records += u64::from(black_box(batch).record_count());
            }
        }
        offset = read.next_offset;
    }
    records
}

pub fn bench(c: &mut Criterion) {
    let record_count = rig::scaled(2_000_000, 20_000);
    let mut group = c.benchmark_group("read");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(record_count));
    let mut log: Option<ScratchLog> = None;
    for (name, decode) in [("records", true), ("batches", false)] {
        group.bench_function(name, |b| {
            let log = log.get_or_insert_with(|| prefill(record_count));
            let partition = log.partition().clone();
            b.iter(|| assert_eq!(read_all(&partition, decode), record_count))
        });
    }
    group.finish();
}
