//! openraft's log storage over a spool-log [`Partition`]: the partition's
//! batches are the Raft log, one entry per batch (`crate::entry`), entry
//! *i* at the offsets [`EntryIndex`] gives. Vote, terms, commit and
//! truncation map to the partition's own primitives:
//!
//! | openraft | spool-log |
//! |---|---|
//! | `save_vote` / `read_vote` | `Partition::save_vote` / `vote` (file `raft-vote`) |
//! | a log id's term | `Partition::term_at(base offset)` (file `leader-epochs`) |
//! | `append` | `Partition::append_replicated`, then `wait_durable` before the flush callback |
//! | `save_committed` | `Partition::set_committed(next offset of the entry)` |
//! | `truncate` | `Partition::truncate_suffix(base offset, committed offset)` |
//!
//! Every call that writes or fsyncs runs on tokio's blocking pool, never
//! on a runtime worker.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError, Vote,
};
use spool_format::batch::{self, Batch, BatchHeader, BatchLimits};
use spool_log::{Durability, Partition};

use super::TypeConfig;
use crate::entry::{self, EntryKind};
use crate::error::Error;
use crate::index::{EntryIndex, Slot};

/// How much one read of the partition asks for when serving entries.
const READ_BYTES: u64 = 1 << 20;

/// A log id: with `single-term-leader`, the node id is not part of it.
pub(super) fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

/// The Raft log of one group: a partition and its index map, shared with
/// the state machine and every log reader.
#[derive(Debug, Clone)]
pub(super) struct PartitionLog {
    partition: Partition,
    index: Arc<RwLock<EntryIndex>>,
    limits: BatchLimits,
    /// What openraft purged; held in memory only, since nothing purges
    /// while snapshots are off (`docs/cluster.md`).
    purged: Arc<Mutex<Option<LogId<u64>>>>,
}

impl PartitionLog {
    pub(super) fn new(
        partition: Partition,
        index: Arc<RwLock<EntryIndex>>,
        limits: BatchLimits,
    ) -> PartitionLog {
        PartitionLog {
            partition,
            index,
            limits,
            purged: Arc::default(),
        }
    }

    fn last_log_id(&self) -> Result<Option<LogId<u64>>, Error> {
        let index = self.index.read().expect("index lock");
        let Some(last) = index.last_index() else {
            return Ok(None);
        };
        let slot = index.get(last).expect("the last index has a slot");
        Ok(Some(log_id(term_of(&self.partition, &slot)?, last)))
    }
}

/// The term of the entry at `slot`, from the partition's term list.
pub(super) fn term_of(partition: &Partition, slot: &Slot) -> Result<u64, Error> {
    partition.term_at(slot.base_offset).ok_or(Error::BadEntry {
        offset: slot.base_offset,
        reason: "the entry's offset is not in the log",
    })
}

/// Reads the entries at `slots` (indexes from `first_index`) back from the
/// partition. A client's entry is a slice of the segment mapping, not a
/// copy.
fn read_entries(
    partition: &Partition,
    slots: &[Slot],
    first_index: u64,
) -> Result<Vec<Entry<TypeConfig>>, Error> {
    let mut out = Vec::with_capacity(slots.len());
    let mut pending: VecDeque<Batch> = VecDeque::new();
    for (i, slot) in slots.iter().enumerate() {
        let batch = loop {
            while pending
                .front()
                .is_some_and(|b| b.base_offset() < slot.base_offset)
            {
                pending.pop_front();
            }
            match pending.pop_front() {
                Some(batch) if batch.base_offset() == slot.base_offset => break batch,
                Some(_) => {
                    return Err(Error::BadEntry {
                        offset: slot.base_offset,
                        reason: "no batch starts at the entry's offset",
                    });
                }
                None => {}
            }
            let read = partition
                .read(slot.base_offset, READ_BYTES)
                .map_err(|source| Error::Log {
                    op: "read entries",
                    source,
                })?;
            if read.batches.is_empty() {
                return Err(Error::BadEntry {
                    offset: slot.base_offset,
                    reason: "the entry's batch is not readable",
                });
            }
            pending.extend(read.batches);
        };
        let term = term_of(partition, slot)?;
        let payload = match slot.kind {
            EntryKind::Records => EntryPayload::Normal(batch.into_bytes()),
            EntryKind::Blank => EntryPayload::Blank,
            EntryKind::Membership => {
                let (_, value) = entry::classify(&batch)?;
                let membership = serde_json::from_slice(&value).map_err(|source| Error::Membership {
                    offset: slot.base_offset,
                    source,
                })?;
                EntryPayload::Membership(membership)
            }
        };
        out.push(Entry {
            log_id: log_id(term, first_index + i as u64),
            payload,
        });
    }
    Ok(out)
}

