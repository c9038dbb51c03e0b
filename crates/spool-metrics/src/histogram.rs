//! [`Histogram`]: fixed buckets counted with relaxed atomic adds, so that
//! recording an observation on a request path takes no lock.
//!
//! Values are recorded as integers in a small unit (nanoseconds for
//! durations, records for sizes) and exported in the base unit Prometheus
//! names expect (seconds), so the sum is an atomic integer too. An
//! observation costs a binary search over the bounds and two atomic adds
//! (its bucket and the sum); the count is the buckets' total, read at
//! scrape time.
//!
//! Exemplars (the trace id of one observation per bucket) are kept only
//! for histograms that are given one: the slots are allocated on the first
//! exemplar, and a slot another thread is writing is skipped rather than
//! waited for.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// Bucket upper bounds in the recorded unit, ascending, and how many
/// recorded units make one exported unit.
#[derive(Debug)]
pub struct Buckets {
    bounds: &'static [u64],
    /// A divisor rather than a factor: a whole number divided by a power of
    /// ten is the nearest float to the decimal (25,000 ns is 0.000025 s,
    /// not 0.000025000000000000002), so bounds print as written.
    per_unit: f64,
}

impl Buckets {
    /// `bounds` must be strictly ascending.
    pub const fn new(bounds: &'static [u64], per_unit: f64) -> Self {
        Buckets { bounds, per_unit }
    }

    fn export(&self, recorded: u64) -> f64 {
        recorded as f64 / self.per_unit
    }

    /// The upper bounds in the exported unit, `+Inf` last.
    pub fn upper_bounds(&self) -> impl Iterator<Item = f64> + '_ {
        self.bounds
            .iter()
            .map(|&bound| self.export(bound))
            .chain(std::iter::once(f64::INFINITY))
    }
}

const MICROSECOND_NS: u64 = 1_000;
const MILLISECOND_NS: u64 = 1_000_000;
const SECOND_NS: u64 = 1_000_000_000;

/// Durations, recorded in nanoseconds and exported in seconds: from 25 µs
/// (a produce on loopback) to a minute (the longest long poll).
pub static SECONDS: Buckets = Buckets::new(
    &[
        25 * MICROSECOND_NS,
        50 * MICROSECOND_NS,
        100 * MICROSECOND_NS,
        250 * MICROSECOND_NS,
        500 * MICROSECOND_NS,
        MILLISECOND_NS,
        2_500 * MICROSECOND_NS,
        5 * MILLISECOND_NS,
        10 * MILLISECOND_NS,
        25 * MILLISECOND_NS,
        50 * MILLISECOND_NS,
        100 * MILLISECOND_NS,
        250 * MILLISECOND_NS,
        500 * MILLISECOND_NS,
        SECOND_NS,
        2_500 * MILLISECOND_NS,
        5 * SECOND_NS,
        10 * SECOND_NS,
        30 * SECOND_NS,
        60 * SECOND_NS,
    ],
    1e9,
);

/// Counts of things (records in a group commit), 1 to 100,000.
pub static COUNTS: Buckets = Buckets::new(
    &[
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    ],
    1.0,
);

/// A W3C trace id, 32 lower-case hex digits, taken from a `traceparent`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// The trace id of a `traceparent` value
    /// (`00-<trace id>-<parent id>-<flags>`), or `None` when the value is not
    /// one or its trace id is the invalid all-zero id.
    pub fn from_traceparent(value: &[u8]) -> Option<TraceId> {
        let mut parts = value.split(|&b| b == b'-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        let hex = |part: &[u8], len: usize| {
            part.len() == len && part.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        // Version ff is forbidden; later versions may append fields.
        if !hex(version, 2) || version == b"ff" || !hex(parent, 16) || !hex(flags, 2) {
            return None;
        }
        if version == b"00" && parts.next().is_some() {
            return None;
        }
        if !hex(trace, 32) || trace.iter().all(|&b| b == b'0') {
            return None;
        }
        Some(TraceId(trace.try_into().expect("32 bytes, checked")))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.as_str())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One observation kept with its trace id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: TraceId,
    /// In the exported unit.
    pub value: f64,
    pub timestamp: SystemTime,
}

