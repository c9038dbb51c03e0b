//! Compaction of a replica's log on its owner's request: a snapshot at the
//! last applied entry, then a purge of the entries whose batches lie below
//! an offset (`Replica::compact_to`). This is how retention reaches a
//! replicated partition: each replica deletes its own oldest segments, and
//! a replica that later needs entries the leader no longer has receives
//! the leader's snapshot and restarts its log there
//! (`PartitionLog::install_snapshot`).
//!
//! openraft never snapshots or purges on its own here
//! (`SnapshotPolicy::Never`, `max_in_snapshot_log_to_keep` at its
//! maximum), so nothing is deleted that the owner did not ask for.

use std::time::Duration;

use super::Replica;
use crate::error::{Error, Result};

impl Replica {
    /// Purges this replica's log below `offset`: up to the last entry
    /// whose whole batch lies below `offset` and that is applied here (so
    /// committed). A snapshot at the last applied entry is built first if
    /// none covers that entry; openraft purges only what a snapshot covers.
    /// The segments then go whole (`RaftLogStorage::purge` in
    /// `log_store.rs`), so the log start afterwards is at most `offset`,
    /// usually lower. Returns the partition's log start offset.
    ///
    /// Safe on any replica at any time: with nothing to purge it returns
    /// at once. A leader purges only once no replication task still reads
    /// the entries, so the purge may take a moment; past `timeout` the
    /// call fails with [`Error::CompactionTimedOut`] and the purge may
    /// still happen later. Reads below the new start get the partition's
    /// out-of-range error.
    pub async fn compact_to(&self, offset: u64, timeout: Duration) -> Result<u64> {
        let (applied, snapshot, purged) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.last_applied, metrics.snapshot, metrics.purged)
        };
        let Some(applied) = applied else {
            return Ok(self.partition.log_start_offset());
        };
        // A group with an owner's state purges nothing its durable state
        // does not cover (`app_state.rs`).
        let offset = match &self.app {
            Some(hook) => offset.min(hook.0.durable_offset()),
            None => offset,
        };
        let target = self
            .index
            .read()
            .expect("index lock")
            .last_ending_at_or_below(offset)
            .map(|index| index.min(applied.index));
        let Some(target) = target else {
            return Ok(self.partition.log_start_offset());
        };
        if purged.is_some_and(|purged| purged.index >= target) {
            return Ok(self.partition.log_start_offset());
        }
        if snapshot.is_none_or(|snapshot| snapshot.index < target) {
            // The snapshot ends at the last entry purged, not at the last
            // applied one: a follower restarted from it then holds every
            // entry this replica keeps (`PartitionStateMachine::snapshot_point`).
            self.snapshot_upto
                .store(target, std::sync::atomic::Ordering::Release);
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|fatal| Error::Stopped {
                    source: Box::new(fatal),
                })?;
            self.wait_until(timeout, target, "snapshotted", move |m| {
                m.snapshot.is_some_and(|snapshot| snapshot.index >= target)
            })
            .await?;
        }
        self.raft
            .trigger()
            .purge_log(target)
            .await
            .map_err(|fatal| Error::Stopped {
                source: Box::new(fatal),
            })?;
        self.wait_until(timeout, target, "purged", move |m| {
            m.purged.is_some_and(|purged| purged.index >= target)
        })
        .await?;
        Ok(self.partition.log_start_offset())
    }

    /// Waits until `done` holds of the engine's metrics, for at most
    /// `timeout`; past it the compaction to entry `target` timed out at
    /// `step`.
    async fn wait_until(
        &self,
        timeout: Duration,
        target: u64,
        step: &'static str,
        done: impl Fn(&openraft::RaftMetrics<u64, openraft::BasicNode>) -> bool + Send,
    ) -> Result<()> {
        self.raft
            .wait(Some(timeout))
            .metrics(done, step)
            .await
            .map(|_| ())
            .map_err(|_| Error::CompactionTimedOut {
                step,
                index: target,
                timeout_ms: timeout.as_millis() as u64,
            })
    }
}
