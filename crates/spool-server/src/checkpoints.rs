//! Named consumer positions, stored as records in the internal topic
//! `__checkpoints` and held in memory for reads.
//!
//! Each commit appends one record: key `consumer \n topic`, value a run of
//! 20-byte little-endian entries (partition u32, offset u64, commit time
//! i64 ms). At start the topic is replayed from its log start; the latest
//! entry for each (consumer, topic, partition) wins. Checkpoints are a
//! convenience: nothing in the server requires a consumer to use them.
//!
//! Compaction keeps the topic bounded whatever the commit rate: once the
//! partition has grown by a segment (or by the size of every position, if
//! larger) since the last compaction, every position is written again at
//! the end of the log, in the same record format, and once that is durable
//! the segments wholly before it are deleted. Replay then finds every
//! position after the new log start, the latest still winning.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spool_log::{Durability, Partition, Record, Store};

pub const TOPIC: &str = "__checkpoints";
const ENTRY_BYTES: usize = 20;
/// Most entries in one record a compaction writes: 20 KiB, well under any
/// record limit, however many partitions a consumer committed.
const ENTRIES_PER_RECORD_MAX: usize = 1_024;
/// Framing of a record and its share of a batch header, for estimates.
const RECORD_OVERHEAD_BYTES: u64 = 32;

/// A stored position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub commit_time_ms: i64,
}

type Key = (String, String);

#[derive(Debug)]
pub struct Checkpoints {
    partition: Partition,
    positions: Mutex<HashMap<Key, BTreeMap<u32, Position>>>,
    /// The partition size at which the next compaction is due.
    compact_at_bytes: AtomicU64,
    compacting: AtomicBool,
    /// The step by which the topic shrinks (its segment size): compactions
    /// are at least this far apart, so each can delete something.
    segment_bytes: u64,
    batch_bytes_max: u64,
}

fn encode_key(consumer: &str, topic: &str) -> Vec<u8> {
    format!("{consumer}\n{topic}").into_bytes()
}

fn encode_entry(value: &mut Vec<u8>, partition: u32, offset: u64, commit_time_ms: i64) {
    value.extend_from_slice(&partition.to_le_bytes());
    value.extend_from_slice(&offset.to_le_bytes());
    value.extend_from_slice(&commit_time_ms.to_le_bytes());
}

