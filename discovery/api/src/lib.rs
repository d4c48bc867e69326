//! Weft's discovery API, `weft.discovery.v1`: the generated messages (always), the tonic client
//! (feature `client`) and server (feature `server`), and typed views over the wire types (parsed
//! targets and addresses, durations) so that clients parse strings in one place.
//!
//! The proto, with the conventions every field follows, is `proto/weft/discovery/v1/discovery.proto`.

mod endpoint;
mod policy;
mod target;

/// The generated code of `weft.discovery.v1`.
pub mod v1 {
    tonic::include_proto!("weft.discovery.v1");
}

pub use endpoint::{EndpointAddrError, parse_addr};
pub use target::{Target, TargetError};

/// The port a meshed pod's proxy accepts proxy-to-proxy (mTLS) connections on.
pub const PROXY_INBOUND_PORT: u32 = 4143;
