//! Generates the `spool.v1` messages, clients and servers from `proto/spool/v1`
//! with the protoc binary shipped by `protoc-bin-vendored`, so building needs
//! no system protoc.

use std::env;
use std::path::PathBuf;

const PROTOS: [&str; 6] = [
    "spool/v1/admin.proto",
    "spool/v1/cluster.proto",
    "spool/v1/log.proto",
    "spool/v1/jobs.proto",
    "spool/v1/metrics.proto",
    "spool/v1/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // Rerun only when an input changes. Printing any rerun-if-changed line
    // replaces cargo's default of rerunning on every change in the package.
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_root.join(proto).display());
    }

    let protos: Vec<PathBuf> = PROTOS.iter().map(|proto| proto_root.join(proto)).collect();
    let includes = [proto_root, protoc_bin_vendored::include_path()?];

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Every `bytes` field becomes `bytes::Bytes`: decoding slices the
        // received buffer instead of copying, and the server can hand out
        // slices of its segment mappings.
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("spool_descriptor.bin"))
        // Our own rerun-if-changed lines above cover the inputs.
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}
