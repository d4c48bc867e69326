//! mTLS between proxies. Outbound: [`connect`] (TLS to a peer proxy, checking the identity
//! discovery promised) and [`peer_client`] (HTTP over it). Inbound: [`client_hello`] (is this TLS
//! for us?), [`accept`] and [`termination`] (terminate and serve to the app), the
//! [`inbound_policy`] and [`client_identity`] (who may call, and telling the app who did).
//! [`transport`] and [`http_transport`] define what travels between proxies.

pub mod accept;
pub mod client_hello;
pub mod connect;
pub mod transport;

#[cfg(test)]
mod loopback_tests;
