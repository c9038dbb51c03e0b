//! The last commit a replica knew, kept so that a restarted replica
//! serves its committed records at once instead of waiting for a leader
//! to tell it the commit again.
//!
//! File `raft-commit` in the partition directory, 28 bytes, little-endian
//! (`docs/storage-format.md`, section 15): magic `SPRC`, version u32 (1),
//! the committed entry's term u64 and Raft index u64, CRC-32 of the
//! preceding 20 bytes.
//!
//! It is overwritten in place and never fsynced, which openraft allows:
//! standard Raft does not store the commit at all, so a commit that a
//! crash loses or rolls back only costs a restarted replica the wait for
//! its leader's next message. What must never happen is a stored commit
//! naming an entry that is not committed or not in the local log, and the
//! order of writes rules it out: it is written only after the entries it
//! covers are committed and durable here, and a committed entry is never
//! truncated. A file that does not decode, or names an entry the log does
//! not hold with that term, is ignored (with a warning), not an error.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const FILE_NAME: &str = "raft-commit";
const MAGIC: &[u8; 4] = b"SPRC";
const VERSION: u32 = 1;
const BYTES: usize = 28;

/// A committed entry: its term and Raft index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub term: u64,
    pub index: u64,
}

impl Committed {
    fn encode(&self) -> [u8; BYTES] {
        let mut out = [0u8; BYTES];
        out[..4].copy_from_slice(MAGIC);
        out[4..8].copy_from_slice(&VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.term.to_le_bytes());
        out[16..24].copy_from_slice(&self.index.to_le_bytes());
        let crc = crc32fast::hash(&out[..24]);
        out[24..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Committed, String> {
        if bytes.len() != BYTES {
            return Err(format!("{} bytes instead of {BYTES}", bytes.len()));
        }
        if &bytes[..4] != MAGIC {
            return Err("wrong magic".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        let crc = u32::from_le_bytes(bytes[24..].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&bytes[..24]) {
            return Err("checksum mismatch".into());
        }
        Ok(Committed {
            term: u64_at(8),
            index: u64_at(16),
        })
    }
}

/// The commit file of one partition directory, kept open for overwrites.
#[derive(Debug)]
pub struct CommitFile {
    path: PathBuf,
    file: File,
    last: Option<Committed>,
}

impl CommitFile {
    /// Opens (creating) the file and reads the stored commit: `None` when
    /// there is none or it does not decode.
    pub fn open(partition_dir: &Path) -> Result<(CommitFile, Option<Committed>)> {
        let path = partition_dir.join(FILE_NAME);
        let io = |op, source| Error::Io {
            op,
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", e))?;
        let bytes = std::fs::read(&path).map_err(|e| io("read", e))?;
        let stored = if bytes.is_empty() {
            None
        } else {
            match Committed::decode(&bytes) {
                Ok(committed) => Some(committed),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "ignoring a damaged raft-commit; the leader will tell the commit again");
                    None
                }
            }
        };
        let file = CommitFile {
            path,
            file,
            last: stored,
        };
        Ok((file, stored))
    }

    /// Overwrites the stored commit (no fsync: see the module's doc).
    pub fn store(&mut self, committed: Committed) -> Result<()> {
        if self.last == Some(committed) {
            return Ok(());
        }
        self.file
            .write_all_at(&committed.encode(), 0)
            .map_err(|source| Error::Io {
                op: "write",
                path: self.path.clone(),
                source,
            })?;
        self.last = Some(committed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_commit_reloads_and_the_latest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, stored) = CommitFile::open(dir.path()).unwrap();
        assert_eq!(stored, None);
        file.store(Committed { term: 2, index: 10 }).unwrap();
        file.store(Committed { term: 3, index: 14 }).unwrap();
        drop(file);
        let (_, stored) = CommitFile::open(dir.path()).unwrap();
        assert_eq!(stored, Some(Committed { term: 3, index: 14 }));
    }

    /// The hex dump of `docs/storage-format.md`, section 15.
    #[test]
    fn the_documented_example_is_what_the_code_writes() {
        let bytes = Committed { term: 3, index: 14 }.encode();
        let expected: [u8; 28] = [
            0x53, 0x50, 0x52, 0x43, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 14, 0, 0, 0, 0, 0, 0, 0, 0x6e, 0x8b,
            0xe3, 0x3d,
        ];
        assert_eq!(bytes, expected);
        assert_eq!(
            Committed::decode(&expected).unwrap(),
            Committed { term: 3, index: 14 }
        );
    }

    #[test]
    fn a_damaged_file_is_ignored_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = CommitFile::open(dir.path()).unwrap();
        file.store(Committed { term: 1, index: 4 }).unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(CommitFile::open(dir.path()).unwrap().1, None, "byte {i}");
        }
        std::fs::write(&path, &good[..10]).unwrap();
        assert_eq!(CommitFile::open(dir.path()).unwrap().1, None);
    }
}
