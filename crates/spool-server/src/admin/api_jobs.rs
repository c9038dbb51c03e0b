//! The dashboard's JSON API over the job layer: queues with their counts,
//! rates and latencies, job listings, a job with its timeline from the
//! log, search, dead letters grouped by error fingerprint, and the actions
//! on them (retry, purge, each with a dry run) and on a job (cancel). Every
//! read and change is a call of `spool.v1.Jobs`' own methods
//! ([`JobsService`]), so validation and limits are those of gRPC; actions
//! that change state are recorded in the audit trail.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use spool_jobs::fingerprint;
use spool_metrics::http::Response;
use spool_proto::v1::{self, jobs_server::Jobs};
use tonic::Request;

use super::json::{error, now_ms, ok, refused};
use super::{Admin, Asked};
use crate::jobs_service::JobsService;

/// Dead jobs read per queue to group them; the answer says when a queue
/// held more.
const DEAD_SCANNED_MAX: usize = 10_000;
/// Job ids listed with each dead-letter group.
const GROUP_IDS_MAX: usize = 20;
/// Bulk calls one retry or purge of a group makes at most (each acts on
/// up to 1,000 jobs, `DEAD_JOBS_PER_CALL_MAX`).
const BULK_CALLS_MAX: usize = 100;
/// Most job ids one retry or purge of a selection names.
const SELECTION_MAX: usize = 1_000;
/// Events of a job's timeline shown at most.
const TIMELINE_EVENTS_MAX: u32 = 10_000;

fn state_name(state: i32) -> &'static str {
    match v1::JobState::try_from(state) {
        Ok(v1::JobState::Scheduled) => "scheduled",
        Ok(v1::JobState::Available) => "available",
        Ok(v1::JobState::Running) => "running",
        Ok(v1::JobState::Succeeded) => "succeeded",
        Ok(v1::JobState::Dead) => "dead",
        Ok(v1::JobState::Cancelled) => "cancelled",
        _ => "unspecified",
    }
}

fn state_from_name(name: &str) -> Result<v1::JobState, String> {
    Ok(match name {
        "scheduled" => v1::JobState::Scheduled,
        "available" => v1::JobState::Available,
        "running" => v1::JobState::Running,
        "succeeded" => v1::JobState::Succeeded,
        "dead" => v1::JobState::Dead,
        "cancelled" => v1::JobState::Cancelled,
        "" | "any" => v1::JobState::Unspecified,
        other => {
            return Err(format!(
                "parameter state: {other:?} is not scheduled, available, running, succeeded, dead, cancelled or any"
            ));
        }
    })
}

fn outcome_name(outcome: i32) -> &'static str {
    match v1::AttemptOutcome::try_from(outcome) {
        Ok(v1::AttemptOutcome::Running) => "running",
        Ok(v1::AttemptOutcome::Succeeded) => "succeeded",
        Ok(v1::AttemptOutcome::Failed) => "failed",
        Ok(v1::AttemptOutcome::LeaseExpired) => "lease_expired",
        Ok(v1::AttemptOutcome::Released) => "released",
        Ok(v1::AttemptOutcome::Cancelled) => "cancelled",
        _ => "unspecified",
    }
}

