//! Records as the client sees them: [`Record`] to produce, [`ConsumedRecord`]
//! read back, and the conversions to and from the storage batch format.

use bytes::Bytes;
use spool_format::batch::{self, Batch, BatchLimits};
use spool_proto::v1;

use crate::error::{Error, Result};

/// A record header: a UTF-8 name and an optional value (absent is a null
/// value, not an empty one). Names may repeat; order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

impl Header {
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// A record to produce.
///
/// `key: None` is "no key" and `value: None` a null value (a tombstone), both
/// distinct from empty bytes. `timestamp_ms: None` lets the producer stamp
/// the time its batch is encoded (Unix epoch milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// A record with a value and nothing else.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// Sets the key, which chooses the partition.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the timestamp, in Unix epoch milliseconds.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Bytes this record takes as stored when it is the first of its batch:
    /// key, value, headers and their framing, what the server's
    /// `record_bytes_max` measures. Later records of a batch take a byte or
    /// two more for their offset and timestamp deltas.
    pub fn stored_bytes(&self) -> u64 {
        stored_bytes(
            self.key.as_ref().map(Bytes::len),
            self.value.as_ref().map(Bytes::len),
            self.headers
                .iter()
                .map(|header| (header.key.len(), header.value.as_ref().map(Bytes::len))),
        )
    }

    /// Bytes this record adds to an encoded batch, a close upper bound used
    /// for batching decisions (varint lengths counted at their maximum).
    pub fn encoded_bytes_estimate(&self) -> usize {
        const RECORD_OVERHEAD_BYTES: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
        let headers: usize = self
            .headers
            .iter()
            .map(|header| 10 + header.key.len() + header.value.as_ref().map_or(0, Bytes::len))
            .sum();
        RECORD_OVERHEAD_BYTES
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + headers
    }

    pub(crate) fn into_proto(self) -> v1::Record {
        v1::Record {
            key: self.key,
            value: self.value,
            headers: self
                .headers
                .into_iter()
                .map(|header| v1::Header {
                    key: header.key,
                    value: header.value,
                })
                .collect(),
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u32,
    pub offset: u64,
    /// Unix epoch milliseconds: the producer's timestamp, or the log append
    /// time if it gave none.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl ConsumedRecord {
    /// Bytes of key, value and headers: what "MB/s" counts in this crate.
    pub fn payload_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|header| header.key.len() + header.value.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }

    pub(crate) fn from_proto(partition: u32, record: v1::FetchedRecord) -> Self {
        ConsumedRecord {
            partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|header| Header {
                    key: header.key,
                    value: header.value,
                })
                .collect(),
        }
    }
}

/// No client-side limits when encoding: the server enforces its own and
/// answers `INVALID_ARGUMENT` naming the one exceeded.
const NO_LIMITS: BatchLimits = BatchLimits {
    record_bytes_max: u64::MAX,
    batch_bytes_max: u64::MAX,
};

/// Encodes `records` into one batch in the storage format, base offset 0,
/// ready for `ProduceRequest.encoded_batch`. Records without a timestamp get
/// `now_ms`.
pub fn encode_batch(records: &[Record], now_ms: i64) -> Result<Bytes> {
    // The codec borrows: build views over the owned records, with all the
    // headers in one vector sliced per record.
    let mut headers = Vec::with_capacity(records.iter().map(|record| record.headers.len()).sum());
    for record in records {
        headers.extend(record.headers.iter().map(|header| batch::Header {
            key: &header.key,
            value: header.value.as_deref(),
        }));
    }
    let mut views = Vec::with_capacity(records.len());
    let mut at = 0;
    for record in records {
        let count = record.headers.len();
        views.push(batch::Record {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers[at..at + count],
            timestamp_ms: record.timestamp_ms,
        });
        at += count;
    }
    batch::encode_to_vec(&views, now_ms, NO_LIMITS)
        .map(Bytes::from)
        .map_err(|error| Error::Encode {
            reason: error.to_string(),
        })
}

