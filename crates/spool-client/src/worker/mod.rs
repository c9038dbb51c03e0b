//! The worker runtime: runs handlers for jobs of `spool.v1.Jobs` queues.
//!
//! A [`Worker`] claims jobs for the queues it has handlers for and runs each
//! in its own task:
//!
//! - **Bounded concurrency.** At most [`WorkerConfig::concurrency`] handlers
//!   run at once; [`WorkerConfig::prefetch`] more jobs may wait claimed (and
//!   heartbeated) for a slot.
//! - **Batched claims.** One `Claim` asks for as many jobs as there are free
//!   slots and long-polls ([`WorkerConfig::claim_wait`]) when none is
//!   available. Up to two claims are in flight: while one waits for its
//!   answer, a second goes out once half the capacity is free, so a busy
//!   worker does not idle for a round trip.
//! - **Batched acknowledgements.** Outcomes are collected for
//!   [`WorkerConfig::ack_linger`] and sent together with `FinishBatch` (one
//!   fsync on the server for the lot).
//! - **Heartbeats.** While a job is claimed the worker extends its lease
//!   every third of the lease, sending the progress the handler reported
//!   with [`Job::set_progress`]. A heartbeat that says the job was cancelled
//!   resolves [`Job::cancelled`]; one refused because the lease is gone
//!   resolves [`Job::stopped`] with [`StopReason::LeaseLost`].
//! - **Timeouts.** An attempt may run for the job's own timeout, else
//!   [`WorkerConfig::timeout`], counted from the claim as the server counts
//!   it; then the handler's future is dropped and the attempt failed.
//! - **Graceful shutdown.** When the future given to [`Worker::run_until`]
//!   resolves, the worker stops claiming, gives back (`Release`) the jobs it
//!   claimed but has not started, so they are offered again at once without
//!   using an attempt, and lets running handlers finish within
//!   [`WorkerConfig::grace`]; after that it drops them and releases their
//!   jobs too. Outcomes not yet sent are flushed before it returns.
//! - **Reconnection.** While the server is unreachable the worker retries
//!   with exponential backoff and jitter; tonic reconnects the channel on
//!   the next call.
//!
//! Delivery is at least once: a job whose lease ran out (a crashed or
//! partitioned worker) runs again, possibly while the first run is still
//! going. Each [`Job`] carries its id, queue, attempt and attempts_max,
//! headers and payload so a handler can make its side effects idempotent,
//! for example by recording the job id with the effect in one transaction.
//!
//! Layout: `mod.rs` (configuration, [`Worker::run_until`] and the shutdown
//! sequence), `claimer.rs` (the claim loop), `attempt.rs` (one claimed job:
//! slot, heartbeats, timeout, handler, release), `acks.rs` (batched
//! acknowledgements), `slots.rs` (run slots by priority and claim order),
//! `job.rs` ([`Job`]), `handler.rs` ([`Handler`], [`Outcome`]),
//! `backoff.rs`, `error.rs`.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use spool_client::Client;
//! use spool_client::worker::{Job, Outcome, Worker, WorkerConfig};
//!
//! # async fn send_email(_to: &[u8], _key: &str) -> Result<String, std::io::Error> { Ok(String::new()) }
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("http://127.0.0.1:7070").await?;
//! let config = WorkerConfig {
//!     concurrency: 8,
//!     lease: Duration::from_secs(30),
//!     timeout: Some(Duration::from_secs(60)),
//!     ..WorkerConfig::default()
//! };
//! let report = Worker::new(&client, config)
//!     .handle("emails", |job: Job| async move {
//!         if job.payload().is_empty() {
//!             return Outcome::fail_permanently("no recipient");
//!         }
//!         // The job id doubles as the provider's idempotency key, so a
//!         // second delivery of the same job does not send a second email.
//!         tokio::select! {
//!             sent = send_email(job.payload(), job.id()) => Outcome::from(sent),
//!             () = job.cancelled() => Outcome::fail_permanently("cancelled"),
//!         }
//!     })
//!     .run_until(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! println!("{} jobs completed", report.completed);
//! # Ok(())
//! # }
//! ```

