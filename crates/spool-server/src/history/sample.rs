//! One sample of the metrics history: built from the server's own
//! `/metrics` page, stored as a `MetricsSample` message (metrics.proto), and
//! read back as a [`Snapshot`] to evaluate series expressions over.
//!
//! What is kept: every counter, gauge and histogram family of the page
//! under its name, except the few that make no chart (listed in
//! [`SKIPPED`]). The `partition` label is folded away, so the history grows
//! with topics, queues and consumers, not with partitions: partition values
//! are summed, except gauges in seconds (a lag's age), whose largest is
//! kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use spool_metrics::parse::{Kind, Page};
use spool_proto::v1::{MetricKind, MetricsSample, SampledFamily, SampledSeries};

use super::query::Labels;

/// Families the history leaves out: offsets and build facts, which are
/// not charted, and uptime, which each sample's start time already says.
pub const SKIPPED: [&str; 4] = [
    "spool_partition_high_watermark",
    "spool_partition_log_start_offset",
    "spool_build_info",
    "spool_uptime_seconds",
];

/// The label folded away by summing (or, for seconds, taking the largest).
const FOLDED_LABEL: &str = "partition";

/// Every family the page declares (with a `# TYPE` line, whether or not
/// it has series yet) under its stored name, with its kind.
pub fn declared_families(page: &Page) -> Vec<(String, MetricKind)> {
    page.types
        .iter()
        .filter(|(name, _)| !SKIPPED.contains(&name.as_str()))
        .filter_map(|(name, kind)| match kind {
            Kind::Counter if name.ends_with("_total") => Some((name.clone(), MetricKind::Counter)),
            Kind::Counter => Some((format!("{name}_total"), MetricKind::Counter)),
            Kind::Gauge => Some((name.clone(), MetricKind::Gauge)),
            Kind::Histogram => Some((name.clone(), MetricKind::Histogram)),
            Kind::Other => None,
        })
        .collect()
}

/// Builds the stored sample from a parsed page.
pub fn from_page(page: &Page, server_start_time_ms: i64, interval_ms: u64) -> MetricsSample {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for sample in &page.samples {
        let Some((family_name, kind)) = page.family_of(&sample.name) else {
            continue;
        };
        if SKIPPED.contains(&family_name) {
            continue;
        }
        let (kind, stored_name) = match kind {
            Kind::Counter => (MetricKind::Counter, sample.name.clone()),
            Kind::Gauge => (MetricKind::Gauge, family_name.to_owned()),
            Kind::Histogram => (MetricKind::Histogram, family_name.to_owned()),
            Kind::Other => continue,
        };
        // A counter's `_created` line is a timestamp, not a count.
        if kind == MetricKind::Counter && !sample.name.ends_with("_total") {
            continue;
        }
        let family = families.entry(stored_name.clone()).or_insert_with(|| Family {
            kind,
            fold_by_max: kind == MetricKind::Gauge && stored_name.ends_with("_seconds"),
            series: BTreeMap::new(),
        });
        let mut labels: Labels = sample
            .labels
            .iter()
            .filter(|(name, _)| *name != FOLDED_LABEL && *name != "le")
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        labels.sort();
        let partition = sample.labels.get(FOLDED_LABEL).cloned();
        let series = family.series.entry(labels).or_default();
        if kind == MetricKind::Histogram {
            // Cumulative `_bucket` lines per `le`, and `_sum`, `_count`.
            let key = partition.unwrap_or_default();
            let histogram = series.histograms.entry(key).or_default();
            if let Some(le) = sample.labels.get("le") {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                histogram.cumulative.push((bound, sample.value));
            } else if sample.name.ends_with("_sum") {
                histogram.sum = sample.value;
            }
        } else {
            series.values.push(sample.value);
        }
    }
    encode(families, server_start_time_ms, interval_ms)
}

