//! Restarting a partition's log at an offset (`Partition::restart_at`), as
//! a Raft follower does when it installs a snapshot: the new log, its
//! offsets and terms, reads below its start, appends after it, reopening
//! and crashing, a crash after every step of the restart, and a partition
//! whose first segment starts past offset 0 after retention.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use spool_log::batch::{self, BatchLimits, ProducerFields};
use spool_log::producers::SequenceCheck;
use spool_log::{Durability, Error, FaultInjector, Partition, Record, Store, StoreConfig, TopicConfig};

fn config(faults: Option<Arc<FaultInjector>>) -> StoreConfig {
    StoreConfig {
        preallocate_bytes: 16 * 1024,
        index_interval_bytes: 256,
        checkpoint_interval_ms: 0,
        retention_check_interval_ms: 0,
        faults,
        ..StoreConfig::default()
    }
}

fn open_with(dir: &Path, faults: Option<Arc<FaultInjector>>) -> (Store, Partition) {
    let (store, _) = Store::open(dir, config(faults)).unwrap();
    let partition = match store.partition("r", 0) {
        Ok(partition) => partition,
        Err(_) => store
            .create_topic(
                "r",
                TopicConfig {
                    partitions: 1,
                    segment_bytes_max: 4096,
                    retention_ms: None,
                    ..TopicConfig::default()
                },
            )
            .unwrap()
            .partitions()[0]
            .clone(),
    };
    (store, partition)
}

fn open(dir: &Path) -> (Store, Partition) {
    open_with(dir, None)
}

fn partition_dir(dir: &Path) -> PathBuf {
    dir.join("topics/r/0")
}

fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset:05}-{}", "v".repeat((offset % 29) as usize)).into_bytes()
}

/// Appends a batch of `count` records in `term`; returns its base offset.
fn append(partition: &Partition, count: u64, term: u64) -> u64 {
    let base = partition.high_watermark();
    let values: Vec<_> = (base..base + count).map(value).collect();
    let records: Vec<_> = values.iter().map(|v| Record::value(v)).collect();
    let outcome = partition
        .append_in_term(&records, term, Durability::None)
        .unwrap();
    assert_eq!(outcome.base_offset, base);
    base
}

/// Enough batches in `term` to fill several 4 KiB segments.
fn fill(partition: &Partition, term: u64) {
    for i in 0..60 {
        append(partition, 1 + i % 4, term);
    }
}

