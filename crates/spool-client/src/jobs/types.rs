//! The job client's types: states, jobs, events and queue statistics as
//! Rust values (enums for states and kinds, [`Duration`] for durations,
//! `Option` for what may be absent), and their conversions from and to the
//! generated messages.
//!
//! Times are Unix epoch milliseconds of the server's clock, in fields named
//! `..._ms`, as elsewhere in this crate: they are for display, the server
//! alone decides when things happen.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use spool_proto::v1;

use crate::error::{Error, Result};

/// The state of a job.
///
/// `Scheduled -> Available -> Running -> Succeeded`, or back to `Scheduled`
/// (a retry after a backoff) or `Available`, or `Dead`; `Scheduled`,
/// `Available` and `Running` can become `Cancelled`; `Dead` becomes
/// `Available` again when re-driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for its time: delayed at enqueue, or backing off before a
    /// retry.
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Claimed by a worker that holds a lease on it.
    Running,
    /// Completed by a worker. Final.
    Succeeded,
    /// Out of attempts, or failed without retry. Can be re-driven or purged.
    Dead,
    /// Cancelled by a client. Final.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of its life.
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The state's name in lower case: `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state of a wire value; `None` for UNSPECIFIED and for values this
    /// client does not know.
    pub(crate) fn from_proto(value: i32) -> Option<Self> {
        match v1::JobState::try_from(value).ok()? {
            v1::JobState::Unspecified => None,
            v1::JobState::Scheduled => Some(JobState::Scheduled),
            v1::JobState::Available => Some(JobState::Available),
            v1::JobState::Running => Some(JobState::Running),
            v1::JobState::Succeeded => Some(JobState::Succeeded),
            v1::JobState::Dead => Some(JobState::Dead),
            v1::JobState::Cancelled => Some(JobState::Cancelled),
        }
    }

    pub(crate) fn to_proto(self) -> v1::JobState {
        match self {
            JobState::Scheduled => v1::JobState::Scheduled,
            JobState::Available => v1::JobState::Available,
            JobState::Running => v1::JobState::Running,
            JobState::Succeeded => v1::JobState::Succeeded,
            JobState::Dead => v1::JobState::Dead,
            JobState::Cancelled => v1::JobState::Cancelled,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a new job first becomes available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// This long after it reaches the server.
    Delay(Duration),
    /// At this Unix epoch millisecond, turned into a delay by the server's
    /// clock on arrival; a time in the past means at once.
    NotBeforeMs(i64),
}

/// A job to enqueue. [`NewJob::new`] sets the queue and payload; every other
/// field left at its default takes the queue's default on the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewJob {
    /// Queue name (the rules of topic names); a queue exists from its first
    /// job on.
    pub queue: String,
    /// The job's input, opaque to Spool.
    pub payload: Bytes,
    /// MIME type of the payload, for example `application/json`.
    pub content_type: Option<String>,
    /// Small metadata, such as W3C `traceparent`.
    pub headers: BTreeMap<String, String>,
    /// Higher values are claimed first; equal priorities oldest first.
    pub priority: i32,
    /// Total tries, the first one included (1: no retry).
    pub attempts_max: Option<u32>,
    /// Longest one attempt may run, counted from its claim.
    pub timeout: Option<Duration>,
    /// At once when `None`.
    pub schedule: Option<Schedule>,
    /// A second enqueue with the same key to the same queue within the
    /// dedup window returns the first job instead of a new one.
    pub idempotency_key: Option<String>,
}

impl NewJob {
    pub fn new(queue: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        NewJob {
            queue: queue.into(),
            payload: payload.into(),
            ..NewJob::default()
        }
    }

    pub(crate) fn into_proto(self) -> v1::EnqueueRequest {
        v1::EnqueueRequest {
            queue: self.queue,
            payload: self.payload,
            content_type: self.content_type.unwrap_or_default(),
            headers: self.headers.into_iter().collect(),
            priority: self.priority,
            attempts_max: self.attempts_max,
            timeout_ms: self.timeout.map(millis),
            schedule: self.schedule.map(|schedule| match schedule {
                Schedule::Delay(delay) => v1::enqueue_request::Schedule::DelayMs(millis(delay)),
                Schedule::NotBeforeMs(at_ms) => v1::enqueue_request::Schedule::NotBeforeMs(at_ms),
            }),
            idempotency_key: self.idempotency_key,
        }
    }
}

/// What an enqueue answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The new job's id, or the earlier job's when deduplicated.
    pub job_id: String,
    /// True when an earlier job with the same idempotency key was returned
    /// and nothing new was enqueued.
    pub deduplicated: bool,
    /// The job's state after the call; `None` for a deduplicated job that
    /// has already left the server's memory.
    pub state: Option<JobState>,
}

