//! openraft's state machine for a partition. A partition has no state
//! beyond its log: applying an entry means it is committed, so the state
//! machine moves the partition's committed offset past it (what
//! `Partition::read_committed` serves), remembers the last applied log id
//! and membership, and answers the client with the entry's offsets.
//!
//! A snapshot is "the log starts here": the last applied log id and
//! membership, and as its data the offset after the last applied entry
//! and the log start offset. It is built on request and recorded in
//! `raft-start` (`crate::log_start`), so `get_current_snapshot` answers
//! after a restart too. Installing one whose last entry the log holds (in
//! its term) keeps the log; installing one past the log, or at an entry
//! the log holds in another term, restarts the partition's log, empty, at
//! the offset after the snapshot's last entry (`PartitionLog::install_snapshot`).

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError, StoredMembership};
use spool_log::Partition;

use super::app_state::AppHook;
use super::log_store::{
    Membership, PartitionLog, SNAPSHOT_PRODUCERS_BYTES_MAX, SnapshotData, StoredSnapshot, commit_through,
    log_id,
};
use super::{Appended, TypeConfig};
use crate::error::Error;
use crate::index::EntryIndex;

#[derive(Debug)]
pub(super) struct PartitionStateMachine {
    partition: Partition,
    index: Arc<RwLock<EntryIndex>>,
    /// The log, for snapshots: recording them, and restarting the log
    /// from one.
    log: PartitionLog,
    last_applied: Option<LogId<u64>>,
    membership: Membership,
    /// The entry the next snapshot ends at, if below the last applied
    /// one (`u64::MAX`: the last applied): set by `Replica::compact_to`
    /// to the last entry it purges, so that a follower restarted from the
    /// snapshot holds every entry the leader keeps.
    snapshot_upto: Arc<AtomicU64>,
    /// The group owner's state, for a group with one (`app_state.rs`).
    app: Option<AppHook>,
}

impl PartitionStateMachine {
    /// A state machine over `log` that has applied everything up to
    /// `last_applied`, whose last membership is `membership`
    /// (`PartitionLog::applied_at_open`).
    pub(super) fn new(
        log: PartitionLog,
        last_applied: Option<LogId<u64>>,
        membership: Membership,
        snapshot_upto: Arc<AtomicU64>,
        app: Option<AppHook>,
    ) -> PartitionStateMachine {
        PartitionStateMachine {
            partition: log.partition().clone(),
            index: log.index(),
            log,
            last_applied,
            membership,
            snapshot_upto,
            app,
        }
    }

    fn builder(&self) -> SnapshotBuilder {
        let (last_applied, membership) = self.snapshot_point();
        SnapshotBuilder {
            log: self.log.clone(),
            index: self.index.clone(),
            last_applied,
            membership,
        }
    }

    /// Where the next snapshot ends, and the membership as of there: the
    /// entry `snapshot_upto` names when it is applied, still in the log
    /// and its membership is known; else the last applied entry.
    ///
    /// A snapshot ending at the last applied entry would do for the
    /// replica that builds it, but a follower that installs it restarts
    /// its log after that entry: the records between the retention
    /// boundary and it, which every other replica still keeps, would be
    /// missing from that follower's log, and from every read once it leads.
    fn snapshot_point(&self) -> (Option<LogId<u64>>, Membership) {
        let current = (self.last_applied, self.membership.clone());
        let upto = self.snapshot_upto.load(Ordering::Acquire);
        let Some(applied) = self.last_applied else {
            return current;
        };
        if upto >= applied.index {
            return current;
        }
        let Some(slot) = self.index.read().expect("index lock").get(upto) else {
            return current;
        };
        let membership = if self.membership.log_id().is_none_or(|id| id.index <= upto) {
            Some(self.membership.clone())
        } else {
            self.log.membership_at(upto).ok().flatten()
        };
        match membership {
            Some(membership) => (Some(log_id(slot.term, upto)), membership),
            None => current,
        }
    }
}

fn apply_error(log_id: LogId<u64>, error: Error) -> StorageError<u64> {
    StorageIOError::apply(log_id, &error).into()
}

