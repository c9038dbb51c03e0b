//! What the job table counts per queue while it serves, beside the job
//! table itself: totals of what happened since the table was built, the
//! latency distributions of queue wait, run time and end to end, and the
//! workers seen claiming. And [`QueueMetrics`], the plain snapshot of all
//! of it per queue that the server renders (into `QueueStats`, and into
//! Prometheus text) without knowing how it is kept.
//!
//! These are runtime statistics, not state: they are recorded for the
//! events the core decides (in `JobsCore::emit`), not for events replayed
//! at start, and they are neither logged nor in snapshots. So after a
//! restart the totals start again from zero, as Prometheus expects of a
//! counter. The gauges of a snapshot (jobs by state, the oldest available
//! job, leases held) are read from the job table itself.
//!
//! Definitions:
//! - queue wait: from the moment the job became available for an attempt
//!   (its enqueue or not-before time, the end of a retry's backoff, a
//!   release, a re-drive) to its claim; one observation per claim.
//! - run time: from a claim to the end of that attempt, whatever ended it
//!   (completion, failure, lease expiry or timeout, release, cancellation);
//!   one observation per ended attempt.
//! - end to end: from the enqueue to the job's success or death; one
//!   observation per job that succeeded or went dead (a cancelled job is
//!   not one).
//! - a worker is connected to a queue while it holds a lease on one of its
//!   jobs, waits in a claim naming it, or sent a claim naming it within the
//!   last default lease length (`lease_ms_default`, 30 s). Workers are told
//!   apart by their `worker_id`; unnamed workers count as one.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::event::Event;
use crate::job::{AttemptOutcome, Job};
use crate::latency::{Latency, LatencyRecorder};
use crate::queue::QueueConfig;

/// Distinct claiming workers remembered per queue. Past it, a new name is
/// remembered only once an old one has expired, and `workers_connected`
/// can undercount (lease holders and waiting claims are still counted).
pub const CLAIMERS_TRACKED_MAX: usize = 4_096;

/// What happened to a queue's jobs since the table was built (the
/// server's start), one count per event of the kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Jobs enqueued (deduplicated enqueues are not).
    pub enqueued: u64,
    /// Attempts started by a claim.
    pub claimed: u64,
    /// Jobs completed by a worker.
    pub completed: u64,
    /// Attempts that failed, reported by the worker or by the lease running
    /// out (which `expired_lease` also counts).
    pub failed: u64,
    /// Failed attempts after which the job was scheduled for a retry.
    pub retried: u64,
    /// Failed attempts after which the job went dead.
    pub dead: u64,
    /// Attempts failed because the lease ran out (the worker stopped
    /// heartbeating) or the attempt reached its timeout.
    pub expired_lease: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Attempts given back unrun by a worker shutting down.
    pub released: u64,
    /// Dead jobs made available again.
    pub redriven: u64,
}

/// Everything known about one queue, as plain numbers: what a metrics
/// exporter renders. Gauges come from the job table, counters and
/// histograms from [`QueueCounters`] and the latency recorders.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMetrics {
    pub queue: String,
    /// Jobs of the queue in memory per state, indexed by `JobState::index`
    /// (succeeded and cancelled jobs only until they leave memory).
    pub counts: [u64; 6],
    /// How long the oldest available job has waited; `None` when none is
    /// available.
    pub oldest_available_age_ms: Option<u64>,
    /// Claims hand out none of the queue's jobs while it is paused.
    pub paused: bool,
    /// Its own settings and limits.
    pub config: QueueConfig,
    pub counters: QueueCounters,
    /// Leases held on the queue's jobs: its running jobs, the workers'
    /// concurrency in use.
    pub leases_held: u64,
    /// Distinct workers connected to the queue (see the module docs).
    pub workers_connected: u64,
    pub queue_wait: Latency,
    pub run_time: Latency,
    pub end_to_end: Latency,
}

/// The recorders of one queue.
#[derive(Debug, Default)]
pub(crate) struct QueueActivity {
    pub(crate) counters: QueueCounters,
    pub(crate) queue_wait: LatencyRecorder,
    pub(crate) run_time: LatencyRecorder,
    pub(crate) end_to_end: LatencyRecorder,
    /// Hash of a claiming worker's id -> the time of its last claim naming
    /// this queue. Hashes, not names: the map's size does not depend on
    /// what clients send.
    claimers: HashMap<u64, i64>,
}

/// The job's W3C `traceparent` header, as sent.
fn traceparent(job: &Job) -> Option<&str> {
    job.headers
        .iter()
        .find(|(name, _)| name == "traceparent")
        .map(|(_, value)| value.as_str())
}

/// Logs an observation at or past the p99 bucket of its histogram, with
/// the job's W3C `traceparent` header (its second field is the trace id),
/// so a p99 spike leads to one job and its trace. At most one line per
/// hundred observations of a histogram, by the rule of
/// `LatencyRecorder::record`.
fn log_slow(histogram: &'static str, job: &Job, value_ms: u64) {
    let traceparent = traceparent(job).unwrap_or_default();
    tracing::info!(
        histogram,
        queue = %job.queue,
        job_id = %job.id,
        attempt = job.attempt,
        value_ms,
        traceparent,
        "slow job: an observation at or past the p99 bucket"
    );
}

