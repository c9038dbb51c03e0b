//! `spool bench produce`: producers enqueue records as fast as the
//! producer's backpressure lets them; one record in `SAMPLE_EVERY` has its
//! enqueue-to-acknowledgement time recorded.
//!
//! With `--records-per-request N` the linger batching is bypassed: each of
//! `--in-flight` tasks per producer sends one request of exactly N records
//! with `Producer::send_batch` (the encoded-batch fast path a linger batch
//! also takes), waits for its answer and sends the next, and every round
//! trip is recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use spool_client::{DeliveryFuture, Durability, Producer, ProducerConfig, Record, Target};
use tokio::sync::mpsc;

use super::{BenchTopic, Report, connect, latency_histogram, payloads};
use crate::args::{BenchProduceArgs, BenchProducerOptions};
use crate::{Context, Explain};

const SAMPLE_EVERY: u64 = 64;

pub fn producer_config(options: &BenchProducerOptions, linger_default_ms: u64) -> ProducerConfig {
    ProducerConfig {
        batch_bytes_max: usize::try_from(options.batch_bytes).unwrap_or(usize::MAX),
        linger_ms: options.linger_ms.unwrap_or(linger_default_ms),
        in_flight_max: options.in_flight.max(1),
        durability: options.durability.into(),
        ..ProducerConfig::default()
    }
}

pub async fn run(context: &Context, topic: &BenchTopic, args: &BenchProduceArgs) -> anyhow::Result<Report> {
    if let Some(records_per_request) = args.records_per_request {
        return run_requests(context, topic, args, records_per_request).await;
    }
    let config = producer_config(&args.producer, ProducerConfig::default().linger_ms);
    let producers = args.producers.max(1);
    let values = payloads(1024, args.common.record_bytes as usize);
    let duration = Duration::from_millis(args.duration);

    let mut tasks = Vec::new();
    let mut shares = Vec::new();
    for index in 0..u64::from(producers) {
        let client = connect(context).await?;
        let producer = client
            .producer(&topic.name, config.clone())
            .await
            .explain(context.about(&topic.name))?;
        // Split an exact count evenly, the remainder to the first ones.
        let share = args
            .count
            .map(|count| count / u64::from(producers) + u64::from(index < count % u64::from(producers)));
        shares.push((producer, share));
    }
    let started = Instant::now();
    let deadline = started + duration;
    for (producer, share) in shares {
        let values = values.clone();
        tasks.push(tokio::spawn(async move {
            let (samples, mut pending) = mpsc::channel::<(Instant, DeliveryFuture)>(4096);
            let collector = tokio::spawn(async move {
                let mut histogram = latency_histogram();
                while let Some((enqueued, delivery)) = pending.recv().await {
                    if delivery.await.is_ok() {
                        histogram.saturating_record(enqueued.elapsed().as_micros() as u64);
                    }
                }
                histogram
            });
            let mut sent = 0u64;
            loop {
                match share {
                    Some(share) if sent >= share => break,
                    None if sent.is_multiple_of(1024) && Instant::now() >= deadline => break,
                    _ => {}
                }
                let record = Record {
                    value: Some(values[(sent % values.len() as u64) as usize].clone()),
                    ..Record::default()
                };
                if sent.is_multiple_of(SAMPLE_EVERY) {
                    let enqueued = Instant::now();
                    let delivery = producer.enqueue(record).await?;
                    let _ = samples.send((enqueued, delivery)).await;
                } else {
                    drop(producer.enqueue(record).await?);
                }
                sent += 1;
            }
            let flushed = producer.close().await;
            drop(samples);
            let histogram = collector.await.expect("the collector does not panic");
            flushed.map(|()| (sent, histogram))
        }));
    }
    let mut records = 0;
    let mut histogram: Histogram<u64> = latency_histogram();
    for task in tasks {
        let (sent, samples) = task.await?.explain(context.about(&topic.name))?;
        records += sent;
        histogram.add(samples)?;
    }
    let elapsed = started.elapsed();

    let mut report = Report {
        bench: "produce",
        records,
        value_bytes: records * args.common.record_bytes,
        elapsed,
        requests: None,
        latency: Some(("enqueue to acknowledgement, 1 record in 64", histogram)),
        settings: Vec::new(),
    };
    report.setting("record_bytes", json!(args.common.record_bytes));
    report.setting("producers", json!(producers));
    report.setting("batch_bytes", json!(config.batch_bytes_max));
    report.setting("linger_ms", json!(config.linger_ms));
    report.setting("in_flight", json!(config.in_flight_max));
    report.setting("durability", json!(durability_name(config.durability)));
    Ok(report)
}

pub fn durability_name(durability: Durability) -> &'static str {
    match durability {
        Durability::None => "none",
        Durability::Fsync => "fsync",
        Durability::Quorum => "quorum",
    }
}