fn event_kind_name(kind: i32) -> String {
    v1::JobEventKind::try_from(kind)
        .map(|kind| {
            kind.as_str_name()
                .trim_start_matches("JOB_EVENT_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// The trace id in a W3C `traceparent` header (`00-TRACEID-SPANID-FLAGS`).
fn trace_id(headers: &std::collections::HashMap<String, String>) -> Option<String> {
    let parent = headers.get("traceparent")?;
    let id = parent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

fn percentiles(p: Option<&v1::LatencyPercentiles>) -> Value {
    match p {
        Some(p) => json!({ "count": p.count, "p50_ms": p.p50_ms, "p99_ms": p.p99_ms, "max_ms": p.max_ms }),
        None => Value::Null,
    }
}

/// A job as the dashboard shows it; payload and result only when the
/// listing carried them.
fn job_json(job: &v1::Job) -> Value {
    let headers: BTreeMap<&String, &String> = job.headers.iter().collect();
    let attempts: Vec<Value> = job
        .attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "available_at_ms": a.available_at_ms,
                "claimed_at_ms": a.claimed_at_ms,
                "finished_at_ms": a.finished_at_ms,
                "outcome": outcome_name(a.outcome),
                "queue_wait_ms": a.claimed_at_ms - a.available_at_ms,
                "run_ms": a.finished_at_ms.map(|end| end - a.claimed_at_ms),
            })
        })
        .collect();
    let errors: Vec<Value> = job
        .errors
        .iter()
        .map(|e| json!({ "attempt": e.attempt, "error": e.error, "failed_at_ms": e.failed_at_ms }))
        .collect();
    let payload = super::api_log::render_auto(&job.payload);
    let result = job.result.as_deref().map(super::api_log::render_auto);
    json!({
        "id": job.job_id,
        "queue": job.queue,
        "state": state_name(job.state),
        "payload": payload.0,
        "payload_format": payload.1,
        "payload_bytes": job.payload.len(),
        "content_type": job.content_type,
        "headers": headers,
        "trace_id": trace_id(&job.headers),
        "priority": job.priority,
        "attempt": job.attempt,
        "attempts_max": job.attempts_max,
        "timeout_ms": job.timeout_ms,
        "idempotency_key": job.idempotency_key,
        "created_at_ms": job.created_at_ms,
        "available_at_ms": job.available_at_ms,
        "started_at_ms": job.started_at_ms,
        "finished_at_ms": job.finished_at_ms,
        "last_error": job.errors.last().map(|e| &e.error),
        "errors": errors,
        "attempts": attempts,
        "result": result.as_ref().map(|(text, _)| text),
        "progress": job.progress,
        "cancel_requested": job.cancel_requested,
        "worker_id": job.worker_id,
        "from_history": job.from_history,
        "purged_at_ms": job.purged_at_ms,
    })
}

/// `GET /api/v1/queues`: every queue with counts, rates and latencies.
pub(super) async fn queues(admin: &Admin) -> Response {
    let service = match admin.jobs() {
        Ok(service) => service.clone(),
        Err(answer) => return answer,
    };
    let listed = service.list_queues(Request::new(v1::ListQueuesRequest {})).await;
    let names: Vec<String> = match listed {
        Ok(answer) => answer.into_inner().queues.into_iter().map(|q| q.queue).collect(),
        Err(status) => return refused(&status),
    };
    // Asked all at once: the job thread answers the lot in one turn.
    let mut asking = tokio::task::JoinSet::new();
    for (index, queue) in names.iter().enumerate() {
        let service = service.clone();
        let queue = queue.clone();
        asking.spawn(async move {
            let stats = service
                .queue_stats(Request::new(v1::QueueStatsRequest { queue }))
                .await;
            (index, stats)
        });
    }
    let mut answers: Vec<Option<v1::QueueStatsResponse>> = vec![None; names.len()];
    while let Some(joined) = asking.join_next().await {
        match joined {
            Ok((index, Ok(stats))) => answers[index] = Some(stats.into_inner()),
            Ok((_, Err(status))) => return refused(&status),
            Err(failure) => return error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
        }
    }
    let queues: Vec<Value> = answers.iter().flatten().map(queue_json).collect();
    ok(&json!({ "time_ms": now_ms(), "queues": queues }))
}

fn queue_json(s: &v1::QueueStatsResponse) -> Value {
    json!({
        "queue": s.queue,
        "counts": {
            "scheduled": s.scheduled_count,
            "available": s.available_count,
            "running": s.running_count,
            "succeeded": s.succeeded_count,
            "dead": s.dead_count,
            "cancelled": s.cancelled_count,
        },
        "oldest_available_age_ms": s.oldest_available_age_ms,
        "rate_window_ms": s.rate_window_ms,
        "enqueued_per_second": s.enqueued_per_second,
        "completed_per_second": s.completed_per_second,
        "failed_per_second": s.failed_per_second,
        "queue_wait_last_minute": percentiles(s.queue_wait_last_minute.as_ref()),
        "queue_wait_last_hour": percentiles(s.queue_wait_last_hour.as_ref()),
        "run_time_last_minute": percentiles(s.run_time_last_minute.as_ref()),
        "run_time_last_hour": percentiles(s.run_time_last_hour.as_ref()),
        "paused": s.paused,
        "limits": {
            "concurrency_limit": s.config.as_ref().and_then(|c| c.concurrency_limit),
            "rate_limit": s.config.as_ref().and_then(|c| c.rate_limit.as_ref()).map(|r| json!({
                "jobs": r.jobs,
                "per_ms": r.per_ms,
            })),
            "rate_window_claims": s.rate_window_claims,
        },
        "leases_held": s.running_count,
        "workers_connected": s.workers_connected,
        "totals": {
            "enqueued": s.enqueued_total,
            "claimed": s.claimed_total,
            "completed": s.completed_total,
            "failed": s.failed_total,
            "dead": s.dead_total,
            "redriven": s.redriven_total,
        },
    })
}

/// `POST /api/v1/queues/{queue}/pause` and `/resume`: PauseQueue or
/// ResumeQueue, recorded in the audit trail when it changed the queue.
pub(super) async fn pause(admin: &Admin, asked: &Asked, paused: bool) -> Response {
    let service = match admin.jobs() {
        Ok(service) => service,
        Err(answer) => return answer,
    };
    let queue = asked.values[0].clone();
    let changed = if paused {
        service
            .pause_queue(Request::new(v1::PauseQueueRequest { queue: queue.clone() }))
            .await
            .map(|answer| answer.into_inner().changed)
    } else {
        service
            .resume_queue(Request::new(v1::ResumeQueueRequest { queue: queue.clone() }))
            .await
            .map(|answer| answer.into_inner().changed)
    };
    let changed = match changed {
        Ok(changed) => changed,
        Err(status) => return refused(&status),
    };
    let action = if paused { "pause_queue" } else { "resume_queue" };
    if changed
        && let Err(answer) = admin
            .record(&asked.who, action, json!({ "queue": queue }), 1)
            .await
    {
        return answer;
    }
    ok(&json!({ "queue": queue, "paused": paused, "changed": changed }))
}

/// `GET /api/v1/jobs?queue=Q&state=S&page_token=T&limit=N`.
pub(super) async fn jobs(admin: &Admin, asked: &Asked) -> Response {
    let service = match admin.jobs() {
        Ok(service) => service,
        Err(answer) => return answer,
    };
    let params = &asked.params;
    let state = match state_from_name(params.get("state").unwrap_or("")) {
        Ok(state) => state,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let limit = match params.number::<u32>("limit") {
        Ok(limit) => limit.unwrap_or(50),
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let listed = service
        .list_jobs(Request::new(v1::ListJobsRequest {
            queue: params.get("queue").unwrap_or_default().to_owned(),
            state: state as i32,
            page_token: params.get("page_token").unwrap_or_default().to_owned(),
            limit,
            include_payload: false,
        }))
        .await;
    match listed {
        Ok(answer) => {
            let answer = answer.into_inner();
            let jobs: Vec<Value> = answer.jobs.iter().map(job_json).collect();
            ok(&json!({ "jobs": jobs, "next_page_token": answer.next_page_token }))
        }
        Err(status) => refused(&status),
    }
}

/// `GET /api/v1/jobs/{id}`: the job with payload and result, and its
/// timeline: every event from the log with its offset.
pub(super) async fn job(admin: &Admin, asked: &Asked) -> Response {
    let service = match admin.jobs() {
        Ok(service) => service,
        Err(answer) => return answer,
    };
    let job_id = asked.values[0].clone();
    let job = match service
        .get_job(Request::new(v1::GetJobRequest {
            job_id: job_id.clone(),
        }))
        .await
    {
        Ok(answer) => answer.into_inner().job.unwrap_or_default(),
        Err(status) => return refused(&status),
    };
    let history = service
        .history(Request::new(v1::HistoryRequest {
            job_id,
            page_token: String::new(),
            limit: TIMELINE_EVENTS_MAX,
        }))
        .await;
    let history = match history {
        Ok(answer) => answer.into_inner(),
        Err(status) => return refused(&status),
    };
    let timeline: Vec<Value> = history
        .events
        .iter()
        .map(|event| {
            json!({
                "time_ms": event.time_ms,
                "offset_ms": event.time_ms - job.created_at_ms,
                "kind": event_kind_name(event.kind),
                "attempt": event.attempt,
                "worker_id": event.worker_id,
                "error": event.error,
                "progress": event.progress,
                "lease_ms": event.lease_ms,
                "delay_ms": event.delay_ms,
                "detail": event.detail,
                "topic": spool_jobs::runtime::TOPIC,
                "partition": 0,
                "offset": event.offset,
            })
        })
        .collect();
    ok(&json!({
        "job": job_json(&job),
        "timeline": timeline,
        "timeline_truncated": !history.next_page_token.is_empty(),
    }))
}

/// `POST /api/v1/jobs/{id}/cancel`.
pub(super) async fn cancel(admin: &Admin, asked: &Asked) -> Response {
    let service = match admin.jobs() {
        Ok(service) => service,
        Err(answer) => return answer,
    };
    let job_id = asked.values[0].clone();
    let cancelled = service
        .cancel(Request::new(v1::CancelRequest {
            job_id: job_id.clone(),
        }))
        .await;
    let answer = match cancelled {
        Ok(answer) => answer.into_inner(),
        Err(status) => return refused(&status),
    };
    if let Err(answer) = admin
        .record(&asked.who, "cancel", json!({ "job_id": job_id }), 1)
        .await
    {
        return answer;
    }
    ok(&json!({
        "state": state_name(answer.state),
        "cancel_requested": answer.cancel_requested,
    }))
}

/// `GET /api/v1/search?q=TEXT&field=any|id|key|payload|header|error&queue=Q&limit=N`.
pub(super) async fn search(admin: &Admin, asked: &Asked) -> Response {
    let service = match admin.jobs() {
        Ok(service) => service,
        Err(answer) => return answer,
    };
    let params = &asked.params;
    let field = match params.get("field").unwrap_or("any") {
        "any" => v1::SearchField::Unspecified,
        "id" => v1::SearchField::Id,
        "key" => v1::SearchField::IdempotencyKey,
        "payload" => v1::SearchField::Payload,
        "header" => v1::SearchField::Header,
        "error" => v1::SearchField::Error,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("parameter field: {other:?} is not any, id, key, payload, header or error"),
            );
        }
    };
    let limit = match params.number::<u32>("limit") {
        Ok(limit) => limit.unwrap_or(50),
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let started = std::time::Instant::now();
    let found = service
        .search_jobs(Request::new(v1::SearchJobsRequest {
            query: params.get("q").unwrap_or_default().to_owned(),
            field: field as i32,
            queue: params.get("queue").unwrap_or_default().to_owned(),
            limit,
        }))
        .await;
    match found {
        Ok(answer) => {
            let answer = answer.into_inner();
            let jobs: Vec<Value> = answer.jobs.iter().map(job_json).collect();
            ok(&json!({
                "jobs": jobs,
                "more": answer.more,
                "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
            }))
        }
        Err(status) => refused(&status),
    }
}

/// Every dead job of `queue` (up to `DEAD_SCANNED_MAX`) and whether there
/// were more.
async fn dead_jobs(service: &JobsService, queue: &str) -> Result<(Vec<v1::Job>, bool), tonic::Status> {
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = service
            .list_jobs(Request::new(v1::ListJobsRequest {
                queue: queue.to_owned(),
                state: v1::JobState::Dead as i32,
                page_token,
                limit: 1_000,
                include_payload: false,
            }))
            .await?
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return Ok((jobs, false));
        }
        if jobs.len() >= DEAD_SCANNED_MAX {
            return Ok((jobs, true));
        }
        page_token = page.next_page_token;
    }
}