impl Enqueued {
    pub(crate) fn from_proto(response: v1::EnqueueResponse) -> Self {
        Enqueued {
            state: JobState::from_proto(response.state),
            job_id: response.job_id,
            deduplicated: response.deduplicated,
        }
    }
}

/// The error of one failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub attempt: u32,
    /// The worker's error text, or the server's ("lease expired",
    /// "timeout").
    pub error: String,
    pub failed_at_ms: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Not ended: the worker holds the lease.
    Running,
    Succeeded,
    /// The worker reported a failure.
    Failed,
    /// The lease ran out (the worker stopped heartbeating) or the attempt
    /// reached its timeout.
    LeaseExpired,
    /// The worker gave the job back unrun; the attempt does not count.
    Released,
    /// The job was cancelled while the attempt ran.
    Cancelled,
    /// An outcome this client does not know (from a newer server), with
    /// its wire value.
    Unknown(i32),
}

impl AttemptOutcome {
    /// The outcome's name in lower case: `lease_expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::LeaseExpired => "lease_expired",
            AttemptOutcome::Released => "released",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Unknown(_) => "unknown",
        }
    }

    fn from_proto(value: i32) -> Self {
        match v1::AttemptOutcome::try_from(value) {
            Ok(v1::AttemptOutcome::Running) => AttemptOutcome::Running,
            Ok(v1::AttemptOutcome::Succeeded) => AttemptOutcome::Succeeded,
            Ok(v1::AttemptOutcome::Failed) => AttemptOutcome::Failed,
            Ok(v1::AttemptOutcome::LeaseExpired) => AttemptOutcome::LeaseExpired,
            Ok(v1::AttemptOutcome::Released) => AttemptOutcome::Released,
            Ok(v1::AttemptOutcome::Cancelled) => AttemptOutcome::Cancelled,
            Ok(v1::AttemptOutcome::Unspecified) | Err(_) => AttemptOutcome::Unknown(value),
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stage times of one attempt, Unix epoch milliseconds of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobAttempt {
    pub attempt: u32,
    /// When the job became available for this attempt: its enqueue (or
    /// not-before time), the end of a retry's backoff, a release or a
    /// re-drive.
    pub available_at_ms: i64,
    /// When a worker claimed it: the attempt's start.
    pub claimed_at_ms: i64,
    /// When the attempt ended; `None` while it runs.
    pub finished_at_ms: Option<i64>,
    pub outcome: AttemptOutcome,
}

impl JobAttempt {
    fn from_proto(attempt: v1::JobAttempt) -> Self {
        JobAttempt {
            attempt: attempt.attempt,
            available_at_ms: attempt.available_at_ms,
            claimed_at_ms: attempt.claimed_at_ms,
            finished_at_ms: attempt.finished_at_ms,
            outcome: AttemptOutcome::from_proto(attempt.outcome),
        }
    }

    /// From available to claimed: how long the job waited for a worker.
    pub fn queue_wait(&self) -> Duration {
        between(self.available_at_ms, self.claimed_at_ms)
    }

    /// From claimed to finished; `None` while the attempt runs.
    pub fn run_time(&self) -> Option<Duration> {
        self.finished_at_ms
            .map(|finished| between(self.claimed_at_ms, finished))
    }
}

/// The non-negative duration from `from_ms` to `to_ms`.
fn between(from_ms: i64, to_ms: i64) -> Duration {
    Duration::from_millis(to_ms.saturating_sub(from_ms).max(0) as u64)
}

/// A job as the server's job table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    /// Empty in a listing that did not ask for payloads.
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub priority: i32,
    /// Attempts started so far (0 before the first claim).
    pub attempt: u32,
    /// Total tries allowed, the first one included.
    pub attempts_max: u32,
    /// Longest one attempt may run; `None` when only the lease bounds it.
    pub timeout: Option<Duration>,
    pub idempotency_key: Option<String>,
    pub created_at_ms: i64,
    /// When a scheduled job becomes available.
    pub available_at_ms: Option<i64>,
    /// Start of the current or last attempt.
    pub started_at_ms: Option<i64>,
    /// When the job succeeded, went dead or was cancelled.
    pub finished_at_ms: Option<i64>,
    /// Errors of failed attempts, oldest first (the most recent ones, up to
    /// the server's limit; the history has all).
    pub errors: Vec<AttemptError>,
    /// What the worker's completion stored; `None` in a listing that did
    /// not ask for payloads.
    pub result: Option<Bytes>,
    /// The last progress a heartbeat reported.
    pub progress: Option<String>,
    /// True when cancellation was requested while the job was running.
    pub cancel_requested: bool,
    /// The worker holding the lease (its `worker_id`, possibly empty), for
    /// a running job.
    pub worker_id: Option<String>,
    /// True when the job had left the server's memory and this view was
    /// rebuilt from its events in the log; such a job can no longer change.
    pub from_history: bool,
    /// When a dead job was purged; set only with `from_history`.
    pub purged_at_ms: Option<i64>,
    /// Stage times of the most recent attempts (up to the server's limit,
    /// 20), oldest first.
    pub attempts: Vec<JobAttempt>,
}

impl JobInfo {
    pub(crate) fn from_proto(job: v1::Job) -> Result<Self> {
        let state = JobState::from_proto(job.state).ok_or_else(|| {
            Error::protocol(format!("job {} has an unknown state {}", job.job_id, job.state))
        })?;
        Ok(JobInfo {
            id: job.job_id,
            queue: job.queue,
            state,
            payload: job.payload,
            content_type: non_empty(job.content_type),
            headers: job.headers.into_iter().collect(),
            priority: job.priority,
            attempt: job.attempt,
            attempts_max: job.attempts_max,
            timeout: positive_millis(job.timeout_ms),
            idempotency_key: job.idempotency_key,
            created_at_ms: job.created_at_ms,
            available_at_ms: job.available_at_ms,
            started_at_ms: job.started_at_ms,
            finished_at_ms: job.finished_at_ms,
            errors: job
                .errors
                .into_iter()
                .map(|error| AttemptError {
                    attempt: error.attempt,
                    error: error.error,
                    failed_at_ms: error.failed_at_ms,
                })
                .collect(),
            result: job.result,
            progress: job.progress,
            cancel_requested: job.cancel_requested,
            worker_id: job.worker_id,
            from_history: job.from_history,
            purged_at_ms: job.purged_at_ms,
            attempts: job.attempts.into_iter().map(JobAttempt::from_proto).collect(),
        })
    }

    /// From the enqueue to the job's first availability: a delayed job's
    /// delay. `None` when the first attempt's record is no longer kept.
    pub fn initial_delay(&self) -> Option<Duration> {
        let first_available_ms = match self.attempts.first() {
            Some(first) if first.attempt == 1 => first.available_at_ms,
            Some(_) => return None,
            None => self.available_at_ms?,
        };
        Some(between(self.created_at_ms, first_available_ms))
    }

    /// From the end of `attempts[index]` to the job being available again:
    /// a retry's backoff (zero for a retry at once or a release; for a dead
    /// job re-driven, the time it stayed dead). `None` while the attempt
    /// runs, and after the last attempt unless a retry is scheduled.
    pub fn backoff_after(&self, index: usize) -> Option<Duration> {
        let finished_ms = self.attempts.get(index)?.finished_at_ms?;
        let next_available_ms = match self.attempts.get(index + 1) {
            Some(next) => next.available_at_ms,
            None if matches!(self.state, JobState::Scheduled | JobState::Available) => self.available_at_ms?,
            None => return None,
        };
        Some(between(finished_ms, next_available_ms))
    }

    /// From the enqueue to the job's end (succeeded, dead or cancelled);
    /// `None` until it ended.
    pub fn total(&self) -> Option<Duration> {
        self.finished_at_ms
            .map(|finished| between(self.created_at_ms, finished))
    }
}

/// What happened to a job, as its history records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobEventKind {
    Enqueued,
    Claimed,
    LeaseExtended,
    Progress,
    Completed,
    Failed,
    RetryScheduled,
    Dead,
    CancelRequested,
    Cancelled,
    Redriven,
    Purged,
    Available,
    /// A kind this client does not know (from a newer server), with its
    /// wire value.
    Unknown(i32),
}

