//! `spool bench jobs`: no-op jobs through the raw Jobs API or the worker
//! runtime.
//!
//! Enqueuers send `EnqueueBatch` requests (or one `Enqueue` per job with
//! `--single-enqueue`); consumers `Claim` batches with a long poll and
//! acknowledge each batch with one `FinishBatch` of completions (or run the
//! worker runtime). Every payload starts with the time its enqueue request
//! was sent (nanoseconds since a shared origin, same process, monotonic
//! clock), so each completion yields one latency sample: from the enqueue
//! request to the answer of the `FinishBatch` that completed the job.
//!
//! `--mode enqueue` runs the enqueuers alone and deletes the queue
//! afterwards; `--mode backlog` enqueues `--count` jobs first, untimed, and
//! times the consumers draining them, where the latency sample of a
//! completion is the interval since the one before (all consumers
//! together): at concurrency 1, the cycle of one job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use spool_client::jobs::{Claim, Jobs, NewJob};

use super::{connect, format_micros, latency_histogram, round3};
use crate::args::{BenchJobsArgs, BenchJobsMode};
use crate::output::{out, outln};
use crate::units::group_thousands;
use crate::{Context, Explain};

/// Lease of the bench's claims: far longer than a batch takes to finish.
const LEASE: Duration = Duration::from_secs(60);
/// Long poll of a claim; bounds how long a consumer takes to notice the end.
const CLAIM_WAIT: Duration = Duration::from_millis(200);
/// The bench fails if no job completes for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Jobs per `EnqueueBatch`, and requests in flight, of a backlog's preload.
const PRELOAD_BATCH: u64 = 1000;
const PRELOAD_IN_FLIGHT: u64 = 4;

/// What a completion's latency sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// From the job's enqueue request to its completion.
    EnqueueToCompletion,
    /// From the completion before it (any consumer) to this one.
    CompletionInterval,
}

impl Measure {
    fn describe(self) -> &'static str {
        match self {
            Measure::EnqueueToCompletion => "enqueue request to completion answer",
            Measure::CompletionInterval => "interval since the previous completion, all consumers together",
        }
    }
}

/// Counters shared by the enqueuers and consumers.
#[derive(Debug)]
struct Shared {
    origin: Instant,
    /// Jobs handed out to enqueuers so far (count mode).
    reserved: AtomicU64,
    enqueued: AtomicU64,
    enqueue_requests: AtomicU64,
    enqueue_done: AtomicBool,
    last_enqueue_ns: AtomicU64,
    completed: AtomicU64,
    last_completion_ns: AtomicU64,
    claims: AtomicU64,
    finish_batches: AtomicU64,
    finish_failures: AtomicU64,
    /// Set when a task failed: every other task stops.
    stop: AtomicBool,
    measure: Measure,
}

impl Shared {
    fn new(measure: Measure) -> Self {
        Shared {
            origin: Instant::now(),
            reserved: AtomicU64::new(0),
            enqueued: AtomicU64::new(0),
            enqueue_requests: AtomicU64::new(0),
            enqueue_done: AtomicBool::new(false),
            last_enqueue_ns: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            last_completion_ns: AtomicU64::new(0),
            claims: AtomicU64::new(0),
            finish_batches: AtomicU64::new(0),
            finish_failures: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            measure,
        }
    }

    fn elapsed_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Counts `count` completions answered at `now_ns` and returns the
    /// latency sample of each in microseconds, given the enqueue time its
    /// payload carries.
    fn complete(&self, count: u64, now_ns: u64, sent_ns: Option<u64>) -> Option<u64> {
        self.completed.fetch_add(count, Ordering::AcqRel);
        let previous_ns = self.last_completion_ns.fetch_max(now_ns, Ordering::Relaxed);
        match self.measure {
            Measure::EnqueueToCompletion => sent_ns.map(|sent_ns| now_ns.saturating_sub(sent_ns) / 1_000),
            Measure::CompletionInterval => Some(now_ns.saturating_sub(previous_ns) / 1_000),
        }
    }

    fn finished(&self, target: Option<u64>) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        let completed = self.completed.load(Ordering::Acquire);
        match target {
            Some(count) => completed >= count,
            None => {
                self.enqueue_done.load(Ordering::Acquire)
                    && completed >= self.enqueued.load(Ordering::Acquire)
            }
        }
    }
}