/// `GET /api/v1/dead[?queue=Q]`: dead jobs grouped by queue and the
/// fingerprint of their last error, largest group first.
pub(super) async fn dead(admin: &Admin, asked: &Asked) -> Response {
    let service = match admin.jobs() {
        Ok(service) => service,
        Err(answer) => return answer,
    };
    let queues: Vec<String> = match asked.params.get("queue") {
        Some(queue) => vec![queue.to_owned()],
        None => match service.list_queues(Request::new(v1::ListQueuesRequest {})).await {
            Ok(answer) => answer
                .into_inner()
                .queues
                .into_iter()
                .filter(|q| q.dead_count > 0)
                .map(|q| q.queue)
                .collect(),
            Err(status) => return refused(&status),
        },
    };
    let mut groups: Vec<Value> = Vec::new();
    let mut truncated = Vec::new();
    for queue in &queues {
        let (jobs, more) = match dead_jobs(service, queue).await {
            Ok(found) => found,
            Err(status) => return refused(&status),
        };
        if more {
            truncated.push(queue.clone());
        }
        let mut by_fingerprint: BTreeMap<String, Vec<&v1::Job>> = BTreeMap::new();
        for job in &jobs {
            let last = job.errors.last().map_or("", |e| e.error.as_str());
            by_fingerprint.entry(fingerprint(last)).or_default().push(job);
        }
        for (print, members) in by_fingerprint {
            let newest = members.iter().filter_map(|j| j.finished_at_ms).max();
            let oldest = members.iter().filter_map(|j| j.finished_at_ms).min();
            let example = members
                .last()
                .and_then(|j| j.errors.last())
                .map(|e| e.error.clone());
            groups.push(json!({
                "queue": queue,
                "fingerprint": print,
                "count": members.len(),
                "example_error": example,
                "newest_dead_at_ms": newest,
                "oldest_dead_at_ms": oldest,
                "job_ids": members.iter().rev().take(GROUP_IDS_MAX).map(|j| &j.job_id).collect::<Vec<_>>(),
            }));
        }
    }
    groups.sort_by(|a, b| b["count"].as_u64().cmp(&a["count"].as_u64()));
    ok(&json!({ "groups": groups, "truncated_queues": truncated }))
}

