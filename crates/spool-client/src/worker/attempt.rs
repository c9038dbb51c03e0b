//! One claimed job: wait for a run slot, heartbeat, run the handler within
//! the timeout, hand the outcome to the acknowledgement task, or release the
//! job at shutdown.

use std::any::Any;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use spool_proto::v1;
use spool_telemetry::{MESSAGING_SYSTEM, TARGET, TRACEPARENT, TRACESTATE};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tonic::Code;
use tracing::Instrument;

use super::acks::Ack;
use super::backoff::Backoff;
use super::handler::Outcome;
use super::job::{Job, StopReason};
use super::slots::Ticket;
use super::{Phase, Shared, is_transient, reached, until};

/// Heartbeats never go out more often than this, even when the lease left is
/// tiny (near the end of a job's timeout).
const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(50);
/// Tries of a `Release` before the job is left to its lease.
const RELEASE_TRIES: u32 = 3;

/// Runs one claimed job to its end. `claim_slot` is held until the outcome
/// is queued for sending; `None` means the job came beyond what was asked
/// for and is released at once.
pub(crate) async fn run(
    shared: Arc<Shared>,
    claimed: v1::ClaimedJob,
    claimed_at: Instant,
    claim_slot: Option<OwnedSemaphorePermit>,
    ticket: Ticket,
) {
    let job = Job::new(claimed, claimed_at, shared.config.timeout);
    let process = crate::trace::process_span(
        job.queue(),
        job.id(),
        job.attempt(),
        job.headers().get(TRACEPARENT).map(String::as_str),
        job.headers().get(TRACESTATE).map(String::as_str),
    );
    let span = tracing::info_span!("job", id = job.id(), queue = job.queue(), attempt = job.attempt());
    async move {
        if claim_slot.is_none() {
            release(&shared, &job, "claimed beyond the free slots").await;
            return;
        }
        attempt(&shared, &job, ticket).await;
        drop(claim_slot);
    }
    .instrument(span)
    .instrument(process)
    .await;
}

async fn attempt(shared: &Shared, job: &Job, ticket: Ticket) {
    let Some(handler) = shared.handlers.get(job.queue()).cloned() else {
        release(shared, job, "no handler for this queue").await;
        return;
    };
    let mut phase = shared.phase.subscribe();
    let heartbeat = heartbeat(shared, job);
    tokio::pin!(heartbeat);
    let deadline = job.deadline();

    // Biased: once shutdown has begun, a slot freed at the same moment does
    // not start another job.
    let run_slot = tokio::select! {
        biased;
        () = reached(&mut phase, Phase::Draining) => {
            release(shared, job, "the worker is shutting down").await;
            return;
        }
        slot = ticket.ready() => slot,
        () = until(deadline) => {
            release(shared, job, "its timeout passed while it waited for a free slot").await;
            return;
        }
        reason = job.stopped() => {
            match reason {
                StopReason::Cancelled => {
                    let outcome = Outcome::fail_permanently("cancelled before it started");
                    acknowledge(shared, job, outcome).await;
                }
                _ => shared.stats.add_lost(),
            }
            return;
        }
        never = &mut heartbeat => match never {},
    };

    tracing::debug!("job started");
    let started = Instant::now();
    // The handler runs inside this task (one task per job, not two); a
    // panic in it fails the attempt instead of unwinding through the worker.
    let run = tracing::info_span!(
        target: TARGET,
        "run",
        otel.name = format_args!("run {}", job.queue()),
        otel.status_code = tracing::field::Empty,
    );
    let handler = run.in_scope(|| handler.call(job.clone()));
    let mut running = CatchUnwind { handler, span: run };
    let outcome = tokio::select! {
        joined = &mut running => Some(match joined {
            Ok(outcome) => outcome,
            Err(payload) => {
                let message = panic_message(payload);
                tracing::error!(%message, "the handler panicked");
                Outcome::retry(format!("the handler panicked: {message}"))
            }
        }),
        () = until(deadline) => {
            let timeout_ms = job.timeout().map_or(0, |t| t.as_millis() as u64);
            tracing::info!(timeout_ms, "the attempt timed out; stopping the handler");
            Some(Outcome::Fail {
                error: format!("timed out: the attempt ran longer than its timeout of {timeout_ms} ms"),
                retryable: true,
                retry_delay: shared.config.retry_delay,
            })
        }
        () = reached(&mut phase, Phase::Aborting) => None,
        never = &mut heartbeat => match never {},
    };
    // Stops the handler if it is still running (timeout, end of grace);
    // its span ends with the attempt's run.
    let run = running.stop();
    if !matches!(outcome, Some(Outcome::Complete { .. })) {
        run.record("otel.status_code", "error");
    }
    drop(run);
    drop(run_slot);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match outcome {
        None => {
            tracing::warn!(
                elapsed_ms,
                "the grace period ended before the job did; stopping it"
            );
            release(shared, job, "the grace period ended").await;
        }
        Some(_) if job.stop_reason() == Some(StopReason::LeaseLost) => {
            shared.stats.add_lost();
            tracing::warn!(
                elapsed_ms,
                "the job ended after its lease was lost; its outcome is not reported"
            );
        }
        Some(outcome) => {
            match &outcome {
                Outcome::Complete { result } => {
                    tracing::debug!(elapsed_ms, result_bytes = result.len(), "job completed");
                }
                Outcome::Fail { error, retryable, .. } => {
                    tracing::info!(elapsed_ms, retryable, %error, "job failed");
                }
            }
            acknowledge(shared, job, outcome).await;
        }
    }
}

