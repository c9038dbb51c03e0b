//! The Rust client of Spool's services (`spool.v1.Log` and `spool.v1.Jobs`).
//!
//! - [`Client`]: a connection (one HTTP/2 channel, cheap to clone) with a
//!   thin async method per RPC: topics, produce, fetch, subscribe, offsets,
//!   checkpoints, the server's version and limits; answers are Rust types
//!   ([`TopicConfig`], [`PartitionOffset`], ...), and [`Client::log_client`]
//!   gives the generated tonic client for the rest.
//! - [`Producer`]: batches records per partition by size and linger time,
//!   sends each batch already encoded in the storage format (the server's
//!   fast path), partitions keys with the server's own function, bounds the
//!   requests in flight (backpressure reaches the caller), refuses a record
//!   over the server's size limits before sending it
//!   ([`Error::RecordTooLarge`]), and acknowledges each record with its
//!   offset, fsynced by default. Retries on `UNAVAILABLE` may duplicate
//!   records: see [`Producer`].
//! - [`Consumer`]: an async [`Stream`](tokio_stream::Stream) of
//!   [`ConsumedRecord`]s from one or all partitions, starting at the earliest
//!   or latest offset, an offset, a timestamp or a named checkpoint, and
//!   committing checkpoints.
//! - [`jobs::Jobs`] ([`Client::jobs`]): the typed job client: enqueue (one
//!   or a batch), get, list, history, re-drive and purge dead jobs, cancel,
//!   queue statistics, bare claims and outcomes, with states as enums and
//!   durations as [`Duration`](std::time::Duration).
//! - [`worker`]: the job worker runtime: handlers per queue, bounded
//!   concurrency, batched claims and acknowledgements, heartbeats,
//!   cancellation, graceful shutdown; [`Client::jobs_client`] gives the
//!   generated Jobs client for everything else.
//! - Cluster operations ([`Client::cluster_status`],
//!   [`Client::transfer_leader`]): `spool.v1.Cluster`, for cluster admins.
//! - [`Error`]: gRPC statuses mapped into variants that keep the status.
//! - Traces: every call, produce and job emits a `tracing` span under the
//!   target [`telemetry::TARGET`] with OpenTelemetry's messaging fields
//!   (`send orders`, `process emails`), and carries the W3C `traceparent`
//!   of the caller's span in gRPC metadata, record headers and job headers.
//!   The application decides about export: install `tracing-opentelemetry`'s
//!   layer (or, with the feature `otlp`, [`telemetry::otlp::Exporter`]'s)
//!   and the spans join its traces; without it they cost a disabled span
//!   each and no header is added.
//!
//! Layout: `client.rs` (connection, log RPCs and their types), `producer/`
//! (the `Producer`; `accumulator.rs` holds its batching decisions, free of
//! I/O and clock so they are unit tested; `limits.rs` the size limits it
//! checks; `delivery.rs` the acknowledgements), `consumer.rs`, `record.rs`
//! (record types, their sizes and the batch codec glue over
//! `spool_format::batch`), `cluster.rs` (cluster operations), `error.rs`, `jobs/` (the typed job client; its
//! types in `types.rs`), `worker/` (the job worker runtime).
//!
//! Security: [`ClientOptions`] carries a bearer token (sent with every
//! call) and, for `https://` URLs, the CA bundle and an optional client
//! certificate for mutual TLS (rustls, no OpenSSL).
//!
//! What it is not: no server, no consumer groups (offsets are the
//! consumer's, checkpoints optional), no idempotent producer (a retry can
//! duplicate).
//!
//! ```no_run
//! # async fn example() -> spool_client::Result<()> {
//! use spool_client::{Client, NewTopic, ProducerConfig, Record, StartPosition};
//! use tokio_stream::StreamExt;
//!
//! let client = Client::connect("http://127.0.0.1:7070").await?;
//! client.create_topic(NewTopic::new("orders", 3)).await?;
//!
//! let producer = client.producer("orders", ProducerConfig::default()).await?;
//! let ack = producer.send(Record::new("created").with_key("order-7")).await?;
//! println!("stored at partition {} offset {}", ack.partition, ack.offset);
//!
//! let mut consumer = client.consumer("orders").start(StartPosition::Earliest).follow(false).build().await?;
//! while let Some(record) = consumer.next().await {
//!     let record = record?;
//!     println!("{}:{} {:?}", record.partition, record.offset, record.value);
//! }
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]

mod admin;
mod client;
mod cluster;
mod consumer;
mod error;
pub mod jobs;
mod producer;
mod record;
mod trace;
pub mod worker;

pub use admin::{AuditQuery, AuditRecord, TokenInfo};
pub use client::{
    Checkpoint, Client, ClientOptions, Credentials, Durability, History, HistoryQuery, HistoryResult,
    HistorySeries, MESSAGE_BYTES_MAX_DEFAULT, NewTopic, OffsetSpec, PartitionInfo, PartitionOffset,
    ServerInfo, ServerLimits, TopicConfig, TopicDescription, Transport,
};
pub use cluster::{
    ClusterStatus, GroupStatus, JOBS_GROUP_TOPIC, METADATA_GROUP_TOPIC, NodeStatus, ReplicaProgress,
};
pub use consumer::{CheckpointFallback, Consumer, ConsumerBuilder, StartPosition};
pub use error::{
    Error, ExceededLimit, HIGH_WATERMARK_METADATA, LOG_START_OFFSET_METADATA, Result, SizeLimit,
};
pub use producer::{
    BatchAck, DeliveryFuture, ProduceLimits, Producer, ProducerConfig, RecordAck, TRACE_LINKS_MAX, Target,
};
pub use record::{ConsumedRecord, Header, Record, decode_batches, encode_batch};
/// The generated protobuf types and tonic clients (`spool_proto::v1`).
pub use spool_proto::v1 as proto;
/// W3C trace context and, with the feature `otlp`, the OTLP exporter
/// (`spool_telemetry`).
pub use spool_telemetry as telemetry;
/// gRPC status types that appear in [`Error`].
pub use tonic::{Code, Status};