/// Decodes stored batches (as Fetch and Subscribe return them) into records,
/// skipping those below `from_offset` (a batch may start before the offset
/// asked for) and stopping before `end_offset` if one is given.
///
/// Keys, values and header values are slices of the batch buffers: no copy.
pub fn decode_batches(
    partition: u32,
    batches: impl IntoIterator<Item = Bytes>,
    from_offset: u64,
    end_offset: Option<u64>,
    out: &mut Vec<ConsumedRecord>,
) -> Result<()> {
    let end_offset = end_offset.unwrap_or(u64::MAX);
    for bytes in batches {
        let batch = Batch::new(bytes).map_err(|reason| Error::Corrupt {
            partition,
            offset: from_offset,
            reason: reason.to_string(),
        })?;
        if batch.last_offset() < from_offset {
            continue;
        }
        if batch.base_offset() >= end_offset {
            break;
        }
        out.reserve(batch.record_count() as usize);
        for view in batch.records() {
            let view = view.map_err(|error| Error::Corrupt {
                partition,
                offset: batch.base_offset(),
                reason: error.to_string(),
            })?;
            if view.offset < from_offset {
                continue;
            }
            if view.offset >= end_offset {
                return Ok(());
            }
            let headers = if view.header_count() == 0 {
                Vec::new()
            } else {
                view.headers()
                    .map(|(key, value)| Header {
                        key: key.to_owned(),
                        value: value.map(|value| batch.slice_ref(value)),
                    })
                    .collect()
            };
            out.push(ConsumedRecord {
                partition,
                offset: view.offset,
                timestamp_ms: view.timestamp_ms,
                key: view.key.map(|key| batch.slice_ref(key)),
                value: view.value.map(|value| batch.slice_ref(value)),
                headers,
            });
        }
    }
    Ok(())
}

/// Bytes of a record as stored when it is first in its batch (offset and
/// timestamp deltas 0), from the lengths of its fields: `None` is a null
/// key or value. Mirrors the record layout of docs/storage-format.md; a
/// test checks it against the codec.
pub(crate) fn stored_bytes(
    key_bytes: Option<usize>,
    value_bytes: Option<usize>,
    headers: impl ExactSizeIterator<Item = (usize, Option<usize>)>,
) -> u64 {
    let nullable = |bytes: Option<usize>| match bytes {
        // A null field is its length -1, one byte as a zigzag varint.
        None => 1,
        Some(bytes) => zigzag_varint_bytes(bytes as u64) + bytes as u64,
    };
    // Attributes, then the offset and timestamp deltas (one byte each at 0).
    let mut bytes =
        3 + nullable(key_bytes) + nullable(value_bytes) + zigzag_varint_bytes(headers.len() as u64);
    for (key_bytes, value_bytes) in headers {
        bytes += nullable(Some(key_bytes)) + nullable(value_bytes);
    }
    bytes
}

/// Bytes of a batch holding one record of `stored_bytes`: the header, the
/// record's length and the record.
pub(crate) fn single_record_batch_bytes(stored_bytes: u64) -> u64 {
    batch::HEADER_BYTES as u64 + zigzag_varint_bytes(stored_bytes) + stored_bytes
}

/// Bytes of the zigzag varint of a non-negative `value` (the format's
/// lengths and deltas).
fn zigzag_varint_bytes(value: u64) -> u64 {
    varint_bytes(value << 1)
}

/// Bytes of the unsigned LEB128 varint of `value`, as protobuf and the batch
/// format write them.
pub(crate) fn varint_bytes(value: u64) -> u64 {
    u64::from((64 - (value | 1).leading_zeros()).div_ceil(7))
}

