//! The leader's check of an idempotent producer's batch, before the batch
//! becomes a Raft entry.
//!
//! The partition's producer table (`spool_log::producers`) is the state of
//! the replica's whole local log: every replica records the batches it
//! appends (the leader its own entries, a follower the ones it receives)
//! and rebuilds the table when Raft truncates its log, so a new leader
//! holds the table of the log that will be committed. What the table does
//! not hold yet are entries this leader has proposed but openraft has not
//! appended: [`InFlight`] remembers those. Check and proposal run under one
//! lock per replica, so two copies of a batch are never both proposed.
//!
//! A duplicate is answered with the original's offsets only once the
//! original is committed: a retry of a batch still in flight waits for its
//! proposal to finish and is checked again; a retry of a batch in the log
//! waits until the commit passes it (or answers "not the leader" if this
//! replica stops leading, since an uncommitted entry may yet be removed).
//! In-flight entries of an earlier term are forgotten when the term
//! changes: the table, rebuilt from the log by every truncation, is then
//! the whole truth.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use spool_format::batch::ProducerFields;
use spool_log::producers::{ProducerBatch, ProducerEntry, SequenceCheck};
use tokio::sync::watch;

use super::{Appended, Replica};
use crate::error::{Error, Result};

/// How long a duplicate waits for its original to commit before its
/// outcome is reported unknown.
const DUPLICATE_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Batches this leader proposed in `term` whose proposal has not finished.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    term: u64,
    next_id: u64,
    producers: HashMap<i64, VecDeque<Pending>>,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    epoch: i16,
    base_sequence: i32,
    record_count: u32,
    /// Closed when the proposal finishes, whatever its outcome.
    done: watch::Receiver<()>,
}

impl Pending {
    fn is(&self, fields: ProducerFields, record_count: u32) -> bool {
        self.epoch == fields.producer_epoch
            && self.base_sequence == fields.base_sequence
            && self.record_count == record_count
    }

    /// The table entry the producer has once this batch is appended.
    fn as_entry(&self) -> ProducerEntry {
        ProducerEntry {
            epoch: self.epoch,
            batches: VecDeque::from([ProducerBatch {
                base_sequence: self.base_sequence,
                record_count: self.record_count,
                base_offset: 0,
            }]),
            last_timestamp_ms: 0,
        }
    }
}

/// What the check decided.
enum Decision {
    /// Wait for this in-flight proposal, then check again.
    WaitFor(watch::Receiver<()>),
    /// The original is in the log at these offsets.
    Duplicate(ProducerBatch),
    Propose,
}

impl Replica {
    /// [`Replica::append`] of a batch with a producer id.
    pub(super) async fn append_idempotent(
        &self,
        encoded: Bytes,
        fields: ProducerFields,
        record_count: u32,
    ) -> Result<Appended> {
        loop {
            let mut in_flight = self.in_flight.lock().await;
            let term = self.term();
            if in_flight.term != term {
                *in_flight = InFlight {
                    term,
                    ..InFlight::default()
                };
            }
            match self.decide(&in_flight, fields, record_count)? {
                Decision::WaitFor(mut done) => {
                    drop(in_flight);
                    // Closed when the proposal finishes.
                    let _ = done.changed().await;
                }
                Decision::Duplicate(original) => {
                    drop(in_flight);
                    return self.committed_duplicate(original).await;
                }
                Decision::Propose => {
                    return self
                        .propose_numbered(in_flight, encoded, fields, record_count)
                        .await;
                }
            }
        }
    }

    fn decide(&self, in_flight: &InFlight, fields: ProducerFields, record_count: u32) -> Result<Decision> {
        let pending = in_flight.producers.get(&fields.producer_id);
        if let Some(same) = pending.and_then(|q| q.iter().find(|p| p.is(fields, record_count))) {
            return Ok(Decision::WaitFor(same.done.clone()));
        }
        let in_log = self.partition.check_producer(fields, record_count);
        let refused = |source| Error::ProducerRefused { source };
        match (in_log, pending.and_then(VecDeque::back)) {
            (Ok(SequenceCheck::Duplicate(original)), _) => Ok(Decision::Duplicate(original)),
            (in_log, None) => in_log.map(|_| Decision::Propose).map_err(refused),
            // Batches in flight come after everything in the log: the
            // sequence must follow the last of them.
            (_, Some(last)) => match ProducerEntry::check(Some(&last.as_entry()), fields, record_count) {
                Ok(_) => Ok(Decision::Propose),
                Err(error) => Err(refused(error)),
            },
        }
    }

    /// Proposes the batch, remembering it as in flight until openraft
    /// answers; the lock is released once the proposal is queued, so the
    /// wait for the commit is not serialized.
    async fn propose_numbered(
        &self,
        mut in_flight: tokio::sync::MutexGuard<'_, InFlight>,
        encoded: Bytes,
        fields: ProducerFields,
        record_count: u32,
    ) -> Result<Appended> {
        let committed = self.queue_write(encoded).await?;
        let (finished, done) = watch::channel(());
        let id = in_flight.next_id;
        in_flight.next_id += 1;
        in_flight
            .producers
            .entry(fields.producer_id)
            .or_default()
            .push_back(Pending {
                id,
                epoch: fields.producer_epoch,
                base_sequence: fields.base_sequence,
                record_count,
                done,
            });
        drop(in_flight);
        let answer = committed.await;
        {
            let mut in_flight = self.in_flight.lock().await;
            if let Some(queue) = in_flight.producers.get_mut(&fields.producer_id) {
                queue.retain(|p| p.id != id);
                if queue.is_empty() {
                    in_flight.producers.remove(&fields.producer_id);
                }
            }
        }
        drop(finished);
        answer
    }

    /// The answer to a duplicate of `original`, once the original is
    /// committed.
    async fn committed_duplicate(&self, original: ProducerBatch) -> Result<Appended> {
        let next_offset = original.last_offset() + 1;
        let deadline = tokio::time::Instant::now() + DUPLICATE_COMMIT_WAIT;
        loop {
            if self.partition.committed_offset() >= next_offset {
                let index = self
                    .index
                    .read()
                    .expect("index lock")
                    .index_of_batch(original.base_offset);
                return Ok(Appended {
                    index: index.unwrap_or_default(),
                    base_offset: original.base_offset,
                    next_offset,
                    duplicate: true,
                });
            }
            let leader_id = self.leader_id();
            if leader_id != Some(self.node_id) {
                return Err(Error::NotLeader { leader_id });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::DuplicateNotCommitted {
                    base_offset: original.base_offset,
                    timeout_ms: DUPLICATE_COMMIT_WAIT.as_millis() as u64,
                });
            }
            let _ = tokio::time::timeout(
                Duration::from_millis(50),
                self.partition.wait_committed(original.last_offset()),
            )
            .await;
        }
    }
}
