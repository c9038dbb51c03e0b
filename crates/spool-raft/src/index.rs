//! The map from Raft log index to where each entry is stored.
//!
//! Raft numbers entries densely (0, 1, 2, ...). A client's entry is a
//! batch of any number of records in the partition's segments; Raft's own
//! entries (blank, membership) are in the `raft-entries` file and take no
//! offset (`crate::own_entries`). So the log is the segments' batches in
//! offset order with Raft's own entries between them, each at the offset
//! where it was appended, and [`EntryIndex`] keeps per entry a [`Slot`]:
//! its offsets (an own entry's base and next offset are the same), term
//! and kind. It lives in memory and is rebuilt at open by reading every
//! batch header from the log's recorded start (offset 0 and index 0 for a
//! log that was never purged; `crate::log_start` otherwise) and merging in
//! the own entries ([`merge`]). Entries below the start were purged: their
//! slots are gone, and the index of the first slot is the recorded first
//! index.

use spool_log::Partition;

use crate::entry::EntryKind;
use crate::error::{Error, Result};
use crate::own_entries::OwnEntry;

/// How much a rebuild reads per call.
const REBUILD_READ_BYTES: u64 = 4 << 20;

/// Where one entry lies in the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub base_offset: u64,
    /// The offset after the batch's last record; `base_offset` for one of
    /// Raft's own entries, which holds no record.
    pub next_offset: u64,
    /// The Raft term the entry was appended in.
    pub term: u64,
    pub kind: EntryKind,
}

/// A client batch found in the segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub base_offset: u64,
    pub next_offset: u64,
    pub term: u64,
}

/// Raft index to offsets, for every entry of the log from its first held
/// entry (index 0 at offset 0 until a purge or a snapshot moves the start).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EntryIndex {
    /// The Raft index of `slots[0]`.
    first_index: u64,
    /// Where the first entry starts (and, for an empty index, where the
    /// next one will).
    start_offset: u64,
    slots: Vec<Slot>,
}

/// What [`merge`] made of the segments and `raft-entries`.
#[derive(Debug)]
pub struct Merged {
    pub index: EntryIndex,
    /// How many of the own entries given are in the log; the rest lie past
    /// the end of the segments (left by a truncation that a crash
    /// interrupted after the segments were cut) and must be removed from
    /// `raft-entries`.
    pub own_kept: usize,
}

/// Interleaves the client batches of the segments (in offset order, from
/// `start`'s offset, ending at `end_offset`) with Raft's own entries (in
/// index order, none below `start`'s index) into the Raft log, whose first
/// entry gets `start`'s index.
///
/// Own entries that lie past the segments' end are not part of the log
/// ([`Merged::own_kept`]). Anything else that does not fit (an own entry
/// whose index another entry takes, or one that sits inside the batches)
/// is damage no crash leaves, and an error: guessing would shift the
/// index of every entry after it.
pub fn merge(
    batches: impl IntoIterator<Item = BatchSpan>,
    end_offset: u64,
    own: &[OwnEntry],
    start: LogStart,
) -> Result<Merged> {
    let mut index = EntryIndex::starting_at(start);
    let mut next_own = 0;
    // Pushes the own entries whose index comes next and that sit at
    // `offset`.
    let take_own = |index: &mut EntryIndex, next_own: &mut usize, offset: u64| {
        while let Some(entry) = own.get(*next_own)
            && entry.index == index.next_index()
            && entry.offset == offset
        {
            index.push(Slot {
                base_offset: offset,
                next_offset: offset,
                term: entry.term,
                kind: entry.kind,
            });
            *next_own += 1;
        }
    };
    for batch in batches {
        take_own(&mut index, &mut next_own, batch.base_offset);
        if let Some(entry) = own.get(next_own)
            && (entry.index <= index.next_index() || entry.offset < batch.next_offset)
        {
            return Err(Error::BadEntry {
                offset: entry.offset,
                reason: "an entry of raft-entries does not fit between the segments' batches",
            });
        }
        if index
            .slots
            .last()
            .is_some_and(|last| last.next_offset != batch.base_offset)
            || (index.slots.is_empty() && batch.base_offset != start.offset)
        {
            return Err(Error::BadEntry {
                offset: batch.base_offset,
                reason: "the batches are not contiguous",
            });
        }
        index.push(Slot {
            base_offset: batch.base_offset,
            next_offset: batch.next_offset,
            term: batch.term,
            kind: EntryKind::Records,
        });
    }
    take_own(&mut index, &mut next_own, end_offset);
    Ok(Merged {
        index,
        own_kept: next_own,
    })
}