impl JobEventKind {
    /// The kind's name in lower case: `retry_scheduled`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobEventKind::Enqueued => "enqueued",
            JobEventKind::Claimed => "claimed",
            JobEventKind::LeaseExtended => "lease_extended",
            JobEventKind::Progress => "progress",
            JobEventKind::Completed => "completed",
            JobEventKind::Failed => "failed",
            JobEventKind::RetryScheduled => "retry_scheduled",
            JobEventKind::Dead => "dead",
            JobEventKind::CancelRequested => "cancel_requested",
            JobEventKind::Cancelled => "cancelled",
            JobEventKind::Redriven => "redriven",
            JobEventKind::Purged => "purged",
            JobEventKind::Available => "available",
            JobEventKind::Unknown(_) => "unknown",
        }
    }

    fn from_proto(value: i32) -> Self {
        match v1::JobEventKind::try_from(value) {
            Ok(v1::JobEventKind::Enqueued) => JobEventKind::Enqueued,
            Ok(v1::JobEventKind::Claimed) => JobEventKind::Claimed,
            Ok(v1::JobEventKind::LeaseExtended) => JobEventKind::LeaseExtended,
            Ok(v1::JobEventKind::Progress) => JobEventKind::Progress,
            Ok(v1::JobEventKind::Completed) => JobEventKind::Completed,
            Ok(v1::JobEventKind::Failed) => JobEventKind::Failed,
            Ok(v1::JobEventKind::RetryScheduled) => JobEventKind::RetryScheduled,
            Ok(v1::JobEventKind::Dead) => JobEventKind::Dead,
            Ok(v1::JobEventKind::CancelRequested) => JobEventKind::CancelRequested,
            Ok(v1::JobEventKind::Cancelled) => JobEventKind::Cancelled,
            Ok(v1::JobEventKind::Redriven) => JobEventKind::Redriven,
            Ok(v1::JobEventKind::Purged) => JobEventKind::Purged,
            Ok(v1::JobEventKind::Available) => JobEventKind::Available,
            Ok(v1::JobEventKind::Unspecified) | Err(_) => JobEventKind::Unknown(value),
        }
    }
}

