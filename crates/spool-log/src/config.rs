//! Limits and settings, each with a name, a default and a check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::observer::StoreObserver;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Settings of a whole store (one data directory).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Largest encoded record (key, value and headers), in bytes.
    pub record_bytes_max: u64,
    /// Largest encoded batch, header included, in bytes.
    pub batch_bytes_max: u64,
    /// Most partitions one topic may have.
    pub partitions_max: u32,
    /// Most segments mapped at once across the store. Each segment holds
    /// three memory mappings; the kernel's `vm.max_map_count` (65,530 by
    /// default) bounds the total.
    pub open_segments_max: u64,
    /// The log files grow by this much at a time with `fallocate`, so that a
    /// full disk is an error at allocation, never a SIGBUS in a mapped write.
    pub preallocate_bytes: u64,
    /// An offset-index entry is written at most every this many log bytes.
    pub index_interval_bytes: u64,
    /// Threads that run fsyncs for `Durability::Fsync` appends.
    pub flush_threads: usize,
    /// How often the background thread flushes every partition and records
    /// its recovery checkpoint. Bounds what an unclean restart must re-scan.
    /// Zero turns the background thread off (tests drive it by hand).
    pub checkpoint_interval_ms: u64,
    /// How often retention runs in the background. Zero turns it off.
    pub retention_check_interval_ms: u64,
    /// Defaults for topics created without their own settings.
    pub topic_defaults: TopicConfig,
    /// Segment size of the internal topics (`__jobs`, `__checkpoints`),
    /// applied at every open, not only at creation. Their owners delete
    /// whole segments once their records are no longer needed, so this is
    /// the step by which they shrink. At least `batch_bytes_max`, so that
    /// every batch fits in one.
    pub internal_segment_bytes_max: u64,
    /// An idempotent producer whose last batch in a partition is older than
    /// this (by the batch's max timestamp) is forgotten there, at the next
    /// segment roll or open; its next batch is then refused as from an
    /// unknown producer. Kafka's `producer.id.expiration.ms`.
    pub producer_state_retention_ms: u64,
    /// Most idempotent producers a partition remembers; past it the least
    /// recently active one is forgotten.
    pub producers_max: u64,
    /// Failure injection for tests of disk-full and fsync-failure handling.
    pub faults: Option<Arc<FaultInjector>>,
    /// Told about flushes and poisoned partitions (metrics, health).
    pub observer: Option<Arc<dyn StoreObserver>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            record_bytes_max: MIB,
            batch_bytes_max: 8 * MIB,
            partitions_max: 1024,
            open_segments_max: 16 * 1024,
            preallocate_bytes: 8 * MIB,
            index_interval_bytes: 4 * KIB,
            flush_threads: 2,
            checkpoint_interval_ms: 10_000,
            retention_check_interval_ms: 60_000,
            topic_defaults: TopicConfig::default(),
            internal_segment_bytes_max: 64 * MIB,
            producer_state_retention_ms: DAY_MS,
            producers_max: 10_000,
            faults: None,
            observer: None,
        }
    }
}

impl StoreConfig {
    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<()> {
        check_range("record_bytes_max", self.record_bytes_max, 1, GIB)?;
        check_range("batch_bytes_max", self.batch_bytes_max, 64, 2 * GIB)?;
        if self.record_bytes_max > self.batch_bytes_max {
            return Err(invalid(
                "record_bytes_max",
                self.record_bytes_max,
                "must not exceed batch_bytes_max",
            ));
        }
        check_range("partitions_max", self.partitions_max.into(), 1, 100_000)?;
        check_range("open_segments_max", self.open_segments_max, 1, 1 << 20)?;
        check_range("preallocate_bytes", self.preallocate_bytes, 4 * KIB, 4 * GIB)?;
        check_range("index_interval_bytes", self.index_interval_bytes, 1, 64 * MIB)?;
        check_range("flush_threads", self.flush_threads as u64, 1, 64)?;
        check_range(
            "internal_segment_bytes_max",
            self.internal_segment_bytes_max,
            4 * KIB,
            u64::from(u32::MAX),
        )?;
        if self.internal_segment_bytes_max < self.batch_bytes_max {
            return Err(invalid(
                "internal_segment_bytes_max",
                self.internal_segment_bytes_max,
                "below batch_bytes_max",
            ));
        }
        check_range(
            "producer_state_retention_ms",
            self.producer_state_retention_ms,
            1000,
            365 * DAY_MS,
        )?;
        check_range("producers_max", self.producers_max, 1, 10_000_000)?;
        self.topic_defaults.validate()
    }

    /// The bounds of every partition's producer table.
    pub fn producer_limits(&self) -> crate::producers::ProducerLimits {
        crate::producers::ProducerLimits {
            retention_ms: self.producer_state_retention_ms,
            producers_max: self.producers_max as usize,
        }
    }
}

