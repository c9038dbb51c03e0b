//! How `spool job` prints jobs and their events: aligned text for people,
//! one JSON object per line for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use spool_client::jobs::{JobEvent, JobInfo};

use crate::json::JsonBytes;
use crate::time::format_timestamp_ms;
use crate::units::{format_age_ms, format_duration_ms};

/// Characters shown of one error, progress, payload or result in the human
/// format; `--format json` shows everything.
const TEXT_CHARS_SHOWN_MAX: usize = 300;

/// A job as one JSON object: the proto's fields, states in lower case,
/// durations in milliseconds, bytes as strings or `{"base64": ...}`.
pub fn job_json(job: &JobInfo) -> Value {
    json!({
        "job_id": job.id,
        "queue": job.queue,
        "state": job.state.as_str(),
        "attempt": job.attempt,
        "attempts_max": job.attempts_max,
        "priority": job.priority,
        "timeout_ms": job.timeout.map_or(0, millis),
        "idempotency_key": job.idempotency_key,
        "content_type": job.content_type.as_deref().unwrap_or_default(),
        "headers": headers_json(&job.headers),
        "created_at_ms": job.created_at_ms,
        "available_at_ms": job.available_at_ms,
        "started_at_ms": job.started_at_ms,
        "finished_at_ms": job.finished_at_ms,
        "worker_id": job.worker_id,
        "cancel_requested": job.cancel_requested,
        "from_history": job.from_history,
        "purged_at_ms": job.purged_at_ms,
        "progress": job.progress,
        "errors": job.errors.iter().map(|e| json!({
            "attempt": e.attempt,
            "error": e.error,
            "failed_at_ms": e.failed_at_ms,
        })).collect::<Vec<_>>(),
        "attempts": job.attempts.iter().enumerate().map(|(index, a)| json!({
            "attempt": a.attempt,
            "available_at_ms": a.available_at_ms,
            "claimed_at_ms": a.claimed_at_ms,
            "finished_at_ms": a.finished_at_ms,
            "outcome": a.outcome.as_str(),
            "queue_wait_ms": millis(a.queue_wait()),
            "run_ms": a.run_time().map(millis),
            "backoff_after_ms": job.backoff_after(index).map(millis),
        })).collect::<Vec<_>>(),
        "stages": {
            "initial_delay_ms": job.initial_delay().map(millis),
            "total_ms": job.total().map(millis),
        },
        "payload": JsonBytes(job.payload.clone()),
        "result": job.result.clone().map(JsonBytes),
    })
}

fn headers_json(headers: &BTreeMap<String, String>) -> serde_json::Map<String, Value> {
    headers
        .iter()
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect()
}

