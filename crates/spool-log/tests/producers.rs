//! The idempotent producer through the public API: duplicates answered
//! with the original offsets, gaps and stale epochs refused, and the
//! producer table rebuilt after a restart, a crash, a roll (from the
//! snapshot file) and a truncation.

use std::path::Path;

use proptest::prelude::*;
use spool_log::batch::{self, BatchLimits, ProducerFields};
use spool_log::{Durability, Error, Partition, Record, Store, StoreConfig, TopicConfig};

const LIMITS: BatchLimits = BatchLimits {
    record_bytes_max: 1 << 20,
    batch_bytes_max: 1 << 20,
};

fn config() -> StoreConfig {
    StoreConfig {
        preallocate_bytes: 16 * 1024,
        index_interval_bytes: 256,
        checkpoint_interval_ms: 0,
        retention_check_interval_ms: 0,
        ..StoreConfig::default()
    }
}

fn open(dir: &Path) -> (Store, Partition) {
    let (store, _) = Store::open(dir, config()).unwrap();
    let partition = match store.partition("p", 0) {
        Ok(partition) => partition,
        Err(_) => {
            let topic = TopicConfig {
                partitions: 1,
                segment_bytes_max: 4096,
                retention_ms: None,
                ..TopicConfig::default()
            };
            store.create_topic("p", topic).unwrap().partitions()[0].clone()
        }
    };
    (store, partition)
}

/// A batch of `count` records from producer `id`, numbered from `sequence`.
fn batch(id: i64, epoch: i16, sequence: i32, count: u32) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..count)
        .map(|n| format!("{id}-{epoch}-{}", i64::from(sequence) + i64::from(n)).into_bytes())
        .collect();
    let records: Vec<_> = values.iter().map(|v| Record::value(v)).collect();
    let mut bytes = batch::encode_to_vec(&records, now_ms(), LIMITS).unwrap();
    batch::stamp_producer(
        &mut bytes,
        ProducerFields {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: sequence,
        },
    );
    bytes
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn append(partition: &Partition, bytes: &[u8]) -> spool_log::Result<spool_log::AppendOutcome> {
    partition.append_encoded(bytes, Durability::None)
}

#[test]
fn a_retried_batch_is_answered_with_the_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, partition) = open(dir.path());
    partition
        .append(&[Record::value(b"plain")], Durability::None)
        .unwrap();
    let first = append(&partition, &batch(9, 0, 0, 3)).unwrap();
    assert_eq!(
        (first.base_offset, first.last_offset, first.duplicate),
        (1, 3, false)
    );
    let again = append(&partition, &batch(9, 0, 0, 3)).unwrap();
    assert_eq!(
        (again.base_offset, again.last_offset, again.duplicate),
        (1, 3, true)
    );
    assert_eq!(partition.high_watermark(), 4, "nothing was appended twice");
    let next = append(&partition, &batch(9, 0, 3, 1)).unwrap();
    assert_eq!((next.base_offset, next.duplicate), (4, false));
}

#[test]
fn gaps_unknown_producers_and_old_epochs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, partition) = open(dir.path());
    let error = append(&partition, &batch(5, 0, 4, 1)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::UnknownProducer {
                producer_id: 5,
                base_sequence: 4
            }
        ),
        "{error}"
    );
    append(&partition, &batch(5, 0, 0, 2)).unwrap();
    let error = append(&partition, &batch(5, 0, 3, 1)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "out of order sequence: producer 5 must send base sequence 2 next, got 3"
    );
    append(&partition, &batch(5, 1, 0, 1)).unwrap();
    let error = append(&partition, &batch(5, 0, 2, 1)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::ProducerFenced {
                epoch: 0,
                current_epoch: 1,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(partition.high_watermark(), 3);
}

#[test]
fn the_table_survives_a_restart_a_crash_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    // Producer 1's last batch ends up several segments back (4 KiB
    // segments): only the snapshot written at a roll remembers it.
    append(&partition, &batch(1, 0, 0, 2)).unwrap();
    for sequence in 0..200 {
        append(&partition, &batch(2, 0, sequence, 1)).unwrap();
    }
    assert!(partition.info().segment_count > 3);
    store.close().unwrap();

    let (store, partition) = open(dir.path());
    let outcome = append(&partition, &batch(1, 0, 0, 2)).unwrap();
    assert_eq!((outcome.base_offset, outcome.duplicate), (0, true));
    let outcome = append(&partition, &batch(2, 0, 199, 1)).unwrap();
    assert!(outcome.duplicate);
    append(&partition, &batch(2, 0, 200, 1)).unwrap();
    store.simulate_crash();
    drop(partition);
    drop(store);

    let (_store, partition) = open(dir.path());
    let outcome = append(&partition, &batch(2, 0, 200, 1)).unwrap();
    assert!(
        outcome.duplicate,
        "the crash kept the last batch and its producer"
    );
    assert_eq!(partition.producer_count(), 2);
}

