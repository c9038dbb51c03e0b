//! The claim loop: asks for as many jobs as there are free slots, long-polls
//! when none is available, backs off while the server is unreachable, and
//! starts a task per claimed job.
//!
//! Claims are pipelined: while one is in flight (a round trip includes the
//! server's fsync of the claim), the slots that free up are gathered and a
//! second claim goes out once half the capacity is free, so a busy worker
//! never sits idle waiting for an answer, and a claim for a handful of
//! slots never holds back the rest.

use std::sync::Arc;

use spool_proto::v1;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::{CLAIM_JOBS_MAX, Phase, Shared, WorkerError, attempt, is_transient, reached, until};

/// Claims in flight at once.
const CLAIMS_IN_FLIGHT_MAX: usize = 2;

/// A claim's answer with the slots it was asked for.
struct Answer {
    result: Result<tonic::Response<v1::ClaimResponse>, tonic::Status>,
    permits: Vec<OwnedSemaphorePermit>,
    asked_at: Instant,
}

/// Claims until the worker leaves [`Phase::Running`] or the server refuses
/// for good; returns why it stopped and the tasks of the jobs it claimed.
///
/// Claims in flight when shutdown begins are awaited, not dropped: the
/// server may hand jobs to a long poll whose caller just went away (they
/// would then sit leased by nobody until the lease expires), so the worker
/// takes them and releases them instead.
pub(crate) async fn run(shared: Arc<Shared>) -> (Result<(), WorkerError>, JoinSet<()>) {
    let mut tasks = JoinSet::new();
    let mut claims: JoinSet<Answer> = JoinSet::new();
    let mut phase = shared.phase.subscribe();
    let config = &shared.config;
    let capacity = config.concurrency + config.prefetch;
    // With a claim in flight, the next one waits for this many free slots.
    let pipelined_min = (capacity / 2).clamp(1, CLAIM_JOBS_MAX);
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    let mut paused_until: Option<Instant> = None;
    let mut gathered: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut result = Ok(());
    loop {
        while let Some(done) = tasks.try_join_next() {
            check(done);
        }
        if *phase.borrow() != Phase::Running || result.is_err() {
            break;
        }
        while gathered.len() < CLAIM_JOBS_MAX {
            match Arc::clone(&shared.claim_slots).try_acquire_owned() {
                Ok(permit) => gathered.push(permit),
                Err(_) => break,
            }
        }
        let paused = paused_until.is_some_and(|until| Instant::now() < until);
        let enough = if claims.is_empty() { 1 } else { pipelined_min };
        if !paused && claims.len() < CLAIMS_IN_FLIGHT_MAX && gathered.len() >= enough {
            send(&shared, &mut claims, std::mem::take(&mut gathered));
            continue;
        }
        tokio::select! {
            permit = Arc::clone(&shared.claim_slots).acquire_owned(), if gathered.len() < CLAIM_JOBS_MAX => {
                gathered.push(permit.expect("the claim semaphore is never closed"));
            }
            Some(answer) = claims.join_next() => {
                let answer = answer.expect("a claim task never panics and is never aborted");
                match settle(&shared, &mut tasks, answer, &mut backoff) {
                    Ok(Some(delay)) => paused_until = Some(Instant::now() + delay),
                    Ok(None) => paused_until = None,
                    Err(error) => result = Err(error),
                }
            }
            () = until(paused_until), if paused => paused_until = None,
            () = reached(&mut phase, Phase::Draining) => {}
            Some(done) = tasks.join_next() => check(done),
        }
    }
    drop(gathered);
    while let Some(answer) = claims.join_next().await {
        let answer = answer.expect("a claim task never panics and is never aborted");
        if let Err(error) = settle(&shared, &mut tasks, answer, &mut backoff)
            && result.is_ok()
        {
            result = Err(error);
        }
    }
    (result, tasks)
}

