//! A job and what a client asks for when it enqueues one.

use std::sync::Arc;

use bytes::Bytes;

/// Jobs are numbered by the server: the enqueue time in milliseconds in the
/// upper bits and a sequence below, so ids sort by age and the enqueue time
/// of any id, even one no longer in memory, is known.
pub type JobId = u64;

const SEQUENCE_BITS: u32 = 16;

/// The millisecond at which `id` was assigned.
pub fn id_time_ms(id: JobId) -> i64 {
    (id >> SEQUENCE_BITS) as i64
}

/// The first id of millisecond `ms`.
pub fn first_id_at(ms: i64) -> JobId {
    (ms.max(0) as u64) << SEQUENCE_BITS
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Waiting for its not-before time: delayed, or backing off before a
    /// retry.
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Claimed by a worker that holds a lease.
    Running,
    Succeeded,
    /// Out of attempts, or failed as non-retryable. Can be re-driven.
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Succeeded, dead or cancelled: no worker will run it again unless
    /// a dead job is re-driven.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead | JobState::Cancelled)
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// What an enqueue asks for. Times are the server's: a delay is turned
/// into a not-before time once, on arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub queue: String,
    pub payload: Bytes,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    /// Higher runs first.
    pub priority: i32,
    /// Total tries, the first included. `None` takes the queue default.
    pub attempts_max: Option<u32>,
    /// Longest a single attempt may run. `None` takes the queue default.
    pub timeout_ms: Option<u64>,
    pub schedule: Schedule,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Now,
    DelayMs(u64),
    NotBeforeMs(i64),
}

/// An attempt that failed, kept with the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub attempt: u32,
    pub error: String,
    pub failed_at_ms: i64,
}

/// The lease a running job is held under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: u64,
    pub until_ms: i64,
    /// The lease length the claim was given; heartbeats that ask for no
    /// particular extension extend by this much.
    pub lease_ms: u64,
    pub worker: String,
}

/// Errors kept per job: the most recent ones (a job re-driven many times
/// would otherwise grow without bound). History keeps them all.
pub const ERRORS_KEPT_MAX: usize = 20;

/// Attempt records kept per job, the most recent ones, by the same reasoning
/// and bound as errors: at most 20 records of 40 bytes (800 bytes) for a
/// job retried that often, one record for most jobs. History has them all.
pub const ATTEMPTS_KEPT_MAX: usize = ERRORS_KEPT_MAX;

/// The attempt records of a job, oldest first, at most
/// [`ATTEMPTS_KEPT_MAX`]. The latest is held inline and only earlier ones
/// in a boxed vector: most jobs run once, and their stage times must not
/// cost an allocation at each claim and each copy of the job (a plain
/// vector did, measurably: `docs/performance.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Boxed, so a job that never retried pays one word for it: the job
    /// table moves jobs around, and every byte of a job is copied (a
    /// boxed slice is two words, and measurably slower for it).
    #[allow(clippy::box_collection)]
    earlier: Option<Box<Vec<Attempt>>>,
    latest: Option<Attempt>,
}

impl Attempts {
    /// Adds a new latest attempt, forgetting the oldest beyond the bound.
    pub fn push(&mut self, attempt: Attempt) {
        if let Some(previous) = self.latest.replace(attempt) {
            let earlier = self.earlier.get_or_insert_with(Box::default);
            if earlier.len() + 1 >= ATTEMPTS_KEPT_MAX {
                earlier.remove(0);
            }
            earlier.push(previous);
        }
    }

    pub fn latest(&self) -> Option<&Attempt> {
        self.latest.as_ref()
    }

    pub fn latest_mut(&mut self) -> Option<&mut Attempt> {
        self.latest.as_mut()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Attempt> {
        self.earlier
            .iter()
            .flat_map(|earlier| earlier.iter())
            .chain(self.latest.as_ref())
    }

    pub fn len(&self) -> usize {
        self.earlier.as_ref().map_or(0, |earlier| earlier.len()) + usize::from(self.latest.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_none()
    }

    pub fn to_vec(&self) -> Vec<Attempt> {
        self.iter().copied().collect()
    }
}

impl FromIterator<Attempt> for Attempts {
    fn from_iter<I: IntoIterator<Item = Attempt>>(iter: I) -> Self {
        let mut attempts = Attempts::default();
        for attempt in iter {
            attempts.push(attempt);
        }
        attempts
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// Not ended: the worker holds the lease.
    Running,
    /// The worker completed the job.
    Succeeded,
    /// The worker reported a failure.
    Failed,
    /// The lease ran out (the worker stopped heartbeating) or the attempt
    /// reached its timeout.
    LeaseExpired,
    /// The worker gave the job back unrun (shutting down); the attempt does
    /// not count against `attempts_max`.
    Released,
    /// The job was cancelled while this attempt ran.
    Cancelled,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 6] = [
        AttemptOutcome::Running,
        AttemptOutcome::Succeeded,
        AttemptOutcome::Failed,
        AttemptOutcome::LeaseExpired,
        AttemptOutcome::Released,
        AttemptOutcome::Cancelled,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::LeaseExpired => "lease_expired",
            AttemptOutcome::Released => "released",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

/// The stage times of one attempt: when the job became available for it,
/// when a worker claimed it and when it ended. Queue wait is
/// `claimed_at_ms - available_at_ms`, run time `finished_at_ms -
/// claimed_at_ms`; the backoff before the next attempt is that attempt's
/// `available_at_ms` minus this one's `finished_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u32,
    /// When the job became available for this attempt: its enqueue (or
    /// not-before time), the end of a retry's backoff, a release or a
    /// re-drive.
    pub available_at_ms: i64,
    pub claimed_at_ms: i64,
    /// `None` while the attempt runs.
    pub finished_at_ms: Option<i64>,
    pub outcome: AttemptOutcome,
}

/// A job as the server holds it in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub queue: Arc<str>,
    pub state: JobState,
    pub payload: Bytes,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub priority: i32,
    /// Number of the latest attempt (0 before the first claim).
    pub attempt: u32,
    pub attempts_max: u32,
    /// Attempts that do not count against `attempts_max`: releases at worker
    /// shutdown, and all attempts before a re-drive.
    pub attempts_forgiven: u32,
    /// Longest one attempt may run; 0 for no limit beyond the lease.
    pub timeout_ms: u64,
    pub idempotency_key: Option<String>,
    pub created_ms: i64,
    /// When it may next run (its not-before time while scheduled).
    pub run_at_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub errors: Vec<AttemptError>,
    /// Stage times of the most recent attempts, oldest first, at most
    /// `ATTEMPTS_KEPT_MAX`.
    pub attempts: Attempts,
    pub result: Option<Bytes>,
    pub progress: Option<String>,
    pub cancel_requested: bool,
    pub lease: Option<Lease>,
    /// The token of the attempt that completed, so a repeated Complete with
    /// it is answered OK.
    pub completed_token: Option<u64>,
}

impl Job {
    /// Attempts that count against `attempts_max` so far.
    pub fn attempts_used(&self) -> u32 {
        self.attempt.saturating_sub(self.attempts_forgiven)
    }

    pub fn has_attempts_left(&self) -> bool {
        self.attempts_used() < self.attempts_max
    }

    pub fn last_error(&self) -> Option<&str> {
        self.errors.last().map(|e| e.error.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_time() {
        let id = first_id_at(1_700_000_000_123) + 5;
        assert_eq!(id_time_ms(id), 1_700_000_000_123);
        assert!(first_id_at(2) > first_id_at(1) + 65_000);
    }
}
