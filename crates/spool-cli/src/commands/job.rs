//! `spool job enqueue|get|history|list|retry|purge|cancel`, through the
//! generated `spool.v1.Jobs` client; `job_view.rs` renders what they get.

use std::io::IsTerminal;

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;
use spool_client::proto::{self as v1, enqueue_request::Schedule};
use tokio::io::AsyncReadExt;

use crate::args::jobs::{DeadArgs, EnqueueArgs, JobCommand, ListArgs, OutputFormat, StateArg};
use crate::commands::job_view::{
    event_json, event_row, format_time, job_json, job_text, shorten, state_name,
};
use crate::commands::queue::fetch_stats;
use crate::output::{errln, out, outln};
use crate::table::Table;
use crate::units::group_thousands;
use crate::{Context, Explain};

/// Jobs asked for per ListJobs page, and per RetryDead or PurgeDead call.
const PAGE_JOBS_MAX: u64 = 1_000;

pub async fn run(context: &Context, command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Enqueue(args) => enqueue(context, args).await,
        JobCommand::Get { id, format } => get(context, id, format).await,
        JobCommand::History { id, format } => history(context, id, format).await,
        JobCommand::List(args) => list(context, args).await,
        JobCommand::Retry(args) => dead(context, args, DeadAction::Retry).await,
        JobCommand::Purge(args) => dead(context, args, DeadAction::Purge).await,
        JobCommand::Cancel { id } => cancel(context, id).await,
    }
}

/// The message of a generated client's answer, or its status as a
/// `spool_client::Error`.
pub fn answer<T>(result: Result<tonic::Response<T>, tonic::Status>) -> spool_client::Result<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(spool_client::Error::from)
}

async fn enqueue(context: &Context, args: EnqueueArgs) -> anyhow::Result<()> {
    let payload = match args.payload.as_deref() {
        Some("-") | None => read_stdin().await?,
        Some(text) => Bytes::from(text.to_owned()),
    };
    let schedule = match (args.delay, args.at) {
        (Some(delay_ms), _) => Some(Schedule::DelayMs(delay_ms)),
        (None, Some(at_ms)) => Some(Schedule::NotBeforeMs(at_ms)),
        (None, None) => None,
    };
    let request = v1::EnqueueRequest {
        queue: args.queue.clone(),
        payload,
        content_type: args.content_type.unwrap_or_default(),
        headers: args.headers.into_iter().collect(),
        priority: args.priority.unwrap_or(0),
        attempts_max: args.attempts,
        timeout_ms: args.timeout,
        schedule,
        idempotency_key: args.key.clone(),
    };
    let payload_bytes = request.payload.len();
    let response = match answer(context.client.jobs_client().enqueue(request).await) {
        Err(spool_client::Error::InvalidArgument { status })
            if status.message().contains("payload_bytes_max") =>
        {
            anyhow::bail!(
                "the payload is {payload_bytes} bytes, more than the server accepts ({}); store large inputs \
                 elsewhere and enqueue a reference to them",
                status.message()
            )
        }
        other => other.explain(context.subject())?,
    };
    // A deduplicated job that already left memory has no state to report.
    let state = (response.state() != v1::JobState::Unspecified).then(|| state_name(response.state()));
    match args.format {
        OutputFormat::Json => outln!(
            "{}",
            json!({"job_id": response.job_id, "deduplicated": response.deduplicated, "state": state})
        )?,
        OutputFormat::Human => {
            outln!("{}", response.job_id)?;
            if response.deduplicated {
                errln!(
                    "deduplicated: key {:?} already enqueued job {} to '{}' within the dedup window; \
                     nothing new was enqueued (the job is {})",
                    args.key.unwrap_or_default(),
                    response.job_id,
                    args.queue,
                    state.unwrap_or("finished and gone from memory"),
                );
            }
        }
    }
    Ok(())
}

