//! The term of every offset: a partition's list of (term, start offset)
//! pairs, Kafka's leader-epoch checkpoint under Raft's name. Entry *i* says
//! that the batches from its start offset up to the next entry's start were
//! appended in its term; offsets before the first entry are in term 0.
//!
//! File `leader-epochs` in the partition directory, little-endian: magic
//! `SPLE`, version u32 (1), entry count u32, then per entry term u64 and
//! start offset u64, then a CRC-32 of everything before it. Replaced whole
//! with an atomic write whenever it changes; absent means "every offset is
//! in term 0", which is what a partition that never saw a term has, so
//! single-node partitions never write one.
//!
//! The file, not the leader-epoch field of the batch headers (which lies
//! outside the batch CRC), is the source of truth: the header copy is for
//! readers of a batch on its own (a follower, a Kafka front end) and a
//! damaged header epoch never changes what [`TermLog::term_at`] answers.
//!
//! Consistency with the log. The file is written before the batch that
//! starts a new term, and cut after the log is truncated, so after a crash
//! it can name a start offset at or past the end of the recovered log, never
//! miss the start of a batch's term. Such entries describe no batch and are
//! ignored by every query; the next append rewrites the file without them
//! ([`TermLog::prepare_append`]), before it writes a batch that they could
//! otherwise claim.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;

pub const FILE_NAME: &str = "leader-epochs";
const MAGIC: &[u8; 4] = b"SPLE";
const VERSION: u32 = 1;
const PREFIX_BYTES: usize = 12;
const ENTRY_BYTES: usize = 16;
const CRC_BYTES: usize = 4;

/// The largest term the engine accepts: the batch header's leader-epoch
/// field is an `i32`, as in Kafka.
pub const TERM_MAX: u64 = i32::MAX as u64;

/// The first offset appended in a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermStart {
    pub term: u64,
    pub start_offset: u64,
}

/// The partition's term list, mirrored in memory exactly as it is on disk.
#[derive(Debug)]
pub(crate) struct TermLog {
    path: PathBuf,
    entries: Vec<TermStart>,
}

impl TermLog {
    /// Reads the partition's term list. A missing file is an empty list; a
    /// damaged one is an error, because treating it as absent would answer
    /// term 0 for offsets of later terms, and Raft's log matching would then
    /// accept entries that conflict.
    pub fn load(partition_dir: &Path) -> Result<TermLog> {
        let path = partition_dir.join(FILE_NAME);
        let entries = crate::fsutil::read_decoded(&path, decode)?.unwrap_or_default();
        Ok(TermLog { path, entries })
    }

