//! Batched acknowledgements: the outcomes of finished attempts are collected
//! for a few milliseconds and sent together with one `FinishBatch`, which the
//! server makes durable with one fsync.

use std::sync::Arc;
use std::time::Duration;

use crate::jobs::JobsRoute;
use spool_proto::v1::{self, finish_item::Outcome as ItemOutcome};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::time::Instant;
use tonic::Code;
use tracing::Instrument as _;

use super::backoff::Backoff;
use super::handler::Outcome;
use super::job::Job;
use super::{Stats, is_transient};

/// Bytes counted per item on top of its result or error: id, token, framing.
const ITEM_OVERHEAD_BYTES: usize = 64;

/// The outcome of one attempt, waiting to be sent.
#[derive(Debug)]
pub(crate) struct Ack {
    pub(crate) job: Job,
    pub(crate) outcome: Outcome,
    /// The attempt's `complete {queue}` or `fail {queue}` span, open until
    /// the server has recorded (or refused) the outcome.
    pub(crate) span: tracing::Span,
}

#[derive(Debug, Clone)]
pub(crate) struct AckSettings {
    pub(crate) linger: Duration,
    pub(crate) batch_max: usize,
    pub(crate) batch_bytes_max: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
}

/// What became of one item of a `FinishBatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Recorded; the job is now in this state.
    Recorded(v1::JobState),
    /// The lease is no longer held (it expired, or an earlier try of this
    /// very batch was recorded before its answer was lost).
    Stale,
    /// Worth sending again after a pause.
    Retry,
    /// Refused for good.
    Refused,
}

/// Reads one item's result.
pub(crate) fn fate(result: &v1::FinishResult) -> Fate {
    match Code::from(result.code as i32) {
        Code::Ok => Fate::Recorded(v1::JobState::try_from(result.state).unwrap_or(v1::JobState::Unspecified)),
        Code::FailedPrecondition | Code::NotFound => Fate::Stale,
        code if is_transient(code) => Fate::Retry,
        _ => Fate::Refused,
    }
}