/// The current time in Unix epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(mut batch: Vec<u8>, base_offset: u64) -> Bytes {
        batch::stamp_base_offset(&mut batch, base_offset);
        Bytes::from(batch)
    }

    #[test]
    fn encoded_batches_decode_back_with_offsets_and_headers() {
        let records = vec![
            Record::new("a").with_key("k1").with_header("trace", "t1"),
            Record {
                key: None,
                value: None,
                headers: vec![Header {
                    key: "null".into(),
                    value: None,
                }],
                timestamp_ms: Some(1_700_000_000_000),
            },
            Record::new(Bytes::new()).with_key(Bytes::new()),
        ];
        let encoded = encode_batch(&records, 1_234).unwrap();
        batch::validate_encoded(&encoded, NO_LIMITS).unwrap();

        let mut out = Vec::new();
        decode_batches(7, [stamp(encoded.to_vec(), 40)], 40, None, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].partition, 7);
        assert_eq!(out[0].offset, 40);
        assert_eq!(out[0].timestamp_ms, 1_234);
        assert_eq!(out[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(out[0].headers, vec![Header::new("trace", "t1")]);
        assert_eq!(out[1].key, None);
        assert_eq!(out[1].value, None);
        assert_eq!(out[1].timestamp_ms, 1_700_000_000_000);
        assert_eq!(out[1].headers[0].value, None);
        assert_eq!(out[2].key, Some(Bytes::new()));
        assert_eq!(out[2].value, Some(Bytes::new()));
        assert_eq!(out[2].offset, 42);
    }

    #[test]
    fn decoding_skips_below_the_start_and_stops_at_the_end() {
        let records: Vec<Record> = (0..10).map(|i| Record::new(format!("v{i}"))).collect();
        let first = encode_batch(&records, 0).unwrap();
        let second = encode_batch(&records, 0).unwrap();
        let batches = [stamp(first.to_vec(), 100), stamp(second.to_vec(), 110)];

        let mut out = Vec::new();
        decode_batches(0, batches.clone(), 105, Some(113), &mut out).unwrap();
        let offsets: Vec<u64> = out.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, (105..113).collect::<Vec<_>>());
        assert_eq!(out[0].value.as_deref(), Some(&b"v5"[..]));

        out.clear();
        decode_batches(0, batches, 115, None, &mut out).unwrap();
        assert_eq!(out.first().unwrap().offset, 115);
        assert_eq!(out.last().unwrap().offset, 119);
    }

    #[test]
    fn a_corrupt_batch_is_reported_with_its_partition() {
        let mut encoded = encode_batch(&[Record::new("x")], 0).unwrap().to_vec();
        let last = encoded.len() - 1;
        encoded[last] ^= 0xff;
        let error = decode_batches(3, [Bytes::from(encoded)], 0, None, &mut Vec::new()).unwrap_err();
        assert!(matches!(error, Error::Corrupt { partition: 3, .. }), "{error:?}");
    }

    #[test]
    fn stored_sizes_match_the_codec() {
        let value_sizes = [0usize, 1, 63, 64, 8_191, 8_192, 1 << 20, (1 << 20) + 3];
        let records = value_sizes.iter().flat_map(|&size| {
            let value = Bytes::from(vec![b'v'; size]);
            [
                Record::new(value.clone()),
                Record::new(value.clone()).with_key("customer-1"),
                Record {
                    key: Some(Bytes::new()),
                    value: None,
                    headers: vec![
                        Header::new("trace", value.clone()),
                        Header {
                            key: "null".into(),
                            value: None,
                        },
                    ],
                    timestamp_ms: Some(5),
                },
            ]
        });
        for record in records {
            let encoded = encode_batch(std::slice::from_ref(&record), 5).unwrap();
            assert_eq!(
                single_record_batch_bytes(record.stored_bytes()),
                encoded.len() as u64,
                "{} value bytes",
                record.value.as_ref().map_or(0, Bytes::len)
            );
            let limits = BatchLimits {
                record_bytes_max: record.stored_bytes(),
                batch_bytes_max: u64::MAX,
            };
            let views = [batch::Record {
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: &record
                    .headers
                    .iter()
                    .map(|header| batch::Header {
                        key: &header.key,
                        value: header.value.as_deref(),
                    })
                    .collect::<Vec<_>>(),
                timestamp_ms: record.timestamp_ms,
            }];
            assert!(batch::plan(&views, 5, limits).is_ok(), "exactly at the limit");
            let below = BatchLimits {
                record_bytes_max: record.stored_bytes() - 1,
                ..limits
            };
            assert!(batch::plan(&views, 5, below).is_err(), "a byte over the limit");
        }
        assert_eq!((varint_bytes(0), varint_bytes(127), varint_bytes(128)), (1, 1, 2));
        assert_eq!(varint_bytes(u64::MAX), 10);
    }

    #[test]
    fn the_estimate_is_an_upper_bound_of_the_encoded_size() {
        let records: Vec<Record> = (0..100)
            .map(|i| {
                Record::new(vec![7u8; i * 13])
                    .with_key(format!("key-{i}"))
                    .with_header("h", "v")
            })
            .collect();
        let encoded = encode_batch(&records, 0).unwrap();
        let estimate: usize = records.iter().map(Record::encoded_bytes_estimate).sum();
        assert!(estimate + batch::HEADER_BYTES >= encoded.len());
        assert!(estimate + batch::HEADER_BYTES < encoded.len() + 100 * 40);
    }
}
