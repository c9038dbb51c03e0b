//! Raft's own entries, kept outside the partition's offset space.
//!
//! A new leader's blank entry and every membership change occupy a Raft
//! index but hold no client record. Stored as batches they would take
//! offsets, and consumers would see gaps; so they live in a small file
//! beside the segments, `raft-entries`, and the segments hold only client
//! batches (`docs/cluster.md`, "Entries"). Each entry records its Raft
//! index, the offset it sits at (the partition's high watermark when it
//! was appended: the client batches before it end there), its term and
//! kind, and for a membership the membership as JSON.
//!
//! Layout (`docs/storage-format.md`, section 14), little-endian: a header
//! of magic `SPRE` and version u32 (1), then one record per entry: body
//! length u32, CRC-32 of the body u32, and the body: index u64, offset
//! u64, term u64, kind u8 (1 blank, 2 membership), value.
//!
//! Crash safety comes from the order of writes, kept by the log store: an
//! entry is appended only once every client batch before it is durable,
//! and it is fsynced before any client batch after it is appended. So
//! after a crash the file never names an entry whose preceding batches
//! are gone, except after a truncation interrupted between the segments
//! and this file (the segments are cut first); the index rebuild drops
//! such entries ([`crate::index::merge`]). A torn last record (its fsync
//! never returned, so nothing was appended after it) is cut at open; so is
//! a record whose length field was damaged to reach past the end of the
//! file, which looks the same. Damage anywhere else fails the open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::entry::EntryKind;
use crate::error::{Error, Result};

pub const FILE_NAME: &str = "raft-entries";
const MAGIC: &[u8; 4] = b"SPRE";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8;
/// Length and CRC before each record's body.
const FRAME_BYTES: usize = 8;
/// index, offset, term and kind.
const BODY_FIXED_BYTES: usize = 25;
/// The largest value an entry may carry: a membership's JSON is a few
/// hundred bytes per node, far below this.
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// One of Raft's own entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnEntry {
    /// Its Raft log index.
    pub index: u64,
    /// The partition offset it sits at: every client batch before it ends
    /// at or below this offset, every one after it starts at or above.
    pub offset: u64,
    pub term: u64,
    /// [`EntryKind::Blank`] or [`EntryKind::Membership`].
    pub kind: EntryKind,
    /// The membership as JSON; empty for a blank entry.
    pub value: Bytes,
}

