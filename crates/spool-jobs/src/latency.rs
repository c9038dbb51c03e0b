//! Latency distributions of one queue: queue wait, run time or end to end,
//! as percentiles over the last minute and the last hour, and as a
//! histogram with fixed buckets since the table was built.
//!
//! Windows: each is a ring of 12 HdrHistograms, one per time bucket (5 s
//! for the minute, 5 min for the hour). An observation goes into the
//! minute bucket of its event's time; a minute bucket whose turn comes
//! round again (or that the periodic sweep frees) is first added to the
//! hour bucket of its time, then cleared. A window's percentiles merge the
//! buckets of the last 12 bucket periods, the current one included (for
//! the hour, the minute buckets not yet folded too): "the last minute"
//! covers between 55 and 60 seconds of observations, "the last hour"
//! between 55 and 60 minutes. Twelve buckets
//! rather than sixty keep the memory of a busy queue small (see
//! `docs/jobs.md`) at the cost of that 5-second (5-minute) blur at the old
//! edge of the window.
//!
//! The HdrHistograms keep two significant digits: a percentile is at most
//! 1/128 (under 0.8 %) above the true value, and exact below 256 ms.
//! Values are milliseconds, clamped to `VALUE_MS_MAX`. A bucket's counts
//! array is allocated at its first observation and grows with the largest
//! value it holds: about 2 KiB for values under a second, 5 KiB under a
//! minute, 15 KiB at most.
//!
//! The histogram since start has the fixed bounds of
//! [`HISTOGRAM_BOUNDS_MS`], counted exactly (a bound search and an add), so
//! it can be exposed as a Prometheus histogram as it is.

use hdrhistogram::Histogram;

/// Largest value recorded; longer durations count as this long (about
/// 398 days).
pub const VALUE_MS_MAX: u64 = 1 << 35;

/// Upper bounds of the cumulative histogram's buckets, in milliseconds;
/// the last bucket (`+Inf`) is implied by the total count.
pub const HISTOGRAM_BOUNDS_MS: [u64; 21] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    1_800_000, 3_600_000, 21_600_000, 86_400_000,
];

/// The same bounds in seconds, as Prometheus `le` labels.
pub const HISTOGRAM_BOUNDS_SECONDS: [f64; 21] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1_800.0, 3_600.0, 21_600.0, 86_400.0,
];

const SIGNIFICANT_DIGITS: u8 = 2;
/// Observations a histogram needs before one can be called slow: below
/// this a p99 says nothing.
pub const SLOW_OBSERVATIONS_MIN: u64 = 100;
/// Buckets per window.
pub const WINDOW_BUCKETS: usize = 12;

/// A time window of percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// 12 buckets of 5 s.
    LastMinute,
    /// 12 buckets of 5 min.
    LastHour,
}

impl Window {
    /// Length of one bucket.
    pub const fn bucket_ms(self) -> i64 {
        match self {
            Window::LastMinute => 5_000,
            Window::LastHour => 300_000,
        }
    }

    /// The span the window stands for (what its name says).
    pub const fn span_ms(self) -> u64 {
        self.bucket_ms() as u64 * WINDOW_BUCKETS as u64
    }
}

/// Percentiles of the observations in a window, in milliseconds; each is
/// the highest value of its HdrHistogram bucket, so at most 0.8 % above
/// the true value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Observations in the window.
    pub count: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// Bytes of a W3C `traceparent` of version 00, the only form an exemplar
/// keeps.
pub const TRACEPARENT_BYTES: usize = 55;

/// The latest observation of a bucket made by a job that carries a trace:
/// what a Prometheus exemplar shows, so a slow bucket leads to a trace.
/// The `traceparent` is the job's header as sent (55 bytes); the exposition
/// parses it and leaves out one that is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyExemplar {
    pub traceparent: [u8; TRACEPARENT_BYTES],
    pub value_ms: u64,
    /// When it was observed, Unix epoch milliseconds.
    pub at_ms: i64,
}

