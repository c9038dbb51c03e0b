//! The command line of `spool job ...`, `spool queue ...` and
//! `spool bench jobs`.

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use crate::time::parse_timestamp_ms;
use crate::units::{parse_bytes, parse_duration_ms};

const JOB_EXAMPLES: &str = "\
Examples:
  spool job enqueue emails '{\"to\":\"a@example.com\"}' --content-type application/json
  spool job enqueue reports --delay 10m --attempts 5 --timeout 2m < report.json
  spool job get 116498001330749440
  spool job history 116498001330749440
  spool job list emails --state dead
  spool job retry --dead emails --error-contains timeout --since 2h
  spool job purge --dead emails --before 2026-11-27T00:00:00Z
  spool job cancel 116498001330749440

Job ids are the decimal numbers `spool job enqueue` prints. See docs/jobs.md for states, retries,
leases and idempotency.";

#[derive(Debug, Subcommand)]
#[command(after_help = JOB_EXAMPLES)]
pub enum JobCommand {
    /// Enqueue one job; prints its id.
    #[command(after_help = ENQUEUE_EXAMPLES)]
    Enqueue(EnqueueArgs),
    /// Show one job: state, attempts, errors per attempt, times, result.
    #[command(after_help = JOB_EXAMPLES)]
    Get {
        #[arg(value_parser = parse_job_id)]
        id: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Show every event of a job, from the log (also after it left memory).
    /// When the history retention of `__jobs` deleted its first events, says
    /// from when its history is kept and shows the job table's view of it.
    #[command(after_help = JOB_EXAMPLES)]
    History {
        #[arg(value_parser = parse_job_id)]
        id: u64,
        /// Output format (json: one line per event, after a line
        /// {"trimmed_before_ms", "job"} when the start was trimmed).
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// List the jobs of a queue, oldest first.
    #[command(after_help = JOB_EXAMPLES)]
    List(ListArgs),
    /// Re-drive dead jobs: make them available again with a fresh budget of
    /// attempts. One by id, or in bulk with --dead QUEUE.
    #[command(after_help = DEAD_EXAMPLES)]
    Retry(DeadArgs),
    /// Remove dead jobs from the job table (their history stays in the log).
    /// One by id, or in bulk with --dead QUEUE.
    #[command(after_help = DEAD_EXAMPLES)]
    Purge(DeadArgs),
    /// Cancel a job: at once if it is waiting; if it is running, its worker
    /// is told on its next heartbeat.
    #[command(after_help = JOB_EXAMPLES)]
    Cancel {
        #[arg(value_parser = parse_job_id)]
        id: u64,
    },
}

const ENQUEUE_EXAMPLES: &str = "\
Examples:
  spool job enqueue emails '{\"to\":\"a@example.com\"}'
  echo '{\"to\":\"b@example.com\"}' | spool job enqueue emails --key welcome-b@example.com
  spool job enqueue reports - --delay 1h30m --priority 10 < report.json
  spool job enqueue billing '{\"invoice\":7}' --at 2026-12-01T09:00:00Z --attempts 5 --timeout 2m
  spool job enqueue emails hi --header traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01

The payload is the PAYLOAD argument, or stdin when it is `-` or left out. The job id is printed on
stdout; a job deduplicated by --key prints the earlier job's id and says so on stderr.
Durations: 500ms, 30s, 10m, 2h, 7d, 1h30m. Times: RFC 3339 (2026-12-01T09:00:00Z) or @<epoch-ms>.";

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Queue name: 1 to 249 of A-Z a-z 0-9 . _ - (created by its first job).
    pub queue: String,
    /// The job's payload; `-` or left out reads it from stdin.
    pub payload: Option<String>,
    /// Make the job available only after this long (from its arrival at the
    /// server).
    #[arg(long, value_parser = parse_duration_ms, value_name = "DURATION", conflicts_with = "at")]
    pub delay: Option<u64>,
    /// Make the job available at this time (RFC 3339 or @<epoch-ms>; the
    /// server turns it into a delay once, by its own clock).
    #[arg(long, value_parser = parse_timestamp_ms, value_name = "TIME")]
    pub at: Option<i64>,
    /// Higher priorities are claimed first (may be negative) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Idempotency key: a second enqueue with the same key to the same queue
    /// within the dedup window (1 day by default) returns the first job.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Total tries, the first one included (1: no retry) [default: the
    /// server's, 25].
    #[arg(long, value_parser = parse_attempts, value_name = "N")]
    pub attempts: Option<u32>,
    /// Longest one attempt may run; the lease never outlasts it [default:
    /// the server's, none].
    #[arg(long, value_parser = parse_positive_duration_ms, value_name = "DURATION")]
    pub timeout: Option<u64>,
    /// MIME type of the payload, for example application/json.
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// A header, NAME=VALUE (repeatable); the HTTP worker forwards headers.
    #[arg(long = "header", value_parser = parse_header, value_name = "NAME=VALUE")]
    pub headers: Vec<(String, String)>,
    /// Output format (json: job_id, deduplicated, state).
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
}

/// How a command prints what it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people.
    Human,
    /// JSON (one object per line) for scripts.
    Json,
}

