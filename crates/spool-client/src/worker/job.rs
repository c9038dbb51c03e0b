//! [`Job`]: one delivery of a job to a handler, with what the handler needs
//! to do its work, to report progress, and to learn that it should stop.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use spool_proto::v1::ClaimedJob;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a running handler should stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// A client cancelled the job (`Cancel`), and a heartbeat brought the
    /// news. Whatever the handler then answers with
    /// [`Outcome::Fail`](super::Outcome::Fail) ends the job CANCELLED, not
    /// retried; a [`Outcome::Complete`](super::Outcome::Complete) still
    /// completes it.
    Cancelled,
    /// The server no longer holds this worker's lease (a heartbeat was
    /// refused): the lease ran out, for example while the server was
    /// unreachable, and the job may already run elsewhere. The handler's
    /// answer will not be recorded.
    LeaseLost,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Cancelled => "the job was cancelled",
            StopReason::LeaseLost => "the lease on the job was lost",
        })
    }
}

/// One delivery of a job to a handler: its identity, input and metadata,
/// plus [`Job::set_progress`] and the stop signals.
///
/// Delivery is at least once, so a handler can see the same job again (with
/// a higher [`Job::attempt`]): `(id, attempt)` names one delivery, and
/// [`Job::id`] is the key to deduplicate side effects on.
///
/// Cheap to clone; clones share progress and stop signals.
#[derive(Clone)]
pub struct Job {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    queue: String,
    payload: Bytes,
    content_type: String,
    headers: HashMap<String, String>,
    attempt: u32,
    attempts_max: u32,
    priority: i32,
    enqueued_at_ms: i64,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    lease_token: String,
    lease: Duration,
    progress: Mutex<Option<String>>,
    stop: watch::Sender<Option<StopReason>>,
}

impl Job {
    /// A delivery of `claimed`, claimed at `claimed_at`; `timeout_default`
    /// applies when the job has no timeout of its own.
    pub(crate) fn new(claimed: ClaimedJob, claimed_at: Instant, timeout_default: Option<Duration>) -> Self {
        let timeout = match claimed.timeout_ms {
            0 => timeout_default,
            ms => Some(Duration::from_millis(ms)),
        };
        Job {
            inner: Arc::new(Inner {
                id: claimed.job_id,
                queue: claimed.queue,
                payload: claimed.payload,
                content_type: claimed.content_type,
                headers: claimed.headers,
                attempt: claimed.attempt,
                attempts_max: claimed.attempts_max,
                priority: claimed.priority,
                enqueued_at_ms: claimed.enqueued_at_ms,
                timeout,
                deadline: timeout.map(|t| claimed_at + t),
                lease_token: claimed.lease_token,
                lease: Duration::from_millis(claimed.lease_ms),
                progress: Mutex::new(None),
                stop: watch::Sender::new(None),
            }),
        }
    }

    /// The job's id (a decimal number), the same on every delivery.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The queue the job came from.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// The job's input.
    pub fn payload(&self) -> &Bytes {
        &self.inner.payload
    }

    /// MIME type of the payload; empty if the producer gave none.
    pub fn content_type(&self) -> &str {
        &self.inner.content_type
    }

    /// The job's headers (for example W3C `traceparent`).
    pub fn headers(&self) -> &HashMap<String, String> {
        &self.inner.headers
    }

    /// This delivery's attempt number, starting at 1. It counts every claim,
    /// including ones a worker gave back unrun at shutdown (those do not
    /// count against [`Job::attempts_max`]).
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// Total tries the job is allowed, the first one included.
    pub fn attempts_max(&self) -> u32 {
        self.inner.attempts_max
    }

    /// The job's priority (higher is claimed first).
    pub fn priority(&self) -> i32 {
        self.inner.priority
    }

    /// Server time of the job's first enqueue, Unix epoch milliseconds.
    pub fn enqueued_at_ms(&self) -> i64 {
        self.inner.enqueued_at_ms
    }

    /// Longest this attempt may run, counted from its claim: the job's own
    /// timeout, else the worker's default; `None` for no limit.
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// When the worker stops the handler for running too long (see
    /// [`Job::timeout`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Records progress, free-form and short (for example `42%`); it is sent
    /// with the next heartbeat (every third of the lease) and shown by
    /// `GetJob`. A later call replaces an unsent earlier one.
    pub fn set_progress(&self, progress: impl Into<String>) {
        *self.inner.progress.lock().expect("progress lock") = Some(progress.into());
    }

    /// Resolves when a client cancels the job. Never resolves if the lease
    /// is lost instead; see [`Job::stopped`] for both.
    pub async fn cancelled(&self) {
        let mut receiver = self.inner.stop.subscribe();
        let _ = receiver
            .wait_for(|reason| *reason == Some(StopReason::Cancelled))
            .await;
    }

    /// True once a client has cancelled the job.
    pub fn is_cancelled(&self) -> bool {
        self.stop_reason() == Some(StopReason::Cancelled)
    }

    /// Resolves when the handler should stop early: the job was cancelled or
    /// the lease was lost.
    pub async fn stopped(&self) -> StopReason {
        let mut receiver = self.inner.stop.subscribe();
        match receiver.wait_for(Option::is_some).await {
            Ok(reason) => reason.unwrap_or(StopReason::LeaseLost),
            // The sender lives as long as `self`.
            Err(_) => StopReason::LeaseLost,
        }
    }

