//! Sparse indexes beside each segment: the offset index (relative offset ->
//! file position) and the time index (timestamp -> relative offset).
//!
//! Both are arrays of fixed-size little-endian entries in a mapped file,
//! strictly increasing in their key, appended by the partition's writer and
//! binary-searched by readers over the published entries only.

use std::sync::Arc;

use crate::error::Result;
use crate::mmap::{Mapping, MappingWriter};

/// An entry type stored in an index file.
pub trait Entry: Copy + std::fmt::Debug {
    const BYTES: u64;
    fn encode(&self, out: &mut [u8]);
    fn decode(bytes: &[u8]) -> Self;
}

/// Offset index entry: a batch starting at `relative_offset` (from the
/// segment's base offset) begins at byte `position` of the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const BYTES: u64 = 8;

    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        out[4..8].copy_from_slice(&self.position.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")),
            position: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
        }
    }
}

/// Time index entry: every record in batches up to and including the batch
/// at `relative_offset` has a timestamp at most `timestamp_ms`, and
/// `timestamp_ms` grows from entry to entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const BYTES: u64 = 12;

    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        TimeEntry {
            timestamp_ms: i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
        }
    }
}

/// Read side of an index file.
#[derive(Debug, Clone)]
pub struct Index<E: Entry> {
    mapping: Arc<Mapping>,
    _entry: std::marker::PhantomData<E>,
}

impl<E: Entry> Index<E> {
    pub fn new(mapping: Arc<Mapping>) -> Self {
        Index {
            mapping,
            _entry: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> u64 {
        self.mapping.published_len() / E::BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: u64) -> Option<E> {
        let start = i.checked_mul(E::BYTES)?;
        self.mapping.slice(start..start + E::BYTES).map(E::decode)
    }

    pub fn last(&self) -> Option<E> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    /// The last entry whose key is at most `target` (`key` must increase
    /// with the entry index).
    pub fn floor_by<K: Ord>(&self, target: K, key: impl Fn(&E) -> K) -> Option<E> {
        let count = self.len();
        let entries = self.mapping.slice(0..count * E::BYTES)?;
        let at = |i: u64| E::decode(&entries[(i * E::BYTES) as usize..]);
        // First index whose key is above the target.
        let (mut low, mut high) = (0u64, count);
        while low < high {
            let mid = low + (high - low) / 2;
            if key(&at(mid)) <= target {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low.checked_sub(1).map(at)
    }

    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }
}

pub type OffsetIndex = Index<OffsetEntry>;
pub type TimeIndex = Index<TimeEntry>;

impl OffsetIndex {
    /// Where to start scanning for `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        self.floor_by(relative_offset, |e| e.relative_offset)
    }
}

impl TimeIndex {
    /// The last entry whose timestamp is below `timestamp_ms`: every record
    /// up to its batch is older, so a search may start after it.
    pub fn last_before(&self, timestamp_ms: i64) -> Option<TimeEntry> {
        self.floor_by(timestamp_ms.saturating_sub(1), |e| e.timestamp_ms)
    }
}

/// Write side of an index file, owned by the partition's writer.
#[derive(Debug)]
pub struct IndexWriter<E: Entry> {
    writer: MappingWriter,
    _entry: std::marker::PhantomData<E>,
}

impl<E: Entry> IndexWriter<E> {
    pub fn new(writer: MappingWriter) -> Self {
        IndexWriter {
            writer,
            _entry: std::marker::PhantomData,
        }
    }

    pub fn reader(&self) -> Index<E> {
        Index::new(Arc::clone(self.writer.mapping()))
    }

    pub fn has_room(&self) -> bool {
        self.writer.remaining() >= E::BYTES
    }

    /// Allocates the file's first chunk, so that a new segment meets a full
    /// disk at creation rather than at its first index entry.
    pub fn preallocate(&mut self) -> Result<()> {
        self.writer.allocate_to(E::BYTES.min(self.writer.remaining()))
    }

    /// Appends and publishes one entry; fails if the file is at capacity.
    pub fn append(&mut self, entry: E) -> Result<()> {
        if !self.has_room() {
            return Err(crate::error::Error::LimitExceeded {
                limit: "index entries",
                actual: self.writer.pending_len() / E::BYTES + 1,
                max: self.writer.pending_len() / E::BYTES,
            });
        }
        let mut bytes = [0u8; 16];
        let bytes = &mut bytes[..E::BYTES as usize];
        entry.encode(bytes);
        self.writer.write(bytes)?;
        self.writer.publish();
        Ok(())
    }

    pub fn seal(&mut self) -> Result<()> {
        self.writer.truncate_to_published()
    }

    pub fn sync_all(&self) -> Result<()> {
        self.writer.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn writer<E: Entry>(dir: &std::path::Path) -> IndexWriter<E> {
        let path = dir.join("i");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        IndexWriter::new(Mapping::open_writable(file, &path, 1 << 16, 0, 4096, None).unwrap())
    }

    #[test]
    fn offset_lookup_finds_the_floor_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer::<OffsetEntry>(dir.path());
        let index = w.reader();
        assert_eq!(index.lookup(5), None);
        for (rel, pos) in [(0, 0), (10, 4096), (25, 8200)] {
            w.append(OffsetEntry {
                relative_offset: rel,
                position: pos,
            })
            .unwrap();
        }
        assert_eq!(index.lookup(0).unwrap().position, 0);
        assert_eq!(index.lookup(9).unwrap().position, 0);
        assert_eq!(index.lookup(10).unwrap().position, 4096);
        assert_eq!(index.lookup(24).unwrap().position, 4096);
        assert_eq!(index.lookup(u32::MAX).unwrap().position, 8200);
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn time_lookup_finds_the_last_older_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer::<TimeEntry>(dir.path());
        for (ts, rel) in [(100, 0), (200, 7), (300, 9)] {
            w.append(TimeEntry {
                timestamp_ms: ts,
                relative_offset: rel,
            })
            .unwrap();
        }
        let index = w.reader();
        assert_eq!(index.last_before(100), None);
        assert_eq!(index.last_before(101).unwrap().relative_offset, 0);
        assert_eq!(index.last_before(300).unwrap().relative_offset, 7);
        assert_eq!(index.last_before(i64::MAX).unwrap().relative_offset, 9);
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn a_full_index_refuses_an_entry_instead_of_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let mut writer: IndexWriter<OffsetEntry> =
            IndexWriter::new(Mapping::open_writable(file, &path, 16, 0, 4096, None).unwrap());
        writer
            .append(OffsetEntry {
                relative_offset: 0,
                position: 0,
            })
            .unwrap();
        writer
            .append(OffsetEntry {
                relative_offset: 1,
                position: 9,
            })
            .unwrap();
        assert!(
            writer
                .append(OffsetEntry {
                    relative_offset: 2,
                    position: 18
                })
                .is_err()
        );
        assert_eq!(writer.reader().len(), 2);
    }
}
