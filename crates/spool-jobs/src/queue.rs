//! Queues: the rule for their names, and what the job table keeps for each
//! known queue.
//!
//! A queue is **known** from the first job ever enqueued to it, and stays
//! known after all its jobs have left memory and across restarts (the
//! snapshot lists every known queue; replaying the log finds them in the
//! enqueue events). Reads that name a queue (stats, listings, bulk
//! re-drives and purges) answer `UnknownQueue` for any other name; a claim
//! waits on an unknown queue as on an empty one, so workers may start
//! before producers. A known queue can be paused: its jobs stay available
//! but claims hand out none of them until it is resumed; the pause is an
//! event in the log and in the snapshot, so it survives restarts.
//!
//! Each known queue has a [`QueueConfig`]: its own defaults for attempts,
//! retry backoff, lease, timeout and retention (a job's own attempts and
//! timeout, and a claim's own lease, still win), and two limits the server
//! enforces at claim, whichever worker asks: at most `concurrency_limit`
//! of its jobs running at once, and at most `rate_limit.jobs` claimed in
//! any `rate_limit.per_ms` window. A job held back by a limit stays
//! available and a claim for it long-polls like a claim on an empty queue.
//! The configuration is an event (`QueueConfigured`, carrying the whole
//! resulting configuration) and is in the snapshot.
//!
//! A queue is deleted with `DeleteQueue`: its jobs are purged (one
//! `Purged` event each, so every job's history ends saying so), then a
//! `QueueDeleted` event forgets the queue, its configuration and its
//! pause.

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};

use spool_log::names::TOPIC_NAME_BYTES_MAX;
use spool_log::{is_internal_topic, validate_topic_name};

use crate::activity::QueueActivity;
use crate::config::JobsConfig;
use crate::indexes::Rates;
use crate::job::JobId;
use crate::request::{JobError, invalid};

/// The one rule for queue names, which is the rule for topic names a
/// client may use: 1 to 249 bytes of `A-Z a-z 0-9 . _ -`, not `.` or `..`,
/// and not starting with `__` (names the server keeps for itself).
/// `field` names the request field in the error.
pub fn validate_queue_name(field: &'static str, name: &str) -> Result<(), JobError> {
    let reason = match validate_topic_name(name) {
        Err(spool_log::Error::InvalidTopicName { reason, .. }) => reason,
        Err(_) => "it is not a valid name",
        Ok(()) if is_internal_topic(name) => {
            "it starts with \"__\", which is reserved for the server's own names"
        }
        Ok(()) => return Ok(()),
    };
    let shown: String = name.chars().take(TOPIC_NAME_BYTES_MAX + 8).collect();
    Err(JobError::Invalid {
        field,
        reason: format!(
            "queue name {shown:?} is refused: {reason} (a queue name follows the rule of topic names: \
             1 to 249 bytes of A-Z a-z 0-9 . _ -, not \".\" or \"..\", not starting with \"__\")"
        ),
    })
}

/// Retry delays of a queue: the first retry waits `min_ms`, each next
/// one twice as long, never more than `max_ms`; the last fifth of each
/// delay is random, so retries of jobs that failed together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// Delay after attempt `attempt` (1 for the first) failed; `random` is
    /// any uniformly random `u64`.
    pub fn delay_ms(&self, attempt: u32, random: u64) -> u64 {
        let doublings = attempt.saturating_sub(1).min(63);
        let full = self
            .min_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms)
            .max(self.min_ms);
        let spread = full / 5;
        let delay = full - spread + random % (spread + 1);
        delay.max(self.min_ms)
    }
}

/// At most `jobs` claims of a queue's jobs in any window of `per_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub jobs: u32,
    pub per_ms: u64,
}

/// Most jobs a rate limit may allow per window: the window keeps the time
/// of each claim in it.
pub const RATE_LIMIT_JOBS_MAX: u32 = 1_000_000;
/// Longest window of a rate limit.
pub const RATE_LIMIT_WINDOW_MS_MAX: u64 = 24 * 3_600_000;
/// Longest history retention a queue may set (ten years).
pub const QUEUE_RETENTION_MS_MAX: u64 = 10 * 365 * 24 * 3_600_000;

