//! `spool queue stats`.

use serde_json::json;
use spool_client::proto as v1;

use crate::args::jobs::{OutputFormat, QueueCommand};
use crate::commands::job::answer;
use crate::output::{out, outln};
use crate::units::{format_age_ms, format_duration_ms, group_thousands};
use crate::{Context, Explain};

pub async fn run(context: &Context, command: QueueCommand) -> anyhow::Result<()> {
    match command {
        QueueCommand::Stats { queue, format } => {
            let stats = fetch_stats(context, &queue).await?;
            match format {
                OutputFormat::Json => outln!("{}", stats_json(&stats))?,
                OutputFormat::Human => out!("{}", stats_text(&stats))?,
            }
            Ok(())
        }
    }
}

/// The server's counts and rates for `queue`.
pub async fn fetch_stats(context: &Context, queue: &str) -> anyhow::Result<v1::QueueStatsResponse> {
    let request = v1::QueueStatsRequest {
        queue: queue.to_owned(),
    };
    answer(context.client.jobs_client().queue_stats(request).await).explain(context.subject())
}

fn stats_json(stats: &v1::QueueStatsResponse) -> serde_json::Value {
    json!({
        "queue": stats.queue,
        "scheduled": stats.scheduled_count,
        "available": stats.available_count,
        "running": stats.running_count,
        "succeeded": stats.succeeded_count,
        "dead": stats.dead_count,
        "cancelled": stats.cancelled_count,
        "oldest_available_age_ms": stats.oldest_available_age_ms,
        "rate_window_ms": stats.rate_window_ms,
        "enqueued_per_second": stats.enqueued_per_second,
        "completed_per_second": stats.completed_per_second,
        "failed_per_second": stats.failed_per_second,
    })
}

fn stats_text(stats: &v1::QueueStatsResponse) -> String {
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
            stats.oldest_available_age_ms.map_or_else(
                || "none available".into(),
                |age| format!("waiting {}", format_age_ms(age)),
            ),
        ),
        (
            "rates",
            format!(
                "enqueued {}/s, completed {}/s, failed attempts {}/s (over the last {})",
                format_rate(stats.enqueued_per_second),
                format_rate(stats.completed_per_second),
                format_rate(stats.failed_per_second),
                format_duration_ms(stats.rate_window_ms)
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
    use super::*;

    #[test]
    fn stats_read_as_text_and_json() {
        let stats = v1::QueueStatsResponse {
            queue: "emails".into(),
            available_count: 1_200,
            dead_count: 2,
            oldest_available_age_ms: Some(12_300),
            rate_window_ms: 60_000,
            enqueued_per_second: 20.0,
            completed_per_second: 19.5,
            ..v1::QueueStatsResponse::default()
        };
        let text = stats_text(&stats);
        assert!(text.contains("available         1,200\n"), "{text}");
        assert!(text.contains("waiting 12.3s"), "{text}");
        assert!(text.contains("completed 19.5/s"), "{text}");
        assert!(text.contains("over the last 1m"), "{text}");
        let value = stats_json(&stats);
        assert_eq!(value["dead"], json!(2));
        assert_eq!(value["oldest_available_age_ms"], json!(12_300));
        assert_eq!(format_rate(2.0 / 60.0), "0.033");
        assert_eq!(format_rate(0.0), "0");
        assert_eq!(format_rate(1_250.4), "1,250");
    }
}