#[derive(Default)]
struct Family {
    kind: MetricKind,
    fold_by_max: bool,
    series: BTreeMap<Labels, Parts>,
}

/// A series before folding: a value per partition, or a histogram per
/// partition.
#[derive(Default)]
struct Parts {
    values: Vec<f64>,
    histograms: BTreeMap<String, PageHistogram>,
}

#[derive(Default)]
struct PageHistogram {
    cumulative: Vec<(f64, f64)>,
    sum: f64,
}

fn encode(families: BTreeMap<String, Family>, server_start_time_ms: i64, interval_ms: u64) -> MetricsSample {
    let mut strings = Strings::default();
    let families = families
        .into_iter()
        .filter_map(|(name, family)| {
            let label_names: Vec<String> = family
                .series
                .keys()
                .next()
                .map(|labels| labels.iter().map(|(name, _)| name.clone()).collect())
                .unwrap_or_default();
            let mut bounds = Vec::new();
            let mut series = Vec::new();
            for (labels, parts) in &family.series {
                // Every series of a family has the same label names.
                if labels.iter().map(|(name, _)| name).ne(label_names.iter()) {
                    continue;
                }
                let label_values = labels.iter().map(|(_, value)| strings.index(value)).collect();
                let mut stored = SampledSeries {
                    label_values,
                    ..SampledSeries::default()
                };
                if family.kind == MetricKind::Histogram {
                    let (series_bounds, buckets, sum) = fold_histograms(parts.histograms.values());
                    if bounds.is_empty() {
                        bounds = series_bounds;
                    } else if bounds != series_bounds {
                        continue;
                    }
                    stored.buckets = buckets;
                    stored.sum = sum;
                } else if family.fold_by_max {
                    stored.value = parts.values.iter().copied().fold(0.0, f64::max);
                } else {
                    stored.value = parts.values.iter().sum();
                }
                series.push(stored);
            }
            (!series.is_empty()).then(|| SampledFamily {
                name,
                kind: family.kind as i32,
                label_names: label_names.iter().map(|name| strings.index(name)).collect(),
                bounds,
                series,
            })
        })
        .collect();
    MetricsSample {
        server_start_time_ms,
        interval_ms,
        strings: strings.list,
        families,
        keyframe_offset: None,
    }
}

/// Sums a series' histograms (one per partition, or one): finite bounds,
/// per-bucket counts with trailing empty buckets left out, and the sum.
fn fold_histograms<'a>(histograms: impl Iterator<Item = &'a PageHistogram>) -> (Vec<f64>, Vec<u64>, f64) {
    let mut bounds: Vec<f64> = Vec::new();
    let mut buckets: Vec<u64> = Vec::new();
    let mut sum = 0.0;
    for histogram in histograms {
        let mut previous = 0.0;
        let mut counts = Vec::with_capacity(histogram.cumulative.len());
        let mut own_bounds = Vec::with_capacity(histogram.cumulative.len());
        for &(bound, cumulative) in &histogram.cumulative {
            counts.push((cumulative - previous).max(0.0) as u64);
            previous = cumulative;
            if bound.is_finite() {
                own_bounds.push(bound);
            }
        }
        if buckets.is_empty() {
            bounds = own_bounds;
            buckets = counts;
        } else if bounds == own_bounds {
            for (into, add) in buckets.iter_mut().zip(counts) {
                *into += add;
            }
        }
        sum += histogram.sum;
    }
    while buckets.last() == Some(&0) {
        buckets.pop();
    }
    (bounds, buckets, sum)
}

/// The sample's string table.
#[derive(Default)]
struct Strings {
    list: Vec<String>,
    indexes: HashMap<String, u32>,
}

impl Strings {
    fn index(&mut self, text: &str) -> u32 {
        if let Some(&index) = self.indexes.get(text) {
            return index;
        }
        let index = self.list.len() as u32;
        self.list.push(text.to_owned());
        self.indexes.insert(text.to_owned(), index);
        index
    }
}

