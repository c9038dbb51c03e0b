//! The fixed 61-byte batch header: its byte layout, parsing with the checks
//! that need no more than the header, and the CRC over the rest.

use crate::error::FormatError;

/// Magic byte of Spool batch format version 1.
pub const MAGIC: u8 = 0x53;

/// Size of the fixed batch header, in bytes.
pub const HEADER_BYTES: usize = 61;

/// Bytes before the batch-length field's end: the length counts the rest.
pub const LENGTH_PREFIX_BYTES: usize = 12;

/// Byte position of each header field from the start of the batch
/// (`docs/storage-format.md`, section 3.1).
pub mod field {
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
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < HEADER_BYTES {
            return Err(FormatError::HeaderTruncated {
                len_bytes: bytes.len(),
            });
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
            return Err(FormatError::BadMagic { found: header.magic });
        }
        if (header.batch_length as usize) < HEADER_BYTES - LENGTH_PREFIX_BYTES {
            return Err(FormatError::BatchLengthTooSmall {
                batch_length: header.batch_length,
            });
        }
        if header.record_count == 0 {
            return Err(FormatError::NoRecords);
        }
        if header.last_offset_delta != header.record_count - 1 {
            return Err(FormatError::LastOffsetDeltaMismatch {
                last_offset_delta: header.last_offset_delta,
                record_count: header.record_count,
            });
        }
        Ok(header)
    }

    /// Size of the whole batch in bytes.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + LENGTH_PREFIX_BYTES
    }

    /// Offset of the batch's last record. Saturates rather than wraps for a
    /// base offset near `u64::MAX`, which only a damaged header can hold.
    pub fn last_offset(&self) -> u64 {
        self.base_offset.saturating_add(u64::from(self.last_offset_delta))
    }

    pub fn next_offset(&self) -> u64 {
        self.last_offset().saturating_add(1)
    }

    /// The idempotent producer's fields, or `None` for a plain batch
    /// (producer id -1). Says nothing about whether the fields are valid:
    /// [`ProducerFields::check`] does.
    #[inline]
    pub fn producer(&self) -> Option<ProducerFields> {
        (self.producer_id != -1).then_some(ProducerFields {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
        })
    }
}

/// The fields an idempotent producer sets in a batch header: who sent the
/// batch (id and epoch) and the sequence number of its first record.
/// Kafka's meaning: each producer numbers the records it sends to a
/// partition 0, 1, 2, ..., so a batch sent twice is recognized by its
/// producer id and base sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    /// The fields of a plain batch, sent without a producer id.
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };

    /// Accepts the two shapes a batch may have: all three -1 (a plain
    /// batch), or producer id, epoch and base sequence all at least 0.
    pub fn check(self) -> Result<(), FormatError> {
        let plain = self == ProducerFields::NONE;
        let idempotent = self.producer_id >= 0 && self.producer_epoch >= 0 && self.base_sequence >= 0;
        if plain || idempotent {
            return Ok(());
        }
        Err(FormatError::ProducerFieldsInvalid {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
        })
    }
}

/// The CRC stored in a batch: CRC-32 (IEEE) of everything after the field.
/// `batch` must hold at least the header.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32fast::hash(&batch[field::ATTRIBUTES..])
}

/// Checks a whole batch as read from disk: header, exact length and CRC.
pub fn verify(batch: &[u8]) -> Result<BatchHeader, FormatError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_bytes() != batch.len() {
        return Err(FormatError::LengthMismatch {
            header_bytes: header.total_bytes(),
            given_bytes: batch.len(),
        });
    }
    let crc = compute_crc(batch);
    if crc != header.crc {
        return Err(FormatError::CrcMismatch {
            computed: crc,
            stored: header.crc,
        });
    }
    Ok(header)
}

/// Writes the base offset into an encoded batch. Outside the CRC, so the
/// checksum stays valid.
pub fn stamp_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[field::BASE_OFFSET..][..8].copy_from_slice(&base_offset.to_le_bytes());
}

/// Writes the leader epoch (Spool: the Raft term the batch was appended
/// in) into an encoded batch. Outside the CRC, like the base offset, so the
/// checksum stays valid and stamping costs four bytes.
pub fn stamp_leader_epoch(batch: &mut [u8], leader_epoch: i32) {
    batch[field::LEADER_EPOCH..][..4].copy_from_slice(&leader_epoch.to_le_bytes());
}

/// Writes the producer fields into an encoded batch and recomputes the
/// CRC, which covers them: for a client that numbers a batch after
/// encoding it. Returns the new CRC.
pub fn stamp_producer(batch: &mut [u8], fields: ProducerFields) -> u32 {
    batch[field::PRODUCER_ID..][..8].copy_from_slice(&fields.producer_id.to_le_bytes());
    batch[field::PRODUCER_EPOCH..][..2].copy_from_slice(&fields.producer_epoch.to_le_bytes());
    batch[field::BASE_SEQUENCE..][..4].copy_from_slice(&fields.base_sequence.to_le_bytes());
    let crc = compute_crc(batch);
    batch[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
    crc
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
