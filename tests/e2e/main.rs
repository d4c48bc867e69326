//! End-to-end tests: real pods (network namespaces), real iptables, real clients.

mod admission;
mod control_plane;
mod discovery;
mod grpc;
mod h2;
mod http1;
mod identity;
mod idle;
mod lifecycle;
mod mtls;
mod opaque;
mod redirect;
mod resilience;
mod shutdown;
mod support;
mod testbed;
mod websocket;
