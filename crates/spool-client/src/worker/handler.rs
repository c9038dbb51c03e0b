//! What a handler is ([`Handler`]) and what it answers ([`Outcome`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::job::Job;

/// How one attempt of a job ended, as the handler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job succeeded; `result` is stored with it (the server bounds its
    /// size: `payload_bytes_max`, 512 KiB by default).
    Complete {
        /// The job's output.
        result: Bytes,
    },
    /// The attempt failed.
    Fail {
        /// What went wrong, kept in the job's errors and history (the server
        /// keeps the first 4 KiB).
        error: String,
        /// `false` sends the job straight to DEAD; `true` retries it while
        /// attempts remain.
        retryable: bool,
        /// Delay before the retry; `None` takes the server's backoff
        /// (exponential with jitter).
        retry_delay: Option<Duration>,
    },
}

impl Outcome {
    /// Completes the job with `result`.
    pub fn complete(result: impl Into<Bytes>) -> Self {
        Outcome::Complete {
            result: result.into(),
        }
    }

    /// Fails the attempt; the server retries the job after its backoff while
    /// attempts remain.
    pub fn retry(error: impl Into<String>) -> Self {
        Outcome::Fail {
            error: error.into(),
            retryable: true,
            retry_delay: None,
        }
    }

    /// Fails the attempt; the job is retried after `delay` while attempts
    /// remain.
    pub fn retry_after(error: impl Into<String>, delay: Duration) -> Self {
        Outcome::Fail {
            error: error.into(),
            retryable: true,
            retry_delay: Some(delay),
        }
    }

    /// Fails the job without retry: it goes DEAD (or CANCELLED, when a
    /// client asked to cancel it), whatever attempts remain.
    pub fn fail_permanently(error: impl Into<String>) -> Self {
        Outcome::Fail {
            error: error.into(),
            retryable: false,
            retry_delay: None,
        }
    }

    /// True for [`Outcome::Complete`].
    pub fn is_complete(&self) -> bool {
        matches!(self, Outcome::Complete { .. })
    }

    /// Size of what goes over the wire for this outcome, for batching.
    pub(crate) fn wire_bytes(&self) -> usize {
        match self {
            Outcome::Complete { result } => result.len(),
            Outcome::Fail { error, .. } => error.len(),
        }
    }
}

/// `Ok(result)` completes the job; `Err(error)` fails the attempt as
/// retryable with the error's text.
impl<T: Into<Bytes>, E: fmt::Display> From<Result<T, E>> for Outcome {
    fn from(result: Result<T, E>) -> Self {
        match result {
            Ok(value) => Outcome::complete(value),
            Err(error) => Outcome::retry(error.to_string()),
        }
    }
}

/// Runs one attempt of a job.
///
/// Implemented for every `Fn(Job) -> impl Future<Output = Outcome>` closure
/// (`Send + Sync + 'static`), so most handlers are closures; implement it on
/// a type to keep state (a database pool, an HTTP client) behind `&self`.
///
/// The handler runs on the tokio runtime: block only inside
/// `tokio::task::spawn_blocking`. It may run more than once for the same job
/// (delivery is at least once): use [`Job::id`] and [`Job::attempt`] to
/// deduplicate side effects. When the job's timeout passes or the worker's
/// grace period ends at shutdown, the returned future is dropped: put
/// clean-up (killing a child process, rolling back) in `Drop`.
pub trait Handler: Send + Sync + 'static {
    /// Runs the job and says how it went.
    fn handle(&self, job: Job) -> impl Future<Output = Outcome> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    fn handle(&self, job: Job) -> impl Future<Output = Outcome> + Send {
        self(job)
    }
}

pub(crate) type BoxedOutcome = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A [`Handler`] behind a pointer, so handlers of different types share one
/// table.
pub(crate) trait DynHandler: Send + Sync {
    fn call(self: Arc<Self>, job: Job) -> BoxedOutcome;
}

impl<H: Handler> DynHandler for H {
    fn call(self: Arc<Self>, job: Job) -> BoxedOutcome {
        Box::pin(async move { self.handle(job).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_retry_fields() {
        assert_eq!(
            Outcome::retry("smtp timeout"),
            Outcome::Fail {
                error: "smtp timeout".into(),
                retryable: true,
                retry_delay: None
            }
        );
        assert_eq!(
            Outcome::retry_after("busy", Duration::from_secs(3)),
            Outcome::Fail {
                error: "busy".into(),
                retryable: true,
                retry_delay: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            Outcome::fail_permanently("bad input"),
            Outcome::Fail {
                error: "bad input".into(),
                retryable: false,
                retry_delay: None
            }
        );
        assert!(Outcome::complete("done").is_complete());
        assert_eq!(Outcome::complete(vec![1, 2, 3]).wire_bytes(), 3);
    }

    #[test]
    fn results_convert_into_outcomes() {
        let ok: Result<&'static str, String> = Ok("sent");
        assert_eq!(Outcome::from(ok), Outcome::complete("sent"));
        let err: Result<Vec<u8>, std::io::Error> = Err(std::io::Error::other("disk on fire"));
        assert_eq!(Outcome::from(err), Outcome::retry("disk on fire"));
    }
}
