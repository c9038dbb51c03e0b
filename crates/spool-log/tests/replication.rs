//! The storage primitives a replicated partition needs, through the public
//! API: terms per offset, appends of batches encoded by a leader, suffix
//! truncation, the vote file and the committed offset. Each bad input gets
//! a typed error and leaves the partition as it was.

use std::fs;
use std::future::Future;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use spool_log::batch::{self, BatchHeader, BatchLimits, field};
use spool_log::{
    Durability, Error, FaultInjector, Partition, Record, Store, StoreConfig, TermStart, TopicConfig, Vote,
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

fn topic_config(segment_bytes_max: u64) -> TopicConfig {
    TopicConfig {
        partitions: 1,
        segment_bytes_max,
        retention_ms: None,
        ..TopicConfig::default()
    }
}

fn open(dir: &Path) -> (Store, Partition) {
    open_with(dir, None)
}

fn open_with(dir: &Path, faults: Option<Arc<FaultInjector>>) -> (Store, Partition) {
    let (store, _) = Store::open(dir, StoreConfig { faults, ..config() }).unwrap();
    let partition = match store.partition("r", 0) {
        Ok(partition) => partition,
        Err(_) => store.create_topic("r", topic_config(4096)).unwrap().partitions()[0].clone(),
    };
    (store, partition)
}

fn partition_dir(dir: &Path) -> PathBuf {
    dir.join("topics/r/0")
}

fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset:05}-{}", "v".repeat((offset % 29) as usize)).into_bytes()
}

/// Appends a batch of `count` records in `term` and returns its base offset.
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

/// Every record from the log start to the high watermark as (offset, value).
fn records(partition: &Partition) -> Records {
    let mut out = Vec::new();
    partition
        .scan(0, |_, record| {
            out.push((record.offset, record.value.unwrap().to_vec()));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    out
}

fn terms(partition: &Partition) -> Terms {
    (0..partition.high_watermark() + 1)
        .map(|offset| partition.term_at(offset))
        .collect()
}

/// Every batch header of the partition's log files, in offset order.
fn headers(dir: &Path) -> Vec<BatchHeader> {
    let mut logs: Vec<_> = fs::read_dir(partition_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let mut out = Vec::new();
    for log in logs {
        let bytes = fs::read(log).unwrap();
        let mut at = 0;
        while let Ok(header) = BatchHeader::parse(&bytes[at.min(bytes.len())..]) {
            at += header.total_bytes();
            out.push(header);
        }
    }
    out
}

#[test]
fn single_node_appends_write_no_term_list_and_stay_in_term_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    let v = value(0);
    partition.append(&[Record::value(&v)], Durability::Fsync).unwrap();
    let encoded = batch::encode_to_vec(&[Record::value(&v)], 5, limits()).unwrap();
    partition.append_encoded(&encoded, Durability::None).unwrap();
    assert_eq!(terms(&partition), [Some(0), Some(0), None]);
    assert_eq!(partition.last_term(), 0);
    assert!(partition.term_starts().is_empty());
    store.close().unwrap();
    assert!(!partition_dir(dir.path()).join("leader-epochs").exists());
    assert!(headers(dir.path()).iter().all(|h| h.leader_epoch == 0));
}

fn limits() -> BatchLimits {
    BatchLimits {
        record_bytes_max: 1 << 20,
        batch_bytes_max: 8 << 20,
    }
}

#[test]
fn terms_are_kept_per_offset_stamped_into_headers_and_survive_reopen_and_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    append(&partition, 2, 0);
    append(&partition, 3, 2);
    append(&partition, 1, 2);
    let encoded = batch::encode_to_vec(&[Record::value(b"x")], 5, limits()).unwrap();
    partition
        .append_encoded_in_term(&encoded, 5, Durability::None)
        .unwrap();
    append(&partition, 2, 7);
    let expected = [0, 0, 2, 2, 2, 2, 5, 7, 7].map(Some).to_vec();
    let with_end = |mut v: Vec<Option<u64>>| {
        v.push(None);
        v
    };
    assert_eq!(terms(&partition), with_end(expected.clone()));
    assert_eq!(partition.last_term(), 7);
    assert_eq!(
        partition.term_starts(),
        [(2, 2), (5, 6), (7, 7)].map(|(term, start_offset)| TermStart { term, start_offset })
    );
    let epochs: Vec<_> = headers(dir.path()).iter().map(|h| h.leader_epoch).collect();
    assert_eq!(epochs, [0, 2, 2, 5, 7]);
    let read = partition.read(6, 1 << 20).unwrap();
    assert_eq!(read.batches[0].header().leader_epoch, 5);

    store.close().unwrap();
    let (store, partition) = open(dir.path());
    assert_eq!(terms(&partition), with_end(expected.clone()));
    partition.flush().unwrap();
    store.simulate_crash();
    let (_store, partition) = open(dir.path());
    assert_eq!(terms(&partition), with_end(expected));
    assert_eq!(partition.last_term(), 7);
}

#[test]
fn batch_limits_cap_a_batch_at_the_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, partition) = open(dir.path());
    let limits = partition.batch_limits();
    assert_eq!(limits.batch_bytes_max, 4096, "the topic's segment_bytes_max");
    assert_eq!(limits.record_bytes_max, config().record_bytes_max);
    // A batch the limits refuse is one every append refuses.
    let big = vec![b'x'; 5000];
    let encoded = batch::encode_to_vec(
        &[Record::value(&big)],
        0,
        BatchLimits {
            batch_bytes_max: u64::MAX,
            record_bytes_max: u64::MAX,
        },
    )
    .unwrap();
    assert!(batch::validate_encoded(&encoded, limits).is_err());
    assert!(matches!(
        partition.append_replicated(&[&encoded], 1, Durability::None),
        Err(Error::LimitExceeded { .. } | Error::InvalidBatch { .. })
    ));
}