pub async fn run(context: &Context, args: &BenchJobsArgs) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let queue = args.queue.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("bench-jobs-{}", now.as_millis())
    });
    // A queue the server has never seen answers NOT_FOUND: it holds no job.
    let waiting = match context.client.jobs().stats(&queue).await {
        Ok(stats) => stats.waiting_count(),
        Err(spool_client::Error::NotFound { .. }) => 0,
        Err(error) => return Err(error).explain(context.subject()),
    };
    if waiting > 0 {
        anyhow::bail!(
            "queue '{queue}' holds {waiting} scheduled, available or running jobs, which the bench would \
             complete as no-ops; leave out --queue to use a new queue"
        );
    }
    let payload_bytes = usize::try_from(args.payload_bytes.max(8))?;
    let padding = Bytes::from(vec![0x5a; payload_bytes - 8]);
    let target = args.count;
    let measure = match args.mode {
        BenchJobsMode::Backlog => {
            let count = target.expect("validated: backlog mode has a count");
            preload(context, &queue, count, &padding).await?;
            Measure::CompletionInterval
        }
        BenchJobsMode::EndToEnd | BenchJobsMode::Enqueue => Measure::EnqueueToCompletion,
    };
    // Created after a backlog's preload: the clock starts here.
    let shared = Arc::new(Shared::new(measure));
    if args.mode == BenchJobsMode::Backlog {
        shared.enqueued.store(target.unwrap_or(0), Ordering::Release);
    }

    let mut consumers = Vec::new();
    let consumers_count = if args.mode == BenchJobsMode::Enqueue {
        0
    } else {
        args.consumers
    };
    for index in 0..consumers_count {
        let client = connect(context).await?;
        let consumer = Consumer {
            jobs: client.jobs(),
            queue: queue.clone(),
            worker_id: format!("bench-{}-{index}", std::process::id()),
            claim_batch: args.claim_batch,
            target,
            shared: Arc::clone(&shared),
        };
        if args.worker_runtime {
            consumers.push(tokio::spawn(run_worker_runtime(client, consumer)));
        } else {
            consumers.push(tokio::spawn(consumer.run()));
        }
    }
    let deadline = Instant::now() + Duration::from_millis(args.duration);
    let mut enqueuers = Vec::new();
    let enqueuers_count = if args.mode == BenchJobsMode::Backlog {
        0
    } else {
        args.enqueuers
    };
    for _ in 0..enqueuers_count {
        let client = connect(context).await?;
        let enqueuer = Enqueuer {
            jobs: client.jobs(),
            queue: queue.clone(),
            batch: u64::from(args.jobs_per_enqueue()),
            single: args.single_enqueue,
            padding: padding.clone(),
            rate_per_s: args.rate.map(|rate| f64::from(rate) / f64::from(args.enqueuers)),
            target,
            deadline,
            shared: Arc::clone(&shared),
        };
        enqueuers.push(tokio::spawn(enqueuer.run()));
    }

    let mut first_error = None;
    let mut enqueue_histogram = latency_histogram();
    for task in enqueuers {
        match task.await? {
            Ok(histogram) => enqueue_histogram.add(histogram)?,
            Err(error) => {
                shared.stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(error);
            }
        }
    }
    shared.enqueue_done.store(true, Ordering::Release);
    if args.mode == BenchJobsMode::Enqueue {
        // Nothing will run these jobs: take them out of the server.
        let deleted = context.client.jobs().delete_queue(&queue, true).await;
        if let Some(error) = first_error {
            return Err(error).explain(context.subject());
        }
        deleted.explain(context.subject())?;
    }
    let watchdog = if consumers.is_empty() {
        None
    } else {
        Some(tokio::spawn(watch_for_stalls(Arc::clone(&shared))))
    };
    let mut histogram = latency_histogram();
    for task in consumers {
        match task.await? {
            Ok(samples) => histogram.add(samples)?,
            Err(error) => {
                shared.stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(error);
            }
        }
    }
    let stalled = match watchdog {
        Some(watchdog) => watchdog.await?,
        None => false,
    };
    if let Some(error) = first_error {
        return Err(error).explain(context.subject());
    }
    if stalled {
        anyhow::bail!(
            "no job of '{queue}' completed for {STALL_TIMEOUT:?} ({} of {} done); is the server overloaded, \
             or is another worker claiming from this queue?",
            shared.completed.load(Ordering::Relaxed),
            shared.enqueued.load(Ordering::Relaxed)
        );
    }

    let report = JobsReport {
        mode: args.mode,
        measure,
        jobs: shared.completed.load(Ordering::Relaxed),
        enqueued: shared.enqueued.load(Ordering::Relaxed),
        enqueue_requests: shared.enqueue_requests.load(Ordering::Relaxed),
        enqueue_elapsed: Duration::from_nanos(shared.last_enqueue_ns.load(Ordering::Relaxed)),
        elapsed: Duration::from_nanos(shared.last_completion_ns.load(Ordering::Relaxed)),
        claims: shared.claims.load(Ordering::Relaxed),
        finish_batches: shared.finish_batches.load(Ordering::Relaxed),
        finish_failures: shared.finish_failures.load(Ordering::Relaxed),
        latency: histogram,
        enqueue_latency: enqueue_histogram,
        settings: vec![
            ("queue", json!(queue)),
            ("mode", json!(mode_name(args.mode))),
            ("payload_bytes", json!(payload_bytes)),
            ("enqueuers", json!(enqueuers_count)),
            // A backlog's jobs come from the untimed preload's batches.
            (
                "enqueue_batch",
                json!(if args.mode == BenchJobsMode::Backlog {
                    PRELOAD_BATCH
                } else {
                    u64::from(args.jobs_per_enqueue())
                }),
            ),
            (
                "enqueue_rpc",
                json!(if args.single_enqueue {
                    "Enqueue"
                } else {
                    "EnqueueBatch"
                }),
            ),
            ("rate", json!(args.rate)),
            ("consumers", json!(consumers_count)),
            ("worker_runtime", json!(args.worker_runtime)),
            ("claim_batch", json!(args.claim_batch)),
            ("claim_wait_ms", json!(CLAIM_WAIT.as_millis() as u64)),
        ],
    };
    if args.json {
        outln!("{}", report.to_json())?;
    } else {
        out!("{}", report.to_text())?;
    }
    Ok(())
}

