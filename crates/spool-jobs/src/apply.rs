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
use crate::job::{
    Attempt, AttemptError, AttemptOutcome, Attempts, ERRORS_KEPT_MAX, Job, JobId, JobState, Lease,
};
use crate::queue::QueueConfig;

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
        match event {
            Event::QueuePaused { queue, paused, .. } => {
                let name = self.queue_name(queue);
                self.indexes.queue(&name).paused = *paused;
                return;
            }
            Event::QueueConfigured { queue, config, at_ms } => {
                let name = self.queue_name(queue);
                self.drop_finished_due(&name, *at_ms);
                self.configure_queue(&name, config.clone());
                return;
            }
            Event::QueueDeleted { queue, .. } => {
                self.forget_queue(queue);
                return;
            }
            _ => {}
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
            Event::Claimed { .. } => queue.count_claim(at),
            _ => {}
        }
        if count {
            queue.activity.record(event, job);
        }
    }
}

impl JobsCore {
    /// The table's shared name for `queue`, or a new one.
    fn queue_name(&self, queue: &str) -> Arc<str> {
        match self.indexes.queues.get_key_value(queue) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(queue),
        }
    }

    /// Gives a queue (known from now on) a new configuration. Its finished
    /// jobs are ordered by when they leave memory, which its retention
    /// decides: they are taken out of that order under the old retention
    /// and put back under the new one.
    pub(crate) fn configure_queue(&mut self, name: &Arc<str>, config: QueueConfig) {
        let finished: Vec<JobId> = self
            .jobs
            .values()
            .filter(|job| job.queue == *name && job.state.is_finished())
            .map(|job| job.id)
            .collect();
        for id in &finished {
            self.indexes.remove(&self.jobs[id]);
        }
        let queue = self.indexes.queue(name);
        if config.rate_limit != queue.config.rate_limit {
            queue.claims_in_window.clear();
        }
        queue.config = config;
        for id in &finished {
            self.indexes.insert(&self.jobs[id]);
        }
    }

    /// Drops the queue's succeeded and cancelled jobs due to leave memory
    /// by `at_ms` under its current retention. A retention change re-times
    /// the rest, so those already due leave first, the same way whether
    /// the change is being decided (where a tick may not have run since
    /// they fell due) or replayed (where no tick runs between events).
    fn drop_finished_due(&mut self, queue: &str, at_ms: i64) {
        let due: Vec<JobId> = self
            .indexes
            .finished
            .iter()
            .take_while(|(leave_at, _)| *leave_at <= at_ms)
            .map(|&(_, id)| id)
            .filter(|id| {
                let job = &self.jobs[id];
                *job.queue == *queue && job.state != JobState::Dead
            })
            .collect();
        for id in due {
            if let Some(job) = self.jobs.remove(&id) {
                self.indexes.remove(&job);
                self.search.remove(&job);
            }
        }
    }

    /// Forgets a deleted queue: its entry, its idempotency keys and any job
    /// of it still in the table (none, when the purges before the
    /// deletion were applied).
    fn forget_queue(&mut self, queue: &str) {
        let left: Vec<JobId> = self
            .jobs
            .values()
            .filter(|job| *job.queue == *queue)
            .map(|job| job.id)
            .collect();
        for id in left {
            if let Some(job) = self.jobs.remove(&id) {
                self.indexes.remove(&job);
                self.search.remove(&job);
            }
        }
        self.indexes.queues.remove(queue);
        self.keys.retain(|(name, _), _| **name != *queue);
        self.key_expiry.retain(|(_, name, _)| **name != *queue);
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
        Event::Enqueued { .. }
        | Event::Purged { .. }
        | Event::QueuePaused { .. }
        | Event::QueueConfigured { .. }
        | Event::QueueDeleted { .. } => {}
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
