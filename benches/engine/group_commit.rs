//! `group_commit`: 1 and 16 threads appending single 1 KiB records to one
//! partition with `Durability::Fsync`, reported in appends per second.
//! Alone, a thread waits for one fsync per append; with 16, one flush
//! covers every append that arrived while the previous one ran. The
//! counts of appends and flushes (`StoreStats::flushes`) are printed to
//! stderr after each benchmark so that the ratio is on record.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use spool::payloads;
use spool_log::{Durability, Record};

use crate::rig::{self, GIB, KIB, MIB, ScratchLog};

const THREADS: [u64; 2] = [1, 16];
const RECORD_BYTES: u64 = KIB;

#[derive(Debug, Default)]
struct Totals {
    appends: u64,
    flushes: u64,
    elapsed: Duration,
}

/// `appends` appends spread over `threads` threads, all started at once;
/// returns the time from the start until the last one returned.
fn run(log: &ScratchLog, threads: u64, appends: u64, value: &[u8], totals: &mut Totals) -> Duration {
    let partition = log.partition();
    let flushes_before = log.store().stats().flushes;
    let start_line = Barrier::new(threads as usize + 1);
    let mut start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let share = appends / threads + u64::from(thread < appends % threads);
            let start_line = &start_line;
            scope.spawn(move || {
                let record = [Record::value(value)];
                start_line.wait();
                for _ in 0..share {
                    black_box(partition.append(&record, Durability::Fsync).expect("append"));
                }
            });
        }
        start_line.wait();
        start = Instant::now();
    });
    let elapsed = start.elapsed();
    totals.appends += appends;
    totals.flushes += log.store().stats().flushes - flushes_before;
    totals.elapsed += elapsed;
    elapsed
}

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_commit");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    let value = payloads(1, RECORD_BYTES as usize).remove(0);
    let mut log: Option<ScratchLog> = None;
    let new_log = || ScratchLog::new(rig::store_config(), GIB, rig::scaled(2 * GIB, 64 * MIB));
    for threads in THREADS {
        let mut totals = Totals::default();
        group.bench_function(BenchmarkId::new("threads", threads), |b| {
            let log = log.get_or_insert_with(new_log);
            b.iter_custom(|iters| {
                // About 1.1 KiB per append: far from any reset size, but
                // keep the bookkeeping honest.
                log.make_room(iters * (RECORD_BYTES + 64));
                let elapsed = run(log, threads, iters, &value, &mut totals);
                log.note_appended(iters * (RECORD_BYTES + 64));
                elapsed
            })
        });
        if totals.appends > 0 {
            eprintln!(
                "group_commit/threads/{threads}: {} appends, {} flushes: {:.1} appends per flush, \
                 {:.0} appends/s over all runs (warm-up included)",
                totals.appends,
                totals.flushes,
                totals.appends as f64 / totals.flushes.max(1) as f64,
                totals.appends as f64 / totals.elapsed.as_secs_f64(),
            );
        }
    }
    group.finish();
}
