//! `weft-discovery`: streams each service's endpoints, workload identities and policy to the
//! proxies (API: `weft-discovery-api`, `weft.discovery.v1.Discovery/Watch`).
//!
//! source (Kubernetes watchers | a directory of YAML) -> `ClusterObjects` -> `Translator` ->
//! `Index` (pure translation) -> `WatchService` (one task per watcher, each diffing what its client
//! holds against the latest index).

pub mod admin;
pub mod index;
pub mod metrics;
pub mod objects;
pub mod policy;
pub mod problem;
pub mod server;
pub mod source;
pub mod translator;
pub mod watch_client;
pub mod watch_state;

pub use index::{Index, IndexConfig, ServiceState};
pub use objects::{ClusterObjects, ObjectKey};
pub use server::WatchService;
pub use translator::Translator;
