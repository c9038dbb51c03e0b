//! Runs the job state machine on a thread of its own.
//!
//! Requests arrive over a channel; each turn of the loop takes every
//! request waiting, advances time, hands them to the core, appends all the
//! events they produced to the internal topic `__jobs` and asks the
//! partition's flusher for an fsync. It does not wait for that fsync: it
//! goes on with the next turn while the disk works (a pipeline), and each
//! answer carries the log offset its turn reached. The caller's future
//! awaits that offset's durability before it hands the answer out, so
//! nothing is acknowledged, and nothing read from the table is shown,
//! before every event it could depend on is on disk. Durability is
//! ordered, so answers of later turns never overtake the disk. A claim is
//! the one answer that does not wait for its own events: the lease's
//! fsync overlaps the worker's start (`claim_offset` says why that is
//! safe).
//!
//! At start the thread loads the latest snapshot and replays the events
//! after it. Snapshots are taken after enough events (right after a start
//! that replayed that many too, so a server that keeps crashing does not
//! replay an ever longer tail), when the history retention waits for one,
//! and at a clean stop. Each snapshot written lets the history retention
//! delete what it covers (`retention.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spool_log::{Durability, Partition, Record, Retention, Store};
use tokio::sync::oneshot;

use crate::replication::{Epoch, Replication, Ticket};

use crate::activity::QueueMetrics;
use crate::config::JobsConfig;
use crate::core::{ClaimedJob, JobError, JobsCore, Reply, Request, RequestId, Step};
use crate::event::Event;
use crate::history::{HistoryPage, HistoryReader, LoggedJob};
use crate::job::JobId;
use crate::retention::{self, HISTORY_RETENTION_DEFAULT, RetentionStep};
use crate::snapshot;

/// The internal topic holding every job event.
pub const TOPIC: &str = "__jobs";

/// How the runtime keeps time; tests pass a controllable clock.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

#[derive(Clone)]
pub struct RuntimeConfig {
    pub jobs: JobsConfig,
    /// Where snapshots are kept.
    pub snapshot_dir: PathBuf,
    /// A snapshot is taken after this many events, or as many as there are
    /// jobs in memory if more (so that encoding the table costs at most
    /// about one job per event appended), so a restart replays at most
    /// about this many.
    pub snapshot_events: u64,
    /// How much history `__jobs` keeps, by time and size; events the job
    /// table still needs (those after the latest snapshot) are kept
    /// regardless.
    pub history_retention: Retention,
    /// How often the history retention is checked besides after each
    /// snapshot. Zero checks only after snapshots.
    pub retention_check_interval_ms: u64,
    /// Largest batch of events appended at once (also held to the store's
    /// `batch_bytes_max`).
    pub append_batch_bytes_max: usize,
    pub clock: Clock,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("jobs", &self.jobs)
            .field("snapshot_dir", &self.snapshot_dir)
            .field("snapshot_events", &self.snapshot_events)
            .field("history_retention", &self.history_retention)
            .finish_non_exhaustive()
    }
}

impl RuntimeConfig {
    pub fn new(snapshot_dir: PathBuf) -> Self {
        RuntimeConfig {
            jobs: JobsConfig::default(),
            snapshot_dir,
            snapshot_events: 200_000,
            history_retention: HISTORY_RETENTION_DEFAULT,
            retention_check_interval_ms: 60_000,
            append_batch_bytes_max: 4 << 20,
            clock: system_clock(),
        }
    }
}

/// An answer and what must be safe before it is given out (the events up
/// to the end of the log when it was computed).
type Answer<T> = (T, Ticket);
type Responder = oneshot::Sender<Answer<Result<Reply, JobError>>>;
/// A read of the table: gets the table, the time and the ticket of what
/// the table reflects, or why this node cannot answer.
type Read = Box<dyn FnOnce(Result<(&JobsCore, i64, Ticket), JobError>) + Send>;

enum Message {
    Request(Request, Responder),
    /// A read; `anywhere` when a follower's table may answer it (metrics),
    /// else only the serving leader's (or a single node's) does.
    Read {
        read: Read,
        anywhere: bool,
    },
    Stop(mpsc::Sender<()>),
}

/// Why the job layer did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Log(#[from] spool_log::Error),
    /// The history retention deleted events that only a snapshot covered,
    /// and there is no usable snapshot: replaying what is left would
    /// rebuild a table without the jobs enqueued before `log_start_offset`.
    #[error(
        "the job table cannot be rebuilt: __jobs starts at offset {log_start_offset} (older events were \
         deleted by the history retention) and no usable snapshot in {} covers them \
         (found: {})",
        snapshot_dir.display(),
        snapshot_offset.map_or_else(|| "none".to_owned(), |offset| format!("one up to offset {offset}"))
    )]
    SnapshotMissing {
        snapshot_dir: PathBuf,
        log_start_offset: u64,
        snapshot_offset: Option<u64>,
    },
}

/// What opening the job layer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Startup {
    pub snapshot_offset: Option<u64>,
    pub replayed_events: u64,
    pub jobs: usize,
    pub elapsed_ms: u64,
}