/// Settings of one topic, stored in its metadata file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub partitions: u32,
    /// A new segment starts when the active one would pass this size.
    /// At most 4 GiB - 1, since index entries hold 32-bit positions.
    pub segment_bytes_max: u64,
    /// A new segment starts when the active one is older than this.
    pub segment_ms_max: u64,
    /// Closed segments whose newest record is older than this are deleted.
    pub retention_ms: Option<u64>,
    /// Oldest closed segments are deleted while the partition is larger.
    pub retention_bytes: Option<u64>,
    /// Set on a node's copy of a replicated topic: which creation of the
    /// name it belongs to (one more than the cluster's metadata log offset
    /// of the command that created the topic). A node that was down while the topic was
    /// deleted and created again tells its old data from the new topic's
    /// by it. `None` for a topic of this node alone.
    pub incarnation: Option<u64>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            segment_bytes_max: GIB,
            segment_ms_max: 7 * DAY_MS,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            incarnation: None,
        }
    }
}

impl TopicConfig {
    pub fn validate(&self) -> Result<()> {
        check_range("partitions", self.partitions.into(), 1, 100_000)?;
        check_range(
            "segment_bytes_max",
            self.segment_bytes_max,
            4 * KIB,
            u64::from(u32::MAX),
        )?;
        check_range("segment_ms_max", self.segment_ms_max, 1, 100 * 365 * DAY_MS)?;
        if let Some(ms) = self.retention_ms {
            check_range("retention_ms", ms, 1, u64::MAX / 2)?;
        }
        if let Some(bytes) = self.retention_bytes {
            check_range("retention_bytes", bytes, 1, u64::MAX / 2)?;
        }
        Ok(())
    }
}

fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<()> {
    if value < min {
        return Err(invalid(key, value, "below the minimum"));
    }
    if value > max {
        return Err(invalid(key, value, "above the maximum"));
    }
    Ok(())
}

fn invalid(key: &'static str, value: u64, reason: &'static str) -> Error {
    Error::InvalidConfig {
        key,
        value: value.to_string(),
        reason,
    }
}

/// Switches that make the engine's disk operations fail as a real disk
/// would, for tests. Production stores leave [`StoreConfig::faults`] empty.
#[derive(Debug, Default)]
pub struct FaultInjector {
    allocate_fails: AtomicBool,
    sync_fails: AtomicBool,
    sync_stalls: AtomicBool,
    truncate_crash_step: AtomicU32,
    restart_crash_step: AtomicU32,
}

impl FaultInjector {
    /// While set, every `fallocate` fails with `ENOSPC`.
    pub fn set_disk_full(&self, full: bool) {
        self.allocate_fails.store(full, Ordering::SeqCst);
    }

    /// While set, every fsync fails with `EIO`.
    pub fn set_sync_fails(&self, fails: bool) {
        self.sync_fails.store(fails, Ordering::SeqCst);
    }

    /// While set, every fsync waits (before it starts) until this is
    /// cleared, as on a disk that takes its time: what waits for
    /// durability can be told apart from what does not.
    pub fn set_sync_stalls(&self, stalls: bool) {
        self.sync_stalls.store(stalls, Ordering::SeqCst);
    }

    /// Makes `Partition::truncate_suffix` stop with an error right after
    /// its step `step` (1 to 6, see `docs/storage-format.md`, section 5.1),
    /// as a crash there would; 0 turns it off. The partition is then
    /// poisoned, and a test drops the store without closing it
    /// (`Store::simulate_crash`) and reopens it to see what recovery makes
    /// of that state.
    pub fn set_truncate_crash_step(&self, step: u32) {
        self.truncate_crash_step.store(step, Ordering::SeqCst);
    }

    /// Makes `Partition::restart_at` stop with an error right after its
    /// step `step` (1 to 5, see `docs/storage-format.md`, section 5.2), as
    /// a crash there would; 0 turns it off. As with
    /// [`FaultInjector::set_truncate_crash_step`], the partition is then
    /// poisoned and a test reopens the store to see what recovery makes of
    /// the files.
    pub fn set_restart_crash_step(&self, step: u32) {
        self.restart_crash_step.store(step, Ordering::SeqCst);
    }

    pub(crate) fn restart_crash(&self, step: u32) -> Option<std::io::Error> {
        (self.restart_crash_step.load(Ordering::SeqCst) == step)
            .then(|| std::io::Error::other(format!("injected crash after restart step {step}")))
    }

    pub(crate) fn truncate_crash(&self, step: u32) -> Option<std::io::Error> {
        (self.truncate_crash_step.load(Ordering::SeqCst) == step)
            .then(|| std::io::Error::other(format!("injected crash after truncation step {step}")))
    }

    pub(crate) fn allocate_error(&self) -> Option<std::io::Error> {
        self.allocate_fails
            .load(Ordering::SeqCst)
            .then(|| std::io::Error::from_raw_os_error(libc::ENOSPC))
    }

    /// Called before every fsync: waits out a stall, then says whether
    /// the fsync fails.
    pub(crate) fn sync_error(&self) -> Option<std::io::Error> {
        while self.sync_stalls.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.sync_fails
            .load(Ordering::SeqCst)
            .then(|| std::io::Error::from_raw_os_error(libc::EIO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        StoreConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let config = StoreConfig {
            topic_defaults: TopicConfig {
                segment_bytes_max: 8 * GIB,
                ..TopicConfig::default()
            },
            ..StoreConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    key: "segment_bytes_max",
                    ..
                }
            ),
            "{err}"
        );
    }
}
