//! The state every partition of a store shares, in a file of its own so
//! that the store, its topics and their partitions all depend on it rather
//! than on each other.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::config::StoreConfig;
use crate::flusher::Flusher;

/// State every partition of a store shares: the configuration, the
/// group-commit flusher, and the counters the store reports.
#[derive(Debug)]
pub(crate) struct StoreContext {
    pub config: StoreConfig,
    pub flusher: Arc<Flusher>,
    /// Segments open in the whole store, checked against
    /// `open_segments_max` when a partition rolls.
    pub open_segments: AtomicU64,
    /// Partition flushes that synced data.
    pub flushes: AtomicU64,
}