/// Distinct requests a task cycles through: enough that consecutive
/// requests differ, few enough to stay a few megabytes.
const DISTINCT_REQUESTS_MAX: usize = 64;
const DISTINCT_RECORDS_MAX: usize = 64 * 1024;

/// `--records-per-request`: requests of exactly `records_per_request`
/// records, `--in-flight` of them at a time per producer.
async fn run_requests(
    context: &Context,
    topic: &BenchTopic,
    args: &BenchProduceArgs,
    records_per_request: u32,
) -> anyhow::Result<Report> {
    let per_request = records_per_request as usize;
    let in_flight = args.producer.in_flight.max(1);
    let config = ProducerConfig {
        in_flight_max: in_flight,
        durability: args.producer.durability.into(),
        ..ProducerConfig::default()
    };
    let distinct = (DISTINCT_RECORDS_MAX / per_request).clamp(1, DISTINCT_REQUESTS_MAX);
    let requests: Arc<Vec<Vec<Record>>> = Arc::new(
        payloads(distinct * per_request, args.common.record_bytes as usize)
            .chunks(per_request)
            .map(|values| {
                values
                    .iter()
                    .map(|value| Record {
                        value: Some(value.clone()),
                        ..Record::default()
                    })
                    .collect()
            })
            .collect(),
    );
    let producers = args.producers.max(1);
    let mut connected = Vec::new();
    for _ in 0..producers {
        let producer = connect(context)
            .await?
            .producer(&topic.name, config.clone())
            .await
            .explain(context.about(&topic.name))?;
        connected.push(producer);
    }
    // Requests handed out so far, shared by every task in count mode.
    let reserved = Arc::new(AtomicU64::new(0));
    // Set by a task that failed: the others stop too.
    let stop = Arc::new(AtomicBool::new(false));
    let requests_total = args
        .count
        .map(|count| count.div_ceil(u64::from(records_per_request)));
    let started = Instant::now();
    let deadline = started + Duration::from_millis(args.duration);
    let mut tasks = Vec::new();
    for (index, producer) in connected.iter().enumerate() {
        for task in 0..in_flight {
            let sender = RequestSender {
                producer: producer.clone(),
                requests: Arc::clone(&requests),
                first: index * in_flight + task,
                reserved: Arc::clone(&reserved),
                stop: Arc::clone(&stop),
                requests_total,
                deadline,
            };
            tasks.push(tokio::spawn(sender.run()));
        }
    }
    let mut sent = 0;
    let mut histogram: Histogram<u64> = latency_histogram();
    let mut first_error = None;
    for task in tasks {
        match task.await? {
            Ok((requests, round_trips)) => {
                sent += requests;
                histogram.add(round_trips)?;
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let elapsed = started.elapsed();
    for producer in &connected {
        producer.close().await.explain(context.about(&topic.name))?;
    }
    if let Some(error) = first_error {
        return Err(error).explain(context.about(&topic.name));
    }

    let records = sent * u64::from(records_per_request);
    let mut report = Report {
        bench: "produce",
        records,
        value_bytes: records * args.common.record_bytes,
        elapsed,
        requests: Some(sent),
        latency: Some(("request round trip, every request", histogram)),
        settings: Vec::new(),
    };
    report.setting("record_bytes", json!(args.common.record_bytes));
    report.setting("producers", json!(producers));
    report.setting("records_per_request", json!(records_per_request));
    report.setting("in_flight", json!(in_flight));
    report.setting("durability", json!(durability_name(config.durability)));
    Ok(report)
}

/// One of the `--in-flight` tasks of a producer: one request at a time.
struct RequestSender {
    producer: Producer,
    requests: Arc<Vec<Vec<Record>>>,
    /// Where in `requests` this task starts, so tasks send different ones.
    first: usize,
    reserved: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    requests_total: Option<u64>,
    deadline: Instant,
}

impl RequestSender {
    /// Returns the requests sent and their round trips.
    async fn run(self) -> spool_client::Result<(u64, Histogram<u64>)> {
        let mut round_trips = latency_histogram();
        let mut sent = 0u64;
        loop {
            let go_on = match self.requests_total {
                Some(total) => self.reserved.fetch_add(1, Ordering::Relaxed) < total,
                None => Instant::now() < self.deadline,
            };
            if !go_on || self.stop.load(Ordering::Relaxed) {
                break;
            }
            let records = &self.requests[(self.first + sent as usize) % self.requests.len()];
            let request_started = Instant::now();
            // Target::Any takes the partitions in turn.
            if let Err(error) = self.producer.send_batch(Target::Any, records).await {
                self.stop.store(true, Ordering::Relaxed);
                return Err(error);
            }
            round_trips.saturating_record(request_started.elapsed().as_micros() as u64);
            sent += 1;
        }
        Ok((sent, round_trips))
    }
}