impl OwnEntry {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let kind: u8 = match self.kind {
            EntryKind::Blank => 1,
            EntryKind::Membership => 2,
            EntryKind::Records => unreachable!("client entries are batches in the segments"),
        };
        let body_len = BODY_FIXED_BYTES + self.value.len();
        let start = out.len();
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&self.value);
        let crc = crc32fast::hash(&out[start + FRAME_BYTES..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Why a record did not decode.
enum Bad {
    /// The end of an interrupted append: cut it.
    Torn,
    /// Damage with valid-looking bytes after it: refuse the file.
    Damaged(String),
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the record at the start of `rest`, the last `rest.len()` bytes
/// of the file; returns it and its length.
fn decode_record(file: &Bytes, position: usize) -> std::result::Result<(OwnEntry, usize), Bad> {
    let rest = &file[position..];
    if rest.len() < FRAME_BYTES {
        return Err(Bad::Torn);
    }
    let body_len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    if !(BODY_FIXED_BYTES..=BODY_FIXED_BYTES + VALUE_BYTES_MAX).contains(&body_len) {
        // A length no append writes: zeros left by an interrupted append
        // are a torn tail, anything else is damage.
        return if rest.iter().all(|b| *b == 0) {
            Err(Bad::Torn)
        } else {
            Err(Bad::Damaged(format!("record length {body_len} out of range")))
        };
    }
    let end = FRAME_BYTES + body_len;
    if rest.len() < end {
        return Err(Bad::Torn);
    }
    let body = &rest[FRAME_BYTES..end];
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(body) {
        // Only the last record can be half written.
        return if rest.len() == end {
            Err(Bad::Torn)
        } else {
            Err(Bad::Damaged("checksum mismatch".into()))
        };
    }
    let kind = match body[24] {
        1 => EntryKind::Blank,
        2 => EntryKind::Membership,
        other => return Err(Bad::Damaged(format!("unknown entry kind {other}"))),
    };
    let value_start = position + FRAME_BYTES + BODY_FIXED_BYTES;
    let entry = OwnEntry {
        index: u64_at(body, 0),
        offset: u64_at(body, 8),
        term: u64_at(body, 16),
        kind,
        value: file.slice(value_start..position + end),
    };
    Ok((entry, end))
}

/// Decodes a whole file: its entries and the length of its valid prefix
/// (shorter than the file when a torn record ends it).
fn decode(file: &Bytes) -> std::result::Result<(Vec<OwnEntry>, usize), (usize, String)> {
    if file.len() < HEADER_BYTES || &file[..4] != MAGIC {
        return Err((0, "not a raft-entries file (bad header)".into()));
    }
    let version = u32::from_le_bytes(file[4..8].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err((4, format!("unknown version {version}")));
    }
    let mut entries: Vec<OwnEntry> = Vec::new();
    let mut position = HEADER_BYTES;
    while position < file.len() {
        match decode_record(file, position) {
            Ok((entry, len)) => {
                if let Some(last) = entries.last()
                    && (entry.index <= last.index || entry.offset < last.offset || entry.term < last.term)
                {
                    return Err((position, format!("entry {} out of order", entry.index)));
                }
                entries.push(entry);
                position += len;
            }
            Err(Bad::Torn) => break,
            Err(Bad::Damaged(reason)) => return Err((position, reason)),
        }
    }
    Ok((entries, position))
}

fn header() -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out
}

/// The `raft-entries` file of one partition and its entries, all in memory
/// (one per leader change or membership change).
#[derive(Debug)]
pub struct OwnEntryLog {
    path: PathBuf,
    entries: Vec<OwnEntry>,
    /// Open for appending once the file exists.
    file: Option<File>,
    /// Set after a failed write or fsync: the file may end in a partial
    /// record, so nothing more is appended until it is reopened.
    failed: bool,
}

impl OwnEntryLog {
    /// Loads the file in `partition_dir` (absent: no entries). A torn last
    /// record is cut, and the file rewritten without it, so that later
    /// appends follow valid bytes. Damage anywhere else fails the open
    /// ([`Error::BadOwnEntries`]): dropping a durable entry would shift
    /// the Raft index of every client batch after it.
    pub fn open(partition_dir: &Path) -> Result<OwnEntryLog> {
        let path = partition_dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(OwnEntryLog {
                    path,
                    entries: Vec::new(),
                    file: None,
                    failed: false,
                });
            }
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        let (entries, valid_bytes) = decode(&bytes).map_err(|(position, reason)| Error::BadOwnEntries {
            path: path.clone(),
            position: position as u64,
            reason,
        })?;
        let mut log = OwnEntryLog {
            path,
            entries,
            file: None,
            failed: false,
        };
        if valid_bytes < bytes.len() {
            tracing::warn!(path = %log.path.display(), valid_bytes, file_bytes = bytes.len(), "cutting a torn record at the end of raft-entries");
            log.rewrite()?;
        } else {
            log.file = Some(log.open_append()?);
        }
        Ok(log)
    }

    pub fn entries(&self) -> &[OwnEntry] {
        &self.entries
    }

    /// The entry at Raft index `index`, if it is one of Raft's own.
    pub fn get(&self, index: u64) -> Option<&OwnEntry> {
        self.entries
            .binary_search_by_key(&index, |e| e.index)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Appends `entry` durably (written and fsynced before this returns).
    /// Its index must follow the last entry's.
    pub fn append(&mut self, entry: OwnEntry) -> Result<()> {
        if self.failed {
            return Err(Error::Io {
                op: "append to",
                path: self.path.clone(),
                source: std::io::Error::other("an earlier write to this file failed"),
            });
        }
        if let Some(last) = self.entries.last() {
            assert!(
                entry.index > last.index,
                "own entries are appended in index order"
            );
        }
        if entry.value.len() > VALUE_BYTES_MAX {
            return Err(Error::OwnEntryTooLarge {
                index: entry.index,
                value_bytes: entry.value.len(),
                value_bytes_max: VALUE_BYTES_MAX,
            });
        }
        if self.file.is_none() {
            self.rewrite()?;
        }
        let mut record = Vec::with_capacity(FRAME_BYTES + BODY_FIXED_BYTES + entry.value.len());
        entry.encode_into(&mut record);
        let file = self.file.as_mut().expect("opened above");
        let written = file.write_all(&record).and_then(|()| file.sync_data());
        if let Err(source) = written {
            self.failed = true;
            return Err(Error::Io {
                op: "append to",
                path: self.path.clone(),
                source,
            });
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Forgets every entry at and after Raft index `index`, durably (an
    /// atomic rewrite of the file). Nothing is written if none is there.
    pub fn truncate(&mut self, index: u64) -> Result<()> {
        let kept = self.entries.partition_point(|e| e.index < index);
        if kept == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(kept);
        self.rewrite()
    }

    /// Forgets every entry before Raft index `index` (purged), durably (an
    /// atomic rewrite of the file). Nothing is written if none is there.
    pub fn forget_before(&mut self, index: u64) -> Result<()> {
        let dropped = self.entries.partition_point(|e| e.index < index);
        if dropped == 0 {
            return Ok(());
        }
        self.entries.drain(..dropped);
        self.rewrite()
    }

    /// Replaces the file with the header and the entries in memory
    /// (temporary file, fsync, rename, fsync of the directory) and reopens
    /// it for appending.
    fn rewrite(&mut self) -> Result<()> {
        let mut bytes = header();
        for entry in &self.entries {
            entry.encode_into(&mut bytes);
        }
        self.file = None;
        spool_log::fsutil::write_atomic(&self.path, &bytes).map_err(|source| Error::Log {
            op: "rewrite raft-entries",
            source,
        })?;
        self.file = Some(self.open_append()?);
        self.failed = false;
        Ok(())
    }

    fn open_append(&self) -> Result<File> {
        OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|source| Error::Io {
                op: "open",
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(index: u64, offset: u64, term: u64) -> OwnEntry {
        OwnEntry {
            index,
            offset,
            term,
            kind: EntryKind::Blank,
            value: Bytes::new(),
        }
    }

    fn membership(index: u64, offset: u64, term: u64) -> OwnEntry {
        OwnEntry {
            index,
            offset,
            term,
            kind: EntryKind::Membership,
            value: Bytes::from_static(br#"{"configs":[[1,2,3]]}"#),
        }
    }

    #[test]
    fn entries_survive_a_reopen_and_truncation_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = OwnEntryLog::open(dir.path()).unwrap();
        assert!(log.entries().is_empty());
        let written = vec![
            membership(0, 0, 0),
            blank(1, 0, 1),
            blank(5, 40, 2),
            blank(9, 70, 3),
        ];
        for entry in &written {
            log.append(entry.clone()).unwrap();
        }
        assert_eq!(OwnEntryLog::open(dir.path()).unwrap().entries(), &written[..]);
        assert_eq!(log.get(5), Some(&written[2]));
        assert_eq!(log.get(4), None);

        log.truncate(6).unwrap();
        log.append(blank(6, 50, 4)).unwrap();
        let reopened = OwnEntryLog::open(dir.path()).unwrap();
        assert_eq!(
            reopened.entries(),
            &[
                written[0].clone(),
                written[1].clone(),
                written[2].clone(),
                blank(6, 50, 4)
            ]
        );
    }

    /// Every prefix of the last record, and zeros in its place, is a torn
    /// append: cut, and the file rewritten so that appends go on.
    #[test]
    fn a_torn_last_record_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = OwnEntryLog::open(dir.path()).unwrap();
        log.append(membership(0, 0, 0)).unwrap();
        log.append(blank(1, 0, 1)).unwrap();
        let path = dir.path().join(FILE_NAME);
        let full = std::fs::read(&path).unwrap();
        let last_len = FRAME_BYTES + BODY_FIXED_BYTES;
        let last_start = full.len() - last_len;
        let mut damaged: Vec<Vec<u8>> = (last_start..full.len()).map(|n| full[..n].to_vec()).collect();
        let mut zeroed = full.clone();
        zeroed[last_start..].fill(0);
        damaged.push(zeroed);
        let mut flipped = full.clone();
        *flipped.last_mut().unwrap() ^= 1;
        damaged.push(flipped);
        for bytes in damaged {
            std::fs::write(&path, &bytes).unwrap();
            let mut log = OwnEntryLog::open(dir.path()).unwrap();
            assert_eq!(log.entries(), &[membership(0, 0, 0)], "{} bytes", bytes.len());
            assert_eq!(std::fs::read(&path).unwrap(), full[..last_start]);
            log.append(blank(1, 0, 1)).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), full);
        }
    }

    #[test]
    fn damage_before_the_last_record_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = OwnEntryLog::open(dir.path()).unwrap();
        log.append(membership(0, 0, 0)).unwrap();
        log.append(blank(1, 0, 1)).unwrap();
        let path = dir.path().join(FILE_NAME);
        let full = std::fs::read(&path).unwrap();
        let last_start = full.len() - (FRAME_BYTES + BODY_FIXED_BYTES);
        // Not the first record's length: damaged to a larger length, it
        // makes the record reach past the end of the file, which is what a
        // torn append looks like (no format tells the two apart).
        let length = HEADER_BYTES..HEADER_BYTES + 4;
        for i in (0..last_start).filter(|i| !length.contains(i)) {
            let mut bytes = full.clone();
            bytes[i] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
            assert!(
                matches!(OwnEntryLog::open(dir.path()), Err(Error::BadOwnEntries { .. })),
                "byte {i}"
            );
        }
    }

    /// The hex dump of `docs/storage-format.md`, section 14.
    #[test]
    fn the_documented_example_is_what_the_code_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = OwnEntryLog::open(dir.path()).unwrap();
        log.append(blank(1, 0, 1)).unwrap();
        log.append(blank(7, 12, 2)).unwrap();
        let expected: [u8; 74] = [
            0x53, 0x50, 0x52, 0x45, 0x01, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0x54, 0xba, 0x38, 0x2c,
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x19, 0x00, 0x00, 0x00, 0x66, 0x82, 0x76,
            0xeb, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        ];
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), expected);
    }

    #[test]
    fn entries_out_of_order_are_damage() {
        let mut bytes = header();
        blank(3, 10, 2).encode_into(&mut bytes);
        blank(2, 10, 2).encode_into(&mut bytes);
        assert!(decode(&Bytes::from(bytes)).is_err());
    }
}
