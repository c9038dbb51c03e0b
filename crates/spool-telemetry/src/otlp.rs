//! OTLP trace export over gRPC, and the `tracing` subscriber of Spool's
//! binaries (feature `otlp`).
//!
//! The exporter is `opentelemetry-otlp`'s tonic client on the workspace's
//! tonic, behind the SDK's batch span processor (a thread of its own that
//! exports every `OTEL_BSP_SCHEDULE_DELAY`, 5 s by default, or when its
//! batch is full). Its `tracing` layer records only the spans under
//! [`crate::TARGET`]; log output records everything else. With no
//! endpoint configured nothing here runs: no layer, no thread, no channel.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::endpoint::{EndpointError, parse_endpoint};

/// The standard variable naming the OTLP endpoint of every signal.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard variable naming the service in exported spans.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// Where spans go and under which service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// `http://HOST:PORT` of an OTLP gRPC receiver.
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl OtlpSettings {
    /// The settings of a process: `explicit` (a flag or configuration key,
    /// already checked) wins over `OTEL_EXPORTER_OTLP_ENDPOINT`; `None` when
    /// neither is set, which turns export off. The service name is
    /// `OTEL_SERVICE_NAME`, else `default_service_name`. `lookup` reads the
    /// environment (a parameter so tests need not change it).
    pub fn resolve(
        explicit: Option<&str>,
        lookup: impl Fn(&str) -> Option<String>,
        default_service_name: &str,
    ) -> Result<Option<OtlpSettings>, EndpointError> {
        let endpoint = match explicit {
            Some(endpoint) => parse_endpoint(endpoint)?,
            None => match lookup(OTEL_EXPORTER_OTLP_ENDPOINT).filter(|value| !value.trim().is_empty()) {
                Some(endpoint) => parse_endpoint(&endpoint)?,
                None => return Ok(None),
            },
        };
        let service_name = lookup(OTEL_SERVICE_NAME)
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| default_service_name.to_owned());
        Ok(Some(OtlpSettings {
            endpoint,
            service_name,
        }))
    }
}

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    #[error("cannot build the OTLP exporter for {endpoint}")]
    Build {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot install the tracing subscriber")]
    Subscriber {
        #[source]
        source: tracing_subscriber::util::TryInitError,
    },
}

/// The running export: flush it with [`Exporter::shutdown`] before the
/// process ends, or the last spans are lost.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Builds the OTLP exporter and its batch processor. Must be called
    /// inside a tokio runtime (the gRPC channel's task runs on it); the
    /// channel connects on the first export, so a receiver that is not up
    /// yet costs only that export.
    pub fn start(settings: &OtlpSettings) -> Result<Exporter, OtlpError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .build()
            .map_err(|source| OtlpError::Build {
                endpoint: settings.endpoint.clone(),
                source,
            })?;
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Exporter { provider })
    }

    /// The tracer spans are recorded with.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("spool")
    }

    /// A `tracing` layer that records spans into this exporter: for
    /// applications that build their own subscriber, so that their spans
    /// and Spool's client spans (target [`crate::TARGET`]) make one trace.
    /// It records every span it is shown; give it a filter
    /// (`Layer::with_filter`) to keep some out. The binaries use
    /// [`init_subscriber`], whose layer records Spool's spans only.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer())
            .with_location(false)
            .with_threads(false)
    }

    /// Exports what is buffered and stops. Blocks until the receiver
    /// answered or the export timed out; call it off the async runtime's
    /// threads (`spawn_blocking`).
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "could not export the last spans");
        }
    }
}

/// `tracing-opentelemetry`'s layer over `tracer`, filtered to Spool's trace
/// spans, without the attributes that would say nothing here (the target
/// is always the same; code locations and threads are noise in a trace
/// view).
fn spans_layer<S>(tracer: SdkTracer) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_filter(Targets::new().with_target(crate::TARGET, LevelFilter::TRACE))
}

/// The log filter of the binaries when `RUST_LOG` says nothing else:
/// `info`, but openraft (cluster mode's consensus engine) only at `error`
/// and its replication streams not at all. openraft logs every election
/// step at info, and every failed call to an unreachable peer at warn
/// (and at error once per retry, every half second per group), which
/// would bury everything else while a node is down; a peer that becomes
/// unreachable is reported once by Spool's own transport instead. Errors
/// that stop a group (storage failures) stay visible.
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=error,openraft::replication=off";

