//! `spool job enqueue|get|history|list|retry|purge|cancel`, through the
//! typed Jobs client of `spool-client`; `job_view.rs` renders what they get.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;
use spool_client::jobs::{CancelOutcome, DeadFilter, JobQuery, JobState, NewJob, Schedule};
use tokio::io::AsyncReadExt;

use crate::args::jobs::{DeadArgs, EnqueueArgs, JobCommand, ListArgs, OutputFormat, StateArg};
use crate::commands::job_view::{event_json, event_row, format_time, job_json, job_text, shorten};
use crate::output::{errln, out, outln};
use crate::table::Table;
use crate::time::now_ms;
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

async fn enqueue(context: &Context, args: EnqueueArgs) -> anyhow::Result<()> {
    let payload = match args.payload.as_deref() {
        Some("-") | None => read_stdin().await?,
        Some(text) => Bytes::from(text.to_owned()),
    };
    let schedule = match (args.delay, args.at) {
        (Some(delay_ms), _) => Some(Schedule::Delay(Duration::from_millis(delay_ms))),
        (None, Some(at_ms)) => Some(Schedule::NotBeforeMs(at_ms)),
        (None, None) => None,
    };
    let payload_bytes = payload.len();
    let job = NewJob {
        queue: args.queue.clone(),
        payload,
        content_type: args.content_type,
        headers: args.headers.into_iter().collect(),
        priority: args.priority.unwrap_or(0),
        attempts_max: args.attempts,
        timeout: args.timeout.map(Duration::from_millis),
        schedule,
        idempotency_key: args.key.clone(),
    };
    let enqueued = match context.client.jobs().enqueue(job).await {
        Err(spool_client::Error::InvalidArgument { status })
            if status.message().contains("payload_bytes_max") =>
        {
            anyhow::bail!(
                "the payload is {payload_bytes} bytes, more than the server accepts ({}); store large inputs \
                 elsewhere and enqueue a reference to them, or raise the server's job_payload_bytes_max \
                 (held to half of its record_bytes_max)",
                status.message()
            )
        }
        other => other.explain(context.subject())?,
    };
    // A deduplicated job that already left memory has no state to report.
    let state = enqueued.state.map(JobState::as_str);
    match args.format {
        OutputFormat::Json => outln!(
            "{}",
            json!({"job_id": enqueued.job_id, "deduplicated": enqueued.deduplicated, "state": state})
        )?,
        OutputFormat::Human => {
            outln!("{}", enqueued.job_id)?;
            if enqueued.deduplicated {
                errln!(
                    "deduplicated: key {:?} already enqueued job {} to '{}' within the dedup window; \
                     nothing new was enqueued (the job is {})",
                    args.key.unwrap_or_default(),
                    enqueued.job_id,
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
    let job = context
        .client
        .jobs()
        .get(&id_text)
        .await
        .explain(context.about_job(&id_text))?;
    match format {
        OutputFormat::Json => outln!("{}", job_json(&job))?,
        OutputFormat::Human => out!("{}", job_text(&job, now_ms()))?,
    }
    Ok(())
}

async fn history(context: &Context, id: u64, format: OutputFormat) -> anyhow::Result<()> {
    let id_text = id.to_string();
    let jobs = context.client.jobs();
    let mut page_token: Option<String> = None;
    let mut table = Table::new(&[
        "TIME", "EVENT", "ATTEMPT>", "WORKER", "LEASE>", "DELAY>", "DETAIL",
    ]);
    loop {
        let page = match jobs.history(&id_text, page_token.as_deref(), 0).await {
            Err(spool_client::Error::NotFound { status }) => anyhow::bail!(
                "the log holds no events of job {id}: no job has that id, or the log's retention removed \
                 its events (server said: {})",
                status.message()
            ),
            other => other.explain(context.about_job(&id_text))?,
        };
        if let Some(before_ms) = page.trimmed_before_ms {
            trimmed_notice(context, &id_text, before_ms, page.items.is_empty(), format).await?;
        }
        for event in &page.items {
            match format {
                OutputFormat::Json => outln!("{}", event_json(event))?,
                OutputFormat::Human => table.row(event_row(event)),
            }
        }
        match page.next_page_token {
            Some(next) => page_token = Some(next),
            None => break,
        }
    }
    if format == OutputFormat::Human && !table.is_empty() {
        out!("{}", table.render())?;
    }
    Ok(())
}

/// Says that a job's history starts late because the retention of
/// `__jobs` deleted its first events, with the job table's view of the job
/// in their place (a JSON line `{"trimmed_before_ms", "job"}` ahead of the
/// events with `--format json`).
async fn trimmed_notice(
    context: &Context,
    id_text: &str,
    before_ms: i64,
    no_events_left: bool,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let job = match context.client.jobs().get(id_text).await {
        Ok(job) => Some(job),
        Err(spool_client::Error::NotFound { .. }) => None,
        other => Some(other.explain(context.about_job(id_text))?),
    };
    if format == OutputFormat::Json {
        outln!(
            "{}",
            json!({"trimmed_before_ms": before_ms, "job": job.as_ref().map(job_json)})
        )?;
        return Ok(());
    }
    let now = now_ms();
    outln!(
        "history before {} was trimmed by the history retention of __jobs (job_history_retention_ms, \
         job_history_retention_bytes)",
        format_time(before_ms, now)
    )?;
    match job {
        Some(job) => {
            outln!("the job table's view of the job:")?;
            out!("{}", job_text(&job, now))?;
        }
        None => outln!("the job is no longer in the job table, so its earlier state is not known")?,
    }
    if no_events_left {
        outln!("no event of the job is left in the log")?;
    } else {
        outln!("events since then:")?;
    }
    Ok(())
}

async fn list(context: &Context, args: ListArgs) -> anyhow::Result<()> {
    let jobs = context.client.jobs();
    let query = JobQuery {
        queue: args.queue.clone(),
        state: args.state.map(state_from_arg),
        include_payload: args.format == OutputFormat::Json,
    };
    let mut page_token: Option<String> = None;
    let mut shown = 0u64;
    let mut more = false;
    let now = now_ms();
    let mut table = Table::new(&["ID", "STATE", "ATTEMPT>", "PRIORITY>", "CREATED", "LAST ERROR"]);
    while shown < args.limit && !more {
        // One job more than is left to show tells whether more exist.
        let limit = (args.limit - shown + 1).min(PAGE_JOBS_MAX) as u32;
        let page = jobs
            .list(&query, page_token.as_deref(), limit)
            .await
            .explain(context.subject())?;
        for job in &page.items {
            if shown == args.limit {
                more = true;
                break;
            }
            shown += 1;
            match args.format {
                OutputFormat::Json => outln!("{}", job_json(job))?,
                OutputFormat::Human => table.row(vec![
                    job.id.clone(),
                    job.state.to_string(),
                    format!("{}/{}", job.attempt, job.attempts_max),
                    job.priority.to_string(),
                    format_time(job.created_at_ms, now),
                    job.errors.last().map_or_else(String::new, |e| shorten(&e.error)),
                ]),
            }
        }
        match page.next_page_token {
            Some(next) => page_token = Some(next),
            None => break,
        }
    }
    let which = query.state.map_or_else(String::new, |state| format!(" {state}"));
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
    let jobs = context.client.jobs();
    if let Some(id) = args.id {
        let id_text = id.to_string();
        let subject = context.about_job(&id_text);
        match action {
            DeadAction::Retry => {
                jobs.retry_dead(&id_text).await.explain(subject)?;
                outln!("re-drove job {id}: it is available again with a fresh budget of attempts")?;
            }
            DeadAction::Purge => {
                jobs.purge_dead(&id_text).await.explain(subject)?;
                outln!("purged job {id}; its history stays in the log (`spool job history {id}`)")?;
            }
        }
        return Ok(());
    }
    let queue = args.dead.expect("clap requires an id or --dead");
    let now = now_ms();
    let filter = DeadFilter {
        queue: queue.clone(),
        error_contains: args.error_contains,
        dead_since_ms: args.since.map(|t| t.resolve(now)),
        dead_before_ms: args.before.map(|t| t.resolve(now)),
        limit: 0,
    };
    // Each call acts on at most a page of jobs; acted-on jobs stop being
    // dead, so the next call finds the next ones. The dead count at the
    // start bounds the loop, in case re-driven jobs die again meanwhile.
    let dead_at_start = jobs.stats(&queue).await.explain(context.subject())?.dead_count;
    let budget = args.limit.unwrap_or(u64::MAX).min(dead_at_start);
    let mut done = 0u64;
    while done < budget {
        let page = (budget - done).min(PAGE_JOBS_MAX);
        let filter = DeadFilter {
            limit: page as u32,
            ..filter.clone()
        };
        let count = match action {
            DeadAction::Retry => jobs.retry_dead_matching(&filter).await,
            DeadAction::Purge => jobs.purge_dead_matching(&filter).await,
        }
        .explain(context.subject())?;
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
    let outcome = context
        .client
        .jobs()
        .cancel(&id_text)
        .await
        .explain(context.about_job(&id_text))?;
    match outcome {
        CancelOutcome::Requested => outln!(
            "job {id} is running: cancellation requested; its worker is told to stop on its next \
             heartbeat, and the job then ends cancelled"
        )?,
        CancelOutcome::Cancelled => outln!("cancelled job {id}")?,
    }
    Ok(())
}

fn state_from_arg(state: StateArg) -> JobState {
    match state {
        StateArg::Scheduled => JobState::Scheduled,
        StateArg::Available => JobState::Available,
        StateArg::Running => JobState::Running,
        StateArg::Succeeded => JobState::Succeeded,
        StateArg::Dead => JobState::Dead,
        StateArg::Cancelled => JobState::Cancelled,
    }
}
