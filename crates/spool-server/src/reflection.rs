//! gRPC server reflection, in both versions of the protocol: `v1`, and
//! `v1alpha`, which is all that many stock clients speak (Python's
//! grpcio-reflection, older grpcurl and Postman). Both describe the same
//! files: Spool's services, health, and reflection itself, and each lists
//! every service the client listener offers. `spool.v1.Peer` is in the
//! same descriptor set but served only on a cluster node's peer listener,
//! so it is described (a tool may ask for its file) but not listed.

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

/// The services of the client listener.
const SERVED: [&str; 8] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "spool.v1.Admin",
    "spool.v1.Cluster",
    "spool.v1.Jobs",
    "spool.v1.Log",
    "spool.v1.Metrics",
];

fn builder() -> Builder<'static> {
    SERVED
        .iter()
        .fold(Builder::configure(), |builder, name| {
            builder.with_service_name(*name)
        })
        .register_encoded_file_descriptor_set(spool_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// The `grpc.reflection.v1` service.
pub fn v1_service() -> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, Error> {
    builder().build_v1()
}

/// The `grpc.reflection.v1alpha` service.
pub fn v1alpha_service() -> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, Error> {
    builder().build_v1alpha()
}