/// One series at one sample, as evaluation reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledPoint {
    pub time_ms: i64,
    pub start_ms: i64,
    /// A gauge's or counter's value.
    pub value: f64,
    /// A histogram's observations per bucket (`+Inf` last when present).
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub bounds: Arc<Vec<f64>>,
}

impl SampledPoint {
    /// A counter's value, or a histogram's observation count.
    pub fn total(&self) -> f64 {
        if self.buckets.is_empty() && self.bounds.is_empty() {
            self.value
        } else {
            self.buckets.iter().sum::<u64>() as f64
        }
    }
}

/// A decoded sample, by family.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub time_ms: i64,
    pub start_ms: i64,
    pub interval_ms: u64,
    families: HashMap<String, (MetricKind, Vec<(Labels, SampledPoint)>)>,
}

/// Which families a decode keeps: all, or those a read names.
#[derive(Debug, Clone, Copy)]
pub enum Families<'a> {
    All,
    Only(&'a [&'a str]),
}

impl Families<'_> {
    fn keeps(&self, name: &str) -> bool {
        match self {
            Families::All => true,
            Families::Only(names) => names.contains(&name),
        }
    }
}

impl Snapshot {
    /// Reads a stored sample taken at `time_ms`: a keyframe, or with
    /// `keyframe` the sample that differs from it. String indexes out of
    /// the table make the sample unreadable (`None`), never a panic.
    pub fn decode(
        sample: &MetricsSample,
        time_ms: i64,
        wanted: Families<'_>,
        keyframe: Option<&Snapshot>,
    ) -> Option<Snapshot> {
        let string = |index: u32| sample.strings.get(index as usize).cloned();
        let mut families = keyframe.map(|k| k.families.clone()).unwrap_or_default();
        for family in sample.families.iter().filter(|f| wanted.keeps(&f.name)) {
            let kind = MetricKind::try_from(family.kind).unwrap_or(MetricKind::Unspecified);
            let names: Vec<String> = family
                .label_names
                .iter()
                .map(|&i| string(i))
                .collect::<Option<_>>()?;
            let bounds = Arc::new(family.bounds.clone());
            let (_, series) = families
                .entry(family.name.clone())
                .or_insert_with(|| (kind, Vec::with_capacity(family.series.len())));
            let mut positions: HashMap<Labels, usize> = series
                .iter()
                .enumerate()
                .map(|(i, (labels, _))| (labels.clone(), i))
                .collect();
            for stored in &family.series {
                let values: Vec<String> = stored
                    .label_values
                    .iter()
                    .map(|&i| string(i))
                    .collect::<Option<_>>()?;
                if values.len() != names.len() {
                    return None;
                }
                let labels: Labels = names.iter().cloned().zip(values).collect();
                let point = SampledPoint {
                    time_ms,
                    start_ms: sample.server_start_time_ms,
                    value: stored.value,
                    buckets: stored.buckets.clone(),
                    sum: stored.sum,
                    bounds: Arc::clone(&bounds),
                };
                match positions.get(&labels) {
                    Some(&at) => series[at].1 = point,
                    None => {
                        positions.insert(labels.clone(), series.len());
                        series.push((labels, point));
                    }
                }
            }
        }
        // Series taken from the keyframe hold at this sample's time.
        if keyframe.is_some() {
            for (_, series) in families.values_mut() {
                for (_, point) in series.iter_mut() {
                    point.time_ms = time_ms;
                    point.start_ms = sample.server_start_time_ms;
                }
            }
        }
        Some(Snapshot {
            time_ms,
            start_ms: sample.server_start_time_ms,
            interval_ms: sample.interval_ms,
            families,
        })
    }

    /// The kind of a family this sample holds.
    pub fn kind(&self, family: &str) -> Option<MetricKind> {
        self.families.get(family).map(|(kind, _)| *kind)
    }

