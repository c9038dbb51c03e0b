//! openraft's state machine for a partition. A partition has no state
//! beyond its log: applying an entry means it is committed, so the state
//! machine moves the partition's committed offset past it (what
//! `Partition::read_committed` serves), remembers the last applied log id
//! and membership, and answers the client with the entry's offsets.
//!
//! A snapshot is "the log starts here": the last applied log id, the
//! membership, and (as its data) the log start and committed offsets. It
//! is built on request; installing one is accepted only when this
//! replica's log already holds the entry it ends at, because starting a
//! log at an offset it never held needs a spool-log primitive that does
//! not exist yet (`docs/cluster.md`).

use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use spool_log::Partition;

use super::log_store::{Membership, commit_through};
use super::{Appended, TypeConfig};
use crate::error::Error;
use crate::index::EntryIndex;

/// A snapshot's data: where the log starts and how far it is committed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct SnapshotData {
    log_start_offset: u64,
    committed_offset: u64,
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    data: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct PartitionStateMachine {
    partition: Partition,
    index: Arc<RwLock<EntryIndex>>,
    last_applied: Option<LogId<u64>>,
    membership: Membership,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl PartitionStateMachine {
    /// A state machine that has applied everything up to `last_applied`,
    /// whose last membership is `membership` (`PartitionLog::applied_at_open`).
    pub(super) fn new(
        partition: Partition,
        index: Arc<RwLock<EntryIndex>>,
        last_applied: Option<LogId<u64>>,
        membership: Membership,
    ) -> PartitionStateMachine {
        PartitionStateMachine {
            partition,
            index,
            last_applied,
            membership,
            snapshot: Arc::default(),
        }
    }

    fn builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            partition: self.partition.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshot: self.snapshot.clone(),
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
        let refuse = |reason| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                &Error::BadEntry {
                    offset: self.partition.high_watermark(),
                    reason,
                },
            ))
        };
        if let Some(last) = meta.last_log_id {
            let slot = self.index.read().expect("index lock").get(last.index);
            let held = slot.is_some_and(|slot| slot.term == last.leader_id.term);
            if !held {
                return Err(refuse("a snapshot past the local log cannot be installed yet"));
            }
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *self.snapshot.lock().expect("snapshot lock") = Some(StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let stored = self.snapshot.lock().expect("snapshot lock").clone();
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// Builds a snapshot of the state as it was when the builder was made.
#[derive(Debug)]
pub(super) struct SnapshotBuilder {
    partition: Partition,
    last_applied: Option<LogId<u64>>,
    membership: Membership,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let data = SnapshotData {
            log_start_offset: self.partition.log_start_offset(),
            committed_offset: self.partition.committed_offset(),
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
        *self.snapshot.lock().expect("snapshot lock") = Some(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
