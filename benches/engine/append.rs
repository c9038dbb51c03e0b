//! `append`: `Partition::append` with `Durability::None` of 100-byte and
//! 1 KiB records in batches of 1, 100 and 1000, and `append_encoded` of a
//! pre-encoded batch of 1000 (the server's path for clients that send the
//! storage format). Reported in records per second.
//!
//! Each iteration encodes the batch (or validates the pre-encoded one),
//! copies it into the active segment's mapping, indexes it and publishes
//! it. One thread, one partition; the store is rebuilt (untimed) every
//! 2 GiB so the disk never fills.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use spool::{format_bytes, payloads};
use spool_log::Durability;

use crate::rig::{self, GIB, KIB, MIB, ScratchLog};

const RECORD_BYTES: [u64; 2] = [100, KIB];
const BATCH_RECORDS: [u64; 3] = [1, 100, 1000];

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    // Built by the first benchmark that runs, so a filter that skips the
    // group builds nothing.
    let mut log: Option<ScratchLog> = None;
    let new_log = || ScratchLog::new(rig::store_config(), GIB, rig::scaled(2 * GIB, 64 * MIB));
    for record_bytes in RECORD_BYTES {
        for batch_records in BATCH_RECORDS {
            let values = payloads(batch_records as usize, record_bytes as usize);
            let records = rig::records(&values);
            let batch_bytes = rig::encode(&records, &rig::store_config()).len() as u64;
            group.throughput(Throughput::Elements(batch_records));
            let id = BenchmarkId::new(format_bytes(record_bytes).replace(' ', ""), batch_records);
            group.bench_function(id, |b| {
                let log = log.get_or_insert_with(new_log);
                b.iter_custom(|iters| {
                    log.timed(iters, batch_bytes, |partition| {
                        black_box(partition.append(&records, Durability::None).expect("append"));
                    })
                })
            });
        }
    }
    for record_bytes in RECORD_BYTES {
        let batch_records = 1000;
        let values = payloads(batch_records as usize, record_bytes as usize);
        let encoded = rig::encode(&rig::records(&values), &rig::store_config());
        let batch_bytes = encoded.len() as u64;
        group.throughput(Throughput::Elements(batch_records));
        let id = BenchmarkId::new(
            format!("encoded_{}", format_bytes(record_bytes).replace(' ', "")),
            batch_records,
        );
        group.bench_function(id, |b| {
            let log = log.get_or_insert_with(new_log);
            b.iter_custom(|iters| {
                log.timed(iters, batch_bytes, |partition| {
                    black_box(
                        partition
                            .append_encoded(&encoded, Durability::None)
                            .expect("append_encoded"),
                    );
                })
            })
        });
    }
    group.finish();
}