/// Stops the bench when completions stop arriving; true if it did.
async fn watch_for_stalls(shared: Arc<Shared>) -> bool {
    let mut last = (shared.completed.load(Ordering::Relaxed), Instant::now());
    while !shared.finished(None) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let completed = shared.completed.load(Ordering::Relaxed);
        if completed != last.0 {
            last = (completed, Instant::now());
        } else if last.1.elapsed() >= STALL_TIMEOUT {
            shared.stop.store(true, Ordering::Relaxed);
            return true;
        }
    }
    false
}

struct Enqueuer {
    jobs: Jobs,
    queue: String,
    batch: u64,
    /// One `Enqueue` call per job instead of `EnqueueBatch`.
    single: bool,
    padding: Bytes,
    /// This enqueuer's share of `--rate`, in jobs a second.
    rate_per_s: Option<f64>,
    target: Option<u64>,
    deadline: Instant,
    shared: Arc<Shared>,
}

impl Enqueuer {
    /// Enqueues batches until the count is handed out or the deadline
    /// passed; returns the round trips of its requests.
    async fn run(self) -> spool_client::Result<Histogram<u64>> {
        let mut round_trips = latency_histogram();
        let started = Instant::now();
        let mut sent_jobs = 0u64;
        loop {
            if let Some(rate) = self.rate_per_s {
                // Each batch leaves when the jobs before it are due at the
                // rate, so a slow answer is made up for, not added.
                let due = started + Duration::from_secs_f64(sent_jobs as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            if self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let jobs = match self.target {
                Some(count) => {
                    let start = self.shared.reserved.fetch_add(self.batch, Ordering::Relaxed);
                    if start >= count {
                        break;
                    }
                    self.batch.min(count - start)
                }
                None if Instant::now() >= self.deadline => break,
                None => self.batch,
            };
            let sent = Instant::now();
            let sent_ns = self.shared.elapsed_ns();
            if self.single {
                self.jobs.enqueue(self.job(sent_ns)).await?;
            } else {
                self.jobs
                    .enqueue_batch((0..jobs).map(|_| self.job(sent_ns)).collect())
                    .await?;
            }
            round_trips.saturating_record(sent.elapsed().as_micros() as u64);
            self.shared.enqueue_requests.fetch_add(1, Ordering::Relaxed);
            sent_jobs += jobs;
            self.shared.enqueued.fetch_add(jobs, Ordering::AcqRel);
            self.shared
                .last_enqueue_ns
                .fetch_max(self.shared.elapsed_ns(), Ordering::Relaxed);
        }
        Ok(round_trips)
    }

    fn job(&self, sent_ns: u64) -> NewJob {
        new_job(&self.queue, sent_ns, &self.padding)
    }
}

/// A no-op job whose payload starts with its enqueue time.
fn new_job(queue: &str, sent_ns: u64, padding: &Bytes) -> NewJob {
    let mut payload = BytesMut::with_capacity(8 + padding.len());
    payload.put_u64_le(sent_ns);
    payload.put_slice(padding);
    NewJob::new(queue.to_owned(), payload.freeze())
}

/// Enqueues a backlog of `count` jobs before the clock starts, in
/// `EnqueueBatch`es of `PRELOAD_BATCH` with `PRELOAD_IN_FLIGHT` in flight.
async fn preload(context: &Context, queue: &str, count: u64, padding: &Bytes) -> anyhow::Result<()> {
    let client = connect(context).await?;
    let batches = count.div_ceil(PRELOAD_BATCH);
    let mut tasks = Vec::new();
    for task in 0..PRELOAD_IN_FLIGHT {
        let jobs = client.jobs();
        let queue = queue.to_owned();
        let padding = padding.clone();
        tasks.push(tokio::spawn(async move {
            let mut index = task;
            while index < batches {
                let size = PRELOAD_BATCH.min(count - index * PRELOAD_BATCH);
                jobs.enqueue_batch((0..size).map(|_| new_job(&queue, 0, &padding)).collect())
                    .await?;
                index += PRELOAD_IN_FLIGHT;
            }
            Ok::<_, spool_client::Error>(())
        }));
    }
    for task in tasks {
        task.await?.explain(context.subject())?;
    }
    Ok(())
}

fn mode_name(mode: BenchJobsMode) -> &'static str {
    match mode {
        BenchJobsMode::EndToEnd => "end-to-end",
        BenchJobsMode::Enqueue => "enqueue",
        BenchJobsMode::Backlog => "backlog",
    }
}

struct Consumer {
    jobs: Jobs,
    queue: String,
    worker_id: String,
    claim_batch: u32,
    target: Option<u64>,
    shared: Arc<Shared>,
}

impl Consumer {
    /// Claims and completes batches until every job is done; returns the
    /// enqueue-to-completion latencies of the jobs it completed.
    async fn run(self) -> spool_client::Result<Histogram<u64>> {
        let mut latencies = latency_histogram();
        let claim = Claim {
            queues: vec![self.queue.clone()],
            max_jobs: self.claim_batch,
            lease: LEASE,
            max_wait: CLAIM_WAIT,
            worker_id: self.worker_id.clone(),
        };
        while !self.shared.finished(self.target) {
            let jobs = self.jobs.claim(&claim).await?;
            if jobs.is_empty() {
                continue;
            }
            self.shared.claims.fetch_add(1, Ordering::Relaxed);
            self.shared.finish_batches.fetch_add(1, Ordering::Relaxed);
            let sent_ns: Vec<Option<u64>> = jobs
                .iter()
                .map(|job| Some(u64::from_le_bytes(job.payload.get(..8)?.try_into().ok()?)))
                .collect();
            let outcomes = jobs.iter().map(|job| job.complete(Bytes::new())).collect();
            let results = self.jobs.finish(outcomes).await?;
            let now_ns = self.shared.elapsed_ns();
            for (result, sent) in results.iter().zip(sent_ns) {
                if result.is_err() {
                    self.shared.finish_failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Some(micros) = self.shared.complete(1, now_ns, sent) {
                    latencies.saturating_record(micros);
                }
            }
        }
        Ok(latencies)
    }
}

/// Consumes with the worker runtime: one `Worker` whose handler records
/// the enqueue-to-run latency and completes at once; it runs until every
/// job is done, and returns only after its acknowledgements are sent.
async fn run_worker_runtime(
    client: spool_client::Client,
    consumer: Consumer,
) -> spool_client::Result<Histogram<u64>> {
    use spool_client::worker::{Job, Outcome, Worker, WorkerConfig};
    let latencies = Arc::new(std::sync::Mutex::new(latency_histogram()));
    let shared = Arc::clone(&consumer.shared);
    // The clock stops when run_until returns, after the shutdown waited for
    // the worker's parked long polls: with the default two-second claim
    // wait that alone was seconds of a short run.
    let config = WorkerConfig {
        concurrency: consumer.claim_batch as usize,
        claim_wait: CLAIM_WAIT,
        ..WorkerConfig::default()
    };
    let handler = {
        let latencies = Arc::clone(&latencies);
        let shared = Arc::clone(&shared);
        move |job: Job| {
            let latencies = Arc::clone(&latencies);
            let shared = Arc::clone(&shared);
            async move {
                let sent = job
                    .payload()
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes);
                if let Some(micros) = shared.complete(1, shared.elapsed_ns(), sent) {
                    latencies.lock().expect("latency lock").saturating_record(micros);
                }
                Outcome::complete(Bytes::new())
            }
        }
    };
    let target = consumer.target;
    let until_done = {
        let shared = Arc::clone(&shared);
        async move {
            while !shared.finished(target) && !shared.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let report = Worker::new(&client, config)
        .handle(consumer.queue.clone(), handler)
        .run_until(until_done)
        .await
        .map_err(|error| spool_client::Error::Protocol {
            reason: format!("worker runtime: {error}"),
        })?;
    shared.claims.fetch_add(report.claims, Ordering::Relaxed);
    shared
        .finish_batches
        .fetch_add(report.finish_batches, Ordering::Relaxed);
    // Completions are counted when handlers return; the runtime has sent
    // every acknowledgement by the time run_until returns.
    shared
        .last_completion_ns
        .fetch_max(shared.elapsed_ns(), Ordering::Relaxed);
    let histogram = latencies.lock().expect("latency lock").clone();
    Ok(histogram)
}

/// What `bench jobs` measured.
#[derive(Debug)]
struct JobsReport {
    mode: BenchJobsMode,
    /// What `latency` measures.
    measure: Measure,
    jobs: u64,
    enqueued: u64,
    /// Enqueue or EnqueueBatch calls answered.
    enqueue_requests: u64,
    /// From the start to the last enqueue's answer.
    enqueue_elapsed: Duration,
    /// From the start to the last completion's answer.
    elapsed: Duration,
    /// `Claim` calls that brought jobs (the worker runtime also counts
    /// empty ones after their long poll).
    claims: u64,
    finish_batches: u64,
    finish_failures: u64,
    latency: Histogram<u64>,
    enqueue_latency: Histogram<u64>,
    settings: Vec<(&'static str, Value)>,
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn percentiles(histogram: &Histogram<u64>) -> Value {
    json!({
        "samples": histogram.len(),
        "p50": histogram.value_at_quantile(0.5),
        "p99": histogram.value_at_quantile(0.99),
        "p99_9": histogram.value_at_quantile(0.999),
        "max": histogram.max(),
    })
}

fn percentiles_text(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {}  p99 {}  p99.9 {}  max {}",
        format_micros(histogram.value_at_quantile(0.5)),
        format_micros(histogram.value_at_quantile(0.99)),
        format_micros(histogram.value_at_quantile(0.999)),
        format_micros(histogram.max()),
    )
}

impl JobsReport {
    fn jobs_per_claim(&self) -> f64 {
        self.jobs as f64 / self.claims.max(1) as f64
    }

    /// The figure of the mode: jobs enqueued a second with `--mode
    /// enqueue`, else jobs completed a second.
    fn jobs_per_second(&self) -> f64 {
        match self.mode {
            BenchJobsMode::Enqueue => per_second(self.enqueued, self.enqueue_elapsed),
            BenchJobsMode::EndToEnd | BenchJobsMode::Backlog => per_second(self.jobs, self.elapsed),
        }
    }

    /// Enqueue requests a second with `--mode enqueue`, else Claim and
    /// FinishBatch calls a second.
    fn requests_per_second(&self) -> f64 {
        match self.mode {
            BenchJobsMode::Enqueue => per_second(self.enqueue_requests, self.enqueue_elapsed),
            BenchJobsMode::EndToEnd | BenchJobsMode::Backlog => {
                per_second(self.claims + self.finish_batches, self.elapsed)
            }
        }
    }

    fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        let enqueue_only = self.mode == BenchJobsMode::Enqueue;
        object.insert("bench".into(), json!("jobs"));
        object.insert("jobs".into(), json!(self.jobs));
        object.insert("enqueued".into(), json!(self.enqueued));
        object.insert("enqueue_requests".into(), json!(self.enqueue_requests));
        let seconds = if enqueue_only {
            self.enqueue_elapsed
        } else {
            self.elapsed
        };
        object.insert("seconds".into(), json!(round3(seconds.as_secs_f64())));
        object.insert("jobs_per_s".into(), json!(self.jobs_per_second().round()));
        object.insert("requests_per_s".into(), json!(self.requests_per_second().round()));
        if self.mode != BenchJobsMode::Backlog {
            object.insert(
                "enqueued_per_s".into(),
                json!(per_second(self.enqueued, self.enqueue_elapsed).round()),
            );
            object.insert("enqueue_round_trip_us".into(), percentiles(&self.enqueue_latency));
        }
        if !enqueue_only {
            object.insert(
                "completed_per_s".into(),
                json!(per_second(self.jobs, self.elapsed).round()),
            );
            let mut latency = percentiles(&self.latency);
            latency["measures"] = json!(self.measure.describe());
            object.insert("latency_us".into(), latency);
            object.insert("claims".into(), json!(self.claims));
            object.insert("jobs_per_claim".into(), json!(round3(self.jobs_per_claim())));
            object.insert("finish_batches".into(), json!(self.finish_batches));
            object.insert("finish_failures".into(), json!(self.finish_failures));
        }
        for (name, value) in &self.settings {
            object.insert((*name).into(), value.clone());
        }
        Value::Object(object)
    }

    fn to_text(&self) -> String {
        let mut out = match self.mode {
            BenchJobsMode::Enqueue => format!(
                "bench jobs: {} jobs enqueued in {:.2} s ({} requests, {} requests/s)\n",
                group_thousands(self.enqueued),
                self.enqueue_elapsed.as_secs_f64(),
                group_thousands(self.enqueue_requests),
                group_thousands(self.requests_per_second().round() as u64),
            ),
            BenchJobsMode::EndToEnd | BenchJobsMode::Backlog => format!(
                "bench jobs: {} jobs completed in {:.2} s\n",
                group_thousands(self.jobs),
                self.elapsed.as_secs_f64()
            ),
        };
        if self.mode != BenchJobsMode::Backlog {
            out.push_str(&format!(
                "  enqueue     {} jobs/s ({} jobs in {:.2} s; request round trip {})\n",
                group_thousands(per_second(self.enqueued, self.enqueue_elapsed).round() as u64),
                group_thousands(self.enqueued),
                self.enqueue_elapsed.as_secs_f64(),
                percentiles_text(&self.enqueue_latency),
            ));
        }
        if self.mode != BenchJobsMode::Enqueue {
            let span = if self.mode == BenchJobsMode::Backlog {
                "from the consumers' start to the last completion, backlog enqueued first"
            } else {
                "end to end (first enqueue to last completion)"
            };
            out.push_str(&format!(
                "  completion  {} jobs/s {span}\n",
                group_thousands(per_second(self.jobs, self.elapsed).round() as u64),
            ));
            out.push_str(&format!(
                "  latency     {}  ({}, {} samples)\n",
                percentiles_text(&self.latency),
                self.measure.describe(),
                group_thousands(self.latency.len()),
            ));
            out.push_str(&format!(
                "  claims      {} claims, {:.1} jobs per claim; {} FinishBatch calls; {} completions refused\n",
                group_thousands(self.claims),
                self.jobs_per_claim(),
                group_thousands(self.finish_batches),
                group_thousands(self.finish_failures),
            ));
        }
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(name, value)| match value {
                Value::String(text) => format!("{name}={text}"),
                other => format!("{name}={other}"),
            })
            .collect();
        out.push_str(&format!("  settings    {}\n", settings.join(" ")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_renders_as_text_and_one_json_line() {
        let mut latency = latency_histogram();
        for micros in 1..=1000 {
            latency.record(micros).unwrap();
        }
        let report = JobsReport {
            mode: BenchJobsMode::EndToEnd,
            measure: Measure::EnqueueToCompletion,
            jobs: 200_000,
            enqueued: 200_000,
            enqueue_requests: 400,
            enqueue_elapsed: Duration::from_secs(2),
            elapsed: Duration::from_secs(4),
            claims: 400,
            finish_batches: 400,
            finish_failures: 0,
            latency,
            enqueue_latency: latency_histogram(),
            settings: vec![("queue", json!("q"))],
        };
        let json = report.to_json();
        assert_eq!(json["completed_per_s"], json!(50_000.0));
        assert_eq!(json["enqueued_per_s"], json!(100_000.0));
        assert_eq!(json["jobs_per_claim"], json!(500.0));
        assert_eq!(json["latency_us"]["p50"], json!(500));
        assert!(!json.to_string().contains('\n'));
        let text = report.to_text();
        assert!(text.contains("completion  50,000 jobs/s"), "{text}");
        assert!(text.contains("enqueue     100,000 jobs/s"), "{text}");
        assert!(text.contains("settings    queue=q"), "{text}");
    }

    fn report_of(mode: BenchJobsMode, measure: Measure) -> JobsReport {
        JobsReport {
            mode,
            measure,
            jobs: 0,
            enqueued: 0,
            enqueue_requests: 0,
            enqueue_elapsed: Duration::from_secs(2),
            elapsed: Duration::from_secs(4),
            claims: 0,
            finish_batches: 0,
            finish_failures: 0,
            latency: latency_histogram(),
            enqueue_latency: latency_histogram(),
            settings: Vec::new(),
        }
    }

    #[test]
    fn an_enqueue_report_counts_requests_and_no_completion() {
        let report = JobsReport {
            enqueued: 3_000,
            enqueue_requests: 3_000,
            ..report_of(BenchJobsMode::Enqueue, Measure::EnqueueToCompletion)
        };
        let json = report.to_json();
        assert_eq!(json["jobs_per_s"], json!(1_500.0));
        assert_eq!(json["requests_per_s"], json!(1_500.0));
        assert_eq!(json["enqueued_per_s"], json!(1_500.0));
        assert!(json.get("completed_per_s").is_none(), "{json}");
        assert!(json.get("latency_us").is_none(), "{json}");
        let text = report.to_text();
        assert!(
            text.contains("3,000 jobs enqueued in 2.00 s (3,000 requests, 1,500 requests/s)"),
            "{text}"
        );
        assert!(!text.contains("completion"), "{text}");
    }

    #[test]
    fn a_backlog_report_times_the_drain_only() {
        let report = JobsReport {
            jobs: 8_000,
            enqueued: 8_000,
            claims: 100,
            finish_batches: 100,
            ..report_of(BenchJobsMode::Backlog, Measure::CompletionInterval)
        };
        let json = report.to_json();
        assert_eq!(json["jobs_per_s"], json!(2_000.0));
        assert_eq!(json["completed_per_s"], json!(2_000.0));
        assert_eq!(json["requests_per_s"], json!(50.0));
        assert!(json.get("enqueued_per_s").is_none(), "{json}");
        assert_eq!(
            json["latency_us"]["measures"],
            json!(Measure::CompletionInterval.describe())
        );
        assert!(report.to_text().contains("backlog enqueued first"));
    }

    #[test]
    fn a_completion_interval_sample_is_the_gap_since_the_last_completion() {
        let shared = Shared::new(Measure::CompletionInterval);
        assert_eq!(shared.complete(1, 5_000, Some(0)), Some(5));
        assert_eq!(shared.complete(1, 12_000, Some(0)), Some(7));
        // A completion counted late by another consumer: no negative gap.
        assert_eq!(shared.complete(1, 11_000, None), Some(0));
        assert_eq!(shared.completed.load(Ordering::Relaxed), 3);
        let shared = Shared::new(Measure::EnqueueToCompletion);
        assert_eq!(shared.complete(1, 12_000, Some(2_000)), Some(10));
        assert_eq!(shared.complete(1, 12_000, None), None);
    }
}
