//! Compiles the protos with protox (pure Rust), so a fresh machine needs no system `protoc`.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/assignment/v1/types.proto",
    "proto/assignment/v1/directory_service.proto",
    "proto/assignment/v1/assignment_service.proto",
    "proto/assignment/v1/access_group_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds the migrations: a new one must rebuild.
    println!("cargo:rerun-if-changed=migrations");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Served by the reflection service so grpcurl needs no proto files.
    std::fs::write(
        out_dir.join("assignment_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // A request that is not valid protobuf is INVALID_ARGUMENT, not tonic-prost's INTERNAL.
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::ProstCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