impl QueueActivity {
    fn record_end_to_end(&mut self, job: &Job, at: i64) {
        let value_ms = elapsed_ms(job.created_ms, at);
        if self.end_to_end.record(at, value_ms, traceparent(job)) {
            log_slow("spool_job_end_to_end_seconds", job, value_ms);
        }
    }

    /// Counts `event`, just applied to `job` (the job as it is after it).
    pub(crate) fn record(&mut self, event: &Event, job: &Job) {
        let at = event.at_ms();
        let last = job.attempts.latest();
        let run_time = |recorder: &mut LatencyRecorder| {
            if let Some(attempt) = last
                && let Some(finished) = attempt.finished_at_ms
                && finished == at
            {
                let value_ms = elapsed_ms(attempt.claimed_at_ms, finished);
                if recorder.record(at, value_ms, traceparent(job)) {
                    log_slow("spool_job_run_seconds", job, value_ms);
                }
            }
        };
        let counters = &mut self.counters;
        match event {
            Event::Enqueued { .. } => counters.enqueued += 1,
            Event::Claimed { .. } => {
                counters.claimed += 1;
                if let Some(attempt) = last {
                    let value_ms = elapsed_ms(attempt.available_at_ms, attempt.claimed_at_ms);
                    if self.queue_wait.record(at, value_ms, traceparent(job)) {
                        log_slow("spool_job_queue_wait_seconds", job, value_ms);
                    }
                }
            }
            Event::Completed { .. } => {
                counters.completed += 1;
                run_time(&mut self.run_time);
                self.record_end_to_end(job, at);
            }
            Event::Failed {
                retry_at_ms,
                lease_expired,
                ..
            } => {
                counters.failed += 1;
                counters.expired_lease += u64::from(*lease_expired);
                run_time(&mut self.run_time);
                if retry_at_ms.is_some() {
                    counters.retried += 1;
                } else {
                    counters.dead += 1;
                    self.record_end_to_end(job, at);
                }
            }
            Event::Released { .. } => {
                counters.released += 1;
                run_time(&mut self.run_time);
            }
            Event::Cancelled { .. } => {
                counters.cancelled += 1;
                if last.is_some_and(|a| a.outcome == AttemptOutcome::Cancelled) {
                    run_time(&mut self.run_time);
                }
            }
            Event::Redriven { .. } => counters.redriven += 1,
            Event::LeaseExtended { .. }
            | Event::CancelRequested { .. }
            | Event::Purged { .. }
            | Event::QueuePaused { .. }
            | Event::QueueConfigured { .. }
            | Event::QueueDeleted { .. } => {}
        }
    }

    /// Notes a claim naming this queue at `now_ms` from the worker whose
    /// [`worker_key`] is `key`.
    pub(crate) fn saw_claimer(&mut self, key: u64, now_ms: i64, live_ms: i64) {
        if let Some(seen) = self.claimers.get_mut(&key) {
            *seen = now_ms;
            return;
        }
        if self.claimers.len() >= CLAIMERS_TRACKED_MAX {
            self.forget_claimers(now_ms, live_ms);
            if self.claimers.len() >= CLAIMERS_TRACKED_MAX {
                return;
            }
        }
        self.claimers.insert(key, now_ms);
    }

    /// The workers that claimed within `live_ms` of `now_ms`.
    pub(crate) fn recent_claimers(&self, now_ms: i64, live_ms: i64) -> impl Iterator<Item = u64> + '_ {
        self.claimers
            .iter()
            .filter(move |(_, seen)| now_ms.saturating_sub(**seen) < live_ms)
            .map(|(key, _)| *key)
    }

    /// Forgets claimers not seen within `live_ms`.
    pub(crate) fn forget_claimers(&mut self, now_ms: i64, live_ms: i64) {
        self.claimers
            .retain(|_, seen| now_ms.saturating_sub(*seen) < live_ms);
    }

    /// Forgets claimers not seen within `live_ms`, and frees latency
    /// buckets no window shows any more.
    pub(crate) fn release_expired(&mut self, now_ms: i64, live_ms: i64) {
        self.forget_claimers(now_ms, live_ms);
        self.claimers.shrink_to_fit();
        self.queue_wait.release_expired(now_ms);
        self.run_time.release_expired(now_ms);
        self.end_to_end.release_expired(now_ms);
    }

    /// Bytes held beyond the struct itself: latency buckets and claimers.
    pub(crate) fn bytes(&self) -> usize {
        self.queue_wait.bytes()
            + self.run_time.bytes()
            + self.end_to_end.bytes()
            + self.claimers.capacity() * 2 * std::mem::size_of::<u64>()
    }
}

/// The key a worker id is counted by.
pub(crate) fn worker_key(worker: &str) -> u64 {
    // A fixed-key SipHash: stable within the process, and with 64 bits the
    // chance that two of a few thousand workers collide is negligible.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    worker.hash(&mut hasher);
    hasher.finish()
}

fn elapsed_ms(from_ms: i64, to_ms: i64) -> u64 {
    to_ms.saturating_sub(from_ms).max(0) as u64
}
