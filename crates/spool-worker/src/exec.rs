//! `--exec`: runs a shell command per job.
//!
//! The payload goes to the command's stdin; `SPOOL_JOB_ID`, `SPOOL_QUEUE`,
//! `SPOOL_ATTEMPT`, `SPOOL_ATTEMPTS_MAX` and `SPOOL_CONTENT_TYPE` to its
//! environment, with each job header as `SPOOL_HEADER_<NAME>` (see
//! [`header_variable`]) and the W3C trace context headers `traceparent` and
//! `tracestate` also as `TRACEPARENT` and `TRACESTATE`, the names
//! OpenTelemetry SDKs read from the environment. When the worker exports
//! traces, `TRACEPARENT` names the attempt's `run {queue}` span instead,
//! so the command's own spans are its children. The command runs in a process group of its own, which is
//! killed (SIGKILL) when the attempt times out, when the job is cancelled or
//! its lease lost, when the worker's grace period ends, and after the
//! command exits, so no job leaves processes behind.
//!
//! Exit 0 completes the job with stdout (its first `result_bytes_max` bytes;
//! the rest is read and dropped, so a flood never blocks the command on a
//! full pipe). Exit [`EXIT_CODE_NO_RETRY`] fails the job for good. Anything
//! else fails the attempt, retried, with the end of stderr as the error.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spool_client::worker::{Handler, Job, Outcome, StopReason};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::args::EXIT_CODE_NO_RETRY;
use crate::metrics::WorkerMetrics;
use crate::process_group::ProcessGroup;

/// Bytes of stderr kept for the error of a failed attempt (the end).
pub const STDERR_TAIL_BYTES: usize = 4096;
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Runs `sh -c COMMAND` per job; cheap to clone.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    inner: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    command: String,
    result_bytes_max: usize,
    retry_delay: Option<Duration>,
    /// Where exit codes are counted, by the job's queue.
    metrics: Arc<WorkerMetrics>,
}

/// The environment variable that carries job header `name`:
/// `SPOOL_HEADER_` and the name in upper case, each character other than an
/// ASCII letter or digit written `_` (`x-tenant.id` is
/// `SPOOL_HEADER_X_TENANT_ID`).
pub fn header_variable(name: &str) -> String {
    let mut variable = String::from("SPOOL_HEADER_");
    variable.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    variable
}

/// The variables of a job's headers, in name order (of two names that map
/// to one variable, the later wins). A value holding a NUL byte cannot be
/// in an environment and is left out.
fn header_variables(headers: &std::collections::HashMap<String, String>) -> Vec<(String, String)> {
    let mut sorted: Vec<(&String, &String)> = headers.iter().collect();
    sorted.sort();
    let mut variables = Vec::with_capacity(sorted.len() + 2);
    for (name, value) in sorted {
        if value.contains('\0') || name.is_empty() {
            tracing::debug!(header = %name, "skipping a job header that cannot be an environment variable");
            continue;
        }
        variables.push((header_variable(name), value.clone()));
        let lower = name.to_ascii_lowercase();
        if lower == "traceparent" || lower == "tracestate" {
            variables.push((lower.to_ascii_uppercase(), value.clone()));
        }
    }
    variables
}

/// What a finished command left behind.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stdout_bytes: u64,
    stderr_tail: Vec<u8>,
}

impl ExecHandler {
    pub fn new(
        command: String,
        result_bytes_max: usize,
        retry_delay: Option<Duration>,
        metrics: Arc<WorkerMetrics>,
    ) -> Self {
        ExecHandler {
            inner: Arc::new(Settings {
                command,
                result_bytes_max,
                retry_delay,
                metrics,
            }),
        }
    }

    fn retry(&self, error: String) -> Outcome {
        Outcome::Fail {
            error,
            retryable: true,
            retry_delay: self.inner.retry_delay,
        }
    }

    /// Runs the command for `job` until it exits or `job` says to stop.
    async fn run(&self, job: &Job) -> Outcome {
        let settings = &self.inner;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&settings.command)
            .env("SPOOL_JOB_ID", job.id())
            .env("SPOOL_QUEUE", job.queue())
            .env("SPOOL_ATTEMPT", job.attempt().to_string())
            .env("SPOOL_ATTEMPTS_MAX", job.attempts_max().to_string())
            .env("SPOOL_CONTENT_TYPE", job.content_type())
            .envs(header_variables(job.headers()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(traceparent) = spool_telemetry::current_traceparent() {
            command.env("TRACEPARENT", traceparent);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                return self.retry(format!("could not start `sh -c {:?}`: {error}", settings.command));
            }
        };
        // Dropped with this future (timeout, end of grace): kills the group.
        let mut group = ProcessGroup::led_by(child.id());
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let payload = job.payload().clone();
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A command that does not read its stdin closes the pipe:
                // that is its business, not an error.
                let _ = stdin.write_all(&payload).await;
            }
        };
        let group_ref = &mut group;
        let wait = async move {
            let status = child.wait().await;
            // Whatever the command left running in its group goes too; its
            // pipes close, so the readers below finish.
            group_ref.kill();
            status
        };
        let started = Instant::now();
        let run = async {
            let ((), (stdout, stdout_bytes), stderr_tail, status) = tokio::join!(
                write,
                read_head(stdout, settings.result_bytes_max),
                read_tail(stderr, STDERR_TAIL_BYTES),
                wait
            );
            status.map(|status| Finished {
                status,
                stdout,
                stdout_bytes,
                stderr_tail,
            })
        };
        let finished = tokio::select! {
            finished = run => finished,
            reason = job.stopped() => {
                drop(group); // kills the command
                return match reason {
                    StopReason::Cancelled => Outcome::fail_permanently("cancelled: the command was killed"),
                    _ => self.retry(format!("stopped: {reason}; the command was killed")),
                };
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match finished {
            Ok(finished) => {
                use std::os::unix::process::ExitStatusExt;
                if let Some(queue) = settings.metrics.queue(job.queue()) {
                    queue.count_exit(finished.status.code(), finished.status.signal());
                }
                self.outcome(finished, elapsed_ms)
            }
            Err(error) => self.retry(format!("waiting for the command failed: {error}")),
        }
    }

    fn outcome(&self, finished: Finished, elapsed_ms: u64) -> Outcome {
        let Finished {
            status,
            stdout,
            stdout_bytes,
            stderr_tail,
        } = finished;
        if status.success() {
            if stdout_bytes > stdout.len() as u64 {
                tracing::warn!(
                    stdout_bytes,
                    kept_bytes = stdout.len(),
                    "the command printed more than --result-bytes-max; the result keeps the first bytes"
                );
            }
            tracing::debug!(elapsed_ms, result_bytes = stdout.len(), "command succeeded");
            return Outcome::complete(Bytes::from(stdout));
        }
        let error = describe_failure(status, &stderr_tail);
        tracing::info!(elapsed_ms, %error, "command failed");
        if status.code() == Some(EXIT_CODE_NO_RETRY) {
            Outcome::fail_permanently(error)
        } else {
            self.retry(error)
        }
    }
}