/// Appends `entries` as batches after the log's last one and indexes them;
/// returns the high watermark after them. The batches are stamped with
/// the offsets the local log gives them and their term, so a leader's
/// fresh entry and a follower's copy of it become the same bytes.
fn append_entries(
    partition: &Partition,
    index: &RwLock<EntryIndex>,
    limits: BatchLimits,
    entries: Vec<Entry<TypeConfig>>,
) -> Result<u64, Error> {
    let expected_first = index.read().expect("index lock").next_index();
    let mut next_offset = partition.high_watermark();
    let mut group: Vec<Vec<u8>> = Vec::new();
    let mut group_slots: Vec<Slot> = Vec::new();
    let mut group_term = 0;
    let flush = |batches: &mut Vec<Vec<u8>>, slots: &mut Vec<Slot>, term: u64| -> Result<(), Error> {
        if batches.is_empty() {
            return Ok(());
        }
        partition
            .append_replicated(batches, term, Durability::None)
            .map_err(|source| Error::Log {
                op: "append entries",
                source,
            })?;
        let mut index = index.write().expect("index lock");
        for slot in slots.drain(..) {
            index.push(slot);
        }
        batches.clear();
        Ok(())
    };
    for (n, entry) in entries.into_iter().enumerate() {
        let expected = expected_first + n as u64;
        if entry.log_id.index != expected {
            return Err(Error::IndexGap {
                expected,
                actual: entry.log_id.index,
            });
        }
        let term = entry.log_id.leader_id.term;
        let (mut bytes, kind) = match &entry.payload {
            EntryPayload::Normal(encoded) => (encoded.to_vec(), EntryKind::Records),
            EntryPayload::Blank => (
                entry::encode_own_entry(EntryKind::Blank, b"", limits)?,
                EntryKind::Blank,
            ),
            EntryPayload::Membership(membership) => {
                let json = serde_json::to_vec(membership).map_err(|source| Error::Membership {
                    offset: next_offset,
                    source,
                })?;
                let bytes = entry::encode_own_entry(EntryKind::Membership, &json, limits)?;
                (bytes, EntryKind::Membership)
            }
        };
        batch::stamp_base_offset(&mut bytes, next_offset);
        // A term past the header field's range is left unstamped; the
        // append below refuses it with the engine's own typed error.
        if let Ok(epoch) = i32::try_from(term) {
            batch::stamp_leader_epoch(&mut bytes, epoch);
        }
        let header = BatchHeader::parse(&bytes).map_err(|source| Error::InvalidBatch { source })?;
        if term != group_term {
            flush(&mut group, &mut group_slots, group_term)?;
            group_term = term;
        }
        group_slots.push(Slot {
            base_offset: next_offset,
            next_offset: header.next_offset(),
            kind,
        });
        next_offset = header.next_offset();
        group.push(bytes);
    }
    flush(&mut group, &mut group_slots, group_term)?;
    Ok(next_offset)
}

fn read_error(error: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_logs(&error).into()
}

fn write_error(error: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_logs(&error).into()
}

/// Runs blocking storage work off the async runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, StorageError<u64>> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(write_error)?
        .map_err(write_error)
}

impl RaftLogReader<TypeConfig> for PartitionLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let slots = self.index.read().expect("index lock").range(start, end).to_vec();
        read_entries(&self.partition, &slots, start).map_err(read_error)
    }
}

impl RaftLogStorage<TypeConfig> for PartitionLog {
    type LogReader = PartitionLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id = *self.purged.lock().expect("purged lock");
        let last_log_id = self.last_log_id().map_err(read_error)?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> PartitionLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let stored = spool_log::Vote {
            term: vote.leader_id.term,
            voted_for: vote.leader_id.voted_for,
            committed: vote.committed,
        };
        let partition = self.partition.clone();
        tokio::task::spawn_blocking(move || partition.save_vote(stored))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        let stored = self.partition.vote();
        if stored == spool_log::Vote::default() {
            return Ok(None);
        }
        let mut vote = Vote::default();
        vote.leader_id.term = stored.term;
        vote.leader_id.voted_for = stored.voted_for;
        vote.committed = stored.committed;
        Ok(Some(vote))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        let Some(committed) = committed else {
            return Ok(());
        };
        let slot = self.index.read().expect("index lock").get(committed.index);
        let Some(slot) = slot else {
            return Err(write_error(Error::BadEntry {
                offset: self.partition.high_watermark(),
                reason: "a committed entry is not in the local log",
            }));
        };
        commit_through(&self.partition, slot.next_offset).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let (partition, index, limits) = (self.partition.clone(), self.index.clone(), self.limits);
        let end = blocking(move || append_entries(&partition, &index, limits, entries)).await?;
        // Raft may count this replica's copy only once it is on disk: the
        // callback reports the flush, which the store's flusher
        // group-commits with every other partition's.
        let durable = self.partition.wait_durable(end).await;
        callback.log_io_completed(durable.map(|_| ()).map_err(io::Error::other));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let slot = self.index.read().expect("index lock").get(log_id.index);
        let Some(slot) = slot else {
            return Ok(());
        };
        let (partition, index) = (self.partition.clone(), self.index.clone());
        blocking(move || {
            // Truncation never goes below what this replica knows is
            // committed; spool-log refuses that with a typed error.
            partition
                .truncate_suffix(slot.base_offset, partition.committed_offset())
                .map_err(|source| Error::Log {
                    op: "truncate the log",
                    source,
                })?;
            index.write().expect("index lock").truncate(log_id.index);
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // Nothing is deleted: the segments stay until a snapshot records
        // where the log starts (`docs/cluster.md`, "What does not exist").
        let mut purged = self.purged.lock().expect("purged lock");
        if purged.is_none_or(|p| p.index < log_id.index) {
            *purged = Some(log_id);
        }
        Ok(())
    }
}

/// Marks every offset below `next_offset` committed, once it is on disk
/// here (spool-log never commits past the durable offset).
pub(super) async fn commit_through(partition: &Partition, next_offset: u64) -> Result<(), StorageError<u64>> {
    partition.wait_durable(next_offset).await.map_err(write_error)?;
    partition.set_committed(next_offset).map_err(write_error)
}