impl fmt::Display for JobEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of a job's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub time_ms: i64,
    pub kind: JobEventKind,
    /// The attempt the event belongs to (0 before the first claim).
    pub attempt: u32,
    /// The worker involved, if known (possibly empty: an unnamed worker).
    pub worker_id: Option<String>,
    pub error: Option<String>,
    pub progress: Option<String>,
    /// The lease granted (claims, lease extensions).
    pub lease: Option<Duration>,
    /// The delay until the job is available (a delayed enqueue, a retry).
    pub delay: Option<Duration>,
    /// A human-readable summary, for display.
    pub detail: String,
}

impl JobEvent {
    pub(crate) fn from_proto(event: v1::JobEvent) -> Self {
        JobEvent {
            time_ms: event.time_ms,
            kind: JobEventKind::from_proto(event.kind),
            attempt: event.attempt,
            worker_id: event.worker_id,
            error: event.error,
            progress: event.progress,
            lease: event.lease_ms.map(Duration::from_millis),
            delay: event.delay_ms.map(Duration::from_millis),
            detail: event.detail,
        }
    }
}

/// Counts, rates, totals and latencies of one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    pub scheduled_count: u64,
    pub available_count: u64,
    /// Running jobs: each holds a lease, so also the leases held.
    pub running_count: u64,
    /// Succeeded jobs still in the server's memory.
    pub succeeded_count: u64,
    pub dead_count: u64,
    /// Cancelled jobs still in the server's memory.
    pub cancelled_count: u64,
    /// How long the oldest available job has waited; `None` when none is
    /// available.
    pub oldest_available_age: Option<Duration>,
    /// The window the rates are measured over.
    pub rate_window: Duration,
    pub enqueued_per_second: f64,
    pub completed_per_second: f64,
    /// Failed attempts per second, retried or not.
    pub failed_per_second: f64,
    /// Percentiles of queue wait, run time and end to end over the last
    /// minute and hour.
    pub latency: QueueLatency,
    /// What happened since the server started.
    pub totals: QueueTotals,
    /// Distinct workers holding a lease, waiting in a claim or recently
    /// claiming from the queue.
    pub workers_connected: u64,
    /// True while the queue is paused: claims hand out none of its jobs.
    pub paused: bool,
    /// The queue's own settings; `None` ones are the server's defaults.
    pub config: QueueConfig,
    /// Claims of the queue's jobs in the current rate-limit window (0
    /// without a rate limit).
    pub rate_window_claims: u64,
    /// How finished jobs leave the server's memory (their history stays in
    /// the log, and `get` still answers for them).
    pub eviction: EvictionRule,
}

/// The latency distributions of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLatency {
    /// From a job becoming available to its claim.
    pub queue_wait: LatencyWindows,
    /// From a claim to the end of that attempt.
    pub run_time: LatencyWindows,
    /// From the enqueue to the job's success or death.
    pub end_to_end: LatencyWindows,
}

/// One distribution over the server's two windows; `None` where the window
/// holds no observation. Each window holds between 55 and 60 seconds
/// (minutes) of observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyWindows {
    pub last_minute: Option<Percentiles>,
    pub last_hour: Option<Percentiles>,
}

/// Percentiles of the observations in a window, each at most 0.8 % above
/// the true value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Observations in the window.
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    fn from_proto(percentiles: v1::LatencyPercentiles) -> Self {
        Percentiles {
            count: percentiles.count,
            p50: Duration::from_millis(percentiles.p50_ms),
            p99: Duration::from_millis(percentiles.p99_ms),
            max: Duration::from_millis(percentiles.max_ms),
        }
    }
}

fn windows(
    last_minute: Option<v1::LatencyPercentiles>,
    last_hour: Option<v1::LatencyPercentiles>,
) -> LatencyWindows {
    LatencyWindows {
        last_minute: last_minute.map(Percentiles::from_proto),
        last_hour: last_hour.map(Percentiles::from_proto),
    }
}

