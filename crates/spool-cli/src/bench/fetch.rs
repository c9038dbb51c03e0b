//! `spool bench fetch`: one `Fetch` call after the other, each answering
//! exactly `--records-per-request` records, the shape of a reader that
//! takes one event at a time.
//!
//! The backlog is preloaded (untimed) in stored batches of that many
//! records. Every Fetch asks with a byte budget of 1, so the server answers
//! one whole batch, the smallest it can; the next offset comes from the
//! answer. Reading starts at the earliest offset of each partition and takes
//! the partitions in turn. An answer with more records than asked means the
//! topic holds larger batches (a `--topic` written by something else): the
//! bench stops with an error rather than report another shape.

use std::time::Instant;

use serde_json::json;
use spool_client::OffsetSpec;

use super::consume::{Backlog, preload, stored_records};
use super::{BenchTopic, Report, connect, latency_histogram};
use crate::args::BenchFetchArgs;
use crate::{Context, Explain};

/// Budget of each Fetch: below any batch, so the answer is one batch.
const FETCH_BYTES_MAX: u32 = 1;
/// Requests in flight while preloading small batches.
const PRELOAD_IN_FLIGHT: usize = 32;

pub async fn run(context: &Context, topic: &BenchTopic, args: &BenchFetchArgs) -> anyhow::Result<Report> {
    let per_request = u64::from(args.records_per_request);
    let requests_total = args.count.div_ceil(per_request);
    let wanted = requests_total * per_request;
    let stored = stored_records(context, &topic.name).await?;
    if stored < wanted {
        let backlog = Backlog {
            records: wanted - stored,
            record_bytes: args.common.record_bytes,
            records_per_batch: per_request,
            in_flight: PRELOAD_IN_FLIGHT,
            quiet: args.common.json,
        };
        preload(context, topic, &backlog).await?;
    }

    let client = connect(context).await?;
    let earliest = client
        .list_offsets(&topic.name, None, OffsetSpec::Earliest)
        .await
        .explain(context.about(&topic.name))?;
    let latest = client
        .list_offsets(&topic.name, None, OffsetSpec::Latest)
        .await
        .explain(context.about(&topic.name))?;
    // (partition, next offset, end offset) of the partitions with records.
    let mut cursors: Vec<(u32, u64, u64)> = earliest
        .iter()
        .zip(&latest)
        .filter(|(earliest, latest)| latest.offset > earliest.offset)
        .map(|(earliest, latest)| (earliest.partition, earliest.offset, latest.offset))
        .collect();

    let mut histogram = latency_histogram();
    let mut requests = 0u64;
    let mut records = 0u64;
    let mut value_bytes = 0u64;
    let mut turn = 0usize;
    // One vector for every answer: see `Client::fetch_records_into`.
    let mut fetched = Vec::new();
    let started = Instant::now();
    while requests < requests_total && !cursors.is_empty() {
        turn %= cursors.len();
        let (partition, offset, end) = cursors[turn];
        let request_started = Instant::now();
        let response = client
            .fetch_records_into(&topic.name, partition, offset, FETCH_BYTES_MAX, 0, &mut fetched)
            .await
            .explain(context.about(&topic.name))?;
        histogram.saturating_record(request_started.elapsed().as_micros() as u64);
        requests += 1;
        if fetched.len() as u64 > per_request {
            anyhow::bail!(
                "a Fetch of partition {partition} at offset {offset} answered {} records, more than \
                 --records-per-request {per_request}: topic '{}' holds larger batches; leave out --topic to \
                 let the bench preload a topic of its own",
                fetched.len(),
                topic.name
            );
        }
        records += fetched.len() as u64;
        value_bytes += fetched
            .iter()
            .map(|record| record.value.as_ref().map_or(0, |value| value.len() as u64))
            .sum::<u64>();
        if fetched.is_empty() || response.next_offset >= end {
            cursors.remove(turn);
        } else {
            cursors[turn].1 = response.next_offset;
            turn += 1;
        }
    }
    let elapsed = started.elapsed();
    if requests < requests_total {
        anyhow::bail!(
            "topic '{}' ran out of records after {requests} of {requests_total} Fetch requests",
            topic.name
        );
    }

    let mut report = Report {
        bench: "fetch",
        records,
        value_bytes,
        elapsed,
        requests: Some(requests),
        latency: Some(("Fetch round trip, every request", histogram)),
        settings: Vec::new(),
    };
    report.setting("record_bytes", json!(args.common.record_bytes));
    report.setting("records_per_request", json!(args.records_per_request));
    report.setting("fetch_max_bytes", json!(FETCH_BYTES_MAX));
    Ok(report)
}
