//! Restarting a partition's log at an offset: every segment goes and the
//! log starts again, empty, at an offset it may never have held, as a Raft
//! follower's log does when it installs a snapshot of entries it never
//! received.
//!
//! Crash safety rests on one small file, `log-restart` (little-endian:
//! magic `SPLR`, version u32 (1), the new start offset u64, the term u64,
//! the producer table's length u32 and bytes, CRC-32 of everything before
//! it), written atomically before anything else changes. Without it the old log is whole; with it,
//! the partition's open finishes the restart before recovery reads a
//! segment ([`finish_pending`]), and the steps that follow it are all
//! idempotent: remove every segment file, the recovery point and the
//! producer snapshots, write the producer table given (if any) as the
//! snapshot at the new start, write the term list, create the new empty
//! segment, and remove the file last. So a crash at any point leaves either the old
//! log or the new one, never a mix. `docs/storage-format.md` (section 5.2)
//! lists the steps.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Partition, PartitionShared};
use crate::checkpoint::RecoveryPoint;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::names::parse_segment_file_name;
use crate::producers;
use crate::segment::{SegmentSettings, SegmentWriter};
use crate::terms::{TERM_MAX, TermLog};

pub const FILE_NAME: &str = "log-restart";
const MAGIC: &[u8; 4] = b"SPLR";
const VERSION: u32 = 1;
/// Magic, version, offset, term and the producer table's length.
const FIXED_BYTES: usize = 28;
const CRC_BYTES: usize = 4;

/// A restart decided but maybe not finished: the content of `log-restart`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingRestart {
    offset: u64,
    term: u64,
    /// The producer table of the new log (a `.producers` snapshot's
    /// bytes); empty for none.
    producers: Vec<u8>,
}

impl PendingRestart {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_BYTES + self.producers.len() + CRC_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.producers);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < FIXED_BYTES + CRC_BYTES {
            return Err(format!("{} bytes are too few", bytes.len()));
        }
        if &bytes[..4] != MAGIC {
            return Err("wrong magic".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let version = u32_at(4);
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        let producers_len = u32_at(24) as usize;
        if FIXED_BYTES + producers_len + CRC_BYTES != bytes.len() {
            return Err(format!(
                "{} bytes do not hold a producer table of {producers_len} bytes",
                bytes.len()
            ));
        }
        let body = bytes.len() - CRC_BYTES;
        if u32_at(body) != crc32fast::hash(&bytes[..body]) {
            return Err("checksum mismatch".into());
        }
        let restart = PendingRestart {
            offset: word(8),
            term: word(16),
            producers: bytes[FIXED_BYTES..body].to_vec(),
        };
        if restart.term > TERM_MAX {
            return Err(format!("term {} is above the largest term", restart.term));
        }
        Ok(restart)
    }
}

impl Partition {
    /// Replaces the whole log by an empty one that starts at `offset`:
    /// every segment is deleted, the log start, high watermark, durable
    /// and committed offsets all become `offset` (the next append gets
    /// it), and the term list records `term` as the term of the offset
    /// before it, so that [`Partition::last_term`] answers `term` and an
    /// append in an older term is refused. The idempotent producer table
    /// starts empty. `offset` may lie anywhere at or above the committed
    /// offset: below the high watermark (the records from there go), or
    /// past it (a log that never held the offsets between).
    ///
    /// Durable when it returns; a crash during the call leaves the old log
    /// or the new one at the next open, never a mix (the module's doc says
    /// how). Refused, with nothing changed, below the committed offset
    /// ([`Error::RestartBelowCommitted`]) and for a term above `i32::MAX`
    /// ([`Error::LimitExceeded`]). An I/O failure part way poisons the
    /// partition; reopening finishes the restart.
    ///
    /// A read that runs concurrently may still return batches of the old
    /// log that it found before the segments went (whole, CRC-checked
    /// batches, never bytes of anything else); a read that starts after the
    /// call returns sees only the new log.
    pub fn restart_at(&self, offset: u64, term: u64) -> Result<()> {
        self.shared.restart_at(offset, term, Vec::new())
    }

    /// [`Partition::restart_at`] whose new log starts with the producer
    /// table `producers` (bytes of [`Partition::producer_snapshot_below`]
    /// on the replica the log is restarted from) instead of an empty one:
    /// it is written as the producer snapshot at `offset`, in the same
    /// crash-safe steps. A table that does not decode is
    /// [`Error::BadProducerTable`], with nothing changed.
    pub fn restart_at_with_producers(&self, offset: u64, term: u64, producers: &[u8]) -> Result<()> {
        producers::check_encoded(producers).map_err(|reason| Error::BadProducerTable { reason })?;
        self.shared.restart_at(offset, term, producers.to_vec())
    }
}