/// Observations since the table was built, counted in fixed buckets: the
/// shape of a Prometheus histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct CumulativeHistogram {
    /// Upper bounds of the buckets in seconds (`le`), without `+Inf`.
    pub bounds_seconds: &'static [f64],
    /// `cumulative_counts[i]` observations were at most
    /// `bounds_seconds[i]`; nondecreasing.
    pub cumulative_counts: Vec<u64>,
    /// Every observation: the `+Inf` bucket and `_count`.
    pub count: u64,
    /// Sum of the observations in seconds (`_sum`).
    pub sum_seconds: f64,
    /// One per bucket, `+Inf` last, once a traced job was observed; else
    /// empty.
    pub exemplars: Vec<Option<LatencyExemplar>>,
}

/// One distribution of one queue, windowed and since start.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    pub last_minute: Option<Percentiles>,
    pub last_hour: Option<Percentiles>,
    pub histogram: CumulativeHistogram,
}

#[derive(Debug, Clone)]
struct Bucket {
    /// `time.div_euclid(bucket_ms)` of the observations held.
    epoch: i64,
    histogram: Option<Histogram<u32>>,
}

/// A ring of `WINDOW_BUCKETS` buckets of one window. The buckets are
/// allocated at the first observation and freed when all have left the
/// window, so a queue that is known but quiet costs only the empty ring.
#[derive(Debug, Clone)]
struct Ring {
    window: Window,
    /// Empty, or `WINDOW_BUCKETS` long.
    buckets: Vec<Bucket>,
}

impl Ring {
    fn new(window: Window) -> Self {
        Ring {
            window,
            buckets: Vec::new(),
        }
    }

    fn epoch_of(&self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.window.bucket_ms())
    }

    /// The bucket for observations of `epoch`, cleared if it held an older
    /// one; `None` when it holds a newer one (the clock stepped back past
    /// a whole window: what arrives now is older than any window shows).
    /// `evicted` gets the older contents and their epoch before the clear.
    fn bucket_for(
        &mut self,
        epoch: i64,
        evicted: impl FnOnce(i64, &Histogram<u32>),
    ) -> Option<&mut Histogram<u32>> {
        if self.buckets.is_empty() {
            self.buckets = vec![
                Bucket {
                    epoch: i64::MIN,
                    histogram: None,
                };
                WINDOW_BUCKETS
            ];
        }
        let bucket = &mut self.buckets[epoch.rem_euclid(WINDOW_BUCKETS as i64) as usize];
        if bucket.epoch > epoch {
            return None;
        }
        let histogram = bucket.histogram.get_or_insert_with(new_histogram);
        if bucket.epoch < epoch {
            if !histogram.is_empty() {
                evicted(bucket.epoch, histogram);
            }
            histogram.reset();
            bucket.epoch = epoch;
        }
        Some(histogram)
    }

    /// True for a bucket of `epoch` whose observations are inside the
    /// window at `now_ms`.
    fn live(&self, epoch: i64, now_ms: i64) -> bool {
        let now = self.epoch_of(now_ms);
        epoch <= now && epoch > now - WINDOW_BUCKETS as i64
    }

    /// Adds the live buckets of this ring into `merged`; `live` says
    /// which, by epoch.
    fn merge_into(&self, merged: &mut Option<Histogram<u32>>, live: impl Fn(i64) -> bool) {
        for bucket in &self.buckets {
            let Some(histogram) = &bucket.histogram else {
                continue;
            };
            if histogram.is_empty() || !live(bucket.epoch) {
                continue;
            }
            match merged.as_mut() {
                None => *merged = Some(histogram.clone()),
                Some(merged) => merged
                    .add(histogram)
                    .expect("an auto-resizing histogram takes any other"),
            }
        }
    }

    /// Frees the counts of buckets no window shows any more (after handing
    /// each to `evicted`), and the ring itself once none is left.
    fn release_expired(&mut self, now_ms: i64, mut evicted: impl FnMut(i64, &Histogram<u32>)) {
        let now = self.epoch_of(now_ms);
        for bucket in &mut self.buckets {
            if let Some(histogram) = &bucket.histogram
                && bucket.epoch <= now - WINDOW_BUCKETS as i64
            {
                if !histogram.is_empty() {
                    evicted(bucket.epoch, histogram);
                }
                bucket.histogram = None;
            }
        }
        if self.buckets.iter().all(|bucket| bucket.histogram.is_none()) {
            self.buckets = Vec::new();
        }
    }

    /// Bytes of the buckets and their counts arrays.
    fn bytes(&self) -> usize {
        let counts: usize = self
            .buckets
            .iter()
            .filter_map(|b| b.histogram.as_ref())
            .map(|h| h.distinct_values() * std::mem::size_of::<u32>())
            .sum();
        counts + self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }
}