#[test]
fn an_older_term_or_one_past_the_header_field_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, partition) = open(dir.path());
    append(&partition, 2, 3);
    let before = fs::read(partition_dir(dir.path()).join("leader-epochs")).unwrap();
    let v = value(9);
    let records = [Record::value(&v)];
    for term in [2, 0] {
        let error = partition
            .append_in_term(&records, term, Durability::None)
            .unwrap_err();
        assert!(
            matches!(error, Error::TermRegression { term: t, last_term: 3 } if t == term),
            "{error:?}"
        );
    }
    // A plain append is an append in term 0: refused once terms are in use.
    assert!(matches!(
        partition.append(&records, Durability::None),
        Err(Error::TermRegression { .. })
    ));
    let error = partition
        .append_in_term(&records, i32::MAX as u64 + 1, Durability::None)
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::LimitExceeded {
                limit: "term_max",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(partition.high_watermark(), 2);
    assert!(!partition.is_poisoned());
    assert_eq!(
        fs::read(partition_dir(dir.path()).join("leader-epochs")).unwrap(),
        before
    );
    append(&partition, 1, i32::MAX as u64);
    assert_eq!(partition.term_at(2), Some(i32::MAX as u64));
}

#[test]
fn a_damaged_header_epoch_does_not_change_the_term_of_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    append(&partition, 2, 1);
    append(&partition, 2, 4);
    store.close().unwrap();
    let log = partition_dir(dir.path()).join(format!("{:020}.log", 0));
    let mut bytes = fs::read(&log).unwrap();
    let second = BatchHeader::parse(&bytes).unwrap().total_bytes();
    for at in [field::LEADER_EPOCH, second + field::LEADER_EPOCH] {
        bytes[at..at + 4].copy_from_slice(&99i32.to_le_bytes());
    }
    fs::write(&log, &bytes).unwrap();
    let (_store, partition) = open(dir.path());
    assert_eq!(terms(&partition), [Some(1), Some(1), Some(4), Some(4), None]);
    assert_eq!(records(&partition).len(), 4, "the epoch lies outside the CRC");
}

