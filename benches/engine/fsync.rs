//! `fsync_append`: `Durability::Fsync` appends of batches of about 1 MiB
//! (1000 records of 1 KiB, or 10,000 of 100 bytes), reported in bytes per
//! second of encoded batch, by one appender and by four at once (what a
//! server with several producers does: while one batch is being synced the
//! next is written, which one appender alone cannot overlap). Each append returns only after a
//! flusher thread has synced it (`msync`, i.e. `fdatasync` of the range),
//! so this is the durable produce path at its best batch size; compare
//! it with `dd ... conv=fdatasync` from the same run of
//! `scripts/bench-engine.sh`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use spool::{format_bytes, payloads};
use spool_log::Durability;

use crate::rig::{self, GIB, MIB, ScratchLog};

/// (record bytes, records per batch)
const SHAPES: [(u64, u64); 2] = [(1024, 1000), (100, 10_000)];

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fsync_append");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let mut log: Option<ScratchLog> = None;
    let new_log = || ScratchLog::new(rig::store_config(), GIB, rig::scaled(2 * GIB, 64 * MIB));
    for (record_bytes, batch_records) in SHAPES {
        let values = payloads(batch_records as usize, record_bytes as usize);
        let records = rig::records(&values);
        let batch_bytes = rig::encode(&records, &rig::store_config()).len() as u64;
        group.throughput(Throughput::Bytes(batch_bytes));
        let id = BenchmarkId::new(format_bytes(record_bytes).replace(' ', ""), batch_records);
        eprintln!(
            "fsync_append: {record_bytes}-byte records x {batch_records} = {batch_bytes} bytes per batch"
        );
        group.bench_function(id, |b| {
            let log = log.get_or_insert_with(new_log);
            b.iter_custom(|iters| {
                log.timed(iters, batch_bytes, |partition| {
                    let outcome = partition.append(&records, Durability::Fsync).expect("append");
                    assert_eq!(outcome.durability, Durability::Fsync);
                    black_box(outcome);
                })
            })
        });
    }
    let values = payloads(1000, 1024);
    let records = rig::records(&values);
    let batch_bytes = rig::encode(&records, &rig::store_config()).len() as u64;
    const APPENDERS: u64 = 4;
    group.throughput(Throughput::Bytes(batch_bytes));
    group.bench_function(BenchmarkId::new("1KiB-x1000-appenders", APPENDERS), |b| {
        let log = log.get_or_insert_with(new_log);
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(APPENDERS);
            log.timed(1, per_thread * APPENDERS * batch_bytes, |partition| {
                std::thread::scope(|scope| {
                    for _ in 0..APPENDERS {
                        scope.spawn(|| {
                            for _ in 0..per_thread {
                                let outcome = partition.append(&records, Durability::Fsync).expect("append");
                                black_box(outcome);
                            }
                        });
                    }
                });
            })
        })
    });
    group.finish();
}
