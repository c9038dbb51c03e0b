//! openraft's log storage over a spool-log [`Partition`]: the partition's
//! batches are the client entries of the Raft log, one entry per batch;
//! Raft's own entries (blank, membership) are in the partition's
//! `raft-entries` file (`crate::own_entries`), outside the offset space;
//! entry *i* is where [`EntryIndex`] says. Vote, terms, commit and
//! truncation map to the partition's own primitives:
//!
//! | openraft | spool-log |
//! |---|---|
//! | `save_vote` / `read_vote` | `Partition::save_vote` / `vote` (file `raft-vote`) |
//! | a log id's term | the index's slot (from `Partition::term_at` or `raft-entries`) |
//! | `append` | `Partition::append_replicated`, then `wait_durable` before the flush callback; own entries to `raft-entries` |
//! | `save_committed` / `read_committed` | `Partition::set_committed(next offset of the entry)`, and the file `raft-commit` |
//! | `truncate` | `Partition::truncate_suffix(base offset, committed offset)`, then `raft-entries` |
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
use spool_format::batch::{self, Batch, BatchHeader};
use spool_log::{Durability, Partition};

use super::TypeConfig;
use crate::commit::{CommitFile, Committed};
use crate::entry::EntryKind;
use crate::error::Error;
use crate::index::{EntryIndex, Slot};
use crate::own_entries::{OwnEntry, OwnEntryLog};

/// How much one read of the partition asks for when serving entries.
const READ_BYTES: u64 = 1 << 20;

pub(super) type Membership = openraft::StoredMembership<u64, openraft::BasicNode>;

/// A log id: with `single-term-leader`, the node id is not part of it.
pub(super) fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

/// The Raft log of one group: a partition, its own entries and its index
/// map, shared with the state machine and every log reader.
#[derive(Debug, Clone)]
pub(super) struct PartitionLog {
    partition: Partition,
    index: Arc<RwLock<EntryIndex>>,
    own: Arc<Mutex<OwnEntryLog>>,
    commit: Arc<Mutex<CommitFile>>,
    /// The commit `raft-commit` held at open, if the log holds its entry.
    stored_commit: Option<Committed>,
    /// What openraft purged; held in memory only, since nothing purges
    /// while snapshots are off (`docs/cluster.md`).
    purged: Arc<Mutex<Option<LogId<u64>>>>,
}

impl PartitionLog {
    /// Opens what the log keeps beside the segments and rebuilds the
    /// index: Raft's own entries (those a crash left past the segments'
    /// end are removed), the index over them and the segments, and the
    /// stored commit (kept only if the log holds its entry). Blocking.
    pub(super) fn open(partition: Partition) -> Result<PartitionLog, Error> {
        let mut own = OwnEntryLog::open(partition.dir())?;
        let merged = EntryIndex::rebuild(&partition, own.entries())?;
        if let Some(past_end) = own.entries().get(merged.own_kept) {
            tracing::warn!(topic = %partition.topic(), partition = partition.id(), index = past_end.index, "removing Raft entries past the end of the segments (an interrupted truncation)");
            own.truncate(past_end.index)?;
        }
        let (commit, stored_commit) = CommitFile::open(partition.dir())?;
        let index = merged.index;
        let held = stored_commit.filter(|c| index.get(c.index).is_some_and(|slot| slot.term == c.term));
        if stored_commit.is_some() && held.is_none() {
            tracing::warn!(topic = %partition.topic(), partition = partition.id(), ?stored_commit, "ignoring a stored commit the log does not hold");
        }
        Ok(PartitionLog {
            partition,
            index: Arc::new(RwLock::new(index)),
            own: Arc::new(Mutex::new(own)),
            commit: Arc::new(Mutex::new(commit)),
            stored_commit: held,
            purged: Arc::default(),
        })
    }

