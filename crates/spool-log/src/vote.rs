//! A partition's Raft vote: the current term and the node voted for in it,
//! kept so that a node that restarts never votes twice in one term.
//!
//! File `raft-vote` in the partition directory, 32 bytes, little-endian:
//! magic `SPRV`, version u32 (1), term u64, voted-for node u64 (0 when
//! there is no vote), flags u32 (bit 0: there is a vote; bit 1: the vote
//! is committed, openraft's name for "granted by a quorum"; other bits 0),
//! CRC-32 of the preceding 28 bytes. Written atomically with fsync; absent
//! means term 0 and no vote, which is what every single-node partition has.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;

pub const FILE_NAME: &str = "raft-vote";
const MAGIC: &[u8; 4] = b"SPRV";
const VERSION: u32 = 1;
const BYTES: usize = 32;
const FLAG_VOTED: u32 = 1;
const FLAG_COMMITTED: u32 = 2;

/// What a partition's replica last promised in an election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vote {
    pub term: u64,
    /// The node this replica voted for in `term`, if any.
    pub voted_for: Option<u64>,
    /// The vote was granted by a quorum: `voted_for` leads `term`.
    pub committed: bool,
}

impl Vote {
    /// Whether storing `next` after `self` keeps Raft's promise: the term
    /// never goes back, a vote never goes back from committed, and within
    /// a term an uncommitted vote moves to another node only as a
    /// committed one. That last case is a replica that voted for itself
    /// (or another candidate) and then hears from the node a quorum
    /// elected in the same term: it records the term's leader (openraft
    /// orders a committed vote above an uncommitted one of the same term),
    /// which grants nobody a second vote.
    pub fn may_become(&self, next: &Vote) -> bool {
        if next.term != self.term {
            return next.term > self.term;
        }
        let same_node = self.voted_for.is_none() || self.voted_for == next.voted_for;
        if same_node {
            return next.committed || !self.committed;
        }
        next.committed && !self.committed
    }

