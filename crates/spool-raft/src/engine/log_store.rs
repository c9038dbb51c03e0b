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
//! | `purge` | `raft-start` (where the log starts), then `Partition::delete_segments_below`, then `raft-entries` |
//!
//! A log that was purged, or restarted by an installed snapshot, starts
//! where `raft-start` says (`crate::log_start`); the index map's slots
//! start there. Writes to the log (append, truncate, purge, a snapshot's
//! restart) hold one lock, so that a snapshot installed by the state
//! machine never interleaves with an append.
//!
//! Every call that writes or fsyncs runs on tokio's blocking pool, never
//! on a runtime worker.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::SnapshotMeta;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError,
    Vote,
};
use serde::{Deserialize, Serialize};
use spool_format::batch::{self, Batch, BatchHeader};
use spool_log::{Durability, Partition};

use super::TypeConfig;
use super::app_state::AppSnapshot;
use crate::commit::{CommitFile, Committed};
use crate::entry::EntryKind;
use crate::error::Error;
use crate::index::{EntryIndex, LogStart, Slot};
use crate::log_start::{EntryId, StartFile, StartRecord};
use crate::own_entries::{OwnEntry, OwnEntryLog};

/// How much one read of the partition asks for when serving entries.
const READ_BYTES: u64 = 1 << 20;

pub(super) type Membership = openraft::StoredMembership<u64, openraft::BasicNode>;

/// A log id: with `single-term-leader`, the node id is not part of it.
pub(super) fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn entry_id(log_id: LogId<u64>) -> EntryId {
    EntryId {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

/// A snapshot's data: the offset after its last entry (where a log
/// restarted from it starts), the log start of the replica that built it,
/// and that replica's idempotent producer table as of `next_offset`
/// (`Partition::producer_snapshot_below`, hex in the JSON; empty when it
/// was left out), which a log restarted from the snapshot starts with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SnapshotData {
    pub next_offset: u64,
    pub log_start_offset: u64,
    #[serde(default, with = "hex_bytes")]
    pub producers: Vec<u8>,
    /// The group owner's state (`app_state.rs`), for a group with one:
    /// only in a snapshot sent to another replica, never in `raft-start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppSnapshot>,
}

/// The largest producer table a snapshot carries (before hex): past it the
/// snapshot goes without one, and a log restarted from it starts with an
/// empty table (`docs/cluster.md`, "Snapshots").
pub(super) const SNAPSHOT_PRODUCERS_BYTES_MAX: usize = 16 << 20;

/// Bytes as a lowercase hex string in JSON.
pub(super) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(bytes.len() * 2);
        for byte in bytes {
            out.push_str(&format!("{byte:02x}"));
        }
        serializer.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom("an odd number of hex digits"));
        }
        (0..text.len())
            .step_by(2)
            .map(|at| {
                text.get(at..at + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not hex"))
            })
            .collect()
    }
}

/// A snapshot as `raft-start` keeps it: openraft's meta and the data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub meta: SnapshotMeta<u64, BasicNode>,
    pub data: Vec<u8>,
}

/// `raft-start` and the snapshot it holds, decoded.
#[derive(Debug)]
struct Start {
    file: StartFile,
    snapshot: Option<StoredSnapshot>,
}

impl Start {
    fn store(&mut self, record: StartRecord, snapshot: Option<StoredSnapshot>) -> Result<(), Error> {
        self.file.store(record)?;
        self.snapshot = snapshot;
        Ok(())
    }
}

fn encode_snapshot(snapshot: &StoredSnapshot) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(snapshot).map_err(|source| Error::BadSnapshot { source })
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
    /// What openraft purged. Recorded in `raft-start` when the purge
    /// deleted something or the log holds the entry; a purge past the end
    /// of the log (a snapshot being installed) is in memory only until the
    /// snapshot's install records it.
    purged: Arc<Mutex<Option<LogId<u64>>>>,
    /// `raft-start`: where the log starts, and the last snapshot.
    start: Arc<Mutex<Start>>,
    /// Held by every write to the log: appends, truncations, purges and a
    /// snapshot's restart of the log.
    writes: Arc<Mutex<()>>,
}