    /// True if the file exists: the partition has seen a term above 0.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[TermStart] {
        &self.entries
    }

    /// The term of `offset`, which the caller knows to be in the log (at
    /// or past the log start, below the end).
    pub fn term_at(&self, offset: u64) -> u64 {
        let after = self.entries.partition_point(|e| e.start_offset <= offset);
        after.checked_sub(1).map_or(0, |i| self.entries[i].term)
    }

    /// The term of the last batch of a log that ends at `end` (0 if no
    /// entry starts before it).
    pub fn last_term(&self, end: u64) -> u64 {
        self.entries
            .iter()
            .rev()
            .find(|e| e.start_offset < end)
            .map_or(0, |e| e.term)
    }

    /// Makes the file right for a batch of `term` appended at `end`, the
    /// log's current end: drops entries that describe no batch (at or past
    /// `end`, left by a crash or a failed append), adds `(term, end)` if the
    /// term is new, and forgets entries wholly below `log_start`. Writes
    /// only if that changes anything; in steady state it is a comparison.
    pub fn prepare_append(&mut self, term: u64, end: u64, log_start: u64) -> Result<()> {
        let last_term = self.last_term(end);
        if term < last_term {
            return Err(Error::TermRegression { term, last_term });
        }
        let stale = self.entries.last().is_some_and(|e| e.start_offset >= end);
        if term == last_term && !stale {
            return Ok(());
        }
        let mut wanted: Vec<TermStart> = self
            .entries
            .iter()
            .filter(|e| e.start_offset < end)
            .copied()
            .collect();
        if term > last_term {
            wanted.push(TermStart {
                term,
                start_offset: end,
            });
        }
        self.replace(wanted, log_start)
    }

    /// Forgets the terms of offsets at and after `from`, after the log was
    /// truncated there.
    pub fn truncate(&mut self, from: u64, log_start: u64) -> Result<()> {
        if self.entries.last().is_none_or(|e| e.start_offset < from) {
            return Ok(());
        }
        let wanted = self
            .entries
            .iter()
            .filter(|e| e.start_offset < from)
            .copied()
            .collect();
        self.replace(wanted, log_start)
    }

    /// Replaces the list for a log restarted empty at `start`
    /// (`Partition::restart_at`) whose last offset before it, `start - 1`,
    /// is in `term`: one entry (`term`, `start - 1`), so that
    /// [`TermLog::last_term`] of the empty log answers `term` and an append
    /// in an older term is refused. The entry names an offset below the
    /// log start, which [`TermLog::term_at`]'s callers never ask about.
    /// Term 0, or a start at 0, leaves no entry (the file is removed).
    pub fn restart(&mut self, term: u64, start: u64) -> Result<()> {
        let wanted = match start.checked_sub(1) {
            Some(before) if term != 0 => vec![TermStart {
                term,
                start_offset: before,
            }],
            _ => Vec::new(),
        };
        if wanted.is_empty() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("remove", self.path.clone(), e));
                }
                _ => {}
            }
        } else {
            fsutil::write_atomic(&self.path, &encode(&wanted))?;
        }
        self.entries = wanted;
        Ok(())
    }

    fn replace(&mut self, mut wanted: Vec<TermStart>, log_start: u64) -> Result<()> {
        // The last entry at or below the log start still names the term of
        // the first offset kept; the ones before it name nothing.
        let covering = wanted.partition_point(|e| e.start_offset <= log_start);
        if covering > 1 {
            wanted.drain(..covering - 1);
        }
        fsutil::write_atomic(&self.path, &encode(&wanted))?;
        self.entries = wanted;
        Ok(())
    }
}

