//! [`PeerRequest`] and [`PeerResponse`] as the protobuf messages of
//! `spool.v1.Peer` (`proto/spool/v1/peer.proto`). A client's batch travels
//! as a protobuf `bytes` field, the bytes it is stored as; Raft's small
//! metadata (votes, log ids, memberships, snapshot metadata and every
//! answer) is openraft's own serde encoding as JSON, so the wire follows
//! openraft's types without a second definition of them here.

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spool_proto::v1;

use super::{PeerRequest, PeerResponse};
use crate::error::{Error, Result};

/// Which request a [`v1::RaftReply`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerCallKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Elect,
}

/// A [`PeerRequest`] as the message of its RPC.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum WireRequest {
    AppendEntries(v1::RaftAppendEntriesRequest),
    Vote(v1::RaftVoteRequest),
    InstallSnapshot(v1::RaftInstallSnapshotRequest),
    Elect(v1::RaftElectRequest),
}

fn to_json<T: Serialize>(value: &T, what: &'static str) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| Error::Wire { what, source })
}

fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Wire { what, source })
}

fn log_id_to_proto(id: LogId<u64>) -> v1::RaftLogId {
    v1::RaftLogId {
        term: id.leader_id.term,
        index: id.index,
    }
}

fn log_id_from_proto(id: v1::RaftLogId) -> LogId<u64> {
    // With `single-term-leader` a committed leader id is its term alone.
    LogId::new(CommittedLeaderId::new(id.term, 0), id.index)
}

fn entry_to_proto(entry: Entry<super::TypeConfig>) -> Result<v1::RaftEntry> {
    let payload = match entry.payload {
        EntryPayload::Normal(batch) => v1::raft_entry::Payload::Batch(batch),
        EntryPayload::Blank => v1::raft_entry::Payload::Blank(true),
        EntryPayload::Membership(membership) => {
            v1::raft_entry::Payload::MembershipJson(to_json(&membership, "a membership")?)
        }
    };
    Ok(v1::RaftEntry {
        log_id: Some(log_id_to_proto(entry.log_id)),
        payload: Some(payload),
    })
}

fn entry_from_proto(entry: v1::RaftEntry) -> Result<Entry<super::TypeConfig>> {
    let log_id = entry.log_id.ok_or(Error::MissingField {
        field: "RaftEntry.log_id",
    })?;
    let payload = match entry.payload.ok_or(Error::MissingField {
        field: "RaftEntry.payload",
    })? {
        v1::raft_entry::Payload::Batch(batch) => EntryPayload::Normal(batch),
        v1::raft_entry::Payload::Blank(_) => EntryPayload::Blank,
        v1::raft_entry::Payload::MembershipJson(json) => {
            EntryPayload::Membership(from_json(&json, "a membership")?)
        }
    };
    Ok(Entry {
        log_id: log_id_from_proto(log_id),
        payload,
    })
}

/// Encodes `request` for group `group`, sent by node `from`.
pub fn request_to_proto(group: v1::RaftGroup, from: u64, request: PeerRequest) -> Result<WireRequest> {
    Ok(match request {
        PeerRequest::AppendEntries(rpc) => WireRequest::AppendEntries(v1::RaftAppendEntriesRequest {
            group: Some(group),
            from,
            vote_json: to_json(&rpc.vote, "a vote")?,
            prev_log_id: rpc.prev_log_id.map(log_id_to_proto),
            entries: rpc
                .entries
                .into_iter()
                .map(entry_to_proto)
                .collect::<Result<_>>()?,
            leader_commit: rpc.leader_commit.map(log_id_to_proto),
        }),
        PeerRequest::Vote(rpc) => WireRequest::Vote(v1::RaftVoteRequest {
            group: Some(group),
            from,
            request_json: to_json(&rpc, "a vote request")?,
        }),
        PeerRequest::InstallSnapshot(rpc) => WireRequest::InstallSnapshot(v1::RaftInstallSnapshotRequest {
            group: Some(group),
            from,
            vote_json: to_json(&rpc.vote, "a vote")?,
            meta_json: to_json(&rpc.meta, "a snapshot's metadata")?,
            offset: rpc.offset,
            data: Bytes::from(rpc.data),
            done: rpc.done,
        }),
        PeerRequest::Elect => WireRequest::Elect(v1::RaftElectRequest {
            group: Some(group),
            from,
        }),
    })
}

pub fn append_entries_from_proto(request: v1::RaftAppendEntriesRequest) -> Result<PeerRequest> {
    Ok(PeerRequest::AppendEntries(AppendEntriesRequest {
        vote: from_json(&request.vote_json, "a vote")?,
        prev_log_id: request.prev_log_id.map(log_id_from_proto),
        entries: request
            .entries
            .into_iter()
            .map(entry_from_proto)
            .collect::<Result<_>>()?,
        leader_commit: request.leader_commit.map(log_id_from_proto),
    }))
}

pub fn vote_from_proto(request: v1::RaftVoteRequest) -> Result<PeerRequest> {
    Ok(PeerRequest::Vote(from_json(
        &request.request_json,
        "a vote request",
    )?))
}

pub fn install_snapshot_from_proto(request: v1::RaftInstallSnapshotRequest) -> Result<PeerRequest> {
    Ok(PeerRequest::InstallSnapshot(InstallSnapshotRequest {
        vote: from_json(&request.vote_json, "a vote")?,
        meta: from_json(&request.meta_json, "a snapshot's metadata")?,
        offset: request.offset,
        data: request.data.to_vec(),
        done: request.done,
    }))
}

