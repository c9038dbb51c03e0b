//! Turns client errors into messages that say what was wrong and what to do.

use spool_client::{Code, Error};

/// What the failing call was about, for the hint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub server: &'a str,
    pub topic: Option<&'a str>,
    /// A job id, for the job commands.
    pub job: Option<&'a str>,
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
        Error::NotFound { .. } if subject.job.is_some() => {
            let job = subject.job.unwrap_or_default();
            format!(
                "job {job} was not found: no job has that id, or it finished and left the server's memory \
                 after its retention time; its history may still be in the log: `spool job history {job}` \
                 (server said: {message})"
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
        Error::InvalidArgument { .. } => format!("the server refused the request: {message}"),
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
            "{message}; a message exceeded a size limit (the server's request limit or the client's 64 MiB)"
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
