//! Behaviour of the engine through its public API: appends and reads,
//! segments, recovery, retention, limits and injected faults.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spool_log::{
    Durability, Error, FaultInjector, Partition, Record, Store, StoreConfig, TopicConfig, batch,
};

fn config() -> StoreConfig {
    StoreConfig {
        preallocate_bytes: 64 * 1024,
        index_interval_bytes: 256,
        checkpoint_interval_ms: 0,
        retention_check_interval_ms: 0,
        ..StoreConfig::default()
    }
}

fn topic_config(partitions: u32, segment_bytes_max: u64) -> TopicConfig {
    TopicConfig {
        partitions,
        segment_bytes_max,
        ..TopicConfig::default()
    }
}

fn value(i: u64) -> Vec<u8> {
    format!("record-{i:06}-{}", "x".repeat((i % 37) as usize)).into_bytes()
}

/// Appends `count` single-record batches with values `value(from..)`.
fn append_values(partition: &Partition, from: u64, count: u64, durability: Durability) {
    for i in from..from + count {
        let v = value(i);
        let outcome = partition.append(&[Record::value(&v)], durability).unwrap();
        assert_eq!(outcome.base_offset, i);
    }
}

/// Reads every record from `from` to the high watermark as (offset, value).
fn read_all(partition: &Partition, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let result = partition.read(offset, 4096).unwrap();
        if result.batches.is_empty() {
            assert_eq!(offset, result.high_watermark);
            return out;
        }
        for batch in &result.batches {
            for record in batch.records() {
                let record = record.unwrap();
                if record.offset >= offset {
                    out.push((record.offset, record.value.unwrap().to_vec()));
                }
            }
        }
        offset = result.next_offset;
    }
}

fn assert_values(partition: &Partition, from: u64, to: u64) {
    let records = read_all(partition, from);
    let expected: Vec<_> = (from..to).map(|i| (i, value(i))).collect();
    assert_eq!(records.len(), expected.len());
    assert!(records == expected, "records differ from what was appended");
}

fn segment_logs(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn partition_dir(data: &Path, topic: &str, partition: u32) -> PathBuf {
    data.join("topics").join(topic).join(partition.to_string())
}

#[test]
fn append_and_read_back_across_partitions_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(!report.clean);
    let topic = store.create_topic("orders", topic_config(3, 4096)).unwrap();
    for partition in topic.partitions() {
        append_values(partition, 0, 300, Durability::None);
    }
    for partition in topic.partitions() {
        assert_values(partition, 0, 300);
        assert_values(partition, 123, 300);
        let info = partition.info();
        assert_eq!(info.high_watermark, 300);
        assert!(info.segment_count > 3, "segments rolled: {info:?}");
    }
    assert_eq!(
        segment_logs(&partition_dir(dir.path(), "orders", 1)).len() as u64,
        { topic.partitions()[1].info().segment_count }
    );
}

#[test]
fn batches_keep_keys_headers_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 1 << 20))
        .unwrap()
        .partitions()[0]
        .clone();
    let headers = [batch::Header {
        key: "trace-id",
        value: Some(b"abc"),
    }];
    let records = [
        Record {
            key: Some(b"k"),
            value: Some(b"v1"),
            headers: &headers,
            timestamp_ms: Some(1_000),
        },
        Record {
            key: None,
            value: None,
            headers: &[],
            timestamp_ms: None,
        },
    ];
    let outcome = partition.append(&records, Durability::Fsync).unwrap();
    assert_eq!((outcome.base_offset, outcome.last_offset), (0, 1));
    assert_eq!(outcome.durability, Durability::Fsync);
    assert!(partition.durable_offset() >= 2);
    let read = partition.read(1, 1 << 20).unwrap();
    assert_eq!(read.batches.len(), 1, "the whole batch comes back");
    let decoded: Vec<_> = read.batches[0].records().map(Result::unwrap).collect();
    assert_eq!(decoded[0].key, Some(&b"k"[..]));
    assert_eq!(
        decoded[0].headers().collect::<Vec<_>>(),
        [("trace-id", Some(&b"abc"[..]))]
    );
    assert_eq!(decoded[0].timestamp_ms, 1_000);
    assert_eq!(decoded[1].timestamp_ms, outcome.append_time_ms);
    assert_eq!(decoded[1].value, None);
}

#[test]
fn pre_encoded_batches_are_validated_and_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 1 << 20))
        .unwrap()
        .partitions()[0]
        .clone();
    append_values(&partition, 0, 5, Durability::None);
    let limits = batch::BatchLimits {
        record_bytes_max: 1 << 20,
        batch_bytes_max: 1 << 20,
    };
    let encoded = batch::encode_to_vec(&[Record::value(b"a"), Record::value(b"b")], 7, limits).unwrap();
    let outcome = partition.append_encoded(&encoded, Durability::None).unwrap();
    assert_eq!((outcome.base_offset, outcome.last_offset), (5, 6));
    let read = partition.read(5, 1 << 20).unwrap();
    let values: Vec<_> = read.batches[0]
        .records()
        .map(|r| r.unwrap().value.unwrap().to_vec())
        .collect();
    assert_eq!(values, [b"a".to_vec(), b"b".to_vec()]);

    let mut damaged = encoded.clone();
    *damaged.last_mut().unwrap() ^= 0x40;
    let err = partition.append_encoded(&damaged, Durability::None).unwrap_err();
    assert!(matches!(err, Error::InvalidBatch { .. }), "{err}");
    let err = partition
        .append_encoded(&encoded[..encoded.len() - 1], Durability::None)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidBatch { .. }), "{err}");
    assert_eq!(partition.high_watermark(), 7, "rejected batches leave no trace");
}

