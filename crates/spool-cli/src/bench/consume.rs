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
        preload(context, topic, args, args.count - stored).await?;
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
        latency: Some(("wait for each chunk of records", histogram)),
        settings: Vec::new(),
    };
    report.setting("record_bytes", json!(args.common.record_bytes));
    Ok(report)
}

async fn stored_records(context: &Context, topic: &str) -> anyhow::Result<u64> {
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

/// Appends `count` records, spread over the partitions, with pre-built
/// batches sent straight through `send_batch`.
async fn preload(
    context: &Context,
    topic: &BenchTopic,
    args: &BenchConsumeArgs,
    count: u64,
) -> anyhow::Result<()> {
    if !args.common.json {
        errln!(
            "preloading {} records into '{}'...",
            group_thousands(count),
            topic.name
        );
    }
    let record_bytes = args.common.record_bytes;
    let per_batch = (PRELOAD_BATCH_BYTES / (record_bytes + 16)).max(1);
    let batch: Vec<Record> = payloads(per_batch as usize, record_bytes as usize)
        .into_iter()
        .map(|value| Record {
            value: Some(value),
            ..Record::default()
        })
        .collect();
    let client = connect(context).await?;
    // The backlog only sets the stage for the consume being measured.
    let config = ProducerConfig {
        durability: Durability::None,
        ..ProducerConfig::default()
    };
    let producer = client
        .producer(&topic.name, config)
        .await
        .explain(context.about(&topic.name))?;
    let batches = count.div_ceil(per_batch);
    let mut tasks = Vec::new();
    for task in 0..PRELOAD_TASKS as u64 {
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
                index += PRELOAD_TASKS as u64;
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