impl PartitionLog {
    /// Opens what the log keeps beside the segments and rebuilds the
    /// index: where the log starts (`raft-start`; a snapshot's restart of
    /// the log that a crash interrupted is done again), Raft's own entries
    /// (those before the start, or past the segments' end after an
    /// interrupted truncation, are removed), the index over them and the
    /// segments, and the stored commit (kept only if the log holds its
    /// entry). Blocking.
    pub(super) fn open(partition: Partition) -> Result<PartitionLog, Error> {
        let mut start_file = StartFile::open(partition.dir())?;
        let snapshot = match start_file.record().snapshot.as_slice() {
            [] => None,
            bytes => Some(
                serde_json::from_slice::<StoredSnapshot>(bytes)
                    .map_err(|source| Error::BadSnapshot { source })?,
            ),
        };
        let mut own = OwnEntryLog::open(partition.dir())?;
        if start_file.record().restart_pending {
            tracing::warn!(topic = %partition.topic(), partition = partition.id(), "finishing the restart of the log from a snapshot that a crash interrupted");
            let record = start_file.record().clone();
            let producers = snapshot
                .as_ref()
                .and_then(|s| serde_json::from_slice::<SnapshotData>(&s.data).ok())
                .map(|data| data.producers)
                .unwrap_or_default();
            finish_restart(&partition, &mut own, &record, &producers)?;
            start_file.store(StartRecord {
                restart_pending: false,
                ..record
            })?;
        }
        let log_start = start_file.record().start;
        let dropped = own.entries().partition_point(|e| e.index < log_start.index);
        let merged = EntryIndex::rebuild(&partition, &own.entries()[dropped..], log_start)?;
        if let Some(past_end) = own.entries().get(dropped + merged.own_kept) {
            tracing::warn!(topic = %partition.topic(), partition = partition.id(), index = past_end.index, "removing Raft entries past the end of the segments (an interrupted truncation)");
            own.truncate(past_end.index)?;
        }
        own.forget_before(log_start.index)?;
        let (commit, stored_commit) = CommitFile::open(partition.dir())?;
        let index = merged.index;
        let held = stored_commit.filter(|c| index.get(c.index).is_some_and(|slot| slot.term == c.term));
        if stored_commit.is_some_and(|c| c.index >= log_start.index) && held.is_none() {
            tracing::warn!(topic = %partition.topic(), partition = partition.id(), ?stored_commit, "ignoring a stored commit the log does not hold");
        }
        let purged = start_file.record().purged.map(|id| log_id(id.term, id.index));
        Ok(PartitionLog {
            partition,
            index: Arc::new(RwLock::new(index)),
            own: Arc::new(Mutex::new(own)),
            commit: Arc::new(Mutex::new(commit)),
            stored_commit: held,
            purged: Arc::new(Mutex::new(purged)),
            start: Arc::new(Mutex::new(Start {
                file: start_file,
                snapshot,
            })),
            writes: Arc::default(),
        })
    }