/// Handle to the running job layer. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct JobsRuntime {
    sender: mpsc::Sender<Message>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    partition: Partition,
    /// Cluster mode: `__jobs` is replicated, and histories are read up to
    /// its committed offset.
    replicated: bool,
    /// The limits the core runs with (they never change while it runs).
    jobs: JobsConfig,
}

fn unavailable(reason: &str) -> JobError {
    JobError::Unavailable {
        reason: reason.to_owned(),
    }
}

/// The offset a claim's answer waits for: every event it depends on, not
/// its own leases, whose fsync is already asked for and runs while the
/// worker starts. `None` when none of its leases is in `events` (the
/// caller then waits for the whole turn).
///
/// What a claim depends on: the earlier events of the jobs it hands out
/// (their enqueue, a retry's reschedule, a release), every queue-level
/// event (a pause lifted, a configuration changed), and, for a job of a
/// queue with a concurrency or rate limit, every event before its leases,
/// since those limits count the other jobs of the queue. Events of other
/// jobs, such as the completion a worker sent just before its next claim,
/// are not waited for. `unsynced` holds the offset and job (0 for a
/// queue-level event) of every event of earlier turns that may not be
/// durable yet; each event of a turn is one record, so the `i`-th event
/// of `events` is at `turn_start + i`.
///
/// Why answering before the leases are durable is safe: a lease that a
/// crash of the machine takes back before its fsync leaves the job as it
/// was before the claim, so after a restart the job is offered again; the
/// first worker's token is then unknown (new tokens come from a fresh
/// seed), and its heartbeat, completion or failure is refused as stale, as
/// for a lease that ran out. A crash of the server process alone loses
/// nothing written, fsynced or not. Completions, failures and enqueues
/// still wait for their own events.
fn claim_offset(
    claimed: &[ClaimedJob],
    events: &[Event],
    turn_start: u64,
    unsynced: &VecDeque<(u64, JobId)>,
    limited: impl Fn(&str) -> bool,
) -> Option<u64> {
    // A large claim is looked up in a set, so that a turn of many claims
    // and events stays linear.
    let ids: HashSet<JobId> = if claimed.len() > 16 {
        claimed.iter().map(|claimed| claimed.job.id).collect()
    } else {
        HashSet::new()
    };
    let of_claim = |id: JobId| {
        if ids.is_empty() {
            claimed.iter().any(|claimed| claimed.job.id == id)
        } else {
            ids.contains(&id)
        }
    };
    let own_lease = |event: &Event| {
        matches!(event, Event::Claimed { id, token, .. }
            if claimed.iter().any(|claimed| claimed.job.id == *id && claimed.token == *token))
    };
    let last_lease = events.iter().rposition(own_lease)?;
    if claimed.iter().any(|claimed| limited(&claimed.job.queue)) {
        return Some(turn_start + last_lease as u64);
    }
    let in_turn = events[..last_lease]
        .iter()
        .rposition(|event| !own_lease(event) && (event.id() == 0 || of_claim(event.id())))
        .map(|index| turn_start + index as u64 + 1);
    let earlier = unsynced
        .iter()
        .rev()
        .find(|&&(_, id)| id == 0 || of_claim(id))
        .map(|&(offset, _)| offset + 1);
    Some(in_turn.or(earlier).unwrap_or(0))
}

impl JobsRuntime {
    /// Opens the events topic (creating it), restores the snapshot, replays
    /// the events after it and starts the thread.
    pub fn start(store: &Store, mut config: RuntimeConfig) -> Result<(JobsRuntime, Startup), StartError> {
        let partition = store.internal_partition(TOPIC)?;
        let batch_bytes_max = usize::try_from(store.config().batch_bytes_max).unwrap_or(usize::MAX);
        config.append_batch_bytes_max = config.append_batch_bytes_max.min(batch_bytes_max);
        JobsRuntime::start_on(partition, None, config)
    }

    /// Cluster mode: starts the job layer over `partition`, the local
    /// replica of the replicated `__jobs` (already open, its committed
    /// offset restored). The table is rebuilt from the committed events
    /// and follows the group: it applies committed events while another
    /// node leads, and takes requests once `replication` says this node
    /// serves (`replication.rs`). The history retention does not delete
    /// segments here: the node's compaction of its replica does, no
    /// further than the stored snapshot covers (`snapshot::stored_offset`),
    /// and a replica whose log restarts from the leader's snapshot first
    /// stores the leader's table (`snapshot::install`), which this one
    /// then restarts from.
    pub fn start_replicated(
        partition: Partition,
        replication: Arc<dyn Replication>,
        mut config: RuntimeConfig,
    ) -> Result<(JobsRuntime, Startup), StartError> {
        let batch_bytes_max = usize::try_from(partition.batch_limits().batch_bytes_max).unwrap_or(usize::MAX);
        config.append_batch_bytes_max = config.append_batch_bytes_max.min(batch_bytes_max);
        JobsRuntime::start_on(partition, Some(replication), config)
    }

