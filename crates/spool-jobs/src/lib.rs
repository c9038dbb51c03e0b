//! `spool-jobs`: background jobs on top of Spool's log.
//!
//! Every change of a job's state is an [`Event`] appended to the internal
//! topic `__jobs`; the job table in memory is derived from those events and
//! rebuilt from them (and a snapshot) at start, so nothing about a job
//! lives only in memory and its whole history can be read back.
//!
//! Layout: [`core`] is the pure state machine (requests and the time in,
//! events and replies out), with its requests and replies in `request`,
//! its ordering sets and counters in `indexes`, and in `apply` the one
//! function through which events change jobs; `activity` and [`latency`]
//! count what happens per queue (totals, queue wait, run time and end to
//! end latencies, connected workers) and hand it out as [`QueueMetrics`];
//! [`event`] and [`codec`] encode events;
//! [`search`] finds jobs by key, header, payload words and error text;
//! [`job`] and [`config`] hold the data and its limits, [`queue`] the
//! rule for queue names and what is kept per known queue; [`runtime`] runs
//! the state machine on a thread, appends its events with group-committed
//! fsync, arms its timers and takes snapshots; [`snapshot`] encodes the
//! table; [`retention`] decides when events may leave `__jobs`, and
//! [`history`] reads one job's events back, saying when its start was
//! trimmed.
//!
//! What it is not: no network code (the gRPC service is in `spool-server`)
//! and no worker (that is `spool-client`'s runtime and `spool-worker`).

#![deny(unsafe_code)]

mod activity;
mod apply;
pub mod codec;
pub mod config;
pub mod core;
pub mod event;
pub mod history;
mod indexes;
pub mod job;
pub mod latency;
pub mod queue;
mod replication;
mod request;
pub mod retention;
pub mod runtime;
pub mod search;
pub mod snapshot;

pub use crate::activity::{CLAIMERS_TRACKED_MAX, QueueCounters, QueueMetrics};
pub use crate::apply::JobFromLog;
pub use crate::config::JobsConfig;
pub use crate::core::{
    ClaimSpec, ClaimedJob, DeadFilter, EnqueueResult, JobError, JobsCore, QueueStats, QueueSummary, Reply,
    Request, RequestId, Step, Target,
};
pub use crate::event::Event;
pub use crate::history::{HistoryPage, LoggedJob, Trimmed};
pub use crate::job::{
    Attempt, AttemptError, AttemptOutcome, Attempts, Job, JobId, JobSpec, JobState, Schedule,
};
pub use crate::latency::{CumulativeHistogram, Latency, LatencyExemplar, Percentiles, Window};
pub use crate::queue::{
    Backoff, QueueConfig, QueueConfigChange, RATE_LIMIT_JOBS_MAX, RATE_LIMIT_WINDOW_MS_MAX, RateLimit,
    validate_queue_name,
};
pub use crate::replication::{Proposed, Replication, Ticket};
pub use crate::retention::HISTORY_RETENTION_DEFAULT;
pub use crate::runtime::{JobsRuntime, RuntimeConfig, StartError, Startup};
pub use crate::search::{SearchField, SearchHits, SearchQuery, fingerprint};
