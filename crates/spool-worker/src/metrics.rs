//! The worker's own metrics, served at `/metrics` when `--metrics-listen`
//! is given: how long handlers run, how they end, the commands' exit codes
//! or the endpoint's HTTP statuses, and how many of the `--concurrency`
//! slots are busy.
//!
//! Every queue's counters are created at start ([`QueueMetrics`]), and
//! each queue's handler is wrapped in a [`Metered`] that holds its queue's
//! handle, so recording is a few relaxed atomic adds. The exec and HTTP
//! handlers, which serve every queue, find a queue's handle by a binary
//! search of the sorted queue names.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{StatusCode, header};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use spool_client::worker::{Handler, Job, Outcome};
use spool_metrics::http::{Response, plain, response};
use spool_metrics::{Exposition, Format, Histogram, histogram};

/// How a handler's run ended, the `code` of
/// `spool_worker_handler_outcomes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The handler completed the job.
    Ok,
    /// The handler failed the attempt; the server retries while attempts
    /// remain.
    Retry,
    /// The handler failed the job without retry (DEAD, or CANCELLED when a
    /// cancel was asked).
    Dead,
    /// The handler was stopped before it answered: the job's timeout or
    /// the end of the shutdown grace period. The worker fails or releases
    /// the attempt.
    Stopped,
}

const ENDINGS: [(Ending, &str); 4] = [
    (Ending::Ok, "ok"),
    (Ending::Retry, "retry"),
    (Ending::Dead, "dead"),
    (Ending::Stopped, "stopped"),
];

/// Exit codes are 0 to 255 (a signal counts as 128 plus its number, as a
/// shell reports it).
const EXIT_CODES: usize = 256;
/// HTTP statuses are 100 to 599.
const HTTP_STATUS_MIN: u16 = 100;
const HTTP_STATUSES: usize = 500;

/// One queue's counters.
#[derive(Debug)]
pub struct QueueMetrics {
    name: String,
    duration: Histogram,
    endings: [AtomicU64; ENDINGS.len()],
    exit_codes: Box<[AtomicU64]>,
    http_statuses: Box<[AtomicU64]>,
}