/// Collects acknowledgements from `receiver` and sends them in batches until
/// every sender is gone and everything received has been sent or given up.
pub(crate) async fn run(
    jobs: JobsRoute,
    mut receiver: mpsc::Receiver<Ack>,
    settings: AckSettings,
    stats: Arc<Stats>,
) {
    let sender = Sender {
        jobs,
        settings,
        stats,
    };
    let mut carry: Option<Ack> = None;
    loop {
        let first = match carry.take() {
            Some(ack) => ack,
            None => match receiver.recv().await {
                Some(ack) => ack,
                None => break,
            },
        };
        let mut bytes = first.outcome.wire_bytes() + ITEM_OVERHEAD_BYTES;
        let mut batch = vec![first];
        let linger_end = Instant::now() + sender.settings.linger;
        while batch.len() < sender.settings.batch_max {
            let next = match receiver.try_recv() {
                Ok(ack) => ack,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    match tokio::time::timeout_at(linger_end, receiver.recv()).await {
                        Ok(Some(ack)) => ack,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            let size = next.outcome.wire_bytes() + ITEM_OVERHEAD_BYTES;
            if bytes + size > sender.settings.batch_bytes_max {
                carry = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        sender.send(batch).await;
    }
}

struct Sender {
    jobs: JobsRoute,
    settings: AckSettings,
    stats: Arc<Stats>,
}

impl Sender {
    /// Sends `batch`, again and again while the server is unavailable, until
    /// every item is recorded or refused.
    async fn send(&self, batch: Vec<Ack>) {
        let mut pending = batch;
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        while !pending.is_empty() {
            let items = pending.iter().map(item).collect();
            // The call carries the first item's context: one batch, one
            // parent; the other items' spans stay open until it answers.
            let span = pending[0].span.clone();
            let mut request = tonic::Request::new(v1::FinishBatchRequest { items });
            request.set_timeout(self.settings.request_timeout);
            let sent = async {
                crate::trace::inject(&mut request);
                self.jobs.target().finish_batch(request).await
            };
            let results = match sent.instrument(span).await {
                Ok(response) => {
                    self.stats.add_finish_batch();
                    response.into_inner().results
                }
                // Cluster mode: sent to a node that does not lead the job
                // layer; sent again to the leader it named.
                Err(status) if self.jobs.follow(&status) => {
                    tokio::time::sleep(crate::jobs::FOLLOW_PAUSE).await;
                    continue;
                }
                Err(status) if is_transient(status.code()) => {
                    let delay = backoff.next_delay();
                    if backoff.failures() == 1 {
                        tracing::warn!(
                            jobs = pending.len(),
                            error = %crate::Error::from(status),
                            "could not send job results; retrying until the server answers"
                        );
                    }
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(status) => {
                    tracing::error!(
                        jobs = pending.len(),
                        error = %crate::Error::from(status),
                        "the server refused a batch of job results; those jobs will run again after their leases expire"
                    );
                    return;
                }
            };
            if results.len() != pending.len() {
                tracing::error!(
                    sent = pending.len(),
                    answered = results.len(),
                    "FinishBatch answered a different number of results than it was sent"
                );
                return;
            }
            let mut again = Vec::new();
            for (ack, result) in pending.into_iter().zip(results) {
                if let Some(ack) = self.settle(ack, &result) {
                    again.push(ack);
                }
            }
            pending = again;
            if !pending.is_empty() {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }

    /// Accounts for one item's result; returns the item to send again, if
    /// any.
    fn settle(&self, ack: Ack, result: &v1::FinishResult) -> Option<Ack> {
        let job = &ack.job;
        match fate(result) {
            Fate::Recorded(state) => {
                self.stats.record(state);
                tracing::debug!(
                    job = job.id(),
                    queue = job.queue(),
                    attempt = job.attempt(),
                    state = state.as_str_name(),
                    "job result recorded"
                );
                None
            }
            Fate::Stale => {
                self.stats.add_lost();
                tracing::warn!(
                    job = job.id(),
                    queue = job.queue(),
                    attempt = job.attempt(),
                    reason = %result.message,
                    "the server no longer holds this attempt's lease; its result was not recorded (the job runs again or already ran elsewhere)"
                );
                None
            }
            Fate::Retry => Some(ack),
            Fate::Refused if ack.outcome.is_complete() => {
                tracing::warn!(job = job.id(), queue = job.queue(), reason = %result.message, "the server refused the job's result; failing the job instead");
                Some(Ack {
                    outcome: Outcome::fail_permanently(format!(
                        "the server refused the job's result: {}",
                        result.message
                    )),
                    job: ack.job,
                    span: ack.span,
                })
            }
            Fate::Refused => {
                self.stats.add_lost();
                tracing::error!(job = job.id(), queue = job.queue(), reason = %result.message, "the server refused the job's failure report");
                None
            }
        }
    }
}

fn item(ack: &Ack) -> v1::FinishItem {
    let job_id = ack.job.id().to_owned();
    let lease_token = ack.job.lease_token().to_owned();
    let outcome = match &ack.outcome {
        Outcome::Complete { result } => ItemOutcome::Complete(v1::CompleteRequest {
            job_id,
            lease_token,
            result: result.clone(),
        }),
        Outcome::Fail {
            error,
            retryable,
            retry_delay,
        } => ItemOutcome::Fail(v1::FailRequest {
            job_id,
            lease_token,
            error: error.clone(),
            retryable: Some(*retryable),
            retry_delay_ms: retry_delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }),
    };
    v1::FinishItem {
        outcome: Some(outcome),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn result(code: Code, state: v1::JobState) -> v1::FinishResult {
        v1::FinishResult {
            job_id: "7".into(),
            code: code as u32,
            message: String::new(),
            state: state as i32,
        }
    }

    #[test]
    fn item_results_are_read_by_code() {
        assert_eq!(
            fate(&result(Code::Ok, v1::JobState::Dead)),
            Fate::Recorded(v1::JobState::Dead)
        );
        assert_eq!(
            fate(&result(Code::FailedPrecondition, v1::JobState::Unspecified)),
            Fate::Stale
        );
        assert_eq!(
            fate(&result(Code::NotFound, v1::JobState::Unspecified)),
            Fate::Stale
        );
        assert_eq!(
            fate(&result(Code::Unavailable, v1::JobState::Unspecified)),
            Fate::Retry
        );
        assert_eq!(
            fate(&result(Code::InvalidArgument, v1::JobState::Unspecified)),
            Fate::Refused
        );
    }

    #[test]
    fn items_carry_the_outcome() {
        let job = Job::new(
            v1::ClaimedJob {
                job_id: "9".into(),
                lease_token: "00000000000000aa".into(),
                ..Default::default()
            },
            Instant::now(),
            None,
        );
        let complete = item(&Ack {
            job: job.clone(),
            outcome: Outcome::complete("ok"),
            span: tracing::Span::none(),
        });
        let Some(ItemOutcome::Complete(c)) = complete.outcome else {
            panic!("expected a complete item")
        };
        assert_eq!(
            (c.job_id.as_str(), c.lease_token.as_str()),
            ("9", "00000000000000aa")
        );
        assert_eq!(c.result, Bytes::from_static(b"ok"));
        let fail = item(&Ack {
            job,
            outcome: Outcome::retry_after("busy", Duration::from_millis(1_500)),
            span: tracing::Span::none(),
        });
        let Some(ItemOutcome::Fail(f)) = fail.outcome else {
            panic!("expected a fail item")
        };
        assert_eq!(f.error, "busy");
        assert_eq!(f.retryable, Some(true));
        assert_eq!(f.retry_delay_ms, Some(1_500));
    }
}
