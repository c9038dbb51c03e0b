//! Where a replica's Raft log starts, once it no longer starts at index 0
//! and offset 0: the first entry it holds (Raft index and offset), the last
//! entry purged (term and index), and the last snapshot, so that a purge or
//! an installed snapshot survives a restart.
//!
//! File `raft-start` in the partition directory, little-endian
//! (`docs/storage-format.md`, section 17): magic `SPRS`, version u32 (1),
//! flags u8 (bit 0: a log restart is pending), first index u64, first
//! offset u64, purged flag u8 (1 if an entry was purged), purged term u64,
//! purged index u64, snapshot length u32, the snapshot (the engine's
//! encoding of its meta and data, opaque here; empty for none), CRC-32 of
//! everything before it. Replaced whole by an atomic write (temporary
//! file, fsync, rename, fsync of the directory) at every change.
//!
//! Absent means "the log starts at index 0, offset 0, nothing purged, no
//! snapshot", which is every replica that never purged or installed. A
//! file that does not decode fails the open ([`Error::BadLogStart`]): its
//! atomic write rules out a torn file, and without it the index of every
//! entry would be a guess.
//!
//! Order of writes. A purge writes the file before it deletes segments,
//! so that after a crash the segments begin at or before the recorded
//! offset (the index rebuild skips batches below it), never after it. An
//! installed snapshot that restarts the log writes the file with the
//! pending flag first, then restarts the partition's log and clears
//! `raft-entries`, then writes the file again without the flag; an open
//! that finds the flag does the restart again (nothing was appended to the
//! new log while the flag was set).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::index::LogStart;

pub const FILE_NAME: &str = "raft-start";
const MAGIC: &[u8; 4] = b"SPRS";
const VERSION: u32 = 1;
/// Everything before the snapshot: magic, version, flags, first index and
/// offset, purged flag, term and index, snapshot length.
const FIXED_BYTES: usize = 4 + 4 + 1 + 8 + 8 + 1 + 8 + 8 + 4;
const CRC_BYTES: usize = 4;
const RESTART_PENDING: u8 = 1;
/// The largest snapshot the file holds: a partition's snapshot is a
/// membership (a few hundred bytes per node), a few offsets and the
/// producer table (at most 16 MiB, twice that in hex).
pub const SNAPSHOT_BYTES_MAX: usize = 64 << 20;

/// A log entry's id: its term and Raft index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    pub term: u64,
    pub index: u64,
}

/// The content of `raft-start`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartRecord {
    /// The first entry the log holds (or the next one, if it holds none).
    pub start: LogStart,
    /// The last entry purged; every entry up to it is gone or no longer
    /// read. `start.index` is at most one past it (a purge of whole
    /// segments keeps some entries it was allowed to drop).
    pub purged: Option<EntryId>,
    /// An installed snapshot's log restart may not be done yet.
    pub restart_pending: bool,
    /// The last snapshot, in the engine's encoding; empty for none.
    pub snapshot: Vec<u8>,
}