#[test]
fn reads_out_of_range_name_earliest_and_latest() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 1 << 20))
        .unwrap()
        .partitions()[0]
        .clone();
    append_values(&partition, 0, 10, Durability::None);
    let read = partition.read(10, 100).unwrap();
    assert!(read.batches.is_empty());
    assert_eq!((read.next_offset, read.high_watermark), (10, 10));
    match partition.read(11, 100) {
        Err(Error::OffsetOutOfRange {
            requested: 11,
            earliest: 0,
            latest: 10,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_budget_is_respected_but_one_batch_always_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 1 << 20))
        .unwrap()
        .partitions()[0]
        .clone();
    let big = vec![7u8; 10_000];
    partition
        .append(&[Record::value(&big)], Durability::None)
        .unwrap();
    append_values(&partition, 1, 50, Durability::None);
    let read = partition.read(0, 10).unwrap();
    assert_eq!(read.batches.len(), 1);
    assert_eq!(read.next_offset, 1);
    let read = partition.read(1, 300).unwrap();
    let bytes: usize = read.batches.iter().map(|b| b.bytes().len()).sum();
    assert!(bytes <= 300 && !read.batches.is_empty());
}

#[test]
fn a_read_until_returns_only_batches_that_start_below_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    // Small segments, so that the reads cross segment boundaries.
    let partition = store
        .create_topic("t", topic_config(1, 4096))
        .unwrap()
        .partitions()[0]
        .clone();
    append_values(&partition, 0, 60, Durability::None);
    let three: Vec<Vec<u8>> = (60..63).map(value).collect();
    let records: Vec<Record<'_>> = three.iter().map(|v| Record::value(v)).collect();
    partition.append(&records, Durability::None).unwrap();
    append_values(&partition, 63, 10, Durability::None);
    let bases =
        |read: &spool_log::ReadResult| read.batches.iter().map(|b| b.base_offset()).collect::<Vec<_>>();

    let read = partition.read_until(3, 40, 1 << 20).unwrap();
    assert_eq!(bases(&read), (3..40).collect::<Vec<_>>());
    assert_eq!(read.next_offset, 40);
    // The end inside a batch: that batch is the last read.
    let read = partition.read_until(55, 61, 1 << 20).unwrap();
    assert_eq!(bases(&read), (55..61).collect::<Vec<_>>());
    assert_eq!(read.next_offset, 63);
    // At least the batch holding the start, as with read.
    let read = partition.read_until(61, 61, 1 << 20).unwrap();
    assert_eq!(bases(&read), vec![60]);
    // The budget still applies, and an end past the log is the log's end.
    let read = partition.read_until(0, 1_000, 1 << 20).unwrap();
    assert_eq!(read.next_offset, 73);
    let read = partition.read_until(0, 1_000, 300).unwrap();
    assert!(read.next_offset < 73 && !read.batches.is_empty());
}

#[test]
fn offsets_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 4096))
        .unwrap()
        .partitions()[0]
        .clone();
    let body = vec![1u8; 100];
    for i in 0..200i64 {
        let record = Record {
            value: Some(&body),
            timestamp_ms: Some(10_000 + i * 10),
            ..Record::default()
        };
        partition.append(&[record], Durability::None).unwrap();
    }
    assert!(partition.info().segment_count > 2);
    assert_eq!(partition.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(partition.offset_for_timestamp(10_000).unwrap(), Some(0));
    assert_eq!(partition.offset_for_timestamp(10_001).unwrap(), Some(1));
    assert_eq!(partition.offset_for_timestamp(11_230).unwrap(), Some(123));
    assert_eq!(partition.offset_for_timestamp(11_990).unwrap(), Some(199));
    assert_eq!(partition.offset_for_timestamp(11_991).unwrap(), None);
}

#[test]
fn clean_reopen_keeps_everything_without_scanning() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), config()).unwrap();
        let topic = store.create_topic("t", topic_config(2, 4096)).unwrap();
        append_values(&topic.partitions()[0], 0, 250, Durability::None);
        store.close().unwrap();
    }
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(report.clean);
    assert!(report.partitions.is_empty(), "{report:?}");
    let topic = store.topic("t").unwrap();
    assert_eq!(topic.partition_count(), 2);
    assert_values(&topic.partitions()[0], 0, 250);
    append_values(&topic.partitions()[0], 250, 10, Durability::None);
    assert_values(&topic.partitions()[0], 0, 260);
    assert_eq!(topic.partitions()[1].high_watermark(), 0);
}

#[test]
fn unclean_reopen_scans_only_past_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), config()).unwrap();
        let partition = store
            .create_topic("t", topic_config(1, 1 << 20))
            .unwrap()
            .partitions()[0]
            .clone();
        append_values(&partition, 0, 100, Durability::None);
        store.checkpoint().unwrap();
        append_values(&partition, 100, 20, Durability::None);
        store.simulate_crash();
    }
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(!report.clean);
    let scan = &report.partitions[0].scans[0];
    assert!(scan.damage.is_none());
    let tail_bytes: usize = (100..120).map(|i| 12 + 49 + 9 + value(i).len()).sum();
    assert!(
        scan.scanned_bytes as usize <= tail_bytes + 200,
        "scanned {} bytes for a tail of about {tail_bytes}",
        scan.scanned_bytes
    );
    assert_values(&store.partition("t", 0).unwrap(), 0, 120);
}

