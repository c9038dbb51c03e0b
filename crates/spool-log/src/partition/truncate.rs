//! Suffix truncation: removing every record at and after an offset, as a
//! Raft follower does with an uncommitted suffix that conflicts with its
//! leader's log.
//!
//! The segment files are never shortened in place, because readers may
//! hold mappings of them (a file shortened under a mapping raises SIGBUS on
//! the next read of the lost pages, `docs/SAFETY.md`): the segment holding
//! the truncation point is replaced by a new file holding the kept prefix
//! (a copy, which `std::io::copy` does in the kernel with
//! `copy_file_range`), later segments are unlinked, and readers that still
//! hold the old segment list keep reading the old, unlinked files until
//! they drop them. `docs/storage-format.md` (section 5.1) gives the steps
//! and why a crash between any two of them recovers to a log that is
//! either the old one or a prefix of it no shorter than the truncation
//! point, and to exactly the truncated log once the call has returned.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Partition, PartitionShared};
use crate::checkpoint::RecoveryPoint;
use crate::error::{Error, IoContext, Result};
use crate::names::SegmentFile;
use crate::segment::{OpenMode, ScanStart, Segment, SegmentWriter};

impl Partition {
    /// Removes every record at and after `from_offset`, durably: when the
    /// call returns, a crash and reopen finds the log ending at
    /// `from_offset`. The high watermark and the durable offset move back
    /// to `from_offset`, the term list forgets the terms from there on, and
    /// the next append starts there. Everything below `from_offset` is on
    /// disk afterwards (the call flushes first).
    ///
    /// Refused, with nothing changed, below the log start
    /// ([`Error::TruncateBelowLogStart`]), below `committed_offset` or the
    /// partition's own committed offset ([`Error::TruncateBelowCommitted`]),
    /// and inside a batch ([`Error::NotBatchBoundary`]). At or past the
    /// high watermark there is nothing to remove and nothing changes.
    ///
    /// A read that runs concurrently may still return batches at or past
    /// `from_offset` that it found in the segments before they went: they
    /// are whole, CRC-checked batches of the old log, never bytes of
    /// anything else. A read that starts after the call returns sees only
    /// the truncated log. Reads bounded by the committed offset
    /// ([`Partition::read_committed`]) never see a truncated record, since
    /// truncation never goes below it.
    ///
    /// An I/O failure part way poisons the partition: the files are then in
    /// one of the states a crash would leave, which reopening recovers.
    pub fn truncate_suffix(&self, from_offset: u64, committed_offset: u64) -> Result<()> {
        self.shared.truncate_suffix(from_offset, committed_offset)
    }
}

impl PartitionShared {
    fn truncate_suffix(&self, from: u64, committed: u64) -> Result<()> {
        let mut last_point = self.flush_lock.lock().expect("flush lock");
        let mut slot = self.lock_writer();
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(self.poisoned_error());
        }
        if slot.is_none() {
            return Err(Error::Closed);
        }
        let log_start = self.log_start.load(Ordering::Acquire);
        if from < log_start {
            return Err(Error::TruncateBelowLogStart {
                requested: from,
                log_start,
            });
        }
        let committed = committed.max(self.committed.get());
        if from < committed {
            return Err(Error::TruncateBelowCommitted {
                requested: from,
                committed,
            });
        }
        if from >= self.high_watermark.get() {
            return Ok(());
        }
        let segments = self.segments();
        let index = segments.partition_point(|s| s.base_offset() <= from) - 1;
        let segment = &segments[index];
        let (position, batch_base_offset) = segment
            .batch_holding(from)
            .map_err(|damage| self.corrupt(segment, damage))?
            .expect("an offset below the high watermark is published");
        if batch_base_offset != from {
            return Err(Error::NotBatchBoundary {
                offset: from,
                batch_base_offset,
            });
        }
        let steps = Steps {
            shared: self,
            segments: &segments,
            index,
            position,
            from,
        };
        let result = steps.run(&mut last_point).map(|writer| {
            // Memory follows the disk. The watermark goes back first: a
            // reader that then takes the old segment list still serves
            // nothing past it.
            self.high_watermark.retreat(from);
            self.durable.retreat(from);
            let mut kept = segments[..index].to_vec();
            kept.push(Arc::clone(writer.segment()));
            *self.segments.write().expect("segment list lock") = Arc::new(kept);
            // The old writer goes without sealing: sealing would shorten a
            // file that readers may still map.
            drop(slot.replace(writer));
            let removed = (segments.len() - index - 1) as u64;
            self.context.open_segments.fetch_sub(removed, Ordering::SeqCst);
        });
        if let Err(error) = &result {
            tracing::error!(topic = %self.topic, partition = self.id, from, %error, "truncation failed; refusing further appends until reopened");
            self.poison();
        }
        result?;
        // Under the writer lock still, so no append is recorded in the
        // table that the rebuild replaces.
        if let Err(error) = self.rebuild_producers() {
            tracing::error!(topic = %self.topic, partition = self.id, from, %error, "rebuilding the producer table failed; refusing further appends until reopened");
            self.poison();
            return Err(error);
        }
        tracing::info!(topic = %self.topic, partition = self.id, from, "truncated the log");
        Ok(())
    }
}

