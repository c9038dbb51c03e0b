//! `spool bench produce`: producers enqueue records as fast as the
//! producer's backpressure lets them; one record in `SAMPLE_EVERY` has its
//! enqueue-to-acknowledgement time recorded.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use spool_client::{DeliveryFuture, Durability, ProducerConfig, Record};
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
        latency: Some(("enqueue to acknowledgement, 1 record in 64", histogram)),
        settings: Vec::new(),
    };
    report.setting("record_bytes", json!(args.common.record_bytes));
    report.setting("producers", json!(producers));
    report.setting("batch_bytes", json!(config.batch_bytes_max));
    report.setting("linger_ms", json!(config.linger_ms));
    report.setting("in_flight", json!(config.in_flight_max));
    report.setting(
        "durability",
        json!(if config.durability == Durability::Fsync {
            "fsync"
        } else {
            "none"
        }),
    );
    Ok(report)
}
