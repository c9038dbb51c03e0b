//! The command line.

use std::time::Duration;

use clap::{ArgGroup, Parser};

use spool_format::units::{parse_bytes, parse_duration};

/// Exit code with which an `--exec` command fails its job for good: no
/// retry, the job goes DEAD.
pub const EXIT_CODE_NO_RETRY: i32 = 100;

const EXAMPLES: &str = "\
Examples:
  # Resize images: the payload on stdin, the result is what the command prints.
  spool-worker --queue thumbnails --concurrency 4 --exec 'convert - -resize 200x200 png:-'

  # Run a script per job with a 5 minute limit; `exit 100` in it means \"do not retry\".
  spool-worker --queue reports --timeout 5m --exec './make-report.sh'

  # Hand jobs of two queues to a local HTTP service.
  spool-worker --queue emails --queue sms --http http://127.0.0.1:8080/jobs

--exec: the command runs through `sh -c`, in a process group of its own, with the
payload on stdin and SPOOL_JOB_ID, SPOOL_QUEUE, SPOOL_ATTEMPT, SPOOL_ATTEMPTS_MAX and
SPOOL_CONTENT_TYPE in the environment, each job header as SPOOL_HEADER_<NAME> (upper
case, other characters than letters and digits as _), and a traceparent or tracestate
header also as TRACEPARENT or TRACESTATE.
  exit 0     completes the job; stdout (the first --result-bytes-max bytes) is the result
  exit 100   fails the job without retry: it goes DEAD
  otherwise  (another code, a signal, command not found) the attempt fails and is
             retried; the end of stderr (4 KiB) is the error
