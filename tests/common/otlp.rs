//! A real OTLP trace receiver for the trace tests: a tonic `TraceService`
//! on a free loopback port that keeps every span it is sent, and the
//! `spool-worker` process those tests run against it.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio_stream::wrappers::TcpListenerStream;

/// One received span with the service that sent it, ids in hex.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub kind: i32,
    pub attributes: HashMap<String, String>,
}

/// The OTLP receiver: keeps every span it is sent.
#[derive(Debug, Default, Clone)]
pub struct Collector {
    pub spans: Arc<Mutex<Vec<Received>>>,
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
pub async fn start_collector() -> (SocketAddr, Collector) {
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
pub struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    /// Starts `spool-worker` on `queue` running `exec`, exporting spans to
    /// `endpoint`; its stderr goes to `log`.
    pub fn start(server_url: &str, queue: &str, endpoint: &str, exec: &str, log: PathBuf) -> Worker {
        let child = Command::new(super::binary("spool-worker"))
            .args([
                "--server",
                server_url,
                "--queue",
                queue,
                "--otlp-endpoint",
                endpoint,
            ])
            .args(["--retry-delay", "10ms", "--exec", exec])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("worker log"))
            .spawn()
            .expect("spawn spool-worker");
        Worker { child, log }
    }

    /// SIGTERM, then waits for the exit (and so for the last export).
    pub fn terminate_and_wait(&mut self) {
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

impl Collector {
    /// The spans received so far of the trace `trace_id`.
    pub fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

/// One line per span, for failure messages.
pub fn summary(spans: &[Received]) -> Vec<String> {
    spans
        .iter()
        .map(|span| {
            format!(
                "{}: {} {} <- {}",
                span.service, span.name, span.span_id, span.parent_span_id
            )
        })
        .collect()
}

/// The span `name` from `service`; panics naming what the trace holds.
pub fn find<'a>(spans: &'a [Received], service: &str, name: &str) -> &'a Received {
    spans
        .iter()
        .find(|span| span.service == service && span.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no span {name:?} from {service}; the trace holds {:#?}",
                summary(spans)
            )
        })
}

/// Asserts one connected trace: every span's parent is `root` or another
/// span of the trace.
pub fn assert_connected(spans: &[Received], root: &str) {
    let ids: Vec<&str> = spans.iter().map(|span| span.span_id.as_str()).collect();
    for span in spans {
        assert!(
            span.parent_span_id == root || ids.contains(&span.parent_span_id.as_str()),
            "{} has a parent outside the trace: {:#?}",
            span.name,
            summary(spans)
        );
    }
}
