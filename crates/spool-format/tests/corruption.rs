//! Corrupted batches reach the record decoder and are refused there, never
//! with a panic.
//!
//! Random bytes almost always fail the header or the CRC before a record is
//! looked at. Here every case starts from a well-formed batch, described
//! field by field, damages its structure (record lengths, varints, counts,
//! offset deltas, header fields, bytes added or removed), then sets the
//! batch length to the bytes there are and recomputes the CRC, so that the
//! checks before the records pass and the record decoder has to find the
//! damage itself. Decoding must then either fail cleanly or give records
//! that agree with the header.

use std::cell::Cell;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spool_format::batch::{
    Batch, BatchLimits, HEADER_BYTES, Header, Record, compute_crc, encode_to_vec, field, stamp_base_offset,
    validate_encoded,
};
use spool_format::{FormatError, RecordProblem};

const LIMITS: BatchLimits = BatchLimits {
    record_bytes_max: 1 << 20,
    batch_bytes_max: 8 << 20,
};

/// One field of an encoded record, as the encoder lays it out.
#[derive(Debug, Clone)]
enum Field {
    Byte(u8),
    Varint(i64),
    Bytes(Vec<u8>),
}

/// A record as a list of fields, with its length prefix computed from them
/// unless a corruption overrides it.
#[derive(Debug, Clone)]
struct RecordFields {
    length: Option<i64>,
    fields: Vec<Field>,
}

impl RecordFields {
    fn of(record: &Record<'_>, timestamp_delta: i64, offset_delta: usize) -> Self {
        let mut fields = vec![
            Field::Byte(0),
            Field::Varint(timestamp_delta),
            Field::Varint(offset_delta as i64),
        ];
        let nullable = |fields: &mut Vec<Field>, bytes: Option<&[u8]>| match bytes {
            None => fields.push(Field::Varint(-1)),
            Some(bytes) => {
                fields.push(Field::Varint(bytes.len() as i64));
                fields.push(Field::Bytes(bytes.to_vec()));
            }
        };
        nullable(&mut fields, record.key);
        nullable(&mut fields, record.value);
        fields.push(Field::Varint(record.headers.len() as i64));
        for header in record.headers {
            nullable(&mut fields, Some(header.key.as_bytes()));
            nullable(&mut fields, header.value);
        }
        RecordFields { length: None, fields }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        for field in &self.fields {
            match field {
                Field::Byte(byte) => body.push(*byte),
                Field::Varint(value) => put_varint(&mut body, *value),
                Field::Bytes(bytes) => body.extend_from_slice(bytes),
            }
        }
        put_varint(out, self.length.unwrap_or(body.len() as i64));
        out.extend_from_slice(&body);
    }
}

