//! `spool produce`: one record per stdin line.
//!
//! Produce stops at the first line it cannot produce (not a JSON record
//! with `--json`, or too large for the server's limits): the lines before it
//! are produced, it and the lines after it are not, and the command exits 1
//! saying which line it was and how many went out. A line is read only up
//! to the size the tightest limit allows (the rest is counted, not held),
//! so an oversized line costs no memory.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use spool_client::{DeliveryFuture, Durability, ProducerConfig, Record, RecordAck};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::args::ProduceArgs;
use crate::errors::too_large;
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
        idempotent: args.idempotent,
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
    let limits = *producer.limits();
    // A value longer than the tightest limit can never be produced; a JSON
    // line may spell each byte in up to six (`\u0000`).
    let payload_bytes_max = limits.record_payload_bytes_max();
    let line_bytes_max = if args.json {
        payload_bytes_max.saturating_mul(6).saturating_add(64 << 10)
    } else {
        payload_bytes_max
    };
    let mut reader = BufReader::with_capacity(256 * 1024, tokio::io::stdin());
    let mut line = Vec::new();
    let mut line_number = 0u64;
    let mut input_error = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let read = tokio::select! {
            read = read_line(&mut reader, &mut line, line_bytes_max) => read.context("cannot read stdin")?,
            _ = &mut interrupted => {
                errln!("interrupted: sending the records read so far");
                break;
            }
        };
        line_number += 1;
        match read {
            LineRead::End => break,
            LineRead::Line => {}
            LineRead::TooLong { bytes } => {
                let reason = match limits.check_value(key.as_ref().map(Bytes::len), bytes as usize) {
                    Err(spool_client::Error::RecordTooLarge { exceeded }) if !args.json => {
                        format!("is {bytes} bytes, too large to produce: {}", too_large(&exceeded))
                    }
                    _ => format!(
                        "is {bytes} bytes of JSON, more than a record within the limits can take (the tightest \
                         is {payload_bytes_max} bytes of key, value and headers)"
                    ),
                };
                input_error = Some(refused(line_number, reason));
                break;
            }
        }
        let record = if args.json {
            match parse_record_line(&line) {
                Ok(record) => record,
                Err(error) => {
                    input_error = Some(refused(
                        line_number,
                        format!(
                            "is not a JSON record ({error}); expected {{\"key\": ..., \"value\": ..., \"headers\": \
                         {{...}}}}"
                        ),
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
        };
        let delivery = match delivery {
            Err(spool_client::Error::RecordTooLarge { exceeded }) => {
                input_error = Some(refused(
                    line_number,
                    format!(
                        "is {} bytes, too large to produce: {}",
                        line.len(),
                        too_large(&exceeded)
                    ),
                ));
                break;
            }
            other => other.explain(context.about(topic))?,
        };
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

/// Why stdin line `line_number` ends the input, and how much was produced.
fn refused(line_number: u64, reason: String) -> anyhow::Error {
    let before = line_number - 1;
    anyhow!(
        "stdin line {line_number} {reason}. {} before it {} produced, none from line {line_number} on",
        lines(before),
        if before == 1 { "was" } else { "were" }
    )
}

/// `1 line`, `2 lines`.
fn lines(count: u64) -> String {
    if count == 1 {
        "1 line".into()
    } else {
        format!("{count} lines")
    }
}

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineRead {
    /// A line, in the buffer without its line break.
    Line,
    /// A line longer than the cap: its length without the line break; the
    /// buffer holds none of it.
    TooLong { bytes: u64 },
    /// The end of the input.
    End,
}

/// Reads the next line into `line` (cleared first), dropping its `\n` or
/// `\r\n`. A line longer than `bytes_max` is read to its end but not kept:
/// only its length is.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    bytes_max: u64,
) -> std::io::Result<LineRead> {
    line.clear();
    // Bytes of the line seen so far, kept or not.
    let mut seen = 0u64;
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (seen, too_long) {
                (0, _) => LineRead::End,
                (bytes, true) => LineRead::TooLong { bytes },
                (_, false) => LineRead::Line,
            });
        }
        let newline = available.iter().position(|&byte| byte == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        seen += chunk.len() as u64;
        // A `\r` before the line break is not the line's: one byte of slack.
        if !too_long && seen > bytes_max.saturating_add(1) {
            too_long = true;
            line.clear();
            line.shrink_to(64 << 10);
        }
        if !too_long {
            line.extend_from_slice(chunk);
        }
        let consumed = chunk.len() + usize::from(newline.is_some());
        reader.consume(consumed);
        if newline.is_some() {
            if too_long {
                return Ok(LineRead::TooLong { bytes: seen });
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(LineRead::Line);
        }
    }
}

/// Offsets acknowledged per partition.
#[derive(Debug, Default)]
struct Summary {
    records: u64,
    /// partition -> (first offset, last offset)
    ranges: BTreeMap<u32, (u64, u64)>,
    /// Records acknowledged as fsynced by the server.
    fsynced: u64,
    /// Records acknowledged as committed by a cluster (fsynced on a
    /// majority of the partition's replicas).
    quorum: u64,
}

impl Summary {
    fn add(&mut self, ack: RecordAck) {
        self.records += 1;
        match ack.durability {
            Durability::Fsync => self.fsynced += 1,
            Durability::Quorum => self.quorum += 1,
            Durability::None => {}
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
        if self.quorum > 0 {
            return match self.quorum == self.records {
                true => "quorum".into(),
                false => format!("{} on a quorum", self.quorum),
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], bytes_max: u64) -> Vec<(LineRead, String)> {
        let mut reader = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            let read = read_line(&mut reader, &mut line, bytes_max).await.unwrap();
            out.push((read, String::from_utf8(line.clone()).unwrap()));
            if read == LineRead::End {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_over_the_cap_are_measured_not_kept() {
        let read = read_all(b"one\r\ntwo\n0123456789ab\nlast", 10).await;
        assert_eq!(
            read,
            [
                (LineRead::Line, "one".into()),
                (LineRead::Line, "two".into()),
                (LineRead::TooLong { bytes: 12 }, String::new()),
                (LineRead::Line, "last".into()),
                (LineRead::End, String::new()),
            ]
        );
        let read = read_all(b"0123456789\r\n\n", 10).await;
        assert_eq!(
            read[0],
            (LineRead::Line, "0123456789".into()),
            "the cap and a \\r fit"
        );
        assert_eq!(
            read[1],
            (LineRead::Line, String::new()),
            "an empty line is a line"
        );
        let read = read_all(b"0123456789abc", 10).await;
        assert_eq!(
            read[0].0,
            LineRead::TooLong { bytes: 13 },
            "a last line without a line break"
        );
    }
}
