//! `spool.v1.Jobs`: the job layer over gRPC. Requests become
//! [`spool_jobs::Request`]s for the job runtime, which answers once their
//! events are durable; reads go to the runtime's table or, for history, to
//! the `__jobs` log itself.
//!
//! Traces: each call runs in the span of `trace_context`; inside it the
//! job runtime's two halves are spans of their own, `append __jobs` (the
//! decision and the append of its events; for a claim also its wait for a
//! job) and `fsync wait` (the group commit). A job's own context (its
//! `traceparent` header) gets `enqueue {queue}` and `claim {queue}` spans,
//! and a failed attempt that is retried a `retry scheduled` span, so the
//! job's trace shows where it went on the server.

use std::sync::Arc;

use spool_auth::Action;
use spool_jobs::{JobsRuntime, LoggedJob, Reply, Request, Ticket, Trimmed};
use spool_proto::v1::{self, jobs_server::Jobs};
use spool_telemetry::{MESSAGING_SYSTEM, TARGET, TRACEPARENT, TRACESTATE};
use tokio::sync::watch;
use tonic::{Request as GrpcRequest, Response, Status};
use tracing::{Instrument as _, Span};

use crate::access::{Access, Caller, caller};
use crate::audit::Audit;
use crate::jobs_convert::{
    claim_spec, claimed_to_proto, complete_request, enqueue_response, event_to_proto, fail_request,
    job_from_log_to_proto, job_to_proto, parse_job_id, parse_token, purge_target, queue_config_change,
    queue_config_json, queue_config_to_proto, retry_target, search_query, spec_from_proto, state_from_proto,
    state_to_proto, stats_to_proto, summary_to_proto,
};
use crate::status::{job_status, join_error, status};

/// What reading a queue's jobs and statistics takes: any permission on it
/// (a refusal names `admin`).
const QUEUE_ANY: &[Action] = &[Action::QUEUE_ADMIN, Action::WORK, Action::ENQUEUE];

#[derive(Debug, Clone)]
pub struct JobsService {
    runtime: Arc<JobsRuntime>,
    shutdown: watch::Receiver<bool>,
    access: Arc<Access>,
    /// `None`: administrative actions are not recorded (unit tests).
    audit: Option<Audit>,
    /// Reads of the table answer on a cluster node that does not lead the
    /// job layer too, from its standby table (the dashboard's service).
    standby_reads: bool,
}

impl JobsService {
    pub fn new(runtime: Arc<JobsRuntime>, shutdown: watch::Receiver<bool>) -> Self {
        JobsService {
            runtime,
            shutdown,
            access: Arc::new(Access::open()),
            audit: None,
            standby_reads: false,
        }
    }

    /// This service with reads of the job table answered on any cluster
    /// node, from its standby table when another node leads the job layer
    /// (`JobsRuntime::read_standby`): for the dashboard, whose pages show
    /// jobs rather than act on them. Changes still go to the leader.
    pub fn with_standby_reads(mut self) -> Self {
        self.standby_reads = true;
        self
    }