mod acks;
mod attempt;
mod backoff;
mod claimer;
mod error;
mod handler;
mod job;
mod slots;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::jobs::JobsRoute;
use spool_proto::v1;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tonic::Code;

pub use error::WorkerError;
pub use handler::{Handler, Outcome};
pub use job::{Job, StopReason};

use crate::Client;
use acks::{Ack, AckSettings};
use handler::DynHandler;
use slots::RunSlots;

/// Most jobs one `Claim` asks for (the server's default `claim_jobs_max`).
pub const CLAIM_JOBS_MAX: usize = 1_000;
/// Most handlers plus prefetched jobs one worker holds.
pub const CAPACITY_MAX: usize = 100_000;
/// Shortest lease a worker asks for: heartbeats go every third of it.
pub const LEASE_MIN: Duration = Duration::from_millis(100);
/// Longest lease (the server's default `lease_ms_max`).
pub const LEASE_MAX: Duration = Duration::from_secs(12 * 3600);
/// Shortest long poll: a worker never polls in a tight loop.
pub const CLAIM_WAIT_MIN: Duration = Duration::from_millis(100);
/// Longest long poll (the server's default `claim_wait_ms_max`).
pub const CLAIM_WAIT_MAX: Duration = Duration::from_secs(60);

/// How a [`Worker`] claims and runs jobs. Every field has a default.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Handlers running at once (default 10).
    pub concurrency: usize,
    /// Jobs claimed ahead of a free slot, waiting (heartbeated) to start
    /// (default 0). Their timeout runs from the claim, as on the server.
    pub prefetch: usize,
    /// Lease asked for each job (default 30 s). The worker heartbeats every
    /// third of it; a crashed worker's jobs run again after about a lease.
    pub lease: Duration,
    /// Longest an attempt may run when the job has no timeout of its own,
    /// counted from its claim (default `None`: no limit).
    pub timeout: Option<Duration>,
    /// Delay before the retry of an attempt the worker itself fails (a
    /// timeout); `None` takes the server's backoff (default).
    pub retry_delay: Option<Duration>,
    /// Long poll of one `Claim` when no job is available (default 2 s). At
    /// shutdown the worker waits for a claim in flight to return (and
    /// releases what it brings), so this also bounds an idle worker's
    /// shutdown time.
    pub claim_wait: Duration,
    /// How long outcomes are collected before a `FinishBatch` is sent
    /// (default 5 ms).
    pub ack_linger: Duration,
    /// Most outcomes per `FinishBatch` (default 500).
    pub ack_batch_max: usize,
    /// Most bytes of results and errors per `FinishBatch` (default 4 MiB,
    /// under the server's 16 MiB request limit).
    pub ack_batch_bytes_max: usize,
    /// At shutdown, how long running handlers may go on (default 30 s).
    pub grace: Duration,
    /// At shutdown, how long the worker keeps trying to deliver outcomes and
    /// releases to an unreachable server before it gives up (default 10 s):
    /// the jobs concerned then run again after their leases expire.
    pub flush_timeout: Duration,
    /// Deadline of a heartbeat, release or acknowledgement call (default
    /// 10 s).
    pub request_timeout: Duration,
    /// First delay before retrying a call after the server was unavailable
    /// (default 100 ms); it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest delay between retries (default 10 s).
    pub backoff_max: Duration,
    /// Name recorded in the job history of the jobs this worker claims
    /// (default `<hostname>-<pid>`).
    pub worker_id: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 10,
            prefetch: 0,
            lease: Duration::from_secs(30),
            timeout: None,
            retry_delay: None,
            claim_wait: Duration::from_secs(2),
            ack_linger: Duration::from_millis(5),
            ack_batch_max: 500,
            ack_batch_bytes_max: 4 << 20,
            grace: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            worker_id: default_worker_id(),
        }
    }
}

