//! `spool top`: a live view of a server's topics and queues.
//!
//! Each refresh takes a [`Sample`] through the ordinary API (ListTopics
//! and DescribeTopic per topic, GetCheckpoint per named consumer and topic,
//! ListQueues and QueueStats per queue) and renders it, with the append
//! rate of each topic computed from the previous sample. On a terminal the
//! view redraws in the alternate screen until `q` (or Esc, or Ctrl-C); when
//! stdout or stdin is not a terminal, or with `--once`, it prints one plain
//! snapshot (two samples `--interval` apart, for the rates) and exits.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use spool_client::jobs::QueueStats;
use tokio::sync::mpsc;

use crate::args::TopArgs;
use crate::commands::job_view::millis;
use crate::commands::queue::format_rate;
use crate::output::out;
use crate::table::Table;
use crate::terminal::{RawTerminal, spawn_key_reader};
use crate::time::format_timestamp_ms;
use crate::units::{format_age_ms, format_bytes_approx, group_thousands};
use crate::{Context, Explain};

/// One topic when sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSample {
    pub name: String,
    pub partitions: u32,
    /// Records held: high watermark minus log start, summed over partitions.
    pub records: u64,
    /// Sum of the partitions' high watermarks: appends move it.
    pub end_offsets: u64,
    pub size_bytes: u64,
}

/// How far a named consumer's checkpoints are behind in one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagSample {
    pub consumer: String,
    pub topic: String,
    /// Records between the checkpoints and the high watermarks, over the
    /// partitions the consumer has a checkpoint in.
    pub lag_records: u64,
    pub partitions: usize,
}

/// Everything one refresh shows.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub at_ms: i64,
    pub topics: Vec<TopicSample>,
    pub lags: Vec<LagSample>,
    pub queues: Vec<QueueStats>,
}

pub async fn run(context: &Context, args: TopArgs) -> anyhow::Result<()> {
    let interval = Duration::from_millis(args.interval);
    let live = !args.once && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !live {
        let first = sample(context, &args).await?;
        tokio::time::sleep(interval).await;
        let second = sample(context, &args).await?;
        out!(
            "{}",
            render(&context.server, interval, Some(&first), &second, false)
        )?;
        return Ok(());
    }
    let terminal = RawTerminal::enter()?;
    let (keys_in, mut keys) = mpsc::unbounded_channel();
    spawn_key_reader(keys_in)?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut previous: Option<Sample> = None;
    loop {
        let size = RawTerminal::size();
        let frame = match sample(context, &args).await {
            Ok(current) => {
                let frame = render(&context.server, interval, previous.as_ref(), &current, true);
                previous = Some(current);
                frame
            }
            // The server went away or refused: say so in the view and keep
            // trying, as top does when a process vanishes.
            Err(error) => format!(
                "spool top: {}: {error:#}\nretrying every {}; q quits\n",
                context.server,
                format_age_ms(args.interval)
            ),
        };
        out!("{}", screen(&frame, size))?;
        tokio::select! {
            key = keys.recv() => match key {
                Some(b'q' | b'Q' | 0x03 | 0x1b) | None => break,
                Some(_) => {}
            },
            _ = tokio::time::sleep(interval) => {}
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
        }
    }
    drop(terminal);
    Ok(())
}

/// The frame as terminal output: from the top-left corner, each line cut
/// to the width and cleared to its end, raw mode's line breaks, and the
/// rest of the screen cleared.
fn screen(frame: &str, size: Option<(usize, usize)>) -> String {
    let (rows, columns) = size.unwrap_or((usize::MAX, usize::MAX));
    let mut out = String::from("\x1b[H");
    for line in frame.lines().take(rows) {
        out.extend(line.chars().take(columns));
        out.push_str("\x1b[K\r\n");
    }
    out.push_str("\x1b[J");
    out
}

