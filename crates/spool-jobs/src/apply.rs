//! How events change jobs: [`JobsCore::apply`], the only place the job
//! table changes, and [`JobFromLog`], the same transitions folded over one
//! job's events as read back from the log.
//!
//! A job's fields change in one function, `transition`, whichever way the
//! event arrives: decided by the core, replayed at start, or read from the
//! log for a job that has left memory. So the job that `GetJob` rebuilds
//! from history is the job that was served.

use std::sync::Arc;

use crate::core::JobsCore;
use crate::event::Event;
use crate::indexes::{RATE_COMPLETED, RATE_ENQUEUED, RATE_FAILED};
use crate::job::{Attempt, AttemptError, AttemptOutcome, Attempts, ERRORS_KEPT_MAX, Job, JobState, Lease};

impl JobsCore {
    /// Applies one event to the state. The only place state changes; what
    /// replay calls.
    pub fn apply(&mut self, event: &Event) {
        self.apply_event(event, false);
    }

    /// Applies one event and, with `count`, counts it in its queue's
    /// statistics (`activity.rs`): the core counts the events it decides,
    /// replay does not. Counting here reuses the job and queue the change
    /// looks up anyway.
    pub(crate) fn apply_event(&mut self, event: &Event, count: bool) {
        if let Event::Enqueued {
            id,
            at_ms,
            queue,
            idempotency_key,
            dedup_until_ms,
            ..
        } = event
        {
            let queue: Arc<str> = match self.indexes.queues.get_key_value(queue.as_str()) {
                Some((name, _)) => Arc::clone(name),
                None => Arc::from(queue.as_str()),
            };
            let job = enqueued(event, Arc::clone(&queue)).expect("an Enqueued event");
            if let Some(old) = self.jobs.remove(id) {
                self.indexes.remove(&old);
                self.search.remove(&old);
            }
            self.search.add(&job);
            let counted = self.indexes.insert(&job);
            counted.rates.add(*at_ms, RATE_ENQUEUED);
            if count {
                counted.activity.record(event, &job);
            }
            if let (Some(key), Some(until)) = (idempotency_key, dedup_until_ms) {
                self.keys.insert((Arc::clone(&queue), key.clone()), (*id, *until));
                self.key_expiry.insert((*until, queue, key.clone()));
            }
            self.jobs.insert(*id, job);
            self.last_id = self.last_id.max(*id);
            return;
        }
        if let Event::QueuePaused { queue, paused, .. } = event {
            let name: Arc<str> = match self.indexes.queues.get_key_value(queue.as_str()) {
                Some((name, _)) => Arc::clone(name),
                None => Arc::from(queue.as_str()),
            };
            self.indexes.queue(&name).paused = *paused;
            return;
        }
        let id = event.id();
        let Some(job) = self.jobs.get_mut(&id) else {
            tracing::debug!(id, kind = event.kind(), "event for a job no longer in memory");
            return;
        };
        self.indexes.remove(job);
        transition(job, event);
        if let Event::Purged { .. } = event {
            if let Some(job) = self.jobs.remove(&id) {
                self.search.remove(&job);
            }
            return;
        }
        if let Event::Failed { .. } = event {
            self.search.failed(id);
        }
        let queue = self.indexes.insert(job);
        let at = event.at_ms();
        match event {
            Event::Completed { .. } => queue.rates.add(at, RATE_COMPLETED),
            Event::Failed { .. } => queue.rates.add(at, RATE_FAILED),
            _ => {}
        }
        if count {
            queue.activity.record(event, job);
        }
    }
}

/// A job rebuilt from its own events as read back from the log, for a job
/// that has left memory: the events go through the same transitions as in
/// the table, so the job is the one that was served when it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFromLog {
    pub job: Job,
    /// When the job was purged (it was dead), if it was.
    pub purged_at_ms: Option<i64>,
}

impl JobFromLog {
    /// Starts from the job's `Enqueued` event; `None` for any other event.
    pub fn enqueued(event: &Event) -> Option<JobFromLog> {
        let Event::Enqueued { queue, .. } = event else {
            return None;
        };
        Some(JobFromLog {
            job: enqueued(event, Arc::from(queue.as_str()))?,
            purged_at_ms: None,
        })
    }

    /// Applies the job's next event, in log order.
    pub fn apply(&mut self, event: &Event) {
        debug_assert_eq!(event.id(), self.job.id);
        if let Event::Purged { at_ms, .. } = event {
            self.purged_at_ms = Some(*at_ms);
        }
        transition(&mut self.job, event);
    }
}