impl WorkerConfig {
    /// Checks every setting against its range.
    pub fn validate(&self) -> Result<(), WorkerError> {
        let invalid = |field, reason: String| Err(WorkerError::InvalidConfig { field, reason });
        if self.concurrency == 0 {
            return invalid("concurrency", "must be at least 1".into());
        }
        if self.concurrency.saturating_add(self.prefetch) > CAPACITY_MAX {
            return invalid(
                "concurrency",
                format!("concurrency plus prefetch must be at most {CAPACITY_MAX}"),
            );
        }
        if self.lease < LEASE_MIN || self.lease > LEASE_MAX {
            return invalid(
                "lease",
                format!("{:?} is outside {LEASE_MIN:?} to {LEASE_MAX:?}", self.lease),
            );
        }
        if self.timeout == Some(Duration::ZERO) {
            return invalid("timeout", "must be more than zero (None for no limit)".into());
        }
        if self.claim_wait < CLAIM_WAIT_MIN || self.claim_wait > CLAIM_WAIT_MAX {
            return invalid(
                "claim_wait",
                format!(
                    "{:?} is outside {CLAIM_WAIT_MIN:?} to {CLAIM_WAIT_MAX:?}",
                    self.claim_wait
                ),
            );
        }
        if self.ack_batch_max == 0 || self.ack_batch_max > CLAIM_JOBS_MAX {
            return invalid("ack_batch_max", format!("must be between 1 and {CLAIM_JOBS_MAX}"));
        }
        if self.ack_batch_bytes_max < 1024 {
            return invalid("ack_batch_bytes_max", "must be at least 1 KiB".into());
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be more than zero".into());
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return invalid(
                "backoff_min",
                "must be more than zero and at most backoff_max".into(),
            );
        }
        if self.worker_id.len() > 256 {
            return invalid("worker_id", "must be at most 256 bytes".into());
        }
        Ok(())
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// What a worker did, returned by [`Worker::run_until`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// `Claim` calls answered (with jobs or empty after their long poll).
    pub claims: u64,
    /// Jobs claimed.
    pub claimed: u64,
    /// `FinishBatch` calls answered.
    pub finish_batches: u64,
    /// Jobs completed (SUCCEEDED).
    pub completed: u64,
    /// Failed attempts that the server will retry.
    pub retried: u64,
    /// Failed attempts that sent their job DEAD.
    pub dead: u64,
    /// Failed attempts of cancelled jobs (CANCELLED).
    pub cancelled: u64,
    /// Jobs given back unrun (or stopped at the end of the grace period).
    pub released: u64,
    /// Attempts whose outcome was not recorded: the lease was gone, or the
    /// server refused it.
    pub lost: u64,
}

/// Counters behind [`WorkerReport`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    claims: AtomicU64,
    claimed: AtomicU64,
    finish_batches: AtomicU64,
    completed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    cancelled: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
}

