//! The dashboard's JSON API over the log: the overview, topics with their
//! partitions, the message browser, consumers (named checkpoints) with
//! their lag and a reset of a checkpoint. Every read and change goes
//! through `spool.v1.Log`'s own methods ([`LogService`]'s trait
//! implementation), so names, offsets and limits are checked as for a gRPC
//! client.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use spool_metrics::http::Response;
use spool_proto::v1::{self, jobs_server::Jobs};
use tonic::Request;

use super::json::{error, now_ms, ok, refused};
use super::{Admin, Asked};
use crate::history::HistoryRequest;
use crate::metrics::consumers::{Lag, consumer_lags};
use crate::metrics_service::read_history;

/// Most records one message-browser answer shows.
const MESSAGES_MAX: usize = 500;
/// Most records one answer reads while looking for matches of a filter;
/// the answer says where it stopped, so the next page goes on from there.
const MESSAGES_SCANNED_MAX: u64 = 10_000;
/// Bytes asked of each fetch while browsing.
const FETCH_BYTES: u32 = 1 << 20;
/// How far back the consumers' lag trend reaches, and its step.
const TREND_MS: i64 = 15 * 60_000;
const TREND_STEP_MS: u64 = 30_000;

/// `GET /api/v1/overview`: counts across the server; the charts read
/// `/api/v1/history`.
pub(super) async fn overview(admin: &Admin) -> Response {
    let topics = match admin
        .log
        .list_topics(Request::new(v1::ListTopicsRequest {
            include_internal: false,
        }))
        .await
    {
        Ok(answer) => answer.into_inner().topics,
        Err(status) => return refused(&status),
    };
    let mut partitions = 0u64;
    let mut size_bytes = 0u64;
    let mut records = 0u64;
    for topic in &topics {
        if let Ok(stored) = admin.state.store.topic(&topic.name) {
            for partition in stored.partitions() {
                let info = partition.info();
                partitions += 1;
                size_bytes += info.size_bytes;
                records += info.high_watermark - info.log_start_offset;
            }
        }
    }
    let mut jobs = json!(null);
    let mut queues = 0usize;
    if let Some(service) = &admin.jobs {
        match service.list_queues(Request::new(v1::ListQueuesRequest {})).await {
            Ok(answer) => {
                let list = answer.into_inner().queues;
                queues = list.len();
                let sum = |field: fn(&v1::QueueSummary) -> u64| list.iter().map(field).sum::<u64>();
                jobs = json!({
                    "scheduled": sum(|q| q.scheduled_count),
                    "available": sum(|q| q.available_count),
                    "running": sum(|q| q.running_count),
                    "succeeded": sum(|q| q.succeeded_count),
                    "dead": sum(|q| q.dead_count),
                    "cancelled": sum(|q| q.cancelled_count),
                });
            }
            Err(status) => return refused(&status),
        }
    }
    let consumers = admin.state.all_checkpoints().len();
    ok(&json!({
        "time_ms": now_ms(),
        "version": env!("CARGO_PKG_VERSION"),
        "topics": topics.len(),
        "partitions": partitions,
        "records": records,
        "size_bytes": size_bytes,
        "consumers": consumers,
        "queues": queues,
        "jobs": jobs,
        "history": admin.history.is_some(),
    }))
}

fn topic_json(config: &v1::TopicConfig, partitions: &[v1::PartitionInfo]) -> Value {
    let sum = |field: fn(&v1::PartitionInfo) -> u64| partitions.iter().map(field).sum::<u64>();
    json!({
        "name": config.name,
        "internal": config.internal,
        "partitions": config.partitions,
        // -1 is "no limit" in the protobuf message; null here.
        "retention_ms": (config.retention_ms >= 0).then_some(config.retention_ms),
        "retention_bytes": (config.retention_bytes >= 0).then_some(config.retention_bytes),
        "segment_bytes": config.segment_bytes,
        "records": sum(|p| p.high_watermark - p.log_start_offset),
        "high_watermark_sum": sum(|p| p.high_watermark),
        "size_bytes": sum(|p| p.size_bytes),
        "segments": sum(|p| u64::from(p.segment_count)),
    })
}

