//! `spool-log`: Spool's storage engine.
//!
//! A [`Store`] owns one data directory of topics; a [`Topic`] has
//! partitions; a [`Partition`] is an append-only log of record batches kept
//! in segment files (`{base_offset:020}.log`) with a sparse offset index and
//! a time index beside each. Segment files are memory-mapped: appends copy a
//! batch into the mapping of the active segment, reads hand out zero-copy
//! [`bytes::Bytes`] slices of it. Durability is chosen per append and
//! fsyncs are group-committed; recovery truncates a torn tail and never
//! serves bytes that fail their CRC.
//!
//! What it is not: it has no network code, no async runtime and no
//! knowledge of jobs or consumers. Waiting (long polls, durable appends) is
//! offered as plain `std::future::Future`s and blocking calls, so any
//! runtime can drive it.
//!
//! The batch format itself (encoding, validation, record decoding) is the
//! `spool-format` crate's, re-exported here as [`batch`].
//!
//! `docs/storage-format.md` describes the files byte by byte and
//! `docs/SAFETY.md` the memory-mapping invariants; all `unsafe` code lives
//! in the `mmap` module.

#![deny(unsafe_code)]

mod checkpoint;
pub mod config;
mod context;
pub mod error;
mod flusher;
pub mod fsutil;
pub mod index;
mod mmap;
pub mod names;
pub mod observer;
pub mod partition;
pub mod producers;
mod recovery;
mod retention;
pub mod segment;
pub mod store;
pub mod terms;
pub mod topic;
pub mod vote;
pub mod watch;

pub use config::{FaultInjector, StoreConfig, TopicConfig};
pub use error::{Error, Result};
pub use names::{is_internal_topic, validate_topic_name};
pub use observer::{FlushReport, StoreObserver};
pub use partition::{AppendOutcome, Durability, Partition, PartitionInfo, PartitionStats, ReadResult};
pub use recovery::PartitionRecovery;
pub use retention::Retention;
pub use segment::ScanReport;
/// The batch codec, which lives in `spool-format` so that clients can use
/// it without linking the engine; re-exported under its old path.
pub use spool_format::batch;
pub use spool_format::batch::{Batch, Header, Record, RecordView};
pub use spool_format::{FormatError, RecordProblem};
pub use store::{RecoveryReport, Store, StoreStats};
pub use terms::TermStart;
pub use topic::Topic;
pub use vote::Vote;
pub use watch::WaitFor;
