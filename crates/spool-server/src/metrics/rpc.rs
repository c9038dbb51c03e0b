//! `spool_rpc_duration_seconds{method,code}`: the latency of every call of
//! the `spool.v1.Log` and `spool.v1.Jobs` services, by method and status.
//!
//! [`RpcLayer`] wraps the gRPC server. A call's method is found by a binary
//! search of the request path in a table built once from the services'
//! descriptors; its histogram is a cell of a fixed grid (method by status
//! code) allocated on first use. Recording is two relaxed atomic adds:
//! no lock, no hash lookup, no allocation on the request path.
//!
//! What is measured: from the call reaching the server (before admission
//! waits for in-flight room) to its response headers. For a unary call
//! that is the whole handler, since tonic builds the headers once the
//! handler has answered. A handler's error travels in those headers
//! (gRPC's trailers-only response), so the `code` label is the
//! `grpc-status` header, and `ok` when the headers carry none. The only
//! statuses this misses are failures to encode a successful answer, which
//! tonic reports in the trailers. For `Subscribe`, a stream, the time is
//! until the subscription is accepted (or refused), not its lifetime.
//!
//! Exemplars: a call carrying W3C `traceparent` metadata leaves its trace id
//! as its bucket's exemplar (OpenMetrics only).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prost::Message;
use spool_metrics::{ExemplarFamily, Histogram, Series, TraceId, histogram};
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

/// The services whose calls are measured.
const SERVICES: [&str; 5] = [
    "spool.v1.Log",
    "spool.v1.Jobs",
    "spool.v1.Metrics",
    "spool.v1.Admin",
    "spool.v1.Cluster",
];

/// gRPC status codes 0 to 16, by number, as `code` label values.
const CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// The label value of a status code.
pub fn code_label(code: Code) -> &'static str {
    CODES[code as usize]
}

#[derive(Debug)]
struct Method {
    /// `/spool.v1.Log/Produce`.
    path: String,
    /// `Produce`: method names are unique across the measured services.
    name: String,
}

/// The latency histograms of every measured method and status code.
#[derive(Debug)]
pub struct RpcMetrics {
    /// Sorted by path.
    methods: Vec<Method>,
    /// `methods.len() * CODES.len()` cells, method-major.
    cells: Box<[OnceLock<Histogram>]>,
}

impl RpcMetrics {
    /// The methods of `SERVICES` as `descriptor_set` (an encoded
    /// `FileDescriptorSet`) describes them.
    pub fn new(descriptor_set: &[u8]) -> Result<RpcMetrics, prost::DecodeError> {
        let files = prost_types::FileDescriptorSet::decode(descriptor_set)?;
        let mut methods = Vec::new();
        for file in &files.file {
            let package = file.package();
            for service in &file.service {
                let full_name = format!("{package}.{}", service.name());
                if !SERVICES.contains(&full_name.as_str()) {
                    continue;
                }
                for method in &service.method {
                    methods.push(Method {
                        path: format!("/{full_name}/{}", method.name()),
                        name: method.name().to_owned(),
                    });
                }
            }
        }
        methods.sort_by(|a, b| a.path.cmp(&b.path));
        let cells = (0..methods.len() * CODES.len())
            .map(|_| OnceLock::new())
            .collect();
        Ok(RpcMetrics { methods, cells })
    }

    /// The measured methods' names, for tests and docs.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.iter().map(|m| m.name.as_str())
    }

    fn method_index(&self, path: &str) -> Option<usize> {
        self.methods
            .binary_search_by(|method| method.path.as_str().cmp(path))
            .ok()
    }

    fn cell(&self, method: usize, code: usize) -> &Histogram {
        self.cells[method * CODES.len() + code].get_or_init(|| Histogram::new(&histogram::SECONDS))
    }

    fn record(&self, call: &Call, headers: &http::HeaderMap) {
        let code = headers
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok())
            .map_or(Code::Ok as usize, |code| {
                if code < CODES.len() {
                    code
                } else {
                    Code::Unknown as usize
                }
            });
        let elapsed = call.started.elapsed();
        let cell = self.cell(call.method, code);
        match call.trace_id {
            Some(trace_id) => cell.observe_duration_with_exemplar(elapsed, trace_id),
            None => cell.observe_duration(elapsed),
        }
    }
}