impl Checkpoints {
    /// Opens the internal topic (creating it on first start) and replays it.
    pub fn open(store: &Store) -> spool_log::Result<Checkpoints> {
        let partition = store.internal_partition(TOPIC)?;
        let mut positions: HashMap<Key, BTreeMap<u32, Position>> = HashMap::new();
        let mut replayed = 0u64;
        partition.scan(0, |_, record| {
            replayed += 1;
            let (Some(key), Some(value)) = (record.key, record.value) else {
                return ControlFlow::Continue(());
            };
            let Some((consumer, topic)) = std::str::from_utf8(key).ok().and_then(|k| k.split_once('\n'))
            else {
                return ControlFlow::Continue(());
            };
            let entry = positions
                .entry((consumer.to_owned(), topic.to_owned()))
                .or_default();
            for raw in value.chunks_exact(ENTRY_BYTES) {
                let partition = u32::from_le_bytes(raw[..4].try_into().expect("4 bytes"));
                let offset = u64::from_le_bytes(raw[4..12].try_into().expect("8 bytes"));
                let commit_time_ms = i64::from_le_bytes(raw[12..20].try_into().expect("8 bytes"));
                entry.insert(
                    partition,
                    Position {
                        offset,
                        commit_time_ms,
                    },
                );
            }
            ControlFlow::Continue(())
        })?;
        tracing::info!(
            records = replayed,
            consumers = positions.len(),
            "checkpoints replayed"
        );
        let checkpoints = Checkpoints {
            partition,
            positions: Mutex::new(positions),
            compact_at_bytes: AtomicU64::new(0),
            compacting: AtomicBool::new(false),
            segment_bytes: store.config().internal_segment_bytes_max,
            batch_bytes_max: store.config().batch_bytes_max,
        };
        // A topic written before compaction existed, or grown since the
        // last compaction, is compacted now.
        let live_bytes = checkpoints.live_bytes();
        checkpoints
            .compact_at_bytes
            .store(checkpoints.compaction_step(live_bytes), Ordering::Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        checkpoints.compact_if_due(now_ms)?;
        Ok(checkpoints)
    }

    /// Appends the positions and makes them visible; returns the offset
    /// after the record, which the caller waits on for durability (so that
    /// commits are group-committed instead of each holding the lock through
    /// an fsync). Blocks for the append; call it off the async runtime.
    pub fn commit(
        &self,
        consumer: &str,
        topic: &str,
        entries: &[(u32, u64)],
        now_ms: i64,
    ) -> spool_log::Result<u64> {
        let key = encode_key(consumer, topic);
        let mut value = Vec::with_capacity(entries.len() * ENTRY_BYTES);
        for &(partition, offset) in entries {
            encode_entry(&mut value, partition, offset, now_ms);
        }
        let record = Record {
            key: Some(&key),
            value: Some(&value),
            headers: &[],
            timestamp_ms: Some(now_ms),
        };
        // The lock spans the append so that the log order of commits and
        // the in-memory order agree.
        let mut positions = self.positions.lock().expect("checkpoints lock");
        let outcome = self.partition.append(&[record], Durability::None)?;
        let entry = positions
            .entry((consumer.to_owned(), topic.to_owned()))
            .or_default();
        for &(partition, offset) in entries {
            entry.insert(
                partition,
                Position {
                    offset,
                    commit_time_ms: now_ms,
                },
            );
        }
        drop(positions);
        self.compact_if_due(now_ms)?;
        Ok(outcome.last_offset + 1)
    }

    /// Compacts if the partition has grown enough since the last time.
    /// Blocking (appends, waits for an fsync, deletes files).
    fn compact_if_due(&self, now_ms: i64) -> spool_log::Result<()> {
        if self.partition.info().size_bytes < self.compact_at_bytes.load(Ordering::Relaxed)
            || self.compacting.swap(true, Ordering::AcqRel)
        {
            return Ok(());
        }
        let result = self.compact(now_ms);
        self.compacting.store(false, Ordering::Release);
        result
    }

    /// Writes every position again at the end of the log and, once that is
    /// durable, deletes the segments wholly before it. `now_ms` stamps the
    /// records; each entry keeps its own commit time.
    pub fn compact(&self, now_ms: i64) -> spool_log::Result<()> {
        let (start, end, live_bytes) = {
            // Held across the appends so that no commit lands in the middle
            // with a position the rewrite would then overwrite with an older
            // one.
            let positions = self.positions.lock().expect("checkpoints lock");
            let start = self.partition.high_watermark();
            let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let mut batch_bytes = 0;
            let mut live_bytes = 0;
            for ((consumer, topic), partitions) in positions.iter() {
                let key = encode_key(consumer, topic);
                let entries: Vec<(&u32, &Position)> = partitions.iter().collect();
                for chunk in entries.chunks(ENTRIES_PER_RECORD_MAX) {
                    let mut value = Vec::with_capacity(chunk.len() * ENTRY_BYTES);
                    for &(&partition, position) in chunk {
                        encode_entry(&mut value, partition, position.offset, position.commit_time_ms);
                    }
                    let bytes = (key.len() + value.len()) as u64 + RECORD_OVERHEAD_BYTES;
                    if batch_bytes + bytes > self.batch_bytes_max / 2 {
                        self.append_all(&records, now_ms)?;
                        records.clear();
                        batch_bytes = 0;
                    }
                    batch_bytes += bytes;
                    live_bytes += bytes;
                    records.push((key.clone(), value));
                }
            }
            self.append_all(&records, now_ms)?;
            (start, self.partition.high_watermark(), live_bytes)
        };
        self.partition.wait_durable_blocking(end)?;
        let deleted = self.partition.delete_segments_below(start)?;
        let size_bytes = self.partition.info().size_bytes;
        self.compact_at_bytes
            .store(size_bytes + self.compaction_step(live_bytes), Ordering::Relaxed);
        tracing::info!(
            live_bytes,
            deleted_segments = deleted,
            size_bytes,
            log_start_offset = self.partition.log_start_offset(),
            "checkpoints compacted"
        );
        Ok(())
    }

    fn append_all(&self, records: &[(Vec<u8>, Vec<u8>)], now_ms: i64) -> spool_log::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let records: Vec<Record<'_>> = records
            .iter()
            .map(|(key, value)| Record {
                key: Some(key),
                value: Some(value),
                headers: &[],
                timestamp_ms: Some(now_ms),
            })
            .collect();
        self.partition.append(&records, Durability::None)?;
        Ok(())
    }