A timeout (the job's own, else --timeout) kills the whole process group. So does the end
of the job: whatever the command left running in its group when it exited is killed.
If the worker itself is killed (kill -9), its guard process kills the groups it left.

--http: the payload is POSTed with the job's content type, the job's headers, and
Spool-Job-Id, Spool-Queue, Spool-Attempt and Spool-Attempts-Max.
  2xx                       completes the job; the body (bounded) is the result
  4xx except 408 and 429    fails the job without retry: it goes DEAD
  anything else             (408, 429, 5xx, timeouts, refused connections) retries;
                            a Retry-After (seconds or an HTTP date, at most
                            --retry-after-max) sets the retry delay

SIGTERM or SIGINT: stop claiming, give back the jobs not started (they are offered again
at once, the attempt not counted), let running jobs finish within --grace, then stop and
give back those too.

Exit codes: 0 after a clean shutdown, 1 on an error, 2 on a usage error.";

/// Runs a command or calls an HTTP endpoint for each job of Spool queues.
#[derive(Debug, Parser)]
#[command(name = "spool-worker", version, after_long_help = EXAMPLES, after_help = "Examples and exit codes: spool-worker --help")]
#[command(group(ArgGroup::new("handler").required(true).args(["exec", "http"])))]
pub struct Cli {
    /// Serve the worker's Prometheus metrics at http://ADDR/metrics
    /// (handler run time, outcomes, exit codes or HTTP statuses, busy
    /// slots); port 0 picks a free port, printed on stdout as
    /// `metrics listening on ADDR`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Export trace spans (one `process QUEUE` span per attempt, with the
    /// run, heartbeats and the acknowledgement) over OTLP gRPC to this
    /// receiver, like http://127.0.0.1:4317. Default:
    /// OTEL_EXPORTER_OTLP_ENDPOINT, else no export. OTEL_SERVICE_NAME names
    /// the service (default spool-worker).
    #[arg(long, value_name = "URL", value_parser = otlp_endpoint)]
    pub otlp_endpoint: Option<String>,

    /// Queue to take jobs from; repeat for several.
    #[arg(long = "queue", short = 'q', value_name = "QUEUE", required = true)]
    pub queues: Vec<String>,

    /// Jobs run at once.
    #[arg(long, short = 'c', default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// Longest one attempt may run, for jobs enqueued without a timeout of
    /// their own; counted from the claim.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub timeout: Duration,

    /// Lease asked for each job; the worker heartbeats every third of it. A
    /// crashed worker's jobs run again after about this long.
    #[arg(long, default_value = "30s", value_parser = lease)]
    pub lease: Duration,

    /// At shutdown, how long running jobs may go on before they are stopped
    /// and given back.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,

    /// Delay before a failed attempt is retried. Without it the server's
    /// backoff applies (exponential with jitter, 16 s after the first
    /// failure).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_delay: Option<Duration>,

    /// Longest retry delay an HTTP endpoint may ask for with Retry-After
    /// (seconds or an HTTP date); a longer one is cut to this.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub retry_after_max: Duration,

    /// Jobs claimed ahead of a free slot, waiting to start.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub prefetch: u32,

    /// Most bytes of stdout or response body kept as a job's result (the
    /// server refuses results above its job_payload_bytes_max, 512 KiB by
    /// default).
    #[arg(long, default_value = "512KiB", value_name = "BYTES", value_parser = result_bytes)]
    pub result_bytes_max: usize,

    /// Server address.
    #[arg(long, env = "SPOOL_SERVER", default_value = "http://127.0.0.1:7070", value_parser = server_url)]
    pub server: String,

    /// Bearer token sent with every call.
    #[arg(long, env = "SPOOL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA bundle that signed the server's certificate (for https:// URLs).
    #[arg(long, env = "SPOOL_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for servers that ask for one (mutual TLS).
    #[arg(long, env = "SPOOL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SPOOL_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Name recorded in the history of the jobs this worker claims
    /// (default: HOSTNAME-PID).
    #[arg(long, value_name = "NAME")]
    pub worker_id: Option<String>,

    /// Runs `sh -c COMMAND` for each job.
    #[arg(long, value_name = "COMMAND")]
    pub exec: Option<String>,

    /// POSTs each job to this http:// URL.
    #[arg(long, value_name = "URL", value_parser = http_url)]
    pub http: Option<http::Uri>,
}

fn result_bytes(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes(text)?;
    usize::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

fn otlp_endpoint(text: &str) -> Result<String, String> {
    spool_telemetry::parse_endpoint(text).map_err(|error| error.to_string())
}

fn lease(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    let (min, max) = (spool_client::worker::LEASE_MIN, spool_client::worker::LEASE_MAX);
    if duration < min || duration > max {
        return Err(format!(
            "must be between {} ms and {} h",
            min.as_millis(),
            max.as_secs() / 3600
        ));
    }
    Ok(duration)
}

fn server_url(text: &str) -> Result<String, String> {
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err(format!(
            "{text:?} is not a server address; write it like http://127.0.0.1:7070"
        ));
    }
    Ok(text.to_owned())
}

fn http_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(uri),
        Some("https") => {
            Err("https is not supported; put a local http:// endpoint or a proxy in front".into())
        }
        _ => Err(format!("{text:?} is not an http:// URL with a host")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_repeated_queues() {
        let cli = Cli::try_parse_from(["spool-worker", "-q", "a", "--queue", "b", "--exec", "cat"]).unwrap();
        assert_eq!(cli.queues, ["a", "b"]);
        assert_eq!(cli.concurrency, 4);
        assert_eq!(cli.timeout, Duration::from_secs(30));
        assert_eq!(cli.lease, Duration::from_secs(30));
        assert_eq!(cli.grace, Duration::from_secs(30));
        assert_eq!(cli.retry_delay, None);
        assert_eq!(cli.result_bytes_max, 512 << 10);
        assert_eq!(cli.exec.as_deref(), Some("cat"));
    }

    #[test]
    fn exactly_one_handler_is_required() {
        use clap::error::ErrorKind;
        let none = Cli::try_parse_from(["spool-worker", "-q", "a"]).unwrap_err();
        assert_eq!(none.kind(), ErrorKind::MissingRequiredArgument);
        let both = Cli::try_parse_from(["spool-worker", "-q", "a", "--exec", "cat", "--http", "http://x/"])
            .unwrap_err();
        assert_eq!(both.kind(), ErrorKind::ArgumentConflict);
        let no_queue = Cli::try_parse_from(["spool-worker", "--exec", "cat"]).unwrap_err();
        assert_eq!(no_queue.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            ["--timeout", "0"],
            ["--timeout", "30"],
            ["--lease", "10ms"],
            ["--concurrency", "0"],
            ["--http", "https://example.com/"],
            ["--http", "not a url"],
            ["--server", "127.0.0.1:7070"],
        ] {
            let mut argv = vec!["spool-worker", "-q", "a"];
            argv.extend(args);
            if args[0] != "--http" {
                argv.extend(["--exec", "cat"]);
            }
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?} was accepted");
        }
    }
}