/// Encodes the answer a replica gave.
pub fn response_to_proto(response: &PeerResponse) -> Result<v1::RaftReply> {
    let result_json = match response {
        PeerResponse::AppendEntries(result) => to_json(result, "an append-entries answer")?,
        PeerResponse::Vote(result) => to_json(result, "a vote answer")?,
        PeerResponse::InstallSnapshot(result) => to_json(result, "an install-snapshot answer")?,
        PeerResponse::Elect(result) => to_json(result, "an elect answer")?,
    };
    Ok(v1::RaftReply { result_json })
}

/// Decodes the answer to a request of `kind`.
pub fn response_from_proto(kind: PeerCallKind, reply: &v1::RaftReply) -> Result<PeerResponse> {
    let json = &reply.result_json;
    Ok(match kind {
        PeerCallKind::AppendEntries => {
            PeerResponse::AppendEntries(from_json(json, "an append-entries answer")?)
        }
        PeerCallKind::Vote => PeerResponse::Vote(from_json(json, "a vote answer")?),
        PeerCallKind::InstallSnapshot => {
            PeerResponse::InstallSnapshot(from_json(json, "an install-snapshot answer")?)
        }
        PeerCallKind::Elect => PeerResponse::Elect(from_json(json, "an elect answer")?),
    })
}

#[cfg(test)]
mod tests {
    use openraft::raft::VoteRequest;
    use openraft::{Membership, Vote};

    use super::*;

    fn group() -> v1::RaftGroup {
        v1::RaftGroup {
            topic: "orders".into(),
            partition: 3,
            incarnation: 41,
        }
    }

    #[test]
    fn an_append_entries_request_round_trips_with_its_batch_as_raw_bytes() {
        let batch = Bytes::from_static(b"\x00\x01stored batch bytes");
        let membership = Membership::<u64, openraft::BasicNode>::new(vec![[1, 2, 3].into()], None);
        let request = AppendEntriesRequest {
            vote: Vote::new_committed(4, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(3, 0), 9)),
            entries: vec![
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(4, 0), 10),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(4, 0), 11),
                    payload: EntryPayload::Normal(batch.clone()),
                },
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(4, 0), 12),
                    payload: EntryPayload::Membership(membership.clone()),
                },
            ],
            leader_commit: Some(LogId::new(CommittedLeaderId::new(4, 0), 10)),
        };
        let WireRequest::AppendEntries(wire) =
            request_to_proto(group(), 1, PeerRequest::AppendEntries(request)).unwrap()
        else {
            panic!("an append-entries request must encode as one");
        };
        assert_eq!(wire.group, Some(group()));
        assert_eq!(wire.entries.len(), 3);
        assert_eq!(
            wire.entries[1].payload,
            Some(v1::raft_entry::Payload::Batch(batch.clone()))
        );

        let PeerRequest::AppendEntries(back) = append_entries_from_proto(wire).unwrap() else {
            panic!("decoded as another request");
        };
        assert_eq!(back.vote, Vote::new_committed(4, 1));
        assert_eq!(
            back.prev_log_id.map(|id| (id.leader_id.term, id.index)),
            Some((3, 9))
        );
        assert_eq!(
            back.leader_commit.map(|id| (id.leader_id.term, id.index)),
            Some((4, 10))
        );
        assert!(matches!(back.entries[0].payload, EntryPayload::Blank));
        assert!(matches!(&back.entries[1].payload, EntryPayload::Normal(b) if *b == batch));
        assert!(matches!(&back.entries[2].payload, EntryPayload::Membership(m) if *m == membership));
        assert_eq!(back.entries[2].log_id.index, 12);
    }

    #[test]
    fn a_vote_request_and_its_answer_round_trip() {
        let request = VoteRequest::new(Vote::new(5, 2), Some(LogId::new(CommittedLeaderId::new(4, 0), 7)));
        let WireRequest::Vote(wire) = request_to_proto(group(), 2, PeerRequest::Vote(request)).unwrap()
        else {
            panic!("a vote request must encode as one");
        };
        let PeerRequest::Vote(back) = vote_from_proto(wire).unwrap() else {
            panic!("decoded as another request");
        };
        assert_eq!(back.vote, Vote::new(5, 2));

        let answer = PeerResponse::Vote(Ok(openraft::raft::VoteResponse::new(Vote::new(5, 2), None, true)));
        let reply = response_to_proto(&answer).unwrap();
        let PeerResponse::Vote(Ok(decoded)) = response_from_proto(PeerCallKind::Vote, &reply).unwrap() else {
            panic!("decoded as another answer");
        };
        assert!(decoded.vote_granted);
    }

    #[test]
    fn an_entry_without_a_payload_is_refused() {
        let wire = v1::RaftAppendEntriesRequest {
            group: Some(group()),
            from: 1,
            vote_json: to_json(&Vote::<u64>::new(1, 1), "a vote").unwrap(),
            prev_log_id: None,
            entries: vec![v1::RaftEntry {
                log_id: Some(v1::RaftLogId { term: 1, index: 0 }),
                payload: None,
            }],
            leader_commit: None,
        };
        assert!(matches!(
            append_entries_from_proto(wire),
            Err(Error::MissingField {
                field: "RaftEntry.payload"
            })
        ));
    }
}
