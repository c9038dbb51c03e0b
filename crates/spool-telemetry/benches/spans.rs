//! What Spool's trace spans cost on a request path, with export off and
//! on: the work the producer adds per record and per batch (read the
//! current context, create and enter a `send {topic}` span, add the
//! `traceparent` metadata).
//!
//! Three setups: no subscriber at all (a library user without tracing);
//! the binaries' log subscriber with export off (a `fmt` layer whose
//! filter drops the `spool_otel` target, writing to a sink); and an
//! OpenTelemetry layer recording the spans (export on, without the
//! exporter's batch thread: spans are built and dropped).
//!
//! `cargo bench -p spool-telemetry --features otlp --bench spans`

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use spool_telemetry::{MESSAGING_SYSTEM, TARGET};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// The producer's per-batch and per-record work, as in spool-client.
fn produce_path_work(topic: &str) -> Option<String> {
    let span = tracing::info_span!(
        target: TARGET,
        "send",
        otel.name = format_args!("send {topic}"),
        otel.kind = "producer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.destination.name = topic,
        messaging.destination.partition.id = 3u32,
        messaging.batch.message_count = 100u64,
    );
    let _entered = span.enter();
    // The record's header and the call's metadata.
    let record_header = spool_telemetry::current_traceparent();
    let metadata = spool_telemetry::current_traceparent();
    record_header.or(metadata)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce_path_spans");
    group.bench_function("no_subscriber", |b| {
        b.iter(|| produce_path_work(std::hint::black_box("orders")))
    });

    let logs_only = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(
                tracing_subscriber::EnvFilter::new("info")
                    .add_directive(format!("{TARGET}=off").parse().unwrap()),
            ),
    );
    tracing::subscriber::with_default(logs_only, || {
        group.bench_function("export_off_log_subscriber", |b| {
            b.iter(|| produce_path_work(std::hint::black_box("orders")))
        });
    });

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let recording = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("bench"))
            .with_filter(
                tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::TRACE),
            ),
    );
    tracing::subscriber::with_default(recording, || {
        group.bench_function("export_on_spans_recorded", |b| {
            b.iter(|| produce_path_work(std::hint::black_box("orders")))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
