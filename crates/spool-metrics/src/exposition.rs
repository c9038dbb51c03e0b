//! Rendering metrics as text: Prometheus 0.0.4 by default, OpenMetrics 1.0
//! when the scraper's `Accept` header asks for it.
//!
//! Nearly everything goes through a prometheus-client [`Registry`] of
//! scrape-time collectors, and its two encoders. The one exception is a
//! histogram family whose buckets carry exemplars ([`ExemplarFamily`]):
//! prometheus-client attaches exemplars only to its own histogram type,
//! which takes a lock on every observation, and its `Exemplar` cannot be
//! built outside the crate. Such a family is written here, in the same
//! syntax the crate writes, after the registry's families and before
//! OpenMetrics' closing `# EOF`.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

use crate::histogram::HistogramSnapshot;

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: what a plain `curl` gets.
    Prometheus,
    /// OpenMetrics 1.0 text: what Prometheus asks for first, and the only
    /// format that carries exemplars.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` (with a non-zero quality), else
    /// Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                let refused = params.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One series of an [`ExemplarFamily`]: its label pairs and its counts.
#[derive(Debug)]
pub struct Series<'a> {
    pub labels: &'a [(&'a str, &'a str)],
    pub histogram: HistogramSnapshot,
}

/// A histogram family whose buckets may carry exemplars, read at scrape
/// time. See the module documentation for why it is not a collector.
pub trait ExemplarFamily: std::fmt::Debug + Send + Sync {
    /// The family's name, without `_bucket`, `_sum` or `_count`.
    fn name(&self) -> &str;
    fn help(&self) -> &str;
    /// Calls `each` for every series that has observations.
    fn each_series(&self, each: &mut dyn FnMut(Series<'_>));
}

/// Everything one endpoint serves: a registry and the exemplar families.
#[derive(Debug, Default)]
pub struct Exposition {
    pub registry: Registry,
    families: Vec<Box<dyn ExemplarFamily>>,
}

impl Exposition {
    pub fn new(registry: Registry) -> Self {
        Exposition {
            registry,
            families: Vec::new(),
        }
    }

    pub fn add_exemplar_family(&mut self, family: Box<dyn ExemplarFamily>) {
        self.families.push(family);
    }

    /// Every metric, in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::with_capacity(64 * 1024);
        // Writing to a String fails only if a collector reports an error;
        // ours do not, and a scrape must not fail for a metric's sake.
        let encoded = match format {
            Format::Prometheus => prometheus_text::encode(&mut out, &self.registry),
            Format::OpenMetrics => text::encode_registry(&mut out, &self.registry),
        };
        if let Err(error) = encoded {
            tracing::error!(%error, "a metrics collector failed to encode");
        }
        for family in &self.families {
            write_family(&mut out, format, family.as_ref());
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn write_family(out: &mut String, format: Format, family: &dyn ExemplarFamily) {
    let name = family.name();
    let _ = writeln!(out, "# HELP {name} {}", escape_help(family.help()));
    let _ = writeln!(out, "# TYPE {name} histogram");
    family.each_series(&mut |series| {
        let labels = label_list(series.labels);
        let histogram = &series.histogram;
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, &(bound, count)) in histogram.buckets.iter().enumerate() {
            cumulative += count;
            let _ = write!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{}\"}} {cumulative}",
                float(bound)
            );
            if format == Format::OpenMetrics
                && let Some(Some(exemplar)) = histogram.exemplars.get(i)
            {
                let seconds = exemplar
                    .timestamp
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |since| since.as_secs_f64());
                let _ = write!(
                    out,
                    " # {{trace_id=\"{}\"}} {} {}",
                    exemplar.trace_id,
                    float(exemplar.value),
                    float(seconds)
                );
            }
            out.push('\n');
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", float(histogram.sum));
        let _ = writeln!(out, "{name}_count{braces} {}", histogram.count);
    });
}

/// `key="value",...` with values escaped as both formats require.
fn label_list(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as both formats read it: `+Inf`, or the shortest decimal that
/// reads back as the same value.
fn float(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if value.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::histogram::{Exemplar, TraceId};

    #[test]
    fn the_accept_header_chooses_the_format() {
        let prometheus_default = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus_default)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Prometheus
        );
    }

    #[derive(Debug)]
    struct OneSeries;

    impl ExemplarFamily for OneSeries {
        fn name(&self) -> &str {
            "demo_seconds"
        }

        fn help(&self) -> &str {
            "A demo."
        }

        fn each_series(&self, each: &mut dyn FnMut(Series<'_>)) {
            let trace_id =
                TraceId::from_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                    .unwrap();
            each(Series {
                labels: &[("method", "Produce"), ("code", "a\"b")],
                histogram: HistogramSnapshot {
                    buckets: vec![(0.5, 1), (1.0, 2), (f64::INFINITY, 1)],
                    sum: 3.25,
                    count: 4,
                    exemplars: vec![
                        None,
                        Some(Exemplar {
                            trace_id,
                            value: 0.75,
                            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
                        }),
                        None,
                    ],
                },
            });
        }
    }

    fn exposition() -> Exposition {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        counter.inc_by(7);
        registry.register("demo_things", "Things", counter);
        let mut exposition = Exposition::new(registry);
        exposition.add_exemplar_family(Box::new(OneSeries));
        exposition
    }

    #[test]
    fn prometheus_text_has_no_exemplars_and_no_eof() {
        let text = exposition().render(Format::Prometheus);
        assert_eq!(
            text,
            "# HELP demo_things_total Things.\n\
             # TYPE demo_things_total counter\n\
             demo_things_total 7\n\
             # HELP demo_seconds A demo.\n\
             # TYPE demo_seconds histogram\n\
             demo_seconds_bucket{method=\"Produce\",code=\"a\\\"b\",le=\"0.5\"} 1\n\
             demo_seconds_bucket{method=\"Produce\",code=\"a\\\"b\",le=\"1.0\"} 3\n\
             demo_seconds_bucket{method=\"Produce\",code=\"a\\\"b\",le=\"+Inf\"} 4\n\
             demo_seconds_sum{method=\"Produce\",code=\"a\\\"b\"} 3.25\n\
             demo_seconds_count{method=\"Produce\",code=\"a\\\"b\"} 4\n"
        );
    }

    #[test]
    fn openmetrics_carries_exemplars_and_ends_with_eof() {
        let text = exposition().render(Format::OpenMetrics);
        assert!(
            text.starts_with("# HELP demo_things Things.\n# TYPE demo_things counter\ndemo_things_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "demo_seconds_bucket{method=\"Produce\",code=\"a\\\"b\",le=\"1.0\"} 3 \
                 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.75 1.5\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
