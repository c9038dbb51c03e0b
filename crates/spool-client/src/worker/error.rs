//! [`WorkerError`]: why a worker could not start or had to stop.

/// Why [`Worker::run_until`](super::Worker::run_until) returned an error.
///
/// An unavailable server is not an error: the worker retries with backoff
/// until it comes back or the worker is shut down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// No handler was registered.
    #[error("no queue to work on: register a handler with Worker::handle")]
    NoQueues,

    /// A setting is out of its range.
    #[error("invalid worker setting {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// The server refused to hand out jobs for a reason that waiting will not
    /// fix (an invalid queue name, an unsupported API).
    #[error("the server refused to hand out jobs")]
    ClaimRefused {
        #[source]
        source: crate::Error,
    },
}
