//! `spool bench jobs`: no-op jobs end to end through the raw Jobs API.
//!
//! Enqueuers send `EnqueueBatch` requests; consumers `Claim` batches with a
//! long poll and acknowledge each batch with one `FinishBatch` of
//! completions. Every payload starts with the time its enqueue request was
//! sent (nanoseconds since a shared origin, same process, monotonic clock),
//! so each completion yields one latency sample: from the enqueue request
//! to the answer of the `FinishBatch` that completed the job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use spool_client::jobs::{Claim, Jobs, NewJob};

use super::{connect, format_micros, latency_histogram, round3};
use crate::args::BenchJobsArgs;
use crate::output::{out, outln};
use crate::units::group_thousands;
use crate::{Context, Explain};

/// Lease of the bench's claims: far longer than a batch takes to finish.
const LEASE: Duration = Duration::from_secs(60);
/// Long poll of a claim; bounds how long a consumer takes to notice the end.
const CLAIM_WAIT: Duration = Duration::from_millis(200);
/// The bench fails if no job completes for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters shared by the enqueuers and consumers.
#[derive(Debug)]
struct Shared {
    origin: Instant,
    /// Jobs handed out to enqueuers so far (count mode).
    reserved: AtomicU64,
    enqueued: AtomicU64,
    enqueue_done: AtomicBool,
    last_enqueue_ns: AtomicU64,
    completed: AtomicU64,
    last_completion_ns: AtomicU64,
    claims: AtomicU64,
    finish_batches: AtomicU64,
    finish_failures: AtomicU64,
    /// Set when a task failed: every other task stops.
    stop: AtomicBool,
}

