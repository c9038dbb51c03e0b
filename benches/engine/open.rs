//! `open_clean`: `Store::open` of a cleanly closed store of 1,000
//! partitions (10 topics of 100, one small batch each), reported in
//! partitions per second. The clean close between opens is untimed; its
//! average is printed to stderr.
//!
//! `open_unclean`: `Store::open` after
//! `Store::simulate_crash` of a one-partition store whose log holds a
//! checkpointed (flushed) history plus N MiB appended after the last
//! checkpoint. Recovery scans and CRC-checks only those N MiB, so the time
//! should follow N and not the history. `warm_*` reopens with the log in
//! the page cache (a process crash); `cold_*` first drops the
//! partition's files from the page cache (`posix_fadvise(DONTNEED)`, after
//! an fsync, untimed), so the scan reads from the disk as after a reboot.
//! In both, the N MiB were already written back by an earlier open: the
//! first open after a real crash also writes back whatever dirty pages the
//! crashed process left, and is printed once to stderr.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use spool::{format_bytes, payloads};
use spool_log::{Durability, RecoveryReport, Store, StoreConfig};
use tempfile::TempDir;

use crate::rig::{self, GIB, KIB, MIB};
use crate::sys;

const TOPICS: u32 = 10;
const RECORDS_PER_PARTITION: usize = 10;

pub fn bench(c: &mut Criterion) {
    bench_clean(c);
    bench_unclean(c);
}

/// The settings of the 1,000-partition store: small preallocation, so the
/// store is a few hundred MiB on disk rather than 8 GiB.
fn many_partitions_config() -> StoreConfig {
    StoreConfig {
        preallocate_bytes: 64 * KIB,
        ..rig::store_config()
    }
}

/// A cleanly closed store with `TOPICS` topics of `partitions_per_topic`.
fn build_clean(partitions_per_topic: u32) -> TempDir {
    let limit = sys::raise_open_files_limit().expect("raise RLIMIT_NOFILE");
    let dir = rig::scratch_dir();
    let started = Instant::now();
    let (store, _) = Store::open(dir.path(), many_partitions_config()).expect("open");
    let values = payloads(RECORDS_PER_PARTITION, 100);
    let records = rig::records(&values);
    for topic in 0..TOPICS {
        let topic = store
            .create_topic(
                &format!("topic-{topic:02}"),
                rig::topic_config(partitions_per_topic, GIB),
            )
            .expect("create topic");
        for partition in topic.partitions() {
            partition.append(&records, Durability::None).expect("append");
        }
    }
    store.close().expect("close");
    eprintln!(
        "open_clean: built {} partitions in {:.1} s (open files limit {limit})",
        TOPICS * partitions_per_topic,
        started.elapsed().as_secs_f64()
    );
    dir
}

fn bench_clean(c: &mut Criterion) {
    let partitions_per_topic = rig::scaled(100, 3) as u32;
    let partitions = u64::from(TOPICS * partitions_per_topic);
    let mut group = c.benchmark_group("open_clean");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(partitions));
    let mut dir: Option<TempDir> = None;
    let mut closes = (0u32, Duration::ZERO);
    group.bench_function(BenchmarkId::new("partitions", partitions), |b| {
        let dir = dir.get_or_insert_with(|| build_clean(partitions_per_topic));
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let (store, report) = Store::open(dir.path(), many_partitions_config()).expect("open");
                elapsed += start.elapsed();
                assert!(report.clean && report.partitions.is_empty(), "{report:?}");
                assert_eq!(store.stats().open_segments, partitions);
                let start = Instant::now();
                store.close().expect("close");
                closes.0 += 1;
                closes.1 += start.elapsed();
            }
            elapsed
        })
    });
    group.finish();
    if closes.0 > 0 {
        eprintln!(
            "open_clean: clean close of {partitions} partitions took {:.1} ms on average over {} closes",
            closes.1.as_secs_f64() * 1000.0 / f64::from(closes.0),
            closes.0
        );
    }
}

/// A one-partition store left as a crash leaves it: `history_bytes`
/// checkpointed, then `unflushed_bytes` appended after the checkpoint.
struct CrashedStore {
    history_bytes: u64,
    unflushed_bytes: u64,
    log_bytes: u64,
    dir: TempDir,
}

/// Appends batches of 1000 1-KiB records until `bytes` more are in the log;
/// returns the bytes appended.
fn append_bytes(store: &Store, bytes: u64) -> u64 {
    let values = payloads(1000, KIB as usize);
    let records = rig::records(&values);
    let partition = store.partition("history", 0).expect("partition");
    let before = partition.info().size_bytes;
    while partition.info().size_bytes - before < bytes {
        partition.append(&records, Durability::None).expect("append");
    }
    partition.info().size_bytes - before
}

fn scanned_bytes(report: &RecoveryReport) -> u64 {
    report
        .partitions
        .iter()
        .flat_map(|p| &p.scans)
        .map(|scan| scan.scanned_bytes)
        .sum()
}