    /// The series of a family, empty when the sample does not hold it.
    pub fn series(&self, family: &str) -> impl Iterator<Item = &(Labels, SampledPoint)> {
        self.families
            .get(family)
            .into_iter()
            .flat_map(|(_, series)| series.iter())
    }

    /// Names of the families held, sorted.
    pub fn family_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.families.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// This sample as stored after the keyframe `base` (at
    /// `keyframe_offset`): only the series whose value, buckets or sum
    /// differ from `base`'s.
    pub fn delta(&self, base: &Snapshot, keyframe_offset: u64) -> MetricsSample {
        let mut strings = Strings::default();
        let mut families = Vec::new();
        let mut names: Vec<&String> = self.families.keys().collect();
        names.sort_unstable();
        for name in names {
            let (kind, series) = &self.families[name];
            let before: HashMap<&Labels, &SampledPoint> = base.series(name).map(|(l, p)| (l, p)).collect();
            let changed: Vec<&(Labels, SampledPoint)> = series
                .iter()
                .filter(|(labels, point)| before.get(labels).is_none_or(|old| !same_value(old, point)))
                .collect();
            let Some((first_labels, first_point)) = changed.first() else {
                continue;
            };
            families.push(SampledFamily {
                name: name.clone(),
                kind: *kind as i32,
                label_names: first_labels.iter().map(|(n, _)| strings.index(n)).collect(),
                bounds: first_point.bounds.to_vec(),
                series: changed
                    .iter()
                    .map(|(labels, point)| SampledSeries {
                        label_values: labels.iter().map(|(_, v)| strings.index(v)).collect(),
                        value: point.value,
                        buckets: point.buckets.clone(),
                        sum: point.sum,
                    })
                    .collect(),
            });
        }
        MetricsSample {
            server_start_time_ms: self.start_ms,
            interval_ms: self.interval_ms,
            strings: strings.list,
            families,
            keyframe_offset: Some(keyframe_offset),
        }
    }
}