fn encode(entries: &[TermStart]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_BYTES + entries.len() * ENTRY_BYTES + CRC_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&entry.term.to_le_bytes());
        out.extend_from_slice(&entry.start_offset.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> std::result::Result<Vec<TermStart>, String> {
    if bytes.len() < PREFIX_BYTES + CRC_BYTES {
        return Err(format!("{} bytes are too few", bytes.len()));
    }
    if &bytes[..4] != MAGIC {
        return Err("wrong magic".into());
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32_at(4);
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let count = u32_at(8) as usize;
    let expected = count
        .checked_mul(ENTRY_BYTES)
        .and_then(|n| n.checked_add(PREFIX_BYTES + CRC_BYTES));
    if expected != Some(bytes.len()) {
        return Err(format!("{} bytes do not hold {count} entries", bytes.len()));
    }
    let body = bytes.len() - CRC_BYTES;
    if u32_at(body) != crc32fast::hash(&bytes[..body]) {
        return Err("checksum mismatch".into());
    }
    let mut entries: Vec<TermStart> = Vec::with_capacity(count);
    for i in 0..count {
        let at = PREFIX_BYTES + i * ENTRY_BYTES;
        let entry = TermStart {
            term: u64_at(at),
            start_offset: u64_at(at + 8),
        };
        let increasing = entries
            .last()
            .is_none_or(|p| entry.term > p.term && entry.start_offset > p.start_offset);
        if entry.term == 0 || entry.term > TERM_MAX || !increasing {
            return Err(format!(
                "entry {i} (term {}, start offset {}) does not follow the one before",
                entry.term, entry.start_offset
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(term: u64, start_offset: u64) -> TermStart {
        TermStart { term, start_offset }
    }

    /// The hex dump of `docs/storage-format.md`, section 12.
    #[test]
    fn the_documented_example_is_what_the_code_writes() {
        let bytes = encode(&[start(2, 3), start(5, 7)]);
        let expected: [u8; 48] = [
            0x53, 0x50, 0x4c, 0x45, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
            5, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0x96, 0xf8, 0xb9, 0x7b,
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes).unwrap(), [start(2, 3), start(5, 7)]);
    }

    #[test]
    fn absent_file_is_term_zero_and_term_zero_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut terms = TermLog::load(dir.path()).unwrap();
        assert!(terms.is_empty());
        assert_eq!(terms.term_at(5), 0);
        terms.prepare_append(0, 10, 0).unwrap();
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn new_terms_are_recorded_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut terms = TermLog::load(dir.path()).unwrap();
        terms.prepare_append(0, 0, 0).unwrap();
        terms.prepare_append(2, 3, 0).unwrap();
        terms.prepare_append(2, 5, 0).unwrap();
        terms.prepare_append(4, 9, 0).unwrap();
        let reloaded = TermLog::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries(), &[start(2, 3), start(4, 9)]);
        let terms_at: Vec<_> = (0..12).map(|o| reloaded.term_at(o)).collect();
        assert_eq!(terms_at, [0, 0, 0, 2, 2, 2, 2, 2, 2, 4, 4, 4]);
        assert_eq!(reloaded.last_term(9), 2);
        assert_eq!(reloaded.last_term(10), 4);
    }

    #[test]
    fn an_older_term_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut terms = TermLog::load(dir.path()).unwrap();
        terms.prepare_append(3, 0, 0).unwrap();
        let error = terms.prepare_append(2, 4, 0).unwrap_err();
        assert!(matches!(
            error,
            Error::TermRegression {
                term: 2,
                last_term: 3
            }
        ));
        assert!(matches!(
            terms.prepare_append(0, 4, 0),
            Err(Error::TermRegression {
                term: 0,
                last_term: 3
            })
        ));
        assert_eq!(terms.entries(), &[start(3, 0)]);
    }

    #[test]
    fn entries_past_the_end_are_dropped_before_the_next_batch() {
        // A crash after the file named term 5 at offset 10 but before the
        // batch was written: the recovered log ends at 10.
        let dir = tempfile::tempdir().unwrap();
        let mut terms = TermLog::load(dir.path()).unwrap();
        terms.prepare_append(1, 0, 0).unwrap();
        terms.prepare_append(5, 10, 0).unwrap();
        let mut terms = TermLog::load(dir.path()).unwrap();
        assert_eq!(terms.last_term(10), 1);
        // The same term as the last batch: no new entry, but the stale one
        // must go, or it would claim the batch about to be written.
        terms.prepare_append(1, 10, 0).unwrap();
        assert_eq!(terms.entries(), &[start(1, 0)]);
        assert_eq!(TermLog::load(dir.path()).unwrap().entries(), &[start(1, 0)]);
    }

    #[test]
    fn truncation_and_log_start_prune_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut terms = TermLog::load(dir.path()).unwrap();
        for (term, at) in [(1, 0), (2, 10), (3, 20), (4, 30)] {
            terms.prepare_append(term, at, 0).unwrap();
        }
        terms.truncate(20, 0).unwrap();
        assert_eq!(terms.entries(), &[start(1, 0), start(2, 10)]);
        terms.truncate(25, 0).unwrap();
        assert_eq!(terms.entries(), &[start(1, 0), start(2, 10)]);
        // The log now starts at 15: term 1's entry names nothing kept.
        terms.prepare_append(6, 22, 15).unwrap();
        assert_eq!(terms.entries(), &[start(2, 10), start(6, 22)]);
        assert_eq!(TermLog::load(dir.path()).unwrap().entries(), terms.entries());
        terms.truncate(0, 0).unwrap();
        assert!(TermLog::load(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_file_fails_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut terms = TermLog::load(dir.path()).unwrap();
        terms.prepare_append(1, 0, 0).unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            assert!(
                matches!(TermLog::load(dir.path()), Err(Error::BadFile { .. })),
                "byte {i}"
            );
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(TermLog::load(dir.path()), Err(Error::BadFile { .. })));
    }
}
