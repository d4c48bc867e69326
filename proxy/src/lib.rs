//! weft-proxy: Weft's per-pod sidecar proxy.
//!
//! Data path: `listener` accepts -> `original_dst` + `loop_guard` -> `detect` -> `http` (hyper
//! server + tower stack + pooled upstream clients) or `opaque` (TCP with half-close). `admin`
//! serves health and `metrics`; `drain` coordinates graceful shutdown; `sidecar::run` ties them
//! together from a `config::ProxyConfig`.

pub mod adaptive_copy;
pub mod admin;
pub mod app_probe;
pub mod backoff;
pub mod balance;
pub mod config;
pub mod connect;
pub mod connection;
pub mod connection_limit;
pub mod detect;
pub mod direction;
pub mod discovery;
pub mod drain;
pub mod http;
pub mod identity;
pub mod idle;
pub mod inbound;
pub mod inbound_policy;
pub mod labels;
pub mod listener;
pub mod log;
pub mod loop_guard;
pub mod metrics;
pub mod observed_io;
pub mod opaque;
pub mod original_dst;
pub mod outbound;
pub mod peer;
pub mod readiness;
pub mod resilience;

pub mod sidecar;
pub mod tls;
pub mod wait_ready;

#[cfg(test)]
pub(crate) mod test_support;
