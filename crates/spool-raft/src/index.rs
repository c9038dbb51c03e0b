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
//! batch header from offset 0 and merging in the own entries ([`merge`]).

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

/// Raft index to offsets, for every entry of the log (index 0 first).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EntryIndex {
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
/// offset 0, ending at `end_offset`) with Raft's own entries (in index
/// order) into the Raft log.
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
) -> Result<Merged> {
    let mut index = EntryIndex::default();
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
            || (index.slots.is_empty() && batch.base_offset != 0)
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

impl EntryIndex {
    /// Reads every batch of `partition` and merges in `own` ([`merge`]).
    /// The log must start at offset 0: once a prefix is gone, the index of
    /// the first batch left is not derivable from the segments alone.
    pub fn rebuild(partition: &Partition, own: &[OwnEntry]) -> Result<Merged> {
        let log_start_offset = partition.log_start_offset();
        if log_start_offset != 0 {
            return Err(Error::LogStartUnknown { log_start_offset });
        }
        let end = partition.high_watermark();
        let mut batches = Vec::new();
        let mut offset = 0;
        while offset < end {
            let read = partition
                .read(offset, REBUILD_READ_BYTES)
                .map_err(|source| Error::Log {
                    op: "read the log to index its entries",
                    source,
                })?;
            for batch in &read.batches {
                let base_offset = batch.base_offset();
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
        merge(batches, end, own)
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

    /// The index of the client entry whose batch starts at `base_offset`.
    pub fn index_of_batch(&self, base_offset: u64) -> Option<u64> {
        let first = self.slots.partition_point(|s| s.base_offset < base_offset);
        self.slots[first..]
            .iter()
            .take_while(|s| s.base_offset == base_offset)
            .position(|s| s.kind == EntryKind::Records)
            .map(|i| (first + i) as u64)
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
        let merged = merge(batches, 9, &own_entries).unwrap();
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
    fn own_entries_past_the_segments_are_not_in_the_log() {
        // A truncation at index 3 (offset 3) cut the segments, and a crash
        // came before raft-entries was cut.
        let own_entries = [own(0, 0, 0), own(1, 0, 1), own(4, 5, 2)];
        let merged = merge([span(0, 3, 1)], 3, &own_entries).unwrap();
        assert_eq!(merged.own_kept, 2);
        assert_eq!(merged.index.next_index(), 3);
    }

    #[test]
    fn an_own_entry_that_does_not_fit_is_damage() {
        // Index 1 claimed by an own entry at offset 3, but a batch starts
        // at 0 with nothing before it.
        assert!(merge([span(0, 3, 1), span(3, 1, 1)], 4, &[own(0, 3, 1)]).is_err());
        // An own entry inside a batch.
        assert!(merge([span(0, 3, 1), span(3, 1, 1)], 4, &[own(1, 2, 1)]).is_err());
        // Two entries for one index.
        assert!(merge([span(0, 3, 1)], 3, &[own(0, 3, 1)]).is_err());
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
            let merged = merge(segments.iter().copied(), end_of(segments), &owns[..owns_kept]).unwrap();
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
            let merged = merge(segments.iter().copied(), from, &owns).unwrap();
            let n = merged.index.slots.len();
            prop_assert!(n >= at);
            prop_assert_eq!(&merged.index.slots[..], &slots[..n]);

            let owns_cut: Vec<OwnEntry> = owns.iter().filter(|e| (e.index as usize) < at).cloned().collect();
            let merged = merge(segments.iter().copied(), from, &owns_cut).unwrap();
            prop_assert_eq!(&merged.index.slots[..], &slots[..at]);
        }
    }
}