    /// Reads the job table once what it reflects is safe (see
    /// [`with_standby_reads`](Self::with_standby_reads)).
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&spool_jobs::JobsCore, i64) -> T + Send + 'static,
    ) -> Result<T, spool_jobs::JobError> {
        if self.standby_reads {
            self.runtime.read_standby(read).await
        } else {
            self.runtime.read(read).await
        }
    }

    /// Reads what no crash can take back (a job's queue) at once.
    async fn peek<T: Send + 'static>(
        &self,
        read: impl FnOnce(&spool_jobs::JobsCore, i64) -> T + Send + 'static,
    ) -> Result<T, spool_jobs::JobError> {
        if self.standby_reads {
            self.runtime.read_standby(read).await
        } else {
            self.runtime.peek(read).await
        }
    }

    /// Checks each call's permissions with `access` and records
    /// administrative actions in `audit`.
    pub fn with_access(mut self, access: Arc<Access>, audit: Audit) -> Self {
        self.access = access;
        self.audit = Some(audit);
        self
    }

    async fn record(
        &self,
        caller: Option<&Caller>,
        action: &str,
        target: serde_json::Value,
        count: u64,
    ) -> Result<(), Status> {
        match &self.audit {
            Some(audit) => audit.record_call(caller, action, target, count).await,
            None => Ok(()),
        }
    }

    /// Checks `action` on the queues of the jobs `ids` names. A job the
    /// table does not hold is let through: the call itself then fails on
    /// it. A principal with the permission on every queue needs no look-up.
    async fn check_jobs(&self, caller: Option<&Caller>, action: Action, ids: Vec<u64>) -> Result<(), Status> {
        if ids.is_empty() || self.access.check(caller, action, "").is_ok() {
            return Ok(());
        }
        let queues = self
            .peek(move |core, _| {
                ids.iter()
                    .filter_map(|&id| core.job(id).map(|job| job.queue.to_string()))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(job_status)?;
        for queue in queues {
            self.access.check(caller, action, &queue)?;
        }
        Ok(())
    }

    /// Checks that `caller` may read job `id`'s history: any permission on
    /// its queue, looked up in the table, else in the log.
    async fn check_history(&self, caller: Option<&Caller>, id: u64) -> Result<(), Status> {
        if self.access.check_any(caller, QUEUE_ANY, "").is_ok() {
            return Ok(());
        }
        let queue = self
            .peek(move |core, _| core.job(id).map(|job| job.queue.to_string()))
            .await
            .map_err(job_status)?;
        let queue = match queue {
            Some(queue) => Some(queue),
            None => {
                let runtime = Arc::clone(&self.runtime);
                match tokio::task::spawn_blocking(move || runtime.job_from_log(id))
                    .await
                    .map_err(join_error)?
                    .map_err(status)?
                {
                    LoggedJob::Found(rebuilt) => Some(job_from_log_to_proto(&rebuilt).queue),
                    _ => None,
                }
            }
        };
        match queue {
            Some(queue) => self.access.check_any(caller, QUEUE_ANY, &queue),
            // The call answers NOT_FOUND for a job the log does not hold.
            None => Ok(()),
        }
    }

    /// The queue a dead-job target acts on: its filter's (empty is every
    /// queue, which only a grant on `*` covers), or its job's.
    async fn check_target(&self, caller: Option<&Caller>, target: &spool_jobs::Target) -> Result<(), Status> {
        match target {
            spool_jobs::Target::Filter(filter) => {
                self.access.check(caller, Action::QUEUE_ADMIN, &filter.queue)
            }
            spool_jobs::Target::Job(id) => self.check_jobs(caller, Action::QUEUE_ADMIN, vec![*id]).await,
        }
    }

    /// Sends a request to the job runtime and answers once its events are
    /// durable, each half in a span.
    async fn call(&self, request: Request) -> Result<Reply, Status> {
        let (reply, ticket) = self.decide(request).await?;
        self.wait_durable(&ticket).await?;
        reply.map_err(job_status)
    }

    async fn decide(
        &self,
        request: Request,
    ) -> Result<(Result<Reply, spool_jobs::JobError>, Ticket), Status> {
        let span =
            tracing::info_span!(target: TARGET, "append __jobs", spool.log.offset = tracing::field::Empty);
        let (reply, ticket) = self
            .runtime
            .decide(request)
            .instrument(span.clone())
            .await
            .map_err(job_status)?;
        span.record("spool.log.offset", ticket.offset());
        Ok((reply, ticket))
    }

    /// Pauses or resumes `queue`; true when that changed its state.
    async fn set_paused(&self, queue: String, paused: bool) -> Result<bool, Status> {
        match self.call(Request::PauseQueue { queue, paused }).await? {
            Reply::QueuePaused { changed, .. } => Ok(changed),
            other => Err(unexpected(&other)),
        }
    }

    async fn wait_durable(&self, ticket: &Ticket) -> Result<(), Status> {
        self.runtime
            .wait_durable(ticket)
            .instrument(tracing::info_span!(target: TARGET, "fsync wait"))
            .await
            .map_err(job_status)
    }
}

/// A span in the trace of a job: a child of the context in its
/// `traceparent` header, or of the call's span when it has none.
fn job_span(operation: &'static str, queue: &str, headers: &[(String, String)]) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "job",
        otel.name = format_args!("{operation} {queue}"),
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.name = operation,
        messaging.destination.name = queue,
        messaging.message.id = tracing::field::Empty,
        spool.job.attempt = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        if let Some(traceparent) = header(TRACEPARENT) {
            spool_telemetry::set_remote_parent(&span, traceparent, header(TRACESTATE));
        }
    }
    span
}

