//! Resilience per upstream, each concern a tower layer of its own: `timeout` (request and
//! per-try), `retry` (with `budget` and `replay` of request bodies), `limits` (in-flight and
//! pending), `rate_limit` (inbound), `stream_idle` (exchanges whose bodies stopped moving).
//! `breaker` is the per-endpoint circuit breaker the balancer
//! (`http/balance.rs`) consults, which also fails requests fast when no endpoint is left.
//! `policy` says what applies to a request and how the configuration layers combine,
//! `service_policy` turns a Service's policy from discovery into it; `upstream` holds what one
//! upstream's requests share.

pub mod breaker;
pub mod budget;
pub mod concurrency_limit;
pub mod connection_slots;
pub mod error;
pub mod kinds;
pub mod limits;
pub mod policy;
pub mod rate_limit;
pub mod replay;
pub mod retry;
pub mod service_overrides;
pub mod service_policy;
pub mod stream_idle;
pub mod timeout;
pub mod upstream;