/// What happened to a queue's jobs since the server started (the totals
/// start from zero at each start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub enqueued: u64,
    /// Attempts started by a claim.
    pub claimed: u64,
    pub completed: u64,
    /// Failed attempts, by the worker or by an expired lease.
    pub failed: u64,
    /// Failed attempts followed by a retry.
    pub retried: u64,
    /// Failed attempts after which the job went dead.
    pub dead: u64,
    /// Attempts failed by an expired lease or a timeout.
    pub expired_lease: u64,
    pub cancelled: u64,
    /// Attempts given back unrun by a worker shutting down.
    pub released: u64,
    /// Dead jobs made available again.
    pub redriven: u64,
}

/// How finished jobs leave the server's memory: by age, or earlier when
/// too many are held. Dead jobs are purged by their own age only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionRule {
    /// A succeeded or cancelled job leaves this long after it finished.
    pub finished_retention: Duration,
    /// At most this many succeeded and cancelled jobs, of all queues, are
    /// held; beyond it the oldest leave before their retention time.
    pub finished_in_memory_max: u64,
    /// Succeeded and cancelled jobs of all queues held now.
    pub finished_in_memory_count: u64,
    /// Jobs of this queue that left early by the count rule since the
    /// server started.
    pub finished_evicted_early_count: u64,
    /// A dead job is purged this long after it went dead, unless re-driven.
    pub dead_retention: Duration,
}

impl QueueStats {
    pub(crate) fn from_proto(stats: v1::QueueStatsResponse) -> Self {
        QueueStats {
            queue: stats.queue,
            scheduled_count: stats.scheduled_count,
            available_count: stats.available_count,
            running_count: stats.running_count,
            succeeded_count: stats.succeeded_count,
            dead_count: stats.dead_count,
            cancelled_count: stats.cancelled_count,
            oldest_available_age: stats.oldest_available_age_ms.map(Duration::from_millis),
            rate_window: Duration::from_millis(stats.rate_window_ms),
            enqueued_per_second: stats.enqueued_per_second,
            completed_per_second: stats.completed_per_second,
            failed_per_second: stats.failed_per_second,
            latency: QueueLatency {
                queue_wait: windows(stats.queue_wait_last_minute, stats.queue_wait_last_hour),
                run_time: windows(stats.run_time_last_minute, stats.run_time_last_hour),
                end_to_end: windows(stats.end_to_end_last_minute, stats.end_to_end_last_hour),
            },
            totals: QueueTotals {
                enqueued: stats.enqueued_total,
                claimed: stats.claimed_total,
                completed: stats.completed_total,
                failed: stats.failed_total,
                retried: stats.retried_total,
                dead: stats.dead_total,
                expired_lease: stats.expired_lease_total,
                cancelled: stats.cancelled_total,
                released: stats.released_total,
                redriven: stats.redriven_total,
            },
            workers_connected: stats.workers_connected,
            paused: stats.paused,
            config: QueueConfig::from_proto(stats.config.unwrap_or_default()),
            rate_window_claims: stats.rate_window_claims,
            eviction: EvictionRule {
                finished_retention: Duration::from_millis(stats.finished_retention_ms),
                finished_in_memory_max: stats.finished_in_memory_max,
                finished_in_memory_count: stats.finished_in_memory_count,
                finished_evicted_early_count: stats.finished_evicted_early_count,
                dead_retention: Duration::from_millis(stats.dead_retention_ms),
            },
        }
    }

    /// Jobs scheduled, available or running: not finished yet.
    pub fn waiting_count(&self) -> u64 {
        self.scheduled_count + self.available_count + self.running_count
    }
}

/// One known queue in a listing: its jobs by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    pub queue: String,
    pub scheduled_count: u64,
    pub available_count: u64,
    pub running_count: u64,
    /// Succeeded jobs still in the server's memory.
    pub succeeded_count: u64,
    pub dead_count: u64,
    /// Cancelled jobs still in the server's memory.
    pub cancelled_count: u64,
    /// How long the oldest available job has waited; `None` when none is.
    pub oldest_available_age: Option<Duration>,
    /// True while the queue is paused.
    pub paused: bool,
    /// The queue's own settings; `None` ones are the server's defaults.
    pub config: QueueConfig,
}

impl QueueSummary {
    pub(crate) fn from_proto(summary: v1::QueueSummary) -> Self {
        QueueSummary {
            queue: summary.queue,
            scheduled_count: summary.scheduled_count,
            available_count: summary.available_count,
            running_count: summary.running_count,
            succeeded_count: summary.succeeded_count,
            dead_count: summary.dead_count,
            cancelled_count: summary.cancelled_count,
            oldest_available_age: summary.oldest_available_age_ms.map(Duration::from_millis),
            paused: summary.paused,
            config: QueueConfig::from_proto(summary.config.unwrap_or_default()),
        }
    }
}