#[test]
fn a_term_list_entry_left_past_the_end_by_a_crash_describes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    append(&partition, 2, 1);
    partition.flush().unwrap();
    // Term 6 is recorded before its batch is written; the batch never
    // reaches the disk.
    append(&partition, 1, 6);
    store.simulate_crash();
    let log = partition_dir(dir.path()).join(format!("{:020}.log", 0));
    let bytes = fs::read(&log).unwrap();
    let first = BatchHeader::parse(&bytes).unwrap().total_bytes();
    fs::write(&log, &bytes[..first]).unwrap();
    let (_store, partition) = open(dir.path());
    assert_eq!(partition.high_watermark(), 2);
    assert_eq!(partition.last_term(), 1);
    assert_eq!(partition.term_at(1), Some(1));
    // An append in the old term must not be claimed by the stale entry.
    append(&partition, 1, 1);
    assert_eq!(terms(&partition), [Some(1), Some(1), Some(1), None]);
    assert_eq!(
        partition.term_starts(),
        [TermStart {
            term: 1,
            start_offset: 0
        }]
    );
}

/// The stored bytes of every batch from `from` on, in offset order.
fn stored_batches(partition: &Partition, from: u64) -> Vec<bytes::Bytes> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < partition.high_watermark() {
        let read = partition.read(offset, 1 << 20).unwrap();
        for batch in read.batches {
            if batch.base_offset() >= offset {
                out.push(batch.into_bytes());
            }
        }
        offset = read.next_offset;
    }
    out
}

/// Records as (offset, value).
type Records = Vec<(u64, Vec<u8>)>;

/// The term of every offset from 0 to the high watermark (which has none).
type Terms = Vec<Option<u64>>;

/// A digest of a partition's state: high watermark, records, terms and the
/// term list.
type State = (u64, Records, Terms, Vec<TermStart>);

fn state(partition: &Partition) -> State {
    (
        partition.high_watermark(),
        records(partition),
        terms(partition),
        partition.term_starts(),
    )
}

#[test]
fn a_follower_appends_the_leaders_batches_byte_for_byte() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_leader_store, leader) = open(leader_dir.path());
    let (follower_store, follower) = open(follower_dir.path());
    // Enough batches to roll the 4 KiB segments several times.
    let plan: [(u64, usize); 4] = [(0, 3), (1, 30), (3, 25), (4, 60)];
    for (term, batches) in plan {
        for i in 0..batches {
            append(&leader, 1 + i as u64 % 4, term);
        }
    }
    let all = stored_batches(&leader, 0);
    // Hand them over in runs of one term, several batches per call.
    let mut at = 0;
    for (term, batches) in plan {
        for chunk in all[at..at + batches].chunks(7) {
            let outcome = follower
                .append_replicated(chunk, term, Durability::Fsync)
                .unwrap();
            assert_eq!(outcome.durability, Durability::Fsync);
            assert_eq!(
                outcome.base_offset,
                BatchHeader::parse(&chunk[0]).unwrap().base_offset
            );
        }
        at += batches;
    }
    assert_eq!(follower.durable_offset(), leader.high_watermark());
    assert_eq!(stored_batches(&follower, 0), all);
    assert_eq!(state(&follower), state(&leader));
    assert!(follower.info().segment_count > 2, "{:?}", follower.info());
    follower_store.close().unwrap();
    let (_store, follower) = open(follower_dir.path());
    assert_eq!(stored_batches(&follower, 0), all);
    assert_eq!(state(&follower), state(&leader));
}

