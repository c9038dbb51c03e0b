//! Records as JSON lines, for `produce --json` and `--format json`.
//!
//! A record is `{"key": K, "value": V, "headers": {"name": H, ...}}` where
//! each of K, V, H is a string (UTF-8 bytes), `null` (absent key, null
//! value), or `{"base64": "..."}` for bytes that are not UTF-8. Output adds
//! `partition`, `offset` and `timestamp_ms`; input accepts them and ignores
//! all but `timestamp_ms`, so the output of `consume --format json` can be
//! piped into `produce --json` (records then go by key, not by partition).
//! Headers keep their order, repeated names included.

use std::fmt;
use std::io::Write;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use spool_client::{ConsumedRecord, Header, Record};

/// Bytes as JSON: a string when UTF-8, else `{"base64": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonBytes(pub Bytes);

impl Serialize for JsonBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &base64_encode(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for JsonBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = JsonBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, null, or {\"base64\": \"...\"}")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<JsonBytes, E> {
                Ok(JsonBytes(Bytes::copy_from_slice(text.as_bytes())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<JsonBytes, E> {
                Ok(JsonBytes(Bytes::from(text)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonBytes, A::Error> {
                let mut decoded = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "base64" || decoded.is_some() {
                        return Err(de::Error::custom(format!(
                            "bytes objects have exactly one field, \"base64\"; found {key:?}"
                        )));
                    }
                    let text: String = map.next_value()?;
                    decoded = Some(base64_decode(&text).map_err(de::Error::custom)?);
                }
                decoded
                    .map(|bytes| JsonBytes(Bytes::from(bytes)))
                    .ok_or_else(|| de::Error::custom("bytes object without a \"base64\" field"))
            }
        }
        deserializer.deserialize_any(BytesVisitor)
    }
}

/// Headers as a JSON object, order and repeated names kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JsonHeaders(pub Vec<(String, Option<JsonBytes>)>);

impl Serialize for JsonHeaders {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for JsonHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;
        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = JsonHeaders;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonHeaders, A::Error> {
                let mut headers = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Option<JsonBytes>>()? {
                    headers.push((key, value));
                }
                Ok(JsonHeaders(headers))
            }
            fn visit_unit<E: de::Error>(self) -> Result<JsonHeaders, E> {
                Ok(JsonHeaders::default())
            }
        }
        deserializer.deserialize_any(HeadersVisitor)
    }
}

/// One input line of `produce --json`.
#[derive(Debug, Deserialize)]
pub struct JsonRecordIn {
    #[serde(default)]
    key: Option<JsonBytes>,
    #[serde(default)]
    value: Option<JsonBytes>,
    #[serde(default)]
    headers: JsonHeaders,
    #[serde(default)]
    timestamp_ms: Option<i64>,
}

impl JsonRecordIn {
    pub fn into_record(self) -> Record {
        Record {
            key: self.key.map(|key| key.0),
            value: self.value.map(|value| value.0),
            headers: self
                .headers
                .0
                .into_iter()
                .map(|(key, value)| Header {
                    key,
                    value: value.map(|value| value.0),
                })
                .collect(),
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// Parses one line of `produce --json`.
pub fn parse_record_line(line: &[u8]) -> Result<Record, String> {
    serde_json::from_slice::<JsonRecordIn>(line)
        .map(JsonRecordIn::into_record)
        .map_err(|error| error.to_string())
}

#[derive(Serialize)]
struct JsonRecordOut<'a> {
    partition: u32,
    offset: u64,
    timestamp_ms: i64,
    key: Option<JsonBytesRef<'a>>,
    value: Option<JsonBytesRef<'a>>,
    headers: JsonHeadersRef<'a>,
}

struct JsonBytesRef<'a>(&'a [u8]);

impl Serialize for JsonBytesRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &base64_encode(self.0))?;
                map.end()
            }
        }
    }
}

struct JsonHeadersRef<'a>(&'a [Header]);

impl Serialize for JsonHeadersRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for header in self.0 {
            map.serialize_entry(&header.key, &header.value.as_deref().map(JsonBytesRef))?;
        }
        map.end()
    }
}

/// Writes `record` as one JSON line.
pub fn write_record_line(out: &mut impl Write, record: &ConsumedRecord) -> std::io::Result<()> {
    let line = JsonRecordOut {
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        key: record.key.as_deref().map(JsonBytesRef),
        value: record.value.as_deref().map(JsonBytesRef),
        headers: JsonHeadersRef(&record.headers),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

const BASE64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64_ALPHABET[(word >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding optional, whitespace refused.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        return Err(format!("invalid base64 length in {text:?}"));
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut word = 0u32;
    let mut bits = 0;
    for byte in trimmed.bytes() {
        let value = BASE64_ALPHABET
            .iter()
            .position(|&symbol| symbol == byte)
            .ok_or_else(|| format!("invalid base64 character {:?}", byte as char))?;
        word = (word << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((word >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

    #[test]
    fn input_lines_become_records() {
        let record = parse_record_line(
            br#"{"key": "k", "value": "hello", "headers": {"a": "1", "b": null, "a": "2"}}"#,
        )
        .unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"hello"[..]));
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|header| (header.key.as_str(), header.value.as_deref()))
            .collect();
        assert_eq!(
            headers,
            [("a", Some(&b"1"[..])), ("b", None), ("a", Some(&b"2"[..]))]
        );

        let record = parse_record_line(br#"{"value": {"base64": "AAH/"}, "timestamp_ms": 5}"#).unwrap();
        assert_eq!(record.key, None);
        assert_eq!(record.value.as_deref(), Some(&[0u8, 1, 255][..]));
        assert_eq!(record.timestamp_ms, Some(5));

        let record = parse_record_line(br#"{"key": null, "value": null}"#).unwrap();
        assert_eq!((record.key, record.value), (None, None));

        assert!(parse_record_line(b"not json").is_err());
        assert!(parse_record_line(br#"{"value": 5}"#).is_err());
        assert!(parse_record_line(br#"{"value": {"hex": "00"}}"#).is_err());
    }

    #[test]
    fn output_lines_round_trip_through_input() {
        let record = ConsumedRecord {
            partition: 2,
            offset: 41,
            timestamp_ms: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"customer-1")),
            value: Some(Bytes::from_static(&[0xff, 0x00, b'x'])),
            headers: vec![
                Header::new("trace", "abc"),
                Header {
                    key: "null".into(),
                    value: None,
                },
            ],
        };
        let mut out = Vec::new();
        write_record_line(&mut out, &record).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "{\"partition\":2,\"offset\":41,\"timestamp_ms\":1700000000000,\"key\":\"customer-1\",\
             \"value\":{\"base64\":\"/wB4\"},\"headers\":{\"trace\":\"abc\",\"null\":null}}\n"
        );
        let back = parse_record_line(line.trim_end().as_bytes()).unwrap();
        assert_eq!(back.key, record.key);
        assert_eq!(back.value, record.value);
        assert_eq!(back.headers, record.headers);
        assert_eq!(back.timestamp_ms, Some(record.timestamp_ms));
    }
}