    /// Why the handler should stop, once it should.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.inner.stop.borrow()
    }

    pub(crate) fn lease_token(&self) -> &str {
        &self.inner.lease_token
    }

    /// The lease granted by the claim.
    pub(crate) fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Sets the stop reason unless one is set already; true if it was set.
    pub(crate) fn stop(&self, reason: StopReason) -> bool {
        self.inner.stop.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        })
    }

    /// Progress not yet sent, taken for a heartbeat.
    pub(crate) fn take_progress(&self) -> Option<String> {
        self.inner.progress.lock().expect("progress lock").take()
    }

    /// Puts back progress whose heartbeat failed, unless newer progress
    /// arrived meanwhile.
    pub(crate) fn restore_progress(&self, progress: String) {
        let mut slot = self.inner.progress.lock().expect("progress lock");
        if slot.is_none() {
            *slot = Some(progress);
        }
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.inner.id)
            .field("queue", &self.inner.queue)
            .field("attempt", &self.inner.attempt)
            .field("attempts_max", &self.inner.attempts_max)
            .field("payload_bytes", &self.inner.payload.len())
            .field("content_type", &self.inner.content_type)
            .field("timeout", &self.inner.timeout)
            .field("stop_reason", &self.stop_reason())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(timeout_ms: u64) -> ClaimedJob {
        ClaimedJob {
            job_id: "42".into(),
            queue: "emails".into(),
            payload: Bytes::from_static(b"hello"),
            content_type: "text/plain".into(),
            headers: [("traceparent".to_owned(), "00-abc".to_owned())].into(),
            attempt: 2,
            attempts_max: 5,
            lease_token: "00000000000000ff".into(),
            lease_ms: 30_000,
            timeout_ms,
            priority: 3,
            enqueued_at_ms: 1_700_000_000_000,
        }
    }

    #[tokio::test]
    async fn exposes_the_delivery() {
        let now = Instant::now();
        let job = Job::new(claimed(0), now, None);
        assert_eq!(job.id(), "42");
        assert_eq!(job.queue(), "emails");
        assert_eq!(job.payload(), &Bytes::from_static(b"hello"));
        assert_eq!(job.content_type(), "text/plain");
        assert_eq!(job.headers()["traceparent"], "00-abc");
        assert_eq!((job.attempt(), job.attempts_max(), job.priority()), (2, 5, 3));
        assert_eq!(job.enqueued_at_ms(), 1_700_000_000_000);
        assert_eq!(job.lease(), Duration::from_secs(30));
        assert_eq!(job.timeout(), None);
        assert_eq!(job.deadline(), None);
        assert!(format!("{job:?}").contains("payload_bytes: 5"));
    }

    #[tokio::test]
    async fn the_job_timeout_wins_over_the_default() {
        let now = Instant::now();
        let own = Job::new(claimed(1_500), now, Some(Duration::from_secs(30)));
        assert_eq!(own.timeout(), Some(Duration::from_millis(1_500)));
        assert_eq!(own.deadline(), Some(now + Duration::from_millis(1_500)));
        let default = Job::new(claimed(0), now, Some(Duration::from_secs(30)));
        assert_eq!(default.timeout(), Some(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn the_first_stop_reason_sticks_and_wakes_waiters() {
        let job = Job::new(claimed(0), Instant::now(), None);
        let waiter = {
            let job = job.clone();
            tokio::spawn(async move { job.stopped().await })
        };
        let cancelled = {
            let job = job.clone();
            tokio::spawn(async move { job.cancelled().await })
        };
        tokio::task::yield_now().await;
        assert!(!job.is_cancelled());
        assert!(job.stop(StopReason::Cancelled));
        assert!(!job.stop(StopReason::LeaseLost));
        assert_eq!(waiter.await.unwrap(), StopReason::Cancelled);
        cancelled.await.unwrap();
        assert!(job.is_cancelled());
        assert_eq!(job.stop_reason(), Some(StopReason::Cancelled));
    }

    #[tokio::test]
    async fn a_lost_lease_is_not_a_cancellation() {
        let job = Job::new(claimed(0), Instant::now(), None);
        job.stop(StopReason::LeaseLost);
        assert_eq!(job.stopped().await, StopReason::LeaseLost);
        assert!(!job.is_cancelled());
        let cancelled = tokio::time::timeout(Duration::from_millis(20), job.cancelled()).await;
        assert!(cancelled.is_err(), "cancelled() must not resolve on a lost lease");
    }

    #[test]
    fn progress_is_taken_once_and_newer_progress_wins_over_a_restore() {
        let job = Job::new(claimed(0), Instant::now(), None);
        assert_eq!(job.take_progress(), None);
        job.set_progress("10%");
        job.set_progress("20%");
        let sent = job.take_progress().unwrap();
        assert_eq!(sent, "20%");
        assert_eq!(job.take_progress(), None);
        job.restore_progress(sent);
        assert_eq!(job.take_progress().as_deref(), Some("20%"));
        job.set_progress("30%");
        job.restore_progress("20%".into());
        assert_eq!(job.take_progress().as_deref(), Some("30%"));
    }
}
