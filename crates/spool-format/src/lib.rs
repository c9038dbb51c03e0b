//! `spool-format`: Spool's pure formats, shared by the storage engine, the
//! server and the clients.
//!
//! What it is not: it does no I/O, spawns no thread and knows no network;
//! every function here is a plain transformation of bytes or text, so a
//! client links it without linking the storage engine, `memmap2` or `libc`.

#![deny(unsafe_code)]

pub mod units;
