//! The partition's side of the idempotent producer: checking a batch with
//! a producer id against the producer table before it is appended,
//! recording every such batch that is appended, and keeping the table in
//! step with the log across rolls, truncations and restarts
//! (`crate::producers` holds the table itself).
//!
//! A plain batch (producer id -1) never reaches this file: the append path
//! tests the producer id once and goes on.

use std::sync::atomic::Ordering;

use spool_format::batch::{BatchHeader, ProducerFields};

use super::{Partition, PartitionShared, now_ms};
use crate::error::{Error, Result};
use crate::producers::{self, ProducerEntry, ProducerTable, SequenceCheck};

impl Partition {
    /// What the partition remembers of producer `producer_id`: the state
    /// of its whole local log, appended batches included whether committed
    /// or not.
    pub fn producer_entry(&self, producer_id: i64) -> Option<ProducerEntry> {
        self.shared
            .producers
            .lock()
            .expect("producers lock")
            .get(producer_id)
            .cloned()
    }

    /// The producer table as of `offset` (what it remembers of batches
    /// below it), in the format of the `.producers` snapshot files: for a
    /// replica whose log restarts at `offset` without those batches
    /// ([`Partition::restart_at_with_producers`]).
    pub fn producer_snapshot_below(&self, offset: u64) -> Vec<u8> {
        let table = self.shared.producers.lock().expect("producers lock").clone();
        table.below(offset).encode()
    }

    /// How many producers the partition remembers.
    pub fn producer_count(&self) -> usize {
        self.shared.producers.lock().expect("producers lock").len()
    }

    /// Checks a batch of `record_count` records with `fields` against the
    /// producer table without appending it, for a Raft leader that checks
    /// before it proposes: [`SequenceCheck::Duplicate`] names the original,
    /// [`Error::OutOfOrderSequence`], [`Error::UnknownProducer`] and
    /// [`Error::ProducerFenced`] refuse it.
    pub fn check_producer(&self, fields: ProducerFields, record_count: u32) -> Result<SequenceCheck> {
        self.shared
            .producers
            .lock()
            .expect("producers lock")
            .check(fields, record_count)
    }
}

impl PartitionShared {
    /// Appends an encoded batch that carries a producer id, unless the
    /// table says it is a duplicate: then nothing is written and the
    /// original's header comes back with `true`. Check and append happen
    /// under the writer lock, so two copies of one batch sent at once are
    /// appended once.
    #[cold]
    #[inline(never)]
    pub(super) fn append_idempotent(
        &self,
        encoded: &[u8],
        header: BatchHeader,
        fields: ProducerFields,
        term: u64,
        now: i64,
    ) -> Result<(BatchHeader, bool)> {
        self.check_segment_room(encoded.len() as u64)?;
        let mut slot = self.lock_writer_for_append()?;
        let check = self
            .producers
            .lock()
            .expect("producers lock")
            .check(fields, header.record_count)?;
        if let SequenceCheck::Duplicate(original) = check {
            let original = BatchHeader {
                base_offset: original.base_offset,
                last_offset_delta: original.record_count - 1,
                record_count: original.record_count,
                ..header
            };
            return Ok((original, true));
        }
        let base_offset = self.high_watermark.get();
        if term != 0 || self.terms_in_use.load(Ordering::Acquire) {
            self.prepare_term(term, base_offset)?;
        }
        let header = self.append_locked(
            &mut slot,
            encoded.len() as u64,
            header.record_count,
            base_offset,
            now,
            |buffer, base_offset| {
                buffer.copy_from_slice(encoded);
                spool_format::batch::stamp_base_offset(buffer, base_offset);
                let mut leader_epoch = header.leader_epoch;
                if term != 0 {
                    leader_epoch = term as i32;
                    spool_format::batch::stamp_leader_epoch(buffer, leader_epoch);
                }
                Ok(BatchHeader {
                    base_offset,
                    leader_epoch,
                    ..header
                })
            },
        )?;
        Ok((header, false))
    }

    /// Remembers an appended batch that carries a producer id. Called
    /// under the writer lock, for every append path.
    #[cold]
    #[inline(never)]
    pub(super) fn record_producer(&self, header: &BatchHeader) {
        let limits = self.context.config.producer_limits();
        self.producers
            .lock()
            .expect("producers lock")
            .record(header, limits);
    }

    /// Writes the producer table as of `offset`, where a new segment is
    /// about to start, after forgetting expired producers. A failure is
    /// logged and ignored: the snapshot only spares replay work at the next
    /// open, which then starts from an older snapshot or the log start.
    pub(super) fn snapshot_producers(&self, offset: u64) {
        let limits = self.context.config.producer_limits();
        let mut table = self.producers.lock().expect("producers lock");
        table.expire(now_ms(), limits);
        if let Err(error) = producers::store_snapshot(&self.dir, offset, &table) {
            tracing::warn!(topic = %self.topic, partition = self.id, offset, %error, "writing the producer snapshot failed");
        }
    }

    /// Rebuilds the producer table from the log: the newest snapshot at or
    /// below the high watermark, then the batch headers after it. Run at
    /// open, and under the writer lock after a truncation. Snapshots past
    /// the high watermark are deleted first: they describe batches that a
    /// truncation or a crash removed.
    pub(super) fn rebuild_producers(&self) -> Result<()> {
        let end = self.high_watermark.get();
        producers::delete_snapshots_after(&self.dir, end)?;
        let log_start = self.log_start.load(Ordering::Acquire);
        let (from, mut table) = match producers::load_snapshot(&self.dir, end)? {
            Some((offset, table)) => (offset.max(log_start), table),
            None => (log_start, ProducerTable::default()),
        };
        let limits = self.context.config.producer_limits();
        let segments = self.segments();
        let first = segments
            .partition_point(|s| s.base_offset() <= from)
            .saturating_sub(1);
        for segment in &segments[first..] {
            segment
                .visit_headers(from, |header| {
                    if header.base_offset >= from && header.base_offset < end {
                        table.record(header, limits);
                    }
                })
                .map_err(|damage| self.corrupt(segment, damage))?;
        }
        table.expire(now_ms(), limits);
        *self.producers.lock().expect("producers lock") = table;
        Ok(())
    }

    pub(super) fn check_segment_room(&self, len: u64) -> Result<()> {
        if len > self.settings.segment_bytes_max {
            return Err(Error::LimitExceeded {
                limit: "segment_bytes_max",
                actual: len,
                max: self.settings.segment_bytes_max,
            });
        }
        Ok(())
    }
}
