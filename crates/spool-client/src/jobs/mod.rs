//! [`Jobs`]: the typed client of `spool.v1.Jobs`, for producers of jobs
//! and the tools that inspect them (enqueue, get, list, history, re-drive,
//! purge, cancel, queue statistics), and bare claims for callers that run
//! jobs themselves. A worker that runs handlers wants [`crate::worker`].
//!
//! Every call answers Rust values (`types.rs`) and fails with the crate's
//! [`Error`], built from the gRPC status as for the log calls.
//!
//! ```no_run
//! # async fn example() -> spool_client::Result<()> {
//! use std::time::Duration;
//!
//! use spool_client::Client;
//! use spool_client::jobs::{JobState, NewJob, Schedule};
//!
//! let client = Client::connect("http://127.0.0.1:7070").await?;
//! let jobs = client.jobs();
//! let enqueued = jobs
//!     .enqueue(NewJob {
//!         schedule: Some(Schedule::Delay(Duration::from_secs(60))),
//!         idempotency_key: Some("welcome-7".into()),
//!         ..NewJob::new("emails", r#"{"to":"a@example.com"}"#)
//!     })
//!     .await?;
//! let job = jobs.get(&enqueued.job_id).await?;
//! assert_eq!(job.state, JobState::Scheduled);
//! let stats = jobs.stats("emails").await?;
//! println!("{} scheduled, {} dead", stats.scheduled_count, stats.dead_count);
//! # Ok(())
//! # }
//! ```

mod route;
mod types;

use std::time::Duration;

use crate::client::Transport;
use spool_proto::v1::{self, jobs_client::JobsClient};
use spool_telemetry::{TRACEPARENT, TRACESTATE};
use tonic::{Code, Request, Status};
use tracing::Instrument as _;

pub(crate) use self::route::{FOLLOW_PAUSE, JobsRoute};
pub use self::types::{
    AttemptError, AttemptOutcome, CancelOutcome, Claim, ClaimedJob, DeadFilter, Enqueued, EvictionRule,
    Finish, HistoryPage, JobAttempt, JobEvent, JobEventKind, JobInfo, JobQuery, JobState, LatencyWindows,
    NewJob, Page, Percentiles, QueueBackoff, QueueConfig, QueueConfigChange, QueueLatency, QueueRateLimit,
    QueueStats, QueueSummary, QueueTotals, Schedule,
};
use crate::error::{Error, Result};

/// The typed client of the Jobs service, on a [`Client`](crate::Client)'s
/// connection ([`Client::jobs`](crate::Client::jobs)). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Jobs {
    route: JobsRoute,
    request_timeout: Option<Duration>,
}

impl Jobs {
    pub(crate) fn new(route: JobsRoute, request_timeout: Option<Duration>) -> Self {
        Jobs {
            route,
            request_timeout,
        }
    }

    /// Sends `message` with `send` (a method of the generated client),
    /// with the client's deadline plus `wait`, to the job layer's leader
    /// (`route.rs`).
    async fn call<T: Clone, R, Fut>(
        &self,
        message: T,
        wait: Duration,
        send: impl Fn(JobsClient<Transport>, Request<T>) -> Fut,
    ) -> std::result::Result<tonic::Response<R>, Status>
    where
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<R>, Status>>,
    {
        self.route
            .call(message, |message| self.request(message, wait), send)
            .await
    }