async fn sample(context: &Context, args: &TopArgs) -> anyhow::Result<Sample> {
    let client = &context.client;
    let subject = context.subject();
    let mut topics = Vec::new();
    let mut lags = Vec::new();
    for config in client.list_topics(args.internal).await.explain(subject)? {
        let described = client.describe_topic(&config.name).await.explain(subject)?;
        let partitions = &described.partitions;
        topics.push(TopicSample {
            name: config.name.clone(),
            partitions: config.partitions,
            records: partitions
                .iter()
                .map(|p| p.high_watermark.saturating_sub(p.log_start_offset))
                .sum(),
            end_offsets: partitions.iter().map(|p| p.high_watermark).sum(),
            size_bytes: partitions.iter().map(|p| p.size_bytes).sum(),
        });
        for consumer in &args.consumers {
            let checkpoints = client
                .get_checkpoint(consumer, &config.name)
                .await
                .explain(subject)?;
            if checkpoints.is_empty() {
                continue;
            }
            let lag_records = checkpoints
                .iter()
                .filter_map(|checkpoint| {
                    let partition = partitions.iter().find(|p| p.partition == checkpoint.partition)?;
                    Some(partition.high_watermark.saturating_sub(checkpoint.offset))
                })
                .sum();
            lags.push(LagSample {
                consumer: consumer.clone(),
                topic: config.name.clone(),
                lag_records,
                partitions: checkpoints.len(),
            });
        }
    }
    let jobs = client.jobs();
    let mut queues = Vec::new();
    for summary in jobs.list_queues().await.explain(subject)? {
        queues.push(jobs.stats(&summary.queue).await.explain(subject)?);
    }
    Ok(Sample {
        at: Instant::now(),
        at_ms: crate::time::now_ms(),
        topics,
        lags,
        queues,
    })
}

