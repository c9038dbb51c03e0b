//! The map from Raft log index to the partition's offsets.
//!
//! Raft numbers entries densely (0, 1, 2, ...) while the partition numbers
//! records, and an entry is a whole batch of any number of records, so an
//! entry's index and its offsets differ. Entry *i* is the *i*-th batch of
//! the log, and [`EntryIndex`] keeps, per entry, the batch's base offset,
//! the offset after it, and its [`EntryKind`]. It lives in memory and is
//! rebuilt at open by reading every batch header from offset 0
//! ([`EntryIndex::rebuild`]), which costs a pass over the log's headers
//! (and the one record of each single-record batch).
//!
//! The term of an entry is not kept here: the partition's term list
//! (`Partition::term_at`) is its source of truth.

use spool_log::Partition;

use crate::entry::{self, EntryKind};
use crate::error::{Error, Result};

/// How much a rebuild reads per call.
const REBUILD_READ_BYTES: u64 = 4 << 20;

/// Where one entry lies in the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub base_offset: u64,
    /// The offset after the batch's last record.
    pub next_offset: u64,
    pub kind: EntryKind,
}

/// Raft index to offsets, for every entry of the log (index 0 first).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EntryIndex {
    slots: Vec<Slot>,
}

impl EntryIndex {
    /// Reads every batch of `partition` and indexes it. The log must start
    /// at offset 0: once a prefix is gone, the index of the first batch
    /// left is not derivable from the segments alone.
    pub fn rebuild(partition: &Partition) -> Result<EntryIndex> {
        let log_start_offset = partition.log_start_offset();
        if log_start_offset != 0 {
            return Err(Error::LogStartUnknown { log_start_offset });
        }
        let end = partition.high_watermark();
        let mut index = EntryIndex::default();
        let mut offset = 0;
        while offset < end {
            let read = partition
                .read(offset, REBUILD_READ_BYTES)
                .map_err(|source| Error::Log {
                    op: "read the log to index its entries",
                    source,
                })?;
            for batch in &read.batches {
                let (kind, _) = entry::classify(batch)?;
                index.push(Slot {
                    base_offset: batch.base_offset(),
                    next_offset: batch.last_offset() + 1,
                    kind,
                });
            }
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
        }
        Ok(index)
    }

    /// The index the next entry gets.
    pub fn next_index(&self) -> u64 {
        self.slots.len() as u64
    }

    /// The index of the last entry, `None` for an empty log.
    pub fn last_index(&self) -> Option<u64> {
        self.next_index().checked_sub(1)
    }

    pub fn get(&self, index: u64) -> Option<Slot> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.slots.get(i))
            .copied()
    }

    /// The slots of the indexes in `start..end`, clipped to the log.
    pub fn range(&self, start: u64, end: u64) -> &[Slot] {
        let len = self.slots.len();
        let clip = |i: u64| usize::try_from(i).map_or(len, |i| i.min(len));
        let (start, end) = (clip(start), clip(end));
        &self.slots[start..end.max(start)]
    }

    /// Adds the entry after the last one.
    ///
    /// # Panics
    ///
    /// If `slot` does not start where the last entry ends: the appender
    /// numbers batches from the partition's high watermark, so a gap is a
    /// bug in this crate, not bad input.
    pub fn push(&mut self, slot: Slot) {
        let expected = self.slots.last().map_or(0, |last| last.next_offset);
        assert_eq!(slot.base_offset, expected, "entries must be contiguous");
        self.slots.push(slot);
    }

    /// Forgets the entries at and after `index`.
    pub fn truncate(&mut self, index: u64) {
        if let Ok(index) = usize::try_from(index) {
            self.slots.truncate(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(base_offset: u64, records: u64) -> Slot {
        Slot {
            base_offset,
            next_offset: base_offset + records,
            kind: EntryKind::Records,
        }
    }

    #[test]
    fn indexes_are_dense_while_offsets_advance_by_record_count() {
        let mut index = EntryIndex::default();
        assert_eq!(index.last_index(), None);
        index.push(slot(0, 1));
        index.push(slot(1, 100));
        index.push(slot(101, 3));
        assert_eq!(index.last_index(), Some(2));
        assert_eq!(index.get(1), Some(slot(1, 100)));
        assert_eq!(index.range(1, 10), &[slot(1, 100), slot(101, 3)]);
        assert!(index.range(5, 2).is_empty());
        index.truncate(1);
        assert_eq!(index.next_index(), 1);
        index.push(slot(1, 2));
        assert_eq!(index.get(1), Some(slot(1, 2)));
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn a_gap_between_entries_is_a_bug() {
        let mut index = EntryIndex::default();
        index.push(slot(0, 1));
        index.push(slot(5, 1));
    }
}
