//! Series expressions over the metrics history, and their evaluation over
//! samples taken at the steps of a range.
//!
//! The grammar is a small, PromQL-shaped one:
//!
//! ```text
//! expr     = selector | call
//! call     = ("rate" | "increase") "(" expr ")"
//!          | "quantile" "(" number "," expr ")"
//!          | ("sum" | "max" | "min" | "avg") "(" expr ")"
//! selector = name [ "{" label "=" "\"" value "\"" { "," label "=" "\"" value "\"" } "}" ]
//! ```
//!
//! A selector picks a family by the name `/metrics` gives it (counters with
//! their `_total`) and the series whose labels equal the given ones. A gauge
//! or counter alone is its value; `rate` is a counter's increase per second
//! between steps (or a histogram's observations per second), `increase` the
//! increase itself, `quantile(q, h)` the q-quantile of a histogram's
//! observations between steps, interpolated in the bucket it falls in.
//! An aggregation inside a function merges the raw series first
//! (`quantile(0.99, sum(h))` is the quantile of all queues together);
//! outside, it combines the function's results (`max(quantile(0.99, h))`
//! is the worst queue's).

use std::collections::BTreeMap;
use std::sync::Arc;

use spool_proto::v1::MetricKind;

use super::sample::{SampledPoint, Snapshot};

/// The labels of one series, sorted by name.
pub type Labels = Vec<(String, String)>;

/// Labels from pairs, for tests.
#[cfg(test)]
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A series expression that does not parse, or cannot apply to what it
/// names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("series {expression:?}: {reason}")]
pub struct ExprError {
    pub expression: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Sum,
    Max,
    Min,
    Avg,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Selector {
        name: String,
        matchers: Vec<(String, String)>,
    },
    Aggregate(Aggregation, Box<Expr>),
    Rate(Box<Expr>),
    Increase(Box<Expr>),
    Quantile(f64, Box<Expr>),
}

/// Parses one expression.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    let fail = |reason: String| ExprError {
        expression: text.to_owned(),
        reason,
    };
    let mut parser = Parser { text, at: 0 };
    let expr = parser.expr().map_err(fail)?;
    parser.space();
    if parser.at != text.len() {
        return Err(fail(format!(
            "unexpected {:?} at character {}",
            &text[parser.at..],
            parser.at + 1
        )));
    }
    Ok(expr)
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: char) -> Result<(), String> {
        self.space();
        if self.rest().starts_with(token) {
            self.at += token.len_utf8();
            Ok(())
        } else {
            Err(format!(
                "expected {token:?} at character {}, found {:?}",
                self.at + 1,
                self.rest()
                    .chars()
                    .next()
                    .map_or("the end".to_owned(), String::from)
            ))
        }
    }

    fn name(&mut self) -> Result<&str, String> {
        self.space();
        let rest = self.rest();
        let length = rest
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
            })
            .map_or(rest.len(), |(i, _)| i);
        if length == 0 {
            return Err(format!("expected a name at character {}", self.at + 1));
        }
        let start = self.at;
        self.at += length;
        Ok(&self.text[start..self.at])
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let name = self.name()?.to_owned();
        self.space();
        if !self.rest().starts_with('(') {
            return self.selector(name);
        }
        self.eat('(')?;
        let expr = match name.as_str() {
            "rate" => Expr::Rate(Box::new(self.expr()?)),
            "increase" => Expr::Increase(Box::new(self.expr()?)),
            "quantile" => {
                self.space();
                let rest = self.rest();
                let length = rest.find(',').ok_or("quantile takes (q, histogram)")?;
                let q: f64 = rest[..length]
                    .trim()
                    .parse()
                    .map_err(|_| format!("{:?} is not a number", rest[..length].trim()))?;
                if !(0.0..=1.0).contains(&q) {
                    return Err(format!("quantile {q} is outside 0 to 1"));
                }
                self.at += length + 1;
                Expr::Quantile(q, Box::new(self.expr()?))
            }
            "sum" => Expr::Aggregate(Aggregation::Sum, Box::new(self.expr()?)),
            "max" => Expr::Aggregate(Aggregation::Max, Box::new(self.expr()?)),
            "min" => Expr::Aggregate(Aggregation::Min, Box::new(self.expr()?)),
            "avg" => Expr::Aggregate(Aggregation::Avg, Box::new(self.expr()?)),
            other => {
                return Err(format!(
                    "unknown function {other:?}; known: rate, increase, quantile, sum, max, min, avg"
                ));
            }
        };
        self.eat(')')?;
        Ok(expr)
    }

    fn selector(&mut self, name: String) -> Result<Expr, String> {
        let mut matchers = Vec::new();
        self.space();
        if self.rest().starts_with('{') {
            self.eat('{')?;
            loop {
                self.space();
                if self.rest().starts_with('}') {
                    break;
                }
                let label = self.name()?.to_owned();
                self.eat('=')?;
                self.eat('"')?;
                let mut value = String::new();
                let mut chars = self.rest().char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err("an escape at the end".to_owned()),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("the value of {label} is not closed")),
                    }
                };
                self.at += end + 1;
                matchers.push((label, value));
                self.space();
                if self.rest().starts_with(',') {
                    self.at += 1;
                } else {
                    break;
                }
            }
            self.eat('}')?;
        }
        Ok(Expr::Selector { name, matchers })
    }
}