#[test]
fn truncation_rolls_the_table_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, partition) = open(dir.path());
    for sequence in 0..100 {
        append(&partition, &batch(3, 0, sequence, 1)).unwrap();
    }
    append(&partition, &batch(4, 0, 0, 1)).unwrap();
    partition.truncate_suffix(50, 0).unwrap();
    assert!(partition.producer_entry(4).is_none());
    let entry = partition.producer_entry(3).unwrap();
    assert_eq!(entry.next_sequence(), 50);
    let outcome = append(&partition, &batch(3, 0, 49, 1)).unwrap();
    assert_eq!((outcome.base_offset, outcome.duplicate), (49, true));
    let outcome = append(&partition, &batch(3, 0, 50, 1)).unwrap();
    assert_eq!((outcome.base_offset, outcome.duplicate), (50, false));
}

#[test]
fn replicated_batches_feed_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_leader_store, leader) = open(&dir.path().join("leader"));
    let (_follower_store, follower) = open(&dir.path().join("follower"));
    for sequence in 0..3 {
        append(&leader, &batch(8, 0, sequence * 2, 2)).unwrap();
    }
    let read = leader.read(0, 1 << 20).unwrap();
    let batches: Vec<_> = read.batches.iter().map(|b| b.bytes().clone()).collect();
    follower.append_replicated(&batches, 0, Durability::None).unwrap();
    assert_eq!(follower.producer_entry(8), leader.producer_entry(8));
    let outcome = append(&follower, &batch(8, 0, 2, 2)).unwrap();
    assert_eq!((outcome.base_offset, outcome.duplicate), (2, true));
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// Producer `id` sends its next batch of `count` records.
    Send {
        id: i64,
        count: u32,
    },
    /// Producer `id` sends one of its last five batches again.
    Retry {
        id: i64,
        back: usize,
    },
    Reopen,
    Crash,
    /// Truncate at the start of the `back`-th last batch.
    Truncate {
        back: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..3, 1u32..4).prop_map(|(id, count)| Op::Send { id, count }),
        3 => (0i64..3, 0usize..5).prop_map(|(id, back)| Op::Retry { id, back }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => (0usize..4).prop_map(|back| Op::Truncate { back }),
    ]
}

/// A batch as the model knows it: its producer, sequence, count and offset.
#[derive(Debug, Clone, Copy)]
struct Sent {
    id: i64,
    sequence: i32,
    count: u32,
    base_offset: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Against a plain list of appended batches: a retry of one of a
    /// producer's last five is a duplicate at the original offsets, a new
    /// batch lands at the high watermark, and reopening, crashing and
    /// truncating keep the table equal to what the list implies.
    #[test]
    fn the_table_follows_the_log(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut partition) = open(dir.path());
        let mut log: Vec<Sent> = Vec::new();
        for op in ops {
            match op {
                Op::Send { id, count } => {
                    let sequence = log.iter().rev().find(|s| s.id == id).map_or(0, |s| s.sequence + s.count as i32);
                    let outcome = append(&partition, &batch(id, 0, sequence, count)).unwrap();
                    prop_assert!(!outcome.duplicate);
                    prop_assert_eq!(outcome.base_offset, log.last().map_or(0, |s| s.base_offset + u64::from(s.count)));
                    log.push(Sent { id, sequence, count, base_offset: outcome.base_offset });
                }
                Op::Retry { id, back } => {
                    let mine: Vec<_> = log.iter().filter(|s| s.id == id).rev().take(5).collect();
                    let Some(sent) = mine.get(back) else { continue };
                    let outcome = append(&partition, &batch(id, 0, sent.sequence, sent.count)).unwrap();
                    prop_assert!(outcome.duplicate);
                    prop_assert_eq!(outcome.base_offset, sent.base_offset);
                }
                Op::Reopen | Op::Crash => {
                    if matches!(op, Op::Crash) { store.simulate_crash() } else { store.close().unwrap() }
                    drop(partition);
                    drop(store);
                    (store, partition) = open(dir.path());
                }
                Op::Truncate { back } => {
                    if back >= log.len() { continue }
                    let at = log.len() - 1 - back;
                    partition.truncate_suffix(log[at].base_offset, 0).unwrap();
                    log.truncate(at);
                }
            }
            prop_assert_eq!(partition.high_watermark(), log.last().map_or(0, |s| s.base_offset + u64::from(s.count)));
        }
    }
}