/// Appends, simulates a crash, applies `damage` to the active segment's
/// log file, reopens, and returns the store with what recovery reported.
fn crash_and_damage(
    dir: &Path,
    count: u64,
    damage: impl FnOnce(&Path, u64),
) -> (Store, spool_log::RecoveryReport) {
    let (store, _) = Store::open(dir, config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 1 << 20))
        .unwrap()
        .partitions()[0]
        .clone();
    append_values(&partition, 0, count, Durability::None);
    let info = partition.info();
    store.simulate_crash();
    let log = segment_logs(&partition_dir(dir, "t", 0)).pop().unwrap();
    damage(&log, info.size_bytes);
    Store::open(dir, config()).unwrap()
}

#[test]
fn recovery_cuts_garbage_appended_after_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = crash_and_damage(dir.path(), 50, |log, len| {
        let mut bytes = fs::read(log).unwrap();
        bytes.truncate(len as usize);
        bytes.extend((0..500u32).map(|i| (i * 13 + 1) as u8));
        fs::write(log, bytes).unwrap();
    });
    let scan = &report.partitions[0].scans[0];
    assert!(scan.damage.is_some());
    assert_eq!(scan.cut_bytes, 500);
    let partition = store.partition("t", 0).unwrap();
    assert_values(&partition, 0, 50);
    append_values(&partition, 50, 5, Durability::Fsync);
    assert_values(&partition, 0, 55);
}

#[test]
fn recovery_treats_a_zero_filled_tail_as_the_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = crash_and_damage(dir.path(), 50, |log, len| {
        let file = fs::OpenOptions::new().write(true).open(log).unwrap();
        file.set_len(len + 100_000).unwrap();
    });
    assert!(report.partitions.iter().all(|p| !p.lost_data()), "{report:?}");
    assert_values(&store.partition("t", 0).unwrap(), 0, 50);
}

#[test]
fn recovery_cuts_a_half_written_header_and_a_torn_batch() {
    for keep in [20u64, 70, 90] {
        let dir = tempfile::tempdir().unwrap();
        let mut last_start = 0;
        let (store, report) = crash_and_damage(dir.path(), 40, |log, len| {
            // Find the last batch's start by walking headers.
            let bytes = fs::read(log).unwrap();
            let mut at = 0u64;
            while at < len {
                last_start = at;
                at += batch::BatchHeader::parse(&bytes[at as usize..])
                    .unwrap()
                    .total_bytes() as u64;
            }
            let file = fs::OpenOptions::new().write(true).open(log).unwrap();
            file.set_len(last_start + keep.min(len - last_start - 1)).unwrap();
        });
        assert!(report.partitions[0].lost_data(), "keep {keep}");
        let partition = store.partition("t", 0).unwrap();
        assert_eq!(partition.high_watermark(), 39, "keep {keep}");
        assert_values(&partition, 0, 39);
    }
}

#[test]
fn recovery_cuts_at_a_flipped_bit_in_the_unflushed_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = crash_and_damage(dir.path(), 60, |log, len| {
        let mut bytes = fs::read(log).unwrap();
        let at = (len - 30) as usize;
        bytes[at] ^= 0x08;
        fs::write(log, bytes).unwrap();
    });
    assert!(report.partitions[0].lost_data());
    let partition = store.partition("t", 0).unwrap();
    assert_eq!(partition.high_watermark(), 59);
    assert_values(&partition, 0, 59);
}

