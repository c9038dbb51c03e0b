//! W3C trace context (`traceparent`, `tracestate`) as Spool carries it in
//! record headers, job headers and gRPC metadata, and the two moves on a
//! `tracing` span: read its context out ([`traceparent_of`]) and continue a
//! remote one ([`set_remote_parent`]).
//!
//! Both work through `tracing-opentelemetry`'s layer. Without that layer
//! (no export configured) a span has no OpenTelemetry context: reading
//! gives `None` and nothing is invented, and setting a parent does nothing.

use std::fmt;
use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and gRPC metadata key) of the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// The header (and gRPC metadata key) of the W3C vendor trace state.
pub const TRACESTATE: &str = "tracestate";

/// A parsed `traceparent`: `00-{trace id}-{parent span id}-{flags}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    /// The span that is the parent of whatever continues this context.
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

impl TraceParent {
    /// Parses a `traceparent` value by the W3C rules: lower-case hex, a
    /// version other than `ff` (a later version may append fields after a
    /// `-`, version 00 may not), trace and span ids not all zero.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let bytes = value.as_bytes();
        if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let version = &value[0..2];
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        if bytes.len() > 55 && (version == "00" || bytes[55] != b'-') {
            return None;
        }
        let (trace, span, flags) = (&value[3..35], &value[36..52], &value[53..55]);
        if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent {
            trace_id,
            span_id,
            flags: TraceFlags::new(flags),
        })
    }

    /// The trace parent that names `context`'s span, if it is valid.
    pub fn of(context: &SpanContext) -> Option<TraceParent> {
        context.is_valid().then(|| TraceParent {
            trace_id: context.trace_id(),
            span_id: context.span_id(),
            flags: context.trace_flags(),
        })
    }

    /// The remote span context this names, with `tracestate` if one came
    /// with it (an invalid one is dropped, as W3C asks).
    pub fn remote_context(&self, tracestate: Option<&str>) -> SpanContext {
        let state = tracestate
            .and_then(|text| TraceState::from_str(text).ok())
            .unwrap_or_default();
        SpanContext::new(self.trace_id, self.span_id, self.flags, true, state)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            self.flags.to_u8()
        )
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The `traceparent` of `span` when it is recorded by the OpenTelemetry
/// layer; `None` otherwise (no layer, a disabled span).
pub fn traceparent_of(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    TraceParent::of(context.span().span_context()).map(|parent| parent.to_string())
}

/// The `traceparent` of the OpenTelemetry span the caller is in: what a
/// client stores in the headers of a record or job it sends. `None` when
/// tracing is off, so no context is ever invented.
///
/// This is OpenTelemetry's current context, which `tracing-opentelemetry`
/// sets while one of its spans is entered, so log-only `tracing` spans
/// nested inside do not hide it (the current `tracing` span may be one of
/// those, with no context of its own). An application that uses the
/// OpenTelemetry API directly is seen the same way.
pub fn current_traceparent() -> Option<String> {
    opentelemetry::Context::map_current(|context| {
        TraceParent::of(context.span().span_context()).map(|parent| parent.to_string())
    })
}

/// Adds a link from `span` to the remote span named by `traceparent`:
/// for a span that serves several traces at once (a batch of records).
pub fn add_link(span: &Span, traceparent: &str) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = TraceParent::parse(traceparent) {
        span.add_link(parent.remote_context(None));
    }
}

/// Makes `span` a child of the remote span named by `traceparent` (and
/// `tracestate`). Call it right after creating the span, before it is
/// entered. Returns whether it took effect: `false` for an invalid
/// `traceparent`, a disabled span, or no OpenTelemetry layer.
pub fn set_remote_parent(span: &Span, traceparent: &str, tracestate: Option<&str>) -> bool {
    if span.is_disabled() {
        return false;
    }
    let Some(parent) = TraceParent::parse(traceparent) else {
        return false;
    };
    let context = opentelemetry::Context::new().with_remote_span_context(parent.remote_context(tracestate));
    span.set_parent(context).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_reads_back_as_written() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            parent.trace_id,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(parent.span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(parent.flags.is_sampled());
        assert_eq!(parent.to_string(), VALID);
    }

    #[test]
    fn only_w3c_traceparents_parse() {
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid:?}");
        }
        // A later version may add fields after a dash.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_read_or_continued() {
        // No subscriber at all: the span is disabled.
        let span = tracing::info_span!(target: crate::TARGET, "send orders");
        assert!(!set_remote_parent(&span, VALID, None));
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(current_traceparent(), None);
    }

    #[test]
    fn an_invalid_tracestate_is_dropped() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            parent.remote_context(Some("vendor=value")).trace_state().header(),
            "vendor=value"
        );
        assert_eq!(
            parent
                .remote_context(Some("no equals sign"))
                .trace_state()
                .header(),
            ""
        );
        assert!(parent.remote_context(None).is_remote());
    }
}
