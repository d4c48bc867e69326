//! Where a request goes: today the connection's original destination; later the route layer
//! will resolve it through discovery.

use std::net::SocketAddr;

use crate::detect::Protocol;

/// The HTTP version spoken to the upstream (the same the client spoke to us).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

impl HttpVersion {
    /// The detected protocol, if it is HTTP.
    pub fn from_protocol(protocol: Protocol) -> Option<Self> {
        match protocol {
            Protocol::Http1 => Some(HttpVersion::Http1),
            Protocol::Http2 => Some(HttpVersion::Http2),
            Protocol::Tls | Protocol::Opaque => None,
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            HttpVersion::Http1 => Protocol::Http1,
            HttpVersion::Http2 => Protocol::Http2,
        }
    }
}

/// Attached to each request (as an extension) by the route layer; read by the endpoint client.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub version: HttpVersion,
}
