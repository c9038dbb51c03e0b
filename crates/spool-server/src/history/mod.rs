//! The metrics history: every `metrics_history_interval_ms` the server
//! renders its own `/metrics` page, folds it into a compact sample
//! ([`sample`]) and appends it to the internal topic `__metrics`, kept for
//! `metrics_history_retention_ms`. Reads ([`History::query`]) evaluate
//! series expressions ([`query`]) over the samples in force at each step
//! of a range, found through the topic's time index: a read costs one
//! index lookup and one decoded sample per step, whatever the range.
//!
//! The gRPC service `spool.v1.Metrics` and the admin listener's
//! `/api/v1/history` both answer through [`History::query`].

pub mod query;
pub mod sample;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use spool_log::{Durability, Partition, Record, Store, TopicConfig};
use spool_metrics::{Exposition, Format};
use spool_proto::v1::{MetricKind, MetricsSample};
use tokio::sync::watch;

use query::{Expr, Labels, Steps};
use sample::{Families, Snapshot};

/// The internal topic holding the samples.
pub const TOPIC: &str = "__metrics";

/// Points one series may have in one answer.
pub const POINTS_MAX: u64 = 11_000;

/// Expressions one read may ask for.
pub const SERIES_MAX: usize = 64;

/// A keyframe (every series) is written at start, after this many samples
/// that hold only what changed since it, and when what changed is half of
/// everything: a read of any sample costs at most two records.
const KEYFRAME_EVERY: u32 = 60;

/// Points a read gets when it names no step.
const POINTS_DEFAULT: u64 = 300;

/// Range of a read that names no start.
const RANGE_DEFAULT_MS: i64 = 3_600_000;

/// Segments of `__metrics` roll at this age, or at the store's size for
/// internal topics (`internal_segment_bytes`), whichever comes first, so
/// retention (which deletes whole segments) acts within a day.
const SEGMENT_MS_MAX: u64 = 24 * 3_600_000;

/// How the history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Time between samples.
    pub interval_ms: u64,
    /// Samples older than this go, a whole segment at a time.
    pub retention_ms: Option<u64>,
    /// The oldest segments go while the history is larger than this.
    pub retention_bytes: Option<u64>,
}

/// What a read asks for. Times are Unix epoch milliseconds; 0 and
/// negative values are resolved as `GetMetricsHistoryRequest` documents.
#[derive(Debug, Clone, Default)]
pub struct HistoryRequest {
    pub series: Vec<String>,
    pub from_time_ms: i64,
    pub to_time_ms: i64,
    pub step_ms: u64,
}

