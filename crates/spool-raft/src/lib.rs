//! `spool-raft`: Spool's cluster mode at the level of one partition. A
//! [`Replica`] runs one openraft group over one spool-log
//! [`Partition`](spool_log::Partition), whose segment files are the Raft
//! log: a client's entry is one record batch, appended once, and the
//! vote, terms, commit and truncation are the partition's own storage
//! primitives.
//!
//! Layout: `engine` is the only module that names openraft (type
//! configuration, storage traits, network adaptor, [`Replica`]); `entry`
//! says where an entry is stored; `own_entries` keeps Raft's own entries
//! (blank, membership) outside the offset space, so a partition's offsets
//! are dense; `index` maps Raft indexes to offsets; `log_start` records
//! where a purged log starts and the last snapshot; `commit` stores the
//! last commit; `network` is the transport trait and the group id,
//! `in_process` its channel implementation for tests, `transport` (the
//! sending side, [`PeerTransport`]) and `peer_service` (the answering
//! side, [`PeerService`], `spool.v1.Peer`) its gRPC implementation.
//!
//! What it is not: it knows nothing of topics' metadata, clients or the
//! `spoold` configuration (that is `spool-server`'s cluster module).
//! Operations on a running group: [`Replica::status`],
//! [`Replica::transfer_leadership`] and [`Replica::change_voters`]
//! (membership changes). `docs/cluster.md` says what exists and what does
//! not.

#![deny(unsafe_code)]

pub mod commit;
mod engine;
pub mod entry;
pub mod error;
mod in_process;
pub mod index;
pub mod log_start;
pub mod network;
pub mod own_entries;
mod peer_service;
mod transport;

pub use engine::{
    AppSnapshot, AppState, Appended, GroupConfig, PeerRequest, PeerResponse, Replica, ReplicaStatus, Role,
};
pub use error::{Error, Result};
pub use in_process::InProcessNetwork;
pub use network::{GroupId, Network, Unreachable};
pub use peer_service::{PeerService, TRANSFER_TIMEOUT, leader_hint, not_leader};
pub use transport::{PeerTransport, TransportConfig};
