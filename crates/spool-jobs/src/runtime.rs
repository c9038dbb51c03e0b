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

/// An answer and the log offset that must be durable before it is given
/// out (the end of the log when it was computed).
type Answer<T> = (T, u64);
type Responder = oneshot::Sender<Answer<Result<Reply, JobError>>>;
/// A read of the table: gets the table, the time and the end of the log.
type Read = Box<dyn FnOnce(&JobsCore, i64, u64) + Send>;

enum Message {
    Request(Request, Responder),
    Read(Read),
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

/// Waits until the events up to `offset` are on disk.
async fn durable(partition: &Partition, offset: u64) -> Result<(), JobError> {
    if partition.durable_offset() >= offset {
        return Ok(());
    }
    partition.wait_durable(offset).await.map(|_| ()).map_err(|error| {
        unavailable(&format!(
            "writing job events failed ({error}); restart the server"
        ))
    })
}

impl JobsRuntime {
    /// Opens the events topic (creating it), restores the snapshot, replays
    /// the events after it and starts the thread.
    pub fn start(store: &Store, mut config: RuntimeConfig) -> Result<(JobsRuntime, Startup), StartError> {
        let started = Instant::now();
        let partition = store.internal_partition(TOPIC)?;
        let batch_bytes_max = usize::try_from(store.config().batch_bytes_max).unwrap_or(usize::MAX);
        config.append_batch_bytes_max = config.append_batch_bytes_max.min(batch_bytes_max);
        let seed = (config.clock)() as u64 ^ u64::from(std::process::id()).rotate_left(32);
        let (mut core, snapshot_offset) = match snapshot::load(&config.snapshot_dir, &config.jobs, seed) {
            Some((core, offset)) if offset <= partition.high_watermark() => (core, Some(offset)),
            _ => (JobsCore::new(config.jobs.clone(), seed), None),
        };
        let log_start_offset = partition.log_start_offset();
        if log_start_offset > snapshot_offset.unwrap_or(0) {
            return Err(StartError::SnapshotMissing {
                snapshot_dir: config.snapshot_dir.clone(),
                log_start_offset,
                snapshot_offset,
            });
        }
        let from = snapshot_offset.unwrap_or(0);
        let replayed_events = replay(&partition, &mut core, from)?;
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
        let worker = Worker {
            core,
            partition: partition.clone(),
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
        let partition = self.partition.clone();
        async move {
            sent.map_err(|_| unavailable("the job service has stopped"))?;
            let (reply, offset) = rx.await.map_err(|_| unavailable("the job service has stopped"))?;
            durable(&partition, offset).await?;
            reply
        }
    }

    /// The first half of [`call`](Self::call): the reply as decided and
    /// the log offset its events reach, once they are appended (not yet
    /// durable). The caller must [`wait_durable`](Self::wait_durable) for
    /// that offset before it hands the reply out. For callers that time
    /// the two halves apart (the server's trace spans).
    pub async fn decide(&self, request: Request) -> Result<(Result<Reply, JobError>, u64), JobError> {
        let (tx, rx) = oneshot::channel();
        self.sender
            .send(Message::Request(request, tx))
            .map_err(|_| unavailable("the job service has stopped"))?;
        rx.await.map_err(|_| unavailable("the job service has stopped"))
    }

    /// The second half of [`call`](Self::call): waits until the events up
    /// to `offset` are on disk (the group commit of `__jobs`).
    pub async fn wait_durable(&self, offset: u64) -> Result<(), JobError> {
        durable(&self.partition, offset).await
    }

    /// Runs `read` against the current job table and returns what it
    /// returns once every event the table reflected is durable.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&JobsCore, i64) -> T + Send + 'static,
    ) -> Result<T, JobError> {
        let (tx, rx) = oneshot::channel();
        let message = Message::Read(Box::new(move |core, now, offset| {
            let _ = tx.send((read(core, now), offset));
        }));
        self.sender
            .send(message)
            .map_err(|_| unavailable("the job service has stopped"))?;
        let (value, offset) = rx.await.map_err(|_| unavailable("the job service has stopped"))?;
        durable(&self.partition, offset).await?;
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
        let (tx, rx) = oneshot::channel();
        let message = Message::Read(Box::new(move |core, now, _| {
            let _ = tx.send(read(core, now));
        }));
        self.sender
            .send(message)
            .map_err(|_| unavailable("the job service has stopped"))?;
        rx.await.map_err(|_| unavailable("the job service has stopped"))
    }

    /// The metrics of every known queue, sorted by name (see
    /// [`JobsCore::metrics_snapshot`]): what a metrics exporter renders.
    /// Unlike [`read`](Self::read) it does not wait for the disk: a scrape
    /// must not stall behind an fsync, and counting an event a crash could
    /// still take back is harmless in statistics. It costs the job thread
    /// one pass over the running jobs and each queue's available jobs.
    pub async fn metrics_snapshot(&self) -> Result<Vec<QueueMetrics>, JobError> {
        let (tx, rx) = oneshot::channel();
        let message = Message::Read(Box::new(move |core, now, _| {
            let _ = tx.send(core.metrics_snapshot(now));
        }));
        self.sender
            .send(message)
            .map_err(|_| unavailable("the job service has stopped"))?;
        rx.await.map_err(|_| unavailable("the job service has stopped"))
    }

    /// Up to `limit` events of job `id` from the log, from log offset
    /// `from` (0: from the job's enqueue), where to continue, and whether
    /// its start was trimmed (see [`HistoryPage`]). Blocking: reads the log,
    /// and asks the job thread whether it holds the job when its start may
    /// have been trimmed.
    pub fn history(&self, id: JobId, from: u64, limit: usize) -> spool_log::Result<HistoryPage> {
        let reader = HistoryReader {
            partition: &self.partition,
        };
        reader.page(id, from, limit, || self.holds_blocking(id))
    }