    /// How much the partition grows between compactions: a segment, or a
    /// rewrite of every position if that is larger, so a compaction always
    /// has whole segments to delete and costs at most one byte rewritten
    /// per byte committed.
    fn compaction_step(&self, live_bytes: u64) -> u64 {
        self.segment_bytes.max(live_bytes)
    }

    /// About what a rewrite of every position takes.
    fn live_bytes(&self) -> u64 {
        let positions = self.positions.lock().expect("checkpoints lock");
        positions
            .iter()
            .map(|((consumer, topic), partitions)| {
                let records = partitions.len().div_ceil(ENTRIES_PER_RECORD_MAX).max(1) as u64;
                let key = (consumer.len() + topic.len() + 1) as u64;
                records * (key + RECORD_OVERHEAD_BYTES) + (partitions.len() * ENTRY_BYTES) as u64
            })
            .sum()
    }

    /// The internal partition the checkpoints are stored in.
    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// Every stored position: (consumer, topic, positions by partition),
    /// sorted by consumer and topic.
    pub fn all(&self) -> Vec<(String, String, BTreeMap<u32, Position>)> {
        let positions = self.positions.lock().expect("checkpoints lock");
        let mut all: Vec<_> = positions
            .iter()
            .map(|((consumer, topic), partitions)| (consumer.clone(), topic.clone(), partitions.clone()))
            .collect();
        drop(positions);
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    /// Positions of `consumer` in `topic`, by partition.
    pub fn get(&self, consumer: &str, topic: &str) -> BTreeMap<u32, Position> {
        self.positions
            .lock()
            .expect("checkpoints lock")
            .get(&(consumer.to_owned(), topic.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_segments() -> spool_log::StoreConfig {
        spool_log::StoreConfig {
            internal_segment_bytes_max: 64 << 10,
            batch_bytes_max: 64 << 10,
            record_bytes_max: 32 << 10,
            preallocate_bytes: 64 << 10,
            checkpoint_interval_ms: 0,
            ..spool_log::StoreConfig::default()
        }
    }

    /// Every commit of `rounds` rounds: 4 consumers x 3 topics, each
    /// committing its 5 partitions; returns what the last round stored.
    fn commit_rounds(
        checkpoints: &Checkpoints,
        rounds: u64,
    ) -> Vec<(String, String, BTreeMap<u32, Position>)> {
        for round in 0..rounds {
            for consumer in 0..4 {
                for topic in 0..3 {
                    let entries: Vec<(u32, u64)> = (0..5).map(|p| (p, round * 10 + p as u64)).collect();
                    checkpoints
                        .commit(
                            &format!("consumer-{consumer}"),
                            &format!("topic-{topic}"),
                            &entries,
                            1_000 + round as i64,
                        )
                        .unwrap();
                }
            }
        }
        checkpoints.all()
    }

    #[test]
    fn compaction_keeps_the_topic_bounded_and_every_latest_position() {
        let dir = tempfile::tempdir().unwrap();
        let expected;
        {
            let (store, _) = Store::open(dir.path(), small_segments()).unwrap();
            let checkpoints = Checkpoints::open(&store).unwrap();
            let mut sizes = Vec::new();
            for _ in 0..10 {
                commit_rounds(&checkpoints, 300);
                sizes.push(checkpoints.partition().info().size_bytes);
            }
            expected = checkpoints.all();
            // 36,000 commits of about 170 bytes: 6 MB appended, yet the
            // topic stays within a few segments.
            assert!(checkpoints.partition().stats().appended_bytes > 5 << 20);
            assert!(sizes.iter().all(|&size| size <= 4 * (64 << 10)), "{sizes:?}");
            assert!(checkpoints.partition().log_start_offset() > 0);
            // A crash, not a clean close: the compacted log replays whole.
            store.simulate_crash();
        }
        let (store, _) = Store::open(dir.path(), small_segments()).unwrap();
        let checkpoints = Checkpoints::open(&store).unwrap();
        assert_eq!(checkpoints.all(), expected);
        assert_eq!(
            checkpoints.get("consumer-3", "topic-2")[&4],
            Position {
                offset: 2_994,
                commit_time_ms: 1_299
            }
        );
    }

    #[test]
    fn a_topic_grown_before_compaction_is_compacted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let expected;
        {
            // Segments of 64 MiB: 2 MB of commits never call for compaction.
            let (store, _) = Store::open(dir.path(), spool_log::StoreConfig::default()).unwrap();
            let checkpoints = Checkpoints::open(&store).unwrap();
            expected = commit_rounds(&checkpoints, 1_000);
            assert_eq!(checkpoints.partition().log_start_offset(), 0);
        }
        let (store, _) = Store::open(dir.path(), small_segments()).unwrap();
        let checkpoints = Checkpoints::open(&store).unwrap();
        assert_eq!(checkpoints.all(), expected);
        // The rewrite did not fit the old active segment under the new
        // size, so it rolled, and the old segment went at once.
        assert!(checkpoints.partition().log_start_offset() > 0);
        assert!(checkpoints.partition().info().size_bytes < 64 << 10);
        drop(checkpoints);
        drop(store);
        let (store, _) = Store::open(dir.path(), small_segments()).unwrap();
        assert_eq!(Checkpoints::open(&store).unwrap().all(), expected);
    }

    #[test]
    fn commits_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Store::open(dir.path(), spool_log::StoreConfig::default()).unwrap();
            let checkpoints = Checkpoints::open(&store).unwrap();
            checkpoints
                .commit("c1", "orders", &[(0, 10), (1, 20)], 5)
                .unwrap();
            checkpoints.commit("c1", "orders", &[(1, 25)], 6).unwrap();
            checkpoints.commit("c2", "orders", &[(0, 1)], 7).unwrap();
            store.close().unwrap();
        }
        let (store, _) = Store::open(dir.path(), spool_log::StoreConfig::default()).unwrap();
        let checkpoints = Checkpoints::open(&store).unwrap();
        let c1 = checkpoints.get("c1", "orders");
        assert_eq!(c1[&0].offset, 10);
        assert_eq!(
            c1[&1],
            Position {
                offset: 25,
                commit_time_ms: 6
            }
        );
        assert_eq!(checkpoints.get("c2", "orders")[&0].offset, 1);
        assert!(checkpoints.get("c3", "orders").is_empty());
        let all = checkpoints.all();
        let names: Vec<(&str, &str, usize)> = all
            .iter()
            .map(|(consumer, topic, partitions)| (consumer.as_str(), topic.as_str(), partitions.len()))
            .collect();
        assert_eq!(names, [("c1", "orders", 2), ("c2", "orders", 1)]);
    }
}