/// Where a log starts: the Raft index of its first entry and the offset
/// that entry starts at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogStart {
    pub index: u64,
    pub offset: u64,
}

impl EntryIndex {
    /// An empty index whose first entry will be `start`.
    pub fn starting_at(start: LogStart) -> EntryIndex {
        EntryIndex {
            first_index: start.index,
            start_offset: start.offset,
            slots: Vec::new(),
        }
    }

    /// Reads every batch of `partition` from `start`'s offset and merges in
    /// `own`, whose entries are none below `start`'s index ([`merge`]).
    /// The segments may begin before `start` (a purge records the start
    /// before it deletes segments, and a crash can come between): batches
    /// below it are skipped. Segments that begin after it are
    /// [`Error::LogStartUnknown`]: the entries between are gone.
    pub fn rebuild(partition: &Partition, own: &[OwnEntry], start: LogStart) -> Result<Merged> {
        let log_start_offset = partition.log_start_offset();
        let end = partition.high_watermark();
        if log_start_offset > start.offset || start.offset > end {
            return Err(Error::LogStartUnknown {
                log_start_offset,
                recorded_offset: start.offset,
            });
        }
        let mut batches = Vec::new();
        let mut offset = start.offset;
        while offset < end {
            let read = partition
                .read(offset, REBUILD_READ_BYTES)
                .map_err(|source| Error::Log {
                    op: "read the log to index its entries",
                    source,
                })?;
            for batch in &read.batches {
                let base_offset = batch.base_offset();
                if base_offset < start.offset {
                    continue;
                }
                batches.push(BatchSpan {
                    base_offset,
                    next_offset: batch.last_offset() + 1,
                    term: partition.term_at(base_offset).ok_or(Error::BadEntry {
                        offset: base_offset,
                        reason: "the batch's offset is not in the log",
                    })?,
                });
            }
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
        }
        merge(batches, end, own, start)
    }

    /// The index of the first entry held (the next entry's, if none is).
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Where the log starts: its first held entry's index and offset.
    pub fn start(&self) -> LogStart {
        LogStart {
            index: self.first_index,
            offset: self.start_offset,
        }
    }

    /// The index the next entry gets.
    pub fn next_index(&self) -> u64 {
        self.first_index + self.slots.len() as u64
    }

    /// The index of the last entry, `None` for a log that holds none.
    pub fn last_index(&self) -> Option<u64> {
        (!self.slots.is_empty()).then(|| self.next_index() - 1)
    }

    /// Where the next entry starts.
    pub fn end_offset(&self) -> u64 {
        self.slots
            .last()
            .map_or(self.start_offset, |last| last.next_offset)
    }