/// A job state, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Delayed, or backing off before a retry.
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Claimed by a worker holding a lease.
    Running,
    Succeeded,
    /// Out of attempts, or failed as non-retryable.
    Dead,
    Cancelled,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    pub queue: String,
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Most jobs to print (fetched a page at a time).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u64,
    /// Output format (json: one line per job).
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
}

const DEAD_EXAMPLES: &str = "\
Examples:
  spool job retry 116498001330749440
  spool job retry --dead emails
  spool job retry --dead emails --error-contains 'connection refused' --since 1h
  spool job purge --dead emails --before 2026-11-20T00:00:00Z
  spool job purge --dead emails --limit 1000

--since and --before take a time (RFC 3339 or @<epoch-ms>) or a duration meaning that long ago
(2h, 7d). They select by when the job went dead.";

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "dead"])))]
pub struct DeadArgs {
    /// One dead job, by id.
    #[arg(value_parser = parse_job_id)]
    pub id: Option<u64>,
    /// Every dead job of this queue that matches the filters below.
    #[arg(long, value_name = "QUEUE")]
    pub dead: Option<String>,
    /// Only jobs whose last error contains this text (case-sensitive).
    #[arg(long, value_name = "TEXT", conflicts_with = "id")]
    pub error_contains: Option<String>,
    /// Only jobs that went dead at or after this time.
    #[arg(long, value_parser = parse_time_or_ago, value_name = "TIME|DURATION", conflicts_with = "id")]
    pub since: Option<TimeOrAgo>,
    /// Only jobs that went dead before this time.
    #[arg(long, value_parser = parse_time_or_ago, value_name = "TIME|DURATION", conflicts_with = "id")]
    pub before: Option<TimeOrAgo>,
    /// Act on at most this many jobs [default: all that match].
    #[arg(long, value_name = "N", conflicts_with = "id")]
    pub limit: Option<u64>,
}

/// A point in time given as a timestamp, or as a duration before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOrAgo {
    At(i64),
    Ago(u64),
}