/// Retry delays of a queue: the first retry waits `min`, each next one
/// twice as long, at most `max`; the last fifth of each delay is random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBackoff {
    pub min: Duration,
    pub max: Duration,
}

/// At most `jobs` of a queue's jobs claimed in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRateLimit {
    pub jobs: u32,
    pub per: Duration,
}

/// A queue's own settings (`Jobs::configure_queue`); `None` is the
/// server's default. A job's own attempts and timeout, and a claim's own
/// lease, win over these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueConfig {
    /// Total tries of a job, the first included.
    pub attempts_max: Option<u32>,
    pub backoff: Option<QueueBackoff>,
    /// Lease of a claim that asks for none.
    pub lease: Option<Duration>,
    /// Longest one attempt may run.
    pub timeout: Option<Duration>,
    /// How long succeeded and cancelled jobs stay in the server's memory.
    pub finished_retention: Option<Duration>,
    /// How long dead jobs stay before they are purged.
    pub dead_retention: Option<Duration>,
    /// At most this many of the queue's jobs run at once, across every
    /// worker (enforced by the server at claim).
    pub concurrency_limit: Option<u32>,
    /// At most this many claims per window, across every worker.
    pub rate_limit: Option<QueueRateLimit>,
}

impl QueueConfig {
    pub(crate) fn from_proto(config: v1::QueueConfig) -> Self {
        QueueConfig {
            attempts_max: config.attempts_max,
            backoff: config.backoff.map(|b| QueueBackoff {
                min: Duration::from_millis(b.min_ms),
                max: Duration::from_millis(b.max_ms),
            }),
            lease: config.lease_ms.map(Duration::from_millis),
            timeout: config.timeout_ms.map(Duration::from_millis),
            finished_retention: config.finished_retention_ms.map(Duration::from_millis),
            dead_retention: config.dead_retention_ms.map(Duration::from_millis),
            concurrency_limit: config.concurrency_limit,
            rate_limit: config.rate_limit.map(|r| QueueRateLimit {
                jobs: r.jobs,
                per: Duration::from_millis(r.per_ms),
            }),
        }
    }
}

/// A change to a queue's settings: for each, `None` leaves it as it is,
/// `Some(None)` returns it to the server's default, `Some(Some(v))` sets
/// it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueConfigChange {
    pub attempts_max: Option<Option<u32>>,
    pub backoff: Option<Option<QueueBackoff>>,
    pub lease: Option<Option<Duration>>,
    pub timeout: Option<Option<Duration>>,
    pub finished_retention: Option<Option<Duration>>,
    pub dead_retention: Option<Option<Duration>>,
    pub concurrency_limit: Option<Option<u32>>,
    pub rate_limit: Option<Option<QueueRateLimit>>,
}

impl QueueConfigChange {
    pub(crate) fn to_request(&self, queue: &str) -> v1::ConfigureQueueRequest {
        use v1::QueueSetting as S;
        let mut reset = Vec::new();
        let mut set = v1::QueueConfig::default();
        fn split<T: Copy, U>(
            change: Option<Option<T>>,
            setting: S,
            reset: &mut Vec<i32>,
            into: impl FnOnce(T) -> U,
        ) -> Option<U> {
            match change {
                None => None,
                Some(None) => {
                    reset.push(setting as i32);
                    None
                }
                Some(Some(value)) => Some(into(value)),
            }
        }
        set.attempts_max = split(self.attempts_max, S::AttemptsMax, &mut reset, |v| v);
        set.backoff = split(self.backoff, S::Backoff, &mut reset, |b| v1::QueueBackoff {
            min_ms: millis(b.min),
            max_ms: millis(b.max),
        });
        set.lease_ms = split(self.lease, S::Lease, &mut reset, millis);
        set.timeout_ms = split(self.timeout, S::Timeout, &mut reset, millis);
        set.finished_retention_ms = split(self.finished_retention, S::FinishedRetention, &mut reset, millis);
        set.dead_retention_ms = split(self.dead_retention, S::DeadRetention, &mut reset, millis);
        set.concurrency_limit = split(self.concurrency_limit, S::ConcurrencyLimit, &mut reset, |v| v);
        set.rate_limit = split(self.rate_limit, S::RateLimit, &mut reset, |r| {
            v1::QueueRateLimit {
                jobs: r.jobs,
                per_ms: millis(r.per),
            }
        });
        v1::ConfigureQueueRequest {
            queue: queue.to_owned(),
            set: Some(set),
            reset,
        }
    }
}

/// Which jobs a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    pub queue: String,
    /// Only jobs in this state; `None` for every state.
    pub state: Option<JobState>,
    /// Include payloads and results (off keeps pages small).
    pub include_payload: bool,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Asks for the next page; `None` on the last one.
    pub next_page_token: Option<String>,
}