impl CrashedStore {
    fn build(history_bytes: u64, segment_bytes_max: u64) -> CrashedStore {
        let dir = rig::scratch_dir();
        let (store, _) = Store::open(dir.path(), rig::store_config()).expect("open");
        store
            .create_topic("history", rig::topic_config(1, segment_bytes_max))
            .expect("create topic");
        let log_bytes = append_bytes(&store, history_bytes);
        store.checkpoint().expect("checkpoint");
        store.simulate_crash();
        CrashedStore {
            history_bytes,
            unflushed_bytes: 0,
            log_bytes,
            dir,
        }
    }

    /// Appends until `unflushed_bytes` lie past the checkpoint, crashes,
    /// and opens once (timed, printed) so that the pages the crash left
    /// dirty are written back before the benchmark.
    fn grow_unflushed(&mut self, unflushed_bytes: u64) {
        assert!(unflushed_bytes >= self.unflushed_bytes, "cases grow in order");
        if unflushed_bytes > self.unflushed_bytes {
            let (store, _) = self.open();
            let appended = append_bytes(&store, unflushed_bytes - self.unflushed_bytes);
            self.log_bytes += appended;
            store.simulate_crash();
            self.unflushed_bytes = unflushed_bytes;
        }
        let start = Instant::now();
        let (store, report) = self.open();
        let elapsed = start.elapsed();
        store.simulate_crash();
        eprintln!(
            "open_unclean: history {} + {} unflushed ({} log bytes): first open scanned {} bytes in {:.1} ms",
            format_bytes(self.history_bytes),
            format_bytes(self.unflushed_bytes),
            self.log_bytes,
            scanned_bytes(&report),
            elapsed.as_secs_f64() * 1000.0,
        );
    }

    fn open(&self) -> (Store, RecoveryReport) {
        let (store, report) = Store::open(self.dir.path(), rig::store_config()).expect("open");
        assert!(!report.clean);
        (store, report)
    }

    /// Syncs every file of the store and drops it from the page cache.
    fn drop_cache(&self) {
        fn walk(dir: &Path) {
            for entry in std::fs::read_dir(dir).expect("list") {
                let path = entry.expect("list").path();
                if path.is_dir() {
                    walk(&path);
                } else {
                    let file = std::fs::File::open(&path).expect("open");
                    file.sync_all().expect("fsync");
                    sys::drop_cached_pages(&file).expect("fadvise");
                }
            }
        }
        walk(self.dir.path());
    }

    /// Times `iters` opens, each followed (untimed) by a simulated crash.
    fn time_opens(&self, iters: u64, cold: bool) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            if cold {
                self.drop_cache();
            }
            let start = Instant::now();
            let (store, report) = self.open();
            elapsed += start.elapsed();
            assert!(scanned_bytes(&report) >= self.unflushed_bytes.min(1));
            store.simulate_crash();
        }
        elapsed
    }
}

/// The fixture in `slot`, built or grown to hold `unflushed_bytes`.
fn prepare(
    slot: &mut Option<CrashedStore>,
    history_bytes: u64,
    unflushed_bytes: u64,
    segment_bytes_max: u64,
) -> &CrashedStore {
    let store = slot.get_or_insert_with(|| CrashedStore::build(history_bytes, segment_bytes_max));
    if store.unflushed_bytes != unflushed_bytes {
        store.grow_unflushed(unflushed_bytes);
    }
    store
}

fn bench_unclean(c: &mut Criterion) {
    let segment_bytes_max = rig::scaled(256 * MIB, 2 * MIB);
    let large_history = rig::scaled(GIB, 8 * MIB);
    let small_history = rig::scaled(64 * MIB, 2 * MIB);
    let unflushed: Vec<u64> = if rig::full_size() {
        vec![0, 16 * MIB, 64 * MIB, 256 * MIB]
    } else {
        vec![0, MIB, 4 * MIB]
    };
    // (history, unflushed) in the order the fixtures grow: a small history
    // with a middling unflushed tail, then the large history with each.
    let mut cases: Vec<(u64, u64)> = vec![(small_history, unflushed[unflushed.len() - 2])];
    cases.extend(unflushed.iter().map(|&n| (large_history, n)));

    let mut group = c.benchmark_group("open_unclean");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    // One fixture per history size, grown in place from case to case.
    let mut stores: [Option<CrashedStore>; 2] = [None, None];
    for (history_bytes, unflushed_bytes) in cases {
        group.throughput(if unflushed_bytes == 0 {
            Throughput::Elements(1)
        } else {
            Throughput::Bytes(unflushed_bytes)
        });
        let history = format_bytes(history_bytes).replace(' ', "");
        let parameter = format!("unflushed_{}", format_bytes(unflushed_bytes).replace(' ', ""));
        for cold in [false, true] {
            let function = format!("{}_history_{history}", if cold { "cold" } else { "warm" });
            group.bench_function(BenchmarkId::new(function, &parameter), |b| {
                let slot = &mut stores[usize::from(history_bytes == large_history)];
                let store = prepare(slot, history_bytes, unflushed_bytes, segment_bytes_max);
                b.iter_custom(|iters| store.time_opens(iters, cold))
            });
        }
    }
    group.finish();
}
