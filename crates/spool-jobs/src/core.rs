//! The job layer's state machine. Pure: it is given requests and the time,
//! and answers with events to append and replies to send. It never reads a
//! clock, sleeps or does I/O, so retries, leases, fencing and retention are
//! tested by passing times in.
//!
//! Every state change goes through [`JobsCore::apply`] (in `apply.rs`),
//! both when a request is decided and when the log is replayed at start, so
//! the state rebuilt from the log is the state that was served.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::activity::{QueueMetrics, worker_key};
use crate::config::JobsConfig;
use crate::event::{Event, PurgeReason};
pub use crate::indexes::RATE_WINDOW_MS;
use crate::indexes::{Indexes, RATE_COMPLETED, RATE_ENQUEUED, RATE_FAILED};
use crate::job::{Job, JobId, JobSpec, JobState, Schedule, first_id_at, id_time_ms};
use crate::queue::{Queue, QueueConfig, validate_queue_name};
use crate::request::invalid;
pub use crate::request::{
    ClaimSpec, ClaimedJob, DeadFilter, EnqueueResult, JobError, Reply, Request, RequestId, Step, Target,
};
use crate::search::{SearchHits, SearchIndex, SearchQuery, fingerprint};

/// Longest error text kept per attempt.
pub const ERROR_BYTES_MAX: usize = 4096;
const QUEUES_PER_CLAIM_MAX: usize = 32;
/// Most jobs in one enqueue request.
pub const ENQUEUE_BATCH_MAX: usize = 10_000;
const PROGRESS_BYTES_MAX: usize = 1024;
/// Most dead jobs one RetryDead or PurgeDead by filter acts on: a call's
/// events are one append, so a call is kept bounded.
pub const DEAD_JOBS_PER_CALL_MAX: usize = 1_000;

#[derive(Debug)]
struct Parked {
    request: RequestId,
    spec: ClaimSpec,
    deadline_ms: i64,
}

/// How often quiet queues give back the memory of their latency buckets
/// and forget claimers (see `JobsCore::tick`).
const ACTIVITY_SWEEP_INTERVAL_MS: i64 = 60_000;

/// Counts, rates and latencies of one queue: its [`QueueMetrics`], plus
/// rates over the last minute and how finished jobs leave memory.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    /// Jobs by state, the oldest available job, totals, leases, workers
    /// and latency percentiles.
    pub metrics: QueueMetrics,
    pub enqueued_per_second: f64,
    pub completed_per_second: f64,
    pub failed_per_second: f64,
    /// Claims hand out none of the queue's jobs while it is paused.
    pub paused: bool,
    /// Succeeded and cancelled jobs of every queue in memory now, which
    /// `finished_in_memory_max` bounds.
    pub finished_in_memory: u64,
    /// Succeeded and cancelled jobs of this queue that left memory before
    /// their retention time because that cap was reached, since the table
    /// was built (the server's start).
    pub finished_evicted_early: u64,
    /// Claims of its jobs in the current rate-limit window (0 without a
    /// rate limit).
    pub rate_window_claims: u64,
}

/// One known queue in a listing: its jobs by state and its oldest
/// available job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    pub queue: String,
    /// Jobs of the queue in memory per state, indexed by `JobState::index`.
    pub counts: [u64; 6],
    pub oldest_available_age_ms: Option<u64>,
    pub paused: bool,
    /// Its own settings and limits.
    pub config: QueueConfig,
}

/// See the module documentation.
#[derive(Debug)]
pub struct JobsCore {
    pub(crate) config: JobsConfig,
    pub(crate) jobs: BTreeMap<JobId, Job>,
    pub(crate) indexes: Indexes,
    /// (queue, key) -> (job, end of the dedup window).
    pub(crate) keys: HashMap<(Arc<str>, String), (JobId, i64)>,
    pub(crate) key_expiry: BTreeSet<(i64, Arc<str>, String)>,
    parked: VecDeque<Parked>,
    pub(crate) last_id: JobId,
    /// Keys, headers, payload words and failed jobs, for [`JobsCore::search`].
    pub(crate) search: SearchIndex,
    rng: u64,
    /// When the last sweep of quiet queues' activity ran.
    activity_swept_ms: i64,
}

