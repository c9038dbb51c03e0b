//! `spool-telemetry`: W3C trace context for Spool's records, jobs and
//! calls, and the optional OTLP export of the spans Spool emits.
//!
//! Spool's code emits its trace spans with `tracing`, under the target
//! [`TARGET`], with OpenTelemetry's semantic fields (`otel.name`,
//! `otel.kind`, `messaging.system`, ...). Those spans cost almost nothing
//! unless a subscriber layer records them: `spoold` and `spool-worker`
//! install one ([`otlp`], the `otlp` feature) only when an OTLP endpoint is
//! configured, and their log output never records them.
//!
//! Layout: [`context`] (the `traceparent` text form, reading the current
//! span's context and continuing a remote one), [`endpoint`] (the one
//! grammar of an OTLP endpoint URL), [`otlp`] (the exporter, the
//! subscriber of the binaries; feature `otlp`).
//!
//! What it is not: no propagation format besides W3C trace context, no
//! metrics or logs signals, no sampling policy of its own (the SDK's
//! `OTEL_TRACES_SAMPLER` applies).

#![deny(unsafe_code)]

pub mod context;
pub mod endpoint;
#[cfg(feature = "otlp")]
pub mod otlp;

pub use context::{
    TRACEPARENT, TRACESTATE, TraceParent, add_link, current_traceparent, set_remote_parent, traceparent_of,
};
pub use endpoint::{EndpointError, parse_endpoint};

/// The `tracing` target of every trace span Spool emits. Log output
/// filters it out (`spool_otel=off`), and the OTLP layer records nothing
/// else, so the spans reach the exporter and only the exporter.
pub const TARGET: &str = "spool_otel";

/// The value of `messaging.system` on Spool's spans.
pub const MESSAGING_SYSTEM: &str = "spool";