/// One page of a job's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Events, oldest first.
    pub items: Vec<JobEvent>,
    /// Asks for the next page; `None` on the last one.
    pub next_page_token: Option<String>,
    /// On a first page: the job's events before this time (Unix epoch
    /// milliseconds, the oldest event the server's log still holds) were
    /// deleted by the history retention of `__jobs`, so `items` does not
    /// start at the job's enqueue.
    pub trimmed_before_ms: Option<i64>,
}

/// Dead jobs of one queue, for re-driving or purging in bulk. Every
/// condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    pub queue: String,
    /// Only jobs whose last error contains this text (case-sensitive).
    pub error_contains: Option<String>,
    /// Only jobs that went dead at or after this time.
    pub dead_since_ms: Option<i64>,
    /// Only jobs that went dead before this time.
    pub dead_before_ms: Option<i64>,
    /// Most jobs one call acts on; 0 is the server's default (1,000).
    pub limit: u32,
}

impl DeadFilter {
    pub(crate) fn to_proto(&self) -> v1::DeadJobFilter {
        v1::DeadJobFilter {
            queue: self.queue.clone(),
            error_contains: self.error_contains.clone().unwrap_or_default(),
            dead_since_ms: self.dead_since_ms,
            dead_before_ms: self.dead_before_ms,
            limit: self.limit,
            error_fingerprint: String::new(),
        }
    }
}

/// What a cancellation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was waiting and is cancelled (or already was).
    Cancelled,
    /// The job is running: its worker is told on its next heartbeat, and
    /// the job then ends cancelled.
    Requested,
}

/// A claim: which queues, how many jobs, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// At least one queue.
    pub queues: Vec<String>,
    /// Most jobs to take (capped by the server).
    pub max_jobs: u32,
    /// The lease of each job; zero takes the server's default.
    pub lease: Duration,
    /// How long to wait for a job when none is available (capped by the
    /// server); zero answers at once.
    pub max_wait: Duration,
    /// Recorded in each job's history.
    pub worker_id: String,
}

/// A job handed to a claimer, with the lease token its outcome needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: String,
    pub queue: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// Starting at 1; `(id, attempt)` names one delivery.
    pub attempt: u32,
    pub attempts_max: u32,
    /// Proves the lease: completion and failure need it.
    pub lease_token: String,
    /// The lease granted.
    pub lease: Duration,
    /// Longest this attempt may run; `None` when only the lease bounds it.
    pub timeout: Option<Duration>,
    pub priority: i32,
    pub enqueued_at_ms: i64,
}

impl ClaimedJob {
    pub(crate) fn from_proto(job: v1::ClaimedJob) -> Self {
        ClaimedJob {
            id: job.job_id,
            queue: job.queue,
            payload: job.payload,
            content_type: non_empty(job.content_type),
            headers: job.headers.into_iter().collect(),
            attempt: job.attempt,
            attempts_max: job.attempts_max,
            lease_token: job.lease_token,
            lease: Duration::from_millis(job.lease_ms),
            timeout: positive_millis(job.timeout_ms),
            priority: job.priority,
            enqueued_at_ms: job.enqueued_at_ms,
        }
    }

    /// Completes this job with `result`.
    pub fn complete(&self, result: impl Into<Bytes>) -> Finish {
        Finish::Complete {
            job_id: self.id.clone(),
            lease_token: self.lease_token.clone(),
            result: result.into(),
        }
    }

    /// Fails this attempt with `error`; retried while attempts remain when
    /// `retryable`, else the job goes dead.
    pub fn fail(&self, error: impl Into<String>, retryable: bool) -> Finish {
        Finish::Fail {
            job_id: self.id.clone(),
            lease_token: self.lease_token.clone(),
            error: error.into(),
            retryable,
            retry_delay: None,
        }
    }
}

/// The outcome of one claimed job, for [`Jobs::finish`](super::Jobs::finish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Complete {
        job_id: String,
        lease_token: String,
        result: Bytes,
    },
    Fail {
        job_id: String,
        lease_token: String,
        error: String,
        /// False sends the job straight to dead.
        retryable: bool,
        /// Overrides the queue's backoff before the retry.
        retry_delay: Option<Duration>,
    },
}

