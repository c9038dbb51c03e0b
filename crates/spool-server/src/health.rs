//! Liveness and readiness, one definition for HTTP and gRPC.
//!
//! Live: the process answers. Ready: storage is open and no partition is
//! poisoned, and the server is not shutting down. `/readyz` on the admin
//! listener checks [`readiness`] on every probe; the gRPC health service
//! (`grpc.health.v1`) is switched to NOT_SERVING by [`follow_storage`]
//! when a partition is poisoned and by `main` when shutdown begins, so
//! both say the same thing.

use std::fmt;

use spool_log::Store;
use spool_proto::v1::jobs_server::JobsServer;
use spool_proto::v1::log_server::LogServer;
use spool_proto::v1::metrics_server::MetricsServer;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::log_service::ServerState;
use crate::{JobsService, LogService, MetricsService};

/// Why the server is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    ShuttingDown,
    /// These partitions refuse appends after a failed write or fsync.
    StoragePoisoned {
        partitions: Vec<(String, u32)>,
    },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::ShuttingDown => f.write_str("not ready: the server is shutting down"),
            NotReady::StoragePoisoned { partitions } => {
                let names: Vec<String> = partitions
                    .iter()
                    .map(|(topic, partition)| format!("{topic}/{partition}"))
                    .collect();
                write!(
                    f,
                    "not ready: storage is poisoned (a write or fsync failed; restart the server to recover): {}",
                    names.join(", ")
                )
            }
        }
    }
}

/// Partitions that refuse appends after a failed write or fsync.
pub fn poisoned_partitions(store: &Store) -> Vec<(String, u32)> {
    store
        .topics()
        .iter()
        .flat_map(|topic| {
            topic
                .partitions()
                .iter()
                .filter(|partition| partition.is_poisoned())
                .map(|partition| (topic.name().to_owned(), partition.id()))
        })
        .collect()
}

/// Whether the server is ready to serve; see the module documentation.
pub fn readiness(state: &ServerState) -> Result<(), NotReady> {
    if *state.shutdown.borrow() {
        return Err(NotReady::ShuttingDown);
    }
    let partitions = poisoned_partitions(&state.store);
    if !partitions.is_empty() {
        return Err(NotReady::StoragePoisoned { partitions });
    }
    Ok(())
}

/// Sets the gRPC health of every service to NOT_SERVING once `poisoned`
/// turns true (storage reports its first poisoned partition).
pub async fn follow_storage(mut poisoned: watch::Receiver<bool>, reporter: HealthReporter) {
    if poisoned.wait_for(|poisoned| *poisoned).await.is_ok() {
        set_not_serving(&reporter).await;
    }
}

/// SERVING for Spool's services and for the server as a whole.
pub async fn set_serving(reporter: &HealthReporter) {
    reporter.set_serving::<LogServer<LogService>>().await;
    reporter.set_serving::<JobsServer<JobsService>>().await;
    reporter.set_serving::<MetricsServer<MetricsService>>().await;
    reporter.set_service_status("", ServingStatus::Serving).await;
}

/// NOT_SERVING for Spool's services and for the server as a whole.
pub async fn set_not_serving(reporter: &HealthReporter) {
    reporter.set_not_serving::<LogServer<LogService>>().await;
    reporter.set_not_serving::<JobsServer<JobsService>>().await;
    reporter.set_not_serving::<MetricsServer<MetricsService>>().await;
    reporter.set_service_status("", ServingStatus::NotServing).await;
}
