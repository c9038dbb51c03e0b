//! Turns client errors into messages that say what was wrong and what to do.

use spool_client::{Code, Error, ExceededLimit, SizeLimit};

use crate::units::format_bytes;

/// What the failing call was about, for the hint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub server: &'a str,
    pub topic: Option<&'a str>,
    /// A job id, for the job commands.
    pub job: Option<&'a str>,
    /// True when the call stores a checkpoint (its offsets are positions
    /// to store, not to read from).
    pub checkpoint: bool,
}

/// An error already phrased for the user; printed as it is.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

/// Phrases `error` for a person: the problem, then what to do about it.
pub fn explain(error: &Error, subject: Subject<'_>) -> String {
    let message = error
        .status()
        .map(|status| status.message().to_owned())
        .unwrap_or_default();
    match error {
        Error::Connect { url, source } => format!(
            "could not connect to {url} ({}); is spoold running there? Start it with `spoold`, \
             or point --server or SPOOL_SERVER at a running server",
            root_cause(source.as_ref())
        ),
        Error::InvalidUrl { url, reason } => {
            format!("invalid server address {url:?} ({reason}); write it like http://127.0.0.1:7070")
        }
        Error::NotFound { .. } if subject.job.is_some() && message.contains("deleted by its retention") => {
            // The job left the table and its enqueue left the log: not "no
            // such job", but one that can no longer be shown.
            let job = subject.job.unwrap_or_default();
            format!("job {job} can no longer be shown: {message}")
        }
        Error::NotFound { .. } if subject.job.is_some() => {
            let job = subject.job.unwrap_or_default();
            format!(
                "job {job} was not found: the log holds no job with that id; list a queue's jobs with \
                 `spool job list QUEUE` (server said: {message})"
            )
        }
        Error::NotFound { .. } => match subject.topic {
            Some(topic) if mentions_partition(&message) => {
                format!("{message}; see the partitions with `spool topic describe {topic}`")
            }
            Some(topic) => format!(
                "topic '{topic}' does not exist; create it with `spool topic create {topic} --partitions N` \
                 (server said: {message})"
            ),
            None => format!("not found: {message}"),
        },
        Error::UnknownPartition { topic, .. } => {
            format!("{error}; see the partitions with `spool topic describe {topic}`")
        }
        Error::AlreadyExists { .. } => match subject.topic {
            Some(topic) => format!(
                "topic '{topic}' already exists; inspect it with `spool topic describe {topic}` or choose \
                 another name"
            ),
            None => format!("already exists: {message}"),
        },
        Error::InvalidArgument { .. } => match server_limit_in(&message) {
            Some(key) => format!(
                "the server refused the request: {message}; {}",
                raise_hint(&[key])
            ),
            None => format!("the server refused the request: {message}"),
        },
        Error::RecordTooLarge { exceeded } => {
            format!("a record is too large: {}", too_large(exceeded))
        }
        Error::OutOfRange {
            earliest: Some(earliest),
            latest: Some(latest),
            ..
        } if subject.checkpoint => format!(
            "{message}; a checkpoint stores the next offset to read, from {earliest} (the log start) to \
             {latest} (the high watermark); see them with `spool offsets {}`",
            subject.topic.unwrap_or("TOPIC")
        ),
        Error::OutOfRange {
            earliest: Some(earliest),
            latest: Some(latest),
            ..
        } => format!(
            "{message}; valid start offsets are {earliest} to {latest}: use --from earliest, \
             --from latest or an offset in that range"
        ),
        Error::OffsetOutOfRange { .. } => {
            format!("{error}; use --from earliest, --from latest or an offset in that range")
        }
        Error::OutOfRange { .. } => format!(
            "{message}; a message exceeded a size limit: the server's request_bytes_max ({}) or the client's \
             message_bytes_max (64MiB)",
            raise_hint(&["request_bytes_max"])
        ),
        Error::ResourceExhausted { .. } => {
            format!("the server is overloaded or out of disk space ({message}); try again later or slower")
        }
        Error::Unavailable { .. } => format!(
            "the server at {} is unavailable ({message}); it may be shutting down or restarting: try again",
            subject.server
        ),
        Error::DataLoss { .. } => format!(
            "the server found corrupt data ({message}); see the server's log for the segment and position"
        ),
        Error::DeadlineExceeded { .. } => {
            format!("the server did not answer in time ({message}); it may be overloaded: try again")
        }
        Error::Other(status) if status.code() == Code::FailedPrecondition => match subject.job {
            Some(job) => format!("{message}; see the job with `spool job get {job}`"),
            None => format!("the server refused the request in the current state: {message}"),
        },
        Error::Other(status) if status.code() == Code::Unimplemented => format!(
            "the server does not implement this call ({message}); is it an older spoold than this spool?"
        ),
        _ => error.to_string(),
    }
}