/// The disk side of one truncation, in crash-safe order.
struct Steps<'a> {
    shared: &'a PartitionShared,
    segments: &'a [Arc<Segment>],
    /// The segment holding the truncation point, and the point's byte
    /// position and offset in it (a batch boundary).
    index: usize,
    position: u64,
    from: u64,
}

impl Steps<'_> {
    /// A test's crash after `step` (`FaultInjector::set_truncate_crash_step`).
    fn crash_point(&self, step: u32) -> Result<()> {
        let faults = self.shared.context.config.faults.as_deref();
        match faults.and_then(|faults| faults.truncate_crash(step)) {
            Some(error) => Err(Error::io("truncate", &self.shared.dir, error)),
            None => Ok(()),
        }
    }

    fn run(&self, last_point: &mut Option<RecoveryPoint>) -> Result<SegmentWriter> {
        let shared = self.shared;
        let dir = &shared.dir;
        let segment = &self.segments[self.index];
        let base = segment.base_offset();

        // 1. Flush: Fsync appends still waiting are answered for the log
        //    they appended to, and the kept prefix is on disk.
        shared.flush_locked()?;
        self.crash_point(1)?;

        // 2. A recovery point past the truncation point would vouch for
        //    bytes about to go; move it to the start of the segment being
        //    cut, which every earlier recovery point already covered.
        if last_point.is_some_and(|point| point.next_offset > self.from) {
            let point = RecoveryPoint {
                segment_base: base,
                position: 0,
                next_offset: base,
                max_timestamp_ms: i64::MIN,
            };
            point.store(dir)?;
            *last_point = Some(point);
        }
        self.crash_point(2)?;

        // 3. The kept prefix, into a temporary file (recovery deletes
        //    `.tmp` files), synced.
        let log_path = segment.path(SegmentFile::Log);
        let temp_path = log_path.with_extension("log.tmp");
        copy_prefix(&log_path, &temp_path, self.position)?;
        self.crash_point(3)?;

        // 4. Later segments, newest first, so that what is left is always
        //    a prefix of the old log.
        for later in self.segments[self.index + 1..].iter().rev() {
            later.delete_files()?;
        }
        crate::fsutil::sync_dir(dir)?;
        self.crash_point(4)?;

        // 5. The prefix replaces the segment; its index files go, to be
        //    rebuilt (removing, not shortening, them keeps readers' index
        //    mappings whole).
        std::fs::rename(&temp_path, &log_path).ctx("rename", &temp_path)?;
        for kind in [SegmentFile::Index, SegmentFile::TimeIndex] {
            let path = segment.path(kind);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("remove", path, e));
                }
                _ => {}
            }
        }
        crate::fsutil::sync_dir(dir)?;
        self.crash_point(5)?;

        // 6. The cut segment becomes the active one: opened as recovery
        //    opens a segment, which rebuilds and syncs its indexes and
        //    checks every kept batch.
        let start = ScanStart::segment_start(base);
        let (writer, scan) = SegmentWriter::open(dir, base, start, &shared.settings, OpenMode::Recover)?;
        if scan.next_offset != self.from || scan.damage.is_some() {
            return Err(Error::Corrupt {
                topic: shared.topic.clone(),
                partition: shared.id,
                segment: log_path,
                position: scan.valid_bytes,
                first_offset: scan.next_offset,
                last_offset: self.from,
                reason: format!(
                    "the kept prefix ends at offset {} instead of {}: {}",
                    scan.next_offset,
                    self.from,
                    scan.damage.as_deref().unwrap_or("no damage found")
                ),
            });
        }
        self.crash_point(6)?;

        // 7. The term list, last: until now it may name terms past the end
        //    of the log, which every query ignores.
        let mut terms = shared.terms.lock().expect("terms lock");
        terms.truncate(self.from, shared.log_start.load(Ordering::Acquire))?;
        shared.terms_in_use.store(!terms.is_empty(), Ordering::Release);
        Ok(writer)
    }
}

/// Writes the first `len` bytes of `source` to a new file `target` and
/// syncs it.
fn copy_prefix(source: &std::path::Path, target: &std::path::Path, len: u64) -> Result<()> {
    let mut from = File::open(source).ctx("open", source)?.take(len);
    let mut to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(target)
        .ctx("create", target)?;
    let copied = std::io::copy(&mut from, &mut to).ctx("copy", target)?;
    if copied != len {
        return Err(Error::io(
            "copy",
            target,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{copied} of {len} bytes"),
            ),
        ));
    }
    to.sync_all().ctx("fsync", target)
}
