//! `spool-raft`: Spool's cluster mode at the level of one partition. A
//! [`Replica`] runs one openraft group over one spool-log
//! [`Partition`](spool_log::Partition), whose segment files are the Raft
//! log: an entry is one record batch, appended once, and the vote, terms,
//! commit and truncation are the partition's own storage primitives.
//!
//! Layout: `engine` is the only module that names openraft (type
//! configuration, storage traits, network adaptor, [`Replica`]); `entry`
//! says how an entry is stored as a batch; `index` maps Raft indexes to
//! offsets; `network` is the transport trait and the group id,
//! `in_process` its channel implementation for tests, `transport` (the
//! sending side, [`PeerTransport`]) and `peer_service` (the answering
//! side, [`PeerService`], `spool.v1.Peer`) its gRPC implementation.
//!
//! What it is not: it knows nothing of topics' metadata, clients or the
//! `spoold` configuration (that is `spool-server`'s cluster module); no
//! membership changes beyond the first. Operations on a running group:
//! [`Replica::status`] and [`Replica::transfer_leadership`]. `docs/cluster.md` says what exists
//! and what does not.

#![deny(unsafe_code)]

mod engine;
pub mod entry;
pub mod error;
mod in_process;
pub mod index;
pub mod network;
mod peer_service;
mod transport;

pub use engine::{Appended, GroupConfig, PeerRequest, PeerResponse, Replica, ReplicaStatus, Role};
pub use error::{Error, Result};
pub use in_process::InProcessNetwork;
pub use network::{GroupId, Network, Unreachable};
pub use peer_service::{PeerService, TRANSFER_TIMEOUT, leader_hint, not_leader};
pub use transport::{PeerTransport, TransportConfig};
