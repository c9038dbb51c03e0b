//! Decoding one record of a batch, as Kafka's record batch v2 encodes it:
//! a varint length, then attributes, timestamp and offset deltas, nullable
//! key and value, and headers. Every length is checked against the end of
//! its record before it is used; nothing here can read out of bounds.

use crate::error::RecordProblem;
use crate::varint;

/// One decoded record, borrowing from its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers_raw: &'a [u8],
    header_count: u32,
}

impl<'a> RecordView<'a> {
    pub(super) fn new(raw: &RawRecord<'a>, offset: u64) -> Self {
        RecordView {
            offset,
            timestamp_ms: raw.timestamp_ms,
            key: raw.key,
            value: raw.value,
            headers_raw: raw.headers_raw,
            header_count: raw.header_count,
        }
    }

    /// The record's headers as `(key, value)`. Keys were checked to be
    /// UTF-8 when the batch was accepted; a header that is not (possible
    /// only in a batch that was never validated) is left out.
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

/// A record as it lies in the batch, before its offset is known.
pub(super) struct RawRecord<'a> {
    /// Bytes after the length prefix.
    pub body_bytes: usize,
    pub offset_delta: u32,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers_raw: &'a [u8],
    header_count: u32,
}

impl<'a> RawRecord<'a> {
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            rest: self.headers_raw,
            remaining: self.header_count,
        }
    }
}

/// The headers of a record, each as raw key and value bytes. Their
/// structure was checked by [`decode_record`]; the iterator checks it again
/// rather than trust that.
pub(super) struct HeaderIter<'a> {
    rest: &'a [u8],
    remaining: u32,
}

type HeaderItem<'a> = Result<(&'a [u8], Option<&'a [u8]>), RecordProblem>;

impl<'a> Iterator for HeaderIter<'a> {
    type Item = HeaderItem<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut cursor = Cursor {
            bytes: self.rest,
            at: 0,
        };
        let result = cursor.header();
        match result {
            Ok(_) => self.rest = &self.rest[cursor.at..],
            Err(_) => self.remaining = 0,
        }
        Some(result)
    }
}

/// Decodes one length-prefixed record from the start of `input` and
/// returns it with the bytes it took, prefix included.
pub(super) fn decode_record(
    input: &[u8],
    base_timestamp_ms: i64,
) -> Result<(RawRecord<'_>, usize), RecordProblem> {
    let (body_len, prefix) = varint::get_i32(input).ok_or(RecordProblem::BadVarint {
        field: "record length",
    })?;
    let body_len = usize::try_from(body_len).map_err(|_| RecordProblem::Negative {
        field: "record length",
        value: body_len.into(),
    })?;
    let end = prefix
        .checked_add(body_len)
        .filter(|&end| end <= input.len())
        .ok_or(RecordProblem::PastBatchEnd {
            length_bytes: body_len,
        })?;
    let mut cursor = Cursor {
        bytes: &input[prefix..end],
        at: 0,
    };
    let _attributes = cursor.byte("attributes")?;
    let timestamp_delta = cursor.varlong("timestamp delta")?;
    let offset_delta = cursor.varint("offset delta")?;
    let offset_delta = u32::try_from(offset_delta).map_err(|_| RecordProblem::Negative {
        field: "offset delta",
        value: offset_delta.into(),
    })?;
    let key = cursor.nullable("key")?;
    let value = cursor.nullable("value")?;
    let header_count = cursor.varint("header count")?;
    let header_count = u32::try_from(header_count).map_err(|_| RecordProblem::Negative {
        field: "header count",
        value: header_count.into(),
    })?;
    let headers_start = cursor.at;
    for _ in 0..header_count {
        cursor.header()?;
    }
    if cursor.at != cursor.bytes.len() {
        return Err(RecordProblem::TrailingBytes {
            len_bytes: cursor.bytes.len() - cursor.at,
        });
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

/// A read position in one record's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self, field: &'static str) -> Result<u8, RecordProblem> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or(RecordProblem::PastRecordEnd { field })?;
        self.at += 1;
        Ok(byte)
    }

    fn varlong(&mut self, field: &'static str) -> Result<i64, RecordProblem> {
        let (value, used) =
            varint::get_i64(&self.bytes[self.at..]).ok_or(RecordProblem::BadVarint { field })?;
        self.at += used;
        Ok(value)
    }

    fn varint(&mut self, field: &'static str) -> Result<i32, RecordProblem> {
        let (value, used) =
            varint::get_i32(&self.bytes[self.at..]).ok_or(RecordProblem::BadVarint { field })?;
        self.at += used;
        Ok(value)
    }

    /// A varint length and that many bytes, or null for length -1.
    fn nullable(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, RecordProblem> {
        let len = self.varint(field)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| RecordProblem::Negative {
            field,
            value: len.into(),
        })?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(RecordProblem::PastRecordEnd { field })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(Some(slice))
    }

    /// One header: a key that must not be null, and a nullable value.
    fn header(&mut self) -> Result<(&'a [u8], Option<&'a [u8]>), RecordProblem> {
        let key = self.nullable("header key")?.ok_or(RecordProblem::NullHeaderKey)?;
        let value = self.nullable("header value")?;
        Ok((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_is_named() {
        // Length 3, attributes, timestamp delta 0, then the input ends.
        assert_eq!(
            decode_record(&[0x06, 0x00, 0x00], 0).err(),
            Some(RecordProblem::PastBatchEnd { length_bytes: 3 })
        );
        assert_eq!(
            decode_record(&[0x01], 0).err(),
            Some(RecordProblem::Negative {
                field: "record length",
                value: -1
            })
        );
        assert_eq!(
            decode_record(&[0x80], 0).err(),
            Some(RecordProblem::BadVarint {
                field: "record length"
            })
        );
        // Length 5: attributes, deltas 0 and -1 (negative offset delta).
        assert_eq!(
            decode_record(&[0x0a, 0x00, 0x00, 0x01, 0x01, 0x01], 0).err(),
            Some(RecordProblem::Negative {
                field: "offset delta",
                value: -1
            })
        );
        // Length 6: null key and value, one header with a null key.
        assert_eq!(
            decode_record(&[0x0c, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x01], 0).err(),
            Some(RecordProblem::BadVarint { field: "header key" })
        );
        assert_eq!(
            decode_record(&[0x0e, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x01, 0x01], 0).err(),
            Some(RecordProblem::NullHeaderKey)
        );
        // Length 7: null key and value, no headers, then one byte more.
        assert_eq!(
            decode_record(&[0x0e, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00], 0).err(),
            Some(RecordProblem::TrailingBytes { len_bytes: 1 })
        );
    }
}