    fn start_on(
        partition: Partition,
        replication: Option<Arc<dyn Replication>>,
        config: RuntimeConfig,
    ) -> Result<(JobsRuntime, Startup), StartError> {
        let started = Instant::now();
        let replicated = replication.is_some();
        // A replica builds its table from committed events only.
        let end = if replicated {
            partition.committed_offset()
        } else {
            partition.high_watermark()
        };
        // A replica's stored snapshot may cover more than it has committed
        // (the leader's, stored just before its log restarted): the table
        // then starts there and waits for the log to reach it.
        let (mut core, snapshot_offset) = load_snapshot(&config, (!replicated).then_some(end));
        let log_start_offset = partition.log_start_offset();
        if log_start_offset > snapshot_offset.unwrap_or(0) {
            return Err(StartError::SnapshotMissing {
                snapshot_dir: config.snapshot_dir.clone(),
                log_start_offset,
                snapshot_offset,
            });
        }
        let from = snapshot_offset.unwrap_or(0);
        let replayed_events = if end > from {
            replay(&partition, &mut core, from, end)?
        } else {
            0
        };
        let startup = Startup {
            snapshot_offset,
            replayed_events,
            jobs: core.job_count(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            snapshot_offset,
            replayed_events,
            jobs = startup.jobs,
            elapsed_ms = startup.elapsed_ms,
            "job table rebuilt"
        );
        let (sender, receiver) = mpsc::channel();
        let jobs = config.jobs.clone();
        let role = if replicated {
            Role::Following {
                applied: end.max(from),
            }
        } else {
            Role::Local
        };
        let worker = Worker {
            core,
            partition: partition.clone(),
            replication,
            role,
            config,
            pending: HashMap::new(),
            next_request: 0,
            // A long replay calls for a snapshot at once, so the next start
            // does not replay it again.
            events_since_snapshot: replayed_events,
            snapshot_offset: Arc::new(AtomicU64::new(snapshot_offset.unwrap_or(0))),
            last_retention_check: Instant::now(),
            failed: None,
            background: None,
            encode_buffer: Vec::new(),
            unsynced: VecDeque::new(),
            snapshot_missing_reported: false,
        };
        let thread = std::thread::Builder::new()
            .name("spool-jobs".into())
            .spawn(move || worker.run(receiver))
            .map_err(|e| spool_log::Error::Io {
                op: "spawn jobs thread",
                path: PathBuf::new(),
                source: e,
            })?;
        Ok((
            JobsRuntime {
                sender,
                thread: std::sync::Mutex::new(Some(thread)),
                partition,
                replicated,
                jobs,
            },
            startup,
        ))
    }

    /// The limits and retention times the job table runs with.
    pub fn config(&self) -> &JobsConfig {
        &self.jobs
    }

    /// Sends a request; the reply arrives once its events, and every event
    /// before them, are durable (a claim's once every event before its
    /// leases is: see `claim_offset`).
    pub async fn call(&self, request: Request) -> Result<Reply, JobError> {
        self.submit(request).await
    }

    /// Sends a request now and returns a future of its reply, so that many
    /// requests can be sent before any is awaited and land in one turn.
    pub fn submit(&self, request: Request) -> impl Future<Output = Result<Reply, JobError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.sender.send(Message::Request(request, tx));
        async move {
            sent.map_err(|_| unavailable("the job service has stopped"))?;
            let (reply, ticket) = rx.await.map_err(|_| unavailable("the job service has stopped"))?;
            ticket.wait().await?;
            reply
        }
    }

    /// The first half of [`call`](Self::call): the reply as decided and
    /// the ticket of its events, once they are appended (not yet durable,
    /// or committed in a cluster). The caller must
    /// [`wait_durable`](Self::wait_durable) for the ticket before it hands
    /// the reply out. For callers that time the two halves apart (the
    /// server's trace spans).
    pub async fn decide(&self, request: Request) -> Result<(Result<Reply, JobError>, Ticket), JobError> {
        let (tx, rx) = oneshot::channel();
        self.sender
            .send(Message::Request(request, tx))
            .map_err(|_| unavailable("the job service has stopped"))?;
        rx.await.map_err(|_| unavailable("the job service has stopped"))
    }

    /// The second half of [`call`](Self::call): waits until the events of
    /// `ticket` are on disk (the group commit of `__jobs`), or committed in
    /// a cluster.
    pub async fn wait_durable(&self, ticket: &Ticket) -> Result<(), JobError> {
        ticket.wait().await
    }