    /// What the state machine holds at open: everything up to the stored
    /// commit, or the last snapshot if it ends later, counts as applied. A
    /// partition's state machine is its committed offset and the last
    /// membership, and both follow from the log and the snapshot: this
    /// moves the committed offset past the applied entry and takes the
    /// last membership at or before it from the log's own entries, or from
    /// the snapshot when the log no longer holds it. openraft then
    /// re-applies nothing it had applied before the restart, and looks for
    /// later memberships only in the entries after it; without this it
    /// reads the whole log back at every start. Blocking.
    pub(super) fn applied_at_open(&self) -> Result<(Option<LogId<u64>>, Membership), Error> {
        let snapshot = self.current_snapshot();
        let index = self.index.read().expect("index lock");
        let from_commit = self.stored_commit.map(|commit| {
            let slot = index.get(commit.index).expect("a held commit has a slot");
            (log_id(commit.term, commit.index), slot.next_offset)
        });
        let from_snapshot = snapshot.as_ref().and_then(|s| {
            let last = s.meta.last_log_id?;
            let next_offset = serde_json::from_slice::<SnapshotData>(&s.data)
                .ok()
                .map(|data| data.next_offset)
                .or_else(|| index.offset_after(last.index))?;
            Some((last, next_offset))
        });
        drop(index);
        let applied = match (from_commit, from_snapshot) {
            (Some(commit), Some(snapshot)) if snapshot.0.index > commit.0.index => Some(snapshot),
            (Some(commit), _) => Some(commit),
            (None, snapshot) => snapshot,
        };
        let Some((applied, next_offset)) = applied else {
            return Ok((None, Membership::default()));
        };
        self.partition
            .set_committed(next_offset)
            .map_err(|source| Error::Log {
                op: "restore the committed offset",
                source,
            })?;
        let membership = self.membership_at(applied.index)?.unwrap_or_default();
        Ok((Some(applied), membership))
    }

    /// The last membership at or before entry `index`: from the log's own
    /// entries, or from the recorded snapshot when the log no longer holds
    /// it; `None` if neither has one at or before `index`.
    pub(super) fn membership_at(&self, index: u64) -> Result<Option<Membership>, Error> {
        let in_snapshot = self
            .current_snapshot()
            .map(|s| s.meta.last_membership)
            .filter(|m| m.log_id().is_none_or(|id| id.index <= index));
        let own = self.own.lock().expect("own entries lock");
        let in_log = own
            .entries()
            .iter()
            .rev()
            .filter(|entry| entry.index <= index)
            .find(|entry| entry.kind == EntryKind::Membership);
        Ok(match (in_log, in_snapshot) {
            (Some(entry), snapshot)
                if snapshot
                    .as_ref()
                    .and_then(|m| m.log_id().as_ref().map(|id| id.index))
                    .is_none_or(|index| index < entry.index) =>
            {
                let config = serde_json::from_slice(&entry.value).map_err(|source| Error::Membership {
                    offset: entry.offset,
                    source,
                })?;
                Some(Membership::new(Some(log_id(entry.term, entry.index)), config))
            }
            (_, snapshot) => snapshot,
        })
    }

    /// The last snapshot built or installed, as `raft-start` holds it.
    pub(super) fn current_snapshot(&self) -> Option<StoredSnapshot> {
        self.start.lock().expect("start lock").snapshot.clone()
    }

    /// Records `snapshot` in `raft-start`, unless the one recorded ends
    /// later (a snapshot built from an older applied state that finished
    /// after a newer one). Blocking.
    pub(super) fn save_snapshot(&self, snapshot: StoredSnapshot) -> Result<(), Error> {
        let mut start = self.start.lock().expect("start lock");
        let newer = start
            .snapshot
            .as_ref()
            .is_some_and(|recorded| recorded.meta.last_log_id > snapshot.meta.last_log_id);
        if newer {
            return Ok(());
        }
        let record = StartRecord {
            snapshot: encode_snapshot(&snapshot)?,
            ..start.file.record().clone()
        };
        start.store(record, Some(snapshot))
    }