/// See the module documentation.
pub struct Histogram {
    buckets: &'static Buckets,
    /// One count per bound, then the `+Inf` bucket; not cumulative.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations in the recorded unit.
    sum: AtomicU64,
    /// One slot per bucket, allocated on the first exemplar.
    exemplars: OnceLock<Box<[Mutex<Option<Exemplar>>]>>,
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.snapshot();
        f.debug_struct("Histogram")
            .field("count", &snapshot.count)
            .field("sum", &snapshot.sum)
            .finish_non_exhaustive()
    }
}

impl Histogram {
    pub fn new(buckets: &'static Buckets) -> Self {
        Histogram {
            buckets,
            counts: (0..=buckets.bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            exemplars: OnceLock::new(),
        }
    }

    fn bucket(&self, value: u64) -> usize {
        // A bucket counts values up to and including its bound (`le`).
        self.buckets.bounds.partition_point(|&bound| bound < value)
    }

    /// Records `value`, in the recorded unit.
    pub fn observe(&self, value: u64) {
        self.counts[self.bucket(value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration, for histograms in [`SECONDS`].
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration_ns(duration));
    }

    /// Records a duration and keeps `trace_id` as its bucket's exemplar.
    pub fn observe_duration_with_exemplar(&self, duration: Duration, trace_id: TraceId) {
        let value = duration_ns(duration);
        let bucket = self.bucket(value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        let slots = self
            .exemplars
            .get_or_init(|| (0..self.counts.len()).map(|_| Mutex::new(None)).collect());
        // Another observation writing the same slot right now is as good
        // an exemplar as this one.
        if let Ok(mut slot) = slots[bucket].try_lock() {
            *slot = Some(Exemplar {
                trace_id,
                value: self.buckets.export(value),
                timestamp: SystemTime::now(),
            });
        }
    }

    /// The counts as they are now, in the exported unit.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .upper_bounds()
            .zip(self.counts.iter())
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let exemplars = match self.exemplars.get() {
            Some(slots) => slots
                .iter()
                .map(|slot| *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
                .collect(),
            None => Vec::new(),
        };
        HistogramSnapshot {
            count: buckets.iter().map(|&(_, count)| count).sum(),
            sum: self.buckets.export(self.sum.load(Ordering::Relaxed)),
            buckets,
            exemplars,
        }
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound, count in that bucket alone), `+Inf` last: the shape
    /// prometheus-client's `encode_histogram` takes.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
    /// One per bucket when the histogram has had an exemplar, else empty.
    pub exemplars: Vec<Option<Exemplar>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket() {
        static SMALL: Buckets = Buckets::new(&[10, 20], 2.0);
        let histogram = Histogram::new(&SMALL);
        for value in [0, 10, 11, 20, 21, 1000] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets, [(5.0, 2), (10.0, 2), (f64::INFINITY, 2)]);
        assert_eq!(snapshot.count, 6);
        assert_eq!(snapshot.sum, 531.0);
        assert!(snapshot.exemplars.is_empty());
    }

    #[test]
    fn durations_are_exported_in_seconds_with_their_exemplar() {
        let histogram = Histogram::new(&SECONDS);
        let trace =
            TraceId::from_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        histogram.observe_duration(Duration::from_micros(30));
        histogram.observe_duration_with_exemplar(Duration::from_millis(3), trace);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 2);
        assert!((snapshot.sum - 0.00303).abs() < 1e-12);
        // 3 ms falls in the 5 ms bucket (bounds 1, 2.5, 5 ms).
        let bucket = snapshot.buckets.iter().position(|&(le, _)| le >= 0.003).unwrap();
        assert_eq!(snapshot.buckets[bucket], (0.005, 1));
        assert_eq!(snapshot.buckets[0], (0.000025, 0));
        let exemplar = snapshot.exemplars[bucket].unwrap();
        assert_eq!(exemplar.trace_id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!((exemplar.value - 0.003).abs() < 1e-12);
        assert_eq!(snapshot.exemplars.iter().flatten().count(), 1);
    }

    #[test]
    fn only_valid_traceparents_give_a_trace_id() {
        let valid = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(TraceId::from_traceparent(valid).is_some());
        for invalid in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736",
            b"",
        ] {
            assert_eq!(TraceId::from_traceparent(invalid), None, "{invalid:?}");
        }
        // A later version may carry more fields.
        assert!(
            TraceId::from_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }
}