/// One queue's settings; `None` keeps the server's default (see the module
/// documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueConfig {
    pub attempts_max: Option<u32>,
    pub backoff: Option<Backoff>,
    pub lease_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub finished_retention_ms: Option<u64>,
    pub dead_retention_ms: Option<u64>,
    pub concurrency_limit: Option<u32>,
    pub rate_limit: Option<RateLimit>,
}

/// A change to a queue's configuration: for each setting, `None` leaves it
/// as it is, `Some(None)` returns it to the server's default and
/// `Some(Some(v))` sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueConfigChange {
    pub attempts_max: Option<Option<u32>>,
    pub backoff: Option<Option<Backoff>>,
    pub lease_ms: Option<Option<u64>>,
    pub timeout_ms: Option<Option<u64>>,
    pub finished_retention_ms: Option<Option<u64>>,
    pub dead_retention_ms: Option<Option<u64>>,
    pub concurrency_limit: Option<Option<u32>>,
    pub rate_limit: Option<Option<RateLimit>>,
}

impl QueueConfig {
    /// This configuration with `change` made.
    pub fn changed(&self, change: &QueueConfigChange) -> QueueConfig {
        fn pick<T: Copy>(old: Option<T>, new: Option<Option<T>>) -> Option<T> {
            new.unwrap_or(old)
        }
        QueueConfig {
            attempts_max: pick(self.attempts_max, change.attempts_max),
            backoff: pick(self.backoff, change.backoff),
            lease_ms: pick(self.lease_ms, change.lease_ms),
            timeout_ms: pick(self.timeout_ms, change.timeout_ms),
            finished_retention_ms: pick(self.finished_retention_ms, change.finished_retention_ms),
            dead_retention_ms: pick(self.dead_retention_ms, change.dead_retention_ms),
            concurrency_limit: pick(self.concurrency_limit, change.concurrency_limit),
            rate_limit: pick(self.rate_limit, change.rate_limit),
        }
    }

    /// Checks every setting against the server's limits; the error names
    /// the request field.
    pub fn validate(&self, limits: &JobsConfig) -> Result<(), JobError> {
        fn within(field: &'static str, value: u64, low: u64, high: u64, unit: &str) -> Result<(), JobError> {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("{value}{unit} is outside {low}..={high}{unit}"),
                ))
            }
        }
        if let Some(attempts) = self.attempts_max {
            within(
                "config.attempts_max",
                u64::from(attempts),
                1,
                u64::from(limits.attempts_max_limit),
                "",
            )?;
        }
        if let Some(backoff) = self.backoff {
            within(
                "config.backoff.min_ms",
                backoff.min_ms,
                1,
                limits.delay_ms_max,
                " ms",
            )?;
            within(
                "config.backoff.max_ms",
                backoff.max_ms,
                backoff.min_ms,
                limits.delay_ms_max,
                " ms",
            )?;
        }
        if let Some(lease) = self.lease_ms {
            within("config.lease_ms", lease, 1, limits.lease_ms_max, " ms")?;
        }
        if let Some(timeout) = self.timeout_ms {
            within("config.timeout_ms", timeout, 1, limits.timeout_ms_max, " ms")?;
        }
        if let Some(retention) = self.finished_retention_ms {
            within(
                "config.finished_retention_ms",
                retention,
                0,
                QUEUE_RETENTION_MS_MAX,
                " ms",
            )?;
        }
        if let Some(retention) = self.dead_retention_ms {
            within(
                "config.dead_retention_ms",
                retention,
                0,
                QUEUE_RETENTION_MS_MAX,
                " ms",
            )?;
        }
        if let Some(limit) = self.concurrency_limit {
            within(
                "config.concurrency_limit",
                u64::from(limit),
                1,
                u64::from(u32::MAX),
                "",
            )?;
        }
        if let Some(rate) = self.rate_limit {
            within(
                "config.rate_limit.jobs",
                u64::from(rate.jobs),
                1,
                u64::from(RATE_LIMIT_JOBS_MAX),
                "",
            )?;
            within(
                "config.rate_limit.per_ms",
                rate.per_ms,
                1,
                RATE_LIMIT_WINDOW_MS_MAX,
                " ms",
            )?;
        }
        Ok(())
    }

    /// True when no setting differs from the server's defaults.
    pub fn is_default(&self) -> bool {
        *self == QueueConfig::default()
    }
}