    /// What the state machine holds at open: everything up to the stored
    /// commit counts as applied. A partition's state machine is its
    /// committed offset and the last membership, and both follow from the
    /// log: this moves the committed offset past the stored commit's entry
    /// and reads the last membership entry at or before it. openraft then
    /// re-applies nothing it had applied before the restart, and looks
    /// for later memberships only in the entries after it; without this
    /// it reads the whole log back at every start. Blocking.
    pub(super) fn applied_at_open(&self) -> Result<(Option<LogId<u64>>, Membership), Error> {
        let Some(commit) = self.stored_commit else {
            return Ok((None, Membership::default()));
        };
        let slot = self
            .index
            .read()
            .expect("index lock")
            .get(commit.index)
            .expect("a held commit has a slot");
        self.partition
            .set_committed(slot.next_offset)
            .map_err(|source| Error::Log {
                op: "restore the committed offset",
                source,
            })?;
        let own = self.own.lock().expect("own entries lock");
        let membership = own
            .entries()
            .iter()
            .rev()
            .filter(|entry| entry.index <= commit.index)
            .find(|entry| entry.kind == EntryKind::Membership);
        let membership = match membership {
            Some(entry) => {
                let config = serde_json::from_slice(&entry.value).map_err(|source| Error::Membership {
                    offset: entry.offset,
                    source,
                })?;
                Membership::new(Some(log_id(entry.term, entry.index)), config)
            }
            None => Membership::default(),
        };
        Ok((Some(log_id(commit.term, commit.index)), membership))
    }

    /// The index map, shared with the state machine.
    pub(super) fn index(&self) -> Arc<RwLock<EntryIndex>> {
        self.index.clone()
    }

    fn last_log_id(&self) -> Option<LogId<u64>> {
        let index = self.index.read().expect("index lock");
        let last = index.last_index()?;
        let slot = index.get(last).expect("the last index has a slot");
        Some(log_id(slot.term, last))
    }
}

/// Reads the entries at `slots` (indexes from `first_index`) back: a
/// client's entry from the partition (a slice of the segment mapping, not
/// a copy), Raft's own from `own`.
fn read_entries(
    partition: &Partition,
    own: &Mutex<OwnEntryLog>,
    slots: &[Slot],
    first_index: u64,
) -> Result<Vec<Entry<TypeConfig>>, Error> {
    let mut out = Vec::with_capacity(slots.len());
    let mut pending: VecDeque<Batch> = VecDeque::new();
    // Reads stop where the last entry asked for ends: a request for a few
    // entries deep in a long log must not decode a megabyte of batches
    // after them (catching a follower up, re-applying at start).
    let end_offset = slots.last().map_or(0, |slot| slot.next_offset);
    for (i, slot) in slots.iter().enumerate() {
        let index = first_index + i as u64;
        let payload = match slot.kind {
            EntryKind::Records => {
                EntryPayload::Normal(read_batch(partition, &mut pending, slot, end_offset)?.into_bytes())
            }
            EntryKind::Blank => EntryPayload::Blank,
            EntryKind::Membership => {
                let value = own
                    .lock()
                    .expect("own entries lock")
                    .get(index)
                    .map(|entry| entry.value.clone())
                    .ok_or(Error::BadEntry {
                        offset: slot.base_offset,
                        reason: "a membership entry is missing from raft-entries",
                    })?;
                let membership = serde_json::from_slice(&value).map_err(|source| Error::Membership {
                    offset: slot.base_offset,
                    source,
                })?;
                EntryPayload::Membership(membership)
            }
        };
        out.push(Entry {
            log_id: log_id(slot.term, index),
            payload,
        });
    }
    Ok(out)
}

/// The batch at `slot`, from `pending` (batches read ahead, up to
/// `end_offset`) or a new read.
fn read_batch(
    partition: &Partition,
    pending: &mut VecDeque<Batch>,
    slot: &Slot,
    end_offset: u64,
) -> Result<Batch, Error> {
    loop {
        while pending
            .front()
            .is_some_and(|b| b.base_offset() < slot.base_offset)
        {
            pending.pop_front();
        }
        match pending.pop_front() {
            Some(batch) if batch.base_offset() == slot.base_offset => return Ok(batch),
            Some(_) => {
                return Err(Error::BadEntry {
                    offset: slot.base_offset,
                    reason: "no batch starts at the entry's offset",
                });
            }
            None => {}
        }
        let read = partition
            .read_until(slot.base_offset, end_offset, READ_BYTES)
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
    }
}