fn same_value(a: &SampledPoint, b: &SampledPoint) -> bool {
    a.value.to_bits() == b.value.to_bits()
        && a.buckets == b.buckets
        && a.sum.to_bits() == b.sum.to_bits()
        && a.bounds == b.bounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::query::labels;

    const PAGE: &str = "# TYPE spool_log_appended_records counter\n\
        spool_log_appended_records_total{topic=\"orders\"} 30\n\
        spool_log_appended_records_total{topic=\"audit\"} 4\n\
        # TYPE spool_partition_size_bytes gauge\n\
        spool_partition_size_bytes{topic=\"orders\",partition=\"0\"} 100\n\
        spool_partition_size_bytes{topic=\"orders\",partition=\"1\"} 50\n\
        # TYPE spool_partition_high_watermark gauge\n\
        spool_partition_high_watermark{topic=\"orders\",partition=\"0\"} 20\n\
        # TYPE spool_consumer_lag_seconds gauge\n\
        spool_consumer_lag_seconds{consumer=\"c\",topic=\"orders\",partition=\"0\"} 4\n\
        spool_consumer_lag_seconds{consumer=\"c\",topic=\"orders\",partition=\"1\"} 9\n\
        # TYPE spool_job_run_seconds histogram\n\
        spool_job_run_seconds_bucket{queue=\"q\",le=\"0.1\"} 2\n\
        spool_job_run_seconds_bucket{queue=\"q\",le=\"1\"} 5\n\
        spool_job_run_seconds_bucket{queue=\"q\",le=\"+Inf\"} 5\n\
        spool_job_run_seconds_sum{queue=\"q\"} 2.5\n\
        spool_job_run_seconds_count{queue=\"q\"} 5\n";

    fn snapshot() -> Snapshot {
        let page = spool_metrics::parse::parse(PAGE).unwrap();
        let sample = from_page(&page, 1_000, 5_000);
        let bytes = prost::Message::encode_to_vec(&sample);
        let decoded = <MetricsSample as prost::Message>::decode(bytes.as_slice()).unwrap();
        Snapshot::decode(&decoded, 9_000, Families::All, None).unwrap()
    }

    fn values(snapshot: &Snapshot, family: &str) -> Vec<(Labels, f64)> {
        snapshot
            .series(family)
            .map(|(labels, point)| (labels.clone(), point.value))
            .collect()
    }

    #[test]
    fn a_page_becomes_a_sample_by_family_with_partitions_folded() {
        let snapshot = snapshot();
        assert_eq!(
            snapshot.family_names(),
            [
                "spool_consumer_lag_seconds",
                "spool_job_run_seconds",
                "spool_log_appended_records_total",
                "spool_partition_size_bytes"
            ]
        );
        assert_eq!(
            (snapshot.time_ms, snapshot.start_ms, snapshot.interval_ms),
            (9_000, 1_000, 5_000)
        );
        assert_eq!(
            values(&snapshot, "spool_log_appended_records_total"),
            [
                (labels(&[("topic", "audit")]), 4.0),
                (labels(&[("topic", "orders")]), 30.0)
            ]
        );
        assert_eq!(
            snapshot.kind("spool_log_appended_records_total"),
            Some(MetricKind::Counter)
        );
        // Sizes add up over partitions; a lag's age is the oldest one.
        assert_eq!(
            values(&snapshot, "spool_partition_size_bytes"),
            [(labels(&[("topic", "orders")]), 150.0)]
        );
        assert_eq!(
            values(&snapshot, "spool_consumer_lag_seconds"),
            [(labels(&[("consumer", "c"), ("topic", "orders")]), 9.0)]
        );
        let (_, run) = snapshot.series("spool_job_run_seconds").next().unwrap();
        assert_eq!(*run.bounds, [0.1, 1.0]);
        assert_eq!(run.buckets, [2, 3], "per bucket, the empty +Inf left out");
        assert_eq!((run.sum, run.total()), (2.5, 5.0));
    }

    #[test]
    fn a_sample_naming_strings_it_lacks_is_unreadable() {
        let mut sample = from_page(&spool_metrics::parse::parse(PAGE).unwrap(), 0, 1);
        sample.families[0].series[0].label_values[0] = 999;
        assert!(Snapshot::decode(&sample, 0, Families::All, None).is_none());
    }

    #[test]
    fn a_delta_holds_the_changed_series_and_reads_back_whole() {
        let keyframe = snapshot();
        let changed_page = PAGE
            .replace("{topic=\"orders\"} 30", "{topic=\"orders\"} 31")
            .replace("partition=\"1\"} 9", "partition=\"1\"} 10");
        let page = spool_metrics::parse::parse(&changed_page).unwrap();
        let now = Snapshot::decode(&from_page(&page, 1_000, 5_000), 14_000, Families::All, None).unwrap();
        let delta = now.delta(&keyframe, 7);
        assert_eq!(delta.keyframe_offset, Some(7));
        let names: Vec<&str> = delta.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["spool_consumer_lag_seconds", "spool_log_appended_records_total"]
        );
        assert_eq!(delta.families[1].series.len(), 1, "audit did not change");
        assert!(delta.strings.len() < 6, "{:?}", delta.strings);

        let read = Snapshot::decode(&delta, 14_000, Families::All, Some(&keyframe)).unwrap();
        assert_eq!(read.family_names(), now.family_names());
        for name in now.family_names() {
            let mut expected: Vec<_> = now.series(name).cloned().collect();
            let mut got: Vec<_> = read.series(name).cloned().collect();
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            got.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, expected, "{name}");
        }
        // Only the families a read names are decoded.
        let only = Snapshot::decode(
            &delta,
            14_000,
            Families::Only(&["spool_partition_size_bytes"]),
            Some(&keyframe),
        )
        .unwrap();
        assert!(only.series("spool_partition_size_bytes").next().is_some());
    }
}
