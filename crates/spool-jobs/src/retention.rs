//! History retention of `__jobs`: when job events may leave the log.
//!
//! Two things bound it. The job table needs no event below the offset its
//! latest durable snapshot covers: the snapshot holds every job in memory
//! (live, dead, recently finished) whole, payload included. And users read
//! history (`spool job history`, GetJob of a job no longer in memory) for
//! as long as the history retention says, by time and by size. A segment
//! goes only when it lies wholly below both: below the offset where the
//! retention would start the log and below the snapshot's offset. The log
//! itself only deletes segments below an offset it is given
//! (`Partition::delete_segments_below`); the rule is here, and the runtime
//! applies it.
//!
//! Since the snapshot's offset bounds what can go, a snapshot is also
//! taken when the retention would let more go than the last one allows
//! ([`RetentionStep::Snapshot`]), so the retention holds on a quiet server
//! too, where the event count alone would rarely call for one.

use spool_log::Retention;

const DAY_MS: u64 = 24 * 60 * 60 * 1_000;
const GIB: u64 = 1 << 30;

/// The default history retention: a week, and at most 16 GiB of events.
pub const HISTORY_RETENTION_DEFAULT: Retention = Retention {
    ms: Some(7 * DAY_MS),
    bytes: Some(16 * GIB),
};

/// What a retention check should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetentionStep {
    /// Nothing to delete.
    Nothing,
    /// The retention would let go of events the latest snapshot still
    /// needs: take a snapshot (which trims once written).
    Snapshot,
    /// Delete the segments below this offset.
    Trim(u64),
}

/// The next step, from where the log starts, where the retention would
/// start it, the offset of the latest durable snapshot (0 for none), and
/// whether any event was appended since that snapshot.
pub(crate) fn next_step(
    log_start: u64,
    retention_start: u64,
    snapshot_offset: u64,
    events_since_snapshot: bool,
) -> RetentionStep {
    if retention_start <= log_start {
        return RetentionStep::Nothing;
    }
    if snapshot_offset < retention_start && events_since_snapshot {
        return RetentionStep::Snapshot;
    }
    let below = trim_offset(retention_start, snapshot_offset);
    if below > log_start {
        RetentionStep::Trim(below)
    } else {
        RetentionStep::Nothing
    }
}

/// Below which offset `__jobs` may be deleted: the lower of where the
/// retention would start the log and the offset the latest durable snapshot
/// covers up to.
pub(crate) fn trim_offset(retention_start: u64, snapshot_offset: u64) -> u64 {
    retention_start.min(snapshot_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_goes_while_the_retention_keeps_it() {
        assert_eq!(next_step(100, 100, 500, true), RetentionStep::Nothing);
        assert_eq!(next_step(100, 50, 500, false), RetentionStep::Nothing);
    }

    #[test]
    fn a_snapshot_behind_the_retention_is_renewed_first() {
        // The retention would start the log at 400; the snapshot covers up
        // to 300 only, and events came since: a new snapshot lets more go.
        assert_eq!(next_step(100, 400, 300, true), RetentionStep::Snapshot);
        // Without new events the snapshot is as far as the log goes: trim
        // to it.
        assert_eq!(next_step(100, 400, 300, false), RetentionStep::Trim(300));
    }

    #[test]
    fn trimming_stops_at_the_lower_of_retention_and_snapshot() {
        assert_eq!(next_step(100, 400, 900, true), RetentionStep::Trim(400));
        assert_eq!(trim_offset(400, 900), 400);
        assert_eq!(trim_offset(400, 300), 300);
        // No snapshot yet: nothing is below offset 0.
        assert_eq!(next_step(0, 400, 0, false), RetentionStep::Nothing);
    }
}