impl Expr {
    /// The family the expression reads.
    pub fn family(&self) -> &str {
        match self {
            Expr::Selector { name, .. } => name,
            Expr::Aggregate(_, inner)
            | Expr::Rate(inner)
            | Expr::Increase(inner)
            | Expr::Quantile(_, inner) => inner.family(),
        }
    }
}

/// What evaluation works on: the sample in force at each step (`None`
/// where there was none), steps in time order. The first step is the one
/// before the range, for rates and quantiles of the first point.
#[derive(Debug)]
pub struct Steps {
    pub times_ms: Vec<i64>,
    pub samples: Vec<Option<Arc<Snapshot>>>,
}

/// One output series: labels and a value (or none) per step after the
/// first.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// Raw series: a sampled point (or none) per step, by label set.
type Raw = BTreeMap<Labels, Vec<Option<SampledPoint>>>;

/// Evaluates `expr` over `steps`. `kind` is the type of the family the
/// expression reads, as the samples recorded it.
pub fn evaluate(expr: &Expr, kind: MetricKind, steps: &Steps) -> Result<Vec<Output>, String> {
    match expr {
        Expr::Aggregate(aggregation, inner)
            if !matches!(**inner, Expr::Selector { .. } | Expr::Aggregate(..)) =>
        {
            let outputs = evaluate(inner, kind, steps)?;
            Ok(vec![combine(*aggregation, &outputs, steps.times_ms.len() - 1)])
        }
        Expr::Rate(inner) | Expr::Increase(inner) => {
            if kind == MetricKind::Gauge {
                return Err("rate and increase take a counter or a histogram, not a gauge".to_owned());
            }
            let per_second = matches!(expr, Expr::Rate(_));
            Ok(raw(inner, kind, steps)?
                .into_iter()
                .map(|(labels, points)| Output {
                    labels,
                    values: deltas(&points, per_second),
                })
                .collect())
        }
        Expr::Quantile(q, inner) => {
            if kind != MetricKind::Histogram {
                return Err("quantile takes a histogram".to_owned());
            }
            Ok(raw(inner, kind, steps)?
                .into_iter()
                .map(|(labels, points)| Output {
                    labels,
                    values: points
                        .windows(2)
                        .map(|pair| quantile(*q, &pair[0], &pair[1]))
                        .collect(),
                })
                .collect())
        }
        Expr::Selector { .. } | Expr::Aggregate(..) => {
            if kind == MetricKind::Histogram {
                return Err("a histogram needs quantile(q, ...), rate(...) or increase(...)".to_owned());
            }
            Ok(raw(expr, kind, steps)?
                .into_iter()
                .map(|(labels, points)| Output {
                    labels,
                    values: points[1..]
                        .iter()
                        .map(|point| point.as_ref().map(|p| p.value))
                        .collect(),
                })
                .collect())
        }
    }
}

