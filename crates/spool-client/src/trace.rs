//! The client's trace spans and W3C context propagation.
//!
//! Spans follow OpenTelemetry's messaging conventions: `send {topic}` for a
//! produced batch, `send {queue}` for an enqueue (kind producer),
//! `process {queue}` for a worker's attempt (kind consumer), with
//! `messaging.system = "spool"` and the destination, partition, message id
//! and batch size. They are `tracing` spans under the target
//! `spool_otel`: an application that installs `tracing-opentelemetry`'s
//! layer exports them, and without one each is a disabled span.
//!
//! Every call carries the caller's context as `traceparent` gRPC metadata,
//! so the server's span of the call is a child of the client's; records
//! and jobs carry it in their headers, so whoever consumes them later
//! continues the same trace. Nothing is added when there is no context.

use spool_telemetry::{MESSAGING_SYSTEM, TARGET, TRACEPARENT};
use tonic::metadata::MetadataValue;
use tracing::Span;

/// Puts the current OpenTelemetry context in the call's metadata.
pub(crate) fn inject<T>(request: &mut tonic::Request<T>) {
    if let Some(traceparent) = spool_telemetry::current_traceparent()
        && let Ok(value) = MetadataValue::try_from(traceparent)
    {
        request.metadata_mut().insert(TRACEPARENT, value);
    }
}

/// `send {topic}`: one produced batch.
pub(crate) fn send_batch_span(topic: &str, partition: u32, record_count: u64) -> Span {
    tracing::info_span!(
        target: TARGET,
        "send",
        otel.name = format_args!("send {topic}"),
        otel.kind = "producer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "send",
        messaging.destination.name = topic,
        messaging.destination.partition.id = partition,
        messaging.batch.message_count = record_count,
    )
}

/// `send {queue}`: one enqueued job, or a batch of them
/// (`job_count` > 1; `queue` is then the first job's).
pub(crate) fn enqueue_span(queue: &str, job_count: usize) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "send",
        otel.name = format_args!("send {queue}"),
        otel.kind = "producer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "send",
        messaging.destination.name = queue,
        messaging.batch.message_count = tracing::field::Empty,
        messaging.message.id = tracing::field::Empty,
    );
    if job_count > 1 {
        span.record("messaging.batch.message_count", job_count as u64);
    }
    span
}

/// `process {queue}`: one attempt of a claimed job, a child of the
/// context in the job's `traceparent` header when it has one.
pub(crate) fn process_span(
    queue: &str,
    job_id: &str,
    attempt: u32,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "process",
        otel.name = format_args!("process {queue}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "process",
        messaging.destination.name = queue,
        messaging.message.id = job_id,
        spool.job.attempt = attempt,
    );
    if let Some(traceparent) = traceparent {
        spool_telemetry::set_remote_parent(&span, traceparent, tracestate);
    }
    span
}

/// Stores `span`'s context as the `traceparent` header of a record or job
/// that has none, through `insert`. Does nothing without a context.
pub(crate) fn store_context(span: &Span, has_traceparent: bool, insert: impl FnOnce(String)) {
    if has_traceparent {
        return;
    }
    if let Some(traceparent) = spool_telemetry::traceparent_of(span) {
        insert(traceparent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_layer_no_metadata_or_header_is_invented() {
        let mut request = tonic::Request::new(());
        inject(&mut request);
        assert!(request.metadata().get(TRACEPARENT).is_none());
        let span = enqueue_span("emails", 1);
        assert!(span.is_disabled());
        store_context(&span, false, |_| panic!("no context to store"));
    }
}
