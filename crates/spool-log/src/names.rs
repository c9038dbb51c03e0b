//! Names that reach the filesystem: topic names and segment file names.
//!
//! Every path the engine builds from a caller's input goes through
//! [`validate_topic_name`] first.

use crate::error::{Error, Result};

/// Longest topic name, in bytes (Kafka's limit).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Prefix of topics the server keeps for itself (checkpoints, job events).
pub const INTERNAL_TOPIC_PREFIX: &str = "__";

/// Checks that `name` is a usable topic name: 1 to 249 bytes of
/// `[A-Za-z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidTopicName {
            name: name.chars().take(TOPIC_NAME_BYTES_MAX + 8).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("it is longer than 249 bytes");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// True for topics whose name marks them as the server's own.
pub fn is_internal_topic(name: &str) -> bool {
    name.starts_with(INTERNAL_TOPIC_PREFIX)
}

/// The kinds of file that make up a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFile {
    Log,
    Index,
    TimeIndex,
}

impl SegmentFile {
    pub fn extension(self) -> &'static str {
        match self {
            SegmentFile::Log => "log",
            SegmentFile::Index => "index",
            SegmentFile::TimeIndex => "timeindex",
        }
    }
}

/// `{base_offset:020}.{ext}`, Kafka's naming, so that a directory listing
/// sorts segments by offset.
pub fn segment_file_name(base_offset: u64, kind: SegmentFile) -> String {
    format!("{base_offset:020}.{}", kind.extension())
}

/// Parses a file name written by [`segment_file_name`].
///
/// Returns `None` for names that are not segment files at all (other files
/// may live in a partition directory); an error for names that look like
/// segment files but are damaged.
pub fn parse_segment_file_name(name: &str) -> Option<Result<(u64, SegmentFile), String>> {
    let (stem, extension) = name.split_once('.')?;
    let kind = match extension {
        "log" => SegmentFile::Log,
        "index" => SegmentFile::Index,
        "timeindex" => SegmentFile::TimeIndex,
        _ => return None,
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(format!(
            "segment file name {name:?} does not start with a 20-digit base offset"
        )));
    }
    Some(
        stem.parse::<u64>()
            .map(|base| (base, kind))
            .map_err(|e| format!("segment file name {name:?}: {e}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["orders", "a", "A.b_c-9", "__jobs", &"x".repeat(249)] {
            validate_topic_name(name).unwrap();
        }
    }

    #[test]
    fn rejects_names_that_escape_or_break_paths() {
        for name in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "a b",
            "nul\0",
            "ümlaut",
            &"x".repeat(250),
        ] {
            let err = validate_topic_name(name).unwrap_err();
            assert!(matches!(err, Error::InvalidTopicName { .. }), "{name:?}");
        }
    }

    #[test]
    fn segment_names_round_trip_and_sort() {
        let name = segment_file_name(42, SegmentFile::TimeIndex);
        assert_eq!(name, "00000000000000000042.timeindex");
        assert_eq!(
            parse_segment_file_name(&name),
            Some(Ok((42, SegmentFile::TimeIndex)))
        );
        assert!(segment_file_name(9, SegmentFile::Log) < segment_file_name(10, SegmentFile::Log));
        assert_eq!(parse_segment_file_name("topic.meta"), None);
        assert!(matches!(parse_segment_file_name("12.log"), Some(Err(_))));
    }
}