    /// Sends a read of the table and returns what it answered with the
    /// ticket of what the table reflected.
    async fn ask<T: Send + 'static>(
        &self,
        anywhere: bool,
        read: impl FnOnce(&JobsCore, i64) -> T + Send + 'static,
    ) -> Result<(T, Ticket), JobError> {
        let (tx, rx) = oneshot::channel();
        let read: Read = Box::new(move |table| {
            let _ = tx.send(table.map(|(core, now, ticket)| (read(core, now), ticket)));
        });
        self.sender
            .send(Message::Read { read, anywhere })
            .map_err(|_| unavailable("the job service has stopped"))?;
        rx.await.map_err(|_| unavailable("the job service has stopped"))?
    }

    /// Runs `read` against the current job table and returns what it
    /// returns once every event the table reflected is durable.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&JobsCore, i64) -> T + Send + 'static,
    ) -> Result<T, JobError> {
        let (value, ticket) = self.ask(false, read).await?;
        ticket.wait().await?;
        Ok(value)
    }

    /// [`read`](Self::read), also on a cluster node that does not lead
    /// the job layer, which answers from its standby table: what is
    /// committed, as far as it has applied (it trails the leader by at
    /// most a few tens of milliseconds). For pages that show the jobs,
    /// not for answers a client acts on.
    pub async fn read_standby<T: Send + 'static>(
        &self,
        read: impl FnOnce(&JobsCore, i64) -> T + Send + 'static,
    ) -> Result<T, JobError> {
        let (value, ticket) = self.ask(true, read).await?;
        ticket.wait().await?;
        Ok(value)
    }

    /// Runs `read` against the current job table and answers at once,
    /// without waiting for the disk: for what no crash can take back, such
    /// as the queue of a job (fixed at its enqueue), which the server's
    /// permission checks look up before acting on a job by id.
    pub async fn peek<T: Send + 'static>(
        &self,
        read: impl FnOnce(&JobsCore, i64) -> T + Send + 'static,
    ) -> Result<T, JobError> {
        Ok(self.ask(false, read).await?.0)
    }

    /// The metrics of every known queue, sorted by name (see
    /// [`JobsCore::metrics_snapshot`]): what a metrics exporter renders.
    /// Unlike [`read`](Self::read) it does not wait for the disk: a scrape
    /// must not stall behind an fsync, and counting an event a crash could
    /// still take back is harmless in statistics. It costs the job thread
    /// one pass over the running jobs and each queue's available jobs. A
    /// follower in a cluster answers from its standby table (what is
    /// committed).
    pub async fn metrics_snapshot(&self) -> Result<Vec<QueueMetrics>, JobError> {
        Ok(self.ask(true, |core, now| core.metrics_snapshot(now)).await?.0)
    }

    /// Up to `limit` events of job `id` from the log, from log offset
    /// `from` (0: from the job's enqueue), where to continue, and whether
    /// its start was trimmed (see [`HistoryPage`]). Blocking: reads the log,
    /// and asks the job thread whether it holds the job when its start may
    /// have been trimmed.
    pub fn history(&self, id: JobId, from: u64, limit: usize) -> spool_log::Result<HistoryPage> {
        let reader = HistoryReader {
            partition: &self.partition,
            end: self.history_end(),
        };
        reader.page(id, from, limit, || self.holds_blocking(id))
    }

    /// Job `id` rebuilt from its events in the log, for a job no longer in
    /// memory (see [`LoggedJob`]). Blocking: reads the log from the job's
    /// enqueue to its last event.
    pub fn job_from_log(&self, id: JobId) -> spool_log::Result<LoggedJob> {
        HistoryReader {
            partition: &self.partition,
            end: self.history_end(),
        }
        .job(id)
    }

    /// Where histories end: everything on a single node, what is committed
    /// in a cluster.
    fn history_end(&self) -> u64 {
        if self.replicated {
            self.partition.committed_offset()
        } else {
            u64::MAX
        }
    }

    /// Whether the job table holds job `id`, asked of the job thread from a
    /// thread that may block. False if the job service has stopped.
    fn holds_blocking(&self, id: JobId) -> bool {
        let (tx, rx) = mpsc::channel();
        let read: Read = Box::new(move |table| {
            let _ = tx.send(table.is_ok_and(|(core, _, _)| core.job(id).is_some()));
        });
        let message = Message::Read { read, anywhere: true };
        self.sender.send(message).is_ok() && rx.recv().unwrap_or(false)
    }

    /// Stops the thread after a last snapshot. Requests after this fail.
    pub fn stop(&self) {
        let (tx, rx) = mpsc::channel();
        if self.sender.send(Message::Stop(tx)).is_ok() {
            let _ = rx.recv();
        }
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            let _ = thread.join();
        }
    }
}

impl Drop for JobsRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The latest snapshot in `config.snapshot_dir` covering no more than
/// `end` (any, without), with the table it holds, or an empty table.
fn load_snapshot(config: &RuntimeConfig, end: Option<u64>) -> (JobsCore, Option<u64>) {
    // Lease tokens come from this seed: a fresh one per table built, so a
    // token handed out before a restart or failover is never handed out
    // again.
    let seed = (config.clock)() as u64 ^ u64::from(std::process::id()).rotate_left(32);
    match snapshot::load(&config.snapshot_dir, &config.jobs, seed) {
        Some((core, offset)) if end.is_none_or(|end| offset <= end) => (core, Some(offset)),
        _ => (JobsCore::new(config.jobs.clone(), seed), None),
    }
}

/// Applies every event from `from` up to `end` (or the end of the log).
fn replay(partition: &Partition, core: &mut JobsCore, from: u64, end: u64) -> spool_log::Result<u64> {
    let mut count = 0;
    partition.scan(from, |batch, record| {
        if record.offset >= end {
            return ControlFlow::Break(());
        }
        match record
            .value
            .and_then(|value| Event::decode(batch.slice_ref(value)))
        {
            Some(event) => {
                core.apply(&event);
                count += 1;
            }
            None => tracing::warn!(offset = record.offset, "skipping an undecodable job event"),
        }
        ControlFlow::Continue(())
    })?;
    Ok(count)
}

/// What the job thread does with the log.
enum Role {
    /// A single node: appends to the local `__jobs`, answers once fsynced.
    Local,
    /// Cluster mode, another node leads (or none does yet): the table
    /// applies the committed events up to `applied`, and requests are
    /// answered with the leader's address.
    Following { applied: u64 },
    /// Cluster mode, this node serves in `term`: events are proposed from
    /// `next_offset` on, and answers wait for their commit in `epoch`.
    Leading {
        term: u64,
        epoch: Arc<Epoch>,
        next_offset: u64,
    },
}