/// A job as aligned `label  value` lines.
pub fn job_text(job: &JobInfo, now_ms: i64) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("job", job.id.clone()),
        ("queue", job.queue.clone()),
        ("state", job.state.to_string()),
        (
            "attempt",
            format!(
                "{} (attempts_max {}, the first try included)",
                job.attempt, job.attempts_max
            ),
        ),
        ("priority", job.priority.to_string()),
        (
            "timeout",
            job.timeout.map_or_else(
                || "none (only the lease bounds an attempt)".into(),
                |timeout| format_duration_ms(millis(timeout)),
            ),
        ),
    ];
    if let Some(key) = &job.idempotency_key {
        lines.push(("key", key.clone()));
    }
    if let Some(content_type) = &job.content_type {
        lines.push(("content type", content_type.clone()));
    }
    for (name, value) in &job.headers {
        lines.push(("header", format!("{name}={value}")));
    }
    lines.push(("created", format_time(job.created_at_ms, now_ms)));
    if let Some(at) = job.available_at_ms {
        lines.push(("available at", format_time(at, now_ms)));
    }
    if let Some(at) = job.started_at_ms {
        lines.push(("started", format_time(at, now_ms)));
    }
    if let Some(at) = job.finished_at_ms {
        lines.push(("finished", format_time(at, now_ms)));
    }
    if let Some(worker) = &job.worker_id {
        let worker = if worker.is_empty() { "(unnamed)" } else { worker };
        lines.push(("worker", format!("{worker}, holding the lease")));
    }
    if job.from_history {
        lines.push((
            "source",
            "rebuilt from its history in the log (it has left the server's memory)".into(),
        ));
    }
    if let Some(at) = job.purged_at_ms {
        lines.push(("purged", format_time(at, now_ms)));
    }
    if job.cancel_requested {
        lines.push((
            "cancel",
            "requested: the worker is told to stop on its next heartbeat".into(),
        ));
    }
    if let Some(progress) = &job.progress {
        lines.push(("progress", shorten(progress)));
    }
    lines.push(("payload", bytes_text(&job.payload)));
    if let Some(result) = &job.result {
        lines.push(("result", bytes_text(result)));
    }
    let mut out: String = lines
        .iter()
        .map(|(label, value)| format!("{label:<13} {value}\n"))
        .collect();
    if job.errors.is_empty() {
        out.push_str("errors        none\n");
    } else {
        out.push_str("errors        (failed attempts, oldest first)\n");
        for error in &job.errors {
            out.push_str(&format!(
                "  attempt {:<3} {}  {}\n",
                error.attempt,
                format_timestamp_ms(error.failed_at_ms),
                shorten(&error.error)
            ));
        }
    }
    out.push_str(&stages_text(job, now_ms));
    out
}

/// Where the job spent its time: the delay before it was first available,
/// then per attempt the queue wait, the run and the backoff after it, and
/// the total from enqueue to its end.
pub fn stages_text(job: &JobInfo, now_ms: i64) -> String {
    let age = |ms: i64| format_age_ms(ms.max(0) as u64);
    let mut summary = Vec::new();
    match job.initial_delay() {
        Some(delay) if delay.is_zero() => summary.push("available at enqueue".to_owned()),
        Some(delay) => summary.push(format!("delayed {} at enqueue", format_age_ms(millis(delay)))),
        None => {}
    }
    match job.total() {
        Some(total) => summary.push(format!(
            "total {}, enqueued to {}",
            format_age_ms(millis(total)),
            job.state
        )),
        None => summary.push(format!(
            "{} since enqueued, not finished",
            age(now_ms - job.created_at_ms)
        )),
    }
    if let Some(first) = job.attempts.first()
        && first.attempt > 1
    {
        summary.push(format!(
            "attempts before {} are not kept (`spool job history` has them)",
            first.attempt
        ));
    }
    let mut out = format!("stages        {}\n", summary.join("; "));
    if job.attempts.is_empty() {
        out.push_str("  no attempt yet\n");
    }
    for (index, attempt) in job.attempts.iter().enumerate() {
        let run = match attempt.run_time() {
            Some(run) => format_age_ms(millis(run)),
            None => format!("{} so far", age(now_ms - attempt.claimed_at_ms)),
        };
        let backoff = job
            .backoff_after(index)
            .map(|backoff| format!("  then backoff {}", format_age_ms(millis(backoff))))
            .unwrap_or_default();
        out.push_str(&format!(
            "  attempt {:<3} wait {:<9} run {:<14} {}{}\n",
            attempt.attempt,
            format_age_ms(millis(attempt.queue_wait())),
            run,
            attempt.outcome,
            backoff
        ));
    }
    out
}

pub fn event_json(event: &JobEvent) -> Value {
    json!({
        "time_ms": event.time_ms,
        "kind": event.kind.as_str(),
        "attempt": event.attempt,
        "worker_id": event.worker_id,
        "lease_ms": event.lease.map(millis),
        "delay_ms": event.delay.map(millis),
        "error": event.error,
        "progress": event.progress,
        "detail": event.detail,
    })
}

