//! End-to-end test of a traced application: the test process installs
//! `spool_client::telemetry::otlp::Exporter`'s layer as its global
//! subscriber (a process of its own, so no other test shares it), produces
//! a record and enqueues a job inside its own span, and the trace the OTLP
//! receiver gets runs from that span through `spoold` to `spool-worker`.
//!
//! Run `cargo build -p spool-server -p spool-worker` first: the binaries
//! are taken from `target/debug`.

mod common;

use std::time::{Duration, Instant};

use common::Spoold;
use common::otlp::{Worker, assert_connected, find, start_collector, summary};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use spool_client::jobs::{JobState, NewJob};
use spool_client::telemetry::TraceParent;
use spool_client::telemetry::otlp::{Exporter, OtlpSettings};
use spool_client::{Client, NewTopic, ProducerConfig, Record};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_application_s_record_and_job_continue_its_trace() {
    let (collector_address, collector) = start_collector().await;
    let endpoint = format!("http://{collector_address}");
    let exporter = Exporter::start(&OtlpSettings {
        endpoint: endpoint.clone(),
        service_name: "shop".to_owned(),
    })
    .unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(exporter.layer())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let otlp_setting = format!("otlp_endpoint={endpoint}");
    let mut server = Spoold::start(dir.path(), &[&otlp_setting]);
    let client = Client::connect(server.url()).await.unwrap();
    client.create_topic(NewTopic::new("orders", 1)).await.unwrap();
    let producer = client
        .producer("orders", ProducerConfig::default())
        .await
        .unwrap();

    let checkout = tracing::info_span!("checkout");
    let root = TraceParent::parse(&spool_client::telemetry::traceparent_of(&checkout).unwrap()).unwrap();
    let (trace_id, root_span_id) = (root.trace_id.to_string(), root.span_id.to_string());
    let enqueued = async {
        producer.send(Record::new("order-7")).await.unwrap();
        client
            .jobs()
            .enqueue(NewJob::new("receipts", "order-7"))
            .await
            .unwrap()
    }
    .instrument(checkout.clone())
    .await;
    drop(checkout);

    let mut worker = Worker::start(
        &server.url(),
        "receipts",
        &endpoint,
        "cat > /dev/null",
        dir.path().join("worker.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.jobs().get(&enqueued.job_id).await.unwrap().state != JobState::Succeeded {
        assert!(Instant::now() < deadline, "the job did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The record carries the application's context in its headers.
    let (records, _) = client.fetch_records("orders", 0, 0, 1 << 20, 0).await.unwrap();
    let header = records[0]
        .headers
        .iter()
        .find(|header| header.key == "traceparent")
        .and_then(|header| header.value.clone())
        .expect("a traceparent header");
    assert_eq!(header, format!("00-{trace_id}-{root_span_id}-01").as_bytes());

    worker.terminate_and_wait();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "spoold: {status}");
    tokio::task::spawn_blocking(move || exporter.shutdown())
        .await
        .unwrap();

    let spans = collector.trace(&trace_id);
    let summary = summary(&spans);
    let checkout = find(&spans, "shop", "checkout");
    assert_eq!(checkout.parent_span_id, "", "the application's span is the root");

    // The record: `send orders` in the application, the Produce call and
    // its append and fsync wait in the server.
    let send = find(&spans, "shop", "send orders");
    assert_eq!(send.parent_span_id, checkout.span_id);
    assert_eq!(send.kind, SpanKind::Producer as i32);
    assert_eq!(send.attributes["messaging.destination.partition.id"], "0");
    assert_eq!(send.attributes["messaging.batch.message_count"], "1");
    let produce = find(&spans, "spoold", "spool.v1.Log/Produce");
    assert_eq!(produce.parent_span_id, send.span_id);
    assert_eq!(
        find(&spans, "spoold", "append orders").parent_span_id,
        produce.span_id
    );
    for step in ["admission wait", "decode"] {
        assert!(
            spans
                .iter()
                .any(|span| span.name == step && span.parent_span_id == produce.span_id),
            "{step}: {summary:#?}"
        );
    }
    assert!(
        spans
            .iter()
            .any(|span| span.name == "fsync wait" && span.parent_span_id == produce.span_id),
        "{summary:#?}"
    );

    // The job: `send receipts` in the application, the Enqueue call and
    // the job's `enqueue` span in the server, the attempt in the worker.
    let send_job = find(&spans, "shop", "send receipts");
    assert_eq!(send_job.parent_span_id, checkout.span_id);
    assert_eq!(send_job.attributes["messaging.message.id"], enqueued.job_id);
    assert_eq!(
        find(&spans, "spoold", "spool.v1.Jobs/Enqueue").parent_span_id,
        send_job.span_id
    );
    assert_eq!(
        find(&spans, "spoold", "enqueue receipts").parent_span_id,
        send_job.span_id
    );
    assert_eq!(
        find(&spans, "spoold", "claim receipts").parent_span_id,
        send_job.span_id
    );
    let process = find(&spans, "spool-worker", "process receipts");
    assert_eq!(process.parent_span_id, send_job.span_id);

    assert_connected(&spans, "");
}