    /// Job `id` rebuilt from its events in the log, for a job no longer in
    /// memory (see [`LoggedJob`]). Blocking: reads the log from the job's
    /// enqueue to its last event.
    pub fn job_from_log(&self, id: JobId) -> spool_log::Result<LoggedJob> {
        HistoryReader {
            partition: &self.partition,
        }
        .job(id)
    }

    /// Whether the job table holds job `id`, asked of the job thread from a
    /// thread that may block. False if the job service has stopped.
    fn holds_blocking(&self, id: JobId) -> bool {
        let (tx, rx) = mpsc::channel();
        let message = Message::Read(Box::new(move |core, _, _| {
            let _ = tx.send(core.job(id).is_some());
        }));
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

/// Applies every event from `from` to the end of the log.
fn replay(partition: &Partition, core: &mut JobsCore, from: u64) -> spool_log::Result<u64> {
    let mut count = 0;
    partition.scan(from, |batch, record| {
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

struct Worker {
    core: JobsCore,
    partition: Partition,
    config: RuntimeConfig,
    pending: HashMap<RequestId, Responder>,
    next_request: RequestId,
    events_since_snapshot: u64,
    /// The offset the latest snapshot on disk covers up to (0 for none),
    /// set by the thread that writes it once it is durable.
    snapshot_offset: Arc<AtomicU64>,
    last_retention_check: Instant,
    /// Set when an append failed: the table is then ahead of the log, so
    /// the service refuses everything until it is restarted and replays.
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
}

const IDLE_WAKE: Duration = Duration::from_millis(500);
const MESSAGES_PER_TURN_MAX: usize = 8_192;

impl Worker {
    fn run(mut self, receiver: mpsc::Receiver<Message>) {
        // Leases that ran out while the server was down expire now.
        let now = (self.config.clock)();
        let step = self.core.tick(now);
        self.finish(step);
        loop {
            let now = (self.config.clock)();
            let wait = self.core.next_deadline().map_or(IDLE_WAKE, |deadline| {
                Duration::from_millis(deadline.saturating_sub(now).clamp(0, 500) as u64)
            });
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
            let mut step = self.core.tick(now);
            let mut stop = None;
            let mut reads = Vec::new();
            for message in messages {
                match message {
                    Message::Request(request, responder) => {
                        if let Some(reason) = &self.failed {
                            let _ = responder.send((Err(unavailable(reason)), 0));
                            continue;
                        }
                        self.next_request += 1;
                        let id = self.next_request;
                        self.pending.insert(id, responder);
                        self.core.handle_into(&mut step, id, request, now);
                    }
                    Message::Read(read) => reads.push(read),
                    Message::Stop(ack) => stop = Some(ack),
                }
            }
            self.finish(step);
            // Reads see the table after this turn; their answers wait for
            // the same offset as the turn's replies. Once an append has
            // failed the table is ahead of the log: reads are dropped
            // unanswered, which their callers hear as UNAVAILABLE.
            if self.failed.is_none() {
                let offset = self.partition.high_watermark();
                for read in reads {
                    read(&self.core, now, offset);
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
            let _ = responder.send((Err(unavailable("the job service has stopped")), 0));
        }
    }

    /// Appends a step's events, asks for their fsync and sends the replies,
    /// each with the offset its caller waits for to be durable: the end of
    /// the turn, except for a claim (see [`claim_offset`]).
    fn finish(&mut self, step: Step) {
        let Step { events, mut replies } = step;
        let turn_start = self.partition.high_watermark();
        if !events.is_empty() && self.failed.is_none() {
            match self.append(&events) {
                Ok(()) => {
                    self.events_since_snapshot += events.len() as u64;
                    self.partition.request_flush();
                }
                Err(error) => {
                    tracing::error!(%error, "appending job events failed; the job service stops answering until restarted");
                    let reason = format!("writing job events failed ({error}); restart the server");
                    for reply in &mut replies {
                        reply.1 = Err(unavailable(&reason));
                    }
                    self.failed = Some(reason);
                }
            }
        }
        let offset = self.partition.high_watermark();
        let durable = self.partition.durable_offset();
        while self.unsynced.front().is_some_and(|&(at, _)| at < durable) {
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
                let _ = responder.send((reply, offset));
            }
        }
        if self.failed.is_none() {
            let appended = events.iter().enumerate();
            self.unsynced
                .extend(appended.map(|(index, event)| (turn_start + index as u64, event.id())));
        }
    }

    fn append(&mut self, events: &[Event]) -> spool_log::Result<()> {
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
            if let Err(error) = self.partition.append(&records, Durability::None) {
                result = Err(error);
                break;
            }
            start = end;
        }
        self.encode_buffer = buffer;
        result
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
        let offset = self.partition.high_watermark();
        let encoded = snapshot::encode(&self.core, offset);
        let dir = self.config.snapshot_dir.clone();
        let jobs = self.core.job_count();
        let partition = self.partition.clone();
        let retention = self.config.history_retention;
        let clock = Arc::clone(&self.config.clock);
        let snapshot_offset = Arc::clone(&self.snapshot_offset);
        // A snapshot must never reflect events a crash could still take
        // away: it is written once the log holds them durably.
        let write = move || {
            if let Err(error) = partition.wait_durable_blocking(offset) {
                tracing::warn!(%error, "not writing the jobs snapshot: its events are not durable");
                return;
            }
            match snapshot::write(&dir, &encoded) {
                Ok(()) => {
                    tracing::debug!(offset, jobs, bytes = encoded.len(), "jobs snapshot written");
                    snapshot_offset.store(offset, Ordering::Release);
                    if !retention.keeps_everything() {
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
