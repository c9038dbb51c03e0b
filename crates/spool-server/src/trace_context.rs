//! One trace span per call of `spool.v1.Log` and `spool.v1.Jobs`, which
//! continues the caller's W3C trace context (`traceparent` and `tracestate`
//! gRPC metadata).
//!
//! [`TraceLayer`] wraps the gRPC server like the metrics' `RpcLayer`. The
//! span follows OpenTelemetry's RPC conventions: named after the method
//! (`spool.v1.Jobs/Enqueue`), kind server, `rpc.system = "grpc"`, and the
//! status code recorded when the response headers come (an error travels
//! in them: trailers-only). It covers the decoding of the request and the
//! handler, so the handler's own spans (append, fsync wait, per-job spans)
//! are its children. Health and reflection calls get none.
//!
//! [`DecodeLayer`], the innermost layer, adds a `decode` span: from the
//! moment tonic gets the call (after admission waited for in-flight room)
//! until the handler takes the decoded message out of the request
//! (`into_inner`), which drops the span kept in the request's extensions.
//! That is reading the body and decoding the protobuf message.
//!
//! With no OTLP export the spans are disabled at their call sites (no
//! layer records the target `spool_otel`), and the layers cost a check of
//! that.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use spool_telemetry::{TARGET, TRACEPARENT, TRACESTATE};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;
use tracing::instrument::Instrumented;

/// The services whose calls are traced.
const SERVICES: [&str; 2] = ["/spool.v1.Log/", "/spool.v1.Jobs/"];

/// The tower layer; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

/// The traced service `path` belongs to.
fn traced_service(path: &str) -> Option<&'static str> {
    SERVICES
        .iter()
        .find(|service| path.starts_with(**service))
        .copied()
}

/// The span of a call to `path`, a child of the caller's context when the
/// headers carry one; a disabled span for other services.
fn call_span(path: &str, headers: &http::HeaderMap) -> Span {
    let Some(service) = traced_service(path) else {
        return Span::none();
    };
    let span = tracing::info_span!(
        target: TARGET,
        "rpc",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service.trim_matches('/'),
        rpc.method = &path[service.len()..],
        rpc.grpc.status_code = tracing::field::Empty,
    );
    if !span.is_disabled()
        && let Some(traceparent) = headers.get(TRACEPARENT).and_then(|value| value.to_str().ok())
    {
        let tracestate = headers.get(TRACESTATE).and_then(|value| value.to_str().ok());
        spool_telemetry::set_remote_parent(&span, traceparent, tracestate);
    }
    span
}

impl<S, B, R> Service<http::Request<B>> for Traced<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = call_span(request.uri().path(), request.headers());
        let inner = {
            // Entered while the inner service starts, so spans it creates
            // at once are children too.
            let _entered = span.enter();
            self.inner.call(request)
        };
        TracedFuture {
            inner: tracing::Instrument::instrument(inner, span),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future inside the call's span; records the
    /// status code when the response headers come.
    #[derive(Debug)]
    pub struct TracedFuture<F> {
        #[pin]
        inner: Instrumented<F>,
    }
}

impl<F, R, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = std::task::ready!(this.inner.as_mut().poll(cx));
        let span = this.inner.span();
        if !span.is_disabled()
            && let Ok(response) = &result
        {
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok())
                .unwrap_or(0);
            span.record("rpc.grpc.status_code", code);
            // OpenTelemetry's gRPC server rule: only codes that mean the
            // server failed mark the span as an error.
            if is_server_error(tonic::Code::from_i32(code)) {
                span.record("otel.status_code", "error");
            }
        }
        Poll::Ready(result)
    }
}

fn is_server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    )
}

/// The layer of the `decode` span; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeLayer;

impl<S> Layer<S> for DecodeLayer {
    type Service = Decode<S>;

    fn layer(&self, inner: S) -> Decode<S> {
        Decode { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Decode<S> {
    inner: S,
}

/// The `decode` span, riding in the request's extensions until the
/// handler consumes the request, which ends it.
#[derive(Debug, Clone)]
struct DecodeSpan {
    _open: Span,
}

impl<S, B> Service<http::Request<B>> for Decode<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if traced_service(request.uri().path()).is_some() {
            let span = tracing::info_span!(target: TARGET, "decode");
            if !span.is_disabled() {
                request.extensions_mut().insert(DecodeSpan { _open: span });
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_spool_services_get_a_span_and_none_without_a_subscriber() {
        let headers = http::HeaderMap::new();
        assert!(call_span("/grpc.health.v1.Health/Check", &headers).is_none());
        // No subscriber records `spool_otel` here: disabled, not built.
        assert!(call_span("/spool.v1.Jobs/Enqueue", &headers).is_disabled());
    }

    #[test]
    fn client_errors_do_not_mark_the_server_span() {
        assert!(!is_server_error(tonic::Code::Ok));
        assert!(!is_server_error(tonic::Code::NotFound));
        assert!(!is_server_error(tonic::Code::ResourceExhausted));
        assert!(is_server_error(tonic::Code::Internal));
        assert!(is_server_error(tonic::Code::Unavailable));
    }
}