/// The job an `Enqueued` event creates, in `queue`; `None` for any other
/// event.
fn enqueued(event: &Event, queue: Arc<str>) -> Option<Job> {
    let Event::Enqueued {
        id,
        at_ms,
        payload,
        content_type,
        headers,
        priority,
        attempts_max,
        timeout_ms,
        run_at_ms,
        idempotency_key,
        ..
    } = event
    else {
        return None;
    };
    Some(Job {
        id: *id,
        queue,
        state: if *run_at_ms > *at_ms {
            JobState::Scheduled
        } else {
            JobState::Available
        },
        payload: payload.clone(),
        content_type: content_type.clone(),
        headers: headers.clone(),
        priority: *priority,
        attempt: 0,
        attempts_max: *attempts_max,
        attempts_forgiven: 0,
        timeout_ms: *timeout_ms,
        idempotency_key: idempotency_key.clone(),
        created_ms: *at_ms,
        run_at_ms: *run_at_ms,
        started_ms: None,
        finished_ms: None,
        errors: Vec::new(),
        attempts: Attempts::default(),
        result: None,
        progress: None,
        cancel_requested: false,
        lease: None,
        completed_token: None,
    })
}

/// Changes `job` as `event` (any event but `Enqueued`) says. A purge
/// leaves the job as it was: removing it is the table's business.
fn transition(job: &mut Job, event: &Event) {
    let at = event.at_ms();
    match event {
        Event::Enqueued { .. } | Event::Purged { .. } | Event::QueuePaused { .. } => {}
        Event::Claimed {
            attempt,
            token,
            lease_until_ms,
            worker,
            ..
        } => {
            job.attempts.push(Attempt {
                attempt: *attempt,
                // A job is claimed only once available, so its not-before
                // time has passed; the bound guards the arithmetic of
                // stage durations against a clock that stepped back.
                available_at_ms: job.run_at_ms.min(at),
                claimed_at_ms: at,
                finished_at_ms: None,
                outcome: AttemptOutcome::Running,
            });
            job.state = JobState::Running;
            job.attempt = *attempt;
            job.started_ms = Some(at);
            job.progress = None;
            job.lease = Some(Lease {
                token: *token,
                until_ms: *lease_until_ms,
                lease_ms: lease_until_ms.saturating_sub(at).max(0) as u64,
                worker: worker.clone(),
            });
        }
        Event::LeaseExtended {
            lease_until_ms,
            progress,
            ..
        } => {
            if let Some(lease) = job.lease.as_mut() {
                lease.until_ms = *lease_until_ms;
            }
            if progress.is_some() {
                job.progress.clone_from(progress);
            }
        }
        Event::Completed { result, .. } => {
            finish_attempt(job, at, AttemptOutcome::Succeeded);
            job.state = JobState::Succeeded;
            job.finished_ms = Some(at);
            job.result = Some(result.clone());
            job.completed_token = job.lease.take().map(|l| l.token);
        }
        Event::Failed {
            attempt,
            error,
            retry_at_ms,
            lease_expired,
            ..
        } => {
            let outcome = if *lease_expired {
                AttemptOutcome::LeaseExpired
            } else {
                AttemptOutcome::Failed
            };
            finish_attempt(job, at, outcome);
            if job.errors.len() >= ERRORS_KEPT_MAX {
                job.errors.remove(0);
            }
            job.errors.push(AttemptError {
                attempt: *attempt,
                error: error.clone(),
                failed_at_ms: at,
            });
            job.lease = None;
            match retry_at_ms {
                // A retry without delay (a lost worker's job, or a Fail
                // asking for none) is available at once.
                Some(retry_at) if *retry_at <= at => {
                    job.state = JobState::Available;
                    job.run_at_ms = *retry_at;
                }
                Some(retry_at) => {
                    job.state = JobState::Scheduled;
                    job.run_at_ms = *retry_at;
                }
                None => {
                    job.state = JobState::Dead;
                    job.finished_ms = Some(at);
                }
            }
        }
        Event::Released { .. } => {
            finish_attempt(job, at, AttemptOutcome::Released);
            job.lease = None;
            job.state = JobState::Available;
            job.run_at_ms = at;
            job.attempts_forgiven += 1;
        }
        Event::CancelRequested { .. } => job.cancel_requested = true,
        Event::Cancelled { .. } => {
            finish_attempt(job, at, AttemptOutcome::Cancelled);
            job.state = JobState::Cancelled;
            job.lease = None;
            job.finished_ms = Some(at);
        }
        Event::Redriven { .. } => {
            job.state = JobState::Available;
            job.run_at_ms = at;
            job.finished_ms = None;
            job.attempts_forgiven = job.attempt;
            job.cancel_requested = false;
        }
    }
}

/// Ends the job's running attempt, if one runs, at `at` with `outcome`.
fn finish_attempt(job: &mut Job, at: i64, outcome: AttemptOutcome) {
    if let Some(last) = job.attempts.latest_mut()
        && last.outcome == AttemptOutcome::Running
    {
        last.finished_at_ms = Some(at.max(last.claimed_at_ms));
        last.outcome = outcome;
    }
}