struct Worker {
    core: JobsCore,
    partition: Partition,
    /// Cluster mode: the replicated `__jobs`.
    replication: Option<Arc<dyn Replication>>,
    role: Role,
    config: RuntimeConfig,
    pending: HashMap<RequestId, Responder>,
    next_request: RequestId,
    events_since_snapshot: u64,
    /// The offset the latest snapshot on disk covers up to (0 for none),
    /// set by the thread that writes it once it is durable.
    snapshot_offset: Arc<AtomicU64>,
    last_retention_check: Instant,
    /// Set when an append failed on a single node: the table is then ahead
    /// of the log, so the service refuses everything until it is restarted
    /// and replays. (In a cluster the node gives the leadership up and
    /// rebuilds its table instead.)
    failed: Option<String>,
    /// The thread writing a snapshot or deleting old segments, if any: one
    /// at a time.
    background: Option<JoinHandle<()>>,
    /// Reused to encode each turn's events.
    encode_buffer: Vec<u8>,
    /// The offset and job (0 for a queue-level event) of each appended
    /// event that may not be durable yet: what a claim looks up to wait
    /// only for the events it depends on (see `claim_offset`).
    unsynced: VecDeque<(u64, JobId)>,
    /// Cluster mode: whether a log restarted past the table without a
    /// snapshot to restart the table from was reported.
    snapshot_missing_reported: bool,
}

const IDLE_WAKE: Duration = Duration::from_millis(500);
/// How often a cluster node looks at its role and, as a follower, at the
/// committed offset, when no request wakes it.
const ROLE_WAKE: Duration = Duration::from_millis(20);
const MESSAGES_PER_TURN_MAX: usize = 8_192;
/// How long a snapshot taken by a leader waits for its events' commit.
const SNAPSHOT_COMMIT_WAIT: Duration = Duration::from_secs(5);

