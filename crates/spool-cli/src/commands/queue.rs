//! `spool queue stats`, `spool queue list`, `spool queue pause`,
//! `spool queue resume`, `spool queue config` and `spool queue delete`.

use serde_json::{Value, json};
use std::time::Duration;

use spool_client::jobs::{
    LatencyWindows, Percentiles, QueueBackoff, QueueConfig, QueueConfigChange, QueueRateLimit, QueueStats,
    QueueSummary,
};

use crate::args::jobs::{OutputFormat, QueueCommand, QueueConfigArgs, Setting};
use crate::commands::job_view::millis;
use crate::output::{out, outln};
use crate::table::Table;
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
        QueueCommand::List { format } => {
            let queues = context
                .client
                .jobs()
                .list_queues()
                .await
                .explain(context.subject())?;
            match format {
                OutputFormat::Json => {
                    for queue in &queues {
                        outln!("{}", summary_json(queue))?;
                    }
                }
                OutputFormat::Human if queues.is_empty() => {
                    outln!("no queues: no job was ever enqueued to this server")?
                }
                OutputFormat::Human => out!("{}", list_text(&queues))?,
            }
            Ok(())
        }
        QueueCommand::Pause { queue } => {
            let changed = context
                .client
                .jobs()
                .pause_queue(&queue)
                .await
                .explain(context.subject())?;
            outln!(
                "queue {queue} {}: claims hand out none of its jobs until `spool queue resume {queue}`",
                if changed { "paused" } else { "was paused already" }
            )?;
            Ok(())
        }
        QueueCommand::Config(args) => configure(context, args).await,
        QueueCommand::Delete { queue, force } => {
            let purged = context
                .client
                .jobs()
                .delete_queue(&queue, force)
                .await
                .explain(context.subject())?;
            outln!("queue {queue} deleted: {} jobs purged", group_thousands(purged))?;
            Ok(())
        }
        QueueCommand::Resume { queue } => {
            let changed = context
                .client
                .jobs()
                .resume_queue(&queue)
                .await
                .explain(context.subject())?;
            outln!(
                "queue {queue} {}",
                if changed { "resumed" } else { "was not paused" }
            )?;
            Ok(())
        }
    }
}

/// The change `spool queue config` names; `None` when it names none.
fn config_change(args: &QueueConfigArgs) -> Option<QueueConfigChange> {
    let ms = |setting: Option<Setting<u64>>| setting.map(|s| s.0.map(Duration::from_millis));
    let change = QueueConfigChange {
        attempts_max: args.attempts.map(|s| s.0),
        backoff: args.backoff.map(|s| {
            s.0.map(|(min, max)| QueueBackoff {
                min: Duration::from_millis(min),
                max: Duration::from_millis(max),
            })
        }),
        lease: ms(args.lease),
        timeout: ms(args.timeout),
        finished_retention: ms(args.finished_retention),
        dead_retention: ms(args.dead_retention),
        concurrency_limit: args.concurrency_limit.map(|s| s.0),
        rate_limit: args.rate_limit.map(|s| {
            s.0.map(|(jobs, per)| QueueRateLimit {
                jobs,
                per: Duration::from_millis(per),
            })
        }),
    };
    (change != QueueConfigChange::default()).then_some(change)
}

async fn configure(context: &Context, args: QueueConfigArgs) -> anyhow::Result<()> {
    let jobs = context.client.jobs();
    let config = match config_change(&args) {
        Some(change) => jobs
            .configure_queue(&args.queue, &change)
            .await
            .explain(context.subject())?,
        None => jobs.stats(&args.queue).await.explain(context.subject())?.config,
    };
    match args.format {
        OutputFormat::Json => outln!(
            "{}",
            json!({ "queue": args.queue, "config": config_json(&config) })
        )?,
        OutputFormat::Human => {
            for (label, value) in config_lines(&config) {
                outln!("{label:<19} {value}")?;
            }
        }
    }
    Ok(())
}

