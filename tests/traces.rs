//! End-to-end test of trace export: a real OTLP receiver (a small tonic
//! `TraceService` on 127.0.0.1) collects what `spoold` and `spool-worker`
//! export with `--otlp-endpoint`, and one job enqueued with a
//! `traceparent` comes back as one connected trace spanning both
//! processes.
//!
//! Run `cargo build -p spool-server -p spool-worker` first: the binaries
//! are taken from `target/debug`.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Spoold, binary};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use spool_client::Client;
use spool_client::jobs::{JobState, NewJob};
use tokio_stream::wrappers::TcpListenerStream;

/// One received span with the service that sent it, ids in hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: i32,
    attributes: HashMap<String, String>,
}

/// The OTLP receiver: keeps every span it is sent.
#[derive(Debug, Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .map(|attribute| text(attribute.value.as_ref()))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    kept.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|attribute| (attribute.key.clone(), text(attribute.value.as_ref())))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Starts the receiver on a free loopback port.
async fn start_collector() -> (SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("the OTLP receiver stopped");
    });
    (address, collector)
}

/// `spool-worker` with its stderr in a file, printed if the test fails.
struct Worker {
    child: Child,
    log: std::path::PathBuf,
}

impl Worker {
    fn terminate_and_wait(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "the worker did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- worker log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

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

    let log = dir.path().join("worker.log");
    let mut worker = Worker {
        child: Command::new(binary("spool-worker"))
            .args([
                "--server",
                &server.url(),
                "--queue",
                "traced",
                "--otlp-endpoint",
                &endpoint,
            ])
            // What the command sees as its trace context is its result.
            .args(["--exec", r#"printf '%s' "$TRACEPARENT""#])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn spool-worker"),
        log,
    };

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

    let spans: Vec<Received> = collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|span| span.trace_id == TRACE_ID)
        .cloned()
        .collect();
    let summary: Vec<String> = spans
        .iter()
        .map(|span| {
            format!(
                "{}: {} {} <- {}",
                span.service, span.name, span.span_id, span.parent_span_id
            )
        })
        .collect();
    let find = |service: &str, name: &str| {
        spans
            .iter()
            .find(|span| span.service == service && span.name == name)
            .unwrap_or_else(|| panic!("no span {name:?} from {service}; the trace holds {summary:#?}"))
    };

    // The server continued the job's context.
    let enqueue = find("spoold", "enqueue traced");
    assert_eq!(enqueue.parent_span_id, ROOT_SPAN_ID);
    assert_eq!(enqueue.attributes["messaging.system"], "spool");
    assert_eq!(enqueue.attributes["messaging.message.id"], enqueued.job_id);
    let claim = find("spoold", "claim traced");
    assert_eq!(claim.parent_span_id, ROOT_SPAN_ID);
    assert_eq!(claim.attributes["spool.job.attempt"], "1");
    let appends: Vec<&Received> = spans
        .iter()
        .filter(|span| span.name == "append __jobs" && span.parent_span_id == enqueue.span_id)
        .collect();
    assert_eq!(appends.len(), 1, "{summary:#?}");
    assert!(
        spans
            .iter()
            .any(|span| span.name == "fsync wait" && span.parent_span_id == enqueue.span_id),
        "{summary:#?}"
    );

    // The worker's attempt is a child of the job's context, its run and
    // acknowledgement children of the attempt.
    let process = find("spool-worker", "process traced");
    assert_eq!(process.parent_span_id, ROOT_SPAN_ID);
    assert_eq!(process.kind, SpanKind::Consumer as i32);
    assert_eq!(process.attributes["messaging.destination.name"], "traced");
    assert_eq!(process.attributes["messaging.message.id"], enqueued.job_id);
    let run = find("spool-worker", "run traced");
    assert_eq!(run.parent_span_id, process.span_id);
    assert_eq!(
        seen_by_command,
        format!("00-{TRACE_ID}-{}-01", run.span_id),
        "the command continues the run span"
    );
    let complete = find("spool-worker", "complete traced");
    assert_eq!(complete.parent_span_id, process.span_id);

    // The acknowledgement's call is a server span under the worker's span.
    let finish = find("spoold", "spool.v1.Jobs/FinishBatch");
    assert_eq!(finish.parent_span_id, complete.span_id);
    assert_eq!(finish.kind, SpanKind::Server as i32);
    assert_eq!(finish.attributes["rpc.grpc.status_code"], "0");
    assert!(
        spans
            .iter()
            .any(|span| span.name == "fsync wait" && span.parent_span_id == finish.span_id),
        "{summary:#?}"
    );

    // One connected trace: every span's parent is the test's root span or
    // another span of the trace.
    let ids: Vec<&str> = spans.iter().map(|span| span.span_id.as_str()).collect();
    for span in &spans {
        assert!(
            span.parent_span_id == ROOT_SPAN_ID || ids.contains(&span.parent_span_id.as_str()),
            "{} has a parent outside the trace: {summary:#?}",
            span.name
        );
    }
}