impl StartRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_BYTES + self.snapshot.len() + CRC_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(if self.restart_pending { RESTART_PENDING } else { 0 });
        out.extend_from_slice(&self.start.index.to_le_bytes());
        out.extend_from_slice(&self.start.offset.to_le_bytes());
        let purged = self.purged.unwrap_or(EntryId { term: 0, index: 0 });
        out.push(u8::from(self.purged.is_some()));
        out.extend_from_slice(&purged.term.to_le_bytes());
        out.extend_from_slice(&purged.index.to_le_bytes());
        out.extend_from_slice(&(self.snapshot.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.snapshot);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<StartRecord, String> {
        if bytes.len() < FIXED_BYTES + CRC_BYTES {
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
        let snapshot_len = u32_at(FIXED_BYTES - 4) as usize;
        if snapshot_len > SNAPSHOT_BYTES_MAX || FIXED_BYTES + snapshot_len + CRC_BYTES != bytes.len() {
            return Err(format!(
                "{} bytes do not hold a snapshot of {snapshot_len} bytes",
                bytes.len()
            ));
        }
        let body = bytes.len() - CRC_BYTES;
        if u32_at(body) != crc32fast::hash(&bytes[..body]) {
            return Err("checksum mismatch".into());
        }
        let flags = bytes[8];
        if flags & !RESTART_PENDING != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let purged = match bytes[25] {
            0 => None,
            1 => Some(EntryId {
                term: u64_at(26),
                index: u64_at(34),
            }),
            other => return Err(format!("purged flag {other}")),
        };
        let start = LogStart {
            index: u64_at(9),
            offset: u64_at(17),
        };
        // The first entry held follows the last one purged, or comes
        // before it (whole segments are kept), never after it: a gap would
        // be entries neither held nor purged.
        if let Some(purged) = purged
            && purged.index.checked_add(1).is_none_or(|next| start.index > next)
        {
            return Err(format!(
                "the log starts at index {} after the last purged entry {}",
                start.index, purged.index
            ));
        }
        Ok(StartRecord {
            start,
            purged,
            restart_pending: flags & RESTART_PENDING != 0,
            snapshot: bytes[FIXED_BYTES..body].to_vec(),
        })
    }
}

/// The `raft-start` file of one partition directory and what it holds.
#[derive(Debug)]
pub struct StartFile {
    path: PathBuf,
    record: StartRecord,
}

impl StartFile {
    /// Reads the file in `partition_dir`; an absent file is the default
    /// record (index 0 at offset 0, nothing purged, no snapshot).
    pub fn open(partition_dir: &Path) -> Result<StartFile> {
        let path = partition_dir.join(FILE_NAME);
        let record = match std::fs::read(&path) {
            Ok(bytes) => StartRecord::decode(&bytes).map_err(|reason| Error::BadLogStart {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StartRecord::default(),
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        Ok(StartFile { path, record })
    }

    pub fn record(&self) -> &StartRecord {
        &self.record
    }

    /// Replaces the record, durably (an atomic write) before it returns.
    pub fn store(&mut self, record: StartRecord) -> Result<()> {
        if record.snapshot.len() > SNAPSHOT_BYTES_MAX {
            return Err(Error::BadLogStart {
                path: self.path.clone(),
                reason: format!(
                    "a snapshot of {} bytes is more than {SNAPSHOT_BYTES_MAX}",
                    record.snapshot.len()
                ),
            });
        }
        spool_log::fsutil::write_atomic(&self.path, &record.encode()).map_err(|source| Error::Log {
            op: "write raft-start",
            source,
        })?;
        self.record = record;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StartRecord {
        StartRecord {
            start: LogStart {
                index: 12,
                offset: 300,
            },
            purged: Some(EntryId { term: 3, index: 14 }),
            restart_pending: true,
            snapshot: b"{\"snapshot\":1}".to_vec(),
        }
    }

    #[test]
    fn a_record_reloads_and_an_absent_file_is_the_start_of_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StartFile::open(dir.path()).unwrap();
        assert_eq!(file.record(), &StartRecord::default());
        file.store(record()).unwrap();
        let reopened = StartFile::open(dir.path()).unwrap();
        assert_eq!(reopened.record(), &record());
    }

    #[test]
    fn any_damage_is_an_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StartFile::open(dir.path()).unwrap();
        file.store(record()).unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            assert!(StartFile::open(dir.path()).is_err(), "byte {i}");
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(StartFile::open(dir.path()).is_err());
    }

    #[test]
    fn a_start_past_the_entry_after_the_purged_one_is_refused() {
        let bad = StartRecord {
            start: LogStart {
                index: 16,
                offset: 300,
            },
            ..record()
        };
        assert!(StartRecord::decode(&bad.encode()).is_err());
        let kept_more = StartRecord {
            start: LogStart {
                index: 9,
                offset: 200,
            },
            ..record()
        };
        assert_eq!(StartRecord::decode(&kept_more.encode()).unwrap(), kept_more);
    }
}
