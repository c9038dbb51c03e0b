//! The leader hint of cluster mode in a gRPC status's details: a
//! [`LeaderHint`] packed in a [`StatusDetails`] (wire-compatible with
//! `google.rpc.Status`, the standard content of the
//! `grpc-status-details-bin` trailer) under [`LEADER_HINT_TYPE_URL`].
//! One encoder for the server and one decoder for clients.

use bytes::Bytes;
use prost::Message;

use crate::v1::{LeaderHint, PackedDetail, StatusDetails};

/// The type URL a [`LeaderHint`] is packed under.
pub const LEADER_HINT_TYPE_URL: &str = "type.googleapis.com/spool.v1.LeaderHint";

/// The details bytes of a status with code `code` and `message` that
/// carries `hint`.
pub fn encode(code: i32, message: &str, hint: &LeaderHint) -> Bytes {
    let details = StatusDetails {
        code,
        message: message.to_owned(),
        details: vec![PackedDetail {
            type_url: LEADER_HINT_TYPE_URL.to_owned(),
            value: Bytes::from(hint.encode_to_vec()),
        }],
    };
    Bytes::from(details.encode_to_vec())
}

/// The leader hint in a status's details bytes, if they hold one.
pub fn decode(details: &[u8]) -> Option<LeaderHint> {
    let details = StatusDetails::decode(details).ok()?;
    let packed = details
        .details
        .iter()
        .find(|d| d.type_url == LEADER_HINT_TYPE_URL)?;
    LeaderHint::decode(packed.value.as_ref()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_round_trips_and_other_details_hold_none() {
        let hint = LeaderHint {
            leader_id: Some(3),
            leader_address: "127.0.0.1:7072".into(),
        };
        let bytes = encode(9, "not the leader", &hint);
        assert_eq!(decode(&bytes), Some(hint));
        let other = StatusDetails {
            code: 9,
            message: "x".into(),
            details: vec![PackedDetail {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: Bytes::new(),
            }],
        };
        assert_eq!(decode(&other.encode_to_vec()), None);
        assert_eq!(decode(b"\xff\xff"), None);
    }
}