/// What the table keeps for one known queue.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Paused: claims hand out none of its jobs (they stay available).
    pub(crate) paused: bool,
    pub(crate) config: QueueConfig,
    /// With a rate limit: the times of the claims in the current window,
    /// oldest first (at most `rate_limit.jobs` of them).
    pub(crate) claims_in_window: VecDeque<i64>,
    /// Available jobs, highest priority first, then oldest.
    pub(crate) ready: BTreeSet<(Reverse<i32>, JobId)>,
    /// Jobs in memory per state, indexed by `JobState::index`.
    pub(crate) counts: [u64; 6],
    pub(crate) rates: Rates,
    /// Succeeded and cancelled jobs of this queue that left memory before
    /// their retention time because `finished_in_memory_max` was reached,
    /// since the table was built.
    pub(crate) finished_evicted_early: u64,
    /// Totals, latency distributions and claimers, since the table was
    /// built.
    pub(crate) activity: QueueActivity,
}

impl Queue {
    /// How many more of its jobs a claim at `now_ms` may take: the least of
    /// what the concurrency and rate limits leave; `u64::MAX` with neither,
    /// 0 while paused.
    pub(crate) fn claimable(&mut self, now_ms: i64) -> u64 {
        if self.paused {
            return 0;
        }
        let mut room = u64::MAX;
        if let Some(limit) = self.config.concurrency_limit {
            let running = self.counts[crate::job::JobState::Running.index()];
            room = room.min(u64::from(limit).saturating_sub(running));
        }
        if let Some(rate) = self.config.rate_limit {
            let window_start = now_ms.saturating_sub(rate.per_ms as i64);
            while self
                .claims_in_window
                .front()
                .is_some_and(|&at| at <= window_start)
            {
                self.claims_in_window.pop_front();
            }
            room = room.min(u64::from(rate.jobs).saturating_sub(self.claims_in_window.len() as u64));
        }
        room
    }

    /// When a rate-limited queue whose window is full may hand out a job
    /// again; `None` when no rate limit holds it back.
    pub(crate) fn rate_opens_at(&self) -> Option<i64> {
        let rate = self.config.rate_limit?;
        if (self.claims_in_window.len() as u64) < u64::from(rate.jobs) {
            return None;
        }
        let oldest = *self.claims_in_window.front()?;
        Some(oldest.saturating_add(rate.per_ms as i64))
    }

    /// Counts a claim at `at_ms` in the rate window, if the queue has a
    /// rate limit.
    pub(crate) fn count_claim(&mut self, at_ms: i64) {
        if let Some(rate) = self.config.rate_limit {
            self.claims_in_window.push_back(at_ms);
            while self.claims_in_window.len() > rate.jobs as usize {
                self.claims_in_window.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_client_topic_rule() {
        for name in ["emails", "a", "A.b_c-9", "_one", &"x".repeat(249)] {
            validate_queue_name("queue", name).unwrap();
        }
        for name in ["", ".", "..", "a/b", "ümlaut", "__jobs", "__x", &"x".repeat(250)] {
            let error = validate_queue_name("queues", name).unwrap_err();
            let JobError::Invalid { field, reason } = &error else {
                panic!("{error:?}");
            };
            assert_eq!(*field, "queues");
            assert!(reason.contains("rule of topic names"), "{reason}");
        }
        let error = validate_queue_name("queue", "__jobs").unwrap_err().to_string();
        assert!(error.contains("starts with \"__\""), "{error}");
    }
}
