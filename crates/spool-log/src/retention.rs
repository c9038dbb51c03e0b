//! Retention policy: how many of a partition's oldest segments a topic's
//! retention settings let go. Pure arithmetic over segment summaries; the
//! partition applies the answer (moves the log start, swaps the segment
//! list, deletes the files).

/// A topic's retention settings; `None` keeps forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retention {
    pub ms: Option<u64>,
    pub bytes: Option<u64>,
}

/// What retention needs to know of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub max_timestamp_ms: i64,
    pub size_bytes: u64,
}

impl Retention {
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
    pub fn segments_to_delete(&self, segments: &[SegmentSummary], now_ms: i64) -> usize {
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
    use super::*;

    fn segments(spec: &[(i64, u64)]) -> Vec<SegmentSummary> {
        spec.iter()
            .map(|&(max_timestamp_ms, size_bytes)| SegmentSummary {
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
        assert!(
            Retention {
                ms: None,
                bytes: None
            }
            .keeps_everything()
        );
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
}