/// Marks a failed attempt's fate in the call's trace.
fn fate_span(job_id: &str, state: spool_jobs::JobState, retry_delay_ms: Option<u64>) {
    let name = match state {
        spool_jobs::JobState::Scheduled | spool_jobs::JobState::Available => "retry scheduled",
        spool_jobs::JobState::Dead => "dead",
        spool_jobs::JobState::Cancelled => "cancelled",
        _ => "failed",
    };
    let _span = tracing::info_span!(
        target: TARGET,
        "fate",
        otel.name = name,
        messaging.message.id = job_id,
        spool.job.retry_delay_ms = retry_delay_ms,
    );
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

#[tonic::async_trait]
impl Jobs for JobsService {
    async fn enqueue(
        &self,
        request: GrpcRequest<v1::EnqueueRequest>,
    ) -> Result<Response<v1::EnqueueResponse>, Status> {
        self.access
            .check(caller(&request), Action::ENQUEUE, &request.get_ref().queue)?;
        let spec = spec_from_proto(request.into_inner())?;
        let span = job_span("enqueue", &spec.queue, &spec.headers);
        let reply = self
            .call(Request::Enqueue(vec![spec]))
            .instrument(span.clone())
            .await?;
        match reply {
            Reply::Enqueued(results) => {
                let response = enqueue_response(&results[0]);
                span.record("messaging.message.id", response.job_id.as_str());
                Ok(Response::new(response))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn enqueue_batch(
        &self,
        request: GrpcRequest<v1::EnqueueBatchRequest>,
    ) -> Result<Response<v1::EnqueueBatchResponse>, Status> {
        for job in &request.get_ref().jobs {
            self.access.check(caller(&request), Action::ENQUEUE, &job.queue)?;
        }
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
        for queue in &request.get_ref().queues {
            self.access.check(caller(&request), Action::WORK, queue)?;
        }
        let spec = claim_spec(request.into_inner());
        let mut shutdown = self.shutdown.clone();
        let (reply, ticket) = tokio::select! {
            decided = self.decide(Request::Claim(spec)) => decided?,
            // A claim waiting for work does not hold the shutdown up; the
            // caller hears UNAVAILABLE and backs off instead of spinning.
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                return Err(Status::unavailable("the server is shutting down"));
            }
        };
        // Each claimed job that carries a trace gets a `claim {queue}` span
        // in it, open until what the claim depends on is durable (the
        // job's enqueue, an earlier turn still being fsynced). Jobs
        // without one get none: hundreds of spans under one Claim call
        // would cost a span per job and say nothing the call's does not.
        let claim_spans: Vec<Span> = match &reply {
            Ok(Reply::Claimed(claimed)) if tracing::enabled!(target: TARGET, tracing::Level::INFO) => claimed
                .iter()
                .filter(|claimed| claimed.job.headers.iter().any(|(name, _)| name == TRACEPARENT))
                .map(|claimed| {
                    let job = &claimed.job;
                    let span = job_span("claim", &job.queue, &job.headers);
                    span.record("messaging.message.id", job.id.to_string());
                    span.record("spool.job.attempt", job.attempt);
                    span
                })
                .collect(),
            _ => Vec::new(),
        };
        self.wait_durable(&ticket).await?;
        drop(claim_spans);
        let reply = reply.map_err(job_status)?;
        let Reply::Claimed(claimed) = reply else {
            return Err(unexpected(&reply));
        };
        let jobs = claimed.iter().map(claimed_to_proto).collect();
        Ok(Response::new(v1::ClaimResponse { jobs }))
    }

    async fn heartbeat(
        &self,
        request: GrpcRequest<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let id = parse_job_id(&request.get_ref().job_id)?;
        self.check_jobs(caller(&request), Action::WORK, vec![id]).await?;
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
        let id = parse_job_id(&request.get_ref().job_id)?;
        self.check_jobs(caller(&request), Action::WORK, vec![id]).await?;
        let request = request.into_inner();
        self.call(complete_request(request)?).await?;
        Ok(Response::new(v1::CompleteResponse {}))
    }

    async fn fail(
        &self,
        request: GrpcRequest<v1::FailRequest>,
    ) -> Result<Response<v1::FailResponse>, Status> {
        let id = parse_job_id(&request.get_ref().job_id)?;
        self.check_jobs(caller(&request), Action::WORK, vec![id]).await?;
        let request = request.into_inner();
        let job_id = request.job_id.clone();
        match self.call(fail_request(request)?).await? {
            Reply::Failed {
                state,
                retry_delay_ms,
            } => {
                fate_span(&job_id, state, retry_delay_ms);
                Ok(Response::new(v1::FailResponse {
                    state: state_to_proto(state) as i32,
                    retry_delay_ms,
                }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn finish_batch(
        &self,
        request: GrpcRequest<v1::FinishBatchRequest>,
    ) -> Result<Response<v1::FinishBatchResponse>, Status> {
        let ids = request
            .get_ref()
            .items
            .iter()
            .filter_map(|item| match &item.outcome {
                Some(v1::finish_item::Outcome::Complete(c)) => parse_job_id(&c.job_id).ok(),
                Some(v1::finish_item::Outcome::Fail(f)) => parse_job_id(&f.job_id).ok(),
                None => None,
            })
            .collect();
        self.check_jobs(caller(&request), Action::WORK, ids).await?;
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
                    state: match reply {
                        Reply::Completed => v1::JobState::Succeeded,
                        Reply::Failed {
                            state,
                            retry_delay_ms,
                        } => {
                            fate_span(&job_id, state, retry_delay_ms);
                            state_to_proto(state)
                        }
                        _ => v1::JobState::Unspecified,
                    } as i32,
                    job_id,
                    code: 0,
                    message: String::new(),
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
        let id = parse_job_id(&request.get_ref().job_id)?;
        self.check_jobs(caller(&request), Action::WORK, vec![id]).await?;
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
        let caller = caller(&request).cloned();
        let id = parse_job_id(&request.into_inner().job_id)?;
        self.check_jobs(caller.as_ref(), Action::QUEUE_ADMIN, vec![id])
            .await?;
        match self.call(Request::Cancel { id }).await? {
            Reply::Cancel {
                state,
                cancel_requested,
            } => {
                let target = serde_json::json!({ "job_id": id.to_string() });
                self.record(caller.as_ref(), "cancel", target, 1).await?;
                Ok(Response::new(v1::CancelResponse {
                    state: state_to_proto(state) as i32,
                    cancel_requested,
                }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn get_job(
        &self,
        request: GrpcRequest<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let caller = caller(&request).cloned();
        let id = parse_job_id(&request.into_inner().job_id)?;
        let in_memory = self
            .read(move |core, _| core.job(id).map(|job| job_to_proto(job, true)))
            .await
            .map_err(job_status)?;
        if let Some(job) = in_memory {
            self.access.check_any(caller.as_ref(), QUEUE_ANY, &job.queue)?;
            return Ok(Response::new(v1::GetJobResponse { job: Some(job) }));
        }
        // Not in the table: the job left memory (or never was). Its events
        // are folded into the job it was, on a blocking thread, since this
        // reads the log from the job's enqueue on.
        let runtime = Arc::clone(&self.runtime);
        let logged = tokio::task::spawn_blocking(move || runtime.job_from_log(id))
            .await
            .map_err(join_error)?
            .map_err(status)?;
        match logged {
            LoggedJob::Found(rebuilt) => {
                let job = job_from_log_to_proto(&rebuilt);
                self.access.check_any(caller.as_ref(), QUEUE_ANY, &job.queue)?;
                Ok(Response::new(v1::GetJobResponse { job: Some(job) }))
            }
            LoggedJob::Trimmed(trimmed) => Err(trimmed_status(id, trimmed)),
            LoggedJob::Unknown => Err(Status::not_found(format!(
                "job {id} does not exist: the log holds no enqueue of it"
            ))),
        }
    }

    async fn list_jobs(
        &self,
        request: GrpcRequest<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let caller = caller(&request).cloned();
        if !request.get_ref().queue.is_empty() {
            self.access
                .check_any(caller.as_ref(), QUEUE_ANY, &request.get_ref().queue)?;
        }
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
            .read(move |core, _| {
                core.list(&queue, state, after, limit).map(|jobs| {
                    jobs.into_iter()
                        .map(|job| job_to_proto(job, include_payload))
                        .collect::<Vec<_>>()
                })
            })
            .await
            .and_then(|listed| listed)
            .map_err(job_status)?;
        // Pages are cut before this filter, so a page may hold fewer jobs
        // than `limit` and still have a next one.
        let full = jobs.len() == limit;
        let last = jobs.last().map(|j| j.job_id.clone()).unwrap_or_default();
        let jobs: Vec<v1::Job> = jobs
            .into_iter()
            .filter(|job| self.access.sees(caller.as_ref(), QUEUE_ANY, &job.queue))
            .collect();
        let next_page_token = if full { last } else { String::new() };
        Ok(Response::new(v1::ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }

    async fn history(
        &self,
        request: GrpcRequest<v1::HistoryRequest>,
    ) -> Result<Response<v1::HistoryResponse>, Status> {
        let caller = caller(&request).cloned();
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
        self.check_history(caller.as_ref(), id).await?;
        let runtime = Arc::clone(&self.runtime);
        let page = tokio::task::spawn_blocking(move || runtime.history(id, from, limit))
            .await
            .map_err(join_error)?
            .map_err(status)?;
        if page.events.is_empty() && from == 0 {
            let Some(trimmed) = page.trimmed else {
                return Err(job_status(spool_jobs::JobError::UnknownJob { id }));
            };
            // Every event is gone: the job is still worth an answer if the
            // table holds it (a dead job kept past the history retention).
            let in_table = self
                .read(move |core, _| core.job(id).is_some())
                .await
                .map_err(job_status)?;
            if !in_table {
                return Err(trimmed_status(id, trimmed));
            }
        }
        Ok(Response::new(v1::HistoryResponse {
            events: page
                .events
                .iter()
                .map(|(offset, e)| v1::JobEvent {
                    offset: *offset,
                    ..event_to_proto(e)
                })
                .collect(),
            next_page_token: page.next.map(|o| o.to_string()).unwrap_or_default(),
            trimmed_before_ms: page.trimmed.map(|t| t.before_ms),
        }))
    }

    async fn retry_dead(
        &self,
        request: GrpcRequest<v1::RetryDeadRequest>,
    ) -> Result<Response<v1::RetryDeadResponse>, Status> {
        let caller = caller(&request).cloned();
        let request = request.into_inner();
        let dry_run = request.dry_run;
        let target = retry_target(request)?;
        self.check_target(caller.as_ref(), &target).await?;
        let recorded = target_json(&target);
        let reply = if dry_run {
            self.call(Request::CountDead(target)).await?
        } else {
            self.call(Request::RetryDead(target)).await?
        };
        let retried_count = count(reply);
        if !dry_run {
            self.record(caller.as_ref(), "retry_dead", recorded, retried_count)
                .await?;
        }
        Ok(Response::new(v1::RetryDeadResponse { retried_count }))
    }

    async fn purge_dead(
        &self,
        request: GrpcRequest<v1::PurgeDeadRequest>,
    ) -> Result<Response<v1::PurgeDeadResponse>, Status> {
        let caller = caller(&request).cloned();
        let request = request.into_inner();
        let dry_run = request.dry_run;
        let target = purge_target(request)?;
        self.check_target(caller.as_ref(), &target).await?;
        let recorded = target_json(&target);
        let reply = if dry_run {
            self.call(Request::CountDead(target)).await?
        } else {
            self.call(Request::PurgeDead(target)).await?
        };
        let purged_count = count(reply);
        if !dry_run {
            self.record(caller.as_ref(), "purge_dead", recorded, purged_count)
                .await?;
        }
        Ok(Response::new(v1::PurgeDeadResponse { purged_count }))
    }

    async fn queue_stats(
        &self,
        request: GrpcRequest<v1::QueueStatsRequest>,
    ) -> Result<Response<v1::QueueStatsResponse>, Status> {
        self.access
            .check_any(caller(&request), QUEUE_ANY, &request.get_ref().queue)?;
        let queue = request.into_inner().queue;
        let name = queue.clone();
        let stats = self
            .read(move |core, now| core.stats(&name, now))
            .await
            .and_then(|stats| stats)
            .map_err(job_status)?;
        let config = self.runtime.config();
        Ok(Response::new(stats_to_proto(queue, &stats, config)))
    }

    async fn list_queues(
        &self,
        request: GrpcRequest<v1::ListQueuesRequest>,
    ) -> Result<Response<v1::ListQueuesResponse>, Status> {
        let caller = caller(&request);
        let summaries = self
            .read(|core, now| core.queue_summaries(now))
            .await
            .map_err(job_status)?;
        Ok(Response::new(v1::ListQueuesResponse {
            queues: summaries
                .into_iter()
                .map(summary_to_proto)
                .filter(|summary| self.access.sees(caller, QUEUE_ANY, &summary.queue))
                .collect(),
        }))
    }

    async fn pause_queue(
        &self,
        request: GrpcRequest<v1::PauseQueueRequest>,
    ) -> Result<Response<v1::PauseQueueResponse>, Status> {
        let caller = caller(&request).cloned();
        let queue = request.into_inner().queue;
        self.access.check(caller.as_ref(), Action::QUEUE_ADMIN, &queue)?;
        let changed = self.set_paused(queue.clone(), true).await?;
        if changed {
            self.record(
                caller.as_ref(),
                "pause_queue",
                serde_json::json!({ "queue": queue }),
                1,
            )
            .await?;
        }
        Ok(Response::new(v1::PauseQueueResponse { changed }))
    }

    async fn resume_queue(
        &self,
        request: GrpcRequest<v1::ResumeQueueRequest>,
    ) -> Result<Response<v1::ResumeQueueResponse>, Status> {
        let caller = caller(&request).cloned();
        let queue = request.into_inner().queue;
        self.access.check(caller.as_ref(), Action::QUEUE_ADMIN, &queue)?;
        let changed = self.set_paused(queue.clone(), false).await?;
        if changed {
            self.record(
                caller.as_ref(),
                "resume_queue",
                serde_json::json!({ "queue": queue }),
                1,
            )
            .await?;
        }
        Ok(Response::new(v1::ResumeQueueResponse { changed }))
    }

    async fn configure_queue(
        &self,
        request: GrpcRequest<v1::ConfigureQueueRequest>,
    ) -> Result<Response<v1::ConfigureQueueResponse>, Status> {
        let caller = caller(&request).cloned();
        let request = request.into_inner();
        self.access
            .check(caller.as_ref(), Action::QUEUE_ADMIN, &request.queue)?;
        let change = queue_config_change(&request)?;
        let queue = request.queue;
        let call = Request::ConfigureQueue {
            queue: queue.clone(),
            change,
        };
        match self.call(call).await? {
            Reply::QueueConfigured(config) => {
                let config = queue_config_to_proto(&config);
                self.record(
                    caller.as_ref(),
                    "configure_queue",
                    serde_json::json!({ "queue": queue, "config": queue_config_json(&config) }),
                    1,
                )
                .await?;
                Ok(Response::new(v1::ConfigureQueueResponse { config: Some(config) }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_queue(
        &self,
        request: GrpcRequest<v1::DeleteQueueRequest>,
    ) -> Result<Response<v1::DeleteQueueResponse>, Status> {
        let caller = caller(&request).cloned();
        let request = request.into_inner();
        self.access
            .check(caller.as_ref(), Action::QUEUE_ADMIN, &request.queue)?;
        let queue = request.queue;
        let call = Request::DeleteQueue {
            queue: queue.clone(),
            force: request.force,
        };
        match self.call(call).await? {
            Reply::QueueDeleted { purged } => {
                self.record(
                    caller.as_ref(),
                    "delete_queue",
                    serde_json::json!({ "queue": queue, "force": request.force }),
                    purged,
                )
                .await?;
                Ok(Response::new(v1::DeleteQueueResponse { purged_count: purged }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn search_jobs(
        &self,
        request: GrpcRequest<v1::SearchJobsRequest>,
    ) -> Result<Response<v1::SearchJobsResponse>, Status> {
        let caller = caller(&request).cloned();
        let query = search_query(request.into_inner())?;
        let (jobs, more) = self
            .read(move |core, _| {
                let hits = core.search(&query);
                let jobs: Vec<v1::Job> = hits.jobs.iter().map(|job| job_to_proto(job, false)).collect();
                (jobs, hits.more)
            })
            .await
            .map_err(job_status)?;
        let jobs = jobs
            .into_iter()
            .filter(|job| self.access.sees(caller.as_ref(), QUEUE_ANY, &job.queue))
            .collect();
        Ok(Response::new(v1::SearchJobsResponse { jobs, more }))
    }
}

/// What a dead-job target names, for the audit trail.
fn target_json(target: &spool_jobs::Target) -> serde_json::Value {
    match target {
        spool_jobs::Target::Job(id) => serde_json::json!({ "job_id": id.to_string() }),
        spool_jobs::Target::Filter(filter) => serde_json::json!({
            "queue": filter.queue,
            "fingerprint": filter.error_fingerprint,
            "error_contains": filter.error_contains,
        }),
    }
}

/// NOT_FOUND for a job outside the table whose enqueue, if it had one,
/// lies in history the retention deleted.
fn trimmed_status(id: u64, trimmed: Trimmed) -> Status {
    Status::not_found(format!(
        "job {id} is not in the job table, and the history of __jobs before {} ms since the epoch was \
         deleted by its retention (job_history_retention_ms, job_history_retention_bytes): the log no \
         longer holds the job's enqueue",
        trimmed.before_ms
    ))
}