/// Adds a minute bucket of `minute_epoch` that leaves the minute ring to
/// the hour ring's bucket of its time.
fn fold(hour: &mut Ring, minute_epoch: i64, histogram: &Histogram<u32>) {
    let at_ms = minute_epoch.saturating_mul(Window::LastMinute.bucket_ms());
    let epoch = hour.epoch_of(at_ms);
    if let Some(target) = hour.bucket_for(epoch, |_, _| {}) {
        target
            .add(histogram)
            .expect("an auto-resizing histogram takes any other");
    }
}

fn new_histogram() -> Histogram<u32> {
    let mut histogram = Histogram::new_with_max(2, SIGNIFICANT_DIGITS).expect("valid histogram bounds");
    // It grows to the largest value recorded, up to VALUE_MS_MAX: a queue
    // of short jobs pays for short values only.
    histogram.auto(true);
    histogram
}

/// Records one distribution: both windows and the fixed buckets.
#[derive(Debug, Clone)]
pub(crate) struct LatencyRecorder {
    minute: Ring,
    hour: Ring,
    /// Observations per fixed bucket (not cumulative); the last is `+Inf`.
    buckets: [u64; HISTOGRAM_BOUNDS_MS.len() + 1],
    count: u64,
    sum_ms: u64,
    /// Per bucket, the latest observation of a traced job; allocated at
    /// the first (1.6 KiB), so untraced queues pay a pointer.
    exemplars: Option<Box<[Option<LatencyExemplar>; HISTOGRAM_BOUNDS_MS.len() + 1]>>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            minute: Ring::new(Window::LastMinute),
            hour: Ring::new(Window::LastHour),
            buckets: [0; HISTOGRAM_BOUNDS_MS.len() + 1],
            count: 0,
            sum_ms: 0,
            exemplars: None,
        }
    }
}

impl LatencyRecorder {
    /// Records a duration of `value_ms` observed at `at_ms`: into the
    /// minute ring only. A minute bucket is added to the hour ring when it
    /// leaves the minute ring (reused or freed), so an observation costs
    /// one HdrHistogram record, and a window of the hour is the hour
    /// ring's buckets plus the minute buckets not yet folded.
    ///
    /// Returns whether the observation is slow: it fell in a bucket of the
    /// histogram since start that, with the buckets above it, holds at
    /// most 1 % of at least [`SLOW_OBSERVATIONS_MIN`] observations, so at
    /// or past the p99 bucket. A sum over the few buckets above it.
    ///
    /// A `traceparent` of the job (55 bytes, version 00) becomes its
    /// bucket's exemplar.
    pub(crate) fn record(&mut self, at_ms: i64, value_ms: u64, traceparent: Option<&str>) -> bool {
        let value_ms = value_ms.min(VALUE_MS_MAX);
        let epoch = self.minute.epoch_of(at_ms);
        let hour = &mut self.hour;
        if let Some(histogram) = self
            .minute
            .bucket_for(epoch, |old_epoch, old| fold(hour, old_epoch, old))
        {
            // Recording grows the counts array to the value (a saturating
            // record would not); values are at most VALUE_MS_MAX, so
            // growing cannot fail, and clamping is the answer should it
            // ever.
            if histogram.record(value_ms).is_err() {
                histogram.saturating_record(value_ms);
            }
        }
        let bucket = HISTOGRAM_BOUNDS_MS.partition_point(|&bound| bound < value_ms);
        if let Some(traceparent) =
            traceparent.and_then(|text| <[u8; TRACEPARENT_BYTES]>::try_from(text.as_bytes()).ok())
        {
            self.exemplars
                .get_or_insert_with(|| Box::new([None; HISTOGRAM_BOUNDS_MS.len() + 1]))[bucket] =
                Some(LatencyExemplar {
                    traceparent,
                    value_ms,
                    at_ms,
                });
        }
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(value_ms);
        self.count >= SLOW_OBSERVATIONS_MIN && self.buckets[bucket..].iter().sum::<u64>() * 100 <= self.count
    }