/// The series one expression yields.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesAnswer {
    pub expression: String,
    pub series: Vec<(Labels, Vec<(i64, f64)>)>,
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryAnswer {
    pub results: Vec<SeriesAnswer>,
    pub step_ms: u64,
    pub interval_ms: u64,
    pub oldest_sample_time_ms: i64,
    pub from_time_ms: i64,
    pub to_time_ms: i64,
}

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Expression(#[from] query::ExprError),
    #[error("invalid history read: {0}")]
    Invalid(String),
    #[error("the history topic __metrics: {0}")]
    Storage(#[from] spool_log::Error),
}

/// The history of one server.
#[derive(Debug)]
pub struct History {
    partition: Partition,
    config: HistoryConfig,
    start_time_ms: i64,
    /// Every family the server's page declares, with or without series:
    /// a read of one that has no samples yet (no consumer has committed)
    /// is empty, while a name the server never declares is a mistake.
    declared: Mutex<BTreeMap<String, MetricKind>>,
    /// The keyframe later samples are written against.
    keyframe: Mutex<Option<Keyframe>>,
}

#[derive(Debug)]
struct Keyframe {
    offset: u64,
    snapshot: Snapshot,
    samples_since: u32,
}

impl History {
    /// Opens (or creates) `__metrics` and applies the configured retention.
    pub fn open(store: &Store, config: HistoryConfig) -> Result<History, spool_log::Error> {
        let topic = match store.topic(TOPIC) {
            Ok(topic) => topic,
            Err(spool_log::Error::UnknownTopic { .. }) => store.create_topic(
                TOPIC,
                TopicConfig {
                    partitions: 1,
                    segment_bytes_max: store.config().internal_segment_bytes_max,
                    segment_ms_max: SEGMENT_MS_MAX,
                    retention_ms: config.retention_ms,
                    retention_bytes: config.retention_bytes,
                    incarnation: None,
                },
            )?,
            Err(other) => return Err(other),
        };
        let partition = topic.partition(0)?.clone();
        // The keys may have changed since the topic was created.
        partition.set_retention(config.retention_ms, config.retention_bytes);
        Ok(History {
            partition,
            config,
            start_time_ms: now_ms(),
            declared: Mutex::new(BTreeMap::new()),
            keyframe: Mutex::new(None),
        })
    }

    pub fn config(&self) -> HistoryConfig {
        self.config
    }

    /// Renders `exposition`, folds it into a sample and appends it; returns
    /// the stored size. Blocking: run on the blocking pool.
    pub fn record(&self, exposition: &Exposition) -> Result<usize, HistoryError> {
        let text = exposition.render(Format::Prometheus);
        let page = spool_metrics::parse::parse(&text)
            .map_err(|error| HistoryError::Invalid(format!("the server's own metrics page: {error}")))?;
        let sample = sample::from_page(&page, self.start_time_ms, self.config.interval_ms);
        self.declare(sample::declared_families(&page));
        self.write(sample, now_ms())
    }

    /// Appends `full` as a keyframe, or only what changed since the
    /// current one.
    fn write(&self, full: MetricsSample, time_ms: i64) -> Result<usize, HistoryError> {
        let mut keyframe = self.keyframe.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = Snapshot::decode(&full, time_ms, Families::All, None)
            .ok_or_else(|| HistoryError::Invalid("a sample that does not read back".to_owned()))?;
        if let Some(current) = keyframe.as_mut().filter(|k| k.samples_since < KEYFRAME_EVERY) {
            let delta = snapshot.delta(&current.snapshot, current.offset);
            // Once half of everything differs from the keyframe (queues and
            // topics came since), a new keyframe is cheaper from here on.
            if delta.encoded_len() <= full.encoded_len() / 2 {
                current.samples_since += 1;
                return self
                    .append(&delta, time_ms)
                    .map(|(_, bytes)| bytes)
                    .inspect_err(|_| {
                        // The next sample starts afresh.
                        *keyframe = None;
                    });
            }
        }
        *keyframe = None;
        let (offset, bytes) = self.append(&full, time_ms)?;
        *keyframe = Some(Keyframe {
            offset,
            snapshot,
            samples_since: 0,
        });
        Ok(bytes)
    }

    fn declare(&self, families: Vec<(String, MetricKind)>) {
        let mut declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        declared.extend(families);
    }

    /// Appends one sample; returns its offset and size.
    fn append(&self, sample: &MetricsSample, time_ms: i64) -> Result<(u64, usize), HistoryError> {
        let value = sample.encode_to_vec();
        let record = Record {
            value: Some(&value),
            timestamp_ms: Some(time_ms),
            ..Record::default()
        };
        // Page cache is enough: a sample lost in a machine crash is a gap
        // in a chart, and the store's checkpoints flush it soon after.
        let appended = self.partition.append(&[record], Durability::None)?;
        Ok((appended.base_offset, value.len()))
    }

    /// Evaluates the request's expressions. Blocking (reads segments): run
    /// on the blocking pool.
    pub fn query(&self, request: &HistoryRequest) -> Result<HistoryAnswer, HistoryError> {
        if request.series.is_empty() || request.series.len() > SERIES_MAX {
            return Err(HistoryError::Invalid(format!(
                "name 1 to {SERIES_MAX} series, not {}",
                request.series.len()
            )));
        }
        let expressions: Vec<Expr> = request
            .series
            .iter()
            .map(|text| query::parse(text))
            .collect::<Result<_, _>>()?;
        let now = now_ms();
        let to = resolve_time(request.to_time_ms, now, now);
        let from = resolve_time(request.from_time_ms, to - RANGE_DEFAULT_MS, now);
        if from >= to {
            return Err(HistoryError::Invalid(format!(
                "the range is empty: from {from} is not before to {to}"
            )));
        }
        let range = (to - from) as u64;
        let step = match request.step_ms {
            0 => range.div_ceil(POINTS_DEFAULT),
            step => step,
        }
        .max(self.config.interval_ms)
        .max(1);
        if range / step > POINTS_MAX {
            return Err(HistoryError::Invalid(format!(
                "step {step} ms gives {} points over the range; at most {POINTS_MAX}: take a longer step",
                range / step
            )));
        }
        // Steps end on multiples of the step, so charts stay put as time
        // moves; one step before the first, for the first rate.
        let first = from.div_euclid(step as i64) * step as i64 + step as i64;
        let times: Vec<i64> = std::iter::successors(Some(first - step as i64), |t| Some(t + step as i64))
            .take_while(|&t| t <= to)
            .collect();
        let families: Vec<&str> = expressions.iter().map(Expr::family).collect();
        let steps = self.steps(times, Families::Only(&families))?;
        let declared = self.declared.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut results = Vec::with_capacity(expressions.len());
        for (text, expr) in request.series.iter().zip(&expressions) {
            let family = expr.family();
            let kind = steps
                .samples
                .iter()
                .flatten()
                .find_map(|snapshot| snapshot.kind(family))
                .or_else(|| declared.get(family).copied());
            let latest = match kind {
                Some(_) => None,
                None => self.latest()?,
            };
            let kind = kind.or_else(|| latest.as_ref().and_then(|latest| latest.kind(family)));
            let Some(kind) = kind else {
                let mut known: Vec<&str> = declared.keys().map(String::as_str).collect();
                if let Some(latest) = &latest {
                    known.extend(latest.family_names());
                }
                known.sort_unstable();
                known.dedup();
                return Err(HistoryError::Expression(query::ExprError {
                    expression: text.clone(),
                    reason: format!(
                        "no recorded family is named {family:?}; the history keeps: {}",
                        known.join(", ")
                    ),
                }));
            };
            let outputs = query::evaluate(expr, kind, &steps).map_err(|reason| query::ExprError {
                expression: text.clone(),
                reason,
            })?;
            let series = outputs
                .into_iter()
                .map(|output| {
                    let points = steps.times_ms[1..]
                        .iter()
                        .zip(output.values)
                        .filter_map(|(&time, value)| Some((time, value?)))
                        .filter(|(_, value)| value.is_finite())
                        .collect();
                    (output.labels, points)
                })
                .collect();
            results.push(SeriesAnswer {
                expression: text.clone(),
                series,
            });
        }
        Ok(HistoryAnswer {
            results,
            step_ms: step,
            interval_ms: self.config.interval_ms,
            oldest_sample_time_ms: self.oldest_time()?,
            from_time_ms: from,
            to_time_ms: to,
        })
    }

    /// The sample in force at each time: the latest taken at or before
    /// it, unless that is older than two of its intervals (the server was
    /// not sampling then).
    fn steps(&self, times_ms: Vec<i64>, wanted: Families<'_>) -> Result<Steps, HistoryError> {
        let mut decoded: HashMap<u64, Option<Arc<Snapshot>>> = HashMap::new();
        let mut samples = Vec::with_capacity(times_ms.len());
        for &time in &times_ms {
            let Some(offset) = self.offset_at(time)? else {
                samples.push(None);
                continue;
            };
            let snapshot = self.read_cached(offset, wanted, &mut decoded)?;
            samples.push(snapshot.filter(|s| time - s.time_ms <= 2 * s.interval_ms.max(1) as i64));
        }
        Ok(Steps { times_ms, samples })
    }

    /// Offset of the last sample taken at or before `time_ms`.
    fn offset_at(&self, time_ms: i64) -> Result<Option<u64>, HistoryError> {
        let after = match self.partition.offset_for_timestamp(time_ms.saturating_add(1))? {
            Some(offset) => offset,
            None => self.partition.high_watermark(),
        };
        Ok((after > self.partition.log_start_offset()).then(|| after - 1))
    }

    /// The sample at `offset`, through `cache` (keyframes are shared by
    /// the samples after them).
    fn read_cached(
        &self,
        offset: u64,
        wanted: Families<'_>,
        cache: &mut HashMap<u64, Option<Arc<Snapshot>>>,
    ) -> Result<Option<Arc<Snapshot>>, HistoryError> {
        if let Some(snapshot) = cache.get(&offset) {
            return Ok(snapshot.clone());
        }
        let snapshot = match self.read_record(offset)? {
            None => None,
            Some((sample, time_ms)) => match sample.keyframe_offset {
                None => Snapshot::decode(&sample, time_ms, wanted, None).map(Arc::new),
                // A keyframe is never written against another one.
                Some(keyframe) if keyframe < offset => match self.read_cached(keyframe, wanted, cache)? {
                    Some(base) if base.time_ms <= time_ms => {
                        Snapshot::decode(&sample, time_ms, wanted, Some(&base)).map(Arc::new)
                    }
                    // Retention took the keyframe: a gap at the oldest end.
                    _ => None,
                },
                Some(_) => None,
            },
        };
        cache.insert(offset, snapshot.clone());
        Ok(snapshot)
    }

    /// The sample record at `offset` and its time; `None` when retention
    /// took it meanwhile or it does not decode (logged: a chart gets a gap,
    /// not an error).
    fn read_record(&self, offset: u64) -> Result<Option<(MetricsSample, i64)>, HistoryError> {
        let read = match self.partition.read(offset, 1) {
            Ok(read) => read,
            Err(spool_log::Error::OffsetOutOfRange { .. }) => return Ok(None),
            Err(other) => return Err(other.into()),
        };
        for batch in &read.batches {
            for record in self.partition.records(batch) {
                let record = record?;
                if record.offset != offset {
                    continue;
                }
                return Ok(match MetricsSample::decode(record.value.unwrap_or_default()) {
                    Ok(sample) => Some((sample, record.timestamp_ms)),
                    Err(error) => {
                        tracing::warn!(offset, %error, "a metrics history sample does not decode; left out");
                        None
                    }
                });
            }
        }
        Ok(None)
    }

    fn latest(&self) -> Result<Option<Arc<Snapshot>>, HistoryError> {
        let end = self.partition.high_watermark();
        if end <= self.partition.log_start_offset() {
            return Ok(None);
        }
        self.read_cached(end - 1, Families::All, &mut HashMap::new())
    }

    fn oldest_time(&self) -> Result<i64, HistoryError> {
        let start = self.partition.log_start_offset();
        if start >= self.partition.high_watermark() {
            return Ok(0);
        }
        Ok(self.read_record(start)?.map_or(0, |(_, time_ms)| time_ms))
    }
}

/// `value` as an absolute time: itself when positive, `default` when 0,
/// relative to `now` when negative.
fn resolve_time(value: i64, default: i64, now: i64) -> i64 {
    match value {
        0 => default,
        relative if relative < 0 => now.saturating_add(relative),
        absolute => absolute,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// Samples every interval until `shutdown` turns true. A failed sample is
/// logged and the next one tried: history must never stop the server.
pub async fn run_sampler(
    history: Arc<History>,
    exposition: Arc<Exposition>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(Duration::from_millis(history.config.interval_ms));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        let history = Arc::clone(&history);
        let exposition = Arc::clone(&exposition);
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || history.record(&exposition)).await {
            Ok(Ok(bytes)) => {
                let elapsed_us = started.elapsed().as_micros() as u64;
                tracing::debug!(bytes, elapsed_us, "metrics history sampled");
            }
            Ok(Err(error)) => tracing::warn!(%error, "metrics history sample failed"),
            Err(error) => tracing::warn!(%error, "metrics history sample failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::history::query::labels;
    use spool_log::StoreConfig;

    use super::*;

    const INTERVAL_MS: u64 = 5_000;

    struct Fixture {
        history: History,
        _store: Store,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let config = HistoryConfig {
            interval_ms: INTERVAL_MS,
            retention_ms: None,
            retention_bytes: None,
        };
        Fixture {
            history: History::open(&store, config).unwrap(),
            _store: store,
            _dir: dir,
        }
    }

    /// A page with a counter at `completed`, a gauge at `depth` and a
    /// histogram whose observations so far are `fast` under 0.1 s and
    /// `slow` under 1 s.
    fn page(completed: u64, depth: u64, fast: u64, slow: u64) -> spool_metrics::parse::Page {
        let text = format!(
            "# TYPE spool_jobs_completed counter\n\
             spool_jobs_completed_total{{queue=\"a\"}} {completed}\n\
             spool_jobs_completed_total{{queue=\"b\"}} {}\n\
             # TYPE spool_jobs gauge\n\
             spool_jobs{{queue=\"a\",state=\"available\"}} {depth}\n\
             # TYPE spool_job_run_seconds histogram\n\
             spool_job_run_seconds_bucket{{queue=\"a\",le=\"0.1\"}} {fast}\n\
             spool_job_run_seconds_bucket{{queue=\"a\",le=\"1\"}} {}\n\
             spool_job_run_seconds_bucket{{queue=\"a\",le=\"+Inf\"}} {}\n\
             spool_job_run_seconds_sum{{queue=\"a\"}} 0\n\
             spool_job_run_seconds_count{{queue=\"a\"}} {}\n",
            completed * 2,
            fast + slow,
            fast + slow,
            fast + slow,
        );
        spool_metrics::parse::parse(&text).unwrap()
    }

    fn record(history: &History, time_ms: i64, start_ms: i64, page: &spool_metrics::parse::Page) {
        let sample = sample::from_page(page, start_ms, INTERVAL_MS);
        history.write(sample, time_ms).unwrap();
    }

    fn points(answer: &HistoryAnswer, result: usize) -> Vec<(Labels, Vec<(i64, f64)>)> {
        answer.results[result].series.clone()
    }

    #[test]
    fn rates_gauges_and_quantiles_come_back_per_step() {
        let fixture = fixture();
        let base = 1_700_000_000_000;
        // A sample every 5 s for a minute: 10 jobs/s completed in queue a,
        // the depth equal to the second, 1 fast and 1 slow run per sample.
        for i in 0..=12 {
            let t = base + i * 5_000;
            record(
                &fixture.history,
                t,
                base - 60_000,
                &page(i as u64 * 50, i as u64, i as u64, i as u64),
            );
        }
        let request = HistoryRequest {
            series: vec![
                r#"rate(spool_jobs_completed_total{queue="a"})"#.into(),
                "sum(rate(spool_jobs_completed_total))".into(),
                r#"spool_jobs{state="available"}"#.into(),
                "quantile(0.5, spool_job_run_seconds)".into(),
                "increase(spool_job_run_seconds)".into(),
            ],
            from_time_ms: base + 10_000,
            to_time_ms: base + 60_000,
            step_ms: 10_000,
        };
        let answer = fixture.history.query(&request).unwrap();
        assert_eq!((answer.step_ms, answer.interval_ms), (10_000, INTERVAL_MS));
        assert_eq!(answer.oldest_sample_time_ms, base);
        let times: Vec<i64> = (2..=6).map(|k| base + k * 10_000).collect();
        let every = |value: f64| times.iter().map(|&t| (t, value)).collect::<Vec<_>>();
        assert_eq!(points(&answer, 0), [(labels(&[("queue", "a")]), every(10.0))]);
        assert_eq!(points(&answer, 1), [(Labels::new(), every(30.0))]);
        let depth: Vec<(i64, f64)> = times.iter().map(|&t| (t, ((t - base) / 5_000) as f64)).collect();
        assert_eq!(
            points(&answer, 2),
            [(labels(&[("queue", "a"), ("state", "available")]), depth)]
        );
        // Two fast and two slow per step: the median is at the top of the
        // fast bucket.
        assert_eq!(points(&answer, 3), [(labels(&[("queue", "a")]), every(0.1))]);
        assert_eq!(points(&answer, 4), [(labels(&[("queue", "a")]), every(4.0))]);
    }

    #[test]
    fn a_restart_counts_from_its_start_and_a_gap_has_no_points() {
        let fixture = fixture();
        let base = 1_700_000_000_000;
        for i in 0..=4 {
            record(
                &fixture.history,
                base + i * 5_000,
                base - 5_000,
                &page(i as u64 * 10, 1, 0, 0),
            );
        }
        // Down from 20 s to 40 s, back at 40 s: counters start from zero.
        for i in 0..=2 {
            record(
                &fixture.history,
                base + 45_000 + i * 5_000,
                base + 40_000,
                &page(10 + i as u64 * 10, 1, 0, 0),
            );
        }
        let request = HistoryRequest {
            series: vec![
                r#"rate(spool_jobs_completed_total{queue="a"})"#.into(),
                r#"spool_jobs{queue="a"}"#.into(),
            ],
            from_time_ms: base,
            to_time_ms: base + 55_000,
            step_ms: 5_000,
        };
        let answer = fixture.history.query(&request).unwrap();
        let rate: Vec<(i64, f64)> = points(&answer, 0)[0].1.clone();
        let expected: Vec<(i64, f64)> = [5_000, 10_000, 15_000, 20_000]
            .into_iter()
            .map(|t| (base + t, 2.0))
            .chain([45_000, 50_000, 55_000].into_iter().map(|t| (base + t, 2.0)))
            .collect();
        assert_eq!(rate, expected);
        // The gauge is missing where no sample is within two intervals.
        let gauge_times: Vec<i64> = points(&answer, 1)[0].1.iter().map(|(t, _)| t - base).collect();
        assert_eq!(
            gauge_times,
            [
                5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 45_000, 50_000, 55_000
            ]
        );
    }

    #[test]
    fn keyframes_come_every_sixty_samples_and_the_rest_hold_what_changed() {
        let fixture = fixture();
        let base = 1_700_000_000_000;
        for i in 0..130 {
            // Only the counter of queue a moves (queue b's is twice a's).
            record(
                &fixture.history,
                base + i * 5_000,
                base,
                &page(i as u64 / 10, 1, 0, 0),
            );
        }
        let kinds: Vec<Option<u64>> = (0..130)
            .map(|offset| {
                fixture
                    .history
                    .read_record(offset)
                    .unwrap()
                    .unwrap()
                    .0
                    .keyframe_offset
            })
            .collect();
        for (offset, keyframe) in kinds.iter().enumerate() {
            let expected = match offset {
                0 | 61 | 122 => None,
                1..=60 => Some(0),
                62..=121 => Some(61),
                _ => Some(122),
            };
            assert_eq!(*keyframe, expected, "offset {offset}");
        }
        // A sample where nothing changed since its keyframe holds nothing.
        let (quiet, _) = fixture.history.read_record(5).unwrap().unwrap();
        assert!(quiet.families.is_empty(), "{quiet:?}");
        let (moved, _) = fixture.history.read_record(10).unwrap().unwrap();
        assert_eq!(moved.families.len(), 1);
        assert_eq!(moved.families[0].series.len(), 2);
        // And every sample reads back whole.
        let answer = fixture
            .history
            .query(&HistoryRequest {
                series: vec![
                    r#"spool_jobs_completed_total{queue="b"}"#.into(),
                    "spool_jobs".into(),
                ],
                from_time_ms: base,
                to_time_ms: base + 129 * 5_000,
                step_ms: 5_000,
            })
            .unwrap();
        let counter: Vec<f64> = points(&answer, 0)[0].1.iter().map(|(_, v)| *v).collect();
        let expected: Vec<f64> = (1..130).map(|i| (i / 10 * 2) as f64).collect();
        assert_eq!(counter, expected);
        assert_eq!(points(&answer, 1)[0].1.len(), 129);
    }

    #[test]
    fn bad_reads_are_refused_with_the_reason() {
        let fixture = fixture();
        let base = 1_700_000_000_000;
        record(&fixture.history, base, base, &page(1, 1, 1, 1));
        let read = |series: &str, step_ms: u64| {
            fixture
                .history
                .query(&HistoryRequest {
                    series: vec![series.to_owned()],
                    from_time_ms: base - 3_600_000,
                    to_time_ms: base,
                    step_ms,
                })
                .unwrap_err()
                .to_string()
        };
        let error = read("spool_nope", 0);
        assert!(
            error.contains("no recorded family is named \"spool_nope\"") && error.contains("spool_jobs"),
            "{error}"
        );
        assert!(read("rate(spool_jobs)", 0).contains("not a gauge"));
        assert!(read("spool_job_run_seconds", 0).contains("a histogram needs quantile"));
        assert!(read("quantile(0.9, spool_jobs)", 0).contains("quantile takes a histogram"));
        assert!(read("max(spool_jobs_completed_total)", 0).contains("only sum merges"));
        assert!(read("rate(rate(spool_jobs_completed_total))", 0).contains("not to each other"));
        // 3.6 million ms at a 5 s interval: the step is raised, not refused.
        assert!(
            fixture
                .history
                .query(&HistoryRequest {
                    series: vec!["spool_jobs".into()],
                    from_time_ms: base - 3_600_000,
                    to_time_ms: base,
                    step_ms: 1,
                })
                .is_ok()
        );
        let error = fixture
            .history
            .query(&HistoryRequest {
                series: vec!["spool_jobs".into()],
                from_time_ms: base - 100 * 86_400_000,
                to_time_ms: base,
                step_ms: 5_000,
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("at most 11000"), "{error}");
        let empty = fixture.history.query(&HistoryRequest {
            series: vec!["spool_jobs".into()],
            from_time_ms: base,
            to_time_ms: base,
            step_ms: 0,
        });
        assert!(empty.unwrap_err().to_string().contains("the range is empty"));
        let none = fixture.history.query(&HistoryRequest::default());
        assert!(none.unwrap_err().to_string().contains("name 1 to 64 series"));
    }
}
