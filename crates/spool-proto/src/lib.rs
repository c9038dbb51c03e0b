//! Spool's gRPC API as Rust types: the `spool.v1` protobuf messages, the
//! `Log`, `Jobs`, `Metrics`, `Admin`, `Cluster` and `Peer` service traits for servers, and their tonic
//! clients.
//!
//! Everything here is generated at build time from the protos in `proto/spool/v1/`
//! (prost 0.14 and tonic 0.14, with a vendored
//! protoc, so no system protoc is needed). Every protobuf `bytes` field is a
//! [`bytes::Bytes`], so decoding a request slices the received buffer instead
//! of copying record values and encoded batches.
//!
//! Layout:
//! - [`spool::v1`] (also re-exported as [`v1`]): messages and enums;
//!   `v1::log_server` / `v1::log_client` and `v1::jobs_server` /
//!   `v1::jobs_client`, `v1::metrics_server` / `v1::metrics_client` for the
//!   services.
//! - `v1::peer_server` / `v1::peer_client`: `spool.v1.Peer`, the Raft
//!   traffic between the nodes of a cluster (`proto/spool/v1/peer.proto`);
//!   [`leader_hint`] packs and unpacks the leader hint a cluster node puts
//!   in a status's details.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of the files, for
//!   `tonic-reflection`.
//!
//! What it is not: no service implementation, no validation of names, sizes
//! or offsets, no storage-format decoding and no transport configuration
//! (TLS, limits). Those live in `spool-server` and `spool-client`; the
//! semantics of every field are documented in the protos and in `docs/api.md`.

#![deny(unsafe_code)]

/// Protobuf package `spool`.
pub mod spool {
    /// Protobuf package `spool.v1`: the messages and services of `log.proto`,
    /// `jobs.proto` and `metrics.proto`.
    // Generated code: clippy's opinions apply to the protos' shape, not to
    // code we write, so they are silenced here and only here.
    #[allow(clippy::all, clippy::pedantic, clippy::nursery)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/spool.v1.rs"));
    }
}

pub mod leader_hint;
pub mod partitioner;

pub use spool::v1;

/// Encoded `google.protobuf.FileDescriptorSet` of `spool/v1/log.proto`,
/// `spool/v1/jobs.proto`, `spool/v1/metrics.proto`, `spool/v1/admin.proto`,
/// `spool/v1/cluster.proto` and `spool/v1/peer.proto`, to register with `tonic-reflection` so that stock
/// tools such as grpcurl can discover the services.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/spool_descriptor.bin"));

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;

    use super::FILE_DESCRIPTOR_SET;
    use super::v1::{Durability, Header, ProduceRequest, Record, RecordList, produce_request};

    fn record(key: Option<&'static [u8]>, value: &'static [u8]) -> Record {
        Record {
            key: key.map(Bytes::from_static),
            value: Some(Bytes::from_static(value)),
            headers: vec![Header {
                key: "traceparent".to_owned(),
                value: Some(Bytes::from_static(b"00-abc-def-01")),
            }],
            timestamp_ms: None,
        }
    }

    #[test]
    fn produce_request_with_records_round_trips() {
        let request = ProduceRequest {
            topic: "orders".to_owned(),
            partition: None,
            durability: Durability::Fsync as i32,
            data: Some(produce_request::Data::Records(RecordList {
                records: vec![
                    record(Some(b"customer-1"), b"first"),
                    // An empty key and an absent key must stay distinct.
                    record(Some(b""), b""),
                    Record {
                        timestamp_ms: Some(1_700_000_000_000),
                        ..record(None, b"third")
                    },
                ],
            })),
        };

        let encoded = Bytes::from(request.encode_to_vec());
        let decoded = ProduceRequest::decode(encoded.clone()).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(decoded.durability(), Durability::Fsync);

        let Some(produce_request::Data::Records(list)) = &decoded.data else {
            panic!("records oneof lost: {:?}", decoded.data);
        };
        assert_eq!(list.records[1].key, Some(Bytes::new()));
        assert_eq!(list.records[2].key, None);
        assert_eq!(list.records[2].timestamp_ms, Some(1_700_000_000_000));

        // Bytes fields decoded from a `Bytes` buffer are slices of it, not
        // copies: this is what keeps large values off the allocator.
        let value = list.records[0].value.as_ref().unwrap();
        assert!(points_into(value, &encoded), "value was copied");
    }

    #[test]
    fn encoded_batch_is_a_zero_copy_slice_of_the_request() {
        let batch: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
        let request = ProduceRequest {
            topic: "orders".to_owned(),
            partition: Some(3),
            durability: Durability::None as i32,
            data: Some(produce_request::Data::EncodedBatch(Bytes::from(batch.clone()))),
        };

        let encoded = Bytes::from(request.encode_to_vec());
        let decoded = ProduceRequest::decode(encoded.clone()).unwrap();
        assert_eq!(decoded.partition, Some(3));
        let Some(produce_request::Data::EncodedBatch(received)) = decoded.data else {
            panic!("encoded_batch oneof lost");
        };
        assert_eq!(received.as_ref(), batch.as_slice());
        assert!(points_into(&received, &encoded), "batch was copied");
    }

    #[test]
    fn descriptor_set_names_every_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let mut services: Vec<String> = set
            .file
            .iter()
            .filter(|file| file.package() == "spool.v1")
            .flat_map(|file| file.service.iter().map(|service| service.name().to_owned()))
            .collect();
        services.sort();
        assert_eq!(services, ["Admin", "Cluster", "Jobs", "Log", "Metrics", "Peer"]);

        let log = set
            .file
            .iter()
            .flat_map(|file| &file.service)
            .find(|service| service.name() == "Log")
            .unwrap();
        let subscribe = log
            .method
            .iter()
            .find(|method| method.name() == "Subscribe")
            .unwrap();
        assert!(subscribe.server_streaming(), "Subscribe must stream");
    }

    /// True if `slice` lies inside `buffer`'s memory.
    fn points_into(slice: &Bytes, buffer: &Bytes) -> bool {
        let start = buffer.as_ptr() as usize;
        let end = start + buffer.len();
        let slice_start = slice.as_ptr() as usize;
        slice_start >= start && slice_start + slice.len() <= end
    }
}