/// Which limits a record exceeds and what to do about each:
/// `the server's record_bytes_max (1MiB) and ...; raise ...`.
pub fn too_large(exceeded: &[ExceededLimit]) -> String {
    let limits: Vec<String> = exceeded
        .iter()
        .map(|e| format!("{} ({})", e.limit, format_bytes(e.max_bytes)))
        .collect();
    let mut text = format!("it exceeds {}", join_and(&limits));
    let server_keys: Vec<&str> = exceeded.iter().filter_map(|e| e.limit.server_key()).collect();
    if !server_keys.is_empty() {
        text.push_str(&format!("; {}", raise_hint(&server_keys)));
    }
    if exceeded.iter().any(|e| e.limit == SizeLimit::SegmentBytes) {
        text.push_str(
            "; a topic's segment size is fixed when it is created: produce to a topic created with a larger \
             --segment-bytes",
        );
    }
    if exceeded
        .iter()
        .any(|e| e.limit == SizeLimit::ClientMessageBytesMax)
    {
        text.push_str("; spool sends no message larger than 64MiB");
    }
    text.push_str("; or split the record");
    text
}

/// How to raise the server's limits `keys` (configuration keys).
fn raise_hint(keys: &[&str]) -> String {
    let flags: Vec<String> = keys.iter().map(|key| format!("--set {key}=SIZE")).collect();
    let variables: Vec<String> = keys
        .iter()
        .map(|key| format!("SPOOL_{}", key.to_ascii_uppercase()))
        .collect();
    let plural = if keys.len() == 1 { "" } else { "s" };
    format!(
        "raise the server's limit{plural} with `spoold {}` (or {}, or the same key{plural} in its configuration \
         file)",
        flags.join(" "),
        join_and(&variables),
    )
}

/// The server limit a refusal names (`record_bytes_max exceeded: ...`).
fn server_limit_in(message: &str) -> Option<&'static str> {
    ["record_bytes_max", "batch_bytes_max", "request_bytes_max"]
        .into_iter()
        .find(|key| message.contains(&format!("{key} exceeded")))
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn mentions_partition(message: &str) -> bool {
    message.contains("partition")
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use spool_client::Status;

    use super::*;

    #[test]
    fn a_record_over_the_limits_is_explained_with_the_keys_to_raise() {
        let exceeded = [
            ExceededLimit {
                limit: SizeLimit::RecordBytesMax,
                actual_bytes: 100 << 20,
                max_bytes: 1 << 20,
            },
            ExceededLimit {
                limit: SizeLimit::BatchBytesMax,
                actual_bytes: (100 << 20) + 70,
                max_bytes: 8 << 20,
            },
            ExceededLimit {
                limit: SizeLimit::ClientMessageBytesMax,
                actual_bytes: (100 << 20) + 90,
                max_bytes: 64 << 20,
            },
        ];
        let text = too_large(&exceeded);
        for needle in [
            "the server's record_bytes_max (1MiB), the server's batch_bytes_max (8MiB) and the client's \
             message_bytes_max (64MiB)",
            "`spoold --set record_bytes_max=SIZE --set batch_bytes_max=SIZE`",
            "SPOOL_RECORD_BYTES_MAX and SPOOL_BATCH_BYTES_MAX",
            "no message larger than 64MiB",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
    }

    #[test]
    fn a_server_refusal_naming_a_limit_says_how_to_raise_it() {
        let error = Error::from(Status::invalid_argument(
            "record_bytes_max exceeded: 2097161 > 1048576",
        ));
        let text = explain(&error, Subject::default());
        assert!(text.contains("`spoold --set record_bytes_max=SIZE`"), "{text}");
        assert!(text.contains("SPOOL_RECORD_BYTES_MAX"), "{text}");
        let other = Error::from(Status::invalid_argument("bad topic name"));
        assert_eq!(
            explain(&other, Subject::default()),
            "the server refused the request: bad topic name"
        );
    }

    #[test]
    fn a_job_whose_history_was_trimmed_is_not_called_unknown() {
        let subject = Subject {
            job: Some("42"),
            ..Subject::default()
        };
        let trimmed = Error::from(Status::not_found(
            "job 42 is not in the job table, and the history of __jobs before 1000 ms since the epoch was \
             deleted by its retention (job_history_retention_ms, job_history_retention_bytes): ...",
        ));
        let text = explain(&trimmed, subject);
        assert!(
            text.starts_with("job 42 can no longer be shown: job 42 is not in"),
            "{text}"
        );
        assert!(!text.contains("holds no job with that id"), "{text}");
        let unknown = Error::from(Status::not_found("job 42 does not exist"));
        assert!(explain(&unknown, subject).contains("holds no job with that id"));
    }
}
