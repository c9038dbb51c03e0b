//! The sets that order jobs by what happens to them next, and per-queue
//! counters.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::job::{Job, JobId, JobState};
use crate::queue::Queue;

/// Per-second counters over the last minute, for rates.
#[derive(Debug, Clone)]
pub(crate) struct Rates {
    buckets: [(i64, [u32; 3]); 60],
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            buckets: [(i64::MIN, [0; 3]); 60],
        }
    }
}

pub(crate) const RATE_ENQUEUED: usize = 0;
pub(crate) const RATE_COMPLETED: usize = 1;
pub(crate) const RATE_FAILED: usize = 2;
pub const RATE_WINDOW_MS: u64 = 60_000;

impl Rates {
    pub(crate) fn add(&mut self, at_ms: i64, which: usize) {
        let second = at_ms.div_euclid(1000);
        let bucket = &mut self.buckets[second.rem_euclid(60) as usize];
        if bucket.0 != second {
            *bucket = (second, [0; 3]);
        }
        bucket.1[which] += 1;
    }

    pub(crate) fn per_second(&self, now_ms: i64, which: usize) -> f64 {
        let now = now_ms.div_euclid(1000);
        let total: u64 = self
            .buckets
            .iter()
            .filter(|(second, _)| *second > now - 60 && *second <= now)
            .map(|(_, counts)| u64::from(counts[which]))
            .sum();
        total as f64 / 60.0
    }
}

/// The sets that order jobs by what happens to them next.
#[derive(Debug, Default)]
pub(crate) struct Indexes {
    /// Every known queue (see `queue.rs`); an entry is removed only when
    /// the queue is deleted.
    pub(crate) queues: HashMap<Arc<str>, Queue>,
    pub(crate) scheduled: BTreeSet<(i64, JobId)>,
    pub(crate) leases: BTreeSet<(i64, JobId)>,
    /// Finished jobs by the time they leave memory (succeeded and
    /// cancelled) or are purged (dead): their end plus their queue's
    /// retention, or the server's.
    pub(crate) finished: BTreeSet<(i64, JobId)>,
    /// The server's retentions, for queues that set none.
    pub(crate) finished_retention_ms: u64,
    pub(crate) dead_retention_ms: u64,
}

/// When a job that finished leaves memory (or, dead, is purged), by its
/// queue's retention or the server's default.
fn leave_at_ms(job: &Job, queue: &Queue, finished_default_ms: u64, dead_default_ms: u64) -> i64 {
    let retention = if job.state == JobState::Dead {
        queue.config.dead_retention_ms.unwrap_or(dead_default_ms)
    } else {
        queue.config.finished_retention_ms.unwrap_or(finished_default_ms)
    };
    job.finished_ms
        .unwrap_or(0)
        .saturating_add(i64::try_from(retention).unwrap_or(i64::MAX))
}

impl Indexes {
    pub(crate) fn new(finished_retention_ms: u64, dead_retention_ms: u64) -> Self {
        Indexes {
            finished_retention_ms,
            dead_retention_ms,
            ..Indexes::default()
        }
    }

    /// The queue named `name`, which becomes known if it was not.
    pub(crate) fn queue(&mut self, name: &Arc<str>) -> &mut Queue {
        self.queues.entry(Arc::clone(name)).or_default()
    }

    /// Indexes `job` in its state; returns its queue.
    pub(crate) fn insert(&mut self, job: &Job) -> &mut Queue {
        let queue = self.queues.entry(Arc::clone(&job.queue)).or_default();
        queue.counts[job.state.index()] += 1;
        match job.state {
            JobState::Available => {
                queue.ready.insert((Reverse(job.priority), job.id));
            }
            JobState::Scheduled => {
                self.scheduled.insert((job.run_at_ms, job.id));
            }
            JobState::Running => {
                let until = job.lease.as_ref().map_or(i64::MIN, |l| l.until_ms);
                self.leases.insert((until, job.id));
            }
            JobState::Succeeded | JobState::Dead | JobState::Cancelled => {
                let leave_at = leave_at_ms(job, queue, self.finished_retention_ms, self.dead_retention_ms);
                self.finished.insert((leave_at, job.id));
            }
        }
        queue
    }

    pub(crate) fn remove(&mut self, job: &Job) {
        let queue = self.queues.entry(Arc::clone(&job.queue)).or_default();
        queue.counts[job.state.index()] -= 1;
        match job.state {
            JobState::Available => {
                queue.ready.remove(&(Reverse(job.priority), job.id));
            }
            JobState::Scheduled => {
                self.scheduled.remove(&(job.run_at_ms, job.id));
            }
            JobState::Running => {
                let until = job.lease.as_ref().map_or(i64::MIN, |l| l.until_ms);
                self.leases.remove(&(until, job.id));
            }
            JobState::Succeeded | JobState::Dead | JobState::Cancelled => {
                let leave_at = leave_at_ms(job, queue, self.finished_retention_ms, self.dead_retention_ms);
                self.finished.remove(&(leave_at, job.id));
            }
        }
    }
}
