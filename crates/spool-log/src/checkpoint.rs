//! The recovery point of a partition: a position up to which the log is
//! known to be flushed and valid, so that an unclean restart re-scans only
//! what lies beyond it.
//!
//! File `recovery-point` in the partition directory, 44 bytes, little-endian:
//! magic `SPRP`, version u32 (1), segment base offset u64, position in that
//! segment u64, next offset u64, largest record timestamp in that segment
//! before the position i64 (`i64::MIN` if none), CRC-32 of the preceding 40
//! bytes.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fsutil;

pub const FILE_NAME: &str = "recovery-point";
const MAGIC: &[u8; 4] = b"SPRP";
const VERSION: u32 = 1;
const BYTES: usize = 44;

/// Where a partition's flushed, valid log ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    pub segment_base: u64,
    /// Byte position in that segment's log file.
    pub position: u64,
    pub next_offset: u64,
    /// Largest record timestamp in the segment before `position`.
    pub max_timestamp_ms: i64,
}

pub fn path(partition_dir: &Path) -> PathBuf {
    partition_dir.join(FILE_NAME)
}

impl RecoveryPoint {
    fn encode(&self) -> [u8; BYTES] {
        let mut out = [0u8; BYTES];
        out[..4].copy_from_slice(MAGIC);
        out[4..8].copy_from_slice(&VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.segment_base.to_le_bytes());
        out[16..24].copy_from_slice(&self.position.to_le_bytes());
        out[24..32].copy_from_slice(&self.next_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
        let crc = crc32fast::hash(&out[..40]);
        out[40..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() != BYTES {
            return Err(format!("{} bytes instead of {BYTES}", bytes.len()));
        }
        if &bytes[..4] != MAGIC {
            return Err("wrong magic".into());
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        let crc = u32::from_le_bytes(bytes[40..].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&bytes[..40]) {
            return Err("checksum mismatch".into());
        }
        Ok(RecoveryPoint {
            segment_base: word(8),
            position: word(16),
            next_offset: word(24),
            max_timestamp_ms: word(32) as i64,
        })
    }

    /// Reads the recovery point; `None` if there is none. A damaged file is
    /// reported and treated as absent: recovery then scans more, which is
    /// slower but safe.
    pub fn load(partition_dir: &Path) -> Result<Option<RecoveryPoint>> {
        let path = path(partition_dir);
        match std::fs::read(&path) {
            Ok(bytes) => match RecoveryPoint::decode(&bytes) {
                Ok(point) => Ok(Some(point)),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), reason, "ignoring damaged recovery point");
                    Ok(None)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Writes the recovery point atomically. The caller has flushed the log
    /// and its indexes up to it.
    pub fn store(&self, partition_dir: &Path) -> Result<()> {
        fsutil::write_atomic(&path(partition_dir), &self.encode())
    }

    pub fn remove(partition_dir: &Path) -> Result<()> {
        let path = path(partition_dir);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.ctx("remove", &path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RecoveryPoint::load(dir.path()).unwrap(), None);
        let point = RecoveryPoint {
            segment_base: 100,
            position: 4096,
            next_offset: 150,
            max_timestamp_ms: -5,
        };
        point.store(dir.path()).unwrap();
        assert_eq!(RecoveryPoint::load(dir.path()).unwrap(), Some(point));
        let mut bytes = std::fs::read(path(dir.path())).unwrap();
        bytes[20] ^= 1;
        std::fs::write(path(dir.path()), bytes).unwrap();
        assert_eq!(RecoveryPoint::load(dir.path()).unwrap(), None);
    }
}
