//! The record batch: Spool's unit of storage and I/O.
//!
//! The header has the fields of Kafka's record batch v2 at the same byte
//! positions, little-endian, with Spool's own magic byte and a CRC-32
//! (IEEE, crc32fast) over everything after the CRC field. Records are
//! encoded exactly as v2 encodes them. `docs/storage-format.md` gives the
//! layout byte by byte.
//!
//! Because the fields before the CRC (base offset, length, leader epoch,
//! magic) are outside the checksum, the partition stamps the base offset at
//! append time without touching the records or recomputing the CRC.
//!
//! Layout: `header.rs` holds the fixed header and the CRC, `record.rs` the
//! decoding of one record; this file plans and encodes batches, validates
//! batches that arrive encoded, and wraps stored ones in [`Batch`].

mod header;
mod record;

use bytes::Bytes;

pub use self::header::{
    BatchHeader, HEADER_BYTES, LENGTH_PREFIX_BYTES, MAGIC, ProducerFields, compute_crc, field,
    stamp_base_offset, stamp_leader_epoch, stamp_producer, verify,
};
pub use self::record::RecordView;
use self::record::decode_record;
use crate::error::{FormatError, RecordProblem};
use crate::varint;

/// One record to append. Borrowed, so a caller can point straight into a
/// request buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
    /// Milliseconds since the Unix epoch; `None` takes the append time.
    pub timestamp_ms: Option<i64>,
}

impl<'a> Record<'a> {
    /// A record with only a value.
    pub fn value(value: &'a [u8]) -> Self {
        Record {
            value: Some(value),
            ..Record::default()
        }
    }
}

/// A record header: a UTF-8 key and an optional value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Sizes and timestamps of a batch about to be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    pub total_bytes: usize,
    pub record_count: u32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
}

/// Limits a batch must respect.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub record_bytes_max: u64,
    pub batch_bytes_max: u64,
}

