//! Metrics of the job layer, per queue, read from the job runtime's
//! snapshot at scrape time: jobs by state, the oldest available job's age,
//! totals since start, leases held, workers connected, and the histograms
//! of queue wait, run time and end to end.
//!
//! The histograms carry exemplars: each bucket's latest observation of a
//! job with a `traceparent`, so a slow bucket leads to a trace. They are
//! therefore written as [`ExemplarFamily`]s ([`JobHistograms`]), after the
//! registry, from the snapshot the collector took for the same scrape
//! ([`ScrapeSnapshot`]): one message to the job thread per scrape.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use spool_jobs::{CumulativeHistogram, JobState, JobsRuntime, LatencyExemplar, QueueCounters, QueueMetrics};
use spool_metrics::{Exemplar, ExemplarFamily, HistogramSnapshot, Series, TraceId};

/// How long a scrape waits for the job thread before it leaves the job
/// metrics out (and logs why) rather than hang.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// See the module documentation.
#[derive(Debug)]
pub struct JobsCollector {
    pub jobs: Arc<JobsRuntime>,
    /// Where the snapshot goes for the histogram families.
    pub scrape: Arc<ScrapeSnapshot>,
}

/// The job snapshot of the scrape in progress: the collector puts it here
/// and the histogram families, written after the registry, read it. Of two
/// scrapes at once, both may write the later one's: both are current.
#[derive(Debug, Default)]
pub struct ScrapeSnapshot(Mutex<Option<Arc<Vec<QueueMetrics>>>>);

impl ScrapeSnapshot {
    fn set(&self, queues: Option<Arc<Vec<QueueMetrics>>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = queues;
    }

    fn get(&self) -> Option<Arc<Vec<QueueMetrics>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl JobsCollector {
    /// The snapshot, taken on the job thread. Collectors run on the
    /// blocking pool, where waiting on the runtime with `block_on` is
    /// allowed.
    fn snapshot(&self) -> Option<Vec<QueueMetrics>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let snapshot = handle
            .block_on(async { tokio::time::timeout(SNAPSHOT_WAIT, self.jobs.metrics_snapshot()).await });
        match snapshot {
            Ok(Ok(queues)) => Some(queues),
            Ok(Err(error)) => {
                tracing::warn!(%error, "job metrics left out of this scrape");
                None
            }
            Err(_) => {
                tracing::warn!(
                    wait_ms = SNAPSHOT_WAIT.as_millis() as u64,
                    "the job thread did not answer in time; job metrics left out of this scrape"
                );
                None
            }
        }
    }
}

type Counter = fn(&QueueCounters) -> u64;

const COUNTERS: [(&str, &str, Counter); 8] = [
    (
        "spool_jobs_enqueued",
        "Jobs enqueued (deduplicated enqueues are not).",
        |c| c.enqueued,
    ),
    ("spool_jobs_claimed", "Attempts started by a claim.", |c| {
        c.claimed
    }),
    ("spool_jobs_completed", "Jobs completed by a worker.", |c| {
        c.completed
    }),
    (
        "spool_jobs_failed",
        "Attempts that failed, reported by the worker or by an expired lease.",
        |c| c.failed,
    ),
    (
        "spool_jobs_retried",
        "Failed attempts after which the job was scheduled for a retry.",
        |c| c.retried,
    ),
    (
        "spool_jobs_dead",
        "Failed attempts after which the job went dead.",
        |c| c.dead,
    ),
    (
        "spool_jobs_expired_leases",
        "Attempts failed because the lease ran out or the attempt reached its timeout.",
        |c| c.expired_lease,
    ),
    ("spool_jobs_cancelled", "Jobs cancelled.", |c| c.cancelled),
];

type Distribution = fn(&QueueMetrics) -> &CumulativeHistogram;

const HISTOGRAMS: [(&str, &str, Distribution); 3] = [
    (
        "spool_job_queue_wait_seconds",
        "Time from a job becoming available to its claim, per attempt.",
        |q| &q.queue_wait.histogram,
    ),
    (
        "spool_job_run_seconds",
        "Time from a claim to the attempt's end (completed or failed).",
        |q| &q.run_time.histogram,
    ),
    (
        "spool_job_end_to_end_seconds",
        "Time from enqueue to completion of a job.",
        |q| &q.end_to_end.histogram,
    ),
];

/// prometheus-client takes each bucket's own count, `+Inf` last; the job
/// layer keeps cumulative counts.
/// One of [`HISTOGRAMS`], by index, as an exemplar family.
#[derive(Debug)]
pub struct JobHistograms {
    pub index: usize,
    pub scrape: Arc<ScrapeSnapshot>,
}

impl JobHistograms {
    /// The three families, reading `scrape`.
    pub fn all(scrape: &Arc<ScrapeSnapshot>) -> Vec<JobHistograms> {
        (0..HISTOGRAMS.len())
            .map(|index| JobHistograms {
                index,
                scrape: Arc::clone(scrape),
            })
            .collect()
    }
}

impl ExemplarFamily for JobHistograms {
    fn name(&self) -> &str {
        HISTOGRAMS[self.index].0
    }

    fn help(&self) -> &str {
        HISTOGRAMS[self.index].1
    }