/// Zigzag varint, written here independently of the codec's own.
fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push(zigzag as u8 | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Header fields a corruption can change, with their width in bytes.
#[derive(Debug, Clone, Copy)]
enum HeaderField {
    RecordCount,
    LastOffsetDelta,
    BaseTimestamp,
    MaxTimestamp,
    Attributes,
    ProducerId,
    BatchLength,
}

impl HeaderField {
    fn place(self) -> (usize, usize) {
        match self {
            HeaderField::RecordCount => (field::RECORD_COUNT, 4),
            HeaderField::LastOffsetDelta => (field::LAST_OFFSET_DELTA, 4),
            HeaderField::BaseTimestamp => (field::BASE_TIMESTAMP, 8),
            HeaderField::MaxTimestamp => (field::MAX_TIMESTAMP, 8),
            HeaderField::Attributes => (field::ATTRIBUTES, 2),
            HeaderField::ProducerId => (field::PRODUCER_ID, 8),
            HeaderField::BatchLength => (field::BATCH_LENGTH, 4),
        }
    }
}

#[derive(Debug, Clone)]
enum Corruption {
    /// A record's length prefix no longer matches its fields.
    RecordLength {
        record: usize,
        length: i64,
    },
    /// A varint field (a delta, a length, a count) takes another value,
    /// or a byte string another length.
    FieldValue {
        record: usize,
        field: usize,
        value: i64,
    },
    /// A small change of a varint field: off-by-one lengths and deltas.
    FieldNudge {
        record: usize,
        field: usize,
        delta: i8,
    },
    DropField {
        record: usize,
        field: usize,
    },
    InsertField {
        record: usize,
        field: usize,
        value: i64,
    },
    DropRecord {
        record: usize,
    },
    DuplicateRecord {
        record: usize,
    },
    SwapRecords {
        first: usize,
        second: usize,
    },
    HeaderSet {
        field: HeaderField,
        value: u64,
    },
    HeaderNudge {
        field: HeaderField,
        delta: i8,
    },
    /// Bytes cut from the end of the batch.
    Truncate {
        bytes: u8,
    },
    /// Bytes added after the last record.
    Append {
        bytes: Vec<u8>,
    },
    /// One byte of the records changed.
    Flip {
        at: usize,
        mask: u8,
    },
}

fn header_field() -> impl Strategy<Value = HeaderField> {
    prop_oneof![
        Just(HeaderField::RecordCount),
        Just(HeaderField::LastOffsetDelta),
        Just(HeaderField::BaseTimestamp),
        Just(HeaderField::MaxTimestamp),
        Just(HeaderField::Attributes),
        Just(HeaderField::ProducerId),
        Just(HeaderField::BatchLength),
    ]
}

fn varint_value() -> impl Strategy<Value = i64> {
    prop_oneof![-3i64..70, any::<i32>().prop_map(i64::from), any::<i64>()]
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        (any::<usize>(), varint_value())
            .prop_map(|(record, length)| Corruption::RecordLength { record, length }),
        (any::<usize>(), any::<usize>(), varint_value())
            .prop_map(|(record, field, value)| Corruption::FieldValue { record, field, value }),
        (any::<usize>(), any::<usize>(), -2i8..=2)
            .prop_map(|(record, field, delta)| Corruption::FieldNudge { record, field, delta }),
        (any::<usize>(), any::<usize>()).prop_map(|(record, field)| Corruption::DropField { record, field }),
        (any::<usize>(), any::<usize>(), varint_value())
            .prop_map(|(record, field, value)| Corruption::InsertField { record, field, value }),
        any::<usize>().prop_map(|record| Corruption::DropRecord { record }),
        any::<usize>().prop_map(|record| Corruption::DuplicateRecord { record }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(first, second)| Corruption::SwapRecords { first, second }),
        (header_field(), any::<u64>()).prop_map(|(field, value)| Corruption::HeaderSet { field, value }),
        (header_field(), -2i8..=2).prop_map(|(field, delta)| Corruption::HeaderNudge { field, delta }),
        any::<u8>().prop_map(|bytes| Corruption::Truncate { bytes: bytes % 16 }),
        prop::collection::vec(any::<u8>(), 1..12).prop_map(|bytes| Corruption::Append { bytes }),
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Corruption::Flip { at, mask }),
    ]
}

/// Owned parts of a record, from which the borrowed `Record` is made.
#[derive(Debug, Clone)]
struct OwnedRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: i64,
}

fn owned_record() -> impl Strategy<Value = OwnedRecord> {
    let bytes = |max| prop::option::of(prop::collection::vec(any::<u8>(), 0..max));
    let header_key = prop::collection::vec(b'a'..=b'z', 0..5).prop_map(|k| String::from_utf8(k).unwrap());
    (
        bytes(10),
        bytes(20),
        prop::collection::vec((header_key, bytes(6)), 0..3),
        prop_oneof![1_700_000_000_000i64..1_700_000_100_000, any::<i64>()],
    )
        .prop_map(|(key, value, headers, timestamp_ms)| OwnedRecord {
            key,
            value,
            headers,
            timestamp_ms,
        })
}

/// What one case was made of.
#[derive(Debug, Clone)]
struct Case {
    records: Vec<OwnedRecord>,
    corruptions: Vec<Corruption>,
    base_offset: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(owned_record(), 1..6),
        prop::collection::vec(corruption(), 1..4),
        prop_oneof![0u64..1_000_000, Just(u64::MAX - 2), any::<u64>()],
    )
        .prop_map(|(records, corruptions, base_offset)| Case {
            records,
            corruptions,
            base_offset,
        })
}

/// Encodes the case's records with the codec, checks that the field model
/// lays them out the same way, and returns the header and the model.
fn encode(records: &[OwnedRecord]) -> (Vec<u8>, Vec<RecordFields>) {
    let headers: Vec<Vec<Header<'_>>> = records
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .map(|(key, value)| Header {
                    key,
                    value: value.as_deref(),
                })
                .collect()
        })
        .collect();
    let views: Vec<Record<'_>> = records
        .iter()
        .zip(&headers)
        .map(|(r, headers)| Record {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers,
            timestamp_ms: Some(r.timestamp_ms),
        })
        .collect();
    let encoded = encode_to_vec(&views, 0, LIMITS).unwrap();
    let base_timestamp_ms = records[0].timestamp_ms;
    let model: Vec<RecordFields> = views
        .iter()
        .enumerate()
        .map(|(delta, record)| {
            RecordFields::of(
                record,
                record.timestamp_ms.unwrap().wrapping_sub(base_timestamp_ms),
                delta,
            )
        })
        .collect();
    let mut rebuilt = encoded[..HEADER_BYTES].to_vec();
    for record in &model {
        record.write(&mut rebuilt);
    }
    assert_eq!(
        rebuilt, encoded,
        "the field model lays records out as the codec does"
    );
    (encoded[..HEADER_BYTES].to_vec(), model)
}

