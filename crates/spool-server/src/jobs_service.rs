//! `spool.v1.Jobs`: the job layer over gRPC. Requests become
//! [`spool_jobs::Request`]s for the job runtime, which answers once their
//! events are durable; reads go to the runtime's table or, for history, to
//! the `__jobs` log itself.

use std::sync::Arc;

use spool_jobs::{
    ClaimSpec, DeadFilter, Event, Job, JobId, JobSpec, JobState, JobsRuntime, Reply, Request, Schedule,
    Target,
};
use spool_proto::v1::{self, jobs_server::Jobs};
use tokio::sync::watch;
use tonic::{Request as GrpcRequest, Response, Status};

use crate::status::{job_status, join_error, status};

#[derive(Debug, Clone)]
pub struct JobsService {
    runtime: Arc<JobsRuntime>,
    shutdown: watch::Receiver<bool>,
}

impl JobsService {
    pub fn new(runtime: Arc<JobsRuntime>, shutdown: watch::Receiver<bool>) -> Self {
        JobsService { runtime, shutdown }
    }

    async fn call(&self, request: Request) -> Result<Reply, Status> {
        self.runtime.call(request).await.map_err(job_status)
    }
}

pub fn parse_job_id(text: &str) -> Result<JobId, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(format!("job id {text:?} is not a job id (a decimal number)")))
}

pub fn format_token(token: u64) -> String {
    format!("{token:016x}")
}

fn parse_token(text: &str) -> Result<u64, Status> {
    if text.len() != 16 {
        return Err(Status::invalid_argument(
            "a lease token is 16 hexadecimal digits, as Claim returned it",
        ));
    }
    u64::from_str_radix(text, 16)
        .map_err(|_| Status::invalid_argument("a lease token is 16 hexadecimal digits, as Claim returned it"))
}

pub fn state_to_proto(state: JobState) -> v1::JobState {
    match state {
        JobState::Scheduled => v1::JobState::Scheduled,
        JobState::Available => v1::JobState::Available,
        JobState::Running => v1::JobState::Running,
        JobState::Succeeded => v1::JobState::Succeeded,
        JobState::Dead => v1::JobState::Dead,
        JobState::Cancelled => v1::JobState::Cancelled,
    }
}

fn state_from_proto(value: i32) -> Result<Option<JobState>, Status> {
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

fn spec_from_proto(request: v1::EnqueueRequest) -> Result<JobSpec, Status> {
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

pub fn job_to_proto(job: &Job, include_payload: bool) -> v1::Job {
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
    }
}

fn event_to_proto(event: &Event) -> v1::JobEvent {
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
            out.detail = format!("{reason:?}").to_lowercase();
            v1::JobEventKind::Purged
        }
    };
    out.kind = kind as i32;
    out
}

fn target_from_proto(target: Option<TargetProto>) -> Result<Target, Status> {
    match target {
        Some(TargetProto::Id(id)) => Ok(Target::Job(parse_job_id(&id)?)),
        Some(TargetProto::Filter(filter)) => Ok(Target::Filter(DeadFilter {
            queue: filter.queue,
            error_contains: filter.error_contains,
            dead_since_ms: filter.dead_since_ms,
            dead_before_ms: filter.dead_before_ms,
            limit: filter.limit,
        })),
        None => Err(Status::invalid_argument("name a job id or a filter")),
    }
}

enum TargetProto {
    Id(String),
    Filter(v1::DeadJobFilter),
}

fn count(reply: Reply) -> u64 {
    match reply {
        Reply::Count(n) => n,
        _ => 0,
    }
}

fn unexpected(reply: &Reply) -> Status {
    Status::internal(format!("unexpected reply from the job runtime: {reply:?}"))
}

fn enqueue_response(result: &spool_jobs::EnqueueResult) -> v1::EnqueueResponse {
    v1::EnqueueResponse {
        job_id: result.id.to_string(),
        deduplicated: result.deduplicated,
        state: result.state.map_or(v1::JobState::Unspecified, state_to_proto) as i32,
    }
}

