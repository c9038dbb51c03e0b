//! Fixtures the engine benchmarks share: criterion settings, store and
//! topic settings, record batches, and [`ScratchLog`], a one-partition store
//! that is thrown away and rebuilt before it can fill the disk.

use std::time::{Duration, Instant};

use criterion::Criterion;
use spool_format::batch::{self, BatchLimits};
use spool_log::{Partition, Record, Store, StoreConfig, TopicConfig};
use tempfile::TempDir;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// Criterion defaults for every group: short runs, since the machine is
/// shared. Flags on the command line (`--measurement-time`, ...) override
/// them unless a group sets its own.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

/// True when criterion measures (`cargo bench`), false in its test mode
/// (`cargo test --benches`, `cargo bench -- --test`), where it runs every
/// benchmark once and fixtures shrink to keep that fast.
pub fn full_size() -> bool {
    let mut bench = false;
    for arg in std::env::args() {
        match arg.as_str() {
            "--test" | "--list" => return false,
            "--bench" => bench = true,
            _ => {}
        }
    }
    bench
}

/// `full` when measuring, `smoke` in test mode.
pub fn scaled(full: u64, smoke: u64) -> u64 {
    if full_size() { full } else { smoke }
}

/// Store settings for benchmarks: the background checkpoint and retention
/// threads are off so they cannot add work to a measurement.
pub fn store_config() -> StoreConfig {
    StoreConfig {
        checkpoint_interval_ms: 0,
        retention_check_interval_ms: 0,
        ..StoreConfig::default()
    }
}

/// A topic that keeps everything and rolls at `segment_bytes_max`.
pub fn topic_config(partitions: u32, segment_bytes_max: u64) -> TopicConfig {
    TopicConfig {
        partitions,
        segment_bytes_max,
        retention_ms: None,
        retention_bytes: None,
        ..TopicConfig::default()
    }
}

/// A fresh directory under [`spool::scratch_root`], removed on drop.
pub fn scratch_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("spool-bench-")
        .tempdir_in(spool::scratch_root())
        .expect("create a scratch directory")
}

/// Records with the given values and no key, headers or timestamp.
pub fn records(values: &[Vec<u8>]) -> Vec<Record<'_>> {
    values.iter().map(|value| Record::value(value)).collect()
}

/// A batch of `records` encoded in the storage format.
pub fn encode(records: &[Record<'_>], config: &StoreConfig) -> Vec<u8> {
    let limits = BatchLimits {
        record_bytes_max: config.record_bytes_max,
        batch_bytes_max: config.batch_bytes_max,
    };
    batch::encode_to_vec(records, 1_700_000_000_000, limits).expect("batch within limits")
}

/// A store in a scratch directory with one topic of one partition.
///
/// Appending benchmarks write gigabytes; once `reset_bytes` have been
/// appended the store is dropped as if it crashed (no flush of what is
/// still in the page cache: nobody reads it again) and its directory
/// deleted, and a fresh one takes its place.
#[derive(Debug)]
pub struct ScratchLog {
    store_config: StoreConfig,
    topic_config: TopicConfig,
    reset_bytes: u64,
    appended_bytes: u64,
    partition: Partition,
    store: Option<Store>,
    _dir: TempDir,
}

impl ScratchLog {
    pub fn new(store_config: StoreConfig, segment_bytes_max: u64, reset_bytes: u64) -> ScratchLog {
        let topic_config = topic_config(1, segment_bytes_max);
        let (dir, store, partition) = Self::build(&store_config, &topic_config);
        ScratchLog {
            store_config,
            topic_config,
            reset_bytes,
            appended_bytes: 0,
            partition,
            store: Some(store),
            _dir: dir,
        }
    }

    fn build(store_config: &StoreConfig, topic_config: &TopicConfig) -> (TempDir, Store, Partition) {
        let dir = scratch_dir();
        let (store, _) = Store::open(dir.path(), store_config.clone()).expect("open the store");
        let topic = store
            .create_topic("bench", topic_config.clone())
            .expect("create the topic");
        let partition = topic.partitions()[0].clone();
        (dir, store, partition)
    }

    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("store present")
    }

    /// Rebuilds the store first if appending `next_bytes` more would pass
    /// the reset size.
    pub fn make_room(&mut self, next_bytes: u64) {
        if self.appended_bytes == 0 || self.appended_bytes + next_bytes <= self.reset_bytes {
            return;
        }
        if let Some(store) = self.store.take() {
            store.simulate_crash();
        }
        let (dir, store, partition) = Self::build(&self.store_config, &self.topic_config);
        self.store = Some(store);
        self.partition = partition;
        self._dir = dir;
        self.appended_bytes = 0;
    }

    pub fn note_appended(&mut self, bytes: u64) {
        self.appended_bytes += bytes;
    }

    /// Runs `append` `iters` times against the partition and returns the
    /// time spent inside it. The work is split into chunks of about
    /// 256 MiB, between which (untimed) the store may be rebuilt.
    pub fn timed(&mut self, iters: u64, bytes_per_iter: u64, mut append: impl FnMut(&Partition)) -> Duration {
        let chunk = (256 * MIB / bytes_per_iter.max(1)).max(1);
        let mut elapsed = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let count = chunk.min(iters - done);
            self.make_room(count * bytes_per_iter);
            let partition = self.partition.clone();
            let start = Instant::now();
            for _ in 0..count {
                append(&partition);
            }
            elapsed += start.elapsed();
            self.note_appended(count * bytes_per_iter);
            done += count;
        }
        elapsed
    }
}

impl Drop for ScratchLog {
    fn drop(&mut self) {
        // A clean close would flush gigabytes that are about to be deleted.
        if let Some(store) = self.store.take() {
            store.simulate_crash();
        }
    }
}