#[test]
fn bad_replicated_batches_are_refused_with_typed_errors_and_change_nothing() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_leader_store, leader) = open(leader_dir.path());
    let (_follower_store, follower) = open(follower_dir.path());
    for term in [2, 2, 3, 3, 3] {
        append(&leader, 2, term);
    }
    let all = stored_batches(&leader, 0);
    follower
        .append_replicated(&all[..2], 2, Durability::None)
        .unwrap();
    let before = state(&follower);
    let files_before = fs::read(partition_dir(follower_dir.path()).join("leader-epochs")).unwrap();

    let expect =
        |result: spool_log::Result<spool_log::AppendOutcome>, what: &str, check: &dyn Fn(&Error) -> bool| {
            let error = result.expect_err(what);
            assert!(check(&error), "{what}: {error:?}");
            assert_eq!(state(&follower), before, "{what} changed the partition");
            assert!(!follower.is_poisoned(), "{what}");
        };
    // A gap, an overlap, a hole inside the list.
    expect(
        follower.append_replicated(&all[3..4], 3, Durability::None),
        "gap",
        &|e| {
            matches!(
                e,
                Error::UnexpectedBaseOffset {
                    expected: 4,
                    found: 6
                }
            )
        },
    );
    expect(
        follower.append_replicated(&all[1..2], 2, Durability::None),
        "overlap",
        &|e| {
            matches!(
                e,
                Error::UnexpectedBaseOffset {
                    expected: 4,
                    found: 2
                }
            )
        },
    );
    expect(
        follower.append_replicated(&[all[2].clone(), all[4].clone()], 3, Durability::None),
        "hole",
        &|e| {
            matches!(
                e,
                Error::UnexpectedBaseOffset {
                    expected: 6,
                    found: 8
                }
            )
        },
    );
    // A flipped bit in a record, after a good first batch of the same call.
    let mut corrupt = all[3].to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    expect(
        follower.append_replicated(&[all[2].to_vec(), corrupt], 3, Durability::None),
        "corrupt CRC",
        &|e| {
            matches!(
                e,
                Error::InvalidBatch {
                    source: spool_log::FormatError::CrcMismatch { .. }
                }
            )
        },
    );
    // A truncated batch.
    expect(
        follower.append_replicated(&[&all[2][..all[2].len() - 3]], 3, Durability::None),
        "short batch",
        &|e| matches!(e, Error::InvalidBatch { .. }),
    );
    // The term handed in is not the header's, or is older than the log's.
    expect(
        follower.append_replicated(&all[2..3], 4, Durability::None),
        "epoch",
        &|e| {
            matches!(
                e,
                Error::BatchTermMismatch {
                    base_offset: 4,
                    header_epoch: 3,
                    term: 4
                }
            )
        },
    );
    let mut old_term = all[2].to_vec();
    batch::stamp_leader_epoch(&mut old_term, 1);
    expect(
        follower.append_replicated(&[old_term], 1, Durability::None),
        "older term",
        &|e| {
            matches!(
                e,
                Error::TermRegression {
                    term: 1,
                    last_term: 2
                }
            )
        },
    );
    expect(
        follower.append_replicated::<&[u8]>(&[], 3, Durability::None),
        "empty",
        &|e| matches!(e, Error::InvalidBatch { .. }),
    );
    assert_eq!(
        fs::read(partition_dir(follower_dir.path()).join("leader-epochs")).unwrap(),
        files_before
    );
    follower
        .append_replicated(&all[2..], 3, Durability::None)
        .unwrap();
    assert_eq!(state(&follower), state(&leader));
}

/// Appends batches of 1 to 4 records in the given terms, enough to fill
/// several 4 KiB segments; returns every batch's base offset.
fn fill(partition: &Partition, terms: &[u64]) -> Vec<u64> {
    let mut bases = Vec::new();
    for (i, &term) in terms.iter().enumerate() {
        for j in 0..12 {
            bases.push(append(partition, 1 + (i + j) as u64 % 4, term));
        }
    }
    bases
}