impl PartitionShared {
    fn restart_at(&self, offset: u64, term: u64, producers: Vec<u8>) -> Result<()> {
        if term > TERM_MAX {
            return Err(Error::LimitExceeded {
                limit: "term_max",
                actual: term,
                max: TERM_MAX,
            });
        }
        let mut last_point = self.flush_lock.lock().expect("flush lock");
        let mut slot = self.lock_writer();
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(self.poisoned_error());
        }
        if slot.is_none() {
            return Err(Error::Closed);
        }
        let committed = self.committed.get();
        if offset < committed {
            return Err(Error::RestartBelowCommitted {
                requested: offset,
                committed,
            });
        }
        let restart = PendingRestart {
            offset,
            term,
            producers,
        };
        let result = (|| {
            // Fsync appends still waiting are answered for the log they
            // appended to.
            self.flush_locked()?;
            fsutil::write_atomic(&self.dir.join(FILE_NAME), &restart.encode())?;
            self.crash_point(1)?;
            let mut terms = self.terms.lock().expect("terms lock");
            complete(&self.dir, &restart, &self.settings, &mut terms, |step| {
                self.crash_point(step)
            })
        })();
        let writer = match result {
            Ok(writer) => writer,
            Err(error) => {
                tracing::error!(topic = %self.topic, partition = self.id, offset, %error, "restarting the log failed; refusing further appends until reopened");
                self.poison();
                return Err(error);
            }
        };
        *last_point = None;
        let terms_in_use = !self.terms.lock().expect("terms lock").is_empty();
        self.terms_in_use.store(terms_in_use, Ordering::Release);
        // Memory follows the disk, in an order that never lets a reader
        // pair a bound with segments that do not hold it: the watermark
        // comes down to the new start if it was past it, the start moves,
        // the segment list changes, and only then does the watermark move
        // up to the new start.
        self.high_watermark.retreat(offset);
        self.durable.retreat(offset);
        self.log_start.store(offset, Ordering::Release);
        let old = {
            let mut list = self.segments.write().expect("segment list lock");
            std::mem::replace(&mut *list, Arc::new(vec![Arc::clone(writer.segment())]))
        };
        // The old writer goes without sealing: sealing would shorten a file
        // that readers may still map.
        drop(slot.replace(writer));
        self.high_watermark.advance(offset);
        self.durable.advance(offset);
        self.committed.advance(offset);
        self.context
            .open_segments
            .fetch_sub(old.len() as u64, Ordering::SeqCst);
        self.context.open_segments.fetch_add(1, Ordering::SeqCst);
        // Under the writer lock still: the table of the empty log, or the
        // one given, from the snapshot written at the new start.
        if let Err(error) = self.rebuild_producers() {
            tracing::error!(topic = %self.topic, partition = self.id, offset, %error, "rebuilding the producer table failed; refusing further appends until reopened");
            self.poison();
            return Err(error);
        }
        tracing::info!(topic = %self.topic, partition = self.id, offset, term, "restarted the log");
        Ok(())
    }

    /// A test's crash after `step` (`FaultInjector::set_restart_crash_step`).
    fn crash_point(&self, step: u32) -> Result<()> {
        let faults = self.context.config.faults.as_deref();
        match faults.and_then(|faults| faults.restart_crash(step)) {
            Some(error) => Err(Error::io("restart", &self.dir, error)),
            None => Ok(()),
        }
    }
}

/// Finishes a restart that a crash interrupted, before the partition in
/// `dir` is recovered: with a `log-restart` file present, the old segments
/// are removed and the new, empty one created. Returns the offset the log
/// restarted at, if there was a restart to finish. A `log-restart` that
/// does not decode is an error (its atomic write makes a torn one
/// impossible, so it is damage, and guessing could serve a mix of logs).
pub(crate) fn finish_pending(dir: &Path, settings: &SegmentSettings) -> Result<Option<u64>> {
    let path = dir.join(FILE_NAME);
    let Some(restart) = fsutil::read_decoded(&path, PendingRestart::decode)? else {
        return Ok(None);
    };
    tracing::warn!(path = %path.display(), offset = restart.offset, "finishing a log restart that a crash interrupted");
    let mut terms = TermLog::load(dir)?;
    let writer = complete(dir, &restart, settings, &mut terms, |_| Ok(()))?;
    // The recovery that follows opens the segment from its files again.
    drop(writer);
    Ok(Some(restart.offset))
}

/// The steps after `log-restart` is durable; each may be run again after a
/// crash. `crash_point(step)` is called after step `step` (2 to 5).
fn complete(
    dir: &Path,
    restart: &PendingRestart,
    settings: &SegmentSettings,
    terms: &mut TermLog,
    crash_point: impl Fn(u32) -> Result<()>,
) -> Result<SegmentWriter> {
    // 2. Every segment file and everything that describes the old log's
    //    contents: the recovery point and the producer snapshots; then
    //    the new log's producer table, if one was given.
    remove_segment_files(dir)?;
    RecoveryPoint::remove(dir)?;
    producers::delete_snapshots(dir)?;
    if !restart.producers.is_empty() {
        producers::store_encoded_snapshot(dir, restart.offset, &restart.producers)?;
    }
    fsutil::sync_dir(dir)?;
    crash_point(2)?;

    // 3. The term list of the new log.
    terms.restart(restart.term, restart.offset)?;
    fsutil::sync_dir(dir)?;
    crash_point(3)?;

    // 4. The new, empty segment (its creation syncs the directory).
    let writer = SegmentWriter::create(dir, restart.offset, settings)?;
    crash_point(4)?;

    // 5. The switch is done.
    let path = dir.join(FILE_NAME);
    std::fs::remove_file(&path).ctx("remove", &path)?;
    fsutil::sync_dir(dir)?;
    crash_point(5)?;
    Ok(writer)
}

fn remove_segment_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let name = entry.file_name();
        let is_segment_file = name
            .to_str()
            .and_then(parse_segment_file_name)
            .is_some_and(|parsed| parsed.is_ok());
        if is_segment_file {
            std::fs::remove_file(entry.path()).ctx("remove", &entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_damage_is_refused() {
        let restart = PendingRestart {
            offset: 1234,
            term: 7,
            producers: b"a table".to_vec(),
        };
        let bytes = restart.encode();
        assert_eq!(PendingRestart::decode(&bytes), Ok(restart));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(PendingRestart::decode(&damaged).is_err(), "byte {i}");
        }
        assert!(PendingRestart::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
