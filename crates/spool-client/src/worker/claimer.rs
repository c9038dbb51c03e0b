//! The claim loop: asks for as many jobs as there are free slots, long-polls
//! when none is available, backs off while the server is unreachable, and
//! starts a task per claimed job.

use std::sync::Arc;

use spool_proto::v1;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::{CLAIM_JOBS_MAX, Phase, Shared, WorkerError, attempt, is_transient, reached};

/// Claims until the worker leaves [`Phase::Running`] or the server refuses
/// for good; returns why it stopped and the tasks of the jobs it claimed.
///
/// A claim in flight when shutdown begins is awaited, not dropped: the
/// server may hand jobs to a long poll whose caller just went away (they
/// would then sit leased by nobody until the lease expires), so the worker
/// takes them and releases them instead.
pub(crate) async fn run(shared: Arc<Shared>) -> (Result<(), WorkerError>, JoinSet<()>) {
    let mut tasks = JoinSet::new();
    let mut phase = shared.phase.subscribe();
    let config = &shared.config;
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    let result = loop {
        while let Some(result) = tasks.try_join_next() {
            check(result);
        }
        if *phase.borrow() != Phase::Running {
            break Ok(());
        }
        let first = tokio::select! {
            permit = Arc::clone(&shared.claim_slots).acquire_owned() => {
                permit.expect("the claim semaphore is never closed")
            }
            () = reached(&mut phase, Phase::Draining) => continue,
            Some(result) = tasks.join_next() => {
                check(result);
                continue;
            }
        };
        let mut permits = vec![first];
        while permits.len() < CLAIM_JOBS_MAX {
            match Arc::clone(&shared.claim_slots).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let mut request = tonic::Request::new(v1::ClaimRequest {
            queues: shared.queues.clone(),
            max_jobs: permits.len() as u32,
            lease_ms: config.lease.as_millis() as u64,
            max_wait_ms: config.claim_wait.as_millis() as u32,
            worker_id: config.worker_id.clone(),
        });
        request.set_timeout(config.claim_wait + config.request_timeout);
        let asked_at = Instant::now();
        match shared.jobs.clone().claim(request).await {
            Ok(response) => {
                let claimed_at = Instant::now();
                let jobs = response.into_inner().jobs;
                shared.stats.add_claimed(jobs.len() as u64);
                if jobs.is_empty() && claimed_at - asked_at < config.claim_wait / 2 {
                    // A long poll that comes back empty long before its time
                    // is a server shutting down: do not hammer it.
                    drop(permits);
                    let delay = backoff.next_delay();
                    tracing::debug!(
                        delay_ms = delay.as_millis() as u64,
                        "the server answered a claim early with no jobs"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = reached(&mut phase, Phase::Draining) => {}
                    }
                    continue;
                }
                if backoff.failures() > 0 {
                    tracing::info!("reached the server again");
                }
                backoff.reset();
                if !jobs.is_empty() {
                    tracing::debug!(jobs = jobs.len(), asked = permits.len(), "claimed jobs");
                }
                start(&shared, &mut tasks, jobs, permits, claimed_at);
            }
            Err(status) if is_transient(status.code()) => {
                drop(permits);
                let delay = backoff.next_delay();
                let error = crate::Error::from(status);
                if backoff.failures() == 1 {
                    tracing::warn!(%error, "cannot claim jobs; retrying with backoff until the server answers");
                } else {
                    tracing::debug!(%error, failures = backoff.failures(), delay_ms = delay.as_millis() as u64, "cannot claim jobs");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = reached(&mut phase, Phase::Draining) => {}
                }
            }
            Err(status) => {
                break Err(WorkerError::ClaimRefused {
                    source: crate::Error::from(status),
                });
            }
        }
    };
    (result, tasks)
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
