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

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::varint;

/// Magic byte of Spool batch format version 1.
pub const MAGIC: u8 = 0x53;

/// Size of the fixed batch header, in bytes.
pub const HEADER_BYTES: usize = 61;

/// Bytes before the batch-length field's end: the length counts the rest.
pub const LENGTH_PREFIX_BYTES: usize = 12;

pub(crate) mod field {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORD_COUNT: usize = 57;
}

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

/// Header fields that the writer and readers look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    /// Bytes after the length field; the whole batch is this plus 12.
    pub batch_length: u32,
    pub leader_epoch: i32,
    pub magic: u8,
    pub crc: u32,
    pub attributes: u16,
    pub last_offset_delta: u32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: u32,
}

impl BatchHeader {
    /// Parses the fixed header from the start of `bytes`, checking only
    /// what can be checked without the rest of the batch.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < HEADER_BYTES {
            return Err(format!(
                "{} bytes are too few for a {HEADER_BYTES}-byte batch header",
                bytes.len()
            ));
        }
        let header = BatchHeader {
            base_offset: read_u64(bytes, field::BASE_OFFSET),
            batch_length: read_u32(bytes, field::BATCH_LENGTH),
            leader_epoch: read_u32(bytes, field::LEADER_EPOCH) as i32,
            magic: bytes[field::MAGIC],
            crc: read_u32(bytes, field::CRC),
            attributes: read_u16(bytes, field::ATTRIBUTES),
            last_offset_delta: read_u32(bytes, field::LAST_OFFSET_DELTA),
            base_timestamp_ms: read_u64(bytes, field::BASE_TIMESTAMP) as i64,
            max_timestamp_ms: read_u64(bytes, field::MAX_TIMESTAMP) as i64,
            producer_id: read_u64(bytes, field::PRODUCER_ID) as i64,
            producer_epoch: read_u16(bytes, field::PRODUCER_EPOCH) as i16,
            base_sequence: read_u32(bytes, field::BASE_SEQUENCE) as i32,
            record_count: read_u32(bytes, field::RECORD_COUNT),
        };
        if header.magic != MAGIC {
            return Err(format!("magic byte {:#04x} is not {MAGIC:#04x}", header.magic));
        }
        if (header.batch_length as usize) < HEADER_BYTES - LENGTH_PREFIX_BYTES {
            return Err(format!("batch length {} is too small", header.batch_length));
        }
        if header.record_count == 0 {
            return Err("batch holds no records".into());
        }
        if header.last_offset_delta != header.record_count - 1 {
            return Err(format!(
                "last offset delta {} does not match {} records",
                header.last_offset_delta, header.record_count
            ));
        }
        Ok(header)
    }

    /// Size of the whole batch in bytes.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + LENGTH_PREFIX_BYTES
    }

    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }
}

/// The CRC stored in a batch: CRC-32 (IEEE) of everything after the field.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32fast::hash(&batch[field::ATTRIBUTES..])
}