    /// A request with the client's deadline, plus `wait` for a long poll.
    fn request<T>(&self, message: T, wait: Duration) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(timeout) = self.request_timeout {
            request.set_timeout(timeout + wait);
        }
        crate::trace::inject(&mut request);
        request
    }

    /// Enqueues one job. With an idempotency key seen in the queue's dedup
    /// window, returns the earlier job instead (`deduplicated`).
    ///
    /// Traced as `send {queue}`: with an OpenTelemetry context, a job
    /// without a `traceparent` header gets the send span's, so its
    /// attempts continue the caller's trace; a job with one keeps it, and
    /// the send span joins that trace.
    pub async fn enqueue(&self, mut job: NewJob) -> Result<Enqueued> {
        let span = crate::trace::enqueue_span(&job.queue, 1);
        if let Some(traceparent) = job.headers.get(TRACEPARENT) {
            spool_telemetry::set_remote_parent(
                &span,
                traceparent,
                job.headers.get(TRACESTATE).map(String::as_str),
            );
        }
        crate::trace::store_context(&span, job.headers.contains_key(TRACEPARENT), |traceparent| {
            job.headers.insert(TRACEPARENT.to_owned(), traceparent);
        });
        async {
            let response = self
                .call(job.into_proto(), Duration::ZERO, |mut jobs, request| async move {
                    jobs.enqueue(request).await
                })
                .await?
                .into_inner();
            tracing::Span::current().record("messaging.message.id", response.job_id.as_str());
            Ok(Enqueued::from_proto(response))
        }
        .instrument(span)
        .await
    }

    /// Enqueues several jobs in one request, all or none: an invalid job
    /// fails the call (`INVALID_ARGUMENT` naming its index). Answers one
    /// result per job, in order.
    ///
    /// Traced as one `send {queue}` span (the first job's queue) whose
    /// context goes into the jobs without a `traceparent` header.
    pub async fn enqueue_batch(&self, mut jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        let count = jobs.len();
        let span = crate::trace::enqueue_span(jobs.first().map_or("", |job| job.queue.as_str()), count);
        for job in &mut jobs {
            crate::trace::store_context(&span, job.headers.contains_key(TRACEPARENT), |traceparent| {
                job.headers.insert(TRACEPARENT.to_owned(), traceparent);
            });
        }
        self.enqueue_batch_traced(jobs, count).instrument(span).await
    }

    async fn enqueue_batch_traced(&self, jobs: Vec<NewJob>, count: usize) -> Result<Vec<Enqueued>> {
        let request = v1::EnqueueBatchRequest {
            jobs: jobs.into_iter().map(NewJob::into_proto).collect(),
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.enqueue_batch(request).await
            })
            .await?
            .into_inner();
        if response.results.len() != count {
            return Err(Error::protocol(format!(
                "EnqueueBatch of {count} jobs answered {} results",
                response.results.len()
            )));
        }
        Ok(response.results.into_iter().map(Enqueued::from_proto).collect())
    }

    /// One job with its payload, result and errors. `NOT_FOUND` for an id
    /// no job has, or a job that left memory after its retention time (its
    /// [`history`](Self::history) is still in the log).
    pub async fn get(&self, job_id: &str) -> Result<JobInfo> {
        let request = v1::GetJobRequest {
            job_id: job_id.to_owned(),
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.get_job(request).await
            })
            .await?
            .into_inner();
        let job = response
            .job
            .ok_or_else(|| Error::protocol("GetJob answered without a job"))?;
        JobInfo::from_proto(job)
    }

    /// One page of a queue's jobs, oldest first: `limit` jobs at most (0 is
    /// the server's default), from `page_token` (`None` for the first
    /// page).
    pub async fn list(
        &self,
        query: &JobQuery,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<Page<JobInfo>> {
        let request = v1::ListJobsRequest {
            queue: query.queue.clone(),
            state: query.state.map_or(v1::JobState::Unspecified, JobState::to_proto) as i32,
            page_token: page_token.unwrap_or_default().to_owned(),
            limit,
            include_payload: query.include_payload,
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.list_jobs(request).await
            })
            .await?
            .into_inner();
        Ok(Page {
            items: response
                .jobs
                .into_iter()
                .map(JobInfo::from_proto)
                .collect::<Result<_>>()?,
            next_page_token: non_empty(response.next_page_token),
        })
    }

    /// One page of a job's events, oldest first, read from the log (also
    /// for a job that has left memory): `limit` events at most (0 is the
    /// server's default), from `page_token` (`None` for the first page).
    /// When the history retention deleted the job's first events, the first
    /// page says so ([`HistoryPage::trimmed_before_ms`]) and holds what is
    /// left, possibly nothing; [`get`](Self::get) then has the job table's
    /// view of the job, while it is in memory.
    pub async fn history(&self, job_id: &str, page_token: Option<&str>, limit: u32) -> Result<HistoryPage> {
        let request = v1::HistoryRequest {
            job_id: job_id.to_owned(),
            page_token: page_token.unwrap_or_default().to_owned(),
            limit,
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.history(request).await
            })
            .await?
            .into_inner();
        Ok(HistoryPage {
            items: response.events.into_iter().map(JobEvent::from_proto).collect(),
            next_page_token: non_empty(response.next_page_token),
            trimmed_before_ms: response.trimmed_before_ms,
        })
    }

    /// Makes one dead job available again, with a fresh budget of attempts.
    /// `FAILED_PRECONDITION` if it is not dead.
    pub async fn retry_dead(&self, job_id: &str) -> Result<()> {
        self.retry_dead_target(v1::retry_dead_request::Target::JobId(job_id.to_owned()))
            .await
            .map(drop)
    }

    /// Makes the dead jobs matching `filter` available again, at most
    /// `filter.limit` of them; returns how many.
    pub async fn retry_dead_matching(&self, filter: &DeadFilter) -> Result<u64> {
        self.retry_dead_target(v1::retry_dead_request::Target::Filter(filter.to_proto()))
            .await
    }

    async fn retry_dead_target(&self, target: v1::retry_dead_request::Target) -> Result<u64> {
        let request = v1::RetryDeadRequest {
            target: Some(target),
            dry_run: false,
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.retry_dead(request).await
            })
            .await?;
        Ok(response.into_inner().retried_count)
    }

    /// Removes one dead job from the job table (its history stays in the
    /// log). `FAILED_PRECONDITION` if it is not dead.
    pub async fn purge_dead(&self, job_id: &str) -> Result<()> {
        self.purge_dead_target(v1::purge_dead_request::Target::JobId(job_id.to_owned()))
            .await
            .map(drop)
    }

    /// Removes the dead jobs matching `filter`, at most `filter.limit` of
    /// them; returns how many.
    pub async fn purge_dead_matching(&self, filter: &DeadFilter) -> Result<u64> {
        self.purge_dead_target(v1::purge_dead_request::Target::Filter(filter.to_proto()))
            .await
    }

    async fn purge_dead_target(&self, target: v1::purge_dead_request::Target) -> Result<u64> {
        let request = v1::PurgeDeadRequest {
            target: Some(target),
            dry_run: false,
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.purge_dead(request).await
            })
            .await?;
        Ok(response.into_inner().purged_count)
    }

    /// Cancels a job: at once if it is waiting; if it is running, its
    /// worker is told on its next heartbeat. `FAILED_PRECONDITION` for a
    /// job that succeeded or is dead.
    pub async fn cancel(&self, job_id: &str) -> Result<CancelOutcome> {
        let request = v1::CancelRequest {
            job_id: job_id.to_owned(),
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.cancel(request).await
            })
            .await?
            .into_inner();
        Ok(if response.cancel_requested {
            CancelOutcome::Requested
        } else {
            CancelOutcome::Cancelled
        })
    }

    /// Counts per state, rates, totals since the server started, latency
    /// percentiles and connected workers of `queue` (zero counts for a
    /// known queue the server holds no job of; `NOT_FOUND` for a queue no
    /// job was ever enqueued to).
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let request = v1::QueueStatsRequest {
            queue: queue.to_owned(),
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.queue_stats(request).await
            })
            .await?;
        Ok(QueueStats::from_proto(response.into_inner()))
    }

    /// Pauses a queue: claims hand out none of its jobs until it is
    /// resumed; the pause survives restarts. False when it was paused
    /// already.
    pub async fn pause_queue(&self, queue: &str) -> Result<bool> {
        let request = v1::PauseQueueRequest {
            queue: queue.to_owned(),
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.pause_queue(request).await
            })
            .await?;
        Ok(response.into_inner().changed)
    }

    /// Resumes a paused queue. False when it was not paused.
    pub async fn resume_queue(&self, queue: &str) -> Result<bool> {
        let request = v1::ResumeQueueRequest {
            queue: queue.to_owned(),
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.resume_queue(request).await
            })
            .await?;
        Ok(response.into_inner().changed)
    }

    /// Changes a queue's own settings (see [`QueueConfigChange`]) and
    /// returns them all; the server keeps them across restarts. A queue
    /// not yet known becomes known.
    pub async fn configure_queue(&self, queue: &str, change: &QueueConfigChange) -> Result<QueueConfig> {
        let request = change.to_request(queue);
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.configure_queue(request).await
            })
            .await?;
        Ok(QueueConfig::from_proto(
            response.into_inner().config.unwrap_or_default(),
        ))
    }

    /// Deletes a queue and purges its jobs; returns how many. Refused
    /// (`FailedPrecondition`) while some of its jobs run, unless `force`.
    pub async fn delete_queue(&self, queue: &str, force: bool) -> Result<u64> {
        let request = v1::DeleteQueueRequest {
            queue: queue.to_owned(),
            force,
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.delete_queue(request).await
            })
            .await?;
        Ok(response.into_inner().purged_count)
    }

    /// Every queue the server knows (one a job was ever enqueued to or
    /// that was configured, and not deleted since), with its jobs by state
    /// and its settings, sorted by name.
    pub async fn list_queues(&self) -> Result<Vec<QueueSummary>> {
        let response = self
            .call(
                v1::ListQueuesRequest {},
                Duration::ZERO,
                |mut jobs, request| async move { jobs.list_queues(request).await },
            )
            .await?;
        Ok(response
            .into_inner()
            .queues
            .into_iter()
            .map(QueueSummary::from_proto)
            .collect())
    }

    /// Claims up to `claim.max_jobs` jobs, waiting up to `claim.max_wait`
    /// when none is available; possibly none.
    pub async fn claim(&self, claim: &Claim) -> Result<Vec<ClaimedJob>> {
        let request = v1::ClaimRequest {
            queues: claim.queues.clone(),
            max_jobs: claim.max_jobs,
            lease_ms: millis(claim.lease),
            max_wait_ms: u32::try_from(claim.max_wait.as_millis()).unwrap_or(u32::MAX),
            worker_id: claim.worker_id.clone(),
        };
        let response = self
            .call(request, claim.max_wait, |mut jobs, request| async move {
                jobs.claim(request).await
            })
            .await?
            .into_inner();
        Ok(response.jobs.into_iter().map(ClaimedJob::from_proto).collect())
    }

    /// Records the outcomes of claimed jobs in one request. Each item
    /// succeeds or fails on its own: one result per item, in order, with the
    /// state the job went to (`succeeded`; for a failure `scheduled` or
    /// `available` for a retry, `dead`, or `cancelled` when cancellation was
    /// requested), or the error the same single call would have got (a
    /// stale lease token is `FAILED_PRECONDITION`).
    pub async fn finish(&self, outcomes: Vec<Finish>) -> Result<Vec<Result<Option<JobState>>>> {
        let count = outcomes.len();
        let request = v1::FinishBatchRequest {
            items: outcomes.into_iter().map(Finish::into_proto).collect(),
        };
        let response = self
            .call(request, Duration::ZERO, |mut jobs, request| async move {
                jobs.finish_batch(request).await
            })
            .await?
            .into_inner();
        if response.results.len() != count {
            return Err(Error::protocol(format!(
                "FinishBatch of {count} outcomes answered {} results",
                response.results.len()
            )));
        }
        Ok(response.results.into_iter().map(finish_result).collect())
    }
}

/// One item's result of a FinishBatch.
fn finish_result(result: v1::FinishResult) -> Result<Option<JobState>> {
    let code = Code::from(i32::try_from(result.code).unwrap_or(i32::MAX));
    if code == Code::Ok {
        Ok(JobState::from_proto(result.state))
    } else {
        Err(Error::from(Status::new(code, result.message)))
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// Whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_results_map_to_the_client_s_errors() {
        let ok = finish_result(v1::FinishResult {
            job_id: "1".into(),
            code: 0,
            message: String::new(),
            state: v1::JobState::Dead as i32,
        });
        assert_eq!(ok.unwrap(), Some(JobState::Dead));
        let stale = finish_result(v1::FinishResult {
            job_id: "1".into(),
            code: Code::FailedPrecondition as u32,
            message: "stale lease token".into(),
            state: 0,
        })
        .unwrap_err();
        assert_eq!(stale.code(), Some(Code::FailedPrecondition));
        let missing = finish_result(v1::FinishResult {
            job_id: "2".into(),
            code: Code::NotFound as u32,
            message: "no job 2".into(),
            state: 0,
        });
        assert!(matches!(missing, Err(Error::NotFound { .. })));
    }
}