/// The log filter of the binaries: [`DEFAULT_LOG_FILTER`] followed by the
/// directives of `RUST_LOG`, never the trace spans. A directive replaces
/// an earlier one for the same target, so `RUST_LOG=warn` changes the
/// default level and leaves openraft's alone, and `RUST_LOG=openraft=info`
/// (or `openraft::replication=warn`) brings openraft's lines back. A
/// `RUST_LOG` that does not parse is ignored, as before.
pub fn log_filter() -> EnvFilter {
    log_filter_from(std::env::var("RUST_LOG").ok().as_deref())
}

fn log_filter_from(rust_log: Option<&str>) -> EnvFilter {
    let filter = rust_log
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .and_then(|text| EnvFilter::try_new(format!("{DEFAULT_LOG_FILTER},{text}")).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER));
    filter.add_directive(
        format!("{}=off", crate::TARGET)
            .parse()
            .expect("a valid directive"),
    )
}

/// Installs the global subscriber of a Spool binary: log lines on stderr
/// (human or JSON, filtered by `RUST_LOG`), and, when `otlp` is given, the
/// OTLP export of the trace spans. Returns the exporter to shut down at
/// the end. Must be called inside a tokio runtime when `otlp` is given.
pub fn init_subscriber(json: bool, otlp: Option<&OtlpSettings>) -> Result<Option<Exporter>, OtlpError> {
    let ansi = std::io::stderr().is_terminal();
    let logs: Box<dyn Layer<Registry> + Send + Sync> = if json {
        Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_filter(log_filter()),
        )
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter(log_filter()),
        )
    };
    let exporter = otlp.map(Exporter::start).transpose()?;
    let spans = exporter.as_ref().map(|exporter| spans_layer(exporter.tracer()));
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|source| OtlpError::Subscriber { source })?;
    Ok(exporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `filter` lets an event of `target` at `level` through.
    macro_rules! lets_through {
        ($filter:expr, $target:literal, $level:ident) => {{
            let subscriber = tracing_subscriber::registry().with($filter);
            tracing::subscriber::with_default(subscriber, || {
                tracing::enabled!(target: $target, tracing::Level::$level)
            })
        }};
    }

    #[test]
    fn openraft_is_quiet_by_default_and_rust_log_brings_it_back() {
        let default = || log_filter_from(None);
        assert!(lets_through!(default(), "spool_server", INFO));
        assert!(!lets_through!(default(), "openraft::core::raft_core", WARN));
        assert!(lets_through!(default(), "openraft::core::raft_core", ERROR));
        assert!(!lets_through!(default(), "openraft::replication", ERROR));

        // A bare level changes the default level, not openraft's.
        let warn = || log_filter_from(Some("warn"));
        assert!(!lets_through!(warn(), "spool_server", INFO));
        assert!(lets_through!(warn(), "spool_server", WARN));
        assert!(!lets_through!(warn(), "openraft::engine", WARN));

        // Naming openraft overrides the default for it.
        let loud = || log_filter_from(Some("openraft=info,openraft::replication=warn"));
        assert!(lets_through!(loud(), "openraft::engine", INFO));
        assert!(lets_through!(loud(), "openraft::replication", WARN));

        // A RUST_LOG that does not parse leaves the default.
        assert!(!lets_through!(
            log_filter_from(Some("=[")),
            "openraft::engine",
            WARN
        ));
        // Trace spans never reach the logs.
        assert!(!lets_through!(
            log_filter_from(Some("trace")),
            "spool_otel",
            ERROR
        ));
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_named() {
        assert_eq!(OtlpSettings::resolve(None, env(&[]), "spoold").unwrap(), None);
        assert_eq!(
            OtlpSettings::resolve(None, env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "")]), "spoold").unwrap(),
            None
        );
    }

    #[test]
    fn the_flag_wins_over_the_standard_variable() {
        let lookup = env(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://env:4317"),
            (OTEL_SERVICE_NAME, "billing-spool"),
        ]);
        let settings = OtlpSettings::resolve(Some("http://flag:4317"), &lookup, "spoold")
            .unwrap()
            .unwrap();
        assert_eq!(settings.endpoint, "http://flag:4317");
        assert_eq!(settings.service_name, "billing-spool");
        let settings = OtlpSettings::resolve(None, &lookup, "spoold").unwrap().unwrap();
        assert_eq!(settings.endpoint, "http://env:4317");
        let settings = OtlpSettings::resolve(
            None,
            env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://env:4317/")]),
            "spoold",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (settings.endpoint.as_str(), settings.service_name.as_str()),
            ("http://env:4317", "spoold")
        );
    }

    #[test]
    fn an_invalid_standard_variable_is_an_error_not_silence() {
        let error = OtlpSettings::resolve(
            None,
            env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4317")]),
            "spoold",
        )
        .unwrap_err();
        assert!(error.to_string().contains("http://"), "{error}");
    }
}
