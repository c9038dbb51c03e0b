//! The metadata group's snapshots: the applied [`MetadataState`] as of an
//! offset, stored in `<data>/cluster/metadata.snapshot` and given to the
//! group as its owner's state (`spool_raft::AppState`). With it the
//! metadata log is compacted like a replicated topic's (`retention.rs`): a
//! node restarts from the state it stored and reads the log from there,
//! and a node behind the leader's purge, or one that joins, receives the
//! leader's state with its snapshot instead of the commands it can no
//! longer read (`docs/cluster.md`, "Snapshots").
//!
//! The file, little-endian: magic `SPMS`, version u32 (1), the offset the
//! state covers up to (exclusive) u64, the state's length u32, CRC-32 of
//! the state u32, then the state (`MetadataState::encode`, JSON). Written
//! atomically.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use spool_raft::{AppSnapshot, AppState};
use tokio::sync::Notify;

use super::metadata::MetadataState;

pub(super) const DIR: &str = "cluster";
pub(super) const FILE_NAME: &str = "metadata.snapshot";
const MAGIC: &[u8; 4] = b"SPMS";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 24;

#[derive(Debug)]
pub(super) struct MetadataSnapshots {
    /// The state the applier folds the committed log into.
    state: Arc<RwLock<MetadataState>>,
    path: PathBuf,
    /// The state last stored in the file (written here or installed).
    durable: Mutex<Option<AppSnapshot>>,
    /// A state installed from the leader's snapshot and not yet taken up
    /// by the applier.
    installed: Mutex<Option<AppSnapshot>>,
    /// Wakes the applier when a state is installed.
    pub(super) wake: Notify,
}

impl MetadataSnapshots {
    /// Snapshots of `state` in the data directory `data_dir`, with the
    /// one stored there if it is whole. A damaged file is reported and
    /// left: the log from its start, if it still holds it, serves instead.
    pub(super) fn open(state: Arc<RwLock<MetadataState>>, data_dir: &Path) -> MetadataSnapshots {
        let path = data_dir.join(DIR).join(FILE_NAME);
        let durable = spool_log::fsutil::read_decoded(&path, decode).unwrap_or_else(|error| {
            tracing::error!(path = %path.display(), %error, "ignoring a metadata snapshot that cannot be read");
            None
        });
        MetadataSnapshots {
            state,
            path,
            durable: Mutex::new(durable),
            installed: Mutex::default(),
            wake: Notify::new(),
        }
    }

    /// The state stored in the file, where a start goes on from.
    pub(super) fn stored(&self) -> Option<AppSnapshot> {
        self.durable.lock().expect("metadata snapshot lock").clone()
    }

    /// Stores the state as applied now, unless the file holds one as far
    /// along; returns the offset the stored state covers. Blocking.
    pub(super) fn save(&self) -> spool_log::Result<u64> {
        let snapshot = {
            let state = self.state.read().expect("metadata lock");
            AppSnapshot {
                next_offset: state.applied_through(),
                data: state.encode(),
            }
        };
        self.store(snapshot)
    }

    /// Writes `snapshot` to the file if it is past the one there.
    fn store(&self, snapshot: AppSnapshot) -> spool_log::Result<u64> {
        let mut durable = self.durable.lock().expect("metadata snapshot lock");
        if let Some(stored) = durable.as_ref()
            && stored.next_offset >= snapshot.next_offset
        {
            return Ok(stored.next_offset);
        }
        let dir = self.path.parent().expect("the snapshot's directory");
        spool_log::fsutil::create_dir_durable(dir)?;
        spool_log::fsutil::write_atomic(&self.path, &encode(&snapshot))?;
        let offset = snapshot.next_offset;
        *durable = Some(snapshot);
        Ok(offset)
    }

    /// The state installed since the last call, if one was.
    pub(super) fn take_installed(&self) -> Option<AppSnapshot> {
        self.installed.lock().expect("installed metadata lock").take()
    }
}

impl AppState for MetadataSnapshots {
    fn durable_offset(&self) -> u64 {
        self.stored().map_or(0, |stored| stored.next_offset)
    }

    fn snapshot(&self) -> Option<AppSnapshot> {
        self.stored()
    }

    fn install(&self, snapshot: AppSnapshot) -> Result<(), String> {
        MetadataState::decode(&snapshot.data)
            .map_err(|error| format!("the metadata state does not decode: {error}"))?;
        self.store(snapshot.clone())
            .map_err(|error| format!("cannot store the metadata snapshot: {error}"))?;
        let mut installed = self.installed.lock().expect("installed metadata lock");
        if installed
            .as_ref()
            .is_none_or(|pending| pending.next_offset < snapshot.next_offset)
        {
            *installed = Some(snapshot);
        }
        drop(installed);
        self.wake.notify_one();
        Ok(())
    }
}

fn encode(snapshot: &AppSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + snapshot.data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&snapshot.next_offset.to_le_bytes());
    out.extend_from_slice(&(snapshot.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&snapshot.data).to_le_bytes());
    out.extend_from_slice(&snapshot.data);
    out
}

fn decode(bytes: &[u8]) -> Result<AppSnapshot, String> {
    if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
        return Err("not a metadata snapshot".to_owned());
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let version = u32_at(4);
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let next_offset = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let len = u32_at(16) as usize;
    if bytes.len() != HEADER_BYTES + len {
        return Err(format!("{} bytes do not hold a state of {len}", bytes.len()));
    }
    let data = &bytes[HEADER_BYTES..];
    if crc32fast::hash(data) != u32_at(20) {
        return Err("checksum mismatch".to_owned());
    }
    Ok(AppSnapshot {
        next_offset,
        data: data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_state_is_read_back_and_a_damaged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(RwLock::new(MetadataState::default()));
        state.write().unwrap().set_applied_through(42);
        let snapshots = MetadataSnapshots::open(Arc::clone(&state), dir.path());
        assert_eq!(snapshots.durable_offset(), 0);
        assert_eq!(snapshots.save().unwrap(), 42);
        let reopened = MetadataSnapshots::open(Arc::clone(&state), dir.path());
        let stored = reopened.stored().unwrap();
        assert_eq!(stored.next_offset, 42);
        assert_eq!(
            MetadataState::decode(&stored.data).unwrap(),
            *state.read().unwrap()
        );
        // An older state installed does not replace a newer one.
        let older = AppSnapshot {
            next_offset: 7,
            data: MetadataState::default().encode(),
        };
        reopened.install(older).unwrap();
        assert_eq!(reopened.durable_offset(), 42);
        assert!(
            reopened
                .install(AppSnapshot {
                    next_offset: 50,
                    data: b"{}".to_vec()
                })
                .is_err()
        );
        // A flipped bit is caught.
        let path = dir.path().join(DIR).join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(MetadataSnapshots::open(state, dir.path()).stored().is_none());
    }
}
