//! The codec's error type: why bytes are not a well-formed batch, or why
//! records cannot be encoded into one.

use crate::batch::{HEADER_BYTES, MAGIC};

/// Everything the batch codec can refuse.
///
/// Variants carry the values that were found wrong, so a caller can act on
/// them (which limit, which record) and wrap them in its own error: the
/// storage engine turns most of these into `InvalidBatch` for a batch a
/// client sent, and into `Corrupt` for bytes read from disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than a batch header.
    #[error("{len_bytes} bytes are too few for a {HEADER_BYTES}-byte batch header")]
    HeaderTruncated { len_bytes: usize },

    /// The magic byte names another format (or the bytes are no batch).
    #[error("magic byte {found:#04x} is not {MAGIC:#04x}")]
    BadMagic { found: u8 },

    /// The batch length field cannot even cover the rest of the header.
    #[error("batch length {batch_length} is too small")]
    BatchLengthTooSmall { batch_length: u32 },

    /// The header's record count is zero.
    #[error("batch holds no records")]
    NoRecords,

    /// The last offset delta does not fit the record count.
    #[error("last offset delta {last_offset_delta} does not match {record_count} records")]
    LastOffsetDeltaMismatch {
        last_offset_delta: u32,
        record_count: u32,
    },

    /// The header's length does not cover exactly the bytes given.
    #[error("batch length {header_bytes} does not match the {given_bytes} bytes given")]
    LengthMismatch { header_bytes: usize, given_bytes: usize },

    /// The checksum over the bytes after the CRC field does not match.
    #[error("checksum {computed:#010x} does not match stored {stored:#010x}")]
    CrcMismatch { computed: u32, stored: u32 },

    /// A named limit was exceeded (`record_bytes_max`, `batch_bytes_max`).
    #[error("{limit} exceeded: {actual} > {max}")]
    LimitExceeded {
        limit: &'static str,
        actual: u64,
        max: u64,
    },

    /// Encoding was asked for a batch of no records.
    #[error("a batch needs at least one record")]
    EmptyBatch,

    /// More records than a batch can count.
    #[error("{count} records are too many for one batch")]
    TooManyRecords { count: usize },

    /// A key, value or header of 2 GiB or more, which a varint length
    /// cannot describe.
    #[error("a key, value or header of {len_bytes} bytes is larger than 2 GiB")]
    FieldTooLarge { len_bytes: usize },

    /// Attributes this version does not support (compression,
    /// transactions, control batches).
    #[error(
        "attributes {attributes:#06x} are not supported (no compression, transactions or control batches)"
    )]
    UnsupportedAttributes { attributes: u16 },

    /// Producer fields that are neither all -1 (a plain batch) nor an
    /// idempotent producer's: producer id at least 0 with epoch and base
    /// sequence at least 0.
    #[error(
        "producer id, epoch and base sequence must be all -1 (a plain batch) or all at least 0 (an idempotent producer), not {producer_id}, {producer_epoch} and {base_sequence}"
    )]
    ProducerFieldsInvalid {
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    },

    /// One record does not decode. `index` counts records from 0 and
    /// `position` is the record's first byte within the batch.
    #[error("record {index} at byte {position} of its batch: {problem}")]
    Record {
        index: u32,
        position: usize,
        problem: RecordProblem,
    },

    /// The records decode but do not number what the header says.
    #[error("header says {header} records, found {found}")]
    RecordCountMismatch { header: u32, found: u32 },

    /// The header's max timestamp is not the largest record timestamp.
    #[error("header says the largest timestamp is {header_ms}, the records say {records_ms}")]
    MaxTimestampMismatch { header_ms: i64, records_ms: i64 },
}

/// What is wrong with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordProblem {
    /// A varint (or varlong) is truncated, too long, or out of its range.
    #[error("the {field} is not a valid varint")]
    BadVarint { field: &'static str },

    /// A length or count that must not be negative is.
    #[error("the {field} {value} is negative")]
    Negative { field: &'static str, value: i64 },

    /// The record's length runs past the end of its batch.
    #[error("the record's {length_bytes} bytes run past the end of its batch")]
    PastBatchEnd { length_bytes: usize },

    /// A field runs past the end given by the record's length.
    #[error("the {field} runs past the end of its record")]
    PastRecordEnd { field: &'static str },

    /// A header key is null; only header values may be.
    #[error("a header key is null")]
    NullHeaderKey,

    /// A header key is not UTF-8.
    #[error("a header key is not UTF-8")]
    HeaderKeyNotUtf8,

    /// Bytes are left between the last header and the record's end.
    #[error("the record has {len_bytes} bytes after its last header")]
    TrailingBytes { len_bytes: usize },

    /// The record's offset delta is not its place in the batch.
    #[error("the record's offset delta is {offset_delta}, not {expected}")]
    OffsetDelta { offset_delta: u32, expected: u32 },
}