    pub(crate) fn percentiles(&self, now_ms: i64, window: Window) -> Option<Percentiles> {
        let mut merged = None;
        match window {
            Window::LastMinute => self
                .minute
                .merge_into(&mut merged, |epoch| self.minute.live(epoch, now_ms)),
            Window::LastHour => {
                self.hour
                    .merge_into(&mut merged, |epoch| self.hour.live(epoch, now_ms));
                let minute_ms = Window::LastMinute.bucket_ms();
                self.minute.merge_into(&mut merged, |epoch| {
                    let hour_epoch = self.hour.epoch_of(epoch.saturating_mul(minute_ms));
                    self.hour.live(hour_epoch, now_ms)
                });
            }
        }
        let merged = merged?;
        Some(Percentiles {
            count: merged.len(),
            p50_ms: merged.value_at_quantile(0.5),
            p99_ms: merged.value_at_quantile(0.99),
            max_ms: merged.max(),
        })
    }

    pub(crate) fn histogram(&self) -> CumulativeHistogram {
        let mut running = 0;
        let cumulative_counts = self.buckets[..HISTOGRAM_BOUNDS_MS.len()]
            .iter()
            .map(|&n| {
                running += n;
                running
            })
            .collect();
        CumulativeHistogram {
            bounds_seconds: &HISTOGRAM_BOUNDS_SECONDS,
            cumulative_counts,
            count: self.count,
            sum_seconds: self.sum_ms as f64 / 1_000.0,
            exemplars: self
                .exemplars
                .as_deref()
                .map_or_else(Vec::new, |slots| slots.to_vec()),
        }
    }

    pub(crate) fn snapshot(&self, now_ms: i64) -> Latency {
        Latency {
            last_minute: self.percentiles(now_ms, Window::LastMinute),
            last_hour: self.percentiles(now_ms, Window::LastHour),
            histogram: self.histogram(),
        }
    }

    /// Folds the minute buckets that left the minute into the hour, and
    /// frees the buckets that left both windows (a queue gone quiet).
    pub(crate) fn release_expired(&mut self, now_ms: i64) {
        let hour = &mut self.hour;
        self.minute
            .release_expired(now_ms, |epoch, histogram| fold(hour, epoch, histogram));
        self.hour.release_expired(now_ms, |_, _| {});
    }

