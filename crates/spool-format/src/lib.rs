//! `spool-format`: Spool's pure formats, shared by the storage engine, the
//! server and the clients.
//!
//! Layout: [`batch`] is the record batch codec (the fixed header and its
//! CRC, planning and encoding a batch, validating one that arrives encoded,
//! decoding records lazily from a stored [`Batch`]); `varint` the zigzag
//! varints it uses; [`FormatError`] everything the codec refuses;
//! [`units`] the one grammar for durations and sizes that every flag,
//! environment variable and config file uses.
//! `docs/storage-format.md` (section 3) is the byte-by-byte description,
//! and a test checks its example against this code.
//!
//! What it is not: it does no I/O, spawns no thread and knows no network;
//! every function here is a plain transformation of bytes or text, so a
//! client links it without linking the storage engine, `memmap2` or `libc`.
//! Its dependencies are `bytes`, `crc32fast` and `thiserror`.

#![deny(unsafe_code)]

pub mod batch;
pub mod error;
pub mod units;
mod varint;

pub use batch::{Batch, BatchHeader, BatchLimits, Header, ProducerFields, Record, RecordView};
pub use error::{FormatError, RecordProblem};
