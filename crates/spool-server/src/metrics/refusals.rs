//! Requests refused for want of room or because the server cannot take
//! them now, counted by reason: `spool_requests_refused_total{reason}`.
//!
//! The reasons are a fixed set ([`Reason`]), so the label stays bounded.
//! Refusals are counted where their status is made: the in-flight limiter,
//! the shutdown checks, and the one mapping of engine and job-layer errors
//! to statuses (`status.rs`). That mapping is a plain function called from
//! everywhere, so the counters are a process-wide static of atomics rather
//! than a handle threaded through every call.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A produce request found no in-flight room within `inflight_wait_ms`
    /// (RESOURCE_EXHAUSTED).
    InflightBytes,
    /// The server is shutting down (UNAVAILABLE).
    ShuttingDown,
    /// The disk is full (RESOURCE_EXHAUSTED).
    DiskFull,
    /// The partition is poisoned after a failed write or fsync (INTERNAL).
    StoragePoisoned,
    /// The store has `open_segments_max` segments open (RESOURCE_EXHAUSTED).
    OpenSegments,
    /// The job layer holds `jobs_in_memory_max` jobs (RESOURCE_EXHAUSTED).
    JobsInMemory,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::InflightBytes,
        Reason::ShuttingDown,
        Reason::DiskFull,
        Reason::StoragePoisoned,
        Reason::OpenSegments,
        Reason::JobsInMemory,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Reason::InflightBytes => "inflight_bytes",
            Reason::ShuttingDown => "shutting_down",
            Reason::DiskFull => "disk_full",
            Reason::StoragePoisoned => "storage_poisoned",
            Reason::OpenSegments => "open_segments",
            Reason::JobsInMemory => "jobs_in_memory",
        }
    }
}

static REFUSED: [AtomicU64; Reason::ALL.len()] = [const { AtomicU64::new(0) }; Reason::ALL.len()];

/// Counts one refused request.
pub fn count(reason: Reason) {
    REFUSED[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// Requests refused for `reason` since the process started.
pub fn refused(reason: Reason) -> u64 {
    REFUSED[reason as usize].load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_own_counter_and_label() {
        let before = refused(Reason::DiskFull);
        count(Reason::DiskFull);
        assert!(refused(Reason::DiskFull) > before);
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
    }
}