impl Finish {
    pub(crate) fn into_proto(self) -> v1::FinishItem {
        let outcome = match self {
            Finish::Complete {
                job_id,
                lease_token,
                result,
            } => v1::finish_item::Outcome::Complete(v1::CompleteRequest {
                job_id,
                lease_token,
                result,
            }),
            Finish::Fail {
                job_id,
                lease_token,
                error,
                retryable,
                retry_delay,
            } => v1::finish_item::Outcome::Fail(v1::FailRequest {
                job_id,
                lease_token,
                error,
                retryable: Some(retryable),
                retry_delay_ms: retry_delay.map(millis),
            }),
        };
        v1::FinishItem {
            outcome: Some(outcome),
        }
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// `None` for 0, the wire's "not set".
fn positive_millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_kinds_round_trip_and_read_in_lower_case() {
        for state in JobState::ALL {
            assert_eq!(JobState::from_proto(state.to_proto() as i32), Some(state));
        }
        assert_eq!(JobState::from_proto(0), None, "UNSPECIFIED is no state");
        assert_eq!(JobState::from_proto(99), None);
        assert_eq!(JobState::Dead.to_string(), "dead");
        assert_eq!(
            JobEventKind::from_proto(v1::JobEventKind::RetryScheduled as i32).as_str(),
            "retry_scheduled"
        );
        assert_eq!(JobEventKind::from_proto(77), JobEventKind::Unknown(77));
    }

    #[test]
    fn a_new_job_leaves_unset_fields_to_the_server() {
        let request = NewJob::new("emails", "{}").into_proto();
        assert_eq!(
            (request.attempts_max, request.timeout_ms, request.schedule),
            (None, None, None)
        );
        assert_eq!(request.content_type, "");
        let request = NewJob {
            timeout: Some(Duration::from_secs(30)),
            schedule: Some(Schedule::Delay(Duration::from_millis(1_500))),
            ..NewJob::new("emails", "{}")
        }
        .into_proto();
        assert_eq!(request.timeout_ms, Some(30_000));
        assert_eq!(
            request.schedule,
            Some(v1::enqueue_request::Schedule::DelayMs(1_500))
        );
    }

    #[test]
    fn a_job_s_zero_values_mean_absent() {
        let job = JobInfo::from_proto(v1::Job {
            job_id: "7".into(),
            state: v1::JobState::Dead as i32,
            timeout_ms: 0,
            content_type: String::new(),
            ..v1::Job::default()
        })
        .unwrap();
        assert_eq!(
            (job.timeout, job.content_type, job.state),
            (None, None, JobState::Dead)
        );
        let unknown = JobInfo::from_proto(v1::Job {
            state: 0,
            ..v1::Job::default()
        });
        assert!(matches!(unknown, Err(Error::Protocol { .. })));
    }

    #[test]
    fn stage_durations_follow_the_attempt_records() {
        let attempt = |attempt, available_at_ms, claimed_at_ms, finished_at_ms, outcome| v1::JobAttempt {
            attempt,
            available_at_ms,
            claimed_at_ms,
            finished_at_ms,
            outcome: outcome as i32,
        };
        let job = JobInfo::from_proto(v1::Job {
            job_id: "7".into(),
            state: v1::JobState::Scheduled as i32,
            created_at_ms: 1_000,
            available_at_ms: Some(9_000),
            attempts: vec![
                attempt(1, 1_500, 1_600, Some(2_600), v1::AttemptOutcome::Failed),
                attempt(2, 4_600, 4_600, Some(5_000), v1::AttemptOutcome::LeaseExpired),
            ],
            ..v1::Job::default()
        })
        .unwrap();
        assert_eq!(job.initial_delay(), Some(Duration::from_millis(500)));
        assert_eq!(job.attempts[0].queue_wait(), Duration::from_millis(100));
        assert_eq!(job.attempts[0].run_time(), Some(Duration::from_secs(1)));
        assert_eq!(job.attempts[1].outcome, AttemptOutcome::LeaseExpired);
        assert_eq!(job.backoff_after(0), Some(Duration::from_secs(2)));
        // The next retry is scheduled: its backoff runs to available_at.
        assert_eq!(job.backoff_after(1), Some(Duration::from_secs(4)));
        assert_eq!(job.backoff_after(2), None);
        assert_eq!(job.total(), None, "not finished");
        let running = JobInfo {
            state: JobState::Running,
            available_at_ms: None,
            attempts: vec![JobAttempt {
                finished_at_ms: None,
                outcome: AttemptOutcome::Running,
                ..job.attempts[0]
            }],
            ..job.clone()
        };
        assert_eq!(running.attempts[0].run_time(), None);
        assert_eq!(running.backoff_after(0), None);
        let finished = JobInfo {
            state: JobState::Dead,
            finished_at_ms: Some(5_000),
            ..job.clone()
        };
        assert_eq!(finished.total(), Some(Duration::from_secs(4)));
        assert_eq!(finished.backoff_after(1), None, "no retry after the end");
        // When the first attempt's record is gone, the delay is unknown.
        let trimmed = JobInfo {
            attempts: job.attempts[1..].to_vec(),
            ..job
        };
        assert_eq!(trimmed.initial_delay(), None);
        assert_eq!(AttemptOutcome::from_proto(42), AttemptOutcome::Unknown(42));
    }
}