fn config_json(config: &QueueConfig) -> Value {
    json!({
        "attempts_max": config.attempts_max,
        "backoff": config.backoff.map(|b| json!({ "min_ms": millis(b.min), "max_ms": millis(b.max) })),
        "lease_ms": config.lease.map(millis),
        "timeout_ms": config.timeout.map(millis),
        "finished_retention_ms": config.finished_retention.map(millis),
        "dead_retention_ms": config.dead_retention.map(millis),
        "concurrency_limit": config.concurrency_limit,
        "rate_limit": config.rate_limit.map(|r| json!({ "jobs": r.jobs, "per_ms": millis(r.per) })),
    })
}

/// One line per setting, `server default` where the queue sets none.
fn config_lines(config: &QueueConfig) -> Vec<(&'static str, String)> {
    let default = || "server default".to_owned();
    let duration = |d: Option<Duration>| d.map_or_else(default, |d| format_duration_ms(millis(d)));
    vec![
        (
            "attempts",
            config.attempts_max.map_or_else(default, |n| n.to_string()),
        ),
        (
            "backoff",
            config.backoff.map_or_else(default, |b| {
                format!(
                    "{}..{} (doubling)",
                    format_duration_ms(millis(b.min)),
                    format_duration_ms(millis(b.max))
                )
            }),
        ),
        ("lease", duration(config.lease)),
        ("timeout", duration(config.timeout)),
        ("finished retention", duration(config.finished_retention)),
        ("dead retention", duration(config.dead_retention)),
        (
            "concurrency limit",
            config.concurrency_limit.map_or_else(
                || "none".into(),
                |n| format!("{} running at once", group_thousands(u64::from(n))),
            ),
        ),
        ("rate limit", rate_text(config.rate_limit)),
    ]
}

fn rate_text(rate: Option<QueueRateLimit>) -> String {
    rate.map_or_else(
        || "none".into(),
        |r| {
            format!(
                "{} jobs per {}",
                group_thousands(u64::from(r.jobs)),
                format_duration_ms(millis(r.per))
            )
        },
    )
}