/// Applies the corruptions and returns the damaged batch, its batch length
/// set to the bytes there are (unless a corruption set it) and its CRC
/// recomputed.
fn corrupt(mut header: Vec<u8>, mut records: Vec<RecordFields>, corruptions: &[Corruption]) -> Vec<u8> {
    let mut length_set = false;
    let mut truncate = 0usize;
    let mut append = Vec::new();
    let mut flips = Vec::new();
    for corruption in corruptions {
        match corruption {
            Corruption::RecordLength { record, length } if !records.is_empty() => {
                let record = pick(*record, records.len());
                records[record].length = Some(*length);
            }
            Corruption::FieldValue { record, field, value } if !records.is_empty() => {
                let record = pick(*record, records.len());
                let fields = &mut records[record].fields;
                if fields.is_empty() {
                    continue;
                }
                let at = pick(*field, fields.len());
                match &mut fields[at] {
                    Field::Byte(byte) => *byte = *value as u8,
                    Field::Varint(varint) => *varint = *value,
                    Field::Bytes(bytes) => bytes.resize((value.unsigned_abs() % 40) as usize, b'x'),
                }
            }
            Corruption::FieldNudge { record, field, delta } if !records.is_empty() => {
                let record = pick(*record, records.len());
                let fields = &mut records[record].fields;
                if fields.is_empty() {
                    continue;
                }
                // The nearest varint at or after the chosen field.
                let start = pick(*field, fields.len());
                if let Some(Field::Varint(varint)) =
                    fields[start..].iter_mut().find(|f| matches!(f, Field::Varint(_)))
                {
                    *varint = varint.wrapping_add(i64::from(*delta));
                }
            }
            Corruption::DropField { record, field } if !records.is_empty() => {
                let record = pick(*record, records.len());
                let fields = &mut records[record].fields;
                if !fields.is_empty() {
                    let at = pick(*field, fields.len());
                    fields.remove(at);
                }
            }
            Corruption::InsertField { record, field, value } if !records.is_empty() => {
                let record = pick(*record, records.len());
                let fields = &mut records[record].fields;
                let at = pick(*field, fields.len() + 1);
                fields.insert(at, Field::Varint(*value));
            }
            Corruption::DropRecord { record } if records.len() > 1 => {
                let record = pick(*record, records.len());
                records.remove(record);
            }
            Corruption::DuplicateRecord { record } if !records.is_empty() => {
                let record = pick(*record, records.len());
                let copy = records[record].clone();
                records.push(copy);
            }
            Corruption::SwapRecords { first, second } if !records.is_empty() => {
                let (first, second) = (pick(*first, records.len()), pick(*second, records.len()));
                records.swap(first, second);
            }
            Corruption::HeaderSet { field, value } => {
                let (at, width) = field.place();
                header[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                length_set |= matches!(field, HeaderField::BatchLength);
            }
            Corruption::HeaderNudge { field, delta } => {
                let (at, width) = field.place();
                let mut raw = [0u8; 8];
                raw[..width].copy_from_slice(&header[at..at + width]);
                let value = u64::from_le_bytes(raw).wrapping_add(i64::from(*delta) as u64);
                header[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                length_set |= matches!(field, HeaderField::BatchLength);
            }
            Corruption::Truncate { bytes } => truncate += usize::from(*bytes),
            Corruption::Append { bytes } => append.extend_from_slice(bytes),
            Corruption::Flip { at, mask } => flips.push((*at, *mask)),
            _ => {}
        }
    }
    let mut batch = header;
    for record in &records {
        record.write(&mut batch);
    }
    batch.extend_from_slice(&append);
    for (at, mask) in flips {
        let records_bytes = batch.len() - HEADER_BYTES;
        if records_bytes > 0 {
            batch[HEADER_BYTES + pick(at, records_bytes)] ^= mask;
        }
    }
    batch.truncate(batch.len().saturating_sub(truncate).max(HEADER_BYTES));
    if !length_set {
        let length = (batch.len() - 12) as u32;
        batch[field::BATCH_LENGTH..][..4].copy_from_slice(&length.to_le_bytes());
    }
    let crc = compute_crc(&batch);
    batch[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
    batch
}

/// The element an arbitrary number picks among `len`.
fn pick(chosen: usize, len: usize) -> usize {
    chosen % len
}

/// How the cases ended, to check that the damage reached the decoder.
#[derive(Debug, Default)]
struct Outcomes {
    cases: Cell<u32>,
    valid: Cell<u32>,
    record_errors: Cell<u32>,
}

fn bump(cell: &Cell<u32>) {
    cell.set(cell.get() + 1);
}

fn check(case: &Case, outcomes: &Outcomes) -> Result<(), TestCaseError> {
    let (header, model) = encode(&case.records);
    let mut bytes = corrupt(header, model, &case.corruptions);
    stamp_base_offset(&mut bytes, case.base_offset);
    bump(&outcomes.cases);

    // The check a batch from a client gets: when it passes, every record
    // decodes and agrees with the header.
    match validate_encoded(&bytes, LIMITS) {
        Ok(header) => {
            bump(&outcomes.valid);
            let batch = Batch::new(Bytes::from(bytes.clone())).expect("a validated batch verifies");
            let records: Vec<_> = batch
                .records()
                .collect::<Result<_, _>>()
                .expect("a validated batch's records decode");
            prop_assert_eq!(records.len() as u64, u64::from(header.record_count));
            for (i, record) in records.iter().enumerate() {
                prop_assert_eq!(record.offset, header.base_offset.saturating_add(i as u64));
                prop_assert_eq!(record.headers().count() as u32, record.header_count());
            }
            let max_timestamp_ms = records.iter().map(|r| r.timestamp_ms).max();
            prop_assert_eq!(max_timestamp_ms, Some(header.max_timestamp_ms));
        }
        Err(FormatError::Record { problem, .. }) => {
            bump(&outcomes.record_errors);
            // Display must not panic either.
            let _ = problem.to_string();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }

    // The check a stored batch gets (CRC only), then lazy decoding: it may
    // fail, but every record it yields sits where the header says.
    if let Ok(batch) = Batch::new(Bytes::from(bytes)) {
        let header = *batch.header();
        let mut decoded = 0u32;
        let mut failed = false;
        for (i, result) in batch.records().enumerate() {
            prop_assert!(!failed, "records after an error");
            match result {
                Ok(record) => {
                    prop_assert_eq!(record.offset, header.base_offset.saturating_add(i as u64));
                    let _ = record.headers().count();
                    decoded += 1;
                }
                Err(error) => {
                    prop_assert!(matches!(error, FormatError::Record { .. }), "{error}");
                    failed = true;
                }
            }
        }
        prop_assert!(decoded <= header.record_count);
        if !failed {
            prop_assert_eq!(decoded, header.record_count);
        }
    }
    Ok(())
}

#[test]
fn corrupted_batches_are_refused_by_the_record_decoder_without_panicking() {
    let cases = 3000;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let outcomes = Outcomes::default();
    runner.run(&case(), |case| check(&case, &outcomes)).unwrap();

    // The point of the structure-aware corruption: a good share of cases
    // get past the header and the CRC and fail in the record decoder, and
    // some damage (a swapped pair of equal records, a nudge undone by
    // another) still leaves a valid batch.
    let (all, records, valid) = (
        outcomes.cases.get(),
        outcomes.record_errors.get(),
        outcomes.valid.get(),
    );
    assert!(all >= cases, "{all} cases ran");
    assert!(
        records * 4 >= all,
        "only {records} of {all} cases reached the record decoder"
    );
    assert!(valid > 0, "no case stayed valid");
}

#[test]
fn a_record_length_past_the_batch_is_a_record_error() {
    // A fixed case of the kind above, kept as a named example.
    let record = OwnedRecord {
        key: Some(b"k".to_vec()),
        value: Some(b"value".to_vec()),
        headers: Vec::new(),
        timestamp_ms: 1_700_000_000_000,
    };
    let (header, model) = encode(&[record]);
    let bytes = corrupt(
        header,
        model,
        &[Corruption::RecordLength {
            record: 0,
            length: 40,
        }],
    );
    assert_eq!(
        validate_encoded(&bytes, LIMITS),
        Err(FormatError::Record {
            index: 0,
            position: HEADER_BYTES,
            problem: RecordProblem::PastBatchEnd { length_bytes: 40 },
        })
    );
}

proptest! {
    /// Unstructured bytes, for the header checks before the records: most
    /// fail there, and none may panic.
    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..200), reseal in any::<bool>()) {
        if bytes.len() > field::MAGIC {
            bytes[field::MAGIC] = spool_format::batch::MAGIC;
        }
        if reseal && bytes.len() >= HEADER_BYTES {
            let crc = compute_crc(&bytes);
            bytes[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = validate_encoded(&bytes, LIMITS);
        if let Ok(batch) = Batch::new(Bytes::from(bytes)) {
            for record in batch.records() {
                let _ = record.map(|r| r.headers().count());
            }
        }
    }
}
