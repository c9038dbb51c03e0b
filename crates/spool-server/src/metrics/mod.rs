//! The server's metrics: what is counted on request paths, and the
//! collectors that read everything else at scrape time.
//!
//! Layout: [`rpc`] (the latency of every gRPC call, a tower layer),
//! [`connections`] (open connections on the gRPC listener),
//! [`refusals`] (refused requests by reason), [`log`] (topics and
//! partitions, read from the store, and the group-commit histograms),
//! [`consumers`] (lag per named checkpoint), [`jobs`] (per queue, from
//! the job runtime's snapshot), [`server`] (uptime, build, poisoned
//! storage, in-flight bytes). [`exposition`] puts them together
//! for the admin listener's `/metrics`.
//!
//! Adding metrics of another layer is one module, as [`jobs`] is:
//! a `prometheus_client::collector::Collector` that reads that layer's
//! snapshot when `encode` is called, registered in [`exposition`] with
//! `registry.register_collector`. Collectors run on the blocking pool, so
//! they may take the layer's locks briefly, or wait on the runtime with
//! `Handle::block_on` under a timeout (as [`jobs`] does for the job
//! thread's answer). Histograms a layer keeps (as [`spool_metrics::Histogram`]
//! or its own bucket counts) are written with `encode_histogram` (see
//! `log::encode_histogram`).

pub mod connections;
pub mod consumers;
pub mod jobs;
pub mod log;
pub mod refusals;
pub mod rpc;
pub mod server;

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::registry::Registry;
use spool_log::{FlushReport, StoreObserver};
use spool_metrics::{Exposition, Histogram, histogram};
use tokio::sync::watch;

use crate::connections::{ConnectionGate, ConnectionLimits};
use crate::log_service::ServerState;
use connections::OpenConnections;
use rpc::{RpcDurations, RpcMetrics};

/// What the server counts as it runs; the rest is read at scrape time.
#[derive(Debug)]
pub struct ServerMetrics {
    pub started: Instant,
    pub rpc: Arc<RpcMetrics>,
    pub storage: Arc<StorageMetrics>,
    pub connections: Arc<OpenConnections>,
    /// The bounds on the gRPC listener's connections, and what they did.
    pub connection_gate: Arc<ConnectionGate>,
}

impl ServerMetrics {
    pub fn new(limits: ConnectionLimits) -> Result<ServerMetrics, prost::DecodeError> {
        Ok(ServerMetrics {
            started: Instant::now(),
            rpc: Arc::new(RpcMetrics::new(spool_proto::FILE_DESCRIPTOR_SET)?),
            storage: Arc::new(StorageMetrics::default()),
            connections: Arc::new(OpenConnections::default()),
            connection_gate: ConnectionGate::new(limits),
        })
    }
}

/// What the storage engine reports ([`StoreObserver`]): flush latency and
/// size, and poisoned partitions (for health).
#[derive(Debug)]
pub struct StorageMetrics {
    pub fsync: Histogram,
    pub flush_records: Histogram,
    poisoned: watch::Sender<bool>,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        StorageMetrics {
            fsync: Histogram::new(&histogram::SECONDS),
            flush_records: Histogram::new(&histogram::COUNTS),
            poisoned: watch::Sender::new(false),
        }
    }
}

impl StorageMetrics {
    /// Turns true when the first partition is poisoned.
    pub fn poisoned(&self) -> watch::Receiver<bool> {
        self.poisoned.subscribe()
    }
}

impl StoreObserver for StorageMetrics {
    fn flushed(&self, report: &FlushReport<'_>) {
        self.fsync.observe_duration(report.elapsed);
        self.flush_records.observe(report.records);
    }

    fn poisoned(&self, topic: &str, partition: u32) {
        tracing::error!(topic, partition, "partition poisoned: storage is no longer ready");
        self.poisoned.send_replace(true);
    }
}

/// Every metric of the server, for `/metrics`; the job layer's when
/// `jobs` is given.
pub fn exposition(
    metrics: &Arc<ServerMetrics>,
    state: &Arc<ServerState>,
    jobs: Option<&Arc<spool_jobs::JobsRuntime>>,
) -> Exposition {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(server::ServerCollector {
        metrics: Arc::clone(metrics),
        state: Arc::clone(state),
    }));
    registry.register_collector(Box::new(log::LogCollector {
        store: Arc::clone(&state.store),
        storage: Arc::clone(&metrics.storage),
    }));
    registry.register_collector(Box::new(consumers::ConsumerCollector {
        state: Arc::clone(state),
    }));
    let scrape = Arc::new(jobs::ScrapeSnapshot::default());
    if let Some(jobs) = jobs {
        registry.register_collector(Box::new(jobs::JobsCollector {
            jobs: Arc::clone(jobs),
            scrape: Arc::clone(&scrape),
        }));
    }
    let mut exposition = Exposition::new(registry);
    exposition.add_exemplar_family(Box::new(RpcDurations(Arc::clone(&metrics.rpc))));
    if jobs.is_some() {
        for family in jobs::JobHistograms::all(&scrape) {
            exposition.add_exemplar_family(Box::new(family));
        }
    }
    exposition
}