#[tonic::async_trait]
impl Jobs for JobsService {
    async fn enqueue(
        &self,
        request: GrpcRequest<v1::EnqueueRequest>,
    ) -> Result<Response<v1::EnqueueResponse>, Status> {
        let spec = spec_from_proto(request.into_inner())?;
        match self.call(Request::Enqueue(vec![spec])).await? {
            Reply::Enqueued(results) => Ok(Response::new(enqueue_response(&results[0]))),
            other => Err(unexpected(&other)),
        }
    }

    async fn enqueue_batch(
        &self,
        request: GrpcRequest<v1::EnqueueBatchRequest>,
    ) -> Result<Response<v1::EnqueueBatchResponse>, Status> {
        let specs = request
            .into_inner()
            .jobs
            .into_iter()
            .map(spec_from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        match self.call(Request::Enqueue(specs)).await? {
            Reply::Enqueued(results) => Ok(Response::new(v1::EnqueueBatchResponse {
                results: results.iter().map(enqueue_response).collect(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn claim(
        &self,
        request: GrpcRequest<v1::ClaimRequest>,
    ) -> Result<Response<v1::ClaimResponse>, Status> {
        let request = request.into_inner();
        let spec = ClaimSpec {
            queues: request.queues,
            max_jobs: request.max_jobs,
            lease_ms: request.lease_ms,
            wait_ms: u64::from(request.max_wait_ms),
            worker: request.worker_id,
        };
        let mut shutdown = self.shutdown.clone();
        let reply = tokio::select! {
            reply = self.call(Request::Claim(spec)) => reply?,
            // A claim waiting for work does not hold the shutdown up; the
            // caller hears UNAVAILABLE and backs off instead of spinning.
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                return Err(Status::unavailable("the server is shutting down"));
            }
        };
        let Reply::Claimed(claimed) = reply else {
            return Err(unexpected(&reply));
        };
        let jobs = claimed
            .iter()
            .map(|c| v1::ClaimedJob {
                job_id: c.job.id.to_string(),
                queue: c.job.queue.to_string(),
                payload: c.job.payload.clone(),
                content_type: c.job.content_type.clone(),
                headers: c.job.headers.iter().cloned().collect(),
                attempt: c.job.attempt,
                attempts_max: c.job.attempts_max,
                lease_token: format_token(c.token),
                lease_ms: c.lease_ms,
                timeout_ms: c.job.timeout_ms,
                priority: c.job.priority,
                enqueued_at_ms: c.job.created_ms,
            })
            .collect();
        Ok(Response::new(v1::ClaimResponse { jobs }))
    }

    async fn heartbeat(
        &self,
        request: GrpcRequest<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let reply = self
            .call(Request::Heartbeat {
                id: parse_job_id(&request.job_id)?,
                token: parse_token(&request.lease_token)?,
                extend_ms: request.extend_ms,
                progress: request.progress,
            })
            .await?;
        match reply {
            Reply::Heartbeat {
                cancel_requested,
                lease_ms,
            } => Ok(Response::new(v1::HeartbeatResponse {
                cancel_requested,
                lease_ms,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn complete(
        &self,
        request: GrpcRequest<v1::CompleteRequest>,
    ) -> Result<Response<v1::CompleteResponse>, Status> {
        let request = request.into_inner();
        self.call(complete_request(request)?).await?;
        Ok(Response::new(v1::CompleteResponse {}))
    }

    async fn fail(
        &self,
        request: GrpcRequest<v1::FailRequest>,
    ) -> Result<Response<v1::FailResponse>, Status> {
        match self.call(fail_request(request.into_inner())?).await? {
            Reply::Failed {
                state,
                retry_delay_ms,
            } => Ok(Response::new(v1::FailResponse {
                state: state_to_proto(state) as i32,
                retry_delay_ms,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn finish_batch(
        &self,
        request: GrpcRequest<v1::FinishBatchRequest>,
    ) -> Result<Response<v1::FinishBatchResponse>, Status> {
        let items = request.into_inner().items;
        if items.len() > spool_jobs::core::ENQUEUE_BATCH_MAX {
            return Err(Status::invalid_argument(format!(
                "{} items in one FinishBatch; at most {}",
                items.len(),
                spool_jobs::core::ENQUEUE_BATCH_MAX
            )));
        }
        // The valid items go to the job runtime as one batch: one message,
        // one turn, one fsync; each keeps its own result.
        let mut ids = Vec::with_capacity(items.len());
        let mut decoded = Vec::with_capacity(items.len());
        let mut batch = Vec::with_capacity(items.len());
        for item in items {
            let (job_id, request) = match item.outcome {
                Some(v1::finish_item::Outcome::Complete(c)) => (c.job_id.clone(), complete_request(c)),
                Some(v1::finish_item::Outcome::Fail(f)) => (f.job_id.clone(), fail_request(f)),
                None => (
                    String::new(),
                    Err(Status::invalid_argument("an item needs complete or fail")),
                ),
            };
            ids.push(job_id);
            decoded.push(match request {
                Ok(request) => {
                    batch.push(request);
                    Ok(())
                }
                Err(status) => Err(status),
            });
        }
        let mut replies = if batch.is_empty() {
            Vec::new()
        } else {
            match self.call(Request::Batch(batch)).await? {
                Reply::Batch(replies) => replies,
                other => return Err(unexpected(&other)),
            }
        }
        .into_iter();
        let mut results = Vec::with_capacity(ids.len());
        for (job_id, decoded) in ids.into_iter().zip(decoded) {
            let outcome = match decoded {
                Ok(()) => match replies.next() {
                    Some(reply) => reply.map_err(job_status),
                    None => return Err(Status::internal("the job runtime answered fewer items than sent")),
                },
                Err(status) => Err(status),
            };
            results.push(match outcome {
                Ok(reply) => v1::FinishResult {
                    job_id,
                    code: 0,
                    message: String::new(),
                    state: match reply {
                        Reply::Completed => v1::JobState::Succeeded,
                        Reply::Failed { state, .. } => state_to_proto(state),
                        _ => v1::JobState::Unspecified,
                    } as i32,
                },
                Err(status) => v1::FinishResult {
                    job_id,
                    code: status.code() as u32,
                    message: status.message().to_owned(),
                    state: v1::JobState::Unspecified as i32,
                },
            });
        }
        Ok(Response::new(v1::FinishBatchResponse { results }))
    }

    async fn release(
        &self,
        request: GrpcRequest<v1::ReleaseRequest>,
    ) -> Result<Response<v1::ReleaseResponse>, Status> {
        let request = request.into_inner();
        self.call(Request::Release {
            id: parse_job_id(&request.job_id)?,
            token: parse_token(&request.lease_token)?,
        })
        .await?;
        Ok(Response::new(v1::ReleaseResponse {}))
    }

    async fn cancel(
        &self,
        request: GrpcRequest<v1::CancelRequest>,
    ) -> Result<Response<v1::CancelResponse>, Status> {
        let id = parse_job_id(&request.into_inner().job_id)?;
        match self.call(Request::Cancel { id }).await? {
            Reply::Cancel {
                state,
                cancel_requested,
            } => Ok(Response::new(v1::CancelResponse {
                state: state_to_proto(state) as i32,
                cancel_requested,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_job(
        &self,
        request: GrpcRequest<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let id = parse_job_id(&request.into_inner().job_id)?;
        let job = self
            .runtime
            .read(move |core, _| core.job(id).map(|job| job_to_proto(job, true)))
            .await
            .map_err(job_status)?
            .ok_or_else(|| job_status(spool_jobs::JobError::UnknownJob { id }))?;
        Ok(Response::new(v1::GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(
        &self,
        request: GrpcRequest<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let state = state_from_proto(request.state)?;
        let after = match request.page_token.as_str() {
            "" => 0,
            token => parse_job_id(token)?,
        };
        let limit = match request.limit {
            0 => 100,
            n => n.min(1_000) as usize,
        };
        let include_payload = request.include_payload;
        let queue = request.queue;
        let jobs = self
            .runtime
            .read(move |core, _| {
                core.list(&queue, state, after, limit)
                    .into_iter()
                    .map(|job| job_to_proto(job, include_payload))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(job_status)?;
        let next_page_token = if jobs.len() == limit {
            jobs.last().map(|j| j.job_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }

    async fn history(
        &self,
        request: GrpcRequest<v1::HistoryRequest>,
    ) -> Result<Response<v1::HistoryResponse>, Status> {
        let request = request.into_inner();
        let id = parse_job_id(&request.job_id)?;
        let from = match request.page_token.as_str() {
            "" => 0,
            token => token
                .parse()
                .map_err(|_| Status::invalid_argument("page_token is not one this server returned"))?,
        };
        let limit = match request.limit {
            0 => 1_000,
            n => n.min(10_000) as usize,
        };
        let runtime = Arc::clone(&self.runtime);
        let (events, next) = tokio::task::spawn_blocking(move || runtime.history(id, from, limit))
            .await
            .map_err(join_error)?
            .map_err(status)?;
        if events.is_empty() && from == 0 {
            return Err(job_status(spool_jobs::JobError::UnknownJob { id }));
        }
        Ok(Response::new(v1::HistoryResponse {
            events: events.iter().map(|(_, e)| event_to_proto(e)).collect(),
            next_page_token: next.map(|o| o.to_string()).unwrap_or_default(),
        }))
    }

    async fn retry_dead(
        &self,
        request: GrpcRequest<v1::RetryDeadRequest>,
    ) -> Result<Response<v1::RetryDeadResponse>, Status> {
        let target = target_from_proto(request.into_inner().target.map(|t| match t {
            v1::retry_dead_request::Target::JobId(id) => TargetProto::Id(id),
            v1::retry_dead_request::Target::Filter(f) => TargetProto::Filter(f),
        }))?;
        let reply = self.call(Request::RetryDead(target)).await?;
        Ok(Response::new(v1::RetryDeadResponse {
            retried_count: count(reply),
        }))
    }

    async fn purge_dead(
        &self,
        request: GrpcRequest<v1::PurgeDeadRequest>,
    ) -> Result<Response<v1::PurgeDeadResponse>, Status> {
        let target = target_from_proto(request.into_inner().target.map(|t| match t {
            v1::purge_dead_request::Target::JobId(id) => TargetProto::Id(id),
            v1::purge_dead_request::Target::Filter(f) => TargetProto::Filter(f),
        }))?;
        let reply = self.call(Request::PurgeDead(target)).await?;
        Ok(Response::new(v1::PurgeDeadResponse {
            purged_count: count(reply),
        }))
    }

    async fn queue_stats(
        &self,
        request: GrpcRequest<v1::QueueStatsRequest>,
    ) -> Result<Response<v1::QueueStatsResponse>, Status> {
        let queue = request.into_inner().queue;
        spool_log::validate_topic_name(&queue).map_err(status)?;
        let name = queue.clone();
        let stats = self
            .runtime
            .read(move |core, now| core.stats(&name, now))
            .await
            .map_err(job_status)?;
        let count = |state: JobState| stats.counts[state.index()];
        Ok(Response::new(v1::QueueStatsResponse {
            queue,
            scheduled_count: count(JobState::Scheduled),
            available_count: count(JobState::Available),
            running_count: count(JobState::Running),
            succeeded_count: count(JobState::Succeeded),
            dead_count: count(JobState::Dead),
            cancelled_count: count(JobState::Cancelled),
            oldest_available_age_ms: stats.oldest_available_age_ms,
            rate_window_ms: spool_jobs::core::RATE_WINDOW_MS,
            enqueued_per_second: stats.enqueued_per_second,
            completed_per_second: stats.completed_per_second,
            failed_per_second: stats.failed_per_second,
        }))
    }
}

fn complete_request(request: v1::CompleteRequest) -> Result<Request, Status> {
    Ok(Request::Complete {
        id: parse_job_id(&request.job_id)?,
        token: parse_token(&request.lease_token)?,
        result: request.result,
    })
}

fn fail_request(request: v1::FailRequest) -> Result<Request, Status> {
    Ok(Request::Fail {
        id: parse_job_id(&request.job_id)?,
        token: parse_token(&request.lease_token)?,
        error: request.error,
        retryable: request.retryable.unwrap_or(true),
        retry_delay_ms: request.retry_delay_ms,
    })
}