#[test]
fn a_flipped_bit_in_an_old_batch_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 4096))
        .unwrap()
        .partitions()[0]
        .clone();
    append_values(&partition, 0, 100, Durability::None);
    store.close().unwrap();
    let first = segment_logs(&partition_dir(dir.path(), "t", 0)).remove(0);
    let mut bytes = fs::read(&first).unwrap();
    bytes[100] ^= 0x01; // inside the records of the second batch or so
    fs::write(&first, bytes).unwrap();

    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(
        report.clean && report.partitions.is_empty(),
        "old data is trusted, not rescanned"
    );
    let partition = store.partition("t", 0).unwrap();
    let mut corrupt_seen = false;
    let mut served = 0;
    let mut offset = 0;
    while offset < partition.high_watermark() {
        match partition.read(offset, 1) {
            Ok(read) => {
                for batch in &read.batches {
                    for record in batch.records() {
                        let record = record.unwrap();
                        assert_eq!(
                            record.value.unwrap(),
                            value(record.offset),
                            "served a damaged record"
                        );
                        served += 1;
                    }
                }
                offset = read.next_offset;
            }
            Err(Error::Corrupt { .. }) => {
                corrupt_seen = true;
                offset += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(corrupt_seen);
    assert_eq!(served, 99);
}

/// Byte positions of the batches of a segment's log file, in order.
fn batch_positions(log: &Path) -> Vec<usize> {
    let bytes = fs::read(log).unwrap();
    let mut positions = Vec::new();
    let mut at = 0;
    while let Ok(header) = batch::BatchHeader::parse(&bytes[at.min(bytes.len())..]) {
        positions.push(at);
        at += header.total_bytes();
    }
    positions
}

/// A closed store with 60 single-record batches in partition 1 of
/// `orders`, over several segments; returns the first segment's log file.
fn orders_with_closed_segments(dir: &Path) -> PathBuf {
    let (store, _) = Store::open(dir, config()).unwrap();
    let topic = store.create_topic("orders", topic_config(2, 4096)).unwrap();
    append_values(&topic.partitions()[1], 0, 60, Durability::None);
    store.close().unwrap();
    let logs = segment_logs(&partition_dir(dir, "orders", 1));
    assert!(logs.len() > 1, "the partition rolled");
    logs[0].clone()
}

#[test]
fn corrupt_names_the_partition_the_segment_file_and_the_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = orders_with_closed_segments(dir.path());
    let positions = batch_positions(&log);
    let next_segment_base: u64 = segment_logs(&partition_dir(dir.path(), "orders", 1))[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = fs::read(&log).unwrap();
    // Batch 5: a flipped bit in its record, which only the CRC sees.
    bytes[positions[5] + batch::HEADER_BYTES + 2] ^= 0x01;
    // Batch 9: a flipped magic byte, so its header cannot be trusted.
    bytes[positions[9] + batch::field::MAGIC] ^= 0xff;
    fs::write(&log, bytes).unwrap();

    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store.partition("orders", 1).unwrap();
    let error = partition.read(5, 1 << 20).unwrap_err();
    match &error {
        Error::Corrupt {
            topic,
            partition,
            segment,
            position,
            first_offset,
            last_offset,
            reason,
        } => {
            assert_eq!((topic.as_str(), *partition), ("orders", 1));
            assert_eq!(segment, &log);
            assert_eq!(*position, positions[5] as u64);
            assert_eq!((*first_offset, *last_offset), (5, 5), "the batch's own offsets");
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let message = error.to_string();
    for part in [
        "orders/1".to_owned(),
        log.display().to_string(),
        format!("at byte {}", positions[5]),
        "offsets 5 to 5".to_owned(),
    ] {
        assert!(message.contains(&part), "{part:?} missing from {message:?}");
    }

    // Past a damaged header a reader cannot walk: every later offset of the
    // segment is named.
    match partition.read(9, 1 << 20).unwrap_err() {
        Error::Corrupt {
            position,
            first_offset,
            last_offset,
            reason,
            ..
        } => {
            assert_eq!(position, positions[9] as u64);
            assert_eq!((first_offset, last_offset), (9, next_segment_base - 1));
            assert!(reason.contains("magic"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn a_record_that_does_not_decode_behind_a_good_crc_is_corrupt_where_it_lies() {
    let dir = tempfile::tempdir().unwrap();
    let log = orders_with_closed_segments(dir.path());
    let positions = batch_positions(&log);
    // Batch 3's record gets offset delta 1 (zigzag 0x02) instead of 0, and
    // the CRC is recomputed: only the record decoder can notice. The
    // record's length, attributes and timestamp delta take one byte each.
    let mut bytes = fs::read(&log).unwrap();
    let batch_at = positions[3];
    let record_at = batch_at + batch::HEADER_BYTES;
    assert_eq!(bytes[record_at + 3], 0x00, "offset delta of the record");
    bytes[record_at + 3] = 0x02;
    let end = positions[4];
    let crc = batch::compute_crc(&bytes[batch_at..end]);
    bytes[batch_at + batch::field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
    fs::write(&log, bytes).unwrap();

    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store.partition("orders", 1).unwrap();
    let read = partition.read(3, 1).unwrap();
    let error = partition.records(&read.batches[0]).next().unwrap().unwrap_err();
    match error {
        Error::Corrupt {
            topic,
            partition: id,
            segment,
            position,
            first_offset,
            last_offset,
            reason,
        } => {
            assert_eq!((topic.as_str(), id), ("orders", 1));
            assert_eq!(segment, log);
            assert_eq!(position, record_at as u64, "the record's own byte");
            assert_eq!((first_offset, last_offset), (3, 3));
            assert!(reason.contains("offset delta"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    // Partition::scan meets it the same way.
    let scanned = partition.scan(0, |_, _| std::ops::ControlFlow::Continue(()));
    assert!(
        matches!(scanned, Err(Error::Corrupt { first_offset: 3, .. })),
        "{scanned:?}"
    );
}

#[test]
fn missing_or_truncated_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), config()).unwrap();
        let partition = store
            .create_topic("t", topic_config(1, 4096))
            .unwrap()
            .partitions()[0]
            .clone();
        append_values(&partition, 0, 200, Durability::None);
        store.close().unwrap();
    }
    let pdir = partition_dir(dir.path(), "t", 0);
    let logs = segment_logs(&pdir);
    fs::remove_file(logs[0].with_extension("index")).unwrap();
    let time_index = logs[1].with_extension("timeindex");
    let len = fs::metadata(&time_index).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&time_index)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let (store, report) = Store::open(dir.path(), config()).unwrap();
    let rebuilt = &report.partitions[0].indexes_rebuilt;
    assert_eq!(rebuilt.len(), 2, "{report:?}");
    assert!(logs[0].with_extension("index").exists());
    let partition = store.partition("t", 0).unwrap();
    assert_values(&partition, 0, 200);
    assert_eq!(partition.offset_for_timestamp(0).unwrap(), Some(0));
}

/// `count` records of 200 bytes, one per append, timestamped 1,000,000 ms
/// and one millisecond apart.
fn append_timestamped(partition: &Partition, count: i64) {
    let body = vec![0u8; 200];
    for i in 0..count {
        let record = Record {
            value: Some(&body),
            timestamp_ms: Some(1_000_000 + i),
            ..Record::default()
        };
        partition.append(&[record], Durability::None).unwrap();
    }
}

#[test]
fn retention_by_size_and_time_deletes_whole_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let config = TopicConfig {
        partitions: 1,
        segment_bytes_max: 4096,
        retention_ms: Some(60_000),
        retention_bytes: Some(3 * 4096),
        ..TopicConfig::default()
    };
    let partition = store.create_topic("t", config).unwrap().partitions()[0].clone();
    append_timestamped(&partition, 200);
    let before = partition.info();
    let reader_holds = partition.read(0, 1 << 20).unwrap();
    // Size: keep at most three segments' worth.
    let deleted = store.enforce_retention(1_000_000).unwrap();
    assert!(deleted > 0);
    let after = partition.info();
    assert!(after.size_bytes <= 3 * 4096 + 4096, "{after:?}");
    assert!(after.log_start_offset > 0);
    assert_eq!(after.high_watermark, before.high_watermark);
    match partition.read(0, 100) {
        Err(Error::OffsetOutOfRange { earliest, latest, .. }) => {
            assert_eq!((earliest, latest), (after.log_start_offset, 200));
        }
        other => panic!("{other:?}"),
    }
    // Batches read before deletion stay intact.
    let first = reader_holds.batches[0].records().next().unwrap().unwrap();
    assert_eq!(first.offset, 0);
    // Time: everything closed is older than a minute at this "now".
    store.enforce_retention(1_000_000 + 120_000).unwrap();
    let info = partition.info();
    assert_eq!(info.segment_count, 1);
    assert_eq!(
        read_all(&partition, info.log_start_offset).len() as u64,
        200 - info.log_start_offset
    );
    drop(store);
    let (store, _) = Store::open(dir.path(), self::config()).unwrap();
    assert_eq!(
        store.partition("t", 0).unwrap().log_start_offset(),
        info.log_start_offset
    );
}

#[test]
fn retention_set_at_run_time_applies_to_a_topic_stored_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let config = TopicConfig {
        partitions: 1,
        segment_bytes_max: 4096,
        retention_ms: None,
        retention_bytes: None,
        ..TopicConfig::default()
    };
    let partition = store.create_topic("__metrics", config).unwrap().partitions()[0].clone();
    append_timestamped(&partition, 100);
    let segments = partition.info().segment_count;
    assert!(segments > 2, "{segments}");
    assert_eq!(
        store.enforce_retention(i64::MAX / 4).unwrap(),
        0,
        "stored: keep forever"
    );

    partition.set_retention(Some(60_000), None);
    assert_eq!(
        store.enforce_retention(1_000_050).unwrap(),
        0,
        "nothing is a minute old yet"
    );
    assert_eq!(
        store.enforce_retention(1_000_000 + 120_000).unwrap() as u64,
        segments - 1
    );
    assert_eq!(partition.info().segment_count, 1);

    partition.set_retention(None, None);
    append_timestamped(&partition, 100);
    assert_eq!(store.enforce_retention(i64::MAX / 4).unwrap(), 0, "cleared again");
}

#[test]
fn an_owner_bounds_retention_by_the_offset_it_still_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 4096))
        .unwrap()
        .partitions()[0]
        .clone();
    append_timestamped(&partition, 100);
    let segments = partition.info().segment_count;
    assert!(segments > 4, "{segments} segments");
    // The topic keeps everything; a retention of the owner's choosing says
    // where the log would start, without deleting anything.
    let retention = spool_log::Retention {
        ms: Some(10),
        bytes: None,
    };
    let retention_start = partition.retention_start(&retention, 2_000_000);
    assert!(retention_start > 0);
    assert_eq!(partition.log_start_offset(), 0);
    assert_eq!(
        partition.retention_start(&spool_log::Retention::default(), 2_000_000),
        0
    );
    // Offset 30 is still needed: only segments wholly below it go.
    let deleted = partition.delete_segments_below(retention_start.min(30)).unwrap();
    assert!(deleted > 0);
    let start = partition.log_start_offset();
    assert!(start <= 30 && start > 0, "log start {start}");
    assert_values_from(&partition, start, 100, &[0u8; 200]);
    // Asking for everything leaves the active segment.
    partition.delete_segments_below(u64::MAX).unwrap();
    assert_eq!(partition.info().segment_count, 1);
    assert_eq!(partition.delete_segments_below(u64::MAX).unwrap(), 0);
    let start = partition.log_start_offset();
    drop(store);
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.partition("t", 0).unwrap().log_start_offset(), start);
}

fn assert_values_from(partition: &Partition, from: u64, to: u64, body: &[u8]) {
    let records = read_all(partition, from);
    assert_eq!(records.len() as u64, to - from);
    assert!(records.iter().all(|(_, value)| value == body));
    assert_eq!(records[0].0, from);
}

#[test]
fn internal_topics_take_the_store_segment_size_at_every_open() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreConfig {
        internal_segment_bytes_max: 64 * 1024,
        batch_bytes_max: 64 * 1024,
        record_bytes_max: 32 * 1024,
        ..config()
    };
    {
        // A directory made with the default segment size.
        let (store, _) = Store::open(dir.path(), config()).unwrap();
        let partition = store.internal_partition("__jobs").unwrap();
        assert_eq!(
            store.topic("__jobs").unwrap().config().segment_bytes_max,
            StoreConfig::default().internal_segment_bytes_max
        );
        append_values(&partition, 0, 10, Durability::None);
    }
    let (store, _) = Store::open(dir.path(), small.clone()).unwrap();
    assert_eq!(
        store.topic("__jobs").unwrap().config().segment_bytes_max,
        64 * 1024
    );
    let partition = store.internal_partition("__jobs").unwrap();
    let body = vec![7u8; 16 * 1024];
    for _ in 0..20 {
        partition
            .append(&[Record::value(&body)], Durability::None)
            .unwrap();
    }
    assert!(partition.info().segment_count >= 4, "{:?}", partition.info());
    drop(store);
    // The rewritten topic.meta says so too.
    let meta = fs::read_to_string(dir.path().join("topics/__jobs/topic.meta")).unwrap();
    assert!(meta.contains("segment_bytes_max=65536"), "{meta}");
    let err = Store::open(
        dir.path(),
        StoreConfig {
            internal_segment_bytes_max: 8 * 1024,
            ..small
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                key: "internal_segment_bytes_max",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let config = TopicConfig {
        segment_ms_max: 1,
        ..topic_config(1, 1 << 20)
    };
    let partition = store.create_topic("t", config).unwrap().partitions()[0].clone();
    append_values(&partition, 0, 1, Durability::None);
    std::thread::sleep(Duration::from_millis(5));
    append_values(&partition, 1, 1, Durability::None);
    assert_eq!(partition.info().segment_count, 2);
}

#[test]
fn topic_names_are_validated_before_any_path_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    for name in ["../x", "..", ".", "a/b", "", "a\0b", &"n".repeat(250)] {
        let err = store.create_topic(name, topic_config(1, 4096)).unwrap_err();
        assert!(matches!(err, Error::InvalidTopicName { .. }), "{name:?}: {err}");
    }
    assert!(!dir.path().join("x").exists());
    assert_eq!(fs::read_dir(dir.path().join("topics")).unwrap().count(), 0);
}

#[test]
fn unknown_topics_partitions_and_duplicates_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    assert!(matches!(store.topic("nope"), Err(Error::UnknownTopic { .. })));
    store.create_topic("t", topic_config(2, 4096)).unwrap();
    assert!(matches!(
        store.create_topic("t", topic_config(2, 4096)),
        Err(Error::TopicExists { .. })
    ));
    assert!(matches!(
        store.partition("t", 2),
        Err(Error::UnknownPartition {
            partition: 2,
            partition_count: 2,
            ..
        })
    ));
    let err = store.create_topic("many", topic_config(5000, 4096)).unwrap_err();
    assert!(matches!(
        err,
        Error::LimitExceeded {
            limit: "partitions_max",
            ..
        }
    ));
    assert!(matches!(
        store.delete_topic("nope"),
        Err(Error::UnknownTopic { .. })
    ));
}

#[test]
fn oversized_records_and_batches_are_refused_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        record_bytes_max: 1000,
        batch_bytes_max: 5000,
        ..config()
    };
    let (store, _) = Store::open(dir.path(), config).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 4096))
        .unwrap()
        .partitions()[0]
        .clone();
    let big = vec![0u8; 2000];
    let err = partition
        .append(&[Record::value(&big)], Durability::Fsync)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::LimitExceeded {
            limit: "record_bytes_max",
            ..
        }
    ));
    let medium = vec![0u8; 900];
    let many = vec![Record::value(&medium); 6];
    let err = partition.append(&many, Durability::None).unwrap_err();
    assert!(matches!(
        err,
        Error::LimitExceeded {
            limit: "batch_bytes_max",
            ..
        }
    ));
    let too_big_for_a_segment = vec![Record::value(&medium); 5];
    let err = partition
        .append(&too_big_for_a_segment, Durability::None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                limit: "segment_bytes_max",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        partition.append(&[], Durability::None),
        Err(Error::InvalidBatch { .. })
    ));
    assert_eq!(partition.high_watermark(), 0);
    append_values(&partition, 0, 3, Durability::None);
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), config()),
        Err(Error::Locked { .. })
    ));
    drop(store);
    Store::open(dir.path(), config()).unwrap();
}

