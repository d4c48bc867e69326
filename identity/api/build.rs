// Compiles proto/identity.proto with protox (pure Rust, no protoc binary) and generates the client
// and/or server only for the features enabled, so the proxy never compiles server code.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/identity.proto");
    let descriptors = protox::compile(["proto/identity.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