impl Stats {
    /// Counts one answered `Claim` that brought `count` jobs.
    pub(crate) fn add_claim(&self, count: u64) {
        self.claims.fetch_add(1, Ordering::Relaxed);
        self.claimed.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn add_finish_batch(&self) {
        self.finish_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_released(&self) {
        self.released.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_lost(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an outcome the server recorded, by the state it left the job
    /// in.
    pub(crate) fn record(&self, state: v1::JobState) {
        let counter = match state {
            v1::JobState::Succeeded => &self.completed,
            v1::JobState::Scheduled | v1::JobState::Available => &self.retried,
            v1::JobState::Dead => &self.dead,
            v1::JobState::Cancelled => &self.cancelled,
            v1::JobState::Running | v1::JobState::Unspecified => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> WorkerReport {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WorkerReport {
            claims: get(&self.claims),
            claimed: get(&self.claimed),
            finish_batches: get(&self.finish_batches),
            completed: get(&self.completed),
            retried: get(&self.retried),
            dead: get(&self.dead),
            cancelled: get(&self.cancelled),
            released: get(&self.released),
            lost: get(&self.lost),
        }
    }
}

/// Where the worker is in its life; only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Claiming and running.
    Running,
    /// Shutting down: no more claims; jobs not started are released,
    /// running handlers go on.
    Draining,
    /// The grace period is over: running handlers are dropped and their
    /// jobs released.
    Aborting,
}

/// Resolves once the worker has reached `phase`.
pub(crate) async fn reached(receiver: &mut watch::Receiver<Phase>, phase: Phase) {
    // An error means the sender is gone, which only happens once everything
    // is over: resolving then is right too.
    let _ = receiver.wait_for(|current| *current >= phase).await;
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Statuses worth retrying after a pause rather than giving up on.
pub(crate) fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
    )
}

/// What the claimer and the job tasks share.
pub(crate) struct Shared {
    pub(crate) jobs: JobsRoute,
    pub(crate) config: WorkerConfig,
    pub(crate) handlers: HashMap<String, Arc<dyn DynHandler>>,
    pub(crate) queues: Vec<String>,
    /// One permit per job held (running or waiting): concurrency + prefetch.
    pub(crate) claim_slots: Arc<Semaphore>,
    /// One slot per running handler, handed out by priority and claim
    /// order.
    pub(crate) run_slots: Arc<RunSlots>,
    /// Numbers claimed jobs in the order they were handed out.
    pub(crate) claim_sequence: AtomicU64,
    pub(crate) phase: watch::Sender<Phase>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) acks: mpsc::Sender<Ack>,
}

/// Runs handlers for jobs; see the [module documentation](self).
pub struct Worker {
    jobs: JobsRoute,
    config: WorkerConfig,
    handlers: HashMap<String, Arc<dyn DynHandler>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut queues: Vec<&String> = self.handlers.keys().collect();
        queues.sort();
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("queues", &queues)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker on `client`'s connection, with no handlers yet.
    pub fn new(client: &Client, config: WorkerConfig) -> Self {
        Worker {
            jobs: client.jobs_route(),
            config,
            handlers: HashMap::new(),
        }
    }

    /// Runs `handler` for the jobs of `queue`; a second handler for the same
    /// queue replaces the first.
    pub fn handle(mut self, queue: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(queue.into(), Arc::new(handler));
        self
    }

    /// The queues that have a handler, sorted.
    pub fn queues(&self) -> Vec<&str> {
        let mut queues: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        queues.sort_unstable();
        queues
    }

    /// Claims and runs jobs until `shutdown` resolves, then shuts down
    /// gracefully (see the [module documentation](self)) and reports what
    /// it did.
    ///
    /// An unreachable server is retried with backoff, never returned as an
    /// error. Errors: no handler, an invalid setting, or a claim the server
    /// refuses for good (such as an invalid queue name); in the last case
    /// the jobs already claimed are finished or released first.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport, WorkerError> {
        self.config.validate()?;
        if self.handlers.is_empty() {
            return Err(WorkerError::NoQueues);
        }
        let config = self.config;
        let capacity = config.concurrency + config.prefetch;
        let stats = Arc::new(Stats::default());
        let (ack_sender, ack_receiver) = mpsc::channel(capacity + config.ack_batch_max);
        let settings = AckSettings {
            linger: config.ack_linger,
            batch_max: config.ack_batch_max,
            batch_bytes_max: config.ack_batch_bytes_max,
            request_timeout: config.request_timeout,
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max,
        };
        let mut acks = tokio::spawn(acks::run(
            self.jobs.clone(),
            ack_receiver,
            settings,
            Arc::clone(&stats),
        ));
        let mut queues: Vec<String> = self.handlers.keys().cloned().collect();
        queues.sort();
        tracing::info!(
            ?queues,
            concurrency = config.concurrency,
            prefetch = config.prefetch,
            lease_ms = config.lease.as_millis() as u64,
            worker_id = %config.worker_id,
            "worker started"
        );
        let shared = Arc::new(Shared {
            jobs: self.jobs,
            run_slots: RunSlots::new(config.concurrency),
            claim_sequence: AtomicU64::new(0),
            claim_slots: Arc::new(Semaphore::new(capacity)),
            phase: watch::Sender::new(Phase::Running),
            handlers: self.handlers,
            queues,
            stats: Arc::clone(&stats),
            acks: ack_sender,
            config,
        });
        let grace = shared.config.grace;
        let flush_timeout = shared.config.flush_timeout;

        let mut claimer = tokio::spawn(claimer::run(Arc::clone(&shared)));
        let mut claimed = None;
        tokio::select! {
            done = &mut claimer => claimed = Some(done),
            () = shutdown => tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "shutting down: no more claims; jobs not started are released, running jobs may finish within the grace period"
            ),
        }
        let grace_end = tokio::time::Instant::now() + grace;
        shared.phase.send_replace(Phase::Draining);
        let claimed = match claimed {
            Some(done) => done,
            None => {
                // The claim in flight returns within its long poll; what it
                // brings is released.
                let done = tokio::time::timeout_at(grace_end, &mut claimer).await;
                match done {
                    Ok(done) => done,
                    Err(_) => {
                        shared.phase.send_replace(Phase::Aborting);
                        (&mut claimer).await
                    }
                }
            }
        };
        let (result, tasks) = match claimed {
            Ok(done) => done,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("the claim loop was cancelled: {error}"),
        };
        if let Err(WorkerError::ClaimRefused { source }) = &result {
            tracing::error!(error = %source, "the server refused to hand out jobs; stopping");
        }
        drain(&shared, tasks, grace_end, flush_timeout).await;
        drop(shared);
        // Every sender is gone now: the acknowledgement task sends what is
        // left and ends.
        if tokio::time::timeout(flush_timeout, &mut acks).await.is_err() {
            acks.abort();
            tracing::warn!(
                "gave up sending the last job results to an unreachable server; those jobs run again after their leases expire"
            );
        }
        let report = stats.report();
        tracing::info!(
            claimed = report.claimed,
            completed = report.completed,
            retried = report.retried,
            dead = report.dead,
            cancelled = report.cancelled,
            released = report.released,
            lost = report.lost,
            "worker stopped"
        );
        result.map(|()| report)
    }
}

/// Waits for the job tasks: until `grace_end` as they are, then after
/// telling them to stop, and at most `flush_timeout` more.
async fn drain(
    shared: &Shared,
    mut tasks: JoinSet<()>,
    grace_end: tokio::time::Instant,
    flush_timeout: Duration,
) {
    let running = tasks.len();
    if running > 0 {
        tracing::info!(
            jobs = running,
            "waiting for claimed jobs to finish or be released"
        );
    }
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(result) => claimer::check(result),
                None => return,
            },
            () = tokio::time::sleep_until(grace_end), if *shared.phase.borrow() < Phase::Aborting => {
                tracing::warn!(jobs = tasks.len(), "the grace period is over: stopping the jobs still running and releasing them");
                shared.phase.send_replace(Phase::Aborting);
            }
        }
        if *shared.phase.borrow() == Phase::Aborting {
            break;
        }
    }
    let abort_end = tokio::time::Instant::now() + flush_timeout;
    while let Ok(Some(result)) = tokio::time::timeout_at(abort_end, tasks.join_next()).await {
        claimer::check(result);
    }
    if !tasks.is_empty() {
        tracing::warn!(
            jobs = tasks.len(),
            "could not release every job to an unreachable server; they run again after their leases expire"
        );
        tasks.abort_all();
    }
}

#[cfg(test)]
mod tests;
