//! Generates the tonic/prost code of `jasper/v1/jasper.proto` without a system `protoc`:
//! `protox` (a protobuf compiler in Rust) produces the descriptor set, `tonic-prost-build`
//! generates from it, and the encoded set is kept for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "jasper/v1/jasper.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("jasper_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
