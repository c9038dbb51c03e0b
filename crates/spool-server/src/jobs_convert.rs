//! Conversions between the job layer's types and the `spool.v1.Jobs`
//! protobuf messages: ids and lease tokens as text, states, specs, jobs,
//! history events and dead-job targets. The log service's conversions are
//! in `convert.rs`.

use spool_jobs::event::PurgeReason;
use spool_jobs::{
    Attempt, AttemptOutcome, Backoff, ClaimSpec, ClaimedJob, DeadFilter, Event, Job, JobFromLog, JobId,
    JobSpec, JobState, JobsConfig, Percentiles, QueueConfig, QueueConfigChange, QueueStats, QueueSummary,
    RateLimit, Request, Schedule, SearchField, SearchQuery, Target, Window,
};
use spool_proto::v1;
use tonic::Status;

pub(crate) fn parse_job_id(text: &str) -> Result<JobId, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(format!("job id {text:?} is not a job id (a decimal number)")))
}

pub(crate) fn format_token(token: u64) -> String {
    format!("{token:016x}")
}

pub(crate) fn parse_token(text: &str) -> Result<u64, Status> {
    if text.len() != 16 {
        return Err(Status::invalid_argument(
            "a lease token is 16 hexadecimal digits, as Claim returned it",
        ));
    }
    u64::from_str_radix(text, 16)
        .map_err(|_| Status::invalid_argument("a lease token is 16 hexadecimal digits, as Claim returned it"))
}

pub(crate) fn state_to_proto(state: JobState) -> v1::JobState {
    match state {
        JobState::Scheduled => v1::JobState::Scheduled,
        JobState::Available => v1::JobState::Available,
        JobState::Running => v1::JobState::Running,
        JobState::Succeeded => v1::JobState::Succeeded,
        JobState::Dead => v1::JobState::Dead,
        JobState::Cancelled => v1::JobState::Cancelled,
    }
}

pub(crate) fn state_from_proto(value: i32) -> Result<Option<JobState>, Status> {
    Ok(match v1::JobState::try_from(value) {
        Ok(v1::JobState::Unspecified) => None,
        Ok(v1::JobState::Scheduled) => Some(JobState::Scheduled),
        Ok(v1::JobState::Available) => Some(JobState::Available),
        Ok(v1::JobState::Running) => Some(JobState::Running),
        Ok(v1::JobState::Succeeded) => Some(JobState::Succeeded),
        Ok(v1::JobState::Dead) => Some(JobState::Dead),
        Ok(v1::JobState::Cancelled) => Some(JobState::Cancelled),
        Err(_) => return Err(Status::invalid_argument(format!("unknown job state {value}"))),
    })
}

pub(crate) fn spec_from_proto(request: v1::EnqueueRequest) -> Result<JobSpec, Status> {
    let schedule = match request.schedule {
        None => Schedule::Now,
        Some(v1::enqueue_request::Schedule::DelayMs(delay)) => Schedule::DelayMs(delay),
        Some(v1::enqueue_request::Schedule::NotBeforeMs(at)) => Schedule::NotBeforeMs(at),
    };
    let mut headers: Vec<(String, String)> = request.headers.into_iter().collect();
    headers.sort();
    Ok(JobSpec {
        queue: request.queue,
        payload: request.payload,
        content_type: request.content_type,
        headers,
        priority: request.priority,
        attempts_max: request.attempts_max,
        timeout_ms: request.timeout_ms,
        schedule,
        idempotency_key: request.idempotency_key,
    })
}

pub(crate) fn job_to_proto(job: &Job, include_payload: bool) -> v1::Job {
    v1::Job {
        job_id: job.id.to_string(),
        queue: job.queue.to_string(),
        state: state_to_proto(job.state) as i32,
        payload: if include_payload {
            job.payload.clone()
        } else {
            Default::default()
        },
        content_type: job.content_type.clone(),
        headers: job.headers.iter().cloned().collect(),
        priority: job.priority,
        attempt: job.attempt,
        attempts_max: job.attempts_max,
        timeout_ms: job.timeout_ms,
        idempotency_key: job.idempotency_key.clone(),
        created_at_ms: job.created_ms,
        available_at_ms: matches!(job.state, JobState::Scheduled | JobState::Available)
            .then_some(job.run_at_ms),
        started_at_ms: job.started_ms,
        finished_at_ms: job.finished_ms,
        errors: job
            .errors
            .iter()
            .map(|e| v1::AttemptError {
                attempt: e.attempt,
                error: e.error.clone(),
                failed_at_ms: e.failed_at_ms,
            })
            .collect(),
        result: job.result.clone(),
        progress: job.progress.clone(),
        cancel_requested: job.cancel_requested,
        worker_id: job.lease.as_ref().map(|l| l.worker.clone()),
        from_history: false,
        purged_at_ms: None,
        attempts: job.attempts.iter().map(attempt_to_proto).collect(),
    }
}