/// The state of `old` cut at `from`.
fn cut(old: &State, from: u64) -> (Records, Terms) {
    let records = old.1.iter().filter(|(o, _)| *o < from).cloned().collect();
    let mut terms: Vec<_> = old.2[..from as usize].to_vec();
    terms.push(None);
    (records, terms)
}

#[test]
fn truncation_removes_the_suffix_durably_in_any_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    let bases = fill(&partition, &[1, 2, 3, 4, 5, 6]);
    let segment_bases: Vec<u64> = fs::read_dir(partition_dir(dir.path()))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    assert!(segment_bases.len() >= 3, "{segment_bases:?}");
    let mut store = store;
    let mut partition = partition;
    let inside_active = bases[bases.len() - 3];
    let segment_boundary = *segment_bases.iter().filter(|&&b| b > 0).min().unwrap();
    // From the end backwards: in the active segment, then well inside an
    // older one, then at a segment's first batch, then everything.
    for from in [inside_active, bases[bases.len() / 2], segment_boundary, 0] {
        store.checkpoint().unwrap();
        let old = state(&partition);
        partition.truncate_suffix(from, 0).unwrap();
        let expected = cut(&old, from);
        assert_eq!((records(&partition), terms(&partition)), expected, "at {from}");
        assert_eq!(partition.high_watermark(), from);
        assert_eq!(partition.durable_offset(), from);
        assert!(partition.term_starts().iter().all(|t| t.start_offset < from));
        // Survives a crash right after the call...
        store.simulate_crash();
        let (s, p) = open(dir.path());
        assert_eq!((records(&p), terms(&p)), expected, "at {from}, after a crash");
        // ...and a clean close, after an append in a newer term.
        let next_term = p.last_term() + 10;
        append(&p, 2, next_term);
        let appended = state(&p);
        s.close().unwrap();
        (store, partition) = open(dir.path());
        assert_eq!(state(&partition), appended);
        assert_eq!(partition.term_at(from), Some(next_term));
        partition.truncate_suffix(from, 0).unwrap();
    }
    assert_eq!(partition.high_watermark(), 0);
    assert_eq!(partition.info().segment_count, 1);
    let leftovers: Vec<_> = fs::read_dir(partition_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_truncations_are_refused_with_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, partition) = open(dir.path());
    let bases = fill(&partition, &[1, 2, 3, 4, 5, 6]);
    partition.checkpoint().unwrap();
    assert!(partition.delete_segments_below(bases[bases.len() - 5]).unwrap() > 0);
    let log_start = partition.log_start_offset();
    let before = state(&partition);
    let end = partition.high_watermark();
    let batch = bases.iter().copied().find(|&b| b > log_start + 5).unwrap();
    let expect = |result: spool_log::Result<()>, check: &dyn Fn(&Error) -> bool| {
        let error = result.unwrap_err();
        assert!(check(&error), "{error:?}");
        assert_eq!(state(&partition), before);
        assert!(!partition.is_poisoned());
    };
    expect(
        partition.truncate_suffix(log_start - 1, 0),
        &|e| matches!(e, Error::TruncateBelowLogStart { requested, log_start: s } if *requested == log_start - 1 && *s == log_start),
    );
    expect(
        partition.truncate_suffix(batch, batch + 1),
        &|e| matches!(e, Error::TruncateBelowCommitted { requested, committed } if *requested == batch && *committed == batch + 1),
    );
    let inside = bases
        .iter()
        .copied()
        .find(|&b| b > log_start && bases.contains(&b) && !bases.contains(&(b + 1)))
        .unwrap()
        + 1;
    expect(
        partition.truncate_suffix(inside, 0),
        &|e| matches!(e, Error::NotBatchBoundary { offset, batch_base_offset } if *offset == inside && *batch_base_offset == inside - 1),
    );
    // At or past the end there is nothing to remove.
    partition.truncate_suffix(end, 0).unwrap();
    partition.truncate_suffix(end + 100, 0).unwrap();
    assert_eq!(state(&partition), before);
    // At the log start itself: allowed, and the log is then empty.
    partition.truncate_suffix(log_start, log_start).unwrap();
    assert_eq!(partition.high_watermark(), log_start);
    assert_eq!(partition.log_start_offset(), log_start);
    append(&partition, 1, 9);
    assert_eq!(partition.term_at(log_start), Some(9));
}