/// The raw series a selector, or an aggregation of raw series, yields.
fn raw(expr: &Expr, kind: MetricKind, steps: &Steps) -> Result<Raw, String> {
    match expr {
        Expr::Selector { name, matchers } => {
            let mut raw = Raw::new();
            for (step, sample) in steps.samples.iter().enumerate() {
                let Some(sample) = sample else { continue };
                for (labels, point) in sample.series(name) {
                    let selected = matchers
                        .iter()
                        .all(|(key, value)| labels.iter().any(|(k, v)| k == key && v == value));
                    if selected {
                        raw.entry(labels.clone())
                            .or_insert_with(|| vec![None; steps.samples.len()])[step] = Some(point.clone());
                    }
                }
            }
            Ok(raw)
        }
        Expr::Aggregate(aggregation, inner) => {
            if kind != MetricKind::Gauge && *aggregation != Aggregation::Sum {
                return Err(format!(
                    "only sum merges counters and histograms; take {aggregation:?} of a rate or quantile instead"
                )
                .to_lowercase());
            }
            let series = raw(inner, kind, steps)?;
            let merged = (0..steps.samples.len())
                .map(|step| {
                    merge(
                        *aggregation,
                        series.values().filter_map(|points| points[step].as_ref()),
                    )
                })
                .collect();
            Ok(Raw::from([(Labels::new(), merged)]))
        }
        _ => {
            Err("rate, increase and quantile apply to a family or a sum of one, not to each other".to_owned())
        }
    }
}

/// Several series' points at one step as one point.
fn merge<'a>(
    aggregation: Aggregation,
    points: impl Iterator<Item = &'a SampledPoint>,
) -> Option<SampledPoint> {
    let mut merged: Option<SampledPoint> = None;
    let mut count = 0.0;
    for point in points {
        count += 1.0;
        let Some(into) = merged.as_mut() else {
            merged = Some(point.clone());
            continue;
        };
        into.value = match aggregation {
            Aggregation::Sum | Aggregation::Avg => into.value + point.value,
            Aggregation::Max => into.value.max(point.value),
            Aggregation::Min => into.value.min(point.value),
        };
        if into.bounds == point.bounds {
            if into.buckets.len() < point.buckets.len() {
                into.buckets.resize(point.buckets.len(), 0);
            }
            for (into, add) in into.buckets.iter_mut().zip(&point.buckets) {
                *into += add;
            }
            into.sum += point.sum;
        }
    }
    if aggregation == Aggregation::Avg
        && let Some(merged) = merged.as_mut()
    {
        merged.value /= count;
    }
    merged
}

/// Results of several series combined per step.
fn combine(aggregation: Aggregation, outputs: &[Output], steps: usize) -> Output {
    let values = (0..steps)
        .map(|step| {
            let present: Vec<f64> = outputs.iter().filter_map(|output| output.values[step]).collect();
            if present.is_empty() {
                return None;
            }
            Some(match aggregation {
                Aggregation::Sum => present.iter().sum(),
                Aggregation::Max => present.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Aggregation::Min => present.iter().copied().fold(f64::INFINITY, f64::min),
                Aggregation::Avg => present.iter().sum::<f64>() / present.len() as f64,
            })
        })
        .collect();
    Output {
        labels: Labels::new(),
        values,
    }
}

/// The counter's (or a histogram's observation count's) increase over
/// each step, per second when `per_second`.
fn deltas(points: &[Option<SampledPoint>], per_second: bool) -> Vec<Option<f64>> {
    points
        .windows(2)
        .map(|pair| {
            let (count, elapsed_ms) = since(pair[0].as_ref(), pair[1].as_ref()?, SampledPoint::total)?;
            if per_second {
                (elapsed_ms > 0).then(|| count / (elapsed_ms as f64 / 1000.0))
            } else {
                Some(count)
            }
        })
        .collect()
}

/// `measure` at `now` less at `before`, and the milliseconds between: from
/// the server's start when `before` is missing, of an earlier run of the
/// server, or larger (a reset). `None` when both are the same sample.
fn since(
    before: Option<&SampledPoint>,
    now: &SampledPoint,
    measure: impl Fn(&SampledPoint) -> f64,
) -> Option<(f64, i64)> {
    match before {
        Some(before) if before.time_ms == now.time_ms => None,
        Some(before) if before.start_ms == now.start_ms && measure(before) <= measure(now) => {
            Some((measure(now) - measure(before), now.time_ms - before.time_ms))
        }
        _ => Some((measure(now), now.time_ms - now.start_ms)),
    }
}