/// The limits of a queue in a few words, for `stats` and `list`.
fn limits_text(config: &QueueConfig) -> String {
    let mut parts = Vec::new();
    if let Some(n) = config.concurrency_limit {
        parts.push(format!("{n} at once"));
    }
    if config.rate_limit.is_some() {
        parts.push(rate_text(config.rate_limit));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn stats_json(stats: &QueueStats) -> Value {
    let totals = &stats.totals;
    json!({
        "queue": stats.queue,
        "scheduled": stats.scheduled_count,
        "available": stats.available_count,
        "running": stats.running_count,
        "succeeded": stats.succeeded_count,
        "dead": stats.dead_count,
        "cancelled": stats.cancelled_count,
        "oldest_available_age_ms": stats.oldest_available_age.map(millis),
        "leases_held": stats.running_count,
        "workers_connected": stats.workers_connected,
        "paused": stats.paused,
        "config": config_json(&stats.config),
        "rate_window_claims": stats.rate_window_claims,
        "rate_window_ms": millis(stats.rate_window),
        "enqueued_per_second": stats.enqueued_per_second,
        "completed_per_second": stats.completed_per_second,
        "failed_per_second": stats.failed_per_second,
        "latency": {
            "queue_wait": windows_json(&stats.latency.queue_wait),
            "run_time": windows_json(&stats.latency.run_time),
            "end_to_end": windows_json(&stats.latency.end_to_end),
        },
        "totals": {
            "enqueued": totals.enqueued,
            "claimed": totals.claimed,
            "completed": totals.completed,
            "failed": totals.failed,
            "retried": totals.retried,
            "dead": totals.dead,
            "expired_lease": totals.expired_lease,
            "cancelled": totals.cancelled,
            "released": totals.released,
            "redriven": totals.redriven,
        },
        "eviction": {
            "finished_retention_ms": millis(stats.eviction.finished_retention),
            "finished_in_memory_max": stats.eviction.finished_in_memory_max,
            "finished_in_memory_count": stats.eviction.finished_in_memory_count,
            "finished_evicted_early": stats.eviction.finished_evicted_early_count,
            "dead_retention_ms": millis(stats.eviction.dead_retention),
        },
    })
}

fn windows_json(windows: &LatencyWindows) -> Value {
    let one = |percentiles: Option<Percentiles>| {
        percentiles.map(|p| {
            json!({
                "count": p.count,
                "p50_ms": millis(p.p50),
                "p99_ms": millis(p.p99),
                "max_ms": millis(p.max),
            })
        })
    };
    json!({
        "last_minute": one(windows.last_minute),
        "last_hour": one(windows.last_hour),
    })
}

/// `p50 12ms, p99 80ms of 1,170 in the last minute; p50 ... in the last
/// hour`.
fn windows_text(windows: &LatencyWindows) -> String {
    let one = |percentiles: Option<Percentiles>, window: &str| match percentiles {
        Some(p) => format!(
            "p50 {}, p99 {} of {} in the last {window}",
            format_age_ms(millis(p.p50)),
            format_age_ms(millis(p.p99)),
            group_thousands(p.count)
        ),
        None => format!("none in the last {window}"),
    };
    format!(
        "{}; {}",
        one(windows.last_minute, "minute"),
        one(windows.last_hour, "hour")
    )
}

fn stats_text(stats: &QueueStats) -> String {
    let count = |n: u64| group_thousands(n);
    let totals = &stats.totals;
    let lines = [
        (
            "queue",
            if stats.paused {
                format!("{} (paused: claims hand out none of its jobs)", stats.queue)
            } else {
                stats.queue.clone()
            },
        ),
        ("scheduled", count(stats.scheduled_count)),
        ("available", count(stats.available_count)),
        (
            "running",
            format!(
                "{} (leases held), {} workers connected",
                count(stats.running_count),
                count(stats.workers_connected)
            ),
        ),
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
        ("queue wait", windows_text(&stats.latency.queue_wait)),
        ("run time", windows_text(&stats.latency.run_time)),
        ("end to end", windows_text(&stats.latency.end_to_end)),
        (
            "totals",
            format!(
                "since the server started: enqueued {}, claimed {}, completed {}, failed {} \
                 (retried {}, dead {}, expired lease {}), cancelled {}, released {}, re-driven {}",
                count(totals.enqueued),
                count(totals.claimed),
                count(totals.completed),
                count(totals.failed),
                count(totals.retried),
                count(totals.dead),
                count(totals.expired_lease),
                count(totals.cancelled),
                count(totals.released),
                count(totals.redriven),
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
        ("limits", stats_limits_text(stats)),
    ];
    let settings = config_lines(&stats.config)
        .into_iter()
        .filter(|(label, _)| matches!(*label, "attempts" | "backoff" | "lease" | "timeout"));
    lines
        .into_iter()
        .chain(settings)
        .collect::<Vec<_>>()
        .iter()
        .map(|(label, value)| format!("{label:<17} {value}\n"))
        .collect()
}

fn summary_json(queue: &QueueSummary) -> Value {
    json!({
        "queue": queue.queue,
        "scheduled": queue.scheduled_count,
        "available": queue.available_count,
        "running": queue.running_count,
        "succeeded": queue.succeeded_count,
        "dead": queue.dead_count,
        "cancelled": queue.cancelled_count,
        "oldest_available_age_ms": queue.oldest_available_age.map(millis),
        "paused": queue.paused,
        "config": config_json(&queue.config),
    })
}

fn list_text(queues: &[QueueSummary]) -> String {
    let mut table = Table::new(&[
        "QUEUE",
        "SCHEDULED>",
        "AVAILABLE>",
        "RUNNING>",
        "SUCCEEDED>",
        "DEAD>",
        "CANCELLED>",
        "OLDEST AVAILABLE>",
        "LIMITS",
    ]);
    for queue in queues {
        table.row(vec![
            if queue.paused {
                format!("{} (paused)", queue.queue)
            } else {
                queue.queue.clone()
            },
            group_thousands(queue.scheduled_count),
            group_thousands(queue.available_count),
            group_thousands(queue.running_count),
            group_thousands(queue.succeeded_count),
            group_thousands(queue.dead_count),
            group_thousands(queue.cancelled_count),
            queue
                .oldest_available_age
                .map_or_else(|| "-".into(), |age| format_age_ms(millis(age))),
            limits_text(&queue.config),
        ]);
    }
    table.render()
}

/// The limits, with how much of each is in use.
fn stats_limits_text(stats: &QueueStats) -> String {
    let config = &stats.config;
    let mut parts = Vec::new();
    if let Some(n) = config.concurrency_limit {
        parts.push(format!(
            "{} of {} running at once",
            group_thousands(stats.running_count),
            group_thousands(u64::from(n))
        ));
    }
    if let Some(rate) = config.rate_limit {
        parts.push(format!(
            "{} of {} claimed in the last {}",
            group_thousands(stats.rate_window_claims),
            group_thousands(u64::from(rate.jobs)),
            format_duration_ms(millis(rate.per))
        ));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

/// A rate with the precision it needs: `0`, `0.033`, `19.5`, `1,250`.
pub fn format_rate(per_second: f64) -> String {
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

    use spool_client::jobs::{EvictionRule, QueueLatency, QueueTotals};

    use super::*;

    fn stats() -> QueueStats {
        let percentiles = |p50_ms, p99_ms, count| Percentiles {
            count,
            p50: Duration::from_millis(p50_ms),
            p99: Duration::from_millis(p99_ms),
            max: Duration::from_millis(p99_ms + 1),
        };
        QueueStats {
            queue: "emails".into(),
            scheduled_count: 0,
            available_count: 1_200,
            running_count: 3,
            succeeded_count: 0,
            dead_count: 2,
            cancelled_count: 0,
            oldest_available_age: Some(Duration::from_millis(12_300)),
            rate_window: Duration::from_secs(60),
            enqueued_per_second: 20.0,
            completed_per_second: 19.5,
            failed_per_second: 0.0,
            latency: QueueLatency {
                queue_wait: LatencyWindows {
                    last_minute: Some(percentiles(12, 80, 1_170)),
                    last_hour: Some(percentiles(10, 95, 70_000)),
                },
                run_time: LatencyWindows {
                    last_minute: None,
                    last_hour: Some(percentiles(1_200, 3_400, 69_000)),
                },
                end_to_end: LatencyWindows {
                    last_minute: None,
                    last_hour: None,
                },
            },
            totals: QueueTotals {
                enqueued: 12_000,
                claimed: 11_950,
                completed: 11_900,
                failed: 50,
                retried: 45,
                dead: 5,
                expired_lease: 3,
                ..QueueTotals::default()
            },
            workers_connected: 2,
            paused: false,
            config: QueueConfig {
                attempts_max: Some(10),
                backoff: Some(QueueBackoff {
                    min: Duration::from_secs(5),
                    max: Duration::from_secs(3_600),
                }),
                concurrency_limit: Some(5),
                rate_limit: Some(QueueRateLimit {
                    jobs: 100,
                    per: Duration::from_secs(1),
                }),
                ..QueueConfig::default()
            },
            rate_window_claims: 42,
            eviction: EvictionRule {
                finished_retention: Duration::from_secs(3600),
                finished_in_memory_max: 100_000,
                finished_in_memory_count: 100_000,
                finished_evicted_early_count: 4_200,
                dead_retention: Duration::from_secs(7 * 86_400),
            },
        }
    }

    #[test]
    fn stats_read_as_text_and_json() {
        let stats = stats();
        let text = stats_text(&stats);
        assert!(text.contains("available         1,200\n"), "{text}");
        assert!(
            text.contains("running           3 (leases held), 2 workers connected\n"),
            "{text}"
        );
        assert!(text.contains("waiting 12.3s"), "{text}");
        assert!(text.contains("completed 19.5/s"), "{text}");
        assert!(text.contains("over the last 1m"), "{text}");
        assert!(
            text.contains(
                "queue wait        p50 12ms, p99 80ms of 1,170 in the last minute; \
                 p50 10ms, p99 95ms of 70,000 in the last hour\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("run time          none in the last minute; p50 1.2s, p99 3.4s of 69,000"),
            "{text}"
        );
        assert!(
            text.contains("end to end        none in the last minute; none in the last hour\n"),
            "{text}"
        );
        assert!(
            text.contains("failed 50 (retried 45, dead 5, expired lease 3), cancelled 0"),
            "{text}"
        );
        assert!(
            text.contains("leave memory 1h after finishing, or sooner once 100,000 are held (all queues; 100,000 now); 4,200 of this queue left early"),
            "{text}"
        );
        assert!(text.contains("purged 7d after going dead"), "{text}");
        assert!(
            text.contains("limits            3 of 5 running at once; 42 of 100 claimed in the last 1s\n"),
            "{text}"
        );
        assert!(text.contains("attempts          10\n"), "{text}");
        assert!(text.contains("backoff           5s..1h (doubling)\n"), "{text}");
        assert!(text.contains("lease             server default\n"), "{text}");
        let value = stats_json(&stats);
        assert_eq!(value["dead"], json!(2));
        assert_eq!(value["oldest_available_age_ms"], json!(12_300));
        assert_eq!(value["eviction"]["finished_in_memory_max"], json!(100_000));
        assert_eq!(value["workers_connected"], json!(2));
        assert_eq!(value["leases_held"], json!(3));
        assert_eq!(
            value["latency"]["queue_wait"]["last_minute"],
            json!({"count": 1_170, "p50_ms": 12, "p99_ms": 80, "max_ms": 81})
        );
        assert_eq!(value["latency"]["run_time"]["last_minute"], Value::Null);
        assert_eq!(value["totals"]["expired_lease"], json!(3));
        assert_eq!(value["config"]["concurrency_limit"], json!(5));
        assert_eq!(
            value["config"]["rate_limit"],
            json!({"jobs": 100, "per_ms": 1_000})
        );
        assert_eq!(value["config"]["lease_ms"], Value::Null);
        assert_eq!(format_rate(2.0 / 60.0), "0.033");
        assert_eq!(format_rate(0.0), "0");
        assert_eq!(format_rate(1_250.4), "1,250");
    }

    #[test]
    fn queues_list_as_a_table_and_json_lines() {
        let queues = vec![
            QueueSummary {
                queue: "emails".into(),
                scheduled_count: 1,
                available_count: 12_000,
                running_count: 4,
                succeeded_count: 0,
                dead_count: 2,
                cancelled_count: 0,
                oldest_available_age: Some(Duration::from_millis(2_500)),
                paused: false,
                config: QueueConfig {
                    concurrency_limit: Some(4),
                    ..QueueConfig::default()
                },
            },
            QueueSummary {
                queue: "reports".into(),
                scheduled_count: 0,
                available_count: 0,
                running_count: 0,
                succeeded_count: 7,
                dead_count: 0,
                cancelled_count: 0,
                oldest_available_age: None,
                paused: true,
                config: QueueConfig::default(),
            },
        ];
        let text = list_text(&queues);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("QUEUE  "), "{text}");
        assert!(lines[2].starts_with("reports (paused)"), "{text}");
        assert!(
            lines[1].starts_with("emails") && lines[1].contains("12,000"),
            "{text}"
        );
        assert!(lines[1].ends_with("2.5s  4 at once"), "{text}");
        assert!(lines[2].ends_with('-'), "{text}");
        assert_eq!(
            summary_json(&queues[1]),
            json!({
                "queue": "reports", "scheduled": 0, "available": 0, "running": 0,
                "succeeded": 7, "dead": 0, "cancelled": 0, "oldest_available_age_ms": null,
                "paused": true,
                "config": {
                    "attempts_max": null, "backoff": null, "lease_ms": null, "timeout_ms": null,
                    "finished_retention_ms": null, "dead_retention_ms": null,
                    "concurrency_limit": null, "rate_limit": null,
                },
            })
        );
    }
}