impl Worker {
    fn run(mut self, receiver: mpsc::Receiver<Message>) {
        // Leases that ran out while the server was down expire now (in a
        // cluster, when this node starts to serve).
        if self.serving() {
            let now = (self.config.clock)();
            let step = self.core.tick(now);
            self.finish(step);
        }
        loop {
            self.follow_role();
            let now = (self.config.clock)();
            let mut wait = self.core.next_deadline().map_or(IDLE_WAKE, |deadline| {
                Duration::from_millis(deadline.saturating_sub(now).clamp(0, 500) as u64)
            });
            if self.replication.is_some() {
                wait = wait.min(ROLE_WAKE);
            }
            let mut messages = Vec::new();
            match receiver.recv_timeout(wait) {
                Ok(message) => messages.push(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while messages.len() < MESSAGES_PER_TURN_MAX {
                match receiver.try_recv() {
                    Ok(message) => messages.push(message),
                    Err(_) => break,
                }
            }
            // Parked claims whose callers went away are forgotten before
            // anything could hand them jobs nobody would receive.
            let core = &mut self.core;
            self.pending.retain(|id, responder| {
                let open = !responder.is_closed();
                if !open {
                    core.cancel_parked(*id);
                }
                open
            });
            let now = (self.config.clock)();
            let serving = self.serving();
            let mut step = if serving {
                self.core.tick(now)
            } else {
                Step::default()
            };
            let mut stop = None;
            let mut reads = Vec::new();
            for message in messages {
                match message {
                    Message::Request(request, responder) => {
                        if let Some(reason) = &self.failed {
                            let _ = responder.send((Err(unavailable(reason)), Ticket::ready()));
                            continue;
                        }
                        if !serving {
                            let _ = responder.send((Err(self.not_leader()), Ticket::ready()));
                            continue;
                        }
                        self.next_request += 1;
                        let id = self.next_request;
                        self.pending.insert(id, responder);
                        self.core.handle_into(&mut step, id, request, now);
                    }
                    Message::Read { read, anywhere } => reads.push((read, anywhere)),
                    Message::Stop(ack) => stop = Some(ack),
                }
            }
            self.finish(step);
            // Reads see the table after this turn; their answers wait for
            // the same ticket as the turn's replies. Once an append has
            // failed the table is ahead of the log: reads are refused.
            let ticket = self.ticket(self.end_offset());
            for (read, anywhere) in reads {
                if let Some(reason) = &self.failed {
                    read(Err(unavailable(reason)));
                } else if self.serving() {
                    read(Ok((&self.core, now, ticket.clone())));
                } else if anywhere {
                    read(Ok((&self.core, now, Ticket::ready())));
                } else {
                    read(Err(self.not_leader()));
                }
            }
            if let Some(ack) = stop {
                self.snapshot(true);
                let _ = ack.send(());
                break;
            }
            if self.events_since_snapshot >= self.config.snapshot_events.max(self.core.job_count() as u64) {
                self.snapshot(false);
            }
            let check_every = Duration::from_millis(self.config.retention_check_interval_ms);
            if !check_every.is_zero() && self.last_retention_check.elapsed() >= check_every {
                self.last_retention_check = Instant::now();
                self.check_retention(now);
            }
        }
        for (_, responder) in self.pending.drain() {
            let _ = responder.send((Err(unavailable("the job service has stopped")), Ticket::ready()));
        }
    }

    /// Whether this node's table takes requests: a single node always, a
    /// cluster node while it serves as the leader of `__jobs`.
    fn serving(&self) -> bool {
        !matches!(self.role, Role::Following { .. })
    }

    /// The answer to a request this node cannot serve: the leader it knows
    /// of, with its address.
    fn not_leader(&self) -> JobError {
        let (leader_id, leader_address) = self
            .replication
            .as_ref()
            .map_or((None, String::new()), |replication| replication.leader());
        JobError::NotLeader {
            leader_id,
            leader_address,
        }
    }

    /// The offset after the last event the table reflects.
    fn end_offset(&self) -> u64 {
        match &self.role {
            Role::Local => self.partition.high_watermark(),
            Role::Following { applied } => *applied,
            Role::Leading { next_offset, .. } => *next_offset,
        }
    }

    /// Offsets below this are safe: durable on a single node, committed in
    /// a cluster.
    fn safe_offset(&self) -> u64 {
        match &self.role {
            Role::Local => self.partition.durable_offset(),
            Role::Following { applied } => *applied,
            Role::Leading { epoch, .. } => epoch.committed(),
        }
    }

    /// What an answer reflecting the events below `offset` waits for.
    fn ticket(&self, offset: u64) -> Ticket {
        match &self.role {
            Role::Local => Ticket::durable(&self.partition, offset),
            Role::Following { .. } => Ticket::ready(),
            Role::Leading { epoch, .. } => Ticket::committed(epoch, offset),
        }
    }

    /// Cluster mode: follows the group. A follower applies what was
    /// committed since its last turn and starts to serve once this node
    /// leads and has applied its term's first entry; a leader that lost
    /// the leadership (or whose proposal was refused) rebuilds its table
    /// from the committed log, since its table may hold events that will
    /// never commit.
    fn follow_role(&mut self) {
        let Some(replication) = self.replication.clone() else {
            return;
        };
        if let Role::Leading { term, epoch, .. } = &self.role
            && (epoch.failed() || replication.serving_term() != Some(*term))
        {
            let term = *term;
            self.step_down();
            tracing::info!(
                term,
                "no longer leading __jobs: the job table follows the new leader"
            );
        }
        let Role::Following { applied } = self.role else {
            return;
        };
        let applied = self.apply_committed(applied);
        self.role = Role::Following { applied };
        let Some(term) = replication.serving_term() else {
            return;
        };
        // Every event an earlier leader committed is applied, and nothing
        // of this term is proposed yet: the log ends at the commit.
        let committed = self.partition.committed_offset();
        if applied != committed || self.partition.high_watermark() != committed {
            return;
        }
        self.role = Role::Leading {
            term,
            epoch: Epoch::new(committed),
            next_offset: committed,
        };
        tracing::info!(
            term,
            offset = committed,
            jobs = self.core.job_count(),
            "leading __jobs: the job layer takes requests on this node"
        );
        let now = (self.config.clock)();
        let step = self.core.tick(now);
        self.finish(step);
    }

    /// Applies the events committed since `applied`; returns how far the
    /// table now reflects the log.
    fn apply_committed(&mut self, applied: u64) -> u64 {
        if applied < self.partition.log_start_offset() {
            return self.restart_from_snapshot(applied);
        }
        let committed = self.partition.committed_offset();
        if committed <= applied {
            return applied;
        }
        match replay(&self.partition, &mut self.core, applied, committed) {
            Ok(events) => {
                self.events_since_snapshot += events;
                committed
            }
            Err(error) => {
                tracing::warn!(%error, applied, committed, "cannot read committed job events; trying again");
                applied
            }
        }
    }

    /// The replica's log restarted from the leader's snapshot, past what
    /// the table applied: the table restarts from the snapshot the group
    /// stored before that (`snapshot::install`), then applies what was
    /// committed after it. Returns how far the table reflects the log.
    fn restart_from_snapshot(&mut self, applied: u64) -> u64 {
        let log_start = self.partition.log_start_offset();
        match load_snapshot(&self.config, None) {
            (core, Some(offset)) if offset >= log_start => {
                self.core = core;
                self.events_since_snapshot = 0;
                self.unsynced.clear();
                self.snapshot_missing_reported = false;
                tracing::info!(
                    offset,
                    jobs = self.core.job_count(),
                    "the replica of __jobs restarted from the leader's snapshot: the job table restarts from its table"
                );
                self.apply_committed(offset)
            }
            (_, stored) => {
                if !self.snapshot_missing_reported {
                    self.snapshot_missing_reported = true;
                    tracing::error!(
                        applied,
                        log_start,
                        stored,
                        "the replica of __jobs starts past the job table and no stored snapshot covers the gap; the table cannot follow until one is installed"
                    );
                }
                applied
            }
        }
    }

    /// Gives the leadership up: parked claims hear where the leader is, and
    /// the table is rebuilt from the latest snapshot and the committed
    /// events.
    fn step_down(&mut self) {
        let not_leader = self.not_leader();
        for (_, responder) in self.pending.drain() {
            let _ = responder.send((Err(not_leader.clone()), Ticket::ready()));
        }
        self.unsynced.clear();
        let committed = self.partition.committed_offset();
        let (mut core, snapshot_offset) = load_snapshot(&self.config, None);
        let from = snapshot_offset.unwrap_or(0);
        let replayed = if committed > from {
            replay(&self.partition, &mut core, from, committed)
        } else {
            Ok(0)
        };
        match replayed {
            Ok(events) => {
                self.core = core;
                self.events_since_snapshot = events;
                self.role = Role::Following {
                    applied: committed.max(from),
                };
            }
            Err(error) => {
                tracing::error!(%error, "cannot rebuild the job table from __jobs; the job service stops answering until restarted");
                self.failed = Some(format!(
                    "rebuilding the job table failed ({error}); restart the server"
                ));
                self.role = Role::Following { applied: committed };
                if let Some(replication) = &self.replication {
                    replication.step_aside();
                }
            }
        }
    }

    /// Appends a step's events, asks for their fsync (or proposes them)
    /// and sends the replies, each with the ticket its caller waits for:
    /// the end of the turn, except for a claim (see [`claim_offset`]).
    fn finish(&mut self, step: Step) {
        let Step { events, mut replies } = step;
        let turn_start = self.end_offset();
        if !events.is_empty() && self.failed.is_none() {
            match self.append(&events) {
                Ok(()) => {
                    self.events_since_snapshot += events.len() as u64;
                    if matches!(self.role, Role::Local) {
                        self.partition.request_flush();
                    }
                }
                Err(error) => {
                    let reason = match &self.role {
                        Role::Leading { epoch, .. } => {
                            // The table is ahead of the log: the next turn
                            // gives the leadership up and rebuilds it.
                            tracing::error!(%error, "proposing job events failed; rebuilding the job table");
                            epoch.settle(&Err(error.clone()));
                            format!("proposing job events failed ({error}); retry")
                        }
                        _ => {
                            tracing::error!(%error, "appending job events failed; the job service stops answering until restarted");
                            let reason = format!("writing job events failed ({error}); restart the server");
                            self.failed = Some(reason.clone());
                            reason
                        }
                    };
                    for reply in &mut replies {
                        reply.1 = Err(unavailable(&reason));
                    }
                }
            }
        }
        let offset = self.end_offset();
        let safe = self.safe_offset();
        while self.unsynced.front().is_some_and(|&(at, _)| at < safe) {
            self.unsynced.pop_front();
        }
        for (id, reply) in replies {
            if let Some(responder) = self.pending.remove(&id) {
                let offset = match &reply {
                    Ok(Reply::Claimed(claimed)) if self.failed.is_none() => {
                        let core = &self.core;
                        let limited = |queue: &str| {
                            core.queue_config(queue).is_ok_and(|config| {
                                config.concurrency_limit.is_some() || config.rate_limit.is_some()
                            })
                        };
                        claim_offset(claimed, &events, turn_start, &self.unsynced, limited).unwrap_or(offset)
                    }
                    _ => offset,
                };
                let _ = responder.send((reply, self.ticket(offset)));
            }
        }
        if self.failed.is_none() {
            let appended = events.iter().enumerate();
            self.unsynced
                .extend(appended.map(|(index, event)| (turn_start + index as u64, event.id())));
        }
    }

    fn append(&mut self, events: &[Event]) -> Result<(), String> {
        // Every event of the turn is encoded into one reused buffer.
        let mut buffer = std::mem::take(&mut self.encode_buffer);
        buffer.clear();
        let mut ends = Vec::with_capacity(events.len());
        for event in events {
            event.encode_into(&mut buffer);
            ends.push(buffer.len());
        }
        let keys: Vec<[u8; 8]> = events.iter().map(Event::key).collect();
        let mut result = Ok(());
        let mut start = 0;
        while start < events.len() {
            let mut end = start;
            let mut bytes = 0;
            let mut records = Vec::new();
            while end < events.len() {
                let from = if end == 0 { 0 } else { ends[end - 1] };
                let size = ends[end] - from + 64;
                if end > start && bytes + size > self.config.append_batch_bytes_max {
                    break;
                }
                bytes += size;
                records.push(Record {
                    key: Some(&keys[end]),
                    value: Some(&buffer[from..ends[end]]),
                    headers: &[],
                    timestamp_ms: Some(events[end].at_ms()),
                });
                end += 1;
            }
            if let Err(error) = self.put(&records) {
                result = Err(error);
                break;
            }
            start = end;
        }
        self.encode_buffer = buffer;
        result
    }

    /// Appends one batch of events: to the local log, or proposed to the
    /// replicated `__jobs` behind every batch proposed before it.
    fn put(&mut self, records: &[Record<'_>]) -> Result<(), String> {
        let replication = self.replication.clone();
        match (&mut self.role, replication) {
            (
                Role::Leading {
                    epoch, next_offset, ..
                },
                Some(replication),
            ) => {
                let now = records
                    .first()
                    .and_then(|record| record.timestamp_ms)
                    .unwrap_or(0);
                let encoded = spool_log::batch::encode_to_vec(records, now, self.partition.batch_limits())
                    .map_err(|error| error.to_string())?;
                *next_offset += records.len() as u64;
                let epoch = Arc::clone(epoch);
                replication.propose(encoded, Box::new(move |outcome| epoch.settle(&outcome)));
                Ok(())
            }
            (Role::Local, _) => self
                .partition
                .append(records, Durability::None)
                .map(|_| ())
                .map_err(|error| error.to_string()),
            _ => Err("this node does not serve the job layer".to_owned()),
        }
    }

    /// Takes the step the history retention calls for now.
    fn check_retention(&mut self, now: i64) {
        let retention = &self.config.history_retention;
        if retention.keeps_everything() || self.failed.is_some() {
            return;
        }
        let step = retention::next_step(
            self.partition.log_start_offset(),
            self.partition.retention_start(retention, now),
            self.snapshot_offset.load(Ordering::Acquire),
            self.events_since_snapshot > 0,
        );
        match step {
            RetentionStep::Nothing => {}
            RetentionStep::Snapshot => self.snapshot(false),
            // In a cluster the node compacts its replica of `__jobs` (no
            // further than the stored snapshot covers); the table's part
            // is the snapshot above.
            RetentionStep::Trim(_) if !matches!(self.role, Role::Local) => {}
            RetentionStep::Trim(below) => {
                let partition = self.partition.clone();
                self.in_background(false, move || delete_below(&partition, below));
            }
        }
    }

    /// Runs `work` on a thread of its own, after the previous background
    /// work. Unless `wait`, gives up (returning false) while that is still
    /// running; with `wait`, runs `work` here once it is done.
    fn in_background(&mut self, wait: bool, work: impl FnOnce() + Send + 'static) -> bool {
        if let Some(running) = self.background.take() {
            if !running.is_finished() && !wait {
                self.background = Some(running);
                return false;
            }
            let _ = running.join();
        }
        if wait {
            work();
            return true;
        }
        match std::thread::Builder::new()
            .name("spool-jobs-snapshot".into())
            .spawn(work)
        {
            Ok(handle) => {
                self.background = Some(handle);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start the snapshot thread");
                false
            }
        }
    }

    /// Encodes the table here (it must not change meanwhile) and writes it
    /// on a thread of its own, so the disk work does not stall requests;
    /// once it is durable, the history retention may delete what it covers.
    /// At a stop (`wait`) the write is waited for.
    fn snapshot(&mut self, wait: bool) {
        if self.failed.is_some() {
            return;
        }
        if !wait
            && self
                .background
                .as_ref()
                .is_some_and(|running| !running.is_finished())
        {
            // The previous one is still being written: try next turn.
            return;
        }
        let offset = self.end_offset();
        let encoded = snapshot::encode(&self.core, offset);
        let dir = self.config.snapshot_dir.clone();
        let jobs = self.core.job_count();
        let partition = self.partition.clone();
        let retention = self.config.history_retention;
        let trim = matches!(self.role, Role::Local) && !retention.keeps_everything();
        let clock = Arc::clone(&self.config.clock);
        let snapshot_offset = Arc::clone(&self.snapshot_offset);
        // A leader's table may hold events not committed yet; a follower's
        // holds committed ones only.
        let epoch = match &self.role {
            Role::Leading { epoch, .. } => Some(Arc::clone(epoch)),
            _ => None,
        };
        let local = matches!(self.role, Role::Local);
        let replicated = self.replication.is_some();
        // A snapshot must never reflect events a crash (or a failover)
        // could still take away: it is written once the log holds them
        // durably (committed, in a cluster).
        let write = move || {
            if local && let Err(error) = partition.wait_durable_blocking(offset) {
                tracing::warn!(%error, "not writing the jobs snapshot: its events are not durable");
                return;
            }
            if let Some(epoch) = epoch
                && !epoch.wait_blocking(offset, SNAPSHOT_COMMIT_WAIT)
            {
                tracing::warn!(
                    offset,
                    "not writing the jobs snapshot: its events were not committed"
                );
                return;
            }
            // A replica's stored snapshot never goes back: one the group
            // stored from the leader may cover more than this table.
            let written = if replicated {
                snapshot::write_if_newer(&dir, &encoded)
            } else {
                snapshot::write(&dir, &encoded).map(|()| offset)
            };
            match written {
                Ok(stored) => {
                    tracing::debug!(
                        offset,
                        stored,
                        jobs,
                        bytes = encoded.len(),
                        "jobs snapshot written"
                    );
                    snapshot_offset.store(stored, Ordering::Release);
                    if trim {
                        let retention_start = partition.retention_start(&retention, clock());
                        delete_below(&partition, retention::trim_offset(retention_start, offset));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "writing the jobs snapshot failed; restarts replay more")
                }
            }
        };
        if self.in_background(wait, write) {
            self.events_since_snapshot = 0;
        }
    }
}

/// Deletes the segments of `__jobs` wholly below `offset`, which the
/// history retention and the latest snapshot both let go; a failure is
/// logged and tried again at the next check.
fn delete_below(partition: &Partition, offset: u64) {
    match partition.delete_segments_below(offset) {
        Ok(0) => {}
        Ok(segments) => tracing::debug!(
            segments,
            log_start_offset = partition.log_start_offset(),
            "history retention deleted job events"
        ),
        Err(error) => tracing::warn!(%error, "deleting old job events failed"),
    }
}
