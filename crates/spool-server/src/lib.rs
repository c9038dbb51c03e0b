//! `spool-server`: the gRPC front of Spool's storage engine, and the
//! `spoold` binary that runs it.
//!
//! Layout: [`config`] (layered configuration), [`access`] (tokens, the
//! caller of a request and the permission checks every handler makes),
//! [`auth_layer`] (the edge that authenticates each gRPC call), [`audit`]
//! (the audit trail in `__audit`), [`admin_service`] (the `spool.v1.Admin`
//! service: tokens and audit reads), [`tls`] (TLS with reloadable
//! certificates and its accept loop), [`reload`] (reloading tokens and
//! certificates on SIGHUP and on file changes), [`admin`] (the admin HTTP
//! listener: `/metrics`, `/healthz`, `/readyz`, `/api/v1/history`, and the
//! dashboard with its JSON API and audit trail),
//! [`metrics`] (what is counted and the scrape-time collectors),
//! [`history`] (the metrics history in `__metrics` and its reads),
//! [`metrics_service`] (the `spool.v1.Metrics` service), [`health`] (readiness, shared
//! by `/readyz` and gRPC health), [`log_service`] (the
//! `spool.v1.Log` service), [`jobs_service`] (the `spool.v1.Jobs` service
//! over `spool-jobs`), [`checkpoints`] (named consumer positions kept in
//! the internal topic `__checkpoints`), [`reflection`] (gRPC server
//! reflection, v1 and v1alpha), [`status`] (the one mapping from
//! engine errors to gRPC status codes), [`trace_context`] (a trace span
//! per call, continuing the caller's W3C trace context), `inflight` (bounds on produce bytes
//! in flight), `convert` (engine types to protobuf messages) and
//! `jobs_convert` (job-layer types to protobuf messages), and [`cluster`]
//! (cluster mode: the peer listener, the metadata group, replicated
//! partitions and their `spool.v1.Log` service, the cluster's status and
//! leadership transfers; single-node mode never starts it), and
//! [`cluster_service`] (the `spool.v1.Cluster` service over it).
//!
//! What it is not: it stores nothing itself (that is `spool-log`) and has
//! no client logic (that is `spool-client`). File work never runs on the
//! async runtime's threads.

#![deny(unsafe_code)]

pub mod access;
pub mod admin;
pub mod admin_service;
pub mod admission;
pub mod audit;
pub mod auth_layer;
pub mod checkpoints;
pub mod cluster;
pub mod cluster_service;
pub mod config;
pub mod connections;
mod convert;
pub mod health;
pub mod history;
pub mod inflight;
mod jobs_convert;
pub mod jobs_service;
pub mod log_service;
pub mod metrics;
pub mod metrics_service;
pub mod producer_ids;
pub mod reflection;
pub mod reload;
pub mod status;
pub mod tls;
pub mod trace_context;

pub use config::{Config, ConfigError, LogFormat};
pub use jobs_service::JobsService;
pub use log_service::{LogService, ServerState};
pub use metrics_service::MetricsService;