    fn encode(&self) -> [u8; BYTES] {
        let mut out = [0u8; BYTES];
        out[..4].copy_from_slice(MAGIC);
        out[4..8].copy_from_slice(&VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.term.to_le_bytes());
        out[16..24].copy_from_slice(&self.voted_for.unwrap_or(0).to_le_bytes());
        let flags = if self.voted_for.is_some() { FLAG_VOTED } else { 0 }
            | if self.committed { FLAG_COMMITTED } else { 0 };
        out[24..28].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&out[..28]);
        out[28..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Vote, String> {
        if bytes.len() != BYTES {
            return Err(format!("{} bytes instead of {BYTES}", bytes.len()));
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
        if u32_at(28) != crc32fast::hash(&bytes[..28]) {
            return Err("checksum mismatch".into());
        }
        let flags = u32_at(24);
        if flags & !(FLAG_VOTED | FLAG_COMMITTED) != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let voted = flags & FLAG_VOTED != 0;
        Ok(Vote {
            term: u64_at(8),
            voted_for: voted.then(|| u64_at(16)),
            committed: flags & FLAG_COMMITTED != 0,
        })
    }
}

/// The vote file of one partition directory.
#[derive(Debug)]
pub(crate) struct VoteFile {
    path: PathBuf,
    vote: Vote,
}

impl VoteFile {
    /// Reads the vote; a missing file is [`Vote::default`]. A damaged file
    /// is an error, not "no vote": forgetting a vote could let the node
    /// vote for a second candidate in the same term.
    pub fn load(partition_dir: &Path) -> Result<VoteFile> {
        let path = partition_dir.join(FILE_NAME);
        let vote = crate::fsutil::read_decoded(&path, Vote::decode)?.unwrap_or_default();
        Ok(VoteFile { path, vote })
    }

    pub fn vote(&self) -> Vote {
        self.vote
    }

    /// Stores `vote` durably (temporary file, fsync, rename, fsync of the
    /// directory) and only then makes it the current vote.
    pub fn store(&mut self, vote: Vote) -> Result<()> {
        if !self.vote.may_become(&vote) {
            return Err(Error::VoteRegression {
                term: vote.term,
                voted_for: vote.voted_for,
                current_term: self.vote.term,
                current_voted_for: self.vote.voted_for,
            });
        }
        if vote == self.vote && self.path.exists() {
            return Ok(());
        }
        fsutil::write_atomic(&self.path, &vote.encode())?;
        self.vote = vote;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hex dump of `docs/storage-format.md`, section 13.
    #[test]
    fn the_documented_example_is_what_the_code_writes() {
        let vote = Vote {
            term: 7,
            voted_for: Some(3),
            committed: false,
        };
        let expected: [u8; 32] = [
            0x53, 0x50, 0x52, 0x56, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
            0x3a, 0x37, 0x39, 0x54,
        ];
        assert_eq!(vote.encode(), expected);
        assert_eq!(Vote::decode(&expected).unwrap(), vote);
    }

    #[test]
    fn absent_is_term_zero_without_a_vote_and_a_stored_vote_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = VoteFile::load(dir.path()).unwrap();
        assert_eq!(file.vote(), Vote::default());
        let vote = Vote {
            term: 7,
            voted_for: Some(3),
            committed: false,
        };
        file.store(vote).unwrap();
        assert_eq!(VoteFile::load(dir.path()).unwrap().vote(), vote);
        let committed = Vote {
            committed: true,
            ..vote
        };
        file.store(committed).unwrap();
        assert_eq!(VoteFile::load(dir.path()).unwrap().vote(), committed);
        // Node 0 is a valid node id, told apart from "no vote" by the flag.
        let zero = Vote {
            term: 8,
            voted_for: Some(0),
            committed: false,
        };
        file.store(zero).unwrap();
        assert_eq!(VoteFile::load(dir.path()).unwrap().vote(), zero);
    }

    #[test]
    fn a_vote_never_goes_back_and_nothing_is_written_when_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = VoteFile::load(dir.path()).unwrap();
        let vote = Vote {
            term: 5,
            voted_for: Some(2),
            committed: true,
        };
        file.store(vote).unwrap();
        for bad in [
            Vote { term: 4, ..vote },
            Vote {
                voted_for: Some(3),
                ..vote
            },
            Vote {
                committed: false,
                ..vote
            },
        ] {
            assert!(
                matches!(file.store(bad), Err(Error::VoteRegression { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(VoteFile::load(dir.path()).unwrap().vote(), vote);
        let newer = Vote {
            term: 6,
            voted_for: None,
            committed: false,
        };
        file.store(newer).unwrap();
        assert_eq!(VoteFile::load(dir.path()).unwrap().vote(), newer);
    }

    #[test]
    fn a_candidate_that_lost_its_term_records_the_elected_leader() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = VoteFile::load(dir.path()).unwrap();
        // Node 1 voted for itself in term 2; node 2 won term 2.
        let own = Vote {
            term: 2,
            voted_for: Some(1),
            committed: false,
        };
        file.store(own).unwrap();
        let other_candidate = Vote {
            voted_for: Some(2),
            ..own
        };
        assert!(matches!(
            file.store(other_candidate),
            Err(Error::VoteRegression { .. })
        ));
        let elected = Vote {
            committed: true,
            ..other_candidate
        };
        file.store(elected).unwrap();
        assert_eq!(VoteFile::load(dir.path()).unwrap().vote(), elected);
        // A committed vote never moves to another node in its term.
        let moved = Vote {
            voted_for: Some(3),
            ..elected
        };
        assert!(matches!(file.store(moved), Err(Error::VoteRegression { .. })));
    }

    #[test]
    fn a_damaged_file_fails_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = VoteFile::load(dir.path()).unwrap();
        file.store(Vote {
            term: 1,
            voted_for: Some(1),
            committed: false,
        })
        .unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            assert!(
                matches!(VoteFile::load(dir.path()), Err(Error::BadFile { .. })),
                "byte {i}"
            );
        }
    }
}
