//! End-to-end test of trace export: a real OTLP receiver (a small tonic
//! `TraceService` on 127.0.0.1, `common/otlp.rs`) collects what `spoold`
//! and `spool-worker` export with `--otlp-endpoint`, and a job enqueued
//! with a `traceparent` comes back as one connected trace spanning both
//! processes, its failed first attempt and its retry included.
//! (`traces_client.rs` adds a traced application in front.)
//!
//! Run `cargo build -p spool-server -p spool-worker` first: the binaries
//! are taken from `target/debug`.

mod common;

use std::time::{Duration, Instant};

use common::Spoold;
use common::otlp::{Received, Worker, assert_connected, find, start_collector, summary};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use spool_client::Client;
use spool_client::jobs::{JobState, NewJob};

const TRACE_ID: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const ROOT_SPAN_ID: &str = "051581bf3cb55c13";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_across_the_server_and_the_worker() {
    let (collector_address, collector) = start_collector().await;
    let endpoint = format!("http://{collector_address}");
    let dir = tempfile::tempdir().unwrap();
    let otlp_setting = format!("otlp_endpoint={endpoint}");
    let mut server = Spoold::start(dir.path(), &[&otlp_setting]);

    let client = Client::connect(server.url()).await.unwrap();
    let traceparent = format!("00-{TRACE_ID}-{ROOT_SPAN_ID}-01");
    let enqueued = client
        .jobs()
        .enqueue(NewJob {
            headers: [("traceparent".to_owned(), traceparent.clone())].into(),
            ..NewJob::new("traced", "payload")
        })
        .await
        .unwrap();

    // The first attempt fails (and is retried after 10 ms); the second
    // prints the trace context the command sees, which is its result.
    let mut worker = Worker::start(
        &server.url(),
        "traced",
        &endpoint,
        r#"[ "$SPOOL_ATTEMPT" = 1 ] && exit 1; printf '%s' "$TRACEPARENT""#,
        dir.path().join("worker.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        let job = client.jobs().get(&enqueued.job_id).await.unwrap();
        if job.state == JobState::Succeeded {
            break job;
        }
        assert!(Instant::now() < deadline, "the job did not complete: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seen_by_command = String::from_utf8(job.result.unwrap_or_default().to_vec()).unwrap();

    // A SIGTERM makes both processes export what they hold before they end.
    worker.terminate_and_wait();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "spoold: {status}");

    let spans = collector.trace(TRACE_ID);
    let summary = summary(&spans);

    // The server continued the job's context.
    let enqueue = find(&spans, "spoold", "enqueue traced");
    assert_eq!(enqueue.parent_span_id, ROOT_SPAN_ID);
    assert_eq!(enqueue.attributes["messaging.system"], "spool");
    assert_eq!(enqueue.attributes["messaging.message.id"], enqueued.job_id);
    let children_of = |parent: &Received, name: &str| {
        spans
            .iter()
            .filter(|span| span.name == name && span.parent_span_id == parent.span_id)
            .count()
    };
    assert_eq!(children_of(enqueue, "append __jobs"), 1, "{summary:#?}");
    assert_eq!(children_of(enqueue, "fsync wait"), 1, "{summary:#?}");
    let claims: Vec<&Received> = spans.iter().filter(|span| span.name == "claim traced").collect();
    assert_eq!(claims.len(), 2, "one claim per attempt: {summary:#?}");
    for claim in &claims {
        assert_eq!(claim.service, "spoold");
        assert_eq!(claim.parent_span_id, ROOT_SPAN_ID);
    }

    // Each attempt is a `process` span, a child of the job's context, with
    // its run and its acknowledgement beneath.
    let attempt = |number: &str| {
        spans
            .iter()
            .find(|span| {
                span.name == "process traced"
                    && span.attributes.get("spool.job.attempt").map(String::as_str) == Some(number)
            })
            .unwrap_or_else(|| panic!("no process span of attempt {number}: {summary:#?}"))
    };
    let (first, second) = (attempt("1"), attempt("2"));
    for process in [first, second] {
        assert_eq!(process.service, "spool-worker");
        assert_eq!(process.parent_span_id, ROOT_SPAN_ID);
        assert_eq!(process.kind, SpanKind::Consumer as i32);
        assert_eq!(process.attributes["messaging.destination.name"], "traced");
        assert_eq!(process.attributes["messaging.message.id"], enqueued.job_id);
        assert_eq!(children_of(process, "run traced"), 1, "{summary:#?}");
    }

    // The failure: the worker's `fail` span, the server's FinishBatch call
    // beneath it, and the retry the server scheduled within that call.
    let fail = find(&spans, "spool-worker", "fail traced");
    assert_eq!(fail.parent_span_id, first.span_id);
    let fail_call = spans
        .iter()
        .find(|span| span.name == "spool.v1.Jobs/FinishBatch" && span.parent_span_id == fail.span_id)
        .unwrap_or_else(|| panic!("no FinishBatch under the fail span: {summary:#?}"));
    let retry = find(&spans, "spoold", "retry scheduled");
    assert_eq!(retry.parent_span_id, fail_call.span_id);
    assert_eq!(retry.attributes["spool.job.retry_delay_ms"], "10");

    // The success: the command continued the run span; the worker's
    // `complete` span and the server's call beneath it.
    let run = spans
        .iter()
        .find(|span| span.name == "run traced" && span.parent_span_id == second.span_id)
        .unwrap();
    assert_eq!(
        seen_by_command,
        format!("00-{TRACE_ID}-{}-01", run.span_id),
        "the command continues the run span"
    );
    let complete = find(&spans, "spool-worker", "complete traced");
    assert_eq!(complete.parent_span_id, second.span_id);
    let finish = spans
        .iter()
        .find(|span| span.name == "spool.v1.Jobs/FinishBatch" && span.parent_span_id == complete.span_id)
        .unwrap_or_else(|| panic!("no FinishBatch under the complete span: {summary:#?}"));
    assert_eq!(finish.kind, SpanKind::Server as i32);
    assert_eq!(finish.attributes["rpc.grpc.status_code"], "0");
    assert_eq!(children_of(finish, "fsync wait"), 1, "{summary:#?}");

    assert_connected(&spans, ROOT_SPAN_ID);
}