impl Shared {
    fn elapsed_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
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
    let target = args.count;
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        reserved: AtomicU64::new(0),
        enqueued: AtomicU64::new(0),
        enqueue_done: AtomicBool::new(false),
        last_enqueue_ns: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        last_completion_ns: AtomicU64::new(0),
        claims: AtomicU64::new(0),
        finish_batches: AtomicU64::new(0),
        finish_failures: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });

    let mut consumers = Vec::new();
    for index in 0..args.consumers {
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
    for _ in 0..args.enqueuers {
        let client = connect(context).await?;
        let enqueuer = Enqueuer {
            jobs: client.jobs(),
            queue: queue.clone(),
            batch: u64::from(args.enqueue_batch),
            padding: Bytes::from(vec![0x5a; payload_bytes - 8]),
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
    let watchdog = tokio::spawn(watch_for_stalls(Arc::clone(&shared)));
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
    let stalled = watchdog.await?;
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
        jobs: shared.completed.load(Ordering::Relaxed),
        enqueued: shared.enqueued.load(Ordering::Relaxed),
        enqueue_elapsed: Duration::from_nanos(shared.last_enqueue_ns.load(Ordering::Relaxed)),
        elapsed: Duration::from_nanos(shared.last_completion_ns.load(Ordering::Relaxed)),
        claims: shared.claims.load(Ordering::Relaxed),
        finish_batches: shared.finish_batches.load(Ordering::Relaxed),
        finish_failures: shared.finish_failures.load(Ordering::Relaxed),
        latency: histogram,
        enqueue_latency: enqueue_histogram,
        settings: vec![
            ("queue", json!(queue)),
            ("payload_bytes", json!(payload_bytes)),
            ("enqueuers", json!(args.enqueuers)),
            ("enqueue_batch", json!(args.enqueue_batch)),
            ("rate", json!(args.rate)),
            ("consumers", json!(args.consumers)),
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
            self.jobs
                .enqueue_batch((0..jobs).map(|_| self.job(sent_ns)).collect())
                .await?;
            round_trips.saturating_record(sent.elapsed().as_micros() as u64);
            sent_jobs += jobs;
            self.shared.enqueued.fetch_add(jobs, Ordering::AcqRel);
            self.shared
                .last_enqueue_ns
                .fetch_max(self.shared.elapsed_ns(), Ordering::Relaxed);
        }
        Ok(round_trips)
    }

    fn job(&self, sent_ns: u64) -> NewJob {
        let mut payload = BytesMut::with_capacity(8 + self.padding.len());
        payload.put_u64_le(sent_ns);
        payload.put_slice(&self.padding);
        NewJob::new(self.queue.clone(), payload.freeze())
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
            let mut completed = 0;
            for (result, sent) in results.iter().zip(sent_ns) {
                if result.is_err() {
                    self.shared.finish_failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                completed += 1;
                if let Some(sent) = sent {
                    latencies.saturating_record(now_ns.saturating_sub(sent) / 1_000);
                }
            }
            self.shared.completed.fetch_add(completed, Ordering::AcqRel);
            self.shared
                .last_completion_ns
                .fetch_max(now_ns, Ordering::Relaxed);
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
                let now_ns = shared.elapsed_ns();
                if let Some(sent) = sent {
                    latencies
                        .lock()
                        .expect("latency lock")
                        .saturating_record(now_ns.saturating_sub(sent) / 1_000);
                }
                shared.completed.fetch_add(1, Ordering::AcqRel);
                shared.last_completion_ns.fetch_max(now_ns, Ordering::Relaxed);
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
    jobs: u64,
    enqueued: u64,
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

    fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("bench".into(), json!("jobs"));
        object.insert("jobs".into(), json!(self.jobs));
        object.insert("enqueued".into(), json!(self.enqueued));
        object.insert("seconds".into(), json!(round3(self.elapsed.as_secs_f64())));
        object.insert(
            "enqueued_per_s".into(),
            json!(per_second(self.enqueued, self.enqueue_elapsed).round()),
        );
        object.insert(
            "completed_per_s".into(),
            json!(per_second(self.jobs, self.elapsed).round()),
        );
        let mut latency = percentiles(&self.latency);
        latency["measures"] = json!("enqueue request to completion answer");
        object.insert("latency_us".into(), latency);
        object.insert("enqueue_round_trip_us".into(), percentiles(&self.enqueue_latency));
        object.insert("claims".into(), json!(self.claims));
        object.insert("jobs_per_claim".into(), json!(round3(self.jobs_per_claim())));
        object.insert("finish_batches".into(), json!(self.finish_batches));
        object.insert("finish_failures".into(), json!(self.finish_failures));
        for (name, value) in &self.settings {
            object.insert((*name).into(), value.clone());
        }
        Value::Object(object)
    }

    fn to_text(&self) -> String {
        let mut out = format!(
            "bench jobs: {} jobs completed in {:.2} s\n",
            group_thousands(self.jobs),
            self.elapsed.as_secs_f64()
        );
        out.push_str(&format!(
            "  enqueue     {} jobs/s ({} jobs in {:.2} s; batch round trip {})\n",
            group_thousands(per_second(self.enqueued, self.enqueue_elapsed).round() as u64),
            group_thousands(self.enqueued),
            self.enqueue_elapsed.as_secs_f64(),
            percentiles_text(&self.enqueue_latency),
        ));
        out.push_str(&format!(
            "  completion  {} jobs/s end to end (first enqueue to last completion)\n",
            group_thousands(per_second(self.jobs, self.elapsed).round() as u64),
        ));
        out.push_str(&format!(
            "  latency     {}  (enqueue request to completion answer, {} samples)\n",
            percentiles_text(&self.latency),
            group_thousands(self.latency.len()),
        ));
        out.push_str(&format!(
            "  claims      {} claims, {:.1} jobs per claim; {} FinishBatch calls; {} completions refused\n",
            group_thousands(self.claims),
            self.jobs_per_claim(),
            group_thousands(self.finish_batches),
            group_thousands(self.finish_failures),
        ));
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
            jobs: 200_000,
            enqueued: 200_000,
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
}