#[test]
fn a_full_disk_fails_the_roll_and_appends_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::default());
    let config = StoreConfig {
        faults: Some(Arc::clone(&faults)),
        ..config()
    };
    let (store, _) = Store::open(dir.path(), config).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 4096))
        .unwrap()
        .partitions()[0]
        .clone();
    append_values(&partition, 0, 20, Durability::None);
    faults.set_disk_full(true);
    let mut i = 20;
    let err = loop {
        let v = value(i);
        match partition.append(&[Record::value(&v)], Durability::None) {
            Ok(_) => i += 1,
            Err(err) => break err,
        }
        assert!(i < 1000, "the segment never filled up");
    };
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    assert_eq!(partition.high_watermark(), i);
    assert_values(&partition, 0, i);
    faults.set_disk_full(false);
    append_values(&partition, i, 30, Durability::Fsync);
    assert_values(&partition, 0, i + 30);
}

#[test]
fn an_fsync_failure_poisons_the_partition_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::default());
    let config = StoreConfig {
        faults: Some(Arc::clone(&faults)),
        ..config()
    };
    {
        let (store, _) = Store::open(dir.path(), config.clone()).unwrap();
        let partition = store
            .create_topic("t", topic_config(1, 1 << 20))
            .unwrap()
            .partitions()[0]
            .clone();
        append_values(&partition, 0, 5, Durability::Fsync);
        faults.set_sync_fails(true);
        let v = value(5);
        let err = partition
            .append(&[Record::value(&v)], Durability::Fsync)
            .unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
        faults.set_sync_fails(false);
        let err = partition
            .append(&[Record::value(&v)], Durability::None)
            .unwrap_err();
        assert!(
            matches!(err, Error::Poisoned { .. }),
            "the fsync is not retried: {err}"
        );
        // The batch whose flush failed was not acknowledged, but it was
        // written and stays readable, as after any unacknowledged append.
        assert_eq!(partition.high_watermark(), 6);
        assert_values(&partition, 0, 6);
        store.simulate_crash();
    }
    let (store, _) = Store::open(dir.path(), config).unwrap();
    let partition = store.partition("t", 0).unwrap();
    assert!(partition.high_watermark() >= 5);
    let hw = partition.high_watermark();
    let v = value(hw);
    partition.append(&[Record::value(&v)], Durability::Fsync).unwrap();
}

