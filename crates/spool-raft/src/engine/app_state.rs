//! State an application folds from a group's committed log, carried in
//! the group's snapshots. A partition needs none: its state is its log.
//! A group whose owner folds its log into something else (the cluster's
//! metadata) registers an [`AppState`] (`Replica::open_with_state`); its
//! snapshots then carry that state as of an offset at or past their last
//! entry, so that a replica whose log restarts from one (a follower behind
//! the leader's purge, a node that joins) starts with the state too, and
//! the owner may compact a log it no longer needs to read back.

use serde::{Deserialize, Serialize};

/// An application's state, encoded by the application, as of `next_offset`:
/// every committed record below it folded in, none from it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSnapshot {
    pub next_offset: u64,
    #[serde(with = "super::log_store::hex_bytes")]
    pub data: Vec<u8>,
}

/// What a group's owner gives the group for its snapshots.
pub trait AppState: Send + Sync + 'static {
    /// The state as folded now. Its `next_offset` must never go back (the
    /// group caps what a compaction purges by it) and must never pass the
    /// group's committed offset.
    fn snapshot(&self) -> AppSnapshot;

    /// Called once a snapshot received from the leader is installed: the
    /// state to continue from. The owner replaces its state with it when
    /// it is past its own and reads the log from `next_offset` on; the
    /// records below may be gone from the local log.
    fn install(&self, snapshot: AppSnapshot);
}

/// A group's [`AppState`] with the state the next snapshot carries:
/// taken by `Replica::compact_to` before it asks for the snapshot, so
/// that the snapshot's last entry is at or below the state's offset.
pub(super) struct AppHook {
    pub state: std::sync::Arc<dyn AppState>,
    pub pending: std::sync::Mutex<Option<AppSnapshot>>,
}

impl AppHook {
    pub fn new(state: std::sync::Arc<dyn AppState>) -> AppHook {
        AppHook {
            state,
            pending: std::sync::Mutex::default(),
        }
    }

    /// The state the next snapshot carries.
    pub fn pending(&self) -> Option<AppSnapshot> {
        self.pending.lock().expect("app snapshot lock").clone()
    }
}

impl std::fmt::Debug for AppHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppHook")
            .field("pending_next_offset", &self.pending().map(|s| s.next_offset))
            .finish_non_exhaustive()
    }
}
