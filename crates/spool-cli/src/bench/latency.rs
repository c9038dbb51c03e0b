//! `spool bench latency`: produces at a steady rate and measures, in a
//! consumer following the topic, how long each record took from its
//! scheduled send time to its arrival.
//!
//! Each value starts with the record's scheduled send time in nanoseconds
//! since a shared origin (same process, monotonic clock). Latency is counted
//! from the *scheduled* time, not the moment the producer got to it, so a
//! producer held back by backpressure shows up in the figures instead of
//! silently lowering the rate (no coordinated omission). A dedicated thread
//! paces the sends with `std::thread::sleep` (tens of microseconds of
//! precision rather than the async timer's millisecond).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;
use spool_client::{Record, StartPosition};

use super::produce::{durability_name, producer_config};
use super::{BenchTopic, Report, connect, latency_histogram};
use crate::args::BenchLatencyArgs;
use crate::output::errln;
use crate::{Context, Explain};

/// How long the consumer waits for the last records after the producer
/// finished.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(context: &Context, topic: &BenchTopic, args: &BenchLatencyArgs) -> anyhow::Result<Report> {
    let record_bytes = args.common.record_bytes.max(8) as usize;
    let rate = args.rate.max(1);
    let total = args
        .count
        .unwrap_or_else(|| (rate as u128 * u128::from(args.duration) / 1000) as u64)
        .max(1);
    // Linger 0: at a steady rate there is nothing to wait for.
    let config = producer_config(&args.producer, 0);

    let consumer_client = connect(context).await?;
    let mut consumer = consumer_client
        .consumer(&topic.name)
        .start(StartPosition::Latest)
        .follow(true)
        .build()
        .await
        .explain(context.about(&topic.name))?;
    let producer = connect(context)
        .await?
        .producer(&topic.name, config.clone())
        .await
        .explain(context.about(&topic.name))?;

    // Give the subscriptions a moment to be established server side.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let origin = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    let pacer_finished = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&pacer_finished);
    let pacer = std::thread::spawn(move || -> spool_client::Result<()> {
        let produced = pace(&runtime, &producer, origin, total, rate, record_bytes);
        finished.store(true, Ordering::Release);
        produced
    });

    // The consumer loop runs as a task on the runtime's workers, not on the
    // thread that blocks on the command: each arriving chunk then wakes a
    // task inside the runtime instead of a parked outside thread.
    let consuming = tokio::spawn(async move {
        let mut histogram = latency_histogram();
        let mut received = 0u64;
        let mut drain_deadline = None;
        while received < total {
            if drain_deadline.is_none() && pacer_finished.load(Ordering::Acquire) {
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            if drain_deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                break;
            }
            let chunk = tokio::select! {
                chunk = consumer.next_chunk() => chunk,
                () = tokio::time::sleep(Duration::from_millis(200)) => continue,
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk?;
            let now_ns = origin.elapsed().as_nanos() as u64;
            for record in &chunk {
                let Some(value) = record.value.as_deref().filter(|value| value.len() >= 8) else {
                    continue;
                };
                let scheduled_ns = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
                histogram.saturating_record(now_ns.saturating_sub(scheduled_ns) / 1_000);
                received += 1;
            }
        }
        Ok::<_, spool_client::Error>((histogram, received))
    });
    let (histogram, received) = consuming
        .await
        .map_err(|_| anyhow::anyhow!("the consumer task panicked"))?
        .explain(context.about(&topic.name))?;
    let elapsed = origin.elapsed();
    // Joined from the blocking pool: the pacer's last step (closing the
    // producer) needs the runtime's workers, and with `--threads 1` this
    // task holds the only one.
    let produced = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .map_err(|_| anyhow::anyhow!("the producer thread's join failed"))?
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
    produced.explain(context.about(&topic.name))?;
    if received < total {
        errln!("warning: {received} of {total} records arrived within {DRAIN_TIMEOUT:?} of the last send");
    }

    let mut report = Report {
        bench: "latency",
        records: received,
        value_bytes: received * record_bytes as u64,
        elapsed,
        requests: None,
        latency: Some(("end to end, scheduled send to consumer", histogram)),
        settings: Vec::new(),
    };
    report.setting("target_rate", json!(rate));
    report.setting("record_bytes", json!(record_bytes));
    report.setting("batch_bytes", json!(config.batch_bytes_max));
    report.setting("linger_ms", json!(config.linger_ms));
    report.setting("durability", json!(durability_name(config.durability)));
    Ok(report)
}

/// Sends `total` records at `rate` per second from the calling thread, each
/// stamped with its scheduled send time.
fn pace(
    runtime: &tokio::runtime::Handle,
    producer: &spool_client::Producer,
    origin: Instant,
    total: u64,
    rate: u64,
    record_bytes: usize,
) -> spool_client::Result<()> {
    let padding = vec![0x5a; record_bytes - 8];
    for index in 0..total {
        let scheduled_ns = (u128::from(index) * 1_000_000_000 / u128::from(rate)) as u64;
        let scheduled = origin + Duration::from_nanos(scheduled_ns);
        let now = Instant::now();
        if scheduled > now {
            std::thread::sleep(scheduled - now);
        }
        let mut value = BytesMut::with_capacity(record_bytes);
        value.put_u64_le(scheduled_ns);
        value.put_slice(&padding);
        let record = Record {
            value: Some(Bytes::from(value)),
            ..Record::default()
        };
        drop(runtime.block_on(producer.enqueue(record))?);
    }
    runtime.block_on(producer.close())
}