#[test]
fn deleting_a_topic_keeps_held_batches_and_closes_handles() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 4096))
        .unwrap()
        .partitions()[0]
        .clone();
    append_values(&partition, 0, 50, Durability::None);
    let held = partition.read(0, 1 << 20).unwrap();
    store.delete_topic("t").unwrap();
    assert!(!dir.path().join("topics").join("t").exists());
    let v = value(50);
    assert!(matches!(
        partition.append(&[Record::value(&v)], Durability::None),
        Err(Error::Closed)
    ));
    let first = held.batches[0].records().next().unwrap().unwrap();
    assert_eq!(first.value.unwrap(), value(0));
    let recreated = store.create_topic("t", topic_config(1, 4096)).unwrap();
    assert_eq!(recreated.partitions()[0].high_watermark(), 0);
}

#[test]
fn long_poll_wakes_when_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 4096))
        .unwrap()
        .partitions()[0]
        .clone();
    let waiter = {
        let partition = partition.clone();
        std::thread::spawn(move || partition.wait_readable_blocking(0, Duration::from_secs(30)))
    };
    std::thread::sleep(Duration::from_millis(20));
    append_values(&partition, 0, 1, Durability::None);
    assert_eq!(waiter.join().unwrap().unwrap(), 1);
    assert_eq!(
        partition
            .wait_readable_blocking(5, Duration::from_millis(1))
            .unwrap(),
        1
    );
}