fn attempt_to_proto(attempt: &Attempt) -> v1::JobAttempt {
    let outcome = match attempt.outcome {
        AttemptOutcome::Running => v1::AttemptOutcome::Running,
        AttemptOutcome::Succeeded => v1::AttemptOutcome::Succeeded,
        AttemptOutcome::Failed => v1::AttemptOutcome::Failed,
        AttemptOutcome::LeaseExpired => v1::AttemptOutcome::LeaseExpired,
        AttemptOutcome::Released => v1::AttemptOutcome::Released,
        AttemptOutcome::Cancelled => v1::AttemptOutcome::Cancelled,
    };
    v1::JobAttempt {
        attempt: attempt.attempt,
        available_at_ms: attempt.available_at_ms,
        claimed_at_ms: attempt.claimed_at_ms,
        finished_at_ms: attempt.finished_at_ms,
        outcome: outcome as i32,
    }
}

/// A job rebuilt from its events in the log, with its payload and result.
pub(crate) fn job_from_log_to_proto(rebuilt: &JobFromLog) -> v1::Job {
    v1::Job {
        from_history: true,
        purged_at_ms: rebuilt.purged_at_ms,
        ..job_to_proto(&rebuilt.job, true)
    }
}

pub(crate) fn stats_to_proto(
    queue: String,
    stats: &QueueStats,
    config: &JobsConfig,
) -> v1::QueueStatsResponse {
    let metrics = &stats.metrics;
    let count = |state: JobState| metrics.counts[state.index()];
    let totals = &metrics.counters;
    let window = |latency: &spool_jobs::Latency, window: Window| {
        match window {
            Window::LastMinute => latency.last_minute,
            Window::LastHour => latency.last_hour,
        }
        .map(percentiles_to_proto)
    };
    v1::QueueStatsResponse {
        queue,
        scheduled_count: count(JobState::Scheduled),
        available_count: count(JobState::Available),
        running_count: count(JobState::Running),
        succeeded_count: count(JobState::Succeeded),
        dead_count: count(JobState::Dead),
        cancelled_count: count(JobState::Cancelled),
        oldest_available_age_ms: metrics.oldest_available_age_ms,
        rate_window_ms: spool_jobs::core::RATE_WINDOW_MS,
        enqueued_per_second: stats.enqueued_per_second,
        completed_per_second: stats.completed_per_second,
        failed_per_second: stats.failed_per_second,
        finished_retention_ms: metrics
            .config
            .finished_retention_ms
            .unwrap_or(config.finished_retention_ms),
        finished_in_memory_max: config.finished_in_memory_max as u64,
        finished_in_memory_count: stats.finished_in_memory,
        finished_evicted_early_count: stats.finished_evicted_early,
        dead_retention_ms: metrics
            .config
            .dead_retention_ms
            .unwrap_or(config.dead_retention_ms),
        queue_wait_last_minute: window(&metrics.queue_wait, Window::LastMinute),
        queue_wait_last_hour: window(&metrics.queue_wait, Window::LastHour),
        run_time_last_minute: window(&metrics.run_time, Window::LastMinute),
        run_time_last_hour: window(&metrics.run_time, Window::LastHour),
        end_to_end_last_minute: window(&metrics.end_to_end, Window::LastMinute),
        end_to_end_last_hour: window(&metrics.end_to_end, Window::LastHour),
        enqueued_total: totals.enqueued,
        claimed_total: totals.claimed,
        completed_total: totals.completed,
        failed_total: totals.failed,
        retried_total: totals.retried,
        dead_total: totals.dead,
        expired_lease_total: totals.expired_lease,
        cancelled_total: totals.cancelled,
        released_total: totals.released,
        redriven_total: totals.redriven,
        workers_connected: metrics.workers_connected,
        paused: stats.paused,
        config: Some(queue_config_to_proto(&metrics.config)),
        rate_window_claims: stats.rate_window_claims,
    }
}