/// Queues an outcome for the next `FinishBatch`.
async fn acknowledge(shared: &Shared, job: &Job, outcome: Outcome) {
    let span = tracing::info_span!(
        target: TARGET,
        "settle",
        otel.name = format_args!(
            "{} {}",
            if outcome.is_complete() { "complete" } else { "fail" },
            job.queue()
        ),
        otel.kind = "client",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "settle",
        messaging.destination.name = job.queue(),
        messaging.message.id = job.id(),
    );
    let ack = Ack {
        job: job.clone(),
        outcome,
        span,
    };
    if shared.acks.send(ack).await.is_err() {
        tracing::error!("the acknowledgement task has stopped; the job runs again after its lease expires");
    }
}

/// Extends the lease every third of it, forever; marks the job cancelled or
/// its lease lost when a heartbeat says so.
///
/// Until the first heartbeat is due this is only a timer: the RPC loop,
/// whose futures are large, is boxed when it starts, so the many jobs that
/// end sooner never allocate it.
async fn heartbeat(shared: &Shared, job: &Job) -> Infallible {
    tokio::time::sleep(third(job.lease())).await;
    Box::pin(heartbeats(shared, job)).await
}

async fn heartbeats(shared: &Shared, job: &Job) -> Infallible {
    let lease_ms = shared.config.lease.as_millis() as u64;
    let mut interval = third(job.lease());
    loop {
        if job.stop_reason() == Some(StopReason::LeaseLost) {
            return std::future::pending().await;
        }
        let progress = job.take_progress();
        let span = tracing::info_span!(
            target: TARGET,
            "heartbeat",
            otel.name = format_args!("heartbeat {}", job.queue()),
            otel.kind = "client",
            spool.lease_ms = lease_ms,
        );
        let _entered = span.enter();
        let mut request = tonic::Request::new(v1::HeartbeatRequest {
            job_id: job.id().to_owned(),
            lease_token: job.lease_token().to_owned(),
            // Always explicit: an extension of 0 would take the server's
            // default lease, not the one this worker asked for.
            extend_ms: lease_ms,
            progress: progress.clone(),
        });
        request.set_timeout(shared.config.request_timeout.min(job.lease()));
        crate::trace::inject(&mut request);
        drop(_entered);
        match shared.jobs.target().heartbeat(request).instrument(span).await {
            Ok(response) => {
                let response = response.into_inner();
                if response.cancel_requested && job.stop(StopReason::Cancelled) {
                    tracing::info!("the job was cancelled; telling the handler");
                }
                interval = third(Duration::from_millis(response.lease_ms));
            }
            // Cluster mode: sent to a node that does not lead the job
            // layer; the next heartbeat goes to the leader it named.
            Err(status) if shared.jobs.follow(&status) => {
                if let Some(progress) = progress {
                    job.restore_progress(progress);
                }
                interval = crate::jobs::FOLLOW_PAUSE;
            }
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                if job.stop(StopReason::LeaseLost) {
                    tracing::warn!(
                        reason = status.message(),
                        "the server no longer holds this worker's lease on the job; telling the handler"
                    );
                }
            }
            Err(status) => {
                if let Some(progress) = progress {
                    job.restore_progress(progress);
                }
                tracing::warn!(error = %crate::Error::from(status), "heartbeat failed; trying again");
                interval = third(job.lease()).min(Duration::from_secs(1));
            }
        }
        tokio::time::sleep(interval).await;
    }
}