impl TimeOrAgo {
    /// Unix epoch milliseconds, with `now_ms` for durations.
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            TimeOrAgo::At(ms) => ms,
            TimeOrAgo::Ago(ms) => now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Counts per state, age of the oldest available job, rates over the
    /// last minute, p50/p99 of queue wait, run time and end to end over the
    /// last minute and hour, totals since the server started and connected
    /// workers.
    #[command(after_help = "Examples:\n  spool queue stats emails\n  spool queue stats emails --format json")]
    Stats {
        queue: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Every queue the server knows, with its jobs by state and the age of
    /// its oldest available job.
    #[command(after_help = "Examples:\n  spool queue list\n  spool queue list --format json")]
    List {
        /// Output format (json: one line per queue).
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Pauses a queue: claims hand out none of its jobs (they stay
    /// available) until it is resumed. The pause survives restarts.
    #[command(after_help = "Examples:\n  spool queue pause emails\n  spool queue resume emails")]
    Pause { queue: String },
    /// Resumes a paused queue: waiting workers get its jobs at once.
    #[command(after_help = "Examples:\n  spool queue resume emails")]
    Resume { queue: String },
    /// Shows or changes a queue's own settings: defaults for its jobs (a
    /// job's own --attempts and --timeout, and a worker's own lease, still
    /// win), how long its finished jobs stay, and limits the server
    /// enforces at claim across every worker. Settings not named stay as
    /// they are; `default` returns one to the server's default. Kept
    /// across restarts; a queue not yet known becomes known.
    #[command(after_help = QUEUE_CONFIG_EXAMPLES)]
    Config(QueueConfigArgs),
    /// Deletes a queue: purges every job of it (each job's history ends
    /// saying so) and forgets its settings and pause. Refused while some of
    /// its jobs run, unless --force.
    #[command(
        after_help = "Examples:\n  spool queue delete old-emails\n  spool queue delete old-emails --force"
    )]
    Delete {
        queue: String,
        /// Delete even while jobs run: their workers' acknowledgements are
        /// refused.
        #[arg(long)]
        force: bool,
    },
}

const QUEUE_CONFIG_EXAMPLES: &str = "\
Examples:
  spool queue config emails
  spool queue config emails --attempts 10 --backoff 5s..1h --lease 30s --timeout 5m
  spool queue config emails --finished-retention 1d --dead-retention 30d
  spool queue config smtp --concurrency-limit 5 --rate-limit 100/1s
  spool queue config smtp --concurrency-limit none --rate-limit none
  spool queue config emails --attempts default

With no setting named, prints the queue's settings. A limit holds jobs back as available (never
failed): claims beyond it wait, as on an empty queue.";

/// A setting's new value, or (`None`) the server's default: the words
/// `default` and `none` mean the latter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<T>(pub Option<T>);

fn setting<T>(text: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Setting<T>, String> {
    match text.trim() {
        "default" | "none" => Ok(Setting(None)),
        value => parse(value).map(|v| Setting(Some(v))),
    }
}

fn parse_attempts_setting(text: &str) -> Result<Setting<u32>, String> {
    setting(text, parse_attempts)
}

fn parse_duration_setting(text: &str) -> Result<Setting<u64>, String> {
    setting(text, parse_positive_duration_ms)
}

fn parse_retention_setting(text: &str) -> Result<Setting<u64>, String> {
    setting(text, |value| parse_duration_ms(value).map_err(|e| e.to_string()))
}

fn parse_limit_setting(text: &str) -> Result<Setting<u32>, String> {
    setting(text, |value| match value.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!(
            "{value:?} is not a limit: a number of jobs, 1 or more (or `none`)"
        )),
        Ok(n) => Ok(n),
    })
}

/// `MIN..MAX`, durations: `5s..1h`.
fn parse_backoff_setting(text: &str) -> Result<Setting<(u64, u64)>, String> {
    setting(text, |value| {
        let (min, max) = value
            .split_once("..")
            .ok_or_else(|| format!("{value:?}: write MIN..MAX, like 5s..1h"))?;
        let (min, max) = (parse_positive_duration_ms(min)?, parse_positive_duration_ms(max)?);
        if min > max {
            return Err(format!("{value:?}: the first delay is longer than the longest"));
        }
        Ok((min, max))
    })
}

/// `JOBS/WINDOW`: `100/1s`, `1000/1m`; `100/s` reads as `100/1s`.
fn parse_rate_setting(text: &str) -> Result<Setting<(u32, u64)>, String> {
    setting(text, |value| {
        let (jobs, window) = value
            .split_once('/')
            .ok_or_else(|| format!("{value:?}: write JOBS/WINDOW, like 100/1s"))?;
        let jobs = match jobs.trim().parse::<u32>() {
            Ok(0) | Err(_) => return Err(format!("{jobs:?} is not a number of jobs (1 or more)")),
            Ok(n) => n,
        };
        let window = window.trim();
        let window = if window.starts_with(|c: char| c.is_ascii_digit()) {
            window.to_owned()
        } else {
            format!("1{window}")
        };
        Ok((jobs, parse_positive_duration_ms(&window)?))
    })
}

