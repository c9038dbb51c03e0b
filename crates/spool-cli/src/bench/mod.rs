//! `spool bench produce|fetch|consume|latency|jobs`: throughput and latency
//! of a server measured through `spool-client`, with HdrHistogram
//! percentiles.
//!
//! `jobs` runs no-op jobs through the Jobs API on a queue of its own and
//! prints its own report (see `jobs.rs`). Each of the others prepares a
//! topic (the one named, created if missing, or a new `bench-<time>` one),
//! runs, deletes the topic if it created it (unless `--keep`), and prints a
//! report: human-readable, or one JSON line with `--json`. MB/s counts
//! record values with MB = 10^6 bytes.

mod consume;
mod fetch;
mod jobs;
mod latency;
mod produce;

use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use spool_client::{Client, Error, NewTopic};

use crate::args::{BenchCommand, BenchCommon};
use crate::output::{StdoutError, out, outln};
use crate::units::{format_bytes_approx, group_thousands};
use crate::{Context, Explain};

pub async fn run(context: &Context, command: BenchCommand) -> anyhow::Result<()> {
    let common = match &command {
        BenchCommand::Produce(args) => &args.common,
        BenchCommand::Fetch(args) => &args.common,
        BenchCommand::Consume(args) => &args.common,
        BenchCommand::Latency(args) => &args.common,
        BenchCommand::Jobs(args) => return jobs::run(context, args).await,
    };
    if common.record_bytes == 0 || common.record_bytes > 64 * 1024 * 1024 {
        anyhow::bail!("--record-bytes must be between 1 and 64MiB");
    }
    let topic = BenchTopic::prepare(context, common).await?;
    let report = match &command {
        BenchCommand::Produce(args) => produce::run(context, &topic, args).await,
        BenchCommand::Fetch(args) => fetch::run(context, &topic, args).await,
        BenchCommand::Consume(args) => consume::run(context, &topic, args).await,
        BenchCommand::Latency(args) => latency::run(context, &topic, args).await,
        // Returned from the first match, before a topic was prepared.
        BenchCommand::Jobs(_) => Err(anyhow::anyhow!("bench jobs runs without a topic")),
    };
    let cleaned = topic.clean_up(context).await;
    let mut report = report?;
    cleaned?;
    report.setting("topic", json!(topic.name));
    report.setting("partitions", json!(topic.partitions));
    report.print(common.json)?;
    Ok(())
}

/// The topic a bench runs against.
#[derive(Debug)]
pub struct BenchTopic {
    pub name: String,
    pub partitions: u32,
    created: bool,
    keep: bool,
}

impl BenchTopic {
    async fn prepare(context: &Context, common: &BenchCommon) -> anyhow::Result<Self> {
        let name = common.topic.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            format!("bench-{}", now.as_millis())
        });
        match context.client.describe_topic(&name).await {
            Ok(description) => Ok(BenchTopic {
                partitions: description.config.partitions,
                name,
                created: false,
                keep: true,
            }),
            Err(Error::NotFound { .. }) => {
                let config = context
                    .client
                    .create_topic(NewTopic::new(name.clone(), common.partitions))
                    .await
                    .explain(context.about(&name))?;
                Ok(BenchTopic {
                    partitions: config.partitions,
                    name,
                    created: true,
                    keep: common.keep,
                })
            }
            Err(error) => Err(error).explain(context.about(&name)),
        }
    }

    async fn clean_up(&self, context: &Context) -> anyhow::Result<()> {
        if self.created && !self.keep {
            context
                .client
                .delete_topic(&self.name)
                .await
                .explain(context.about(&self.name))?;
        }
        Ok(())
    }
}

/// A new connection, so that concurrent producers and consumers do not
/// share one HTTP/2 connection (and its single task on each side).
pub async fn connect(context: &Context) -> anyhow::Result<Client> {
    Client::connect_with(context.client.url().to_owned(), context.options.clone())
        .await
        .explain(context.subject())
}