/// Every record from the log start to the high watermark, checked against
/// `value`, as offsets.
fn offsets(partition: &Partition) -> Vec<u64> {
    let mut out = Vec::new();
    partition
        .scan(0, |_, record| {
            assert_eq!(record.value.unwrap(), &value(record.offset)[..]);
            out.push(record.offset);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    out
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(partition_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// The partition is the empty log restarted at `start` in `term`, plus
/// `then` records appended after it.
fn assert_restarted(partition: &Partition, start: u64, term: u64, then: u64) {
    assert_eq!(partition.log_start_offset(), start);
    assert_eq!(partition.high_watermark(), start + then);
    assert_eq!(offsets(partition), (start..start + then).collect::<Vec<_>>());
    if then == 0 {
        assert_eq!(partition.last_term(), term);
        assert_eq!(partition.term_at(start), None);
    }
    if start > 0 {
        let error = partition.read(start - 1, 1024).unwrap_err();
        assert!(
            matches!(error, Error::OffsetOutOfRange { requested, earliest, .. } if requested == start - 1 && earliest == start),
            "{error:?}"
        );
        assert_eq!(partition.term_at(start - 1), None);
    }
}

#[test]
fn a_restart_past_the_end_starts_an_empty_log_there_that_survives_reopen_and_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    fill(&partition, 2);
    let old_end = partition.high_watermark();
    partition.set_committed(0).unwrap();
    let start = old_end + 1000;
    partition.restart_at(start, 3).unwrap();
    assert_restarted(&partition, start, 3, 0);
    assert_eq!(partition.committed_offset(), start);
    assert_eq!(partition.durable_offset(), start);
    assert_eq!(partition.info().segment_count, 1);
    assert_eq!(segment_files(dir.path()), [format!("{start:020}.log")]);
    assert!(partition.read(start, 1024).unwrap().batches.is_empty());

    // An append in an older term than the restart's is refused.
    let error = partition
        .append_in_term(&[Record::value(b"x")], 2, Durability::None)
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::TermRegression {
                term: 2,
                last_term: 3
            }
        ),
        "{error:?}"
    );
    append(&partition, 3, 3);
    append(&partition, 2, 4);
    assert_restarted(&partition, start, 3, 5);
    assert_eq!(partition.term_at(start), Some(3));
    assert_eq!(partition.term_at(start + 3), Some(4));
    partition.flush().unwrap();

    store.close().unwrap();
    let (store, partition) = open(dir.path());
    assert_restarted(&partition, start, 3, 5);
    assert_eq!(
        partition.committed_offset(),
        start,
        "the committed offset starts at the log start"
    );
    append(&partition, 1, 4);
    partition.flush().unwrap();
    store.simulate_crash();

    let (_store, partition) = open(dir.path());
    assert_restarted(&partition, start, 3, 6);
    assert_eq!(partition.term_at(start + 5), Some(4));
}

#[test]
fn a_restart_inside_the_log_keeps_nothing_and_is_refused_below_the_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    fill(&partition, 1);
    let end = partition.high_watermark();
    partition.flush().unwrap();
    partition.set_committed(20).unwrap();
    let error = partition.restart_at(19, 2).unwrap_err();
    assert!(
        matches!(
            error,
            Error::RestartBelowCommitted {
                requested: 19,
                committed: 20
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        partition.high_watermark(),
        end,
        "a refused restart changes nothing"
    );
    assert!(!partition.is_poisoned());

    // A restart in the middle of a batch is fine: nothing is kept.
    partition.restart_at(21, 2).unwrap();
    assert_restarted(&partition, 21, 2, 0);
    append(&partition, 2, 2);
    assert_restarted(&partition, 21, 2, 2);
    store.simulate_crash();
    let (_store, partition) = open(dir.path());
    assert_restarted(&partition, 21, 2, 2);
}

#[test]
fn a_restart_in_term_zero_leaves_no_term_list() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    fill(&partition, 0);
    partition.restart_at(500, 0).unwrap();
    assert_restarted(&partition, 500, 0, 0);
    assert!(partition.term_starts().is_empty());
    assert!(!partition_dir(dir.path()).join("leader-epochs").exists());
    partition
        .append(&[Record::value(&value(500))], Durability::Fsync)
        .unwrap();
    store.close().unwrap();
    let (_store, partition) = open(dir.path());
    assert_restarted(&partition, 500, 0, 1);
}

#[test]
fn a_reader_holding_batches_of_the_old_log_keeps_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, partition) = open(dir.path());
    fill(&partition, 1);
    let held = partition.read(0, 1 << 20).unwrap().batches;
    let copies: Vec<Vec<u8>> = held.iter().map(|b| b.bytes().to_vec()).collect();
    partition.restart_at(partition.high_watermark(), 1).unwrap();
    fill(&partition, 1);
    for (batch, copy) in held.iter().zip(&copies) {
        assert_eq!(&batch.bytes()[..], &copy[..]);
    }
}

#[test]
fn a_crash_after_any_restart_step_opens_the_old_log_or_the_new_one() {
    // Step 0: a crash while `log-restart` was being written leaves its
    // temporary file only.
    for step in 0..=5 {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(FaultInjector::default());
        let (store, partition) = open_with(dir.path(), Some(Arc::clone(&faults)));
        fill(&partition, 1);
        store.checkpoint().unwrap();
        append(&partition, 2, 1);
        partition.flush().unwrap();
        let old = offsets(&partition);
        let start = partition.high_watermark() + 7;
        if step == 0 {
            std::fs::write(partition_dir(dir.path()).join("log-restart.tmp"), b"SPLR torn").unwrap();
        } else {
            faults.set_restart_crash_step(step);
            let error = partition.restart_at(start, 4).unwrap_err();
            assert!(
                matches!(error, Error::Io { op: "restart", .. }),
                "step {step}: {error:?}"
            );
            assert!(partition.is_poisoned());
            faults.set_restart_crash_step(0);
        }
        store.simulate_crash();

        let (store, partition) = open_with(dir.path(), Some(Arc::clone(&faults)));
        if step == 0 {
            assert_eq!(offsets(&partition), old, "step {step}: the old log");
            assert_eq!(partition.last_term(), 1);
            partition.restart_at(start, 4).unwrap();
        }
        assert_restarted(&partition, start, 4, 0);
        assert!(
            !partition_dir(dir.path()).join("log-restart").exists(),
            "step {step}"
        );
        assert_eq!(
            segment_files(dir.path()),
            [format!("{start:020}.log")],
            "step {step}"
        );
        append(&partition, 3, 4);
        partition.flush().unwrap();
        store.simulate_crash();
        let (_store, partition) = open(dir.path());
        assert_restarted(&partition, start, 4, 3);
    }
}

