//! Metrics of the log, read from the store at scrape time: records and
//! bytes appended and fetched per topic, each partition's offsets and
//! size, and the group-commit histograms the engine reports to
//! [`StorageMetrics`](super::StorageMetrics).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use spool_log::{PartitionInfo, PartitionStats, Store};
use spool_metrics::HistogramSnapshot;

use super::StorageMetrics;

/// One partition as a scrape sees it.
struct PartitionRow {
    partition: u32,
    info: PartitionInfo,
    stats: PartitionStats,
}

/// See the module documentation.
#[derive(Debug)]
pub struct LogCollector {
    pub store: Arc<Store>,
    pub storage: Arc<StorageMetrics>,
}

impl LogCollector {
    fn rows(&self) -> Vec<(String, Vec<PartitionRow>)> {
        self.store
            .topics()
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions()
                    .iter()
                    .map(|partition| PartitionRow {
                        partition: partition.id(),
                        info: partition.info(),
                        stats: partition.stats(),
                    })
                    .collect();
                (topic.name().to_owned(), partitions)
            })
            .collect()
    }
}

type TopicCounter = fn(&PartitionStats) -> u64;
type PartitionGauge = fn(&PartitionInfo) -> u64;

const TOPIC_COUNTERS: [(&str, &str, TopicCounter); 4] = [
    (
        "spool_log_appended_records",
        "Records appended to the topic since the server started.",
        |stats| stats.appended_records,
    ),
    (
        "spool_log_appended_bytes",
        "Stored batch bytes (headers included) appended to the topic since the server started.",
        |stats| stats.appended_bytes,
    ),
    (
        "spool_log_fetched_records",
        "Records handed to consumers by Fetch and Subscribe since the server started.",
        |stats| stats.fetched_records,
    ),
    (
        "spool_log_fetched_bytes",
        "Stored batch bytes that Fetch and Subscribe read for consumers since the server started.",
        |stats| stats.fetched_bytes,
    ),
];

const PARTITION_GAUGES: [(&str, &str, PartitionGauge); 4] = [
    (
        "spool_partition_high_watermark",
        "Offset the next record appended to the partition gets.",
        |info| info.high_watermark,
    ),
    (
        "spool_partition_log_start_offset",
        "First offset the partition still holds (retention moves it).",
        |info| info.log_start_offset,
    ),
    (
        "spool_partition_size_bytes",
        "Bytes of the partition's segments on disk (log data, without indexes).",
        |info| info.size_bytes,
    ),
    ("spool_partition_segments", "Segments of the partition.", |info| {
        info.segment_count
    }),
];

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows();
        for (name, help, value) in TOPIC_COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (topic, partitions) in &rows {
                let total: u64 = partitions.iter().map(|row| value(&row.stats)).sum();
                let labels = [("topic", topic.as_str())];
                metric
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&total, None)?;
            }
        }
        for (name, help, value) in PARTITION_GAUGES {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (topic, partitions) in &rows {
                for row in partitions {
                    let labels = [("topic", topic.clone()), ("partition", row.partition.to_string())];
                    metric.encode_family(&labels)?.encode_gauge(&value(&row.info))?;
                }
            }
        }
        encode_histogram(
            &mut encoder,
            "spool_log_fsync_duration_seconds",
            "Time one flush of a partition spent in fsync (one group commit).",
            self.storage.fsync.snapshot(),
        )?;
        encode_histogram(
            &mut encoder,
            "spool_log_flush_records",
            "Records made durable by one flush of a partition: the group-commit batch size.",
            self.storage.flush_records.snapshot(),
        )
    }
}

/// One unlabelled histogram.
pub fn encode_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(snapshot.sum, snapshot.count, &snapshot.buckets, None)
}
