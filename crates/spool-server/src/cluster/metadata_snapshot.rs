//! The metadata group's snapshots: the applied [`MetadataState`] as of an
//! offset, carried in the group's Raft snapshots (`spool_raft::AppState`).
//! With them the metadata log can be compacted like a replicated topic's
//! (`retention.rs`): a node restarts from the state its last snapshot
//! carries and reads the log from there, and a node behind the leader's
//! purge, or one that joins, receives the leader's state with its
//! snapshot instead of the commands it can no longer read
//! (`docs/cluster.md`, "Snapshots").

use std::sync::{Arc, Mutex, RwLock};

use spool_raft::{AppSnapshot, AppState};
use tokio::sync::Notify;

use super::metadata::MetadataState;

#[derive(Debug)]
pub(super) struct MetadataSnapshots {
    /// The state the applier folds the committed log into.
    state: Arc<RwLock<MetadataState>>,
    /// A state installed from the leader's snapshot and not yet taken up
    /// by the applier.
    installed: Mutex<Option<AppSnapshot>>,
    /// Wakes the applier when a state is installed.
    pub(super) wake: Notify,
}

impl MetadataSnapshots {
    pub(super) fn new(state: Arc<RwLock<MetadataState>>) -> MetadataSnapshots {
        MetadataSnapshots {
            state,
            installed: Mutex::default(),
            wake: Notify::new(),
        }
    }

    /// The state installed since the last call, if one was.
    pub(super) fn take_installed(&self) -> Option<AppSnapshot> {
        self.installed.lock().expect("installed metadata lock").take()
    }
}

impl AppState for MetadataSnapshots {
    fn snapshot(&self) -> AppSnapshot {
        let state = self.state.read().expect("metadata lock");
        AppSnapshot {
            next_offset: state.applied_through(),
            data: state.encode(),
        }
    }

    fn install(&self, snapshot: AppSnapshot) {
        let mut installed = self.installed.lock().expect("installed metadata lock");
        if installed
            .as_ref()
            .is_none_or(|pending| pending.next_offset < snapshot.next_offset)
        {
            *installed = Some(snapshot);
        }
        drop(installed);
        self.wake.notify_one();
    }
}