async fn describe(admin: &Admin, name: &str) -> Result<v1::DescribeTopicResponse, Response> {
    admin
        .log
        .describe_topic(Request::new(v1::DescribeTopicRequest {
            name: name.to_owned(),
        }))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| refused(&status))
}

/// `GET /api/v1/topics[?internal=true]`.
pub(super) async fn topics(admin: &Admin, asked: &Asked) -> Response {
    let listed = admin
        .log
        .list_topics(Request::new(v1::ListTopicsRequest {
            include_internal: asked.params.flag("internal"),
        }))
        .await;
    let topics = match listed {
        Ok(answer) => answer.into_inner().topics,
        Err(status) => return refused(&status),
    };
    let mut out = Vec::with_capacity(topics.len());
    for config in &topics {
        match describe(admin, &config.name).await {
            Ok(described) => out.push(topic_json(config, &described.partitions)),
            // Deleted between the listing and now.
            Err(_) => continue,
        }
    }
    ok(&json!({ "topics": out }))
}

/// `GET /api/v1/topics/{name}`: the topic and each partition.
pub(super) async fn topic(admin: &Admin, asked: &Asked) -> Response {
    let described = match describe(admin, &asked.values[0]).await {
        Ok(described) => described,
        Err(answer) => return answer,
    };
    let Some(config) = &described.topic else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "DescribeTopic answered no topic",
        );
    };
    let partitions: Vec<Value> = described
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "log_start_offset": p.log_start_offset,
                "high_watermark": p.high_watermark,
                "records": p.high_watermark - p.log_start_offset,
                "size_bytes": p.size_bytes,
                "segments": p.segment_count,
            })
        })
        .collect();
    let mut answer = topic_json(config, &described.partitions);
    answer["partition_list"] = Value::Array(partitions);
    ok(&answer)
}

/// How a value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// JSON if it parses, else text if it is UTF-8, else hex.
    Auto,
    Text,
    Json,
    Hex,
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, chunk) in bytes.chunks(16).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{:08x} ", i * 16));
        for byte in chunk {
            out.push_str(&format!(" {byte:02x}"));
        }
    }
    out
}

/// `bytes` shown as `format` asks: the text and the format used (a value
/// that is not JSON or not UTF-8 falls back to text, then hex).
fn render(bytes: &[u8], format: Format) -> (String, &'static str) {
    let text = std::str::from_utf8(bytes).ok();
    if matches!(format, Format::Auto | Format::Json)
        && let Ok(parsed) = serde_json::from_slice::<Value>(bytes)
        && (format == Format::Json || parsed.is_object() || parsed.is_array())
    {
        return (serde_json::to_string_pretty(&parsed).unwrap_or_default(), "json");
    }
    match (format, text) {
        (Format::Hex, _) | (_, None) => (hex(bytes), "hex"),
        (_, Some(text)) => (text.to_owned(), "text"),
    }
}

/// `bytes` as JSON, text or hex, whichever fits (job payloads and
/// results).
pub(super) fn render_auto(bytes: &[u8]) -> (String, &'static str) {
    render(bytes, Format::Auto)
}