#[test]
fn readers_holding_truncated_batches_keep_valid_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, partition) = open(dir.path());
    let bases = fill(&partition, &[1, 2, 3]);
    let from = bases[bases.len() / 2];
    // Batches read before the truncation, from sealed and active segments.
    let held = stored_batches(&partition, 0);
    let copies: Vec<Vec<u8>> = held.iter().map(|b| b.to_vec()).collect();
    partition.truncate_suffix(from, 0).unwrap();
    // New batches overwrite nothing the old ones lie in.
    fill(&partition, &[7, 8]);
    for (bytes, copy) in held.iter().zip(&copies) {
        assert_eq!(&bytes[..], &copy[..]);
        batch::verify(bytes).unwrap();
    }
    let now = stored_batches(&partition, 0);
    let kept = now
        .iter()
        .take_while(|b| BatchHeader::parse(b).unwrap().base_offset < from)
        .count();
    assert!(kept > 0 && now.len() > kept);
    assert!(now[..kept] == held[..kept], "the kept batches are the old ones");
    assert!(now.iter().all(|b| {
        let header = BatchHeader::parse(b).unwrap();
        header.base_offset < from || header.leader_epoch >= 7
    }));
}

#[test]
fn a_crash_after_any_truncation_step_recovers_the_old_log_or_a_prefix_and_finishes() {
    for step in 1..=6 {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(FaultInjector::default());
        let (store, partition) = open_with(dir.path(), Some(Arc::clone(&faults)));
        let bases = fill(&partition, &[1, 2, 3, 4, 5]);
        store.checkpoint().unwrap();
        // A few more batches past the recovery point, not yet flushed.
        append(&partition, 2, 5);
        let old = state(&partition);
        let from = bases[bases.len() / 3];
        faults.set_truncate_crash_step(step);
        let error = partition.truncate_suffix(from, 0).unwrap_err();
        assert!(
            matches!(error, Error::Io { op: "truncate", .. }),
            "step {step}: {error:?}"
        );
        assert!(partition.is_poisoned());
        store.simulate_crash();
        faults.set_truncate_crash_step(0);

        let (store, partition) = open_with(dir.path(), Some(Arc::clone(&faults)));
        let end = partition.high_watermark();
        assert!(end >= from && end <= old.0, "step {step}: recovered to {end}");
        if step >= 5 {
            assert_eq!(end, from, "step {step}: the cut is on disk");
        }
        // Whatever survived is the old log's prefix, with the old terms.
        let (records_kept, mut terms_kept) = cut(&old, end);
        terms_kept.pop();
        assert_eq!(records(&partition), records_kept, "step {step}");
        assert_eq!(terms(&partition)[..end as usize], terms_kept[..], "step {step}");
        // The truncation can be done again, and the log goes on.
        partition.truncate_suffix(from, 0).unwrap();
        append(&partition, 1, 9);
        store.close().unwrap();
        let (_store, partition) = open(dir.path());
        let (mut records_then, mut terms_then) = cut(&old, from);
        records_then.push((from, value(from)));
        terms_then.pop();
        terms_then.extend([Some(9), None]);
        assert_eq!(
            (records(&partition), terms(&partition)),
            (records_then, terms_then),
            "step {step}"
        );
    }
}

