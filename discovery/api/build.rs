//! Compiles discovery.proto with protox (pure Rust, no protoc binary) and generates the client and
//! server code only for the features asked for, so the proxy never compiles the server half.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/weft/discovery/v1/discovery.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .compile_fds(descriptors)?;
    Ok(())
}