/// `GET /api/v1/topics/{name}/messages?partition=P&offset=O|timestamp_ms=T&limit=N&key=K&header=H[=V]&format=auto|text|json|hex`.
pub(super) async fn messages(admin: &Admin, asked: &Asked) -> Response {
    let topic = asked.values[0].clone();
    let params = &asked.params;
    let numbers = (|| -> Result<_, String> {
        Ok((
            params.number::<u32>("partition")?.unwrap_or(0),
            params.number::<u64>("offset")?,
            params.number::<i64>("timestamp_ms")?,
            params
                .number::<usize>("limit")?
                .unwrap_or(50)
                .clamp(1, MESSAGES_MAX),
        ))
    })();
    let (partition, offset, timestamp_ms, limit) = match numbers {
        Ok(numbers) => numbers,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let format = match params.get("format").unwrap_or("auto") {
        "auto" => Format::Auto,
        "text" => Format::Text,
        "json" => Format::Json,
        "hex" => Format::Hex,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("parameter format: {other:?} is not auto, text, json or hex"),
            );
        }
    };
    let key = params.get("key").map(str::to_owned);
    let header = params.get("header").map(|h| match h.split_once('=') {
        Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
        None => (h.to_owned(), None),
    });
    // Where the partition starts and ends now (also checks the names).
    let range = admin
        .log
        .list_offsets(Request::new(v1::ListOffsetsRequest {
            topic: topic.clone(),
            partition: Some(partition),
            spec: v1::OffsetSpec::Earliest as i32,
            timestamp_ms: None,
        }))
        .await;
    let log_start = match range {
        Ok(answer) => answer.into_inner().offsets.first().map_or(0, |p| p.offset),
        Err(status) => return refused(&status),
    };
    let high_watermark = match admin.state.store.partition(&topic, partition) {
        Ok(handle) => handle.high_watermark(),
        Err(failure) => return refused(&crate::status::status(failure)),
    };
    let start = if let Some(timestamp_ms) = timestamp_ms {
        let found = admin
            .log
            .list_offsets(Request::new(v1::ListOffsetsRequest {
                topic: topic.clone(),
                partition: Some(partition),
                spec: v1::OffsetSpec::Timestamp as i32,
                timestamp_ms: Some(timestamp_ms),
            }))
            .await;
        match found {
            Ok(answer) => answer
                .into_inner()
                .offsets
                .first()
                .map_or(high_watermark, |p| p.offset),
            Err(status) => return refused(&status),
        }
    } else {
        // Without a position: the newest `limit` records.
        offset.unwrap_or_else(|| high_watermark.saturating_sub(limit as u64))
    };
    let mut position = start.clamp(log_start, high_watermark);
    let first = position;
    let mut shown = Vec::new();
    let mut scanned = 0u64;
    while shown.len() < limit && position < high_watermark && scanned < MESSAGES_SCANNED_MAX {
        let fetched = admin
            .log
            .fetch(Request::new(v1::FetchRequest {
                topic: topic.clone(),
                partition,
                offset: position,
                max_bytes: FETCH_BYTES,
                max_wait_ms: 0,
                return_encoded_batches: false,
            }))
            .await;
        let fetched = match fetched {
            Ok(answer) => answer.into_inner(),
            Err(status) => return refused(&status),
        };
        if fetched.records.is_empty() {
            break;
        }
        for record in fetched.records {
            if shown.len() == limit || scanned == MESSAGES_SCANNED_MAX {
                break;
            }
            scanned += 1;
            position = record.offset + 1;
            let key_text = record
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            if key
                .as_ref()
                .is_some_and(|wanted| key_text.as_ref() != Some(wanted))
            {
                continue;
            }
            if let Some((name, value)) = &header {
                let found = record.headers.iter().any(|h| {
                    &h.key == name
                        && value
                            .as_ref()
                            .is_none_or(|v| h.value.as_deref() == Some(v.as_bytes()))
                });
                if !found {
                    continue;
                }
            }
            let value = record.value.as_deref().map(|bytes| render(bytes, format));
            let headers: Vec<Value> = record
                .headers
                .iter()
                .map(|h| {
                    json!({
                        "key": h.key,
                        "value": h.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
                    })
                })
                .collect();
            shown.push(json!({
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
                "key": key_text,
                "headers": headers,
                "value": value.as_ref().map(|(text, _)| text),
                "value_format": value.as_ref().map(|(_, used)| *used),
                "value_bytes": record.value.as_ref().map_or(0, |v| v.len()),
            }));
        }
        position = position.max(fetched.next_offset.min(high_watermark));
    }
    ok(&json!({
        "topic": topic,
        "partition": partition,
        "log_start_offset": log_start,
        "high_watermark": high_watermark,
        "start_offset": first,
        "next_offset": position,
        "scanned": scanned,
        "records": shown,
    }))
}

