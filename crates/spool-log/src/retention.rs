//! Retention policy: how many of a partition's oldest segments may go.
//! Pure arithmetic over segment summaries; the partition applies the
//! answer (moves the log start, swaps the segment list, deletes the files).
//!
//! Two rules, which compose: a topic's own retention by time and size
//! ([`Retention::segments_to_delete`]), and "wholly below an offset"
//! ([`segments_below`]), for an owner of the log that knows up to where
//! its records are no longer needed (the job layer, past its snapshot).

/// Retention settings by time and size; `None` keeps forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub ms: Option<u64>,
    pub bytes: Option<u64>,
}

/// What retention needs to know of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub base_offset: u64,
    /// The offset after the segment's last record.
    pub next_offset: u64,
    pub max_timestamp_ms: i64,
    pub size_bytes: u64,
}

/// How many segments, oldest first, lie wholly below `offset` (every
/// record's offset is smaller). `segments` lists every segment, oldest
/// first; the last is the active one, which is never counted.
pub(crate) fn segments_below(segments: &[SegmentSummary], offset: u64) -> usize {
    let closed = &segments[..segments.len().saturating_sub(1)];
    closed.iter().take_while(|s| s.next_offset <= offset).count()
}

impl Retention {
    /// True when neither time nor size lets anything go.
    pub fn keeps_everything(&self) -> bool {
        self.ms.is_none() && self.bytes.is_none()
    }

    /// How many segments, oldest first, to delete at `now_ms`. `segments`
    /// lists every segment, oldest first; the last is the active one, which
    /// is never deleted.
    ///
    /// By time, a segment goes while its largest timestamp is older than
    /// `now_ms - ms`; by size, while the segments after it would still hold
    /// at least `bytes`.
    pub(crate) fn segments_to_delete(&self, segments: &[SegmentSummary], now_ms: i64) -> usize {
        let closed = &segments[..segments.len().saturating_sub(1)];
        let mut remove = 0;
        if let Some(ms) = self.ms {
            let cutoff = now_ms.saturating_sub(ms.min(i64::MAX as u64) as i64);
            while remove < closed.len() && closed[remove].max_timestamp_ms < cutoff {
                remove += 1;
            }
        }
        if let Some(bytes_max) = self.bytes {
            let mut total: u64 = segments[remove..].iter().map(|s| s.size_bytes).sum();
            while remove < closed.len() && total - closed[remove].size_bytes >= bytes_max {
                total -= closed[remove].size_bytes;
                remove += 1;
            }
        }
        remove
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Segments of 10 offsets each, from `(max_timestamp_ms, size_bytes)`.
    fn segments(spec: &[(i64, u64)]) -> Vec<SegmentSummary> {
        spec.iter()
            .enumerate()
            .map(|(i, &(max_timestamp_ms, size_bytes))| SegmentSummary {
                base_offset: i as u64 * 10,
                next_offset: i as u64 * 10 + 10,
                max_timestamp_ms,
                size_bytes,
            })
            .collect()
    }

    #[test]
    fn time_deletes_old_closed_segments_and_never_the_active_one() {
        let retention = Retention {
            ms: Some(100),
            bytes: None,
        };
        let list = segments(&[(10, 5), (50, 5), (950, 5), (20, 5)]);
        // Cutoff 900: the first two are older; the third stops the walk.
        assert_eq!(retention.segments_to_delete(&list, 1_000), 2);
        // Everything is old, but the active (last) segment stays.
        assert_eq!(retention.segments_to_delete(&list, 10_000), 3);
        assert_eq!(retention.segments_to_delete(&segments(&[(0, 5)]), 10_000), 0);
    }

    #[test]
    fn size_keeps_at_least_the_limit() {
        let retention = Retention {
            ms: None,
            bytes: Some(25),
        };
        let list = segments(&[(0, 10), (0, 10), (0, 10), (0, 10)]);
        // 40 bytes: without the first, 30 remain (>= 25); without the
        // second too, 20 would remain, too few.
        assert_eq!(retention.segments_to_delete(&list, 0), 1);
        assert!(Retention::default().keeps_everything());
    }

    #[test]
    fn time_then_size() {
        let retention = Retention {
            ms: Some(100),
            bytes: Some(10),
        };
        let list = segments(&[(10, 10), (950, 10), (960, 10), (970, 10)]);
        // Time takes the first; size then takes the next two, leaving the
        // active segment's 10 bytes.
        assert_eq!(retention.segments_to_delete(&list, 1_000), 3);
        assert_eq!(retention.segments_to_delete(&[], 1_000), 0);
    }

    #[test]
    fn below_counts_closed_segments_whose_records_all_precede_the_offset() {
        let list = segments(&[(0, 1), (0, 1), (0, 1)]);
        // Offsets 0..10, 10..20 and the active 20..30.
        assert_eq!(segments_below(&list, 0), 0);
        assert_eq!(segments_below(&list, 9), 0, "offset 9 is still needed");
        assert_eq!(segments_below(&list, 10), 1);
        assert_eq!(segments_below(&list, 25), 2);
        assert_eq!(segments_below(&list, u64::MAX), 2, "never the active one");
        assert_eq!(segments_below(&[], 5), 0);
    }

    fn arbitrary_segments() -> impl Strategy<Value = Vec<SegmentSummary>> {
        // (records, max timestamp, size): empty segments included.
        prop::collection::vec((0u64..20, 0i64..1_000, 1u64..100), 0..12).prop_map(|spec| {
            let mut base_offset = 0;
            spec.into_iter()
                .map(|(records, max_timestamp_ms, size_bytes)| {
                    let segment = SegmentSummary {
                        base_offset,
                        next_offset: base_offset + records,
                        max_timestamp_ms,
                        size_bytes,
                    };
                    base_offset += records;
                    segment
                })
                .collect()
        })
    }

    proptest! {
        /// Which segments an owner of the log may delete, when it bounds a
        /// retention by the offset it still needs (the job layer and its
        /// snapshot): the oldest closed segments that the retention lets go
        /// and that lie wholly below that offset, and no others.
        #[test]
        fn retention_bounded_by_an_offset_deletes_only_what_both_let_go(
            list in arbitrary_segments(),
            ms in prop::option::of(0u64..1_200),
            bytes in prop::option::of(0u64..1_000),
            now_ms in 0i64..1_200,
            needed in 0u64..250,
        ) {
            let retention = Retention { ms, bytes };
            let by_retention = retention.segments_to_delete(&list, now_ms);
            let go = by_retention.min(segments_below(&list, needed));
            let closed = list.len().saturating_sub(1);
            prop_assert!(go <= closed, "the active segment stays");
            for (i, segment) in list[..go].iter().enumerate() {
                prop_assert!(segment.next_offset <= needed, "segment {i} holds a needed offset");
            }
            // Retention's own count, from its definition: the longest prefix
            // older than the cutoff, or the longest that leaves at least
            // `bytes`, whichever is longer.
            let by_time = ms.map_or(0, |ms| {
                let cutoff = now_ms - ms as i64;
                list[..closed].iter().take_while(|s| s.max_timestamp_ms < cutoff).count()
            });
            let by_size = bytes.map_or(0, |bytes| {
                (0..=closed)
                    .rev()
                    .find(|&k| list[k..].iter().map(|s| s.size_bytes).sum::<u64>() >= bytes)
                    .unwrap_or(0)
            });
            prop_assert_eq!(by_retention, by_time.max(by_size));
            // Nothing that both let go is kept.
            if go < closed {
                prop_assert!(go == by_retention || list[go].next_offset > needed);
            }
        }
    }
}