#[test]
fn the_vote_is_absent_for_single_node_and_survives_a_crash_once_saved() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    assert_eq!(partition.vote(), Vote::default());
    append(&partition, 1, 0);
    store.close().unwrap();
    assert!(!partition_dir(dir.path()).join("raft-vote").exists());

    let (store, partition) = open(dir.path());
    let vote = Vote {
        term: 3,
        voted_for: Some(2),
        committed: false,
    };
    partition.save_vote(vote).unwrap();
    store.simulate_crash();
    let (_store, partition) = open(dir.path());
    assert_eq!(partition.vote(), vote);
    let error = partition
        .save_vote(Vote {
            voted_for: Some(1),
            ..vote
        })
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::VoteRegression {
                term: 3,
                voted_for: Some(1),
                current_term: 3,
                current_voted_for: Some(2)
            }
        ),
        "{error:?}"
    );
    assert_eq!(partition.vote(), vote);
}

#[test]
fn a_damaged_vote_file_fails_the_open_instead_of_forgetting_the_vote() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    partition
        .save_vote(Vote {
            term: 1,
            voted_for: Some(1),
            committed: true,
        })
        .unwrap();
    store.close().unwrap();
    let path = partition_dir(dir.path()).join("raft-vote");
    let mut bytes = fs::read(&path).unwrap();
    bytes[9] ^= 1;
    fs::write(&path, bytes).unwrap();
    let error = Store::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&error, Error::BadFile { path: p, .. } if *p == path),
        "{error:?}"
    );
}

#[test]
fn committed_reads_stop_at_the_committed_offset_which_only_moves_up_to_the_durable_end() {
    let dir = tempfile::tempdir().unwrap();
    let (store, partition) = open(dir.path());
    let bases = fill(&partition, &[1, 2]);
    let end = partition.high_watermark();
    assert_eq!(partition.committed_offset(), 0);
    // Nothing is committed yet: a committed read serves nothing, a plain
    // read serves everything, as on a single node.
    let read = partition.read_committed(0, 1 << 20).unwrap();
    assert!(read.batches.is_empty());
    assert_eq!(read.high_watermark, 0);
    assert!(matches!(
        partition.read_committed(1, 100),
        Err(Error::OffsetOutOfRange {
            requested: 1,
            earliest: 0,
            latest: 0
        })
    ));
    assert_eq!(records(&partition).len() as u64, end);

    // Not durable yet: refused, and nothing moves.
    let error = partition.set_committed(bases[10]).unwrap_err();
    assert!(matches!(error, Error::CommitBeyondDurable { requested, durable: 0 } if requested == bases[10]));
    assert_eq!(partition.committed_offset(), 0);
    partition.flush().unwrap();
    let mut waiter = std::pin::pin!(partition.wait_committed(bases[10]));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(waiter.as_mut().poll(&mut context).is_pending());
    // Committed inside a batch: that batch is not served yet.
    let commit = bases[11] + 1;
    assert!(bases[12] > commit);
    partition.set_committed(commit).unwrap();
    assert!(waiter.as_mut().poll(&mut context).is_ready());
    partition.set_committed(3).unwrap();
    assert_eq!(partition.committed_offset(), commit, "never moves back");
    let mut served = Vec::new();
    let mut offset = 0;
    loop {
        let read = partition.read_committed(offset, 300).unwrap();
        assert_eq!(read.high_watermark, commit);
        if read.batches.is_empty() {
            break;
        }
        served.extend(read.batches.iter().map(|b| b.base_offset()));
        offset = read.next_offset;
    }
    assert_eq!(served, bases[..11]);
    assert_eq!(offset, bases[11]);

    // The partition's own committed offset also bounds truncation.
    let error = partition.truncate_suffix(bases[11], 0).unwrap_err();
    assert!(matches!(error, Error::TruncateBelowCommitted { committed, .. } if committed == commit));
    partition.truncate_suffix(bases[12], 0).unwrap();
    assert_eq!(partition.committed_offset(), commit);
    store.close().unwrap();
}