    /// Installs `snapshot`, which ends at `last`: when the log holds
    /// `last` in its term, the snapshot is recorded and the log kept, and
    /// the offset after `last` is returned for the caller to commit.
    /// Otherwise the log restarts, empty, at the offset after the
    /// snapshot (`data.next_offset`), with `last` recorded as purged and
    /// the next index `last.index + 1`: `raft-start` with the restart
    /// pending, the partition's restart, `raft-entries` emptied, then
    /// `raft-start` again without the flag (a crash in between is finished
    /// at open). Returns `None` then: the restart commits the new start.
    /// Blocking.
    pub(super) fn install_snapshot(
        &self,
        last: LogId<u64>,
        data: SnapshotData,
        snapshot: StoredSnapshot,
    ) -> Result<Option<u64>, Error> {
        let _writes = self.writes.lock().expect("log writes lock");
        let held = self
            .index
            .read()
            .expect("index lock")
            .get(last.index)
            .filter(|slot| slot.term == last.leader_id.term);
        if let Some(slot) = held {
            self.save_snapshot(snapshot)?;
            return Ok(Some(slot.next_offset));
        }
        let mut start = self.start.lock().expect("start lock");
        let record = StartRecord {
            start: LogStart {
                index: last.index + 1,
                offset: data.next_offset,
            },
            purged: Some(entry_id(last)),
            restart_pending: true,
            snapshot: encode_snapshot(&snapshot)?,
        };
        start.store(record.clone(), Some(snapshot.clone()))?;
        let mut own = self.own.lock().expect("own entries lock");
        let mut index = self.index.write().expect("index lock");
        finish_restart(&self.partition, &mut own, &record, &data.producers)?;
        index.restart(record.start);
        drop((index, own));
        let mut purged = self.purged.lock().expect("purged lock");
        if purged.is_none_or(|p| p.index < last.index) {
            *purged = Some(last);
        }
        drop(purged);
        start.store(
            StartRecord {
                restart_pending: false,
                ..record
            },
            Some(snapshot),
        )?;
        tracing::info!(topic = %self.partition.topic(), partition = self.partition.id(), index = last.index + 1, offset = data.next_offset, "restarted the log from a snapshot");
        Ok(None)
    }

    /// Purges the log up to and including `upto` (openraft's `purge`).
    /// Blocking; see [`RaftLogStorage::purge`] below for what it deletes.
    fn purge_through(&self, upto: LogId<u64>) -> Result<(), Error> {
        let _writes = self.writes.lock().expect("log writes lock");
        if self
            .purged
            .lock()
            .expect("purged lock")
            .is_some_and(|p| p.index >= upto.index)
        {
            return Ok(());
        }
        let (held, first_index, kept_from) = {
            let index = self.index.read().expect("index lock");
            let held = index
                .get(upto.index)
                .is_some_and(|slot| slot.term == upto.leader_id.term);
            // The entries after `upto` start here; segments wholly below
            // it may go.
            let kept_from = index
                .get(upto.index + 1)
                .map_or(index.end_offset(), |slot| slot.base_offset);
            (held, index.first_index(), kept_from)
        };
        if upto.index >= first_index && !held {
            // Past the end of the log, or an entry this log holds in
            // another term: only while a snapshot is installed, whose
            // install restarts the log. Nothing to delete here.
            *self.purged.lock().expect("purged lock") = Some(upto);
            return Ok(());
        }
        let mut start = self.start.lock().expect("start lock");
        let recorded = start.file.record().clone();
        let mut new_start = recorded.start;
        if held {
            let segments_from = self.partition.start_after_deleting_below(kept_from);
            if segments_from > recorded.start.offset {
                let index = self.index.read().expect("index lock");
                new_start = LogStart {
                    index: index.first_at_or_after(segments_from),
                    offset: segments_from,
                };
            }
        }
        // Recorded first: after a crash the segments begin at or before
        // the recorded start, never after it.
        let snapshot = start.snapshot.clone();
        start.store(
            StartRecord {
                start: new_start,
                purged: Some(entry_id(upto)),
                ..recorded
            },
            snapshot,
        )?;
        drop(start);
        if new_start.offset > self.partition.log_start_offset() {
            self.partition
                .delete_segments_below(new_start.offset)
                .map_err(|source| Error::Log {
                    op: "delete purged segments",
                    source,
                })?;
        }
        self.own
            .lock()
            .expect("own entries lock")
            .forget_before(new_start.index)?;
        self.index
            .write()
            .expect("index lock")
            .forget_before(new_start.index);
        *self.purged.lock().expect("purged lock") = Some(upto);
        tracing::info!(topic = %self.partition.topic(), partition = self.partition.id(), purged = upto.index, first_index = new_start.index, log_start_offset = self.partition.log_start_offset(), "purged the log");
        Ok(())
    }