/// Renders the grid as `spool_rpc_duration_seconds`.
#[derive(Debug)]
pub struct RpcDurations(pub Arc<RpcMetrics>);

impl ExemplarFamily for RpcDurations {
    fn name(&self) -> &str {
        "spool_rpc_duration_seconds"
    }

    fn help(&self) -> &str {
        "Time from a call reaching the server to its response headers, by method and gRPC status code."
    }

    fn each_series(&self, each: &mut dyn FnMut(Series<'_>)) {
        let metrics = &self.0;
        for (m, method) in metrics.methods.iter().enumerate() {
            for (c, code) in CODES.iter().enumerate() {
                if let Some(histogram) = metrics.cells[m * CODES.len() + c].get() {
                    each(Series {
                        labels: &[("method", &method.name), ("code", code)],
                        histogram: histogram.snapshot(),
                    });
                }
            }
        }
    }
}

/// The tower layer that measures calls; see the module documentation.
#[derive(Debug, Clone)]
pub struct RpcLayer {
    metrics: Arc<RpcMetrics>,
}

impl RpcLayer {
    pub fn new(metrics: Arc<RpcMetrics>) -> Self {
        RpcLayer { metrics }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rpc<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

/// What a measured call needs to be recorded.
#[derive(Debug)]
struct Call {
    method: usize,
    started: Instant,
    trace_id: Option<TraceId>,
}

impl<S, B, R> Service<http::Request<B>> for Rpc<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self
            .metrics
            .method_index(request.uri().path())
            .map(|method| Call {
                method,
                started: Instant::now(),
                trace_id: request
                    .headers()
                    .get("traceparent")
                    .and_then(|value| TraceId::from_traceparent(value.as_bytes())),
            });
        RpcFuture {
            inner: self.inner.call(request),
            call: call.map(|call| (call, Arc::clone(&self.metrics))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; records the call when it resolves.
    #[derive(Debug)]
    pub struct RpcFuture<F> {
        #[pin]
        inner: F,
        call: Option<(Call, Arc<RpcMetrics>)>,
    }
}

impl<F, R, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some((call, metrics))) = (&result, this.call.take()) {
            metrics.record(&call, response.headers());
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> RpcMetrics {
        RpcMetrics::new(spool_proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn every_method_of_both_services_is_measured_under_a_unique_name() {
        let metrics = metrics();
        let names: Vec<&str> = metrics.method_names().collect();
        for expected in ["Produce", "Fetch", "Subscribe", "Enqueue", "Claim", "FinishBatch"] {
            assert!(names.contains(&expected), "{expected} in {names:?}");
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(metrics.method_index("/spool.v1.Log/Produce").is_some());
        assert!(metrics.method_index("/grpc.health.v1.Health/Check").is_none());
    }

    #[test]
    fn the_code_comes_from_the_status_header_and_is_ok_without_one() {
        let metrics = metrics();
        let fetch = metrics.method_index("/spool.v1.Log/Fetch").unwrap();
        let call = |trace_id| Call {
            method: fetch,
            started: Instant::now(),
            trace_id,
        };
        metrics.record(&call(None), &http::HeaderMap::new());
        let mut not_found = http::HeaderMap::new();
        not_found.insert("grpc-status", "5".parse().unwrap());
        let trace_id = TraceId::from_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        metrics.record(&call(trace_id), &not_found);
        let mut nonsense = http::HeaderMap::new();
        nonsense.insert("grpc-status", "99".parse().unwrap());
        metrics.record(&call(None), &nonsense);

        let mut seen = Vec::new();
        RpcDurations(Arc::new(metrics)).each_series(&mut |series| {
            let labels: Vec<String> = series.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let exemplars = series.histogram.exemplars.iter().flatten().count();
            seen.push((labels.join(","), series.histogram.count, exemplars));
        });
        assert_eq!(
            seen,
            [
                ("method=Fetch,code=ok".to_owned(), 1, 0),
                ("method=Fetch,code=unknown".to_owned(), 1, 0),
                ("method=Fetch,code=not_found".to_owned(), 1, 1),
            ]
        );
    }
}