impl JobsCore {
    /// An empty job table; `seed` seeds lease tokens and retry jitter.
    pub fn new(config: JobsConfig, seed: u64) -> Self {
        JobsCore {
            indexes: Indexes::new(config.finished_retention_ms, config.dead_retention_ms),
            config,
            jobs: BTreeMap::new(),
            keys: HashMap::new(),
            key_expiry: BTreeSet::new(),
            parked: VecDeque::new(),
            last_id: 0,
            search: SearchIndex::default(),
            rng: seed | 1,
            activity_swept_ms: i64::MIN,
        }
    }

    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: lease tokens need to be unguessable by accident,
        // not cryptographically; a forged token is refused either way
        // unless it hits the one live token of that job.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn next_id(&mut self, now_ms: i64) -> JobId {
        let id = (self.last_id + 1).max(first_id_at(now_ms));
        self.last_id = id;
        id
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Every job in memory, of every queue, in id order.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Jobs in memory matching `query`, newest first (see `search.rs`).
    pub fn search(&self, query: &SearchQuery) -> SearchHits<'_> {
        self.search.search(&self.jobs, query)
    }

    /// True once a job was ever enqueued to `queue` (see `queue.rs`).
    pub fn queue_known(&self, queue: &str) -> bool {
        self.indexes.queues.contains_key(queue)
    }

    /// Every known queue, in no particular order.
    pub fn queues(&self) -> impl Iterator<Item = &str> {
        self.indexes.queues.keys().map(|name| &**name)
    }

    /// Checks that `queue` is a valid name of a known queue.
    fn known_queue(&self, field: &'static str, queue: &str) -> Result<(), JobError> {
        validate_queue_name(field, queue)?;
        if !self.queue_known(queue) {
            return Err(JobError::UnknownQueue {
                queue: queue.to_owned(),
            });
        }
        Ok(())
    }

    /// Jobs of `queue` held in memory, in `state` (any if `None`), with ids
    /// above `after`, oldest first. Jobs that left memory are not listed.
    pub fn list(
        &self,
        queue: &str,
        state: Option<JobState>,
        after: JobId,
        limit: usize,
    ) -> Result<Vec<&Job>, JobError> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.known_queue("queue", queue)?;
        Ok(self
            .jobs
            .range((Excluded(after), Unbounded))
            .map(|(_, job)| job)
            .filter(|job| &*job.queue == queue && state.is_none_or(|s| job.state == s))
            .take(limit)
            .collect())
    }

    pub fn stats(&self, queue: &str, now_ms: i64) -> Result<QueueStats, JobError> {
        self.known_queue("queue", queue)?;
        let (name, q) = self.indexes.queues.get_key_value(queue).expect("a known queue");
        let mut workers = self.connected_workers(now_ms, Some(queue));
        let metrics = self.queue_metrics(name, q, now_ms, workers.remove(queue).unwrap_or_default());
        Ok(QueueStats {
            metrics,
            enqueued_per_second: q.rates.per_second(now_ms, RATE_ENQUEUED),
            completed_per_second: q.rates.per_second(now_ms, RATE_COMPLETED),
            failed_per_second: q.rates.per_second(now_ms, RATE_FAILED),
            paused: q.paused,
            finished_in_memory: self.finished_in_memory(),
            finished_evicted_early: q.finished_evicted_early,
            rate_window_claims: q.config.rate_limit.map_or(0, |rate| {
                let start = now_ms.saturating_sub(rate.per_ms as i64);
                q.claims_in_window.iter().filter(|&&at| at > start).count() as u64
            }),
        })
    }

    /// The metrics of every known queue, sorted by name: jobs by state and
    /// the oldest available job (from the table), totals, leases held,
    /// connected workers and latencies (see `activity.rs`). One pass over
    /// the running jobs, the waiting claims and each queue's available
    /// jobs; for a metrics exporter.
    pub fn metrics_snapshot(&self, now_ms: i64) -> Vec<QueueMetrics> {
        let mut workers = self.connected_workers(now_ms, None);
        let mut all: Vec<QueueMetrics> = self
            .indexes
            .queues
            .iter()
            .map(|(name, q)| self.queue_metrics(name, q, now_ms, workers.remove(name).unwrap_or_default()))
            .collect();
        all.sort_unstable_by(|a, b| a.queue.cmp(&b.queue));
        all
    }

    /// Bytes the per-queue statistics hold beyond their fixed size (latency
    /// buckets and claimers), all queues together.
    pub fn activity_bytes(&self) -> usize {
        self.indexes.queues.values().map(|q| q.activity.bytes()).sum()
    }

    /// Every known queue with its jobs by state, sorted by name: cheaper
    /// than [`JobsCore::metrics_snapshot`], for listings.
    pub fn queue_summaries(&self, now_ms: i64) -> Vec<QueueSummary> {
        let mut all: Vec<QueueSummary> = self
            .indexes
            .queues
            .iter()
            .map(|(name, q)| QueueSummary {
                queue: name.to_string(),
                counts: q.counts,
                oldest_available_age_ms: self.oldest_available_age_ms(q, now_ms),
                paused: q.paused,
                config: q.config.clone(),
            })
            .collect();
        all.sort_unstable_by(|a, b| a.queue.cmp(&b.queue));
        all
    }

    /// How long the queue's oldest available job has waited.
    ///
    /// Available jobs are ordered by priority, then id, not by the time
    /// they became available (`run_at_ms`). But a job never becomes
    /// available before its enqueue, the time its id carries: so within a
    /// priority, once the ids reach the oldest time found so far, no later
    /// job can be older, and the walk jumps to the next priority. For jobs
    /// available since their enqueue that is one job per priority; only
    /// retried or released jobs, available since later, make it read on.
    /// Exact unless ids ran ahead of the clock (more than 65,536 enqueues
    /// in one millisecond, or a clock stepped back), where the age can be
    /// short by that much. (A plain pass over every available job cost 0.2 s a call with a
    /// million of them, and the dashboard asks every second.)
    fn oldest_available_age_ms(&self, q: &Queue, now_ms: i64) -> Option<u64> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut oldest: Option<i64> = None;
        let mut from = q.ready.first().copied();
        while let Some(start) = from {
            let priority = start.0;
            from = None;
            for &(level, id) in q.ready.range(start..) {
                if level != priority {
                    from = Some((level, id));
                    break;
                }
                if oldest.is_some_and(|oldest| id_time_ms(id) >= oldest) {
                    // Nothing later at this priority can be older: skip to
                    // the next priority.
                    from = q
                        .ready
                        .range((Excluded((priority, JobId::MAX)), Unbounded))
                        .next()
                        .copied();
                    break;
                }
                if let Some(job) = self.jobs.get(&id) {
                    oldest = Some(oldest.map_or(job.run_at_ms, |o| o.min(job.run_at_ms)));
                }
            }
        }
        oldest.map(|t| now_ms.saturating_sub(t).max(0) as u64)
    }

    fn queue_metrics(&self, name: &str, q: &Queue, now_ms: i64, workers: HashSet<u64>) -> QueueMetrics {
        QueueMetrics {
            queue: name.to_owned(),
            counts: q.counts,
            oldest_available_age_ms: self.oldest_available_age_ms(q, now_ms),
            paused: q.paused,
            config: q.config.clone(),
            counters: q.activity.counters,
            leases_held: q.counts[JobState::Running.index()],
            workers_connected: workers.len() as u64,
            queue_wait: q.activity.queue_wait.snapshot(now_ms),
            run_time: q.activity.run_time.snapshot(now_ms),
            end_to_end: q.activity.end_to_end.snapshot(now_ms),
        }
    }

    /// The workers connected to each queue (all, or `only`): holding a
    /// lease on one of its jobs, waiting in a claim naming it, or having
    /// claimed from it within the default lease length.
    fn connected_workers(&self, now_ms: i64, only: Option<&str>) -> HashMap<Arc<str>, HashSet<u64>> {
        let wanted = |queue: &str| only.is_none_or(|only| only == queue);
        let mut workers: HashMap<Arc<str>, HashSet<u64>> = HashMap::new();
        for (_, id) in &self.indexes.leases {
            let Some(job) = self.jobs.get(id) else { continue };
            if let Some(lease) = &job.lease
                && wanted(&job.queue)
            {
                workers
                    .entry(Arc::clone(&job.queue))
                    .or_default()
                    .insert(worker_key(&lease.worker));
            }
        }
        for parked in &self.parked {
            for queue in &parked.spec.queues {
                if let Some((name, _)) = self.indexes.queues.get_key_value(queue.as_str())
                    && wanted(name)
                {
                    workers
                        .entry(Arc::clone(name))
                        .or_default()
                        .insert(worker_key(&parked.spec.worker));
                }
            }
        }
        let live_ms = self.config.lease_ms_default as i64;
        for (name, q) in &self.indexes.queues {
            if wanted(name) {
                let recent = q.activity.recent_claimers(now_ms, live_ms);
                workers.entry(Arc::clone(name)).or_default().extend(recent);
            }
        }
        workers
    }

    /// Succeeded and cancelled jobs in memory, of every queue.
    fn finished_in_memory(&self) -> u64 {
        self.indexes
            .queues
            .values()
            .map(|q| q.counts[JobState::Succeeded.index()] + q.counts[JobState::Cancelled.index()])
            .sum()
    }

    /// The earliest time at which [`JobsCore::tick`] has work to do.
    pub fn next_deadline(&self) -> Option<i64> {
        // A claim waiting on a rate-limited queue is served when the
        // queue's window lets a job out again.
        let rate_opens = if self.parked.is_empty() {
            None
        } else {
            self.indexes
                .queues
                .values()
                .filter(|q| !q.paused && !q.ready.is_empty())
                .filter_map(|q| q.rate_opens_at())
                .min()
        };
        [
            self.indexes.scheduled.first().map(|e| e.0),
            self.indexes.leases.first().map(|e| e.0),
            self.parked.iter().map(|p| p.deadline_ms).min(),
            self.indexes.finished.first().map(|e| e.0),
            self.key_expiry.first().map(|e| e.0),
            rate_opens,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Puts a job back as a snapshot recorded it.
    pub(crate) fn restore_job(&mut self, mut job: Job) {
        job.queue = match self.indexes.queues.get_key_value(&*job.queue) {
            Some((name, _)) => Arc::clone(name),
            None => job.queue,
        };
        self.last_id = self.last_id.max(job.id);
        self.indexes.insert(&job);
        self.search.add(&job);
        self.jobs.insert(job.id, job);
    }

    /// Makes a queue known again as a snapshot recorded it.
    pub(crate) fn restore_queue(&mut self, queue: &str) {
        if !self.queue_known(queue) {
            self.indexes.queue(&Arc::from(queue));
        }
    }

    /// Pauses a known queue as a snapshot recorded it.
    pub(crate) fn restore_paused(&mut self, queue: &str) {
        self.restore_queue(queue);
        if let Some(q) = self.indexes.queues.get_mut(queue) {
            q.paused = true;
        }
    }

    /// Gives a queue its configuration as a snapshot recorded it.
    pub(crate) fn restore_config(&mut self, queue: &str, config: QueueConfig) {
        self.restore_queue(queue);
        if let Some((name, _)) = self.indexes.queues.get_key_value(queue) {
            let name = Arc::clone(name);
            self.configure_queue(&name, config);
        }
    }

    /// The known queues with a configuration of their own, in no
    /// particular order.
    pub fn configured_queues(&self) -> impl Iterator<Item = (&str, &QueueConfig)> {
        self.indexes
            .queues
            .iter()
            .filter(|(_, q)| !q.config.is_default())
            .map(|(name, q)| (&**name, &q.config))
    }

    /// A known queue's configuration.
    pub fn queue_config(&self, queue: &str) -> Result<&QueueConfig, JobError> {
        self.known_queue("queue", queue)?;
        Ok(&self.indexes.queues[queue].config)
    }

    /// The known queues that are paused, in no particular order.
    pub fn paused_queues(&self) -> impl Iterator<Item = &str> {
        self.indexes
            .queues
            .iter()
            .filter(|(_, q)| q.paused)
            .map(|(name, _)| &**name)
    }

    /// Puts an idempotency key back as a snapshot recorded it.
    pub(crate) fn restore_key(&mut self, queue: &str, key: String, id: JobId, until_ms: i64) {
        let queue: Arc<str> = Arc::from(queue);
        self.keys
            .insert((Arc::clone(&queue), key.clone()), (id, until_ms));
        self.key_expiry.insert((until_ms, queue, key));
    }

    /// Drops a parked claim whose caller went away.
    pub fn cancel_parked(&mut self, request: RequestId) {
        self.parked.retain(|p| p.request != request);
    }

    /// Applies an event the core decided and counts it in its queue's
    /// statistics. Replay calls `apply`, which does not count: statistics
    /// are of what this process served, not of history (see
    /// `activity.rs`).
    fn emit(&mut self, step: &mut Step, event: Event) {
        self.apply_event(&event, true);
        step.events.push(event);
    }

    /// Handles one request at time `now_ms`.
    pub fn handle(&mut self, request: RequestId, body: Request, now_ms: i64) -> Step {
        let mut step = Step::default();
        self.handle_into(&mut step, request, body, now_ms);
        step
    }

    /// As [`JobsCore::handle`], adding to `step`.
    pub fn handle_into(&mut self, step: &mut Step, request: RequestId, body: Request, now_ms: i64) {
        self.promote_due(now_ms);
        let reply = match body {
            Request::Claim(spec) => match self.claim(step, &spec, now_ms) {
                Ok(jobs) if jobs.is_empty() && spec.wait_ms > 0 => {
                    let wait = spec.wait_ms.min(self.config.claim_wait_ms_max);
                    self.parked.push_back(Parked {
                        request,
                        deadline_ms: now_ms.saturating_add(wait as i64),
                        spec,
                    });
                    return;
                }
                Ok(jobs) => Ok(Reply::Claimed(jobs)),
                Err(error) => Err(error),
            },
            Request::Batch(requests) => {
                if requests.len() > ENQUEUE_BATCH_MAX {
                    Err(invalid(
                        "batch",
                        format!(
                            "{} requests in one batch; at most {ENQUEUE_BATCH_MAX}",
                            requests.len()
                        ),
                    ))
                } else {
                    let replies = requests
                        .into_iter()
                        .map(|body| self.decide(step, body, now_ms))
                        .collect();
                    Ok(Reply::Batch(replies))
                }
            }
            body => self.decide(step, body, now_ms),
        };
        step.replies.push((request, reply));
        self.serve_parked(step, now_ms);
    }

    /// Decides a request that never waits: anything but a claim, and only
    /// reached for a claim or a batch when one is nested in a batch.
    fn decide(&mut self, step: &mut Step, body: Request, now_ms: i64) -> Result<Reply, JobError> {
        match body {
            Request::Enqueue(specs) => self.enqueue(step, specs, now_ms),
            Request::Claim(_) | Request::Batch(_) => {
                Err(invalid("batch", "a batch cannot hold a claim or another batch"))
            }
            Request::Heartbeat {
                id,
                token,
                extend_ms,
                progress,
            } => self.heartbeat(step, id, token, extend_ms, progress, now_ms),
            Request::Complete { id, token, result } => self.complete(step, id, token, result, now_ms),
            Request::Fail {
                id,
                token,
                error,
                retryable,
                retry_delay_ms,
            } => self.fail(step, id, token, error, retryable, retry_delay_ms, now_ms),
            Request::Release { id, token } => match self.leased(id, token) {
                Ok(job) if job.cancel_requested => {
                    // Nobody should run it again: it was to be cancelled.
                    self.emit(step, Event::Cancelled { id, at_ms: now_ms });
                    Ok(Reply::Released)
                }
                Ok(_) => {
                    self.emit(step, Event::Released { id, at_ms: now_ms });
                    Ok(Reply::Released)
                }
                Err(error) => Err(error),
            },
            Request::Cancel { id } => self.cancel(step, id, now_ms),
            Request::RetryDead(target) => {
                self.for_dead(step, target, now_ms, |id, at_ms| Event::Redriven { id, at_ms })
            }
            Request::PurgeDead(target) => self.for_dead(step, target, now_ms, |id, at_ms| Event::Purged {
                id,
                at_ms,
                reason: PurgeReason::Requested,
            }),
            Request::CountDead(target) => self.select_dead(target).map(|ids| Reply::Count(ids.len() as u64)),
            Request::PauseQueue { queue, paused } => {
                self.known_queue("queue", &queue)?;
                let changed = self.indexes.queues[queue.as_str()].paused != paused;
                if changed {
                    self.emit(
                        step,
                        Event::QueuePaused {
                            at_ms: now_ms,
                            queue,
                            paused,
                        },
                    );
                }
                Ok(Reply::QueuePaused { paused, changed })
            }
            Request::ConfigureQueue { queue, change } => {
                validate_queue_name("queue", &queue)?;
                let known = self.queue_known(&queue);
                let current = self
                    .indexes
                    .queues
                    .get(queue.as_str())
                    .map(|q| q.config.clone())
                    .unwrap_or_default();
                let config = current.changed(&change);
                config.validate(&self.config)?;
                if config != current || !known {
                    self.emit(
                        step,
                        Event::QueueConfigured {
                            at_ms: now_ms,
                            queue,
                            config: config.clone(),
                        },
                    );
                }
                Ok(Reply::QueueConfigured(config))
            }
            Request::DeleteQueue { queue, force } => self.delete_queue(step, queue, force, now_ms),
        }
    }

    /// Purges every job of a known queue, one event each (so each job's
    /// history ends saying why), then forgets the queue.
    fn delete_queue(
        &mut self,
        step: &mut Step,
        queue: String,
        force: bool,
        now_ms: i64,
    ) -> Result<Reply, JobError> {
        self.known_queue("queue", &queue)?;
        let running = self.indexes.queues[queue.as_str()].counts[JobState::Running.index()];
        if running > 0 && !force {
            return Err(JobError::QueueBusy { queue, running });
        }
        let ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|job| *job.queue == *queue)
            .map(|job| job.id)
            .collect();
        for &id in &ids {
            self.emit(
                step,
                Event::Purged {
                    id,
                    at_ms: now_ms,
                    reason: PurgeReason::QueueDeleted,
                },
            );
        }
        self.emit(step, Event::QueueDeleted { at_ms: now_ms, queue });
        Ok(Reply::QueueDeleted {
            purged: ids.len() as u64,
        })
    }

    /// Advances time: scheduled jobs become available, expired leases fail
    /// their attempt, parked claims are served or time out, finished jobs
    /// past retention leave memory, dedup windows close.
    pub fn tick(&mut self, now_ms: i64) -> Step {
        let mut step = Step::default();
        self.promote_due(now_ms);
        while let Some(&(until, id)) = self.indexes.leases.first() {
            if until > now_ms {
                break;
            }
            self.expire_lease(&mut step, id, now_ms);
        }
        self.promote_due(now_ms);
        self.serve_parked(&mut step, now_ms);
        let mut waiting = VecDeque::with_capacity(self.parked.len());
        for parked in std::mem::take(&mut self.parked) {
            if parked.deadline_ms <= now_ms {
                step.replies
                    .push((parked.request, Ok(Reply::Claimed(Vec::new()))));
            } else {
                waiting.push_back(parked);
            }
        }
        self.parked = waiting;
        self.evict_finished(&mut step, now_ms);
        if now_ms.saturating_sub(self.activity_swept_ms) >= ACTIVITY_SWEEP_INTERVAL_MS {
            self.activity_swept_ms = now_ms;
            let live_ms = self.config.lease_ms_default as i64;
            for queue in self.indexes.queues.values_mut() {
                queue.activity.release_expired(now_ms, live_ms);
            }
        }
        while let Some((until, _, _)) = self.key_expiry.first() {
            if *until > now_ms {
                break;
            }
            let (until, queue, key) = self.key_expiry.pop_first().expect("checked");
            let entry = (queue, key);
            if self.keys.get(&entry).is_some_and(|(_, u)| *u == until) {
                self.keys.remove(&entry);
            }
        }
        step
    }

    /// Scheduled jobs whose time has come become available. Derived from
    /// the time alone, so it needs no event.
    fn promote_due(&mut self, now_ms: i64) {
        while let Some(&(run_at, id)) = self.indexes.scheduled.first() {
            if run_at > now_ms {
                break;
            }
            let job = self.jobs.get_mut(&id).expect("indexed job exists");
            self.indexes.remove(job);
            job.state = JobState::Available;
            self.indexes.insert(job);
        }
    }

    fn expire_lease(&mut self, step: &mut Step, id: JobId, now_ms: i64) {
        let job = &self.jobs[&id];
        if job.cancel_requested {
            self.emit(step, Event::Cancelled { id, at_ms: now_ms });
            return;
        }
        let timed_out = job.timeout_ms > 0
            && job
                .started_ms
                .is_some_and(|s| now_ms >= s.saturating_add(job.timeout_ms as i64));
        let error = if timed_out {
            format!("attempt timed out after {} ms", job.timeout_ms)
        } else {
            "lease expired: the worker stopped heartbeating (presumed dead)".to_owned()
        };
        // A lost worker's job is offered again at once.
        let retry_at_ms = job.has_attempts_left().then_some(now_ms);
        let attempt = job.attempt;
        self.emit(
            step,
            Event::Failed {
                id,
                at_ms: now_ms,
                attempt,
                error,
                retry_at_ms,
                lease_expired: true,
            },
        );
    }

    /// Finished jobs whose retention (their queue's, or the server's) has
    /// run out leave: dead ones purged by an event, succeeded and cancelled
    /// ones without one (replay drops them by the same rule). Then, past
    /// `finished_in_memory_max`, the succeeded and cancelled jobs due to
    /// leave first go early.
    fn evict_finished(&mut self, step: &mut Step, now_ms: i64) {
        while let Some(&(leave_at, id)) = self.indexes.finished.first() {
            if leave_at > now_ms {
                break;
            }
            if self.jobs[&id].state == JobState::Dead {
                self.emit(
                    step,
                    Event::Purged {
                        id,
                        at_ms: now_ms,
                        reason: PurgeReason::Retention,
                    },
                );
            } else {
                let job = self.jobs.remove(&id).expect("indexed job exists");
                self.indexes.remove(&job);
                self.search.remove(&job);
            }
        }
        let excess = (self.finished_in_memory() as usize).saturating_sub(self.config.finished_in_memory_max);
        if excess > 0 {
            let oldest: Vec<JobId> = self
                .indexes
                .finished
                .iter()
                .filter(|(_, id)| self.jobs[id].state != JobState::Dead)
                .take(excess)
                .map(|&(_, id)| id)
                .collect();
            for id in oldest {
                let job = self.jobs.remove(&id).expect("indexed job exists");
                self.indexes.remove(&job);
                self.search.remove(&job);
                self.indexes.queue(&job.queue).finished_evicted_early += 1;
            }
        }
    }

    fn validate_spec(&self, spec: &JobSpec, now_ms: i64) -> Result<(), JobError> {
        validate_queue_name("queue", &spec.queue)?;
        if spec.payload.len() as u64 > self.config.payload_bytes_max {
            return Err(JobError::LimitExceeded {
                limit: "payload_bytes_max",
                max: self.config.payload_bytes_max,
            });
        }
        if spec.headers.len() > self.config.headers_max {
            return Err(invalid(
                "headers",
                format!("more than {} headers", self.config.headers_max),
            ));
        }
        if let Some(attempts) = spec.attempts_max
            && (attempts == 0 || attempts > self.config.attempts_max_limit)
        {
            return Err(invalid(
                "attempts_max",
                format!(
                    "{attempts} is outside 1..={} (it counts the first try)",
                    self.config.attempts_max_limit
                ),
            ));
        }
        if let Some(timeout) = spec.timeout_ms
            && (timeout == 0 || timeout > self.config.timeout_ms_max)
        {
            return Err(invalid(
                "timeout_ms",
                format!("{timeout} is outside 1..={}", self.config.timeout_ms_max),
            ));
        }
        let delay_max = self.config.delay_ms_max;
        match spec.schedule {
            Schedule::DelayMs(delay) if delay > delay_max => {
                return Err(invalid(
                    "delay_ms",
                    format!("{delay} ms is more than {delay_max} ms"),
                ));
            }
            Schedule::NotBeforeMs(at) if at > now_ms.saturating_add(delay_max as i64) => {
                return Err(invalid(
                    "not_before_ms",
                    format!("{at} is more than {delay_max} ms ahead"),
                ));
            }
            _ => {}
        }
        if spec
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 256)
        {
            return Err(invalid("idempotency_key", "must be 1 to 256 bytes"));
        }
        Ok(())
    }

    fn enqueue(&mut self, step: &mut Step, specs: Vec<JobSpec>, now_ms: i64) -> Result<Reply, JobError> {
        if specs.is_empty() {
            return Err(invalid("jobs", "an enqueue needs at least one job"));
        }
        if specs.len() > ENQUEUE_BATCH_MAX {
            return Err(invalid(
                "jobs",
                format!("{} jobs in one enqueue; at most {ENQUEUE_BATCH_MAX}", specs.len()),
            ));
        }
        for spec in &specs {
            self.validate_spec(spec, now_ms)?;
        }
        if self.jobs.len() + specs.len() > self.config.jobs_in_memory_max {
            return Err(JobError::LimitExceeded {
                limit: "jobs_in_memory_max",
                max: self.config.jobs_in_memory_max as u64,
            });
        }
        let mut results = Vec::with_capacity(specs.len());
        for spec in specs {
            if let Some(key) = &spec.idempotency_key {
                let entry = self
                    .keys
                    .get(&(Arc::from(spec.queue.as_str()), key.clone()))
                    .filter(|(_, until)| *until > now_ms);
                if let Some(&(id, _)) = entry {
                    results.push(EnqueueResult {
                        id,
                        deduplicated: true,
                        state: self.jobs.get(&id).map(|j| j.state),
                    });
                    continue;
                }
            }
            let id = self.next_id(now_ms);
            let run_at_ms = match spec.schedule {
                Schedule::Now => now_ms,
                Schedule::DelayMs(delay) => now_ms.saturating_add(delay as i64),
                Schedule::NotBeforeMs(at) => at.max(now_ms),
            };
            let dedup_until_ms = spec
                .idempotency_key
                .as_ref()
                .map(|_| now_ms.saturating_add(self.config.dedup_window_ms as i64));
            // The job's own settings, else its queue's, else the server's.
            let queue_config = self.indexes.queues.get(spec.queue.as_str()).map(|q| &q.config);
            let attempts_max = spec
                .attempts_max
                .or(queue_config.and_then(|c| c.attempts_max))
                .unwrap_or(self.config.attempts_max_default);
            let timeout_ms = spec
                .timeout_ms
                .or(queue_config.and_then(|c| c.timeout_ms))
                .unwrap_or(self.config.timeout_ms_default);
            self.emit(
                step,
                Event::Enqueued {
                    id,
                    at_ms: now_ms,
                    queue: spec.queue,
                    payload: spec.payload,
                    content_type: spec.content_type,
                    headers: spec.headers,
                    priority: spec.priority,
                    attempts_max,
                    timeout_ms,
                    run_at_ms,
                    idempotency_key: spec.idempotency_key,
                    dedup_until_ms,
                },
            );
            results.push(EnqueueResult {
                id,
                deduplicated: false,
                state: Some(self.jobs[&id].state),
            });
        }
        Ok(Reply::Enqueued(results))
    }

    fn claim(&mut self, step: &mut Step, spec: &ClaimSpec, now_ms: i64) -> Result<Vec<ClaimedJob>, JobError> {
        if spec.queues.is_empty() || spec.queues.len() > QUEUES_PER_CLAIM_MAX {
            return Err(invalid(
                "queues",
                format!("name 1 to {QUEUES_PER_CLAIM_MAX} queues"),
            ));
        }
        for queue in &spec.queues {
            validate_queue_name("queues", queue)?;
        }
        // Asks beyond the limits are refused, not quietly shortened: a
        // worker that believes it holds a 24-hour lease would otherwise
        // lose its job at the twelfth hour without knowing why.
        if spec.lease_ms > self.config.lease_ms_max {
            return Err(invalid(
                "lease_ms",
                format!(
                    "{} ms is above lease_ms_max ({} ms)",
                    spec.lease_ms, self.config.lease_ms_max
                ),
            ));
        }
        if spec.max_jobs > self.config.claim_jobs_max {
            return Err(invalid(
                "max_jobs",
                format!(
                    "{} is above claim_jobs_max ({})",
                    spec.max_jobs, self.config.claim_jobs_max
                ),
            ));
        }
        let live_ms = self.config.lease_ms_default as i64;
        let worker = worker_key(&spec.worker);
        for queue in &spec.queues {
            if let Some(q) = self.indexes.queues.get_mut(queue.as_str()) {
                q.activity.saw_claimer(worker, now_ms, live_ms);
            }
        }
        let max_jobs = spec.max_jobs.max(1) as usize;
        let mut claimed = Vec::new();
        while claimed.len() < max_jobs {
            // A paused queue, or one at its concurrency or rate limit,
            // hands out nothing; its jobs stay available.
            let best = spec
                .queues
                .iter()
                .filter_map(|q| {
                    let queue = self.indexes.queues.get_mut(q.as_str())?;
                    let first = queue.ready.first().copied()?;
                    (queue.claimable(now_ms) > 0).then_some(first)
                })
                .min();
            let Some((_, id)) = best else { break };
            let token = self.random();
            let job = &self.jobs[&id];
            // The claim's lease, else the job's queue's, else the server's.
            let lease_ms = match spec.lease_ms {
                0 => self
                    .indexes
                    .queues
                    .get(&*job.queue)
                    .and_then(|q| q.config.lease_ms)
                    .unwrap_or(self.config.lease_ms_default),
                n => n,
            };
            let mut lease_until_ms = now_ms.saturating_add(lease_ms as i64);
            if job.timeout_ms > 0 {
                lease_until_ms = lease_until_ms.min(now_ms.saturating_add(job.timeout_ms as i64));
            }
            let attempt = job.attempt + 1;
            self.emit(
                step,
                Event::Claimed {
                    id,
                    at_ms: now_ms,
                    attempt,
                    token,
                    lease_until_ms,
                    worker: spec.worker.clone(),
                },
            );
            claimed.push(ClaimedJob {
                job: self.jobs[&id].clone(),
                token,
                lease_ms: (lease_until_ms - now_ms) as u64,
            });
        }
        Ok(claimed)
    }

    fn serve_parked(&mut self, step: &mut Step, now_ms: i64) {
        if self.parked.is_empty() {
            return;
        }
        let mut waiting = VecDeque::with_capacity(self.parked.len());
        while let Some(parked) = self.parked.pop_front() {
            let has_ready = parked.spec.queues.iter().any(|q| {
                self.indexes
                    .queues
                    .get_mut(q.as_str())
                    .is_some_and(|s| !s.ready.is_empty() && s.claimable(now_ms) > 0)
            });
            if !has_ready {
                waiting.push_back(parked);
                continue;
            }
            let reply = self.claim(step, &parked.spec, now_ms).map(Reply::Claimed);
            step.replies.push((parked.request, reply));
        }
        self.parked = waiting;
    }

    /// The job if `token` is its live lease.
    fn leased(&self, id: JobId, token: u64) -> Result<&Job, JobError> {
        let job = self.jobs.get(&id).ok_or(JobError::UnknownJob { id })?;
        match &job.lease {
            Some(lease) if job.state == JobState::Running && lease.token == token => Ok(job),
            _ => Err(JobError::StaleLease { id, state: job.state }),
        }
    }

    fn heartbeat(
        &mut self,
        step: &mut Step,
        id: JobId,
        token: u64,
        extend_ms: u64,
        progress: Option<String>,
        now_ms: i64,
    ) -> Result<Reply, JobError> {
        let job = self.leased(id, token)?;
        if extend_ms > self.config.lease_ms_max {
            return Err(invalid(
                "extend_ms",
                format!(
                    "{extend_ms} ms is above lease_ms_max ({} ms)",
                    self.config.lease_ms_max
                ),
            ));
        }
        let extend = match extend_ms {
            0 => job
                .lease
                .as_ref()
                .map_or(self.config.lease_ms_default, |l| l.lease_ms),
            n => n,
        };
        let mut until = now_ms.saturating_add(extend as i64);
        if job.timeout_ms > 0
            && let Some(started) = job.started_ms
        {
            until = until.min(started.saturating_add(job.timeout_ms as i64));
        }
        let cancel_requested = job.cancel_requested;
        let progress = progress.map(|mut p| {
            truncate(&mut p, PROGRESS_BYTES_MAX);
            p
        });
        self.emit(
            step,
            Event::LeaseExtended {
                id,
                at_ms: now_ms,
                lease_until_ms: until,
                progress,
            },
        );
        Ok(Reply::Heartbeat {
            cancel_requested,
            lease_ms: until.saturating_sub(now_ms).max(0) as u64,
        })
    }

    fn complete(
        &mut self,
        step: &mut Step,
        id: JobId,
        token: u64,
        result: Bytes,
        now_ms: i64,
    ) -> Result<Reply, JobError> {
        if let Some(job) = self.jobs.get(&id)
            && job.state == JobState::Succeeded
            && job.completed_token == Some(token)
        {
            return Ok(Reply::Completed); // a retried Complete
        }
        self.leased(id, token)?;
        if result.len() as u64 > self.config.payload_bytes_max {
            return Err(JobError::LimitExceeded {
                limit: "payload_bytes_max",
                max: self.config.payload_bytes_max,
            });
        }
        self.emit(
            step,
            Event::Completed {
                id,
                at_ms: now_ms,
                result,
            },
        );
        Ok(Reply::Completed)
    }

    #[allow(clippy::too_many_arguments)]
    fn fail(
        &mut self,
        step: &mut Step,
        id: JobId,
        token: u64,
        mut error: String,
        retryable: bool,
        retry_delay_ms: Option<u64>,
        now_ms: i64,
    ) -> Result<Reply, JobError> {
        let job = self.leased(id, token)?;
        if job.cancel_requested {
            self.emit(step, Event::Cancelled { id, at_ms: now_ms });
            return Ok(Reply::Failed {
                state: JobState::Cancelled,
                retry_delay_ms: None,
            });
        }
        let retry = retryable && job.has_attempts_left();
        let attempt = job.attempt;
        truncate(&mut error, ERROR_BYTES_MAX);
        let backoff = self
            .indexes
            .queues
            .get(&*job.queue)
            .and_then(|q| q.config.backoff);
        let delay = match retry_delay_ms {
            Some(delay) => delay.min(self.config.delay_ms_max),
            None => {
                let random = self.random();
                match backoff {
                    Some(backoff) => backoff.delay_ms(attempt, random),
                    None => self.config.backoff_ms(attempt, random),
                }
            }
        };
        let retry_at_ms = retry.then(|| now_ms.saturating_add(delay as i64));
        self.emit(
            step,
            Event::Failed {
                id,
                at_ms: now_ms,
                attempt,
                error,
                retry_at_ms,
                lease_expired: false,
            },
        );
        Ok(Reply::Failed {
            state: self.jobs[&id].state,
            retry_delay_ms: retry.then_some(delay),
        })
    }

    fn cancel(&mut self, step: &mut Step, id: JobId, now_ms: i64) -> Result<Reply, JobError> {
        let job = self.jobs.get(&id).ok_or(JobError::UnknownJob { id })?;
        match job.state {
            JobState::Scheduled | JobState::Available => {
                self.emit(step, Event::Cancelled { id, at_ms: now_ms });
                Ok(Reply::Cancel {
                    state: JobState::Cancelled,
                    cancel_requested: false,
                })
            }
            JobState::Running => {
                if !job.cancel_requested {
                    self.emit(step, Event::CancelRequested { id, at_ms: now_ms });
                }
                Ok(Reply::Cancel {
                    state: JobState::Running,
                    cancel_requested: true,
                })
            }
            // Cancelling twice is not an error.
            JobState::Cancelled => Ok(Reply::Cancel {
                state: JobState::Cancelled,
                cancel_requested: false,
            }),
            state => Err(JobError::Finished { id, state }),
        }
    }

    fn for_dead(
        &mut self,
        step: &mut Step,
        target: Target,
        now_ms: i64,
        event: impl Fn(JobId, i64) -> Event,
    ) -> Result<Reply, JobError> {
        let ids = self.select_dead(target)?;
        for &id in &ids {
            self.emit(step, event(id, now_ms));
        }
        Ok(Reply::Count(ids.len() as u64))
    }

    /// The dead jobs `target` names, at most `DEAD_JOBS_PER_CALL_MAX`.
    fn select_dead(&self, target: Target) -> Result<Vec<JobId>, JobError> {
        let ids: Vec<JobId> = match target {
            Target::Job(id) => {
                let job = self.jobs.get(&id).ok_or(JobError::UnknownJob { id })?;
                if job.state != JobState::Dead {
                    return Err(JobError::NotDead { id, state: job.state });
                }
                vec![id]
            }
            Target::Filter(filter) => {
                // A bulk change names its scope: an empty queue is refused
                // rather than read as "every queue".
                if filter.queue.is_empty() {
                    return Err(invalid(
                        "filter.queue",
                        "a filter must name its queue: bulk re-drives and purges act on one queue",
                    ));
                }
                self.known_queue("filter.queue", &filter.queue)?;
                let limit = match filter.limit as usize {
                    0 => DEAD_JOBS_PER_CALL_MAX,
                    n => n.min(DEAD_JOBS_PER_CALL_MAX),
                };
                self.jobs
                    .values()
                    .filter(|job| {
                        let finished = job.finished_ms.unwrap_or(0);
                        job.state == JobState::Dead
                            && *job.queue == *filter.queue
                            && (filter.error_contains.is_empty()
                                || job
                                    .last_error()
                                    .is_some_and(|e| e.contains(&filter.error_contains)))
                            && (filter.error_fingerprint.is_empty()
                                || job
                                    .last_error()
                                    .is_some_and(|e| fingerprint(e) == filter.error_fingerprint))
                            && filter.dead_since_ms.is_none_or(|t| finished >= t)
                            && filter.dead_before_ms.is_none_or(|t| finished < t)
                    })
                    .take(limit)
                    .map(|job| job.id)
                    .collect()
            }
        };
        Ok(ids)
    }
}

fn truncate(text: &mut String, bytes_max: usize) {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
