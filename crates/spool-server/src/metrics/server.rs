//! Metrics of the server process: uptime, build, open connections,
//! whether storage is poisoned, produce bytes in flight and refused
//! requests.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::ServerMetrics;
use super::refusals::{self, Reason};
use crate::health;
use crate::log_service::ServerState;

#[derive(Debug)]
pub struct ServerCollector {
    pub metrics: Arc<ServerMetrics>,
    pub state: Arc<ServerState>,
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encoder
            .encode_descriptor(
                "spool_uptime_seconds",
                "Seconds since the server process started.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.metrics.started.elapsed().as_secs_f64())?;
        encoder
            .encode_descriptor(
                "spool_build",
                "The server's version, as a label; the value is always 1.",
                None,
                MetricType::Info,
            )?
            .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        encoder
            .encode_descriptor(
                "spool_open_connections",
                "TCP connections open on the gRPC listener.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.metrics.connections.get())?;
        let gate = &self.metrics.connection_gate.counters;
        let mut refused = encoder.encode_descriptor(
            "spool_connections_refused",
            "Connections to the gRPC listener closed unserved: too many open in total, or from one address.",
            None,
            MetricType::Counter,
        )?;
        for (reason, counter) in [
            ("total", &gate.refused_total),
            ("per_address", &gate.refused_per_address),
        ] {
            refused
                .encode_family(&[("reason", reason)])?
                .encode_counter::<NoLabelSet, _, u64>(&counter.load(Ordering::Relaxed), None)?;
        }
        let mut closed = encoder.encode_descriptor(
            "spool_connections_timed_out",
            "Connections to the gRPC listener closed for sending too little at first, or nothing for too long.",
            None,
            MetricType::Counter,
        )?;
        for (reason, counter) in [
            ("handshake", &gate.handshake_timeouts),
            ("idle", &gate.idle_timeouts),
        ] {
            closed
                .encode_family(&[("reason", reason)])?
                .encode_counter::<NoLabelSet, _, u64>(&counter.load(Ordering::Relaxed), None)?;
        }
        let poisoned = u64::from(!health::poisoned_partitions(&self.state.store).is_empty());
        encoder
            .encode_descriptor(
                "spool_storage_poisoned",
                "1 when a partition refuses appends after a failed write or fsync (until a restart), else 0.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&poisoned)?;
        encoder
            .encode_descriptor(
                "spool_inflight_bytes",
                "Produce request bytes admitted and not yet appended, in whole KiB.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.state.inflight.inflight_bytes())?;
        encoder
            .encode_descriptor(
                "spool_inflight_bytes_max",
                "The in-flight limit (inflight_bytes_max).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.state.config.inflight_bytes_max)?;
        let mut refused = encoder.encode_descriptor(
            "spool_requests_refused",
            "Requests refused for want of room or because the server could not take them, by reason.",
            None,
            MetricType::Counter,
        )?;
        for reason in Reason::ALL {
            refused
                .encode_family(&[("reason", reason.label())])?
                .encode_counter::<NoLabelSet, _, u64>(&refusals::refused(reason), None)?;
        }
        Ok(())
    }
}
