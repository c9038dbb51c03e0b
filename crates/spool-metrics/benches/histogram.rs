//! What metrics cost on a request path: one histogram observation, with and
//! without an exemplar, from one thread and from two at once, and the whole
//! of what spoold's RPC layer does per call (find the method by a binary
//! search of its path, look for `traceparent` and `grpc-status` headers,
//! read the clock twice, observe).
//!
//! `cargo bench -p spool-metrics`; `docs/performance.md` has the figures.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use spool_metrics::histogram::SECONDS;
use spool_metrics::{Histogram, TraceId};

fn observe(c: &mut Criterion) {
    let histogram = Histogram::new(&SECONDS);
    c.bench_function("observe", |b| {
        b.iter(|| histogram.observe_duration(black_box(Duration::from_micros(80))))
    });
    let trace_id =
        TraceId::from_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    c.bench_function("observe_with_exemplar", |b| {
        b.iter(|| histogram.observe_duration_with_exemplar(black_box(Duration::from_micros(80)), trace_id))
    });
    let shared = Arc::new(Histogram::new(&SECONDS));
    c.bench_function("observe_two_threads_same_histogram", |b| {
        b.iter_custom(|iterations| {
            let other = Arc::clone(&shared);
            let helper = std::thread::spawn(move || {
                for _ in 0..iterations {
                    other.observe_duration(black_box(Duration::from_micros(80)));
                }
            });
            let started = Instant::now();
            for _ in 0..iterations {
                shared.observe_duration(black_box(Duration::from_micros(80)));
            }
            let elapsed = started.elapsed();
            helper.join().unwrap();
            elapsed
        })
    });
}

fn rpc_layer_work(c: &mut Criterion) {
    let mut paths: Vec<String> = [
        "CreateTopic",
        "DeleteTopic",
        "ListTopics",
        "DescribeTopic",
        "Produce",
        "Fetch",
        "Subscribe",
        "ListOffsets",
        "CommitCheckpoint",
        "GetCheckpoint",
        "GetServerInfo",
    ]
    .iter()
    .map(|m| format!("/spool.v1.Log/{m}"))
    .chain(
        [
            "Enqueue",
            "EnqueueBatch",
            "Claim",
            "Heartbeat",
            "Complete",
            "Fail",
            "FinishBatch",
            "Release",
            "Cancel",
            "GetJob",
            "ListJobs",
            "History",
            "RetryDead",
            "PurgeDead",
            "QueueStats",
        ]
        .iter()
        .map(|m| format!("/spool.v1.Jobs/{m}")),
    )
    .collect();
    paths.sort();
    let cells: Vec<Histogram> = paths.iter().map(|_| Histogram::new(&SECONDS)).collect();
    // The headers of a gRPC request from tonic's client, and of a unary
    // response before its trailers.
    let mut request = http::HeaderMap::new();
    for (name, value) in [
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("user-agent", "tonic/0.14.9"),
        ("grpc-timeout", "30000m"),
    ] {
        request.insert(name, value.parse().unwrap());
    }
    let mut response = http::HeaderMap::new();
    response.insert("content-type", "application/grpc".parse().unwrap());
    c.bench_function("rpc_layer_per_call", |b| {
        b.iter(|| {
            let path = black_box("/spool.v1.Log/Produce");
            let method = paths.binary_search_by(|p| p.as_str().cmp(path)).unwrap();
            let started = Instant::now();
            let trace = request
                .get("traceparent")
                .and_then(|value| TraceId::from_traceparent(value.as_bytes()));
            let code = black_box(&response)
                .get("grpc-status")
                .and_then(|value| value.to_str().ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            black_box((trace, code));
            cells[method].observe_duration(started.elapsed());
        })
    });
}

criterion_group!(benches, observe, rpc_layer_work);
criterion_main!(benches);
