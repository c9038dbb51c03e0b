//! `spool produce`: one record per stdin line.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use spool_client::{DeliveryFuture, Durability, ProducerConfig, Record, RecordAck};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::args::ProduceArgs;
use crate::json::parse_record_line;
use crate::output::errln;
use crate::{Context, Explain};

/// Acknowledgements waited for at once: the stdin reader runs this far ahead
/// of the acknowledgements before it waits.
const PENDING_ACKS_MAX: usize = 64 * 1024;

pub async fn run(context: &Context, args: ProduceArgs) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    let durability = Durability::from(args.durability);
    let config = ProducerConfig {
        batch_bytes_max: usize::try_from(args.batch_bytes).unwrap_or(usize::MAX),
        linger_ms: args.linger_ms,
        durability,
        ..ProducerConfig::default()
    };
    let producer = context
        .client
        .producer(topic, config)
        .await
        .explain(context.about(topic))?;
    if let Some(partition) = args.partition
        && partition >= producer.partitions()
    {
        anyhow::bail!(
            "topic '{topic}' has no partition {partition}: it has {} (0 to {}); see `spool topic describe {topic}`",
            producer.partitions(),
            producer.partitions() - 1
        );
    }

    let started = Instant::now();
    let (deliveries, mut pending) = mpsc::channel::<DeliveryFuture>(PENDING_ACKS_MAX);
    let collector = tokio::spawn(async move {
        let mut summary = Summary::default();
        while let Some(delivery) = pending.recv().await {
            summary.add(delivery.await?);
        }
        Ok::<_, spool_client::Error>(summary)
    });

    let key = args.key.map(Bytes::from);
    let mut reader = BufReader::with_capacity(256 * 1024, tokio::io::stdin());
    let mut line = Vec::new();
    let mut line_number = 0u64;
    let mut input_error = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        line.clear();
        let read = tokio::select! {
            read = reader.read_until(b'\n', &mut line) => read.context("cannot read stdin")?,
            _ = &mut interrupted => {
                errln!("interrupted: sending the records read so far");
                break;
            }
        };
        if read == 0 {
            break;
        }
        line_number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let record = if args.json {
            match parse_record_line(&line) {
                Ok(record) => record,
                Err(error) => {
                    input_error = Some(anyhow!(
                        "stdin line {line_number} is not a JSON record ({error}); expected \
                         {{\"key\": ..., \"value\": ..., \"headers\": {{...}}}}; {} line(s) before it were produced",
                        line_number - 1
                    ));
                    break;
                }
            }
        } else {
            Record {
                key: key.clone(),
                value: Some(Bytes::copy_from_slice(&line)),
                ..Record::default()
            }
        };
        let delivery = match args.partition {
            Some(partition) => producer.enqueue_to(partition, record).await,
            None => producer.enqueue(record).await,
        }
        .explain(context.about(topic))?;
        if deliveries.send(delivery).await.is_err() {
            // The collector stopped on an error; it reports it below.
            break;
        }
    }
    drop(deliveries);
    let closed = producer.close().await;
    let summary = collector
        .await
        .context("the acknowledgement collector failed")?
        .explain(context.about(topic))?;
    closed.explain(context.about(topic))?;
    let elapsed = started.elapsed().as_secs_f64();
    errln!(
        "produced {} record{} to '{topic}' in {elapsed:.2}s ({}){}",
        summary.records,
        if summary.records == 1 { "" } else { "s" },
        summary.durability_text(durability),
        summary.describe()
    );
    input_error.map_or(Ok(()), Err)
}

/// Offsets acknowledged per partition.
#[derive(Debug, Default)]
struct Summary {
    records: u64,
    /// partition -> (first offset, last offset)
    ranges: BTreeMap<u32, (u64, u64)>,
    /// Records acknowledged as fsynced by the server.
    fsynced: u64,
}

impl Summary {
    fn add(&mut self, ack: RecordAck) {
        self.records += 1;
        if ack.durability == Durability::Fsync {
            self.fsynced += 1;
        }
        let range = self
            .ranges
            .entry(ack.partition)
            .or_insert((ack.offset, ack.offset));
        range.0 = range.0.min(ack.offset);
        range.1 = range.1.max(ack.offset);
    }

    /// The durability the server reports having reached (the one asked
    /// for when nothing was produced).
    fn durability_text(&self, requested: Durability) -> String {
        match self.fsynced {
            _ if self.records == 0 && requested == Durability::Fsync => "fsync".into(),
            0 => "no fsync".into(),
            fsynced if fsynced == self.records => "fsync".into(),
            fsynced => format!("{fsynced} fsynced"),
        }
    }

    fn describe(&self) -> String {
        if self.ranges.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .ranges
            .iter()
            .take(8)
            .map(|(partition, (first, last))| {
                if first == last {
                    format!("partition {partition} offset {first}")
                } else {
                    format!("partition {partition} offsets {first}..={last}")
                }
            })
            .collect();
        let more = self.ranges.len().saturating_sub(8);
        let more = if more > 0 {
            format!(" and {more} more partitions")
        } else {
            String::new()
        };
        format!(": {}{more}", parts.join(", "))
    }
}
