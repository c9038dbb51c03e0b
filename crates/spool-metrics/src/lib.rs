//! `spool-metrics`: what Spool's binaries share to expose metrics.
//!
//! Layout: [`histogram`] (lock-free histograms with fixed buckets and
//! trace-id exemplars, for request paths), [`exposition`] (rendering a
//! prometheus-client registry, plus histogram families with exemplars, as
//! Prometheus text or OpenMetrics by content negotiation), [`parse`]
//! (reading such a page back, for the metrics history and tests) and
//! [`http`] (a small hyper 1 server for `/metrics` and health endpoints).
//!
//! What it is not: it defines no metric of its own and reads no state; the
//! server and the worker own their metrics and collectors. The storage
//! engine and the job layer never depend on it: they count with plain
//! atomics and the server reads their snapshots at scrape time.

#![deny(unsafe_code)]

pub mod exposition;
pub mod histogram;
pub mod http;
pub mod parse;

pub use exposition::{ExemplarFamily, Exposition, Format, Series};
pub use histogram::{Buckets, Exemplar, Histogram, HistogramSnapshot, TraceId};