#[test]
fn concurrent_fsync_appenders_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 1 << 24))
        .unwrap()
        .partitions()[0]
        .clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let partition = partition.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let outcome = partition
                        .append(&[Record::value(&[1u8; 1024])], Durability::Fsync)
                        .unwrap();
                    assert!(partition.durable_offset() > outcome.last_offset);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(partition.high_watermark(), 400);
    let flushes = store.stats().flushes;
    assert!(flushes <= 400, "{flushes} flushes for 400 appends");
}

#[test]
fn readers_never_see_a_partial_batch_while_a_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 8192))
        .unwrap()
        .partitions()[0]
        .clone();
    let writer = {
        let partition = partition.clone();
        std::thread::spawn(move || append_values(&partition, 0, 3000, Durability::None))
    };
    let mut offset = 0;
    while offset < 3000 {
        let read = partition.read(offset, 2048).unwrap();
        for batch in &read.batches {
            for record in batch.records() {
                let record = record.unwrap();
                if record.offset >= offset {
                    assert_eq!(record.value.unwrap(), value(record.offset));
                }
            }
        }
        offset = read.next_offset;
    }
    writer.join().unwrap();
}

// Regression tests for defects found in review.

#[test]
fn a_flipped_bit_in_an_old_segment_with_a_lost_index_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), config()).unwrap();
        let partition = store
            .create_topic("t", topic_config(1, 4096))
            .unwrap()
            .partitions()[0]
            .clone();
        append_values(&partition, 0, 300, Durability::None);
        store.close().unwrap();
    }
    let logs = segment_logs(&partition_dir(dir.path(), "t", 0));
    assert!(logs.len() > 3);
    let mut bytes = fs::read(&logs[0]).unwrap();
    bytes[200] ^= 0x10;
    fs::write(&logs[0], bytes).unwrap();
    fs::remove_file(logs[0].with_extension("index")).unwrap();

    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(report.partitions[0].segments_dropped.is_empty(), "{report:?}");
    let partition = store.partition("t", 0).unwrap();
    assert_eq!(partition.high_watermark(), 300);
    assert_eq!(segment_logs(&partition_dir(dir.path(), "t", 0)).len(), logs.len());
    // Everything after the damaged segment reads back intact.
    let second = partition.read(partition.info().log_start_offset, 1).unwrap();
    assert!(second.batches.len() <= 1);
    let later = read_all(&partition, 100);
    assert_eq!(later, (100..300).map(|i| (i, value(i))).collect::<Vec<_>>());
}

#[test]
fn the_largest_timestamp_survives_an_unclean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let body = vec![1u8; 50];
    {
        let (store, _) = Store::open(dir.path(), config()).unwrap();
        let partition = store
            .create_topic("t", topic_config(1, 1 << 20))
            .unwrap()
            .partitions()[0]
            .clone();
        for i in 0..50i64 {
            let record = Record {
                value: Some(&body),
                timestamp_ms: Some(1_000 + i),
                ..Record::default()
            };
            partition.append(&[record], Durability::None).unwrap();
        }
        assert_eq!(partition.offset_for_timestamp(1_049).unwrap(), Some(49));
        store.checkpoint().unwrap();
        store.simulate_crash();
    }
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store.partition("t", 0).unwrap();
    assert_eq!(partition.offset_for_timestamp(1_049).unwrap(), Some(49));
    assert_eq!(partition.offset_for_timestamp(1_020).unwrap(), Some(20));
}

#[test]
fn a_read_that_meets_damage_in_the_next_segment_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), config()).unwrap();
        let partition = store
            .create_topic("t", topic_config(1, 4096))
            .unwrap()
            .partitions()[0]
            .clone();
        append_values(&partition, 0, 100, Durability::None);
        store.close().unwrap();
    }
    let logs = segment_logs(&partition_dir(dir.path(), "t", 0));
    let mut bytes = fs::read(&logs[1]).unwrap();
    bytes[16] ^= 0xff; // the magic byte of the segment's first batch
    fs::write(&logs[1], bytes).unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store.partition("t", 0).unwrap();
    let last_of_first: u64 = {
        let name = logs[1].file_stem().unwrap().to_str().unwrap();
        name.parse::<u64>().unwrap() - 1
    };
    let read = partition.read(last_of_first, 1 << 20).unwrap();
    assert_eq!(read.batches.len(), 1);
    assert_eq!(read.next_offset, last_of_first + 1);
    assert!(matches!(
        partition.read(last_of_first + 1, 1 << 20),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn a_topic_whose_creation_was_interrupted_does_not_block_startup() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), config()).unwrap();
        store.create_topic("kept", topic_config(1, 4096)).unwrap();
        store.close().unwrap();
    }
    fs::create_dir_all(dir.path().join("topics/half/0")).unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    assert!(store.topic("kept").is_ok());
    assert!(matches!(store.topic("half"), Err(Error::UnknownTopic { .. })));
    assert!(!dir.path().join("topics/half").exists());
}