/// Sends one claim for `permits.len()` jobs.
fn send(shared: &Arc<Shared>, claims: &mut JoinSet<Answer>, permits: Vec<OwnedSemaphorePermit>) {
    let config = &shared.config;
    let mut request = tonic::Request::new(v1::ClaimRequest {
        queues: shared.queues.clone(),
        max_jobs: permits.len() as u32,
        lease_ms: config.lease.as_millis() as u64,
        max_wait_ms: config.claim_wait.as_millis() as u32,
        worker_id: config.worker_id.clone(),
    });
    request.set_timeout(config.claim_wait + config.request_timeout);
    let mut jobs = shared.jobs.target();
    claims.spawn(async move {
        let asked_at = Instant::now();
        let result = jobs.claim(request).await;
        Answer {
            result,
            permits,
            asked_at,
        }
    });
}

/// Starts the jobs a claim brought. Returns how long to pause claiming, if
/// at all, or the refusal that ends the worker.
fn settle(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    answer: Answer,
    backoff: &mut Backoff,
) -> Result<Option<std::time::Duration>, WorkerError> {
    let config = &shared.config;
    let Answer {
        result,
        permits,
        asked_at,
    } = answer;
    match result {
        Ok(response) => {
            let claimed_at = Instant::now();
            let jobs = response.into_inner().jobs;
            shared.stats.add_claim(jobs.len() as u64);
            if jobs.is_empty() && claimed_at - asked_at < config.claim_wait / 2 {
                // A long poll that comes back empty long before its time is
                // a server shutting down: do not hammer it.
                let delay = backoff.next_delay();
                tracing::debug!(
                    delay_ms = delay.as_millis() as u64,
                    "the server answered a claim early with no jobs"
                );
                return Ok(Some(delay));
            }
            if backoff.failures() > 0 {
                tracing::info!("reached the server again");
            }
            backoff.reset();
            if !jobs.is_empty() {
                tracing::debug!(jobs = jobs.len(), asked = permits.len(), "claimed jobs");
            }
            start(shared, tasks, jobs, permits, claimed_at);
            Ok(None)
        }
        // Cluster mode: asked a node that does not lead the job layer;
        // the next claim goes to the leader it named.
        Err(status) if shared.jobs.follow(&status) => Ok(Some(crate::jobs::FOLLOW_PAUSE)),
        Err(status) if is_transient(status.code()) => {
            let delay = backoff.next_delay();
            let error = crate::Error::from(status);
            if backoff.failures() == 1 {
                tracing::warn!(%error, "cannot claim jobs; retrying with backoff until the server answers");
            } else {
                tracing::debug!(%error, failures = backoff.failures(), delay_ms = delay.as_millis() as u64, "cannot claim jobs");
            }
            Ok(Some(delay))
        }
        Err(status) => Err(WorkerError::ClaimRefused {
            source: crate::Error::from(status),
        }),
    }
}

/// Starts a task per claimed job, each holding one claim slot.
fn start(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    jobs: Vec<v1::ClaimedJob>,
    permits: Vec<OwnedSemaphorePermit>,
    claimed_at: Instant,
) {
    let mut permits = permits.into_iter();
    for job in jobs {
        // Lines up for a run slot now, in the order the server handed the
        // jobs out (priority, then age), not in whatever order the tasks
        // first run.
        let sequence = shared
            .claim_sequence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ticket = shared.run_slots.enter(job.priority, sequence);
        let permit = permits.next();
        if permit.is_none() {
            tracing::error!(
                job = %job.job_id,
                "the server handed out more jobs than asked for; releasing the extra one"
            );
        }
        tasks.spawn(Box::pin(attempt::run(
            Arc::clone(shared),
            job,
            claimed_at,
            permit,
            ticket,
        )));
    }
}

/// Reports a job task that panicked (a handler bug); the job runs again
/// after its lease expires.
pub(crate) fn check(result: Result<(), JoinError>) {
    if let Err(error) = result
        && error.is_panic()
    {
        tracing::error!(%error, "a job task panicked; its job runs again after its lease expires");
    }
}