fn percentiles_to_proto(percentiles: Percentiles) -> v1::LatencyPercentiles {
    v1::LatencyPercentiles {
        count: percentiles.count,
        p50_ms: percentiles.p50_ms,
        p99_ms: percentiles.p99_ms,
        max_ms: percentiles.max_ms,
    }
}

pub(crate) fn summary_to_proto(summary: QueueSummary) -> v1::QueueSummary {
    let count = |state: JobState| summary.counts[state.index()];
    v1::QueueSummary {
        scheduled_count: count(JobState::Scheduled),
        available_count: count(JobState::Available),
        running_count: count(JobState::Running),
        succeeded_count: count(JobState::Succeeded),
        dead_count: count(JobState::Dead),
        cancelled_count: count(JobState::Cancelled),
        oldest_available_age_ms: summary.oldest_available_age_ms,
        paused: summary.paused,
        config: Some(queue_config_to_proto(&summary.config)),
        queue: summary.queue,
    }
}

pub(crate) fn queue_config_to_proto(config: &QueueConfig) -> v1::QueueConfig {
    v1::QueueConfig {
        attempts_max: config.attempts_max,
        backoff: config.backoff.map(|b| v1::QueueBackoff {
            min_ms: b.min_ms,
            max_ms: b.max_ms,
        }),
        lease_ms: config.lease_ms,
        timeout_ms: config.timeout_ms,
        finished_retention_ms: config.finished_retention_ms,
        dead_retention_ms: config.dead_retention_ms,
        concurrency_limit: config.concurrency_limit,
        rate_limit: config.rate_limit.map(|r| v1::QueueRateLimit {
            jobs: r.jobs,
            per_ms: r.per_ms,
        }),
    }
}

/// A queue's configuration as JSON, for the audit trail: only the
/// settings the queue has.
pub(crate) fn queue_config_json(config: &v1::QueueConfig) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let mut put = |key: &str, value: serde_json::Value| {
        out.insert(key.to_owned(), value);
    };
    if let Some(v) = config.attempts_max {
        put("attempts_max", v.into());
    }
    if let Some(b) = &config.backoff {
        put(
            "backoff",
            serde_json::json!({ "min_ms": b.min_ms, "max_ms": b.max_ms }),
        );
    }
    for (key, value) in [
        ("lease_ms", config.lease_ms),
        ("timeout_ms", config.timeout_ms),
        ("finished_retention_ms", config.finished_retention_ms),
        ("dead_retention_ms", config.dead_retention_ms),
    ] {
        if let Some(v) = value {
            put(key, v.into());
        }
    }
    if let Some(v) = config.concurrency_limit {
        put("concurrency_limit", v.into());
    }
    if let Some(r) = &config.rate_limit {
        put(
            "rate_limit",
            serde_json::json!({ "jobs": r.jobs, "per_ms": r.per_ms }),
        );
    }
    serde_json::Value::Object(out)
}

/// The change a ConfigureQueue asks: what it sets, and what it returns to
/// the server's default. Naming a setting both ways is refused.
pub(crate) fn queue_config_change(request: &v1::ConfigureQueueRequest) -> Result<QueueConfigChange, Status> {
    use v1::QueueSetting as S;
    let set = request.set.unwrap_or_default();
    let mut change = QueueConfigChange {
        attempts_max: set.attempts_max.map(Some),
        backoff: set.backoff.map(|b| {
            Some(Backoff {
                min_ms: b.min_ms,
                max_ms: b.max_ms,
            })
        }),
        lease_ms: set.lease_ms.map(Some),
        timeout_ms: set.timeout_ms.map(Some),
        finished_retention_ms: set.finished_retention_ms.map(Some),
        dead_retention_ms: set.dead_retention_ms.map(Some),
        concurrency_limit: set.concurrency_limit.map(Some),
        rate_limit: set.rate_limit.map(|r| {
            Some(RateLimit {
                jobs: r.jobs,
                per_ms: r.per_ms,
            })
        }),
    };
    fn reset<T>(slot: &mut Option<Option<T>>, name: &str) -> Result<(), Status> {
        if slot.is_some() {
            return Err(Status::invalid_argument(format!(
                "reset: {name} is both set and reset in one request"
            )));
        }
        *slot = Some(None);
        Ok(())
    }
    for &code in &request.reset {
        match S::try_from(code).unwrap_or(S::Unspecified) {
            S::AttemptsMax => reset(&mut change.attempts_max, "attempts_max")?,
            S::Backoff => reset(&mut change.backoff, "backoff")?,
            S::Lease => reset(&mut change.lease_ms, "lease_ms")?,
            S::Timeout => reset(&mut change.timeout_ms, "timeout_ms")?,
            S::FinishedRetention => reset(&mut change.finished_retention_ms, "finished_retention_ms")?,
            S::DeadRetention => reset(&mut change.dead_retention_ms, "dead_retention_ms")?,
            S::ConcurrencyLimit => reset(&mut change.concurrency_limit, "concurrency_limit")?,
            S::RateLimit => reset(&mut change.rate_limit, "rate_limit")?,
            S::Unspecified => {
                return Err(Status::invalid_argument(format!(
                    "reset: {code} names no queue setting"
                )));
            }
        }
    }
    Ok(change)
}