fn third(lease: Duration) -> Duration {
    (lease / 3).max(HEARTBEAT_INTERVAL_MIN)
}

/// Gives a job back unrun: available again at once, the attempt not
/// counted.
async fn release(shared: &Shared, job: &Job, why: &str) {
    if job.is_cancelled() {
        // A released job goes back to AVAILABLE even when its cancellation
        // was requested; a failure ends it CANCELLED as the client asked.
        acknowledge(shared, job, Outcome::fail_permanently("cancelled")).await;
        return;
    }
    let mut backoff = Backoff::new(shared.config.backoff_min, shared.config.backoff_max);
    for try_number in 1..=RELEASE_TRIES {
        let mut request = tonic::Request::new(v1::ReleaseRequest {
            job_id: job.id().to_owned(),
            lease_token: job.lease_token().to_owned(),
        });
        request.set_timeout(shared.config.request_timeout);
        crate::trace::inject(&mut request);
        match shared.jobs.target().release(request).await {
            Ok(_) => {
                shared.stats.add_released();
                tracing::info!(
                    why,
                    "job released: available again at once, the attempt not counted"
                );
                return;
            }
            Err(status) if shared.jobs.follow(&status) => {
                tracing::debug!(
                    "release sent to a node that does not lead the job layer; sending it to the leader"
                );
                tokio::time::sleep(crate::jobs::FOLLOW_PAUSE).await;
            }
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                shared.stats.add_lost();
                tracing::debug!(
                    why,
                    reason = status.message(),
                    "nothing to release: the lease is already gone"
                );
                return;
            }
            Err(status) if is_transient(status.code()) && try_number < RELEASE_TRIES => {
                tracing::debug!(error = %crate::Error::from(status), "release failed; trying again");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(status) => {
                shared.stats.add_lost();
                tracing::warn!(
                    why,
                    error = %crate::Error::from(status),
                    "could not release the job; it runs again after its lease expires"
                );
                return;
            }
        }
    }
}

/// A handler task that is stopped when this is dropped.
/// Polls a handler's future in place, turning a panic into an error.
/// Dropping it stops the handler (timeout, end of the grace period).
/// The handler runs inside the attempt's `run {queue}` span.
struct CatchUnwind {
    handler: super::handler::BoxedOutcome,
    span: tracing::Span,
}

impl CatchUnwind {
    /// Drops the handler (stopping it if it still runs) and hands back
    /// its span, which the caller ends.
    fn stop(self) -> tracing::Span {
        let CatchUnwind { handler, span } = self;
        let _entered = span.enter();
        drop(handler);
        drop(_entered);
        span
    }
}

impl std::future::Future for CatchUnwind {
    type Output = Result<Outcome, Box<dyn Any + Send>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        let _entered = this.span.enter();
        let inner = this.handler.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(outcome)) => std::task::Poll::Ready(Ok(outcome)),
            Err(payload) => std::task::Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    }
}
