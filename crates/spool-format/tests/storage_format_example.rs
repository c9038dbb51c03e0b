//! The example batch of `docs/storage-format.md` (section 3.5, and the same
//! batch in a segment in section 8) is what this codec writes: the test
//! encodes the batch the page describes and compares it, byte for byte,
//! with the hex dumps on the page. When they differ, the page is wrong.

use spool_format::batch::{BatchLimits, Header, Record, encode_to_vec, stamp_base_offset, verify};

const DOC: &str = include_str!("../../../docs/storage-format.md");

/// The batch of section 3.5, with base offset 0 as the encoder writes it.
fn example_batch() -> Vec<u8> {
    let headers = [Header {
        key: "trace",
        value: Some(b"1"),
    }];
    let records = [
        Record {
            key: Some(b"k"),
            value: Some(b"hello"),
            headers: &headers,
            timestamp_ms: Some(1_700_000_000_000),
        },
        Record {
            key: None,
            value: Some(b"world"),
            headers: &[],
            timestamp_ms: Some(1_700_000_000_005),
        },
    ];
    let limits = BatchLimits {
        record_bytes_max: 1 << 20,
        batch_bytes_max: 8 << 20,
    };
    encode_to_vec(&records, 0, limits).unwrap()
}

/// The bytes of the first `xxd` dump (a ```text block) after the line that
/// starts with `marker`.
fn hex_dump_after(marker: &str) -> Vec<u8> {
    let mut lines = DOC.lines().skip_while(|line| !line.starts_with(marker));
    assert!(
        lines.next().is_some(),
        "the page has no line starting with {marker:?}"
    );
    let mut lines = lines.skip_while(|line| line.trim() != "```text");
    assert!(lines.next().is_some(), "no ```text block after {marker:?}");
    let mut bytes = Vec::new();
    for line in lines.take_while(|line| line.trim() != "```") {
        // `00000010: 538d 24ba ...  S.$.6...`: the offset, then eight groups
        // of four hex digits (39 characters, padded on a short last line),
        // then the text column.
        let (offset, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("not an xxd line: {line:?}"));
        let offset = usize::from_str_radix(offset, 16).unwrap_or_else(|_| panic!("bad offset in {line:?}"));
        assert_eq!(offset, bytes.len(), "the dump skips bytes at {line:?}");
        let hex: String = rest[..39.min(rest.len())].split_whitespace().collect();
        assert_eq!(hex.len() % 2, 0, "odd number of hex digits in {line:?}");
        for pair in hex.as_bytes().chunks(2) {
            let pair = std::str::from_utf8(pair).unwrap();
            bytes.push(
                u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex {pair:?} in {line:?}")),
            );
        }
    }
    assert!(!bytes.is_empty(), "empty dump after {marker:?}");
    bytes
}

#[test]
fn the_example_batch_of_section_3_5_is_what_the_codec_writes() {
    let mut encoded = example_batch();
    stamp_base_offset(&mut encoded, 42);
    let documented = hex_dump_after("`xxd batch.bin`:");
    assert_eq!(
        hex(&encoded),
        hex(&documented),
        "docs/storage-format.md, section 3.5"
    );
    // The figures the page quotes around the dump.
    assert_eq!(encoded.len(), 94);
    assert_eq!(verify(&encoded).unwrap().crc, 0x36ba_248d);
    assert!(DOC.contains("94 bytes. Header:"));
    assert!(DOC.contains("which prints `0x36ba248d`"));
}

#[test]
fn the_segment_of_section_8_holds_the_same_batch_at_base_offset_0() {
    let documented = hex_dump_after("`00000000000000000000.log`");
    assert_eq!(
        hex(&example_batch()),
        hex(&documented),
        "docs/storage-format.md, section 8"
    );
}

/// Hex with a line break every 16 bytes, so a failed comparison shows
/// where the bytes differ.
fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