impl QueueMetrics {
    fn new(name: &str) -> Self {
        QueueMetrics {
            name: name.to_owned(),
            duration: Histogram::new(&histogram::SECONDS),
            endings: Default::default(),
            exit_codes: (0..EXIT_CODES).map(|_| AtomicU64::new(0)).collect(),
            http_statuses: (0..HTTP_STATUSES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts a command's exit: `code` for an exit, `128 + signal` for a
    /// kill by a signal.
    pub fn count_exit(&self, code: Option<i32>, signal: Option<i32>) {
        let code = match (code, signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => return,
        };
        if let Ok(code) = usize::try_from(code)
            && let Some(counter) = self.exit_codes.get(code)
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an HTTP status the endpoint answered.
    pub fn count_http_status(&self, status: StatusCode) {
        let index = status.as_u16().checked_sub(HTTP_STATUS_MIN).map(usize::from);
        if let Some(counter) = index.and_then(|index| self.http_statuses.get(index)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn end(&self, ending: Ending, started: Instant) {
        self.duration.observe_duration(started.elapsed());
        self.endings[ending as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Every queue's counters and the slots in use.
#[derive(Debug)]
pub struct WorkerMetrics {
    /// Sorted by name.
    queues: Vec<Arc<QueueMetrics>>,
    concurrency: u64,
    busy: AtomicU64,
}

impl WorkerMetrics {
    pub fn new(queues: &[String], concurrency: u64) -> Arc<Self> {
        let mut names: Vec<&String> = queues.iter().collect();
        names.sort();
        names.dedup();
        Arc::new(WorkerMetrics {
            queues: names
                .into_iter()
                .map(|name| Arc::new(QueueMetrics::new(name)))
                .collect(),
            concurrency,
            busy: AtomicU64::new(0),
        })
    }

    /// The counters of `queue`, if the worker serves it.
    pub fn queue(&self, queue: &str) -> Option<&Arc<QueueMetrics>> {
        self.queues
            .binary_search_by(|metrics| metrics.name.as_str().cmp(queue))
            .ok()
            .map(|index| &self.queues[index])
    }

    /// `handler` for `queue`, measured.
    pub fn meter<H: Handler>(self: &Arc<Self>, queue: &str, handler: H) -> Metered<H> {
        Metered {
            inner: handler,
            queue: Arc::clone(self.queue(queue).expect("a queue the worker was built with")),
            worker: Arc::clone(self),
        }
    }

    /// Everything, for `/metrics`.
    pub fn exposition(self: &Arc<Self>) -> Exposition {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(WorkerCollector(Arc::clone(self))));
        Exposition::new(registry)
    }
}

/// A handler whose runs are timed and counted.
#[derive(Debug)]
pub struct Metered<H> {
    inner: H,
    queue: Arc<QueueMetrics>,
    worker: Arc<WorkerMetrics>,
}

/// A run in progress: busy while it lives, `stopped` if dropped before the
/// handler answered.
struct Run<'a> {
    queue: &'a QueueMetrics,
    worker: &'a WorkerMetrics,
    started: Instant,
    ended: bool,
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.worker.busy.fetch_sub(1, Ordering::Relaxed);
        if !self.ended {
            self.queue.end(Ending::Stopped, self.started);
        }
    }
}

impl<H: Handler> Handler for Metered<H> {
    async fn handle(&self, job: Job) -> Outcome {
        self.worker.busy.fetch_add(1, Ordering::Relaxed);
        let mut run = Run {
            queue: &self.queue,
            worker: &self.worker,
            started: Instant::now(),
            ended: false,
        };
        let outcome = self.inner.handle(job).await;
        let ending = match &outcome {
            Outcome::Complete { .. } => Ending::Ok,
            Outcome::Fail { retryable: true, .. } => Ending::Retry,
            Outcome::Fail { retryable: false, .. } => Ending::Dead,
        };
        self.queue.end(ending, run.started);
        run.ended = true;
        outcome
    }
}

#[derive(Debug)]
struct WorkerCollector(Arc<WorkerMetrics>);

impl Collector for WorkerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let worker = &self.0;
        let mut metric = encoder.encode_descriptor(
            "spool_worker_handler_duration_seconds",
            "Time a handler ran for one attempt of a job.",
            None,
            MetricType::Histogram,
        )?;
        for queue in &worker.queues {
            let snapshot = queue.duration.snapshot();
            metric
                .encode_family(&[("queue", queue.name.as_str())])?
                .encode_histogram::<NoLabelSet>(snapshot.sum, snapshot.count, &snapshot.buckets, None)?;
        }
        let mut metric = encoder.encode_descriptor(
            "spool_worker_handler_outcomes",
            "Handler runs by how they ended: ok, retry, dead (failed without retry) or stopped (timeout, end of grace).",
            None,
            MetricType::Counter,
        )?;
        for queue in &worker.queues {
            for (ending, code) in ENDINGS {
                let count = queue.endings[ending as usize].load(Ordering::Relaxed);
                metric
                    .encode_family(&[("queue", queue.name.as_str()), ("code", code)])?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "spool_worker_exit_codes",
            "Exit codes of --exec commands (128 + N for a kill by signal N); codes never seen are left out.",
            None,
            MetricType::Counter,
        )?;
        for queue in &worker.queues {
            for (code, counter) in queue.exit_codes.iter().enumerate() {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    metric
                        .encode_family(&[("queue", queue.name.clone()), ("code", code.to_string())])?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
            }
        }
        let mut metric = encoder.encode_descriptor(
            "spool_worker_http_statuses",
            "HTTP statuses the --http endpoint answered; statuses never seen are left out.",
            None,
            MetricType::Counter,
        )?;
        for queue in &worker.queues {
            for (index, counter) in queue.http_statuses.iter().enumerate() {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    let code = (index + usize::from(HTTP_STATUS_MIN)).to_string();
                    metric
                        .encode_family(&[("queue", queue.name.clone()), ("code", code)])?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
            }
        }
        encoder
            .encode_descriptor(
                "spool_worker_slots_busy",
                "Handlers running now.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&worker.busy.load(Ordering::Relaxed))?;
        encoder
            .encode_descriptor(
                "spool_worker_slots",
                "Handlers that may run at once (--concurrency).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&worker.concurrency)?;
        Ok(())
    }
}

/// Answers a request to the worker's metrics listener: `/metrics` only.
pub fn answer<B>(exposition: &Exposition, request: &http::Request<B>) -> Response {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            &format!("not found: {}; the worker serves /metrics", request.uri().path()),
        );
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        let mut refused = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        refused
            .headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Format::from_accept(accept);
    response(StatusCode::OK, format.content_type(), exposition.render(format))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn exit_codes_and_statuses_stay_in_their_ranges() {
        let metrics = WorkerMetrics::new(&["b".to_owned(), "a".to_owned(), "a".to_owned()], 4);
        let queue = metrics.queue("a").unwrap();
        queue.count_exit(Some(3), None);
        queue.count_exit(None, Some(9));
        queue.count_exit(Some(-1), None);
        queue.count_exit(Some(300), None);
        queue.count_http_status(StatusCode::SERVICE_UNAVAILABLE);
        assert!(metrics.queue("c").is_none());
        let request = http::Request::builder().uri("/metrics").body(()).unwrap();
        let body = answer(&metrics.exposition(), &request).into_body();
        let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        for line in [
            "spool_worker_exit_codes_total{queue=\"a\",code=\"3\"} 1\n",
            "spool_worker_exit_codes_total{queue=\"a\",code=\"137\"} 1\n",
            "spool_worker_http_statuses_total{queue=\"a\",code=\"503\"} 1\n",
            "spool_worker_handler_outcomes_total{queue=\"b\",code=\"ok\"} 0\n",
            "spool_worker_slots 4\n",
            "spool_worker_slots_busy 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert_eq!(
            text.matches("spool_worker_exit_codes_total{").count(),
            2,
            "{text}"
        );
    }
}