/// The lag of each consumer and topic over the last minutes, by
/// (consumer, topic), from the metrics history: `[time_ms, records]`.
async fn lag_trends(admin: &Admin) -> BTreeMap<(String, String), Vec<(i64, f64)>> {
    let request = HistoryRequest {
        series: vec!["spool_consumer_lag_records".into()],
        from_time_ms: -TREND_MS,
        to_time_ms: 0,
        step_ms: TREND_STEP_MS,
    };
    let mut trends = BTreeMap::new();
    let Ok(answer) = read_history(admin.history.clone(), request).await else {
        return trends;
    };
    for result in answer.results {
        for (labels, points) in result.series {
            let label = |name: &str| {
                labels
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            trends.insert((label("consumer"), label("topic")), points);
        }
    }
    trends
}

/// Seconds until a lag of `lag` records is gone at the pace the trend
/// shows over its last five minutes; `None` when the lag is not shrinking
/// (or there is too little history to tell).
pub(super) fn time_to_drain_seconds(lag: u64, trend: &[(i64, f64)]) -> Option<f64> {
    if lag == 0 {
        return Some(0.0);
    }
    let (&(last_ms, last), rest) = trend.split_last()?;
    let &(first_ms, first) = rest
        .iter()
        .find(|(time_ms, _)| last_ms - time_ms <= 5 * 60_000)
        .filter(|(time_ms, _)| *time_ms < last_ms)?;
    let shrink_per_second = (first - last) / ((last_ms - first_ms) as f64 / 1000.0);
    (shrink_per_second > 0.0).then(|| lag as f64 / shrink_per_second)
}

/// `GET /api/v1/consumers`: every named checkpoint with its lag by
/// partition, in records and seconds, its trend and time to drain.
pub(super) async fn consumers(admin: &Admin) -> Response {
    let state = std::sync::Arc::clone(&admin.state);
    let lags = match tokio::task::spawn_blocking(move || consumer_lags(&state)).await {
        Ok(lags) => lags,
        Err(failure) => return error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
    };
    let trends = lag_trends(admin).await;
    let mut grouped: BTreeMap<(String, String), Vec<&Lag>> = BTreeMap::new();
    for lag in &lags {
        grouped
            .entry((lag.consumer.clone(), lag.topic.clone()))
            .or_default()
            .push(lag);
    }
    let mut out = Vec::new();
    for ((consumer, topic), partitions) in grouped {
        // Positions as GetCheckpoint answers them, with commit times.
        let positions = admin
            .log
            .get_checkpoint(Request::new(v1::GetCheckpointRequest {
                consumer: consumer.clone(),
                topic: topic.clone(),
            }))
            .await
            .map(|answer| answer.into_inner().partitions)
            .unwrap_or_default();
        let lag_records: u64 = partitions.iter().map(|p| p.records).sum();
        let lag_seconds = partitions.iter().map(|p| p.seconds).fold(0.0, f64::max);
        let trend = trends
            .get(&(consumer.clone(), topic.clone()))
            .cloned()
            .unwrap_or_default();
        let drain = time_to_drain_seconds(lag_records, &trend);
        let rows: Vec<Value> = partitions
            .iter()
            .map(|p| {
                let position = positions.iter().find(|c| c.partition == p.partition);
                json!({
                    "partition": p.partition,
                    "offset": p.offset,
                    "high_watermark": p.high_watermark,
                    "lag_records": p.records,
                    "lag_seconds": p.seconds,
                    "commit_time_ms": position.map(|c| c.commit_time_ms),
                })
            })
            .collect();
        out.push(json!({
            "consumer": consumer,
            "topic": topic,
            "lag_records": lag_records,
            "lag_seconds": lag_seconds,
            "time_to_drain_seconds": drain,
            "trend": trend.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
            "partitions": rows,
        }));
    }
    ok(&json!({ "consumers": out }))
}

/// The body of a checkpoint reset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    /// `earliest`, `latest`, `offset` or `timestamp`.
    to: String,
    offset: Option<u64>,
    timestamp_ms: Option<i64>,
    /// Partitions to reset; absent means every partition of the topic.
    partitions: Option<Vec<u32>>,
}