#[derive(Debug, Clone, Args)]
pub struct QueueConfigArgs {
    pub queue: String,
    /// Total tries of a job, the first included.
    #[arg(long, value_parser = parse_attempts_setting, value_name = "N|default")]
    pub attempts: Option<Setting<u32>>,
    /// Retry delays: the first retry waits MIN, each next one twice as
    /// long, at most MAX.
    #[arg(long, value_parser = parse_backoff_setting, value_name = "MIN..MAX|default")]
    pub backoff: Option<Setting<(u64, u64)>>,
    /// Lease of a claim that asks for none.
    #[arg(long, value_parser = parse_duration_setting, value_name = "DURATION|default")]
    pub lease: Option<Setting<u64>>,
    /// Longest one attempt may run.
    #[arg(long, value_parser = parse_duration_setting, value_name = "DURATION|default")]
    pub timeout: Option<Setting<u64>>,
    /// How long succeeded and cancelled jobs stay in memory (their history
    /// stays in the log).
    #[arg(long, value_parser = parse_retention_setting, value_name = "DURATION|default")]
    pub finished_retention: Option<Setting<u64>>,
    /// How long dead jobs stay before they are purged.
    #[arg(long, value_parser = parse_retention_setting, value_name = "DURATION|default")]
    pub dead_retention: Option<Setting<u64>>,
    /// At most N of the queue's jobs running at once, across all workers.
    #[arg(long, value_parser = parse_limit_setting, value_name = "N|none")]
    pub concurrency_limit: Option<Setting<u32>>,
    /// At most JOBS claimed per WINDOW, across all workers.
    #[arg(long, value_parser = parse_rate_setting, value_name = "JOBS/WINDOW|none")]
    pub rate_limit: Option<Setting<(u32, u64)>>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
}

pub const BENCH_JOBS_EXAMPLES: &str = "\
Examples:
  spool bench jobs --count 200000
  spool bench jobs --duration 30s --consumers 4 --claim-batch 500 --json
  spool bench jobs --count 100000 --enqueue-batch 100 --claim-batch 100 --payload-bytes 1KiB
  spool bench jobs --duration 10m --rate 1000 --enqueue-batch 10 --claim-batch 10
  spool bench jobs --mode enqueue --single-enqueue --enqueuers 1 --count 20000
  spool bench jobs --mode backlog --worker-runtime --consumers 1 --claim-batch 50 --count 100000

No-op jobs. --mode end-to-end (the default): enqueuers send EnqueueBatch requests, consumers Claim
in batches (long poll) and acknowledge with FinishBatch; the completion rate counts jobs completed
per second from the first enqueue to the last completion, and latency runs from the enqueue request
to the completion's answer. --mode enqueue: enqueuers only, no consumer; the queue is deleted
afterwards. --mode backlog: --count jobs are enqueued first (untimed), then the consumers drain
them; the clock runs from the consumers' start to the last completion.
Each bench uses a new queue (bench-jobs-<time>) unless --queue is given; its jobs leave the
server's memory after the retention time of finished jobs.";

/// What `spool bench jobs` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchJobsMode {
    /// Enqueuers and consumers together, from the first enqueue to the last
    /// completion.
    EndToEnd,
    /// Enqueuers only: the enqueue rate and the round trip of each request.
    Enqueue,
    /// Consumers draining --count jobs enqueued before the clock starts.
    Backlog,
}

#[derive(Debug, Clone, Args)]
pub struct BenchJobsArgs {
    /// Jobs to run; overrides --duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Enqueue for this long, then wait for every enqueued job to complete.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration_ms, value_name = "DURATION")]
    pub duration: u64,
    /// Concurrent consumers, each with its own connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub consumers: u32,
    /// Concurrent enqueuers, each with its own connection.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub enqueuers: u32,
    /// Most jobs per Claim (at most the server's limit, 1000 by default).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub claim_batch: u32,
    /// Jobs per EnqueueBatch request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub enqueue_batch: u32,
    /// Send each job with its own `Enqueue` call, the one a web handler
    /// makes, instead of `EnqueueBatch` (so one job per request; not with
    /// --enqueue-batch).
    #[arg(long, conflicts_with = "enqueue_batch")]
    pub single_enqueue: bool,
    /// What to measure: enqueue and completion together, enqueue alone, or
    /// consumers draining a backlog enqueued first (needs --count).
    #[arg(long, value_enum, default_value_t = BenchJobsMode::EndToEnd)]
    pub mode: BenchJobsMode,
    /// Enqueue at most this many jobs a second, all enqueuers together
    /// [default: as fast as the server takes them]. For a steady load, such
    /// as measuring what a given rate costs on disk.
    #[arg(long, value_name = "JOBS_PER_S", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
    /// Size of each job's payload (at least 8: it carries the enqueue time).
    #[arg(long, default_value = "100", value_parser = parse_bytes, value_name = "SIZE")]
    pub payload_bytes: u64,
    /// Queue to use [default: a new bench-jobs-<time> queue].
    #[arg(long)]
    pub queue: Option<String>,
    /// Print one JSON line instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
    /// Consume with the Rust worker runtime (`spool_client::worker`: batched
    /// claims, a handler task per job, batched acknowledgements) instead of
    /// bare Claim and FinishBatch calls; --claim-batch is then each
    /// worker's concurrency.
    #[arg(long)]
    pub worker_runtime: bool,
}

