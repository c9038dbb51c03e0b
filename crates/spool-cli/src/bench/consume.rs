//! `spool bench consume`: reads a backlog from the earliest offsets of every
//! partition, producing it first if the topic holds too few records.

use std::time::Instant;

use serde_json::json;
use spool_client::{Durability, OffsetSpec, ProducerConfig, Record, StartPosition, Target};

use super::{BenchTopic, Report, connect, latency_histogram, payloads};
use crate::args::BenchConsumeArgs;
use crate::output::errln;
use crate::units::group_thousands;
use crate::{Context, Explain};

/// Preload batches of this many bytes, with this many requests in flight.
const PRELOAD_BATCH_BYTES: u64 = 1024 * 1024;
const PRELOAD_TASKS: usize = 4;

pub async fn run(context: &Context, topic: &BenchTopic, args: &BenchConsumeArgs) -> anyhow::Result<Report> {
    let stored = stored_records(context, &topic.name).await?;
    if stored < args.count {
        let per_batch = (PRELOAD_BATCH_BYTES / (args.common.record_bytes + 16)).max(1);
        let backlog = Backlog {
            records: args.count - stored,
            record_bytes: args.common.record_bytes,
            records_per_batch: per_batch,
            in_flight: PRELOAD_TASKS,
            quiet: args.common.json,
        };
        preload(context, topic, &backlog).await?;
    }

    let client = connect(context).await?;
    let mut consumer = client
        .consumer(&topic.name)
        .start(StartPosition::Earliest)
        .follow(false)
        .build()
        .await
        .explain(context.about(&topic.name))?;
    let mut histogram = latency_histogram();
    let mut records = 0u64;
    let mut value_bytes = 0u64;
    let started = Instant::now();
    let mut last = started;
    while records < args.count {
        let Some(chunk) = consumer.next_chunk().await else {
            break;
        };
        let chunk = chunk.explain(context.about(&topic.name))?;
        let now = Instant::now();
        histogram.saturating_record((now - last).as_micros() as u64);
        last = now;
        for record in chunk.iter().take((args.count - records) as usize) {
            value_bytes += record.value.as_ref().map_or(0, |value| value.len() as u64);
            records += 1;
        }
    }
    let elapsed = started.elapsed();
    drop(consumer);

    let mut report = Report {
        bench: "consume",
        records,
        value_bytes,
        elapsed,
        requests: None,
        latency: Some(("wait for each chunk of records", histogram)),
        settings: Vec::new(),
    };
    report.setting("record_bytes", json!(args.common.record_bytes));
    Ok(report)
}

pub(super) async fn stored_records(context: &Context, topic: &str) -> anyhow::Result<u64> {
    let client = &context.client;
    let earliest = client
        .list_offsets(topic, None, OffsetSpec::Earliest)
        .await
        .explain(context.about(topic))?;
    let latest = client
        .list_offsets(topic, None, OffsetSpec::Latest)
        .await
        .explain(context.about(topic))?;
    Ok(latest
        .iter()
        .zip(&earliest)
        .map(|(latest, earliest)| latest.offset.saturating_sub(earliest.offset))
        .sum())
}

/// A backlog for a read bench to read.
#[derive(Debug)]
pub(super) struct Backlog {
    pub records: u64,
    pub record_bytes: u64,
    /// Records in each stored batch (the last one may hold fewer).
    pub records_per_batch: u64,
    /// Requests in flight while preloading.
    pub in_flight: usize,
    /// No progress line on stderr (with --json).
    pub quiet: bool,
}

/// Appends the backlog's records, spread over the partitions, with
/// pre-built batches sent straight through `send_batch`.
pub(super) async fn preload(context: &Context, topic: &BenchTopic, backlog: &Backlog) -> anyhow::Result<()> {
    let count = backlog.records;
    if !backlog.quiet {
        errln!(
            "preloading {} records into '{}'...",
            group_thousands(count),
            topic.name
        );
    }
    let per_batch = backlog.records_per_batch.max(1);
    let batch: Vec<Record> = payloads(per_batch as usize, backlog.record_bytes as usize)
        .into_iter()
        .map(|value| Record {
            value: Some(value),
            ..Record::default()
        })
        .collect();
    let client = connect(context).await?;
    // The backlog only sets the stage for the read being measured.
    let config = ProducerConfig {
        durability: Durability::None,
        in_flight_max: backlog.in_flight.max(1),
        ..ProducerConfig::default()
    };
    let producer = client
        .producer(&topic.name, config)
        .await
        .explain(context.about(&topic.name))?;
    let batches = count.div_ceil(per_batch);
    let tasks_count = backlog.in_flight.max(1) as u64;
    let mut tasks = Vec::new();
    for task in 0..tasks_count {
        let producer = producer.clone();
        let batch = batch.clone();
        let partitions = u64::from(producer.partitions());
        tasks.push(tokio::spawn(async move {
            let mut index = task;
            while index < batches {
                let records = if index == batches - 1 && !count.is_multiple_of(per_batch) {
                    &batch[..(count % per_batch) as usize]
                } else {
                    &batch[..]
                };
                let partition = (index % partitions) as u32;
                producer.send_batch(Target::Partition(partition), records).await?;
                index += tasks_count;
            }
            Ok::<_, spool_client::Error>(())
        }));
    }
    for task in tasks {
        task.await?.explain(context.about(&topic.name))?;
    }
    producer.close().await.explain(context.about(&topic.name))?;
    Ok(())
}
