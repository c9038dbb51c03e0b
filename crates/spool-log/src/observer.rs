//! [`StoreObserver`]: what the engine tells a caller about its disk work as
//! it happens, so that a server can turn it into metrics and health without
//! the engine depending on a metrics library.
//!
//! The engine calls the observer on the thread doing the work (a flusher
//! thread for group commits), after the work, possibly while holding the
//! partition's locks. Implementations must be quick and must not block or
//! call back into the store: a few atomic adds, a notification.

use std::fmt;
use std::time::Duration;

/// One flush of a partition that made appended data durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport<'a> {
    pub topic: &'a str,
    pub partition: u32,
    /// Records the flush made durable: the group-commit batch size.
    pub records: u64,
    /// Time spent in the fsyncs of this flush.
    pub elapsed: Duration,
}

/// Receives reports of the engine's disk work. Every method has an empty
/// default, so an observer implements only what it needs.
pub trait StoreObserver: fmt::Debug + Send + Sync {
    /// A flush synced data to disk. Called on the flushing thread before
    /// the appends it made durable are acknowledged, so it must be cheap.
    fn flushed(&self, _report: &FlushReport<'_>) {}

    /// A partition refuses appends from now on, after a failed write or
    /// fsync, until the store is reopened. Called once per partition.
    fn poisoned(&self, _topic: &str, _partition: u32) {}
}