    /// The index map, shared with the state machine.
    pub(super) fn index(&self) -> Arc<RwLock<EntryIndex>> {
        self.index.clone()
    }

    pub(super) fn partition(&self) -> &Partition {
        &self.partition
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
        let (slots, first) = {
            let index = self.index.read().expect("index lock");
            (index.range(start, end).to_vec(), start.max(index.first_index()))
        };
        read_entries(&self.partition, &self.own, &slots, first).map_err(read_error)
    }
}

impl RaftLogStorage<TypeConfig> for PartitionLog {
    type LogReader = PartitionLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id = *self.purged.lock().expect("purged lock");
        // openraft wants the last log id at or past the last purged one:
        // a log whose held entries all lie at or below it (or none) ends
        // there.
        let last_log_id = match (self.last_log_id(), last_purged_log_id) {
            (Some(last), Some(purged)) if purged.index > last.index => Some(purged),
            (last, purged) => last.or(purged),
        };
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
        // The entry is held, or is the last one before the log's start
        // (the end of an installed snapshot).
        let next_offset = self
            .index
            .read()
            .expect("index lock")
            .offset_after(committed.index);
        let Some(next_offset) = next_offset else {
            return Err(write_error(Error::BadEntry {
                offset: self.partition.high_watermark(),
                reason: "a committed entry is not in the local log",
            }));
        };
        commit_through(&self.partition, next_offset).await?;
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
        let writes = self.writes.clone();
        let end = blocking(move || {
            let _writes = writes.lock().expect("log writes lock");
            append_entries(&partition, &index, &own, entries)
        })
        .await?;
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
        let writes = self.writes.clone();
        blocking(move || {
            let _writes = writes.lock().expect("log writes lock");
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

    /// Records the purge in `raft-start`, then deletes the closed segments
    /// whose batches are all purged, and the own entries before the first
    /// entry kept. Segments go whole, so the log usually keeps some
    /// entries up to `log_id`; the recorded start is the first entry that
    /// really remains, and the last purged id is `log_id`, which openraft
    /// never reads again. A purge past the end of the log (a snapshot
    /// being installed, which restarts the log) deletes nothing.
    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let log = self.clone();
        blocking(move || log.purge_through(log_id)).await
    }
}

/// Restarts `partition`'s log, empty, where `record` says it starts (an
/// installed snapshot's end), with the snapshot's producer table
/// `producers` (none if empty), and empties `raft-entries`: every own
/// entry lies before the new start, or in the discarded log.
fn finish_restart(
    partition: &Partition,
    own: &mut OwnEntryLog,
    record: &StartRecord,
    producers: &[u8],
) -> Result<(), Error> {
    let term = record.purged.map_or(0, |id| id.term);
    let restarted = if producers.is_empty() {
        partition.restart_at(record.start.offset, term)
    } else {
        partition.restart_at_with_producers(record.start.offset, term, producers)
    };
    restarted.map_err(|source| Error::Log {
        op: "restart the log at a snapshot's end",
        source,
    })?;
    own.truncate(0)
}

/// Marks every offset below `next_offset` committed, once it is on disk
/// here (spool-log never commits past the durable offset).
pub(super) async fn commit_through(partition: &Partition, next_offset: u64) -> Result<(), StorageError<u64>> {
    partition.wait_durable(next_offset).await.map_err(write_error)?;
    partition.set_committed(next_offset).map_err(write_error)
}
