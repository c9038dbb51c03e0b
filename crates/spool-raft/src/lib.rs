//! `spool-raft`: Spool's cluster mode at the level of one partition. A
//! [`Replica`] runs one openraft group over one spool-log
//! [`Partition`](spool_log::Partition), whose segment files are the Raft
//! log: an entry is one record batch, appended once, and the vote, terms,
//! commit and truncation are the partition's own storage primitives.
//!
//! Layout: `engine` is the only module that names openraft (type
//! configuration, storage traits, network adaptor, [`Replica`]); `entry`
//! says how an entry is stored as a batch; `index` maps Raft indexes to
//! offsets; `network` is the transport trait and `in_process` its
//! channel implementation for tests.
//!
//! What it is not: not wired into `spoold` (single-node mode does not go
//! through it), no peer transport over the network yet, no metadata group,
//! no membership changes beyond the first. `docs/cluster.md` says what
//! exists and what does not.

#![deny(unsafe_code)]

mod engine;
pub mod entry;
pub mod error;
mod in_process;
pub mod index;
pub mod network;

pub use engine::{Appended, GroupConfig, PeerRequest, PeerResponse, Replica};
pub use error::{Error, Result};
pub use in_process::InProcessNetwork;
pub use network::{Network, Unreachable};