    /// Bytes held by the buckets, their counts arrays and the exemplar
    /// slots.
    pub(crate) fn bytes(&self) -> usize {
        let exemplars = self
            .exemplars
            .as_ref()
            .map_or(0, |slots| std::mem::size_of_val(&**slots));
        self.minute.bytes() + self.hour.bytes() + exemplars
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn a_traced_observation_is_its_bucket_s_exemplar_until_a_later_one() {
        let first = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let later = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut recorder = LatencyRecorder::default();
        recorder.record(T0, 3, None);
        assert!(recorder.histogram().exemplars.is_empty(), "untraced: no slots");
        recorder.record(T0, 3, Some(first));
        recorder.record(T0 + 1, 4, Some(later));
        recorder.record(T0 + 2, 40_000, Some(first));
        recorder.record(T0 + 3, 40_001, Some("not a traceparent"));
        let exemplars = recorder.histogram().exemplars;
        assert_eq!(exemplars.len(), HISTOGRAM_BOUNDS_MS.len() + 1);
        let at = |ms: u64| exemplars[HISTOGRAM_BOUNDS_MS.partition_point(|&bound| bound < ms)];
        let five = at(4).expect("the 1-5 ms bucket");
        assert_eq!(
            (&five.traceparent[..], five.value_ms, five.at_ms),
            (later.as_bytes(), 4, T0 + 1)
        );
        assert_eq!(
            at(40_000).unwrap().value_ms,
            40_000,
            "a malformed header leaves the last good one"
        );
        assert_eq!(at(1), None);
    }

    #[test]
    fn only_an_observation_past_the_p99_bucket_of_enough_is_slow() {
        let mut recorder = LatencyRecorder::default();
        // Too few observations: nothing is slow, however long.
        for _ in 0..98 {
            assert!(!recorder.record(T0, 3, None));
        }
        assert!(!recorder.record(T0, 60_000, None), "99 observations are too few");
        // The 100th, alone in its bucket and above every other: slow.
        assert!(recorder.record(T0, 120_000, None));
        // A second one there is 2 % of the observations: not past the p99.
        assert!(!recorder.record(T0, 120_000, None));
        // The common bucket is never slow.
        assert!(!recorder.record(T0, 3, None));
        // Above the other slow ones: 1 of 103 at or above its bucket.
        assert!(recorder.record(T0, 3_600_000, None));
    }

    /// The value of rank `ceil(q * n)` of the sorted values, as
    /// HdrHistogram defines a quantile.
    fn model_quantile(sorted: &[u64], quantile: f64) -> u64 {
        let rank = ((quantile * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    /// HdrHistogram reports the top of the value's bucket: at most 1/128
    /// above it with two significant digits, exact below 256.
    fn within_precision(reported: u64, truth: u64) -> bool {
        reported >= truth && reported <= truth + truth / 128
    }

    #[test]
    fn a_window_holds_the_last_twelve_buckets_only() {
        let mut recorder = LatencyRecorder::default();
        recorder.record(T0, 100, None);
        recorder.record(T0 + 1_000, 200, None);
        let minute = recorder.percentiles(T0 + 2_000, Window::LastMinute).unwrap();
        assert_eq!(
            minute,
            Percentiles {
                count: 2,
                p50_ms: 100,
                p99_ms: 200,
                max_ms: 200
            }
        );
        // Sixty seconds on, the bucket of T0 has left the minute but not
        // the hour.
        let later = T0 - T0.rem_euclid(5_000) + 60_000;
        assert_eq!(recorder.percentiles(later, Window::LastMinute), None);
        assert_eq!(recorder.percentiles(later, Window::LastHour).unwrap().count, 2);
        // Recording a minute later reuses the ring slot of T0 and clears it.
        recorder.record(later, 7, None);
        let minute = recorder.percentiles(later, Window::LastMinute).unwrap();
        assert_eq!((minute.count, minute.max_ms), (1, 7));
        assert_eq!(recorder.percentiles(later, Window::LastHour).unwrap().count, 3);
        let after_an_hour = T0 - T0.rem_euclid(300_000) + 3_600_000;
        assert_eq!(recorder.percentiles(after_an_hour, Window::LastHour), None);
    }

    #[test]
    fn an_observation_from_before_a_reused_bucket_is_kept_out_of_windows() {
        let mut recorder = LatencyRecorder::default();
        recorder.record(T0 + 60_000, 10, None);
        // The clock stepped back a whole minute: same ring slot, older
        // bucket. It is counted since start but shown in no minute.
        recorder.record(T0, 999, None);
        let minute = recorder.percentiles(T0 + 60_000, Window::LastMinute).unwrap();
        assert_eq!((minute.count, minute.max_ms), (1, 10));
        assert_eq!(recorder.histogram().count, 2);
    }

    #[test]
    fn the_cumulative_histogram_counts_by_fixed_bounds() {
        let mut recorder = LatencyRecorder::default();
        for value in [0, 1, 2, 5, 6, 1_000, 90_000_000, u64::MAX] {
            recorder.record(T0, value, None);
        }
        let histogram = recorder.histogram();
        assert_eq!(histogram.count, 8);
        assert_eq!(histogram.cumulative_counts.len(), HISTOGRAM_BOUNDS_SECONDS.len());
        // le 0.001: 0 and 1; le 0.005: and 2, 5; le 0.01: and 6.
        assert_eq!(&histogram.cumulative_counts[..3], &[2, 4, 5]);
        // le 1: and 1000; le 86400: nothing more (90e6 ms is above a day).
        assert_eq!(histogram.cumulative_counts[8], 6);
        assert_eq!(*histogram.cumulative_counts.last().unwrap(), 6);
        let expected_sum_ms = 1 + 2 + 5 + 6 + 1_000 + 90_000_000 + VALUE_MS_MAX;
        assert!((histogram.sum_seconds - expected_sum_ms as f64 / 1_000.0).abs() < 1e-3);
        for (ms, seconds) in HISTOGRAM_BOUNDS_MS.iter().zip(HISTOGRAM_BOUNDS_SECONDS) {
            assert_eq!(*ms as f64 / 1_000.0, seconds);
        }
    }

    #[test]
    fn quiet_buckets_are_freed() {
        let mut recorder = LatencyRecorder::default();
        for second in 0..60 {
            recorder.record(T0 + second * 1_000, 40_000, None);
        }
        assert!(recorder.bytes() > 0);
        recorder.release_expired(T0 + 120_000);
        assert!(recorder.bytes() > 0, "the hour still shows them");
        recorder.release_expired(T0 + 2 * 3_600_000);
        assert_eq!(recorder.bytes(), 0, "the rings are freed too");
        assert_eq!(recorder.histogram().count, 60);
        // What a known queue that never ran a job pays per distribution.
        assert_eq!(LatencyRecorder::default().bytes(), 0);
        assert!(std::mem::size_of::<LatencyRecorder>() <= 320);
    }

    #[test]
    fn a_bucket_s_memory_follows_its_largest_value() {
        let mut recorder = LatencyRecorder::default();
        recorder.record(T0, 900, None);
        let small = recorder.bytes();
        recorder.record(T0, VALUE_MS_MAX, None);
        let large = recorder.bytes();
        // Two buckets (minute and hour) each: about 2 KiB under a second,
        // about 15 KiB at the largest value, besides the two rings of
        // 12 empty buckets.
        let rings = 2 * WINDOW_BUCKETS * std::mem::size_of::<Bucket>();
        assert!(small <= rings + 2 * 2_048, "{small}");
        assert!(large <= rings + 2 * 15 * 1_024, "{large}");
        assert!(rings <= 6 * 1_024, "{rings}");
    }

    proptest! {
        /// Against a sorted-vector model: with times moving forward, a
        /// window's percentiles are those of exactly the observations in
        /// its buckets, within HdrHistogram's precision, whenever the
        /// sweep folds and frees buckets.
        #[test]
        fn windows_match_a_sorted_model(
            steps in proptest::collection::vec((0i64..20_000, 0u64..5_000_000, proptest::bool::weighted(0.1)), 1..300),
            read_after_ms in 0i64..4_000_000,
            sweep_before_read in proptest::bool::ANY,
        ) {
            let mut recorder = LatencyRecorder::default();
            let mut now = T0;
            let mut observed = Vec::new();
            for (advance, value, sweep) in steps {
                now += advance;
                recorder.record(now, value, None);
                observed.push((now, value));
                if sweep {
                    recorder.release_expired(now);
                }
            }
            let read_at = now + read_after_ms;
            if sweep_before_read {
                recorder.release_expired(read_at);
            }
            for window in [Window::LastMinute, Window::LastHour] {
                let bucket = window.bucket_ms();
                let current = read_at.div_euclid(bucket);
                let mut inside: Vec<u64> = observed
                    .iter()
                    .filter(|(at, _)| at.div_euclid(bucket) > current - WINDOW_BUCKETS as i64)
                    .map(|&(_, value)| value)
                    .collect();
                inside.sort_unstable();
                let reported = recorder.percentiles(read_at, window);
                if inside.is_empty() {
                    prop_assert_eq!(reported, None);
                    continue;
                }
                let reported = reported.unwrap();
                prop_assert_eq!(reported.count, inside.len() as u64);
                prop_assert!(within_precision(reported.p50_ms, model_quantile(&inside, 0.5)));
                prop_assert!(within_precision(reported.p99_ms, model_quantile(&inside, 0.99)));
                prop_assert!(within_precision(reported.max_ms, *inside.last().unwrap()));
            }
            let histogram = recorder.histogram();
            prop_assert_eq!(histogram.count, observed.len() as u64);
            for (bound, cumulative) in HISTOGRAM_BOUNDS_MS.iter().zip(&histogram.cumulative_counts) {
                let model = observed.iter().filter(|(_, value)| value <= bound).count() as u64;
                prop_assert_eq!(*cumulative, model);
            }
        }
    }
}