/// What to do with dead jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeadAction {
    Retry,
    Purge,
}

/// The body of a retry or purge: a group (queue and fingerprint) or a
/// selection (job ids).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadTarget {
    queue: Option<String>,
    /// Fingerprint of the group's errors; absent or empty means every dead
    /// job of the queue.
    fingerprint: Option<String>,
    job_ids: Option<Vec<String>>,
    #[serde(default)]
    dry_run: bool,
}

async fn dead_call(
    service: &JobsService,
    action: DeadAction,
    target: DeadCallTarget,
    dry_run: bool,
) -> Result<u64, tonic::Status> {
    match action {
        DeadAction::Retry => {
            let target = match target {
                DeadCallTarget::Job(id) => v1::retry_dead_request::Target::JobId(id),
                DeadCallTarget::Filter(filter) => v1::retry_dead_request::Target::Filter(filter),
            };
            let request = v1::RetryDeadRequest {
                target: Some(target),
                dry_run,
            };
            Ok(service
                .retry_dead(Request::new(request))
                .await?
                .into_inner()
                .retried_count)
        }
        DeadAction::Purge => {
            let target = match target {
                DeadCallTarget::Job(id) => v1::purge_dead_request::Target::JobId(id),
                DeadCallTarget::Filter(filter) => v1::purge_dead_request::Target::Filter(filter),
            };
            let request = v1::PurgeDeadRequest {
                target: Some(target),
                dry_run,
            };
            Ok(service
                .purge_dead(Request::new(request))
                .await?
                .into_inner()
                .purged_count)
        }
    }
}