/// The q-quantile of the observations between two samples of a histogram.
fn quantile(q: f64, before: &Option<SampledPoint>, now: &Option<SampledPoint>) -> Option<f64> {
    let now = now.as_ref()?;
    let before = before.as_ref().filter(|before| {
        before.start_ms == now.start_ms && before.bounds == now.bounds && before.total() <= now.total()
    });
    if before.is_some_and(|before| before.time_ms == now.time_ms) {
        return None;
    }
    let buckets: Vec<f64> = (0..now.buckets.len())
        .map(|i| {
            let earlier = before.and_then(|b| b.buckets.get(i)).copied().unwrap_or(0);
            now.buckets[i].saturating_sub(earlier) as f64
        })
        .collect();
    let total: f64 = buckets.iter().sum();
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut cumulative = 0.0;
    for (i, &count) in buckets.iter().enumerate() {
        if count > 0.0 && cumulative + count >= rank {
            let Some(&upper) = now.bounds.get(i) else {
                // The +Inf bucket: the largest finite bound is all we know.
                return now.bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { now.bounds[i - 1] };
            return Some(lower + (upper - lower) * ((rank - cumulative) / count));
        }
        cumulative += count;
    }
    now.bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(name: &str, matchers: &[(&str, &str)]) -> Expr {
        Expr::Selector {
            name: name.to_owned(),
            matchers: labels(matchers),
        }
    }

    #[test]
    fn expressions_parse_into_their_tree() {
        assert_eq!(
            parse(r#" rate( spool_jobs_completed_total{queue="a \"b\"", state = "x"} ) "#).unwrap(),
            Expr::Rate(Box::new(selector(
                "spool_jobs_completed_total",
                &[("queue", "a \"b\""), ("state", "x")]
            )))
        );
        assert_eq!(
            parse("quantile(0.99, sum(spool_job_run_seconds))").unwrap(),
            Expr::Quantile(
                0.99,
                Box::new(Expr::Aggregate(
                    Aggregation::Sum,
                    Box::new(selector("spool_job_run_seconds", &[]))
                ))
            )
        );
        assert_eq!(parse("spool_jobs{}").unwrap(), selector("spool_jobs", &[]));
        assert_eq!(
            parse("max(spool_consumer_lag_seconds)").unwrap().family(),
            "spool_consumer_lag_seconds"
        );
    }

    #[test]
    fn malformed_expressions_say_what_is_wrong() {
        for (text, reason) in [
            ("", "expected a name"),
            ("rate(x", "expected ')'"),
            ("median(x)", "unknown function \"median\""),
            ("quantile(1.5, x)", "outside 0 to 1"),
            ("quantile(x)", "quantile takes (q, histogram)"),
            ("x{a=1}", "expected '\"'"),
            ("x{a=\"1}", "not closed"),
            ("x y", "unexpected \"y\""),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.reason.contains(reason), "{text:?}: {error}");
            assert_eq!(error.expression, text);
        }
    }

    fn point(time_ms: i64, start_ms: i64, value: f64, buckets: &[u64]) -> Option<SampledPoint> {
        Some(SampledPoint {
            time_ms,
            start_ms,
            value,
            buckets: buckets.to_vec(),
            sum: 0.0,
            // Counters have no bounds.
            bounds: Arc::new(if buckets.is_empty() {
                vec![]
            } else {
                vec![0.1, 1.0]
            }),
        })
    }

    #[test]
    fn rates_count_from_a_restart_and_skip_a_repeated_sample() {
        let points = [
            point(0, -10_000, 100.0, &[]),
            point(10_000, -10_000, 150.0, &[]),
            // A restart at 15 s: 20 counted since.
            point(20_000, 15_000, 20.0, &[]),
            point(20_000, 15_000, 20.0, &[]),
            None,
            point(40_000, 15_000, 60.0, &[]),
        ];
        assert_eq!(
            deltas(&points, true),
            [Some(5.0), Some(4.0), None, None, Some(60.0 / 25.0)]
        );
        assert_eq!(deltas(&points, false)[..2], [Some(50.0), Some(20.0)]);
    }

    #[test]
    fn quantiles_interpolate_in_the_bucket_of_the_step_s_observations() {
        // Bounds 0.1 and 1.0, then +Inf. Before: 10 fast ones.
        let before = point(0, 0, 0.0, &[10]);
        // The step adds 2 fast, 8 in (0.1, 1.0].
        let now = point(10_000, 0, 0.0, &[12, 8]);
        let median = quantile(0.5, &before, &now).unwrap();
        assert!((median - (0.1 + 0.9 * (3.0 / 8.0))).abs() < 1e-9, "{median}");
        assert_eq!(quantile(0.1, &before, &now), Some(0.05));
        // Nothing observed in the step: no point.
        assert_eq!(quantile(0.5, &now, &now), None);
        // Observations past the last bound: the last bound.
        let slow = point(20_000, 0, 0.0, &[12, 8, 5]);
        assert_eq!(quantile(0.99, &now, &slow), Some(1.0));
    }
}