/// `POST /api/v1/consumers/{consumer}/{topic}/reset`: moves a checkpoint
/// to the earliest or latest offset, an offset, or the first record at or
/// after a time, then commits it with fsync (recorded in the audit trail).
pub(super) async fn reset_checkpoint(admin: &Admin, asked: &Asked) -> Response {
    let (consumer, topic) = (asked.values[0].clone(), asked.values[1].clone());
    let reset: Reset = match serde_json::from_slice(&asked.body) {
        Ok(reset) => reset,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &format!("bad body: {reason}")),
    };
    let (spec, timestamp_ms) = match (reset.to.as_str(), reset.offset, reset.timestamp_ms) {
        ("earliest", None, None) => (v1::OffsetSpec::Earliest, None),
        ("latest", None, None) => (v1::OffsetSpec::Latest, None),
        ("timestamp", None, Some(ts)) => (v1::OffsetSpec::Timestamp, Some(ts)),
        // An offset is checked by CommitCheckpoint itself.
        ("offset", Some(_), None) => (v1::OffsetSpec::Latest, None),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "`to` is earliest, latest, offset (with `offset`) or timestamp (with `timestamp_ms`)",
            );
        }
    };
    let offsets = admin
        .log
        .list_offsets(Request::new(v1::ListOffsetsRequest {
            topic: topic.clone(),
            partition: None,
            spec: spec as i32,
            timestamp_ms,
        }))
        .await;
    let offsets = match offsets {
        Ok(answer) => answer.into_inner().offsets,
        Err(status) => return refused(&status),
    };
    let partitions: Vec<v1::PartitionCheckpoint> = offsets
        .iter()
        .filter(|p| {
            reset
                .partitions
                .as_ref()
                .is_none_or(|only| only.contains(&p.partition))
        })
        .map(|p| v1::PartitionCheckpoint {
            partition: p.partition,
            offset: reset.offset.unwrap_or(p.offset),
            commit_time_ms: 0,
        })
        .collect();
    if let Some(only) = &reset.partitions
        && let Some(missing) = only
            .iter()
            .find(|id| !offsets.iter().any(|p| p.partition == **id))
    {
        return error(
            StatusCode::NOT_FOUND,
            &format!("topic {topic:?} has no partition {missing}"),
        );
    }
    let committed = admin
        .log
        .commit_checkpoint(Request::new(v1::CommitCheckpointRequest {
            consumer: consumer.clone(),
            topic: topic.clone(),
            partitions: partitions.clone(),
            durability: v1::Durability::Fsync as i32,
        }))
        .await;
    if let Err(status) = committed {
        return refused(&status);
    }
    let positions: Vec<Value> = partitions
        .iter()
        .map(|p| json!({ "partition": p.partition, "offset": p.offset }))
        .collect();
    let target = json!({
        "consumer": consumer,
        "topic": topic,
        "to": reset.to,
        "offset": reset.offset,
        "timestamp_ms": reset.timestamp_ms,
        "partitions": positions,
    });
    if let Err(answer) = admin
        .record(
            &asked.who,
            "reset_checkpoint",
            target.clone(),
            partitions.len() as u64,
        )
        .await
    {
        return answer;
    }
    ok(&json!({ "reset": target }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_asked_and_fall_back() {
        assert_eq!(
            render(br#"{"a":1}"#, Format::Auto),
            ("{\n  \"a\": 1\n}".into(), "json")
        );
        assert_eq!(render(b"42", Format::Auto), ("42".into(), "text"));
        assert_eq!(render(b"42", Format::Json), ("42".into(), "json"));
        assert_eq!(render(b"plain", Format::Json), ("plain".into(), "text"));
        assert_eq!(render(b"ab", Format::Hex), ("00000000  61 62".into(), "hex"));
        assert_eq!(
            render(&[0xff, 0x00], Format::Text),
            ("00000000  ff 00".into(), "hex")
        );
    }

    #[test]
    fn drain_time_follows_the_shrinking_lag() {
        let trend = [(0, 1_000.0), (60_000, 900.0), (120_000, 800.0)];
        // 200 records in 120 s: 1.67 a second, so 800 take 480 s.
        let seconds = time_to_drain_seconds(800, &trend).unwrap();
        assert!((seconds - 480.0).abs() < 0.01, "{seconds}");
        let growing = [(0, 10.0), (60_000, 20.0)];
        assert_eq!(time_to_drain_seconds(20, &growing), None);
        assert_eq!(time_to_drain_seconds(0, &growing), Some(0.0));
        assert_eq!(time_to_drain_seconds(5, &[(0, 5.0)]), None);
    }
}