pub(crate) fn event_to_proto(event: &Event) -> v1::JobEvent {
    let mut out = v1::JobEvent {
        time_ms: event.at_ms(),
        ..Default::default()
    };
    let kind = match event {
        Event::Enqueued {
            queue,
            run_at_ms,
            at_ms,
            priority,
            attempts_max,
            ..
        } => {
            if run_at_ms > at_ms {
                out.delay_ms = Some((run_at_ms - at_ms) as u64);
            }
            out.detail = format!("queue {queue}, priority {priority}, attempts_max {attempts_max}");
            v1::JobEventKind::Enqueued
        }
        Event::Claimed {
            attempt,
            worker,
            lease_until_ms,
            at_ms,
            ..
        } => {
            out.attempt = *attempt;
            out.worker_id = Some(worker.clone());
            out.lease_ms = Some(lease_until_ms.saturating_sub(*at_ms).max(0) as u64);
            v1::JobEventKind::Claimed
        }
        Event::LeaseExtended {
            lease_until_ms,
            at_ms,
            progress,
            ..
        } => {
            out.lease_ms = Some(lease_until_ms.saturating_sub(*at_ms).max(0) as u64);
            out.progress.clone_from(progress);
            v1::JobEventKind::LeaseExtended
        }
        Event::Completed { result, .. } => {
            out.detail = format!("result of {} bytes", result.len());
            v1::JobEventKind::Completed
        }
        Event::Failed {
            attempt,
            error,
            retry_at_ms,
            at_ms,
            lease_expired,
            ..
        } => {
            out.attempt = *attempt;
            out.error = Some(error.clone());
            if *lease_expired {
                out.detail = "the lease expired".into();
            }
            match retry_at_ms {
                Some(at) => {
                    out.delay_ms = Some(at.saturating_sub(*at_ms).max(0) as u64);
                    v1::JobEventKind::RetryScheduled
                }
                None => v1::JobEventKind::Dead,
            }
        }
        Event::Released { .. } => {
            out.detail = "released by the worker unrun; the attempt does not count".into();
            v1::JobEventKind::Available
        }
        Event::CancelRequested { .. } => v1::JobEventKind::CancelRequested,
        Event::Cancelled { .. } => v1::JobEventKind::Cancelled,
        Event::Redriven { .. } => v1::JobEventKind::Redriven,
        Event::Purged { reason, .. } => {
            out.detail = match reason {
                PurgeReason::Requested => "requested",
                PurgeReason::Retention => "retention",
                PurgeReason::QueueDeleted => "queue deleted",
            }
            .into();
            v1::JobEventKind::Purged
        }
        // A queue's event, never in a job's history (its key is no job's).
        Event::QueuePaused { queue, paused, .. } => {
            out.detail = format!("queue {queue} {}", if *paused { "paused" } else { "resumed" });
            v1::JobEventKind::Unspecified
        }
        Event::QueueConfigured { queue, .. } => {
            out.detail = format!("queue {queue} configured");
            v1::JobEventKind::Unspecified
        }
        Event::QueueDeleted { queue, .. } => {
            out.detail = format!("queue {queue} deleted");
            v1::JobEventKind::Unspecified
        }
    };
    out.kind = kind as i32;
    out
}