/// Checks a whole batch as read from disk: header, exact length and CRC.
pub fn verify(batch: &[u8]) -> std::result::Result<BatchHeader, String> {
    let header = BatchHeader::parse(batch)?;
    if header.total_bytes() != batch.len() {
        return Err(format!(
            "batch length {} does not match the {} bytes given",
            header.total_bytes(),
            batch.len()
        ));
    }
    let crc = compute_crc(batch);
    if crc != header.crc {
        return Err(format!(
            "checksum {crc:#010x} does not match stored {:#010x}",
            header.crc
        ));
    }
    Ok(header)
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
pub fn plan(records: &[Record<'_>], now_ms: i64, limits: BatchLimits) -> Result<BatchPlan> {
    if records.is_empty() {
        return Err(Error::invalid_batch("a batch needs at least one record"));
    }
    let record_count = u32::try_from(records.len())
        .ok()
        .filter(|&n| n < i32::MAX as u32)
        .ok_or_else(|| Error::invalid_batch("too many records in one batch"))?;
    let base_timestamp_ms = records[0].timestamp_ms.unwrap_or(now_ms);
    let mut max_timestamp_ms = i64::MIN;
    let mut total_bytes = HEADER_BYTES;
    for (delta, record) in records.iter().enumerate() {
        let timestamp = record.timestamp_ms.unwrap_or(now_ms);
        max_timestamp_ms = max_timestamp_ms.max(timestamp);
        let body = record_body_len(record, timestamp.wrapping_sub(base_timestamp_ms), delta)?;
        if body as u64 > limits.record_bytes_max {
            return Err(Error::LimitExceeded {
                limit: "record_bytes_max",
                actual: body as u64,
                max: limits.record_bytes_max,
            });
        }
        total_bytes += varint::len_i64(body as i64) + body;
        if total_bytes as u64 > limits.batch_bytes_max {
            return Err(Error::LimitExceeded {
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

fn record_body_len(record: &Record<'_>, timestamp_delta: i64, offset_delta: usize) -> Result<usize> {
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

fn nullable_len(bytes: Option<&[u8]>) -> Result<usize> {
    match bytes {
        None => Ok(varint::len_i64(-1)),
        Some(bytes) if bytes.len() >= i32::MAX as usize => Err(Error::invalid_batch(
            "a key, value or header is larger than 2 GiB",
        )),
        Some(bytes) => Ok(varint::len_i64(bytes.len() as i64) + bytes.len()),
    }
}

/// Encodes `records` into `out`, which must be exactly `plan.total_bytes`
/// long, with base offset `base_offset`, and returns the CRC written.
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
pub fn encode_to_vec(records: &[Record<'_>], now_ms: i64, limits: BatchLimits) -> Result<Vec<u8>> {
    let plan = plan(records, now_ms, limits)?;
    let mut out = vec![0u8; plan.total_bytes];
    encode(&mut out, 0, records, &plan, now_ms);
    Ok(out)
}

/// Fully checks a batch that arrived already encoded: header, length, CRC,
/// and that its records decode and number exactly what the header says.
/// Returns the header; the caller stamps the base offset.
pub fn validate_encoded(batch: &[u8], limits: BatchLimits) -> Result<BatchHeader> {
    if batch.len() as u64 > limits.batch_bytes_max {
        return Err(Error::LimitExceeded {
            limit: "batch_bytes_max",
            actual: batch.len() as u64,
            max: limits.batch_bytes_max,
        });
    }
    let header = verify(batch).map_err(Error::invalid_batch)?;
    // Fields this version does not support must hold their neutral values,
    // so a stored batch never claims compression, transactions or an
    // idempotent producer it does not have.
    if header.attributes != 0 {
        return Err(Error::invalid_batch(format!(
            "attributes {:#06x} are not supported (no compression, transactions or control batches)",
            header.attributes
        )));
    }
    if header.producer_id != -1 || header.producer_epoch != -1 || header.base_sequence != -1 {
        return Err(Error::invalid_batch(
            "producer id, epoch and base sequence must be -1",
        ));
    }
    let mut max_timestamp_ms = i64::MIN;
    let mut count = 0u32;
    let mut at = HEADER_BYTES;
    while at < batch.len() {
        let (record, used) = decode_record(&batch[at..], header.base_timestamp_ms)
            .map_err(|reason| Error::invalid_batch(format!("record {count}: {reason}")))?;
        if record.body_bytes as u64 > limits.record_bytes_max {
            return Err(Error::LimitExceeded {
                limit: "record_bytes_max",
                actual: record.body_bytes as u64,
                max: limits.record_bytes_max,
            });
        }
        if record.offset_delta != count {
            return Err(Error::invalid_batch(format!(
                "record {count} has offset delta {}",
                record.offset_delta
            )));
        }
        for item in record.headers() {
            let (key, _) = item.map_err(Error::invalid_batch)?;
            std::str::from_utf8(key)
                .map_err(|_| Error::invalid_batch(format!("record {count}: header key is not UTF-8")))?;
        }
        max_timestamp_ms = max_timestamp_ms.max(record.timestamp_ms);
        count += 1;
        at += used;
    }
    if count != header.record_count {
        return Err(Error::invalid_batch(format!(
            "header says {} records, found {count}",
            header.record_count
        )));
    }
    // The time index and retention trust the header's maximum timestamp.
    if header.max_timestamp_ms != max_timestamp_ms {
        return Err(Error::invalid_batch(format!(
            "header says the largest timestamp is {}, the records say {max_timestamp_ms}",
            header.max_timestamp_ms
        )));
    }
    Ok(header)
}

/// Writes the base offset into an encoded batch. Outside the CRC.
pub fn stamp_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[field::BASE_OFFSET..][..8].copy_from_slice(&base_offset.to_le_bytes());
}

/// A stored batch: owned bytes (usually a slice of a segment mapping) that
/// passed [`verify`] when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    header: BatchHeader,
    bytes: Bytes,
}

impl Batch {
    /// Wraps bytes that hold exactly one batch, checking its CRC.
    pub fn new(bytes: Bytes) -> std::result::Result<Self, String> {
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

    /// Decodes the records. A record that does not decode ends the
    /// iteration with an error; the CRC makes that a bug, not a disk fault.
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

/// Iterator over a batch's records.
#[derive(Debug)]
pub struct Records<'a> {
    batch: &'a Batch,
    at: usize,
    index: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.batch.header.record_count {
            return None;
        }
        let bytes: &'a [u8] = &self.batch.bytes[..];
        let header = &self.batch.header;
        match decode_record(&bytes[self.at..], header.base_timestamp_ms) {
            Ok((raw, used)) => {
                let position = self.at;
                self.at += used;
                self.index += 1;
                Some(Ok(RecordView {
                    offset: header.base_offset + u64::from(raw.offset_delta),
                    timestamp_ms: raw.timestamp_ms,
                    key: raw.key,
                    value: raw.value,
                    headers_raw: raw.headers_raw,
                    header_count: raw.header_count,
                    position_in_batch: position,
                }))
            }
            Err(reason) => {
                self.index = header.record_count;
                Some(Err(Error::Corrupt {
                    segment_base: header.base_offset,
                    position: self.at as u64,
                    reason,
                }))
            }
        }
    }
}

/// One decoded record, borrowing from its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers_raw: &'a [u8],
    header_count: u32,
    position_in_batch: usize,
}

impl<'a> RecordView<'a> {
    /// The record's headers as `(key, value)`; keys were checked to be
    /// UTF-8 when the batch was accepted.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        HeaderIter {
            rest: self.headers_raw,
            remaining: self.header_count,
        }
        .filter_map(|item| {
            let (key, value) = item.ok()?;
            Some((std::str::from_utf8(key).ok()?, value))
        })
    }

    pub fn header_count(&self) -> u32 {
        self.header_count
    }
}

struct RawRecord<'a> {
    body_bytes: usize,
    offset_delta: u32,
    timestamp_ms: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers_raw: &'a [u8],
    header_count: u32,
}

impl<'a> RawRecord<'a> {
    fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            rest: self.headers_raw,
            remaining: self.header_count,
        }
    }
}

struct HeaderIter<'a> {
    rest: &'a [u8],
    remaining: u32,
}