impl RaftStateMachine<TypeConfig> for PartitionStateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Appended>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut answers = Vec::new();
        let mut committed_offset = None;
        for entry in entries {
            let slot = self.index.read().expect("index lock").get(entry.log_id.index);
            let slot = slot.ok_or_else(|| {
                apply_error(
                    entry.log_id,
                    Error::BadEntry {
                        offset: self.partition.high_watermark(),
                        reason: "an applied entry is not in the local log",
                    },
                )
            })?;
            if let EntryPayload::Membership(membership) = entry.payload {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
            }
            self.last_applied = Some(entry.log_id);
            committed_offset = Some(slot.next_offset);
            answers.push(Appended {
                index: entry.log_id.index,
                base_offset: slot.base_offset,
                next_offset: slot.next_offset,
                duplicate: false,
            });
        }
        if let Some(offset) = committed_offset {
            commit_through(&self.partition, offset).await?;
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builder()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let snapshot_error =
            |error: Error| StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &error));
        let data = snapshot.into_inner();
        let mut decoded: SnapshotData =
            serde_json::from_slice(&data).map_err(|source| snapshot_error(Error::BadSnapshot { source }))?;
        // The owner stores its state before the log restarts (a crash in
        // between leaves the old log with the new state, which the owner
        // waits to reach); `raft-start` records the snapshot without it.
        match (&self.app, decoded.app.take()) {
            (Some(hook), Some(app)) => {
                let hook = hook.clone();
                tokio::task::spawn_blocking(move || hook.0.install(app))
                    .await
                    .map_err(|join| {
                        StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &join))
                    })?
                    .map_err(|reason| snapshot_error(Error::AppState { reason }))?;
            }
            (Some(_), None) => tracing::error!(
                topic = %self.partition.topic(),
                "an installed snapshot carries no state for this group's owner; it goes on from the state it has"
            ),
            (None, _) => {}
        }
        let data = serde_json::to_vec(&decoded)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let log = self.log.clone();
        let commit = match meta.last_log_id {
            Some(last) => tokio::task::spawn_blocking(move || log.install_snapshot(last, decoded, stored))
                .await
                .map_err(|join| {
                    StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &join))
                })?
                .map_err(snapshot_error)?,
            None => tokio::task::spawn_blocking(move || log.save_snapshot(stored).map(|()| None))
                .await
                .map_err(|join| {
                    StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &join))
                })?
                .map_err(snapshot_error)?,
        };
        if let Some(offset) = commit {
            commit_through(&self.partition, offset).await?;
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let Some(stored) = self.log.current_snapshot() else {
            return Ok(None);
        };
        let data = match &self.app {
            Some(hook) => with_app_state(hook, &stored).await?,
            None => stored.data,
        };
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// The data of `stored` with the owner's latest durable state in it, for
/// a snapshot sent to another replica. That state covers at least what
/// the snapshot does: a compaction purges nothing past the durable state
/// of its time, and that state never goes back. A state that is missing
/// or behind (its file removed by hand) is left out, loudly: the replica
/// that installs the snapshot keeps the state it has.
async fn with_app_state(hook: &AppHook, stored: &StoredSnapshot) -> Result<Vec<u8>, StorageError<u64>> {
    let signature = stored.meta.signature();
    let mut data: SnapshotData = serde_json::from_slice(&stored.data)
        .map_err(|e| StorageIOError::read_snapshot(Some(signature.clone()), &e))?;
    let owner = hook.clone();
    let state = tokio::task::spawn_blocking(move || owner.0.snapshot())
        .await
        .map_err(|join| StorageIOError::read_snapshot(Some(signature.clone()), &join))?;
    match state {
        Some(state) if state.next_offset >= data.next_offset => data.app = Some(state),
        state => tracing::error!(
            next_offset = data.next_offset,
            state_next_offset = state.map(|s| s.next_offset),
            "the group owner's state is behind the snapshot; the snapshot is sent without it"
        ),
    }
    serde_json::to_vec(&data).map_err(|e| StorageIOError::read_snapshot(Some(signature), &e).into())
}

/// Builds a snapshot of the state as it was when the builder was made,
/// and records it in `raft-start`.
#[derive(Debug)]
pub(super) struct SnapshotBuilder {
    log: PartitionLog,
    index: Arc<RwLock<EntryIndex>>,
    last_applied: Option<LogId<u64>>,
    membership: Membership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let partition = self.log.partition();
        let next_offset = match self.last_applied {
            Some(last) => self.index.read().expect("index lock").offset_after(last.index),
            None => Some(partition.log_start_offset()),
        };
        let Some(next_offset) = next_offset else {
            return Err(StorageIOError::write_snapshot(
                None,
                &Error::BadEntry {
                    offset: partition.high_watermark(),
                    reason: "the last applied entry is not in the local log",
                },
            )
            .into());
        };
        let mut producers = partition.producer_snapshot_below(next_offset);
        if producers.len() > SNAPSHOT_PRODUCERS_BYTES_MAX {
            tracing::warn!(topic = %partition.topic(), partition = partition.id(), bytes = producers.len(), "the producer table is too large for a snapshot; a log restarted from it starts without one");
            producers.clear();
        }
        let data = SnapshotData {
            next_offset,
            log_start_offset: partition.log_start_offset(),
            producers,
            app: None,
        };
        let data = serde_json::to_vec(&data).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.save_snapshot(stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