fn filter_from_proto(filter: v1::DeadJobFilter) -> Target {
    Target::Filter(DeadFilter {
        queue: filter.queue,
        error_contains: filter.error_contains,
        error_fingerprint: filter.error_fingerprint,
        dead_since_ms: filter.dead_since_ms,
        dead_before_ms: filter.dead_before_ms,
        limit: filter.limit,
    })
}

/// The dead jobs a RetryDead names.
pub(crate) fn retry_target(request: v1::RetryDeadRequest) -> Result<Target, Status> {
    use v1::retry_dead_request::Target as T;
    match request.target {
        Some(T::JobId(id)) => Ok(Target::Job(parse_job_id(&id)?)),
        Some(T::Filter(filter)) => Ok(filter_from_proto(filter)),
        None => Err(Status::invalid_argument("name a job id or a filter")),
    }
}

/// The dead jobs a PurgeDead names.
pub(crate) fn purge_target(request: v1::PurgeDeadRequest) -> Result<Target, Status> {
    use v1::purge_dead_request::Target as T;
    match request.target {
        Some(T::JobId(id)) => Ok(Target::Job(parse_job_id(&id)?)),
        Some(T::Filter(filter)) => Ok(filter_from_proto(filter)),
        None => Err(Status::invalid_argument("name a job id or a filter")),
    }
}

/// The search a `SearchJobs` asks for.
pub(crate) fn search_query(request: v1::SearchJobsRequest) -> Result<SearchQuery, Status> {
    let field = match v1::SearchField::try_from(request.field) {
        Ok(v1::SearchField::Unspecified) => SearchField::Any,
        Ok(v1::SearchField::Id) => SearchField::Id,
        Ok(v1::SearchField::IdempotencyKey) => SearchField::IdempotencyKey,
        Ok(v1::SearchField::Payload) => SearchField::Payload,
        Ok(v1::SearchField::Header) => SearchField::Header,
        Ok(v1::SearchField::Error) => SearchField::Error,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown search field {}",
                request.field
            )));
        }
    };
    if request.query.trim().is_empty() {
        return Err(Status::invalid_argument("a search needs a query"));
    }
    let queue = match request.queue.as_str() {
        "" => None,
        name => {
            spool_jobs::validate_queue_name("queue", name).map_err(crate::status::job_status)?;
            Some(request.queue)
        }
    };
    Ok(SearchQuery {
        text: request.query,
        field,
        queue,
        limit: request.limit as usize,
    })
}

pub(crate) fn claim_spec(request: v1::ClaimRequest) -> ClaimSpec {
    ClaimSpec {
        queues: request.queues,
        max_jobs: request.max_jobs,
        lease_ms: request.lease_ms,
        wait_ms: u64::from(request.max_wait_ms),
        worker: request.worker_id,
    }
}

pub(crate) fn claimed_to_proto(claimed: &ClaimedJob) -> v1::ClaimedJob {
    let job = &claimed.job;
    v1::ClaimedJob {
        job_id: job.id.to_string(),
        queue: job.queue.to_string(),
        payload: job.payload.clone(),
        content_type: job.content_type.clone(),
        headers: job.headers.iter().cloned().collect(),
        attempt: job.attempt,
        attempts_max: job.attempts_max,
        lease_token: format_token(claimed.token),
        lease_ms: claimed.lease_ms,
        timeout_ms: job.timeout_ms,
        priority: job.priority,
        enqueued_at_ms: job.created_ms,
    }
}

pub(crate) fn enqueue_response(result: &spool_jobs::EnqueueResult) -> v1::EnqueueResponse {
    v1::EnqueueResponse {
        job_id: result.id.to_string(),
        deduplicated: result.deduplicated,
        state: result.state.map_or(v1::JobState::Unspecified, state_to_proto) as i32,
    }
}

pub(crate) fn complete_request(request: v1::CompleteRequest) -> Result<Request, Status> {
    Ok(Request::Complete {
        id: parse_job_id(&request.job_id)?,
        token: parse_token(&request.lease_token)?,
        result: request.result,
    })
}

pub(crate) fn fail_request(request: v1::FailRequest) -> Result<Request, Status> {
    Ok(Request::Fail {
        id: parse_job_id(&request.job_id)?,
        token: parse_token(&request.lease_token)?,
        error: request.error,
        retryable: request.retryable.unwrap_or(true),
        retry_delay_ms: request.retry_delay_ms,
    })
}