type HeaderItem<'a> = std::result::Result<(&'a [u8], Option<&'a [u8]>), String>;

impl<'a> Iterator for HeaderIter<'a> {
    type Item = HeaderItem<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let result = (|| {
            let mut cursor = Cursor {
                bytes: self.rest,
                at: 0,
            };
            let key = cursor.nullable()?.ok_or("header key is null")?;
            let value = cursor.nullable()?;
            self.rest = &self.rest[cursor.at..];
            Ok((key, value))
        })();
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result)
    }
}

/// Decodes one length-prefixed record from the start of `input`.
fn decode_record(
    input: &[u8],
    base_timestamp_ms: i64,
) -> std::result::Result<(RawRecord<'_>, usize), String> {
    let (body_len, prefix) = varint::get_i32(input).ok_or("record length is not a varint")?;
    let body_len = usize::try_from(body_len).map_err(|_| "negative record length")?;
    let end = prefix
        .checked_add(body_len)
        .filter(|&end| end <= input.len())
        .ok_or("record runs past the end of its batch")?;
    let mut cursor = Cursor {
        bytes: &input[prefix..end],
        at: 0,
    };
    let _attributes = cursor.byte()?;
    let timestamp_delta = cursor.varlong()?;
    let offset_delta = u32::try_from(cursor.varint()?).map_err(|_| "negative offset delta")?;
    let key = cursor.nullable()?;
    let value = cursor.nullable()?;
    let header_count = u32::try_from(cursor.varint()?).map_err(|_| "negative header count")?;
    let headers_start = cursor.at;
    for _ in 0..header_count {
        cursor.nullable()?.ok_or("header key is null")?;
        cursor.nullable()?;
    }
    if cursor.at != cursor.bytes.len() {
        return Err("record has trailing bytes".into());
    }
    let headers_raw = &cursor.bytes[headers_start..];
    Ok((
        RawRecord {
            body_bytes: body_len,
            offset_delta,
            timestamp_ms: base_timestamp_ms.wrapping_add(timestamp_delta),
            key,
            value,
            headers_raw,
            header_count,
        },
        end,
    ))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> std::result::Result<u8, String> {
        let byte = *self.bytes.get(self.at).ok_or("record is truncated")?;
        self.at += 1;
        Ok(byte)
    }

    fn varlong(&mut self) -> std::result::Result<i64, String> {
        let (value, used) = varint::get_i64(&self.bytes[self.at..]).ok_or("bad varlong")?;
        self.at += used;
        Ok(value)
    }

    fn varint(&mut self) -> std::result::Result<i32, String> {
        let (value, used) = varint::get_i32(&self.bytes[self.at..]).ok_or("bad varint")?;
        self.at += used;
        Ok(value)
    }

    fn nullable(&mut self) -> std::result::Result<Option<&'a [u8]>, String> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("length {len} is negative"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or("field runs past the end of its record")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(Some(slice))
    }
}

