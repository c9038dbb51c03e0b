//! `spool queue stats`.

use serde_json::json;
use spool_client::jobs::QueueStats;

use crate::args::jobs::{OutputFormat, QueueCommand};
use crate::commands::job_view::millis;
use crate::output::{out, outln};
use crate::units::{format_age_ms, format_duration_ms, group_thousands};
use crate::{Context, Explain};

pub async fn run(context: &Context, command: QueueCommand) -> anyhow::Result<()> {
    match command {
        QueueCommand::Stats { queue, format } => {
            let stats = context
                .client
                .jobs()
                .stats(&queue)
                .await
                .explain(context.subject())?;
            match format {
                OutputFormat::Json => outln!("{}", stats_json(&stats))?,
                OutputFormat::Human => out!("{}", stats_text(&stats))?,
            }
            Ok(())
        }
    }
}

fn stats_json(stats: &QueueStats) -> serde_json::Value {
    json!({
        "queue": stats.queue,
        "scheduled": stats.scheduled_count,
        "available": stats.available_count,
        "running": stats.running_count,
        "succeeded": stats.succeeded_count,
        "dead": stats.dead_count,
        "cancelled": stats.cancelled_count,
        "oldest_available_age_ms": stats.oldest_available_age.map(millis),
        "rate_window_ms": millis(stats.rate_window),
        "enqueued_per_second": stats.enqueued_per_second,
        "completed_per_second": stats.completed_per_second,
        "failed_per_second": stats.failed_per_second,
        "eviction": {
            "finished_retention_ms": millis(stats.eviction.finished_retention),
            "finished_in_memory_max": stats.eviction.finished_in_memory_max,
            "finished_in_memory_count": stats.eviction.finished_in_memory_count,
            "finished_evicted_early": stats.eviction.finished_evicted_early_count,
            "dead_retention_ms": millis(stats.eviction.dead_retention),
        },
    })
}

fn stats_text(stats: &QueueStats) -> String {
    let count = |n: u64| group_thousands(n);
    let lines = [
        ("queue", stats.queue.clone()),
        ("scheduled", count(stats.scheduled_count)),
        ("available", count(stats.available_count)),
        ("running", count(stats.running_count)),
        (
            "succeeded",
            format!("{} (still in memory)", count(stats.succeeded_count)),
        ),
        ("dead", count(stats.dead_count)),
        (
            "cancelled",
            format!("{} (still in memory)", count(stats.cancelled_count)),
        ),
        (
            "oldest available",
            stats.oldest_available_age.map_or_else(
                || "none available".into(),
                |age| format!("waiting {}", format_age_ms(millis(age))),
            ),
        ),
        (
            "rates",
            format!(
                "enqueued {}/s, completed {}/s, failed attempts {}/s (over the last {})",
                format_rate(stats.enqueued_per_second),
                format_rate(stats.completed_per_second),
                format_rate(stats.failed_per_second),
                format_duration_ms(millis(stats.rate_window))
            ),
        ),
        (
            "finished jobs",
            format!(
                "leave memory {} after finishing, or sooner once {} are held (all queues; {} now); \
                 {} of this queue left early; `job get` still answers from the log",
                format_duration_ms(millis(stats.eviction.finished_retention)),
                count(stats.eviction.finished_in_memory_max),
                count(stats.eviction.finished_in_memory_count),
                count(stats.eviction.finished_evicted_early_count),
            ),
        ),
        (
            "dead jobs",
            format!(
                "purged {} after going dead unless re-driven",
                format_duration_ms(millis(stats.eviction.dead_retention))
            ),
        ),
    ];
    lines
        .iter()
        .map(|(label, value)| format!("{label:<17} {value}\n"))
        .collect()
}

/// A rate with the precision it needs: `0`, `0.033`, `19.5`, `1,250`.
fn format_rate(per_second: f64) -> String {
    match per_second {
        r if r <= 0.0 => "0".into(),
        r if r < 1.0 => format!("{r:.3}"),
        r if r < 100.0 => format!("{r:.1}"),
        r => group_thousands(r.round() as u64),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use spool_client::jobs::EvictionRule;

    use super::*;

    #[test]
    fn stats_read_as_text_and_json() {
        let stats = QueueStats {
            queue: "emails".into(),
            scheduled_count: 0,
            available_count: 1_200,
            running_count: 0,
            succeeded_count: 0,
            dead_count: 2,
            cancelled_count: 0,
            oldest_available_age: Some(Duration::from_millis(12_300)),
            rate_window: Duration::from_secs(60),
            enqueued_per_second: 20.0,
            completed_per_second: 19.5,
            failed_per_second: 0.0,
            eviction: EvictionRule {
                finished_retention: Duration::from_secs(3600),
                finished_in_memory_max: 100_000,
                finished_in_memory_count: 100_000,
                finished_evicted_early_count: 4_200,
                dead_retention: Duration::from_secs(7 * 86_400),
            },
        };
        let text = stats_text(&stats);
        assert!(text.contains("available         1,200\n"), "{text}");
        assert!(text.contains("waiting 12.3s"), "{text}");
        assert!(text.contains("completed 19.5/s"), "{text}");
        assert!(text.contains("over the last 1m"), "{text}");
        assert!(
            text.contains("leave memory 1h after finishing, or sooner once 100,000 are held (all queues; 100,000 now); 4,200 of this queue left early"),
            "{text}"
        );
        assert!(text.contains("purged 7d after going dead"), "{text}");
        let value = stats_json(&stats);
        assert_eq!(value["dead"], json!(2));
        assert_eq!(value["oldest_available_age_ms"], json!(12_300));
        assert_eq!(value["eviction"]["finished_in_memory_max"], json!(100_000));
        assert_eq!(format_rate(2.0 / 60.0), "0.033");
        assert_eq!(format_rate(0.0), "0");
        assert_eq!(format_rate(1_250.4), "1,250");
    }
}