impl BenchJobsArgs {
    /// Jobs per enqueue request: 1 with --single-enqueue.
    pub fn jobs_per_enqueue(&self) -> u32 {
        if self.single_enqueue {
            1
        } else {
            self.enqueue_batch
        }
    }

    /// Refuses combinations that would measure something other than what
    /// the mode says; the message names the options.
    pub fn validate(&self) -> Result<(), String> {
        match self.mode {
            BenchJobsMode::Backlog if self.count.is_none() => Err(
                "--mode backlog drains a backlog of --count jobs enqueued before the clock starts: give --count".into(),
            ),
            BenchJobsMode::Backlog if self.single_enqueue || self.rate.is_some() => Err(
                "--mode backlog does not time the enqueue, so --single-enqueue and --rate do not apply; \
                 measure the enqueue with --mode enqueue"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// A job id as `spool job enqueue` prints it.
pub fn parse_job_id(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not a job id; job ids are decimal numbers, as `spool job enqueue` prints them")
    })
}

fn parse_attempts(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("attempts counts the first try, so it is at least 1 (1 means no retry)".into()),
        Ok(attempts) => Ok(attempts),
        Err(_) => Err(format!("{text:?} is not a number of attempts (1 or more)")),
    }
}

fn parse_positive_duration_ms(text: &str) -> Result<u64, String> {
    match parse_duration_ms(text)? {
        0 => Err(format!("{text:?}: must be longer than zero")),
        ms => Ok(ms),
    }
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.to_owned())),
        _ => Err(format!("{text:?}: write NAME=VALUE, like traceparent=00-...-01")),
    }
}