async fn read_stdin() -> anyhow::Result<Bytes> {
    if std::io::stdin().is_terminal() {
        errln!("reading the payload from stdin (end it with Ctrl-D; or give it as an argument)");
    }
    let mut payload = Vec::new();
    tokio::io::stdin()
        .read_to_end(&mut payload)
        .await
        .context("reading the payload from stdin")?;
    Ok(Bytes::from(payload))
}

async fn get(context: &Context, id: u64, format: OutputFormat) -> anyhow::Result<()> {
    let id_text = id.to_string();
    let request = v1::GetJobRequest {
        job_id: id_text.clone(),
    };
    let response =
        answer(context.client.jobs_client().get_job(request).await).explain(context.about_job(&id_text))?;
    let job = response
        .job
        .ok_or_else(|| anyhow::anyhow!("the server answered GetJob without a job"))?;
    match format {
        OutputFormat::Json => outln!("{}", job_json(&job))?,
        OutputFormat::Human => out!("{}", job_text(&job, now_ms()))?,
    }
    Ok(())
}

async fn history(context: &Context, id: u64, format: OutputFormat) -> anyhow::Result<()> {
    let id_text = id.to_string();
    let mut client = context.client.jobs_client();
    let mut page_token = String::new();
    let mut table = Table::new(&[
        "TIME", "EVENT", "ATTEMPT>", "WORKER", "LEASE>", "DELAY>", "DETAIL",
    ]);
    loop {
        let request = v1::HistoryRequest {
            job_id: id_text.clone(),
            page_token: page_token.clone(),
            limit: 0,
        };
        let page = match answer(client.history(request).await) {
            Err(spool_client::Error::NotFound { status }) => anyhow::bail!(
                "the log holds no events of job {id}: no job has that id, or the log's retention removed \
                 its events (server said: {})",
                status.message()
            ),
            other => other.explain(context.about_job(&id_text))?,
        };
        for event in &page.events {
            match format {
                OutputFormat::Json => outln!("{}", event_json(event))?,
                OutputFormat::Human => table.row(event_row(event)),
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if format == OutputFormat::Human {
        out!("{}", table.render())?;
    }
    Ok(())
}

async fn list(context: &Context, args: ListArgs) -> anyhow::Result<()> {
    let mut client = context.client.jobs_client();
    let state = args.state.map_or(v1::JobState::Unspecified, state_from_arg);
    let mut page_token = String::new();
    let mut shown = 0u64;
    let mut more = false;
    let now = now_ms();
    let mut table = Table::new(&["ID", "STATE", "ATTEMPT>", "PRIORITY>", "CREATED", "LAST ERROR"]);
    while shown < args.limit && !more {
        // One job more than is left to show tells whether more exist.
        let request = v1::ListJobsRequest {
            queue: args.queue.clone(),
            state: state as i32,
            page_token: page_token.clone(),
            limit: (args.limit - shown + 1).min(PAGE_JOBS_MAX) as u32,
            include_payload: args.format == OutputFormat::Json,
        };
        let page = answer(client.list_jobs(request).await).explain(context.subject())?;
        for job in &page.jobs {
            if shown == args.limit {
                more = true;
                break;
            }
            shown += 1;
            match args.format {
                OutputFormat::Json => outln!("{}", job_json(job))?,
                OutputFormat::Human => table.row(vec![
                    job.job_id.clone(),
                    state_name(job.state()).to_owned(),
                    format!("{}/{}", job.attempt, job.attempts_max),
                    job.priority.to_string(),
                    format_time(job.created_at_ms, now),
                    job.errors.last().map_or_else(String::new, |e| shorten(&e.error)),
                ]),
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let which = args
        .state
        .map_or_else(String::new, |s| format!(" {}", state_name(state_from_arg(s))));
    if shown == 0 {
        errln!(
            "no{which} jobs in queue '{}' (finished jobs leave memory after their retention time)",
            args.queue
        );
    } else if args.format == OutputFormat::Human {
        out!("{}", table.render())?;
    }
    if more {
        errln!(
            "more{which} jobs than the {} shown; raise --limit to see more",
            group_thousands(shown)
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadAction {
    Retry,
    Purge,
}

async fn dead(context: &Context, args: DeadArgs, action: DeadAction) -> anyhow::Result<()> {
    let mut client = context.client.jobs_client();
    if let Some(id) = args.id {
        let id_text = id.to_string();
        let subject = context.about_job(&id_text);
        match action {
            DeadAction::Retry => {
                let request = v1::RetryDeadRequest {
                    target: Some(v1::retry_dead_request::Target::JobId(id_text.clone())),
                };
                answer(client.retry_dead(request).await).explain(subject)?;
                outln!("re-drove job {id}: it is available again with a fresh budget of attempts")?;
            }
            DeadAction::Purge => {
                let request = v1::PurgeDeadRequest {
                    target: Some(v1::purge_dead_request::Target::JobId(id_text.clone())),
                };
                answer(client.purge_dead(request).await).explain(subject)?;
                outln!("purged job {id}; its history stays in the log (`spool job history {id}`)")?;
            }
        }
        return Ok(());
    }
    let queue = args.dead.expect("clap requires an id or --dead");
    let now = now_ms();
    let filter = v1::DeadJobFilter {
        queue: queue.clone(),
        error_contains: args.error_contains.unwrap_or_default(),
        dead_since_ms: args.since.map(|t| t.resolve(now)),
        dead_before_ms: args.before.map(|t| t.resolve(now)),
        limit: 0,
    };
    // Each call acts on at most a page of jobs; acted-on jobs stop being
    // dead, so the next call finds the next ones. The dead count at the
    // start bounds the loop, in case re-driven jobs die again meanwhile.
    let dead_at_start = fetch_stats(context, &queue).await?.dead_count;
    let budget = args.limit.unwrap_or(u64::MAX).min(dead_at_start);
    let mut done = 0u64;
    while done < budget {
        let page = (budget - done).min(PAGE_JOBS_MAX);
        let filter = v1::DeadJobFilter {
            limit: page as u32,
            ..filter.clone()
        };
        let count = match action {
            DeadAction::Retry => {
                let request = v1::RetryDeadRequest {
                    target: Some(v1::retry_dead_request::Target::Filter(filter)),
                };
                answer(client.retry_dead(request).await)
                    .explain(context.subject())?
                    .retried_count
            }
            DeadAction::Purge => {
                let request = v1::PurgeDeadRequest {
                    target: Some(v1::purge_dead_request::Target::Filter(filter)),
                };
                answer(client.purge_dead(request).await)
                    .explain(context.subject())?
                    .purged_count
            }
        };
        done += count;
        if count < page {
            break;
        }
    }
    let count = group_thousands(done);
    match action {
        DeadAction::Retry => outln!("re-drove {count} dead jobs of '{queue}'")?,
        DeadAction::Purge => outln!("purged {count} dead jobs of '{queue}'; their history stays in the log")?,
    }
    Ok(())
}

async fn cancel(context: &Context, id: u64) -> anyhow::Result<()> {
    let id_text = id.to_string();
    let request = v1::CancelRequest {
        job_id: id_text.clone(),
    };
    let response =
        answer(context.client.jobs_client().cancel(request).await).explain(context.about_job(&id_text))?;
    if response.cancel_requested {
        outln!(
            "job {id} is running: cancellation requested; its worker is told to stop on its next \
             heartbeat, and the job then ends cancelled"
        )?;
    } else {
        outln!("cancelled job {id}")?;
    }
    Ok(())
}

fn state_from_arg(state: StateArg) -> v1::JobState {
    match state {
        StateArg::Scheduled => v1::JobState::Scheduled,
        StateArg::Available => v1::JobState::Available,
        StateArg::Running => v1::JobState::Running,
        StateArg::Succeeded => v1::JobState::Succeeded,
        StateArg::Dead => v1::JobState::Dead,
        StateArg::Cancelled => v1::JobState::Cancelled,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