pub fn event_row(event: &JobEvent) -> Vec<String> {
    let dash = || "-".to_owned();
    let mut detail = Vec::new();
    if let Some(error) = &event.error {
        detail.push(format!("error: {}", shorten(error)));
    }
    if let Some(progress) = &event.progress {
        detail.push(format!("progress: {}", shorten(progress)));
    }
    if !event.detail.is_empty() {
        detail.push(event.detail.clone());
    }
    vec![
        format_timestamp_ms(event.time_ms),
        event.kind.to_string(),
        if event.attempt == 0 {
            dash()
        } else {
            event.attempt.to_string()
        },
        event
            .worker_id
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(dash),
        event
            .lease
            .map_or_else(dash, |lease| format_age_ms(millis(lease))),
        event
            .delay
            .map_or_else(dash, |delay| format_age_ms(millis(delay))),
        detail.join("; "),
    ]
}

/// Whole milliseconds, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A time as RFC 3339 with how long ago (or ahead) it is.
pub fn format_time(at_ms: i64, now_ms: i64) -> String {
    let text = format_timestamp_ms(at_ms);
    let delta = now_ms - at_ms;
    if delta >= 0 {
        format!("{text} ({} ago)", format_age_ms(delta as u64))
    } else {
        format!("{text} (in {})", format_age_ms(delta.unsigned_abs()))
    }
}

/// Bytes as text when they are UTF-8, shortened; otherwise their size.
fn bytes_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok("") => "(empty)".into(),
        Ok(text) => shorten(text),
        Err(_) => format!(
            "({} bytes, not UTF-8; --format json shows them in base64)",
            bytes.len()
        ),
    }
}