/// Computes the encoded size of `records`, checking every limit before a
/// byte is written. `now_ms` stands in for missing timestamps.
pub fn plan(records: &[Record<'_>], now_ms: i64, limits: BatchLimits) -> Result<BatchPlan, FormatError> {
    if records.is_empty() {
        return Err(FormatError::EmptyBatch);
    }
    let record_count = u32::try_from(records.len())
        .ok()
        .filter(|&n| n < i32::MAX as u32)
        .ok_or(FormatError::TooManyRecords { count: records.len() })?;
    let base_timestamp_ms = records[0].timestamp_ms.unwrap_or(now_ms);
    let mut max_timestamp_ms = i64::MIN;
    let mut total_bytes = HEADER_BYTES;
    for (delta, record) in records.iter().enumerate() {
        let timestamp = record.timestamp_ms.unwrap_or(now_ms);
        max_timestamp_ms = max_timestamp_ms.max(timestamp);
        let body = record_body_len(record, timestamp.wrapping_sub(base_timestamp_ms), delta)?;
        if body as u64 > limits.record_bytes_max {
            return Err(FormatError::LimitExceeded {
                limit: "record_bytes_max",
                actual: body as u64,
                max: limits.record_bytes_max,
            });
        }
        total_bytes += varint::len_i64(body as i64) + body;
        if total_bytes as u64 > limits.batch_bytes_max {
            return Err(FormatError::LimitExceeded {
                limit: "batch_bytes_max",
                actual: total_bytes as u64,
                max: limits.batch_bytes_max,
            });
        }
    }
    Ok(BatchPlan {
        total_bytes,
        record_count,
        base_timestamp_ms,
        max_timestamp_ms,
    })
}

fn record_body_len(
    record: &Record<'_>,
    timestamp_delta: i64,
    offset_delta: usize,
) -> Result<usize, FormatError> {
    let mut len = 1 // attributes
        + varint::len_i64(timestamp_delta)
        + varint::len_i64(offset_delta as i64)
        + nullable_len(record.key)?
        + nullable_len(record.value)?
        + varint::len_i64(record.headers.len() as i64);
    for header in record.headers {
        len += nullable_len(Some(header.key.as_bytes()))? + nullable_len(header.value)?;
    }
    Ok(len)
}

fn nullable_len(bytes: Option<&[u8]>) -> Result<usize, FormatError> {
    match bytes {
        None => Ok(varint::len_i64(-1)),
        Some(bytes) if bytes.len() >= i32::MAX as usize => Err(FormatError::FieldTooLarge {
            len_bytes: bytes.len(),
        }),
        Some(bytes) => Ok(varint::len_i64(bytes.len() as i64) + bytes.len()),
    }
}

/// Encodes `records` into `out`, which must be exactly `plan.total_bytes`
/// long, with base offset `base_offset`, and returns the CRC written.
///
/// # Panics
///
/// If `out` or `records` do not match `plan`: that is a caller's bug, not
/// bad input, since [`plan`] is what checks the records.
pub fn encode(
    out: &mut [u8],
    base_offset: u64,
    records: &[Record<'_>],
    plan: &BatchPlan,
    now_ms: i64,
) -> u32 {
    assert_eq!(out.len(), plan.total_bytes, "buffer does not match the plan");
    out[field::BASE_OFFSET..][..8].copy_from_slice(&base_offset.to_le_bytes());
    let batch_length = (plan.total_bytes - LENGTH_PREFIX_BYTES) as u32;
    out[field::BATCH_LENGTH..][..4].copy_from_slice(&batch_length.to_le_bytes());
    out[field::LEADER_EPOCH..][..4].copy_from_slice(&0i32.to_le_bytes());
    out[field::MAGIC] = MAGIC;
    out[field::ATTRIBUTES..][..2].copy_from_slice(&0u16.to_le_bytes());
    out[field::LAST_OFFSET_DELTA..][..4].copy_from_slice(&(plan.record_count - 1).to_le_bytes());
    out[field::BASE_TIMESTAMP..][..8].copy_from_slice(&plan.base_timestamp_ms.to_le_bytes());
    out[field::MAX_TIMESTAMP..][..8].copy_from_slice(&plan.max_timestamp_ms.to_le_bytes());
    out[field::PRODUCER_ID..][..8].copy_from_slice(&(-1i64).to_le_bytes());
    out[field::PRODUCER_EPOCH..][..2].copy_from_slice(&(-1i16).to_le_bytes());
    out[field::BASE_SEQUENCE..][..4].copy_from_slice(&(-1i32).to_le_bytes());
    out[field::RECORD_COUNT..][..4].copy_from_slice(&plan.record_count.to_le_bytes());

    let mut at = HEADER_BYTES;
    for (delta, record) in records.iter().enumerate() {
        let timestamp_delta = record
            .timestamp_ms
            .unwrap_or(now_ms)
            .wrapping_sub(plan.base_timestamp_ms);
        let body = record_body_len(record, timestamp_delta, delta).expect("checked by plan");
        at += varint::put_i64(&mut out[at..], body as i64);
        out[at] = 0; // record attributes: unused in v2
        at += 1;
        at += varint::put_i64(&mut out[at..], timestamp_delta);
        at += varint::put_i64(&mut out[at..], delta as i64);
        at += put_nullable(&mut out[at..], record.key);
        at += put_nullable(&mut out[at..], record.value);
        at += varint::put_i64(&mut out[at..], record.headers.len() as i64);
        for header in record.headers {
            at += put_nullable(&mut out[at..], Some(header.key.as_bytes()));
            at += put_nullable(&mut out[at..], header.value);
        }
    }
    assert_eq!(at, plan.total_bytes, "encoded size differs from the plan");
    let crc = compute_crc(out);
    out[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
    crc
}

#[inline]
fn put_nullable(out: &mut [u8], bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint::put_i64(out, -1),
        Some(bytes) => {
            let n = varint::put_i64(out, bytes.len() as i64);
            out[n..n + bytes.len()].copy_from_slice(bytes);
            n + bytes.len()
        }
    }
}

/// Encodes a batch into a new buffer (base offset 0). Clients use this to
/// send batches already in the storage format; tests use it everywhere.
pub fn encode_to_vec(
    records: &[Record<'_>],
    now_ms: i64,
    limits: BatchLimits,
) -> Result<Vec<u8>, FormatError> {
    let plan = plan(records, now_ms, limits)?;
    let mut out = vec![0u8; plan.total_bytes];
    encode(&mut out, 0, records, &plan, now_ms);
    Ok(out)
}

/// Fully checks a batch that arrived already encoded: header, length, CRC,
/// and that its records decode and number exactly what the header says.
/// Returns the header; the caller stamps the base offset.
pub fn validate_encoded(batch: &[u8], limits: BatchLimits) -> Result<BatchHeader, FormatError> {
    if batch.len() as u64 > limits.batch_bytes_max {
        return Err(FormatError::LimitExceeded {
            limit: "batch_bytes_max",
            actual: batch.len() as u64,
            max: limits.batch_bytes_max,
        });
    }
    let header = verify(batch)?;
    // Fields this version does not support must hold their neutral values,
    // so a stored batch never claims compression or transactions it does
    // not have; the producer fields are a plain batch's or an idempotent
    // producer's, never a mix.
    if header.attributes != 0 {
        return Err(FormatError::UnsupportedAttributes {
            attributes: header.attributes,
        });
    }
    ProducerFields {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
    }
    .check()?;
    let mut max_timestamp_ms = i64::MIN;
    let mut count = 0u32;
    let mut at = HEADER_BYTES;
    while at < batch.len() {
        let problem = |problem| FormatError::Record {
            index: count,
            position: at,
            problem,
        };
        let (record, used) = decode_record(&batch[at..], header.base_timestamp_ms).map_err(problem)?;
        if record.body_bytes as u64 > limits.record_bytes_max {
            return Err(FormatError::LimitExceeded {
                limit: "record_bytes_max",
                actual: record.body_bytes as u64,
                max: limits.record_bytes_max,
            });
        }
        if record.offset_delta != count {
            return Err(problem(RecordProblem::OffsetDelta {
                offset_delta: record.offset_delta,
                expected: count,
            }));
        }
        for item in record.headers() {
            let (key, _) = item.map_err(problem)?;
            std::str::from_utf8(key).map_err(|_| problem(RecordProblem::HeaderKeyNotUtf8))?;
        }
        max_timestamp_ms = max_timestamp_ms.max(record.timestamp_ms);
        // A batch holds fewer records than bytes, so the count cannot
        // overflow before the loop ends.
        count += 1;
        at += used;
    }
    if count != header.record_count {
        return Err(FormatError::RecordCountMismatch {
            header: header.record_count,
            found: count,
        });
    }
    // The time index and retention trust the header's maximum timestamp.
    if header.max_timestamp_ms != max_timestamp_ms {
        return Err(FormatError::MaxTimestampMismatch {
            header_ms: header.max_timestamp_ms,
            records_ms: max_timestamp_ms,
        });
    }
    Ok(header)
}

/// A stored batch: owned bytes (usually a slice of a segment mapping) that
/// passed [`verify`] when wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    header: BatchHeader,
    bytes: Bytes,
}

impl Batch {
    /// Wraps bytes that hold exactly one batch, checking its CRC.
    pub fn new(bytes: Bytes) -> Result<Self, FormatError> {
        let header = verify(&bytes)?;
        Ok(Batch { header, bytes })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    pub fn last_offset(&self) -> u64 {
        self.header.last_offset()
    }

    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// The batch exactly as stored.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Decodes the records. A record that does not decode, or whose offset
    /// delta is not its place in the batch, ends the iteration with an
    /// error; behind a good CRC that means the batch was encoded wrongly,
    /// since Spool validates every batch before storing it.
    pub fn records(&self) -> Records<'_> {
        Records {
            batch: self,
            at: HEADER_BYTES,
            index: 0,
        }
    }

    /// A zero-copy `Bytes` for a slice borrowed from this batch's records.
    pub fn slice_ref(&self, part: &[u8]) -> Bytes {
        self.bytes.slice_ref(part)
    }
}

/// Iterator over a batch's records: at most the header's record count, each
/// with the offset that its place in the batch gives it.
#[derive(Debug)]
pub struct Records<'a> {
    batch: &'a Batch,
    at: usize,
    index: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        let header = &self.batch.header;
        if self.index >= header.record_count {
            return None;
        }
        let bytes: &'a [u8] = &self.batch.bytes[..];
        let problem = |problem| FormatError::Record {
            index: self.index,
            position: self.at,
            problem,
        };
        let result = match decode_record(&bytes[self.at..], header.base_timestamp_ms) {
            Ok((raw, _)) if raw.offset_delta != self.index => Err(problem(RecordProblem::OffsetDelta {
                offset_delta: raw.offset_delta,
                expected: self.index,
            })),
            Ok((raw, used)) => {
                // The delta is at most the last offset delta, so this is at
                // most the header's last offset, which saturates.
                let offset = header.base_offset.saturating_add(u64::from(raw.offset_delta));
                Ok((RecordView::new(&raw, offset), used))
            }
            Err(reason) => Err(problem(reason)),
        };
        match result {
            Ok((view, used)) => {
                self.at += used;
                self.index += 1;
                Some(Ok(view))
            }
            Err(error) => {
                self.index = header.record_count;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        record_bytes_max: 1 << 20,
        batch_bytes_max: 8 << 20,
    };

    fn sample() -> Vec<u8> {
        let headers = [Header {
            key: "trace",
            value: Some(b"abc"),
        }];
        let records = [
            Record {
                key: Some(b"k1"),
                value: Some(b"hello"),
                headers: &headers,
                timestamp_ms: Some(1_700_000_000_000),
            },
            Record {
                key: None,
                value: None,
                headers: &[],
                timestamp_ms: Some(1_699_999_999_000),
            },
            Record::value(b"world"),
        ];
        encode_to_vec(&records, 1_700_000_000_500, LIMITS).unwrap()
    }

    /// Rewrites the CRC after a test changed bytes it covers.
    fn reseal(batch: &mut [u8]) {
        let crc = compute_crc(batch);
        batch[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn stamping_the_leader_epoch_keeps_the_crc_valid() {
        let mut bytes = sample();
        let crc = verify(&bytes).unwrap().crc;
        stamp_leader_epoch(&mut bytes, 7);
        let header = verify(&bytes).unwrap();
        assert_eq!(header.leader_epoch, 7);
        assert_eq!(header.crc, crc);
        assert_eq!(&bytes[field::LEADER_EPOCH..][..4], &7i32.to_le_bytes());
    }

    #[test]
    fn encode_then_decode() {
        let mut bytes = sample();
        stamp_base_offset(&mut bytes, 40);
        let batch = Batch::new(Bytes::from(bytes)).unwrap();
        assert_eq!(batch.base_offset(), 40);
        assert_eq!(batch.last_offset(), 42);
        assert_eq!(batch.header().base_timestamp_ms, 1_700_000_000_000);
        assert_eq!(batch.header().max_timestamp_ms, 1_700_000_000_500);
        let records: Vec<_> = batch.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].offset, 40);
        assert_eq!(records[0].key, Some(&b"k1"[..]));
        assert_eq!(records[0].value, Some(&b"hello"[..]));
        assert_eq!(
            records[0].headers().collect::<Vec<_>>(),
            [("trace", Some(&b"abc"[..]))]
        );
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].value, None);
        assert_eq!(records[1].timestamp_ms, 1_699_999_999_000);
        assert_eq!(records[2].timestamp_ms, 1_700_000_000_500);
        assert_eq!(records[2].offset, 42);
        validate_encoded(batch.bytes(), LIMITS).unwrap();
    }

    #[test]
    fn stamping_the_base_offset_keeps_the_crc_valid() {
        let mut bytes = sample();
        let before = verify(&bytes).unwrap().crc;
        stamp_base_offset(&mut bytes, u64::MAX / 2);
        assert_eq!(verify(&bytes).unwrap().crc, before);
    }

    #[test]
    fn a_base_offset_at_the_top_of_the_range_does_not_overflow() {
        // The base offset is outside the CRC, so any value can reach a
        // reader; offsets saturate instead of overflowing.
        let mut bytes = sample();
        stamp_base_offset(&mut bytes, u64::MAX - 1);
        let batch = Batch::new(Bytes::from(bytes)).unwrap();
        assert_eq!(batch.last_offset(), u64::MAX);
        assert_eq!(batch.header().next_offset(), u64::MAX);
        let offsets: Vec<_> = batch.records().map(|r| r.unwrap().offset).collect();
        assert_eq!(offsets, [u64::MAX - 1, u64::MAX, u64::MAX]);
    }

    #[test]
    fn every_single_bit_flip_after_the_crc_is_caught() {
        let original = sample();
        for byte in field::ATTRIBUTES..original.len() {
            for bit in 0..8 {
                let mut damaged = original.clone();
                damaged[byte] ^= 1 << bit;
                assert!(verify(&damaged).is_err(), "flip at {byte}.{bit} passed");
            }
        }
    }

    #[test]
    fn limits_are_enforced_before_encoding() {
        let big = vec![0u8; 2000];
        let limits = BatchLimits {
            record_bytes_max: 1000,
            batch_bytes_max: 1 << 20,
        };
        let err = plan(&[Record::value(&big)], 0, limits).unwrap_err();
        assert!(matches!(
            err,
            FormatError::LimitExceeded {
                limit: "record_bytes_max",
                ..
            }
        ));
        let limits = BatchLimits {
            record_bytes_max: 1 << 20,
            batch_bytes_max: 1000,
        };
        let err = plan(&[Record::value(&big)], 0, limits).unwrap_err();
        assert!(matches!(
            err,
            FormatError::LimitExceeded {
                limit: "batch_bytes_max",
                ..
            }
        ));
        assert_eq!(plan(&[], 0, LIMITS), Err(FormatError::EmptyBatch));
    }

    #[test]
    fn validate_rejects_a_lying_record_count() {
        let mut bytes = sample();
        bytes[field::RECORD_COUNT..][..4].copy_from_slice(&2u32.to_le_bytes());
        bytes[field::LAST_OFFSET_DELTA..][..4].copy_from_slice(&1u32.to_le_bytes());
        reseal(&mut bytes);
        assert_eq!(
            validate_encoded(&bytes, LIMITS),
            Err(FormatError::RecordCountMismatch { header: 2, found: 3 })
        );
    }

    #[test]
    fn validate_rejects_a_false_max_timestamp_and_unsupported_attributes() {
        for (field_at, bytes) in [
            (field::MAX_TIMESTAMP, 0i64.to_le_bytes().to_vec()),
            (field::ATTRIBUTES, 1u16.to_le_bytes().to_vec()),
            (field::PRODUCER_ID, 7i64.to_le_bytes().to_vec()),
            (field::PRODUCER_EPOCH, 3i16.to_le_bytes().to_vec()),
        ] {
            let mut batch = sample();
            batch[field_at..field_at + bytes.len()].copy_from_slice(&bytes);
            reseal(&mut batch);
            let error = validate_encoded(&batch, LIMITS).unwrap_err();
            assert!(
                matches!(
                    error,
                    FormatError::MaxTimestampMismatch { .. }
                        | FormatError::UnsupportedAttributes { attributes: 1 }
                        | FormatError::ProducerFieldsInvalid { .. }
                ),
                "{error}"
            );
        }
    }

    #[test]
    fn producer_fields_are_all_unset_or_all_set() {
        let mut batch = sample();
        let idempotent = ProducerFields {
            producer_id: 42,
            producer_epoch: 0,
            base_sequence: 7,
        };
        stamp_producer(&mut batch, idempotent);
        let header = validate_encoded(&batch, LIMITS).unwrap();
        assert_eq!(header.producer(), Some(idempotent));
        stamp_producer(&mut batch, ProducerFields::NONE);
        assert_eq!(validate_encoded(&batch, LIMITS).unwrap().producer(), None);
        for (producer_id, producer_epoch, base_sequence) in
            [(42, -1, 0), (42, 0, -1), (-1, 0, 0), (-2, 0, 0), (42, -3, 0)]
        {
            let fields = ProducerFields {
                producer_id,
                producer_epoch,
                base_sequence,
            };
            stamp_producer(&mut batch, fields);
            assert_eq!(
                validate_encoded(&batch, LIMITS),
                Err(FormatError::ProducerFieldsInvalid {
                    producer_id,
                    producer_epoch,
                    base_sequence
                }),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn records_refuse_an_offset_delta_out_of_place() {
        // The second record's offset delta (1, zigzag 0x02) becomes 2: the
        // CRC is recomputed, so only the record decoder can notice.
        let mut bytes = sample();
        // Record 0's one-byte length, then its body.
        let second = HEADER_BYTES + 1 + usize::from(bytes[HEADER_BYTES]) / 2;
        // Record 1: length and attributes (one byte each), timestamp delta.
        let (_, timestamp_delta_bytes) = varint::get_i64(&bytes[second + 2..]).unwrap();
        let offset_delta_at = second + 2 + timestamp_delta_bytes;
        assert_eq!(bytes[offset_delta_at], 0x02, "offset delta of record 1");
        bytes[offset_delta_at] = 0x04;
        reseal(&mut bytes);
        let batch = Batch::new(Bytes::from(bytes.clone())).unwrap();
        let results: Vec<_> = batch.records().collect();
        assert_eq!(results.len(), 2, "the error ends the iteration");
        assert_eq!(
            results[1],
            Err(FormatError::Record {
                index: 1,
                position: second,
                problem: RecordProblem::OffsetDelta {
                    offset_delta: 2,
                    expected: 1
                },
            })
        );
        assert!(matches!(
            validate_encoded(&bytes, LIMITS),
            Err(FormatError::Record {
                index: 1,
                problem: RecordProblem::OffsetDelta { .. },
                ..
            })
        ));
    }
}
