//! HTTP proxying: a hyper server per client connection, a tower stack per connection, and pooled
//! upstream connections.

pub mod balance;
pub mod endpoint;
pub mod error_response;
pub mod hop_by_hop;
pub mod pool;
pub mod request_metrics;
pub mod route;
pub mod server;
pub mod stack;
pub mod target;
pub mod upgrade;

pub use server::HttpServer;
pub use target::{HttpVersion, Target};