/// Appends `entries` after the log's last one and indexes them: client
/// batches to the partition, Raft's own entries to `raft-entries`; returns
/// the high watermark after them. The batches are stamped with the offsets
/// the local log gives them and their term, so a leader's fresh entry and
/// a follower's copy of it become the same bytes.
///
/// An own entry is written only once every batch before it is durable,
/// and fsynced before any batch after it is appended: after a crash,
/// `raft-entries` never names an entry whose earlier batches are lost,
/// and no batch survives an own entry before it that was lost (either
/// would shift indexes; `docs/cluster.md`, "Entries").
fn append_entries(
    partition: &Partition,
    index: &RwLock<EntryIndex>,
    own: &Mutex<OwnEntryLog>,
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
        let (kind, value) = match entry.payload {
            EntryPayload::Normal(encoded) => {
                let mut bytes = encoded.to_vec();
                batch::stamp_base_offset(&mut bytes, next_offset);
                // A term past the header field's range is left unstamped;
                // the append below refuses it with the engine's own typed
                // error.
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
                    term,
                    kind: EntryKind::Records,
                });
                next_offset = header.next_offset();
                group.push(bytes);
                continue;
            }
            EntryPayload::Blank => (EntryKind::Blank, bytes::Bytes::new()),
            EntryPayload::Membership(membership) => {
                let json = serde_json::to_vec(&membership).map_err(|source| Error::Membership {
                    offset: next_offset,
                    source,
                })?;
                (EntryKind::Membership, bytes::Bytes::from(json))
            }
        };
        flush(&mut group, &mut group_slots, group_term)?;
        partition
            .wait_durable_blocking(next_offset)
            .map_err(|source| Error::Log {
                op: "flush the batches before one of Raft's own entries",
                source,
            })?;
        own.lock().expect("own entries lock").append(OwnEntry {
            index: expected,
            offset: next_offset,
            term,
            kind,
            value,
        })?;
        index.write().expect("index lock").push(Slot {
            base_offset: next_offset,
            next_offset,
            term,
            kind,
        });
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
        read_entries(&self.partition, &self.own, &slots, start).map_err(read_error)
    }
}

impl RaftLogStorage<TypeConfig> for PartitionLog {
    type LogReader = PartitionLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id = *self.purged.lock().expect("purged lock");
        let last_log_id = self.last_log_id().or(last_purged_log_id);
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
        commit_through(&self.partition, slot.next_offset).await?;
        // Only now, with the entries durable and committed here, may the
        // file name them (`crate::commit`).
        let commit = self.commit.clone();
        let record = Committed {
            term: committed.leader_id.term,
            index: committed.index,
        };
        blocking(move || commit.lock().expect("commit lock").store(record)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.stored_commit.map(|c| log_id(c.term, c.index)))
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
        let (partition, index, own) = (self.partition.clone(), self.index.clone(), self.own.clone());
        let end = blocking(move || append_entries(&partition, &index, &own, entries)).await?;
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
        let (partition, index, own) = (self.partition.clone(), self.index.clone(), self.own.clone());
        blocking(move || {
            // The segments first, then raft-entries: a crash between the
            // two leaves own entries past the segments' end, which the
            // rebuild drops (`crate::index::merge`); the other order could
            // leave batches after a removed own entry, shifting indexes.
            // Truncation never goes below what this replica knows is
            // committed; spool-log refuses that with a typed error.
            partition
                .truncate_suffix(slot.base_offset, partition.committed_offset())
                .map_err(|source| Error::Log {
                    op: "truncate the log",
                    source,
                })?;
            own.lock().expect("own entries lock").truncate(log_id.index)?;
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