enum DeadCallTarget {
    Job(String),
    Filter(v1::DeadJobFilter),
}

/// `POST /api/v1/dead/retry` and `/api/v1/dead/purge`: acts on a group or
/// a selection, or with `dry_run` counts what it would act on. Every call
/// that changes jobs is recorded in the audit trail.
pub(super) async fn act_on_dead(admin: &Admin, asked: &Asked, action: DeadAction) -> Response {
    let service = match admin.jobs() {
        Ok(service) => service,
        Err(answer) => return answer,
    };
    let target: DeadTarget = match serde_json::from_slice(&asked.body) {
        Ok(target) => target,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &format!("bad body: {reason}")),
    };
    let mut count = 0u64;
    match (&target.job_ids, &target.queue) {
        (Some(ids), _) => {
            if ids.is_empty() || ids.len() > SELECTION_MAX {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("job_ids names 1 to {SELECTION_MAX} jobs"),
                );
            }
            for id in ids {
                match dead_call(service, action, DeadCallTarget::Job(id.clone()), target.dry_run).await {
                    Ok(n) => count += n,
                    Err(status) => return refused(&status),
                }
            }
        }
        (None, Some(queue)) => {
            let filter = v1::DeadJobFilter {
                queue: queue.clone(),
                error_fingerprint: target.fingerprint.clone().unwrap_or_default(),
                limit: spool_jobs::core::DEAD_JOBS_PER_CALL_MAX as u32,
                ..Default::default()
            };
            // A dry run counts at most one call's worth; a real one calls
            // until a call finds fewer than its limit.
            for _ in 0..BULK_CALLS_MAX {
                let done = dead_call(
                    service,
                    action,
                    DeadCallTarget::Filter(filter.clone()),
                    target.dry_run,
                )
                .await;
                match done {
                    Ok(n) => {
                        count += n;
                        if target.dry_run || n < u64::from(filter.limit) {
                            break;
                        }
                    }
                    Err(status) => return refused(&status),
                }
            }
        }
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "name a group (`queue` and `fingerprint`) or a selection (`job_ids`)",
            );
        }
    }
    let name = match action {
        DeadAction::Retry => "retry_dead",
        DeadAction::Purge => "purge_dead",
    };
    if !target.dry_run {
        let recorded = json!({
            "queue": target.queue,
            "fingerprint": target.fingerprint,
            "job_ids": target.job_ids,
        });
        if let Err(answer) = admin.record(&asked.who, name, recorded, count).await {
            return answer;
        }
    }
    ok(&json!({ "action": name, "dry_run": target.dry_run, "count": count }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let mut headers = std::collections::HashMap::new();
        assert_eq!(trace_id(&headers), None);
        headers.insert(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        assert_eq!(
            trace_id(&headers).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        headers.insert("traceparent".to_owned(), "00-xyz-1-01".to_owned());
        assert_eq!(trace_id(&headers), None);
    }

    #[test]
    fn state_names_round_trip() {
        for state in [
            v1::JobState::Scheduled,
            v1::JobState::Available,
            v1::JobState::Running,
            v1::JobState::Succeeded,
            v1::JobState::Dead,
            v1::JobState::Cancelled,
        ] {
            assert_eq!(state_from_name(state_name(state as i32)), Ok(state));
        }
        assert!(state_from_name("done").unwrap_err().contains("parameter state"));
        assert_eq!(
            event_kind_name(v1::JobEventKind::RetryScheduled as i32),
            "retry_scheduled"
        );
    }
}