#[test]
fn a_damaged_restart_file_is_an_error_at_open_not_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    fill(&partition, 1);
    store.close().unwrap();
    std::fs::write(partition_dir(dir.path()).join("log-restart"), [0u8; 28]).unwrap();
    let Err(error) = Store::open(dir.path(), config(None)) else {
        panic!("a damaged log-restart was accepted");
    };
    assert!(format!("{error}").contains("log-restart"), "{error}");
}

#[test]
fn a_log_whose_first_segment_starts_past_zero_recovers_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    fill(&partition, 1);
    let end = partition.high_watermark();
    partition.flush().unwrap();
    assert!(partition.delete_segments_below(end / 2).unwrap() > 0);
    let start = partition.log_start_offset();
    assert!(start > 0);
    append(&partition, 2, 2);
    store.simulate_crash();

    let (store, partition) = open(dir.path());
    assert_eq!(partition.log_start_offset(), start);
    let recovered = partition.high_watermark();
    assert!(recovered >= end, "the flushed records survive");
    assert_eq!(offsets(&partition), (start..recovered).collect::<Vec<_>>());
    let error = partition.read(start - 1, 100).unwrap_err();
    assert!(
        matches!(error, Error::OffsetOutOfRange { earliest, .. } if earliest == start),
        "{error:?}"
    );
    append(&partition, 3, 2);
    assert_eq!(partition.term_at(recovered), Some(2));
    store.close().unwrap();

    let (_store, partition) = open(dir.path());
    assert_eq!(partition.log_start_offset(), start);
    assert_eq!(offsets(&partition), (start..recovered + 3).collect::<Vec<_>>());
}

/// A batch of one record from producer `id` (epoch 0) with `sequence`.
fn producer_batch(id: i64, sequence: i32) -> Vec<u8> {
    let value = format!("{id}-{sequence}");
    let limits = BatchLimits {
        record_bytes_max: 1 << 20,
        batch_bytes_max: 1 << 20,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut bytes = batch::encode_to_vec(&[Record::value(value.as_bytes())], now, limits).unwrap();
    batch::stamp_producer(
        &mut bytes,
        ProducerFields {
            producer_id: id,
            producer_epoch: 0,
            base_sequence: sequence,
        },
    );
    bytes
}

fn fields(id: i64, sequence: i32) -> ProducerFields {
    ProducerFields {
        producer_id: id,
        producer_epoch: 0,
        base_sequence: sequence,
    }
}

#[test]
fn a_restart_with_a_producer_table_keeps_the_producers_below_the_new_start() {
    // The log the restart comes from: producer 7's batches 0 to 3, then
    // producer 8's first batch past the snapshot's offset.
    let source_dir = tempfile::tempdir().unwrap();
    let (_source_store, source) = open(source_dir.path());
    for sequence in 0..4 {
        source
            .append_encoded(&producer_batch(7, sequence), Durability::None)
            .unwrap();
    }
    let start = source.high_watermark();
    source
        .append_encoded(&producer_batch(8, 0), Durability::None)
        .unwrap();
    let table = source.producer_snapshot_below(start);

    let faults = Arc::new(FaultInjector::default());
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open_with(dir.path(), Some(Arc::clone(&faults)));
    fill(&partition, 1);
    let error = partition
        .restart_at_with_producers(start, 1, b"not a table")
        .unwrap_err();
    assert!(matches!(error, Error::BadProducerTable { .. }), "{error:?}");
    assert!(
        partition.high_watermark() > 0,
        "a refused restart changes nothing"
    );

    // A crash after the old files went: the open finishes the restart,
    // producer table included.
    faults.set_restart_crash_step(2);
    partition.restart_at_with_producers(start, 1, &table).unwrap_err();
    faults.set_restart_crash_step(0);
    store.simulate_crash();
    let (_store, partition) = open(dir.path());
    assert_restarted(&partition, start, 1, 0);
    assert_eq!(partition.producer_entry(7), source.producer_entry(7));
    assert_eq!(
        partition.producer_entry(8),
        None,
        "producer 8's batch is past the start"
    );
    // A retry of a batch below the start is a duplicate, not a new batch;
    // the producer goes on from its last sequence.
    assert!(matches!(
        partition.check_producer(fields(7, 0), 1).unwrap(),
        SequenceCheck::Duplicate(original) if original.base_offset == 0
    ));
    assert!(matches!(
        partition.check_producer(fields(7, 4), 1).unwrap(),
        SequenceCheck::Append
    ));
    assert!(partition.check_producer(fields(7, 6), 1).is_err());
}
