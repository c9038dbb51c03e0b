//! Consumer lag, per named checkpoint and partition, computed at scrape
//! time: `spool_consumer_lag_records` (the high watermark minus the
//! committed offset) and `spool_consumer_lag_seconds` (the age of the
//! oldest record the consumer has not read: now minus the timestamp of the
//! record at its committed offset, or at the log start when retention has
//! passed it; 0 when it has read everything).
//!
//! The seconds cost one read of one batch per lagging partition, from the
//! memory-mapped segment; the scrape runs on the blocking pool for that.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::log_service::{ServerState, record_timestamp};

#[derive(Debug)]
pub struct ConsumerCollector {
    pub state: Arc<ServerState>,
}

/// One named checkpoint's lag in one partition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lag {
    pub(crate) consumer: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    /// The committed offset.
    pub(crate) offset: u64,
    pub(crate) high_watermark: u64,
    pub(crate) records: u64,
    pub(crate) seconds: f64,
}

/// The lag of every named checkpoint in every partition it names that
/// still exists, sorted by consumer and topic; the metrics and the
/// dashboard's consumers page both read it. Blocking: reads one batch per
/// lagging partition.
pub(crate) fn consumer_lags(state: &ServerState) -> Vec<Lag> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64);
    let mut lags = Vec::new();
    // In a cluster a consumer reads up to the committed offset.
    let replicated = state.cluster.get().is_some();
    for (consumer, topic, positions) in state.all_checkpoints() {
        // A checkpoint may outlive its topic or name a partition a
        // topic no longer has: nothing to measure then.
        let Ok(stored) = state.store.topic(&topic) else {
            continue;
        };
        for (partition, position) in positions {
            let Ok(handle) = stored.partition(partition) else {
                continue;
            };
            let high_watermark = if replicated {
                handle.committed_offset()
            } else {
                handle.high_watermark()
            };
            let records = high_watermark.saturating_sub(position.offset);
            let oldest_unread = position.offset.max(handle.log_start_offset());
            let seconds = if oldest_unread < high_watermark {
                record_timestamp(handle, oldest_unread)
                    .map_or(0.0, |timestamp_ms| (now_ms - timestamp_ms).max(0) as f64 / 1000.0)
            } else {
                0.0
            };
            lags.push(Lag {
                consumer: consumer.clone(),
                topic: topic.clone(),
                partition,
                offset: position.offset,
                high_watermark,
                records,
                seconds,
            });
        }
    }
    lags
}

impl Collector for ConsumerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let lags = consumer_lags(&self.state);
        let labels = |lag: &Lag| {
            [
                ("consumer", lag.consumer.clone()),
                ("topic", lag.topic.clone()),
                ("partition", lag.partition.to_string()),
            ]
        };
        let mut metric = encoder.encode_descriptor(
            "spool_consumer_lag_records",
            "Records in the partition past the consumer's committed checkpoint.",
            None,
            MetricType::Gauge,
        )?;
        for lag in &lags {
            metric.encode_family(&labels(lag))?.encode_gauge(&lag.records)?;
        }
        let mut metric = encoder.encode_descriptor(
            "spool_consumer_lag_seconds",
            "Age of the oldest record the consumer has not read (by record timestamp); 0 when it is caught up.",
            None,
            MetricType::Gauge,
        )?;
        for lag in &lags {
            metric.encode_family(&labels(lag))?.encode_gauge(&lag.seconds)?;
        }
        Ok(())
    }
}