/// One line of at most `TEXT_CHARS_SHOWN_MAX` characters: line breaks
/// escaped, the rest cut with a note.
pub fn shorten(text: &str) -> String {
    let one_line = text.replace('\r', "").replace('\n', "\\n");
    let chars = one_line.chars().count();
    if chars <= TEXT_CHARS_SHOWN_MAX {
        return one_line;
    }
    let kept: String = one_line.chars().take(TEXT_CHARS_SHOWN_MAX).collect();
    format!("{kept}... ({chars} characters; --format json shows all)")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use spool_client::jobs::{AttemptError, AttemptOutcome, JobAttempt, JobEventKind, JobState};

    use super::*;

    fn dead_job() -> JobInfo {
        JobInfo {
            id: "42".into(),
            queue: "emails".into(),
            state: JobState::Dead,
            payload: Bytes::from_static(b"{\"to\":\"a@example.com\"}"),
            content_type: None,
            headers: [("traceparent".to_owned(), "00-1-2-01".to_owned())].into(),
            priority: 0,
            attempt: 2,
            attempts_max: 2,
            timeout: None,
            idempotency_key: None,
            created_at_ms: 1_000,
            available_at_ms: None,
            started_at_ms: None,
            finished_at_ms: Some(5_000),
            errors: vec![
                AttemptError {
                    attempt: 1,
                    error: "smtp: connection refused".into(),
                    failed_at_ms: 2_000,
                },
                AttemptError {
                    attempt: 2,
                    error: "line 1\nline 2".into(),
                    failed_at_ms: 5_000,
                },
            ],
            result: None,
            progress: None,
            cancel_requested: false,
            worker_id: None,
            from_history: true,
            purged_at_ms: Some(6_000),
            attempts: vec![
                JobAttempt {
                    attempt: 1,
                    available_at_ms: 1_000,
                    claimed_at_ms: 1_012,
                    finished_at_ms: Some(2_000),
                    outcome: AttemptOutcome::Failed,
                },
                JobAttempt {
                    attempt: 2,
                    available_at_ms: 3_500,
                    claimed_at_ms: 3_500,
                    finished_at_ms: Some(5_000),
                    outcome: AttemptOutcome::LeaseExpired,
                },
            ],
        }
    }

    #[test]
    fn a_job_reads_as_text() {
        let text = job_text(&dead_job(), 65_000);
        assert!(
            text.contains("source        rebuilt from its history in the log"),
            "{text}"
        );
        assert!(text.contains("purged        "), "{text}");
        assert!(text.contains("state         dead\n"), "{text}");
        assert!(text.contains("attempt       2 (attempts_max 2"), "{text}");
        assert!(
            text.contains("finished      1970-01-01T00:00:05.000Z (1m0s ago)"),
            "{text}"
        );
        assert!(text.contains("header        traceparent=00-1-2-01"), "{text}");
        assert!(
            text.contains("payload       {\"to\":\"a@example.com\"}"),
            "{text}"
        );
        assert!(
            text.contains("  attempt 2   1970-01-01T00:00:05.000Z  line 1\\nline 2"),
            "{text}"
        );
    }

    #[test]
    fn stages_read_per_attempt() {
        let text = stages_text(&dead_job(), 65_000);
        assert_eq!(
            text,
            "stages        available at enqueue; total 4s, enqueued to dead\n  \
             attempt 1   wait 12ms      run 988ms          failed  then backoff 1.5s\n  \
             attempt 2   wait 0ms       run 1.5s           lease_expired\n"
        );
        // A running job that waited at enqueue; its early attempts are no
        // longer kept.
        let running = JobInfo {
            state: JobState::Running,
            finished_at_ms: None,
            attempts: vec![JobAttempt {
                attempt: 22,
                available_at_ms: 10_000,
                claimed_at_ms: 10_000,
                finished_at_ms: None,
                outcome: AttemptOutcome::Running,
            }],
            ..dead_job()
        };
        let text = stages_text(&running, 12_500);
        assert!(
            text.starts_with("stages        11.5s since enqueued, not finished; attempts before 22"),
            "{text}"
        );
        assert!(text.contains("run 2.5s so far    running\n"), "{text}");
        let waiting = JobInfo {
            state: JobState::Scheduled,
            available_at_ms: Some(61_000),
            finished_at_ms: None,
            attempts: vec![],
            ..dead_job()
        };
        let text = stages_text(&waiting, 2_000);
        assert!(
            text.starts_with("stages        delayed 1m0s at enqueue; 1s since enqueued"),
            "{text}"
        );
        assert!(text.ends_with("  no attempt yet\n"), "{text}");
    }

    #[test]
    fn a_job_reads_as_json() {
        let value = job_json(&dead_job());
        assert_eq!(value["attempts"][0]["queue_wait_ms"], json!(12));
        assert_eq!(value["attempts"][0]["run_ms"], json!(988));
        assert_eq!(value["attempts"][0]["backoff_after_ms"], json!(1_500));
        assert_eq!(value["attempts"][1]["outcome"], json!("lease_expired"));
        assert_eq!(value["attempts"][1]["backoff_after_ms"], Value::Null);
        assert_eq!(value["stages"]["total_ms"], json!(4_000));
        assert_eq!(value["stages"]["initial_delay_ms"], json!(0));
        assert_eq!(value["state"], json!("dead"));
        assert_eq!(value["errors"][1]["attempt"], json!(2));
        assert_eq!(value["payload"], json!("{\"to\":\"a@example.com\"}"));
        assert_eq!(value["result"], Value::Null);
        assert!(!value.to_string().contains('\n'));
    }

    #[test]
    fn long_and_binary_text_is_shortened() {
        let long = "x".repeat(1000);
        assert!(shorten(&long).ends_with("(1000 characters; --format json shows all)"));
        assert_eq!(bytes_text(&[0xff, 0xfe]).chars().next(), Some('('));
        assert_eq!(bytes_text(b""), "(empty)");
        assert_eq!(JobEventKind::RetryScheduled.as_str(), "retry_scheduled");
    }
}