pub(crate) fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
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

    #[test]
    fn encode_then_decode() {
        let mut bytes = sample();
        stamp_base_offset(&mut bytes, 40);
        let batch = Batch::new(Bytes::from(bytes)).unwrap();
        assert_eq!(batch.base_offset(), 40);
        assert_eq!(batch.last_offset(), 42);
        assert_eq!(batch.header().base_timestamp_ms, 1_700_000_000_000);
        assert_eq!(batch.header().max_timestamp_ms, 1_700_000_000_500);
        let records: Vec<_> = batch.records().collect::<Result<_>>().unwrap();
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
            Error::LimitExceeded {
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
            Error::LimitExceeded {
                limit: "batch_bytes_max",
                ..
            }
        ));
        assert!(matches!(plan(&[], 0, LIMITS), Err(Error::InvalidBatch { .. })));
    }

    #[test]
    fn validate_rejects_a_lying_record_count() {
        let mut bytes = sample();
        bytes[field::RECORD_COUNT..][..4].copy_from_slice(&2u32.to_le_bytes());
        bytes[field::LAST_OFFSET_DELTA..][..4].copy_from_slice(&1u32.to_le_bytes());
        let crc = compute_crc(&bytes);
        bytes[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            validate_encoded(&bytes, LIMITS),
            Err(Error::InvalidBatch { .. })
        ));
    }

    #[test]
    fn validate_rejects_a_false_max_timestamp_and_unsupported_attributes() {
        for (field_at, bytes) in [
            (field::MAX_TIMESTAMP, 0i64.to_le_bytes().to_vec()),
            (field::ATTRIBUTES, 1u16.to_le_bytes().to_vec()),
            (field::PRODUCER_ID, 7i64.to_le_bytes().to_vec()),
        ] {
            let mut batch = sample();
            batch[field_at..field_at + bytes.len()].copy_from_slice(&bytes);
            let crc = compute_crc(&batch);
            batch[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
            assert!(matches!(
                validate_encoded(&batch, LIMITS),
                Err(Error::InvalidBatch { .. })
            ));
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..400 {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if bytes.len() > field::MAGIC {
                bytes[field::MAGIC] = MAGIC;
            }
            let _ = validate_encoded(&bytes, LIMITS);
            let _ = decode_record(&bytes, 0);
        }
    }
}