    fn each_series(&self, each: &mut dyn FnMut(Series<'_>)) {
        let Some(queues) = self.scrape.get() else {
            return;
        };
        let distribution = HISTOGRAMS[self.index].2;
        for queue in queues.iter() {
            each(Series {
                labels: &[("queue", queue.queue.as_str())],
                histogram: snapshot(distribution(queue)),
            });
        }
    }
}

fn snapshot(histogram: &CumulativeHistogram) -> HistogramSnapshot {
    HistogramSnapshot {
        buckets: buckets(histogram),
        sum: histogram.sum_seconds,
        count: histogram.count,
        exemplars: histogram
            .exemplars
            .iter()
            .map(|slot| slot.as_ref().and_then(exemplar))
            .collect(),
    }
}

/// The exemplar of a job's observation; `None` when its `traceparent`
/// header is not a valid one.
fn exemplar(observed: &LatencyExemplar) -> Option<Exemplar> {
    Some(Exemplar {
        trace_id: TraceId::from_traceparent(&observed.traceparent)?,
        value: observed.value_ms as f64 / 1_000.0,
        timestamp: UNIX_EPOCH + Duration::from_millis(u64::try_from(observed.at_ms).unwrap_or(0)),
    })
}

fn buckets(histogram: &CumulativeHistogram) -> Vec<(f64, u64)> {
    let mut previous = 0;
    let mut buckets: Vec<(f64, u64)> = histogram
        .bounds_seconds
        .iter()
        .zip(&histogram.cumulative_counts)
        .map(|(&bound, &cumulative)| {
            let own = cumulative.saturating_sub(previous);
            previous = cumulative;
            (bound, own)
        })
        .collect();
    buckets.push((f64::INFINITY, histogram.count.saturating_sub(previous)));
    buckets
}

impl Collector for JobsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(queues) = self.snapshot() else {
            self.scrape.set(None);
            return Ok(());
        };
        let queues = Arc::new(queues);
        self.scrape.set(Some(Arc::clone(&queues)));
        let mut by_state = encoder.encode_descriptor(
            "spool_jobs",
            "Jobs of the queue in the server's memory, by state (succeeded and cancelled ones until they leave memory).",
            None,
            MetricType::Gauge,
        )?;
        for queue in queues.iter() {
            for state in JobState::ALL {
                let labels = [("queue", queue.queue.as_str()), ("state", state.name())];
                by_state
                    .encode_family(&labels)?
                    .encode_gauge(&queue.counts[state.index()])?;
            }
        }
        let mut oldest = encoder.encode_descriptor(
            "spool_queue_oldest_available_age_seconds",
            "How long the queue's oldest available job has waited; 0 when none is available.",
            None,
            MetricType::Gauge,
        )?;
        for queue in queues.iter() {
            let age = queue.oldest_available_age_ms.unwrap_or(0) as f64 / 1000.0;
            oldest
                .encode_family(&[("queue", queue.queue.as_str())])?
                .encode_gauge(&age)?;
        }
        for (name, help, value) in COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for queue in queues.iter() {
                metric
                    .encode_family(&[("queue", queue.queue.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&value(&queue.counters), None)?;
            }
        }
        type Gauge = fn(&QueueMetrics) -> u64;
        let gauges: [(&str, &str, Gauge); 3] = [
            (
                "spool_queue_paused",
                "1 while the queue is paused (claims hand out none of its jobs), else 0.",
                |q| u64::from(q.paused),
            ),
            (
                "spool_queue_leases_held",
                "Leases held on the queue's jobs: the workers' concurrency in use.",
                |q| q.leases_held,
            ),
            (
                "spool_queue_workers_connected",
                "Distinct workers holding a lease, waiting in a claim, or claiming within the last lease period.",
                |q| q.workers_connected,
            ),
        ];
        for (name, help, value) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for queue in queues.iter() {
                metric
                    .encode_family(&[("queue", queue.queue.as_str())])?
                    .encode_gauge(&value(queue))?;
            }
        }
        // Limits: a series only for the queues that set one, so an absent
        // series means no limit.
        type Limit = fn(&QueueMetrics) -> Option<f64>;
        let limits: [(&str, &str, Limit); 3] = [
            (
                "spool_queue_concurrency_limit",
                "At most this many of the queue's jobs run at once across all workers (queues with a limit only).",
                |q| q.config.concurrency_limit.map(f64::from),
            ),
            (
                "spool_queue_rate_limit_jobs",
                "At most this many of the queue's jobs claimed per rate-limit window (queues with a limit only).",
                |q| q.config.rate_limit.map(|r| f64::from(r.jobs)),
            ),
            (
                "spool_queue_rate_limit_window_seconds",
                "The window of the queue's rate limit (queues with a limit only).",
                |q| q.config.rate_limit.map(|r| r.per_ms as f64 / 1000.0),
            ),
        ];
        for (name, help, value) in limits {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for queue in queues.iter() {
                if let Some(value) = value(queue) {
                    metric
                        .encode_family(&[("queue", queue.queue.as_str())])?
                        .encode_gauge(&value)?;
                }
            }
        }
        // The histograms follow as exemplar families (JobHistograms).
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_counts_become_each_bucket_s_own() {
        static BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];
        let histogram = CumulativeHistogram {
            bounds_seconds: &BOUNDS,
            cumulative_counts: vec![2, 2, 5],
            count: 6,
            sum_seconds: 30.0,
            exemplars: Vec::new(),
        };
        assert_eq!(
            buckets(&histogram),
            [(0.1, 2), (1.0, 0), (10.0, 3), (f64::INFINITY, 1)]
        );
    }
}