/// Records what the engine reports to its observer.
#[derive(Debug, Default)]
struct Recorder {
    flushes: std::sync::Mutex<Vec<(String, u32, u64)>>,
    poisoned: std::sync::Mutex<Vec<(String, u32)>>,
}

impl spool_log::StoreObserver for Recorder {
    fn flushed(&self, report: &spool_log::FlushReport<'_>) {
        self.flushes
            .lock()
            .unwrap()
            .push((report.topic.to_owned(), report.partition, report.records));
    }

    fn poisoned(&self, topic: &str, partition: u32) {
        self.poisoned.lock().unwrap().push((topic.to_owned(), partition));
    }
}

#[test]
fn the_observer_hears_each_group_commit_and_each_poisoning_once() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::default());
    let recorder = Arc::new(Recorder::default());
    let config = StoreConfig {
        faults: Some(Arc::clone(&faults)),
        observer: Some(Arc::clone(&recorder) as Arc<dyn spool_log::StoreObserver>),
        ..config()
    };
    let (store, _) = Store::open(dir.path(), config).unwrap();
    let partition = store
        .create_topic("t", topic_config(2, 1 << 20))
        .unwrap()
        .partitions()[1]
        .clone();
    append_values(&partition, 0, 3, Durability::None);
    partition.flush().unwrap();
    // Nothing new: no flush, no report.
    partition.flush().unwrap();
    append_values(&partition, 3, 1, Durability::Fsync);
    assert_eq!(
        *recorder.flushes.lock().unwrap(),
        [("t".to_owned(), 1, 3), ("t".to_owned(), 1, 1)]
    );

    faults.set_sync_fails(true);
    let v = value(4);
    partition
        .append(&[Record::value(&v)], Durability::Fsync)
        .unwrap_err();
    partition.flush().unwrap_err();
    assert!(partition.is_poisoned());
    assert_eq!(*recorder.poisoned.lock().unwrap(), [("t".to_owned(), 1)]);
    assert_eq!(recorder.flushes.lock().unwrap().len(), 2);
    store.simulate_crash();
}

#[test]
fn stats_count_appended_batches_and_reported_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("t", topic_config(1, 1 << 20))
        .unwrap()
        .partitions()[0]
        .clone();
    let values: Vec<Vec<u8>> = (0..4).map(value).collect();
    let records: Vec<Record<'_>> = values.iter().map(|v| Record::value(v)).collect();
    partition.append(&records[..3], Durability::None).unwrap();
    partition.append(&records[3..], Durability::None).unwrap();
    let stats = partition.stats();
    assert_eq!(stats.appended_records, 4);
    // The appended bytes are the stored batches, all of the log.
    assert_eq!(stats.appended_bytes, partition.info().size_bytes);
    // Reads by the engine's own callers are not fetches until counted.
    partition.read(0, 1 << 20).unwrap();
    assert_eq!(partition.stats().fetched_records, 0);
    partition.count_fetched(4, stats.appended_bytes);
    let stats = partition.stats();
    assert_eq!(
        (stats.fetched_records, stats.fetched_bytes),
        (4, stats.appended_bytes)
    );
}

#[test]
fn only_offsets_of_the_last_segment_are_in_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    let partition = store
        .create_topic("hot", topic_config(1, 4096))
        .unwrap()
        .partitions()[0]
        .clone();
    assert!(
        partition.in_active_segment(0),
        "an empty partition's one segment is active"
    );
    append_values(&partition, 0, 300, Durability::None);
    let active_base = segment_logs(&partition_dir(dir.path(), "hot", 0))
        .last()
        .and_then(|path| path.file_stem()?.to_str()?.parse::<u64>().ok())
        .expect("the last segment's file is named after its base offset");
    assert!(active_base > 0, "segments rolled");
    assert!(!partition.in_active_segment(0));
    assert!(!partition.in_active_segment(active_base - 1));
    assert!(partition.in_active_segment(active_base));
    assert!(partition.in_active_segment(299));
    // The high watermark (the next offset) and beyond are in the active segment too.
    assert!(partition.in_active_segment(300));
}

#[test]
fn internal_topics_are_held_to_the_batch_limit_not_the_record_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        record_bytes_max: 1024,
        ..config()
    };
    let (store, _) = Store::open(dir.path(), config).unwrap();
    let big = vec![7u8; 4096];
    let user = store
        .create_topic("orders", topic_config(1, 1 << 20))
        .unwrap()
        .partitions()[0]
        .clone();
    match user.append(&[Record::value(&big)], Durability::None) {
        Err(Error::LimitExceeded { limit, .. }) => assert_eq!(limit, "record_bytes_max"),
        other => panic!("a client topic refuses a record over record_bytes_max: {other:?}"),
    }
    assert_eq!(user.high_watermark(), 0, "nothing written");
    let internal = store.internal_partition("__metrics").unwrap();
    let outcome = internal.append(&[Record::value(&big)], Durability::None).unwrap();
    let read = internal.read(outcome.base_offset, 1 << 20).unwrap();
    let record = read.batches[0].records().next().unwrap().unwrap();
    assert_eq!(record.value.unwrap(), &big[..]);
}