    pub fn get(&self, index: u64) -> Option<Slot> {
        index
            .checked_sub(self.first_index)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.slots.get(i))
            .copied()
    }

    /// The offset after the entry at `index`, if the log knows it: the
    /// entry's own end if it is held, or the start of the log if `index`
    /// is the entry just before it (purged, or covered by a snapshot).
    pub fn offset_after(&self, index: u64) -> Option<u64> {
        match self.get(index) {
            Some(slot) => Some(slot.next_offset),
            None if index.checked_add(1) == Some(self.first_index) => Some(self.start_offset),
            None => None,
        }
    }

    /// The index of the client entry whose batch starts at `base_offset`.
    pub fn index_of_batch(&self, base_offset: u64) -> Option<u64> {
        let first = self.slots.partition_point(|s| s.base_offset < base_offset);
        self.slots[first..]
            .iter()
            .take_while(|s| s.base_offset == base_offset)
            .position(|s| s.kind == EntryKind::Records)
            .map(|i| self.first_index + (first + i) as u64)
    }

    /// The index of the first entry that starts at or after `offset`
    /// (the next index if none does).
    pub fn first_at_or_after(&self, offset: u64) -> u64 {
        self.first_index + self.slots.partition_point(|s| s.base_offset < offset) as u64
    }

    /// The index of the last entry that ends at or below `offset` (every
    /// record of its batch lies below `offset`; one of Raft's own entries
    /// sitting at `offset` counts), if any entry held does.
    pub fn last_ending_at_or_below(&self, offset: u64) -> Option<u64> {
        let count = self.slots.partition_point(|s| s.next_offset <= offset) as u64;
        count.checked_sub(1).map(|i| self.first_index + i)
    }

    /// The slots of the indexes in `start..end`, clipped to the log.
    pub fn range(&self, start: u64, end: u64) -> &[Slot] {
        let len = self.slots.len();
        let clip = |i: u64| {
            let relative = i.saturating_sub(self.first_index);
            usize::try_from(relative).map_or(len, |i| i.min(len))
        };
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
        assert_eq!(slot.base_offset, self.end_offset(), "entries must be contiguous");
        self.slots.push(slot);
    }

    /// Forgets the entries at and after `index`.
    pub fn truncate(&mut self, index: u64) {
        let relative = index.saturating_sub(self.first_index);
        if let Ok(relative) = usize::try_from(relative) {
            self.slots.truncate(relative);
        }
    }

    /// Forgets the entries before `index` (purged), which must be held or
    /// be the next index.
    pub fn forget_before(&mut self, index: u64) {
        if index <= self.first_index || index > self.next_index() {
            return;
        }
        let start_offset = self.get(index).map_or(self.end_offset(), |slot| slot.base_offset);
        let drop = (index - self.first_index) as usize;
        self.slots.drain(..drop);
        self.first_index = index;
        self.start_offset = start_offset;
    }

    /// Forgets every entry: the log starts again, empty, at `start`.
    pub fn restart(&mut self, start: LogStart) {
        *self = EntryIndex::starting_at(start);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn slot(base_offset: u64, records: u64) -> Slot {
        Slot {
            base_offset,
            next_offset: base_offset + records,
            term: 1,
            kind: EntryKind::Records,
        }
    }

    fn own(index: u64, offset: u64, term: u64) -> OwnEntry {
        OwnEntry {
            index,
            offset,
            term,
            kind: EntryKind::Blank,
            value: Bytes::new(),
        }
    }

    fn span(base_offset: u64, records: u64, term: u64) -> BatchSpan {
        BatchSpan {
            base_offset,
            next_offset: base_offset + records,
            term,
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

    #[test]
    fn own_entries_sit_between_batches_without_offsets() {
        // membership, blank (term 1), 3 records, 2 records, blank (term
        // 2), blank (term 3), 4 records.
        let own_entries = [own(0, 0, 0), own(1, 0, 1), own(4, 5, 2), own(5, 5, 3)];
        let batches = [span(0, 3, 1), span(3, 2, 1), span(5, 4, 3)];
        let merged = merge(batches, 9, &own_entries, LogStart::default()).unwrap();
        assert_eq!(merged.own_kept, 4);
        let offsets: Vec<(u64, u64, u64)> = merged
            .index
            .range(0, 10)
            .iter()
            .map(|s| (s.base_offset, s.next_offset, s.term))
            .collect();
        assert_eq!(
            offsets,
            [
                (0, 0, 0),
                (0, 0, 1),
                (0, 3, 1),
                (3, 5, 1),
                (5, 5, 2),
                (5, 5, 3),
                (5, 9, 3)
            ]
        );
    }

    #[test]
    fn a_log_that_starts_past_zero_numbers_from_its_recorded_start() {
        // Purged up to index 9; the first entry held is a blank entry at
        // index 10, offset 100, then batches.
        let start = LogStart {
            index: 10,
            offset: 100,
        };
        let merged = merge([span(100, 3, 2), span(103, 2, 2)], 105, &[own(10, 100, 2)], start).unwrap();
        let index = merged.index;
        assert_eq!(index.first_index(), 10);
        assert_eq!(index.next_index(), 13);
        assert_eq!(index.get(9), None);
        assert_eq!(index.get(11), Some(span_slot(100, 3, 2)));
        assert_eq!(index.offset_after(9), Some(100));
        assert_eq!(index.offset_after(12), Some(105));
        assert_eq!(index.offset_after(8), None);
        assert_eq!(index.index_of_batch(103), Some(12));
        assert_eq!(index.range(0, 12).len(), 2);
        assert_eq!(index.last_ending_at_or_below(104), Some(11));
        assert_eq!(index.last_ending_at_or_below(99), None);
        assert_eq!(index.first_at_or_after(101), 12);
        // A first batch elsewhere than the recorded offset is damage.
        assert!(merge([span(90, 10, 2)], 100, &[], start).is_err());

        let mut purged = index.clone();
        purged.forget_before(12);
        assert_eq!(
            purged.start(),
            LogStart {
                index: 12,
                offset: 103
            }
        );
        assert_eq!(purged.get(12), Some(span_slot(103, 2, 2)));
        purged.forget_before(13);
        assert_eq!(
            purged.start(),
            LogStart {
                index: 13,
                offset: 105
            }
        );
        assert_eq!(purged.last_index(), None);
        purged.push(span_slot(105, 1, 3));
        assert_eq!(purged.last_index(), Some(13));

        let mut restarted = index;
        restarted.restart(LogStart {
            index: 50,
            offset: 900,
        });
        assert_eq!(restarted.next_index(), 50);
        assert_eq!(restarted.end_offset(), 900);
        restarted.truncate(20);
        assert_eq!(restarted.next_index(), 50);
    }

    fn span_slot(base_offset: u64, records: u64, term: u64) -> Slot {
        Slot {
            base_offset,
            next_offset: base_offset + records,
            term,
            kind: EntryKind::Records,
        }
    }

    #[test]
    fn own_entries_past_the_segments_are_not_in_the_log() {
        // A truncation at index 3 (offset 3) cut the segments, and a crash
        // came before raft-entries was cut.
        let own_entries = [own(0, 0, 0), own(1, 0, 1), own(4, 5, 2)];
        let merged = merge([span(0, 3, 1)], 3, &own_entries, LogStart::default()).unwrap();
        assert_eq!(merged.own_kept, 2);
        assert_eq!(merged.index.next_index(), 3);
    }

    #[test]
    fn an_own_entry_that_does_not_fit_is_damage() {
        // Index 1 claimed by an own entry at offset 3, but a batch starts
        // at 0 with nothing before it.
        assert!(
            merge(
                [span(0, 3, 1), span(3, 1, 1)],
                4,
                &[own(0, 3, 1)],
                LogStart::default()
            )
            .is_err()
        );
        // An own entry inside a batch.
        assert!(
            merge(
                [span(0, 3, 1), span(3, 1, 1)],
                4,
                &[own(1, 2, 1)],
                LogStart::default()
            )
            .is_err()
        );
        // Two entries for one index.
        assert!(merge([span(0, 3, 1)], 3, &[own(0, 3, 1)], LogStart::default()).is_err());
    }

    /// One entry of a generated log: a client batch of `records`, or one
    /// of Raft's own entries.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        Batch { records: u64 },
        Own,
    }

    /// The storage of a whole log: every slot, the segments' batches and
    /// raft-entries.
    fn store(ops: &[Op]) -> (Vec<Slot>, Vec<BatchSpan>, Vec<OwnEntry>) {
        let (mut slots, mut batches, mut owns) = (Vec::new(), Vec::new(), Vec::new());
        let mut offset = 0;
        for (i, op) in ops.iter().enumerate() {
            let term = i as u64 / 3;
            match op {
                Op::Batch { records } => {
                    batches.push(span(offset, *records, term));
                    slots.push(Slot {
                        base_offset: offset,
                        next_offset: offset + records,
                        term,
                        kind: EntryKind::Records,
                    });
                    offset += records;
                }
                Op::Own => {
                    owns.push(own(i as u64, offset, term));
                    slots.push(Slot {
                        base_offset: offset,
                        next_offset: offset,
                        term,
                        kind: EntryKind::Blank,
                    });
                }
            }
        }
        (slots, batches, owns)
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![(1u64..5).prop_map(|records| Op::Batch { records }), Just(Op::Own)],
            0..40,
        )
    }

    fn end_of(batches: &[BatchSpan]) -> u64 {
        batches.last().map_or(0, |b| b.next_offset)
    }

    proptest! {
        /// A crash during appends: raft-entries keeps a prefix (the torn
        /// rest cut), the segments keep every batch before its last entry
        /// (made durable before the entry was written) and maybe some
        /// after, but none after a lost entry (appended only once the
        /// entry was fsynced). The rebuilt log is a prefix of the log.
        #[test]
        fn a_crash_during_appends_leaves_a_prefix(
            ops in ops(),
            own_cut in any::<prop::sample::Index>(),
            batch_cut in any::<prop::sample::Index>(),
        ) {
            let (slots, batches, owns) = store(&ops);
            let owns_kept = own_cut.index(owns.len() + 1);
            let batches_before = |own: Option<&OwnEntry>| {
                own.map_or(batches.len(), |e| batches.partition_point(|b| b.base_offset < e.offset))
            };
            let at_least = owns_kept.checked_sub(1).map_or(0, |last| batches_before(owns.get(last)));
            let at_most = batches_before(owns.get(owns_kept));
            let kept = at_least + batch_cut.index(at_most - at_least + 1);
            let segments = &batches[..kept];
            let merged = merge(segments.iter().copied(), end_of(segments), &owns[..owns_kept], LogStart::default()).unwrap();
            let n = merged.index.slots.len();
            prop_assert_eq!(&merged.index.slots[..], &slots[..n]);
            prop_assert_eq!(merged.own_kept, owns_kept);
        }

        /// A crash during a truncation at entry `at`: the segments are cut
        /// at its offset first, raft-entries after. The rebuilt log is a
        /// prefix of the old log no shorter than `at`; and once both are
        /// cut, exactly the first `at` entries.
        #[test]
        fn a_crash_during_a_truncation_leaves_a_prefix_no_shorter_than_the_cut(
            ops in ops(),
            at in any::<prop::sample::Index>(),
        ) {
            let (slots, batches, owns) = store(&ops);
            prop_assume!(!slots.is_empty());
            let at = at.index(slots.len());
            let from = slots[at].base_offset;
            let segments: Vec<BatchSpan> = batches.iter().copied().filter(|b| b.base_offset < from).collect();
            let merged = merge(segments.iter().copied(), from, &owns, LogStart::default()).unwrap();
            let n = merged.index.slots.len();
            prop_assert!(n >= at);
            prop_assert_eq!(&merged.index.slots[..], &slots[..n]);

            let owns_cut: Vec<OwnEntry> = owns.iter().filter(|e| (e.index as usize) < at).cloned().collect();
            let merged = merge(segments.iter().copied(), from, &owns_cut, LogStart::default()).unwrap();
            prop_assert_eq!(&merged.index.slots[..], &slots[..at]);
        }
    }
}
