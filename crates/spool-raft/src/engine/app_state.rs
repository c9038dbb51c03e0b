//! State an application folds from a group's committed log. A partition
//! needs none: its state is its log. A group whose owner folds its log
//! into something else (the cluster's metadata, the job table) gives the
//! group an [`AppState`] (`Replica::open_with_state`): a compaction then
//! purges no entry the owner's durable state does not cover, and a
//! snapshot sent to a replica whose log restarts from it (a follower
//! behind the leader's purge, a node that joins) carries the owner's
//! state, which that replica's owner stores before its log restarts.
//!
//! The state is the owner's to store: `raft-start` records the snapshot
//! without it, and a snapshot is given the state only when it is sent.
//! The state sent may cover more than the snapshot (the owner's latest);
//! it never covers less, since the purge stopped at what it covered then.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An application's state, encoded by the application, as of `next_offset`:
/// every committed record below it folded in, none from it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSnapshot {
    pub next_offset: u64,
    #[serde(with = "super::log_store::hex_bytes")]
    pub data: Vec<u8>,
}

/// What a group's owner gives the group for its compactions and snapshots.
pub trait AppState: Send + Sync + 'static {
    /// The offset the owner's latest durable state covers (every committed
    /// record below it folded in, stored where the owner reads it back
    /// after a restart); 0 for none. Never goes back. A compaction purges
    /// no entry past it.
    fn durable_offset(&self) -> u64;

    /// That state, encoded, for a snapshot sent to another replica; `None`
    /// when the owner has none. May block (it may read a file).
    fn snapshot(&self) -> Option<AppSnapshot>;

    /// Stores `snapshot`, received with the leader's snapshot, durably as
    /// the owner's state, and has the owner take it up: its records below
    /// `next_offset` may be gone from the local log. Called before this
    /// replica's log restarts from the leader's snapshot; blocks. An error
    /// stops the group's replica here, as a failed log restart does.
    fn install(&self, snapshot: AppSnapshot) -> Result<(), String>;
}

/// A group's [`AppState`], shared by the replica and its state machine.
#[derive(Clone)]
pub(super) struct AppHook(pub Arc<dyn AppState>);

// Not the owner's offset: asking for it may read a file.
impl std::fmt::Debug for AppHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppHook")
    }
}