fn parse_time_or_ago(text: &str) -> Result<TimeOrAgo, String> {
    if let Ok(ms) = parse_duration_ms(text) {
        return Ok(TimeOrAgo::Ago(ms));
    }
    parse_timestamp_ms(text)
        .map(TimeOrAgo::At)
        .map_err(|error| format!("{error}; or a duration meaning that long ago, like 2h or 7d"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("spool").chain(args.iter().copied()))
    }

    #[test]
    fn enqueue_takes_every_option() {
        let cli = parse(&[
            "job",
            "enqueue",
            "emails",
            "{}",
            "--delay",
            "1h30m",
            "--priority",
            "-5",
            "--key",
            "k1",
            "--attempts",
            "3",
            "--timeout",
            "30s",
            "--content-type",
            "application/json",
            "--header",
            "a=b=c",
            "--header",
            "trace=1",
        ])
        .unwrap();
        let Command::Job(JobCommand::Enqueue(args)) = cli.command else {
            panic!("not an enqueue");
        };
        assert_eq!(args.queue, "emails");
        assert_eq!(args.payload.as_deref(), Some("{}"));
        assert_eq!(args.delay, Some(5_400_000));
        assert_eq!(args.priority, Some(-5));
        assert_eq!(args.attempts, Some(3));
        assert_eq!(args.timeout, Some(30_000));
        assert_eq!(
            args.headers,
            vec![("a".into(), "b=c".into()), ("trace".into(), "1".into())]
        );
    }

    #[test]
    fn bad_enqueue_options_are_usage_errors() {
        for bad in [
            &["job", "enqueue", "q", "--delay", "soon"][..],
            &["job", "enqueue", "q", "--delay", "10"],
            &["job", "enqueue", "q", "--attempts", "0"],
            &["job", "enqueue", "q", "--timeout", "0s"],
            &["job", "enqueue", "q", "--header", "novalue"],
            &["job", "enqueue", "q", "--at", "tomorrow"],
            &["job", "enqueue", "q", "--delay", "1s", "--at", "@5"],
            &["job", "get", "abc"],
            &["job", "list", "q", "--state", "done"],
            &["job", "retry"],
            &["job", "retry", "1", "--dead", "q"],
            &["job", "retry", "1", "--error-contains", "x"],
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    fn bench_jobs(args: &[&str]) -> BenchJobsArgs {
        let cli = parse(&[&["bench", "jobs"][..], args].concat()).unwrap();
        let Command::Bench(crate::args::BenchCommand::Jobs(args)) = cli.command else {
            panic!("not a bench jobs");
        };
        args
    }

    #[test]
    fn bench_jobs_single_enqueue_sends_one_job_per_request() {
        let args = bench_jobs(&["--mode", "enqueue", "--single-enqueue", "--enqueuers", "1"]);
        assert_eq!(args.mode, BenchJobsMode::Enqueue);
        assert_eq!(args.jobs_per_enqueue(), 1);
        assert_eq!(args.validate(), Ok(()));
        assert_eq!(bench_jobs(&[]).jobs_per_enqueue(), 500);
        assert_eq!(bench_jobs(&[]).mode, BenchJobsMode::EndToEnd);
        let error = parse(&["bench", "jobs", "--single-enqueue", "--enqueue-batch", "10"]).unwrap_err();
        assert_eq!(
            error.exit_code(),
            2,
            "--single-enqueue with --enqueue-batch is a usage error"
        );
    }

    #[test]
    fn bench_jobs_backlog_needs_a_count_and_times_no_enqueue() {
        let args = bench_jobs(&[
            "--mode",
            "backlog",
            "--count",
            "1000",
            "--worker-runtime",
            "--claim-batch",
            "1",
        ]);
        assert_eq!(args.validate(), Ok(()));
        assert!(
            bench_jobs(&["--mode", "backlog"])
                .validate()
                .unwrap_err()
                .contains("give --count")
        );
        for bad in [
            &["--mode", "backlog", "--count", "10", "--single-enqueue"][..],
            &["--mode", "backlog", "--count", "10", "--rate", "5"],
        ] {
            assert!(
                bench_jobs(bad).validate().unwrap_err().contains("--mode enqueue"),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(&["bench", "jobs", "--mode", "drain"])
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn dead_filters() {
        let cli = parse(&[
            "job", "purge", "--dead", "q", "--since", "2h", "--before", "@1000",
        ])
        .unwrap();
        let Command::Job(JobCommand::Purge(args)) = cli.command else {
            panic!("not a purge");
        };
        assert_eq!(args.dead.as_deref(), Some("q"));
        assert_eq!(args.since, Some(TimeOrAgo::Ago(7_200_000)));
        assert_eq!(args.since.unwrap().resolve(10_000_000), 2_800_000);
        assert_eq!(args.before, Some(TimeOrAgo::At(1000)));
        let cli = parse(&["job", "retry", "42"]).unwrap();
        let Command::Job(JobCommand::Retry(args)) = cli.command else {
            panic!("not a retry");
        };
        assert_eq!((args.id, args.dead), (Some(42), None));
    }

    #[test]
    fn bench_jobs_defaults() {
        let cli = parse(&["bench", "jobs", "--count", "1000"]).unwrap();
        let Command::Bench(crate::args::BenchCommand::Jobs(args)) = cli.command else {
            panic!("not bench jobs");
        };
        assert_eq!(args.count, Some(1000));
        assert_eq!(
            (args.claim_batch, args.enqueue_batch, args.consumers),
            (500, 500, 4)
        );
        assert!(parse(&["bench", "jobs", "--consumers", "0"]).is_err());
        assert_eq!(args.rate, None, "as fast as the server takes them");
        let cli = parse(&["bench", "jobs", "--rate", "1000"]).unwrap();
        let Command::Bench(crate::args::BenchCommand::Jobs(args)) = cli.command else {
            panic!("not bench jobs");
        };
        assert_eq!(args.rate, Some(1000));
        assert!(parse(&["bench", "jobs", "--rate", "0"]).is_err());
    }
}
