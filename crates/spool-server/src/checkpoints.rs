//! Named consumer positions, stored as records in the internal topic
//! `__checkpoints` and held in memory for reads.
//!
//! Each commit appends one record: key `consumer \n topic`, value a run of
//! 20-byte little-endian entries (partition u32, offset u64, commit time
//! i64 ms). At start the topic is replayed from the beginning; the latest
//! entry for each (consumer, topic, partition) wins. Checkpoints are a
//! convenience: nothing in the server requires a consumer to use them.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Mutex;

use spool_log::{Durability, Partition, Record, Store};

pub const TOPIC: &str = "__checkpoints";
const ENTRY_BYTES: usize = 20;

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
}

fn encode_key(consumer: &str, topic: &str) -> Vec<u8> {
    format!("{consumer}\n{topic}").into_bytes()
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
        Ok(Checkpoints {
            partition,
            positions: Mutex::new(positions),
        })
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
            value.extend_from_slice(&partition.to_le_bytes());
            value.extend_from_slice(&offset.to_le_bytes());
            value.extend_from_slice(&now_ms.to_le_bytes());
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
        Ok(outcome.last_offset + 1)
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
