//! HTTP proxying: a hyper server per client connection, a tower stack per connection, and pooled
//! upstream connections.

pub mod balance;
pub mod client_identity;
pub mod endpoint;
pub mod error;
pub mod error_response;
pub mod extensions;
pub mod grpc;
pub mod hop_by_hop;
pub mod mesh_encoding;
pub mod peer_client;
pub mod pool;
pub mod premature_resets;
pub mod request_metrics;
pub mod request_target;
pub mod route;
pub mod server;
pub mod stack;
pub mod target;
pub mod upgrade;
