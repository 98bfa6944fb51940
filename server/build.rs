//! Generates the KServe v2 gRPC service (`proto/grpc_predict_v2.proto`) for `src/grpc.rs`.
//!
//! `protox` parses the proto in pure Rust (no `protoc` on the machine or in CI) and hands its file
//! descriptors to `tonic-prost-build`, which writes the prost messages and the tonic client/server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_predict_v2.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