impl Handler for ExecHandler {
    async fn handle(&self, job: Job) -> Outcome {
        self.run(&job).await
    }
}

/// "the command exited with code 3: boom" or "... killed by signal 9 ...",
/// with the end of stderr.
fn describe_failure(status: ExitStatus, stderr_tail: &[u8]) -> String {
    use std::os::unix::process::ExitStatusExt;
    let what = match (status.code(), status.signal()) {
        (Some(EXIT_CODE_NO_RETRY), _) => {
            format!("the command exited with code {EXIT_CODE_NO_RETRY} (fail without retry)")
        }
        (Some(127), _) => "the command exited with code 127 (command not found?)".to_owned(),
        (Some(code), _) => format!("the command exited with code {code}"),
        (None, Some(signal)) => format!("the command was killed by signal {signal}"),
        (None, None) => format!("the command ended with {status}"),
    };
    let stderr = String::from_utf8_lossy(stderr_tail);
    let stderr = stderr.trim();
    if stderr.is_empty() {
        format!("{what}; stderr was empty")
    } else {
        format!("{what}: {stderr}")
    }
}

/// Reads `reader` to its end, keeping the first `keep_bytes`; returns them
/// and how many bytes there were in all.
async fn read_head(reader: Option<impl AsyncRead + Unpin>, keep_bytes: usize) -> (Vec<u8>, u64) {
    let Some(mut reader) = reader else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                let room = keep_bytes.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
    (kept, total)
}

/// Reads `reader` to its end, keeping the last `keep_bytes`.
async fn read_tail(reader: Option<impl AsyncRead + Unpin>, keep_bytes: usize) -> Vec<u8> {
    let Some(mut reader) = reader else {
        return Vec::new();
    };
    let mut tail = Vec::new();
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buffer[..n]);
                if tail.len() > 2 * keep_bytes.max(READ_CHUNK_BYTES) {
                    tail.drain(..tail.len() - keep_bytes);
                }
            }
        }
    }
    if tail.len() > keep_bytes {
        tail.drain(..tail.len() - keep_bytes);
    }
    tail
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn headers_become_variables_and_trace_context_keeps_its_own_name() {
        let headers: std::collections::HashMap<String, String> = [
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-tenant.id", "acme"),
            ("bad", "a\0b"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        let variables = header_variables(&headers);
        let names: Vec<&str> = variables.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "SPOOL_HEADER_TRACEPARENT",
                "TRACEPARENT",
                "SPOOL_HEADER_X_TENANT_ID"
            ]
        );
        assert_eq!(variables[1].1, headers["traceparent"]);
        assert_eq!(variables[2].1, "acme");
    }

    #[tokio::test]
    async fn the_head_is_kept_and_the_rest_counted() {
        let data = vec![7u8; 300_000];
        let (kept, total) = read_head(Some(&data[..]), 1_000).await;
        assert_eq!((kept.len(), total), (1_000, 300_000));
        let (kept, total) = read_head(Some(&b"short"[..]), 1_000).await;
        assert_eq!((kept.as_slice(), total), (&b"short"[..], 5));
        let (kept, total) = read_head(None::<&[u8]>, 10).await;
        assert_eq!((kept.len(), total), (0, 0));
    }

    #[tokio::test]
    async fn the_tail_is_kept() {
        let mut data = vec![b'a'; 200_000];
        data.extend_from_slice(b"the real error");
        let tail = read_tail(Some(&data[..]), 14).await;
        assert_eq!(tail, b"the real error");
        assert_eq!(read_tail(Some(&b"xy"[..]), 14).await, b"xy");
    }

    #[test]
    fn failures_name_the_exit_and_the_end_of_stderr() {
        let code = |c: i32| ExitStatus::from_raw(c << 8);
        assert_eq!(
            describe_failure(code(3), b"boom\n"),
            "the command exited with code 3: boom"
        );
        assert!(describe_failure(code(100), b"").contains("without retry"));
        assert!(describe_failure(code(127), b"sh: 1: nope: not found").contains("nope: not found"));
        assert_eq!(
            describe_failure(ExitStatus::from_raw(9), b""),
            "the command was killed by signal 9; stderr was empty"
        );
    }
}