/// The view of `current` as plain text, with append rates against
/// `previous`; `live` for the refreshing view (which says how to quit).
pub fn render(
    server: &str,
    interval: Duration,
    previous: Option<&Sample>,
    current: &Sample,
    live: bool,
) -> String {
    let mut out = format!(
        "spool top  {server}  {}  every {}{}\n\n",
        format_timestamp_ms(current.at_ms),
        format_age_ms(millis(interval)),
        if live { "  (q quits)" } else { "" }
    );
    let elapsed = previous.map(|p| current.at.saturating_duration_since(p.at).as_secs_f64());
    let mut topics = Table::new(&["TOPIC", "PARTITIONS>", "RECORDS>", "APPENDED/S>", "SIZE>"]);
    for topic in &current.topics {
        let rate = previous
            .and_then(|p| p.topics.iter().find(|t| t.name == topic.name))
            .zip(elapsed)
            .filter(|(_, seconds)| *seconds > 0.0)
            .map_or_else(
                || "-".to_owned(),
                |(before, seconds)| {
                    format_rate(topic.end_offsets.saturating_sub(before.end_offsets) as f64 / seconds)
                },
            );
        topics.row(vec![
            topic.name.clone(),
            topic.partitions.to_string(),
            group_thousands(topic.records),
            rate,
            format_bytes_approx(topic.size_bytes),
        ]);
    }
    if current.topics.is_empty() {
        out.push_str("no topics\n");
    } else {
        out.push_str(&topics.render());
    }
    if !current.lags.is_empty() {
        let mut lags = Table::new(&["CONSUMER", "TOPIC", "LAG>", "PARTITIONS>"]);
        for lag in &current.lags {
            lags.row(vec![
                lag.consumer.clone(),
                lag.topic.clone(),
                group_thousands(lag.lag_records),
                lag.partitions.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&lags.render());
    }
    out.push('\n');
    if current.queues.is_empty() {
        out.push_str("no queues\n");
        return out;
    }
    let mut queues = Table::new(&[
        "QUEUE",
        "SCHED>",
        "AVAIL>",
        "RUN>",
        "DEAD>",
        "OLDEST>",
        "ENQ/S>",
        "DONE/S>",
        "FAIL/S>",
        "WAIT P99>",
        "RUN P99>",
        "WORKERS>",
    ]);
    let p99 = |windows: &spool_client::jobs::LatencyWindows| {
        windows
            .last_minute
            .map_or_else(|| "-".to_owned(), |p| format_age_ms(millis(p.p99)))
    };
    for queue in &current.queues {
        queues.row(vec![
            queue.queue.clone(),
            group_thousands(queue.scheduled_count),
            group_thousands(queue.available_count),
            group_thousands(queue.running_count),
            group_thousands(queue.dead_count),
            queue
                .oldest_available_age
                .map_or_else(|| "-".to_owned(), |age| format_age_ms(millis(age))),
            format_rate(queue.enqueued_per_second),
            format_rate(queue.completed_per_second),
            format_rate(queue.failed_per_second),
            p99(&queue.latency.queue_wait),
            p99(&queue.latency.run_time),
            group_thousands(queue.workers_connected),
        ]);
    }
    out.push_str(&queues.render());
    out.push_str(
        "\nrates and p99 over the last minute; RUN: running jobs (leases held); WORKERS: workers connected\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use spool_client::jobs::{EvictionRule, LatencyWindows, Percentiles, QueueLatency, QueueTotals};

    use super::*;

    fn queue(name: &str) -> QueueStats {
        let none = LatencyWindows {
            last_minute: None,
            last_hour: None,
        };
        QueueStats {
            queue: name.into(),
            scheduled_count: 1,
            available_count: 1_200,
            running_count: 3,
            succeeded_count: 10,
            dead_count: 2,
            cancelled_count: 0,
            oldest_available_age: Some(Duration::from_millis(12_300)),
            rate_window: Duration::from_secs(60),
            enqueued_per_second: 20.0,
            completed_per_second: 19.5,
            failed_per_second: 0.0,
            latency: QueueLatency {
                queue_wait: LatencyWindows {
                    last_minute: Some(Percentiles {
                        count: 5,
                        p50: Duration::from_millis(3),
                        p99: Duration::from_millis(80),
                        max: Duration::from_millis(80),
                    }),
                    last_hour: None,
                },
                run_time: none,
                end_to_end: none,
            },
            totals: QueueTotals::default(),
            workers_connected: 2,
            paused: false,
            config: spool_client::jobs::QueueConfig::default(),
            rate_window_claims: 0,
            eviction: EvictionRule {
                finished_retention: Duration::from_secs(3_600),
                finished_in_memory_max: 100_000,
                finished_in_memory_count: 0,
                finished_evicted_early_count: 0,
                dead_retention: Duration::from_secs(86_400),
            },
        }
    }

    fn sample(at: Instant, end_offsets: u64) -> Sample {
        Sample {
            at,
            at_ms: 0,
            topics: vec![TopicSample {
                name: "orders".into(),
                partitions: 3,
                records: end_offsets,
                end_offsets,
                size_bytes: 2_048,
            }],
            lags: vec![LagSample {
                consumer: "billing".into(),
                topic: "orders".into(),
                lag_records: 40,
                partitions: 2,
            }],
            queues: vec![queue("emails")],
        }
    }

    #[test]
    fn the_view_shows_topics_lags_and_queues() {
        let start = Instant::now();
        let before = sample(start, 1_000);
        let after = sample(start + Duration::from_secs(2), 3_500);
        let text = render("http://h:1", Duration::from_secs(1), Some(&before), &after, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "spool top  http://h:1  1970-01-01T00:00:00.000Z  every 1s",
            "{text}"
        );
        let orders = lines.iter().find(|l| l.starts_with("orders")).unwrap();
        let cells: Vec<&str> = orders.split_whitespace().collect();
        assert_eq!(cells, ["orders", "3", "3,500", "1,250", "2.0", "KiB"], "{text}");
        let billing = lines.iter().find(|l| l.starts_with("billing")).unwrap();
        assert_eq!(
            billing.split_whitespace().collect::<Vec<_>>(),
            ["billing", "orders", "40", "2"]
        );
        let emails = lines.iter().find(|l| l.starts_with("emails")).unwrap();
        assert_eq!(
            emails.split_whitespace().collect::<Vec<_>>(),
            [
                "emails", "1", "1,200", "3", "2", "12.3s", "20.0", "19.5", "0", "80ms", "-", "2"
            ],
            "{text}"
        );
        // Without a previous sample there is no rate yet.
        let first = render("http://h:1", Duration::from_secs(1), None, &after, true);
        assert!(first.lines().next().unwrap().ends_with("(q quits)"), "{first}");
        let orders = first.lines().find(|l| l.starts_with("orders")).unwrap();
        assert_eq!(orders.split_whitespace().nth(3), Some("-"));
    }

    #[test]
    fn an_empty_server_says_so_and_the_screen_is_cut_to_size() {
        let empty = Sample {
            at: Instant::now(),
            at_ms: 0,
            topics: vec![],
            lags: vec![],
            queues: vec![],
        };
        let text = render("s", Duration::from_millis(500), None, &empty, false);
        assert!(
            text.contains("no topics\n") && text.ends_with("no queues\n"),
            "{text}"
        );
        let frame = screen("abcdef\nsecond\nthird\n", Some((2, 3)));
        assert_eq!(frame, "\x1b[Habc\x1b[K\r\nsec\x1b[K\r\n\x1b[J");
    }
}