/// `count` distinct values of `size` bytes, so that every record is not the
/// same buffer over and over.
pub fn payloads(count: usize, size: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| {
            let value: Vec<u8> = (0..size)
                .map(|j| (i.wrapping_mul(31).wrapping_add(j.wrapping_mul(7))) as u8)
                .collect();
            Bytes::from(value)
        })
        .collect()
}

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant
/// digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// What a bench measured.
#[derive(Debug)]
pub struct Report {
    pub bench: &'static str,
    pub records: u64,
    pub value_bytes: u64,
    pub elapsed: Duration,
    /// Requests sent, when each carried a known number of records
    /// (`--records-per-request`).
    pub requests: Option<u64>,
    /// What the latency measures, and the histogram in microseconds.
    pub latency: Option<(&'static str, Histogram<u64>)>,
    pub settings: Vec<(&'static str, Value)>,
}

impl Report {
    pub fn setting(&mut self, name: &'static str, value: Value) {
        self.settings.push((name, value));
    }

    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn requests_per_second(&self) -> Option<f64> {
        self.requests
            .map(|requests| requests as f64 / self.elapsed.as_secs_f64().max(1e-9))
    }

    fn megabytes_per_second(&self) -> f64 {
        self.value_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn print(&self, as_json: bool) -> Result<(), StdoutError> {
        if as_json {
            outln!("{}", self.to_json())
        } else {
            out!("{}", self.to_text())
        }
    }

    fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("bench".into(), json!(self.bench));
        object.insert("records".into(), json!(self.records));
        object.insert("seconds".into(), json!(round3(self.elapsed.as_secs_f64())));
        object.insert("records_per_s".into(), json!(self.records_per_second().round()));
        object.insert("mb_per_s".into(), json!(round3(self.megabytes_per_second())));
        if let (Some(requests), Some(per_second)) = (self.requests, self.requests_per_second()) {
            object.insert("requests".into(), json!(requests));
            object.insert("requests_per_s".into(), json!(per_second.round()));
        }
        if let Some((what, histogram)) = &self.latency {
            object.insert(
                "latency_us".into(),
                json!({
                    "measures": what,
                    "samples": histogram.len(),
                    "p50": histogram.value_at_quantile(0.5),
                    "p99": histogram.value_at_quantile(0.99),
                    "p99_9": histogram.value_at_quantile(0.999),
                    "max": histogram.max(),
                }),
            );
        }
        for (name, value) in &self.settings {
            object.insert((*name).into(), value.clone());
        }
        Value::Object(object)
    }

    fn to_text(&self) -> String {
        let mut out = format!(
            "bench {}: {} records ({}) in {:.2} s\n  throughput  {} records/s, {:.1} MB/s\n",
            self.bench,
            group_thousands(self.records),
            format_bytes_approx(self.value_bytes),
            self.elapsed.as_secs_f64(),
            group_thousands(self.records_per_second().round() as u64),
            self.megabytes_per_second(),
        );
        if let (Some(requests), Some(per_second)) = (self.requests, self.requests_per_second()) {
            out.push_str(&format!(
                "  requests    {} requests/s ({} requests)\n",
                group_thousands(per_second.round() as u64),
                group_thousands(requests),
            ));
        }
        if let Some((what, histogram)) = &self.latency {
            if histogram.is_empty() {
                out.push_str(&format!("  latency     no samples ({what})\n"));
            } else {
                out.push_str(&format!(
                    "  latency     p50 {}  p99 {}  p99.9 {}  max {}  ({what}, {} samples)\n",
                    format_micros(histogram.value_at_quantile(0.5)),
                    format_micros(histogram.value_at_quantile(0.99)),
                    format_micros(histogram.value_at_quantile(0.999)),
                    format_micros(histogram.max()),
                    group_thousands(histogram.len()),
                ));
            }
        }
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(name, value)| match value {
                Value::String(text) => format!("{name}={text}"),
                other => format!("{name}={other}"),
            })
            .collect();
        out.push_str(&format!("  settings    {}\n", settings.join(" ")));
        out
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Microseconds as milliseconds with two decimals: `1.25 ms`.
fn format_micros(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_render_as_text_and_one_json_line() {
        let mut histogram = latency_histogram();
        for micros in 1..=1000 {
            histogram.record(micros).unwrap();
        }
        let mut report = Report {
            bench: "produce",
            records: 2_000_000,
            value_bytes: 200_000_000,
            elapsed: Duration::from_secs(2),
            requests: None,
            latency: Some(("ack", histogram)),
            settings: Vec::new(),
        };
        report.setting("durability", json!("none"));
        let json = report.to_json().to_string();
        assert!(!json.contains('\n'));
        let parsed: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["records_per_s"], json!(1_000_000.0));
        assert_eq!(parsed["mb_per_s"], json!(100.0));
        assert_eq!(parsed["latency_us"]["p50"], json!(500));
        assert_eq!(parsed["durability"], json!("none"));
        let text = report.to_text();
        assert!(text.contains("1,000,000 records/s, 100.0 MB/s"), "{text}");
        assert!(text.contains("p50 0.50 ms"), "{text}");
        assert!(!text.contains("requests/s"), "{text}");
        assert!(parsed.get("requests_per_s").is_none());
    }

    #[test]
    fn a_report_of_counted_requests_has_their_rate() {
        let report = Report {
            bench: "produce",
            records: 6_000,
            value_bytes: 600_000,
            elapsed: Duration::from_secs(2),
            requests: Some(6_000),
            latency: Some(("request round trip", latency_histogram())),
            settings: Vec::new(),
        };
        let json = report.to_json();
        assert_eq!(json["requests"], json!(6_000));
        assert_eq!(json["requests_per_s"], json!(3_000.0));
        assert_eq!(json["records_per_s"], json!(3_000.0));
        let text = report.to_text();
        assert!(
            text.contains("requests    3,000 requests/s (6,000 requests)"),
            "{text}"
        );
    }

    #[test]
    fn payloads_differ_and_have_the_size_asked() {
        let values = payloads(4, 100);
        assert!(values.iter().all(|value| value.len() == 100));
        assert_ne!(values[0], values[1]);
    }
}
